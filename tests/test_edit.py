"""dsvlib.edit: DeepKKT edits and the cross-entropy baseline on tiny seeded models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_model
from dsvlib.edit import default_edit_config, edit, ssim

FAST = default_edit_config("digits", steps=6)


def bn_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 12 * 12, 3))


def digits(n: int = 2, seed: int = 0, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


class Guarded(nn.Module):
    """Linear logits that turn NaN once any pixel has moved more than ``limit`` from ``x0``."""

    def __init__(self, x0: torch.Tensor, limit: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(x0[0].numel(), 3)
        self.x0, self.limit = x0, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x.flatten(1))
        moved = (x - self.x0).abs().flatten(1).amax(1, keepdim=True) > self.limit
        return torch.where(moved, torch.full_like(z, float("nan")), z)


@pytest.mark.parametrize("method", ["deepkkt", "ce"])
def test_model_left_exactly_as_found(method: str) -> None:
    model = bn_dropout_model().train()
    model[3].eval()  # a mixed mode must come back mixed
    grad = torch.ones_like(model[0].weight)
    model[0].weight.grad = grad
    model[5].bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    res = edit(model, digits(2, size=12), [1, 2], FAST, method=method)
    assert res.status[0] in ("reached", "not reached")
    assert model[0].weight.grad is grad and torch.equal(grad, torch.ones_like(grad))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # parameters and BatchNorm statistics, num_batches_tracked too
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("method", ["deepkkt", "ce"])
def test_result_shapes_frames_and_probabilities(method: str) -> None:
    model, _ = make_model()
    x = digits(2)
    res = edit(model, x, torch.tensor([3, 7]), FAST, method=method, frame_every=2)
    assert res.edited.shape == x.shape and res.original.shape == x.shape
    assert res.frame_steps == (0, 2, 4, 6)
    assert res.frames.shape == (4, 2, 1, 28, 28) and res.probs.shape == (4, 2, 10)
    assert torch.equal(res.frames[0], x) and torch.equal(res.frames[-1], res.edited)
    assert torch.allclose(res.probs.sum(2), torch.ones(4, 2), atol=1e-5)
    assert 0.0 <= float(res.edited.min()) and float(res.edited.max()) <= 1.0
    assert res.labels.tolist() == [3, 7] and res.steps_run == 6 and not res.stopped
    assert res.method == method and len(res.status) == 2
    # the recorded probabilities are the model's on the frames
    with torch.no_grad():
        assert torch.allclose(res.probs[-1], torch.softmax(model(res.edited), 1), atol=1e-5)


@pytest.mark.parametrize("method", ["deepkkt", "ce"])
def test_edit_raises_the_target_probability(method: str) -> None:
    model, _ = make_model()
    x = digits(3, seed=1)
    with torch.no_grad():
        start = torch.softmax(model(x), 1)
    targets = start.argmin(1)  # each image's least likely class
    res = edit(model, x, targets, default_edit_config("digits", steps=30), method=method)
    tp = res.target_probs
    assert (tp[-1] > 4 * tp[0]).all(), tp  # from ~0.07 (untrained model, least likely class)
    assert [s == "reached" for s in res.status] == (res.probs_after.argmax(1) == targets).tolist()


def test_soft_target_is_followed() -> None:
    model, _ = make_model()
    y = torch.zeros(10)
    y[2], y[5] = 0.5, 0.5
    res = edit(model, digits(1, seed=2)[0], y, default_edit_config("digits", steps=40), method="ce")
    assert res.targets.shape == (1, 10) and res.labels.tolist() == [2]
    p = res.probs_after[0]
    assert float(p[2] + p[5]) > 0.8 and abs(float(p[2] - p[5])) < 0.3
    assert res.status == ("reached",)


def test_each_image_is_edited_on_its_own() -> None:
    model, _ = make_model()
    x = digits(2, seed=3)
    alone = edit(model, x[:1], 4, FAST)
    together = edit(model, x, torch.tensor([4, 8]), FAST)
    assert torch.allclose(alone.edited[0], together.edited[0], atol=1e-6)


def test_non_finite_loss_backs_off_to_a_smaller_step() -> None:
    x = digits(1, size=8) * 0.5 + 0.25
    model = Guarded(x, limit=0.05)
    cfg = default_edit_config("digits", steps=3, lr=0.04, jitter=None)  # 3 x 0.04 > 0.05 > 3 x 0.01
    res = edit(model, x, 1, cfg, method="ce")
    assert res.status[0] in ("reached", "not reached")
    assert res.lr_used == (pytest.approx(0.01),) and "non-finite" in res.messages[0]
    assert torch.isfinite(res.edited).all() and torch.isfinite(res.probs).all()
    assert not torch.equal(res.edited, x)


@pytest.mark.parametrize("method", ["deepkkt", "ce"])
def test_a_loss_that_is_always_non_finite_fails_cleanly(method: str) -> None:
    x = digits(2, size=8)
    model = Guarded(x[:1], limit=-1.0)  # NaN from the start
    res = edit(model, x, [0, 1], default_edit_config("digits", steps=3), method=method)
    assert res.status == ("failed", "failed")
    assert all("non-finite" in m and "unchanged" in m for m in res.messages)
    assert torch.equal(res.edited, x) and torch.isfinite(res.edited).all()


def test_callback_counts_over_all_images_and_can_stop() -> None:
    model, _ = make_model()
    seen = []

    def cb(info) -> bool:
        seen.append((info.step, info.steps))
        return info.step == 2

    res = edit(model, digits(2), [1, 2], FAST, callback=cb)
    assert seen[0] == (0, 12) and seen[-1] == (2, 12)
    assert res.stopped and res.steps_run == 3
    assert res.frame_steps[-1] == 3  # the last frame is where it stopped
    assert torch.equal(res.edited[1], res.original[1]) and res.status[1] == "not reached"


def test_bad_requests_name_the_argument() -> None:
    model, _ = make_model()
    with pytest.raises(ValueError, match="method"):
        edit(model, digits(1), 1, FAST, method="pgd")
    with pytest.raises(ValueError, match="class indices"):
        edit(model, digits(1), 10, FAST)
    with pytest.raises(ValueError, match="one class or soft label per image"):
        edit(model, digits(2), torch.tensor([1, 2, 3]), FAST)
    with pytest.raises(ValueError, match="shape"):
        edit(model, torch.rand(1, 1, 14, 14), 1, FAST)
    with pytest.raises(ValueError, match="NaN"):
        edit(model, torch.full((1, 1, 28, 28), float("nan")), 1, FAST)


def test_ssim_values() -> None:
    x = digits(2, seed=4)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, noisy) > ssim(x, 1 - x)).all()
    assert torch.allclose(ssim(x, noisy), ssim(noisy, x), atol=1e-6)
    assert (ssim(x, 1 - x) < 0).all()  # an inverted image is anti-correlated
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:1])
