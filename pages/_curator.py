"""The Curator the app shares: one per configuration (and per project picked) for the whole process.

Not a page. A Curator holds clients, the key cache and the ledger, never plaintext; a changed configuration
(secrets included, hashed in memory) builds new ones at the next run.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields

import streamlit as st

from pages import _navigation
from pages._results import show_error
from pages._session import Session
from percept_core import ConfigError, Curator, CuratorError, Settings
from percept_core.customvision import ProjectInfo
from percept_core.memory import return_large_buffers_to_the_system


def fingerprint(settings: Settings) -> str:
    """Identifies a configuration (secrets included, hashed in memory) so a change builds new clients."""
    text = "\n".join(f"{f.name}={getattr(settings, f.name)!r}" for f in fields(settings) if f.name != "sources")
    return hashlib.sha256(text.encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _curator_for(fingerprint: str, _settings: Settings) -> Curator:
    """One Curator per configuration for the whole process: clients and the key cache, never plaintext."""
    return_large_buffers_to_the_system()  # the pushes of this process give their upload buffers back
    return Curator(_settings)


def shared_curator(settings: Settings) -> Curator:
    """The process-wide Curator for these settings."""
    return _curator_for(fingerprint(settings), settings)


@st.cache_resource(show_spinner=False)
def _curator_for_project(fingerprint: str, project_id: str, _base: Curator) -> Curator:
    """One Curator per project for the whole process, sharing the base's storage client, keys and ledger."""
    return _base.with_project(project_id)


def project_curator(session: Session) -> Curator:
    """The process-wide Curator of the project this session picked (the settings' project by default); raises
    ConfigError when the settings are wrong."""
    base = shared_curator(session.settings)
    picked = session.project_id
    if not picked or picked == base.settings.custom_vision_project_id:
        return base
    return _curator_for_project(fingerprint(base.settings), picked, base)


def curator(session: Session) -> Curator:
    """The Curator of the project picked, acting as this session's reviewer; a page without settings stops
    with what is missing."""
    try:
        return project_curator(session).with_actor(session.reviewer)
    except ConfigError as exc:
        show_error("The settings are incomplete", exc)
        st.page_link(_navigation.CONNECTIONS, label="See the settings in use", icon=":material/settings:")
        st.stop()


def project(curator: Curator) -> ProjectInfo:
    """The Custom Vision project, or the page stops saying why it cannot be reached."""
    try:
        return curator.project()
    except CuratorError as exc:
        show_error("Custom Vision cannot be reached", exc)
        st.stop()
