"""Lambda ranking page: fit λ for fixed real images and rank them (paper Sec. 5.1, Fig. 2b)."""
from __future__ import annotations

import time
from typing import Any, Callable

import streamlit as st

from app import charts, common

RESULT_KEY = "selection_result"


def selection_page() -> None:
    st.title("Rank real images by λ")
    active = common.model_sidebar()
    if active is None:
        return
    st.markdown(
        "With the images fixed, only the multipliers λ ≥ 0 are fitted so that θ ≈ -Σ λᵢ ∇θ L(xᵢ). "
        "The images with the largest λ are the model's support vectors among your data. The paper "
        "reports that the classwise sum of λ follows classwise accuracy; on our MNIST model the "
        "correlation came out positive but not significant (BENCHMARKS.md), so read the chart below "
        "as a measurement, not a verdict."
    )
    try:
        import dsvlib.select as select
    except ImportError as e:
        st.warning(f"Selection is not available in this installation yet: dsvlib.select could not be "
                   f"imported ({e}).", icon=":material/construction:")
        return
    family = active.data_family
    if family is None:
        st.info("No bundled data set fits this model (input shape and class count); ranking your own "
                "image folder is not in the app yet.", icon=":material/info:")
        return

    c1, c2, c3, c4 = st.columns(4)
    split = c1.selectbox("Data", [f"{family}:train", f"{family}:test"], key=f"sel_split:{family}")
    ds = common.bundled_dataset(split)
    lo = min(50, len(ds))
    n = int(c2.slider("Images (random subset)", lo, len(ds), min(500, len(ds)), step=50, key=f"sel_n:{split}"))
    steps = int(c3.number_input("Steps (at most)", 1, 5000, 300, step=50, key="sel_steps",
                                help="The solver stops earlier once the fit no longer improves."))
    seed = int(c4.number_input("Seed", 0, 2**31 - 1, 0, key="sel_seed"))
    if st.button("Fit λ", type="primary", key="sel_run"):
        subset = common.random_subset(ds, n, seed)
        bar = st.progress(0.0, text="preparing ...")
        try:
            with common.shown_errors("Fitting λ"):
                res = select.fit_lambdas(active.working_copy(), subset.images, subset.labels, steps=steps,
                                         seed=seed, device=active.device, callback=_progress(bar))
                test = common.bundled_dataset(f"{family}:test")
                corr = {by: select.classwise_correlation(res, active.model, test, by=by, permutations=2000)
                        for by in select.SCORES}
                st.session_state[RESULT_KEY] = {"model": active.label, "split": split, "data": subset,
                                                "res": res, "corr": corr}
        finally:
            bar.empty()

    stored = st.session_state.get(RESULT_KEY)
    if stored and stored["model"] == active.label:
        with common.shown_errors("Showing the ranking"):
            _show(active, stored, select)


def _progress(bar: Any, min_interval: float = 0.15) -> Callable[[Any], bool]:
    """fit_lambdas' callback as a progress bar: first the per-sample gradients, then the solver."""
    last = [0.0]

    def on_step(info: Any) -> bool:
        now = time.perf_counter()
        if now - last[0] < min_interval and info.step < info.steps:
            return False
        last[0] = now
        frac = min(max(info.step / max(info.steps, 1), 0.0), 1.0)
        if info.phase == "gradients":
            bar.progress(frac, text=f"per-sample gradients: batch {info.step}/{info.steps}")
        else:
            bar.progress(frac, text=f"fitting λ: step {info.step}/{info.steps} · stationarity cos "
                                    f"{info.cosine:.3f} · {info.support} images with λ > 0 · {info.elapsed:.1f} s")
        return False

    return on_step


def _show(active: common.ActiveModel, stored: dict, select: Any) -> None:
    res, data = stored["res"], stored["data"]
    names = list(active.class_names)
    st.subheader(f"Result on {len(res.lambdas)} images of {stored['split']}")
    by = st.radio("Rank by", list(select.SCORES), horizontal=True, key="sel_by",
                  format_func=lambda s: {"lambda": "λ (multiplier)",
                                         "alpha": "α = λ·|∂L/∂logits| (the SVM-dual reading)"}.get(s, s))
    sym = "λ" if by == "lambda" else "α"
    score = res.score(by)
    corr = stored["corr"][by]
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
               f"{' (converged)' if res.converged else ''}; test accuracy per class from "
               f"{common.bundled_dataset(active.data_family + ':test').name}.")
    st.plotly_chart(charts.class_lambda_vs_accuracy(names, corr["class_sum"], corr["class_accuracy"], symbol=sym),
                    key="sel_chart")

    k = int(st.slider("Images per class to show", 1, 10, 5, key="sel_k"))
    top, bottom = st.tabs([f"Highest {sym} (the selected DSVs)", f"Lowest {sym}"])
    for tab, picks in ((top, select.top_per_class(res, k, by=by)), (bottom, select.bottom_per_class(res, k, by=by))):
        with tab:
            for c, name in enumerate(names):
                idx = picks[res.labels[picks] == c]
                if len(idx) == 0:
                    continue
                st.markdown(f"**{name}** · Σ{sym} = {float(corr['class_sum'][c]):.3g} · "
                            f"{int((data.labels == c).sum())} images")
                caps = [f"{sym}={float(score[i]):.3g}" + ("" if int(res.pred[i]) == c else f" · pred {names[int(res.pred[i])]}")
                        for i in idx.tolist()]
                common.show_images(data.images[idx], caps, per_row=10, min_slots=10)
