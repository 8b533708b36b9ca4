"""The Streamlit app, page by page, with ``streamlit.testing.v1.AppTest`` and the shipped model.

Each page is a plain function; :func:`_page_script` runs one as a stand-alone app, and
``app/main.py`` is tested as a whole for the navigation and the model page.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

import dsvlib  # noqa: E402
from app import common, jobs  # noqa: E402
from dsvlib import ModelFileError  # noqa: E402

MAIN = ROOT / "app" / "main.py"
MODEL = "mnist_convnet"
TIMEOUT = 180  # generous: the CI machine has 2 shared cores


def _page_script(root: str, module: str) -> None:
    """Stand-alone script body for AppTest.from_function: run one page function."""
    import importlib
    import sys

    if root not in sys.path:
        sys.path.insert(0, root)
    mod = importlib.import_module(f"pages.{module}")
    getattr(mod, f"{module}_page")()


def page_app(module: str) -> AppTest:
    return AppTest.from_function(_page_script, args=(str(ROOT), module), default_timeout=TIMEOUT)


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _texts(at.error)


@pytest.fixture(scope="module")
def mnist_model():
    return dsvlib.load_model(MODEL)


# --------------------------------------------------------------------------- every page renders


def test_main_app_renders_the_model_page_with_the_card() -> None:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT).run()
    _no_failure(at)
    assert _texts(at.title) == ["DSV Studio"]
    assert f"Model: {MODEL}" in _texts(at.header)
    assert at.sidebar.selectbox[0].value == MODEL
    assert set(dsvlib.default_models()) <= set(at.sidebar.selectbox[0].options)
    card = dsvlib.load_card(MODEL)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test accuracy"] == f"{card['test_accuracy']:.1%}"
    assert metrics["Stationarity cos"] == f"{card['stationarity_cosine']:.2f}"
    trust = [t for t in _texts(at.info) + _texts(at.success) + _texts(at.warning) if "Trust:" in t]
    assert len(trust) == 1 and f"{card['stationarity_cosine']:.2f}" in trust[0]
    assert any(d.proto.label.startswith("Download the model's spec and card") for d in at.get("download_button"))


def test_model_summary_download_names_the_weights(mnist_model) -> None:
    from dsvlib.export import model_fingerprint
    from pages.model import _model_summary

    model, spec = mnist_model
    card = dsvlib.load_card(MODEL)
    active = common.ActiveModel(label=MODEL, model=model, spec=spec, card=card, device="cpu")
    summary = json.loads(_model_summary(active, card))
    assert summary["model_fingerprint"] == model_fingerprint(model)
    assert summary["spec"]["arch"] == spec.arch and summary["card"]["test_accuracy"] == card["test_accuracy"]
    assert summary["parameters"] == sum(p.numel() for p in model.parameters()) and summary["card_source"] == "shipped"


@pytest.mark.parametrize("module, title", [
    ("model", "DSV Studio"),
    ("synthesize", "Synthesize deep support vectors"),
    ("selection", "Rank real images by λ"),
    ("edit", "Edit an image toward a class"),
])
def test_each_page_renders(module: str, title: str) -> None:
    at = page_app(module).run()
    _no_failure(at)
    assert _texts(at.title) == [title]
    assert at.sidebar.selectbox[0].value == MODEL


def test_shortcut_model_shows_its_shortcut_audit() -> None:
    if "shortcut_convnet" not in dsvlib.default_models():
        pytest.skip("shortcut_convnet is not shipped in this checkout")
    at = page_app("model").run()
    at.sidebar.selectbox[0].select("shortcut_convnet").run()
    _no_failure(at)
    assert "Model: shortcut_convnet" in _texts(at.header)
    assert any("Planted shortcut" in t and "triangle" in t for t in _texts(at.warning))


# --------------------------------------------------------------------------- jobs


@pytest.fixture(autouse=True)
def fresh_jobs():
    """Every AppTest shares one session id, so each test starts from an empty job registry (and
    stops whatever a failed test left running)."""
    reg = jobs.registry()
    for owner in reg.owners():
        reg.forget(owner)
    yield


def _all_jobs(kind: str | None = None) -> list:
    reg = jobs.registry()
    return sorted((j for o in reg.owners() for j in reg.jobs(o, kind)), key=lambda j: j.id)


def last_job(kind: str):
    found = _all_jobs(kind)
    assert found, f"no {kind} job was started"
    return found[-1]


def finish(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Rerun the page (as its polling fragment would) until no job is queued or running, then once
    more so that the page shows the result."""
    deadline = time.monotonic() + timeout
    while any(j.active for j in _all_jobs()):
        assert time.monotonic() < deadline, "a job did not finish in time"
        time.sleep(0.2)
        at.run()
    return at.run()


