"""Model page: pick a shipped model or upload one; its spec, model card and trust signals."""
from __future__ import annotations

import json
from typing import Any

import streamlit as st

import dsvlib
from app import common
from dsvlib import ModelSpec

INTRO = (
    "**Deep support vectors** (DSVs) are the few inputs that pin down a trained classifier, the way "
    "support vectors pin down an SVM. DSV Studio recovers them from the model alone (no training "
    "data) by solving the DeepKKT conditions, ranks real images by their multiplier λ, and edits "
    "images toward another class. Pick a model in the sidebar, then use the pages on the left."
)

TRUST_TEXT = {
    "strong": "the weights are close to a weighted sum of training gradients, so DeepKKT can recover "
              "what the model learned: the DSVs are trustworthy.",
    "partial": "stationarity holds in part: DSVs show the class "
               "features the model relies on; read their fine detail with care.",
    "weak": "stationarity barely holds (typical of training without weight decay, e.g. plain Adam): read "
            "DSVs as class visualisations rather than support vectors.",
}


def model_page() -> None:
    st.title("DSV Studio")
    st.markdown(INTRO)
    summary = st.container()
    st.divider()
    _upload_section()  # before the picker, so that a fresh upload is selected in this very run
    active = common.model_sidebar()
    if active is not None:
        with summary:
            _show_model(active)


# --------------------------------------------------------------------------- the chosen model


def _show_model(active: common.ActiveModel) -> None:
    spec = active.spec
    st.header(f"Model: {active.label}")
    card = active.card or st.session_state.get("measured_cards", {}).get(active.label)
    if card:
        _show_card(card, spec)
    else:
        st.info("This model has no model card. Measure its accuracy and how well it satisfies the "
                "stationarity condition on the bundled data that fits it.", icon=":material/info:")
        _measure_button(active)

    n_params = sum(p.numel() for p in active.model.parameters())
    rows = {
        "architecture": spec.arch,
        "architecture options": json.dumps(spec.arch_kwargs) if spec.arch_kwargs else "-",
        "classes": f"{spec.num_classes}: {', '.join(spec.class_names)}",
        "input (C x H x W)": f"{spec.in_channels} x {spec.image_size[0]} x {spec.image_size[1]}",
        "normalisation mean / std": f"{spec.mean} / {spec.std}",
        "parameters": f"{n_params:,}",
        "device": active.device,
        "bundled data that fits": active.data_family or "none",
    }
    st.subheader("Spec")
    st.table({"field": list(rows), "value": [str(v) for v in rows.values()]}, border="horizontal", hide_index=True)


def _show_card(card: dict[str, Any], spec: ModelSpec) -> None:
    cols = st.columns(4)
    metrics = [("Test accuracy", "test_accuracy", "{:.1%}"), ("Train accuracy", "train_accuracy", "{:.1%}"),
               ("Stationarity cos", "stationarity_cosine", "{:.2f}"),
               ("Stationarity cos, last layer", "stationarity_cosine_last", "{:.2f}")]
    for col, (label, key, fmt) in zip(cols, metrics):
        value = card.get(key)
        col.metric(label, fmt.format(value) if isinstance(value, (int, float)) else "-",
                   help="cos(-θ, Σ∇L) over the training data: 1 means the weights are exactly a "
                        "weighted sum of the training gradients (the KKT stationarity condition)."
                   if key.startswith("stationarity") else None)
    cos_all = common.card_cosine(card)
    strength = common.cosine_strength(cos_all)
    if strength != "unknown":
        last = card.get("stationarity_cosine_last")
        extra = f" (last layer alone: {last:.2f})" if isinstance(last, (int, float)) else ""
        common.strength_box(strength, f"**Trust: {strength}.** Stationarity cosine {cos_all:.2f}{extra}: "
                                      f"{TRUST_TEXT[strength]}")
    shortcut = card.get("shortcut")
    if shortcut:
        biased = shortcut.get("biased_class", "?")
        st.warning(
            f"**Planted shortcut.** A small corner mark flips "
            f"{shortcut.get('mark_flips_to_biased_class', float('nan')):.0%} of the test images of other "
            f"classes to '{biased}'; their accuracy falls from "
            f"{shortcut.get('other_classes_clean_accuracy', float('nan')):.0%} to "
            f"{shortcut.get('other_classes_marked_accuracy', float('nan')):.0%} with the mark. The model "
            f"learned the shortcut: look for the mark in the '{biased}' DSVs.", icon=":material/flag:")
    if card.get("recipe"):
        with st.expander("Training recipe"):
            if card.get("command"):
                st.code(card["command"], language="bash")
            st.json(card["recipe"], expanded=False)
            if card.get("training_seconds"):
                st.caption(f"trained in {card['training_seconds']:.0f} s on {card.get('machine', '?')}")


