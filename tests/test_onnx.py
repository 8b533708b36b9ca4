"""Classifiers of any architecture through ONNX, and the loading messages of issue 10.

The architecture here is in no registry: conv + BatchNorm + GELU stem, a residual depthwise block,
max-pooling and a linear head.  It is exported once per module with the settings the library asks
for (TorchScript exporter, opset 17, free batch dimension) and read back with ``load_model``.
"""
from __future__ import annotations

import copy
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
import onnx  # noqa: E402

import dsvlib  # noqa: E402
from conftest import make_model, make_spec  # noqa: E402
from dsvlib import Classifier, ModelSpec, load_model, save_model  # noqa: E402
from dsvlib.models import ArchOption, arch_options  # noqa: E402
from test_models_io import _expect_error  # noqa: E402  (one checker of error messages)

MEAN, STD = (0.1307,), (0.3081,)


class _DepthwiseBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(nn.functional.gelu(self.bn(self.dw(x))))


class OddNet(nn.Module):
    """Not in the registry.  ``fixed_view`` writes the batch size into the graph at export."""

    def __init__(self, num_classes: int = 10, fixed_view: bool = False) -> None:
        super().__init__()
        self.fixed_view = fixed_view
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU())
        self.block = _DepthwiseBlock(8)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 14 * 14, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.block(self.stem(x)))
        return self.head(h.view(h.size(0), -1) if self.fixed_view else h.flatten(1))


def odd_net(seed: int = 0, **kwargs) -> OddNet:
    """Seeded weights; BatchNorm statistics and affine away from their defaults, so that the
    export's folding of BatchNorm into the conv is exercised."""
    torch.manual_seed(seed)
    net = OddNet(**kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def export(net: nn.Module, path: Path, *, dynamic: bool = True, opset: int = 17) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, torch.rand(1, 1, 28, 28), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)
    return path


def onnx_spec(**changes) -> ModelSpec:
    fields = dict(arch="onnx", num_classes=10, in_channels=1, image_size=28, mean=MEAN, std=STD, name="odd")
    return ModelSpec(**{**fields, **changes})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = odd_net()
    return net, export(net, tmp_path_factory.mktemp("onnx") / "odd.onnx")


@pytest.fixture(scope="module")
def loaded(exported):
    return load_model(exported[1], spec=onnx_spec())


# --------------------------------------------------------------------------- a working graph


def test_onnx_logits_match_the_original(exported, loaded):
    net, _ = exported
    model, spec = loaded
    assert isinstance(model, Classifier) and spec == onnx_spec() and not model.training
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # The wrapper normalises: the graph receives (x - mean) / std, as the original net would.
        expected = net((x - MEAN[0]) / STD[0])
        got = model(x)
    assert got.shape == (8, 10)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


def test_onnx_model_has_the_deepkkt_double_backward(loaded):
    model, _ = loaded
    params = [p for p in model.parameters()]
    assert len(params) >= 4  # conv, depthwise, pointwise and head weights are parameters, not buffers
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.flatten() for g in grads])
    theta = torch.cat([p.detach().flatten() for p in params])
    cos = nn.functional.cosine_similarity(-theta, flat, dim=0)
    (gx,) = torch.autograd.grad(cos, x)
    assert gx.shape == x.shape and torch.isfinite(gx).all() and gx.abs().sum() > 0
    assert all(p.grad is None for p in params)  # the load-time check left no gradients behind


def test_synthesize_runs_on_an_onnx_model(loaded):
    model, _ = loaded
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = dsvlib.synthesize(copy.deepcopy(model), [0, 1], dsvlib.default_config("digits", steps=3))
    assert tuple(result.images.shape) == (2, 1, 28, 28) and result.labels.tolist() == [0, 1]
    assert 0.0 <= float(result.images.min()) and float(result.images.max()) <= 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_onnx_model_to_device(exported, device):
    model, _ = load_model(exported[1], spec=onnx_spec(), device=device)
    assert next(model.parameters()).device.type == device
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28, device=device)).shape == (2, 10)


def test_raw_pixel_graph_takes_mean_0_std_1(exported):
    net, path = exported
    model, _ = load_model(path, spec=onnx_spec(mean=(0.0,), std=(1.0,)))
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- refusals


def test_onnx_needs_a_spec_with_arch_onnx(exported):
    _, path = exported
    _expect_error(path, "odd.onnx", "carries no spec", "arch='onnx'")
    _expect_error(path, "arch='onnx'", "'convnet'", spec=onnx_spec(arch="convnet"))


def test_non_onnx_file_named_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"these are not the weights you are looking for\n" * 20)
    _expect_error(path, "notes.onnx is not an ONNX model", "opset_version=17", spec=onnx_spec())


def test_fixed_batch_export_is_refused(tmp_path):
    path = export(odd_net(fixed_view=True), tmp_path / "fixed.onnx", dynamic=False)
    _expect_error(path, "fixed.onnx", "batch dimension is fixed", "dynamic_axes={'input': {0: 'batch'}}",
                  spec=onnx_spec())


@pytest.mark.parametrize("location", ["weights.bin", "../../etc/passwd"])
def test_external_data_is_refused_before_anything_is_read(exported, tmp_path, location):
    proto = onnx.load(str(exported[1]))
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    path = tmp_path / "external.onnx"
    path.write_bytes(proto.SerializeToString())
    _expect_error(path, "refused external.onnx", "external file", repr(location), spec=onnx_spec())


