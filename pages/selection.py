"""Lambda ranking page: fit λ for fixed real images and rank them (paper Sec. 5.1, Fig. 2b), as a
background job with progress and Stop."""
from __future__ import annotations

from typing import Any

import streamlit as st
import torch

from app import charts, common, live
from app.jobs import Job
from dsvlib.export import export_zip, run_meta

KIND = "rank"

HOW_TO_READ = """
* The images are fixed; only a multiplier **λᵢ ≥ 0** per image is fitted so that a weighted sum of the
  images' gradients points like the model's weights (θ ≈ -Σ λᵢ ∇θ L(xᵢ), paper Eq. 8).
* **High λ**: the model needs this image to explain its weights; these are the deep support vectors
  among your data (paper Sec. 5.1). **λ = 0**: the image does not support the weights at all (like a
  point far from an SVM's margin); many images share λ = 0, so they are tied, not ranked.
* **Stationarity cos** with equal λ versus fitted λ: how much better a weighting explains the weights.
* **The chart** puts each class's Σλ next to its test accuracy: the paper reports that they go together
  (Fig. 2b); the correlation shown is measured on *this* model and data.
"""


def selection_page() -> None:
    st.title("Rank real images by λ")
    active = common.model_sidebar()
    if active is None:
        return
    common.how_to_read(HOW_TO_READ)
    st.markdown(
        "With the images fixed, only the multipliers λ ≥ 0 are fitted so that θ ≈ -Σ λᵢ ∇θ L(xᵢ). "
        "The images with the largest λ are the model's support vectors among your data. The paper "
        "reports that the classwise sum of λ follows classwise accuracy (Fig. 2b); the chart below "
        "measures that relation for the selected model, with its p-value, so read it as a measurement "
        "of this model, not as a verdict."
    )
    import dsvlib.select as select

    family = active.data_family
    if family is None:
        st.info("No bundled data set fits this model (input shape and class count); ranking your own "
                "image folder is available from the command line: `dsv rank --model M --data FOLDER`.",
                icon=":material/info:")
        return

    c1, c2, c3, c4 = st.columns(4)
    split = c1.selectbox("Data", [f"{family}:train", f"{family}:test"], key=f"sel_split:{family}")
    ds = common.bundled_dataset(split)
    lo = min(50, len(ds))
    n = int(c2.slider("Images (random subset)", lo, len(ds), min(500, len(ds)), step=50, key=f"sel_n:{split}"))
    steps = int(c3.number_input("Steps (at most)", 1, 5000, 300, step=50, key="sel_steps",
                                help="The solver stops earlier once the fit no longer improves."))
    seed = int(c4.number_input("Seed", 0, 2**31 - 1, 0, key="sel_seed"))
    job = live.job_area(KIND, "Fit λ", lambda: _submit(active, split, n, steps, seed, family, select), key="sel_run")
    if job is not None:
        if job.result is None:
            st.error(common.error_message(job.exception, "Fitting λ") if job.exception else live.status_line(job),
                     icon=":material/error:")
        else:
            with common.shown_errors("Showing the ranking"):
                _show(active, job, select)


def _submit(active: common.ActiveModel, split: str, n: int, steps: int, seed: int, family: str, select: Any) -> None:
    subset = common.random_subset(common.bundled_dataset(split), n, seed)
    test = common.bundled_dataset(f"{family}:test")
    # the shared model itself: fit_lambdas reads it functionally (nothing toggled, no .grad written)
    model, device, label = active.model, active.device, active.label

    def work(job: Job):
        res = select.fit_lambdas(model, subset.images, subset.labels, steps=steps, seed=seed, device=device,
                                 callback=live.StepReporter(job, preview=False))
        job.report(text="classwise correlation with test accuracy ...")
        corr = {by: select.classwise_correlation(res, model, test, by=by, permutations=2000) for by in select.SCORES}
        job.params["meta"] = run_meta(model, model_name=label, seed=seed, device=device, data=split, images=n,
                                      steps=steps, steps_run=res.steps_run, stopped=job.stop_requested,
                                      cosine=res.cosine, uniform_cosine=res.uniform_cosine)
        return res, corr

    live.submit(KIND, f"λ for {n} images of {split} on {label}", work, device=device,
                params={"model": label, "split": split, "data": subset, "test_name": test.name})


