"""The Model page's uploads and architecture form, with ``streamlit.testing.v1.AppTest``.

AppTest drives ``st.file_uploader`` here (``set_value((name, bytes, mime))``), so every upload goes
through the page as a user's would.  The page runs as a stand-alone script; a session flag stands
in for leaving the page, since AppTest switches only between file-based pages.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import dsvlib
from app import common
from conftest import make_model, make_spec
from dsvlib.models import NORMS

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # the CI machine has 2 shared cores
MIME = "application/octet-stream"


def _model_page_script(root: str) -> None:
    """The Model page, or another page when the session's ``page`` says so."""
    import sys

    import streamlit as st

    if root not in sys.path:
        sys.path.insert(0, root)
    from pages import model

    if st.session_state.get("page", "model") == "model":
        model.model_page()
    else:
        st.title("Another page")


def model_app() -> AppTest:
    return AppTest.from_function(_model_page_script, args=(str(ROOT),), default_timeout=TIMEOUT).run()


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _texts(at.error)


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="model_upload").set_value((name, data, MIME))
    return at.run()


def _use_form(at: AppTest, arch: str) -> AppTest:
    at.checkbox(key="spec_use").check()
    at.selectbox(key="spec_arch").set_value(arch)
    return at.run()  # the chosen architecture's option widgets appear


def _picker(at: AppTest):
    return at.sidebar.selectbox(key="_model_picker")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnx2torch")
    from test_onnx import export, odd_net

    net = odd_net()
    return net, export(net, tmp_path_factory.mktemp("onnx") / "odd.onnx").read_bytes()


def test_each_kind_of_upload_works_and_all_stay_selectable(tmp_path, onnx_file):
    tiny, tiny_spec = make_model()
    tiny_bytes = dsvlib.save_model(tiny, tiny_spec, tmp_path / "tiny.safetensors").read_bytes()
    mlp, mlp_spec = make_model(make_spec("mlp", hidden=(64,)))
    buf = io.BytesIO()
    torch.save(mlp.net.state_dict(), buf)
    odd, odd_bytes = onnx_file
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    at = model_app()
    # 1. safetensors written by dsvlib: the spec travels in the file.
    _upload(at, "tiny.safetensors", tiny_bytes)
    _no_failure(at)
    assert _picker(at).value == "tiny.safetensors (uploaded)"
    # 2. a plain .pt state_dict, described in the form: mlp with its "hidden" option.
    _use_form(at, "mlp")
    assert at.text_input(key="spec_opt:mlp:hidden").value == "256"  # the builder's default
    at.text_input(key="spec_opt:mlp:hidden").set_value("64")
    _upload(at, "mlp.pt", buf.getvalue())
    _no_failure(at)
    assert _picker(at).value == "mlp.pt (uploaded)"
    entry = at.session_state[common.UPLOADS_KEY]["mlp.pt (uploaded)"]
    assert entry["spec"].arch_kwargs == {"hidden": (64,)}
    with torch.no_grad():
        assert torch.allclose(entry["model"](x), mlp(x), atol=1e-6)
    # 3. an ONNX graph of an architecture no registry has.
    at.selectbox(key="spec_arch").set_value("ONNX graph").run()
    assert not [n for n in at.number_input if n.key.startswith("spec_opt:")]  # a graph has no options
    _upload(at, "odd.onnx", odd_bytes)
    _no_failure(at)
    assert _picker(at).value == "odd.onnx (uploaded)"
    assert "Model: odd.onnx (uploaded)" in _texts(at.header)
    entry = at.session_state[common.UPLOADS_KEY]["odd.onnx (uploaded)"]
    assert entry["spec"].arch == "onnx"
    with torch.no_grad():
        assert torch.allclose(entry["model"](x), odd((x - 0.1307) / 0.3081), atol=1e-5)
    # All three stay in the picker, beside the shipped models, and an earlier one can be chosen again.
    uploads = ["tiny.safetensors (uploaded)", "mlp.pt (uploaded)", "odd.onnx (uploaded)"]
    assert list(_picker(at).options) == dsvlib.default_models() + uploads
    _picker(at).select("tiny.safetensors (uploaded)").run()
    _no_failure(at)
    assert "Model: tiny.safetensors (uploaded)" in _texts(at.header)
    _picker(at).select("odd.onnx (uploaded)").run()
    _no_failure(at)
    assert "Model: odd.onnx (uploaded)" in _texts(at.header)
    assert list(_picker(at).options) == dsvlib.default_models() + uploads


def test_two_files_with_one_name_get_two_labels(tmp_path):
    first, spec = make_model(seed=0)
    second, _ = make_model(seed=1)
    at = model_app()
    _upload(at, "m.safetensors", dsvlib.save_model(first, spec, tmp_path / "a.safetensors").read_bytes())
    _upload(at, "m.safetensors", dsvlib.save_model(second, spec, tmp_path / "b.safetensors").read_bytes())
    _no_failure(at)
    assert _picker(at).value == "m.safetensors (uploaded) #2"
    assert list(at.session_state[common.UPLOADS_KEY]) == ["m.safetensors (uploaded)", "m.safetensors (uploaded) #2"]


