"""Listing the `data` container: metadata, filters, paging that does not list the rest, and the bad blobs."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

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


def _as_seeded(stack) -> dict[str, tuple[str | None, str | None, float, date, str]]:
    """Each blob of the demo container as the devices wrote it, read with the Storage SDK alone (not the code under
    test): name -> (model_name, model_version, confidence, capture day, capture time as HH-MM-SS). Device names are
    `<confidence>-<YYYY-mm-dd-HH-MM-SS>.jpg.dec`; the confidence metadata, where present, is what counts."""
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client("data")
    seeded = {}
    for properties in container.list_blobs(include=["metadata"]):
        metadata = properties.metadata or {}
        confidence, day, clock = re.fullmatch(
            r"(\d+)-(\d{4}-\d{2}-\d{2})-(\d{2}-\d{2}-\d{2})\.jpg\.dec", properties.name
        ).groups()
        seeded[properties.name] = (
            metadata.get("model_name"),
            metadata.get("model_version"),
            float(metadata.get("confidence", confidence)),
            date.fromisoformat(day),
            clock,
        )
    return seeded


def test_filters_return_exactly_the_blobs_whose_metadata_matches(demo, stack):
    curator = Curator(stack.settings())
    seeded = _as_seeded(stack)
    assert {b.name for b in curator.blobs()} == set(seeded)

    def listed(**flt) -> set[str]:
        return {b.name for b in curator.blobs(**flt)}

    def expect(condition) -> set[str]:
        names = {name for name, row in seeded.items() if condition(*row)}
        assert 0 < len(names) < len(seeded), "a filter case must keep some blobs and leave out others"
        return names

    assert listed(max_confidence=30) == expect(lambda m, v, c, d, t: c <= 30)
    assert listed(min_confidence=60) == expect(lambda m, v, c, d, t: c >= 60)
    assert listed(model_names=("people-counter",), model_versions=("1.1",)) == expect(
        lambda m, v, c, d, t: (m, v) == ("people-counter", "1.1")
    )
    assert listed(model_names=("shelf-monitor",)) == expect(lambda m, v, c, d, t: m == "shelf-monitor")
    # A day runs from 00:00:00 to 23:59:59: the busiest day has frames on both sides of noon.
    days = sorted({row[3] for row in seeded.values()}, key=lambda d: -sum(r[3] == d for r in seeded.values()))
    day = next(d for d in days if {r[4] < "12" for r in seeded.values() if r[3] == d} == {True, False})
    assert listed(captured_from=day, captured_to=day) == expect(lambda m, v, c, d, t: d == day)
    later = day + timedelta(days=2)
    assert listed(captured_from=day, captured_to=later) == expect(lambda m, v, c, d, t: day <= d <= later)
    by_name = {name for name in seeded if "-2026-11-15-12-0" in name}
    assert set(demo.bad.values()) <= by_name < set(seeded)  # the five bad blobs were written 12:00 to 12:04
    assert listed(name_contains="-2026-11-15-12-0") == by_name
    assert listed(name_contains="-2026-11-15-12-0".upper()) == by_name  # case-insensitively
    assert listed(model_names=("people-counter",), min_confidence=20, max_confidence=70, captured_from=day) == expect(
        lambda m, v, c, d, t: m == "people-counter" and 20 <= c <= 70 and d >= day
    )


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
        assert repr(demo.bad[case]) in str(error), (case, str(error))  # the reader learns which blob it is
        assert error.hint
    assert errors[demo.bad["unknown-version"]].reason == "unknown model version"
    assert errors[demo.bad["tampered"]].reason == "tampered"
    assert len(previews) == demo.frames
    info = inspect_image(next(iter(previews.values())))
    assert info.format == "JPEG" and max(info.width, info.height) <= 320


def test_decrypt_returns_the_exact_frame_the_device_encrypted(demo, stack):
    from devstack.seed import plan_frames, render_frame

    curator = Curator(stack.settings())
    blob = next(b for b in curator.blobs() if b.name not in demo.bad.values())
    # The device's frame, rendered again from the seed's plan (deterministic): byte for byte what was encrypted.
    [spec] = [s for s in plan_frames(demo.frames) if s.device_name + ".dec" == blob.name]
    original = render_frame(spec)
    plaintext = curator.decrypt(blob)
    assert len(plaintext) == len(original) and plaintext == original
    info = inspect_image(plaintext)
    assert info.format == "JPEG" and (info.width, info.height) == spec.size
    assert curator.locker.fetches == 1  # the key was fetched and derived once for that version
