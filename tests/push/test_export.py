"""`percept-curator export`: a project's reviewed frames written as COCO, YOLO or Azure ML files, from the ledger
and the container, decrypted in memory; private on disk; adding only what is new when run again."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import yaml
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from pycocotools.coco import COCO

from percept_core import Curator
from percept_core.blobs import blob_service
from percept_core.boxes import Box, save_boxes
from percept_core.errors import ExportError
from percept_core.exporting import WRITERS, ArchiveDestination, ExportProgress, FolderDestination, Include, export
from percept_core.exports import AzureMLDatastore
from percept_core.pipeline import CancelToken
from tests.conftest import REPO


@pytest.fixture
def reviewed(demo, stack, project_id, run_cli):
    """Six demo frames pushed tagged (four "person", two "product"), one rejected, the rest untouched."""
    names = [b.name for b in Curator(stack.settings()).blobs() if b.name not in demo.bad.values()]
    for tag, chosen in (("person", names[:4]), ("product", names[4:6])):
        assert run_cli("push", "--tag", tag, *chosen, custom_vision_project_id=project_id).returncode == 0
    assert run_cli("reject", names[6], custom_vision_project_id=project_id).returncode == 0
    return names


def _export(run_cli, project_id, *args):
    result = run_cli("--json", "export", *args, custom_vision_project_id=project_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_coco_export_loads_and_holds_exactly_the_pushed_frames_privately(reviewed, run_cli, project_id, tmp_path):
    out = tmp_path / "coco"
    summary = _export(run_cli, project_id, "--to", "coco", "--out", str(out))
    assert summary["frames"] == 6 and summary["added"] == 6
    assert summary["per_tag"] == {"person": 4, "product": 2}
    assert sum(summary["per_side"].values()) == 6
    images, tags = [], []
    for side in summary["per_side"]:
        coco = COCO(str(out / "annotations" / f"instances_{side}.json"))
        for image in coco.dataset["images"]:
            assert (out / "images" / side / image["file_name"]).stat().st_size > 0
            images.append(image["file_name"])
            tags += [coco.cats[a["category_id"]]["name"] for a in coco.imgToAnns[image["id"]]]
    assert len(images) == 6 and sorted(tags) == ["person"] * 4 + ["product"] * 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.rglob("*") if p.is_file())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in out.rglob("*") if p.is_dir())

    again = _export(run_cli, project_id, "--to", "coco", "--out", str(out))
    assert again["frames"] == 6 and again["added"] == 0  # nothing new: nothing written twice
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["frames"]) == 6


def test_tagged_frames_only_when_asked(reviewed, run_cli, project_id, tmp_path):
    untagged = reviewed[7:9]
    assert run_cli("push", *untagged, custom_vision_project_id=project_id).returncode == 0
    everything = _export(run_cli, project_id, "--to", "coco", "--out", str(tmp_path / "all"))
    tagged = _export(run_cli, project_id, "--to", "coco", "--out", str(tmp_path / "tagged"), "--include", "tagged")
    assert everything["frames"] == 8 and tagged["frames"] == 6
    assert tagged["per_tag"] == everything["per_tag"] == {"person": 4, "product": 2}


def test_azure_ml_export_writes_images_jsonl_and_mltable_to_the_container(reviewed, run_cli, project_id, stack):
    summary = _export(
        run_cli,
        project_id,
        "--to",
        "azureml",
        "--container",
        "automl",
        "--prefix",
        "percept/v1",
        "--datastore",
        "frames",
    )
    assert summary["frames"] == 6
    container = blob_service(stack.settings()).get_container_client("automl")
    names = {b.name for b in container.list_blobs(name_starts_with="percept/v1/")}
    assert len([n for n in names if n.startswith("percept/v1/images/")]) == 6
    lines = []
    for side in summary["per_side"]:
        table = yaml.safe_load(container.download_blob(f"percept/v1/{side}/MLTable").readall())
        assert table["paths"] == [{"file": f"./{side}_annotations.jsonl"}]
        jsonl = container.download_blob(f"percept/v1/{side}/{side}_annotations.jsonl").readall().decode()
        lines += [json.loads(line) for line in jsonl.splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert line["image_url"].startswith("azureml://datastores/frames/paths/percept/v1/images/")
        assert line["image_url"].split("/paths/", 1)[1] in names
        assert set(line["label"]) <= {"person", "product"}


def test_what_cannot_be_exported_is_refused_with_a_reason(reviewed, run_cli, project_id, tmp_path):
    yolo = run_cli("export", "--to", "yolo", "--out", str(tmp_path / "y"), custom_vision_project_id=project_id)
    assert yolo.returncode == 2 and "YOLO label files hold boxes" in yolo.stderr
    inside = run_cli("export", "--to", "coco", "--out", str(REPO / "exported"), custom_vision_project_id=project_id)
    assert inside.returncode == 2 and "inside the repository" in inside.stderr
    assert not (REPO / "exported").exists()
    no_store = run_cli("export", "--to", "azureml", "--container", "x", custom_vision_project_id=project_id)
    assert no_store.returncode == 2 and "--datastore" in no_store.stderr


def test_yolo_export_holds_the_boxes_as_the_reviewer_saved_them(demo, stack, run_cli, tmp_path):
    """Boxes saved in the review are kept in the ledger: the export writes those, even where the project's
    copy was changed elsewhere since (here: a box deleted in the portal)."""
    project = stack.new_project("export detection", detection=True, tags=("person", "product"))
    settings = stack.settings(custom_vision_project_id=project, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    curator = Curator(settings, actor="reviewer")
    blobs = [b for b in curator.blobs() if b.name not in demo.bad.values()][:2]
    saved = {
        blobs[0].name: [Box("person", 0.1, 0.2, 0.3, 0.4)],
        blobs[1].name: [Box("product", 0.5, 0.5, 0.25, 0.25), Box("person", 0.0, 0.0, 0.5, 0.5)],
    }
    for blob in blobs:
        assert save_boxes(curator, blob, saved[blob.name]).image_id
    trainer = stack.trainer()
    image = trainer.get_images_by_ids(project, [curator.records([blobs[0]])[blobs[0].key].image_id])[0]
    trainer.delete_image_regions(project, [region.region_id for region in image.regions])

    out = tmp_path / "yolo"
    summary = _export(run_cli, project, "--to", "yolo", "--out", str(out), "--validation", "0")
    assert summary["frames"] == 2 and summary["per_tag"] == {"person": 2, "product": 1}
    classes = (out / "classes.txt").read_text().splitlines()
    manifest = json.loads((out / "manifest.json").read_text())["frames"]
    written = {}
    for frame_id, entry in manifest.items():
        lines = (out / "labels" / entry["side"] / (entry["file"].rsplit(".", 1)[0] + ".txt")).read_text().splitlines()
        boxes = []
        for line in lines:
            index, cx, cy, w, h = line.split()
            cx, cy, w, h = map(float, (cx, cy, w, h))
            boxes.append((classes[int(index)], cx - w / 2, cy - h / 2, w, h))
        written[frame_id.split("/", 1)[1].rsplit("@", 1)[0]] = sorted(boxes)
    for name, boxes in saved.items():
        expected = sorted((b.tag, b.left, b.top, b.width, b.height) for b in boxes)
        assert [tag for tag, *_ in written[name]] == [tag for tag, *_ in expected]
        for got, want in zip(written[name], expected, strict=True):
            assert got[1:] == pytest.approx(want[1:], abs=1e-6)


def test_migrate_writes_every_image_of_the_project_with_its_tags(reviewed, run_cli, project_id, stack, tmp_path):
    """A project's labelled history out of Custom Vision: its images as the service serves them, its tags."""
    out = tmp_path / "migrated"
    summary = json.loads(
        run_cli("--json", "migrate", "--to", "coco", "--out", str(out), custom_vision_project_id=project_id).stdout
    )
    assert summary["frames"] == 6 and summary["per_tag"] == {"person": 4, "product": 2}
    served = {image.id: image for image in stack.trainer().get_tagged_images(project_id, take=256)}
    found = 0
    for side in summary["per_side"]:
        coco = COCO(str(out / "annotations" / f"instances_{side}.json"))
        for image in coco.dataset["images"]:
            found += 1
            assert (out / "images" / side / image["file_name"]).stat().st_size > 0
            tags = sorted(coco.cats[a["category_id"]]["name"] for a in coco.imgToAnns[image["id"]])
            assert tags in (["person"], ["product"])
    assert found == len(served) == 6
    again = json.loads(
        run_cli("--json", "migrate", "--to", "coco", "--out", str(out), custom_vision_project_id=project_id).stdout
    )
    assert again["added"] == 0 and again["frames"] == 6


