"""Connections: the settings in use and where each came from (secrets redacted); test each service."""

import pandas as pd
import streamlit as st

from pages import _auth, _curator, _results
from pages._session import Session
from pages._text import md
from percept_core import ConfigError

session = Session()
st.title("Connections")
try:
    settings = session.settings
except ConfigError as exc:
    _results.show_error("The settings cannot be read", exc)
    st.stop()

st.caption(
    "Settings are read, highest first, from arguments, the environment, `.env`, an Azure Functions "
    "`local.settings.json` and Streamlit secrets. Secrets are never shown."
)
st.dataframe(
    pd.DataFrame(settings.describe(), columns=["setting", "value", "source", "meaning"]),
    hide_index=True,
    width="stretch",
)

if st.button("Test connections", type="primary", icon=":material/network_check:"):
    _auth.require_reviewer()
    with st.spinner("Reaching storage, the MM server and Custom Vision…"):
        checks = _curator.shared_curator(settings).check_connections()
    for check in checks:
        if check.ok:
            st.success(f"**{check.service}**: {md(check.message)}", icon=":material/check_circle:")
        else:
            st.error(f"**{check.service}**: {md(check.message)}", icon=":material/error:")
