"""The DeepKKT engine on tiny seeded models (fast), plus one check on the shipped MNIST model."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from dsvlib.augment import Augment
from dsvlib.kkt import flat_cosine, select_params, stationarity_distance, weighted_grad
from dsvlib.models import ModelSpec, build_classifier
from dsvlib.synthesize import (SynthConfig, default_config, longest_run, partial_config, partial_recipe_text, soft_targets,
                               synthesize)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_model(seed: int = 0, arch: str = "convnet") -> nn.Module:
    torch.manual_seed(seed)
    kw = {"width": 8, "depth": 2, "norm": "instance"} if arch == "convnet" else {"hidden": [16]}
    spec = ModelSpec(arch=arch, num_classes=3, in_channels=1, image_size=(8, 8), mean=(0.5,), std=(0.5,),
                     arch_kwargs=kw)
    return build_classifier(spec)


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "flags": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "grads": [p.grad for p in model.parameters()],
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    assert a["flags"] == b["flags"]
    assert a["training"] == b["training"]
    assert a["hooks"] == b["hooks"]
    assert all(g is None for g in b["grads"])


FAST = SynthConfig(steps=15, lr=0.05, augment=Augment(translate=0.1, crop=0.1, cutout=0.1, noise=0.01), tv=0.1,
                   history_every=1)


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_range_and_history(device: str) -> None:
    model = tiny_model().to(device)
    targets = torch.tensor([0, 1, 2, 0])
    res = synthesize(model, targets, FAST, seed=1)
    assert res.images.shape == (4, 1, 8, 8) and res.images.dtype == torch.float32
    assert res.images.device.type == "cpu"
    assert 0.0 <= float(res.images.min()) and float(res.images.max()) <= 1.0
    assert res.lambdas.shape == (4,) and res.kept.shape == (4,)
    h = res.history
    assert len(h["step"]) == FAST.steps and len(h["entropy"][0]) == 4 and len(h["target_prob"][-1]) == 4
    assert all(-1.0 <= c <= 1.0 for c in h["cosine"])
    assert res.trust["best_cosine"] == pytest.approx(max(h["cosine"]), abs=1e-6)
    assert isinstance(res.trust["reading"], str) and res.trust["reading"]


def test_seeded_runs_reproduce_exactly_and_seeds_differ() -> None:
    model = tiny_model()
    t = torch.tensor([0, 1, 2])
    a = synthesize(model, t, FAST, seed=3)
    b = synthesize(model, t, FAST, seed=3)
    c = synthesize(model, t, FAST, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.lambdas, b.lambdas)
    assert not torch.equal(a.images, c.images)


def test_model_left_exactly_as_found_even_in_train_mode_with_frozen_params() -> None:
    model = tiny_model()
    model.train()
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)
    before = snapshot(model)
    synthesize(model, torch.tensor([0, 1]), FAST)
    assert_same(before, snapshot(model))


def test_model_restored_after_callback_raises() -> None:
    model = tiny_model()
    before = snapshot(model)

    def boom(info):
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        synthesize(model, torch.tensor([0, 1]), FAST, callback=boom)
    assert_same(before, snapshot(model))


def test_callback_sees_every_step_and_can_stop() -> None:
    seen = []

    def cb(info):
        seen.append(info.step)
        assert info.images().shape == (2, 1, 8, 8)
        return info.step == 4

    res = synthesize(tiny_model(), torch.tensor([0, 1]), FAST, callback=cb)
    assert seen == [0, 1, 2, 3, 4] and res.steps_run == 5


@pytest.mark.parametrize("distance", ["cos", "l1", "l2"])
def test_stationarity_loss_falls(distance: str) -> None:
    cfg = replace(FAST, steps=60, stationarity=distance, augment=None, tv=0.0, primal_weight=0.0, lr=0.05)
    res = synthesize(tiny_model(), torch.tensor([0, 1, 2, 0, 1, 2]), cfg)
    s = res.history["stationarity"]
    assert s[-1] < s[0]
    assert res.history["cosine"][-1] > res.history["cosine"][0]


def test_primal_only_makes_candidates_feasible() -> None:
    cfg = replace(FAST, steps=60, stationarity="none", augment=None, lr=0.1)
    model = tiny_model()
    t = torch.tensor([0, 1, 2, 2])
    res = synthesize(model, t, cfg)
    with torch.no_grad():
        pred = model(res.images).argmax(1)
    assert torch.equal(pred, t)
    assert res.trust["best_cosine"] is None


def test_partial_parameters_last_layer() -> None:
    model = tiny_model()
    names = [n for n, _ in select_params(model, "last")]
    assert names == ["net.classifier.weight", "net.classifier.bias"]
    res = synthesize(model, torch.tensor([0, 1, 2]), replace(FAST, params="last"))
    assert res.trust["best_cosine"] is not None


def test_soft_targets_mix_two_classes() -> None:
    y = soft_targets(0, 2, [0.0, 0.5, 1.0], 3)
    assert torch.allclose(y, torch.tensor([[1.0, 0, 0], [0.5, 0, 0.5], [0, 0, 1.0]]))
    cfg = replace(FAST, steps=80, augment=None, lr=0.1)
    model = tiny_model()
    res = synthesize(model, y, cfg)
    with torch.no_grad():
        p = torch.softmax(model(res.images), 1)
    # the 50/50 candidate sits between the two pure ones in p(class 2)
    assert p[0, 2] < p[1, 2] < p[2, 2]
    assert torch.equal(res.labels, torch.tensor([0, 0, 2])) or torch.equal(res.labels, torch.tensor([0, 2, 2]))


def test_dual_feasibility_invariant() -> None:
    # a large lambda step makes some multipliers cross zero; those candidates must be dropped
    cfg = replace(FAST, steps=40, lr_lambda=2.0, lambda_init=0.05, augment=None)
    res = synthesize(tiny_model(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), cfg)
    assert (res.lambdas >= 0).all()
    dropped = {int(k) for k in res.trust["dropped"]}
    assert dropped == set(torch.nonzero(~res.kept).flatten().tolist())
    assert all(res.lambdas[i] == 0 for i in dropped)
    assert res.history["kept"][-1] == int(res.kept.sum())


def test_init_from_images_is_used() -> None:
    torch.manual_seed(0)
    init = torch.rand(2, 1, 8, 8)
    cfg = replace(FAST, steps=1, lr=1e-4)
    res = synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=init)
    assert (res.images - init).abs().max() < 1e-3


def test_low_resolution_parameterisation_shape() -> None:
    res = synthesize(tiny_model(), torch.tensor([0, 1]), replace(FAST, resolution=2))
    assert res.images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"targets": torch.tensor([0, 5])}, "class indices"),
        ({"targets": torch.tensor([[0.5, 0.6, 0.0]])}, "summing to 1"),
        ({"targets": torch.tensor([0, 1]), "init": torch.rand(2, 1, 4, 4)}, "init must have shape"),
        ({"targets": torch.tensor([0, 1]), "init": torch.full((2, 1, 8, 8), float("nan"))}, "NaN"),
    ],
)
def test_bad_input_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthesize(tiny_model(), config=FAST, **kwargs)


def test_bad_config_errors() -> None:
    with pytest.raises(ValueError, match="stationarity"):
        SynthConfig(stationarity="l3")
    with pytest.raises(ValueError, match="tv"):
        SynthConfig(tv=float("nan"))
    with pytest.raises(ValueError, match="kind"):
        default_config("audio")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        synthesize(tiny_model(), torch.tensor([0]), FAST, device="cuda")


def test_double_backward_gradient_matches_finite_differences() -> None:
    """d/dx of the stationarity distance, through the create_graph backward, vs central differences."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    params = [p for p in model.parameters()]
    theta = [p.detach() for p in params]
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    lam = torch.tensor([0.5, 1.0, 2.0, 0.3], dtype=torch.float64)

    def f(xx: torch.Tensor) -> torch.Tensor:
        g, _, _ = weighted_grad(model, params, xx, y, lam, create_graph=True)
        return stationarity_distance(theta, g, "cos")

    (gx,) = torch.autograd.grad(f(x), [x])
    eps = 1e-6
    num = torch.zeros_like(x)
    x0 = x.detach()
    for i in range(x.numel()):
        d = torch.zeros_like(x0).view(-1)
        d[i] = eps
        d = d.view_as(x0)
        num.view(-1)[i] = float(f(x0 + d) - f(x0 - d)) / (2 * eps)
    assert torch.allclose(gx, num, atol=1e-6, rtol=1e-4)
    assert gx.abs().sum() > 0


