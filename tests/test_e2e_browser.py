"""End to end: the real app (`streamlit run app/main.py`) driven in a real browser.

Playwright drives Debian's chromium (/usr/bin/chromium; never `playwright install`, which
downloads).  Screenshots land in docs/screenshots/.  Run alone with `pytest -m e2e`.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Two pages open at once (two users) must both keep polling: no throttling of background pages.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
TIMEOUT_MS = 90_000  # a run on 2 shared CPU cores can be slow; the happy path takes seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The real app served by `streamlit run` in a subprocess; killed afterwards."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="dsv_streamlit_", suffix=".log", delete=False)
    # sys.executable: the interpreter running the tests, i.e. the project's virtual environment
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "DSV_SESSION_GRACE_S": "2"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not answer on {url} within 60 s:\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, Path(log.name))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, started once for the module; each test opens fresh contexts in it."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: install it with "
                    "`apt-get install -y chromium chromium-driver` (do not run `playwright install`).")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def new_page(browser):
    """A page in a fresh browser context (own cookies and storage: a separate Streamlit session)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
    finally:
        ctx.close()


def _settle(page) -> None:
    """Wait until the script run triggered by the last interaction has finished."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    _settle(page)


def _shot(page, name: str, height: int = 1000) -> None:
    """A picture of what the user sees; Streamlit scrolls inside its main block, so a long page
    needs a tall window rather than ``full_page``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": height})
    page.mouse.move(0, height - 1)  # no hover tooltip in the picture
    page.wait_for_timeout(800)  # relayout, and plotly's drawing
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / name))
    page.set_viewport_size({"width": 1400, "height": 1000})


# --------------------------------------------------------------------------- timings


TIMINGS = ROOT / "bench" / "results" / "studio.json"


def _record(name: str, seconds: float) -> None:
    """Timings measured in the browser.  Under bench/bench_studio.py (DSV_TIMINGS_APPEND=1) they are
    added to bench/results/studio.json, which bench/write_benchmarks_md.py reports in BENCHMARKS.md;
    a plain test run leaves that file alone.  No test asserts on a time."""
    import json
    import platform

    if os.environ.get("DSV_TIMINGS_APPEND") != "1":
        return
    saved = json.loads(TIMINGS.read_text()).get("timings", {}) if TIMINGS.exists() else {}
    saved.setdefault(name, []).append(round(float(seconds), 3))
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "command": os.environ.get("DSV_TIMINGS_COMMAND", "python bench/bench_studio.py"),
        "timings": saved,
    }, indent=2) + "\n")


def _nav(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()


def _preset(page, label: str) -> None:
    page.get_by_test_id("stRadio").filter(has_text="Preset").get_by_text(label, exact=True).click()
    _settle(page)


# --------------------------------------------------------------------------- synthesize


def test_generate_survives_a_page_switch_stops_and_downloads(server: Server, browser) -> None:
    """The benchmarked recipe (a minute or more on 2 cores): first preview, a page switch and back
    while it runs, Stop with a partial result, and the zip download."""
    import io
    import json
    import re
    import zipfile

    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/synthesize")
        generate = page.get_by_role("button", name="Generate")
        generate.wait_for()
        _preset(page, "Benchmarked recipe")
        expect(page.get_by_text("100 candidates x 300 steps on cpu")).to_be_visible()
        expect(page.get_by_text("Estimated time: about")).to_be_visible()
        t0 = time.monotonic()
        generate.click()
        preview = page.get_by_test_id("stImageCaption").filter(has_text="live preview")
        preview.first.wait_for()
        _record("generate_to_first_preview_s", time.monotonic() - t0)
        expect(page.get_by_role("button", name="Stop")).to_be_visible()

        # Switch page while it runs, come back: still running, further on.
        _nav(page, "Model")
        expect(page.get_by_role("heading", name="Model: mnist_convnet")).to_be_visible()
        page.wait_for_timeout(1500)
        _nav(page, "Synthesize")
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        bar = page.get_by_test_id("stProgress")
        expect(bar).to_contain_text(re.compile(r"step \d+/300"))
        expect(page.get_by_role("button", name="Generate")).to_be_disabled()
        expect(page.get_by_text("100 candidates x 300 steps on cpu")).to_be_visible()  # the form kept its preset
        _shot(page, "synthesize_running.png", height=1300)

        t_stop = time.monotonic()
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_text("this is a partial result")).to_be_visible()
        _record("stop_click_to_partial_result_shown_s", time.monotonic() - t_stop)
        status = page.get_by_text(re.compile(r"ended [0-9.]+ s after Stop")).first.inner_text()
        _record("stop_request_to_run_end_s", float(re.search(r"ended ([0-9.]+) s after Stop", status).group(1)))
        _settle(page)
        captions = page.get_by_test_id("stImageCaption").filter(has_text=" · p=")  # the result grid
        expect(captions).to_have_count(100)
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()

        with page.expect_download() as dl:
            page.get_by_role("button", name=re.compile("Download the DSVs")).click()
        data = Path(dl.value.path()).read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            meta = json.loads(zf.read("metrics.json"))
        assert sum(n.startswith("images/") and n.endswith(".png") for n in names) == 100
        assert {"grid.png", "metrics.csv", "metrics.json", "README.txt"} <= set(names)
        assert meta["meta"]["model"] == "mnist_convnet" and meta["meta"]["stopped"] is True
        assert meta["meta"]["steps_run"] < 300
        expect(page.get_by_text("Traceback")).to_have_count(0)
        _shot(page, "synthesize_stopped.png", height=1800)


