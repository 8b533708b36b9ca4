"""The stationarity condition, shared by synthesis (x and lambda free) and selection (lambda free).

Paper Eq. (5)/(8):  theta* = -sum_i lambda_i grad_theta L(Phi(x_i; theta*), y_i).
The weighted gradient sum is ONE backward of sum_i lambda_i L_i (with ``create_graph`` when x or
lambda must be differentiated through it).  Parameters are read, never written.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = [
    "on_device",
    "num_classes",
    "scale_invariant_params",
    "batchnorm_layers",
    "functional_model",
    "eval_skeleton",
    "select_params",
    "per_sample_loss",
    "weighted_grad",
    "stationarity_distance",
    "flat_cosine",
    "dataset_gradient_cosine",
    "DISTANCES",
]

DISTANCES = ("cos", "l1", "l2")


def on_device(model: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device]:
    """(the model itself, or a copy on ``device``; the device): the caller's model is never moved.
    ``device=None`` is the model's own device."""
    here = next(model.parameters()).device
    dev = torch.device(device) if device is not None else here
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return (model if dev == here else copy.deepcopy(model).to(dev)), dev


def num_classes(model: nn.Module, input_shape: Sequence[int], device: torch.device) -> int:
    """The model's class count: its spec's, else the width of its logits on one zero image (in eval
    mode on :func:`eval_skeleton`: a train-mode BatchNorm would update its running statistics)."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        return int(spec.num_classes)
    with torch.no_grad():
        return int(eval_skeleton(model)(torch.zeros(1, *input_shape, device=device)).shape[1])


def eval_skeleton(model: nn.Module) -> nn.Module:
    """New module objects over the caller's own parameter and buffer tensors (no parameter memory),
    every module in eval mode.  ``torch.func.functional_call`` swaps tensors into a module's
    ``_parameters``/``_buffers`` dicts for the duration of a call, so two threads calling it on one
    shared module would run on each other's tensors (and could leave them installed); on a
    skeleton per run they never touch the caller's module, and nothing of it is toggled (a model
    left in train mode, or with one submodule in train mode, is evaluated in eval mode all the same)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared).eval()


def functional_model(model: nn.Module, named: list[tuple[str, nn.Parameter]]) -> tuple[Callable, list[torch.Tensor]]:
    """The model as a function of fresh leaves for ``named`` (sharing storage with the parameters):
    gradients reach the leaves, never the caller's ``.grad``; no flag of the caller's module is
    toggled and its dicts are never swapped (the forward runs on :func:`eval_skeleton`)."""
    skeleton = eval_skeleton(model)
    leaves = {n: p.detach().requires_grad_(True) for n, p in named}
    fixed = {n: p.detach() for n, p in skeleton.named_parameters() if n not in leaves}
    fixed.update(dict(skeleton.named_buffers()))

    def forward(x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, {**fixed, **leaves}, (x,))

    forward.module = skeleton  # type: ignore[attr-defined]  (where BatchNorm hooks go: never the caller's module)
    return forward, list(leaves.values())


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's BatchNorm layers (1-d, 2-d, 3-d; tracking running statistics)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _eval_copy(model: nn.Module, *, batch_statistics: bool = False) -> nn.Module:
    """An eval skeleton of the model (:func:`eval_skeleton`), with its BatchNorm layers in train mode
    if ``batch_statistics``: the caller's module is never toggled nor swapped into."""
    probe = eval_skeleton(model)
    if batch_statistics:
        for m in batchnorm_layers(probe):
            m.train()
    return probe


def _invariant_on(model: nn.Module, input_shape: Sequence[int], probes: int, ratio: float, seed: int,
                  batch: int) -> set[str]:

    named = {n: p.detach() for n, p in model.named_parameters()}
    dev = next(iter(named.values())).device
    g = torch.Generator().manual_seed(seed)
    scale_change = {n: 0.0 for n, p in named.items() if p.abs().max() > 0}
    rand_change = dict.fromkeys(scale_change, 0.0)
    running = dict(model.named_buffers())

    def out(x: torch.Tensor, override: dict) -> torch.Tensor:
        # fresh copies of the buffers per call: a batch-statistics BatchNorm writes to them
        return functional_call(model, {**named, **override, **{n: b.clone() for n, b in running.items()}}, (x,))

    with torch.no_grad():
        for _ in range(probes):
            x = torch.rand(batch, *input_shape, generator=g).to(dev)
            base = out(x, {})
            y = torch.randint(0, base.shape[1], (batch,), generator=g).to(dev)
            l0 = F.cross_entropy(base, y, reduction="none")
            for n in scale_change:
                w = named[n]
                r = torch.randn(w.shape, generator=g).to(dev, w.dtype)
                scale_change[n] += float((F.cross_entropy(out(x, {n: w * 2.0}), y, reduction="none") - l0).abs().sum())
                rand_change[n] += float((F.cross_entropy(out(x, {n: w + w.norm() * r / r.norm()}), y,
                                                         reduction="none") - l0).abs().sum())
    biggest = max(rand_change.values(), default=0.0)
    no_effect = {n for n, v in rand_change.items() if v <= 1e-6 * biggest}
    return no_effect | {n for n in scale_change if scale_change[n] < ratio * rand_change[n]}


