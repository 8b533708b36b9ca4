"""Support vectors in two dimensions: toy data, small models and the library's own engine on them.

In images nobody can see a decision boundary; in 2-D everyone can.  This module makes the paper's
geometric claim (support vectors, and DSVs, sit on the decision boundary: complementary slackness,
Sec. 3.2 and 5.1) visible and measurable, with the SAME code paths as the image models:

* a point is a (2, 1, 1) "image" in pixel space [0, 1]; the toy models are ordinary
  :class:`dsvlib.Classifier` s (``arch="mlp"``, ``hidden=()`` for the linear model), so
  :func:`dsvlib.synthesize` and :func:`dsvlib.fit_lambdas` run on them unchanged (priors off);
* models are trained full-batch by gradient descent with momentum and weight decay, cosine-decayed
  to zero, so the end point is (close to) a stationary point of the L2-regularised loss, where
  theta = -(1/(n wd)) sum_j grad L_j (the paper's stationarity with equal multipliers);
* :func:`boundary_distance` measures how far a point is from the nearest class change.

scikit-learn is used only by :func:`svc_reference` (the classical SVM to compare the selection
with) and is imported lazily: it is a development dependency, not a runtime one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .kkt import per_sample_loss
from .models import Classifier, ModelSpec, build_classifier
from .select import SelectionResult, fit_lambdas
from .synthesize import StepInfo, SynthConfig, synthesize

__all__ = [
    "DATASETS",
    "MODELS",
    "ToyData",
    "make_toy",
    "as_images",
    "as_points",
    "ToyTrainConfig",
    "DEFAULT_TRAIN",
    "toy_spec",
    "train_toy",
    "is_linear",
    "linear_coefficients",
    "logits_of",
    "predict_points",
    "boundary_distance",
    "select_points",
    "SVCReference",
    "svc_reference",
    "SupportComparison",
    "compare_support",
    "ToySynthesis",
    "toy_synth_config",
    "synthesize_points",
    "decision_grid",
    "ToyDemo",
    "run_demo",
]

DATASETS = ("moons", "blobs", "circles", "xor")
MODELS = ("linear", "mlp")
_MARGIN = 0.05  # the scaled points fill [0.05, 0.95]: the engine's clamp to [0, 1] leaves room around them


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ToyData:
    """Points (N, 2) float32 in [0, 1]^2 and labels (N,) int64 in {0, 1}."""

    name: str
    points: torch.Tensor
    labels: torch.Tensor
    noise: float
    seed: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """The points as (N, 2, 1, 1) images: the library's pixel-space convention."""
        return as_images(self.points)


def as_images(points: torch.Tensor) -> torch.Tensor:
    """(N, 2) points -> (N, 2, 1, 1) images."""
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(points.shape)}")
    return points.reshape(-1, 2, 1, 1)


def as_points(images: torch.Tensor) -> torch.Tensor:
    """(N, 2, 1, 1) images (or (..., N, 2, 1, 1)) -> (N, 2) points."""
    if images.shape[-3:] != (2, 1, 1):
        raise ValueError(f"images must end in (2, 1, 1), got {tuple(images.shape)}")
    return images.reshape(*images.shape[:-3], 2)


def _raw(name: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled, noise-free points and labels of a family (class sizes n//2 and n - n//2)."""
    n0, n1 = n // 2, n - n // 2
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
    if name == "moons":  # scikit-learn's make_moons, drawn at random angles
        t0 = torch.rand(n0, generator=g) * math.pi
        t1 = torch.rand(n1, generator=g) * math.pi
        x = torch.cat([torch.stack([torch.cos(t0), torch.sin(t0)], 1),
                       torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], 1)])
    elif name == "blobs":  # two round clusters, centres 3 apart, std 1 x noise scale (added below)
        x = torch.cat([torch.tensor([[-1.5, 0.0]]).expand(n0, 2), torch.tensor([[1.5, 0.0]]).expand(n1, 2)])
    elif name == "circles":  # outer circle radius 1 (class 0), inner radius 0.5 (class 1)
        t = torch.rand(n, generator=g) * 2 * math.pi
        r = torch.where(y == 0, 1.0, 0.5)
        x = torch.stack([r * torch.cos(t), r * torch.sin(t)], 1)
    elif name == "xor":  # four quadrant clusters; class = sign(x1) != sign(x2)
        sx = torch.randint(0, 2, (n,), generator=g) * 2 - 1
        sy = torch.where(y == 1, -sx, sx)  # class 1: opposite signs
        x = torch.stack([sx, sy], 1).float() * 0.5 + (torch.rand(n, 2, generator=g) - 0.5) * 0.6 * torch.stack([sx, sy], 1)
        x = x.abs().clamp_min(0.05) * torch.stack([sx, sy], 1)
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return x.float(), y


