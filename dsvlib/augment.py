"""Differentiable, seeded image augmentations (the manifold condition's A(x), and training jitter).

One :class:`Augment` draws per-sample translation, crop/rescale and flip as one affine warp
(``grid_sample``, so gradients reach the pixels), then cutout and additive noise.  Randomness
comes only from the ``generator`` passed in; tensors are made on the input's device/dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augment", "AugmentParams"]


@dataclass(frozen=True)
class AugmentParams:
    theta: torch.Tensor  # (N, 2, 3) affine matrices
    cutout: torch.Tensor | None  # (N, 1, H, W) multiplicative mask
    noise: torch.Tensor | None  # (N, C, H, W)


@dataclass(frozen=True)
class Augment:
    """Strengths as in the paper's appendix: fractions of the image size and probabilities.

    translate: max shift as a fraction of the side; crop: max zoom-in fraction (scale in
    [1 - crop, 1 + crop/2]); cutout: side of the zeroed square as a fraction (applied with
    probability 0.5); flip: horizontal flip probability; noise: Gaussian std in pixel units.
    """

    translate: float = 0.125
    crop: float = 0.2
    cutout: float = 0.15
    flip: float = 0.0
    noise: float = 0.01

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in (self.translate, self.crop, self.cutout, self.flip, self.noise))

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> AugmentParams:
        n, c, h, w = x.shape
        gen_dev = generator.device if generator is not None else torch.device("cpu")

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=gen_dev).to(x.device, x.dtype)

        scale = 1.0 - self.crop * rand(n) + 0.5 * self.crop * rand(n) if self.crop > 0 else torch.ones(n, device=x.device, dtype=x.dtype)
        shift = (rand(n, 2) * 2 - 1) * 2 * self.translate  # grid units: the side is 2
        flip = torch.where(rand(n) < self.flip, -1.0, 1.0).to(x.dtype) if self.flip > 0 else torch.ones(n, device=x.device, dtype=x.dtype)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = flip / scale
        theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = shift
        cut = None
        if self.cutout > 0:
            side_h, side_w = max(1, round(self.cutout * h)), max(1, round(self.cutout * w))
            cy = (rand(n) * h).long()
            cx = (rand(n) * w).long()
            use = rand(n) < 0.5
            yy = torch.arange(h, device=x.device).view(1, h, 1)
            xx = torch.arange(w, device=x.device).view(1, 1, w)
            inside = ((yy - cy.view(n, 1, 1)).abs() <= side_h // 2) & ((xx - cx.view(n, 1, 1)).abs() <= side_w // 2)
            cut = (~(inside & use.view(n, 1, 1))).to(x.dtype).unsqueeze(1)
        noise = None
        if self.noise > 0:
            noise = torch.randn(x.shape, generator=generator, device=gen_dev).to(x.device, x.dtype) * self.noise
        return AugmentParams(theta, cut, noise)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 params: AugmentParams | None = None) -> torch.Tensor:
        """Augment ``x`` (N, C, H, W); pass ``params`` to replay a previous draw."""
        if not self.enabled:
            return x
        p = params or self.sample(x, generator)
        grid = F.affine_grid(p.theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.cutout is not None:
            out = out * p.cutout
        if p.noise is not None:
            out = out + p.noise
        return out
