"""Shared UI pieces of the DSV Studio pages: the model picker, cached loading, error boxes, images.

Everything here is glue between Streamlit and dsvlib; the method itself lives in the library.
The functions without ``st.`` calls (:func:`model_from_upload`, :func:`image_from_upload`,
:func:`error_message`, :func:`tile`) are plain Python so that tests can call them directly.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import streamlit as st
import torch

import dsvlib
from dsvlib import Classifier, ModelFileError, ModelSpec
from dsvlib.data import BUNDLED, Dataset, load_dataset

log = logging.getLogger("dsv_studio")

MODEL_TYPES = ("safetensors", "pt", "pth")
IMAGE_TYPES = ("png", "jpg", "jpeg")
UPLOAD_KEY = "uploaded_model"  # session: {"label", "model", "spec", "file_id"}
CHOICE_KEY = "active_model"  # session: the chosen model's label; survives page switches
DEVICE_KEY = "active_device"
DISPLAY_PX = 96  # images are upscaled (nearest) to about this size: 28x28 digits are unreadable raw


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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
        """The ``default_config`` kind: grey images are treated as digits, colour as natural."""
        return "digits" if self.spec.in_channels == 1 else "natural"

    @property
    def data_family(self) -> str | None:
        return data_family(self.spec, self.card)

    def working_copy(self) -> Classifier:
        """A private copy for one run.  The cached model is shared by every browser session, and a
        run toggles ``requires_grad`` on its parameters; two concurrent runs on one object would
        trip over each other."""
        return copy.deepcopy(self.model)


@st.cache_resource(show_spinner="Loading the model ...", max_entries=8)
def load_default_model(name: str, device: str) -> tuple[Classifier, ModelSpec]:
    return dsvlib.load_model(name, device=device)


@st.cache_resource(show_spinner="Loading bundled data ...", max_entries=4)
def bundled_dataset(name: str) -> Dataset:
    """A bundled split, loaded once per process (treat it as read-only)."""
    return load_dataset(name)


def data_family(spec: ModelSpec, card: dict[str, Any] | None = None) -> str | None:
    """The bundled data family (``"mnist"``, ``"shortcut"``) this model was trained on or fits."""
    recipe_data = str(((card or {}).get("recipe") or {}).get("data", ""))
    family = recipe_data.split(":")[0]
    families = sorted({b.split(":")[0] for b in BUNDLED})
    if family in families:
        return family
    for fam in families:
        test = bundled_dataset(f"{fam}:test")
        if tuple(test.images.shape[1:]) == tuple(spec.input_shape) and test.num_classes == spec.num_classes:
            return fam
    return None


def random_subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` images drawn without replacement (seeded)."""
    g = torch.Generator().manual_seed(int(seed))
    return ds.subset(torch.randperm(len(ds), generator=g)[: int(n)])


# --------------------------------------------------------------------------- uploads