def test_flat_cosine_known_values() -> None:
    a = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    assert float(flat_cosine(a, [torch.tensor([2.0, 0.0]), torch.tensor([0.0])])) == pytest.approx(1.0)
    assert float(flat_cosine(a, [torch.tensor([0.0, 3.0]), torch.tensor([0.0])])) == pytest.approx(0.0)
    assert float(flat_cosine(a, [torch.tensor([-1.0, 0.0]), torch.tensor([0.0])])) == pytest.approx(-1.0)


def test_binary_prior_pushes_pixels_to_the_ends() -> None:
    cfg = replace(FAST, steps=40, stationarity="none", primal_weight=0.0, augment=None, tv=0.0, binary=5.0, lr=0.05)
    init = torch.full((2, 1, 8, 8), 0.5) + 0.1 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=init.clamp(0, 1))
    before = float((init * (1 - init)).mean())
    after = float((res.images * (1 - res.images)).mean())
    assert after < 0.5 * before


def test_reseed_keeps_the_requested_count() -> None:
    # the same run as test_dual_feasibility_invariant, but dropped candidates restart from noise
    cfg = replace(FAST, steps=40, lr_lambda=2.0, lambda_init=0.05, augment=None)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    plain = synthesize(tiny_model(), targets, cfg)
    assert not plain.kept.all()  # this setting does drop candidates...
    res = synthesize(tiny_model(), targets, replace(cfg, reseed=1.0))
    assert res.kept.all() and res.trust["dropped"] == {}  # ...and reseeding keeps every one
    assert res.trust["reseeded"], "nothing was reseeded"
    assert all(steps == sorted(steps) and steps[-1] < cfg.steps for steps in res.trust["reseeded"].values())
    assert (res.lambdas >= 0).all()
    # reseeding only before the cut-off: afterwards candidates are dropped as usual
    late = synthesize(tiny_model(), targets, replace(cfg, reseed=0.05))
    cut = int(0.05 * cfg.steps)
    assert all(s < cut for steps in late.trust["reseeded"].values() for s in steps)
    assert all(step >= cut for step in late.trust["dropped"].values())


def test_stretch_fixes_each_candidates_brightest_pixel_at_one() -> None:
    cfg = replace(FAST, steps=20, augment=None, l1=2.0, init_mean=0.0)
    dim = synthesize(tiny_model(), torch.tensor([0, 1, 2]), cfg)
    assert float(dim.images.amax(dim=(1, 2, 3)).min()) < 0.99  # the L1 prior dims the plain run
    res = synthesize(tiny_model(), torch.tensor([0, 1, 2]), replace(cfg, stretch=True))
    assert torch.allclose(res.images.amax(dim=(1, 2, 3)), torch.ones(3))


def test_centre_prior_moves_ink_to_the_centre() -> None:
    from dsvlib.losses import centre_prior

    ring = torch.zeros(1, 1, 8, 8)
    ring[..., 0, :] = ring[..., -1, :] = 1
    dot = torch.zeros(1, 1, 8, 8)
    dot[..., 3:5, 3:5] = 1
    assert float(centre_prior(dot)) < float(centre_prior(ring))
    cfg = replace(FAST, steps=40, stationarity="none", primal_weight=0.0, augment=None, tv=0.0, centre=5.0)
    init = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=init)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False
    assert float(res.images[..., border].mean()) < 0.5 * float(init[..., border].mean())


