"""Review: filter on metadata, page through decrypted thumbnails, pick, tag or box, push, reject or restore."""

import streamlit as st

from pages import _annotate, _auth, _keys, _ui
from pages._text import md
from percept_core import CuratorError, TagNameError
from percept_core.bursts import WINDOW_SECONDS, collapse, find_bursts, page_hashes
from percept_core.review import outcome_counts, push_reviewed, reject, restore

_ui.through_app()

curator = _ui.curator()
project = _ui.project(curator)
picked = _ui.selection()
st.title("Review")

# -- load: one page of matching blobs (listed once), its thumbnails and hashes (decrypted once a session) --
query = _ui.review_filters(curator)
pager = _ui.session_pager(query, project.id)
try:
    page = pager.page(curator)
except CuratorError as exc:
    _ui.show_error("The blobs cannot be listed", exc)
    st.stop()
_ui.remember_models(page.blobs)
distance = curator.settings.near_duplicate_distance
with st.spinner("Decrypting thumbnails…"):
    cache = _ui.preview_cache()
    hashes = page_hashes(curator, page.blobs, cache=cache)  # one decrypt a frame: its hashes and its thumbnail
    thumbnails = curator.previews(page.blobs, cache=cache)
records = curator.records(page.blobs)  # after the previews: they note the blobs that cannot be decrypted
bursts = find_bursts(page.blobs, hashes, max_distance=distance)
_ui.remember_bursts(page.blobs, bursts, max_distance=distance)


# -- act: selection, tags, push, reject, restore ---------------------------------------------------------
# Callbacks run before app.py's gate: each is wrapped in _auth.guarded (it acts only while the reviewer is still
# let in), and each action below asks again (_auth.require_reviewer) at the moment it acts.
def select_all_matching() -> None:
    matching = list(curator.blobs(pager.query.blob_filter, states=pager.query.states))
    picked.add(matching)
    st.session_state["select_all_note"] = f"All {len(matching):,} matching blobs are selected."


def add_tag() -> None:
    name = st.session_state.get("new_tag", "")
    try:
        tag = curator.create_tag(name)
    except TagNameError as exc:
        st.session_state["tag_message"] = ("error", str(exc))
        return
    except CuratorError as exc:
        st.session_state["tag_message"] = ("error", f"The tag could not be created: {exc}")
        return
    st.session_state["push_tags"] = [*st.session_state.get("push_tags", []), tag.name]
    st.session_state["new_tag"] = ""
    st.session_state["tag_message"] = ("success", f"Tag {tag.name!r} created and chosen.")


if project.is_detection:
    st.multiselect("Tags", [], key="push_tags", disabled=True)
    st.info(
        "This is an object-detection project: its tags belong to boxes. Open a frame's larger view (or focus "
        "its tile and press `o`) to draw boxes and tag them; they go up with the frame when it is pushed. "
        "Frames without boxes are pushed untagged.",
        icon=":material/info:",
    )
else:
    tags_column, new_column, add_column = st.columns([4, 2, 1], vertical_alignment="bottom")
    tags_column.multiselect(
        "Tags", [t.name for t in curator.tags()], key="push_tags", placeholder="None: push untagged"
    )
    new_column.text_input("New tag", key="new_tag", placeholder="e.g. forklift")
    add_column.button("Add tag", on_click=_auth.guarded(add_tag), width="stretch")
if message := st.session_state.pop("tag_message", None):
    (st.error if message[0] == "error" else st.success)(md(message[1]))
chosen_tags = [] if project.is_detection else st.session_state.get("push_tags", [])

buttons = st.columns([2, 2, 3, 2, 2, 2, 2, 2])
buttons[0].button("Select page", key="select_page", on_click=_auth.guarded(picked.add), args=(page.blobs,))
buttons[1].button("Clear selection", key="clear_selection", on_click=_auth.guarded(picked.clear))
buttons[2].button("Select all matching", on_click=_auth.guarded(select_all_matching))
busy = _ui.session_pushing()  # a push of this session's is going on: one action at a time
push = buttons[3].button("Push selected", key="push_selected", type="primary", disabled=not picked or busy)
reject_clicked = buttons[4].button("Reject selected", key="reject_selected", disabled=not picked or busy)
restore_clicked = buttons[5].button("Restore", disabled=not picked or busy)
buttons[6].button(
    "Refresh", on_click=_auth.guarded(pager.refresh), help="List this page again: new uploads, others' decisions"
)
with buttons[7]:
    show_shortcuts = _keys.help_button()
if note := st.session_state.pop("select_all_note", None):
    st.info(note, icon=":material/select_all:")
on_page = sum(1 for b in page.blobs if b.name in picked)
with_boxes = _annotate.boxes_to_push(project.id, picked.items()) if project.is_detection else {}
st.caption(
    f"{len(picked):,} selected ({on_page} on this page) · push "
    + (f"with tags {md(', '.join(chosen_tags))}" if chosen_tags else "untagged")
    + (f" · {len(with_boxes)} with boxes to push" if with_boxes else "")
)


def keep(key: str) -> None:
    """Remember a choice beyond this page: Streamlit forgets a widget's state on pages that do not show it."""
    st.session_state[f"kept:{key}"] = st.session_state[key]


