"""Reading and writing classifiers safely.

The one file format is safetensors whose metadata key ``dsv_spec`` holds the :class:`ModelSpec`
as JSON.  A plain state_dict (``.pt``/``.pth``) is accepted too, read with
``torch.load(weights_only=True)`` so that a pickle can never run code, with the spec given
separately.  An ONNX graph (``.onnx``, any architecture) is converted to torch by
:mod:`dsvlib.onnx_import`, again with the spec given separately.  Every problem raises
:class:`ModelFileError` with a message that says what is wrong and what is accepted.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import ONNX_ARCH, Classifier, ModelSpec, build_classifier

__all__ = [
    "ModelFileError",
    "save_model",
    "load_model",
    "load_state_dict_file",
    "default_models",
    "default_model_path",
    "load_card",
    "ASSETS_DIR",
    "MAX_MODEL_BYTES",
]

ASSETS_DIR = Path(os.environ.get("DSV_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
MAX_MODEL_BYTES = 512 * 1024 * 1024
SPEC_KEY = "dsv_spec"
ACCEPTED = (
    "accepted: a .safetensors file written by dsvlib.save_model (spec in its metadata), or a plain "
    "state_dict of tensors (.safetensors/.pt/.pth) or an ONNX graph (.onnx), either together with a spec"
)


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says why and what is accepted."""


def default_models() -> list[str]:
    """Names of the models shipped in ``assets/models``."""
    d = ASSETS_DIR / "models"
    return sorted(p.name[: -len(".safetensors")] for p in d.glob("*.safetensors")) if d.is_dir() else []


def default_model_path(name: str) -> Path:
    return ASSETS_DIR / "models" / f"{name}.safetensors"


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The model card (JSON) beside a default model, or None."""
    p = Path(name_or_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    card = (p.parent if p.suffix else ASSETS_DIR / "models") / f"{stem}.card.json"
    if not card.is_file():
        card = ASSETS_DIR / "models" / f"{stem}.card.json"
    return json.loads(card.read_text()) if card.is_file() else None


def save_model(model: nn.Module, spec: ModelSpec, path: str | os.PathLike, *,
               extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (a :class:`Classifier` or its bare network) with ``spec`` as safetensors."""
    from safetensors.torch import save_file

    if spec.arch == ONNX_ARCH:
        raise ValueError("a model read from an ONNX graph is kept as its .onnx file: its weights alone "
                         "cannot be rebuilt into a network; save_model takes registry architectures")
    net = model.net if isinstance(model, Classifier) else model
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    meta = {SPEC_KEY: spec.to_json(), "format": "dsvlib-1"}
    meta.update(extra_metadata or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def _read_safetensors_header(path: Path, size: int) -> dict[str, Any] | None:
    """Parsed header, or None when the file does not look like safetensors at all."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        n = struct.unpack("<Q", head)[0]
        if n < 2 or n > min(size - 8, 100 * 1024 * 1024):
            return None
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def load_state_dict_file(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES
                         ) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    """Read tensors (and the spec, where the file has one) without ever unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no such model file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(
            f"{path.name} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for model files"
        )
    header = _read_safetensors_header(path, size)
    if header is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = header.get("__metadata__") or {}
        spec = None
        if SPEC_KEY in meta:
            try:
                spec = ModelSpec.from_json(meta[SPEC_KEY])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                raise ModelFileError(f"{path.name}: the dsv_spec metadata is invalid: {e}") from None
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise ModelFileError(f"{path.name} is a damaged safetensors file: {e}") from None
        return state, spec
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (zipfile.is_zipfile(path) or magic[:1] == b"\x80"):
        raise ModelFileError(f"{path.name} is not a model file (neither safetensors nor a torch state_dict); {ACCEPTED}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"refused {path.name}: it holds Python objects other than tensors, which could run code "
            f"when unpickled, so it was not loaded. PyTorch said: {_torch_reason(str(e))} {ACCEPTED}"
        ) from None
    except Exception as e:  # corrupt zip, truncated pickle, ...
        raise ModelFileError(f"{path.name} could not be read as a torch state_dict: {e}; {ACCEPTED}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ModelFileError(f"{path.name} holds a {type(obj).__name__}, not a state_dict of tensors; {ACCEPTED}")
    return dict(obj), None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _torch_reason(message: str) -> str:
    """One whole sentence of torch's refusal, without colour codes: the one naming the refused
    global where there is one (torch's first sentence, "Weights only load failed.", says nothing,
    and its advice to load with weights_only=False is exactly what must not be done)."""
    text = _ANSI.sub("", message)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "no details")
    line = re.sub(r"^\w*Unpickler error:\s*", "", line)
    sentence = re.split(r"(?<=[.!?])\s+", line, maxsplit=1)[0]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


def _head_key(net: nn.Module) -> str | None:
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    return f"{last}.weight" if last is not None else None


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _side_by_side(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], missing: list[str],
                  unexpected: list[str], lines: int = 6) -> str:
    """The first differing keys as "file key (shape)  <->  expected key (shape)" lines.

    Both sides keep their own order (the module's for expected keys); a file key is paired with the
    first unpaired expected key of the same shape where there is one, as a renamed layer would be.
    """
    missing_set, unexpected_set = set(missing), set(unexpected)
    miss = [k for k in expected if k in missing_set]
    extra = [k for k in state if k in unexpected_set]
    partner: dict[str, str] = {}
    free = list(miss)
    for k in extra:  # first pass: same shape
        m = next((m for m in free if state[k].shape == expected[m].shape), None)
        if m is not None:
            partner[k] = m
            free.remove(m)
    for k in extra:  # second pass: what is left, in order
        if k not in partner and free:
            partner[k] = free.pop(0)
    pairs: list[tuple[str | None, str | None]] = [(k, partner.get(k)) for k in extra] + [(None, m) for m in free]
    pairs.sort(key=lambda p: miss.index(p[1]) if p[1] is not None else len(miss) + extra.index(p[0]))
    width = max((len(f"{k} {_shape(state[k])}") for k, _ in pairs[:lines] if k), default=1)
    out = []
    for k, m in pairs[:lines]:
        left = f"{k} {_shape(state[k])}" if k else "(none)"
        right = f"{m} {_shape(expected[m])}" if m else "(none)"
        out.append(f"  {left:<{width}}  <->  {right}")
    if len(pairs) > lines:
        out.append(f"  ... and {len(pairs) - lines} more")
    return "\n".join(out)


