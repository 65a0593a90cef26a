"""The Review page's class balance: per tag, the project's images and the frames this push would add, as a chart
and a table, and a warning when the push would make the imbalance worse past `percept_max_class_imbalance`.

Not a page. The project's counts are one call (the service counts each tag's images); counting them per model
version lists the project's tagged images, so it waits for the reviewer to ask. Either is kept for this session
for COUNTS_SECONDS, and counted again once an action changed the selection (a push settles it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from pages._session import Session
from pages._text import md
from percept_core import Curator, CuratorError
from percept_core.balance import (
    ProjectTagCounts,
    TagBalance,
    class_balance,
    imbalance_warning,
    project_tag_counts,
    project_tag_counts_by_version,
)
from percept_core.blobs import RetrainingBlob
from percept_core.customvision import ProjectInfo

# Long enough that ticking tiles does not call Custom Vision each time, short enough that another reviewer's
# pushes show within it.
COUNTS_SECONDS = 30
BY_VERSION_KEY = "balance_by_version"
_COUNTED_KEY = "balance:counted"
IN_PROJECT = "in the project"
IN_PUSH = "in this push"


@dataclass(frozen=True)
class _Counted:
    """The project's counts as last read, and for what: (project id, selection generation, per model version)."""

    key: tuple[str, int, bool]
    read_at: float  # time.monotonic()
    counts: ProjectTagCounts


def balance_panel(
    curator: Curator,
    project: ProjectInfo,
    selected_blobs: Sequence[RetrainingBlob],
    chosen_tags: Sequence[str],
    frame_tags: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """The "Class balance" expander, open when pushing the selection with `chosen_tags` (or a frame's own accepted
    tags, `frame_tags`) would warn."""
    by_version = bool(st.session_state.get(BY_VERSION_KEY, False))
    try:
        counts = _project_counts(curator, project.id, by_version=by_version)
    except CuratorError as exc:
        st.caption(f"The class balance cannot be counted: {md(exc.message)}")
        return
    rows = class_balance(counts, selected_blobs, chosen_tags, frame_tags)
    warning = imbalance_warning(rows, curator.settings.max_class_imbalance)
    with st.expander("Class balance", expanded=warning is not None, icon=":material/balance:"):
        if warning:
            st.warning(md(warning), icon=":material/warning:")
        if not rows:
            st.caption("The project has no tags yet.")
            return
        st.bar_chart(
            _by_tag(rows),
            x="tag",
            y="frames",
            color="where",
            horizontal=True,
            height=80 + 30 * len(rows),
        )
        table = pd.DataFrame(
            {
                "tag": md(row.tag),  # a table's cells are Markdown: tags show as written
                IN_PROJECT: row.in_project,
                IN_PUSH: row.in_selection,
                "after the push": row.after_push,
            }
            for row in rows
        )
        st.table(table.set_index("tag"))
        st.caption(
            f"Images per tag in the project, and the frames selected for this push (at most: frames already pushed "
            f"are skipped). A warning comes when a push takes the most-tagged tag past "
            f"{curator.settings.max_class_imbalance:g} times the least-tagged (setting "
            f"`percept_max_class_imbalance`) and further than now."
        )
        st.toggle(
            "Per model version",
            key=BY_VERSION_KEY,
            help="Lists the project's tagged images (one call per 256) to count them by the model version that "
            "captured them",
        )
        if by_version:
            _per_model_version(rows)


def _project_counts(curator: Curator, project_id: str, *, by_version: bool) -> ProjectTagCounts:
    """The project's counts, read again after COUNTS_SECONDS or once an action changed the selection."""
    key = (project_id, Session().selection.generation, by_version)
    counted: _Counted | None = st.session_state.get(_COUNTED_KEY)
    if counted is not None and counted.key == key and time.monotonic() - counted.read_at < COUNTS_SECONDS:
        return counted.counts
    client = curator.customvision
    counts = project_tag_counts_by_version(client) if by_version else project_tag_counts(client)
    st.session_state[_COUNTED_KEY] = _Counted(key, time.monotonic(), counts)
    return counts


def _by_tag(rows: Sequence[TagBalance]) -> pd.DataFrame:
    """One row a tag and where its frames are, for a stacked bar a tag."""
    return pd.DataFrame(
        [
            {"tag": row.tag, "where": where, "frames": frames}
            for row in rows
            for where, frames in ((IN_PROJECT, row.in_project), (IN_PUSH, row.in_selection))
        ]
    )


def _per_model_version(rows: Sequence[TagBalance]) -> None:
    """Each tag's frames after the push by model version: a stacked bar a tag, and the table behind it."""
    table = pd.DataFrame(
        [
            {
                "tag": row.tag,
                "model version": version,
                IN_PROJECT: (row.project_by_version or {}).get(version, 0),
                IN_PUSH: row.selection_by_version.get(version, 0),
            }
            for row in rows
            for version in sorted({*(row.project_by_version or {}), *row.selection_by_version})
        ],
        columns=["tag", "model version", IN_PROJECT, IN_PUSH],
    )
    if table.empty:
        st.caption("No tagged image in the project and none in this push.")
        return
    table["after the push"] = table[IN_PROJECT] + table[IN_PUSH]
    st.bar_chart(table, x="tag", y="after the push", color="model version", horizontal=True)
    shown = table.assign(**{"tag": table["tag"].map(md), "model version": table["model version"].map(md)})
    st.table(shown.set_index(["tag", "model version"]))
