"""Synthesize page: DSVs from the model alone (DeepKKT, paper Sec. 4), with a live preview."""
from __future__ import annotations

import io

import numpy as np
import streamlit as st

from app import charts, common
from dsvlib.synthesize import SynthResult, default_config, soft_targets, synthesize
from dsvlib.train import predict

RESULT_KEY = "synth_result"
MIX_KEY = "mix_result"


def synthesize_page() -> None:
    st.title("Synthesize deep support vectors")
    active = common.model_sidebar()
    if active is None:
        return
    st.markdown(
        "Candidates start from noise and are optimised until the model classifies them as their "
        "class **and** a weighted sum of their gradients reproduces the model's weights "
        "(θ = -Σ λᵢ ∇θ L(xᵢ)). λᵢ is each candidate's multiplier; a candidate whose λ turns "
        "negative is dropped (it is not a support vector)."
    )
    names = list(active.class_names)
    # Class widgets are keyed by model: another model's class names are not valid options here.
    chosen = st.multiselect("Classes", names, default=names, key=f"synth_classes:{active.label}")
    c1, c2, c3 = st.columns(3)
    # the benchmarked recipe: 10 per class x 300 steps (about 55 s for 10 classes on 2 CPU cores)
    per_class = int(c1.number_input("Images per class", 1, 50, 10, key="synth_per_class"))
    steps = int(c2.number_input("Steps", 1, 5000, default_config(active.kind).steps, step=10, key="synth_steps",
                                help="The default is the benchmarked recipe (BENCHMARKS.md); short runs give rougher "
                                     "DSVs and a weaker trust reading."))
    seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="synth_seed"))
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        params = a1.selectbox("Stationarity on", ["all", "last"], key="synth_params",
                              format_func=lambda p: {"all": "all parameters", "last": "last layer only (paper Fig. 4)"}[p])
        distance = a2.selectbox("Stationarity distance", ["cos", "l1", "l2", "none"], key="synth_distance",
                                help="cos: scale-free (default); l1: the paper's Eq. 8; l2: Alg. 1; "
                                     "none: class maximisation only, no stationarity.")
    n = len(chosen) * per_class
    st.caption(f"{n} candidates x {steps} steps on {active.device}.")
    if st.button("Run synthesis", type="primary", key="synth_run", disabled=n == 0):
        targets = [names.index(c) for c in chosen for _ in range(per_class)]
        cfg = default_config(active.kind, steps=steps, params=params, stationarity=distance)
        result = _run(active, targets, cfg, seed, ncol=len(chosen))
        if result is not None:
            st.session_state[RESULT_KEY] = {"result": result, "model": active.label, "names": names}

    stored = st.session_state.get(RESULT_KEY)
    if stored and stored["model"] == active.label:
        _show_result(stored["result"], stored["names"], active)

    with st.expander("Soft-label mixing: between two classes (paper Fig. 6)"):
        _mixing(active, names)


def _run(active: common.ActiveModel, targets, cfg, seed: int, ncol: int) -> SynthResult | None:
    """One synthesis with a live progress bar and preview; None (and an error box) on failure."""
    progress = common.LiveProgress(cfg.steps, preview_every=10, ncol=max(ncol, 1))
    try:
        with common.shown_errors("Synthesis"):
            return synthesize(active.working_copy(), targets, cfg, seed=seed, device=active.device,
                              callback=progress)
    finally:
        progress.clear()
    return None


def _show_result(result: SynthResult, names: list[str], active: common.ActiveModel) -> None:
    n = len(result.labels)
    st.subheader("Result")
    st.caption(f"{n} candidates, {result.steps_run} steps in {result.seconds:.1f} s on {active.device}; "
               f"{int(result.kept.sum())}/{n} kept (λ ≥ 0).")
    reading = result.trust.get("reading", "")
    common.strength_box(reading.split(" ", 1)[0] if reading else "unknown", f"**Trust reading:** {reading}")
    card_cos = common.card_cosine(active.card)
    if result.trust.get("best_cosine") is not None:
        st.caption("The reading uses the best stationarity cosine this run reached; it rises with more steps "
                   "and candidates." + (f" For comparison, the model's training data reach {card_cos:.2f} "
                                        "(Model page)." if isinstance(card_cos, (int, float)) else ""))
    probs = result.history.get("target_prob") or [[float("nan")] * n]
    # One column per class, one row per repetition.
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(result.labels.tolist()):
        groups.setdefault(label, []).append(i)
    classes = sorted(groups)
    order = [groups[c][r] for r in range(max(map(len, groups.values()))) for c in classes if r < len(groups[c])]
    captions = []
    for i in order:
        cap = f"{names[int(result.labels[i])]} · λ={float(result.lambdas[i]):.2f} · p={probs[-1][i]:.2f}"
        captions.append(cap if bool(result.kept[i]) else cap + " · dropped")
    common.show_images(result.images[order], captions, per_row=min(len(classes), 10))
    st.plotly_chart(charts.synthesis_history(result.history), key="synth_history")
    buf = io.BytesIO()
    np.savez_compressed(buf, images=result.images.numpy(), labels=result.labels.numpy(),
                        lambdas=result.lambdas.numpy(), kept=result.kept.numpy())
    st.download_button("Download images (.npz)", buf.getvalue(), file_name="dsvs.npz",
                       mime="application/octet-stream", key="synth_download")


def _mixing(active: common.ActiveModel, names: list[str]) -> None:
    st.caption("Target y = (1 - δ) e_a + δ e_b: the class becomes a continuous latent.")
    c1, c2, c3, c4 = st.columns(4)
    a = c1.selectbox("Class a", names, index=0, key=f"mix_a:{active.label}")
    b = c2.selectbox("Class b", names, index=min(1, len(names) - 1), key=f"mix_b:{active.label}")
    delta = float(c3.slider("δ (share of b)", 0.0, 1.0, 0.5, 0.05, key="mix_delta"))
    count = int(c4.number_input("Images", 1, 20, 2, key="mix_count"))
    steps = int(st.number_input("Mixing steps", 1, 5000, 150, step=10, key="mix_steps"))
    if st.button("Run mixing", key="mix_run"):
        ia, ib = names.index(a), names.index(b)
        targets = soft_targets([ia] * count, [ib] * count, delta, len(names))
        result = _run(active, targets, default_config(active.kind, steps=steps), 0, ncol=count)
        if result is not None:
            with common.shown_errors("Scoring the mixed images"):
                p = predict(active.model, result.images)
                st.session_state[MIX_KEY] = {"result": result, "model": active.label, "a": ia, "b": ib,
                                             "delta": delta, "probs": p}
    mixed = st.session_state.get(MIX_KEY)
    if mixed and mixed["model"] == active.label:
        na, nb, p = names[mixed["a"]], names[mixed["b"]], mixed["probs"]
        st.markdown(f"**{na} → {nb}, δ = {mixed['delta']:.2f}**: the model's probabilities of the results")
        captions = [f"p({na})={float(q[mixed['a']]):.2f} · p({nb})={float(q[mixed['b']]):.2f}" for q in p]
        common.show_images(mixed["result"].images, captions, per_row=min(len(p), 10))
