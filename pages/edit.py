"""Edit page: move a real image toward another class with the DeepKKT loss (paper Fig. 3 and 6), as a
background job with a live preview and Stop."""
from __future__ import annotations

import streamlit as st
import torch

from app import charts, common, live
from app.jobs import Job
from dsvlib.edit import default_edit_config, edit
from dsvlib.export import export_zip, run_meta
from dsvlib.train import predict

KIND = "edit"

HOW_TO_READ = """
* The edit starts from a real image and optimises the DeepKKT objective toward a **target class**,
  with an **anchor** that pulls toward the original so its structure survives (paper Fig. 3, 6).
* **What changed** is |after - before|, scaled to its largest change: the pixels the model needed to
  move to see the target class.
* The bars are the model's class probabilities before and after. A model can be pushed to a class
  by changes a person would not read as that class: compare what you see with what the model says.
* The **cross-entropy baseline** takes the same number of steps down the plain classification loss.
  It fools the model just as well; on 100 MNIST test digits, judges of other architectures read the
  DeepKKT edits as the target far more often (87 % / 67 % against 42 % / 46 %, BENCHMARKS.md).
* A higher anchor keeps more of the original and reads less as the target: structure and class
  trade against each other.
"""


def edit_page() -> None:
    st.title("Edit an image toward a class")
    active = common.model_sidebar()
    if active is None:
        return
    common.how_to_read(HOW_TO_READ)
    st.markdown(
        "Synthesis started from a real image with a new target class: the image changes class while an "
        "anchor term keeps its structure. What changes shows what the model needs to see for that class."
    )
    names = list(active.class_names)
    family = active.data_family
    sources = (["Bundled test image"] if family else []) + ["Upload an image"] + (["Draw"] if _canvas() else [])
    source = st.radio("Start from", sources, horizontal=True, key="edit_source")
    if source == "Draw":
        drawn = _drawing(active)
        if drawn is None:
            return
        image, source_id = drawn, "drawing"
    elif source == "Bundled test image":
        ds = common.bundled_dataset(f"{family}:test")
        idx = int(st.slider("Test image index", 0, len(ds) - 1, 0, key="edit_index"))
        image, source_id = ds.images[idx:idx + 1], f"{ds.name}#{idx}"
        st.caption(f"Labelled '{names[int(ds.labels[idx])]}' in {ds.name}.")
    else:
        up = st.file_uploader("PNG or JPG", type=list(common.IMAGE_TYPES), key="edit_upload")
        if up is None:
            st.info(f"Upload an image; it is converted to {'grey' if active.spec.in_channels == 1 else 'RGB'} "
                    f"and resized to {active.spec.image_size[0]}x{active.spec.image_size[1]}.")
            return
        invert = st.session_state.get(f"edit_invert:{up.file_id}")
        try:
            prepared = common.prepare_upload(up.getvalue(), up.name, active.spec, invert=invert)
        except ValueError as e:
            st.error(str(e), icon=":material/error:")
            return
        if prepared.notes:
            st.info(f"**Input check** for {up.name}: " + "; ".join(prepared.notes) + ".", icon=":material/tune:")
        if prepared.polarity_mismatch or invert is not None:
            st.checkbox("Invert colours", value=bool(invert if invert is not None else prepared.polarity_mismatch),
                        key=f"edit_invert:{up.file_id}",
                        help="The model's data has the opposite background; inverting makes your image look "
                             "like what the model was trained on.")
        image, source_id = prepared.image, f"upload:{up.file_id}"

    probs = predict(active.model, image)[0]
    current = int(probs.argmax())
    c1, c2, c3, c4 = st.columns(4)
    default_target = (current + 1) % len(names)
    # a drawing's reading changes with every stroke: its target starts over at "another class than now"
    target_key = f"edit_target:{active.label}" + (f":{current}" if source_id == "drawing" else "")
    target_name = c1.selectbox("Target class", names, index=default_target, key=target_key)
    recipe = default_edit_config(active.kind)
    steps = int(c2.number_input("Steps", 1, 5000, recipe.steps, step=10, key="edit_steps"))
    # Adam moves every pixel by about lr per step whatever its gradient: synthesis's 0.1 buries the
    # original under noise; the recipe's value is benchmarked (bench/bench_edit.py)
    lr = float(c3.number_input("Step size", 0.001, 0.5, recipe.lr, step=0.005, format="%.3f", key="edit_lr",
                               help="Adam step on the pixels: smaller keeps more of the original."))
    anchor = float(c4.slider("Keep structure (anchor weight)", 0.0, 50.0, recipe.anchor, 1.0, key="edit_anchor",
                             help="Weight of the L2 pull toward the original image: higher keeps more of it."))
    baseline = st.checkbox("Also run the plain cross-entropy baseline (same steps and step size)", value=True,
                           key="edit_baseline",
                           help="Gradient steps on the image toward the target and nothing else: it fools the model "
                                "as well, but the change rarely looks like the target class to a person.")
    pic, text = st.columns([1, 3])
    pic.image(common.to_display(image[0], 112), width=112, caption="original")
    text.markdown(f"The model predicts **{names[current]}** ({float(probs[current]):.0%}).")
    if target_name == names[current]:
        text.info(f"The model already reads this image as '{names[current]}': pick another target class to see "
                  "what it takes to change its mind.", icon=":material/info:")
    if source_id == "drawing":  # draw and watch: what the model reads in the strokes, redrawn with every stroke
        with text, common.shown_errors("Attribution"):
            common.attribution_row(active.model, image, current, [f"why '{names[current]}'"], key="edit_draw_attribution")

    def start() -> None:
        target = names.index(target_name)
        cfg = default_edit_config(active.kind, steps=steps, anchor=anchor, lr=lr)
        _submit(active, image, target, cfg, source_id, baseline)

    job = live.job_area(KIND, "Run edit", start, key="edit_run", ncol=1, tile=common.tile)
    if job is not None:
        _show(job, active.model)

