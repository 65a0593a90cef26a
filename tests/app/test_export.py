"""The Export page: the reviewed frames (or the Custom Vision project's images) for Azure ML, as COCO or as YOLO,
run in the background with progress, and a summary per tag."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

from pycocotools.coco import COCO

from percept_core.blobs import blob_service
from tests.app.conftest import button, texts, wait_until
from tests.conftest import REPO

PAGE = "views/export.py"


def _push_tagged(app_env, count: int, tag: str) -> list[str]:
    curator = app_env.curator
    blobs = [b for b in curator.blobs() if b.has_model][:count]
    report = curator.push(blobs, tags=[tag])
    assert report.counts.get("pushed") == count
    return [b.name for b in blobs]


def _verdict(at) -> str | None:
    """The last run's verdict once the page shows it (polling the page as a reviewer would reload it)."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return next((m.value for m in [*at.success, *at.warning] if m.value.startswith(("**Exported**", "**Cancel"))), None)


def _export(at) -> str:
    button(at, "Export").click().run()
    return wait_until(lambda: _verdict(at), what="the export to finish")


def _radio(at, label: str):
    [found] = [r for r in at.radio if r.label == label]
    return found


def test_export_writes_the_pushed_frames_for_azure_ml_and_says_what_it_wrote(app_env):
    _push_tagged(app_env, 3, "person")
    at = app_env.open(PAGE)
    at.text_input[0].set_value("apptest-automl")
    at.text_input[1].set_value("review/v1")
    at.text_input[2].set_value("frames_store")
    verdict = _export(at)
    assert verdict.startswith("**Exported**: 3 frames in ") and "(3 new)" in verdict
    assert at.dataframe[0].value.to_dict("records") == [{"tag": "person", "frames": 3}]

    container = blob_service(app_env.stack.settings()).get_container_client("apptest-automl")
    names = {b.name for b in container.list_blobs(name_starts_with="review/v1/")}
    assert len([n for n in names if n.startswith("review/v1/images/")]) == 3
    manifest_bytes = container.download_blob("review/v1/manifest.json").readall()
    manifest = json.loads(manifest_bytes)
    assert len(manifest["frames"]) == 3 and manifest["format"] == "azureml"
    assert not [s for s in (app_env.stack.training_key,) if s in texts(at)]

    assert "(0 new)" in _export(at)  # again: nothing new
    events = sorted(app_env.curator.ledger.events(action="export"), key=lambda event: event.id)
    assert [event.details["added"] for event in events] == [3, 0]
    assert events[-1].details["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()


def test_a_datastore_name_azure_ml_would_refuse_is_said_and_nothing_is_written(app_env):
    _push_tagged(app_env, 1, "person")
    at = app_env.open(PAGE)
    at.text_input[0].set_value("apptest-refused")
    at.text_input[2].set_value("no spaces/or slashes")
    button(at, "Export").click().run()
    assert at.error and not at.success
    container = blob_service(app_env.stack.settings()).get_container_client("apptest-refused")
    assert not container.exists()


def _unzipped(data: bytes, into) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(into)
        return {name: archive.read(name) for name in archive.namelist()}


def test_coco_comes_as_a_zip_download_and_the_server_writes_nothing(app_env, downloads, tmp_path):
    _push_tagged(app_env, 2, "product")
    at = app_env.open(PAGE)
    _radio(at, "To").set_value("coco").run()
    assert not at.text_input  # no container, no folder: the reviewer's browser gets the file
    verdict = _export(at)
    assert verdict.startswith("**Exported**: 2 frames in ") and "(2 new)" in verdict
    [(file_name, data)] = downloads.items()
    assert re.fullmatch(r"[A-Za-z0-9_-]+-coco\.zip", file_name)
    files = _unzipped(data, tmp_path)
    root = tmp_path / file_name.removesuffix(".zip")
    images = []
    for side in ("train", "validation"):
        if (root / "annotations" / f"instances_{side}.json").exists():
            coco = COCO(str(root / "annotations" / f"instances_{side}.json"))
            images += [(side, image["file_name"]) for image in coco.dataset["images"]]
            assert {coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]} == {"product"}
    assert len(images) == 2 and all((root / "images" / side / name).is_file() for side, name in images)
    assert len([name for name in files if "/images/" in name]) == 2
    assert not list(REPO.glob("*-coco*")) and not list(Path.cwd().rglob("*.jpg"))
    assert [e.details["destination"] for e in app_env.curator.ledger.events(action="export")] == [file_name]


def test_a_custom_vision_project_migrates_out_from_the_page(app_env, downloads, tmp_path):
    """Every image of the project, with the tags it has there, read from Custom Vision."""
    _push_tagged(app_env, 2, "person")
    at = app_env.open(PAGE)
    _radio(at, "From").set_value("project").run()
    _radio(at, "To").set_value("coco").run()
    assert _radio(at, "Frames").disabled  # a migration takes every image of the project
    verdict = _export(at)
    images = app_env.project_images()
    assert verdict.startswith(f"**Exported**: {len(images)} frames in ") and len(images) == 2
    assert at.dataframe[0].value.to_dict("records") == [{"tag": "person", "frames": 2}]
    assert [e.outcome for e in app_env.curator.ledger.events(action="migrate")] == ["2 added, 2 in all"]
    [data] = downloads.values()
    files = _unzipped(data, tmp_path)
    assert len([name for name in files if "/images/" in name]) == 2
