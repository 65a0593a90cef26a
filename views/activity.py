"""Activity: what the ledger recorded, where the Custom Vision project stands, and training it."""

from datetime import datetime, time

import pandas as pd
import streamlit as st

from pages import _auth, _curator, _results
from pages._session import Session
from pages._text import md
from percept_core import CuratorError
from percept_core.activity import COLUMNS, activity_rows, outcomes, project_state, pushes_per_day
from percept_core.csvsafe import safe_csv_bytes
from percept_core.errors import TrainingNotPossible

session = Session()
curator = _curator.curator(session)
project = _curator.project(curator)
st.title("Activity")

# -- the ledger's events ------------------------------------------------------------------------------------
events = pd.DataFrame(activity_rows(curator.ledger, project_id=project.id), columns=COLUMNS)
st.subheader("Ledger events")
c = st.columns([2, 2, 2, 3, 2])
who = c[0].multiselect("Who", sorted(events["who"].unique()), key="a_who", placeholder="Anyone")
actions = c[1].multiselect("What", sorted(events["action"].unique()), key="a_action", placeholder="Anything")
results = c[2].multiselect("Outcome", sorted(events["outcome"].unique()), key="a_outcome", placeholder="Any")
blob = c[3].text_input("Blob contains", key="a_blob")
since = c[4].date_input("Since", value=None, key="a_since", format="YYYY-MM-DD")
shown = events
if who:
    shown = shown[shown["who"].isin(who)]
if actions:
    shown = shown[shown["action"].isin(actions)]
if results:
    shown = shown[shown["outcome"].isin(results)]
if blob.strip():
    shown = shown[shown["blob"].str.contains(blob.strip(), case=False, regex=False)]
if since is not None:
    start = datetime.combine(since, time.min).astimezone()
    shown = shown[shown["when"] >= start]
st.caption(f"{len(shown):,} of {len(events):,} events, newest first")
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=320,
    column_config={
        "when": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm:ss"),
        "image_id": st.column_config.TextColumn("Custom Vision image id"),
    },
)
st.download_button("Download CSV", safe_csv_bytes(shown), file_name="percept-curator-activity.csv", mime="text/csv")

records = shown.to_dict("records")
left, right = st.columns(2)
with left:
    st.markdown("**Images pushed per day, by model version**")
    per_day = pd.DataFrame(pushes_per_day(records), columns=["day", "model_version", "pushes"])
    per_day["day"] = per_day["day"].astype(str)
    if per_day.empty:
        st.caption("No image pushed among these events.")
    else:
        st.bar_chart(per_day, x="day", y="pushes", color="model_version", height=260)
with right:
    st.markdown("**Outcomes**")
    tally = pd.DataFrame(outcomes(records), columns=["action", "outcome", "events"])
    tally["what"] = tally["action"] + ": " + tally["outcome"]
    if tally.empty:
        st.caption("No events.")
    else:
        st.bar_chart(tally, x="what", y="events", horizontal=True, height=260)

# -- the Custom Vision project and training ---------------------------------------------------------------------
st.subheader(f"Custom Vision project: {md(project.name)}")
try:
    state = project_state(curator)
except CuratorError as exc:
    _results.show_error("The project's state cannot be read", exc)
    st.stop()
m = st.columns(6)
m[0].metric("Tagged images", f"{state.tagged:,}")
m[1].metric("Untagged images", f"{state.untagged:,}")
m[2].metric("Images / quota", f"{state.images:,} / {state.quota:,}" if state.quota else f"{state.images:,}")
m[3].metric("Tags", len(state.tags))
m[4].metric("Iterations", len(state.iterations))
m[5].metric(
    "Predictions (30 days)",
    f"{curator.predictions_made(i.id for i in state.iterations):,}",
    help="Suggestions the project's trained iterations made for frames under review: one prediction transaction "
    "each, billed as predictions and paced under the key's quota like every call",
)
left, right = st.columns(2)
left.dataframe(
    pd.DataFrame([(t.name, t.type, t.image_count) for t in state.tags], columns=["tag", "type", "images"]),
    hide_index=True,
    width="stretch",
)
right.dataframe(
    pd.DataFrame(
        [(i.name, i.status, i.created, i.trained_at) for i in state.iterations],
        columns=["iteration", "status", "created", "trained at"],
    ),
    hide_index=True,
    width="stretch",
)


@st.fragment(run_every=2.0)
def training_progress(iteration_id: str) -> None:
    """The iteration's status every two seconds until it finishes; then the whole page shows the result."""
    _auth.require_reviewer()  # a fragment reruns without the app's entry
    try:
        info = curator.customvision.iteration(iteration_id)
    except CuratorError as exc:
        _results.show_error("The iteration's status cannot be read", exc)
        return
    if info.finished:
        st.rerun()
    started = f", started {info.created.astimezone():%H:%M:%S}" if info.created else ""
    st.info(f"**{md(info.name)}**: {md(info.status)}{started}", icon=":material/model_training:")


if st.button("Train now", type="primary", icon=":material/model_training:", disabled=state.training is not None):
    _auth.require_reviewer()
    try:
        session.training_id = curator.train().id
    except TrainingNotPossible as exc:
        st.error(f"**Custom Vision cannot train the project now:** {md(exc.message)}", icon=":material/block:")
    except CuratorError as exc:
        _results.show_error("Training could not start", exc)
    else:
        st.rerun()
iteration_id = state.training.id if state.training else session.training_id
if iteration_id:
    iteration = next((i for i in state.iterations if i.id == iteration_id), None)
    if iteration is not None and iteration.finished:
        st.success(f"**{md(iteration.name)}** finished training: {md(iteration.status)}.", icon=":material/task_alt:")
    else:
        training_progress(iteration_id)
