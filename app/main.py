"""DSV Studio entry point: builds the navigation over the page functions, nothing else.

    streamlit run app/main.py
"""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on sys.path; the pages and dsvlib live one level up.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.common import keep_widget_values, run_threads, shown_errors  # noqa: E402
from pages import classroom, edit, model, selection, synthesize  # noqa: E402
from pages.help import help_page  # noqa: E402


def _cpu_threads() -> None:
    """Runs use all CPU cores but one: the server and the browser need a core to stay live, and
    PyTorch's thread team collapses when a core it counts on is busy (measured on 2 cores: a Quick
    look took 22 s with 2 threads beside one busy core, 8.7 s with 1: a one-off measurement, a script
    timing `synthesize` with the core kept busy by a shell loop).  DSV_TORCH_THREADS overrides."""
    import torch

    n = run_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def main() -> None:
    _cpu_threads()
    st.set_page_config(page_title="DSV Studio", page_icon=":material/blur_on:", layout="wide")
    page = st.navigation([
        st.Page(model.model_page, title="Model", icon=":material/model_training:", url_path="model", default=True),
        st.Page(synthesize.synthesize_page, title="Synthesize", icon=":material/auto_awesome:",
                url_path="synthesize"),
        st.Page(selection.selection_page, title="Lambda ranking", icon=":material/leaderboard:",
                url_path="ranking"),
        st.Page(edit.edit_page, title="Edit", icon=":material/edit:", url_path="edit"),
        st.Page(classroom.classroom_page, title="Classroom", icon=":material/school:", url_path="classroom"),
        st.Page(help_page, title="Help", icon=":material/help:", url_path="help"),
    ])
    # Square thumbnails: Streamlit rounds image corners, which hides marks that sit in a corner
    # (the shortcut model's planted mark is exactly that).
    st.html("<style>[data-testid='stImage'] img, [data-testid='stFullScreenFrame'] img "
            "{border-radius: 0 !important;}</style>")
    keep_widget_values()
    with shown_errors(f"The {page.title} page"):
        page.run()


main()
