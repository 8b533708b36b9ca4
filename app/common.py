"""Shared UI pieces of the DSV Studio pages: the model picker, cached loading, error boxes, images.

Everything here is glue between Streamlit and dsvlib; the method itself lives in the library.
The functions without ``st.`` calls (:func:`model_from_upload`, :func:`image_from_upload`,
:func:`error_message`, :func:`tile`) are plain Python so that tests can call them directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import streamlit as st
import torch

import dsvlib
from dsvlib import Classifier, ModelFileError, ModelSpec
from dsvlib.data import Dataset, load_dataset
from dsvlib.io import strip_ansi

log = logging.getLogger("dsv_studio")

MODEL_TYPES = ("safetensors", "pt", "pth", "onnx")
IMAGE_TYPES = ("png", "jpg", "jpeg")
UPLOAD_KEY = "uploaded_model"  # session: the latest upload, {"label", "model", "spec", "file_id"}
UPLOADS_KEY = "uploaded_models"  # session: every upload kept in this browser session, label -> the same dict
MAX_UPLOADS = 8  # uploads kept per browser session (the oldest goes first); each holds a whole model
CHOICE_KEY = "active_model"  # session: the chosen model's label; survives page switches
DEVICE_KEY = "active_device"
DISPLAY_PX = 96  # images are upscaled (nearest) to about this size: 28x28 digits are unreadable raw


def available_devices() -> list[str]:
    """Each visible CUDA GPU first (the fastest choice), then the CPU."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] + ["cpu"]


def run_threads() -> int:
    """The torch threads a run uses on the CPU: all cores but one (app/main.py sets them on the script
    thread, whose job threads inherit them); ``DSV_TORCH_THREADS`` overrides."""
    return int(os.environ.get("DSV_TORCH_THREADS") or max(1, (os.cpu_count() or 1) - 1))


def device_label(device: str) -> str:
    if device.startswith("cuda"):
        return f"GPU {device.split(':')[-1]}: {torch.cuda.get_device_name(torch.device(device))}"
    # the configured count, not torch.get_num_threads(): that is per thread, and a thread that read
    # it before the app set it (a test's main thread) would label the same device differently
    n = run_threads()
    return f"CPU ({n} thread{'s' if n != 1 else ''} for runs)"


# --------------------------------------------------------------------------- the active model


@dataclass(frozen=True)
class ActiveModel:
    """The model chosen in the sidebar, with what the pages need to know about it."""

    label: str
    model: Classifier
    spec: ModelSpec
    card: dict[str, Any] | None
    device: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def kind(self) -> str:
        """The ``default_config`` kind (:func:`dsvlib.data.data_kind`)."""
        from dsvlib.data import data_kind

        return data_kind(self.spec)

    @property
    def data_family(self) -> str | None:
        return data_family(self.spec, self.card)


@st.cache_resource(show_spinner="Loading the model ...", max_entries=8)
def load_default_model(name: str, device: str) -> tuple[Classifier, ModelSpec]:
    return dsvlib.load_model(name, device=device)


@st.cache_resource(show_spinner="Loading bundled data ...", max_entries=4)
def bundled_dataset(name: str) -> Dataset:
    """A bundled split, loaded once per process (treat it as read-only)."""
    return load_dataset(name)


def data_family(spec: ModelSpec, card: dict[str, Any] | None = None) -> str | None:
    """The bundled data family this model was trained on or fits (:func:`dsvlib.data.data_family`)."""
    from dsvlib.data import data_family as family_of

    return family_of(spec, card)


