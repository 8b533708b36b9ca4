"""Take-aways: image grids, model fingerprints and a zip of a run, for the app, the CLI and the benches.

One place for how an image grid is written (:func:`image_grid`), how a model is identified
(:func:`model_fingerprint`) and what a download holds (:func:`export_zip`).  Images come in as
(N, C, H, W) tensors in [0, 1], as everywhere in dsvlib.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import enum
import hashlib
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "image_grid",
    "save_grid",
    "model_fingerprint",
    "jsonable",
    "run_meta",
    "synthesis_rows",
    "export_zip",
    "png_bytes",
]

GRID_SCALE = 3  # saved grids: 28x28 digits are unreadable at native size
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same inputs give the same zip bytes


# --------------------------------------------------------------------------- grids


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")
    return images


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 (N, H, W, C); NaN counts as 0, values are clamped."""
    x = torch.nan_to_num(images.detach().float().cpu(), nan=0.0).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def image_grid(images: torch.Tensor, ncol: int, *, pad: int = 2, scale: int = 1,
               pad_value: float = 1.0) -> np.ndarray:
    """The images as one uint8 picture, ``ncol`` to a row, row-major.

    Each image is upscaled ``scale`` times (nearest neighbour) and surrounded by ``pad`` pixels of
    ``pad_value`` (in [0, 1]; padding is in output pixels, not scaled).  The result has shape
    (rows*(H*scale + pad) + pad, ncol'*(W*scale + pad) + pad), with ncol' = min(ncol, N), and is
    (h, w) for grey images and (h, w, 3) for RGB.  No images give one empty cell.
    """
    images = _check_images(images)
    if int(ncol) < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad}")
    if not 0.0 <= pad_value <= 1.0:
        raise ValueError(f"pad_value must lie in [0, 1], got {pad_value}")
    n, c, h, w = images.shape
    scale, pad = int(scale), int(pad)
    ncol = max(1, min(int(ncol), n))
    nrow = max(1, -(-n // ncol))
    ch, cw = h * scale, w * scale
    canvas = np.full((nrow * (ch + pad) + pad, ncol * (cw + pad) + pad, c),
                     int(round(pad_value * 255)), np.uint8)
    cells = _to_uint8(images)
    if scale > 1:
        cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    for i, cell in enumerate(cells):
        r, k = divmod(i, ncol)
        top, left = pad + r * (ch + pad), pad + k * (cw + pad)
        canvas[top:top + ch, left:left + cw] = cell
    return canvas[..., 0] if c == 1 else canvas


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int, *, scale: int = GRID_SCALE,
              pad_value: float = 1.0) -> Path:
    """Write :func:`image_grid` (``scale`` times, nearest) as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image_grid(images, ncol, scale=scale, pad_value=pad_value)))
    return path


# --------------------------------------------------------------------------- identity and metadata


def model_fingerprint(model: nn.Module) -> str:
    """First 16 hex digits of sha256 over the state_dict: each entry's name, dtype, shape and bytes.

    Read on the CPU, so the same weights give the same fingerprint on any device; any changed
    weight or buffer changes it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # a byte view works for every dtype, bfloat16 included (numpy has none)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data: dataclasses become dicts, tuples/sets lists, tensors and arrays
    lists (scalars numbers), NaN/inf and anything else unknown (devices, dtypes, paths) strings."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # like dataclasses.asdict, without deep-copying tensors first
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v) for v in items]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return str(obj)


def run_meta(model: nn.Module, *, model_name: str, config: Any = None, seed: int | None = None,
             device: str | torch.device | None = None, **extra: Any) -> dict[str, Any]:
    """What a take-away needs to say where it came from: model name and fingerprint, the config
    (as JSON data), seed, device, the UTC time and the dsvlib version, plus ``extra``."""
    from . import __version__

    meta = {
        "model": model_name,
        "model_fingerprint": model_fingerprint(model),
        "config": jsonable(config),
        "seed": seed,
        "device": str(device if device is not None else next(model.parameters()).device),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dsvlib_version": __version__,
    }
    meta.update({k: jsonable(v) for k, v in extra.items()})
    return meta