def test_mass_centre_prior_balances_ink_around_the_centre() -> None:
    from dsvlib.losses import mass_centre_prior

    ring = torch.zeros(1, 1, 8, 8)
    ring[..., 0, :] = ring[..., -1, :] = 1  # far out but balanced: no cost (the centre prior's case)
    corner = torch.zeros(1, 1, 8, 8)
    corner[..., 0:3, 0:3] = 1  # off balance
    assert float(mass_centre_prior(ring)) < 1e-6 < float(mass_centre_prior(corner))
    # the centre of mass, in half-sides, squared: pixels 0..2 of 8 sit at -1 + 2/7 in each axis
    assert math.isclose(float(mass_centre_prior(corner)), 2 * (-1 + 2 / 7) ** 2, rel_tol=1e-5)
    # as a synthesis prior it moves a blob that sits off centre back towards the centre
    cfg = replace(FAST, steps=60, stationarity="none", primal_weight=0.0, augment=None, tv=0.0, mass_centre=5.0)
    init = torch.zeros(2, 1, 8, 8)
    init[:, :, 0:4, 0:4] = 0.8
    init += 0.1
    res = synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=init)
    assert float(mass_centre_prior(res.images).max()) < 0.25 * float(mass_centre_prior(init).min())


def test_blank_l1_thins_only_the_classes_an_empty_image_is_read_as() -> None:
    model = tiny_model(arch="mlp")
    with torch.no_grad():  # a model that reads an empty (black) image as class 0, and not as 1 or 2
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.bias.copy_(torch.tensor([8.0, -8.0, -8.0]))
    blank = torch.softmax(model(torch.zeros(1, 1, 8, 8)), 1)[0]
    assert blank[0] > 0.99 and blank[1:].max() < 0.01
    cfg = replace(FAST, steps=60, stationarity="none", primal_weight=0.0, augment=None, tv=0.1)
    init = torch.zeros(3, 1, 8, 8)
    init[:, :, 2:6, 2:6] = 0.8
    targets = torch.tensor([0, 1, 2])
    without = synthesize(model, targets, cfg, init=init).images
    res = synthesize(model, targets, replace(cfg, blank_l1=5.0), init=init)
    # class 0: its ink costs, so it fades far below what TV alone leaves
    assert float(res.images[0].sum()) < 0.25 * float(without[0].sum())
    # classes 1, 2: their weight is ~0 (Adam still moves the pixels where TV is flat a little)
    assert torch.allclose(res.images[1:].sum((1, 2, 3)), without[1:].sum((1, 2, 3)), rtol=0.02)
    assert float((res.images[1:] - without[1:]).abs().max()) < 0.05
    assert res.history["blank_l1"][0] > 0
    # the model handed in is unchanged
    assert torch.equal(last.bias, torch.tensor([8.0, -8.0, -8.0]))


def test_solid_core_prior_costs_blobs_not_strokes() -> None:
    from dsvlib.losses import solid_core_prior

    stroke = torch.zeros(1, 1, 16, 16)
    stroke[..., 2:14, 7:9] = 1  # a 2-pixel stroke: no 4x4 window lies inside it
    blob = torch.zeros(1, 1, 16, 16)
    blob[..., 4:10, 4:10] = 1  # 6x6: a 3x3 patch of windows lies inside, one pixel each
    assert float(solid_core_prior(stroke)) == 0.0
    assert math.isclose(float(solid_core_prior(blob)), 9 / 256, rel_tol=1e-6)
    assert float(solid_core_prior(blob, size=2)) > float(solid_core_prior(blob))
    # as a synthesis prior it hollows a blob out and leaves the same ink as a stroke alone
    cfg = replace(FAST, steps=60, stationarity="none", primal_weight=0.0, augment=None, tv=0.0, solid_core=5.0)
    init = torch.zeros(2, 1, 8, 8)
    init[:, :, 1:7, 1:7] = 0.8
    res = synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=init)
    assert float(solid_core_prior(res.images).max()) < 0.25 * float(solid_core_prior(init).min())
    assert float(res.images.sum()) > 0.25 * float(init.sum())  # hollowed, not wiped
    line = torch.zeros(2, 1, 8, 8)
    line[:, :, 1:7, 3:5] = 0.8
    assert torch.allclose(synthesize(tiny_model(), torch.tensor([0, 1]), cfg, init=line).images, line)


def test_lr_decay_reaches_zero_step() -> None:
    cfg = replace(FAST, steps=10, augment=None, lr_decay=True)
    seen = []
    synthesize(tiny_model(), torch.tensor([0, 1]), cfg, callback=lambda info: seen.append(info.images()))
    # the last update runs at a (cosine) learning rate of ~0: the final two states barely differ
    first = float((seen[1] - seen[0]).abs().max())
    last = float((seen[-1] - seen[-2]).abs().max())
    assert last < 0.1 * first


def test_a_decayed_run_is_not_extended() -> None:
    # its steps are 0 at the end of the probe: a second round (and the settle or partial recipe that
    # act in one) would only repeat the last image, so the run ends there and says so in advance
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, settle=1.0,
                  partial_priors=(("l1", 0.5),))
    assert synthesize(tiny_model(), torch.tensor([0, 1]), cfg, seed=1).steps_run == 20 + 10  # restart + its round
    decayed = replace(cfg, lr_decay=True)
    res = synthesize(tiny_model(), torch.tensor([0, 1]), decayed, seed=1)
    assert res.steps_run == longest_run(decayed) == 10 and res.trust["extended_at"] is None


def test_jitter_view_makes_candidates_robust_to_shifts() -> None:
    # the jitter view asks an augmented copy to be the target too: afterwards shifted/rescaled
    # copies of the DSVs keep their class with far more confidence than without it
    shift = Augment(translate=0.2, crop=0.2, cutout=0.0, noise=0.0)
    cfg = replace(FAST, steps=80, augment=None)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = synthesize(tiny_model(), targets, cfg)
    res = synthesize(tiny_model(), targets, replace(cfg, jitter=shift, jitter_weight=2.0))
    assert all(v == 0.0 for v in plain.history["jitter"])
    assert res.history["jitter"][-1] < res.history["jitter"][0]  # the term is optimised
    model = tiny_model()
    gen = torch.Generator().manual_seed(123)

    def robust_prob(images: torch.Tensor) -> float:
        with torch.no_grad():
            probs = [torch.softmax(model(shift(images, gen)), 1).gather(1, targets.view(-1, 1)).mean()
                     for _ in range(20)]
        return float(torch.stack(probs).mean())

    assert robust_prob(res.images) > robust_prob(plain.images) + 0.08  # measured: 0.47 vs 0.35


# --------------------------------------------------------------------------- BatchNorm models (issue #9)