# noise is given in units of the family's own size; blobs need a larger spread to look like blobs
_NOISE_SCALE = {"moons": 1.0, "blobs": 4.0, "circles": 1.0, "xor": 1.0}


def make_toy(name: str = "moons", n: int = 200, noise: float = 0.1, seed: int = 0) -> ToyData:
    """A seeded 2-class toy set: ``"moons"``, ``"blobs"``, ``"circles"`` or ``"xor"``.

    Gaussian noise of std ``noise`` (x4 for blobs, whose std is the spread of a cluster) is added,
    then the points are scaled isotropically (the geometry is kept) and centred so that they fill
    [0.05, 0.95] along their longer side.  Same (name, n, noise, seed): same points.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"n must be an int >= 4, got {n!r}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    g = torch.Generator().manual_seed(int(seed))
    x, y = _raw(name, n, g)
    x = x + noise * _NOISE_SCALE[name] * torch.randn(x.shape, generator=g)
    perm = torch.randperm(n, generator=g)  # no class-sorted order (batches, plots, "first k points")
    x, y = x[perm], y[perm]
    lo, hi = x.min(0).values, x.max(0).values
    scale = (1 - 2 * _MARGIN) / float((hi - lo).max().clamp_min(1e-12))
    x = (x - (lo + hi) / 2) * scale + 0.5
    return ToyData(name=name, points=x.clamp(0, 1).contiguous(), labels=y, noise=float(noise), seed=int(seed))


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ToyTrainConfig:
    """Full-batch gradient descent (momentum 0.9) with weight decay, cosine-decayed to zero.

    ``loss="ce"`` (cross-entropy, weight decay on every parameter: stationarity then holds for all
    of them with equal multipliers) or ``"hinge"`` (the soft-margin SVM on f = z_1 - z_0, weight
    decay on the weights only, as scikit-learn's SVC leaves its intercept unregularised; then
    C = 1 / (n wd)).
    """

    steps: int = 1500
    lr: float = 0.5
    weight_decay: float = 1e-3
    loss: str = "ce"
    hidden: tuple[int, ...] = (32, 32)  # MLP only

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "hinge"):
            raise ValueError(f"loss must be 'ce' or 'hinge', got {self.loss!r}")
        if self.steps < 1 or not (self.lr > 0) or not (self.weight_decay >= 0):
            raise ValueError("steps must be >= 1, lr > 0 and weight_decay >= 0")


# Defaults per model kind: the linear model is the soft-margin SVM (hinge), the MLP is trained as
# the image models are (cross-entropy).  Measured: both train in well under a second on 200 points.
DEFAULT_TRAIN = {
    "linear": ToyTrainConfig(steps=1500, lr=0.5, weight_decay=1e-2, loss="hinge", hidden=()),
    "mlp": ToyTrainConfig(steps=1500, lr=0.5, weight_decay=1e-3, loss="ce", hidden=(32, 32)),
}


def toy_spec(kind: str = "mlp", hidden: Sequence[int] = (32, 32)) -> ModelSpec:
    """The spec of a toy model: a 2-class MLP on (2, 1, 1) images, inputs normalised with mean 0.5,
    std 0.25 (the unit square becomes [-2, 2]^2); ``kind="linear"`` has no hidden layer."""
    if kind not in MODELS:
        raise ValueError(f"model kind must be one of {MODELS}, got {kind!r}")
    hid = () if kind == "linear" else tuple(int(h) for h in hidden)
    if kind == "mlp" and not hid:
        raise ValueError("an MLP needs at least one hidden layer; use kind='linear' for none")
    return ModelSpec(arch="mlp", num_classes=2, in_channels=2, image_size=(1, 1), mean=(0.5,), std=(0.25,),
                     class_names=("0", "1"), arch_kwargs={"hidden": list(hid)}, name=f"toy_{kind}")


def train_toy(data: ToyData, kind: str = "mlp", config: ToyTrainConfig | None = None, *, seed: int = 0,
              callback: Callable[[int, int, float], bool | None] | None = None) -> Classifier:
    """Train a toy model on ``data``; returns it in eval mode.  ``callback(step, steps, loss)``
    every 50 steps (return True to stop)."""
    cfg = config or DEFAULT_TRAIN[kind]
    torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
    model = build_classifier(toy_spec(kind, cfg.hidden))
    x, y = data.images, data.labels
    decay = [p for n, p in model.named_parameters() if cfg.loss == "ce" or not n.endswith("bias")]
    free = [p for n, p in model.named_parameters() if cfg.loss != "ce" and n.endswith("bias")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if free:
        groups.append({"params": free, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        loss = per_sample_loss(model(x), y, cfg.loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None and (step % 50 == 0 or step == cfg.steps - 1):
            if callback(step + 1, cfg.steps, float(loss.detach())):
                break
    model.eval()
    return model


def is_linear(model: nn.Module) -> bool:
    """True for a toy model without hidden layer (an affine map of the point)."""
    spec = getattr(model, "spec", None)
    return spec is not None and spec.arch == "mlp" and not list(spec.arch_kwargs.get("hidden", [1]))


def logits_of(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) of (N, 2) points: a toy :class:`Classifier` (spec input (2, 1, 1)) gets them as
    images; any other module is called on the (N, 2) points directly."""
    spec = getattr(model, "spec", None)
    pts = torch.as_tensor(points, dtype=torch.float32)
    dev = next(model.parameters()).device
    if spec is not None and tuple(spec.input_shape) == (2, 1, 1):
        return model(as_images(pts).to(dev))
    return model(pts.to(dev))


