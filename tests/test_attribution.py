"""dsvlib.attribution: Captum's Integrated Gradients, saliency, SmoothGrad and Grad-CAM behind one call."""
from __future__ import annotations

import pytest
import torch

from conftest import make_model, make_spec
from dsvlib.attribution import METHODS, attribute, last_conv_layer


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_signs(method: str) -> None:
    model, _ = make_model()
    att = attribute(model, _images(), [1, 2, 3], method=method, steps=8, samples=4)
    assert att.maps.shape == (3, 28, 28) and att.maps.dtype == torch.float32
    assert torch.isfinite(att.maps).all() and att.maps.abs().sum() > 0
    if method != "integrated_gradients":
        assert (att.maps >= 0).all()
    assert att.targets.tolist() == [1, 2, 3]
    norm = att.normalised()
    assert float(norm.abs().amax()) == pytest.approx(1.0)


def test_integrated_gradients_add_up_to_the_logit_difference() -> None:
    """Completeness: sum of IG = F(x) - F(0), up to the integral's approximation (Captum's delta)."""
    model, _ = make_model()
    x = _images(2)
    att = attribute(model, x, [4, 7], method="integrated_gradients", steps=64)
    with torch.no_grad():
        diff = model(x)[[0, 1], [4, 7]] - model(torch.zeros_like(x))[[0, 1], [4, 7]]
    total = att.maps.flatten(1).sum(1)
    assert torch.allclose(total, diff, atol=1e-2 * float(diff.abs().max()) + 1e-3)
    assert (att.delta <= 1e-2 * float(diff.abs().max()) + 1e-3).all()


def test_saliency_is_the_absolute_input_gradient() -> None:
    model, _ = make_model()
    x = _images(1).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, 5], x)
    att = attribute(model, x.detach(), 5, method="saliency")
    assert torch.allclose(att.maps, g.abs().sum(1), atol=1e-6)


def test_smoothgrad_is_seeded() -> None:
    model, _ = make_model()
    a = attribute(model, _images(1), 0, method="smoothgrad", samples=4, seed=3)
    b = attribute(model, _images(1), 0, method="smoothgrad", samples=4, seed=3)
    c = attribute(model, _images(1), 0, method="smoothgrad", samples=4, seed=4)
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.maps, c.maps)


def test_the_model_is_left_as_found() -> None:
    model, _ = make_model()
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    other = list(model.parameters())[1]
    grad = torch.ones_like(other)
    other.grad = grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in METHODS:
        attribute(model, _images(2), 0, method=method, steps=4, samples=2)
    assert model.training and not frozen.requires_grad and other.requires_grad
    assert other.grad is grad and torch.equal(grad, torch.ones_like(other))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradcam_needs_a_conv_layer_and_bad_arguments_are_named() -> None:
    mlp, _ = make_model(make_spec("mlp", hidden=(16,)))
    assert last_conv_layer(mlp) is None
    with pytest.raises(ValueError, match="Conv2d"):
        attribute(mlp, _images(1), 0, method="gradcam")
    model, _ = make_model()
    with pytest.raises(ValueError, match="method must be one of"):
        attribute(model, _images(1), 0, method="lime")
    with pytest.raises(ValueError, match="targets"):
        attribute(model, _images(2), [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        attribute(model, torch.full((1, 1, 28, 28), float("nan")), 0)
