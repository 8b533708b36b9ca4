"""How good are DSVs?  Distillation (paper Table 2), independent judges, diversity, shortcut marks.

* :func:`distill`: a fresh model of the teacher's architecture trained from scratch on the DSVs
  only; test accuracy mean +- std over seeds.  Optional soft labels from the teacher (KD).
* :func:`judge_accuracy`: a classifier of another architecture trained on real data; adversarial
  noise fools the teacher only, so high judge accuracy means the DSVs look like their class.
* :func:`diversity`: mean pairwise L2 distance within a class.
* :func:`mark_energy_ratio`: does the biased class's DSVs show the planted shortcut mark?
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch

from .augment import Augment
from .data import Dataset
from .models import ModelSpec, build_classifier
from .train import FitConfig, accuracy, fit, predict

__all__ = ["STUDENT_FIT", "distill", "judge_accuracy", "diversity", "mark_energy_ratio", "mean_entropy"]

# The student protocol: the same for DSVs and for every baseline it is compared with.
STUDENT_FIT = FitConfig(epochs=1, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine",
                        augment=Augment(translate=0.1, crop=0.1, cutout=0.0, flip=0.0, noise=0.0), min_steps=400)


@dataclass(frozen=True)
class DistillScore:
    mean: float
    std: float
    runs: tuple[float, ...]

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} +- {100 * self.std:.1f} %"


def distill(images: torch.Tensor, targets: torch.Tensor, spec: ModelSpec, test: Dataset, *,
            seeds: tuple[int, ...] = (0, 1, 2), fit_config: FitConfig = STUDENT_FIT,
            device: str | torch.device = "cpu",
            on_run: Callable[[int, float], None] | None = None) -> DistillScore:
    """Train a fresh ``spec`` model on (images, targets) per seed; accuracy on ``test``.

    ``targets``: labels (N,) or soft labels (N, K) (e.g. the teacher's probabilities: KD).
    """
    if len(images) == 0:
        raise ValueError("no images to distill from")
    accs = []
    for s in seeds:
        torch.manual_seed(1000 + s)
        student = build_classifier(spec).to(device)
        fit(student, images, targets, fit_config, seed=s)
        acc = accuracy(student, test.images, test.labels)
        accs.append(acc)
        if on_run is not None:
            on_run(s, acc)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return DistillScore(statistics.fmean(accs), std, tuple(accs))


def judge_accuracy(judge: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return accuracy(judge, images, labels)


def mean_entropy(model: torch.nn.Module, images: torch.Tensor) -> float:
    p = predict(model, images).clamp_min(1e-12)
    return float(-(p * p.log()).sum(1).mean())


def diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images of the same class, averaged over classes."""
    vals = []
    for c in labels.unique():
        f = images[labels == c].flatten(1)
        if len(f) < 2:
            continue
        d = torch.cdist(f, f)
        n = len(f)
        vals.append(float(d.sum() / (n * (n - 1))))
    return statistics.fmean(vals) if vals else float("nan")


def mark_energy_ratio(images: torch.Tensor, labels: torch.Tensor, biased_class: int,
                      box: tuple[int, int, int, int]) -> dict[str, float]:
    """Energy in the mark's box (mean squared deviation from each image's mean colour) for the
    biased class's DSVs, vs the same box in the other classes' DSVs."""
    r0, r1, c0, c1 = box
    region = images[:, :, r0:r1, c0:c1]
    center = images.mean(dim=(2, 3), keepdim=True)
    energy = ((region - center) ** 2).mean(dim=(1, 2, 3))
    b = energy[labels == biased_class]
    o = energy[labels != biased_class]
    if len(b) == 0 or len(o) == 0:
        raise ValueError("need DSVs of the biased class and of other classes")
    return {"biased": float(b.mean()), "others": float(o.mean()), "ratio": float(b.mean() / (o.mean() + 1e-12))}