def random_subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` images drawn without replacement (seeded)."""
    g = torch.Generator().manual_seed(int(seed))
    return ds.subset(torch.randperm(len(ds), generator=g)[: int(n)])


# --------------------------------------------------------------------------- uploads


def safe_filename(name: str, default: str) -> str:
    """A file-name-safe form of ``name`` (an upload's name, a label in a download's name)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[-100:].lstrip(".")
    return name or default


def model_from_upload(data: bytes, filename: str, *, spec: ModelSpec | None = None,
                      device: str | torch.device = "cpu") -> tuple[Classifier, ModelSpec]:
    """Load an uploaded model file.

    The bytes go to a temporary file read by :func:`dsvlib.load_model`, which never unpickles code.
    Every problem raises :class:`dsvlib.ModelFileError` with a message meant for the user.
    """
    name = safe_filename(filename, "upload")
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in MODEL_TYPES:
        raise ModelFileError(
            f"{name}: file type '.{suffix}' is not a model file; upload a .safetensors file written by "
            "dsvlib (spec in its metadata), or a .pt/.pth/.safetensors state_dict or an .onnx graph together "
            "with a spec"
        )
    if not data:
        raise ModelFileError(f"{name} is empty")
    from dsvlib.limits import get_limits

    cap = get_limits().model_bytes
    if len(data) > cap:  # before a copy is written anywhere
        raise ModelFileError(f"{name} is {len(data) / 2**20:.1f} MiB, over the {cap / 2**20:.0f} MiB limit for "
                             "model files")
    with tempfile.TemporaryDirectory(prefix="dsv_upload_") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            return dsvlib.load_model(path, spec=spec, device=device)
        except MemoryError:
            raise ModelFileError(f"{name} needs more memory than this server has to load; it was refused") from None


def image_from_upload(data: bytes, filename: str, spec: ModelSpec) -> torch.Tensor:
    """An uploaded PNG/JPG as a (1, C, H, W) tensor in [0, 1], converted and resized for ``spec``.

    Raises ``ValueError`` naming the file when it is not a readable image.
    """
    from dsvlib.data import read_image

    name = Path(filename).name
    if not data:
        raise ValueError(f"{name} is empty, not an image")
    if spec.in_channels not in (1, 3):
        raise ValueError(f"the model takes {spec.in_channels} channels; only 1 (grey) or 3 (RGB) images can be uploaded")
    try:
        return read_image(data, channels=spec.in_channels, size=spec.image_size, name=name)[None]
    except ValueError as e:
        raise ValueError(f"{e}; upload a PNG or JPG") from None


@dataclass(frozen=True)
class PreparedImage:
    """An uploaded image made ready for the model, and what was done to it, in words."""

    image: torch.Tensor  # (1, C, H, W) in [0, 1]
    notes: tuple[str, ...]
    polarity_mismatch: bool  # the upload's border is light while the model's data is dark (or the reverse)


def prepare_upload(data: bytes, filename: str, spec: ModelSpec, *, invert: bool | None = None) -> PreparedImage:
    """Decode an uploaded image for ``spec`` and say what changed: size, aspect ratio, colour, and a
    polarity mismatch (ink on paper vs the model's light-on-dark data, judged from the image's
    border against the model's normalisation mean).  ``invert=None`` inverts when that mismatch is
    found; True/False force it."""
    from PIL import Image

    image = image_from_upload(data, filename, spec)
    notes = []
    with contextlib.suppress(Exception):
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            mode = im.mode
        th, tw = spec.image_size
        if (w, h) != (tw, th):
            notes.append(f"resized from {w}x{h} to {tw}x{th} pixels")
        if abs((w / h) - (tw / th)) > 0.1 * (tw / th):
            notes.append(f"the aspect ratio changed from {w / h:.2f} to {tw / th:.2f} (the image is squashed; "
                         "crop it to the model's shape for a faithful result)")
        colour = mode not in ("L", "LA", "1", "I", "I;16", "F", "P")
        if colour and spec.in_channels == 1:
            notes.append("converted from colour to grey")
        elif not colour and spec.in_channels == 3:
            notes.append("converted from grey to RGB")
    border = torch.cat([image[..., 0, :].flatten(), image[..., -1, :].flatten(),
                        image[..., :, 0].flatten(), image[..., :, -1].flatten()]).mean()
    data_dark = sum(spec.mean) / len(spec.mean) < 0.5
    mismatch = bool((border > 0.5) == data_dark)
    do_invert = mismatch if invert is None else invert
    if mismatch:
        notes.append("its background is " + ("light" if data_dark else "dark") + " while the model was trained on "
                     + ("dark" if data_dark else "light") + " backgrounds" +
                     (": colours inverted" if do_invert else " (not inverted)"))
    elif do_invert:
        notes.append("colours inverted")
    if do_invert:
        image = 1.0 - image
    return PreparedImage(image=image, notes=tuple(notes), polarity_mismatch=mismatch)


def set_uploaded_model(label: str, model: Classifier, spec: ModelSpec, file_id: str) -> str:
    """Add an uploaded model to the picker (next to the earlier uploads) and select it.

    Returns the label it got: ``label``, or ``label`` with " #2", " #3", ... where another file
    already has that label.  The same file uploaded again (another spec) replaces its entry.
    """
    uploads: dict[str, dict[str, Any]] = st.session_state.setdefault(UPLOADS_KEY, {})
    base, n = label, 1
    while label in uploads and uploads[label]["file_id"] != file_id:
        n += 1
        label = f"{base} #{n}"
    st.session_state.get("measured_cards", {}).pop(label, None)  # measured on the entry it replaces
    uploads.pop(label, None)
    uploads[label] = entry = {"label": label, "model": model, "spec": spec, "file_id": file_id}
    while len(uploads) > MAX_UPLOADS:
        uploads.pop(next(iter(uploads)))
    st.session_state[UPLOAD_KEY] = entry
    st.session_state[CHOICE_KEY] = label
    return label


# --------------------------------------------------------------------------- errors


def error_message(e: BaseException, action: str) -> str:
    """One readable sentence for a failure, instead of a traceback (colour codes removed)."""
    text = strip_ansi(str(e)).strip() or type(e).__name__
    first = text.splitlines()[0][:500]
    low = text.lower()
    if isinstance(e, ModelFileError):
        return text  # written for the user; a key mismatch lists the keys on the lines below
    if (isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in low
            or "can't allocate memory" in low):
        return (f"{action} ran out of memory. Try fewer images, fewer steps or a smaller model "
                f"(or the CPU if the GPU is full). Details: {first}")
    if isinstance(e, FloatingPointError):
        return f"{action} diverged (NaN or inf): {first}"
    if isinstance(e, ValueError):
        return f"{action} failed: {first}"
    if isinstance(e, RuntimeError):
        return f"{action} failed inside PyTorch (often a shape or device mismatch): {first}"
    return f"{action} failed with an unexpected {type(e).__name__}: {first}"


@contextlib.contextmanager
def shown_errors(action: str) -> Iterator[None]:
    """Show any failure inside the block as an ``st.error`` box; the page keeps working.

    Streamlit's own rerun/stop signals derive from BaseException and pass through untouched.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the point is that nothing reaches the user as a traceback
        log.exception("%s failed", action)
        st.error(error_message(e, action), icon=":material/error:")


# --------------------------------------------------------------------------- images


def to_display(image: torch.Tensor, px: int = DISPLAY_PX) -> np.ndarray:
    """(C, H, W) in [0, 1] -> uint8 (H', W') or (H', W', 3), upscaled by an integer factor (nearest)."""
    x = image.detach().float().clamp(0, 1).cpu()
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
    f = max(1, int(round(px / max(arr.shape[0], 1))))
    return np.repeat(np.repeat(arr, f, 0), f, 1)


def tile(images: torch.Tensor, ncol: int, pad: int = 2, px: int = 56) -> np.ndarray:
    """A grid of (N, C, H, W) images as one uint8 picture (the live preview), each cell upscaled to
    about ``px`` pixels: :func:`dsvlib.export.image_grid`, the one grid writer."""
    from dsvlib.export import image_grid

    if len(images) == 0:
        return np.zeros((px, px), np.uint8)
    scale = max(1, int(round(px / max(int(images.shape[-2]), 1))))
    return image_grid(images, max(1, min(int(ncol), len(images))), pad=pad, scale=scale)


def overlay(image: torch.Tensor, heat: torch.Tensor, px: int = DISPLAY_PX, alpha: float = 0.6) -> np.ndarray:
    """An attribution map over its image: the image in grey, positive values in orange and negative
    in blue (colour-blind safe), ``heat`` (H, W) scaled to [-1, 1]; uint8 RGB upscaled like
    :func:`to_display`."""
    grey = image.detach().float().clamp(0, 1).mean(0).cpu()
    h = heat.detach().float().cpu().clamp(-1, 1)
    pos, neg = h.clamp(min=0), (-h).clamp(min=0)
    orange, blue = torch.tensor([0.90, 0.62, 0.0]), torch.tensor([0.0, 0.45, 0.70])
    base = grey[..., None].expand(*grey.shape, 3) * (1 - alpha * (pos + neg))[..., None]
    rgb = base + alpha * (pos[..., None] * orange + neg[..., None] * blue)
    return to_display(rgb.permute(2, 0, 1), px)


ATTRIBUTION_LABELS = {"integrated_gradients": "Integrated Gradients", "saliency": "Saliency |∂F/∂x|",
                      "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM (last conv layer)"}


def attribution_row(model: torch.nn.Module, images: torch.Tensor, target: int, captions: Sequence[str], *,
                    key: str, px: int = 140) -> None:
    """Attribution maps of ``images`` toward class ``target`` side by side, with a method picker
    (:mod:`dsvlib.attribution`; a few hundred milliseconds for a handful of small images)."""
    from dsvlib.attribution import METHODS, attribute, last_conv_layer

    methods = [m for m in METHODS if m != "gradcam" or last_conv_layer(model) is not None]
    method = st.radio("Attribution", methods, horizontal=True, key=key, format_func=ATTRIBUTION_LABELS.get,
                      help="Which pixels push the model toward the class: orange for, blue against.")
    cache = st.session_state.setdefault("_attributions", {})
    ck = (key, method, int(target), tuple(images.shape), float(images.sum()))
    if ck not in cache:
        cache.clear()  # one set of maps at a time is enough
        cache[ck] = attribute(model, images, int(target), method=method).normalised()
    maps = cache[ck]
    cols = st.columns(max(len(images), 4))
    for col, im, m, cap in zip(cols, images, maps, captions):
        col.image(overlay(im, m, px), caption=cap, width=px)


def show_images(images: torch.Tensor, captions: Sequence[str], *, per_row: int = 10, min_slots: int = 8,
                px: int = DISPLAY_PX) -> None:
    """A grid of images, ``per_row`` to a row, each with its caption under it.  A row has at least
    ``min_slots`` equal columns, so that two images do not each take half the page."""
    if len(images) == 0:
        st.caption("(no images)")
        return
    per_row = max(1, int(per_row))
    for start in range(0, len(images), per_row):
        cols = st.columns(max(per_row, min_slots))
        for col, im, cap in zip(cols, images[start:start + per_row], captions[start:start + per_row]):
            col.image(to_display(im, px), caption=cap, width="stretch")


def strength_box(strength: str, text: str) -> None:
    """A trust statement in the colour of its strength: strong / partial / weak."""
    if strength == "strong":
        st.success(text, icon=":material/verified:")
    elif strength == "partial":
        st.info(text, icon=":material/info:")
    else:
        st.warning(text, icon=":material/warning:")


def card_cosine(card: dict | None) -> float | None:
    """A model card's trust cosine (:func:`dsvlib.cards.card_cosine`)."""
    from dsvlib.cards import card_cosine as cosine_of

    return cosine_of(card)


def cosine_strength(cosine: float | None) -> str:
    """The library's thresholds (:func:`dsvlib.synthesize.trust_strength`)."""
    from dsvlib.synthesize import trust_strength

    return trust_strength(cosine)


# --------------------------------------------------------------------------- run-time estimates

_COSTS: dict[tuple, Any] = {}  # (model label, device, candidates, config key) -> dsvlib StepCost
_COSTS_LOCK = threading.Lock()


def _cost_key(label: str, device: str, candidates: int, config: Any) -> tuple:
    return (label, device, int(candidates), repr(dataclasses.replace(config, steps=1)))


def step_cost(active: "ActiveModel", candidates: int, config: Any) -> Any:
    """The measured cost of a synthesis step for this model, device and run size: from the last
    finished run with the same settings, else from a short probe (a few real steps, cached for the
    process; synthesis leaves the shared model untouched)."""
    from dsvlib.synthesize import measure_step_cost

    key = _cost_key(active.label, active.device, candidates, config)
    with _COSTS_LOCK:
        cost = _COSTS.get(key)
    if cost is None:
        cost = measure_step_cost(active.model, candidates, config, device=active.device)
        with _COSTS_LOCK:
            _COSTS[key] = cost
    return cost


def record_step_cost(label: str, device: str, candidates: int, config: Any, result: Any) -> None:
    """Replace the probe by what a finished run measured (setup + steps as it ran)."""
    from dsvlib.synthesize import StepCost

    hist_time = (result.history or {}).get("time") or []
    steps = int(result.steps_run)
    if steps < 2 or not hist_time:
        return
    per_step = (result.seconds - hist_time[0]) / max(steps - 1, 1)
    with _COSTS_LOCK:
        _COSTS[_cost_key(label, device, candidates, config)] = StepCost(
            setup_seconds=float(hist_time[0]), step_seconds=float(per_step), candidates=candidates, device=device)


def how_to_read(text: str) -> None:
    """The page's short "How to read this" box (collapsed)."""
    with st.expander("How to read this", icon=":material/help:"):
        st.markdown(text)


# --------------------------------------------------------------------------- sidebar


def _persisted_selectbox(label: str, options: Sequence[str], store_key: str, widget_key: str,
                         container: Any, **kwargs: Any) -> str:
    """A selectbox whose value survives page switches: widgets are per page in Streamlit, so the
    value lives under ``store_key`` and is copied into the widget before it renders."""
    current = st.session_state.get(store_key)
    st.session_state[widget_key] = current if current in options else options[0]

    def keep() -> None:
        st.session_state[store_key] = st.session_state[widget_key]

    value = container.selectbox(label, options, key=widget_key, on_change=keep, **kwargs)
    st.session_state[store_key] = value
    return value


# Value widgets whose state must survive a page switch (Streamlit forgets the state of widgets a
# page did not draw).  Buttons, uploaders and downloads cannot be set and are left out.
_KEPT_PREFIXES = ("synth_", "sel_", "edit_", "mix_", "cmp_", "toy_")
_NOT_SETTABLE = ("_run", "_upload")


_SHADOW = "_kept_widget_values"


def keep_widget_values() -> None:
    """Keep value widgets' state across page switches.  Streamlit drops the state of every widget
    the last run did not draw, so at the top of each run the values are copied to a shadow dict,
    and a value that was dropped is restored from it before its widget is drawn again."""
    shadow = st.session_state.setdefault(_SHADOW, {})
    for key, value in shadow.items():
        if key not in st.session_state:
            st.session_state[key] = value
    for key in list(st.session_state.keys()):
        if (isinstance(key, str) and key.startswith(_KEPT_PREFIXES) and not key.endswith(_NOT_SETTABLE)
                and "_download" not in key):
            shadow[key] = st.session_state[key]


def model_sidebar() -> ActiveModel | None:
    """The model picker (default models + the uploaded one) and device choice, in the sidebar."""
    sb = st.sidebar
    uploads = st.session_state.get(UPLOADS_KEY, {})
    # The upload the picker will show: the stored choice is the widget's value (see _persisted_selectbox).
    upload = uploads.get(st.session_state.get(CHOICE_KEY))
    options = list(dsvlib.default_models()) + list(uploads)
    if not options:
        sb.error("No models found in assets/models; upload one on the Model page.")
        return None
    label = _persisted_selectbox("Model", options, CHOICE_KEY, "_model_picker", sb,
                                 help="Models shipped in assets/models, plus every model you uploaded in this session.")
    devices = available_devices()
    device = _persisted_selectbox(
        "Device", devices, DEVICE_KEY, "_device_picker", sb,
        format_func=device_label,
        help="Where runs execute. Each visible CUDA GPU is listed; without one, runs use the CPU.")
    with shown_errors("Loading the model"):
        if upload and label == upload["label"]:
            model, spec = upload["model"], upload["spec"]
            if next(model.parameters()).device != torch.device(device):
                model = model.to(device)
            card = None
        else:
            model, spec = load_default_model(label, device)
            card = dsvlib.load_card(label)
        sb.caption(f"{spec.arch} · {spec.num_classes} classes · input {spec.in_channels}x"
                   f"{spec.image_size[0]}x{spec.image_size[1]}")
        return ActiveModel(label=label, model=model, spec=spec, card=card, device=device)
    return None