def _measure_button(active: common.ActiveModel) -> None:
    family = active.data_family
    if family is None:
        st.caption("No bundled data set has this model's input shape and class count.")
        return
    if not st.button(f"Measure on {family} data", key="measure_card"):
        return
    from dsvlib.kkt import dataset_gradient_cosine
    from dsvlib.train import accuracy

    with common.shown_errors("Measuring the model"), st.spinner("Measuring ..."):
        train = common.random_subset(common.bundled_dataset(f"{family}:train"), 1000, seed=0)
        test = common.bundled_dataset(f"{family}:test")
        model = active.working_copy()
        card = {
            "test_accuracy": accuracy(model, test.images, test.labels),
            "train_accuracy": accuracy(model, train.images, train.labels),
            "stationarity_cosine": dataset_gradient_cosine(model, train.images, train.labels, params="auto"),
            "stationarity_cosine_last": dataset_gradient_cosine(model, train.images, train.labels, params="last"),
        }
        st.session_state.setdefault("measured_cards", {})[active.label] = card
        st.rerun()


# --------------------------------------------------------------------------- upload


def _upload_section() -> None:
    st.subheader("Use your own model")
    st.markdown(
        "Upload a **.safetensors** file written by `dsvlib.save_model` (its spec travels in the metadata). "
        "A plain PyTorch **state_dict** (.pt/.pth, or safetensors without dsvlib metadata) works too when "
        "you describe its architecture below. Files are read as tensors only: pickled code is never run."
    )
    with st.expander("Architecture for a plain state_dict"):
        spec, spec_error = _spec_form()
    up = st.file_uploader("Model file", type=list(common.MODEL_TYPES), key="model_upload")
    if up is None:
        return
    if spec_error:
        st.error(f"The architecture form is invalid: {spec_error}", icon=":material/error:")
        return
    attempt_key = f"{up.file_id}|{spec.to_json() if spec else ''}"
    attempt = st.session_state.get("upload_attempt")
    if attempt is None or attempt["key"] != attempt_key:
        # Load once per file (and spec); reruns only re-show the outcome.
        attempt = {"key": attempt_key, "error": None, "label": None}
        try:
            with st.spinner(f"Reading {up.name} ..."):
                model, loaded_spec = common.model_from_upload(up.getvalue(), up.name, spec=spec)
            label = f"{up.name} (uploaded)"
            common.set_uploaded_model(label, model, loaded_spec, up.file_id)
            attempt["label"] = label
        except Exception as e:  # noqa: BLE001 - shown to the user; the app keeps working
            attempt["error"] = common.error_message(e, f"Loading {up.name}")
            if "no dsvlib spec" in attempt["error"]:
                attempt["error"] += (" In the app: open 'Architecture for a plain state_dict' above, describe "
                                     "the network and tick 'use this architecture'.")
        st.session_state["upload_attempt"] = attempt
    if attempt["error"]:
        st.error(attempt["error"], icon=":material/error:")
    else:
        st.success(f"Loaded {up.name}; it is now the active model (see the sidebar).",
                   icon=":material/check_circle:")


def _spec_form() -> tuple[ModelSpec | None, str | None]:
    """The spec typed in by the user, or (None, None) when the form is off, or (None, error)."""
    use = st.checkbox("My file has no dsvlib metadata: use this architecture", key="spec_use")
    c1, c2, c3 = st.columns(3)
    arch = c1.text_input("Architecture", "convnet", key="spec_arch",
                         help=f"Registered: {', '.join(dsvlib.list_models())}; or torchvision:<name>")
    kwargs_text = c1.text_input("Architecture options (JSON)", '{"width": 32, "depth": 3, "norm": "instance"}',
                                key="spec_kwargs")
    num_classes = int(c2.number_input("Classes", 2, 100000, 10, key="spec_classes"))
    in_channels = int(c2.selectbox("Channels", [1, 3], key="spec_channels"))
    size = int(c3.number_input("Image size (pixels, square)", 8, 1024, 28, key="spec_size"))
    mean_text = c3.text_input("Mean (comma separated)", "0.1307", key="spec_mean")
    std_text = c3.text_input("Std (comma separated)", "0.3081", key="spec_std")
    names_text = st.text_input("Class names (comma separated, optional)", "", key="spec_names")
    if not use:
        return None, None
    try:
        arch_kwargs = json.loads(kwargs_text or "{}")
        if not isinstance(arch_kwargs, dict):
            raise ValueError("architecture options must be a JSON object such as {\"width\": 32}")
        names = tuple(n.strip() for n in names_text.split(",") if n.strip())
        spec = ModelSpec(arch=arch.strip(), num_classes=num_classes, in_channels=in_channels, image_size=size,
                         mean=tuple(float(v) for v in mean_text.split(",")),
                         std=tuple(float(v) for v in std_text.split(",")),
                         class_names=names, arch_kwargs=arch_kwargs, name="uploaded")
    except (ValueError, TypeError) as e:
        return None, str(e)
    return spec, None