@torch.no_grad()
def predict_points(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Predicted class (N,) of (N, 2) points (the model's mode is left as found)."""
    was = model.training
    model.eval()
    try:
        return logits_of(model, points).argmax(1).cpu()
    finally:
        model.train(was)


@torch.no_grad()
def linear_coefficients(model: nn.Module) -> tuple[torch.Tensor, float]:
    """(w, b) in pixel space of the two-class difference f(x) = z_1(x) - z_0(x) = w.x + b of an
    affine 2-class model, read off by evaluating it at 0 and the unit vectors."""
    was = model.training
    model.eval()
    try:
        z = logits_of(model, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])).double().cpu()
    finally:
        model.train(was)
    if z.shape[1] != 2:
        raise ValueError(f"linear_coefficients needs a 2-class model, got {z.shape[1]} classes")
    f = z[:, 1] - z[:, 0]
    return torch.stack([f[1] - f[0], f[2] - f[0]]).float(), float(f[0])


# --------------------------------------------------------------------------- distance to the boundary


@torch.no_grad()
def boundary_distance(model: nn.Module, points: torch.Tensor, *, method: str = "auto", directions: int = 64,
                      max_radius: float = 2.0, samples: int = 100, iters: int = 20,
                      batch: int = 262144) -> torch.Tensor:
    """Each point's Euclidean distance (N,) to the nearest point where the predicted class changes.

    ``method="analytic"`` (a linear 2-class model): |w.x + b| / ||w||, with f = z_1 - z_0 = w.x + b.
    ``method="rays"`` (any classifier): from each point, ``directions`` rays at equal angles;
    along each ray the class is checked at ``samples`` equally spaced radii up to ``max_radius``,
    and the first change is refined by ``iters`` bisection steps; the distance is the smallest over
    the rays.  Error: at most a factor 1/cos(pi/directions) (0.12 % at 64 rays) from the angular
    spacing, plus a missed region thinner than max_radius/samples (0.02 at the defaults), plus
    max_radius/samples/2^iters from the bisection.  A point with no change within ``max_radius``
    gets ``inf``.  ``batch``: points evaluated per forward pass.  ``"auto"``: analytic for a linear toy
    model, rays otherwise.
    """
    pts = torch.as_tensor(points, dtype=torch.float32).cpu()
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(pts.shape)}")
    if method not in ("auto", "analytic", "rays"):
        raise ValueError(f"method must be 'auto', 'analytic' or 'rays', got {method!r}")
    if method == "auto":
        method = "analytic" if is_linear(model) else "rays"
    if method == "analytic":
        w, b = linear_coefficients(model)
        norm = float(w.norm())
        if norm == 0:
            return torch.full((len(pts),), float("inf"))
        return ((pts.double() @ w.double() + b).abs() / norm).float()
    was = model.training
    model.eval()
    try:
        return _ray_distance(model, pts, directions, max_radius, samples, iters, batch)
    finally:
        model.train(was)


