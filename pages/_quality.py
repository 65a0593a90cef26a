"""Quality flags on the Review page: frames a camera spoiled (out of focus, too dark, overexposed, low information)
found from their decoded pixels, shown as badges, used as a filter of the page, and rejected together after a
confirmation that says how many.

Not a page. The flags are measured when the reviewer asks for them ("Flag poor frames"): each frame of the page is
decrypted in memory once more and measured (`percept_core.quality`); the flags (scores and names, nothing
decrypted) are kept in this session's state for the frames seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

from pages import _auth, _results
from pages._session import Session
from percept_core import Curator, RetrainingBlob
from percept_core.blobs import map_bounded
from percept_core.quality import QualityFlag, QualityReport, assess_quality
from percept_core.review import Pager, outcome_counts, reject

ENABLED_KEY = "quality_enabled"
ONLY_KEY = "quality_only"
REPORTS_KEY = "quality_reports"
CONFIRMING_KEY = "quality_confirm_reject"

Flags = Mapping[tuple[str, str, str], frozenset[QualityFlag]]


def controls(session: Session) -> tuple[bool, list[QualityFlag]]:
    """The toggle that measures the page's frames, and the flags the page is narrowed to (none: every frame)."""
    session.kept(ENABLED_KEY, False)
    on_column, only_column = st.columns([2, 5], vertical_alignment="center")
    enabled = on_column.toggle(
        "Flag poor frames",
        key=ENABLED_KEY,
        on_change=_auth.guarded(session.keep),
        args=(ENABLED_KEY,),
        help="Measure each frame of the page for blur, darkness, overexposure and low information (decrypted in "
        "memory again, once a session)",
    )
    if not enabled:  # no control the reviewer cannot use (a disabled one is also hard to read)
        return False, []
    only = only_column.multiselect(
        "Show only frames flagged",
        list(QualityFlag),
        format_func=lambda flag: flag.label,
        key=ONLY_KEY,
        placeholder="Any: every frame of the page",
    )
    return True, only


def for_page(curator: Curator, blobs: Sequence[RetrainingBlob], *, max_concurrency: int = 4) -> Flags:
    """The flags of each frame of the page that could be measured (measured now if not yet this session)."""
    reports: dict[tuple[str, str, str], QualityReport | None] = st.session_state.setdefault(REPORTS_KEY, {})
    missing = [b for b in blobs if b.key not in reports]

    def measure(blob: RetrainingBlob) -> QualityReport:
        return assess_quality(curator.decrypt(blob), what=f"Blob {blob.name!r}")

    if missing:
        with st.spinner("Measuring the frames' quality…"):
            for blob, result in map_bounded(measure, missing, max_concurrency=max_concurrency):
                # A frame that cannot be decrypted has its reason on its tile already: no flag, not measured.
                reports[blob.key] = result if isinstance(result, QualityReport) else None
    return {b.key: report.flags for b in blobs if (report := reports.get(b.key)) is not None}


def shown(blobs: Sequence[RetrainingBlob], flags: Flags, only: Sequence[QualityFlag]) -> list[RetrainingBlob]:
    """The frames of the page with at least one of the flags asked for (every frame when none is asked for)."""
    if not only:
        return list(blobs)
    return [b for b in blobs if flags.get(b.key, frozenset()) & set(only)]


def reject_flagged_button(curator: Curator, pager: Pager, blobs: Sequence[RetrainingBlob], flags: Flags) -> None:
    """ "Reject flagged…" for the page's flagged frames; it opens the confirmation."""
    flagged = [b for b in blobs if flags.get(b.key)]
    if st.button(f"Reject flagged ({len(flagged)})…", icon=":material/block:", disabled=not flagged):
        st.session_state[CONFIRMING_KEY] = True
    if st.session_state.get(CONFIRMING_KEY) and flagged:
        _confirm_reject(curator, pager, flagged, flags)


def _stop_confirming() -> None:
    st.session_state[CONFIRMING_KEY] = False


@st.dialog("Reject flagged frames", on_dismiss=_stop_confirming)
def _confirm_reject(curator: Curator, pager: Pager, flagged: Sequence[RetrainingBlob], flags: Flags) -> None:
    _auth.require_reviewer()
    counts = {flag: sum(1 for b in flagged if flag in flags[b.key]) for flag in QualityFlag}
    frames = "frame" if len(flagged) == 1 else "frames"
    st.markdown(f"Reject the **{len(flagged)}** flagged {frames} of this page?")
    st.markdown("\n".join(f"- {flag.label}: {n}" for flag, n in counts.items() if n))
    st.caption("Rejected frames are never pushed; Restore brings them back.")
    confirm, cancel = st.columns(2)
    if confirm.button(f"Reject {len(flagged)} {frames}", type="primary", icon=":material/block:"):
        _auth.require_reviewer()
        with _results.action_errors("Rejecting"):
            outcomes = reject(curator, list(flagged))
            problems = [(o.name, o.outcome, o.reason) for o in outcomes if not o.ok]
            Session().selection.settle(list(flagged), [(name, reason) for name, _, reason in problems])
            _results.remember_result("Reject flagged", outcome_counts(outcomes), problems, failed=bool(problems))
            pager.refresh()
        _stop_confirming()
        st.rerun(scope="app")
    if cancel.button("Cancel"):
        _stop_confirming()
        st.rerun(scope="app")


def flag_labels(flags: frozenset[QualityFlag] | None) -> list[str]:
    return [flag.label for flag in QualityFlag if flags and flag in flags]
