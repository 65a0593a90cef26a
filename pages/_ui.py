"""Pieces the pages share: the shared Curator, the reviewer, the sidebar, filters, tiles, progress and results.

Not a page: `app.py` lists the pages explicitly. Nothing here decides anything a notebook would need;
that lives in `percept_core`. Decrypted bytes live only in the session's `PreviewCache` (bounded) and
in the element being shown, never in `st.cache_data`.
"""

from __future__ import annotations

import hashlib
import runpy
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pages import _annotate, _auth, _keys
from pages._text import md
from percept_core import ConfigError, Curator, CuratorError, RetrainingBlob, Settings
from percept_core.blobs import BlobFilter
from percept_core.bursts import Burst
from percept_core.connections import environment_label, quick_health, targets
from percept_core.csvsafe import safe_csv_bytes
from percept_core.curator import ConnectionCheck
from percept_core.customvision import CustomVisionClient, ProjectInfo
from percept_core.images import PreviewCache
from percept_core.jobs import PushJobs
from percept_core.ledger import BlobRecord, default_actor
from percept_core.memory import return_large_buffers_to_the_system
from percept_core.pipeline import BackgroundPush, PushProgress
from percept_core.review import STATES, Pager, ReviewPush, ReviewQuery

PAGE_SIZE = 48
PREVIEW_CACHE_BYTES = 48 * 1024 * 1024  # ~2,000 thumbnails a session
HEALTH_SECONDS = 30
TILE_COLUMNS = 6

STATE_COLOURS = {
    "new": "blue",
    "pushed": "green",
    "failed": "red",
    "pushing": "yellow",
    "rejected": "gray",
    "cannot decrypt": "orange",
    "near_duplicate": "violet",
}

APP = Path(__file__).resolve().parent.parent / "app.py"
_ENTERED = "_entered_through_app"

# -- the way into every page: app.py ----------------------------------------------------------------


def entering_page() -> None:
    """app.py says it is running the page (called just before the page runs)."""
    st.session_state[_ENTERED] = True


def through_app() -> None:
    """Run the page inside app.py (sign-in, navigation, sidebar) even when Streamlit opened its file itself.

    With a `pages/` folder beside app.py, Streamlit runs a page's file on its own (its old folder mode)
    when a process's first request is that page's URL, and in every AppTest run; app.py's st.navigation
    ends that mode for the process. So a page not entered through app.py runs app.py, which runs the
    page, and stops there.
    """
    if st.session_state.pop(_ENTERED, False):
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


# -- settings, the shared Curator and the reviewer ---------------------------------------------------


