"""Review: filter on metadata, page through decrypted thumbnails, pick, tag or box, push, reject or restore."""

import streamlit as st

from pages import (
    _annotate,
    _auth,
    _balance,
    _curator,
    _dialogs,
    _filters,
    _gallery,
    _jobs,
    _keys,
    _quality,
    _results,
    _suggest,
)
from pages._session import Note, Session
from pages._text import md
from percept_core import CuratorError, TagNameError
from percept_core.bursts import WINDOW_SECONDS, collapse, find_bursts, page_hashes
from percept_core.pipeline import Outcome
from percept_core.review import outcome_counts, push_reviewed, reject, restore

TAGS_KEY = "push_tags"
NEW_TAG_KEY = "new_tag"
COLLAPSE_KEY = "collapse_bursts"
EVERY_FRAME_KEY = "push_every_frame"
RETAG_ADD_KEY = "retag_add"
RETAG_REMOVE_KEY = "retag_remove"

session = Session()
session.forget_with_project(TAGS_KEY, RETAG_ADD_KEY, RETAG_REMOVE_KEY)
curator = _curator.curator(session)
project = _curator.project(curator)
picked = session.selection
st.title("Review")

# -- load: one page of matching blobs (listed once), its thumbnails and hashes (decrypted once a session) --
query = _filters.review_filters(session, curator)
pager = _filters.pager(session, query, project.id)
try:
    page = pager.page(curator)
except CuratorError as exc:
    _results.show_error("The blobs cannot be listed", exc)
    st.stop()
_filters.remember_models(session, page.blobs)
distance = curator.settings.near_duplicate_distance
with st.spinner("Decrypting thumbnails…"):
    cache = session.preview_cache
    hashes = page_hashes(curator, page.blobs, cache=cache)  # one decrypt a frame: its hashes and its thumbnail
    thumbnails = curator.previews(page.blobs, cache=cache)
records = curator.records(page.blobs)  # after the previews: they note the blobs that cannot be decrypted
bursts = find_bursts(page.blobs, hashes, max_distance=distance)
_gallery.remember_bursts(session, page.blobs, bursts, max_distance=distance)


# -- act: selection, tags, push, reject, restore ---------------------------------------------------------
# Callbacks run before the app's gate: each is wrapped in _auth.guarded (it acts only while the reviewer is still
# let in), and each action below asks again (_auth.require_reviewer) at the moment it acts.
def select_all_matching() -> None:
    matching = list(curator.blobs(pager.query.blob_filter, states=pager.query.states))
    picked.add(matching)
    session.note(Note.SELECT_ALL, f"All {len(matching):,} matching blobs are selected.")


def add_tag() -> None:
    name = st.session_state.get(NEW_TAG_KEY, "")
    try:
        tag = curator.create_tag(name)
    except TagNameError as exc:
        session.note(Note.TAG, ("error", str(exc)))
        return
    except CuratorError as exc:
        session.note(Note.TAG, ("error", f"The tag could not be created: {exc}"))
        return
    st.session_state[TAGS_KEY] = [*st.session_state.get(TAGS_KEY, []), tag.name]
    st.session_state[NEW_TAG_KEY] = ""
    session.note(Note.TAG, ("success", f"Tag {tag.name!r} created and chosen."))


if project.is_detection:
    st.multiselect("Tags", [], key=TAGS_KEY, disabled=True)
    st.info(
        "This is an object-detection project: its tags belong to boxes. Open a frame's larger view (or focus "
        "its tile and press `o`) to draw boxes and tag them; they go up with the frame when it is pushed. "
        "Frames without boxes are pushed untagged.",
        icon=":material/info:",
    )
else:
    tags_column, new_column, add_column = st.columns([4, 2, 1], vertical_alignment="bottom")
    tags_column.multiselect("Tags", [t.name for t in curator.tags()], key=TAGS_KEY, placeholder="None: push untagged")
    new_column.text_input("New tag", key=NEW_TAG_KEY, placeholder="e.g. forklift")
    add_column.button("Add tag", on_click=_auth.guarded(add_tag), width="stretch")
if message := session.take_note(Note.TAG):
    (st.error if message[0] == "error" else st.success)(md(message[1]))
chosen_tags = [] if project.is_detection else st.session_state.get(TAGS_KEY, [])