def _custom(at: AppTest, classes: list[str], per_class: int, steps: int, model: str = MODEL) -> AppTest:
    at.radio(key="synth_preset").set_value("custom").run()
    at.multiselect(key=f"synth_classes:{model}").set_value(classes)
    at.number_input(key="synth_per_class").set_value(per_class)
    at.number_input(key="synth_steps").set_value(steps)
    return at.run()


# --------------------------------------------------------------------------- synthesize


def test_synthesize_page_run_produces_results_and_a_download() -> None:
    at = _custom(page_app("synthesize").run(), ["3", "7"], 1, 5)
    assert any("2 candidates x 5 steps" in c and "Estimated time: about" in c for c in _texts(at.caption))
    # the digits partial recipe has its own cosine line for the coarse view: the caption says when it acts
    estimate = next(c for c in _texts(at.caption) if "Estimated time: about" in c)
    assert "coarse_below 0.55 instead of 0.6" in estimate and "Under 0.6, or where" not in estimate
    assert "Under 0.55 in a run that started again (see below), or where the model then reads at least 70 %" in estimate
    # what config_for chose for this model, in words (the shipped model has no BatchNorm)
    assert any(c.startswith("Defaults for this model: grey input") and "no BatchNorm" in c for c in _texts(at.caption))
    at.button(key="synth_run").click().run()
    finish(at)
    _no_failure(at)
    job = last_job("synthesize")
    result = job.result
    assert job.status == "done" and job.started is not None
    assert tuple(result.images.shape) == (2, 1, 28, 28)
    assert result.labels.tolist() == [3, 7] and result.steps_run == 5
    assert 0.0 <= float(result.images.min()) and float(result.images.max()) <= 1.0
    assert "Result" in _texts(at.subheader)
    assert any("2 candidates, 5 steps in" in c for c in _texts(at.caption))
    captions = [c for img in at.image for c in img.captions if " · p=" in c]  # the result grid
    assert len(captions) == 2
    assert captions[0].startswith("3 · λ=") and captions[1].startswith("7 · λ=")
    # "Why is this DSV its class": one attribution map per DSV of the chosen class (3 here).
    why = [c for img in at.image for c in img.captions if " · p=" not in c and "λ=" in c]
    assert why == [captions[0].rsplit(" · p=", 1)[0]]
    trust = [t for t in _texts(at.info) + _texts(at.success) + _texts(at.warning) if "Trust reading:" in t]
    assert trust == [f"**Trust reading:** {result.trust['reading']}"]
    assert len(at.get("plotly_chart")) == 1
    # The take-away: a zip whose PNGs are the run's images and whose metrics name the model.
    with zipfile.ZipFile(io.BytesIO(job.params["zip"])) as zf:
        pngs = sorted(n for n in zf.namelist() if n.startswith("images/"))
        meta = json.loads(zf.read("metrics.json"))
    assert len(pngs) == 2 and meta["meta"]["model"] == MODEL
    assert [r["lambda"] for r in meta["rows"]] == pytest.approx(result.lambdas.tolist(), abs=1e-6)
    assert any(d.proto.label.startswith("Download the DSVs") for d in at.get("download_button"))
    # The run leaves the cached model exactly as found.
    model, _ = common.load_default_model(MODEL, "cpu")
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_synthesize_page_stop_keeps_a_partial_result_and_widgets_do_not_lose_the_run() -> None:
    at = _custom(page_app("synthesize").run(), ["1"], 1, 5000)
    at.button(key="synth_run").click().run()
    job = last_job("synthesize")
    deadline = time.monotonic() + TIMEOUT
    while job.latest.get("step", 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Touching a widget reruns the script; the run goes on and Generate stays locked meanwhile.
    at.number_input(key="synth_seed").set_value(5).run()
    assert job.active and last_job("synthesize") is job
    assert at.button(key="synth_run").disabled
    at.button(key=f"stop_{job.id}").click().run()
    finish(at)
    _no_failure(at)
    assert job.status == "stopped" and 3 <= job.result.steps_run < 5000
    assert job.stop_latency is not None and job.stop_latency < 5.0  # the bench measures the real latency
    assert any("partial result" in w for w in _texts(at.warning))
    assert not at.button(key="synth_run").disabled


def test_synthesize_page_history_compares_two_runs_and_retrains_a_student() -> None:
    at = _custom(page_app("synthesize").run(), ["0", "1"], 1, 3)
    at.button(key="synth_run").click().run()
    finish(at)
    at.number_input(key="synth_seed").set_value(1).run()
    at.button(key="synth_run").click().run()
    finish(at)
    _no_failure(at)
    assert "Run history (this browser session)" in _texts(at.subheader)
    table = at.dataframe[0].value
    assert len(table) == 2 and list(table["candidates"]) == [2, 2]
    assert at.selectbox(key="cmp_a").value != at.selectbox(key="cmp_b").value
    run = last_job("synthesize")
    at.button(key=f"distill_{run.id}").click().run()
    finish(at)
    _no_failure(at)
    student = last_job("distill")
    acc, n_test, _ = student.result
    assert student.status == "done" and n_test == len(common.bundled_dataset("mnist:test"))
    metric = [m for m in at.metric if m.label.startswith("Student test accuracy")]
    assert metric and metric[0].value == f"{acc:.1%}"


def test_synthesize_page_soft_label_mixing() -> None:
    at = page_app("synthesize").run()
    at.selectbox(key=f"mix_a:{MODEL}").set_value("1")
    at.selectbox(key=f"mix_b:{MODEL}").set_value("7")
    at.slider(key="mix_delta").set_value(0.5)
    at.number_input(key="mix_count").set_value(1)
    at.number_input(key="mix_steps").set_value(3)
    at.button(key="mix_run").click().run()
    finish(at)
    _no_failure(at)
    res, _ = last_job("mix").result
    assert torch.allclose(res.targets[0, [1, 7]], torch.tensor([0.5, 0.5]))
    captions = [c for img in at.image for c in img.captions]
    assert len(captions) == 1 and captions[0].startswith("p(1)=") and "p(7)=" in captions[0]


def test_synthesize_page_shows_errors_instead_of_tracebacks(monkeypatch) -> None:
    import pages.synthesize as synth_page

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    at = page_app("synthesize").run()
    monkeypatch.setattr(synth_page, "synthesize", out_of_memory)
    at.button(key="synth_run").click().run()
    finish(at)
    assert not at.exception
    assert last_job("synthesize").status == "failed"
    assert len(at.error) == 1 and "ran out of memory" in at.error[0].value
    assert at.button(key="synth_run") and not at.button(key="synth_run").disabled  # still usable


def test_colour_model_synthesis_and_edit_run() -> None:
    """The shortcut model takes 3x32x32 colour images: the "natural" configuration and RGB display."""
    at = page_app("synthesize").run()
    at.sidebar.selectbox[0].select("shortcut_convnet").run()
    _custom(at, ["triangle"], 1, 2, model="shortcut_convnet")
    at.button(key="synth_run").click().run()
    finish(at)
    _no_failure(at)
    result = last_job("synthesize").result
    natural = dsvlib.default_config("natural")
    assert tuple(result.images.shape) == (1, 3, 32, 32)
    assert (result.config.init_mean, result.config.l1, result.config.tv) == (natural.init_mean, natural.l1, natural.tv)
    assert [c for img in at.image for c in img.captions][0].startswith("triangle · λ=")

    at = page_app("edit").run()
    at.sidebar.selectbox[0].select("shortcut_convnet").run()
    at.number_input(key="edit_steps").set_value(2)
    at.button(key="edit_run").click().run()
    finish(at)
    _no_failure(at)
    assert tuple(last_job("edit").result.edited.shape) == (1, 3, 32, 32)


# --------------------------------------------------------------------------- model upload


def test_upload_of_a_corrupt_file_shows_the_error_and_the_app_keeps_working() -> None:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT).run()
    at.file_uploader(key="model_upload").set_value(("broken.safetensors", b"\x00garbage" * 50, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    assert "broken.safetensors is not a model file" in at.error[0].value
    assert at.sidebar.selectbox[0].value == MODEL
    assert f"Model: {MODEL}" in _texts(at.header)
    at.run()  # a rerun shows the same outcome without loading again
    assert len(at.error) == 1 and "broken.safetensors" in at.error[0].value


def test_upload_of_a_dsvlib_file_becomes_the_active_model(tmp_path, mnist_model) -> None:
    model, spec = mnist_model
    path = dsvlib.save_model(model, spec, tmp_path / "mine.safetensors")
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT).run()
    at.file_uploader(key="model_upload").set_value(("mine.safetensors", path.read_bytes(), "application/octet-stream"))
    at.run()
    _no_failure(at)
    assert at.sidebar.selectbox[0].value == "mine.safetensors (uploaded)"
    assert "Model: mine.safetensors (uploaded)" in _texts(at.header)
    assert any("no model card" in t for t in _texts(at.info))
    uploaded = at.session_state[common.UPLOAD_KEY]["model"]
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(uploaded(x), model(x))
    # Without a card, the page measures one on the bundled data that fits: the same weights as the
    # shipped model, so the same test accuracy as its card.
    at.button(key="measure_card").click().run()
    _no_failure(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test accuracy"] == f"{dsvlib.load_card(MODEL)['test_accuracy']:.1%}"
    assert any("Trust:" in t for t in _texts(at.info) + _texts(at.success) + _texts(at.warning))


def test_upload_of_a_plain_state_dict_needs_and_takes_the_spec_form(tmp_path, mnist_model) -> None:
    model, spec = mnist_model
    buf = io.BytesIO()
    torch.save(model.net.state_dict(), buf)
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT).run()
    at.file_uploader(key="model_upload").set_value(("weights.pt", buf.getvalue(), "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "has no dsvlib spec" in at.error[0].value
    assert "Architecture for a plain state_dict" in at.error[0].value
    # The form's defaults describe the shipped MNIST ConvNet; only the mean/std differ.
    at.checkbox(key="spec_use").check()
    at.text_input(key="spec_mean").set_value(str(spec.mean[0]))
    at.text_input(key="spec_std").set_value(str(spec.std[0]))
    at.run()
    _no_failure(at)
    assert at.sidebar.selectbox[0].value == "weights.pt (uploaded)"
    uploaded = at.session_state[common.UPLOAD_KEY]["model"]
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(uploaded(x), model(x), atol=1e-6)


def test_model_from_upload_refuses_bad_files(mnist_model, tmp_path) -> None:
    with pytest.raises(ModelFileError, match="not a model file"):
        common.model_from_upload(b"hello world" * 10, "notes.safetensors")
    with pytest.raises(ModelFileError, match=r"file type '\.txt'"):
        common.model_from_upload(b"hello", "notes.txt")
    with pytest.raises(ModelFileError, match="empty"):
        common.model_from_upload(b"", "empty.pt")

    class Payload:  # a pickle that would run code on load
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"w": Payload()}, buf)
    with pytest.raises(ModelFileError, match="refused"):
        common.model_from_upload(buf.getvalue(), "evil.pth")
    model, spec = mnist_model
    good = dsvlib.save_model(model, spec, tmp_path / "m.safetensors").read_bytes()
    loaded, loaded_spec = common.model_from_upload(good, "../../etc/m.safetensors")
    assert loaded_spec == spec


# --------------------------------------------------------------------------- edit


def test_image_from_upload(mnist_model) -> None:
    from PIL import Image

    _, spec = mnist_model
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 255, np.uint8)).save(buf, format="PNG")
    x = common.image_from_upload(buf.getvalue(), "white.png", spec)
    assert tuple(x.shape) == (1, 1, 28, 28) and torch.allclose(x, torch.ones_like(x))
    with pytest.raises(ValueError, match="notes.png is not an allowed image"):
        common.image_from_upload(b"just some text", "notes.png", spec)