def _ray_distance(model: nn.Module, pts: torch.Tensor, directions: int, max_radius: float, samples: int,
                  iters: int, batch: int) -> torch.Tensor:
    n = len(pts)
    ang = torch.arange(directions, dtype=torch.float32) * (2 * math.pi / directions)
    dirs = torch.stack([torch.cos(ang), torch.sin(ang)], 1)  # (D, 2)
    radii = torch.linspace(0, max_radius, samples + 1)[1:]  # (S,)
    own = predict_points(model, pts)  # (N,)

    def cls(p: torch.Tensor) -> torch.Tensor:
        flat = p.reshape(-1, 2)
        out = torch.cat([predict_points(model, flat[i:i + batch]) for i in range(0, len(flat), batch)])
        return out.reshape(p.shape[:-1])

    best = torch.full((n,), float("inf"))
    per = max(1, batch // (directions * samples))
    for i in range(0, n, per):
        p, o = pts[i:i + per], own[i:i + per]  # (B, 2), (B,)
        grid = p[:, None, None, :] + radii[None, None, :, None] * dirs[None, :, None, :]  # (B, D, S, 2)
        changed = cls(grid) != o[:, None, None]
        hit = changed.any(2)  # (B, D)
        first = changed.float().argmax(2)  # index of the first change along each ray
        hi = torch.where(hit, radii[first], torch.full_like(first, float("inf"), dtype=torch.float32))
        lo = torch.where(first > 0, radii[(first - 1).clamp_min(0)], torch.zeros_like(hi))
        hi_f = torch.where(hit, hi, torch.zeros_like(hi))
        for _ in range(iters):
            mid = (lo + hi_f) / 2
            c = cls(p[:, None, :] + mid[..., None] * dirs[None]) != o[:, None]
            hi_f = torch.where(c, mid, hi_f)
            lo = torch.where(c, lo, mid)
        d = torch.where(hit, hi_f, torch.full_like(hi_f, float("inf")))
        best[i:i + per] = d.min(1).values
    return best


# --------------------------------------------------------------------------- selection and the SVM


def select_points(model: nn.Module, data: ToyData, *, loss: str | None = None, params: str | None = None,
                  steps: int | None = None, callback: Callable[[Any], bool | None] | None = None) -> SelectionResult:
    """:func:`dsvlib.fit_lambdas` on the training points (paper Sec. 5.1): a linear toy model is read
    as the SVM it was trained as (hinge loss, l2 distance, stationarity on the weights only: the
    intercept is not regularised), an MLP with cross-entropy and the cosine on all of its
    parameters (all were decayed).  ``steps``: at most 3000 (linear) / 1000 (MLP) by default."""
    linear = is_linear(model)
    return fit_lambdas(model, data.images, data.labels, loss=loss or ("hinge" if linear else "ce"),
                       params=params or ("weights" if linear else "all"), distance="l2" if linear else "cos",
                       steps=steps or (3000 if linear else 1000), tol=1e-10 if linear else 1e-6, callback=callback)


@dataclass(frozen=True)
class SVCReference:
    """scikit-learn's linear SVC on the same points (C = 1 / (n wd) matches :func:`train_toy`'s hinge loss)."""

    support: torch.Tensor  # indices of the support vectors, sorted
    alphas: torch.Tensor  # (N,) dual coefficients |alpha_i| (0 off the support)
    w: torch.Tensor  # (2,)
    b: float
    C: float


def svc_reference(data: ToyData, C: float) -> SVCReference:
    """Fit scikit-learn's ``SVC(kernel="linear", C=C)``.  Raises ImportError with the install line when
    scikit-learn (a development dependency) is missing."""
    try:
        from sklearn.svm import SVC
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the SVC reference needs scikit-learn (a development dependency): "
                          "pip install scikit-learn") from e
    import numpy as np

    x = data.points.double().numpy().copy()
    y = data.labels.numpy().copy()
    svc = SVC(kernel="linear", C=float(C), tol=1e-8).fit(x, y)
    alphas = np.zeros(len(y))
    alphas[svc.support_] = np.abs(svc.dual_coef_[0])
    return SVCReference(support=torch.as_tensor(np.sort(svc.support_).copy()), alphas=torch.as_tensor(alphas).float(),
                        w=torch.tensor(np.asarray(svc.coef_[0], dtype=np.float64)).float(), b=float(svc.intercept_[0]), C=float(C))


