"""The Help page runs on its own (no model) and shows the paper's equations."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from dsvlib.cards import trust_thresholds  # noqa: E402


def _help_script(root: str) -> None:
    import sys

    if root not in sys.path:
        sys.path.insert(0, root)
    from pages.help import help_page

    help_page()


def test_help_page_renders_title_equations_and_thresholds() -> None:
    at = AppTest.from_function(_help_script, args=(str(ROOT),), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Help"]
    latex = [e.value for e in at.latex]
    assert len(latex) >= 4
    assert any(r"\lambda_i \ge 0" in v for v in latex)  # dual feasibility
    assert any(r"\theta^* = -\sum" in v for v in latex)  # stationarity
    text = " ".join(m.value for m in at.markdown)
    t = trust_thresholds()
    assert f"cosine {t['strong']:.2f} or more" in text and f"cosine below {t['partial']:.2f}" in text
    assert "not kept" in text and "Fig. 2a" in text