def test_a_tampered_manifest_is_refused_before_any_name_in_it_becomes_a_path(reviewed, run_cli, project_id, tmp_path):
    out = tmp_path / "coco"
    _export(run_cli, project_id, "--to", "coco", "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    first = next(iter(manifest["frames"]))
    manifest["frames"][first]["file"] = "../../escaped.jpg"
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("export", "--to", "coco", "--out", str(out), custom_vision_project_id=project_id)
    assert result.returncode == 2 and "cannot read" in result.stderr
    assert not (tmp_path / "escaped.jpg").exists() and "Traceback" not in result.stderr


def _curator(stack, project_id, tmp_path) -> Curator:
    """In this process, on the ledger `run_cli` writes (the `reviewed` fixture's pushes are in it)."""
    settings = stack.settings(custom_vision_project_id=project_id, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    return Curator(settings, actor="reviewer")


def _files_in(out) -> set[str]:
    return {p.name for p in (out / "images").rglob("*") if p.is_file()}


def _coco_files(out, sides) -> set[str]:
    return {
        image["file_name"]
        for side in sides
        for image in COCO(str(out / "annotations" / f"instances_{side}.json")).dataset["images"]
    }


def test_a_cancelled_export_names_exactly_what_it_wrote_and_the_next_run_adds_the_rest(
    reviewed, stack, project_id, tmp_path
):
    """Cancelled while it writes, an export's annotation files and manifest hold the images it wrote, no more and
    no fewer; the frames an earlier run exported stay in it; the next run adds only the rest."""
    curator = _curator(stack, project_id, tmp_path)
    out = tmp_path / "coco"
    first = export(curator, FolderDestination(out), format="coco", include=Include.TAGGED, validation_fraction=0.5)
    assert (first.frames, first.cancelled) == (6, False)
    more = [b for b in curator.blobs() if b.name in reviewed[7:]]
    assert curator.push(more).counts["pushed"] == len(more) > 2 * WRITERS
    total = 6 + len(more)

    cancel = CancelToken()
    seen: list[ExportProgress] = []

    def cancel_at_first_write(progress: ExportProgress) -> None:
        seen.append(progress)
        if progress.written:
            cancel.cancel()

    stopped = export(curator, FolderDestination(out), format="coco", progress=cancel_at_first_write, cancel=cancel)
    # The writes already handed out finish (2 x WRITERS at most), none starts after: fewer than the new frames.
    assert stopped.cancelled and 0 < stopped.added <= 2 * WRITERS and stopped.frames == 6 + stopped.added
    assert seen[-1].total == total and max(p.done for p in seen) == total
    manifest = json.loads((out / "manifest.json").read_text())["frames"]
    assert len(manifest) == stopped.frames
    assert _files_in(out) == {entry["file"] for entry in manifest.values()} == _coco_files(out, stopped.per_side)

    rest = export(curator, FolderDestination(out), format="coco")
    assert not rest.cancelled and rest.frames == total and rest.added == total - stopped.frames
    assert len(_files_in(out)) == total == len(_coco_files(out, rest.per_side))
    logged = sorted(curator.ledger.events(action="export"), key=lambda event: event.id)
    assert [event.details["cancelled"] for event in logged] == [False, True, False]
    assert [event.details["added"] for event in logged] == [6, stopped.added, rest.added]
    assert logged[-1].details["manifest_sha256"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


def test_an_export_cancelled_before_it_reads_keeps_every_frame_exported_before(reviewed, stack, project_id, tmp_path):
    curator = _curator(stack, project_id, tmp_path)
    out = tmp_path / "azureml"
    destination = FolderDestination(out)
    store = AzureMLDatastore("frames")
    assert export(curator, destination, format="azureml", datastore=store).frames == 6
    assert curator.push([b for b in curator.blobs() if b.name in reviewed[7:9]]).counts["pushed"] == 2
    cancel = CancelToken()
    cancel.cancel()
    stopped = export(curator, destination, format="azureml", datastore=store, cancel=cancel)
    assert stopped.cancelled and (stopped.frames, stopped.added) == (6, 0)
    lines = [
        line
        for side in stopped.per_side
        for line in (out / side / f"{side}_annotations.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 6 and len(list((out / "images").iterdir())) == 6


def test_an_archive_larger_than_a_download_may_be_is_refused_and_nothing_is_recorded(
    reviewed, stack, project_id, tmp_path
):
    curator = _curator(stack, project_id, tmp_path)
    with pytest.raises(ExportError, match="larger than a download may be") as refused:
        export(curator, ArchiveDestination("Shelf / v1", "coco", max_bytes=100_000), format="coco")
    assert "percept-curator export --out" in refused.value.hint
    assert curator.ledger.events(action="export") == []
    whole = ArchiveDestination("Shelf / v1", "coco")
    assert export(curator, whole, format="coco").frames == 6
    with zipfile.ZipFile(io.BytesIO(whole.archive())) as archive:
        names = archive.namelist()
    assert whole.describe() == "Shelf_v1-coco.zip" and all(name.startswith("Shelf_v1-coco/") for name in names)
    assert len([name for name in names if "/images/" in name]) == 6 and "Shelf_v1-coco/manifest.json" in names


def test_a_sas_token_in_the_storage_setting_never_reaches_the_output_or_the_ledger(
    reviewed, stack, run_cli, project_id, tmp_path
):
    """With a SAS connection string (a secret in the URL of every client it makes), the export's destination is
    shown, printed and recorded without it."""
    service = blob_service(stack.settings())
    sas = generate_account_sas(
        service.account_name,
        account_key=service.credential.account_key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True, create=True, add=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    connection = f"BlobEndpoint={service.url.rstrip('/')};SharedAccessSignature={sas}"
    signatures = (parse_qs(sas)["sig"][0], sas.split("sig=", 1)[1].split("&", 1)[0])  # decoded, as in the URL
    result = run_cli(
        "--json",
        "export",
        "--to",
        "azureml",
        "--container",
        "sas-export",
        "--datastore",
        "frames",
        custom_vision_project_id=project_id,
        mm_storage_connection_string=connection,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 6 and summary["destination"].endswith("/sas-export")
    assert not [sig for sig in signatures if sig in result.stdout + result.stderr]
    ledger = _curator(stack, project_id, tmp_path).ledger
    [event] = ledger.events(action="export")
    assert event.details["destination"] == summary["destination"]
    recorded = json.dumps([e.details for e in ledger.events()])
    assert not [sig for sig in signatures if sig in recorded]
