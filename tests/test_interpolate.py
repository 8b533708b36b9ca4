"""dsvlib.interpolate: class-mixing strips from one shared noise, and App. F's blending."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_model
from dsvlib.interpolate import blend_shift, interpolate
from dsvlib.synthesize import default_config

FAST = default_config("digits", steps=5, lr_lambda=0.0)


class Brightness(nn.Module):
    """Two classes: logit_1 - logit_0 = 10 (mean pixel - 0.5): p(1) = 1/2 exactly at mean 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([torch.zeros_like(z), z], 1)


class Constant(nn.Module):
    """Ignores its input: all probability on class 2 of 3."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, 4))
        self.b = nn.Parameter(torch.tensor([0.0, 0.0, 20.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4] @ self.w.t() * 0 + self.b


def test_strip_shapes_targets_and_probabilities() -> None:
    model, _ = make_model()
    res = interpolate(model, 3, 8, (0.0, 0.5, 1.0), FAST)
    assert res.images.shape == (3, 1, 28, 28) and res.probs.shape == (3, 10)
    assert torch.allclose(res.targets[:, 3], torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(res.targets[:, 8], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(res.probs.sum(1), torch.ones(3), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(res.probs, torch.softmax(model(res.images), 1), atol=1e-5)
    assert res.failed.shape == (3,) and res.status in ("ok", "some frames failed")


def test_one_shared_noise_equal_deltas_give_equal_frames() -> None:
    model, _ = make_model()
    cfg = default_config("digits", steps=5, lr_lambda=0.0, jitter=None)  # no per-frame random views
    res = interpolate(model, 1, 2, (0.3, 0.3, 0.7), cfg, seed=4)
    assert torch.allclose(res.images[0], res.images[1], atol=1e-6)
    assert not torch.allclose(res.images[0], res.images[2], atol=1e-3)


def test_frames_no_class_claims_are_flagged() -> None:
    res = interpolate(Constant(), 0, 1, (0.0, 0.5, 1.0), FAST, input_shape=(1, 2, 2))
    assert res.failed.tolist() == [True, True, True] and res.status == "some frames failed"
    assert res.probs[:, 2].min() > 0.99


def test_model_left_as_found_and_monotonic_reading() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 2)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    res = interpolate(model, 0, 1, (0.0, 0.5, 1.0), default_config("digits", steps=40, lr_lambda=0.0),
                      input_shape=(1, 4, 4))
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    pb = res.prob_b
    assert res.monotonic() == bool((pb[1:] >= pb[:-1] - 0.02).all())
    assert pb[-1] > pb[0]


def test_bad_requests() -> None:
    model, _ = make_model()
    with pytest.raises(ValueError, match="different classes"):
        interpolate(model, 3, 3, (0.5,), FAST)
    with pytest.raises(ValueError, match="class index"):
        interpolate(model, 3, 10, (0.5,), FAST)
    with pytest.raises(ValueError, match="deltas"):
        interpolate(model, 3, 4, (1.5,), FAST)


def test_blend_shift_has_the_analytic_answer() -> None:
    black = torch.zeros(4, 1, 6, 6)
    white = torch.ones(1, 1, 6, 6)
    res = blend_shift(Brightness(), black, white, 1, (0.0, 0.5, 0.8))
    p1 = torch.sigmoid(10 * (torch.tensor([0.0, 0.5, 0.8]) - 0.5))
    assert torch.allclose(res.target_prob, p1, atol=1e-6)
    assert res.flipped.tolist() == [0.0, 0.0, 1.0]
    assert res.probs.shape == (3, 4, 2)
    with pytest.raises(ValueError, match="must match"):
        blend_shift(Brightness(), black, torch.ones(2, 1, 6, 6), 1)
