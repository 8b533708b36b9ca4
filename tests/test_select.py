"""DSVs by selection (dsvlib.select): the linear-SVM anchor, the JVP operator, rankings, outputs."""
from __future__ import annotations

import copy
import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_model, make_spec
from dsvlib.kkt import dataset_gradient_cosine
from dsvlib.models import build_classifier
from dsvlib.select import (
    SelectConfig,
    SelectionResult,
    _Gradients,
    bottom_per_class,
    class_sums,
    classwise_correlation,
    fit_lambdas,
    rank_per_class,
    top_per_class,
    write_rank_outputs,
)
from dsvlib.kkt import select_params


def _tiny_data(n: int = 40, seed: int = 0, k: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.arange(n) % k
    return x, y


def _state(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], model.training)


# --------------------------------------------------------------------------- the SVM anchor


def _svm_problem(seed: int = 0, d: int = 30, n: int = 60):
    """A separable set in [0, 1]^d with a gap around a random hyperplane; hard-margin linear SVC."""
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    x = rng.random((600, d))
    w = rng.standard_normal(d)
    f = x @ w
    f -= np.median(f)
    keep = np.abs(f) / np.linalg.norm(w) > 0.05
    x, y = x[keep][:n], (f[keep][:n] > 0).astype(np.int64)
    svc = SVC(kernel="linear", C=1e8, tol=1e-10).fit(x, y)
    return x, y, svc


def _linear_two_logit_model(w: np.ndarray, b: float, d: int) -> nn.Module:
    """dsvlib's linear MLP (hidden=()) with 2 logits and f = z1 - z0 = w.x + b.

    z1 = (w.x + b)/2, z0 = -z1, so the weight matrix is W = [-w/2; w/2] (rows z0, z1).  f depends
    on each row with coefficient -1 / +1 (the 1/2 is in the VALUES, not in the derivative), so for
    the hinge L = 1 - y f (y = +-1, active when y f <= 1) grad_W L = -y [-x; x], and stationarity
    on the WEIGHTS alone, W = -sum lambda_i grad_W L_i = [-sum lambda y x; sum lambda y x], reads
    w/2 = sum_i lambda_i y_i x_i: the SVM's w = sum alpha_i y_i x_i with lambda_i = alpha_i / 2.
    The intercept is not regularised by SVC, so it is left out of the condition (params="weights").
    """
    spec = make_spec("mlp", num_classes=2, in_channels=1, image_size=(1, d), hidden=())
    model = build_classifier(spec).double()
    lin = model.net.layers[-1]
    with torch.no_grad():
        wt = torch.as_tensor(w, dtype=torch.float64)
        lin.weight.copy_(torch.stack([-wt / 2, wt / 2]))
        lin.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=torch.float64))
    # the Classifier normalises with mean/std; undo it so the net sees the raw x
    model.mean.fill_(0.0)
    model.std.fill_(1.0)
    return model


