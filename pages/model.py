"""Model page: pick a shipped model or upload one; its spec, model card and trust signals."""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import streamlit as st

import dsvlib
from app import common
from dsvlib import ModelSpec
from dsvlib.limits import get_limits
from dsvlib.models import ONNX_ARCH, ArchOption, arch_options

INTRO = (
    "**Deep support vectors** (DSVs) are the few inputs that pin down a trained classifier, the way "
    "support vectors pin down an SVM. DSV Studio recovers them from the model alone (no training "
    "data) by solving the DeepKKT conditions, ranks real images by their multiplier λ, and edits "
    "images toward another class. Pick a model in the sidebar, then use the pages on the left."
)

FORM_KEY = "model_form"  # session: the architecture form's last values, widget key -> value
ATTEMPT_KEY = "upload_attempt"  # session: the outcome of the last upload, so that reruns do not load again
TORCHVISION = "torchvision:<name>"  # the form's choices besides the registry's names
ONNX_GRAPH = "ONNX graph"
FORM_TITLE = "Architecture for a plain state_dict or an ONNX graph"
MEASURE_TRAIN_IMAGES = 1000

TRUST_TEXT = {
    "strong": "the weights are close to a weighted sum of training gradients, so DeepKKT can recover "
              "what the model learned: the DSVs are trustworthy.",
    "partial": "stationarity holds in part: DSVs show the class "
               "features the model relies on; read their fine detail with care.",
    "weak": "stationarity barely holds (typical of training without weight decay, e.g. plain Adam): read "
            "DSVs as class visualisations rather than support vectors.",
}


HOW_TO_READ = """
* **Test / train accuracy**: how often the model is right; the card says on which data.
* **Stationarity cos**: cos(-θ, Σ∇L) over the training data, the DeepKKT stationarity condition with
  equal multipliers. Near 1, the weights are a weighted sum of training gradients and the DSVs the
  other pages recover reflect what the model learned (**trust: strong**); near 0 (typical of Adam
  without weight decay, or of BatchNorm weights), read DSVs as class visualisations (**weak**).
* **Last layer**: the same cosine on the classifier head alone (paper Fig. 4: partial parameters).
* A model without a card can be **measured** on the bundled data that fits it (button below).
* Uploads stay in the sidebar's list for this browser session; nothing is stored on the server's disk.
"""


def model_page() -> None:
    st.title("DSV Studio")
    st.markdown(INTRO)
    common.how_to_read(HOW_TO_READ)
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
    st.download_button("Download the model's spec and card (.json)", _model_summary(active, card),
                       file_name=f"{common.safe_filename(active.label, 'model')}.summary.json", mime="application/json",
                       key="model_summary_download", icon=":material/download:")


def _model_summary(active: common.ActiveModel, card: dict[str, Any] | None) -> str:
    """The spec, the card (shipped, or measured on this page) and the weights' fingerprint, as JSON."""
    import dataclasses

    from dsvlib.export import jsonable, model_fingerprint

    return json.dumps(jsonable({
        "model": active.label, "model_fingerprint": model_fingerprint(active.model),
        "parameters": sum(p.numel() for p in active.model.parameters()),
        "spec": dataclasses.asdict(active.spec), "card": card,
        "card_source": "shipped" if active.card else ("measured on this page" if card else None),
    }), indent=2)


def _show_card(card: dict[str, Any], spec: ModelSpec) -> None:
    measured = card.get("measured_on")  # a card measured here, on part of the data: say so in the labels
    n_train = f" ({measured['train_images']:,} images)" if measured else ""
    cols = st.columns(4)
    metrics = [("Test accuracy", "test_accuracy", "{:.1%}"), (f"Train accuracy{n_train}", "train_accuracy", "{:.1%}"),
               (f"Stationarity cos{n_train}", "stationarity_cosine", "{:.2f}"),
               (f"Stationarity cos, last layer{n_train}", "stationarity_cosine_last", "{:.2f}")]
    over = (f"over {measured['train_images']:,} of the {measured['train_total']:,} training images" if measured
            else "over the training data")
    for col, (label, key, fmt) in zip(cols, metrics):
        value = card.get(key)
        col.metric(label, fmt.format(value) if isinstance(value, (int, float)) else "-",
                   help=f"cos(-θ, Σ∇L) {over}: 1 means the weights are exactly a "
                        "weighted sum of the training gradients (the KKT stationarity condition)."
                   if key.startswith("stationarity") else None)
    if measured:
        st.caption(f"Measured here on the bundled {measured['family']} data: test accuracy on all "
                   f"{measured['test_images']:,} test images; train accuracy and stationarity on a seeded sample "
                   f"of {measured['train_images']:,} of the {measured['train_total']:,} training images (the shipped "
                   "models' cards use every training image).")
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
        full_train = common.bundled_dataset(f"{family}:train")
        train = common.random_subset(full_train, MEASURE_TRAIN_IMAGES, seed=0)
        test = common.bundled_dataset(f"{family}:test")
        model = active.model  # read functionally: the shared model is left untouched
        card = {
            "test_accuracy": accuracy(model, test.images, test.labels),
            "train_accuracy": accuracy(model, train.images, train.labels),
            "stationarity_cosine": dataset_gradient_cosine(model, train.images, train.labels, params="auto"),
            "stationarity_cosine_last": dataset_gradient_cosine(model, train.images, train.labels, params="last"),
            "measured_on": {"family": family, "train_images": len(train), "train_total": len(full_train),
                            "test_images": len(test)},
        }
        st.session_state.setdefault("measured_cards", {})[active.label] = card
        st.rerun()