def _fingerprint(settings: Settings) -> str:
    """Identifies a configuration (secrets included, hashed in memory) so a change builds new clients."""
    text = "\n".join(f"{f.name}={getattr(settings, f.name)!r}" for f in fields(settings) if f.name != "sources")
    return hashlib.sha256(text.encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _curator_for(fingerprint: str, _settings: Settings) -> Curator:
    """One Curator per configuration for the whole process: clients and the key cache, never plaintext."""
    return_large_buffers_to_the_system()  # the pushes of this process give their upload buffers back
    return Curator(_settings)


def shared_curator() -> Curator:
    """The process-wide Curator for the settings in use (raises ConfigError when they are wrong)."""
    settings = Settings.load()
    return _curator_for(_fingerprint(settings), settings)


@st.cache_resource(show_spinner=False)
def push_jobs() -> PushJobs:
    """The process-wide registry of background pushes: a run outlives the tab that started it."""
    return PushJobs()


def sign_in() -> str:
    """The reviewer recorded in the ledger; with sign-in configured, anyone not allowed in stops here.

    The gate itself is `pages/_auth.py` (app.py calls it); this name stays for callers of the earlier API.
    """
    from pages import _auth

    return _auth.gate()


def reviewer() -> str:
    """The reviewer this session acts as, as the gate decided on this run (app.py runs it before any page).

    Unset only outside app.py: then, when sign-in is required, the gate decides now (and stops anyone not
    allowed in); in local use it is the OS user.
    """
    from pages import _auth

    if name := st.session_state.get(_auth.REVIEWER_KEY):
        return name
    return _auth.gate() if _auth.sign_in_required() else default_actor()


def curator() -> Curator:
    """The shared Curator for the project picked in the sidebar, acting as this reviewer; a page without
    settings stops with what is missing."""
    try:
        return project_curator().acting_as(reviewer())
    except ConfigError as exc:
        show_error("The settings are incomplete", exc)
        st.page_link("pages/connections.py", label="See the settings in use", icon=":material/settings:")
        st.stop()


def project(curator: Curator) -> ProjectInfo:
    """The Custom Vision project, or the page stops saying why it cannot be reached."""
    try:
        return curator.project()
    except CuratorError as exc:
        show_error("Custom Vision cannot be reached", exc)
        st.stop()


def show_error(title: str, exc: BaseException) -> None:
    hint = getattr(exc, "hint", None)
    message = getattr(exc, "message", None) or str(exc)  # may quote a blob's name or metadata: text, not Markdown
    st.error(f"**{title}.** {md(message)}" + (f"  \n{hint}" if hint else ""), icon=":material/error:")


def preview_cache() -> PreviewCache:
    """This session's thumbnails, bounded by bytes: paging back decrypts nothing again."""
    if "preview_cache" not in st.session_state:
        st.session_state["preview_cache"] = PreviewCache(max_bytes=PREVIEW_CACHE_BYTES)
    return st.session_state["preview_cache"]


# -- the project: the settings' one, or the one picked in the sidebar ------------------------------------

PROJECT_KEY = "project_id"
# Session state that belongs to one project: a new pick starts them afresh.
_PER_PROJECT = ("push_tags", "retag_add", "retag_remove", "pager", "last_result", "open_frame")


@st.cache_resource(show_spinner=False)
def _curator_for_project(fingerprint: str, project_id: str, _base: Curator) -> Curator:
    """One Curator per project for the whole process, sharing the base's storage client, keys and ledger."""
    return _base.for_project(project_id)


def project_curator() -> Curator:
    """The process-wide Curator of the project this session picked (the settings' project by default)."""
    base = shared_curator()
    picked = st.session_state.get(PROJECT_KEY)
    if not picked or picked == base.settings.custom_vision_project_id:
        return base
    return _curator_for_project(_fingerprint(base.settings), picked, base)


@st.cache_resource(ttl=HEALTH_SECONDS, show_spinner=False)
def _projects(fingerprint: str, _settings: Settings) -> list[ProjectInfo]:
    """The projects the training key can see (a project made in the portal shows within HEALTH_SECONDS)."""
    client = CustomVisionClient.from_settings(_settings, project_id=_settings.custom_vision_project_id or "none")
    return client.projects()


def _project_picked() -> None:
    for key in _PER_PROJECT:
        st.session_state.pop(key, None)
    selection().reasons.clear()


def project_picker(settings: Settings) -> None:
    """Every project the training key can see, the settings' project first; the app follows the pick."""
    try:
        projects = _projects(_fingerprint(settings), settings)
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
    if st.session_state.get(PROJECT_KEY) not in names:
        st.session_state[PROJECT_KEY] = default if default in names else next(iter(names))
    st.selectbox(
        "Custom Vision project",
        list(names),
        format_func=names.__getitem__,
        key=PROJECT_KEY,
        on_change=_auth.guarded(_project_picked),
        help="The projects this training key can see. Tags, pushes and push state follow the project picked.",
    )


# -- the sidebar -------------------------------------------------------------------------------------


@st.cache_resource(ttl=HEALTH_SECONDS, show_spinner=False)
def _health(fingerprint: str, _curator: Curator) -> dict[str, ConnectionCheck]:
    return {check.service: check for check in quick_health(_curator)}


def sidebar() -> None:
    """Where the app is connected, each service with a health dot; never a secret."""
    with st.sidebar:
        try:
            settings = Settings.load()
        except ConfigError as exc:
            st.error(f"Settings: {md(exc)}")
            return
        st.caption(f"**{md(environment_label(settings))}**")
        try:
            picked = project_curator()
            health = _health(f"{_fingerprint(settings)}:{picked.settings.custom_vision_project_id}", picked)
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
            project_picker(settings)
        st.caption(f"Reviewer: {md(reviewer())}")
        _keys.install(columns=TILE_COLUMNS)  # here, on every page: see _keys


# -- filters and paging ------------------------------------------------------------------------------


def review_filters(curator: Curator) -> ReviewQuery:
    """Model, version, confidence, capture dates, state and name: all on metadata and the ledger."""
    seen: set[tuple[str, str | None]] = set(st.session_state.get("seen_models", ()))
    seen |= set(curator.ledger.known_models())
    names = sorted({name for name, _ in seen if name})
    versions = sorted({version for _, version in seen if version})
    c = st.columns([3, 2, 3, 3, 3, 3])
    model_names = c[0].multiselect("Model", names, key="f_models", accept_new_options=True, placeholder="Any")
    model_versions = c[1].multiselect("Version", versions, key="f_versions", accept_new_options=True, placeholder="Any")
    low, high = c[2].slider("Confidence (%)", 0, 100, (0, 100), key="f_confidence")
    dates = c[3].date_input("Captured between", value=(), key="f_dates", format="YYYY-MM-DD")
    states = c[4].multiselect("State", STATES, key="f_states", placeholder="Any")
    name = c[5].text_input("Name contains", key="f_name", placeholder="e.g. 2026-11-15")
    dates = tuple(dates) if isinstance(dates, tuple | list) else (dates,) if isinstance(dates, date) else ()
    return ReviewQuery(
        BlobFilter(
            model_names=tuple(model_names),
            model_versions=tuple(model_versions),
            min_confidence=float(low) if low > 0 else None,
            max_confidence=float(high) if high < 100 else None,
            captured_from=dates[0] if dates else None,
            captured_to=dates[1] if len(dates) > 1 else None,
            name_contains=name.strip(),
        ),
        tuple(states),
    )


def session_pager(query: ReviewQuery, project_id: str | None = None) -> Pager:
    """This session's pager; a new query (or another project: states differ) starts again at page 1."""
    pager: Pager | None = st.session_state.get("pager")
    if pager is None or pager.query != query or st.session_state.get("pager_project") != project_id:
        pager = Pager(query, page_size=PAGE_SIZE)
        st.session_state["pager"] = pager
        st.session_state["pager_project"] = project_id
    return pager


def remember_models(blobs: Iterable[RetrainingBlob]) -> None:
    seen = set(st.session_state.get("seen_models", ()))
    seen |= {(b.model_name, b.model_version) for b in blobs if b.model_name}
    st.session_state["seen_models"] = seen


def pager_controls(pager: Pager, shown: int, *, key: str) -> None:
    left, middle, right = st.columns([1, 4, 1], vertical_alignment="center")
    left.button("Previous", key=f"{key}_prev", disabled=not pager.has_previous, on_click=_auth.guarded(pager.previous))
    more = "more after it" if pager.has_next else "the last page"
    middle.markdown(f"Page {pager.number} · {shown} blobs · {more}")
    right.button("Next", key=f"{key}_next", disabled=not pager.has_next, on_click=_auth.guarded(pager.next))


# -- selection ---------------------------------------------------------------------------------------


class Selection:
    """The reviewer's picks (blob records, metadata only) and why a failed one is still picked.

    `generation` counts the changes made other than by a tile's own checkbox (select page, clear, an
    action's outcome). The tiles' checkboxes are keyed by it, so such a change draws them anew, and only the
    checkboxes of the current generation count (`_toggle`). A browser that has not drawn the last run whole
    sends the earlier checkboxes' ticks back with the next click or key; when that click cuts the run short on
    the server, Streamlit still knows those checkboxes and calls their on_change for every tick that differs
    from the value it last held for them (Streamlit issue 10102): frames picked that were just cleared, or
    the reverse, without the reviewer touching a tile.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, RetrainingBlob] = {}
        self.reasons: dict[str, str] = {}
        self.generation = 0

    def __len__(self) -> int:
        return len(self.blobs)

    def __contains__(self, name: object) -> bool:
        return name in self.blobs

    def add(self, blobs: Iterable[RetrainingBlob]) -> None:
        """Pick these too (the page, everything matching)."""
        self.pick(blobs)
        self.generation += 1

    def pick(self, blobs: Iterable[RetrainingBlob]) -> None:
        """A tile's own checkbox: it shows the change already."""
        self.blobs.update((b.name, b) for b in blobs)

    def discard(self, name: str) -> None:
        """A tile's own checkbox, or part of a change counted by the caller."""
        self.blobs.pop(name, None)
        self.reasons.pop(name, None)

    def clear(self) -> None:
        self.blobs.clear()
        self.reasons.clear()
        self.generation += 1

    def settle(self, acted_on: Iterable[RetrainingBlob], failed: Sequence[tuple[str, str]]) -> None:
        """After an action on `acted_on`: those that went through are no longer picked, those that did not stay
        picked with their reasons, and picks made while the action ran (a push goes on in the background) stay."""
        reasons = dict(failed)
        for blob in acted_on:
            if blob.name not in reasons:
                self.discard(blob.name)
        self.reasons.update((name, reason) for name, reason in reasons.items() if name in self.blobs)
        self.generation += 1

    def items(self) -> list[RetrainingBlob]:
        return list(self.blobs.values())


def selection() -> Selection:
    if "selection" not in st.session_state:
        st.session_state["selection"] = Selection()
    return st.session_state["selection"]


def _pick_key(name: str, generation: int) -> str:
    return f"pick:{generation}:{name}"


def _toggle(item: RetrainingBlob | Burst, key: str, generation: int) -> None:
    """A tile's checkbox: a burst's tile picks (or drops) every frame of the burst. The checkbox of an earlier
    generation changes nothing: its tick is one the browser sent before it drew the tile anew."""
    picked = selection()
    if generation != picked.generation:
        return
    members = item.members if isinstance(item, Burst) else (item,)
    if st.session_state.get(key):
        picked.pick(members)
    else:
        for member in members:
            picked.discard(member.name)


# -- near-duplicate bursts ---------------------------------------------------------------------------

BURSTS_KEY = "bursts"


def remember_bursts(blobs: Sequence[RetrainingBlob], bursts: Sequence[Burst], *, max_distance: int) -> None:
    """The bursts of the pages seen (by representative name): what a later push of the selection groups by."""
    known: dict[str, Burst] = st.session_state.get(BURSTS_KEY, {})
    if st.session_state.get("bursts_distance") != max_distance:
        known = {}
    shown = {b.key for b in blobs}
    known = {name: burst for name, burst in known.items() if not any(member.key in shown for member in burst.members)}
    known |= {burst.representative.name: burst for burst in bursts}
    st.session_state[BURSTS_KEY] = known
    st.session_state["bursts_distance"] = max_distance


def known_bursts() -> list[Burst]:
    return list(st.session_state.get(BURSTS_KEY, {}).values())


# -- tiles -------------------------------------------------------------------------------------------

OPEN_KEY = "open_frame"


def tile_caption(blob: RetrainingBlob) -> str:
    captured = f"{blob.captured_at:%Y-%m-%d %H:%M:%S}" if blob.captured_at else "capture time unknown"
    confidence = f"{blob.confidence:g}%" if blob.confidence is not None else "confidence ?"
    model = f"{blob.model_name or '?'} {blob.model_version or '?'}"
    return f"{captured} · {confidence} · {md(model)}"


def gallery(
    curator: Curator,
    items: Sequence[RetrainingBlob | Burst],
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnails: dict[tuple[str, str, str], bytes | CuratorError],
    *,
    notes: dict[str, str] | None = None,
) -> None:
    """Tiles of TILE_COLUMNS: thumbnail (or why there is none), facts, state, checkbox, larger view.

    A burst of near-duplicates is one tile, its representative's, with the number of frames it stands for;
    `notes` adds a line to a blob's tile (its boxes in progress, say).
    """
    picked = selection()
    for row_start in range(0, len(items), TILE_COLUMNS):
        columns = st.columns(TILE_COLUMNS)
        for column, item in zip(columns, items[row_start : row_start + TILE_COLUMNS], strict=False):
            blob = item.representative if isinstance(item, Burst) else item
            with column, st.container(border=True, key=f"tile:{blob.name}"):
                _tile(curator, item, records, thumbnails.get(blob.key), picked, (notes or {}).get(blob.name))


def _tile(
    curator: Curator,
    item: RetrainingBlob | Burst,
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnail: bytes | CuratorError | None,
    picked: Selection,
    note: str | None,
) -> None:
    blob = item.representative if isinstance(item, Burst) else item
    members = item.members if isinstance(item, Burst) else (item,)
    if isinstance(thumbnail, bytes):
        st.image(thumbnail, width="stretch")
    else:
        st.error(f"**{md(getattr(thumbnail, 'reason', 'no preview'))}**", icon=":material/broken_image:")
        st.caption(md(getattr(thumbnail, "message", "")))
    state = curator.state_of(blob, records.get(blob.key))
    st.badge(state, color=STATE_COLOURS.get(state, "gray"))
    st.caption(tile_caption(blob))
    if isinstance(item, Burst):
        states = Counter(curator.state_of(m, records.get(m.key)) for m in members)
        order = {name: index for index, name in enumerate(STATES)}
        summary = ", ".join(f"{states[s]} {s}" for s in sorted(states, key=lambda s: order.get(s, len(order))))
        st.caption(f":material/burst_mode: **{len(item)} near-identical frames** ({summary})")
    if note:
        st.caption(note)  # the app's own words (see _annotate.tile_note): counts, no outside text
    for member in members:
        if member.name in picked.reasons:
            st.warning(md(picked.reasons[member.name]), icon=":material/report:")
    key = _pick_key(blob.name, picked.generation)
    st.session_state[key] = blob.name in picked
    # A label is Markdown: the name, escaped, shows as written (a name like `![x](http://...)` loads nothing).
    st.checkbox(md(blob.name), key=key, on_change=_auth.guarded(_toggle), args=(item, key, picked.generation))
    st.button(
        "Larger view",
        key=f"open:{blob.name}",
        type="tertiary",
        icon=":material/open_in_full:",
        on_click=_auth.guarded(_open),
        args=(blob.name,),
    )


def _open(name: str) -> None:
    st.session_state[OPEN_KEY] = name


def _close() -> None:
    st.session_state.pop(OPEN_KEY, None)


def open_larger_view(
    curator: Curator,
    project: ProjectInfo,
    blobs: Sequence[RetrainingBlob],
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnails: dict[tuple[str, str, str], bytes | CuratorError],
    bursts: Sequence[Burst] = (),
) -> None:
    """The larger view of the frame the reviewer opened on this page: it stays open across reruns until closed."""
    name = st.session_state.get(OPEN_KEY)
    blob = next((b for b in blobs if b.name == name), None)
    if blob is None:
        _close()
        return
    burst = next((b for b in bursts if b.representative.name == name), None)
    larger_view(curator, project, blob, records.get(blob.key), burst, thumbnails)


@st.dialog("Frame", width="large", on_dismiss=_close)
def larger_view(
    curator: Curator,
    project: ProjectInfo,
    blob: RetrainingBlob,
    record: BlobRecord | None,
    burst: Burst | None = None,
    thumbnails: dict[tuple[str, str, str], bytes | CuratorError] | None = None,
) -> None:
    """The full decrypted frame (shown, not kept), or for object detection the annotator; everything known."""
    _auth.require_reviewer()  # a dialog reruns without app.py: who is acting is decided again here
    st.markdown(f"**{md(blob.name)}**")
    if project.is_detection:
        _annotate.annotator(curator, project, blob, record)
    else:
        try:
            st.image(curator.decrypt(blob), width="stretch")
        except CuratorError as exc:
            st.error(f"**{md(exc.reason)}**  \n{md(exc)}", icon=":material/broken_image:")
    if burst is not None:
        _burst_strip(curator, burst, thumbnails or {})
    facts: dict[str, Any] = {
        "state": curator.state_of(blob, record),
        "model name": blob.model_name,
        "model version": blob.model_version,
        "confidence": blob.confidence,
        "captured at": blob.captured_at,
        "container": blob.container,
        "etag": blob.etag,
        "size (bytes)": blob.size,
        "last modified": blob.last_modified,
        "file_ref": blob.file_ref,
        "problems": "; ".join(blob.problems),
    }
    if record is not None:
        facts |= {
            "Custom Vision image id": record.image_id,
            "tags": ", ".join(record.tags),
            "ledger reason": record.push_reason or record.reason,
            "sha256": record.sha256,
        }
    facts |= {f"metadata: {md(k)}": v for k, v in sorted(blob.metadata.items())}
    # A table's cells are Markdown: every value (names, metadata, reasons) is escaped to show as written.
    table = pd.DataFrame([{"field": k, "value": "" if v is None else md(v)} for k, v in facts.items()])
    st.table(table.set_index("field"))
    if st.button("Close", key="close_view"):
        _close()
        st.rerun()


def _burst_strip(curator: Curator, burst: Burst, thumbnails: dict[tuple[str, str, str], bytes | CuratorError]) -> None:
    """The other frames of the burst this frame stands for (it is the least confident of them)."""
    st.markdown(f"**Stands for {len(burst)} near-identical frames.** The others:")
    records = curator.records(list(burst.others))
    for column, other in zip(st.columns(TILE_COLUMNS), burst.others[:TILE_COLUMNS], strict=False):
        with column:
            small = thumbnails.get(other.key)
            if isinstance(small, bytes):
                st.image(small, width="stretch")
            st.caption(f"{md(other.name)} · {curator.state_of(other, records.get(other.key))}")
    if len(burst.others) > TILE_COLUMNS:
        st.caption(f"… and {len(burst.others) - TILE_COLUMNS} more.")


# -- progress and results ----------------------------------------------------------------------------


def push_progress_bar(label: str, total: int) -> Callable[[PushProgress], None]:
    bar = st.progress(0.0, text=f"{label}: 0/{total}")

    def update(progress: PushProgress) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(progress.counts.items()))
        of = progress.total or total  # a push of bursts uploads fewer images than were picked
        fraction = min(1.0, progress.done / of) if of else 1.0
        bar.progress(fraction, text=f"{label}: {progress.done}/{of} · {counts}")

    return update


