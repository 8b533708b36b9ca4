"""DSVs by selection: fit the multipliers lambda for FIXED real samples (paper Sec. 3.2, 5.1, Table 1).

Given a trained model theta and real samples (x_i, y_i), solve

    min_{lambda >= 0}  D(theta, -sum_i lambda_i g_i),      g_i = grad_theta L(Phi(x_i; theta), y_i)

(the stationarity condition of Eq. 5/8 with x frozen).  The highest-lambda samples of each class are
the selected DSVs; classwise sums of lambda are compared with classwise test accuracy (Fig. 2b).

How it is solved
----------------
* ``A = [g_1 ... g_N]`` is never needed as a dense object in the generic (batched) path:
  ``G(lambda) = A lambda`` is ONE weighted backward over batches (:func:`dsvlib.kkt.weighted_grad`),
  and ``dD/dlambda_i = <dD/dG, g_i>`` is the directional derivative of L_i along ``v = dD/dG``:
  one forward-mode JVP per batch gives it for every sample at once.  So a step costs ~2 passes.
* When ``N * P`` floats fit in ``max_cache_bytes`` (4,000 MNIST images x the ConvNet's 3,082
  non-scale-invariant parameters = 49 MB; x all 21,898 parameters = 350 MB), the per-sample
  gradients are computed once (``torch.func.vmap``) and every step is two matrix-vector products:
  100-1000x cheaper per step than a pass over the data.
* ``distance="l2"`` is a non-negative least-squares problem (convex; the fitted sum G is unique,
  and so is lambda when the gradients of the samples with lambda > 0 are linearly independent).
  ``distance="cos"`` has the SAME minimiser up to scale: the cosine between theta and a convex cone is largest at theta's
  projection onto the cone, which is the l2 solution.  Both are therefore solved as the l2
  problem (accelerated projected gradient, FISTA with adaptive restart) and ``lambda`` comes out
  in theta's units (theta ~= -sum lambda_i g_i).  Per-sample gradient norms span four orders of
  magnitude with cross-entropy, so the solver works in ``mu_i = lambda_i |g_i|`` (a diagonal
  preconditioner): without it, thousands of steps do not converge; with it, 1,000-3,000 do
  (measured against an exact active-set NNLS solve on MNIST).
* ``distance="l1"`` (the paper's Eq. 8) is not smooth: projected Adam on mu from the best uniform
  lambda; a heuristic, documented as such.
* A sample whose gradient is exactly zero (a hinge sample outside the margin) cannot contribute;
  its lambda is 0.

``alpha_i = lambda_i * |dL_i/dlogits|`` is reported next to lambda: for a linear model it is the
SVM dual coefficient (for the hinge loss alpha is proportional to lambda; for cross-entropy,
lambda multiplies a gradient whose size shrinks with the sample's confidence, so a confident
sample needs a large lambda to contribute anything).
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from .kkt import (DISTANCES, flat_cosine, functional_model, on_device, per_sample_loss, select_params, stationarity_distance,
                  weighted_grad)
from .losses import entropy as _entropy


__all__ = [
    "SelectConfig",
    "SelectStep",
    "SelectionResult",
    "fit_lambdas",
    "rank_per_class",
    "top_per_class",
    "bottom_per_class",
    "class_sums",
    "classwise_correlation",
    "write_rank_outputs",
    "SCORES",
]

SCORES = ("lambda", "alpha")
LOSSES = ("ce", "hinge")


@dataclass(frozen=True)
class SelectConfig:
    """Options of :func:`fit_lambdas`.

    ``params``: the parameter subset stationarity is applied to (see :func:`dsvlib.kkt.select_params`;
    ``"auto"`` leaves out scale-invariant tensors, on which stationarity cannot hold).
    ``loss``: ``"ce"`` or ``"hinge"`` (binary, 2 logits).  ``distance``: ``"cos"`` / ``"l2"``
    (same minimiser, solved exactly as non-negative least squares) or ``"l1"`` (heuristic).
    ``steps``: at most this many optimiser steps; stops earlier when the objective improves by less
    than ``tol`` (relative) over 20 steps.  ``lr``: step as a fraction of the safe step 1/L for
    cos/l2 (keep 1.0); Adam's step relative to the mean multiplier for l1.
    ``cache``: hold the per-sample gradients in memory (None: when N*P floats fit in
    ``max_cache_bytes``).  ``history_every``: keep every k-th solver step in the history.
    ``seed``: the power iteration's start vector (cos/l2).
    """

    params: str | tuple[str, ...] = "auto"
    loss: str = "ce"
    distance: str = "cos"
    steps: int = 3000
    lr: float = 1.0
    batch_size: int = 500
    tol: float = 1e-6
    cache: bool | None = None
    max_cache_bytes: int = 2 * 1024 ** 3
    history_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.params, (list, tuple)) and all(isinstance(p, str) for p in self.params):
            object.__setattr__(self, "params", tuple(self.params))  # a frozen config holds no list
        elif not isinstance(self.params, str):
            raise ValueError("params must be 'auto', 'all', 'weights', 'last', 'last_weight' or a list of name "
                             f"prefixes, got {self.params!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        for name, low in (("steps", 0), ("batch_size", 1), ("max_cache_bytes", 0), ("history_every", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.cache not in (None, True, False):
            raise ValueError(f"cache must be True, False or None (decide by max_cache_bytes), got {self.cache!r}")


@dataclass(frozen=True)
class SelectStep:
    """What the callback of :func:`fit_lambdas` receives.

    ``phase``: ``"gradients"`` while per-sample gradients are prepared (``step``/``steps`` count
    batches), then ``"solve"`` (``step``/``steps`` count optimiser steps).
    """

    phase: str
    step: int
    steps: int
    distance: float  # D(theta, -sum lambda g) of the requested kind at the current lambda
    cosine: float  # cos(theta, -sum lambda g)
    support: int  # samples with lambda > 0
    elapsed: float


@dataclass(frozen=True)
class SelectionResult:
    """Output of :func:`fit_lambdas`; every tensor is on the CPU, float32 / int64, shape (N,)."""

    lambdas: torch.Tensor
    alphas: torch.Tensor  # lambda_i * |dL_i/dlogits|: the SVM-dual reading of lambda
    grad_norms: torch.Tensor  # |g_i| over the selected parameters
    entropy: torch.Tensor  # predictive entropy (nats)
    pred: torch.Tensor  # predicted class
    labels: torch.Tensor
    class_lambda_sum: torch.Tensor  # (K,) sum of lambda per label
    class_names: tuple[str, ...]
    distance: float  # final D of the requested kind
    cosine: float  # final cos(theta, -sum lambda g)
    uniform_cosine: float  # cos with equal lambdas: how well stationarity holds before fitting
    history: dict[str, list]
    seconds: float
    steps_run: int
    converged: bool
    cached: bool  # per-sample gradients were held in memory
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.class_lambda_sum.numel())

    @property
    def support(self) -> torch.Tensor:
        """Indices of the samples with lambda > 0."""
        return torch.nonzero(self.lambdas > 0).flatten()

    def score(self, by: str = "lambda") -> torch.Tensor:
        if by == "lambda":
            return self.lambdas
        if by == "alpha":
            return self.alphas
        raise ValueError(f"by must be one of {SCORES}, got {by!r}")


# --------------------------------------------------------------------------- validation


def _check_inputs(images: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (N, C, H, W) with pixels in [0, 1]")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError("labels must be class indices, an integer tensor of shape (N,)")
    if len(images) != len(labels):
        raise ValueError(f"images has {len(images)} samples but labels has {len(labels)}")
    if len(images) == 0:
        raise ValueError("images is empty")
    if not torch.isfinite(images).all():
        raise ValueError("images contains NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"images must be pixels in [0, 1] (the model normalises), got values in [{lo:.3g}, {hi:.3g}]")
    return images, labels.long()


def _resolve_config(config: SelectConfig | None, overrides: dict[str, Any]) -> SelectConfig:
    """``config`` (default: ``SelectConfig()``) with the keyword overrides applied (validated again)."""
    if config is None:
        config = SelectConfig()
    elif not isinstance(config, SelectConfig):
        raise TypeError(f"config must be a SelectConfig or None, got {type(config).__name__}")
    known = [f.name for f in fields(SelectConfig)]
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise TypeError(f"fit_lambdas() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"accepted: device, callback and the SelectConfig fields {', '.join(known)}")
    return replace(config, **overrides) if overrides else config


# --------------------------------------------------------------------------- the operator A


def _flat(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _unflat(v: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    out, i = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(v[i:i + n].view(s))
        i += n
    return out


class _Gradients:
    """The per-sample gradient matrix A = [g_1 ... g_N] (P x N) as two products.

    ``apply(lam) = A lam`` (the weighted gradient sum G, flat) and ``adjoint(v) = A^T v``.
    With ``rows`` (N x P) cached these are matrix-vector products; otherwise one weighted
    backward and one forward-mode JVP per batch.  The model is seen functionally
    (:func:`dsvlib.kkt.functional_model`): every forward in eval mode, gradients taken with respect
    to fresh leaves, nothing on the caller's module toggled or written.
    """

    def __init__(self, model: nn.Module, named: list[tuple[str, nn.Parameter]], images: torch.Tensor,
                 labels: torch.Tensor, loss: str, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        self.forward, self.leaves = functional_model(model, named)
        self.module = self.forward.module  # an eval skeleton over the caller's tensors (kkt.eval_skeleton)
        self.loss, self.bs = loss, batch_size
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for p in self.leaves]
        self.theta = [p.detach() for p in self.leaves]
        # the other parameters as constants: the per-sample transforms must not record into them
        self.fixed = {n: p.detach() for n, p in self.module.named_parameters() if n not in set(self.names)}
        self.images, self.labels = images, labels
        self.device, self.dtype = device, dtype
        self.rows: torch.Tensor | None = None
        self.passes = 0  # full passes over the data (cost accounting)

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def _call(self, pvals: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits with the stationarity parameters replaced by ``pvals`` (for vmap/grad/jvp)."""
        return functional_call(self.module, {**self.fixed, **dict(zip(self.names, pvals))}, (x,))

    def _batches(self):
        for i in range(0, len(self.images), self.bs):
            yield (i, self.images[i:i + self.bs].to(self.device, self.dtype),
                   self.labels[i:i + self.bs].to(self.device))

    def prepare(self, cache: bool, on_batch: Callable[[int, int], bool]) -> tuple[torch.Tensor, ...] | None:
        """One vmap pass: per-sample gradient norms, |dL/dlogits| and logits; the rows if ``cache``.
        Returns None when ``on_batch`` asked to stop."""
        loss = self.loss

        def one(pvals: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor):
            logits = self._call(pvals, x.unsqueeze(0))
            return per_sample_loss(logits, y.unsqueeze(0), loss).sum(), logits.squeeze(0)

        per_sample = vmap(grad(one, has_aux=True), in_dims=(None, 0, 0))
        n = len(self.images)
        nb = -(-n // self.bs)
        norms = torch.empty(n, device=self.device, dtype=self.dtype)
        rows = None
        if cache:
            rows = torch.empty(n, self.num_params, device=self.device, dtype=self.dtype)
        logits_all = []
        theta = tuple(self.theta)
        for b, (i, xb, yb) in enumerate(self._batches()):
            gs, logits = per_sample(theta, xb, yb)
            flat = torch.cat([g.reshape(len(xb), -1) for g in gs], 1)
            norms[i:i + len(xb)] = flat.norm(dim=1)
            if rows is not None:
                rows[i:i + len(xb)] = flat
            logits_all.append(logits.detach())
            del gs, flat
            if on_batch(b + 1, nb):
                return None
        self.passes += 1
        self.rows = rows
        logits = torch.cat(logits_all)
        z = logits.clone().requires_grad_(True)
        dz, = torch.autograd.grad(per_sample_loss(z, self.labels.to(self.device), loss).sum(), z)
        return norms, dz.norm(dim=1).detach(), logits

    def logits(self) -> torch.Tensor:
        """Logits of every sample, without gradients (when the gradient pass was stopped)."""
        with torch.no_grad():
            return torch.cat([self.forward(xb) for _, xb, _ in self._batches()])

    def apply(self, lam: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            return lam @ self.rows
        total = None
        for i, xb, yb in self._batches():
            g, _, _ = weighted_grad(self.forward, self.leaves, xb, yb, lam[i:i + len(xb)], loss=self.loss)
            flat = _flat([t.detach() for t in g])
            total = flat if total is None else total + flat
        self.passes += 1
        return total

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            return self.rows @ v
        loss = self.loss
        tangents = tuple(_unflat(v, self.shapes))
        out = []
        for _, xb, yb in self._batches():
            def f(*pvals: torch.Tensor) -> torch.Tensor:
                return per_sample_loss(self._call(pvals, xb), yb, loss)

            with torch.no_grad():
                _, d = jvp(f, tuple(self.theta), tangents)
            out.append(d)
        self.passes += 1
        return torch.cat(out)


def _operator(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: SelectConfig,
              device: str | torch.device | None) -> _Gradients:
    """A for the stationarity parameters of ``model`` on ``device`` (a copy when it lives elsewhere;
    evaluated in eval mode on a skeleton, see :func:`dsvlib.kkt.functional_model`)."""
    work, device = on_device(model, device)
    named = select_params(work, cfg.params, input_shape=tuple(images.shape[1:]))
    return _Gradients(work, named, images, labels, cfg.loss, cfg.batch_size, device, named[0][1].dtype)


def _use_cache(op: _Gradients, cfg: SelectConfig) -> bool:
    """``cfg.cache``, or whether the N x P gradient rows fit in ``cfg.max_cache_bytes``."""
    if cfg.cache is not None:
        return bool(cfg.cache)
    return len(op.images) * op.num_params * torch.finfo(op.dtype).bits // 8 <= cfg.max_cache_bytes


# --------------------------------------------------------------------------- progress and history


class _Progress:
    """The history of the solve and the callback: ``SelectStep``s out, a stop request back."""

    def __init__(self, callback: Callable[[SelectStep], bool | None] | None, steps: int, every: int) -> None:
        self.callback, self.steps, self.every = callback, steps, every
        self.t0 = time.perf_counter()
        self.hist: dict[str, list] = {k: [] for k in ("step", "time", "distance", "cosine", "support")}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def on_batch(self, b: int, nb: int) -> bool:
        if self.callback is None:
            return False
        return bool(self.callback(SelectStep("gradients", b, nb, float("nan"), float("nan"), 0, self.elapsed())))

    def on_step(self, step: int, d: float, cos: float, support: int) -> bool:
        """Record solver step ``step`` (0-based) every ``every`` steps and at the last; True: stop."""
        elapsed = self.elapsed()
        if step % self.every == 0 or step == self.steps - 1:
            for key, val in (("step", step), ("time", elapsed), ("distance", d), ("cosine", cos), ("support", support)):
                self.hist[key].append(val)
        if self.callback is None:
            return False
        return bool(self.callback(SelectStep("solve", step + 1, self.steps, d, cos, support, elapsed)))


@dataclass(frozen=True)
class _Prepared:
    """What the gradient pass gives: per-sample |g_i|, |dL_i/dlogits| and logits."""

    norms: torch.Tensor
    dz: torch.Tensor
    logits: torch.Tensor
    stopped: bool  # the callback stopped the pass: norms and dz are zeros, lambda stays 0


def _gradient_phase(op: _Gradients, cache: bool, progress: _Progress) -> _Prepared:
    prep = op.prepare(cache, progress.on_batch)
    if prep is not None:
        return _Prepared(*prep, stopped=False)
    n = len(op.images)
    zeros = [torch.zeros(n, device=op.device, dtype=op.dtype) for _ in range(2)]
    return _Prepared(zeros[0], zeros[1], op.logits(), stopped=True)


# --------------------------------------------------------------------------- the multiplier update


class _Objective:
    """The solve objective over mu_i = lambda_i |g_i| (a diagonal preconditioner), mu >= 0.

    ``l2`` (also for ``cos``: same minimiser) or ``l1`` of theta + A S mu, S = diag(1/|g_i|);
    a sample whose gradient is exactly zero (``live`` False) keeps mu = 0.
    """

    def __init__(self, op: _Gradients, norms: torch.Tensor, distance: str) -> None:
        self.op, self.distance = op, distance
        self.kind = "l1" if distance == "l1" else "l2"
        self.live = norms > 0
        self.s = torch.where(self.live, 1.0 / norms.clamp_min(torch.finfo(op.dtype).tiny), torch.zeros_like(norms))

    def __call__(self, mu: torch.Tensor) -> tuple[torch.Tensor, float, float, float]:
        """(grad of the solve objective w.r.t. mu, solve objective, requested D, cosine)."""
        op, theta = self.op, self.op.theta
        G = op.apply(self.s * mu)
        Gr = G.detach().requires_grad_(True)
        d_solve = stationarity_distance(theta, _unflat(Gr, op.shapes), self.kind)
        v, = torch.autograd.grad(d_solve, Gr)
        with torch.no_grad():
            Gl = _unflat(G, op.shapes)
            cos = float(flat_cosine(theta, [-g for g in Gl]))
            d_user = (float(d_solve.detach()) if self.distance == self.kind
                      else float(stationarity_distance(theta, Gl, self.distance)))
        return self.s * op.adjoint(v), float(d_solve.detach()), d_user, cos

    def uniform(self) -> tuple[float, float]:
        """(cos with equal lambdas on every live sample, best uniform scale argmin_c |theta + c G1|^2)."""
        op = self.op
        G1 = op.apply(self.live.to(op.dtype))
        with torch.no_grad():
            cos = float(flat_cosine(op.theta, [-g for g in _unflat(G1, op.shapes)]))
            c = max(float(-(_flat(op.theta) @ G1) / (G1 @ G1).clamp_min(1e-30)), 0.0)
        return cos, c


@dataclass(frozen=True)
class _Solution:
    lam: torch.Tensor
    distance: float = float("nan")
    cosine: float = float("nan")
    steps_run: int = 0
    converged: bool = False


def _lipschitz(obj: _Objective, g0: torch.Tensor, gen: torch.Generator) -> float:
    """Lipschitz constant of grad_mu (x 1.1): power iteration on H u = grad(u) - grad(0) (exact: quadratic)."""
    op = obj.op
    u = torch.randn(len(obj.live), generator=gen, dtype=op.dtype).to(op.device) * obj.live
    lip = 0.0
    for _ in range(20):
        un = u.norm()
        if un == 0:
            break
        u = u / un
        hu = obj(u)[0] - g0
        prev, lip = lip, float(u @ hu)
        u = hu
        if abs(lip - prev) <= 1e-3 * abs(lip):  # the top eigenvalue is well separated
            break
    return max(lip, 1e-30) * 1.1


def _solve_l2(obj: _Objective, cfg: SelectConfig, progress: _Progress) -> _Solution:
    """Accelerated projected gradient (FISTA, adaptive restart) from mu = 0; stops when the best
    objective improved by less than ``tol`` (relative) over 20 steps."""
    op, live = obj.op, obj.live
    mu = torch.zeros(len(live), device=op.device, dtype=op.dtype)
    g, f, d_user, cos = obj(mu)
    lip = _lipschitz(obj, g, torch.Generator(device="cpu").manual_seed(cfg.seed))
    f0 = f
    y, t_mom = mu.clone(), 1.0
    best_f, best_mu, d_best, cos_best = f, mu.clone(), d_user, cos
    trail: list[float] = []
    steps_run, converged = 0, False
    for step in range(cfg.steps):
        new = (y - (cfg.lr / lip) * g).clamp_min(0) * live
        t_next = (1 + math.sqrt(1 + 4 * t_mom * t_mom)) / 2
        if float(g @ (new - mu)) > 0:  # adaptive restart (O'Donoghue & Candes)
            y, t_next = new.clone(), 1.0
        else:
            y = (new + ((t_mom - 1) / t_next) * (new - mu)).clamp_min(0)
        mu, t_mom = new, t_next
        g, f, d_user, cos = obj(y)
        if not math.isfinite(f) or f > 2 * f0:  # step too long: halve it, restart from the best
            lip *= 2
            y, mu, t_mom = best_mu.clone(), best_mu.clone(), 1.0
            g, f, d_user, cos = obj(y)
        if f < best_f:
            best_f, best_mu, d_best, cos_best = f, y.clone(), d_user, cos
        steps_run = step + 1
        trail.append(best_f)
        stop = progress.on_step(step, d_user, cos, int((y > 0).sum()))
        if len(trail) > 20 and trail[-21] - best_f <= cfg.tol * abs(best_f):
            converged = True
        if stop or converged:
            break
    return _Solution(obj.s * best_mu, d_best, cos_best, steps_run, converged)


def _solve_l1(obj: _Objective, cfg: SelectConfig, progress: _Progress, start: float, norms: torch.Tensor) -> _Solution:
    """l1 is not smooth: projected Adam on mu from the best equal multipliers ``start``, cosine-decayed."""
    live, steps = obj.live, cfg.steps
    mu = start * norms * live
    step_size = 0.05 * cfg.lr * (float(mu[live].mean()) if live.any() else 1.0)
    m1, m2 = torch.zeros_like(mu), torch.zeros_like(mu)
    g, f, d_user, cos = obj(mu)
    best_f, best_mu, d_best, cos_best = f, mu.clone(), d_user, cos
    steps_run = 0
    for step in range(steps):
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        m_hat, v_hat = m1 / (1 - 0.9 ** (step + 1)), m2 / (1 - 0.999 ** (step + 1))
        lr_t = step_size * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        mu = (mu - lr_t * m_hat / (v_hat.sqrt() + 1e-12)).clamp_min(0) * live
        g, f, d_user, cos = obj(mu)
        if f < best_f:
            best_f, best_mu, d_best, cos_best = f, mu.clone(), d_user, cos
        steps_run = step + 1
        if progress.on_step(step, d_user, cos, int((mu > 0).sum())):
            break
    return _Solution(obj.s * best_mu, d_best, cos_best, steps_run, False)


# --------------------------------------------------------------------------- result


def _result(model: nn.Module, labels: torch.Tensor, op: _Gradients, prep: _Prepared, sol: _Solution,
            uniform_cos: float, progress: _Progress, cfg: SelectConfig) -> SelectionResult:
    """Everything on the CPU as float32 / int64."""
    with torch.no_grad():
        lam = sol.lam.detach().float().cpu()
        logits = prep.logits.detach().float().cpu()
        k = logits.shape[1]
        labels = labels.cpu()
        spec = getattr(model, "spec", None)
        names = (tuple(spec.class_names) if spec is not None and len(spec.class_names) == k
                 else tuple(str(i) for i in range(k)))
        options = dict(params=cfg.params if isinstance(cfg.params, str) else list(cfg.params), loss=cfg.loss,
                       distance=cfg.distance, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, tol=cfg.tol,
                       num_params=op.num_params, seed=cfg.seed, data_passes=op.passes)
        return SelectionResult(
            lambdas=lam,
            alphas=lam * prep.dz.detach().float().cpu(),
            grad_norms=prep.norms.detach().float().cpu(),
            entropy=_entropy(logits),
            pred=logits.argmax(1),
            labels=labels,
            class_lambda_sum=class_sums(lam, labels, k),
            class_names=names,
            distance=sol.distance,
            cosine=sol.cosine,
            uniform_cosine=uniform_cos,
            history=progress.hist,
            seconds=progress.elapsed(),
            steps_run=sol.steps_run,
            converged=sol.converged,
            cached=op.rows is not None,
            options=options,
        )


# --------------------------------------------------------------------------- fit


def fit_lambdas(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: SelectConfig | None = None,
    *,
    device: str | torch.device | None = None,
    callback: Callable[[SelectStep], bool | None] | None = None,
    **overrides: Any,
) -> SelectionResult:
    """Fit lambda_i >= 0 for fixed real samples: min D(theta, -sum_i lambda_i grad_theta L_i) (Eq. 8).

    ``config``: the options (:class:`SelectConfig`; default ``SelectConfig()``); keyword
    ``overrides`` are SelectConfig fields applied on top of it (``fit_lambdas(m, x, y, steps=100)``).
    ``images``: (N, C, H, W) pixels in [0, 1]; ``labels``: (N,) class indices.
    ``callback(SelectStep)``: progress; return True to stop.
    The model is left exactly as found: parameters, ``.grad``, ``requires_grad``, train/eval mode,
    BatchNorm statistics, hooks (it is evaluated functionally, in eval mode).
    """
    cfg = _resolve_config(config, overrides)
    images, labels = _check_inputs(images, labels)
    op = _operator(model, images, labels, cfg, device)
    progress = _Progress(callback, cfg.steps, cfg.history_every)
    prep = _gradient_phase(op, _use_cache(op, cfg), progress)
    obj = _Objective(op, prep.norms, cfg.distance)
    if prep.stopped:
        uniform_cos, sol = float("nan"), _Solution(torch.zeros(len(images), device=op.device, dtype=op.dtype))
    else:
        uniform_cos, c_unif = obj.uniform()
        sol = (_solve_l2(obj, cfg, progress) if obj.kind == "l2"
               else _solve_l1(obj, cfg, progress, c_unif, prep.norms))
    return _result(model, labels, op, prep, sol, uniform_cos, progress, cfg)


# --------------------------------------------------------------------------- rankings


def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """sum_{i: y_i = c} values_i for every class c, shape (K,)."""
    return torch.zeros(num_classes, dtype=torch.float32).index_add_(0, labels.long(), values.float())


def rank_per_class(result: SelectionResult, *, by: str = "lambda") -> list[torch.Tensor]:
    """For each class, its sample indices from highest to lowest score (ties: higher entropy first)."""
    score = result.score(by)
    # stable sorts: by entropy (descending) first, then by score, so ties in the score
    # (typically lambda = 0) are ordered from the least to the most confident sample
    order = torch.sort(result.entropy, descending=True, stable=True).indices
    order = order[torch.sort(score[order], descending=True, stable=True).indices]
    lab = result.labels[order]
    return [order[lab == c] for c in range(result.num_classes)]


def top_per_class(result: SelectionResult, k: int, *, by: str = "lambda") -> torch.Tensor:
    """Indices of the ``k`` highest-scoring samples of every class (fewer where a class is smaller)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return torch.cat([r[:k] for r in rank_per_class(result, by=by)])


def bottom_per_class(result: SelectionResult, k: int, *, by: str = "lambda") -> torch.Tensor:
    """Indices of the ``k`` lowest-scoring samples of every class, lowest first."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return torch.cat([r.flip(0)[:k] for r in rank_per_class(result, by=by)])


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    x = x.double()
    order = torch.argsort(x)
    r = torch.empty_like(x)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for v in torch.unique(x):
        m = x == v
        if m.sum() > 1:
            r[m] = r[m].mean()
    return r


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a @ b) / den) if den > 0 else float("nan")