@dataclass(frozen=True)
class SupportComparison:
    """The SVC's support vectors against the points the DeepKKT selection gives lambda > 0.

    ``margin``: y_i f(x_i) of every point under the compared model; ``on_margin``: the points whose
    hinge is active (y f <= 1 + ``tol``): where a hinge gradient exists, hence the only points that
    can get lambda > 0.  ``unique``: the active points' gradients are linearly independent, so
    stationarity fixes their multipliers uniquely (with more active points than the 2 weights,
    several lambda solutions exist and the selection returns one of them).
    """

    svc: SVCReference
    selection: SelectionResult
    lambda_support: torch.Tensor  # indices with lambda > rel_tol * max lambda, sorted
    margin: torch.Tensor
    on_margin: torch.Tensor  # indices, sorted
    unique: bool
    agree: bool  # lambda_support == svc.support
    model: Classifier  # the linear model the selection was run on (the SVC's, see compare_support)


def _linear_model(w: torch.Tensor, b: float) -> Classifier:
    """A toy linear Classifier with f = z_1 - z_0 = w.x + b in pixel space."""
    model = build_classifier(toy_spec("linear"))
    lin = model.net.layers[-1]
    std, mean = 0.25, 0.5
    with torch.no_grad():
        # net sees u = (x - mean)/std; f = w.x + b = (w std).u + (b + mean w.1)
        wu = w.float() * std
        bu = b + mean * float(w.sum())
        lin.weight.copy_(torch.stack([-wu / 2, wu / 2]))
        lin.bias.copy_(torch.tensor([-bu / 2, bu / 2]))
    return model.eval()


def compare_support(data: ToyData, *, C: float, tol: float = 1e-3, rel_tol: float = 1e-3) -> SupportComparison:
    """Fit the SVC, then run the DeepKKT selection on the SVC's own linear model.

    Traps handled (METHOD-NOTES, "The linear-SVM sanity check"): stationarity on the weights only
    (the SVC's intercept is not regularised); the hinge is undefined exactly on the margin, and the
    SVC puts its support vectors there only up to its tolerance, so (w, b) is shrunk by (1 - tol):
    every support vector is then strictly active and every other point (y f > 1 + tol) strictly
    not; ``unique`` says whether the multipliers are determined at all (2 weights: at most 2
    linearly independent active gradients).
    """
    svc = svc_reference(data, C)
    model = _linear_model(svc.w * (1 - tol), svc.b * (1 - tol))
    sel = select_points(model, data)
    lam = sel.lambdas
    lam_support = torch.nonzero(lam > rel_tol * float(lam.max().clamp_min(1e-30))).flatten()
    w, b = linear_coefficients(model)
    margin = (data.labels.float() * 2 - 1) * (data.points @ w + b)
    active = torch.nonzero(margin <= 1 + 1e-6).flatten()
    g = ((data.labels.float() * 2 - 1)[:, None] * data.points)[active].double()
    unique = len(active) > 0 and int(torch.linalg.matrix_rank(g)) == len(active)
    agree = lam_support.tolist() == svc.support.tolist()
    return SupportComparison(svc=svc, selection=sel, lambda_support=lam_support, margin=margin,
                             on_margin=active, unique=unique, agree=agree, model=model)


