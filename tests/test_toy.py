"""dsvlib.toy: 2-D data, toy models, boundary distance, the SVC check and DSVs on points."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dsvlib import toy
from dsvlib.toy import ToyData


@pytest.fixture(scope="module")
def moons() -> ToyData:
    return toy.make_toy("moons", 200, 0.1, seed=0)


@pytest.fixture(scope="module")
def moons_mlp(moons) -> nn.Module:
    return toy.train_toy(moons, "mlp", seed=0)


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", toy.DATASETS)
def test_toy_data_shapes_ranges_and_seeding(name):
    d = toy.make_toy(name, 101, 0.1, seed=3)
    assert d.points.shape == (101, 2) and d.points.dtype == torch.float32
    assert d.labels.shape == (101,) and d.labels.dtype == torch.int64
    assert set(d.labels.tolist()) == {0, 1} and abs(int(d.labels.sum()) - 50.5) <= 0.5
    assert float(d.points.min()) >= 0.0 and float(d.points.max()) <= 1.0
    # isotropic scaling: the longer side spans [0.05, 0.95]
    span = (d.points.max(0).values - d.points.min(0).values).max()
    assert float(span) == pytest.approx(0.9, abs=1e-5)
    assert d.images.shape == (101, 2, 1, 1)
    assert torch.equal(toy.as_points(d.images), d.points)
    again = toy.make_toy(name, 101, 0.1, seed=3)
    assert torch.equal(again.points, d.points) and torch.equal(again.labels, d.labels)
    other = toy.make_toy(name, 101, 0.1, seed=4)
    assert not torch.equal(other.points, d.points)


def test_noise_changes_the_points_and_bad_arguments_are_named():
    a, b = toy.make_toy("circles", 80, 0.0, 0), toy.make_toy("circles", 80, 0.2, 0)
    assert not torch.allclose(a.points, b.points)
    # noise-free circles: two radii around a common centre
    r = (a.points - 0.5).norm(dim=1)
    assert float(r[a.labels == 1].max()) < float(r[a.labels == 0].min())
    with pytest.raises(ValueError, match="dataset"):
        toy.make_toy("spirals")
    with pytest.raises(ValueError, match="noise"):
        toy.make_toy("moons", noise=-1)
    with pytest.raises(ValueError, match="n must"):
        toy.make_toy("moons", n=2)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("kind,name", [("mlp", "moons"), ("mlp", "blobs"), ("linear", "blobs")])
def test_models_train_to_high_accuracy(kind, name):
    d = toy.make_toy(name, 200, 0.1, seed=1)
    m = toy.train_toy(d, kind, seed=1)
    acc = float((toy.predict_points(m, d.points) == d.labels).float().mean())
    assert acc >= 0.97
    assert not m.training
    untrained = toy.train_toy(d, kind, toy.ToyTrainConfig(steps=1, lr=1e-6, loss="ce", hidden=(32, 32)), seed=1)
    assert float((toy.predict_points(untrained, d.points) == d.labels).float().mean()) < acc


def test_mlp_is_near_stationary(moons, moons_mlp):
    """SGD + weight decay to convergence: theta ~ -(1/(n wd)) sum grad L, so equal multipliers explain
    the weights; the selection's fitted cosine is at least as good."""
    sel = toy.select_points(moons_mlp, moons)
    assert sel.uniform_cosine > 0.8
    assert sel.cosine >= sel.uniform_cosine - 1e-6


# --------------------------------------------------------------------------- boundary distance


def test_linear_distance_matches_the_analytic_value():
    d = toy.make_toy("blobs", 120, 0.1, seed=2)
    m = toy.train_toy(d, "linear", seed=2)
    lin = m.net.layers[-1]
    # by hand from the weights: the net sees u = (x - 0.5) / 0.25; f = z1 - z0
    wu = (lin.weight[1] - lin.weight[0]).detach().double()
    bu = float((lin.bias[1] - lin.bias[0]).detach())
    w, b = wu / 0.25, bu - float((wu * 0.5 / 0.25).sum())
    pts = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    expected = (pts.double() @ w + b).abs() / w.norm()
    got = toy.boundary_distance(m, pts)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
    # the ray search, run on the same linear model, finds the same distances
    rays = toy.boundary_distance(m, pts, method="rays")
    torch.testing.assert_close(rays.double(), expected, rtol=2e-3, atol=2e-4)
    # and a point moved onto the boundary along the normal is at distance ~0
    on = pts[:5].double() - ((pts[:5].double() @ w + b) / (w @ w))[:, None] * w
    assert float(toy.boundary_distance(m, on.float()).max()) < 1e-5


def test_mlp_distance_matches_a_brute_force_grid(moons, moons_mlp):
    res = 601
    xs = torch.linspace(-0.5, 1.5, res)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    cls = toy.predict_points(moons_mlp, grid)
    pts = moons.points[:12]
    own = toy.predict_points(moons_mlp, pts)
    brute = torch.stack([(grid[cls != o] - p).norm(dim=1).min() for p, o in zip(pts, own)])
    got = toy.boundary_distance(moons_mlp, pts)
    cell = float(xs[1] - xs[0])
    assert torch.isfinite(got).all()
    assert float((got - brute).abs().max()) < 1.5 * cell
    # a point far outside: farther than max_radius from any change gets inf (documented)
    assert math.isinf(float(toy.boundary_distance(moons_mlp, torch.tensor([[30.0, 30.0]]), max_radius=1.0)[0]))