def _quick_look(page, timing: str, shot: str) -> None:
    """Press Generate with the Quick look preset, time it to the finished grid, and check the grid."""
    from playwright.sync_api import expect

    t0 = time.monotonic()
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("Trust reading:")).to_be_visible()
    _record(timing, time.monotonic() - t0)
    _settle(page)
    expect(page.get_by_text("(extended past")).to_have_count(0)  # Quick look never extends its run
    expect(page.get_by_test_id("stImageCaption").filter(has_text=" · p=")).to_have_count(20)  # the grid
    expect(page.get_by_text("Traceback")).to_have_count(0)
    # Square thumbnails: rounded corners would hide a mark in a corner (the shortcut model's).
    radii = page.eval_on_selector_all("[data-testid='stImage'] img", "els => els.map(e => getComputedStyle(e).borderRadius)")
    assert radii and set(radii) == {"0px"}, radii
    _shot(page, shot, height=1700)


def test_quick_look_end_to_end(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/synthesize")
        generate = page.get_by_role("button", name="Generate")
        generate.wait_for()
        expect(page.get_by_text("20 candidates x 150 steps on cpu")).to_be_visible()  # Quick look is the default
        expect(page.get_by_text("Estimated time")).to_be_visible()
        expect(page.get_by_text("the run goes on for")).to_have_count(0)  # and never extends
        _quick_look(page, "quick_look_click_to_result_s", "synthesize.png")


def test_two_browser_sessions_run_at_once(server: Server, browser) -> None:
    """Two users press Generate together: the runs share the CPU through the queue; both finish."""
    from playwright.sync_api import expect

    with new_page(browser) as first, new_page(browser) as second:
        for page in (first, second):
            page.goto(f"{server.url}/synthesize")
            page.get_by_role("button", name="Generate").wait_for()
        for page in (first, second):
            page.get_by_role("button", name="Generate").click()
        queued = second.get_by_text("Queued:")
        running = second.get_by_role("button", name="Stop")
        expect(queued.or_(running).first).to_be_visible()
        for i, page in enumerate((first, second)):
            try:
                expect(page.get_by_text("Trust reading:")).to_be_visible()
            except AssertionError:
                first.screenshot(path="/tmp/first.png"); second.screenshot(path="/tmp/second.png")
                raise
            _settle(page)
            expect(page.get_by_test_id("stImageCaption").filter(has_text=" · p=")).to_have_count(20)  # the grid
            expect(page.get_by_text("Traceback")).to_have_count(0)


def _trained_odd_net_onnx(path: Path) -> Path:
    """A classifier of an architecture no registry has (conv + BatchNorm + GELU, a residual
    depthwise block, max-pool, linear head), trained briefly on the bundled digits and exported."""
    from dsvlib import Classifier
    from dsvlib.data import load_dataset
    from dsvlib.train import FitConfig, fit
    from test_onnx import MEAN, STD, OddNet, export, onnx_spec

    torch_manual_seed = __import__("torch").manual_seed
    torch_manual_seed(0)
    model = Classifier(OddNet(), onnx_spec(mean=MEAN, std=STD))
    train = load_dataset("mnist:train")
    fit(model, train.images, train.labels, FitConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05,
                                                     weight_decay=5e-4, schedule="cosine"), seed=0)
    return export(model.net.eval(), path)


