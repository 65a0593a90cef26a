"""Review: filter on metadata, page through decrypted thumbnails, pick, tag, push, reject or restore."""

import streamlit as st

from pages import _ui
from percept_core import CuratorError, TagNameError
from percept_core.review import outcome_counts, push_selected, reject, restore

_ui.through_app()

curator = _ui.curator()
project = _ui.project(curator)
picked = _ui.selection()
st.title("Review")

# -- load: one page of matching blobs (listed once) and its thumbnails (decrypted once a session) --------
query = _ui.review_filters(curator)
pager = _ui.session_pager(query)
try:
    page = pager.page(curator)
except CuratorError as exc:
    _ui.show_error("The blobs cannot be listed", exc)
    st.stop()
_ui.remember_models(page.blobs)
with st.spinner("Decrypting thumbnails…"):
    thumbnails = curator.previews(page.blobs, cache=_ui.preview_cache())
records = curator.records(page.blobs)  # after the previews: they note the blobs that cannot be decrypted


# -- act: selection, tags, push, reject, restore ---------------------------------------------------------
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
        "This is an object-detection project: its tags belong to regions, which are drawn in the Custom "
        "Vision portal until region drawing arrives here. Images are pushed untagged.",
        icon=":material/info:",
    )
else:
    tags_column, new_column, add_column = st.columns([4, 2, 1], vertical_alignment="bottom")
    tags_column.multiselect(
        "Tags", [t.name for t in curator.tags()], key="push_tags", placeholder="None: push untagged"
    )
    new_column.text_input("New tag", key="new_tag", placeholder="e.g. forklift")
    add_column.button("Add tag", on_click=add_tag, width="stretch")
if message := st.session_state.pop("tag_message", None):
    (st.error if message[0] == "error" else st.success)(message[1])
chosen_tags = [] if project.is_detection else st.session_state.get("push_tags", [])

buttons = st.columns(7)
buttons[0].button("Select page", on_click=picked.add, args=(page.blobs,))
buttons[1].button("Clear selection", on_click=picked.clear)
buttons[2].button("Select all matching", on_click=select_all_matching)
push = buttons[3].button("Push selected", type="primary", disabled=not picked)
reject_clicked = buttons[4].button("Reject selected", disabled=not picked)
restore_clicked = buttons[5].button("Restore", disabled=not picked)
buttons[6].button("Refresh", on_click=pager.refresh, help="List this page again: new uploads, others' decisions")
if note := st.session_state.pop("select_all_note", None):
    st.info(note, icon=":material/select_all:")
on_page = sum(1 for b in page.blobs if b.name in picked)
st.caption(
    f"{len(picked):,} selected ({on_page} on this page) · push "
    + (f"with tags {', '.join(chosen_tags)}" if chosen_tags else "untagged")
)

if not project.is_detection:
    with st.expander("Re-tag images already pushed"):
        tag_names = [t.name for t in curator.tags()]
        add = st.multiselect("Add tags", tag_names, key="retag_add")
        remove = st.multiselect("Remove tags", tag_names, key="retag_remove")
        retag_clicked = st.button("Re-tag selected", disabled=not picked or not (add or remove))
    if retag_clicked:
        with _ui.action_errors("Re-tagging"):
            outcomes = curator.retag(picked.items(), add=add, remove=remove)
            skipped = [(o.name, "skipped", o.reason) for o in outcomes if o.reason != "retagged"]
            counts = {"retagged": len(outcomes) - len(skipped), "skipped": len(skipped)}
            picked.keep_failed([(name, reason) for name, _, reason in skipped])
            _ui.remember_result("Re-tag", {k: v for k, v in counts.items() if v}, skipped, failed=bool(skipped))
            pager.refresh()
            st.rerun()

if push:
    with _ui.action_errors("Pushing"):
        items = picked.items()
        progress = _ui.push_progress_bar("Pushing", len(items))
        report = push_selected(curator, items, tags=chosen_tags, progress=progress)
        failed = [(o.name, str(o.outcome), o.reason) for o in report.outcomes if not o.ok]
        noted = [(o.name, str(o.outcome), o.reason) for o in report.outcomes if o.ok and o.reason]
        picked.keep_failed([(name, reason) for name, _, reason in failed])
        _ui.remember_result("Push", outcome_counts(report.outcomes), failed + noted, failed=bool(failed))
        pager.refresh()
        st.rerun()

if reject_clicked or restore_clicked:
    with _ui.action_errors("Rejecting" if reject_clicked else "Restoring"):
        items = picked.items()
        decide = reject if reject_clicked else restore
        progress = _ui.count_progress_bar("Rejecting" if reject_clicked else "Restoring")
        outcomes = decide(curator, items, progress=progress)
        problems = [(o.name, o.outcome, o.reason) for o in outcomes if not o.ok]
        picked.keep_failed([(name, reason) for name, _, reason in problems])
        title = "Reject" if reject_clicked else "Restore"
        _ui.remember_result(title, outcome_counts(outcomes), problems, failed=bool(problems))
        pager.refresh()
        st.rerun()

_ui.show_last_result()

# -- show: the page of tiles and the way to the next ------------------------------------------------------
_ui.pager_controls(pager, len(page.blobs), key="top")
if not page.blobs:
    st.info("No blob matches these filters on this page.", icon=":material/filter_alt_off:")
_ui.gallery(curator, page.blobs, records, thumbnails)
if len(page.blobs) > 12:
    _ui.pager_controls(pager, len(page.blobs), key="bottom")
