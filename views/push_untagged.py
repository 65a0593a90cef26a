"""Push untagged: one click counts (a dry run) and asks to confirm what it counted, then every blob not yet in the
project goes, untagged, in the background. The Dry run alone counts and shows, for a reviewer who only looks."""

import pandas as pd
import streamlit as st

from pages import _auth, _curator, _dialogs, _jobs, _results
from pages._session import Session
from pages._text import md
from percept_core.csvsafe import safe_csv_bytes
from percept_core.jobs import interrupted
from percept_core.pipeline import BackgroundPush, DryRunReport, Outcome
from percept_core.review import outcome_counts

session = Session()
curator = _curator.curator(session)
project = _curator.project(curator)
jobs = _jobs.push_jobs()
st.title("Push untagged")
st.caption(
    f"Every blob that is not yet in **{md(project.name)}** and not rejected goes there as an untagged image, "
    "as the original Azure Function did. The push counts first and asks you to confirm; nothing is pushed twice."
)


@st.fragment(run_every=1.0)
def live_progress() -> None:
    _auth.require_reviewer()  # a fragment reruns without the app's entry
    job = jobs.current(project.id)
    if job is None or not job.running:
        st.rerun()  # finished: the whole page shows the result
    progress = job.progress
    done = progress.done if progress else 0
    total = job.total or 0
    rate = progress.images_per_second if progress else 0.0
    st.progress(min(1.0, done / total) if total else 0.0, text=f"Pushing: {done:,}/{total:,} · {rate:.1f} images/s")
    counts = dict(progress.counts) if progress else {}
    for column, outcome in zip(st.columns(len(Outcome)), Outcome, strict=True):
        column.metric(outcome.capitalize(), f"{counts.get(outcome, 0):,}")
    _jobs.cancel_button(job, "Cancelling: the batches in flight finish first.")


def show_run(job: BackgroundPush) -> None:
    if job.error is not None:
        _results.show_error("The run stopped with an error", job.error)
    report = job.report
    if report is None:
        return
    counts = ", ".join(f"{n:,} {outcome}" for outcome, n in outcome_counts(report.outcomes).items()) or "nothing"
    verdict = "Cancelled" if report.cancelled else "Finished"
    (st.warning if report.cancelled or report.failed else st.success)(
        f"**{verdict}** in {report.seconds:.1f} s: {counts} ({report.images_per_second:.1f} images/s).",
        icon=":material/task_alt:",
    )
    rows = pd.DataFrame(report.rows(), columns=["blob", "outcome", "reason", "image_id", "model_version", "fitted"])
    st.dataframe(rows, hide_index=True, width="stretch", height=300)
    st.download_button(
        "Download results (CSV)", safe_csv_bytes(rows), file_name=f"push-all-{report.run_id}.csv", mime="text/csv"
    )


def show_dry_run(report: DryRunReport) -> None:
    headroom = "unknown" if report.headroom is None else f"{report.headroom:,}"
    metrics = {
        "Eligible": report.eligible,
        "Already pushed": report.already_pushed,
        "Rejected": report.rejected,
        "Cannot decrypt": sum(report.undecryptable.values()),
        "Duplicates by content": report.duplicates_by_content,
        "Near duplicates": report.near_duplicates,
    }
    columns = st.columns(len(metrics) + 1)
    for column, (label, value) in zip(columns[:-1], metrics.items(), strict=True):
        column.metric(label, f"{value:,}")
    columns[-1].metric("Project headroom", headroom)
    table = [
        ("Blobs listed", report.listed),
        ("Eligible (will be pushed)", report.eligible),
        ("Already pushed", report.already_pushed),
        ("Rejected", report.rejected),
        ("Near duplicates of a burst", report.near_duplicates),
        ("Being pushed by another run", report.in_progress),
        ("Duplicates by content", report.duplicates_by_content),
        *((f"Cannot decrypt: {reason}", n) for reason, n in sorted(report.undecryptable.items())),
        ("Changed since listed (run the dry run again)", report.stale),
        ("Eligible, contents not read yet (checked while pushing)", report.unchecked),
        ("Images in the project", report.project_images),
        ("Project image quota", report.project_quota),
        ("Headroom", report.headroom),
    ]
    left, right = st.columns(2)
    left.dataframe(
        pd.DataFrame(table, columns=["what", "count"]).astype({"count": "Int64"}), hide_index=True, width="stretch"
    )
    by_version = pd.DataFrame(sorted(report.eligible_by_version.items()), columns=["model_version", "eligible"])
    by_day = pd.DataFrame(
        sorted((str(day) if day.year > 1 else "unknown", n) for day, n in report.eligible_by_day.items()),
        columns=["day", "eligible"],
    )
    with right:
        st.markdown("**Eligible per model version**")
        st.bar_chart(by_version, x="model_version", y="eligible", x_label="model version", height=260)
    st.markdown("**Eligible per capture day**")
    st.bar_chart(by_day, x="day", y="eligible", height=220)


# -- load: a run of this process, or one a stopped process left behind ----------------------------------------
job = jobs.current(project.id)
running = job is not None and job.running
stale = [] if running else interrupted(curator)
if stale:
    st.warning(
        f"**An interrupted run was detected:** {len(stale):,} blobs were being pushed when its process stopped. "
        "Push all untagged resumes it: they are pushed or recognised as already there, never twice.",
        icon=":material/restart_alt:",
    )

# -- show and act ---------------------------------------------------------------------------------------------
if running:
    st.subheader("Pushing all untagged")
    live_progress()
    st.stop()

indexed = curator.source.built() is not None
deep = indexed and st.toggle(
    "Read every eligible blob's content in the dry run",
    help="The blob index counts at once from metadata and the ledger; the push reads each blob anyway, so "
    "undecryptable blobs and duplicates by content are reported there. This reads them now instead.",
)
with st.container(horizontal=True):
    look = st.button("Dry run", icon=":material/fact_check:", help="Count what a push would do, and push nothing")
    push = st.button(
        "Push all untagged",
        type="primary",
        icon=":material/cloud_upload:",
        help="Counts as the dry run does, then asks you to confirm what it counted",
    )
if look or push:
    _auth.require_reviewer()
    status = st.status("Dry run: listing and checking blobs…")
    line = status.empty()
    report = curator.push_all_untagged(
        dry_run=True,
        deep=deep or not indexed,
        progress=lambda p: line.caption(f"{p.done:,} blobs listed, {p.counts['hashed']:,} checked"),
    )
    status.update(label="Dry run finished", state="complete")
    session.set_dry_run(project.id, report)
    session.confirming_push = push

dry_run = session.dry_run(project.id)
if dry_run is not None:
    st.subheader("Dry run")
    show_dry_run(dry_run)
if dry_run is not None and session.confirming_push:  # open until confirmed or dismissed, whatever reruns meanwhile
    _dialogs.confirm_push_all(curator, project, jobs, dry_run)

if job is not None:
    st.subheader("Last run")
    show_run(job)