class BnDropoutNet(nn.Module):
    """conv -> BatchNorm -> ReLU -> dropout -> conv -> BatchNorm -> ReLU -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
                                      nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(24, 3)
        bns = (self.features[1], self.features[5])
        with torch.no_grad():  # as after training: scales and shifts away from 1 and 0, running
            for bn in bns:     # statistics of a data set (dark images, unlike the noise init)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)
                bn.momentum = None  # cumulative average
            self.train()(torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(1)) ** 3)
            for bn in bns:
                bn.momentum = 0.1
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


BN_FAST = replace(FAST, augment=None, steps=12)


def test_batchnorm_dropout_model_in_train_mode_left_exactly_as_found_with_preset_grads() -> None:
    model = BnDropoutNet().train()
    grads = []
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
        grads.append(p.grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # includes running stats, num_batches_tracked
    flags = [m.training for m in model.modules()]
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    res = synthesize(model, torch.tensor([0, 1, 2, 0]), replace(BN_FAST, bn_prior=1.0), input_shape=(1, 8, 8))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(g, torch.full_like(g, 0.25)) for g in grads)
    assert [m.training for m in model.modules()] == flags
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    assert max(res.history["bn_prior"]) > 0  # the prior was on (the model has BatchNorm)
    # eval mode inside: dropout off, so a rerun reproduces the images exactly
    again = synthesize(model, torch.tensor([0, 1, 2, 0]), replace(BN_FAST, bn_prior=1.0), input_shape=(1, 8, 8))
    assert torch.equal(res.images, again.images)


def test_nothing_on_an_eval_model_is_toggled_during_the_run() -> None:
    """Another thread (the app's page) may use the model while a run is going: no flag flips."""
    model = BnDropoutNet().eval()
    seen = []

    def look(info) -> None:
        seen.append(([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]))

    synthesize(model, torch.tensor([0, 1]), BN_FAST, input_shape=(1, 8, 8), callback=look)
    assert seen and all(t == [False] * len(t) and all(r) for t, r in seen)


def test_auto_params_leave_out_convs_in_front_of_batchnorm_but_keep_its_scales() -> None:
    model = BnDropoutNet().eval()
    names = {n for n, _ in select_params(model, "auto", input_shape=(1, 8, 8))}
    assert "features.0.weight" not in names and "features.4.weight" not in names  # conv -> BN: batch-stat invariant
    assert "features.0.bias" not in names  # no effect at all under batch statistics
    assert {"features.1.weight", "features.5.weight", "head.weight", "head.bias"} <= names
    assert not model.training  # probed on a copy


def test_feature_stats_loss_known_values() -> None:
    from dsvlib.losses import feature_stats_loss

    g = torch.Generator().manual_seed(0)
    f = torch.randn(4000, 3, 2, 2, generator=g) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    mean = f.mean((0, 2, 3))
    var = f.var((0, 2, 3), unbiased=False)
    assert float(feature_stats_loss(f, mean, var)) < 1e-3
    shifted = float(feature_stats_loss(f + 0.5, mean, var))  # mean off by 0.5 in each of 3 channels
    assert shifted == pytest.approx(0.5 * 3 ** 0.5 / float((var + 1e-5).sqrt().norm()), rel=1e-3)


def test_bn_prior_pulls_candidate_statistics_toward_the_running_statistics() -> None:
    from dsvlib.losses import feature_stats_loss

    model = BnDropoutNet().eval()
    cfg = replace(BN_FAST, steps=40, stationarity="none", tv=0.0)
    t = torch.tensor([0, 1, 2] * 3)

    def mismatch(images: torch.Tensor) -> float:
        with torch.no_grad():
            f1 = model.features[0](images)
            f2 = model.features[4](model.features[2](model.features[1](f1)))
            return float(feature_stats_loss(f1, model.features[1].running_mean, model.features[1].running_var)
                         + feature_stats_loss(f2, model.features[5].running_mean, model.features[5].running_var))

    off = mismatch(synthesize(model, t, replace(cfg, bn_prior=0.0), input_shape=(1, 8, 8)).images)
    on = mismatch(synthesize(model, t, replace(cfg, bn_prior=1.0), input_shape=(1, 8, 8)).images)
    assert on < 0.5 * off


def test_sample_stats_loss_is_the_batch_loss_of_each_sample_alone() -> None:
    from dsvlib.losses import feature_stats_loss, sample_stats_loss

    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 3, 4, 4, generator=g)
    mean, var = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5
    per = sample_stats_loss(f, mean, var)
    assert per.shape == (5,)
    for i in range(5):
        assert float(per[i]) == pytest.approx(float(feature_stats_loss(f[i:i + 1], mean, var)), rel=1e-5)
    with pytest.raises(ValueError, match="spatial"):
        sample_stats_loss(torch.randn(5, 3), mean, var)


def test_bn_sample_pulls_each_candidate_toward_the_first_layer_statistics() -> None:
    """Unlike the batch prior, every candidate's own first-layer statistics move toward the running ones."""
    from dsvlib.losses import sample_stats_loss

    model = BnDropoutNet().eval()
    cfg = replace(BN_FAST, steps=40, stationarity="none", tv=0.0, bn_prior=0.0)
    t = torch.tensor([0, 1, 2] * 3)

    def worst(images: torch.Tensor) -> float:
        with torch.no_grad():
            bn = model.features[1]
            return float(sample_stats_loss(model.features[0](images), bn.running_mean, bn.running_var).max())

    off = synthesize(model, t, cfg, input_shape=(1, 8, 8))
    on = synthesize(model, t, replace(cfg, bn_sample=1.0), input_shape=(1, 8, 8))
    assert worst(on.images) < 0.7 * worst(off.images)
    assert max(on.history["bn_sample"]) > 0 and max(off.history["bn_sample"]) == 0
    assert max(on.history["bn_prior"]) == 0  # the batch prior stays off