def test_boundary_distance_accepts_a_plain_points_module():
    """Any module mapping (N, 2) points to logits works (rays)."""
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))  # f = z1 - z0 = x1 - 0.3
        lin.bias.copy_(torch.tensor([0.0, -0.3]))
    pts = torch.tensor([[0.5, 0.5], [0.1, 0.9], [0.31, 0.2]])
    got = toy.boundary_distance(lin, pts)
    torch.testing.assert_close(got, torch.tensor([0.2, 0.2, 0.01]), rtol=3e-3, atol=3e-4)
    with pytest.raises(ValueError, match="points"):
        toy.boundary_distance(lin, torch.zeros(3, 3))


# --------------------------------------------------------------------------- SVC vs selection


def _two_sv_set() -> ToyData:
    """Separable points whose hard-margin SVM has exactly two support vectors, (0.4, 0.5) and
    (0.6, 0.5), linearly independent (a non-degenerate case: the multipliers are unique)."""
    g = torch.Generator().manual_seed(0)
    left = torch.stack([0.05 + 0.25 * torch.rand(30, generator=g), 0.05 + 0.9 * torch.rand(30, generator=g)], 1)
    right = torch.stack([0.7 + 0.25 * torch.rand(30, generator=g), 0.05 + 0.9 * torch.rand(30, generator=g)], 1)
    pts = torch.cat([torch.tensor([[0.4, 0.5]]), left, torch.tensor([[0.6, 0.5]]), right])
    labels = torch.cat([torch.zeros(31, dtype=torch.long), torch.ones(31, dtype=torch.long)])
    return ToyData("hand", pts, labels, 0.0, 0)


def test_svc_support_vectors_coincide_with_lambda_support():
    pytest.importorskip("sklearn")
    d = _two_sv_set()
    cmp = toy.compare_support(d, C=1e6)
    assert cmp.svc.support.tolist() == [0, 31]
    assert cmp.lambda_support.tolist() == [0, 31]
    assert cmp.agree and cmp.unique
    # the analytic hard-margin SVM: w = (10, 0) (margin half-width 0.1), b = -5
    torch.testing.assert_close(cmp.svc.w, torch.tensor([10.0, 0.0]), atol=1e-3, rtol=1e-4)
    # hard-margin dual: alpha = |w|^2 / 2 = 50 on both.  The weights live behind the input
    # normalisation u = (x - 0.5) / 0.25 and each logit carries half of f, so stationarity on the
    # weights reads (1 - tol) 0.25 w / 2 = sum lambda y u: lambda = (1 - tol) alpha 0.25^2 / 2
    lam = cmp.selection.lambdas[[0, 31]]
    torch.testing.assert_close(lam, torch.full((2,), 0.999 * 50 * 0.25 ** 2 / 2), rtol=5e-3, atol=1e-4)


def test_svc_comparison_on_a_noisy_linear_set_keeps_lambda_inside_the_margin():
    """Soft margin, many support vectors (degenerate: more than the 2 weights): every lambda > 0
    point is on or inside the margin, and the SVC's support vectors are exactly those points."""
    pytest.importorskip("sklearn")
    d = toy.make_toy("blobs", 150, 0.1, seed=0)
    cmp = toy.compare_support(d, C=0.5)
    assert not cmp.unique
    assert set(cmp.lambda_support.tolist()) <= set(cmp.on_margin.tolist())
    assert set(cmp.svc.support.tolist()) <= set(cmp.on_margin.tolist())
    # at most a few points sit on the margin (within the 1e-3 band) with alpha = 0 at the SVC
    assert len(cmp.on_margin) - len(cmp.svc.support) <= 3
    assert len(cmp.lambda_support) >= 3


# --------------------------------------------------------------------------- synthesis


def test_linear_dsvs_end_closer_to_the_boundary_than_random_points():
    d = toy.make_toy("blobs", 200, 0.1, seed=0)
    m = toy.train_toy(d, "linear", seed=0)
    s = toy.synthesize_points(m, 8, steps=200, seed=0)
    assert s.trajectory.shape == (201, 16, 2) and s.trajectory_steps.tolist() == list(range(201))
    assert s.entropy.shape == (201, 16)
    torch.testing.assert_close(s.trajectory[-1], s.points)
    end = toy.boundary_distance(m, s.points[s.kept]).mean()
    start = toy.boundary_distance(m, s.trajectory[0]).mean()
    random_train = toy.boundary_distance(m, d.points).mean()
    assert end < 0.7 * start and end < 0.7 * random_train
    assert float(s.entropy[-1].mean()) > float(s.entropy[0].mean())  # the entropy rises (paper Fig. 2a)


def test_synthesis_records_every_k_steps_and_leaves_the_model_as_found(moons_mlp):
    before = {k: v.clone() for k, v in moons_mlp.state_dict().items()}
    flags = [p.requires_grad for p in moons_mlp.parameters()]
    seen = []
    s = toy.synthesize_points(moons_mlp, 2, steps=12, seed=1, record_every=5,
                              callback=lambda info: seen.append(info.step) and False)
    assert s.trajectory_steps.tolist() == [0, 5, 10, 12]
    assert seen == list(range(12))
    assert float(s.points.min()) >= 0 and float(s.points.max()) <= 1
    assert all(torch.equal(before[k], v) for k, v in moons_mlp.state_dict().items())
    assert [p.requires_grad for p in moons_mlp.parameters()] == flags and not moons_mlp.training
    again = toy.synthesize_points(moons_mlp, 2, steps=12, seed=1, record_every=5)
    assert torch.equal(again.trajectory, s.trajectory)


def test_decision_grid_matches_predictions(moons_mlp):
    g = toy.decision_grid(moons_mlp, 21)
    assert g["prob"].shape == (21, 21) and g["cls"].shape == (21, 21)
    pts = torch.tensor([[float(g["xs"][3]), float(g["ys"][17])]])
    assert int(g["cls"][17, 3]) == int(toy.predict_points(moons_mlp, pts)[0])
