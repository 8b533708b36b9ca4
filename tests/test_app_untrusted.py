"""Hostile uploads in the app (issue 12): each is a friendly error box, and the app keeps working.

Driven through the Model page's uploader with ``streamlit.testing.v1.AppTest``, as in
``tests/test_app_model.py``; the files are built by ``tests/test_untrusted.py``'s helpers.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import make_model, make_spec
from test_app_model import _texts, _upload, model_app
from test_untrusted import TINY, safetensors_bytes, spec_dict, tiny_state, with_spec


def _good_file(tmp_path) -> bytes:
    import dsvlib

    model, spec = make_model(make_spec(**TINY))
    return dsvlib.save_model(model, spec, tmp_path / "good.safetensors").read_bytes()


def _one_error(at, *fragments: str) -> str:
    assert not at.exception, [e.value for e in at.exception]
    errors = _texts(at.error)
    assert len(errors) == 1, errors
    for frag in fragments:
        assert frag.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in errors[0] and "\x1b[" not in errors[0]
    return errors[0]


@pytest.mark.parametrize("name, data, fragments", [
    ("classes_bomb.safetensors", lambda: with_spec(spec_dict(num_classes=10**9, class_names=[])),
     ("num_classes must be in 2..10,000", "DSV_MAX_CLASSES")),
    ("vit_h_14.safetensors", lambda: with_spec(spec_dict(arch="torchvision:vit_h_14", in_channels=3,
                                                         image_size=[224, 224], arch_kwargs={})),
     ("630,777,610 parameters", "over the limit")),
    ("inf_weights.safetensors", lambda: safetensors_bytes(
        {**{k: v.numpy() for k, v in tiny_state().items()},
         "classifier.weight": np.full(tuple(tiny_state()["classifier.weight"].shape), 1e300, np.float64)},
        {"dsv_spec": json.dumps(spec_dict())}),
     ("classifier.weight", "NaN or inf", "after the cast to float32")),
])
def test_hostile_upload_is_a_friendly_error_and_the_app_keeps_working(tmp_path, name, data, fragments):
    at = model_app()
    t0 = time.perf_counter()
    at = _upload(at, name, data())
    assert time.perf_counter() - t0 < 30  # refused from the spec, not after building gigabytes
    _one_error(at, name, *fragments)
    # the same session still takes a good file
    at = _upload(at, "good.safetensors", _good_file(tmp_path))
    assert not at.exception and not at.error, _texts(at.error)
    assert any("Loaded good.safetensors" in s for s in _texts(at.success))
