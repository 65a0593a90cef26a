"""Push selected and push all untagged, against the devstack: once each, explained item by item."""

from __future__ import annotations

import threading
from collections import Counter

import requests
from azure.cognitiveservices.vision.customvision.training.models import ImageFileCreateBatch, ImageFileCreateEntry

from percept_core import CancelToken, Outcome
from percept_core.images import sha256_hex
from percept_core.pipeline import PushReport
from tests.support.frames import jpeg, upload_frames


def test_push_all_untagged_pushes_every_eligible_demo_blob_once_with_provenance(demo, stack, project_id, make_curator):
    curator = make_curator(project_id)
    dry = curator.push_all_untagged(dry_run=True)
    assert dry.eligible == demo.frames and dry.already_pushed == 0
    assert dict(dry.undecryptable) == {
        "tampered": 2,
        "not an image": 1,
        "missing metadata": 1,
        "unknown model version": 1,
    }
    assert sum(dry.eligible_by_version.values()) == dry.eligible and dry.headroom == 100_000

    report = curator.push_all_untagged()
    assert report.counts[Outcome.PUSHED] == demo.frames
    assert report.counts[Outcome.UNDECRYPTABLE] == 5
    failed = {o.name: o.reason for o in report.failed}
    assert set(failed) == set(demo.bad.values())
    assert failed[demo.bad["tampered"]].startswith("tampered: ")
    assert failed[demo.bad["unknown-version"]].startswith("unknown model version: ")

    images = stack.emulator.images(project_id)
    assert len(images) == demo.frames and all(not image.tags for image in images)
    by_blob = {image.metadata["source_blob"]: image for image in images}
    pushed = {o.name: o for o in report.outcomes if o.outcome == Outcome.PUSHED}
    assert set(by_blob) == set(pushed)
    for blob in curator.blobs():
        if blob.name in pushed:
            metadata = by_blob[blob.name].metadata
            assert metadata["source_etag"] == blob.etag and metadata["model_version"] == blob.model_version
            assert metadata["sha256"] == by_blob[blob.name].sha256  # nothing was re-encoded
            assert pushed[blob.name].image_id == by_blob[blob.name].id

    again = curator.push_all_untagged()
    assert again.counts[Outcome.PUSHED] == 0 and again.counts[Outcome.UNDECRYPTABLE] == 5
    assert len(stack.emulator.images(project_id)) == demo.frames
    assert curator.push_all_untagged(dry_run=True).already_pushed == demo.frames


def test_push_selected_with_a_tag_lands_exactly_those_images_tagged(demo, stack, project_id, make_curator):
    curator = make_curator(project_id)
    chosen = [b for b in curator.blobs() if b.name not in demo.bad.values()][:3]
    seen = []
    report = curator.push(chosen, tags=["person"], progress=lambda p: seen.append((p.done, p.total)))
    assert report.counts == Counter({Outcome.PUSHED: 3})
    assert seen == [(1, 3), (2, 3), (3, 3)]
    images = stack.emulator.images(project_id)
    assert sorted(i.metadata["source_blob"] for i in images) == sorted(b.name for b in chosen)
    assert all([t.tag_name for t in i.tags] == ["person"] for i in images)
    records = curator.records(chosen)
    assert {records[b.key].tags for b in chosen} == {("person",)}
    events = curator.ledger.events(action="push")
    assert len(events) == 3 and {e.actor for e in events} == {"tester"}


def test_the_same_frame_in_two_blobs_becomes_one_image(stack, project_id, make_curator, container_name):
    frame, other = jpeg(1), jpeg(2)
    names = upload_frames(stack, container_name, [frame, frame, other])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    assert curator.push_all_untagged(dry_run=True).duplicates_by_content == 1
    report = curator.push_all_untagged()
    assert report.counts == Counter({Outcome.PUSHED: 2, Outcome.DUPLICATE: 1})
    images = stack.emulator.images(project_id)
    assert sorted(i.sha256 for i in images) == sorted({sha256_hex(frame), sha256_hex(other)})
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes[names[0]].image_id == outcomes[names[1]].image_id