def _submit(active: common.ActiveModel, image: torch.Tensor, target: int, cfg, source_id: str, baseline: bool) -> None:
    # the shared model itself: edit() evaluates it on an eval skeleton (nothing toggled, no .grad written)
    model, device, label, names = active.model, active.device, active.label, list(active.class_names)

    def work(job: Job):
        res = edit(model, image, target, cfg, seed=0, device=device, callback=live.StepReporter(job))
        if baseline and not job.stop_requested:
            job.params["baseline"] = edit(model, image, target, cfg, method="ce", seed=0, device=device)
        job.params["meta"] = run_meta(model, model_name=label, config=cfg, seed=0, device=device, source=source_id,
                                      target=names[target], steps_run=res.steps_run, status=res.status[0],
                                      stopped=job.stop_requested)
        return res

    live.submit(KIND, f"edit of {source_id} toward '{names[target]}' on {label}", work, device=device,
                params={"model": label, "names": names, "target": target, "source": source_id})


def _show(job: Job, model: torch.nn.Module) -> None:
    if job.result is None:
        st.error(common.error_message(job.exception, "Editing") if job.exception else live.status_line(job),
                 icon=":material/error:")
        return
    res, p = job.result, job.params
    names, target = p["names"], p["target"]
    before, after = res.probs_before[0], res.probs_after[0]
    st.subheader(f"Edited toward '{names[target]}'")
    st.caption(f"Run #{job.id} on **{p['model']}**, from {p['source']}: {live.status_line(job)}.")
    b, a, d = st.columns(3)
    b.image(common.to_display(res.original[0], 168), width=168,
            caption=f"before: {names[int(before.argmax())]} ({float(before.max()):.0%})")
    a.image(common.to_display(res.edited[0], 168), width=168,
            caption=f"after: {names[int(after.argmax())]} ({float(after.max()):.0%})")
    diff = (res.edited[0] - res.original[0]).abs()
    diff = diff / max(float(diff.max()), 1e-6)
    d.image(common.to_display(diff, 168), width=168, caption="what changed (|after - before|)")
    p_target = float(after[target])
    status = res.status[0]
    if status == "failed":
        st.error(f"The edit failed: {res.messages[0]}.", icon=":material/error:")
    else:
        msg = (f"**{status}**: p({names[target]}) went from {float(before[target]):.0%} to {p_target:.0%} in "
               f"{res.seconds:.1f} s ({res.steps_run} steps).")
        (st.success if status == "reached" else st.warning)(msg + (f" Note: {res.messages[0]}." if res.messages[0] else ""))
    base = p.get("baseline")
    if base is not None:
        _baseline_row(res, base, names, target)
    st.plotly_chart(charts.probabilities_before_after(names, before.tolist(), after.tolist()), key=f"chart_edit_{job.id}")
    st.markdown(f"**Why '{names[target]}'?** What the model uses for the target class, before and after the edit.")
    with common.shown_errors("Attribution"):
        common.attribution_row(model, torch.stack([res.original[0], res.edited[0]]), target,
                               [f"before: toward {names[target]}", f"after: toward {names[target]}"],
                               key="edit_attribution")
    if "zip" not in p:
        rows = [{"role": role, "predicted": names[int(q.argmax())], "target": names[target],
                 "p_target": float(q[target]), **{f"p_{n}": float(v) for n, v in zip(names, q.tolist())}}
                for role, q in (("before", before), ("after", after), ("difference", after))]
        rows[2] = {"role": "difference", "note": "|after - before| scaled to its maximum"}
        p["zip"] = export_zip(torch.stack([res.original[0], res.edited[0], diff]), rows, p.get("meta", {}),
                              names=["before", "after", "difference"], grid_ncol=3)
    st.download_button("Download the edit (.zip: before, after, difference PNGs and probabilities)", p["zip"],
                       file_name=f"edit_run{job.id}.zip", mime="application/zip", key=f"edit_download_{job.id}",
                       icon=":material/download:")