def test_sample_shape_loss_leaves_the_amount_of_ink_free_within_its_band() -> None:
    """A sample with the data's strokes at half as many positions matches the running statistics once
    its ink is free (band 0.5), and not when every sample is held to the average (band 0)."""
    from dsvlib.losses import sample_shape_loss

    g = torch.Generator().manual_seed(0)
    blank = torch.randn(4, generator=g)
    strokes = torch.randn(4, 8, generator=g) + 1.0  # 8 positions' features
    full = blank.view(4, 1).repeat(1, 32)  # 32 positions: the strokes twice, the rest blank
    full[:, :16] = strokes.repeat(1, 2)
    half = blank.view(4, 1).repeat(1, 32)
    half[:, :8] = strokes  # the same strokes, once
    d = full - blank.view(4, 1)
    running_mean = blank + d.mean(1)
    running_var = (d ** 2).mean(1) - d.mean(1) ** 2
    f = torch.stack([full, half]).view(2, 4, 4, 8)
    loss = {band: sample_shape_loss(f, running_mean, running_var, blank, band) for band in (0.0, 0.3, 0.5)}
    assert loss[0.5].shape == (2,)
    assert float(loss[0.5].max()) < 1e-2  # both samples: the data's strokes
    assert float(loss[0.0][1]) > 0.3 and float(loss[0.0][0]) < 1e-2  # held to the average, half the ink costs
    assert 1e-2 < float(loss[0.3][1]) < float(loss[0.0][1])  # a narrower band: part of it
    with pytest.raises(ValueError, match="spatial"):
        sample_shape_loss(torch.randn(5, 4), running_mean, running_var, blank, 0.5)


def test_bn_ink_lets_a_sparse_candidate_keep_less_ink_than_the_average() -> None:
    """bn_sample alone pulls a candidate with half of the image empty to the data's average ink; with
    bn_ink its amount of ink may stay lower while its strokes still move to the data's."""
    model = BnDropoutNet().eval()
    cfg = replace(BN_FAST, steps=40, stationarity="none", primal_weight=0.0, tv=0.0, bn_prior=0.0, bn_sample=1.0)
    t = torch.tensor([0, 1, 2] * 2)
    init = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3)) ** 3
    init[:, :, :4] = 0  # the top half empty
    held = synthesize(model, t, cfg, init=init, input_shape=(1, 8, 8))
    free = synthesize(model, t, replace(cfg, bn_ink=0.6), init=init, input_shape=(1, 8, 8))
    gain_held = float(held.images.mean() - init.mean())
    gain_free = float(free.images.mean() - init.mean())
    assert gain_held > 0.05
    assert gain_free < 0.6 * gain_held
    assert free.history["bn_sample"][0] < held.history["bn_sample"][0]  # the ink no longer costs
    with pytest.raises(ValueError, match="bn_ink"):
        SynthConfig(bn_ink=1.0)


def test_defaults_explained_names_the_batchnorm_layers_it_found() -> None:
    from dsvlib.synthesize import defaults_explained

    spec = ModelSpec(arch="convnet", num_classes=3, in_channels=1, image_size=(8, 8), mean=(0.5,), std=(0.5,),
                     arch_kwargs={"width": 8, "depth": 2, "norm": "batch"})
    bn_notes = defaults_explained(build_classifier(spec), spec)
    assert any("2 BatchNorm layers" in n for n in bn_notes) and "digits" in bn_notes[0]
    plain = defaults_explained(tiny_model())
    assert any("no BatchNorm" in n for n in plain)


def test_concurrent_runs_on_one_shared_model_match_solo_runs_and_leave_it_as_found() -> None:
    """The app hands one cached model to runs from several browser sessions at once."""
    import threading

    model = BnDropoutNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    cfg = replace(BN_FAST, steps=25)
    t = torch.tensor([0, 1, 2])
    solo = {s: synthesize(model, t, cfg, seed=s, input_shape=(1, 8, 8)).images for s in (1, 2)}
    together: dict[int, torch.Tensor] = {}

    def run(s: int) -> None:
        together[s] = synthesize(model, t, cfg, seed=s, input_shape=(1, 8, 8)).images

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2, 1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(together[s], solo[s]) for s in (1, 2))
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_submodule_left_in_train_mode_is_evaluated_in_eval_mode_and_not_updated() -> None:
    model = BnDropoutNet().eval()
    model.features[1].train()  # one BatchNorm left in train mode by the caller
    stats = model.features[1].running_mean.clone()
    tracked = int(model.features[1].num_batches_tracked)
    synthesize(model, torch.tensor([0, 1]), BN_FAST, input_shape=(1, 8, 8))
    assert torch.equal(model.features[1].running_mean, stats)
    assert int(model.features[1].num_batches_tracked) == tracked
    assert model.features[1].training and not model.training


def test_a_non_finite_gradient_under_a_finite_loss_stops_with_a_message() -> None:
    class SqrtNet(nn.Module):  # sqrt is finite at 0, its derivative is not
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.sqrt(x).flatten(1))

    model = SqrtNet()
    with pytest.raises(FloatingPointError, match="gradient became non-finite at step 0"):
        synthesize(model, torch.tensor([0, 1]), replace(BN_FAST, stationarity="none", tv=0.0, bn_prior=0.0),
                   init=torch.zeros(2, 1, 4, 4), input_shape=(1, 4, 4))


def test_a_subset_run_is_read_over_every_parameter_stationarity_can_hold_for() -> None:
    # a last-layer-only run explains its few parameters easily; the trust reading must not call that
    # strong: it uses the final DSVs' cosine over params="auto" when that is lower (recomputed here)
    model = tiny_model(arch="mlp").eval()
    t = torch.tensor([0, 1, 2] * 4)
    res = synthesize(model, t, replace(FAST, params="last", augment=None, steps=30))
    named = select_params(model, "auto", input_shape=(1, 8, 8))
    grads, _, _ = weighted_grad(model, [p for _, p in named], res.images, res.labels, res.lambdas * res.kept)
    expect = float(flat_cosine([p.detach() for _, p in named], [-g for g in grads]))
    assert res.trust["auto_cosine"] == pytest.approx(expect, abs=1e-5)
    assert res.trust["best_cosine"] > expect
    assert res.trust["cosine"] == pytest.approx(expect, abs=1e-5) == res.trust_cosine
    assert "parameters it can hold for" in res.trust["reading"]
    full = synthesize(model, t, replace(FAST, augment=None, steps=30))
    assert "auto_cosine" not in full.trust and full.trust_cosine == full.trust["best_cosine"]