# -- this session's push of its selection ----------------------------------------------------------------

SESSION_PUSH_KEY = "session_push"
PROGRESS_SECONDS = 0.2  # how often a run waiting for a push redraws its progress bar


@dataclass
class SessionPush:
    """A push of the reviewer's selection: what it took, and the thread pushing it."""

    items: list[RetrainingBlob]
    job: BackgroundPush[ReviewPush]

    def result(self) -> ReviewPush:
        """What the push did; raises what stopped it."""
        if self.job.error is not None:
            raise self.job.error
        assert self.job.report is not None
        return self.job.report


def session_pushing() -> bool:
    """This session has a push going (or over and not yet reported)."""
    return SESSION_PUSH_KEY in st.session_state


def start_session_push(
    items: Sequence[RetrainingBlob], push: Callable[[Callable[[PushProgress], None]], ReviewPush], *, actor: str
) -> None:
    """Push in a thread of its own. Streamlit stops a script run as soon as the reviewer clicks or presses
    anything, which would cut a push short in the middle and say nothing; the thread goes on, and whichever
    run comes next waits for it and reports it (`finished_session_push`)."""
    job = BackgroundPush(lambda progress, _cancel: push(progress), description="Push selected", actor=actor)
    st.session_state[SESSION_PUSH_KEY] = SessionPush(list(items), job.start())


