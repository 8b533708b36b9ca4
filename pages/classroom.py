"""Classroom page: support vectors in two dimensions (dsvlib.toy).  A toy data set, a linear model or
an MLP trained live, the SVC's support vectors against the DeepKKT selection, and DSVs synthesised
from random points that can be stepped through or played for a lecture."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from app import live, toy_charts
from app.jobs import Job
from dsvlib import toy
from dsvlib.select import top_per_class

KIND = "toy"
FRAME_KEY = "toy_frame"

HOW_TO_READ = """
* **Shaded regions** are the model's two classes; the **black line** is its decision boundary.
* **Linear model**: it is trained as a soft-margin SVM (hinge loss, weight decay). Red open circles are
  scikit-learn's SVC support vectors; black crosses are the points that the DeepKKT selection gives
  **λ > 0** (θ ≈ -Σ λᵢ ∇θ L(xᵢ), paper Eq. 8, the points fixed). They should coincide: a point away from
  the margin has no hinge gradient, so it cannot help to explain the weights (complementary slackness).
* **MLP**: every training point's λ is its marker size and colour: big markers are the points the weights
  are built from.
* **DSVs** start at random points (hollow grey) and move under the DeepKKT objective alone: the model is
  the only teacher. Use **Step** or the slider to go through the synthesis, or **▶ Play** on the chart.
  The **entropy** curve shows how unsure the model is about the candidates (ln 2 = exactly on the
  boundary). It rises as they approach a smooth boundary (the linear model); a steep MLP can stay
  confident right next to its boundary, so there the distances tell more than the entropy.