def test_onnx_upload_of_an_unregistered_architecture_runs_a_quick_look(server: Server, browser, tmp_path) -> None:
    from playwright.sync_api import expect

    onnx_file = _trained_odd_net_onnx(tmp_path / "oddnet.onnx")
    with new_page(browser) as page:
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Model: mnist_convnet")).to_be_visible()
        page.get_by_text("Architecture for a plain state_dict or an ONNX graph").click()
        page.get_by_text("My file has no dsvlib metadata").click()
        _settle(page)
        page.get_by_test_id("stMain").get_by_role("combobox", name="Architecture").click()
        # typing filters the long list (registry + torchvision models): the dropdown renders only the
        # options in view, so an option further down may not exist in the page to click; and the popover
        # can open partly outside a short viewport, so the filtered, focused option is chosen with Enter
        page.keyboard.type("ONNX graph")
        expect(page.get_by_role("option", name="ONNX graph")).to_have_attribute("data-focused", "true")
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("stMain").get_by_role("combobox", name="Architecture")).to_have_value("ONNX graph")
        _settle(page)
        page.locator("input[type=file]").set_input_files(str(onnx_file))
        expect(page.get_by_text("Loaded oddnet.onnx")).to_be_visible()
        expect(page.get_by_role("heading", name="Model: oddnet.onnx (uploaded)")).to_be_visible()
        _settle(page)
        _shot(page, "model_onnx_upload.png", height=1400)
        _nav(page, "Synthesize")
        generate = page.get_by_role("button", name="Generate")
        generate.wait_for()
        expect(page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")).to_have_value(
            "oddnet.onnx (uploaded)")
        _quick_look(page, "quick_look_onnx_click_to_result_s", "synthesize_onnx.png")


def test_closing_the_tab_cancels_its_run(server: Server, browser) -> None:
    """A run whose browser session ends is stopped by the server (after a short grace period that
    lets a reconnecting tab keep it), so an abandoned tab does not hold the CPU."""
    from playwright.sync_api import expect

    before = server.output().count("browser session ended: stopped job")
    with new_page(browser) as page:
        page.goto(f"{server.url}/synthesize")
        page.get_by_role("button", name="Generate").wait_for()
        _preset(page, "Benchmarked recipe")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
    deadline = time.monotonic() + 60
    while server.output().count("browser session ended: stopped job") <= before:
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.5)
    assert "Benchmarked recipe" in server.output().rsplit("browser session ended", 1)[1]