def scale_invariant_params(model: nn.Module, input_shape: Sequence[int], *, probes: int = 2,
                           ratio: float = 0.1, seed: int = 0) -> set[str]:
    """Names of parameters that stationarity can never hold for.

    A weight followed by a normalisation layer (conv -> InstanceNorm/GroupNorm/LayerNorm) is
    scale invariant: L(c W) = L(W), hence <W, grad_W L> = 0 for EVERY input, so
    theta = -sum lambda grad L is impossible on it; a bias just before such a norm has no effect
    at all.  BatchNorm is the same under the batch statistics the model was trained with: a conv
    in front of it was trained scale invariant (weight decay only shrinks it, it never becomes
    stationary), although in eval mode, with the running statistics frozen, it no longer is.
    Such exactly invariant tensors are left out too (measured on a BatchNorm ConvNet trained with SGD + weight decay:
    eval-mode cosines of 0.15-0.3 on the conv weights, 0.8-0.98 on the BatchNorm scales).
    Detected directly on random probes: doubling the tensor (W -> W + W) changes the
    per-sample losses less than ``ratio`` times as much as adding a random direction of the same
    norm (W -> W + |W| r); in eval mode, and with batch statistics when the model has BatchNorm.
    The model is evaluated functionally (on a copy where a mode must change), never modified.
    """
    found = _invariant_on(_eval_copy(model), input_shape, probes, ratio, seed, batch=8)
    if batchnorm_layers(model):
        # exact invariance only (conv -> BatchNorm changes the loss by ~1e-6 of a random step): a
        # BatchNorm scale followed by more BatchNorm is only nearly invariant (its shift is not
        # scaled with it) and stationarity holds well on it in eval mode (cosines 0.8-0.9)
        found |= _invariant_on(_eval_copy(model, batch_statistics=True), input_shape, probes, ratio / 10, seed,
                               batch=16)
    return found


def select_params(model: nn.Module, which: str | Sequence[str] = "all", *,
                  input_shape: Sequence[int] | None = None) -> list[tuple[str, nn.Parameter]]:
    """Named parameters the stationarity condition is applied to.

    ``"auto"``: all except scale-invariant ones (see :func:`scale_invariant_params`; needs
    ``input_shape``); ``"all"``; ``"last"`` (the last Linear layer: paper Fig. 4's
    partial-parameter setting); ``"weights"`` (all but biases); or a list of name prefixes.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if which == "auto":
        if input_shape is None:
            raise ValueError("params='auto' needs input_shape=(C, H, W)")
        invariant = scale_invariant_params(model, input_shape)
        out = [(n, p) for n, p in named if n not in invariant]
    elif which == "all":
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
        raise ValueError(f"params must be 'auto', 'all', 'weights', 'last', 'last_weight' or a list of name prefixes, got {which!r}")
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
    # + 1e-30 under the root: a zero vector (every candidate dropped, so the weighted gradient sum
    # is exactly 0) has a finite derivative instead of NaN; any other norm is unchanged in float32
    na = torch.sqrt(sum((x * x).sum() for x in a) + 1e-30)
    nb = torch.sqrt(sum((y * y).sum() for y in b) + 1e-30)
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
                            params: str | Sequence[str] = "auto", batch_size: int = 500,
                            loss: str = "ce") -> float:
    """cos(-theta, sum_j grad_theta L_j) over a real data set: how well stationarity holds
    with uniform multipliers.  1 means theta is exactly a positive multiple of -sum grad L
    (an L2-regularised training run at a stationary point); ~0 means stationarity cannot explain
    the weights from this data."""
    named = select_params(model, params, input_shape=tuple(images.shape[1:]))
    forward, ps = functional_model(model, named)  # eval mode, nothing on the caller's module toggled
    device = ps[0].device
    total = [torch.zeros_like(p) for p in ps]
    for i in range(0, len(images), batch_size):
        xb = images[i:i + batch_size].to(device)
        yb = labels[i:i + batch_size].to(device)
        g, _, _ = weighted_grad(forward, ps, xb, yb, torch.ones(len(xb), device=device), loss=loss)
        total = [t + gi.detach() for t, gi in zip(total, g)]
    return float(flat_cosine(_detached(ps), [-t for t in total]))
