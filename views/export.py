"""Export: the project's reviewed frames for Azure ML (AutoML for images), into a container of the storage account."""

import pandas as pd
import streamlit as st

from pages import _auth, _curator, _results
from pages._session import Session
from pages._text import md
from percept_core.exporting import Include, container_destination, export
from percept_core.exports import AzureMLDatastore

session = Session()
curator = _curator.curator(session)
project = _curator.project(curator)
st.title("Export")
st.caption(
    "Custom Vision retires on 2028-09-25; Azure ML's AutoML for images takes the same labels. The frames pushed "
    "to this project (or only the tagged ones; rejected and undecryptable frames never) go to a container of the "
    "storage account with their tags and boxes as reviewed, decrypted in memory: the images, a JSONL file and an "
    "MLTable per side of a train/validation split stratified by tag and model version. Running it again adds only "
    "new frames. COCO and YOLO files are written on your own machine by `percept-curator export --to coco|yolo`."
)

with st.form("export"):
    c = st.columns(3)
    container = c[0].text_input("Container", value="automl", help="created when missing")
    prefix = c[1].text_input("Path in the container", value="percept", help="the export goes under it")
    datastore = c[2].text_input("Azure ML datastore", value="percept_frames", help="the datastore serving it")
    include = st.radio(
        "Frames",
        list(Include),
        format_func=lambda choice: "every frame pushed" if choice == Include.PUSHED else "only tagged frames",
        horizontal=True,
    )
    validation = st.slider("Share for validation", 0.0, 0.5, 0.2, 0.05)
    go = st.form_submit_button("Export", type="primary", icon=":material/upload:")

if go:
    _auth.require_reviewer()
    with _results.action_errors("The export"), st.status("Exporting…") as status:
        try:
            store = AzureMLDatastore(datastore.strip())
        except ValueError as exc:
            st.error(md(str(exc)), icon=":material/error:")
            st.stop()
        destination = container_destination(curator.settings, container.strip(), prefix.strip())
        summary = export(
            curator,
            destination,
            format="azureml",
            include=include,
            validation_fraction=validation,
            datastore=store,
            progress=lambda done: status.update(label=f"Exporting… {done} frames read"),
        )
        status.update(label="Exported", state="complete")
    st.success(
        f"{summary.frames} frames in {md(summary.destination)} ({summary.added} new): "
        + ", ".join(f"{count} {side}" for side, count in sorted(summary.per_side.items())),
        icon=":material/check_circle:",
    )
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
