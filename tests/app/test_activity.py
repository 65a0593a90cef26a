"""The Activity page: the ledger's events (filterable, downloadable, charted), the project's state, training."""

from __future__ import annotations

from datetime import date, timedelta

from percept_core.review import push_selected, reject
from tests.app.conftest import button, csv_rows, wait_until

PAGE = "views/activity.py"


def good_blobs(curator, demo):
    return [b for b in curator.blobs() if b.name not in demo.bad.values()]


def test_events_say_who_did_what_to_which_blob_and_can_be_filtered(app_env, demo, downloads):
    curator = app_env.curator.with_actor("rae@contoso.example")
    blobs = good_blobs(curator, demo)
    report = push_selected(curator, blobs[:2], tags=["person"])
    reject(curator, blobs[2:5])

    at = app_env.open(PAGE)
    events = at.dataframe[0].value
    pushes = events[events["action"] == "push"]
    assert set(pushes["blob"]) == {b.name for b in blobs[:2]}
    assert set(pushes["who"]) == {"rae@contoso.example"} and set(pushes["outcome"]) == {"pushed"}
    assert set(pushes["image_id"]) == {o.image_id for o in report.outcomes}
    assert set(pushes["model_version"]) == {f"{b.model_name} {b.model_version}" for b in blobs[:2]}
    assert (events["action"] == "reject").sum() == 3

    # The CSV holds the events as the ledger recorded them: one row each, the table's columns.
    header, rows = csv_rows(downloads["percept-curator-activity.csv"])
    assert header == list(events.columns)
    recorded = curator.ledger.events()
    assert len(rows) == len(recorded) == len(events)
    assert sorted((r["action"], r["blob"], r["who"]) for r in rows) == sorted(
        (e.action, e.blob, e.actor) for e in recorded
    )
    pushed_ids = {o.name: o.image_id for o in report.outcomes}
    assert {(r["blob"], r["outcome"], r["image_id"]) for r in rows if r["action"] == "push"} == {
        (name, "pushed", image_id) for name, image_id in pushed_ids.items()
    }
    assert {r["blob"] for r in rows if r["action"] == "reject"} == {b.name for b in blobs[2:5]}
    assert {r["model_version"] for r in rows if r["action"] == "push"} == {
        f"{b.model_name} {b.model_version}" for b in blobs[:2]
    }

    at.multiselect(key="a_action").set_value(["reject"]).run()
    shown = at.dataframe[0].value
    assert len(shown) == 3 and set(shown["blob"]) == {b.name for b in blobs[2:5]}
    _, rows = csv_rows(downloads["percept-curator-activity.csv"])  # the download follows the filter
    assert sorted(r["blob"] for r in rows) == sorted(b.name for b in blobs[2:5]) and {r["action"] for r in rows} == {
        "reject"
    }
    assert at.caption[0].value.startswith(f"3 of {len(events)} events")
    at.multiselect(key="a_action").set_value([]).run()
    at.text_input(key="a_blob").input(blobs[0].name).run()
    assert list(at.dataframe[0].value["blob"]) == [blobs[0].name]
    assert [d.label for d in at.download_button] == ["Download CSV"]
    at.text_input(key="a_blob").input("").run()
    at.date_input(key="a_since").set_value(date.today() + timedelta(days=1)).run()
    assert len(at.dataframe[0].value) == 0
    at.date_input(key="a_since").set_value(date.today() - timedelta(days=1)).run()
    assert len(at.dataframe[0].value) == len(events)


def test_charts_show_pushes_per_day_by_model_version_and_outcomes(app_env, demo):
    curator = app_env.curator.with_actor("rae@contoso.example")
    push_selected(curator, good_blobs(curator, demo)[:4])

    at = app_env.open(PAGE)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    assert "model_version" in charts[0].proto.spec and "pushes" in charts[0].proto.spec


def test_an_empty_ledger_says_so_instead_of_drawing_empty_charts(app_env):
    at = app_env.open(PAGE)
    assert len(at.get("vega_lite_chart")) == 0
    assert at.caption[0].value.startswith("0 of 0 events")
    assert {"No image pushed among these events.", "No events."} <= {c.value for c in at.caption}


def test_project_state_and_train_now_say_why_it_cannot_then_train(app_env, demo):
    at = app_env.open(PAGE)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Tagged images"] == "0" and shown["Untagged images"] == "0" and shown["Tags"] == "3"

    button(at, "Train now").click().run()
    assert at.error[0].value.startswith("**Custom Vision cannot train the project now:** Classification training")

    curator = app_env.curator.with_actor("rae@contoso.example")
    blobs = good_blobs(curator, demo)
    push_selected(curator, blobs[:5], tags=["person"])
    push_selected(curator, blobs[5:10], tags=["product"])
    push_selected(curator, blobs[10:12])
    at.run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Tagged images"] == "10" and shown["Untagged images"] == "2"
    assert shown["Images / quota"] == "12 / 100,000"
    tags = dict(zip(at.dataframe[1].value["tag"], at.dataframe[1].value["images"], strict=True))
    assert tags == {"empty-shelf": 0, "person": 5, "product": 5}

    button(at, "Train now").click().run()
    assert not at.error
    iterations = at.dataframe[2].value
    assert list(iterations["iteration"]) == ["Iteration 1"]
    assert any("**Iteration 1**" in m.value for m in [*at.info, *at.success])  # its progress, or its end

    def completed():
        at.run()
        return next((s.value for s in at.success if "finished training" in s.value), None)

    assert wait_until(completed, what="training to finish") == "**Iteration 1** finished training: Completed."
    assert list(at.dataframe[2].value["status"]) == ["Completed"]
    assert [e.action for e in curator.ledger.events(action="train")] == ["train"]