# --------------------------------------------------------------------------- synthesis


def toy_synth_config(steps: int = 200, **overrides: Any) -> SynthConfig:
    """The engine's options for points: no augmentation and no image priors (TV, sparsity, centre:
    meaningless for one "pixel" per coordinate); Adam lr 0.01 on the coordinates (1 % of the square
    a step); history every step.

    Stationarity is the l2 distance on every parameter with lambda held at 1 (``lr_lambda=0``).
    Why (measured on blobs/moons/circles, linear and MLP, 16 candidates, 200 steps): with the
    scale-free cosine, any points whose gradients point the right way satisfy stationarity, and the
    candidates stayed where they started or moved AWAY from the boundary; with the l2 distance the
    candidates must also supply the weights' magnitude, and a point's gradient (1 - p) is largest
    near the boundary, so they move there.  Holding lambda fixed removes the other way to supply
    the magnitude (a growing lambda): on linear blobs, seed 0, the mean distance of the DSVs was
    0.11 with lambda fixed and 0.20 with lambda free (training points: 0.29); over the bench's 3
    seeds and 6 cases the two are otherwise close (bench/results/toy.md).  Pass ``lr_lambda > 0``
    for the free multipliers of the image recipe.
    """
    cfg = SynthConfig(steps=steps, lr=0.01, lr_lambda=0.0, lambda_init=1.0, stationarity="l2", params="all",
                      augment=None, tv=0.0, norm=0.0, l1=0.0, centre=0.0, history_every=1)
    return replace(cfg, **overrides)


@dataclass
class ToySynthesis:
    """DSVs synthesised from random points, with their paths.

    ``trajectory``: (T, N, 2) the candidates at ``trajectory_steps`` (T,) (step 0 = the start);
    ``entropy``: (T, N) predictive entropy at the same steps; ``cosine``: (T,) stationarity cosine.
    """

    points: torch.Tensor  # (N, 2) end points
    labels: torch.Tensor
    lambdas: torch.Tensor
    kept: torch.Tensor
    trajectory: torch.Tensor
    trajectory_steps: torch.Tensor
    entropy: torch.Tensor
    cosine: torch.Tensor
    seconds: float
    result: Any = field(repr=False, default=None)  # the engine's SynthResult


def synthesize_points(model: nn.Module, per_class: int = 8, *, steps: int = 200, seed: int = 0,
                      record_every: int = 1, config: SynthConfig | None = None,
                      callback: Callable[[StepInfo], bool | None] | None = None) -> ToySynthesis:
    """``per_class`` DSVs per class with :func:`dsvlib.synthesize`, started at seeded uniform random
    points of the unit square; the path of every candidate is recorded every ``record_every`` steps
    through the engine's step callback (``info.images()``).  ``callback`` is passed every step too."""
    if per_class < 1 or record_every < 1:
        raise ValueError("per_class and record_every must be >= 1")
    cfg = config or toy_synth_config(steps)
    k = int(model.spec.num_classes)
    targets = torch.arange(k).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    init = torch.rand(len(targets), 2, generator=g)
    frames, frame_steps = [init.clone()], [0]

    def on_step(info: StepInfo) -> bool:
        if (info.step + 1) % record_every == 0 or info.step + 1 == info.steps:
            frames.append(as_points(info.images()))
            frame_steps.append(info.step + 1)
        return bool(callback(info)) if callback is not None else False

    t0 = time.perf_counter()
    res = synthesize(model, targets, cfg, init=as_images(init), seed=seed, callback=on_step)
    traj = torch.stack(frames)
    with torch.no_grad():
        ent = torch.stack([_entropy(logits_of(model, f)) for f in traj])
    cos_hist = res.history.get("cosine", [])
    return ToySynthesis(points=as_points(res.images), labels=res.labels, lambdas=res.lambdas, kept=res.kept,
                        trajectory=traj, trajectory_steps=torch.tensor(frame_steps), entropy=ent,
                        cosine=torch.tensor([float("nan")] + [float(c) for c in cos_hist]) if cos_hist else torch.zeros(0),
                        seconds=time.perf_counter() - t0, result=res)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), 1)
    return -(logp.exp() * logp).sum(1).cpu()