buttons = st.columns([2, 2, 3, 2, 2, 2, 2, 2])
buttons[0].button("Select page", key=_keys.SELECT_PAGE, on_click=_auth.guarded(picked.add), args=(page.blobs,))
buttons[1].button("Clear selection", key=_keys.CLEAR_SELECTION, on_click=_auth.guarded(picked.clear))
buttons[2].button("Select all matching", on_click=_auth.guarded(select_all_matching))
busy = _jobs.session_pushing(session)  # a push of this session's is going on: one action at a time
push = buttons[3].button("Push selected", key=_keys.PUSH_SELECTED, type="primary", disabled=not picked or busy)
reject_clicked = buttons[4].button("Reject selected", key=_keys.REJECT_SELECTED, disabled=not picked or busy)
restore_clicked = buttons[5].button("Restore", disabled=not picked or busy)
buttons[6].button(
    "Refresh", on_click=_auth.guarded(pager.refresh), help="List this page again: new uploads, others' decisions"
)
with buttons[7]:
    show_shortcuts = _keys.help_button()
if note := session.take_note(Note.SELECT_ALL):
    st.info(note, icon=":material/select_all:")
on_page = sum(1 for b in page.blobs if b.name in picked)
with_boxes = _annotate.boxes_to_push(project.id, picked.items()) if project.is_detection else {}
accepted_tags = _suggest.accepted_tags(project.id, picked.items())
st.caption(
    f"{len(picked):,} selected ({on_page} on this page) · push "
    + (f"with tags {md(', '.join(chosen_tags))}" if chosen_tags else "untagged")
    + (f" · {len(with_boxes)} with boxes to push" if with_boxes else "")
    + (f" · {len(accepted_tags)} with the tags suggested for them" if accepted_tags else "")
)
_balance.balance_panel(curator, project, picked.items(), chosen_tags, accepted_tags)

session.kept(COLLAPSE_KEY, True)
session.kept(EVERY_FRAME_KEY, False)
collapse_column, every_column, size_column, about_column = st.columns([2, 2, 2, 4], vertical_alignment="center")
collapsed = collapse_column.toggle(
    "Collapse near-duplicates",
    key=COLLAPSE_KEY,
    on_change=_auth.guarded(session.keep),
    args=(COLLAPSE_KEY,),
    help="Show each burst of near-identical frames as one tile",
)
every_frame = every_column.checkbox(
    "Push every frame of a burst",
    key=EVERY_FRAME_KEY,
    on_change=_auth.guarded(session.keep),
    args=(EVERY_FRAME_KEY,),
    disabled=not collapsed,
    help="Off: a burst's tile pushes the frame that stands for it and marks the others near-duplicates "
    "(Restore undoes that). On: every frame of the burst is pushed.",
)
with size_column:
    _gallery.tile_size_control(session)
more = sum(len(b.others) for b in bursts)
about_column.caption(
    f"A burst: frames of one model version within {WINDOW_SECONDS:.0f} s whose perceptual hashes differ in at "
    f"most **{distance}** bits (setting `percept_near_duplicate_distance`); its least confident frame stands for "
    f"it. This page: {len(bursts)} burst{'' if len(bursts) == 1 else 's'} ({more} more frames)."
)

flagging, only_flagged = _quality.controls(session)
flags = _quality.for_page(curator, page.blobs) if flagging else {}
if flagging:
    _quality.reject_flagged_button(curator, pager, page.blobs, flags)
suggesting, threshold = _suggest.controls(session)
found = _suggest.for_page(curator, page.blobs) if suggesting else {}
suggestions = _suggest.PageSuggestions(project, found, threshold) if found else None
if suggestions is not None:
    open_frames = _suggest.acceptable(
        page.blobs, {b.key: _gallery.state_of(curator, b, records.get(b.key)) for b in page.blobs}
    )
    offered = sum(1 for b in open_frames if suggestions.of(b) is not None)
    accept_column, count_column = st.columns([2, 7], vertical_alignment="center")
    accept_column.button(
        "Accept the page's suggestions",
        key=_keys.ACCEPT_PAGE,
        icon=":material/done_all:",
        disabled=not offered,
        on_click=_auth.guarded(_suggest.accept),
        args=(project, open_frames, found, threshold),
    )
    count_column.caption(
        f"{offered} of {len(open_frames)} frames not in the project have a suggestion at or above {threshold:.2f} "
        f"(iteration of the project's latest training); accepting picks them with the suggested "
        + ("boxes." if project.is_detection else "tags.")
    )