@pytest.mark.parametrize("seed", [0, 3])
def test_linear_svm_recovers_support_set_and_dual_coefficients(seed):
    d = 30
    x, y, svc = _svm_problem(seed, d=d)
    sv = np.sort(svc.support_)
    assert len(sv) < d, "need more dimensions than support vectors (unique dual coefficients)"
    # SVC puts its support vectors on the margin only up to its tolerance (|y f - 1| ~ 1e-5 here),
    # while the hinge treats y f <= 1 + 1e-6 as active.  Shrinking (w, b) by 1e-3 puts every
    # support vector strictly inside the active region and keeps every other sample strictly
    # outside (asserted below); stationarity then holds with lambda = (1 - 1e-3) alpha / 2.
    shrink = 1 - 1e-3
    w, b = svc.coef_[0] * shrink, float(svc.intercept_[0]) * shrink
    margins = (2 * y - 1) * (x @ w + b)
    others = np.setdiff1d(np.arange(len(y)), sv)
    assert margins[sv].max() < 1 and margins[others].min() > 1 + 1e-4

    model = _linear_two_logit_model(w, b, d)
    images = torch.as_tensor(x, dtype=torch.float64).view(len(x), 1, 1, d)
    res = fit_lambdas(model, images, torch.as_tensor(y), params="weights", loss="hinge", distance="l2",
                      steps=3000, tol=1e-12)
    lam = res.lambdas.double().numpy()
    found = np.flatnonzero(lam > 1e-3 * lam.max())
    assert found.tolist() == sv.tolist()
    alpha = np.zeros(len(y))
    alpha[svc.support_] = np.abs(svc.dual_coef_[0])
    r = np.corrcoef(lam, alpha)[0, 1]
    assert r > 0.99
    # not just correlated: the same numbers (lambda = shrink * alpha / 2, see the model's docstring)
    np.testing.assert_allclose(lam[sv], shrink * alpha[sv] / 2, rtol=2e-3, atol=1e-4)
    assert res.cosine > 0.9999
    # alpha (lambda x |dL/dlogits|) is proportional to lambda for the hinge
    a = res.alphas.double().numpy()
    np.testing.assert_allclose(a[sv] / lam[sv], np.sqrt(2), rtol=1e-5)


def test_cos_and_l2_share_the_minimiser():
    """cos(theta, cone) is maximised at theta's projection on the cone: the l2 solution."""
    d = 30
    x, y, svc = _svm_problem(0, d=d)
    w, b = svc.coef_[0] * (1 - 1e-3), float(svc.intercept_[0]) * (1 - 1e-3)
    model = _linear_two_logit_model(w, b, d)
    images = torch.as_tensor(x, dtype=torch.float64).view(len(x), 1, 1, d)
    r_cos = fit_lambdas(model, images, torch.as_tensor(y), params="weights", loss="hinge", distance="cos", steps=3000, tol=1e-12)
    r_l2 = fit_lambdas(model, images, torch.as_tensor(y), params="weights", loss="hinge", distance="l2", steps=3000, tol=1e-12)
    assert r_cos.distance == pytest.approx(1 - r_cos.cosine, abs=1e-6)
    assert torch.allclose(r_cos.lambdas, r_l2.lambdas, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- the operator


@pytest.mark.parametrize("loss", ["ce", "hinge"])
def test_batched_operator_matches_per_sample_gradients(loss, device):
    """A lam (weighted backward over batches) and A^T v (one JVP per batch) against the explicit
    per-sample gradient rows (vmap), and the adjoint identity <A lam, v> = <lam, A^T v>."""
    k = 2 if loss == "hinge" else 10
    model, _ = make_model(make_spec(num_classes=k))
    model = model.to(device).double()
    x, y = _tiny_data(24, k=k)
    x, y = x.double(), y
    named = select_params(model, "all")
    dense = _Gradients(model, named, x, y, loss, 10, torch.device(device), torch.float64)
    norms, _, _ = dense.prepare(True, lambda b, nb: False)
    lazy = _Gradients(model, named, x, y, loss, 7, torch.device(device), torch.float64)
    g = torch.Generator().manual_seed(1)
    lam = torch.rand(24, generator=g, dtype=torch.float64).to(device)
    v = torch.randn(dense.rows.shape[1], generator=g, dtype=torch.float64).to(device)
    assert torch.allclose(lazy.apply(lam), dense.apply(lam), rtol=1e-9, atol=1e-10)
    assert torch.allclose(lazy.adjoint(v), dense.adjoint(v), rtol=1e-9, atol=1e-10)
    assert torch.allclose(dense.rows.norm(dim=1), norms)
    assert float(lazy.apply(lam) @ v) == pytest.approx(float(lam @ lazy.adjoint(v)), rel=1e-9)


def test_cached_and_batched_paths_agree():
    model, _ = make_model()
    x, y = _tiny_data(16)
    a = fit_lambdas(model, x, y, steps=25, cache=True, batch_size=8)
    b = fit_lambdas(model, x, y, steps=25, cache=False, batch_size=8)
    assert a.cached and not b.cached
    assert a.cosine == pytest.approx(b.cosine, abs=1e-4)
    assert torch.allclose(a.lambdas, b.lambdas, rtol=1e-2, atol=1e-3 * float(a.lambdas.max()))


# --------------------------------------------------------------------------- fit_lambdas contract


@pytest.mark.parametrize("distance", ["cos", "l2", "l1"])
def test_shapes_nonnegativity_and_improvement(distance, device):
    model, _ = make_model()
    model = model.to(device)
    x, y = _tiny_data(40)
    res = fit_lambdas(model, x, y, distance=distance, steps=60)
    assert isinstance(res, SelectionResult)
    for t in (res.lambdas, res.alphas, res.entropy, res.grad_norms):
        assert t.shape == (40,) and t.dtype == torch.float32 and t.device.type == "cpu"
    assert res.pred.shape == (40,) and res.labels.tolist() == y.tolist()
    assert (res.lambdas >= 0).all() and (res.alphas >= 0).all()
    assert res.class_lambda_sum.shape == (10,)
    assert float(res.class_lambda_sum.sum()) == pytest.approx(float(res.lambdas.sum()), rel=1e-5)
    assert res.lambdas.sum() > 0
    # fitting the multipliers beats equal multipliers (the uniform cosine is the kkt trust signal);
    # an untrained model's weights lie far from the cone of 40 gradients, so the gain is small here
    assert res.uniform_cosine == pytest.approx(dataset_gradient_cosine(model, x.to(device), y.to(device)), abs=1e-4)
    assert res.cosine > res.uniform_cosine + 0.02
    h = res.history
    assert len(h["step"]) == len(h["distance"]) == len(h["cosine"]) >= 2
    assert h["distance"][-1] < h["distance"][0]


@pytest.mark.parametrize("cache, params", [(True, "auto"), (False, "last")])
def test_model_left_exactly_as_found(cache, params):
    model, _ = make_model()
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)  # a caller's frozen layer stays frozen
    before = _state(model)
    x, y = _tiny_data(20)
    fit_lambdas(model, x, y, steps=5, cache=cache, params=params)
    after = _state(model)
    assert before[1] == after[1] and before[2] == after[2] is True
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert all(p.grad is None for p in model.parameters())


