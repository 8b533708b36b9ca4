"""Attribution maps with Captum: which pixels make the model call an image (a real image, its edit, a
DSV) its class.

* ``integrated_gradients``: IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da with a
  black baseline x' = 0; the maps sum to F(x) - F(x') (completeness), and :class:`Attribution`
  carries the approximation error Captum reports.
* ``saliency``: |dF/dx|.
* ``smoothgrad``: the mean of |dF/dx| over ``samples`` noisy copies x + N(0, sigma^2) (Captum's
  NoiseTunnel), a less speckled saliency.
* ``gradcam``: ReLU(sum_k w_k A_k) on the last Conv2d layer's activations A, w_k the mean gradient
  of the class score over A_k, upsampled to the input size; coarse but shows *where*.

F is the logit of the target class.  Maps are returned per image as (H, W) float32 on the CPU,
summed over channels; the model is left exactly as found (parameters, ``requires_grad``, mode, grads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["METHODS", "Attribution", "attribute", "last_conv_layer"]

METHODS = ("integrated_gradients", "saliency", "smoothgrad", "gradcam")


@dataclass(frozen=True)
class Attribution:
    method: str
    maps: torch.Tensor  # (N, H, W) float32, CPU; signed for integrated_gradients, >= 0 otherwise
    targets: torch.Tensor  # (N,) the class each map explains
    delta: torch.Tensor | None = None  # IG only: |sum(map) - (F(x) - F(0))| per image

    def normalised(self) -> torch.Tensor:
        """Each map scaled by its largest absolute value to [-1, 1] (or [0, 1]) for display."""
        peak = self.maps.flatten(1).abs().amax(1).clamp_min(1e-12)
        return self.maps / peak.view(-1, 1, 1)


def last_conv_layer(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` in the module order (Grad-CAM's layer), or None."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    return last


def _check(images: torch.Tensor, targets: torch.Tensor | Sequence[int] | int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    t = torch.as_tensor(targets, dtype=torch.long)
    if t.dim() == 0:
        t = t.expand(len(x))
    if t.shape != (len(x),):
        raise ValueError(f"targets must be one class or one class per image ({len(x)}), got shape {tuple(t.shape)}")
    return x, t.clone()


def attribute(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | Sequence[int] | int, *,
              method: str = "integrated_gradients", steps: int = 32, samples: int = 16, sigma: float = 0.1,
              seed: int = 0) -> Attribution:
    """Attribution maps of ``model`` for ``images`` (pixels in [0, 1]) toward ``targets``.

    ``steps``: IG's path steps; ``samples`` and ``sigma``: SmoothGrad's noisy copies and their std
    (in pixel units).  Raises ``ValueError`` for an unknown method, or ``gradcam`` on a model
    without a Conv2d layer.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps < 2 or samples < 1 or not sigma >= 0:
        raise ValueError("steps must be >= 2, samples >= 1 and sigma >= 0")
    x, t = _check(images, targets)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    x, t = x.to(device).requires_grad_(True), t.to(device)  # gradients are taken w.r.t. the pixels
    # Captum differentiates with torch.autograd.grad w.r.t. the pixels (or a layer's output), so the
    # weights' requires_grad and .grad are never touched: two threads may explain one shared model.
    was_training = model.training
    delta = None
    try:
        if was_training:
            model.eval()
        if method == "integrated_gradients":
            maps, delta = IntegratedGradients(model).attribute(
                x, baselines=torch.zeros_like(x), target=t, n_steps=steps, return_convergence_delta=True)
            delta = delta.detach().abs().float().cpu()
        elif method == "saliency":
            maps = Saliency(model).attribute(x, target=t, abs=True)
        elif method == "smoothgrad":
            torch.manual_seed(seed)  # NoiseTunnel draws with the global generator
            maps = NoiseTunnel(Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=samples,
                                                          stdevs=float(sigma), abs=True)
        else:
            layer = last_conv_layer(model)
            if layer is None:
                raise ValueError("method='gradcam' needs a model with a Conv2d layer; use integrated_gradients, "
                                 "saliency or smoothgrad for this model")
            cam = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
            maps = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    finally:
        if was_training:
            model.train()
    return Attribution(method=method, maps=maps.detach().sum(1).float().cpu(), targets=t.cpu(), delta=delta)