def _perm_pvalue(a: torch.Tensor, b: torch.Tensor, r: float, permutations: int, seed: int) -> float:
    """Two-sided permutation p-value of a Pearson correlation (exact enough for K = 10 classes)."""
    if not math.isfinite(r):
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    a = a.double() - a.double().mean()
    b = b.double() - b.double().mean()
    a, b = a / a.norm(), b / b.norm()
    perms = torch.argsort(torch.rand(permutations, len(b), generator=g), dim=1)
    rs = (b[perms] * a).sum(1)
    return float(((rs.abs() >= abs(r) - 1e-12).sum() + 1) / (permutations + 1))


def classwise_correlation(result: SelectionResult, model: nn.Module, test_dataset: Any, *, by: str = "lambda",
                          permutations: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Paper Fig. 2b: classwise sum of lambda vs classwise test accuracy.

    Returns Pearson's r and Spearman's rho (with two-sided permutation p-values), the K sums and the
    K accuracies.  ``test_dataset``: anything with ``images`` (N, C, H, W) in [0, 1] and ``labels``.
    """
    from .train import predict  # local: train imports the model zoo, select must stay light

    k = result.num_classes
    pred = predict(model, test_dataset.images).argmax(1)
    y = test_dataset.labels.cpu()
    acc = torch.tensor([float((pred[y == c] == c).float().mean()) if (y == c).any() else float("nan")
                        for c in range(k)])
    sums = class_sums(result.score(by), result.labels, k)
    ok = torch.isfinite(acc)
    pear = _pearson(sums[ok], acc[ok])
    spear = _pearson(_ranks(sums[ok]), _ranks(acc[ok]))
    return {
        "by": by,
        "pearson": pear,
        "pearson_p": _perm_pvalue(sums[ok], acc[ok], pear, permutations, seed),
        "spearman": spear,
        "spearman_p": _perm_pvalue(_ranks(sums[ok]), _ranks(acc[ok]), spear, permutations, seed),
        "class_sum": sums.tolist(),
        "class_accuracy": acc.tolist(),
        "class_names": list(result.class_names),
    }


# --------------------------------------------------------------------------- outputs


def write_rank_outputs(result: SelectionResult, dataset: Any, out_dir: str | Path, *, k: int = 8,
                       by: str = "lambda") -> dict[str, Path]:
    """Write the ranking for ``dsv rank``.

    * ``lambdas.csv``: index,label,lambda,entropy,predicted,alpha (one row per sample, data order);
    * ``ranks.png``: one row per class, its ``k`` highest-``by`` samples (highest first), a gap,
      then its ``k`` lowest (lowest first);
    * ``summary.json``: distances, cosines, support size, per-class sums, timing.
    Returns the paths by name.
    """
    from .export import save_grid

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    images = dataset.images
    if len(images) != len(result.lambdas):
        raise ValueError(f"dataset has {len(images)} samples but the result has {len(result.lambdas)}")
    if not torch.equal(dataset.labels.cpu().long(), result.labels):
        raise ValueError("dataset labels differ from the labels lambda was fitted with")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "lambdas.csv", "png": out / "ranks.png", "json": out / "summary.json"}

    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "label", "lambda", "entropy", "predicted", "alpha"])
        for i in range(len(result.lambdas)):
            w.writerow([i, int(result.labels[i]), f"{float(result.lambdas[i]):.6g}", f"{float(result.entropy[i]):.6g}",
                        int(result.pred[i]), f"{float(result.alphas[i]):.6g}"])

    ranks = rank_per_class(result, by=by)
    c, h, wd = images.shape[1:]
    blank = torch.ones(c, h, wd)  # white: visibly "no sample" on dark digits and on photos alike
    gap = torch.full((c, h, wd), 0.5)
    tiles = []
    for r in ranks:
        top = [images[i].float().cpu() for i in r[:k].tolist()]
        bottom = [images[i].float().cpu() for i in r.flip(0)[:k].tolist()]
        tiles += top + [blank] * (k - len(top)) + [gap] + bottom + [blank] * (k - len(bottom))
    save_grid(torch.stack(tiles).clamp(0, 1), paths["png"], 2 * k + 1, scale=1, pad_value=0.5)

    summary = {
        "by": by,
        "distance_kind": result.options.get("distance"),
        "distance": result.distance,
        "cosine": result.cosine,
        "uniform_cosine": result.uniform_cosine,
        "support": int((result.lambdas > 0).sum()),
        "samples": len(result.lambdas),
        "steps_run": result.steps_run,
        "converged": result.converged,
        "seconds": round(result.seconds, 2),
        "class_names": list(result.class_names),
        "class_lambda_sum": result.class_lambda_sum.tolist(),
        "class_support": [int(((result.labels == ci) & (result.lambdas > 0)).sum()) for ci in range(result.num_classes)],
        "options": result.options,
        "png_layout": f"one row per class; {k} highest-{by} samples (highest first) | gap | {k} lowest (lowest first)",
    }
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return paths