def test_edit_page_upload_of_a_non_image_shows_an_error() -> None:
    at = page_app("edit").run()
    at.radio(key="edit_source").set_value("Upload an image").run()
    at.file_uploader(key="edit_upload").set_value(("photo.png", b"%PDF-1.4 not an image", "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and "photo.png is not an allowed image: its bytes are PDF" in at.error[0].value


def test_edit_page_run_shows_before_and_after() -> None:
    at = page_app("edit").run()
    at.slider(key="edit_index").set_value(3)
    at.selectbox(key=f"edit_target:{MODEL}").set_value("8")
    at.number_input(key="edit_steps").set_value(4)
    at.button(key="edit_run").click().run()
    finish(at)
    _no_failure(at)
    job = last_job("edit")
    res = job.result
    test = common.bundled_dataset("mnist:test")
    assert torch.equal(res.original, test.images[3:4])
    assert tuple(res.edited.shape) == (1, 1, 28, 28)
    assert not torch.equal(res.edited, res.original)
    assert job.params["target"] == 8 and abs(float(res.probs_after.sum()) - 1) < 1e-4
    assert "Edited toward '8'" in _texts(at.subheader)
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith("before:") for c in captions) and any(c.startswith("after:") for c in captions)
    assert len(at.get("plotly_chart")) == 1
    assert [c for c in captions if "toward 8" in c] == ["before: toward 8", "after: toward 8"]  # attributions
    at.radio(key="edit_attribution").set_value("gradcam").run()
    _no_failure(at)
    with zipfile.ZipFile(io.BytesIO(job.params["zip"])) as zf:
        assert sorted(zf.namelist()) == sorted(["images/0000_before.png", "images/0001_after.png",
                                                "images/0002_difference.png", "grid.png", "metrics.csv",
                                                "metrics.json", "README.txt"])


def test_prepare_upload_flags_an_ink_on_paper_drawing_and_inverts_it(mnist_model) -> None:
    """A black digit drawn on white paper, 60x40: the model's MNIST digits are light on dark."""
    from PIL import Image

    _, spec = mnist_model
    arr = np.full((40, 60), 255, np.uint8)
    arr[8:32, 26:34] = 0  # a dark vertical stroke
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    prepared = common.prepare_upload(buf.getvalue(), "drawing.png", spec)
    assert prepared.polarity_mismatch
    text = "; ".join(prepared.notes)
    assert "resized from 60x40 to 28x28" in text and "aspect ratio" in text and "colours inverted" in text
    assert float(prepared.image[0, 0, 0, 0]) < 0.1 and float(prepared.image.max()) > 0.9  # dark paper now
    kept = common.prepare_upload(buf.getvalue(), "drawing.png", spec, invert=False)
    assert float(kept.image[0, 0, 0, 0]) > 0.9 and "not inverted" in "; ".join(kept.notes)
    arr2 = 255 - arr[:, 16:44]  # already light on dark and square: nothing to say about polarity
    buf2 = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr2)[6:34]).save(buf2, format="PNG")
    same = common.prepare_upload(buf2.getvalue(), "ok.png", spec)
    assert not same.polarity_mismatch and same.notes == ()


