"""The bounds on untrusted input, in one place: checked before anything is allocated.

A model file, an architecture description, an image or a zip from a stranger decides sizes
(classes, channels, image side, layer widths, member sizes).  Every size is checked against
:class:`Limits` before memory is spent on it; the network is first built on the ``meta`` device
to count its parameters (:func:`dsvlib.models.count_parameters`) without allocating them.

Each limit can be raised for a machine that needs more through an environment variable
``DSV_MAX_<FIELD>`` (e.g. ``DSV_MAX_PARAMETERS=500000000``), read at each check.
The README's "Safe loading policy" quotes :data:`DEFAULT_LIMITS`; a test keeps them equal.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS", "get_limits", "ENV_PREFIX"]

ENV_PREFIX = "DSV_MAX_"
MiB = 2**20


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what untrusted input may ask for."""

    classes: int = 10_000  # ModelSpec.num_classes
    channels: int = 16  # ModelSpec.in_channels
    image_side: int = 1024  # each side of ModelSpec.image_size, in pixels
    arch_value: int = 8192  # any integer in arch_kwargs (width, depth, hidden sizes)
    arch_list: int = 64  # entries of a list in arch_kwargs (MLP hidden layers)
    parameters: int = 150_000_000  # weights and buffers of the network, counted on the meta device
    model_bytes: int = 512 * MiB  # size of a model file
    header_bytes: int = 16 * MiB  # JSON header of a safetensors file
    pickle_bytes: int = 16 * MiB  # uncompressed data.pkl of a torch zip checkpoint
    zip_member_bytes: int = 64 * MiB  # uncompressed size of one member of an image-folder zip
    zip_total_bytes: int = 1024 * MiB  # uncompressed size of all members of a zip (image folder or torch)
    image_pixels: int = 40_000_000  # width x height of one image, checked before it is decoded

    def describe(self) -> dict[str, str]:
        """Each limit in words, keyed by its environment variable (what the README lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[ENV_PREFIX + f.name.upper()] = f"{v / MiB:g} MiB" if f.name.endswith("_bytes") else f"{v:,}"
        return out


DEFAULT_LIMITS = Limits()


def get_limits() -> Limits:
    """The limits in force: :data:`DEFAULT_LIMITS`, with any ``DSV_MAX_<FIELD>`` set in the
    environment.  A malformed value is a ``ValueError`` naming the variable."""
    changes = {}
    for f in dataclasses.fields(Limits):
        var = ENV_PREFIX + f.name.upper()
        raw = os.environ.get(var)
        if raw is None or not raw.strip():
            continue
        try:
            value = int(raw.replace("_", "").strip())
        except ValueError:
            raise ValueError(f"{var} must be a positive integer, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"{var} must be a positive integer, got {raw!r}")
        changes[f.name] = value
    return dataclasses.replace(DEFAULT_LIMITS, **changes) if changes else DEFAULT_LIMITS