def test_bad_uploads_show_an_error_and_the_app_keeps_working(onnx_file):
    at = model_app()
    shipped = _picker(at).value
    _use_form(at, "ONNX graph")
    _upload(at, "notes.onnx", b"these are my notes, not a model\n" * 8)
    assert not at.exception
    assert len(at.error) == 1 and "notes.onnx is not an ONNX model" in at.error[0].value
    assert _picker(at).value == shipped and f"Model: {shipped}" in _texts(at.header)
    # An ONNX graph without the form: the error says what to do in the app.
    at.checkbox(key="spec_use").uncheck()
    _upload(at, "odd.onnx", onnx_file[1])
    assert not at.exception
    assert len(at.error) == 1
    assert "carries no spec" in at.error[0].value and "choose 'ONNX graph'" in at.error[0].value
    assert _picker(at).value == shipped and list(_picker(at).options) == dsvlib.default_models()


def test_key_mismatch_upload_shows_the_keys_side_by_side():
    model, _ = make_model()  # convnet width 8, depth 2
    state = {k.replace("features.0.", "conv1."): v for k, v in model.net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    at = model_app()
    _use_form(at, "convnet")
    at.number_input(key="spec_opt:convnet:width").set_value(8)
    at.number_input(key="spec_opt:convnet:depth").set_value(2)
    _upload(at, "renamed.pt", buf.getvalue())
    assert not at.exception and len(at.error) == 1
    msg = at.error[0].value
    assert "2 missing keys" in msg and "2 unexpected keys" in msg
    block = msg.split("```text\n", 1)[1]  # the key lines are shown as a code block, one pair a line
    assert block.splitlines()[0].split() == ["conv1.weight", "(8,", "1,", "3,", "3)", "<->", "features.0.weight",
                                             "(8,", "1,", "3,", "3)"]
    assert block.splitlines()[1].split() == ["conv1.bias", "(8,)", "<->", "features.0.bias", "(8,)"]


def test_form_is_built_from_the_registry_and_survives_leaving_the_page():
    at = model_app()
    # Every registered option has a typed widget with the builder's default.
    assert at.number_input(key="spec_opt:convnet:width").value == 32
    assert at.number_input(key="spec_opt:convnet:depth").value == 3
    norm = at.selectbox(key="spec_opt:convnet:norm")
    assert norm.value == "instance" and list(norm.options) == list(NORMS)
    at.selectbox(key="spec_arch").set_value("resnet18_small").run()
    assert at.number_input(key="spec_opt:resnet18_small:width").value == 64
    at.selectbox(key="spec_arch").set_value("torchvision:<name>").run()
    assert at.text_input(key="spec_tv_name").value == "resnet18" and not at.error
    at.text_input(key="spec_tv_name").set_value("no_such_net").run()
    assert len(at.error) == 1 and "unknown torchvision classification model" in at.error[0].value
    # Values typed in, then the page is left and shown again.
    at.selectbox(key="spec_arch").set_value("mlp").run()
    at.text_input(key="spec_opt:mlp:hidden").set_value("128, 64")
    at.number_input(key="spec_classes").set_value(5)
    at.text_input(key="spec_std").set_value("0.5")
    at.run()
    at.session_state["page"] = "other"
    at.run()
    assert "spec_opt:mlp:hidden" not in at.session_state  # Streamlit dropped the widgets' own state
    at.session_state["page"] = "model"
    at.run()
    _no_failure(at)
    assert at.selectbox(key="spec_arch").value == "mlp"
    assert at.text_input(key="spec_opt:mlp:hidden").value == "128, 64"
    assert at.number_input(key="spec_classes").value == 5
    assert at.text_input(key="spec_std").value == "0.5"
    # The other architectures kept their values too.
    at.selectbox(key="spec_arch").set_value("torchvision:<name>").run()
    assert at.text_input(key="spec_tv_name").value == "no_such_net"


def test_measured_metrics_of_a_card_less_model_say_what_they_were_measured_on(tmp_path):
    model, spec = make_model()
    at = model_app()
    _upload(at, "tiny.safetensors", dsvlib.save_model(model, spec, tmp_path / "t.safetensors").read_bytes())
    at.button(key="measure_card").click().run()
    _no_failure(at)
    labels = [m.label for m in at.metric]
    assert labels == ["Test accuracy", "Train accuracy (1,000 images)", "Stationarity cos (1,000 images)",
                      "Stationarity cos, last layer (1,000 images)"]
    test = common.bundled_dataset("mnist:test")
    train = common.bundled_dataset("mnist:train")
    assert any(f"all {len(test):,} test images" in c and f"1,000 of the {len(train):,} training images" in c
               for c in _texts(at.caption))