def _show(active: common.ActiveModel, job: Job, select: Any) -> None:
    res, corr_all = job.result
    data = job.params["data"]
    names = list(res.class_names)
    st.subheader(f"Result on {len(res.lambdas)} images of {job.params['split']}")
    st.caption(f"Run #{job.id} on **{job.params['model']}**: {live.status_line(job)}.")
    if job.status == "stopped":
        st.warning("Stopped before the solver converged: the multipliers are a partial fit.",
                   icon=":material/stop_circle:")
    by = st.radio("Rank by", list(select.SCORES), horizontal=True, key="sel_by",
                  format_func=lambda s: {"lambda": "λ (multiplier)",
                                         "alpha": "α = λ·|∂L/∂logits| (the SVM-dual reading)"}.get(s, s))
    sym = "λ" if by == "lambda" else "α"
    score = res.score(by)
    corr = corr_all[by]
    cols = st.columns(4)
    cols[0].metric(f"Images with {sym} > 0", f"{int((score > 0).sum())} / {len(score)}")
    cols[1].metric("Stationarity cos, equal λ", f"{res.uniform_cosine:.3f}",
                   help="cos(θ, -Σ ∇L) with one common multiplier: how well stationarity holds before fitting.")
    cols[2].metric("Stationarity cos, fitted λ", f"{res.cosine:.3f}",
                   delta=f"{res.cosine - res.uniform_cosine:+.3f}")
    cols[3].metric(f"Correlation Σ{sym} vs accuracy", f"{corr['pearson']:+.2f}",
                   help=f"Pearson r across classes (permutation p = {corr['pearson_p']:.3f}); Spearman ρ = "
                        f"{corr['spearman']:+.2f}. The paper (Fig. 2b) relates classwise Σλ to classwise "
                        "test accuracy.")
    st.caption(f"{res.steps_run} solver steps in {res.seconds:.1f} s"
               f"{' (converged)' if res.converged else ''}; test accuracy per class from {job.params['test_name']}; "
               f"correlation p = {corr['pearson_p']:.3f}.")
    st.plotly_chart(charts.class_lambda_vs_accuracy(names, corr["class_sum"], corr["class_accuracy"], symbol=sym),
                    key=f"chart_sel_{job.id}")

    k = int(st.slider("Images per class to show", 1, 10, 5, key="sel_k"))
    top, bottom = st.tabs([f"Highest {sym} (the selected DSVs)", f"Lowest {sym}"])
    with top:
        _per_class(select.top_per_class(res, k, by=by), res, data, score, names, corr, sym, zero_note=False)
    with bottom:
        _per_class(select.bottom_per_class(res, k, by=by), res, data, score, names, corr, sym, zero_note=True)
    _download(job, res, data, score, names, by)


def _per_class(picks: torch.Tensor, res: Any, data: Any, score: torch.Tensor, names: list[str], corr: dict,
               sym: str, *, zero_note: bool) -> None:
    for c, name in enumerate(names):
        idx = picks[res.labels[picks] == c]
        if len(idx) == 0:
            continue
        in_class = res.labels == c
        zeros = int((score[in_class] <= 0).sum())
        note = ""
        if zero_note and zeros:
            # Many images share λ = 0: no order exists among them; say so instead of implying a ranking.
            shown = int((score[idx] <= 0).sum())
            note = (f" · **{zeros} images tied at {sym} = 0** (they do not support the weights); "
                    f"{shown} of them shown, in data order")
        st.markdown(f"**{name}** · Σ{sym} = {float(corr['class_sum'][c]):.3g} · {int(in_class.sum())} images{note}")
        caps = []
        for i in idx.tolist():
            value = f"{sym} = 0 (tied)" if float(score[i]) <= 0 else f"{sym}={float(score[i]):.3g}"
            caps.append(value + ("" if int(res.pred[i]) == c else f" · pred {names[int(res.pred[i])]}"))
        common.show_images(data.images[idx], caps, per_row=10, min_slots=10)


def _download(job: Job, res: Any, data: Any, score: torch.Tensor, names: list[str], by: str) -> None:
    cache = job.params.setdefault("zips", {})  # built once per job and ranking: reruns reuse it
    if by not in cache:
        cache[by] = _zip(job, res, data, score, names, by)
    n = len(score)
    st.download_button(f"Download the ranking (.zip: {n} PNGs in {by} order, metrics.csv)", cache[by],
                       file_name=f"ranking_run{job.id}.zip", mime="application/zip", key=f"sel_download_{job.id}",
                       icon=":material/download:")


def _zip(job: Job, res: Any, data: Any, score: torch.Tensor, names: list[str], by: str) -> bytes:
    order = torch.argsort(score, descending=True, stable=True)
    rows = [{"data_index": int(i), "label": int(res.labels[i]), "class_name": names[int(res.labels[i])],
             "predicted": int(res.pred[i]), "lambda": float(res.lambdas[i]), "alpha": float(res.alphas[i]),
             "entropy": float(res.entropy[i]), "rank_by": by} for i in order.tolist()]
    return export_zip(data.images[order], rows, job.params.get("meta", {}))
