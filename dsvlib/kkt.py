"""The stationarity condition, shared by synthesis (x and lambda free) and selection (lambda free).

Paper Eq. (5)/(8):  theta* = -sum_i lambda_i grad_theta L(Phi(x_i; theta*), y_i).
The weighted gradient sum is ONE backward of sum_i lambda_i L_i (with ``create_graph`` when x or
lambda must be differentiated through it).  Parameters are read, never written.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "select_params",
    "per_sample_loss",
    "weighted_grad",
    "stationarity_distance",
    "flat_cosine",
    "dataset_gradient_cosine",
    "DISTANCES",
]

DISTANCES = ("cos", "l1", "l2")


def select_params(model: nn.Module, which: str | Sequence[str] = "all") -> list[tuple[str, nn.Parameter]]:
    """Named parameters the stationarity condition is applied to.

    ``"all"``; ``"last"`` (the last Linear layer: paper Fig. 4's partial-parameter setting);
    ``"weights"`` (all but biases); or a list of name prefixes.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if which == "all":
        out = named
    elif which == "weights":
        out = [(n, p) for n, p in named if not n.endswith("bias")]
    elif which in ("last", "last_weight"):
        last = None
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                last = name
        if last is None:
            raise ValueError("params='last' needs a model with a Linear layer")
        out = [(n, p) for n, p in named if n.rsplit(".", 1)[0] == last]
        if which == "last_weight":
            out = [(n, p) for n, p in out if n.endswith("weight")]
    elif isinstance(which, (list, tuple)):
        out = [(n, p) for n, p in named if any(n.startswith(pref) for pref in which)]
    else:
        raise ValueError(f"params must be 'all', 'weights', 'last', 'last_weight' or a list of name prefixes, got {which!r}")
    if not out:
        raise ValueError(f"params={which!r} selects no parameters; names: {[n for n, _ in named][:10]}")
    return out


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """L_i for each sample.

    ``targets``: class indices (N,) or soft labels (N, K).  ``loss="ce"``: cross-entropy.
    ``loss="hinge"`` (binary, 2 logits): L = 1 - y f with f = z_1 - z_0, y = +-1, counted active
    when y f <= 1 (a sample exactly on the margin is a support vector: its subgradient is taken
    as -y grad f, not 0).
    """
    if loss == "ce":
        if targets.dim() == 2:
            return -(targets * F.log_softmax(logits, dim=1)).sum(1)
        return F.cross_entropy(logits, targets, reduction="none")
    if loss == "hinge":
        if logits.shape[1] != 2 or targets.dim() != 1:
            raise ValueError("loss='hinge' needs 2 logits and hard labels")
        y = targets.to(logits.dtype) * 2 - 1
        margin = y * (logits[:, 1] - logits[:, 0])
        active = (margin <= 1 + 1e-6).to(logits.dtype)
        return (1 - margin) * active
    raise ValueError(f"loss must be 'ce' or 'hinge', got {loss!r}")


def weighted_grad(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    loss: str = "ce",
    create_graph: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(sum_i w_i grad_theta L_i as a list per parameter, logits, per-sample losses)."""
    logits = model(x)
    losses = per_sample_loss(logits, targets, loss)
    grads = torch.autograd.grad((weights * losses).sum(), list(params), create_graph=create_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    return grads, logits, losses


def flat_cosine(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> torch.Tensor:
    """cos between two parameter lists, each flattened into one vector."""
    a, b = list(a), list(b)
    dot = sum((x * y).sum() for x, y in zip(a, b))
    na = torch.sqrt(sum((x * x).sum() for x in a))
    nb = torch.sqrt(sum((y * y).sum() for y in b))
    return dot / (na * nb + 1e-12)


def stationarity_distance(theta: Sequence[torch.Tensor], grad_sum: Sequence[torch.Tensor],
                          kind: str = "cos") -> torch.Tensor:
    """D(theta, -sum lambda grad L) of Eq. (8).

    ``l1``: mean over all parameter entries of |theta + g| (the paper's choice).
    ``l2``: mean of (theta + g)^2 (Alg. 1).
    ``cos``: 1 - cos(theta, -g); scale-free, so a small lambda cannot satisfy it trivially.
    """
    if kind == "cos":
        return 1.0 - flat_cosine(theta, [-g for g in grad_sum])
    n = sum(t.numel() for t in theta)
    if kind == "l1":
        return sum((t + g).abs().sum() for t, g in zip(theta, grad_sum)) / n
    if kind == "l2":
        return sum(((t + g) ** 2).sum() for t, g in zip(theta, grad_sum)) / n
    raise ValueError(f"stationarity distance must be one of {DISTANCES}, got {kind!r}")


@torch.no_grad()
def _detached(ts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach() for t in ts]


def dataset_gradient_cosine(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                            params: str | Sequence[str] = "all", batch_size: int = 500,
                            loss: str = "ce") -> float:
    """cos(-theta, sum_j grad_theta L_j) over a real data set: how well stationarity holds
    with uniform multipliers.  1 means theta is exactly a positive multiple of -sum grad L
    (an L2-regularised training run at a stationary point); ~0 means stationarity cannot explain
    the weights from this data."""
    named = select_params(model, params)
    ps = [p for _, p in named]
    device = ps[0].device
    total = [torch.zeros_like(p) for p in ps]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            xb = images[i:i + batch_size].to(device)
            yb = labels[i:i + batch_size].to(device)
            g, _, _ = weighted_grad(model, ps, xb, yb, torch.ones(len(xb), device=device), loss=loss)
            total = [t + gi.detach() for t, gi in zip(total, g)]
    finally:
        model.train(was_training)
    return float(flat_cosine(_detached(ps), [-t for t in total]))