def test_rejected_blobs_are_not_pushed_until_restored(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [jpeg(i) for i in range(10, 14)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = list(curator.blobs())
    curator.reject(blobs[:2], reason="motion blur")
    assert curator.push_all_untagged(dry_run=True).rejected == 2
    report = curator.push_all_untagged()
    assert sorted(o.name for o in report.outcomes) == sorted(b.name for b in blobs[2:])
    explicit = curator.push(blobs[:1])
    assert explicit.outcomes[0].outcome == Outcome.SKIPPED and explicit.outcomes[0].reason == "rejected"
    assert len(stack.emulator.images(project_id)) == 2
    curator.restore(blobs[:2])
    assert curator.push_all_untagged().counts[Outcome.PUSHED] == 2
    assert len(stack.emulator.images(project_id)) == 4


def test_an_answer_lost_after_the_upload_is_retried_without_a_duplicate(
    stack, project_id, make_curator, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(20, 26)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    plan = [{"operation": "CreateImagesFromFiles", "kind": "reset_after", "times": 3}]
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=plan, timeout=10).raise_for_status()
    try:
        report = curator.push_all_untagged()
    finally:
        requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10)
    assert report.ok and len(report.outcomes) == 6
    assert report.counts[Outcome.DUPLICATE] == 3  # they got in before their answers were lost
    images = stack.emulator.images(project_id)
    assert len(images) == 6 and len({i.sha256 for i in images}) == 6


def test_a_failing_service_reports_each_item_and_the_next_run_pushes_them(
    stack, project_id, make_curator, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(30, 34)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    curator.customvision.max_attempts = 2
    curator.customvision.backoff_seconds = 0.01
    plan = [{"operation": "CreateImagesFromFiles", "kind": "503", "times": 100}]
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=plan, timeout=10).raise_for_status()
    try:
        report = curator.push_all_untagged()
    finally:
        requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10)
    assert report.counts == Counter({Outcome.FAILED: 4})
    assert all("Custom Vision" in o.reason for o in report.failed)
    assert curator.status()["failed"] == 4
    retry = curator.push_all_untagged()
    assert retry.counts == Counter({Outcome.PUSHED: 4})
    assert len(stack.emulator.images(project_id)) == 4


