"""Listing the `data` container: metadata, filters, paging that does not list the rest, and the bad blobs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

import pytest
from azure.storage.blob import BlobServiceClient

from percept_core import (
    BlobFilter,
    Curator,
    IntegrityError,
    MissingMetadataError,
    NotAnImageError,
    RetrainingDataClient,
    UnknownModelVersionError,
)
from percept_core.images import inspect_image


@pytest.fixture(scope="module")
def big_container(stack):
    """600 metadata-only blobs in a container of their own, named as devices name them."""
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    container = service.get_container_client("paging")
    container.create_container()

    def upload(i: int) -> None:
        name = f"{10 + i % 80}-2026-11-{1 + i % 28:02d}-{i // 3600:02d}-{i // 60 % 60:02d}-{i % 60:02d}.jpg.dec"
        metadata = {
            "model_name": "people-counter" if i % 3 else "shelf-monitor",
            "model_version": "1.0",
            "confidence": str(10 + i % 80),
        }
        container.upload_blob(name, b"x" * 64, metadata=metadata)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, range(600)))
    return RetrainingDataClient(container)


def test_lists_metadata_and_reads_confidence_and_capture_time(demo, stack):
    curator = Curator(stack.settings())
    blobs = {b.name: b for b in curator.blobs()}
    assert len(blobs) == demo.frames + len(demo.bad)
    good = next(b for b in blobs.values() if b.name not in demo.bad.values())
    assert good.model_name in ("people-counter", "shelf-monitor")
    assert good.confidence is not None and 0 < good.confidence < 90
    assert good.captured_at is not None and good.captured_at.year == 2026
    assert good.file_ref.endswith(good.name.removesuffix(".dec"))
    assert good.etag and good.size > 56
    no_metadata = blobs[demo.bad["no-metadata"]]
    assert no_metadata.model_name is None and "no model_name metadata" in no_metadata.problems
    # capture time and confidence fall back to the device's file name
    assert no_metadata.confidence == 44 and no_metadata.captured_at == datetime(2026, 11, 15, 12, 3)


def test_filters_work_on_metadata(demo, stack):
    curator = Curator(stack.settings())
    everything = list(curator.blobs())
    low = list(curator.blobs(max_confidence=30))
    assert low and all(b.confidence <= 30 for b in low)
    assert len(low) == sum(1 for b in everything if b.confidence is not None and b.confidence <= 30)
    version = list(curator.blobs(model_names=("people-counter",), model_versions=("1.1",)))
    assert version and {(b.model_name, b.model_version) for b in version} == {("people-counter", "1.1")}
    day = everything[0].captured_at.date()
    same_day = list(curator.blobs(captured_from=day, captured_to=day))
    assert same_day and all(b.captured_at.date() == day for b in same_day)
    by_name = list(curator.blobs(name_contains="-2026-11-15-12-0"))
    assert {b.name for b in by_name} >= set(demo.bad.values()) - {demo.bad["not-an-image"]} or by_name


def test_first_page_lists_no_further_than_needed(big_container):
    big_container.list_calls = 0
    page = big_container.list_page(page_size=48)
    assert len(page.blobs) == 48 and page.continuation
    assert big_container.list_calls == 1  # one service page of ~200 entries, not the 600


def test_pages_cover_every_match_once_across_service_pages(big_container):
    flt = BlobFilter(model_names=("shelf-monitor",))
    seen, token, pages = [], None, 0
    while True:
        page = big_container.list_page(flt, page_size=48, continuation=token)
        seen += [b.name for b in page.blobs]
        pages += 1
        token = page.continuation
        if not token:
            break
    expected = [b.name for b in big_container.list_blobs(flt)]
    assert len(expected) == 200
    assert seen == expected and len(set(seen)) == len(seen)
    assert pages == 5


def test_capture_date_filter_and_prefix_are_applied(big_container):
    flt = BlobFilter(captured_from=date(2026, 11, 3), captured_to=date(2026, 11, 3), name_prefix="1")
    found = list(big_container.list_blobs(flt))
    everything = list(big_container.list_blobs())
    expected = [b for b in everything if b.captured_at.date() == date(2026, 11, 3) and b.name.startswith("1")]
    assert found == expected and 0 < len(found) < len(everything)


def test_each_bad_blob_gives_its_specific_error_and_the_good_ones_carry_on(demo, stack):
    curator = Curator(stack.settings())
    expected = {
        "tampered": IntegrityError,
        "truncated": IntegrityError,
        "not-an-image": NotAnImageError,
        "no-metadata": MissingMetadataError,
        "unknown-version": UnknownModelVersionError,
    }
    previews, errors = {}, {}
    for blob in curator.blobs():
        try:
            previews[blob.name] = curator.preview(blob)
        except Exception as exc:
            errors[blob.name] = exc
    for case, error_type in expected.items():
        error = errors[demo.bad[case]]
        assert type(error) is error_type, (case, error)
        assert demo.bad[case] in str(error) or "metadata" in str(error) or "no key" in str(error)
        assert error.hint
    assert errors[demo.bad["unknown-version"]].reason == "unknown model version"
    assert errors[demo.bad["tampered"]].reason == "tampered"
    assert len(previews) == demo.frames
    info = inspect_image(next(iter(previews.values())))
    assert info.format == "JPEG" and max(info.width, info.height) <= 320


def test_decrypt_returns_the_exact_frame_the_device_encrypted(demo, stack):
    curator = Curator(stack.settings())
    blob = next(b for b in curator.blobs() if b.name not in demo.bad.values())
    plaintext = curator.decrypt(blob)
    info = inspect_image(plaintext)
    assert info.format == "JPEG" and (info.width, info.height) in ((640, 480), (1280, 720), (1920, 1080))
    assert curator.locker.fetches == 1  # the key was fetched and derived once for that version
