"""End to end: the real app (`streamlit run app/main.py`) driven in a real browser.

Playwright drives Debian's chromium (/usr/bin/chromium; never `playwright install`, which
downloads).  Screenshots land in docs/screenshots/.  Run alone with `pytest -m e2e`.
"""
from __future__ import annotations

import contextlib
import os
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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
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
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


@contextlib.contextmanager
def browser_page():
    """A fresh page in Debian's chromium (fresh profile), closed afterwards."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: install it with "
                    "`apt-get install -y chromium chromium-driver` (do not run `playwright install`).")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with tempfile.TemporaryDirectory(prefix="dsv_chromium_") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
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
    page.wait_for_timeout(800)  # relayout, and plotly's drawing
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / name))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_synthesize_page_runs_and_shows_results(server: Server) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(f"{server.url}/synthesize")
        run = page.get_by_role("button", name="Run synthesis")
        run.wait_for()
        # Keep two classes: remove the other eight tags of the multiselect.
        for c in range(2, 10):
            page.get_by_role("button", name=f"Remove {c}", exact=True).click()
            _settle(page)
        _set_number(page, "Images per class", 2)
        _set_number(page, "Steps", 40)
        expect(page.get_by_text("4 candidates x 40 steps on cpu")).to_be_visible()
        run.click()
        expect(page.get_by_text("Trust reading:")).to_be_visible()
        _settle(page)
        main = page.get_by_test_id("stMain")
        expect(main.get_by_text("4 candidates, 40 steps in")).to_be_visible()
        # The grid: one caption per candidate, with its class and multiplier.
        captions = page.get_by_test_id("stImageCaption")
        expect(captions).to_have_count(4)
        texts = captions.all_inner_texts()
        assert sum(t.startswith("0 · λ=") for t in texts) == 2, texts
        assert sum(t.startswith("1 · λ=") for t in texts) == 2, texts
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        expect(page.get_by_text("Traceback")).to_have_count(0)
        _shot(page, "synthesize.png", height=1500)


def test_model_page_upload_of_a_non_model_shows_an_error(server: Server) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
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


def test_edit_page_moves_an_image_to_another_class(server: Server) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(f"{server.url}/edit")
        run = page.get_by_role("button", name="Run edit")
        run.wait_for()
        expect(page.get_by_text("The model predicts")).to_be_visible()
        _set_number(page, "Steps", 30)
        run.click()
        expect(page.get_by_role("heading", name="Edited toward")).to_be_visible()
        _settle(page)
        expect(page.get_by_text("went from")).to_be_visible()
        expect(page.get_by_test_id("stImageCaption").filter(has_text="after:")).to_have_count(1)
        _shot(page, "edit.png", height=1500)


def test_ranking_page_fits_lambdas_and_shows_the_selected_images(server: Server) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
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


def test_server_logged_no_traceback(server: Server) -> None:
    """Runs last: nothing above made the app fail, not even in a way the page caught and showed."""
    out = server.output()
    assert "You can now view your Streamlit app" in out
    assert "Traceback" not in out, out[-3000:]