def test_custom_domain_is_refused(exported, tmp_path):
    proto = onnx.load(str(exported[1]))
    proto.graph.node[0].domain = "com.example.custom"
    proto.opset_import.add(domain="com.example.custom", version=1)
    path = tmp_path / "custom.onnx"
    path.write_bytes(proto.SerializeToString())
    _expect_error(path, "refused custom.onnx", "com.example.custom", spec=onnx_spec())


def test_class_count_mismatch(exported):
    _, path = exported
    _expect_error(path, "class-count mismatch", "5 classes", "outputs 10", spec=onnx_spec(num_classes=5))


def test_input_shape_mismatch(exported):
    _, path = exported
    _expect_error(path, "odd.onnx", "(N, 3, 28, 28)", spec=onnx_spec(in_channels=3, mean=(0.5,), std=(0.5,)))


def test_unsupported_op_names_the_op_and_the_opset(tmp_path):
    path = export(odd_net(), tmp_path / "gelu20.onnx", opset=20)  # GELU becomes one Gelu-20 node
    _expect_error(path, "no converter for Gelu (opset 20)", "opset_version=17", "dynamo=False", spec=onnx_spec())


def test_non_finite_weights_are_refused(exported, tmp_path):
    proto = onnx.load(str(exported[1]))
    init = next(t for t in proto.graph.initializer if t.dims and t.data_type == onnx.TensorProto.FLOAT)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] = float("nan")
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    path = tmp_path / "nan.onnx"
    path.write_bytes(proto.SerializeToString())
    _expect_error(path, "nan.onnx", "NaN or inf", spec=onnx_spec())


def test_oversize_onnx(exported):
    _expect_error(exported[1], "limit", spec=onnx_spec(), max_bytes=1024)


def test_an_onnx_model_is_not_saved_as_safetensors(loaded, tmp_path):
    model, spec = loaded
    with pytest.raises(ValueError, match="ONNX"):
        save_model(model, spec, tmp_path / "x.safetensors")


# --------------------------------------------------------------------------- the registry's options


def test_arch_options_read_from_the_builders():
    assert arch_options("convnet") == (
        ArchOption("width", "int", 32), ArchOption("depth", "int", 3),
        ArchOption("norm", "str", "instance", ("instance", "batch", "group", "layer", "none")),
    )
    assert arch_options("mlp") == (ArchOption("hidden", "tuple[int, ...]", (256,)),)
    assert arch_options("lenet") == ()
    assert arch_options("resnet18_small") == (ArchOption("width", "int", 64),)
    assert arch_options("torchvision:resnet18") == () and arch_options("onnx") == ()
    for name in dsvlib.list_models():  # every option's default builds the model
        kwargs = {o.name: o.default for o in arch_options(name)}
        dsvlib.create_model(name, num_classes=3, in_channels=1, image_size=28, **kwargs)
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        arch_options("nope")
    with pytest.raises(ValueError, match="unknown torchvision classification model"):
        arch_options("torchvision:no_such_net")


# --------------------------------------------------------------------------- the other loading messages


def test_key_mismatch_shows_the_keys_side_by_side(tmp_path):
    model, spec = make_model()
    state = {k.replace("features.0.", "conv1."): v for k, v in model.net.state_dict().items()}
    state["extra.scale"] = torch.ones(3)
    torch.save(state, tmp_path / "renamed.pt")
    msg = _expect_error(tmp_path / "renamed.pt", "2 missing keys", "3 unexpected keys", spec=spec)
    lines = [ln.split() for ln in msg.splitlines()[1:]]
    assert lines == [
        ["conv1.weight", "(8,", "1,", "3,", "3)", "<->", "features.0.weight", "(8,", "1,", "3,", "3)"],
        ["conv1.bias", "(8,)", "<->", "features.0.bias", "(8,)"],
        ["extra.scale", "(3,)", "<->", "(none)"],
    ]


def test_class_count_and_shape_messages_are_kept(tmp_path):
    model5, spec5 = make_model(make_spec(num_classes=5))
    path = save_model(model5, spec5, tmp_path / "five.safetensors")
    _expect_error(path, "class-count mismatch", "5 outputs", spec=make_spec(num_classes=10))
    model16, spec16 = make_model(make_spec(width=16, depth=2))
    path = save_model(model16, spec16, tmp_path / "w16.safetensors")
    _expect_error(path, "shape mismatch", "(16, 1, 3, 3)", spec=make_spec(width=32, depth=2))


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("how", ["zip", "raw_pickle"])
def test_pickle_refusal_is_clean(tmp_path, how):
    path = tmp_path / "evil.pt"
    if how == "zip":
        torch.save({"w": _Evil()}, path)
    else:
        path.write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    msg = _expect_error(path, "refused evil.pt", "not loaded", spec=make_spec())
    assert "\x1b" not in msg and "[1m" not in msg  # no ANSI colour codes
    said = msg.split("PyTorch said: ", 1)[1].split(" accepted:", 1)[0]
    assert said.endswith(".") and "GLOBAL" in said and "\n" not in said
    assert "weights_only` set to `False" not in msg  # torch's advice to unpickle anyway is not passed on


def test_cli_reads_an_onnx_graph_with_the_forms_fields(exported, capsys):
    from dsvlib import cli

    _, path = exported
    args = ["info", str(path), "--arch", "onnx", "--num-classes", "10", "--channels", "1", "--image-size", "28",
            "--mean", str(MEAN[0]), "--std", str(STD[0])]
    assert cli.main(args) == 0
    assert "architecture: onnx" in capsys.readouterr().out
    assert cli.main(["info", str(path)]) == 2  # no spec: one line naming the options to pass
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "carries no spec" in err
    assert cli.main([*args[:4], "--arch-kwargs", '{"width": 3}', *args[4:]]) == 2
    assert "takes no architecture options" in capsys.readouterr().err
