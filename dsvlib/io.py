"""Reading and writing classifiers safely.

The one file format is safetensors whose metadata key ``dsv_spec`` holds the :class:`ModelSpec`
as JSON.  A plain state_dict (``.pt``/``.pth``) is accepted too, read with
``torch.load(weights_only=True)`` so that a pickle can never run code, with the spec given
separately.  An ONNX graph (``.onnx``, any architecture) is converted to torch by
:mod:`dsvlib.onnx_import`, again with the spec given separately.  Every problem raises
:class:`ModelFileError` with a message that says what is wrong and what is accepted.
"""
from __future__ import annotations

import functools
import hashlib
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

from .limits import get_limits
from .models import ONNX_ARCH, Classifier, ModelSpec, build_classifier, check_buildable

__all__ = [
    "ModelFileError",
    "save_model",
    "load_model",
    "load_state_dict_file",
    "default_models",
    "default_model_path",
    "load_card",
    "file_sha256",
    "ASSETS_DIR",
    "MAX_MODEL_BYTES",
]

ASSETS_DIR = Path(os.environ.get("DSV_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
MAX_MODEL_BYTES = get_limits().model_bytes  # the default; DSV_MAX_MODEL_BYTES raises it (dsvlib.limits)
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (what a card's ``weights_sha256`` records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _shipped_cards() -> list[Path]:
    return sorted((ASSETS_DIR / "models").glob("*.card.json")) + sorted((ASSETS_DIR / "judges").glob("*.card.json"))


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The model card (JSON) of a weights file, found by the file's content, or None.

    ``name_or_path`` is a default model's name or a weights file.  A card applies only when its
    ``weights_sha256`` equals the sha256 of the file: the card beside the file is tried first,
    then every shipped card (``assets/models``, ``assets/judges``).  A file merely named like a
    shipped model, with other weights, gets no card.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"name_or_path must be a path or a default model name, got {type(name_or_path).__name__}")
    p = Path(name_or_path)
    if not p.is_file():
        if str(name_or_path) not in default_models():
            return None
        p = default_model_path(str(name_or_path))
    st = p.stat()
    digest = _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.stem
    for card_path in [p.parent / f"{stem}.card.json", *_shipped_cards()]:
        if not card_path.is_file():
            continue
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(card, dict) and card.get("weights_sha256") == digest:
            return card
    return None


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


class _NotSafetensors(Exception):
    pass


def _read_safetensors_header(path: Path, size: int, fname: str) -> dict[str, Any] | None:
    """The parsed header; None when the file does not look like safetensors at all (8-byte length,
    then ``{``); :class:`ModelFileError` ("damaged safetensors header") when it does but the header
    is cut off, oversized or not a JSON object."""
    cap = get_limits().header_bytes
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return None
        n = struct.unpack("<Q", head[:8])[0]
        if n > cap and n > size - 8:
            return None  # a length this wrong is not a safetensors header but some other file
        damaged = f"{fname}: damaged safetensors header"
        if n > size - 8:
            raise ModelFileError(f"{damaged}: it says {n:,} bytes but the file has {size - 8:,} after the length "
                                 "(a cut-off file?)")
        if n > cap:
            raise ModelFileError(f"{damaged}: {n / 2**20:.1f} MiB of header, over the "
                                 f"{cap / 2**20:g} MiB limit (DSV_MAX_HEADER_BYTES)")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{damaged}: not valid JSON ({type(e).__name__}); {ACCEPTED}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{damaged}: a JSON {type(header).__name__}, not an object; {ACCEPTED}")
    meta = header.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict)
                             or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        what = type(meta).__name__ if not isinstance(meta, dict) else "an object with non-string values"
        raise ModelFileError(f"{damaged}: its __metadata__ is {what}, not an object of strings; {ACCEPTED}")
    return header


def _spec_from_header(header: dict[str, Any], fname: str) -> ModelSpec | None:
    meta = header.get("__metadata__") or {}
    if SPEC_KEY not in meta:
        return None
    try:
        return ModelSpec.from_json(meta[SPEC_KEY])
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{fname}: the dsv_spec metadata is invalid: {e}") from None


def _check_file(path: Path, max_bytes: int) -> int:
    """The file's size; :class:`ModelFileError` for a directory, a missing file or an oversized one."""
    if path.is_dir():
        raise ModelFileError(f"{path.name or path} is a directory, not a model file; {ACCEPTED}")
    if not path.is_file():
        raise ModelFileError(f"no such model file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(
            f"{path.name} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for model files "
            "(DSV_MAX_MODEL_BYTES)"
        )
    return size


def _check_torch_zip(path: Path, max_bytes: int) -> None:
    """Refuse a torch zip checkpoint whose members unpack past the caps, from the zip directory
    alone, before torch reads any member (a deflated 1.5 GB data.pkl is a 1.6 MB file)."""
    lim = get_limits()
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ModelFileError(f"{path.name} is a damaged zip file: {e}; {ACCEPTED}") from None
    total = 0
    for info in infos:
        cap = lim.pickle_bytes if info.filename.endswith(".pkl") else max_bytes
        env = "DSV_MAX_PICKLE_BYTES" if info.filename.endswith(".pkl") else "DSV_MAX_MODEL_BYTES"
        if info.file_size > cap:
            raise ModelFileError(
                f"refused {path.name}: its member {info.filename!r} unpacks to {info.file_size / 2**20:,.1f} MiB, "
                f"over the {cap / 2**20:g} MiB limit ({env}); nothing was read"
            )
        total += info.file_size
        if total > max_bytes:
            raise ModelFileError(
                f"refused {path.name}: its members unpack to more than {max_bytes / 2**20:g} MiB, the limit for "
                "model files (DSV_MAX_MODEL_BYTES); nothing was read"
            )


def _read_tensors(path: Path, header: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """The tensors of a checked file (safetensors when ``header`` is given, else a torch checkpoint)."""
    if header is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as e:
            raise ModelFileError(f"{path.name} is a damaged safetensors file: {_first_line(e)}") from None
    try:
        with open(path, "rb") as f:  # a file object: torch would dispatch on a .safetensors suffix
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"refused {path.name}: it holds Python objects other than tensors, which could run code "
            f"when unpickled, so it was not loaded. PyTorch said: {_torch_reason(str(e))} {ACCEPTED}"
        ) from None
    except MemoryError:
        raise ModelFileError(f"{path.name}: reading it ran out of memory; it is not a plain state_dict") from None
    except Exception as e:  # noqa: BLE001 - corrupt zip, truncated pickle, ...
        raise ModelFileError(f"{path.name} could not be read as a torch state_dict: "
                             f"{strip_ansi(_first_line(e))}; {ACCEPTED}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ModelFileError(f"{path.name} holds a {type(obj).__name__}, not a state_dict of tensors; {ACCEPTED}")
    return dict(obj)


def _open_model_file(path: Path, max_bytes: int) -> tuple[dict[str, Any] | None, ModelSpec | None]:
    """Check a file without reading its tensors: (safetensors header or None for a torch
    checkpoint, the spec in its metadata or None)."""
    size = _check_file(path, max_bytes)
    header = _read_safetensors_header(path, size, path.name)
    if header is not None:
        return header, _spec_from_header(header, path.name)
    with open(path, "rb") as f:
        magic = f.read(4)
    if zipfile.is_zipfile(path):
        _check_torch_zip(path, max_bytes)
    elif magic[:1] != b"\x80":
        raise ModelFileError(f"{path.name} is not a model file (neither safetensors nor a torch state_dict); {ACCEPTED}")
    return None, None


def load_state_dict_file(path: str | os.PathLike, *, max_bytes: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    """Read tensors (and the spec, where the file has one) without ever unpickling code.

    Size caps (file, header, zip members) are checked before anything is read; see
    :mod:`dsvlib.limits`.  Every problem is a :class:`ModelFileError`.
    """
    path = Path(path)
    max_bytes = _max_bytes(max_bytes)
    header, spec = _open_model_file(path, max_bytes)
    return _read_tensors(path, header), spec


def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is None:
        return get_limits().model_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    return max_bytes


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch colours some of its messages)."""
    return _ANSI.sub("", text)


def _torch_reason(message: str) -> str:
    """One whole sentence of torch's refusal, without colour codes: the one naming the refused
    global where there is one (torch's first sentence, "Weights only load failed.", says nothing,
    and its advice to load with weights_only=False is exactly what must not be done)."""
    text = strip_ansi(message)
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
    out = {}
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ModelFileError(
                f"{fname}: shape mismatch for '{k}': the file has {tuple(state[k].shape)}, "
                f"architecture {spec.arch!r} {spec.arch_kwargs} expects {tuple(v.shape)}"
            )
        out[k] = _cast_checked(state[k], v.dtype, k, fname)
    return out


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTS = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _cast_checked(t: torch.Tensor, dtype: torch.dtype, key: str, fname: str) -> torch.Tensor:
    """``t`` cast to the model's ``dtype``, then checked finite: the check runs on the values the
    model will hold (float64 1e300 becomes inf in float32 and is refused).  Integer tensors only
    fill integer slots (BatchNorm's counter); float8, complex and other dtypes are refused."""
    if t.dtype not in _FLOATS + _INTS + (torch.bool,):
        raise ModelFileError(f"{fname}: tensor '{key}' has dtype {str(t.dtype).replace('torch.', '')}, which is not "
                             "supported; weights must be float16, bfloat16, float32 or float64")
    if dtype.is_floating_point:
        if not t.is_floating_point():
            raise ModelFileError(f"{fname}: tensor '{key}' holds {str(t.dtype).replace('torch.', '')} values where the "
                                 f"model has {str(dtype).replace('torch.', '')} weights; integer weights are refused")
        t = t.to(dtype)
        if not torch.isfinite(t).all():
            raise ModelFileError(f"{fname}: tensor '{key}' contains NaN or inf values (after the cast to "
                                 f"{str(dtype).replace('torch.', '')}); the model cannot be used")
        return t
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ModelFileError(f"{fname}: tensor '{key}' holds {str(t.dtype).replace('torch.', '')} values where the "
                             f"model has an {str(dtype).replace('torch.', '')} counter")
    return t.to(dtype)


def load_model(path_or_name: str | os.PathLike, *, spec: ModelSpec | None = None,
               device: str | torch.device | None = None, max_bytes: int | None = None
               ) -> tuple[Classifier, ModelSpec]:
    """Load a classifier; returns ``(model, spec)`` with the model in eval mode.

    ``path_or_name`` is a file path or the name of a default model (see :func:`default_models`).
    ``spec`` is needed for files without dsvlib metadata (plain state_dicts, ONNX graphs) and
    overrides the file's spec otherwise.  A ``.onnx`` file (or ``spec.arch == "onnx"``) is read by
    :func:`dsvlib.onnx_import.load_onnx`: the graph gets the normalised input ``(x - mean) / std``.

    Order of the checks, each before anything it guards is allocated: file size and header or zip
    directory; the spec (types, ranges: :mod:`dsvlib.limits`); the network's parameter count on
    the ``meta`` device; the tensors, cast to the model's dtype and checked finite; only then the
    real network.  Every problem with the file is a :class:`ModelFileError`; a bad argument
    (``spec``, ``max_bytes``) a ``ValueError`` naming it.
    """
    if spec is not None and not isinstance(spec, ModelSpec):
        raise ValueError(f"spec must be a dsvlib.ModelSpec or None, got {type(spec).__name__}")
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise ValueError(f"path_or_name must be a path or a default model name, got {type(path_or_name).__name__}")
    max_bytes = _max_bytes(max_bytes)
    p = Path(path_or_name)
    if not p.exists() and str(path_or_name) in default_models():
        p = default_model_path(str(path_or_name))
    elif not p.exists():
        raise ModelFileError(
            f"no model file or default model named {str(path_or_name)!r}; default models: {default_models()}"
        )
    if p.suffix.lower() == ".onnx" or (spec is not None and spec.arch == ONNX_ARCH):
        from .onnx_import import load_onnx  # onnx and onnx2torch are imported only when needed

        _check_file(p, max_bytes)
        model = load_onnx(p, spec, max_bytes=max_bytes)
        return (model.to(device) if device is not None else model), model.spec
    header, file_spec = _open_model_file(p, max_bytes)
    spec = spec or file_spec
    if spec is None:
        if header is None:
            _read_tensors(p, header)  # a checkpoint holding code is refused as such, not for its missing spec
        raise ModelFileError(
            f"{p.name} has no dsvlib spec in its metadata: pass spec=ModelSpec(arch=..., num_classes=..., "
            "in_channels=..., image_size=..., mean=..., std=...) (CLI: --arch, --num-classes, --channels, "
            "--image-size, --mean, --std)"
        )
    try:
        check_buildable(spec)  # on the meta device: a spec over the limits costs milliseconds
    except ValueError as e:
        raise ModelFileError(f"{p.name}: {e}") from None
    state = _read_tensors(p, header)
    try:
        with torch.device("meta"):
            skeleton = build_classifier(spec)
    except ValueError as e:
        raise ModelFileError(f"{p.name}: {e}") from None
    state = _check_state(state, skeleton.net, spec, p.name)
    del skeleton
    try:
        model = build_classifier(spec)
        model.net.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{p.name}: the weights could not be put into the network: {_first_line(e)}") from None
    model.eval()
    if device is not None:
        model.to(device)
    return model, spec