def test_feature_spread_loss_known_values() -> None:
    from dsvlib.losses import feature_spread_loss

    f = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # group 0: rows 0, 1, 2 (pairs: cos 1, 0, 0, each counted both ways); group 1: row 3 alone
    assert float(feature_spread_loss(f, torch.tensor([0, 0, 0, 1]))) == pytest.approx(1 / 3)
    assert float(feature_spread_loss(f, torch.tensor([0, 1, 2, 3]))) == 0.0


def test_feature_diversity_spreads_the_head_features_of_one_class() -> None:
    from dsvlib.losses import feature_spread_loss

    model = tiny_model().eval()
    t = torch.tensor([0] * 4 + [1] * 4)
    cfg = replace(FAST, steps=40, augment=None, stationarity="none", tv=0.0)
    seen: list[torch.Tensor] = []
    head = model.net.classifier
    hook = head.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))

    def spread(images: torch.Tensor) -> float:
        seen.clear()
        with torch.no_grad():
            model(images)
        return float(feature_spread_loss(seen[-1], t))

    try:
        off = synthesize(model, t, replace(cfg, feature_diversity=0.0)).images
        on = synthesize(model, t, replace(cfg, feature_diversity=3.0)).images
        assert spread(on) < spread(off) - 0.05
    finally:
        hook.remove()


def test_a_run_whose_cosine_lies_in_the_band_is_extended_and_says_so() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    seen: list[tuple[int, int]] = []
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01)
    res = synthesize(model, t, cfg, callback=lambda i: seen.append((i.step, i.steps)))
    assert res.steps_run == 20 and res.trust["extended_at"] == 10
    assert seen[0] == (0, 10) and seen[9] == (9, 20) and seen[-1] == (19, 20)
    assert res.history["step"][-1] == 19
    assert "went on past its 10 steps" in res.trust["reading"]
    # the same run with its cosine outside the band, or with extend 0, or from an init, stops at 10
    for other in (replace(cfg, extend_below=-1.0), replace(cfg, extend_from=1.0), replace(cfg, extend=0.0)):
        short = synthesize(model, t, other)
        assert short.steps_run == 10 and short.trust["extended_at"] is None
        assert torch.equal(short.images, synthesize(model, t, replace(cfg, steps=10, extend=0.0)).images)
    assert synthesize(model, t, cfg, init=torch.rand(6, 1, 8, 8)).steps_run == 10


def test_presets_quick_look_never_extends_the_recipe_may() -> None:
    from dsvlib.synthesize import PRESETS

    assert PRESETS["quick"].config("digits").extend == 0.0
    assert PRESETS["recipe"].config("digits").extend > 0.0


def test_a_dropped_candidate_is_shown_as_it_was_when_dropped() -> None:
    # after the drop only the priors would move it (with the centre-of-mass prior: a dim glow)
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 3)
    cfg = replace(FAST, steps=30, augment=None, lr_lambda=3.0, reseed=0.0, l1=1.0, tv=1.0, mass_centre=5.0)
    seen: list[torch.Tensor] = []
    res = synthesize(model, t, cfg, callback=lambda i: seen.append(i.images()))
    dropped = {int(k): s for k, s in res.trust["dropped"].items()}
    early = {i: s for i, s in dropped.items() if s < cfg.steps - 5}
    assert early, "this test needs a candidate dropped well before the end"
    for i, s in early.items():
        assert torch.equal(res.images[i], seen[s][i].clamp(0, 1))
        assert torch.equal(seen[s][i], seen[-1][i])
    kept = res.kept.nonzero().flatten()
    assert len(kept) and not torch.equal(seen[5][kept], seen[-1][kept])  # the others went on
def test_the_extension_restarts_the_candidates_dropped_in_the_probe() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 3)
    # a large multiplier step drops candidates early; no reseeding inside the probe
    cfg = replace(FAST, steps=10, augment=None, lr_lambda=3.0, reseed=0.0, extend=1.0, extend_from=-1.0,
                  extend_below=1.01)
    probe = synthesize(model, t, replace(cfg, extend=0.0))
    dropped = {int(k) for k in probe.trust["dropped"]}
    assert dropped, "the probe should drop candidates for this test to mean anything"
    res = synthesize(model, t, cfg)
    restarted = {int(k) for k, steps in res.trust["reseeded"].items() if 10 in steps}
    assert restarted == dropped