def synthesis_rows(model: nn.Module, result: Any, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per synthesised image of a :class:`~dsvlib.synthesize.SynthResult`: label, class
    name, the model's predicted class, lambda, kept, the model's probability of the label and the
    entropy of its prediction (nats, H = -sum_c p_c log p_c)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        probs = torch.softmax(model(result.images.to(device)).float(), 1).cpu()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    names = list(class_names) if class_names is not None else list(getattr(getattr(model, "spec", None),
                                                                          "class_names", ()) or ())
    predicted = probs.argmax(1).tolist()
    rows = []
    for i, label in enumerate(result.labels.tolist()):
        rows.append({
            "label": int(label),
            "class_name": names[label] if label < len(names) else str(label),
            "predicted": int(predicted[i]),
            "lambda": float(result.lambdas[i]),
            "kept": bool(result.kept[i]),
            "probability": float(probs[i, label]),
            "entropy": float(entropy[i]),
        })
    return rows


# --------------------------------------------------------------------------- the zip


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[:60] or "image"


def _default_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        name = row.get("class_name", row.get("label", "image"))
        out.append(str(name))
    return out


def _csv_value(v: Any) -> Any:
    v = jsonable(v)
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _readme(n: int, meta: Mapping[str, Any]) -> str:
    model = meta.get("model", "the model")
    fp = meta.get("model_fingerprint")
    return (
        f"DSV Studio export: {n} image(s) made with {model}"
        + (f" (weights fingerprint {fp})" if fp else "") + ". "
        "images/ holds one PNG per image at the model's native input size, numbered in the order of "
        "metrics.csv; grid.png shows them all, upscaled, in the same order, row by row. metrics.csv has "
        "one row per image (index, file, then that image's numbers, such as its label, class name, "
        "Lagrange multiplier lambda, whether it was kept, the model's probability of its label and the "
        "entropy of its prediction). metrics.json holds the same rows under \"rows\" and, under \"meta\", "
        "how the images were made: the model, its fingerprint, the settings, the seed, the device and "
        "the time. Pixel values are 8-bit, so they match the run to within 1/255.\n"
    )


def export_zip(images: torch.Tensor, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], *,
               names: Sequence[str] | None = None, grid_ncol: int | None = None) -> bytes:
    """A zip of a run: ``images/0000_<name>.png`` (native size), ``grid.png``, ``metrics.csv``
    (index, file, then each row's fields), ``metrics.json`` ({"meta", "rows"}) and ``README.txt``.

    ``rows[i]`` describes ``images[i]``; ``names`` (default: each row's class name or label) go
    into the file names; ``grid_ncol`` defaults to min(N, 10).  Same inputs, same bytes.
    """
    images = _check_images(images)
    n = len(images)
    if len(rows) != n:
        raise ValueError(f"rows must have one entry per image: {n} images, {len(rows)} rows")
    names = list(names) if names is not None else _default_names(rows)
    if len(names) != n:
        raise ValueError(f"names must have one entry per image: {n} images, {len(names)} names")
    files = [f"images/{i:04d}_{_safe_name(nm)}.png" for i, nm in enumerate(names)]
    full_rows = []
    for i, (f, r) in enumerate(zip(files, rows)):
        fields = {k: v for k, v in jsonable(dict(r)).items() if k not in ("index", "file")}
        full_rows.append({"index": i, "file": f, **fields})
    columns: list[str] = []
    for r in full_rows:
        columns += [k for k in r if k not in columns]

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in full_rows:
        writer.writerow({k: _csv_value(r.get(k, "")) for k in columns})

    native = _to_uint8(images)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def put(name: str, data: bytes | str) -> None:
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), data, compress_type=zipfile.ZIP_DEFLATED)

        put("README.txt", _readme(n, meta))
        for f, arr in zip(files, native):
            put(f, png_bytes(arr[..., 0] if arr.shape[2] == 1 else arr))
        put("grid.png", png_bytes(image_grid(images, grid_ncol or min(max(n, 1), 10), scale=GRID_SCALE)))
        put("metrics.csv", text.getvalue())
        put("metrics.json", json.dumps({"meta": jsonable(meta), "rows": full_rows}, indent=2))
    return buf.getvalue()
