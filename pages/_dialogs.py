"""The dialogs: a frame's larger view (the annotator for object detection) and the confirmation of Push all
untagged.

Not a page. A dialog reruns without the app's entry, so each asks who is acting again
(`_auth.require_reviewer`) before it reads or writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from pages import _annotate, _auth
from pages._gallery import TILE_COLUMNS, state_of, tile_alt
from pages._session import Session
from pages._text import md
from percept_core import Curator, CuratorError, RetrainingBlob
from percept_core.bursts import Burst
from percept_core.customvision import ProjectInfo
from percept_core.jobs import PushJobs, expected_items
from percept_core.ledger import BlobRecord
from percept_core.pipeline import DryRunReport
from percept_core.state import BlobState
from percept_core.targets import CustomVisionTarget

CLOSE_VIEW_KEY = "close_view"


def _close() -> None:
    Session().open_frame = None


def open_larger_view(
    session: Session,
    curator: Curator,
    project: ProjectInfo,
    blobs: Sequence[RetrainingBlob],
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnails: dict[tuple[str, str, str], bytes | CuratorError],
    bursts: Sequence[Burst] = (),
) -> None:
    """The larger view of the frame the reviewer opened on this page: it stays open across reruns until closed."""
    name = session.open_frame
    blob = next((b for b in blobs if b.name == name), None)
    if blob is None:
        session.open_frame = None
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
    _auth.require_reviewer()
    st.markdown(f"**{md(blob.name)}**")
    state = state_of(curator, blob, record)
    if project.is_detection:
        _annotate.annotator(curator, project, blob, record)
    else:
        try:
            alt = tile_alt(blob, state, frames=len(burst) if burst else 1)
            st.image(curator.decrypt(blob), width="stretch", alt=alt)
        except CuratorError as exc:
            st.error(f"**{md(exc.reason)}**  \n{md(exc)}", icon=":material/broken_image:")
    if burst is not None:
        _burst_strip(curator, burst, thumbnails or {})
    facts: dict[str, Any] = {
        "state": state.label,
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
    if st.button("Close", key=CLOSE_VIEW_KEY):
        _close()
        st.rerun()


def _burst_strip(curator: Curator, burst: Burst, thumbnails: dict[tuple[str, str, str], bytes | CuratorError]) -> None:
    """The other frames of the burst this frame stands for (it is the least confident of them)."""
    st.markdown(f"**Stands for {len(burst)} near-identical frames.** The others:")
    records = curator.records(list(burst.others))
    for column, other in zip(st.columns(TILE_COLUMNS), burst.others[:TILE_COLUMNS], strict=False):
        with column:
            small = thumbnails.get(other.key)
            state = state_of(curator, other, records.get(other.key))
            if isinstance(small, bytes):
                st.image(small, width="stretch", alt=tile_alt(other, state))
            st.caption(f"{md(other.name)} · {state.label}")
    if len(burst.others) > TILE_COLUMNS:
        st.caption(f"… and {len(burst.others) - TILE_COLUMNS} more.")


def _stop_confirming() -> None:
    Session().confirming_push = False


@st.dialog("Confirm push", on_dismiss=_stop_confirming)
def confirm_push_all(curator: Curator, project: ProjectInfo, jobs: PushJobs, report: DryRunReport) -> None:
    """Push all untagged, once the reviewer confirms what the dry run of their click counted: how many go (by
    model version), how many are left out and why, how many are read only while pushing."""
    _auth.require_reviewer()
    images = "image" if report.eligible == 1 else "images"
    if report.eligible == 0:
        st.markdown(f"Nothing to push to **{md(project.name)}**: every blob is there already or left out.")
    else:
        st.markdown(
            f"Push **{report.eligible:,}** {images} untagged to **{md(project.name)}** ({md(project.kind)})?  \n"
            "The run goes on in the background if you close this tab."
        )
        if report.eligible_by_version:
            st.markdown("**By model version**\n\n" + _count_list(sorted(report.eligible_by_version.items())))
    skipped = _skipped(report)
    if skipped:
        st.markdown(f"**Left out: {sum(n for _, n in skipped):,}**\n\n{_count_list(skipped)}")
    unchecked = report.unchecked + report.stale
    if unchecked:
        st.markdown(
            f"**Not checked yet: {unchecked:,}**. The push reads them first: one it cannot decrypt, or that "
            "duplicates an image, is reported and not pushed.\n\n"
            + _count_list(
                [("contents not read (a quick count)", report.unchecked), ("changed while counted", report.stale)]
            )
        )
    st.caption("Nothing is pushed twice: each blob is claimed in the ledger before it goes, once in the project.")
    if report.headroom is not None and report.eligible > report.headroom:
        st.warning(f"The project has room for {report.headroom:,} more images only; the rest will fail.")
    if report.eligible and st.button(f"Push {report.eligible:,} {images}", type="primary"):
        _auth.require_reviewer()
        jobs.start(CustomVisionTarget(curator), total=expected_items(report))
        session = Session()
        session.set_dry_run(project.id, None)  # counted before this run: a new dry run counts again
        session.confirming_push = False
        st.rerun()
    if st.button("Cancel" if report.eligible else "Close"):
        _stop_confirming()
        st.rerun()


def _skipped(report: DryRunReport) -> list[tuple[str, int]]:
    """What the push leaves out, and why: only the reasons that hold a blob."""
    reasons = [
        ("already in the project", report.already_pushed),
        (BlobState.REJECTED.label, report.rejected),
        ("near duplicates of a burst", report.near_duplicates),
        ("being pushed by another run", report.in_progress),
        ("duplicates by content", report.duplicates_by_content),
        *((f"cannot decrypt: {reason}", n) for reason, n in sorted(report.undecryptable.items())),
    ]
    return [(reason, n) for reason, n in reasons if n]


def _count_list(counts: Sequence[tuple[str, int]]) -> str:
    """A Markdown list of `what: n`, the names escaped to show as written; the zero counts left out."""
    return "\n".join(f"- {md(what)}: **{n:,}**" for what, n in counts if n)
