"""Pushes do what they say: tags and boxes reach an image already in the project, claims hold while their run
works, a stale listing is not an undecryptable blob, and an oversized blob is refused before it is downloaded."""

from __future__ import annotations

import os
import threading

import pytest

from percept_core import Outcome, Region
from percept_core.errors import BlobTooLargeError, StaleBlobError
from percept_core.images import sha256_hex
from tests.support.frames import jpeg, upload_frames

# -- tags and boxes on content already in the project --------------------------------------------------------


def test_a_tagged_push_of_a_frame_already_in_the_project_tags_that_image(
    stack, project_id, make_curator, container_name
):
    frame = jpeg(600)
    names = upload_frames(stack, container_name, [frame, frame, frame])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = {b.name: b for b in curator.blobs()}
    first, twin, triplet = (blobs[n] for n in names)

    assert curator.push([first]).counts[Outcome.PUSHED] == 1  # untagged
    [image] = stack.emulator.images(project_id)
    assert not image.tags

    report = curator.push([twin], tags=["person"])  # byte-identical, from another blob
    [image] = stack.emulator.images(project_id)
    assert [t.tag_name for t in image.tags] == ["person"]
    [outcome] = report.outcomes
    assert (outcome.outcome, outcome.reason, outcome.image_id) == (Outcome.DUPLICATE, "duplicate, tags added", image.id)
    assert curator.records([twin])[twin.key].tags == ("person",)

    again = curator.push([triplet], tags=["person"])  # a tag already on the image is fine
    assert (
        again.outcomes[0].outcome == Outcome.DUPLICATE and again.outcomes[0].reason == "duplicate, tags already on it"
    )
    [image] = stack.emulator.images(project_id)
    assert [t.tag_name for t in image.tags] == ["person"]