def finished_session_push(label: str) -> SessionPush | None:
    """This session's push once it is over, handed out once (None when there is none). Until then the run
    waits here behind a progress bar; a run stopped meanwhile leaves the waiting to the next one."""
    pushed: SessionPush | None = st.session_state.get(SESSION_PUSH_KEY)
    if pushed is None:
        return None
    update = push_progress_bar(label, len(pushed.items))
    while not pushed.job.wait(PROGRESS_SECONDS):
        if pushed.job.progress is not None:
            update(pushed.job.progress)
    st.session_state.pop(SESSION_PUSH_KEY, None)
    return pushed


def count_progress_bar(label: str) -> Callable[[int, int], None]:
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 1.0, text=f"{label}: {done}/{total}")

    return update


@contextmanager
def action_errors(doing: str) -> Iterator[None]:
    """An action that a service refuses says so on the page (what did not happen, and what to do)."""
    try:
        yield
    except CuratorError as exc:
        show_error(f"{doing} stopped", exc)


def remember_result(title: str, counts: dict[str, int], rows: Sequence[tuple[str, str, str]], *, failed: bool) -> None:
    """Keep an action's summary (and the items worth a word) for the page's next run: the action reruns it."""
    st.session_state["last_result"] = {"title": title, "counts": counts, "rows": list(rows), "failed": failed}


def show_last_result() -> None:
    result = st.session_state.get("last_result")
    if not result:
        return
    summary = ", ".join(f"{n} {outcome}" for outcome, n in result["counts"].items()) or "nothing to do"
    (st.warning if result["failed"] else st.success)(f"**{result['title']}:** {summary}", icon=":material/task_alt:")
    if result["rows"]:
        table = pd.DataFrame(result["rows"], columns=["blob", "outcome", "reason"])
        st.dataframe(table, hide_index=True, width="stretch")


def csv_bytes(rows: Sequence[dict[str, Any]] | pd.DataFrame, columns: Sequence[str] | None = None) -> bytes:
    """A CSV download whose cells cannot start a spreadsheet formula (blob names and reasons come from outside)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    return safe_csv_bytes(frame)


if __name__ == "__main__":  # opened as a page by Streamlit's pages/ folder mode: show the app instead
    through_app()