def test_the_coarse_view_keeps_the_low_frequencies_and_drops_the_fine_detail() -> None:
    from dsvlib.synthesize import coarse_view

    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(coarse_view(x, 1), x)
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(coarse_view(flat, 4), flat)
    # a 1-pixel checkerboard (texture) becomes flat grey; a 4x4-block pattern (shape) survives mostly
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    fine = ((yy + xx) % 2).float().view(1, 1, 16, 16)
    blocks = ((yy // 8 + xx // 8) % 2).float().view(1, 1, 16, 16)
    assert float((coarse_view(fine, 4) - 0.5).abs().max()) < 1e-6
    assert float((coarse_view(blocks, 4) - blocks).abs().mean()) < 0.2
    assert abs(float(coarse_view(x, 4).mean() - x.mean())) < 0.02


def test_a_run_that_reads_partial_asks_for_the_coarse_view_in_its_second_round_only() -> None:
    from dsvlib.synthesize import coarse_view
    from dsvlib.kkt import per_sample_loss

    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    # every cosine lies in the extension band; coarse_below decides whether the coarse view acts
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse=3.0,
                  coarse_factor=2, coarse_below=1.01)
    seen: list[torch.Tensor] = []
    res = synthesize(model, t, cfg, callback=lambda i: seen.append(i.images()))
    terms = res.history["coarse"]
    assert res.trust["coarse_at"] == 10 and "coarse copy" in res.trust["reading"]
    assert all(v == 0.0 for v in terms[:10]) and all(v > 0.0 for v in terms[10:])
    assert not res.trust["dropped"] and not res.trust["reseeded"]  # so step 10 starts from step 9's images
    with torch.no_grad():  # the term is the model's cross-entropy on the coarse copy
        expected = float(per_sample_loss(model(coarse_view(seen[9], 2)), t).mean())
    assert terms[10] == pytest.approx(expected, rel=1e-4)
    # above coarse_below, or with the weight at 0, the run is the plain extended run, bit for bit
    plain = synthesize(model, t, replace(cfg, coarse=0.0))
    above = synthesize(model, t, replace(cfg, coarse_below=-1.0, coarse_read=1.01))
    assert above.trust["coarse_at"] is None and "coarse copy" not in above.trust["reading"]
    assert torch.equal(above.images, plain.images) and not torch.equal(res.images, plain.images)
    # the term does what it says: the model reads the coarse copies of the DSVs with more confidence
    with torch.no_grad():
        loss = [float(per_sample_loss(model(coarse_view(r.images, 2)), t).mean()) for r in (res, plain)]
    assert loss[0] < loss[1]
    # a run that is not extended never gets it
    assert synthesize(model, t, replace(cfg, extend_below=-1.0)).trust["coarse_at"] is None


def test_a_strong_run_gets_the_coarse_view_when_its_model_reads_its_candidates_coarse_copies() -> None:
    from dsvlib.synthesize import coarse_view

    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    # every cosine lies in the extension band and none under coarse_below: coarse_read decides
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse=3.0,
                  coarse_factor=2, coarse_below=-1.0)
    seen: list[torch.Tensor] = []
    res = synthesize(model, t, replace(cfg, coarse_read=0.0), callback=lambda i: seen.append(i.images()))
    assert not res.trust["dropped"] and not res.trust["reseeded"]  # every candidate is kept at step 10
    with torch.no_grad():  # the fraction the model reads from the coarse copies at the end of the probe
        read = float((model(coarse_view(seen[9], 2)).argmax(1) == t).float().mean())
        clean = float((model(seen[9]).argmax(1) == t).float().mean())
    assert read != clean, "the coarse copies must read differently for this test to mean anything"
    assert res.trust["coarse_read"] == pytest.approx(read)
    assert res.trust["coarse_at"] == 10 and "from a coarse copy" in res.trust["reading"]
    assert synthesize(model, t, replace(cfg, coarse_read=read)).trust["coarse_at"] == 10
    over = synthesize(model, t, replace(cfg, coarse_read=read + 1e-3))
    assert over.trust["coarse_at"] is None and "coarse copy" not in over.trust["reading"]
    assert over.trust["coarse_read"] == pytest.approx(read)


def test_a_run_whose_probe_reads_partial_starts_again_with_the_partial_recipe() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    # every cosine lies in the extension band and under coarse_below: the probe reads "partial"
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse_below=1.01,
                  l1=1.0, partial_priors=(("l1", 0.2),))
    seen: list[tuple[int, int]] = []
    res = synthesize(model, t, cfg, seed=3, callback=lambda i: seen.append((i.step, i.steps)))
    # the DSVs are exactly those of a run started from the same noise with the partial recipe
    direct = synthesize(model, t, replace(cfg, l1=0.2, partial_priors=()), seed=3)
    assert torch.equal(res.images, direct.images) and torch.equal(res.lambdas, direct.lambdas)
    assert torch.equal(res.kept, direct.kept)
    # ... which differ from the run the probe would have gone on with
    plain = synthesize(model, t, replace(cfg, partial_priors=()), seed=3)
    assert not torch.equal(res.images, plain.images)
    assert res.history["total"][:10] == plain.history["total"][:10]  # the probe is the plain run's probe
    # the steps count on after the probe: callback, history, steps_run, the extension's step
    assert res.steps_run == 10 + direct.steps_run == 30
    assert [s for s, _ in seen] == list(range(30)) and seen[-1][1] == 30
    assert res.history["step"] == list(range(10)) + [s + 10 for s in direct.history["step"]]
    assert res.history["time"] == sorted(res.history["time"])
    assert res.trust["restarted_at"] == 10 and res.trust["extended_at"] == 20
    assert res.trust["probe_cosine"] == pytest.approx(max(plain.history["cosine"][:10]))
    assert "partial recipe (l1 0.2 instead of 1)" in res.trust["reading"]
    assert res.config == cfg
    # a probe above coarse_below (or without a partial recipe) goes on as before, bit for bit
    strong = synthesize(model, t, replace(cfg, coarse_below=-1.0), seed=3)
    assert "restarted_at" not in strong.trust
    assert torch.equal(strong.images, synthesize(model, t, replace(cfg, coarse_below=-1.0, partial_priors=()),
                                                 seed=3).images)
    # a run stopped during the probe does not start again
    stopped = synthesize(model, t, cfg, seed=3, callback=lambda i: i.step == 9)
    assert stopped.steps_run == 10 and "restarted_at" not in stopped.trust


def test_coarse_early_acts_from_the_first_step_only_when_set() -> None:
    model = BnDropoutNet().eval()
    t = torch.tensor([0, 1, 2, 0])
    off = synthesize(model, t, replace(BN_FAST, coarse=1.0), input_shape=(1, 8, 8))
    on = synthesize(model, t, replace(BN_FAST, coarse=1.0, coarse_early=1.0), input_shape=(1, 8, 8))
    assert max(off.history["coarse"]) == 0 and on.history["coarse"][0] > 0
    assert not torch.equal(on.images, off.images)


def test_partial_recipe_may_set_the_steps_and_the_early_coarse_view() -> None:
    cfg = replace(FAST, partial_priors=(("lr_lambda", 0.01), ("coarse_early", 1.0), ("bn_sample", 1.0), ("lr", 0.07)))
    assert partial_recipe_text(cfg) == ("lr_lambda 0.01 instead of 0.05, coarse_early 1 instead of 0, bn_sample 1 instead of 0, "
                                        "lr 0.07 instead of 0.05")
    with pytest.raises(ValueError, match="partial_priors"):
        replace(FAST, partial_priors=(("steps", 10),))