* **Distances** are to the nearest point where the model's prediction changes (`dsvlib.toy.boundary_distance`).
"""

DATA_TEXT = {"moons": "two moons", "blobs": "two blobs", "circles": "two circles", "xor": "XOR (four clusters)"}


@dataclass
class ClassroomRun:
    """What one demo produced, ready to draw (computed in the job, read by the page)."""

    demo: toy.ToyDemo
    grid: dict[str, torch.Tensor]
    distances: dict[str, float]  # mean distance to the boundary per point set
    seconds: float  # end to end, in the job


def classroom_page() -> None:
    st.title("Classroom: support vectors in 2-D")
    st.markdown("Support vectors, and deep support vectors, sit on the decision boundary (paper Sec. 3.2, 5.1). "
                "In images nobody can see a boundary; here everyone can.")
    with st.expander("How to read this", icon=":material/help:"):
        st.markdown(HOW_TO_READ)
    c1, c2, c3, c4 = st.columns(4)
    kind = c1.radio("Model", toy.MODELS, key="toy_model", horizontal=True, index=toy.MODELS.index("mlp"),
                    format_func=lambda k: {"linear": "Linear (SVM)", "mlp": "MLP"}[k])
    name = c2.selectbox("Data set", toy.DATASETS, key="toy_data", format_func=DATA_TEXT.get,
                        index=toy.DATASETS.index("moons"))
    noise = float(c3.slider("Noise", 0.0, 0.3, 0.1, 0.01, key="toy_noise"))
    n = int(c4.slider("Points", 40, 400, 200, 20, key="toy_n"))
    d1, d2, d3 = st.columns(3)
    per_class = int(d1.slider("DSVs per class", 1, 20, 8, key="toy_per_class"))
    steps = int(d2.slider("Synthesis steps", 20, 400, 200, 20, key="toy_steps"))
    seed = int(d3.number_input("Seed", 0, 2**31 - 1, 0, key="toy_seed"))

    job = live.job_area(KIND, "Train and synthesise", lambda: _submit(name, n, noise, seed, kind, per_class, steps),
                        key="toy_demo_run",
                        help="Trains the model, fits λ for every point and synthesises DSVs: a few seconds.")
    if job is not None:
        _show(job)


def _submit(name: str, n: int, noise: float, seed: int, kind: str, per_class: int, steps: int) -> Job | None:
    def work(job: Job) -> ClassroomRun:
        return build_run(name, n, noise, seed, kind, per_class, steps,
                         progress=lambda phase, frac: job.report(step=int(1000 * frac), steps=1000, text=phase))

    return live.submit(KIND, f"{DATA_TEXT[name]}, {kind}", work, device="cpu",
                       params={"data": name, "kind": kind, "n": n, "noise": noise})


def build_run(name: str, n: int, noise: float, seed: int, kind: str, per_class: int, steps: int,
              progress: Any = None) -> ClassroomRun:
    """The whole demo (also timed by bench/bench_toy.py): data, training, selection, synthesis,
    the grid for the figure and the mean boundary distances."""
    t0 = time.perf_counter()
    data = toy.make_toy(name, n, noise, seed)
    demo = toy.run_demo(data, kind, per_class=per_class, steps=steps, seed=seed, progress=progress)
    if progress is not None:
        progress("distances", 1.0)
    grid = toy.decision_grid(demo.model, 120)
    synth = demo.synthesis
    top = top_per_class(demo.selection, per_class)
    top_a = top_per_class(demo.selection, per_class, by="alpha")
    g = torch.Generator().manual_seed(seed + 1)
    rand = torch.randperm(len(data), generator=g)[:len(top)]
    sets = {"DSVs (end)": synth.points, "DSVs (start)": synth.trajectory[0], "top-λ points": data.points[top],
            "top-α points": data.points[top_a], "random training points": data.points[rand]}
    dist = toy.boundary_distance(demo.model, torch.cat(list(sets.values())))
    parts = dict(zip(sets, torch.split(dist, [len(v) for v in sets.values()])))
    distances = {k: float(v[torch.isfinite(v)].mean()) if torch.isfinite(v).any() else float("nan")
                 for k, v in parts.items()}
    return ClassroomRun(demo=demo, grid=grid, distances=distances, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- the result


def _step_by(delta: int, last: int) -> None:
    st.session_state[FRAME_KEY] = max(0, min(last, int(st.session_state.get(FRAME_KEY, last)) + delta))


def _show(job: Job) -> None:
    if job.result is None:
        st.error(f"The demo did not finish: {live.status_line(job)}", icon=":material/error:")
        return
    run: ClassroomRun = job.result
    demo, synth = run.demo, run.demo.synthesis
    last = len(synth.trajectory) - 1
    if st.session_state.get("_toy_shown") != job.id or int(st.session_state.get(FRAME_KEY, last)) > last:
        st.session_state["_toy_shown"] = job.id
        st.session_state[FRAME_KEY] = last  # a new result opens on its end state
    t = demo.timings
    st.caption(f"Run #{job.id}: {len(demo.data)} points of {DATA_TEXT.get(demo.data.name, demo.data.name)}, "
               f"{demo.kind} model, training accuracy {demo.train_accuracy:.0%}; end to end {run.seconds:.1f} s "
               f"(training {t.get('train', 0):.1f} s, λ {t.get('select', 0):.1f} s, synthesis "
               f"{t.get('synthesize', 0):.1f} s); {live.status_line(job)}.")
    left, right = st.columns(2)
    with left:
        if demo.kind == "linear":
            _linear_panel(run)
        else:
            score = st.radio("Marker size", ["lambda", "alpha"], key="toy_score", horizontal=True,
                             format_func=lambda s: {"lambda": "λ", "alpha": "α = λ·|∂L/∂z| (the SVM reading)"}[s],
                             help="At an exact stationary point of weight-decayed cross-entropy training every "
                                  "point has the same λ; α weighs it by how much the point's loss still moves, "
                                  "which is largest near the boundary.")
            sel = demo.selection
            symbol = "λ" if score == "lambda" else "α"
            st.plotly_chart(toy_charts.lambda_map(demo.data, run.grid, sel.score(score),
                                                  title=f"{symbol} of every training point", symbol=symbol),
                            key=f"toy_lambda_chart_{job.id}", config={"displaylogo": False})
            st.caption(f"Stationarity cos(θ, -Σλ∇L): {sel.uniform_cosine:.3f} with equal λ, {sel.cosine:.3f} fitted; "
                       f"{int((sel.lambdas > 0).sum())} of {len(sel.lambdas)} points have λ > 0.")
    frame = int(st.session_state.get(FRAME_KEY, last))
    with right:
        st.plotly_chart(toy_charts.trajectories(demo.data, run.grid, synth, upto=frame,
                                                title=f"DSVs from random points · step {frame}"),
                        key=f"toy_traj_chart_{job.id}", config={"displaylogo": False})
    st.markdown("**Step through the synthesis**")
    b1, b2, b3, b4 = st.columns([1, 1, 1, 5], vertical_alignment="bottom")
    b1.button("◀ Back", key="toy_back_run", on_click=_step_by, args=(-10, last), help="10 steps back")
    b2.button("Step ▶", key="toy_step_run", on_click=_step_by, args=(10, last), help="10 steps forward")
    b3.button("Start", key="toy_start_run", on_click=_step_by, args=(-last, last), help="back to step 0")
    b4.slider("Shown step (step-through for a lecture; ▶ Play on the chart animates the whole run)", 0, last,
              key=FRAME_KEY)
    e1, e2 = st.columns(2)
    with e1:
        st.plotly_chart(toy_charts.entropy_curve(synth, upto=frame, title="Entropy of the DSVs"),
                        key=f"toy_entropy_chart_{job.id}", config={"displaylogo": False})
    with e2:
        labels = list(run.distances)
        st.plotly_chart(toy_charts.distance_bars(labels, [run.distances[k] for k in labels],
                                                 title="How close to the boundary?"),
                        key=f"toy_distance_chart_{job.id}", config={"displaylogo": False})
        st.caption(f"Mean Euclidean distance to the nearest class change of each set ({len(synth.points)} DSVs; "
                   f"{len(synth.points)} top-λ, top-α and random training points). Stationarity best cos of the "
                   f"synthesis: {synth.result.trust.get('best_cosine', float('nan')):.3f}.")


def _linear_panel(run: ClassroomRun) -> None:
    demo = run.demo
    cmp = demo.comparison
    if cmp is None:
        st.warning(f"No SVC comparison: {demo.comparison_error or 'scikit-learn is not available'}.",
                   icon=":material/warning:")
        st.plotly_chart(toy_charts.lambda_map(demo.data, run.grid, demo.selection.lambdas,
                                              title="λ of every training point"),
                        key="toy_lambda_chart_linear", config={"displaylogo": False})
        return
    st.plotly_chart(toy_charts.linear_support(demo.data, run.grid, cmp.svc.support.tolist(),
                                              cmp.lambda_support.tolist(), cmp.svc.w, cmp.svc.b,
                                              title="SVC support vectors vs DeepKKT λ > 0"),
                    key="toy_support_chart", config={"displaylogo": False})
    same = len(set(cmp.svc.support.tolist()) & set(cmp.lambda_support.tolist()))
    text = (f"SVC (C = {cmp.svc.C:.3g}, the model's 1/(n·wd)): {len(cmp.svc.support)} support vectors; DeepKKT "
            f"selection: {len(cmp.lambda_support)} points with λ > 0; {same} in both.")
    if cmp.agree:
        st.success(text + " The two sets coincide.", icon=":material/check_circle:")
    else:
        st.warning(text + (" With more points on the margin than the 2 weights, stationarity fixes the multipliers "
                           "only up to a family of solutions; the selection returns one of them, and every point "
                           "it picks is on or inside the margin." if not cmp.unique else ""),
                   icon=":material/info:")
