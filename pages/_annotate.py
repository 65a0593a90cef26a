"""Boxes for object-detection projects: the annotator in a frame's larger view, and the boxes in progress.

Not a page. Boxes in progress are kept in this session's state (never in a file), per project and blob
version, so they survive paging, reruns and moving between the app's pages; a new browser session starts
without them. The decrypted frame goes to the annotator as an in-memory image (Streamlit serves it from
memory) and is not kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import streamlit as st

from pages import _auth
from pages._text import md
from percept_core import Curator, CuratorError, ProjectInfo, RetrainingBlob, TagNameError
from percept_core.boxes import Box, boxes_of, same_boxes, save_boxes
from percept_core.images import decode_for_display
from percept_core.ledger import BlobRecord
from percept_core.pipeline import Outcome
from percept_core.review import ReviewPush
from percept_core.state import PushState

DRAFTS_KEY = "box_drafts"
MESSAGE_KEY = "box_message"
NEW_TAG_KEY = "new_box_tag"
ANNOTATOR_SIZE = (720, 540)  # the most the annotator shows of a frame (it is scaled down to fit)


@dataclass
class Draft:
    """The boxes a reviewer is drawing on one frame and the boxes its image has in the project (if known)."""

    boxes: list[Box] = field(default_factory=list)
    saved: list[Box] | None = None  # None: the image is not in the project (as far as this session knows)
    version: int = 0  # a new version shows the annotator afresh (after discarding changes)

    @property
    def changed(self) -> bool:
        """Boxes that the project does not have yet."""
        return bool(self.boxes) if self.saved is None else not same_boxes(self.boxes, self.saved)


def _drafts() -> dict[tuple[str, str, str, str], Draft]:
    return st.session_state.setdefault(DRAFTS_KEY, {})


def _key(project_id: str, blob: RetrainingBlob) -> tuple[str, str, str, str]:
    return (project_id, *blob.key)


def draft_of(project_id: str, blob: RetrainingBlob) -> Draft | None:
    return _drafts().get(_key(project_id, blob))


def boxes_to_push(project_id: str, blobs: Iterable[RetrainingBlob]) -> dict[str, list[Box]]:
    """Blob name -> boxes for the blobs whose boxes the project does not have yet."""
    found = {}
    for blob in blobs:
        draft = draft_of(project_id, blob)
        if draft is not None and draft.changed:
            found[blob.name] = list(draft.boxes)
    return found


def accept_boxes(project_id: str, blob: RetrainingBlob, boxes: Sequence[Box]) -> None:
    """Boxes suggested by the model and accepted by the reviewer become the frame's boxes in progress (the
    annotator shows them to edit); the boxes the project has for it, if known, stay what they are."""
    draft = _drafts().setdefault(_key(project_id, blob), Draft())
    draft.boxes = list(boxes)
    draft.version += 1  # the annotator shows them afresh


def after_push(project_id: str, blobs: Sequence[RetrainingBlob], pushed: ReviewPush) -> None:
    """The boxes of the blobs whose push (or box update) went through are now the project's."""
    went = {o.name for o in pushed.report.outcomes if o.outcome == Outcome.PUSHED}
    went |= {o.name for o in pushed.boxes if o.ok}
    for blob in blobs:
        draft = draft_of(project_id, blob)
        if draft is not None and blob.name in went:
            draft.saved = list(draft.boxes)


def tile_note(project_id: str, blob: RetrainingBlob) -> str | None:
    """What a tile says about the frame's boxes in progress."""
    draft = draft_of(project_id, blob)
    if draft is None or (not draft.boxes and not draft.changed):
        return None
    count = f"{len(draft.boxes)} box" + ("" if len(draft.boxes) == 1 else "es")
    return f":material/crop_free: {count}" + (" · not pushed yet" if draft.changed else " · in the project")


# -- the annotator ---------------------------------------------------------------------------------------