class _BNDropoutNet(nn.Module):
    """conv -> BatchNorm -> ReLU -> Dropout -> pool -> linear on 1x8x8 images, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(nn.functional.avg_pool2d(h, 4).flatten(1))


def _bn_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    model = _BNDropoutNet()
    with torch.no_grad():  # non-trivial running statistics, as after training
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.num_batches_tracked.fill_(7)
    return model


@pytest.mark.parametrize("training, cache", [(True, True), (True, False), (False, False)])
def test_model_with_batchnorm_dropout_grads_and_hooks_left_as_found(training, cache):
    """Nothing on the caller's module is toggled or written: .grad objects and values, BatchNorm
    running statistics, train/eval mode of every module, requires_grad flags, registered hooks.
    Every forward is in eval mode: a train-mode model gives the same lambdas as its eval twin."""
    model = _bn_dropout_model()
    model.train(training)
    model.bn.weight.requires_grad_(False)  # a caller's frozen tensor stays frozen
    g = torch.Generator().manual_seed(0)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n]
    grad_values = {n: t.clone() for n, t in grads.items()}
    calls = []
    model.conv.register_forward_hook(lambda m, i, o: calls.append("conv"))
    model.register_forward_pre_hook(lambda m, i: calls.append("pre"))

    def hooks(m: nn.Module) -> tuple[int, int, int]:
        return len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hook_counts = {n: hooks(m) for n, m in model.named_modules()}
    x = torch.rand(12, 1, 8, 8, generator=g)
    y = torch.arange(12) % 3

    res = fit_lambdas(model, x, y, params="all", steps=10, cache=cache, batch_size=5)

    for n, p in model.named_parameters():
        assert p.grad is grads[n] and torch.equal(p.grad, grad_values[n]), n
    after = model.state_dict()
    assert after.keys() == state.keys()
    for k in state:  # incl. bn.running_mean / running_var / num_batches_tracked
        assert torch.equal(after[k], state[k]), k
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(mode is training for mode in modes.values())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: hooks(m) for n, m in model.named_modules()} == hook_counts
    assert res.cached is cache and res.steps_run == 10 and res.lambdas.sum() > 0

    twin = copy.deepcopy(model).eval()
    ref = fit_lambdas(twin, x, y, params="all", steps=10, cache=cache, batch_size=5)
    assert torch.equal(res.lambdas, ref.lambdas) and torch.equal(res.entropy, ref.entropy)


def test_select_config_validates_and_overrides():
    cfg = SelectConfig()
    assert (cfg.params, cfg.loss, cfg.distance, cfg.steps, cfg.lr, cfg.batch_size, cfg.tol, cfg.cache,
            cfg.max_cache_bytes, cfg.history_every, cfg.seed) == ("auto", "ce", "cos", 3000, 1.0, 500, 1e-6, None,
                                                                   2 * 1024 ** 3, 10, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 5
    assert SelectConfig(params=["conv", "fc"]).params == ("conv", "fc")  # hashable
    bad = [dict(params=3), dict(params=["conv", 1]), dict(loss="mse"), dict(distance="kl"), dict(steps=-1),
           dict(steps=2.5), dict(lr=0.0), dict(lr=float("inf")), dict(lr="1"), dict(batch_size=0), dict(tol=-1e-3),
           dict(cache="yes"), dict(max_cache_bytes=-1), dict(history_every=0), dict(seed=1.5)]
    for kwargs in bad:
        (name,) = kwargs
        with pytest.raises(ValueError, match=name):
            SelectConfig(**kwargs)

    model, _ = make_model()
    x, y = _tiny_data(10)
    with pytest.raises(TypeError, match="stepz"):
        fit_lambdas(model, x, y, stepz=5)
    with pytest.raises(TypeError, match="config"):
        fit_lambdas(model, x, y, {"steps": 5})
    with pytest.raises(ValueError, match="steps"):  # overrides are validated too
        fit_lambdas(model, x, y, SelectConfig(), steps=-1)
    # a config, keyword overrides, or both: the same run
    a = fit_lambdas(model, x, y, SelectConfig(steps=5, batch_size=4, distance="l2"))
    b = fit_lambdas(model, x, y, steps=5, batch_size=4, distance="l2")
    c = fit_lambdas(model, x, y, SelectConfig(steps=500, distance="l2"), steps=5, batch_size=4)
    assert torch.equal(a.lambdas, b.lambdas) and torch.equal(a.lambdas, c.lambdas)
    assert a.options == b.options == c.options and c.options["steps"] == 5


def test_callback_reports_and_stops():
    model, _ = make_model()
    x, y = _tiny_data(20)
    seen = []

    def cb(info):
        seen.append((info.phase, info.step))
        return info.phase == "solve" and info.step == 3

    res = fit_lambdas(model, x, y, steps=50, batch_size=8, callback=cb)
    assert res.steps_run == 3
    assert [s for s in seen if s[0] == "gradients"] == [("gradients", 1), ("gradients", 2), ("gradients", 3)]
    assert seen[-1] == ("solve", 3)


def test_stop_during_the_gradient_pass_returns_zero_lambdas():
    model, _ = make_model()
    model.train()
    x, y = _tiny_data(20)
    res = fit_lambdas(model, x, y, steps=50, batch_size=8, callback=lambda info: info.phase == "gradients")
    assert res.steps_run == 0 and not res.converged and (res.lambdas == 0).all()
    assert res.pred.shape == (20,) and torch.isfinite(res.entropy).all() and res.uniform_cosine != res.uniform_cosine
    assert model.training


@pytest.mark.parametrize("kwargs, match", [
    (dict(distance="kl"), "distance"),
    (dict(loss="mse"), "loss"),
    (dict(steps=-1), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(params="nope"), "params"),
])
def test_bad_arguments_fail_early(kwargs, match):
    model, _ = make_model()
    x, y = _tiny_data(10)
    with pytest.raises(ValueError, match=match):
        fit_lambdas(model, x, y, **kwargs)


def test_bad_inputs_fail_early():
    model, _ = make_model()
    x, y = _tiny_data(10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_lambdas(model, x * 255, y)
    with pytest.raises(ValueError, match="labels has"):
        fit_lambdas(model, x, y[:5])
    with pytest.raises(ValueError, match="class indices"):
        fit_lambdas(model, x, y.float())
    with pytest.raises(ValueError, match="hinge"):
        fit_lambdas(model, x, y, loss="hinge")  # 10 logits


# --------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def mnist_selection():
    from dsvlib.data import load_dataset
    from dsvlib.io import default_model_path, load_model

    if not default_model_path("mnist_convnet").exists():
        pytest.skip("assets/models/mnist_convnet.safetensors is missing")
    model, _ = load_model("mnist_convnet")
    data = load_dataset("mnist:train").per_class(30, seed=0)
    return model, data, fit_lambdas(model, data.images, data.labels, steps=1000)


def test_real_mnist_model_selection_is_meaningful(mnist_selection):
    """On the bundled MNIST ConvNet (300 real digits): fitted multipliers explain the weights far
    better than equal ones; the support is the uncertain part of the data, and the samples carrying
    the most of the solution (top alpha) are the uncertain ones; every class has support."""
    _, _, res = mnist_selection
    assert res.converged
    # 300 of the 4,000 training digits: equal multipliers explain the weights poorly, fitted ones well
    assert res.uniform_cosine < 0.4 and res.cosine > max(0.6, 2 * res.uniform_cosine)
    top = top_per_class(res, 3, by="alpha")
    bottom = bottom_per_class(res, 3, by="alpha")
    assert res.entropy[top].mean() > 3 * res.entropy[bottom].mean()
    support = res.lambdas > 0
    assert res.entropy[support].mean() > 1.5 * res.entropy[~support].mean()
    assert set(res.labels[support].tolist()) == set(range(10))
    assert 0.1 < float(support.float().mean()) < 0.9


# --------------------------------------------------------------------------- rankings and outputs


def _fake_result(lambdas, labels, entropy=None, k=None) -> SelectionResult:
    lambdas = torch.as_tensor(lambdas, dtype=torch.float32)
    labels = torch.as_tensor(labels)
    k = k or int(labels.max()) + 1
    n = len(lambdas)
    ent = torch.as_tensor(entropy, dtype=torch.float32) if entropy is not None else torch.zeros(n)
    return SelectionResult(lambdas=lambdas, alphas=lambdas.clone(), grad_norms=torch.ones(n), entropy=ent,
                           pred=labels.clone(), labels=labels, class_lambda_sum=class_sums(lambdas, labels, k),
                           class_names=tuple(str(i) for i in range(k)), distance=0.0, cosine=1.0, uniform_cosine=0.5,
                           history={}, seconds=0.0, steps_run=0, converged=True, cached=True,
                           options={"distance": "cos"})


def test_rank_helpers():
    res = _fake_result([0.5, 0.0, 2.0, 0.0, 1.0, 0.3], [0, 0, 0, 1, 1, 1], entropy=[0.1, 0.9, 0.2, 0.3, 0.1, 0.4])
    ranks = rank_per_class(res)
    assert ranks[0].tolist() == [2, 0, 1] and ranks[1].tolist() == [4, 5, 3]
    assert top_per_class(res, 1).tolist() == [2, 4]
    assert bottom_per_class(res, 1).tolist() == [1, 3]
    assert top_per_class(res, 10).tolist() == [2, 0, 1, 4, 5, 3]
    # ties in lambda: the higher-entropy sample ranks first
    tie = _fake_result([0.0, 0.0, 0.0], [0, 0, 0], entropy=[0.1, 0.5, 0.3])
    assert rank_per_class(tie)[0].tolist() == [1, 2, 0]
    assert res.class_lambda_sum.tolist() == pytest.approx([2.5, 1.3])


class _Oracle(nn.Module):
    """Predicts a fixed class per sample; the sample's index is written in its first pixel."""

    def __init__(self, predictions: torch.Tensor, k: int) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.register_buffer("table", predictions.clone())
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.round(x[:, 0, 0, 0] * (len(self.table) - 1)).long()
        return nn.functional.one_hot(self.table[idx], self.k).float() * 10 + self.dummy


