"""The app's entry: the gate, this run's settings, the navigation and the sidebar, then the page asked for.

Not a page. `app.py` runs it, and so do this folder's page-named entries (see `_navigation`).
"""

from __future__ import annotations

import streamlit as st

from pages import _auth, _sidebar, _style
from pages._navigation import app_pages
from pages._session import Session


def run() -> None:
    """One run of the app: every page passes the gate first, and shares one reading of the settings."""
    st.set_page_config(page_title="Percept Curator", page_icon=":material/photo_library:", layout="wide")
    _style.apply()  # before the gate: the sign-in and refusal pages meet WCAG 2.1 AA too
    # The one gate every page passes: who is reviewing. With [auth] in Streamlit's secrets, only a signed-in
    # reviewer listed in percept_reviewers gets past it; everyone else gets a sign-in or refusal page, and stops.
    # Without [auth] only a loopback bind with no reviewers listed is let in (local use): it fails closed.
    # Dialogs, fragments and callbacks, which run without this, ask again (_auth.require_reviewer, _auth.guarded).
    session = Session()
    session.begin_run()
    _auth.gate(session.loaded_settings)
    navigation = st.navigation(app_pages())
    _sidebar.sidebar(session)
    navigation.run()