retag_clicked = False
if not project.is_detection:
    with st.expander("Re-tag images already pushed"):
        tag_names = [t.name for t in curator.tags()]
        add = st.multiselect("Add tags", tag_names, key=RETAG_ADD_KEY)
        remove = st.multiselect("Remove tags", tag_names, key=RETAG_REMOVE_KEY)
        retag_clicked = st.button("Re-tag selected", disabled=not picked or not (add or remove) or busy)
    if retag_clicked and not busy:
        _auth.require_reviewer()
        with _results.action_errors("Re-tagging"):
            items = picked.items()
            outcomes = curator.retag(items, add=add, remove=remove)
            skipped = [(o.name, str(o.outcome), o.reason) for o in outcomes if o.outcome == Outcome.SKIPPED]
            counts = {"retagged": len(outcomes) - len(skipped), str(Outcome.SKIPPED): len(skipped)}
            picked.settle(items, [(name, reason) for name, _, reason in skipped])
            _results.remember_result("Re-tag", {k: v for k, v in counts.items() if v}, skipped, failed=bool(skipped))
            pager.refresh()
            st.rerun()

if push and not busy:  # in a thread: clicking on meanwhile does not cut it short (see _jobs)
    _auth.require_reviewer()
    items = picked.items()
    bursts_known = session.known_bursts if collapsed else ()
    suggested_tags = _suggest.accepted_tags(project.id, items)  # read here: the push runs in a thread of its own
    _jobs.start_session_push(
        session,
        items,
        lambda progress: push_reviewed(
            curator,
            items,
            tags=chosen_tags,
            frame_tags=suggested_tags,
            boxes=with_boxes,
            bursts=bursts_known,
            every_frame=every_frame,
            progress=progress,
        ),
        actor=curator.actor,
    )
if (reject_clicked or restore_clicked or retag_clicked or push) and busy:
    st.info("A push of the selection is still going on: act again once it is over.", icon=":material/hourglass:")
if pushed := _jobs.finished_session_push(session, "Pushing"):
    with _results.action_errors("Pushing"):
        result = pushed.result()
        _annotate.after_push(project.id, pushed.items, result)
        failed = result.failed
        _suggest.after_push(project.id, [b for b in pushed.items if b.name not in {name for name, *_ in failed}])
        noted = [(o.name, str(o.outcome), o.reason) for o in result.outcomes if o.ok and o.reason]
        picked.settle(pushed.items, [(name, reason) for name, _, reason in failed])
        _results.remember_result("Push", outcome_counts(result.outcomes), failed + noted, failed=bool(failed))
        pager.refresh()
        st.rerun()

if (reject_clicked or restore_clicked) and not busy:
    _auth.require_reviewer()
    with _results.action_errors("Rejecting" if reject_clicked else "Restoring"):
        items = picked.items()
        decide = reject if reject_clicked else restore
        progress = _results.count_progress_bar("Rejecting" if reject_clicked else "Restoring")
        outcomes = decide(curator, items, progress=progress)
        problems = [(o.name, o.outcome, o.reason) for o in outcomes if not o.ok]
        picked.settle(items, [(name, reason) for name, _, reason in problems])
        title = "Reject" if reject_clicked else "Restore"
        _results.remember_result(title, outcome_counts(outcomes), problems, failed=bool(problems))
        pager.refresh()
        st.rerun()

_results.show_last_result()

# -- show: the page of tiles and the way to the next ------------------------------------------------------
matching = _filters.matching_count(curator, query)
_filters.pager_controls(pager, len(page.blobs), where="top", matching=matching)
if not page.blobs:
    st.info("No blob matches these filters on this page.", icon=":material/filter_alt_off:")
shown = _quality.shown(page.blobs, flags, only_flagged)
if only_flagged:
    st.caption(f"Showing the {len(shown)} of {len(page.blobs)} frames of this page flagged as asked.")
tiles = collapse(shown, bursts) if collapsed else shown
notes = {b.name: n for b in page.blobs if (n := _annotate.tile_note(project.id, b))} if project.is_detection else {}
_gallery.gallery(session, curator, tiles, records, thumbnails, notes=notes, suggestions=suggestions, flags=flags)
if len(tiles) > 12:
    _filters.pager_controls(pager, len(page.blobs), where="bottom", matching=matching)

if show_shortcuts:
    session.open_frame = None  # one dialog at a time: the list closes a larger view
    _keys.help_dialog()
else:
    _dialogs.open_larger_view(session, curator, project, page.blobs, records, thumbnails, bursts if collapsed else ())