def test_batch_provenance_sends_64_images_a_call(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [jpeg(i, (64, 48)) for i in range(100, 230)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    report = curator.push_all_untagged(provenance="batch")
    assert report.counts == Counter({Outcome.PUSHED: 130})
    # One count of the project's images (nothing there the ledger does not know: no listing), then 64 + 64 + 2.
    assert report.listing_calls == 1 and report.calls - report.listing_calls == 3
    images = stack.emulator.images(project_id)
    assert len(images) == 130
    assert {i.metadata["model_version"] for i in images} == {"1.0"}
    assert len({i.metadata["push_run"] for i in images}) == 1


def test_cancelling_leaves_the_rest_eligible(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [jpeg(i) for i in range(40, 60)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    cancel = CancelToken()

    def stop_after_five(progress):
        if progress.counts[Outcome.PUSHED] >= 5:
            cancel.cancel()

    first = curator.push_all_untagged(progress=stop_after_five, cancel=cancel)
    assert first.cancelled and 5 <= first.counts[Outcome.PUSHED] < 20
    assert "pushing" not in curator.status()
    second = curator.push_all_untagged()
    assert first.counts[Outcome.PUSHED] + second.counts[Outcome.PUSHED] == 20
    assert len(stack.emulator.images(project_id)) == 20


def test_two_runs_at_once_push_each_blob_once(stack, project_id, make_curator, container_name):
    upload_frames(stack, container_name, [jpeg(i) for i in range(60, 100)])
    curators = [make_curator(project_id, mm_telemetry_storage_container=container_name) for _ in range(2)]
    reports: list = [None, None]

    def run(index: int) -> None:
        try:
            reports[index] = curators[index].push_all_untagged()
        except Exception as exc:  # what stopped a run is what the test reports, not a None further down
            reports[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not [r for r in reports if not isinstance(r, PushReport)], reports
    pushed = [o.name for r in reports for o in r.outcomes if o.outcome in (Outcome.PUSHED, Outcome.DUPLICATE)]
    assert sorted(pushed) == sorted(set(pushed)) and len(pushed) == 40
    images = stack.emulator.images(project_id)
    assert len(images) == 40 and len({i.metadata["source_blob"] for i in images}) == 40


def test_an_oversized_frame_is_fitted_and_says_so(stack, project_id, make_curator, container_name):
    import io
    import random

    from PIL import Image

    rng = random.Random(5)
    noisy = Image.frombytes("RGB", (1800, 1400), bytes(rng.getrandbits(8) for _ in range(1800 * 1400 * 3)))
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    upload_frames(stack, container_name, [buffer.getvalue()])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    report = curator.push_all_untagged()
    assert report.outcomes[0].outcome == Outcome.PUSHED
    assert "over the 6 MB limit" in report.outcomes[0].fitted
    image = stack.emulator.images(project_id)[0]
    assert image.size <= 6 * 1024 * 1024 and image.metadata["sha256"] == sha256_hex(buffer.getvalue())


def test_retagging_a_pushed_image_changes_its_tags_without_a_new_upload(demo, stack, project_id, make_curator):
    curator = make_curator(project_id)
    blob = next(b for b in curator.blobs() if b.name not in demo.bad.values())
    curator.push([blob], tags=["person"])
    calls_before = stack.emulator.stats.snapshot()["requests"].get("CreateImagesFromFiles", 0)
    outcomes = curator.retag([blob], add=["product"], remove=["person"])
    assert [o.reason for o in outcomes] == ["retagged"]
    [image] = stack.emulator.images(project_id)
    assert [t.tag_name for t in image.tags] == ["product"]
    assert curator.records([blob])[blob.key].tags == ("product",)
    assert stack.emulator.stats.snapshot()["requests"].get("CreateImagesFromFiles", 0) == calls_before


def test_dry_run_counts_blobs_another_live_run_is_pushing_and_pushes_remember_the_model(
    stack, project_id, make_curator, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(240, 246)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = list(curator.blobs())
    other_run = curator.ledger.new_run_id()  # alive: this very process
    curator.ledger.claim([b.key for b in blobs[:2]], project_id, other_run, actor="someone else")
    dry = curator.push_all_untagged(dry_run=True)
    assert (dry.in_progress, dry.eligible) == (2, 4)
    curator.ledger.release([b.key for b in blobs[:2]], project_id, other_run)
    curator.push(blobs[:1])
    assert curator.ledger.blob_models([blobs[0].key]) == {blobs[0].key: ("people-counter", "1.0")}


def test_reconciling_with_the_project_lists_it_only_when_it_can_pay(stack, project_id, make_curator, container_name):
    """A lost ledger is rebuilt from the project (tests/push/test_strict_azure.py); here, what that costs
    when there is nothing to rebuild: images that are not ours are listed once, a one-blob push never counts."""
    portal = [ImageFileCreateEntry(name=f"portal-{i}.jpg", contents=jpeg(300 + i)) for i in range(3)]
    stack.trainer().create_images_from_files(project_id, ImageFileCreateBatch(images=portal))  # not ours
    upload_frames(stack, container_name, [jpeg(i) for i in range(310, 314)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)

    first = curator.push_all_untagged()
    assert first.counts == Counter({Outcome.PUSHED: 4}) and first.reconciled == 0
    assert first.listing_calls == 2  # a count (3 images the ledger cannot name), then one page of images

    upload_frames(stack, container_name, [jpeg(320), jpeg(321)], names=["a.jpg.dec", "b.jpg.dec"])
    second = curator.push_all_untagged()
    assert second.counts == Counter({Outcome.PUSHED: 2})
    assert second.listing_calls == 1  # the count only: the 3 foreign images were remembered

    [name] = upload_frames(stack, container_name, [jpeg(330)], names=["c.jpg.dec"])
    one = curator.push([b for b in curator.blobs() if b.name == name])
    assert one.counts == Counter({Outcome.PUSHED: 1}) and one.listing_calls == 0 and one.calls == 1
