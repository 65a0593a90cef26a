"""Suggestions from the project's trained model on the Review page: asked for the page shown, drawn on each tile
as a suggestion (never as a decision), and accepted by the reviewer one tile or one page at a time.

Not a page. An accepted suggestion picks the frame and gives it the suggested tags (classification) or boxes
(object detection, as boxes in progress the annotator shows and edits); it goes up when the selection is pushed.
Accepted suggestions are kept in this session's state (per project and blob version), never in a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import streamlit as st

from pages import _annotate, _auth, _results
from pages._session import Session
from pages._text import md
from percept_core import Curator, CuratorError, ProjectInfo, RetrainingBlob
from percept_core.boxes import Box
from percept_core.customvision import ProjectNotTrained
from percept_core.state import BlobState
from percept_core.suggestions import Suggestion

ENABLED_KEY = "suggest_enabled"
THRESHOLD_KEY = "suggest_threshold"
ACCEPTED_KEY = "accepted_suggestions"
DEFAULT_THRESHOLD = 0.6  # at or under an even chance between two tags a suggestion is noise: hidden unless asked for

Suggestions = Mapping[tuple[str, str, str], Suggestion | CuratorError]


@dataclass(frozen=True)
class PageSuggestions:
    """The suggestions of the page shown, as the gallery draws them: above `threshold` only."""

    project: ProjectInfo
    found: Suggestions
    threshold: float

    def of(self, blob: RetrainingBlob) -> Suggestion | None:
        return shown(self.found.get(blob.key), self.threshold)

    def accepted(self, blob: RetrainingBlob) -> bool:
        if self.project.is_detection:
            draft = _annotate.draft_of(self.project.id, blob)
            return draft is not None and draft.changed
        return accepted_of(self.project.id, blob) is not None


def accept_key(name: str) -> str:
    """The key of a tile's "Accept suggestion" button (the keyboard's `s` clicks the focused tile's)."""
    return f"accept:{name}"


def controls(session: Session) -> tuple[bool, float]:
    """The toggle that asks the model, and the threshold under which a suggestion is hidden."""
    session.kept(ENABLED_KEY, False)
    on_column, threshold_column, _ = st.columns([2, 3, 4], vertical_alignment="center")
    enabled = on_column.toggle(
        "Suggest from the model",
        key=ENABLED_KEY,
        on_change=_auth.guarded(session.keep),
        args=(ENABLED_KEY,),
        help="The project's latest trained iteration predicts each frame of the page (a quick test: the frame is "
        "not added to the project). Each frame is predicted once per iteration; predictions count against the "
        "key's transactions like any call.",
    )
    if not enabled:  # no control the reviewer cannot use (a disabled one is also hard to read)
        return False, float(session.kept(THRESHOLD_KEY, DEFAULT_THRESHOLD))
    threshold = threshold_column.slider(
        "Hide suggestions under",
        min_value=0.0,
        max_value=1.0,
        step=0.05,
        key=THRESHOLD_KEY,
        on_change=_auth.guarded(session.keep),
        args=(THRESHOLD_KEY,),
        format="%.2f",
    )
    return True, threshold


def for_page(curator: Curator, blobs: Sequence[RetrainingBlob]) -> Suggestions:
    """The model's suggestion for each frame of the page (what is not cached is predicted now); nothing, with a
    note saying why, when the project has no trained model or the service fails."""
    try:
        with st.spinner("Asking the model for suggestions…"):
            return curator.suggestions(blobs)
    except ProjectNotTrained as exc:
        st.info(f"**No suggestions:** {md(exc.message)} {md(exc.hint or '')}", icon=":material/model_training:")
    except CuratorError as exc:
        _results.show_error("The model could not be asked for suggestions", exc)
    return {}


def shown(suggestion: Suggestion | CuratorError | None, threshold: float) -> Suggestion | None:
    """The suggestion, when it has a prediction at or above the threshold."""
    if isinstance(suggestion, Suggestion) and suggestion.above(threshold):
        return suggestion
    return None


def describe(suggestion: Suggestion, threshold: float) -> str:
    """Plain words for a suggestion above the threshold: `person 93%, product 61%` (boxes: `2 boxes: person 93%`)."""
    predictions = suggestion.above(threshold)
    words = ", ".join(f"{p.tag_name} {p.probability:.0%}" for p in predictions)
    boxes = sum(1 for p in predictions if p.box is not None)
    return f"{boxes} box{'' if boxes == 1 else 'es'}: {words}" if boxes else words


def _accepted() -> dict[tuple[str, str, str, str], tuple[str, ...]]:
    return st.session_state.setdefault(ACCEPTED_KEY, {})


def accepted_tags(project_id: str, blobs: Iterable[RetrainingBlob]) -> dict[str, list[str]]:
    """Blob name -> the tags of the suggestion accepted for it (classification), for the blobs given."""
    accepted = _accepted()
    return {b.name: list(tags) for b in blobs if (tags := accepted.get((project_id, *b.key))) is not None}


def accepted_of(project_id: str, blob: RetrainingBlob) -> tuple[str, ...] | None:
    return _accepted().get((project_id, *blob.key))


def accept(project: ProjectInfo, blobs: Sequence[RetrainingBlob], suggestions: Suggestions, threshold: float) -> None:
    """Accept the suggestions of these frames (those above the threshold): pick each, with its suggested tags or
    boxes. A frame without a suggestion above the threshold is left as it is."""
    picked = Session().selection
    accepted = _accepted()
    for blob in blobs:
        suggestion = shown(suggestions.get(blob.key), threshold)
        if suggestion is None:
            continue
        predictions = suggestion.above(threshold)
        if project.is_detection:
            boxes = [Box(p.tag_name, p.box.left, p.box.top, p.box.width, p.box.height) for p in predictions if p.box]
            _annotate.accept_boxes(project.id, blob, boxes)
        elif _one_tag_an_image(project):  # a multiclass project: an image has exactly one tag, the likeliest
            accepted[(project.id, *blob.key)] = (predictions[0].tag_name,)
        else:
            accepted[(project.id, *blob.key)] = tuple(p.tag_name for p in predictions)
        picked.pick([blob])


def _one_tag_an_image(project: ProjectInfo) -> bool:
    """Custom Vision's Multiclass classification (its default when the type is not given)."""
    return (project.classification_type or "Multiclass").lower() == "multiclass"


def acceptable(
    blobs: Sequence[RetrainingBlob], states: Mapping[tuple[str, str, str], BlobState]
) -> list[RetrainingBlob]:
    """The frames whose suggestion may be accepted: those not in the project (new, or a push that failed)."""
    return [b for b in blobs if states.get(b.key) in (BlobState.NEW, BlobState.FAILED)]


def after_push(project_id: str, blobs: Iterable[RetrainingBlob]) -> None:
    """Forget what was accepted for frames that were pushed (or tried): the project now holds the decision."""
    accepted = _accepted()
    for blob in blobs:
        accepted.pop((project_id, *blob.key), None)