# --------------------------------------------------------------------------- selection


def test_selection_page_ranks_images_by_lambda() -> None:
    at = page_app("selection").run()
    at.slider(key="sel_n:mnist:train").set_value(100)
    at.number_input(key="sel_steps").set_value(30)
    at.button(key="sel_run").click().run()
    finish(at)
    _no_failure(at)
    job = last_job("rank")
    (res, _), data = job.result, job.params["data"]
    assert len(data) == 100 and tuple(res.lambdas.shape) == (100,) and len(res.class_lambda_sum) == 10
    assert torch.equal(res.labels, data.labels)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images with λ > 0"] == f"{int((res.lambdas > 0).sum())} / 100"
    assert metrics["Stationarity cos, fitted λ"] == f"{res.cosine:.3f}"
    assert res.cosine >= res.uniform_cosine - 1e-6  # fitting λ can only help
    assert "Correlation Σλ vs accuracy" in metrics
    assert len(at.get("plotly_chart")) == 1
    assert len(at.tabs) == 2
    # The highest-λ tab shows, for class 0 first, its 5 highest-λ images in decreasing order.
    shown = [c for img in at.tabs[0].image for c in img.captions]
    assert len(shown) == 5 * 10  # every class has at least 5 of the 100 images
    values = [float(c.split("λ=")[1].split(" ")[0]) for c in shown[:5] if "tied" not in c]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(float(res.lambdas[data.labels == 0].max()), rel=1e-2, abs=1e-6)
    # Ties at λ = 0 are said to be ties, not ranked.
    zeros = int((res.lambdas <= 0).sum())
    assert zeros > 0  # 100 images and 30 steps: most multipliers are exactly 0
    low = [c for img in at.tabs[1].image for c in img.captions]
    assert any(c.startswith("λ = 0 (tied)") for c in low)
    assert any("tied at λ = 0" in m for m in _texts(at.markdown))
    # The ranking's take-away: every image, in λ order.
    with zipfile.ZipFile(io.BytesIO(job.params["zips"]["lambda"])) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("metrics.csv").decode())))
    assert len(rows) == 100
    lams = [float(r["lambda"]) for r in rows]
    assert lams == sorted(lams, reverse=True)
    # Ranking by alpha re-labels the page without fitting again.
    at.radio(key="sel_by").set_value("alpha").run()
    _no_failure(at)
    assert "Images with α > 0" in {m.label for m in at.metric}
    assert last_job("rank") is job


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("exc, words", [
    (torch.OutOfMemoryError("CUDA out of memory"), "ran out of memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9e12 bytes"), "ran out of memory"),
    (FloatingPointError("the DeepKKT loss became nan at step 3"), "diverged (NaN or inf)"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x10 and 20x3)"), "shape or device mismatch"),
    (ModelFileError("x.pt is not a model file"), "x.pt is not a model file"),
    (KeyError("boom"), "unexpected KeyError"),
])
def test_error_message(exc: Exception, words: str) -> None:
    msg = common.error_message(exc, "Synthesis")
    assert words in msg and "Traceback" not in msg


def test_tile_layout() -> None:
    x = torch.zeros(5, 1, 28, 28)
    x[4] = 1.0
    grid = common.tile(x, ncol=3, pad=2, px=56)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 58 + 2, 3 * 58 + 2)
    assert grid[60:116, 60:116].min() == 255  # the 5th image (white) is row 2, column 2
    assert grid[2:58, 2:58].max() == 0


def test_the_cpu_label_names_the_threads_runs_use_whichever_thread_asks(monkeypatch) -> None:
    # torch's thread count is per thread: the label must not depend on which thread renders it
    import threading

    monkeypatch.setenv("DSV_TORCH_THREADS", "3")
    seen: list[str] = []
    worker = threading.Thread(target=lambda: (torch.set_num_threads(1), seen.append(common.device_label("cpu"))))
    worker.start()
    worker.join()
    assert seen == [common.device_label("cpu")] == ["CPU (3 threads for runs)"]
    monkeypatch.delenv("DSV_TORCH_THREADS")
    assert common.run_threads() == max(1, (os.cpu_count() or 1) - 1)
