"""The Export page: the project's pushed frames for Azure ML, into a container, with a summary per tag."""

from __future__ import annotations

import json

from percept_core.blobs import blob_service
from tests.app.conftest import button, texts

PAGE = "views/export.py"


def _push_tagged(app_env, count: int, tag: str) -> list[str]:
    curator = app_env.curator
    blobs = [b for b in curator.blobs() if b.has_model][:count]
    report = curator.push(blobs, tags=[tag])
    assert report.counts.get("pushed") == count
    return [b.name for b in blobs]


def test_export_writes_the_pushed_frames_for_azure_ml_and_says_what_it_wrote(app_env):
    _push_tagged(app_env, 3, "person")
    at = app_env.open(PAGE)
    at.text_input[0].set_value("apptest-automl")
    at.text_input[1].set_value("review/v1")
    at.text_input[2].set_value("frames_store")
    button(at, "Export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("3 frames in ") and "(3 new)" in at.success[0].value
    assert at.dataframe[0].value.to_dict("records") == [{"tag": "person", "frames": 3}]

    container = blob_service(app_env.stack.settings()).get_container_client("apptest-automl")
    names = {b.name for b in container.list_blobs(name_starts_with="review/v1/")}
    assert len([n for n in names if n.startswith("review/v1/images/")]) == 3
    manifest = json.loads(container.download_blob("review/v1/manifest.json").readall())
    assert len(manifest["frames"]) == 3 and manifest["format"] == "azureml"
    assert not [s for s in (app_env.stack.training_key,) if s in texts(at)]

    button(at, "Export").click().run()  # again: nothing new
    assert "(0 new)" in at.success[0].value
    events = [e for e in app_env.curator.ledger.events(action="export")]
    assert len(events) == 2


def test_a_datastore_name_azure_ml_would_refuse_is_said_and_nothing_is_written(app_env):
    _push_tagged(app_env, 1, "person")
    at = app_env.open(PAGE)
    at.text_input[0].set_value("apptest-refused")
    at.text_input[2].set_value("no spaces/or slashes")
    button(at, "Export").click().run()
    assert at.error and not at.success
    container = blob_service(app_env.stack.settings()).get_container_client("apptest-refused")
    assert not container.exists()