def test_model_page_upload_of_a_non_model_shows_an_error(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Model: mnist_convnet")).to_be_visible()
        import dsvlib
        from app.common import cosine_strength

        expected = cosine_strength(dsvlib.load_card("mnist_convnet")["stationarity_cosine"])
        expect(page.get_by_text(f"Trust: {expected}.")).to_be_visible()
        # The card's metrics and the spec table are drawn (not left as loading placeholders).
        card = dsvlib.load_card("mnist_convnet")
        expect(page.get_by_test_id("stMetricValue").first).to_have_text(f"{card['test_accuracy']:.1%}")
        expect(page.get_by_test_id("stTable").get_by_text("convnet", exact=True)).to_be_visible()
        _settle(page)
        _shot(page, "model.png")
        page.locator("input[type=file]").set_input_files(
            files=[{"name": "notes.safetensors", "mimeType": "application/octet-stream",
                    "buffer": b"these are my notes, not a model\n" * 4}])
        alert = page.get_by_test_id("stAlertContentError")
        expect(alert).to_contain_text("notes.safetensors is not a model file")
        _settle(page)
        _shot(page, "model_upload_error.png", height=1700)
        # The app keeps working: the shipped model is still active and other pages open.
        expect(page.get_by_role("heading", name="Model: mnist_convnet")).to_be_visible()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Edit").click()
        expect(page.get_by_role("heading", name="Edit an image toward a class")).to_be_visible()
        expect(page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")).to_have_value("mnist_convnet")
        expect(page.get_by_text("Traceback")).to_have_count(0)


def test_edit_page_moves_an_image_to_another_class(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/edit")
        run = page.get_by_role("button", name="Run edit")
        run.wait_for()
        expect(page.get_by_text("The model predicts")).to_be_visible()
        _set_number(page, "Steps", 30)
        run.click()
        expect(page.get_by_role("heading", name="Edited toward")).to_be_visible()
        _settle(page)
        expect(page.get_by_text("went from")).to_be_visible()
        expect(page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^after: \S+ \(\d+%\)$"))).to_have_count(1)
        expect(page.get_by_test_id("stImageCaption").filter(has_text="toward")).to_have_count(2)  # attributions
        _shot(page, "edit.png", height=1500)


def test_ranking_page_fits_lambdas_and_shows_the_selected_images(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/ranking")
        run = page.get_by_role("button", name="Fit λ")
        run.wait_for()
        _set_number(page, "Steps (at most)", 100)
        run.click()
        expect(page.get_by_role("heading", name="Result on 500 images of mnist:train")).to_be_visible()
        _settle(page)
        expect(page.get_by_text("Stationarity cos, fitted λ")).to_be_visible()
        expect(page.get_by_text("Highest λ (the selected DSVs)")).to_be_visible()
        # 10 classes x 5 images in the visible tab, each captioned with its lambda
        captions = page.get_by_test_id("stTabPanel").first.get_by_test_id("stImageCaption")
        expect(captions).to_have_count(50)
        assert all(t.startswith("λ=") for t in captions.all_inner_texts())
        expect(page.get_by_text("Traceback")).to_have_count(0)
        _shot(page, "ranking.png", height=1800)


def test_classroom_page_trains_synthesises_and_steps_through(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/classroom")
        expect(page.get_by_role("heading", name="Classroom: support vectors in 2-D")).to_be_visible()
        page.get_by_role("button", name="Train and synthesise").click()
        step = page.get_by_role("button", name="Step ▶")
        step.wait_for()
        _settle(page)
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        page.get_by_role("button", name="Start").click()
        _settle(page)
        expect(page.locator(".gtitle").filter(has_text="DSVs from random points · step 0")).to_have_count(1)
        step.click()
        _settle(page)
        expect(page.locator(".gtitle").filter(has_text="DSVs from random points · step 10")).to_have_count(1)
        expect(page.get_by_text("Traceback")).to_have_count(0)
        _shot(page, "classroom.png", height=1800)


def test_help_page_shows_the_equations(server: Server, browser) -> None:
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/help")
        expect(page.get_by_role("heading", name="Help")).to_be_visible()
        expect(page.locator(".katex").first).to_be_visible()
        expect(page.get_by_text("Traceback")).to_have_count(0)
        _shot(page, "help.png", height=1800)


def test_server_logged_no_traceback(server: Server) -> None:
    """Runs last: nothing above made the app fail, not even in a way the page caught and showed."""
    out = server.output()
    assert "You can now view your Streamlit app" in out
    assert "Traceback" not in out, out[-3000:]


def test_draw_and_watch_on_the_edit_page(server: Server, browser) -> None:
    """Paper Fig. 3 (top): strokes drawn by hand are read by the model, then edited like any image."""
    from playwright.sync_api import expect

    with new_page(browser) as page:
        page.goto(f"{server.url}/edit")
        page.get_by_test_id("stRadio").get_by_text("Draw").click()
        _settle(page)
        expect(page.get_by_text("Draw in the box")).to_be_visible()
        canvas = page.get_by_test_id("stMain").locator("canvas").last  # fabric.js: the top canvas takes the pointer
        canvas.wait_for()
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100
        # a "1": one vertical stroke down the middle of the box
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + 0.2 * box["height"])
        page.mouse.down()
        for k in range(1, 21):
            page.mouse.move(x, box["y"] + (0.2 + 0.03 * k) * box["height"])
        page.mouse.up()
        expect(page.get_by_text("The model predicts")).to_be_visible()
        _settle(page)
        expect(page.get_by_text("The model predicts 1 (")).to_be_visible()  # a vertical stroke reads as a 1
        expect(page.get_by_test_id("stImageCaption").filter(has_text="why '1'")).to_have_count(1)  # its attribution
        # the target starts at another class than the drawing's reading (a "1" toward "1" would be no edit)
        target = page.get_by_test_id("stMain").get_by_role("combobox", name="Target class")
        expect(target).not_to_have_value("1")
        _set_number(page, "Steps", 20)
        page.get_by_role("button", name="Run edit").click()
        expect(page.get_by_role("heading", name="Edited toward")).to_be_visible()
        _settle(page)
        _shot(page, "edit_draw.png", height=1500)