# --------------------------------------------------------------------------- for figures


@torch.no_grad()
def decision_grid(model: nn.Module, resolution: int = 150, lo: float = 0.0, hi: float = 1.0) -> dict[str, torch.Tensor]:
    """The model on a square grid: ``xs`` (R,), ``ys`` (R,), ``prob`` (R, R) of class 1 (rows: y),
    ``cls`` (R, R) predicted class; for drawing decision regions and the boundary (prob 0.5 for
    two classes)."""
    xs = torch.linspace(lo, hi, resolution)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    was = model.training
    model.eval()
    try:
        p = F.softmax(logits_of(model, pts).float(), 1).cpu()
    finally:
        model.train(was)
    return {"xs": xs, "ys": xs, "prob": p[:, 1].reshape(resolution, resolution),
            "cls": p.argmax(1).reshape(resolution, resolution)}


# --------------------------------------------------------------------------- the whole demo


@dataclass
class ToyDemo:
    """Everything the classroom shows for one (data, model) choice."""

    data: ToyData
    kind: str
    model: Classifier
    train_accuracy: float
    selection: SelectionResult
    synthesis: ToySynthesis
    comparison: SupportComparison | None  # linear model with scikit-learn present
    comparison_error: str | None  # why there is no comparison (scikit-learn missing, ...)
    timings: dict[str, float]


def run_demo(data: ToyData, kind: str = "mlp", *, per_class: int = 8, steps: int = 200, seed: int = 0,
             train: ToyTrainConfig | None = None,
             progress: Callable[[str, float], bool | None] | None = None) -> ToyDemo:
    """Train, select (lambda of every training point), synthesise DSVs with their paths, and for the
    linear model compare with scikit-learn's SVC.  ``progress(phase, fraction)`` is called through
    every phase; once it returns True, each remaining phase ends at its first step, so a stopped
    demo returns quickly with partial results."""
    t: dict[str, float] = {}
    cfg = train or DEFAULT_TRAIN[kind]
    stop = lambda phase, frac: bool(progress(phase, frac)) if progress is not None else False  # noqa: E731
    t0 = time.perf_counter()
    model = train_toy(data, kind, cfg, seed=seed, callback=lambda s, n, loss: stop("training", s / n))
    t["train"] = time.perf_counter() - t0
    acc = float((predict_points(model, data.points) == data.labels).float().mean())
    t0 = time.perf_counter()
    sel = select_points(model, data, callback=lambda info: stop("selection", info.step / max(info.steps, 1)))
    t["select"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth = synthesize_points(model, per_class, steps=steps, seed=seed,
                              callback=lambda info: stop("synthesis", (info.step + 1) / info.steps))
    t["synthesize"] = time.perf_counter() - t0
    comparison, why = None, None
    if kind == "linear":
        t0 = time.perf_counter()
        try:
            comparison = compare_support(data, C=1.0 / (len(data) * cfg.weight_decay))
        except ImportError as e:
            why = str(e)
        t["svc"] = time.perf_counter() - t0
    return ToyDemo(data=data, kind=kind, model=model, train_accuracy=acc, selection=sel, synthesis=synth,
                   comparison=comparison, comparison_error=why, timings=t)