def test_pushing_a_blob_again_with_a_tag_tags_its_image(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [jpeg(605)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    [blob] = curator.blobs()
    curator.push([blob])  # untagged
    [outcome] = curator.push([blob], tags=["person"]).outcomes
    [image] = stack.emulator.images(project_id)
    assert [t.tag_name for t in image.tags] == ["person"]
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "already pushed, tags added")
    assert curator.records([blob])[blob.key].tags == ("person",)
    again = curator.push([blob], tags=["person"]).outcomes[0]
    assert (again.outcome, again.reason) == (Outcome.SKIPPED, "already pushed")  # nothing left to add
    assert len(stack.emulator.images(project_id)) == 1


def test_a_duplicate_answered_by_custom_vision_gets_the_push_tags(stack, project_id, make_curator, container_name):
    """Another ledger (another machine) does not know the frame is in the project: the service says OKDuplicate."""
    upload_frames(stack, container_name, [jpeg(610)])
    here = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blob = next(here.blobs())
    here.push([blob])
    elsewhere = make_curator(
        project_id, mm_telemetry_storage_container=container_name, percept_ledger_path=str(here.ledger.path) + ".2"
    )
    [outcome] = elsewhere.push([blob], tags=["product"]).outcomes
    assert outcome.outcome == Outcome.DUPLICATE and outcome.reason.startswith("duplicate, tags")
    [image] = stack.emulator.images(project_id)
    assert [t.tag_name for t in image.tags] == ["product"] and outcome.image_id == image.id


def test_boxes_drawn_on_a_frame_already_in_a_detection_project_go_onto_that_image(stack, make_curator, container_name):
    project = stack.new_project("boxes on duplicates", detection=True, tags=("person",))
    frame = jpeg(620)
    names = upload_frames(stack, container_name, [frame, frame])
    curator = make_curator(project, mm_telemetry_storage_container=container_name)
    blobs = {b.name: b for b in curator.blobs()}
    curator.push([blobs[names[0]]])
    person = curator.tags()[0].id
    box = Region(person, 0.25, 0.25, 0.5, 0.5)
    [outcome] = curator.push([blobs[names[1]]], regions={names[1]: [box]}).outcomes
    assert outcome.outcome == Outcome.DUPLICATE and "1 box(es) added" in outcome.reason
    [image] = stack.emulator.images(project)
    assert [(r.tag_name, round(r.left, 3), round(r.width, 3)) for r in image.regions] == [("person", 0.25, 0.5)]


# -- claims hold while their run works ----------------------------------------------------------------------


def _two_runs_on_a_held_upload(stack, project_id, make_curator, container_name, cv_faults, *, lease, b_lease, held):
    """Run A pushes two frames; the service holds A's second upload (and any other) for `held` seconds. Once A's
    first frame is settled (its second upload is on its way) and two leases have passed, run B pushes that second
    frame. Returns (A's report, B's report, the second blob, A's curator)."""
    upload_frames(stack, container_name, [jpeg(630), jpeg(631)])
    a = make_curator(project_id, mm_telemetry_storage_container=container_name)
    b = make_curator(project_id, mm_telemetry_storage_container=container_name)
    a.ledger.lease_seconds, b.ledger.lease_seconds = lease, b_lease
    a.pipeline.max_uploads_in_flight = 1
    blobs = list(a.blobs())
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": held, "skip": 1, "times": 2}])
    first_settled, finished = threading.Event(), threading.Event()
    reports = {}

    def run_a() -> None:
        try:
            reports["a"] = a.push(blobs, progress=lambda p: p.done == 1 and first_settled.set())
        finally:
            finished.set()

    thread = threading.Thread(target=run_a)
    thread.start()
    assert first_settled.wait(60)
    assert not finished.wait(lease * 2), "A's second upload should still be held by the service"
    reports["b"] = b.push([blobs[1]])
    thread.join(120)
    return reports["a"], reports["b"], blobs[1], a


def test_a_run_whose_upload_is_held_past_the_lease_keeps_its_claim(
    stack, project_id, make_curator, container_name, cv_faults
):
    lease = 1.0
    first, second, held, a = _two_runs_on_a_held_upload(
        stack, project_id, make_curator, container_name, cv_faults, lease=lease, b_lease=lease, held=lease * 5
    )
    assert [(o.outcome, o.reason) for o in second.outcomes] == [(Outcome.SKIPPED, "being pushed by another run")]
    assert [o.outcome for o in first.outcomes] == [Outcome.PUSHED, Outcome.PUSHED]
    images = stack.emulator.images(project_id)
    assert len(images) == 2
    assert a.ledger.record(held.key, project_id).image_id == next(
        o.image_id for o in first.outcomes if o.name == held.name
    )
    assert not a.ledger.events(action="claim-lost")


def test_a_run_that_lost_its_claim_does_not_write_over_the_run_that_took_it(
    stack, project_id, make_curator, container_name, cv_faults
):
    """B takes A's item over (B's lease is zero: A looks stalled to it); A's late outcome is not recorded."""
    first, second, held, a = _two_runs_on_a_held_upload(
        stack, project_id, make_curator, container_name, cv_faults, lease=1.0, b_lease=0.0, held=4.0
    )
    [taken] = second.outcomes
    assert taken.outcome in (Outcome.PUSHED, Outcome.DUPLICATE)
    late = next(o for o in first.outcomes if o.name == held.name)
    assert late.outcome == Outcome.SKIPPED and late.reason.startswith("another run took it over")
    record = a.ledger.record(held.key, project_id)
    assert record.state == "pushed" and record.image_id == taken.image_id
    [event] = a.ledger.events(action="claim-lost")
    assert event.blob == held.name and event.details["run"] == first.run_id
    assert len(stack.emulator.images(project_id)) == 2


def test_an_item_throttled_for_longer_than_its_budget_gives_up_instead_of_sitting_on_its_claim(
    stack, project_id, make_curator, container_name, cv_faults
):
    upload_frames(stack, container_name, [jpeg(640)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    curator.ledger.lease_seconds = 2.0  # an item may wait (retries, Retry-After, quota) half of that
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "429", "retry_after": 30, "times": 100}])
    report = curator.push_all_untagged()
    [outcome] = report.outcomes
    assert outcome.outcome == Outcome.FAILED and "waiting" in outcome.reason
    assert report.throttled == 1  # it did not sit out thirty seconds, let alone 24 Retry-Afters
    assert curator.status() == {"failed": 1}


# -- a stale listing is not an undecryptable blob -------------------------------------------------------------


def _overwrite(stack, container: str, name: str, frame: bytes) -> None:
    upload_frames(stack, container, [frame], names=[name])  # same name, new content: a new etag


