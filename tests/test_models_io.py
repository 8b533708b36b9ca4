"""Model registry, the pixel-space wrapper, and safe loading: every bad file is a ModelFileError."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle

import pytest
import torch
from torch import nn

from conftest import make_model, make_spec
from dsvlib import ModelFileError, ModelSpec, build_classifier, create_model, list_models, load_model, save_model
from dsvlib.models import Classifier


def _expect_error(path, *fragments: str, **kwargs) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path, **kwargs)
    msg = str(info.value)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"{frag!r} not in error message: {msg}"
    return msg


# --------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_outputs(tmp_path, tiny_model):
    model, spec = tiny_model
    x = torch.rand(4, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    path = save_model(model, spec, tmp_path / "m.safetensors")
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec
    assert torch.equal(loaded(x), model(x))


def test_round_trip_of_bare_network(tmp_path, tiny_model):
    model, spec = tiny_model
    path = save_model(model.net, spec, tmp_path / "bare.safetensors")
    loaded, _ = load_model(path)
    x = torch.rand(2, *spec.input_shape)
    assert torch.equal(loaded(x), model(x))


def test_load_model_returns_eval_mode(tmp_path):
    model, spec = make_model(make_spec(width=8, depth=2, norm="batch"))
    model.train()
    path = save_model(model, spec, tmp_path / "m.safetensors")
    loaded, _ = load_model(path)
    assert not loaded.training
    assert all(not m.training for m in loaded.modules())
    # eval mode matters: BatchNorm uses running statistics, so one image's output ignores the batch
    x = torch.rand(3, *spec.input_shape)
    assert torch.allclose(loaded(x[:1]), loaded(x)[:1], atol=1e-5)


def test_load_model_to_device(tmp_path, tiny_model, device):
    model, spec = tiny_model
    path = save_model(model, spec, tmp_path / "m.safetensors")
    loaded, _ = load_model(path, device=device)
    assert next(loaded.parameters()).device.type == device
    x = torch.rand(2, *spec.input_shape)
    assert torch.allclose(loaded(x.to(device)).cpu(), model(x), atol=1e-4)


def test_normalisation_happens_inside_the_wrapper():
    spec = ModelSpec(arch="mlp", num_classes=3, in_channels=2, image_size=4, mean=(0.25, 0.5), std=(0.5, 2.0),
                     arch_kwargs={"hidden": ()})
    model = build_classifier(spec)
    x = torch.rand(5, 2, 4, 4)
    mean = torch.tensor([0.25, 0.5]).view(1, 2, 1, 1)
    std = torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    assert torch.allclose(model(x), model.net((x - mean) / std), atol=1e-6)
    # the constants are not weights: the file holds only the network
    assert all(k.startswith("net.") for k in model.state_dict())
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()


def test_spec_json_round_trip():
    spec = make_spec(width=8, depth=2, norm="group")
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown fields"):
        ModelSpec.from_json('{"arch": "convnet", "bogus": 1}')


def test_spec_validation_names_the_argument():
    with pytest.raises(ValueError, match="class_names"):
        ModelSpec(arch="mlp", num_classes=3, in_channels=1, image_size=4, mean=(0,), std=(1,), class_names=("a",))
    with pytest.raises(ValueError, match="std"):
        ModelSpec(arch="mlp", num_classes=3, in_channels=1, image_size=4, mean=(0,), std=(0,))
    with pytest.raises(ValueError, match="num_classes"):
        ModelSpec(arch="mlp", num_classes=1, in_channels=1, image_size=4, mean=(0,), std=(1,))


# --------------------------------------------------------------------------- loading errors


def test_unknown_architecture(tmp_path, tiny_model):
    model, spec = tiny_model
    path = save_model(model, spec, tmp_path / "m.safetensors")
    bad = dataclasses.replace(spec, arch="nope", arch_kwargs={})
    msg = _expect_error(path, "unknown architecture", "'nope'", spec=bad)
    assert "convnet" in msg  # says what would be accepted


def test_missing_keys(tmp_path, tiny_model):
    model, spec = tiny_model
    state = {k: v for k, v in model.net.state_dict().items() if not k.startswith("features.0.")}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "m.safetensors"))
    _expect_error(tmp_path / "m.safetensors", "missing keys", "features.0.weight", spec=spec)


def test_unexpected_keys(tmp_path, tiny_model):
    model, spec = tiny_model
    state = dict(model.net.state_dict())
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "m.pt")
    _expect_error(tmp_path / "m.pt", "unexpected keys", "extra.weight", spec=spec)


def test_shape_mismatch(tmp_path):
    model16, spec16 = make_model(make_spec(width=16, depth=2))
    path = save_model(model16, spec16, tmp_path / "w16.safetensors")
    spec32 = make_spec(width=32, depth=2)
    msg = _expect_error(path, "shape mismatch", "(16, 1, 3, 3)", "(32, 1, 3, 3)", spec=spec32)
    assert "class-count" not in msg  # a width change is not a class-count change


def test_class_count_mismatch(tmp_path):
    model5, spec5 = make_model(make_spec(num_classes=5))
    path = save_model(model5, spec5, tmp_path / "five.safetensors")
    _expect_error(path, "class-count mismatch", "10 classes", "5 outputs", spec=make_spec(num_classes=10))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(tmp_path, tiny_model, bad):
    model, spec = tiny_model
    with torch.no_grad():
        model.net.classifier.weight[0, 0] = bad
    path = save_model(model, spec, tmp_path / "m.safetensors")
    _expect_error(path, "nan or inf", "classifier.weight")


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["random", "png", "text", "empty"])
def test_not_a_model_file(tmp_path, kind):
    data = {
        "random": bytes((b % 255) + 1 for b in torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()),
        "png": _png_bytes(),
        "text": b"these are not the weights you are looking for\n" * 20,
        "empty": b"",
    }[kind]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    msg = _expect_error(path, "model.safetensors", spec=make_spec())
    assert "accepted" in msg or "not" in msg


def test_pt_file_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(3), torch.ones(2)], tmp_path / "list.pt")
    _expect_error(tmp_path / "list.pt", "not a state_dict", spec=make_spec())


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_safetensors(tmp_path, tiny_model, keep):
    model, spec = tiny_model
    path = save_model(model, spec, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _expect_error(path, "m.safetensors")


def test_truncated_header(tmp_path, tiny_model):
    model, spec = tiny_model
    path = save_model(model, spec, tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    _expect_error(path, "damaged safetensors header", spec=spec)


def test_damaged_spec_metadata(tmp_path, tiny_model):
    model, spec = tiny_model
    from safetensors.torch import save_file

    save_file(dict(model.net.state_dict()), str(tmp_path / "m.safetensors"), metadata={"dsv_spec": "{not json"})
    _expect_error(tmp_path / "m.safetensors", "dsv_spec", "invalid")


def test_oversize_file(tmp_path, tiny_model):
    model, spec = tiny_model
    path = save_model(model, spec, tmp_path / "m.safetensors")
    _expect_error(path, "limit", max_bytes=1024)
    load_model(path, max_bytes=10 * 2**20)  # under the limit it loads


def test_missing_file_lists_default_models(tmp_path):
    msg = _expect_error(tmp_path / "nowhere.safetensors", "no model file")
    assert "mnist_convnet" in msg


def test_default_model_by_name():
    model, spec = load_model("mnist_convnet")
    assert isinstance(model, Classifier) and spec.num_classes == 10 and spec.input_shape == (1, 28, 28)


# --------------------------------------------------------------------------- plain .pt state_dicts


def test_plain_pt_state_dict_with_spec(tmp_path, tiny_model):
    model, spec = tiny_model
    torch.save(model.net.state_dict(), tmp_path / "plain.pt")
    loaded, _ = load_model(tmp_path / "plain.pt", spec=spec)
    x = torch.rand(3, *spec.input_shape)
    assert torch.equal(loaded(x), model(x))


def test_plain_pt_wrapped_or_prefixed(tmp_path, tiny_model):
    model, spec = tiny_model
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")  # "net." prefix + wrapper dict
    loaded, _ = load_model(tmp_path / "ckpt.pth", spec=spec)
    x = torch.rand(3, *spec.input_shape)
    assert torch.equal(loaded(x), model(x))


def test_plain_pt_without_spec_is_a_clear_error(tmp_path, tiny_model):
    model, _ = tiny_model
    torch.save(model.net.state_dict(), tmp_path / "plain.pt")
    _expect_error(tmp_path / "plain.pt", "no dsvlib spec", "spec=")


class _Evil:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('x')",))


class _EvilSystem:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("how", ["zip", "legacy", "raw_pickle", "os_system"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, tiny_model, how):
    model, spec = tiny_model
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = dict(model.net.state_dict())
    if how == "zip":
        state["payload"] = _Evil(str(marker))
        torch.save(state, path)
    elif how == "legacy":
        state["payload"] = _Evil(str(marker))
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif how == "raw_pickle":
        path.write_bytes(pickle.dumps({"payload": _Evil(str(marker))}, protocol=2))
    else:
        state["payload"] = _EvilSystem(str(marker))
        torch.save(state, path)
    assert not marker.exists()
    msg = _expect_error(path, "refused", "evil.pt", spec=spec)
    assert "not loaded" in msg
    assert not marker.exists(), "loading the file ran code from the pickle"
    # also without a spec: the refusal comes before anything else
    _expect_error(path, "refused")
    assert not marker.exists()


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("kwargs", [
    {"width": 32, "depth": 3, "norm": "instance"},
    {"width": 8, "depth": 1, "norm": "none"},
    {"width": 16, "depth": 2, "norm": "batch"},
    {"width": 8, "depth": 4, "norm": "group"},
    {"width": 8, "depth": 2, "norm": "layer"},
])
def test_convnet_variants(kwargs):
    net = create_model("convnet", num_classes=7, in_channels=3, image_size=32, **kwargs).eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == kwargs["depth"]


def test_convnet_bad_norm_and_depth():
    with pytest.raises(ValueError, match="unknown norm"):
        create_model("convnet", num_classes=2, in_channels=1, image_size=8, norm="bogus")
    with pytest.raises(ValueError, match="depth"):
        create_model("convnet", num_classes=2, in_channels=1, image_size=8, depth=5)


def test_mlp_linear_and_hidden():
    lin = create_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=())
    linears = [m for m in lin.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (10, 784)
    assert lin(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    hid = create_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=(64,))
    shapes = [m.weight.shape for m in hid.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(64, 784), (10, 64)]
    assert hid(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_lenet(in_channels, size):
    net = create_model("lenet", num_classes=10, in_channels=in_channels, image_size=size)
    assert net(torch.rand(2, in_channels, size, size)).shape == (2, 10)


def test_resnet18_small():
    net = create_model("resnet18_small", num_classes=4, in_channels=3, image_size=32, width=8).eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_torchvision_resnet18(in_channels):
    net = create_model("torchvision:resnet18", num_classes=10, in_channels=in_channels, image_size=32).eval()
    with torch.no_grad():
        assert net(torch.rand(2, in_channels, 32, 32)).shape == (2, 10)


def test_torchvision_model_round_trip(tmp_path):
    spec = ModelSpec(arch="torchvision:resnet18", num_classes=3, in_channels=1, image_size=32, mean=(0.5,),
                     std=(0.5,))
    torch.manual_seed(0)
    model = build_classifier(spec)
    path = save_model(model, spec, tmp_path / "tv.safetensors")
    loaded, _ = load_model(path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        create_model("nope", num_classes=10, in_channels=1, image_size=28)
    msg = str(info.value)
    assert "'nope'" in msg
    for name in ("convnet", "mlp", "lenet", "resnet18_small"):
        assert name in list_models() and name in msg
    assert "torchvision:" in msg


def test_unknown_torchvision_name():
    with pytest.raises(ValueError, match="unknown torchvision classification model 'no_such_net'"):
        create_model("torchvision:no_such_net", num_classes=10, in_channels=3, image_size=32)


def test_bad_architecture_arguments_name_the_architecture():
    with pytest.raises(ValueError, match="bad arguments for architecture 'mlp'"):
        create_model("mlp", num_classes=10, in_channels=1, image_size=28, width=3)