for choice, default in (("collapse_bursts", True), ("push_every_frame", False)):
    if choice not in st.session_state:
        st.session_state[choice] = st.session_state.get(f"kept:{choice}", default)
collapse_column, every_column, about_column = st.columns([2, 2, 5], vertical_alignment="center")
collapsed = collapse_column.toggle(
    "Collapse near-duplicates",
    key="collapse_bursts",
    on_change=_auth.guarded(keep),
    args=("collapse_bursts",),
    help="Show each burst of near-identical frames as one tile",
)
every_frame = every_column.checkbox(
    "Push every frame of a burst",
    key="push_every_frame",
    on_change=_auth.guarded(keep),
    args=("push_every_frame",),
    disabled=not collapsed,
    help="Off: a burst's tile pushes the frame that stands for it and marks the others near-duplicates "
    "(Restore undoes that). On: every frame of the burst is pushed.",
)
more = sum(len(b.others) for b in bursts)
about_column.caption(
    f"A burst: frames of one model version within {WINDOW_SECONDS:.0f} s whose perceptual hashes differ in at "
    f"most **{distance}** bits (setting `percept_near_duplicate_distance`); its least confident frame stands for "
    f"it. This page: {len(bursts)} burst{'' if len(bursts) == 1 else 's'} ({more} more frames)."
)

retag_clicked = False
if not project.is_detection:
    with st.expander("Re-tag images already pushed"):
        tag_names = [t.name for t in curator.tags()]
        add = st.multiselect("Add tags", tag_names, key="retag_add")
        remove = st.multiselect("Remove tags", tag_names, key="retag_remove")
        retag_clicked = st.button("Re-tag selected", disabled=not picked or not (add or remove) or busy)
    if retag_clicked and not busy:
        _auth.require_reviewer()
        with _ui.action_errors("Re-tagging"):
            items = picked.items()
            outcomes = curator.retag(items, add=add, remove=remove)
            skipped = [(o.name, "skipped", o.reason) for o in outcomes if o.reason != "retagged"]
            counts = {"retagged": len(outcomes) - len(skipped), "skipped": len(skipped)}
            picked.settle(items, [(name, reason) for name, _, reason in skipped])
            _ui.remember_result("Re-tag", {k: v for k, v in counts.items() if v}, skipped, failed=bool(skipped))
            pager.refresh()
            st.rerun()

if push and not busy:  # in a thread: clicking on meanwhile does not cut it short (see _ui.start_session_push)
    _auth.require_reviewer()
    items = picked.items()
    bursts_known = _ui.known_bursts() if collapsed else ()
    _ui.start_session_push(
        items,
        lambda progress: push_reviewed(
            curator,
            items,
            tags=chosen_tags,
            boxes=with_boxes,
            bursts=bursts_known,
            every_frame=every_frame,
            progress=progress,
        ),
        actor=curator.actor,
    )
if (reject_clicked or restore_clicked or retag_clicked or push) and busy:
    st.info("A push of the selection is still going on: act again once it is over.", icon=":material/hourglass:")
if pushed := _ui.finished_session_push("Pushing"):
    with _ui.action_errors("Pushing"):
        result = pushed.result()
        _annotate.after_push(project.id, pushed.items, result)
        failed = result.failed
        noted = [(o.name, str(o.outcome), o.reason) for o in result.outcomes if o.ok and o.reason]
        picked.settle(pushed.items, [(name, reason) for name, _, reason in failed])
        _ui.remember_result("Push", outcome_counts(result.outcomes), failed + noted, failed=bool(failed))
        pager.refresh()
        st.rerun()

if (reject_clicked or restore_clicked) and not busy:
    _auth.require_reviewer()
    with _ui.action_errors("Rejecting" if reject_clicked else "Restoring"):
        items = picked.items()
        decide = reject if reject_clicked else restore
        progress = _ui.count_progress_bar("Rejecting" if reject_clicked else "Restoring")
        outcomes = decide(curator, items, progress=progress)
        problems = [(o.name, o.outcome, o.reason) for o in outcomes if not o.ok]
        picked.settle(items, [(name, reason) for name, _, reason in problems])
        title = "Reject" if reject_clicked else "Restore"
        _ui.remember_result(title, outcome_counts(outcomes), problems, failed=bool(problems))
        pager.refresh()
        st.rerun()

_ui.show_last_result()

# -- show: the page of tiles and the way to the next ------------------------------------------------------
_ui.pager_controls(pager, len(page.blobs), key="top")
if not page.blobs:
    st.info("No blob matches these filters on this page.", icon=":material/filter_alt_off:")
tiles = collapse(page.blobs, bursts) if collapsed else page.blobs
notes = {b.name: n for b in page.blobs if (n := _annotate.tile_note(project.id, b))} if project.is_detection else {}
_ui.gallery(curator, tiles, records, thumbnails, notes=notes)
if len(tiles) > 12:
    _ui.pager_controls(pager, len(page.blobs), key="bottom")

if show_shortcuts:
    st.session_state.pop(_ui.OPEN_KEY, None)  # one dialog at a time: the list closes a larger view
    _keys.help_dialog()
else:
    _ui.open_larger_view(curator, project, page.blobs, records, thumbnails, bursts if collapsed else ())