def annotator(curator: Curator, project: ProjectInfo, blob: RetrainingBlob, record: BlobRecord | None) -> None:
    """Draw, move, resize, delete and tag boxes on the frame; push them with it or update its boxes."""
    from streamlit_image_annotation import detection  # its import pulls matplotlib: only when drawing

    if message := st.session_state.pop(MESSAGE_KEY, None):
        (st.error if message[0] == "error" else st.success)(message[1])  # escaped where it was written
    tags = [t.name for t in curator.tags()]
    _new_tag(curator, first=not tags)
    if not tags:
        return
    drafts = _drafts()
    key = _key(project.id, blob)
    if key not in drafts:
        try:
            saved = boxes_of(curator, blob) if record is not None and record.push_state == PushState.PUSHED else None
        except CuratorError as exc:
            st.error(f"**The frame's boxes cannot be read:** {md(exc)}", icon=":material/error:")
            return
        drafts[key] = Draft(list(saved or []), saved)
    draft = drafts[key]
    try:
        image = decode_for_display(curator.decrypt(blob), size=ANNOTATOR_SIZE, what=f"Blob {blob.name!r}")
    except CuratorError as exc:
        st.error(f"**{md(exc.reason)}**  \n{md(exc)}", icon=":material/broken_image:")
        return
    width, height = image.size
    by_name = {t.lower(): t for t in tags}
    labels = tags + sorted({b.tag for b in draft.boxes if b.tag.lower() not in by_name})  # a deleted tag still shows
    index = {name.lower(): i for i, name in enumerate(labels)}
    drawn = detection(
        image,  # in memory: the component serves it from Streamlit's media store, no file is written
        labels,
        bboxes=[list(b.pixels(width, height)) for b in draft.boxes],
        labels=[index[b.tag.lower()] for b in draft.boxes],
        width=ANNOTATOR_SIZE[0],
        height=ANNOTATOR_SIZE[1],
        line_width=2,
        key=f"annotate:{project.id}:{blob.name}:{draft.version}",
    )
    if drawn is not None:
        boxes = [Box.from_pixels(d["label"], *d["bbox"], image_width=width, image_height=height) for d in drawn]
        boxes = [b for b in boxes if b.width > 0 and b.height > 0]
        if not same_boxes(boxes, draft.boxes):
            draft.boxes = boxes
    st.caption(
        "Drag on the frame to draw a box; the box takes the tag chosen under **Class** (pick another tag "
        "while a box is selected to change its tag). Drag a selected box to move it, pull its corners to "
        "resize it; in **Del** mode a click deletes a box. Press **Complete** to keep the boxes: they are "
        "kept for this session until they are pushed."
    )
    _box_list(draft.boxes)
    _actions(curator, blob, draft)


def _box_list(boxes: Sequence[Box]) -> None:
    if not boxes:
        st.markdown("No boxes on this frame yet.")
        return
    lines = [
        f"Box {i}: **{md(b.tag)}**, left {b.left:.1%}, top {b.top:.1%}, {b.width:.1%} × {b.height:.1%} of the frame"
        for i, b in enumerate(boxes, 1)
    ]
    st.markdown("  \n".join(lines))


def _actions(curator: Curator, blob: RetrainingBlob, draft: Draft) -> None:
    in_project = draft.saved is not None
    if in_project and draft.changed:
        status = f"The frame is in the project with {_count(draft.saved)}; your changes are not pushed yet."
    elif in_project:
        status = f"The frame is in the project with {'these boxes' if draft.boxes else 'no boxes'}."
    else:
        status = f"Not in the project yet: it goes up with {_count(draft.boxes)}."
    st.markdown(status)
    left, middle, _ = st.columns([2, 2, 3])
    label = "Update boxes" if in_project else "Push with these boxes"
    if left.button(label, key="save_boxes", type="primary", disabled=in_project and not draft.changed):
        _auth.require_reviewer()  # in a dialog, which reruns without the app's entry
        try:
            update = save_boxes(curator, blob, draft.boxes)
        except CuratorError as exc:
            st.session_state[MESSAGE_KEY] = ("error", f"**Nothing was pushed.** {md(exc)}")
        else:
            outcome = update.outcome
            if outcome is not None and not update.image_id:
                not_pushed = f"**Not pushed ({md(outcome.outcome)}):** {md(outcome.reason)}"
                st.session_state[MESSAGE_KEY] = ("error", not_pushed)
            else:
                draft.saved = list(draft.boxes)
                done = (
                    f"**Boxes updated** on {md(blob.name)}: {update.added} added, {update.removed} removed."
                    if in_project
                    else f"**Pushed:** {md(blob.name)} with {_count(draft.boxes)}."
                )
                st.session_state[MESSAGE_KEY] = ("success", done)
        st.rerun()  # the whole page: the tile's state changes too
    middle.button(
        "Discard changes",
        key="discard_boxes",
        disabled=not draft.changed,
        on_click=_auth.guarded(_discard),
        args=(draft,),
    )


def _discard(draft: Draft) -> None:
    draft.boxes = list(draft.saved or [])
    draft.version += 1  # a fresh annotator, showing the boxes the project has


def _count(boxes: Sequence[Box] | None) -> str:
    n = len(boxes or ())
    return "no boxes" if n == 0 else f"{n} box" + ("" if n == 1 else "es")


def _new_tag(curator: Curator, *, first: bool) -> None:
    """Box tags are the project's tags; a new one can be made here (the first one must be)."""
    with st.expander("New tag", expanded=first, icon=":material/new_label:"):
        if first:
            st.info("The project has no tags yet: every box needs one. Add a tag to start drawing.")
        name_column, add_column = st.columns([4, 1], vertical_alignment="bottom")
        name_column.text_input("New tag", key=NEW_TAG_KEY, placeholder="e.g. forklift")
        add_column.button(
            "Add tag", key="add_box_tag", width="stretch", on_click=_auth.guarded(_add_tag), args=(curator,)
        )


def _add_tag(curator: Curator) -> None:
    try:
        tag = curator.create_tag(st.session_state.get(NEW_TAG_KEY, ""))
    except TagNameError as exc:
        st.session_state[MESSAGE_KEY] = ("error", md(exc))
        return
    except CuratorError as exc:
        st.session_state[MESSAGE_KEY] = ("error", f"The tag could not be created: {md(exc)}")
        return
    st.session_state[NEW_TAG_KEY] = ""
    st.session_state[MESSAGE_KEY] = ("success", f"Tag {md(repr(tag.name))} created.")
