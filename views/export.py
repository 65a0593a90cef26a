"""Export: the reviewed frames, or the Custom Vision project's images, for Azure ML, as COCO or as YOLO.

Azure ML's export runs in the background (the container holds it, the page may close); COCO and YOLO come as a
zip file the reviewer downloads, built in this session's memory: the server's disk never holds a decrypted frame.
"""

import pandas as pd
import streamlit as st

from pages import _auth, _curator, _jobs, _results
from pages._session import Session
from pages._text import md
from percept_core.exporting import ArchiveDestination, Destination, ExportSummary, Include, container_destination
from percept_core.exports import AzureMLDatastore
from percept_core.pipeline import BackgroundPush, CancelToken
from percept_core.targets import FORMAT_NAMES, DatasetTarget, TargetKind

TARGETS = {
    "azureml": FORMAT_NAMES["azureml"],
    "coco": f"{FORMAT_NAMES['coco']}, as a zip file",
    "yolo": f"{FORMAT_NAMES['yolo']}, as a zip file",
}
SOURCES = {
    "ledger": "the frames reviewed here",
    "project": "the Custom Vision project's images (migrate out)",
}

session = Session()
curator = _curator.curator(session)
project = _curator.project(curator)
jobs = _jobs.push_jobs()
st.title("Export")
st.caption(
    "Custom Vision retires on 2028-09-25; Azure ML's AutoML for images, COCO and YOLO tools take the same labels. "
    "The frames pushed to this project (or only the tagged ones; rejected and undecryptable frames never) are "
    "written with their tags and boxes as reviewed, decrypted in memory, with a train/validation split stratified "
    "by tag and model version; or every image of the Custom Vision project with the labels it has there. Running "
    "it again adds only what is new."
)


@st.fragment(run_every=1.0)
def live_progress() -> None:
    _auth.require_reviewer()  # a fragment reruns without the app's entry
    job = jobs.current(project.id, TargetKind.EXPORT)
    if job is None or not job.running:
        st.rerun()  # finished: the whole page shows the result
    progress = job.progress
    done, total = (progress.done, progress.total) if progress else (0, None)
    written = progress.written if progress else 0
    share = min(1.0, done / total) if total else 0.0
    read = f"{done:,} of {total:,}" if total else f"{done:,}"
    st.progress(share, text=f"Exporting: {read} frames read · {written:,} new images written")
    _jobs.cancel_button(
        job, "Cancelling: the images being written finish, then the annotation files name what was written."
    )


def show_job(job: BackgroundPush) -> None:
    if job.error is not None:
        _results.show_error(f"{job.description} stopped with an error", job.error)
    if job.report is not None:
        show_summary(job.report)


def show_summary(summary: ExportSummary) -> None:
    sides = ", ".join(f"{count} {side}" for side, count in sorted(summary.per_side.items()))
    verdict = "Cancelled" if summary.cancelled else "Exported"
    (st.warning if summary.cancelled else st.success)(
        f"**{verdict}**: {summary.frames} frames in {md(summary.destination)} ({summary.added} new)"
        + (f": {sides}." if sides else "."),
        icon=":material/check_circle:",
    )
    if summary.cancelled:
        st.caption("Run it again to add the rest: what was written stays, nothing is written twice.")
    st.dataframe(
        pd.DataFrame(sorted(summary.per_tag.items()), columns=["tag", "frames"]), hide_index=True, key="per_tag"
    )
    if summary.left_out:
        st.warning(f"{len(summary.left_out)} frames left out", icon=":material/warning:")
        st.dataframe(
            pd.DataFrame([(item.frame_id, item.reason) for item in summary.left_out], columns=["frame", "why"]),
            hide_index=True,
            key="left_out",
        )


job = jobs.current(project.id, TargetKind.EXPORT)
if job is not None and job.running:
    st.subheader(job.description)
    live_progress()
    st.stop()

c = st.columns(2)
source = c[0].radio("From", list(SOURCES), format_func=SOURCES.get)
target = c[1].radio("To", list(TARGETS), format_func=TARGETS.get)
with st.form("export"):
    container = prefix = datastore = ""
    if target == "azureml":
        c = st.columns(3)
        container = c[0].text_input("Container", value="automl", help="of the storage account; created when missing")
        prefix = c[1].text_input("Path in the container", value="percept", help="the export goes under it")
        datastore = c[2].text_input("Azure ML datastore", value="percept_frames", help="the datastore serving it")
    include = st.radio(
        "Frames",
        list(Include),
        format_func=lambda choice: "every frame pushed" if choice == Include.PUSHED else "only tagged frames",
        horizontal=True,
        disabled=source == "project",
        help="A migration takes every image of the project.",
    )
    validation = st.slider("Share for validation", 0.0, 0.5, 0.2, 0.05)
    go = st.form_submit_button("Export", type="primary", icon=":material/upload:")


def target_at(destination: Destination, store: AzureMLDatastore | None = None) -> DatasetTarget:
    return DatasetTarget(curator, destination, target, include, validation, store, migrate=source == "project")


if go and target == "azureml":
    _auth.require_reviewer()
    with _results.action_errors("The export"):
        try:
            store = AzureMLDatastore(datastore.strip())
        except ValueError as exc:
            st.error(md(str(exc)), icon=":material/error:")
            st.stop()
        jobs.start(target_at(container_destination(curator.settings, container.strip(), prefix.strip()), store))
        st.rerun()
elif go:  # a zip file for this reviewer's browser, built in this session
    _auth.require_reviewer()
    session.export_archive = None
    archive = ArchiveDestination(project.name, target)
    with _results.action_errors("The export"), st.status("Exporting…") as status:
        summary = target_at(archive).run(
            lambda p: status.update(label=f"Exporting… {p.done:,} frames read"), CancelToken()
        )
        status.update(label="Exported", state="complete")
        session.export_archive = (archive.describe(), archive.archive(), summary)

if target != "azureml" and session.export_archive is not None:
    file_name, data, summary = session.export_archive
    show_summary(summary)
    st.download_button(
        f"Download {file_name}", data, file_name=file_name, mime="application/zip", icon=":material/download:"
    )
elif job is not None:
    st.subheader(f"Last run: {job.description}")
    show_job(job)