def test_classwise_correlation_known_answer():
    """Class sums built as a function of the classwise test accuracy: r = rho = +-1."""
    from dsvlib.data import Dataset

    k, per = 4, 10
    y = torch.arange(k).repeat_interleave(per)
    correct = [10, 7, 4, 9]  # classwise accuracy 1.0, 0.7, 0.4, 0.9
    pred = y.clone()
    for c, m in enumerate(correct):
        pred[c * per + m:(c + 1) * per] = (c + 1) % k
    x = torch.zeros(len(y), 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(len(y)) / (len(y) - 1)
    test = Dataset(x, y, tuple("abcd"))
    model = _Oracle(pred, k)
    acc = torch.tensor(correct) / per
    labels = torch.arange(k)
    out = classwise_correlation(_fake_result(2 * acc + 1, labels, k=k), model, test, permutations=4000)
    assert out["class_accuracy"] == pytest.approx(acc.tolist())
    assert out["pearson"] == pytest.approx(1.0, abs=1e-9) and out["spearman"] == pytest.approx(1.0)
    assert out["spearman_p"] == pytest.approx(2 / 24, abs=0.03)  # 2 of the 4! orderings are as extreme
    # a monotone but non-linear function: rho stays 1, r drops below 1
    cube = classwise_correlation(_fake_result(acc ** 6, labels, k=k), model, test, permutations=200)
    assert cube["spearman"] == pytest.approx(1.0) and 0.8 < cube["pearson"] < 0.99
    neg = classwise_correlation(_fake_result(2 - acc, labels, k=k), model, test, permutations=200)
    assert neg["pearson"] == pytest.approx(-1.0, abs=1e-9) and neg["spearman"] == pytest.approx(-1.0)


def test_write_rank_outputs(tmp_path, mnist_selection):
    from PIL import Image

    _, data, res = mnist_selection
    paths = write_rank_outputs(res, data, tmp_path / "rank", k=4)
    rows = list(csv.reader(open(paths["csv"])))
    assert rows[0] == ["index", "label", "lambda", "entropy", "predicted", "alpha"]
    assert len(rows) == len(data) + 1
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(res.lambdas.tolist(), rel=1e-5, abs=1e-12)
    img = Image.open(paths["png"])
    # 10 class rows of 2k+1 tiles of 28 px with 2 px padding
    assert img.size == (9 * (28 + 2) + 2, 10 * (28 + 2) + 2)
    summary = json.loads(paths["json"].read_text())
    assert summary["support"] == int((res.lambdas > 0).sum()) and len(summary["class_lambda_sum"]) == 10
    with pytest.raises(ValueError, match="samples"):
        write_rank_outputs(res, data.subset(torch.arange(5)), tmp_path / "bad")