def test_partial_recipe_may_set_the_coarse_block_the_second_round_a_blur_and_the_jitter_weight() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse_below=1.01,
                  coarse=1.0, jitter=Augment(translate=0.1, crop=0.1), jitter_weight=1.0,
                  partial_priors=(("coarse_factor", 2.0), ("extend", 2.0), ("blur", 0.5), ("coarse", 2.0),
                                  ("jitter_weight", 2.0)))
    res = synthesize(model, t, cfg, seed=3)
    # the block size is a whole number of pixels in the restarted run, as if it had been set from the start
    direct = synthesize(model, t, replace(cfg, coarse_factor=2, extend=2.0, blur=0.5, coarse=2.0, jitter_weight=2.0,
                                          partial_priors=()), seed=3)
    assert torch.equal(res.images, direct.images)
    # the jitter weight is one the restart uses: at the run's own weight the images differ
    same_jitter = replace(cfg, partial_priors=tuple(p for p in cfg.partial_priors if p[0] != "jitter_weight"))
    assert not torch.equal(res.images, synthesize(model, t, same_jitter, seed=3).images)
    assert res.steps_run == 10 + 10 + 20 and res.trust["extended_at"] == 20
    # the longest run the page announces is the one taken; without the recipe, without the second round
    assert longest_run(cfg) == res.steps_run
    plain = replace(cfg, partial_priors=())
    assert longest_run(plain) == synthesize(model, t, plain, seed=3).steps_run == 20
    assert longest_run(replace(plain, extend=0.0)) == 10


def test_partial_recipe_may_set_the_restarted_runs_own_line_for_the_coarse_view() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    # every cosine lies in the extension band and under coarse_below: the probe reads "partial"; the
    # model's reading of coarse copies never turns the view on (coarse_read over 1)
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse_below=1.01,
                  coarse=1.0, coarse_read=1.01, partial_priors=(("coarse_below", 0.0),))
    off = synthesize(model, t, cfg, seed=3)
    probe_cos = synthesize(model, t, replace(cfg, coarse_below=0.0, partial_priors=(), extend=0.0), seed=3).trust["best_cosine"]
    assert probe_cos >= 0.0  # the restarted run's probe reads above its own line: no coarse view
    assert off.trust["restarted_at"] == 10 and off.trust["coarse_at"] is None and max(off.history["coarse"]) == 0
    assert torch.equal(off.images, synthesize(model, t, replace(cfg, coarse_below=0.0, partial_priors=()), seed=3).images)
    # with the line above that cosine the restarted run's second round has the view, as the first run's would
    on = synthesize(model, t, replace(cfg, partial_priors=(("coarse_below", 1.01),)), seed=3)
    assert on.trust["coarse_at"] == 20 and max(on.history["coarse"][20:]) > 0 and max(on.history["coarse"][:20]) == 0
    assert not torch.equal(on.images, off.images)
    assert partial_recipe_text(cfg) == "coarse_below 0 instead of 1.01"


def test_partial_recipe_may_set_the_jitter_views_cutout() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    jitter = Augment(translate=0.1, crop=0.1, cutout=0.3)
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01, coarse_below=1.01,
                  jitter=jitter, jitter_weight=1.0, partial_priors=(("jitter_cutout", 0.0),))
    assert partial_config(cfg).jitter == Augment(translate=0.1, crop=0.1, cutout=0.0)
    assert partial_recipe_text(cfg) == "jitter_cutout 0 instead of 0.3"
    res = synthesize(model, t, cfg, seed=3)
    direct = synthesize(model, t, replace(cfg, jitter=replace(jitter, cutout=0.0), partial_priors=()), seed=3)
    assert torch.equal(res.images, direct.images)
    assert not torch.equal(res.images, synthesize(model, t, replace(cfg, partial_priors=(("l1", cfg.l1),)), seed=3).images)
    # without a jitter view there is no cutout to set: the restart runs as it is
    assert partial_config(replace(cfg, jitter=None)).jitter is None


def test_partial_recipe_may_set_the_reseed_window() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 3)
    # a large multiplier step drops candidates early; the run's own recipe never reseeds
    cfg = replace(FAST, steps=10, augment=None, lr_lambda=3.0, reseed=0.0, extend=1.0, extend_from=-1.0,
                  extend_below=1.01, coarse_below=1.01, partial_priors=(("reseed", 1.0),))
    assert partial_config(cfg).reseed == 1.0
    assert partial_recipe_text(cfg) == "reseed 1 instead of 0"
    res = synthesize(model, t, cfg, seed=3)
    direct = synthesize(model, t, replace(cfg, reseed=1.0, partial_priors=()), seed=3)
    assert torch.equal(res.images, direct.images) and torch.equal(res.kept, direct.kept)
    # with reseeding open throughout the restart every candidate is kept; without it some are dropped
    plain = synthesize(model, t, replace(cfg, partial_priors=(("l1", cfg.l1),)), seed=3)
    assert res.kept.all() and res.trust["reseeded"]
    assert not plain.kept.all()
    with pytest.raises(ValueError, match="fraction"):
        SynthConfig(partial_priors=(("reseed", 1.5),))


def test_settle_slows_the_pixel_step_over_the_second_round_only() -> None:
    model = tiny_model().eval()
    t = torch.tensor([0, 1, 2] * 2)
    cfg = replace(FAST, steps=10, augment=None, extend=1.0, extend_from=-1.0, extend_below=1.01)

    def moves(c: SynthConfig) -> tuple[list[float], torch.Tensor]:
        frames: list[torch.Tensor] = []
        res = synthesize(model, t, c, seed=2, callback=lambda info: frames.append(info.images()))
        return [float((b - a).abs().max()) for a, b in zip(frames, frames[1:])], res.images

    plain, plain_images = moves(cfg)
    settled, settled_images = moves(replace(cfg, settle=1.0))
    assert len(plain) == len(settled) == 19
    # the probe is the same run; the second round ends with a step near 0 where the plain run still strides
    assert settled[:10] == plain[:10]
    assert settled[-1] < 0.2 * plain[-1]
    assert not torch.equal(settled_images, plain_images)
    # the restarted run of the partial recipe may settle too
    part = replace(cfg, coarse_below=1.01, partial_priors=(("settle", 1.0),))
    assert partial_config(part).settle == 1.0
    with pytest.raises(ValueError, match="settle"):
        replace(FAST, settle=1.5)


def test_partial_priors_must_name_priors_with_weights() -> None:
    with pytest.raises(ValueError, match="partial_priors"):
        replace(FAST, partial_priors=(("stationarity", 0.3),))
    with pytest.raises(ValueError, match="finite number >= 0"):
        replace(FAST, partial_priors=(("l1", float("nan")),))
