"""This browser session's state as a typed object: named properties over `st.session_state`, never string keys.

Not a page. `Session()` is a view, cheap to make anywhere (a page, a dialog, a callback); what it holds lives in
Streamlit's session state. The settings are read once per run of the app (`begin_run`, called by the entry
before any page) and shared by every piece of that run; the next run reads them again, so a changed `.env`
or secrets file takes effect at the next click. Widget keys are not here: each belongs to the piece that
draws the widget.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import streamlit as st

from pages import _auth
from percept_core import ConfigError, RetrainingBlob, Settings
from percept_core.bursts import Burst
from percept_core.images import PreviewCache
from percept_core.pipeline import DryRunReport
from percept_core.review import Pager, ReviewQuery

if TYPE_CHECKING:
    from pages._jobs import SessionPush
    from pages._results import LastResult
    from percept_core.exporting import ExportSummary

PREVIEW_CACHE_BYTES = 48 * 1024 * 1024  # ~2,000 thumbnails a session

_SETTINGS = "run_settings"
_PROJECT = "picked_project"
_PREVIEW_CACHE = "preview_cache"
_SELECTION = "selection"
_PAGER = "pager"
_PAGER_PROJECT = "pager_project"
_SEEN_MODELS = "seen_models"
_BURSTS = "bursts"
_BURSTS_DISTANCE = "bursts_distance"
_OPEN_FRAME = "open_frame"
_LAST_RESULT = "last_result"
_SESSION_PUSH = "session_push"
_PER_PROJECT_WIDGETS = "per_project_widgets"
_KEPT = "kept:"
_DRY_RUN = "dry_run"
_EXPORT_ARCHIVE = "export_archive"
_CONFIRMING_PUSH = "confirming_push"
_TRAINING_ID = "training_id"
# What belongs to one project: a new pick starts it afresh.
_PER_PROJECT = (_PAGER, _LAST_RESULT, _OPEN_FRAME)


class Note(StrEnum):
    """What a page says once on its next run, after a callback acted."""

    SELECT_ALL = "select_all"
    TAG = "tag"


@dataclass
class Selection:
    """The reviewer's picks (blob records, metadata only) and why a failed one is still picked.

    `generation` counts the changes made other than by a tile's own checkbox (select page, clear, an
    action's outcome). The tiles' checkboxes are keyed by it, so such a change draws them anew, and only the
    checkboxes of the current generation count (`_gallery`). A browser that has not drawn the last run whole
    sends the earlier checkboxes' ticks back with the next click or key; when that click cuts the run short on
    the server, Streamlit still knows those checkboxes and calls their on_change for every tick that differs
    from the value it last held for them (Streamlit issue 10102): frames picked that were just cleared, or
    the reverse, without the reviewer touching a tile.
    """

    blobs: dict[str, RetrainingBlob] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    generation: int = 0

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


@dataclass
class Session:
    """This session's state, by name."""

    state: MutableMapping[str, Any] = field(default_factory=lambda: st.session_state)

    # -- the run -----------------------------------------------------------------------------------------

    def begin_run(self) -> None:
        """Read the settings for this run (once: every piece of the run shares them)."""
        try:
            self.state[_SETTINGS] = Settings.load()
        except ConfigError as exc:
            self.state[_SETTINGS] = exc

    @property
    def loaded_settings(self) -> Settings | ConfigError:
        """This run's reading of the settings: them, or why they cannot be read."""
        return self.state[_SETTINGS]

    @property
    def settings(self) -> Settings:
        """This run's settings; raises ConfigError when they cannot be read."""
        loaded = self.loaded_settings
        if isinstance(loaded, ConfigError):
            raise loaded
        return loaded

    @property
    def reviewer(self) -> str:
        """The reviewer this session acts as, as the gate decided on this run."""
        return self.state[_auth.REVIEWER_KEY]

    # -- the project ---------------------------------------------------------------------------------------

    @property
    def project_id(self) -> str | None:
        """The Custom Vision project picked in the sidebar (None: the settings' project)."""
        return self.state.get(_PROJECT)

    def pick_project(self, project_id: str) -> None:
        """Follow another project: what belonged to the last one starts afresh; the selection stays, unexplained."""
        changed = self.state.get(_PROJECT) not in (None, project_id)
        self.state[_PROJECT] = project_id
        if changed:
            for key in (*_PER_PROJECT, *self.state.get(_PER_PROJECT_WIDGETS, ())):
                self.state.pop(key, None)
            self.selection.reasons.clear()

    def forget_with_project(self, *widget_keys: str) -> None:
        """These widgets' values belong to the project shown: a new pick clears them."""
        self.state[_PER_PROJECT_WIDGETS] = {*self.state.get(_PER_PROJECT_WIDGETS, ()), *widget_keys}

    # -- the gallery ---------------------------------------------------------------------------------------

    @property
    def preview_cache(self) -> PreviewCache:
        """This session's thumbnails, bounded by bytes: paging back decrypts nothing again."""
        if _PREVIEW_CACHE not in self.state:
            self.state[_PREVIEW_CACHE] = PreviewCache(max_bytes=PREVIEW_CACHE_BYTES)
        return self.state[_PREVIEW_CACHE]

    @property
    def selection(self) -> Selection:
        if _SELECTION not in self.state:
            self.state[_SELECTION] = Selection()
        return self.state[_SELECTION]

    def pager(self, query: ReviewQuery, project_id: str | None, *, page_size: int) -> Pager:
        """This session's pager; a new query (or another project: states differ) starts again at page 1."""
        pager: Pager | None = self.state.get(_PAGER)
        if pager is None or pager.query != query or self.state.get(_PAGER_PROJECT) != project_id:
            pager = Pager(query, page_size=page_size)
            self.state[_PAGER] = pager
            self.state[_PAGER_PROJECT] = project_id
        return pager

    @property
    def seen_models(self) -> set[tuple[str, str | None]]:
        """The (model name, version) pairs of the blobs listed so far: what the filters offer."""
        return set(self.state.get(_SEEN_MODELS, ()))

    @seen_models.setter
    def seen_models(self, models: set[tuple[str, str | None]]) -> None:
        self.state[_SEEN_MODELS] = models

    def bursts(self, max_distance: int) -> dict[str, Burst]:
        """The bursts of the pages seen, by representative name, as found at this distance."""
        if self.state.get(_BURSTS_DISTANCE) != max_distance:
            return {}
        return self.state.get(_BURSTS, {})

    def keep_bursts(self, bursts: dict[str, Burst], max_distance: int) -> None:
        self.state[_BURSTS] = bursts
        self.state[_BURSTS_DISTANCE] = max_distance

    @property
    def known_bursts(self) -> list[Burst]:
        return list(self.state.get(_BURSTS, {}).values())

    @property
    def open_frame(self) -> str | None:
        """The name of the frame whose larger view is open (it stays open across reruns until closed)."""
        return self.state.get(_OPEN_FRAME)

    @open_frame.setter
    def open_frame(self, name: str | None) -> None:
        if name is None:
            self.state.pop(_OPEN_FRAME, None)
        else:
            self.state[_OPEN_FRAME] = name

    def kept(self, widget_key: str, default: object) -> object:
        """A choice remembered beyond the page that shows it (Streamlit forgets a widget's state on pages
        that do not show it): the widget's state, set from what was kept when the widget is new."""
        if widget_key not in self.state:
            self.state[widget_key] = self.state.get(_KEPT + widget_key, default)
        return self.state[widget_key]

    def keep(self, widget_key: str) -> None:
        """Remember the widget's choice for `kept` (its on_change)."""
        self.state[_KEPT + widget_key] = self.state[widget_key]

    # -- actions and their results -------------------------------------------------------------------------

    @property
    def last_result(self) -> LastResult | None:
        """The summary of the last action, for the page's next run."""
        return self.state.get(_LAST_RESULT)

    @last_result.setter
    def last_result(self, result: LastResult) -> None:
        self.state[_LAST_RESULT] = result

    @property
    def session_push(self) -> SessionPush | None:
        """This session's push of its selection, going on or over and not yet reported."""
        return self.state.get(_SESSION_PUSH)

    @session_push.setter
    def session_push(self, push: SessionPush | None) -> None:
        if push is None:
            self.state.pop(_SESSION_PUSH, None)
        else:
            self.state[_SESSION_PUSH] = push

    def note(self, about: Note, message: object) -> None:
        """A message for the next run to show once (a callback's outcome, say)."""
        self.state[f"note:{about}"] = message

    def take_note(self, about: Note) -> Any:
        """The message noted about this, once (None when there is none)."""
        return self.state.pop(f"note:{about}", None)

    @property
    def export_archive(self) -> tuple[str, bytes, ExportSummary] | None:
        """The zip file of this session's last COCO or YOLO export (its file name, bytes and summary): this
        reviewer's download, never shared with another session."""
        return self.state.get(_EXPORT_ARCHIVE)

    @export_archive.setter
    def export_archive(self, archive: tuple[str, bytes, ExportSummary] | None) -> None:
        if archive is None:
            self.state.pop(_EXPORT_ARCHIVE, None)
        else:
            self.state[_EXPORT_ARCHIVE] = archive

    # -- Push untagged and Activity --------------------------------------------------------------------------

    def dry_run(self, project_id: str) -> DryRunReport | None:
        """The last dry run of Push untagged for this project."""
        return self.state.get(f"{_DRY_RUN}:{project_id}")

    def set_dry_run(self, project_id: str, report: DryRunReport | None) -> None:
        if report is None:
            self.state.pop(f"{_DRY_RUN}:{project_id}", None)
        else:
            self.state[f"{_DRY_RUN}:{project_id}"] = report

    @property
    def confirming_push(self) -> bool:
        """The confirmation of Push all untagged is open (until confirmed or dismissed)."""
        return bool(self.state.get(_CONFIRMING_PUSH))

    @confirming_push.setter
    def confirming_push(self, confirming: bool) -> None:
        if confirming:
            self.state[_CONFIRMING_PUSH] = True
        else:
            self.state.pop(_CONFIRMING_PUSH, None)

    @property
    def training_id(self) -> str | None:
        """The iteration this session started training."""
        return self.state.get(_TRAINING_ID)

    @training_id.setter
    def training_id(self, iteration_id: str) -> None:
        self.state[_TRAINING_ID] = iteration_id
