"""The blob index in use: built by `percept-curator index`, read by list, count and push-all once built; a blob
changed or deleted after it was indexed is never pushed from its old row; a blob that arrives during a push-all is
pushed by the next run, once."""

from __future__ import annotations

import json
import uuid
from datetime import date

from azure.storage.blob import BlobServiceClient

from percept_core import Curator
from percept_core.blob_index import index_blob
from percept_core.blobs import BlobFilter
from percept_core.pipeline import STALE_REASON
from tests.support.frames import MODEL, jpeg, upload_frames

MODEL_METADATA = {"model_name": MODEL[0], "model_version": MODEL[1]}


def _json(run_cli, *args, **settings):
    result = run_cli("--json", *args, **settings)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cli_builds_the_index_and_list_and_count_read_it(stack, project_id, run_cli, container_name):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(700, 712)])
    upload_frames(stack, container_name, [jpeg(i) for i in range(712, 716)], model=("shelf", "2"))
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    listed = [row["name"] for row in _json(run_cli, "list", **settings)]
    assert _json(run_cli, "count", "--version", "2", **settings) == {"count": 4, "from": "listing"}

    built = _json(run_cli, "index", **settings)
    assert (built["listed"], built["added"], built["removed"]) == (16, 16, 0)
    assert _json(run_cli, "count", "--version", "2", **settings) == {"count": 4, "from": "index"}
    assert _json(run_cli, "count", **settings) == {"count": 16, "from": "index"}
    assert [row["name"] for row in _json(run_cli, "list", **settings)] == listed

    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    service.get_container_client(container_name).delete_blob(names[0])
    newer = upload_frames(stack, container_name, [jpeg(716)], start=names_time(names[-1]))
    # Until it is told, the index answers as it was built; a sync adds and removes only what changed.
    assert _json(run_cli, "count", **settings)["count"] == 16
    assert names[0] in {row["name"] for row in _json(run_cli, "list", **settings)}  # list reads the index
    again = _json(run_cli, "index", **settings)
    assert (again["added"], again["changed"], again["removed"]) == (1, 0, 1)
    assert {row["name"] for row in _json(run_cli, "list", **settings)} == (set(listed) - {names[0]}) | set(newer)


def names_time(name: str):
    """A capture time after the frame's (upload_frames names frames by their capture time)."""
    from datetime import datetime, timedelta

    return datetime.strptime(name.split("-", 1)[1][:19], "%Y-%m-%d-%H-%M-%S") + timedelta(minutes=1)


def test_a_row_whose_blob_changed_is_never_pushed_from_and_is_repaired(stack, make_curator, project_id, container_name):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(720, 724)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    curator.sync_index()
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        container_name
    )
    container.delete_blob(names[1])
    upload_frames(stack, container_name, [jpeg(799)], names=[names[2]])  # overwritten: a new etag, new pixels
    old_etag = curator.source.index.get(names[2]).etag

    report = curator.push_all_untagged()
    assert report.counts["pushed"] == 2 and report.counts["skipped"] == 2, report.counts
    assert {o.name: o.reason for o in report.outcomes if o.outcome == "skipped"} == dict.fromkeys(
        names[1:3], STALE_REASON
    )
    assert curator.source.index.get(names[1]) is None  # the deleted blob's row went with the attempt
    assert curator.source.index.get(names[2]).etag != old_etag  # the changed blob is indexed as it is now
    images = stack.trainer().get_untagged_images(project_id, take=50)
    assert len(images) == 2

    second = curator.push_all_untagged()
    assert second.counts["pushed"] == 1 and not second.counts.get("skipped")  # the new version, from its new row
    assert len(stack.trainer().get_untagged_images(project_id, take=50)) == 3


def test_a_blob_that_arrives_during_a_push_all_is_pushed_by_the_next_run_once(
    stack, make_curator, project_id, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(730, 736)])
    curator: Curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    curator.sync_index()
    arrived: list[str] = []

    def a_frame_arrives(progress) -> None:
        if not arrived:  # the device uploads, the Function indexes it (as its Event Grid trigger does)
            [name] = upload_frames(stack, container_name, [jpeg(737)], names=["01-2026-11-19-08-00-00.jpg.dec"])
            arrived.append(index_blob(curator.source.index, curator.data, name).name)

    first = curator.pipeline.push_all_untagged(None, actor="tester", progress=a_frame_arrives)
    assert arrived and first.counts["pushed"] in (6, 7)
    second = curator.push_all_untagged()
    assert first.counts["pushed"] + second.counts["pushed"] == 7
    assert curator.count(BlobFilter()) == 7 and curator.push_all_untagged(dry_run=True).eligible == 0
    assert len(stack.trainer().get_untagged_images(project_id, take=50)) == 7


