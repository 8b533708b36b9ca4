"""The Classroom page (pages/classroom.py) with ``streamlit.testing.v1.AppTest``: it renders, the
default demo runs as a job and draws its plotly figures with axis titles, and the step-through moves."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from app import jobs  # noqa: E402

TIMEOUT = 180  # generous: the CI machine has 2 shared cores


def _script(root: str) -> None:
    import sys

    if root not in sys.path:
        sys.path.insert(0, root)
    from pages.classroom import classroom_page

    classroom_page()


def _app() -> AppTest:
    return AppTest.from_function(_script, args=(str(ROOT),), default_timeout=TIMEOUT)


@pytest.fixture(autouse=True)
def fresh_jobs():
    reg = jobs.registry()
    for owner in reg.owners():
        reg.forget(owner)
    yield
    for owner in reg.owners():
        reg.forget(owner)


def _finish(at: AppTest) -> AppTest:
    reg = jobs.registry()
    deadline = time.monotonic() + TIMEOUT
    while any(j.active for o in reg.owners() for j in reg.jobs(o)):
        assert time.monotonic() < deadline, "the demo did not finish in time"
        time.sleep(0.2)
        at.run()
    return at.run()


def _no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _length(arr) -> int:
    """Entries of a plotly data array: a JSON list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(arr, dict) and "bdata" in arr:
        import base64

        import numpy as np

        return len(np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"])))
    return len(arr)


def _axis_title(layout: dict, axis: str) -> str:
    title = layout.get(axis, {}).get("title", {})
    return title.get("text", "") if isinstance(title, dict) else str(title)


def test_classroom_renders_before_any_run():
    at = _app().run()
    _no_failure(at)
    assert [t.value for t in at.title] == ["Classroom: support vectors in 2-D"]
    assert at.radio(key="toy_model").value == "mlp"
    assert at.selectbox(key="toy_data").value == "moons"
    assert not at.get("plotly_chart")  # nothing is drawn before the demo ran


def test_default_demo_draws_figures_and_steps_through():
    at = _app().run()
    at.button(key="toy_demo_run").click().run()
    _finish(at)
    _no_failure(at)
    figs = _figures(at)
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert len(figs) == 4, titles
    assert any("λ of every training point" in t for t in titles)
    for f in figs:
        lay = f["layout"]
        assert _axis_title(lay, "xaxis") and _axis_title(lay, "yaxis"), lay.get("title")
        assert lay["font"]["size"] >= 18
    traj = next(f for f in figs if f["layout"]["title"]["text"].startswith("DSVs from random points"))
    assert traj.get("frames"), "the trajectory figure carries plotly frames for Play"
    last = at.slider(key="toy_frame").value
    assert last == 200 and "step 200" in traj["layout"]["title"]["text"]
    # the caption reports a real, finished run
    assert any("training accuracy" in c.value and "finished in" in c.value for c in at.caption)

    at.button(key="toy_start_run").click().run()
    assert at.slider(key="toy_frame").value == 0
    at.button(key="toy_step_run").click().run()
    _no_failure(at)
    assert at.slider(key="toy_frame").value == 10
    traj = next(f for f in _figures(at) if f["layout"]["title"]["text"].startswith("DSVs from random points"))
    assert "step 10" in traj["layout"]["title"]["text"]
    ent = next(f for f in _figures(at) if f["layout"]["title"]["text"] == "Entropy of the DSVs")
    marker = next(d for d in ent["data"] if d.get("name") == "shown step")
    assert marker["x"] == [10]
    at.button(key="toy_back_run").click().run()
    assert at.slider(key="toy_frame").value == 0
    # the MLP's marker size can show alpha = lambda |dL/dz| instead of lambda
    at.radio(key="toy_score").set_value("alpha").run()
    _no_failure(at)
    titles = [f["layout"]["title"]["text"] for f in _figures(at)]
    assert "α of every training point" in titles and "λ of every training point" not in titles


def test_linear_model_shows_svc_against_lambda():
    pytest.importorskip("sklearn")
    at = _app().run()
    at.radio(key="toy_model").set_value("linear").run()
    at.selectbox(key="toy_data").set_value("blobs").run()
    at.slider(key="toy_steps").set_value(40).run()
    at.button(key="toy_demo_run").click().run()
    _finish(at)
    _no_failure(at)
    figs = _figures(at)
    support = next(f for f in figs if f["layout"]["title"]["text"].startswith("SVC support vectors"))
    names = [d.get("name", "") for d in support["data"]]
    assert any(n.startswith("SVC support vectors (") for n in names)
    assert any(n.startswith("DeepKKT λ > 0 (") for n in names)
    boxes = [s.value for s in at.success] + [w.value for w in at.warning]
    assert any("support vectors; DeepKKT selection:" in b for b in boxes)
    assert at.slider(key="toy_frame").value == 40


def _kept_script(root: str) -> None:
    """The page as app/main.py runs it: after keep_widget_values (the "toy_" keys are kept)."""
    import sys

    if root not in sys.path:
        sys.path.insert(0, root)
    from app.common import keep_widget_values
    from pages.classroom import classroom_page

    keep_widget_values()
    classroom_page()


def test_page_under_kept_widget_values_steps_and_keeps_settings():
    at = AppTest.from_function(_kept_script, args=(str(ROOT),), default_timeout=TIMEOUT).run()
    at.slider(key="toy_steps").set_value(40).run()
    at.slider(key="toy_per_class").set_value(3).run()
    at.button(key="toy_demo_run").click().run()
    _finish(at)
    _no_failure(at)
    assert at.slider(key="toy_frame").value == 40
    at.button(key="toy_start_run").click().run()
    at.button(key="toy_step_run").click().run()
    _no_failure(at)
    assert at.slider(key="toy_frame").value == 10
    traj = next(f for f in _figures(at) if f["layout"]["title"]["text"].startswith("DSVs from random points"))
    dsv = [d for d in traj["data"] if str(d.get("name", "")).startswith("DSV, class")]
    assert sum(_length(d["x"]) for d in dsv) == 6  # 3 per class, as chosen
    assert at.slider(key="toy_steps").value == 40
