"""The client under the strict Azure profile (issue 18): every frame into the project exactly once, whichever
reading of an uncertain service behaviour holds.

The emulators here play the strict profile (devstack/profiles.py): a batch of only duplicates is refused whole
with 400 "No valid image files", OKDuplicate entries carry no image, the largest side is 10,000 px, the
largest upload 6,000,000 bytes, empty metadata values are refused and timestamps carry no timezone. What is
checked is what a user would see: the outcome of each frame, the images in the project, the ledger, and the
emulator's own count of the image entries it received.
"""

from __future__ import annotations

import io
import secrets
import time
from collections import Counter
from datetime import datetime

import pytest
import requests
from PIL import Image

from percept_core import Curator, Outcome
from percept_core.customvision import CustomVisionClient, PushStatus, UploadItem
from percept_core.images import MAX_SIDE, MAX_UPLOAD_BYTES, sha256_hex
from tests.conftest import LocalStack
from tests.support.frames import jpeg, upload_frames


@pytest.fixture
def strict(strict_stack):
    """The session's strict stack (tests/conftest.py), by a short name."""
    return strict_stack


@pytest.fixture
def strict_project(strict_stack) -> str:
    return strict_stack.new_project("strict", tags=("person",))


@pytest.fixture
def make_strict_curator(strict_stack, tmp_path):
    """A Curator on the strict stack with a ledger of its own (`ledger` names the file: a second one is a new
    machine's, or a lost ledger's, fresh start)."""

    def make(project: str, container: str, *, ledger: str = "ledger.sqlite") -> Curator:
        settings = strict_stack.settings(
            custom_vision_project_id=project,
            mm_telemetry_storage_container=container,
            percept_ledger_path=str(tmp_path / ledger),
        )
        return Curator(settings, actor="tester")

    return make


def _client(stack: LocalStack, project_id: str) -> CustomVisionClient:
    return CustomVisionClient(stack.customvision.url, stack.training_key, project_id, rate_per_second=None)


def _uploads(stack: LocalStack, project_id: str) -> dict:
    """The emulator's upload counters for the project: entries received, per entry name (the source blob)."""
    url = f"{stack.customvision.url}/_emulator/projects/{project_id}/uploads"
    return requests.get(url, timeout=10).json()


def _container() -> str:
    return f"strict-{secrets.token_hex(4)}"


# --- duplicates the service does not answer as the documentation says ---------------------------------------


def test_a_batch_of_only_duplicates_is_recorded_as_duplicates_with_their_images(strict, strict_project):
    items = [UploadItem(f"frame-{i}.jpg", jpeg(600 + i)) for i in range(5)]
    first = _client(strict, strict_project).upload(items)
    assert [r.status for r in first] == [PushStatus.PUSHED] * 5

    # Another machine (a fresh client, nothing cached) sends the same five again: the strict service refuses
    # the whole batch with 400 "No valid image files".
    again = _client(strict, strict_project)
    results = again.upload(items)
    assert [r.status for r in results] == [PushStatus.DUPLICATE] * 5, [r.reason for r in results]
    assert [r.image_id for r in results] == [r.image_id for r in first]
    assert len(strict.emulator.images(strict_project)) == 5
    # Halving is bounded: at most 2n-1 upload calls for n images (the rest were listings to find them).
    assert again.stats.split_batches >= 1
    assert again.stats.calls - again.stats.listings <= 2 * len(items) - 1


def test_an_okduplicate_without_its_image_is_found_by_content(strict, strict_project):
    old, new = jpeg(700), jpeg(701)
    provenance = {"sha256": sha256_hex(old), "pushed_by": "percept-curator"}
    [stored] = _client(strict, strict_project).upload([UploadItem("old.jpg", old)], batch_metadata=provenance)

    mixed = _client(strict, strict_project).upload([UploadItem("old-again.jpg", old), UploadItem("new.jpg", new)])
    assert [r.status for r in mixed] == [PushStatus.DUPLICATE, PushStatus.PUSHED], [r.reason for r in mixed]
    assert mixed[0].image_id == stored.image_id  # the service answered OKDuplicate with "image": null
    assert len(strict.emulator.images(strict_project)) == 2


# --- limits fitted to the stricter reading, and no empty metadata --------------------------------------------


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


def test_a_frame_10001_px_wide_is_fitted_to_10000(strict, strict_project, make_strict_curator):
    container = _container()
    [name] = upload_frames(strict, container, [_png(10_001, 420)])
    report = make_strict_curator(strict_project, container).push_all_untagged()
    assert report.counts == Counter({Outcome.PUSHED: 1}), report.rows()
    [image] = strict.emulator.images(strict_project)
    assert image.width == MAX_SIDE == 10_000 and image.height in (419, 420)  # scaled by 10,000/10,001
    assert image.metadata["source_blob"] == name