def _check_state(state: dict[str, torch.Tensor], net: nn.Module, spec: ModelSpec, fname: str) -> dict:
    expected = net.state_dict()
    if state and set(state) != set(expected) and all(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    head = _head_key(net)
    if head and head in state and head in expected and state[head].shape[:1] != expected[head].shape[:1]:
        got = state[head].shape[0] if state[head].dim() else "?"
        raise ModelFileError(
            f"{fname}: class-count mismatch: the spec says {spec.num_classes} classes but the weights' "
            f"output layer '{head}' has {got} outputs"
        )
    if missing or unexpected:
        raise ModelFileError(
            f"{fname}: the weights do not fit architecture {spec.arch!r} {spec.arch_kwargs}: "
            f"{len(missing)} missing keys (expected, not in the file) and {len(unexpected)} unexpected keys "
            f"(in the file, not expected), of {len(state)} in the file and {len(expected)} expected. "
            f"First differences, file key (shape) <-> expected key (shape):\n"
            + _side_by_side(state, expected, missing, unexpected)
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ModelFileError(
                f"{fname}: shape mismatch for '{k}': the file has {tuple(state[k].shape)}, "
                f"architecture {spec.arch!r} {spec.arch_kwargs} expects {tuple(v.shape)}"
            )
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise ModelFileError(f"{fname}: tensor '{k}' contains NaN or inf values; the model cannot be used")
    return state


def load_model(path_or_name: str | os.PathLike, *, spec: ModelSpec | None = None,
               device: str | torch.device | None = None, max_bytes: int = MAX_MODEL_BYTES
               ) -> tuple[Classifier, ModelSpec]:
    """Load a classifier; returns ``(model, spec)`` with the model in eval mode.

    ``path_or_name`` is a file path or the name of a default model (see :func:`default_models`).
    ``spec`` is needed for files without dsvlib metadata (plain state_dicts, ONNX graphs) and
    overrides the file's spec otherwise.  A ``.onnx`` file (or ``spec.arch == "onnx"``) is read by
    :func:`dsvlib.onnx_import.load_onnx`: the graph gets the normalised input ``(x - mean) / std``.
    """
    p = Path(path_or_name)
    if not p.exists() and str(path_or_name) in default_models():
        p = default_model_path(str(path_or_name))
    elif not p.exists():
        raise ModelFileError(
            f"no model file or default model named {str(path_or_name)!r}; default models: {default_models()}"
        )
    if p.suffix.lower() == ".onnx" or (spec is not None and spec.arch == ONNX_ARCH):
        from .onnx_import import load_onnx  # onnx and onnx2torch are imported only when needed

        model = load_onnx(p, spec, max_bytes=max_bytes)
        return (model.to(device) if device is not None else model), model.spec
    state, file_spec = load_state_dict_file(p, max_bytes=max_bytes)
    spec = spec or file_spec
    if spec is None:
        raise ModelFileError(
            f"{p.name} has no dsvlib spec in its metadata: pass spec=ModelSpec(arch=..., num_classes=..., "
            "in_channels=..., image_size=..., mean=..., std=...) (CLI: --arch etc.)"
        )
    try:
        model = build_classifier(spec)
    except ValueError as e:
        raise ModelFileError(f"{p.name}: {e}") from None
    state = _check_state(state, model.net, spec, p.name)
    model.net.load_state_dict(state, strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model, spec
