"""Loss terms of the DeepKKT objective (paper Eq. 7-9) as small pure functions over tensors.

The stationarity term lives in :mod:`dsvlib.kkt` (shared with selection).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["primal_loss", "total_variation", "norm_prior", "l1_prior", "binary_prior", "centre_prior", "mass_centre_prior", "erosion", "solid_core_prior", "diversity_loss", "entropy", "feature_stats_loss", "sample_stats_loss", "sample_shape_loss", "feature_spread_loss"]


def primal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. (7), per candidate.  Hard targets: cross-entropy, 0 for a candidate already classified
    as its target (hinge-like).  Soft targets (N, K): cross-entropy to the soft label, always on
    (a mixed label has no 'correct' argmax to stop at)."""
    logp = F.log_softmax(logits, dim=1)
    if targets.dim() == 2:
        return -(targets * logp).sum(1)
    ce = -logp.gather(1, targets.view(-1, 1)).squeeze(1)
    wrong = (logits.argmax(1) != targets).to(ce.dtype)
    return ce * wrong


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV per image: mean |x[h+1]-x[h]| + mean |x[w+1]-x[w]|."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def norm_prior(x: torch.Tensor, center: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Mean squared deviation of pixels from ``center`` per image (the paper's L_norm)."""
    return ((x - center) ** 2).flatten(1).mean(1)


def l1_prior(x: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean |x - background| per image: a sparsity prior (strokes on an empty background)."""
    return (x - background).abs().flatten(1).mean(1)


def binary_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean x (1 - x) per image: 0 for pure black/white pixels, pushes strokes to the pixel range's
    ends (ink on paper).  Models with input normalisation layers are blind to contrast, so
    without it the DSV's contrast is arbitrary."""
    return (x * (1 - x)).flatten(1).mean(1)


def centre_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean of x * r^2 per image, r = distance from the image centre in half-sides (0 at the
    centre, 1 at the middle of an edge): ink far from the centre costs more.  Objects are framed
    (MNIST centres each digit in a 20x20 box and leaves a 4-pixel empty margin)."""
    _, _, h, w = x.shape
    yy = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(h, 1)
    xx = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, w)
    r2 = yy ** 2 + xx ** 2
    return (x * r2).flatten(1).mean(1)


def mass_centre_prior(x: torch.Tensor) -> torch.Tensor:
    """Squared distance, in half-sides, of each image's centre of mass (pixel values as mass,
    channels summed) from the image centre.  MNIST-like data centre each digit by its centre of
    mass; a reader that is not shift invariant (an MLP) expects the digit there.  Unlike
    :func:`centre_prior` it does not penalise ink far out, only ink that is out of balance."""
    _, _, h, w = x.shape
    m = x.sum(1)
    mass = m.flatten(1).sum(1).clamp_min(1e-6)
    yy = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xx = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    cy = (m.sum(2) * yy).sum(1) / mass
    cx = (m.sum(1) * xx).sum(1) / mass
    return cy ** 2 + cx ** 2


def erosion(x: torch.Tensor, size: int) -> torch.Tensor:
    """Each pixel's minimum over the ``size`` x ``size`` window from it (down and right; 0 beyond the
    border), per channel, same shape as ``x``: the ink whose whole neighbourhood is ink."""
    k = size - 1
    return -F.max_pool2d(F.pad(-x, (0, k, 0, k)), size, stride=1)


def solid_core_prior(x: torch.Tensor, size: int = 4) -> torch.Tensor:
    """Mean per image of its ``size`` x ``size`` :func:`erosion` (channels summed first): the solid
    cores of blobs and blocks.  A handwritten stroke is 2-3 pixels wide at 28x28 and keeps 2-6 % of
    its ink under a 4x4 erosion; a blob keeps most of it."""
    return erosion(x.sum(1, keepdim=True), size).flatten(1).mean(1)


def _same_group_cosine(f: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the rows of ``f`` (N, D) that share a group (0 with no pair)."""
    f = F.normalize(f, dim=1)
    sim = f @ f.t()
    same = (groups.view(-1, 1) == groups.view(1, -1)) & ~torch.eye(len(f), dtype=torch.bool, device=f.device)
    if not same.any():
        return f.new_zeros(())
    return sim[same].mean()


