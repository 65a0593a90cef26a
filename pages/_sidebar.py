"""The sidebar every page shows: where the app is connected (a health dot a service), the project picker,
the reviewer, and the keyboard shortcuts. Never a secret.

Not a page.
"""

from __future__ import annotations

import streamlit as st

from pages import _auth, _keys
from pages._curator import fingerprint, project_curator
from pages._gallery import tile_columns
from pages._session import Session
from pages._text import md
from percept_core import ConfigError, Curator, CuratorError, Settings
from percept_core.connections import environment_label, quick_health, targets
from percept_core.curator import ConnectionCheck
from percept_core.customvision import CustomVisionClient, ProjectInfo

HEALTH_SECONDS = 30
PROJECT_KEY = "project_id"


@st.cache_resource(ttl=HEALTH_SECONDS, show_spinner=False)
def _health(fingerprint: str, _curator: Curator) -> dict[str, ConnectionCheck]:
    return {check.service: check for check in quick_health(_curator)}


@st.cache_resource(ttl=HEALTH_SECONDS, show_spinner=False)
def _projects(fingerprint: str, _settings: Settings) -> list[ProjectInfo]:
    """The projects the training key can see (a project made in the portal shows within HEALTH_SECONDS)."""
    client = CustomVisionClient.from_settings(_settings, project_id=_settings.custom_vision_project_id or "none")
    return client.projects()


def sidebar(session: Session) -> None:
    """Where the app is connected, each service with a health dot; never a secret."""
    with st.sidebar:
        try:
            settings = session.settings
        except ConfigError as exc:
            st.error(f"Settings: {md(exc)}")
            return
        st.caption(f"**{md(environment_label(settings))}**")
        try:
            picked = project_curator(session)
            health = _health(f"{fingerprint(settings)}:{picked.settings.custom_vision_project_id}", picked)
        except ConfigError:
            health = {}
        for target in targets(settings):
            check = health.get(target.service)
            dot = ":gray[○]" if check is None or target.local is None else (":green[●]" if check.ok else ":red[●]")
            where = target.where
            if target.service == "Custom Vision" and check is not None and check.ok:
                where = md(check.message)  # names the project, as Custom Vision calls it: text, not Markdown
            lines = f"{dot} **{target.service}**  \n{where}" + (f"  \n{target.detail}" if target.detail else "")
            st.markdown(lines, help=None if check is None else md(check.message))
        if settings.custom_vision_endpoint and settings.custom_vision_training_key:
            project_picker(session, settings)
        st.caption(f"Reviewer: {md(session.reviewer)}")
        _keys.install(columns=tile_columns())  # here, on every page: see _keys


def project_picker(session: Session, settings: Settings) -> None:
    """Every project the training key can see, the settings' project first; the app follows the pick."""
    try:
        projects = _projects(fingerprint(settings), settings)
    except CuratorError as exc:
        st.caption(f"The projects cannot be listed: {md(exc.message)}")
        return
    default = settings.custom_vision_project_id
    ordered = sorted(projects, key=lambda p: (p.id != default, p.name.lower()))
    names = {p.id: f"{p.name} · {'object detection' if p.is_detection else 'classification'}" for p in ordered}
    if default and default not in names:  # kept, so the page says what is wrong with it rather than move on
        names = {default: f"{default} (not visible to this key)", **names}
    if not names:
        return
    if session.project_id not in names:
        session.pick_project(default if default in names else next(iter(names)))
    if st.session_state.get(PROJECT_KEY) != session.project_id:
        st.session_state[PROJECT_KEY] = session.project_id
    st.selectbox(
        "Custom Vision project",
        list(names),
        format_func=names.__getitem__,
        key=PROJECT_KEY,
        on_change=_auth.guarded(_picked),
        help="The projects this training key can see. Tags, pushes and push state follow the project picked.",
    )


def _picked() -> None:
    Session().pick_project(st.session_state[PROJECT_KEY])
