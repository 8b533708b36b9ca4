"""DeepKKT-guided editing (paper Fig. 3 bottom, Fig. 6 bottom): start from a real image, set another
target (a class or a soft label), and optimise the DeepKKT objective from there.  An anchor term
keeps the edit close to the original so the structure survives while the class changes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from .synthesize import SynthConfig, StepInfo, SynthResult, default_config, synthesize

__all__ = ["EditResult", "edit", "default_edit_config"]


def default_edit_config(kind: str = "digits", **overrides) -> SynthConfig:
    """Synthesis defaults with an anchor to the original, fewer steps and a gentler step size; no
    centre prior, stretch, jitter view or reseeding (an edit keeps the original's framing and
    brightness, and is never restarted from noise)."""
    base = default_config(kind, steps=150, lr=0.02, anchor=2.0, l1=0.0, tv=0.3, diversity=0.0, centre=0.0,
                          stretch=False, jitter=None, reseed=0.0)
    return replace(base, **overrides)


@dataclass
class EditResult:
    original: torch.Tensor  # (N, C, H, W)
    edited: torch.Tensor  # (N, C, H, W)
    probs_before: torch.Tensor  # (N, K)
    probs_after: torch.Tensor  # (N, K)
    synthesis: SynthResult

    @property
    def changed(self) -> torch.Tensor:
        """(N,) bool: the edit now predicts its target."""
        return self.probs_after.argmax(1) == self.synthesis.labels


def edit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | list[int] | int,
         config: SynthConfig | None = None, *, seed: int = 0, device: str | torch.device | None = None,
         callback: Callable[[StepInfo], bool | None] | None = None) -> EditResult:
    """Edit ``images`` (N, C, H, W) in [0, 1] (or one (C, H, W) image) toward ``targets``."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    t = torch.as_tensor(targets)
    if t.dim() == 0:
        t = t.view(1).expand(len(x)).clone()
    elif t.dim() == 1 and t.is_floating_point() and len(x) == 1:
        t = t.view(1, -1)  # one soft label
    if config is None:
        config = default_edit_config("digits" if x.shape[1] == 1 else "natural")
    res = synthesize(model, t, config, init=x, seed=seed, device=device, callback=callback)
    dev = next(model.parameters()).device
    with torch.no_grad():
        before = torch.softmax(model(x.to(dev)), 1).cpu()
        after = torch.softmax(model(res.images.to(dev)), 1).cpu()
    return EditResult(original=x.clamp(0, 1), edited=res.images, probs_before=before, probs_after=after, synthesis=res)