def diversity_loss(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between centred images of the same group (lower = more diverse)."""
    f = x.flatten(1)
    return _same_group_cosine(f - f.mean(1, keepdim=True), groups)


def feature_spread_loss(features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the feature vectors of candidates of the same group: low when
    a class's candidates use different features of the model (lower = more spread)."""
    return _same_group_cosine(features.flatten(1), groups)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Predictive entropy (nats) per sample."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


def _stats_distance(features: torch.Tensor, dims: list[int], running_mean: torch.Tensor,
                    running_var: torch.Tensor) -> torch.Tensor:
    """``(||mu - mu_run|| + ||sigma - sigma_run||) / ||sigma_run||`` over the channels, with mu and
    sigma the per-channel mean and standard deviation of ``features`` over ``dims``."""
    mu = features.mean(dims)
    sd = (features.var(dims, unbiased=False) + 1e-5).sqrt()
    run_sd = (running_var + 1e-5).sqrt()
    return ((mu - running_mean).norm(dim=-1) + (sd - run_sd).norm(dim=-1)) / run_sd.norm().clamp_min(1e-6)


def feature_stats_loss(features: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """DeepInversion's feature-statistics prior (Yin et al., CVPR 2020) for one BatchNorm layer:
    ``(||mu_B - mu_run||_2 + ||sigma_B - sigma_run||_2) / ||sigma_run||_2``, where mu_B and
    sigma_B are the per-channel mean and standard deviation of the batch's input ``features``
    (N, C, ...) to the layer and mu_run, sigma_run its running statistics.  Divided by the running
    standard deviation's norm (DeepInversion uses the raw norms on variances) so that one weight
    fits layers and models of any width and scale."""
    return _stats_distance(features, [0, *range(2, features.dim())], running_mean, running_var)


def sample_stats_loss(features: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """:func:`feature_stats_loss` per sample, (N,): each sample's own per-channel mean and standard
    deviation over its positions against the layer's running statistics.  At the first BatchNorm
    layer these are an image's low-level statistics (how much ink, how many edges, how sharp): each
    candidate, not only the batch, should have those of the data the model was trained on."""
    if features.dim() < 3:  # a 1-d BatchNorm on (N, C): no positions to pool over
        raise ValueError("sample_stats_loss needs features with spatial positions (N, C, ...)")
    return _stats_distance(features, list(range(2, features.dim())), running_mean, running_var)


def sample_shape_loss(features: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                      blank: torch.Tensor, band: float) -> torch.Tensor:
    """:func:`sample_stats_loss` with each sample's amount of ink left free within ``1 +- band`` of
    the data's average, (N,).  Measured from ``blank`` (the layer's per-channel input for an empty
    image), a sample's first and second moments grow with the share of its positions that hold
    strokes: a 1 has fewer than a 0, and the running statistics average over every class.  So each
    sample is compared with the running moments scaled by its own ink ``f`` (its second moment over
    the data's, clamped to the band): what is matched is how the strokes look (which edges, how
    sharp), not how many there are.  ``band`` 0 holds every sample to the average amount."""
    if features.dim() < 3:
        raise ValueError("sample_shape_loss needs features with spatial positions (N, C, ...)")
    dims = list(range(2, features.dim()))
    d = features - blank.view(1, -1, *[1] * len(dims))
    s1, s2 = d.mean(dims), (d ** 2).mean(dims)
    t1 = running_mean - blank
    t2 = running_var + t1 ** 2
    f = (s2.sum(1) / t2.sum().clamp_min(1e-12)).clamp(1 - band, 1 + band).unsqueeze(1)
    err1 = (s1 - f * t1).norm(dim=-1)
    err2 = ((s2 + 1e-5).sqrt() - (f * t2 + 1e-5).sqrt()).norm(dim=-1)
    return (err1 + err2) / (running_var + 1e-5).sqrt().norm().clamp_min(1e-6)