# --------------------------------------------------------------------------- upload


def _upload_section() -> None:
    st.subheader("Use your own model")
    st.markdown(
        "Upload a **.safetensors** file written by `dsvlib.save_model` (its spec travels in the metadata). "
        "A plain PyTorch **state_dict** (.pt/.pth, or safetensors without dsvlib metadata) works too when "
        "you describe its architecture below, and so does a classifier of **any architecture** exported as "
        "an **ONNX graph** (.onnx; choose *ONNX graph* below). Files are read as tensors only: pickled code is "
        "never run, and an ONNX graph may not point at other files or use custom operators. Each upload stays "
        "in the sidebar's model list for this session."
    )
    with st.expander(FORM_TITLE):
        spec, spec_error = _spec_form()
    up = st.file_uploader("Model file", type=list(common.MODEL_TYPES), key="model_upload")
    if up is None:
        return
    if spec_error:
        st.error(f"The architecture form is invalid: {spec_error}", icon=":material/error:")
        return
    attempt_key = f"{up.file_id}|{spec.to_json() if spec else ''}"
    attempt = st.session_state.get(ATTEMPT_KEY)
    if attempt is None or attempt["key"] != attempt_key:
        # Load once per file (and spec); reruns only re-show the outcome.
        with st.spinner(f"Reading {up.name} ..."):
            attempt = {"key": attempt_key, **handle_upload(up.getvalue(), up.name, up.file_id, spec)}
        st.session_state[ATTEMPT_KEY] = attempt
    if attempt["error"]:
        st.error(_markdown_error(attempt["error"]), icon=":material/error:")
    else:
        st.success(f"Loaded {up.name} as '{attempt['label']}'; it is now the active model (see the sidebar).",
                   icon=":material/check_circle:")


def handle_upload(data: bytes, filename: str, file_id: str, spec: ModelSpec | None) -> dict[str, str | None]:
    """Load one uploaded file and add it to the session's models: ``{"label", "error"}``, one of them None.

    Every failure becomes a message for the user; the app keeps working.
    """
    try:
        model, loaded_spec = common.model_from_upload(data, filename, spec=spec)
    except Exception as e:  # noqa: BLE001 - shown to the user
        return {"label": None, "error": common.error_message(e, f"Loading {filename}") + _form_hint(e, spec)}
    label = common.set_uploaded_model(f"{filename} (uploaded)", model, loaded_spec, file_id)
    return {"label": label, "error": None}


def _form_hint(e: Exception, spec: ModelSpec | None) -> str:
    text = str(e)
    if "no dsvlib spec" in text or "carries no spec" in text:
        which = "choose 'ONNX graph'" if "ONNX" in text else "describe the network"
        return (f" In the app: open '{FORM_TITLE}' above, {which} and tick 'use this architecture'.")
    if "pass a spec with arch='onnx'" in text:
        return f" In the app: choose 'ONNX graph' as the architecture in '{FORM_TITLE}' above."
    return ""


def _markdown_error(message: str) -> str:
    """The first line as text, indented lines (the side-by-side key lists) as a code block."""
    first, *rest = message.split("\n")
    if not rest:
        return message
    return first + "\n\n```text\n" + "\n".join(line.rstrip() for line in rest) + "\n```"


# --------------------------------------------------------------------------- the architecture form


def _remember(key: str, default: Any, options: Sequence[Any] | None = None) -> str:
    """Put the form's last value for widget ``key`` back before the widget renders.

    Streamlit forgets the state of every widget that a run does not draw (the page was left, or
    another architecture's options were shown), so the values also live under ``FORM_KEY``.
    """
    store = st.session_state.setdefault(FORM_KEY, {})
    if key not in st.session_state:
        value = store.get(key, default)
        st.session_state[key] = value if options is None or value in options else default
    return key


