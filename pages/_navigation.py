"""The app's pages: their scripts (in `views/`) and how the navigation lists them.

Not a page. The scripts live in `views/`, not here: Streamlit's folder mode lists every file of a `pages/`
folder beside the main script, and runs a page's file by itself when a process's first request is its URL.
This folder's `review.py`, `push_untagged.py`, `activity.py`, `export.py` and `connections.py` are that mode's
entries, the app's entry again (`_entry.run`), so that first request passes the gate and gets the whole app too.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent.parent / "views"
REVIEW = VIEWS / "review.py"
PUSH_UNTAGGED = VIEWS / "push_untagged.py"
ACTIVITY = VIEWS / "activity.py"
EXPORT = VIEWS / "export.py"
CONNECTIONS = VIEWS / "connections.py"


def app_pages() -> list[st.Page]:
    """The pages in the order the sidebar lists them; Review first, and where the app opens."""
    return [
        st.Page(REVIEW, title="Review", icon=":material/photo_library:", default=True),
        st.Page(PUSH_UNTAGGED, title="Push untagged", icon=":material/cloud_upload:"),
        st.Page(ACTIVITY, title="Activity", icon=":material/history:"),
        st.Page(EXPORT, title="Export", icon=":material/dataset:"),
        st.Page(CONNECTIONS, title="Connections", icon=":material/lan:"),
    ]