def test_a_blob_changed_after_listing_is_reported_stale_and_pushed_in_its_new_version(
    stack, project_id, make_curator, container_name
):
    names = upload_frames(stack, container_name, [jpeg(650), jpeg(651)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    listed = {b.name: b for b in curator.blobs()}
    _overwrite(stack, container_name, names[0], jpeg(652))

    report = curator.push(list(listed.values()))
    outcomes = {o.name: o for o in report.outcomes}
    assert (outcomes[names[0]].outcome, outcomes[names[0]].reason) == (Outcome.SKIPPED, "changed since listed, refresh")
    assert outcomes[names[1]].outcome == Outcome.PUSHED
    assert curator.ledger.record(listed[names[0]].key, project_id).state == "new"
    assert not curator.ledger.keys_in_state(project_id, "undecryptable")
    assert not curator.ledger.events(action="undecryptable")

    previews = curator.previews([listed[names[0]]])
    assert isinstance(previews[listed[names[0]].key], StaleBlobError)
    assert not curator.ledger.keys_in_state(project_id, "undecryptable")

    fresh = curator.push_all_untagged()  # a fresh listing has the new etag
    assert [(o.name, o.outcome) for o in fresh.outcomes] == [(names[0], Outcome.PUSHED)]
    assert {i.sha256 for i in stack.emulator.images(project_id)} == {sha256_hex(jpeg(651)), sha256_hex(jpeg(652))}


def test_a_dry_run_counts_a_blob_changed_meanwhile_as_stale_not_undecryptable(
    stack, project_id, make_curator, container_name
):
    names = upload_frames(stack, container_name, [jpeg(660 + i) for i in range(8)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    curator.pipeline.max_concurrency = 1  # two downloads ahead of the one reported: the last is not fetched yet
    last = sorted(names)[-1]
    changed = threading.Event()

    def change_the_last(progress) -> None:
        if not changed.is_set():
            _overwrite(stack, container_name, last, jpeg(700))
            changed.set()

    dry = curator.push_all_untagged(dry_run=True, progress=change_the_last)
    assert changed.is_set() and not dry.undecryptable and dry.eligible == 7
    assert not curator.ledger.keys_in_state(project_id, "undecryptable")
    assert dry.stale == 1 and dry.as_dict()["changed_since_listed"] == 1


# -- size limits before work ------------------------------------------------------------------------------------


def test_a_blob_over_the_size_limit_is_refused_before_it_is_downloaded(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [os.urandom(33 * 1024 * 1024)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    [blob] = curator.blobs()
    assert blob.size > 32 * 1024 * 1024

    report = curator.push_all_untagged()
    [outcome] = report.outcomes
    assert outcome.outcome == Outcome.UNDECRYPTABLE and outcome.reason.startswith("too large: ")
    record = curator.ledger.record(blob.key, project_id)
    assert record.review == "undecryptable" and record.reason.startswith("too large")
    assert curator.settings.max_blob_bytes == 32 * 1024 * 1024
    with pytest.raises(BlobTooLargeError, match="not downloaded"):
        curator.preview(blob)
    assert curator.push_all_untagged(dry_run=True).undecryptable == {"too large": 1}
    assert curator.data.downloads == 0  # nothing was fetched, by the push, the preview or the dry run

    roomy = make_curator(project_id, mm_telemetry_storage_container=container_name, percept_max_blob_bytes=64 << 20)
    with pytest.raises(Exception, match="not an image"):
        roomy.preview(blob)  # the setting raises the limit: it is downloaded (and is no image)
    assert roomy.data.downloads == 1


def test_the_size_limit_is_a_setting_with_a_default_of_32_mib(stack):
    assert stack.settings().max_blob_bytes == 33_554_432
    assert stack.settings(percept_max_blob_bytes="1000").max_blob_bytes == 1000
    assert any(row["setting"] == "percept_max_blob_bytes" for row in stack.settings().describe())


def test_hashing_a_page_or_a_frame_table_does_not_mark_a_changed_blob_undecryptable(
    stack, project_id, make_curator, container_name
):
    from percept_core.bursts import page_hashes
    from percept_core.frames import hash_frames, to_dataframe

    names = upload_frames(stack, container_name, [jpeg(670), jpeg(671)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    listed = list(curator.blobs())
    frames = to_dataframe(curator, listed)
    _overwrite(stack, container_name, names[0], jpeg(672))
    changed = next(b for b in listed if b.name == names[0])

    hashes = page_hashes(curator, listed)
    assert changed.key not in hashes and len(hashes) == 1
    hashed = hash_frames(curator, frames).set_index("name")
    assert hashed.at[names[0], "problem"].startswith("changed since listed: ")
    assert hashed.at[names[0], "state"] == "new" and hashed.at[names[1], "state"] == "new"
    assert not curator.ledger.keys_in_state(project_id, "undecryptable")


def test_a_blob_deleted_after_listing_is_stale_too(stack, make_curator, project_id, container_name):
    names = upload_frames(stack, container_name, [jpeg(680)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    [blob] = curator.blobs()
    curator.data.container_client.delete_blob(names[0])
    with pytest.raises(StaleBlobError, match="after it was listed") as raised:  # Azurite says 412, not 404
        curator.decrypt(blob)
    assert raised.value.reason == "changed since listed"
    [outcome] = curator.push([blob]).outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "changed since listed, refresh")
    assert curator.ledger.record(blob.key, project_id).state == "new"