def _kept(key: str, value: Any) -> Any:
    st.session_state[FORM_KEY][key] = value
    return value


def _widget(draw: Callable[..., Any], label: str, key: str, default: Any, **kwargs: Any) -> Any:
    """A widget whose value survives page switches; defaults go through session state only."""
    _remember(key, default, kwargs.get("options"))
    return _kept(key, draw(label, key=key, **kwargs))


def _option_widget(container: Any, arch: str, opt: ArchOption) -> Any:
    """One typed widget for one architecture option, keyed per architecture."""
    key = f"spec_opt:{arch}:{opt.name}"
    label = f"{opt.name} ({opt.type})"
    if opt.choices:
        return _widget(container.selectbox, label, key, opt.default, options=list(opt.choices))
    if opt.type == "bool":
        return _widget(container.checkbox, label, key, bool(opt.default))
    if opt.type == "int":
        return int(_widget(container.number_input, label, key, int(opt.default or 0), step=1))
    if opt.type == "float":
        return float(_widget(container.number_input, label, key, float(opt.default or 0.0), format="%g"))
    if opt.type.startswith("tuple["):
        text = _widget(container.text_input, label, key, ", ".join(str(v) for v in (opt.default or ())),
                       help="comma separated; empty for none")
        return _parse_tuple(opt, text)
    return _widget(container.text_input, label, key, "" if opt.default is None else str(opt.default))


def _parse_tuple(opt: ArchOption, text: str) -> tuple:
    item = float if "float" in opt.type else int
    try:
        return tuple(item(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"option '{opt.name}' takes a comma-separated list of {item.__name__}s, "
                         f"got {text!r}") from None


def _spec_form() -> tuple[ModelSpec | None, str | None]:
    """The spec typed in by the user, or (None, None) when the form is off, or (None, error)."""
    use = _widget(st.checkbox, "My file has no dsvlib metadata (a plain state_dict or an ONNX graph): use "
                  "this architecture", "spec_use", False)
    c1, c2, c3 = st.columns(3)
    choices = dsvlib.list_models() + [TORCHVISION, ONNX_GRAPH]
    choice = _widget(c1.selectbox, "Architecture", "spec_arch", "convnet", options=choices,
                     help="A registered architecture, any torchvision classification model, or an ONNX graph "
                          "(any architecture, exported with torch.onnx.export).")
    limits = get_limits()  # the library's one statement of what a model may ask for
    num_classes = int(_widget(c2.number_input, "Classes", "spec_classes", 10, min_value=2, max_value=limits.classes,
                              step=1))
    in_channels = int(_widget(c2.selectbox, "Channels", "spec_channels", 1, options=[1, 3]))
    size = int(_widget(c3.number_input, "Image size (pixels, square)", "spec_size", 28, min_value=8,
                       max_value=limits.image_side, step=1))
    mean_text = _widget(c3.text_input, "Mean (comma separated)", "spec_mean", "0.1307")
    std_text = _widget(c3.text_input, "Std (comma separated)", "spec_std", "0.3081")
    names_text = _widget(st.text_input, "Class names (comma separated, optional)", "spec_names", "")
    try:
        arch = _arch_from_choice(c1, choice)
        arch_kwargs = {opt.name: _option_widget(c1, arch, opt) for opt in arch_options(arch)}
    except (ValueError, TypeError) as e:  # e.g. an unknown torchvision name: said here, blocks only when used
        c1.error(str(e), icon=":material/error:")
        return None, (str(e) if use else None)
    if not use:
        return None, None
    try:
        names = tuple(n.strip() for n in names_text.split(",") if n.strip())
        spec = ModelSpec(arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=size,
                         mean=tuple(float(v) for v in mean_text.split(",")),
                         std=tuple(float(v) for v in std_text.split(",")),
                         class_names=names, arch_kwargs=arch_kwargs, name="uploaded")
    except (ValueError, TypeError) as e:
        return None, str(e)
    return spec, None


def _arch_from_choice(container: Any, choice: str) -> str:
    if choice == ONNX_GRAPH:
        container.caption("The graph gets the pixels normalised with the mean and std on the right, "
                          "(x - mean) / std for x in [0, 1]: set mean 0 and std 1 if it takes raw pixels. "
                          f"Export it with {_export_hint()}.")
        return ONNX_ARCH
    if choice == TORCHVISION:
        name = _widget(container.text_input, "torchvision model name", "spec_tv_name", "resnet18",
                       help="e.g. resnet18, mobilenet_v3_small; built with weights=None")
        return f"torchvision:{name.strip()}"
    return choice


def _export_hint() -> str:
    from dsvlib.onnx_import import EXPORT_HINT  # the library's one wording of the export settings

    return "`" + EXPORT_HINT.removeprefix("export with ") + "`"
