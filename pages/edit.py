"""Edit page: move a real image toward another class with the DeepKKT loss (paper Fig. 3 and 6)."""
from __future__ import annotations

import streamlit as st

from app import charts, common
from dsvlib.edit import default_edit_config
from dsvlib.synthesize import synthesize
from dsvlib.train import predict

RESULT_KEY = "edit_result"


def edit_page() -> None:
    st.title("Edit an image toward a class")
    active = common.model_sidebar()
    if active is None:
        return
    st.markdown(
        "Synthesis started from a real image with a new target class: the image changes class while an "
        "anchor term keeps its structure. What changes shows what the model needs to see for that class."
    )
    names = list(active.class_names)
    family = active.data_family
    sources = (["Bundled test image"] if family else []) + ["Upload an image"]
    source = st.radio("Start from", sources, horizontal=True, key="edit_source")
    if source == "Bundled test image":
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
        try:
            image = common.image_from_upload(up.getvalue(), up.name, active.spec)
        except ValueError as e:
            st.error(str(e), icon=":material/error:")
            return
        source_id = f"upload:{up.file_id}"

    probs = predict(active.model, image)[0]
    current = int(probs.argmax())
    c1, c2, c3, c4 = st.columns(4)
    default_target = (current + 1) % len(names)
    target_name = c1.selectbox("Target class", names, index=default_target, key=f"edit_target:{active.label}")
    steps = int(c2.number_input("Steps", 1, 5000, 100, step=10, key="edit_steps"))
    # Adam moves every pixel by about lr per step whatever its gradient, so synthesis's lr of 0.1
    # buries the original under noise within a few dozen steps; 0.02 keeps the strokes.
    lr = float(c3.number_input("Step size", 0.001, 0.5, 0.02, step=0.005, format="%.3f", key="edit_lr",
                               help="Adam step on the pixels: smaller keeps more of the original."))
    anchor = float(c4.slider("Keep structure (anchor weight)", 0.0, 50.0, 10.0, 1.0, key="edit_anchor",
                             help="Weight of the L2 pull toward the original image: higher keeps more of it."))
    pic, text = st.columns([1, 3])
    pic.image(common.to_display(image[0], 112), width=112, caption="original")
    text.markdown(f"The model predicts **{names[current]}** ({float(probs[current]):.0%}).")

    if st.button("Run edit", type="primary", key="edit_run"):
        target = names.index(target_name)
        cfg = default_edit_config(active.kind, steps=steps, anchor=anchor, lr=lr)
        progress = common.LiveProgress(steps, preview_every=10, ncol=1)
        try:
            with common.shown_errors("Editing"):
                res = synthesize(active.working_copy(), [target], cfg, init=image, seed=0, device=active.device,
                                 callback=progress)
                after = predict(active.model, res.images)[0]
                st.session_state[RESULT_KEY] = {"model": active.label, "source": source_id, "target": target,
                                                "before_img": image, "after_img": res.images, "before": probs,
                                                "after": after, "trust": res.trust, "seconds": res.seconds}
        finally:
            progress.clear()

    stored = st.session_state.get(RESULT_KEY)
    if stored and stored["model"] == active.label and stored["source"] == source_id:
        _show(stored, names)


def _show(stored: dict, names: list[str]) -> None:
    before, after, target = stored["before"], stored["after"], stored["target"]
    st.subheader(f"Edited toward '{names[target]}'")
    b, a, d = st.columns(3)
    b.image(common.to_display(stored["before_img"][0], 168), width=168, caption=f"before: {names[int(before.argmax())]} "
                                                                       f"({float(before.max()):.0%})")
    a.image(common.to_display(stored["after_img"][0], 168), width=168, caption=f"after: {names[int(after.argmax())]} "
                                                                     f"({float(after.max()):.0%})")
    diff = (stored["after_img"][0] - stored["before_img"][0]).abs()
    d.image(common.to_display(diff / max(float(diff.max()), 1e-6), 168), width=168, caption="what changed (|after - before|)")
    p_target = float(after[target])
    msg = f"p({names[target]}) went from {float(before[target]):.0%} to {p_target:.0%} in {stored['seconds']:.1f} s."
    (st.success if int(after.argmax()) == target else st.warning)(msg)
    st.plotly_chart(charts.probabilities_before_after(names, before.tolist(), after.tolist()), key="edit_probs")