def _baseline_row(res, base, names: list[str], target: int) -> None:
    """The DeepKKT edit beside the plain cross-entropy baseline, and p(target) along both runs."""
    st.markdown("**DeepKKT edit vs plain cross-entropy** (same steps and step size): both usually fool the model; "
                "look at which one a person would read as the target.")
    cols = st.columns(3)
    for col, img, cap in ((cols[0], res.original[0], "original"),
                          (cols[1], res.edited[0], f"DeepKKT: {res.status[0]}, p = {float(res.probs_after[0, target]):.0%}"),
                          (cols[2], base.edited[0], f"cross-entropy: {base.status[0]}, "
                                                     f"p = {float(base.probs_after[0, target]):.0%}")):
        col.image(common.to_display(img, 112), width=112, caption=cap)
    if res.frame_steps != base.frame_steps:  # a failed edit has only its first frame
        return
    st.line_chart({"step": list(res.frame_steps), f"DeepKKT p({names[target]})": res.target_probs[:, 0].tolist(),
                   f"cross-entropy p({names[target]})": base.target_probs[:, 0].tolist()}, x="step",
                  height=220)


def _canvas():
    """``st_canvas`` from streamlit-drawable-canvas (>= 0.13, Streamlit >= 1.53; in requirements.txt), or None
    where an older install lacks it: the page then offers the bundled image and uploads only."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except ImportError:
        return None
    return st_canvas


def _drawing(active: common.ActiveModel) -> torch.Tensor | None:
    """Draw and watch (paper Fig. 3, top): the model's reading of the drawing, then edit it like any image.
    Light strokes on black for models of dark-background data (MNIST), dark on white otherwise."""
    dark = sum(active.spec.mean) / len(active.spec.mean) < 0.5
    res = _canvas()(stroke_width=16, stroke_color="#ffffff" if dark else "#000000",
                    background_color="#000000" if dark else "#ffffff", height=196, width=196,
                    drawing_mode="freedraw", key="edit_canvas", return_image_data=True)
    if res is None or not (res.json_data or {}).get("objects"):
        st.info("Draw in the box (a digit for an MNIST model); the model reads it as you draw.")
        return None
    data = res.image_bytes  # None when the component sent strokes but no picture yet
    if not data:
        st.info("Draw in the box (a digit for an MNIST model); the model reads it as you draw.")
        return None
    with common.shown_errors("Reading the drawing"):
        return common.prepare_upload(data, "drawing.png", active.spec, invert=False).image
    return None