def test_with_the_index_the_dry_run_reads_no_content_and_the_push_checks_it(
    stack, make_curator, project_id, container_name
):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(740, 748)])
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        container_name
    )
    container.upload_blob("50-2026-11-21-10-00-00.jpg.dec", b"\x01" * 400, metadata=MODEL_METADATA)  # tampered
    container.upload_blob("51-2026-11-21-10-00-01.jpg.dec", b"\x01" * 400)  # no metadata
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    assert curator.push([curator.blob(names[0])]).counts["pushed"] == 1
    curator.reject([curator.blob(names[1])])
    curator.sync_index()
    downloads = curator.data.downloads

    quick = curator.push_all_untagged(dry_run=True)
    assert curator.data.downloads == downloads  # not one blob read
    assert (quick.listed, quick.already_pushed, quick.rejected) == (10, 1, 1)
    assert (quick.eligible, quick.unchecked, dict(quick.undecryptable)) == (7, 7, {"missing metadata": 1})

    deep = curator.push_all_untagged(dry_run=True, deep=True)
    assert curator.data.downloads > downloads
    assert (deep.eligible, deep.unchecked, dict(deep.undecryptable)) == (6, 0, {"missing metadata": 1, "tampered": 1})

    pushed = curator.push_all_untagged()
    assert pushed.counts["pushed"] == 6 and pushed.counts["undecryptable"] == 2  # the tampered one, read now
    assert len(stack.trainer().get_untagged_images(project_id, take=50)) == 7


def test_on_the_shared_ledger_the_index_lives_in_table_storage_beside_it(
    stack, project_id, container_name, table_service
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(750, 755)])
    shared = {
        "custom_vision_project_id": project_id,
        "mm_telemetry_storage_container": container_name,
        "percept_ledger_table_connection_string": table_service.connection_string,
        "percept_ledger_table_prefix": f"t{uuid.uuid4().hex[:10]}",
    }
    curator = Curator(stack.settings(**shared), actor="tester")
    assert curator.count() is None  # nothing built yet
    assert curator.sync_index().added == 5
    other_host = Curator(stack.settings(**shared), actor="tester")
    assert other_host.count() == 5 and other_host.count(BlobFilter(model_versions=("nope",))) == 0
    quick = other_host.push_all_untagged(dry_run=True)
    assert (quick.eligible, quick.unchecked) == (5, 5) and other_host.data.downloads == 0
    assert other_host.push_all_untagged().counts["pushed"] == 5


def test_the_dry_run_counted_in_groups_agrees_with_the_walk_blob_by_blob(
    stack, make_curator, project_id, container_name
):
    """The index's grouped count (one query joined with the ledger) and the walk over each blob (the rules
    applied blob by blob) give the same report, with every state, a claim of another live run, missing metadata,
    a blob over the size limit and another model version in the container."""
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(760, 772)])
    upload_frames(stack, container_name, [jpeg(i) for i in range(772, 776)], model=("shelf", "2"))
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        container_name
    )
    container.upload_blob("52-2026-11-21-10-00-02.jpg.dec", b"\x01" * 400)  # no metadata
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name, percept_max_blob_bytes="100000")
    container.upload_blob("53-2026-11-21-10-00-03.jpg.dec", b"\x01" * 100_001, metadata=MODEL_METADATA)  # too large
    assert curator.push([curator.blob(n) for n in names[:2]]).counts["pushed"] == 2
    curator.reject([curator.blob(names[2])])
    curator.ledger.mark_near_duplicates([curator.blob(names[3]).key], of=curator.blob(names[4]).key, actor="t")
    held = curator.blob(names[5])
    curator.ledger.claim([held.key], project_id, curator.ledger.new_run_id(), actor="another run")
    curator.sync_index()

    grouped = curator.push_all_untagged(dry_run=True)
    walked = curator.pipeline.dry_run(BlobFilter(captured_from=date(2000, 1, 1)), actor="t", deep=False)
    assert curator.source.tally(BlobFilter(), project_id) is not None  # the grouped count was the index's
    assert curator.source.tally(BlobFilter(captured_from=date(2000, 1, 1)), project_id) is None  # the walk's
    assert grouped.as_dict() | {"project_images": None} == walked.as_dict() | {"project_images": None}
    assert (grouped.listed, grouped.already_pushed, grouped.rejected, grouped.near_duplicates) == (18, 2, 1, 1)
    assert grouped.in_progress == 1 and grouped.eligible == grouped.unchecked == 11
    assert dict(grouped.undecryptable) == {"missing metadata": 1, "too large": 1}
    assert dict(grouped.eligible_by_version) == {f"{MODEL[0]} {MODEL[1]}": 7, "shelf 2": 4}
