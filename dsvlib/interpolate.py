"""Mixing two classes (paper Fig. 6 top, App. F).

* :func:`interpolate`: DSVs for the soft labels y = (1 - delta) e_a + delta e_b, all synthesised in
  one run from ONE shared initial noise, so neighbouring frames differ by the label, not the seed.
  A frame that neither class claims (p_a + p_b < ``min_prob``) is flagged as failed.
* :func:`blend_shift`: App. F's mixing experiment: blend an insert (a DSV, or a real image of the
  same class) into real images with weight alpha, x' = (1 - alpha) x + alpha x_ins, and measure how
  far the prediction moves toward the insert's class.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .edit import _probs, evaluation_mode
from .kkt import num_classes, on_device
from .synthesize import StepInfo, SynthConfig, default_config, input_shape_of, soft_targets, synthesize

__all__ = ["InterpolationResult", "interpolate", "default_interpolation_config", "BlendShift", "blend_shift",
           "DEFAULT_DELTAS"]

DEFAULT_DELTAS = (0.0, 0.25, 0.5, 0.75, 1.0)
BACKOFF = (1.0, 0.25)


@dataclass(frozen=True)
class InterpolationResult:
    """``images`` (D, C, H, W) in [0, 1], one per delta; ``probs`` (D, K) the model's probabilities;
    ``failed`` (D,) bool: p_a + p_b < ``min_prob``.  ``status``: "ok", "some frames failed" or
    "failed" (the loss became non-finite at every step size; ``images`` are the initial noise)."""

    a: int
    b: int
    deltas: torch.Tensor  # (D,)
    targets: torch.Tensor  # (D, K)
    images: torch.Tensor  # (D, C, H, W)
    probs: torch.Tensor  # (D, K)
    failed: torch.Tensor  # (D,) bool
    status: str
    message: str
    seconds: float
    config: SynthConfig

    @property
    def prob_a(self) -> torch.Tensor:
        return self.probs[:, self.a]

    @property
    def prob_b(self) -> torch.Tensor:
        return self.probs[:, self.b]

    def monotonic(self, tolerance: float = 0.02) -> bool:
        """p_b never falls by more than ``tolerance`` from one delta to the next (deltas ascending)."""
        pb = self.prob_b[torch.argsort(self.deltas)]
        return bool(((pb[1:] - pb[:-1]) >= -tolerance).all())


def _check_classes(a: int, b: int, k: int) -> None:
    for name, c in (("a", a), ("b", b)):
        if not isinstance(c, int) or not 0 <= c < k:
            raise ValueError(f"{name} must be a class index in [0, {k - 1}], got {c!r}")
    if a == b:
        raise ValueError(f"a and b must be different classes, got {a} twice")


def default_interpolation_config(kind: str = "digits", **overrides: Any) -> SynthConfig:
    """:func:`dsvlib.synthesize.default_config` for the data kind with lambda held at 1: a candidate
    whose lambda turns negative is dropped and, with an init, never reseeded, so it kept only the
    priors and became a blob no class claims.  Never extended (a strip starts from an init)."""
    return default_config(kind, **{"lr_lambda": 0.0, "extend": 0.0, **overrides})


def interpolate(model: nn.Module, a: int, b: int, deltas: Sequence[float] = DEFAULT_DELTAS,
                config: SynthConfig | None = None, *, seed: int = 0, device: str | torch.device | None = None,
                callback: Callable[[StepInfo], bool | None] | None = None,
                input_shape: tuple[int, int, int] | None = None, min_prob: float = 0.5) -> InterpolationResult:
    """DSVs for y_delta = (1 - delta) e_a + delta e_b (paper Fig. 6), from one shared noise image.

    ``config``: default :func:`default_interpolation_config` for the data kind (lambda held at 1).  A non-finite
    loss is retried at a quarter of the step size with lambda held fixed; the model is left as found.
    """
    input_shape = input_shape_of(model, input_shape)
    d = torch.as_tensor(list(deltas), dtype=torch.float32).view(-1)
    if len(d) == 0 or not torch.isfinite(d).all() or (d < 0).any() or (d > 1).any():
        raise ValueError(f"deltas must be a non-empty list of numbers in [0, 1], got {list(deltas)}")
    if not 0.0 <= min_prob <= 1.0:
        raise ValueError(f"min_prob must lie in [0, 1], got {min_prob}")
    if config is None:
        config = default_interpolation_config("digits" if input_shape[0] == 1 else "natural")
    model, dev = on_device(model, device)
    t0 = time.perf_counter()
    with evaluation_mode(model) as model:
        k = num_classes(model, input_shape, dev)
        _check_classes(a, b, k)
        y = soft_targets(a, b, d, k)
        gen = torch.Generator().manual_seed(seed)
        noise = (config.init_mean + config.init_noise * torch.randn(1, *input_shape, generator=gen)).clamp(0, 1)
        init = noise.expand(len(d), -1, -1, -1).clone()
        images, message, status = None, "", "ok"
        for factor in BACKOFF:
            cfg = config if factor == 1.0 else replace(config, lr=config.lr * factor, lr_lambda=0.0)
            try:
                res = synthesize(model, y, cfg, init=init, seed=seed, device=dev, callback=callback,
                                 input_shape=input_shape)
            except FloatingPointError as e:
                message += f"lr {cfg.lr:g}: {e}; "
                continue
            if torch.isfinite(res.images).all():
                images = res.images
                if factor != 1.0:
                    message = f"the loss became non-finite at lr {config.lr:g}; synthesised at lr {cfg.lr:g}"
                break
            message += f"lr {cfg.lr:g}: non-finite pixels; "
        if images is None:
            images, status = init, "failed"
            message = "the loss became non-finite at every step size tried (" + message.rstrip("; ") + ")"
        probs = _probs(model, images, dev)
    failed = (probs[:, a] + probs[:, b]) < min_prob
    if status == "failed":
        failed = torch.ones(len(d), dtype=torch.bool)
    elif failed.any():
        status = "some frames failed"
    return InterpolationResult(a=a, b=b, deltas=d, targets=y, images=images, probs=probs, failed=failed,
                               status=status, message=message, seconds=time.perf_counter() - t0, config=config)


@dataclass(frozen=True)
class BlendShift:
    """``probs`` (A, N, K): the model's probabilities on (1 - alpha) x + alpha x_ins per alpha;
    ``target_prob`` (A,) mean p(target) and ``flipped`` (A,) the share predicted as the target."""

    alphas: torch.Tensor
    probs: torch.Tensor
    target_prob: torch.Tensor
    flipped: torch.Tensor


def blend_shift(model: nn.Module, images: torch.Tensor, inserts: torch.Tensor, target: int,
                alphas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5), *,
                device: str | torch.device | None = None) -> BlendShift:
    """App. F: x' = (1 - alpha) x + alpha x_ins for each image x (N, C, H, W) and its insert
    (``inserts``: (N, C, H, W), or one (1, C, H, W) for all); the model's shift toward ``target``."""
    x = torch.as_tensor(images, dtype=torch.float32)
    ins = torch.as_tensor(inserts, dtype=torch.float32)
    if x.dim() != 4 or ins.dim() != 4 or ins.shape[1:] != x.shape[1:] or len(ins) not in (1, len(x)):
        raise ValueError(f"images (N, C, H, W) and inserts (N or 1, C, H, W) must match, got {tuple(x.shape)} "
                         f"and {tuple(ins.shape)}")
    al = torch.as_tensor(list(alphas), dtype=torch.float32)
    if len(al) == 0 or (al < 0).any() or (al > 1).any():
        raise ValueError(f"alphas must be numbers in [0, 1], got {list(alphas)}")
    model, dev = on_device(model, device)
    with evaluation_mode(model) as model:
        mixed = torch.cat([(1 - a) * x + a * ins for a in al.tolist()])
        probs = _probs(model, mixed, dev).view(len(al), len(x), -1)
    return BlendShift(alphas=al, probs=probs, target_prob=probs[:, :, target].mean(1),
                      flipped=(probs.argmax(2) == target).float().mean(1))