def test_a_frame_of_6100000_bytes_is_fitted_under_6000000(strict, strict_project, make_strict_curator):
    container = _container()
    frame = jpeg(800, (640, 480))
    frame += b"\0" * (6_100_000 - len(frame))  # decodable: decoders stop at the end-of-image marker
    [name] = upload_frames(strict, container, [frame])
    report = make_strict_curator(strict_project, container).push_all_untagged()
    assert report.counts == Counter({Outcome.PUSHED: 1}), report.rows()
    [image] = strict.emulator.images(strict_project)
    assert image.metadata["source_blob"] == name
    assert image.size <= MAX_UPLOAD_BYTES == 6_000_000 and (image.width, image.height) == (640, 480)
    assert image.metadata["sha256"] == sha256_hex(frame)  # provenance names the frame, not its re-encoding


def test_a_frame_without_confidence_or_capture_time_sends_no_empty_metadata(
    strict, strict_project, make_strict_curator
):
    container = _container()
    [name] = upload_frames(strict, container, [jpeg(810)], names=["door-camera.jpg.dec"])
    report = make_strict_curator(strict_project, container).push_all_untagged()
    assert report.counts == Counter({Outcome.PUSHED: 1}), report.rows()
    [image] = strict.emulator.images(strict_project)
    assert image.metadata["source_blob"] == name
    assert "confidence" not in image.metadata and "captured_at" not in image.metadata
    assert all(value != "" for value in image.metadata.values())


def test_naive_timestamps_are_read_as_utc(strict, strict_project):
    _client(strict, strict_project).upload([UploadItem("t.jpg", jpeg(820))])
    [image] = _client(strict, strict_project).iter_images()
    assert image.created is not None and image.created.utcoffset() is not None
    assert image.created.utcoffset().total_seconds() == 0


# --- a lost ledger costs listings, not uploads ----------------------------------------------------------------


@pytest.mark.parametrize("provenance", ["image", "batch"])
def test_a_lost_ledger_is_rebuilt_from_the_project_without_uploading_again(
    strict, strict_project, make_strict_curator, provenance
):
    container = _container()
    frames = [jpeg(900 + i, (96, 72)) for i in range(15)]
    names = upload_frames(strict, container, frames[:12])
    first = make_strict_curator(strict_project, container).push_all_untagged(provenance=provenance)
    assert first.counts == Counter({Outcome.PUSHED: 12})
    # Three frames arrive after the first run; then the ledger is lost (another machine, a new disk).
    later = upload_frames(strict, container, frames[12:], start=datetime(2026, 11, 21, 9, 0, 0))
    content = dict(zip(names + later, frames, strict=True))
    before = _uploads(strict, strict_project)

    fresh = make_strict_curator(strict_project, container, ledger="new-ledger.sqlite")
    report = fresh.push_all_untagged(provenance=provenance)

    after = _uploads(strict, strict_project)
    sent_again = {
        name: after["byName"].get(name, {}).get("entries", 0) - before["byName"].get(name, {}).get("entries", 0)
        for name in names + later
    }
    assert {n: sent_again[n] for n in names} == dict.fromkeys(names, 0)  # nothing already there was sent
    assert {n: sent_again[n] for n in later} == dict.fromkeys(later, 1)  # what was missing went exactly once
    assert report.counts == Counter({Outcome.DUPLICATE: 12, Outcome.PUSHED: len(later)}), report.rows()
    assert report.reconciled == 12 and report.listing_calls >= 2  # a count, then the images 256 a call

    # The rebuilt ledger names, for every frame, the very image that holds its content.
    images = {i.sha256: i.id for i in strict.emulator.images(strict_project)}
    assert len(images) == 12 + len(later)
    blobs = {b.name: b for b in fresh.blobs()}
    records = fresh.records(list(blobs.values()))
    for name in names + later:
        record = records[blobs[name].key]
        assert record.state == "pushed" and record.image_id == images[sha256_hex(content[name])], name
    reconciled = [e for e in fresh.ledger.events(action="push") if "reconciled from the project" in str(e.details)]
    assert len(reconciled) == 12

    # The run after that one finds nothing the ledger does not know: one count, no listing, no upload.
    again = fresh.push_all_untagged(provenance=provenance)
    assert again.outcomes == [] and again.calls == 0


# --- 429 without Retry-After -------------------------------------------------------------------------------


def test_a_429_without_retry_after_backs_off_from_one_second_doubling(strict, strict_project):
    url = f"{strict.customvision.url}/_emulator/faults"
    requests.post(url, json=[{"operation": "CreateImagesFromFiles", "kind": "429", "times": 2}], timeout=10)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the real wait, noted
        waits.append(seconds)
        time.sleep(seconds)

    client = CustomVisionClient(
        strict.customvision.url, strict.training_key, strict_project, rate_per_second=None, sleep=sleep
    )
    try:
        [result] = client.upload([UploadItem("throttled.jpg", jpeg(830))])
    finally:
        requests.delete(url, timeout=10)
    assert result.status == PushStatus.PUSHED and client.stats.throttled == 2  # no 429 reached the caller
    # Never sooner than the quota's own second, and longer the next time: about 1 s, then 2 (jitter only adds).
    assert len(waits) == 2 and waits[0] >= 0.95 and waits[1] >= 1.95, waits