def _safe_filename(name: str, default: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[-100:].lstrip(".")
    return name or default


def model_from_upload(data: bytes, filename: str, *, spec: ModelSpec | None = None,
                      device: str | torch.device = "cpu") -> tuple[Classifier, ModelSpec]:
    """Load an uploaded model file.

    The bytes go to a temporary file read by :func:`dsvlib.load_model`, which never unpickles code.
    Every problem raises :class:`dsvlib.ModelFileError` with a message meant for the user.
    """
    name = _safe_filename(filename, "upload")
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in MODEL_TYPES:
        raise ModelFileError(
            f"{name}: file type '.{suffix}' is not a model file; upload a .safetensors file written by "
            "dsvlib (spec in its metadata), or a .pt/.pth/.safetensors state_dict together with a spec"
        )
    if not data:
        raise ModelFileError(f"{name} is empty")
    with tempfile.TemporaryDirectory(prefix="dsv_upload_") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return dsvlib.load_model(path, spec=spec, device=device)


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


def set_uploaded_model(label: str, model: Classifier, spec: ModelSpec, file_id: str) -> None:
    """Make an uploaded model available in the picker and select it."""
    st.session_state[UPLOAD_KEY] = {"label": label, "model": model, "spec": spec, "file_id": file_id}
    st.session_state[CHOICE_KEY] = label


# --------------------------------------------------------------------------- errors


def error_message(e: BaseException, action: str) -> str:
    """One readable sentence for a failure, instead of a traceback."""
    text = str(e).strip() or type(e).__name__
    first = text.splitlines()[0][:500]
    low = text.lower()
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in low or "can't allocate memory" in low:
        return (f"{action} ran out of memory. Try fewer images, fewer steps or a smaller model "
                f"(or the CPU if the GPU is full). Details: {first}")
    if isinstance(e, ModelFileError):
        return str(e)
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
    """A grid of (N, C, H, W) images as one uint8 picture (for the fast live preview)."""
    n = len(images)
    if n == 0:
        return np.zeros((px, px), np.uint8)
    ncol = max(1, min(int(ncol), n))
    nrow = -(-n // ncol)
    cells = [to_display(im, px) for im in images]
    h, w = cells[0].shape[:2]
    shape = (nrow * (h + pad) + pad, ncol * (w + pad) + pad) + cells[0].shape[2:]
    out = np.full(shape, 255, np.uint8)
    for i, c in enumerate(cells):
        r, k = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = c
    return out


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
    """A model card's trust cosine: all parameters except scale-invariant ones (older cards: all)."""
    card = card or {}
    return card.get("stationarity_cosine", card.get("stationarity_cosine_all"))


def cosine_strength(cosine: float | None) -> str:
    """The library's thresholds (:func:`dsvlib.synthesize.trust_strength`)."""
    from dsvlib.synthesize import trust_strength

    return trust_strength(cosine)


# --------------------------------------------------------------------------- progress


class LiveProgress:
    """A dsvlib step callback that drives a progress bar and, where the step carries images,
    a live preview grid.  Returns False: it never stops the run."""

    def __init__(self, steps: int, *, label: str = "step", preview_every: int = 10, ncol: int = 10,
                 min_interval: float = 0.15) -> None:
        self.steps = max(int(steps), 1)
        self.label = label
        self.preview_every = max(int(preview_every), 1)
        self.ncol = ncol
        self.min_interval = min_interval
        self.bar = st.progress(0.0, text=f"{label} 0/{self.steps}")
        self.preview = st.empty()
        self._last = 0.0

    def __call__(self, info: Any) -> bool:
        step = int(getattr(info, "step", 0)) + 1
        steps = int(getattr(info, "steps", self.steps) or self.steps)
        now = time.perf_counter()
        last = step >= steps
        if last or now - self._last >= self.min_interval:
            self._last = now
            parts = [f"{self.label} {step}/{steps}"]
            cos = getattr(info, "cosine", None)
            if isinstance(cos, float) and cos == cos:
                parts.append(f"stationarity cos {cos:.2f}")
            kept = getattr(info, "kept", None)
            if kept is not None:
                parts.append(f"{kept} kept")
            elapsed = getattr(info, "elapsed", None)
            if elapsed is not None:
                parts.append(f"{elapsed:.1f} s")
            self.bar.progress(min(step / steps, 1.0), text=" · ".join(parts))
        images: Callable[[], torch.Tensor] | None = getattr(info, "images", None)
        if callable(images) and (step % self.preview_every == 1 or self.preview_every == 1 or last):
            self.preview.image(tile(images(), self.ncol), caption=f"live preview, step {step}")
        return False

    def clear(self) -> None:
        self.bar.empty()
        self.preview.empty()


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


def model_sidebar() -> ActiveModel | None:
    """The model picker (default models + the uploaded one) and device choice, in the sidebar."""
    sb = st.sidebar
    upload = st.session_state.get(UPLOAD_KEY)
    options = list(dsvlib.default_models()) + ([upload["label"]] if upload else [])
    if not options:
        sb.error("No models found in assets/models; upload one on the Model page.")
        return None
    label = _persisted_selectbox("Model", options, CHOICE_KEY, "_model_picker", sb,
                                 help="Models shipped in assets/models, plus the one you uploaded.")
    if torch.cuda.is_available():
        device = _persisted_selectbox("Device", ["cuda", "cpu"], DEVICE_KEY, "_device_picker", sb)
    else:
        device = "cpu"
        sb.caption("Device: CPU (no CUDA GPU found)")
    with shown_errors("Loading the model"):
        if upload and label == upload["label"]:
            model, spec = upload["model"], upload["spec"]
            if next(model.parameters()).device.type != device:
                model = model.to(device)
            card = None
        else:
            model, spec = load_default_model(label, device)
            card = dsvlib.load_card(label)
        sb.caption(f"{spec.arch} · {spec.num_classes} classes · input {spec.in_channels}x"
                   f"{spec.image_size[0]}x{spec.image_size[1]}")
        return ActiveModel(label=label, model=model, spec=spec, card=card, device=device)
    return None
