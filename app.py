"""Percept Curator: review encrypted Percept retraining frames and push them to Custom Vision.

    make run        (the local stack with demo data, then this app on http://127.0.0.1:8501)

Settings come from the environment, .env, local.settings.json or Streamlit secrets (`Settings.load()`).
"""

import streamlit as st

from pages import _auth, _ui

st.set_page_config(page_title="Percept Curator", page_icon=":material/photo_library:", layout="wide")

# The one gate every page passes: who is reviewing. With [auth] in Streamlit's secrets, only a signed-in
# reviewer listed in percept_reviewers gets past it; everyone else gets a sign-in or refusal page, and stops.
# Without [auth] only a loopback bind with no reviewers listed is let in (local use): it fails closed. Dialogs,
# fragments and callbacks, which run without this script, ask again (_auth.require_reviewer, _auth.guarded).
_auth.gate()

navigation = st.navigation(
    [
        st.Page("pages/review.py", title="Review", icon=":material/photo_library:", default=True),
        st.Page("pages/push_untagged.py", title="Push untagged", icon=":material/cloud_upload:"),
        st.Page("pages/activity.py", title="Activity", icon=":material/history:"),
        st.Page("pages/connections.py", title="Connections", icon=":material/lan:"),
    ]
)
_ui.sidebar()
_ui.entering_page()
navigation.run()
