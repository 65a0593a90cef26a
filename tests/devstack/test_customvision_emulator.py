"""Behaviour of the Custom Vision Training emulator: the service's rules as a client of the real SDK sees them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageRegionCreateEntry,
    ImageTagCreateEntry,
    Region,
)
from msrest.exceptions import ClientRequestError, ValidationError
from PIL import Image as PILImage

from devstack.customvision_server import GATEWAY_401_MESSAGE, compile_metadata_filter
from devstack.customvision_store import CVError
from devstack.servers import free_port

from .conftest import API, GENERAL_DETECTION, TRAINING_KEY, ImageFactory, RunningEmulator, make_client

REPO = Path(__file__).resolve().parents[2]
Start = Callable[..., RunningEmulator]


def error_of(call: Callable[..., object], *args: object, **kwargs: object) -> CustomVisionErrorException:
    with pytest.raises(CustomVisionErrorException) as info:
        call(*args, **kwargs)
    return info.value


def one(project_id: str, cv: CustomVisionTrainingClient, entry: ImageFileCreateEntry, **batch: object):
    """Upload one entry; return (HTTP status, its ImageCreateResult)."""
    raw = cv.create_images_from_files(project_id, ImageFileCreateBatch(images=[entry], **batch), raw=True)
    return raw.response.status_code, raw.output.images[0]


@pytest.fixture
def project(trainer: CustomVisionTrainingClient):
    return trainer.create_project("Pets")


@pytest.fixture
def detection(trainer: CustomVisionTrainingClient):
    return trainer.create_project("Shelf", domain_id=GENERAL_DETECTION)


# --- gateway: keys, routes, rate limits ---------------------------------------------------------------


def test_missing_or_wrong_key_gets_the_gateway_401(emu: RunningEmulator) -> None:
    big_upload = ImageFileCreateBatch(images=[ImageFileCreateEntry(name="x", contents=b"\0" * 4_000_000)])
    error = error_of(
        emu.client("wrong-key").create_images_from_files, "00000000-0000-0000-0000-000000000000", big_upload
    )
    assert error.response.status_code == 401  # answered cleanly even though the body was never wanted
    error = error_of(emu.client("wrong-key").get_projects)
    assert error.response.status_code == 401
    assert error.error.code is None  # the gateway body is not a CustomVisionError
    assert error.response.json() == {"error": {"code": "401", "message": GATEWAY_401_MESSAGE}}
    assert requests.get(emu.api("/projects")).status_code == 401
    assert requests.get(emu.api("/projects"), headers={"TRAINING-KEY": TRAINING_KEY}).status_code == 200
    assert emu.emulator.stats.unauthorized == 3


def test_any_configured_key_is_accepted(start_emulator: Start) -> None:
    emu = start_emulator(training_keys=("key-a", "key-b"))
    emu.client("key-a").create_project("A")
    assert [p.name for p in emu.client("key-b").get_projects()] == ["A"]
    assert error_of(emu.client(TRAINING_KEY).get_projects).response.status_code == 401


def test_unknown_route_is_a_gateway_404(emu: RunningEmulator) -> None:
    response = requests.get(emu.api("/nothing/here"), headers={"Training-Key": TRAINING_KEY})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_rate_limit_answers_429_with_retry_after_then_lets_the_call_through(start_emulator: Start) -> None:
    emu = start_emulator(rate_per_second=2)
    cv = emu.client()
    project = cv.create_project("P")
    cv.create_tag(project.id, "a")
    error = error_of(cv.create_tag, project.id, "b")  # POSTs are never retried by the SDK
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "1"
    assert error.response.json()["error"] == {
        "code": "429",
        "message": "Requests to the CreateTag Operation under Custom_Vision_Training_3.4-preview have exceeded"
        " rate limit of your current Custom_Vision.Training S0 pricing tier. Please retry after 1 second. To"
        " increase your rate limit switch to a paid tier.",
    }
    emu.clock.advance(0.5)  # half a second refills one token at 2/s
    assert cv.create_tag(project.id, "b").name == "b"
    stats = emu.emulator.stats.snapshot()
    assert stats["answered429"] == 1 and stats["throttledByOperation"] == {"CreateTag": 1}
    assert [t.name for t in emu.emulator.store.list_tags(project.id)] == ["a", "b"]


def test_sdk_silently_retries_a_get_answered_429_with_retry_after(emu: RunningEmulator) -> None:
    """urllib3 honours Retry-After on GET/PUT/DELETE: the caller never sees that 429, it just waits."""
    _faults(emu, {"operation": "GetProjects", "kind": "429", "times": 1, "retry_after": 0})
    assert emu.client().get_projects() == []
    assert emu.emulator.stats.statuses["GetProjects"] == {429: 1, 200: 1}
    _faults(emu, {"operation": "GetProjects", "kind": "429", "times": 1, "retry_after": 0})
    error = error_of(emu.client(retries=0).get_projects)
    assert error.response.status_code == 429


def test_retry_after_is_whole_seconds_from_the_refill_rate(start_emulator: Start) -> None:
    emu = start_emulator(rate_per_second=0.25, tier="F0")
    cv = emu.client(retries=0)
    cv.get_domains()
    error = error_of(cv.get_domains)
    assert error.response.headers["Retry-After"] == "4"
    assert "F0 pricing tier. Please retry after 4 second." in error.response.json()["error"]["message"]
    emu.clock.advance(3)
    assert error_of(cv.get_domains).response.headers["Retry-After"] == "1"
    emu.clock.advance(1)
    assert len(cv.get_domains()) > 0


def test_rate_limits_are_per_training_key(start_emulator: Start) -> None:
    emu = start_emulator(rate_per_second=1, training_keys=("k1", "k2"))
    emu.client("k1").get_domains()
    assert error_of(emu.client("k1", retries=0).get_domains).response.status_code == 429
    assert len(emu.client("k2").get_domains()) > 0


def test_train_calls_have_their_own_bucket_at_the_tier_rate(start_emulator: Start) -> None:
    emu = start_emulator(rate_per_second=1, tier="F0")  # F0: TrainProject 2/s
    cv = emu.client(retries=0)
    project = cv.create_project("P")  # spends the only general token
    for _ in range(2):  # the train bucket is separate: both calls reach the service (and fail validation)
        assert error_of(cv.train_project, project.id).response.status_code == 400
    throttled = error_of(cv.train_project, project.id)
    assert throttled.response.status_code == 429
    assert "TrainProject Operation" in throttled.response.json()["error"]["message"]
    assert error_of(cv.get_projects).response.status_code == 429
    assert emu.emulator.stats.answered_429 == 2


# --- image uploads ------------------------------------------------------------------------------------


def test_batch_of_65_images_is_rejected_whole(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory, emu: RunningEmulator
) -> None:
    error = error_of(trainer.create_images_from_files, project.id, images.batch(65))
    assert error.response.status_code == 400 and error.error.code == "BadRequestExceededBatchSize"
    assert trainer.get_image_count(project.id) == 0
    assert trainer.create_images_from_files(project.id, images.batch(64)).is_batch_successful
    assert trainer.get_image_count(project.id) == 64


def test_empty_or_contentless_batch_is_no_valid_image_files(trainer: CustomVisionTrainingClient, project) -> None:
    for batch in (ImageFileCreateBatch(images=[]), ImageFileCreateBatch(images=[ImageFileCreateEntry(name="x")])):
        error = error_of(trainer.create_images_from_files, project.id, batch)
        assert (error.response.status_code, error.error.code, str(error)) == (
            400,
            "BadRequestImageBatch",
            "No valid image files",
        )


def test_image_over_6_mb_is_error_image_size(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory
) -> None:
    limit = 6 * 1024 * 1024
    png = images.png()
    exactly = png + b"\0" * (limit - len(png))  # trailing bytes after IEND still decode
    status, result = one(project.id, trainer, ImageFileCreateEntry(name="big.png", contents=exactly + b"\0"))
    assert (status, result.status, result.image) == (207, "ErrorImageSize", None)
    status, result = one(project.id, trainer, ImageFileCreateEntry(name="max.png", contents=exactly))
    assert (status, result.status) == (200, "OK")
    assert trainer.get_image_count(project.id) == 1


def test_formats_are_detected_from_the_bytes(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory, emu: RunningEmulator
) -> None:
    entries = [
        ImageFileCreateEntry(name="a.gif", contents=images.encode("GIF")),
        ImageFileCreateEntry(name="b.bmp", contents=images.encode("BMP")),
        ImageFileCreateEntry(name="c.png", contents=images.png()),
        ImageFileCreateEntry(name="named.jpg", contents=images.png()),  # the name does not matter
        ImageFileCreateEntry(name="notes.jpg", contents=b"just some text, not a picture"),
        ImageFileCreateEntry(name="cut.png", contents=images.png()[:40]),  # PNG magic, truncated
        ImageFileCreateEntry(name="cut.jpg", contents=images.jpeg(640, 480)[:700]),  # header intact, scan cut
        ImageFileCreateEntry(name="d.tiff", contents=images.encode("TIFF")),
    ]
    raw = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries), raw=True)
    assert raw.response.status_code == 207 and raw.output.is_batch_successful is False
    assert [r.status for r in raw.output.images] == ["OK"] * 4 + ["ErrorImageFormat"] * 4
    assert [r.source_url for r in raw.output.images] == [e.name for e in entries]
    assert sorted(i.format for i in emu.emulator.images(project.id)) == ["bmp", "gif", "png", "png"]


def test_image_dimensions_limits(trainer: CustomVisionTrainingClient, project, images: ImageFactory) -> None:
    cases = {
        "wide.png": (images.png(10_241, 500), "ErrorImageDimensions"),
        "edge.png": (images.png(10_240, 500), "OK"),
        "ratio26.png": (images.png(260, 10), "ErrorImageDimensions"),
        "ratio25.png": (images.png(10, 250), "OK"),
    }
    batch = ImageFileCreateBatch(images=[ImageFileCreateEntry(name=n, contents=d) for n, (d, _) in cases.items()])
    result = trainer.create_images_from_files(project.id, batch)
    assert {r.source_url: r.status for r in result.images} == {n: s for n, (_, s) in cases.items()}
    assert sorted((i.width, i.height) for i in trainer.get_images(project.id)) == [(10, 250), (10_240, 500)]


def test_project_image_quota(start_emulator: Start, images: ImageFactory) -> None:
    emu = start_emulator(images_per_project=3)
    cv = emu.client()
    project = cv.create_project("Small")
    kept = images.png()
    cv.create_images_from_files(
        project.id, ImageFileCreateBatch(images=[ImageFileCreateEntry(name="k", contents=kept)])
    )
    cv.create_images_from_files(project.id, images.batch(1))
    raw = cv.create_images_from_files(project.id, images.batch(2), raw=True)
    assert raw.response.status_code == 207
    assert [(r.status, r.image is None) for r in raw.output.images] == [("OK", False), ("ErrorLimitExceed", True)]
    assert cv.get_image_count(project.id) == 3
    # A duplicate needs no new slot, so it still goes through when the project is full.
    dup = cv.create_images_from_files(
        project.id, ImageFileCreateBatch(images=[ImageFileCreateEntry(name="again.png", contents=kept)])
    )
    assert dup.images[0].status == "OKDuplicate"
    assert cv.get_image_count(project.id) == 3


def test_f0_tier_quotas(start_emulator: Start) -> None:
    emu = start_emulator(tier="F0")
    cv = emu.client()
    assert emu.emulator.store.limits.max_images_per_project == 5_000
    first = cv.create_project("One")
    cv.create_project("Two")
    error = error_of(cv.create_project, "Three")
    assert (error.response.status_code, error.error.code) == (400, "BadRequestExceedProjectLimit")
    for i in range(50):
        cv.create_tag(first.id, f"tag{i}")
    error = error_of(cv.create_tag, first.id, "tag50")
    assert (error.response.status_code, error.error.code) == (400, "BadRequestExceedTagPerProjectLimit")
    assert len(cv.get_tags(first.id)) == 50


def test_quota_overrides_for_long_sessions_and_small_tests(start_emulator: Start) -> None:
    emu = start_emulator(max_projects=150, tags_per_project=1)
    cv = emu.client()
    projects = [cv.create_project(f"p{i}") for i in range(101)]  # S0 alone would stop at 100
    cv.create_tag(projects[0].id, "only")
    assert error_of(cv.create_tag, projects[0].id, "second").error.code == "BadRequestExceedTagPerProjectLimit"
    assert len(cv.get_projects()) == 101


def test_unknown_tag_fails_the_entry_and_stores_nothing(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory
) -> None:
    status, result = one(project.id, trainer, images.entry(tag_ids=["00000000-0000-0000-0000-0000000000aa"]))
    assert (status, result.status, result.image) == (207, "ErrorInvalidTag", None)
    assert trainer.get_image_count(project.id) == 0


def test_more_than_100_tags_on_one_image(trainer: CustomVisionTrainingClient, project, images: ImageFactory) -> None:
    tags = [trainer.create_tag(project.id, f"t{i}").id for i in range(101)]
    status, result = one(project.id, trainer, images.entry(tag_ids=tags))
    assert (status, result.status) == (207, "ErrorTagLimitExceed")
    status, result = one(project.id, trainer, images.entry(tag_ids=tags[:100]))
    assert (status, result.status, len(result.image.tags)) == (200, "OK", 100)


def test_more_than_300_regions_on_one_image(
    trainer: CustomVisionTrainingClient, detection, images: ImageFactory
) -> None:
    tag = trainer.create_tag(detection.id, "item")
    boxes = [Region(tag_id=tag.id, left=(i % 20) / 20, top=(i // 20) / 20, width=0.05, height=0.05) for i in range(301)]
    status, result = one(detection.id, trainer, images.entry(regions=boxes))
    assert (status, result.status) == (207, "ErrorRegionLimitExceed")
    status, result = one(detection.id, trainer, images.entry(regions=boxes[:300]))
    assert (status, result.status, len(result.image.regions)) == (200, "OK", 300)


def test_negative_tag_never_shares_an_image(trainer: CustomVisionTrainingClient, project, images: ImageFactory) -> None:
    cat = trainer.create_tag(project.id, "cat")
    negative = trainer.create_tag(project.id, "Negative", type="Negative")
    status, result = one(project.id, trainer, images.entry(tag_ids=[cat.id, negative.id]))
    assert (status, result.status) == (207, "ErrorNegativeAndRegularTagOnSameImage")
    image = one(project.id, trainer, images.entry(tag_ids=[negative.id]))[1].image
    error = error_of(trainer.create_image_tags, project.id, [ImageTagCreateEntry(image_id=image.id, tag_id=cat.id)])
    assert (error.response.status_code, error.error.code) == (400, "BadRequestNegativeAndRegularTagOnSameImage")
    error = error_of(trainer.create_tag, project.id, "Nothing", type="Negative")
    assert (error.response.status_code, error.error.code) == (400, "BadRequestMultipleNegativeTag")


def test_duplicate_content_returns_the_existing_image_with_merged_tags(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory
) -> None:
    cat, dog = trainer.create_tag(project.id, "cat"), trainer.create_tag(project.id, "dog")
    data = images.png()
    first = one(project.id, trainer, ImageFileCreateEntry(name="a.png", contents=data, tag_ids=[cat.id]))[1].image
    raw = trainer.create_images_from_files(
        project.id,
        ImageFileCreateBatch(
            images=[
                ImageFileCreateEntry(name="b.png", contents=data, tag_ids=[dog.id]),
                ImageFileCreateEntry(name="c.png", contents=images.png()),
            ]
        ),
        raw=True,
    )
    assert raw.response.status_code == 207 and raw.output.is_batch_successful is False
    dup, fresh = raw.output.images
    assert (dup.status, dup.image.id) == ("OKDuplicate", first.id)
    assert {t.tag_name for t in dup.image.tags} == {"cat", "dog"}
    assert fresh.status == "OK"
    assert trainer.get_image_count(project.id) == 2
    assert {t.name: t.image_count for t in trainer.get_tags(project.id)} == {"cat": 1, "dog": 1}


def test_duplicates_within_one_batch_collapse(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory
) -> None:
    data = images.png()
    result = trainer.create_images_from_files(
        project.id,
        ImageFileCreateBatch(
            images=[
                ImageFileCreateEntry(name="x.png", contents=data),
                ImageFileCreateEntry(name="y.png", contents=data),
            ]
        ),
    )
    assert [r.status for r in result.images] == ["OK", "OKDuplicate"]
    assert result.images[0].image.id == result.images[1].image.id


def test_multipart_uploads_name_sources_with_quoted_filenames(
    emu: RunningEmulator, trainer, project, images: ImageFactory
) -> None:
    tag = trainer.create_tag(project.id, "t")
    upload = io.BytesIO(images.png())
    upload.name = "/photos/door cam.png"
    result = trainer.create_images_from_data(project.id, upload, tag_ids=[tag.id])
    assert result.images[0].source_url == '"door cam.png"'
    assert result.images[0].image.tags[0].tag_id == tag.id
    files = [("imageData", (f"p{i}.png", images.png(), "application/octet-stream")) for i in range(3)]
    files.append(("imageData", ("bad.png", b"nope", "application/octet-stream")))
    response = requests.post(
        emu.api(f"/projects/{project.id}/images?tagIds={tag.id}"), files=files, headers={"Training-Key": TRAINING_KEY}
    )
    assert response.status_code == 207
    body = response.json()
    assert [(i["sourceUrl"], i["status"]) for i in body["images"]] == [
        ('"p0.png"', "OK"),
        ('"p1.png"', "OK"),
        ('"p2.png"', "OK"),
        ('"bad.png"', "ErrorImageFormat"),
    ]
    assert body["images"][3]["image"] is None
    too_many = [("imageData", (f"q{i}.png", images.png(), "image/png")) for i in range(65)]
    response = requests.post(
        emu.api(f"/projects/{project.id}/images"), files=too_many, headers={"Training-Key": TRAINING_KEY}
    )
    assert response.status_code == 400 and response.json()["code"] == "BadRequestExceededBatchSize"
    assert trainer.get_image_count(project.id) == 4


def test_octet_stream_and_raw_bytes_uploads(emu: RunningEmulator, trainer, project, images: ImageFactory) -> None:
    response = requests.post(
        emu.api(f"/projects/{project.id}/images"),
        data=images.jpeg(),
        headers={"Training-Key": TRAINING_KEY, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200 and response.json()["images"][0]["sourceUrl"] == ""
    result = trainer.create_images_from_data(project.id, images.png())  # bytes: a part without a filename
    assert result.is_batch_successful and result.images[0].image.width == 64
    assert trainer.get_image_count(project.id) == 2


def test_batch_tags_and_metadata_reach_every_image(
    trainer: CustomVisionTrainingClient, project, images: ImageFactory, emu: RunningEmulator
) -> None:
    cat, dog = trainer.create_tag(project.id, "cat"), trainer.create_tag(project.id, "dog")
    batch = images.batch(3, tag_ids=[cat.id], metadata={"blob": "cam1/x.enc", "etag": "0x8D"})
    batch.images[0].tag_ids = [dog.id]
    trainer.create_images_from_files(project.id, batch)
    stored = emu.emulator.images(project.id)
    assert [sorted(t.tag_name for t in i.tags) for i in stored] == [["cat", "dog"], ["cat"], ["cat"]]
    assert all(i.metadata == {"blob": "cam1/x.enc", "etag": "0x8D"} for i in stored)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({f"k{i}": "v" for i in range(11)}, "BadRequestImageMetadataKey"),
        ({"k" * 129: "v"}, "BadRequestImageMetadataKey"),
        ({"k": "v" * 257}, "BadRequestImageMetadataValue"),
    ],
)
def test_metadata_limits_reject_the_whole_request(trainer, project, images: ImageFactory, metadata, code) -> None:
    error = error_of(trainer.create_images_from_files, project.id, images.batch(2, metadata=metadata))
    assert (error.response.status_code, error.error.code) == (400, code)
    assert trainer.get_image_count(project.id) == 0


def test_metadata_at_the_limits_is_stored(trainer, project, images: ImageFactory) -> None:
    metadata = {f"{i}" + "k" * 127: "v" * 256 for i in range(10)}
    image = trainer.create_images_from_files(project.id, images.batch(1, metadata=metadata)).images[0].image
    assert image.metadata == metadata


def test_update_image_metadata_merges_and_reports_per_image(trainer, project, images: ImageFactory) -> None:
    image = trainer.create_images_from_files(project.id, images.batch(1, metadata={"a": "1"})).images[0].image
    result = trainer.update_image_metadata(project.id, [image.id], {"b": "2"})
    assert result.is_batch_successful and result.images[0].metadata == {"a": "1", "b": "2"}
    raw = trainer.update_image_metadata(project.id, [image.id, project.id], {f"x{i}": "v" for i in range(9)}, raw=True)
    assert raw.response.status_code == 207
    assert [(e.image_id, e.status) for e in raw.output.images] == [
        (image.id, "ErrorLimitExceed"),
        (project.id, "ErrorImageNotFound"),
    ]
    assert trainer.get_images_by_ids(project.id, [image.id])[0].metadata == {"a": "1", "b": "2"}
    error = error_of(trainer.update_image_metadata, project.id, [image.id], {"v": "x" * 257})
    assert error.error.code == "BadRequestImageMetadataValue"


def test_metadata_filter_expressions(trainer, project, images: ImageFactory) -> None:
    for camera, day in (("door", "mon"), ("door", "tue"), ("yard", "mon")):
        trainer.create_images_from_files(project.id, images.batch(1, metadata={"camera": camera, "day": day}))
    trainer.create_images_from_files(project.id, images.batch(1))

    def count(expr: str) -> int:
        listed = len(trainer.get_images(project.id, filter=expr))
        assert trainer.get_image_count(project.id, filter=expr) == listed
        return listed

    assert count("camera eq 'door'") == 2
    assert count("camera ne 'door'") == 2  # includes the image without metadata
    assert count("camera eq 'door' and day eq 'mon'") == 1
    assert count("camera eq 'yard' or day eq 'tue'") == 2
    assert count("day eq 'mon' and (camera eq 'yard' or camera eq 'door')") == 2
    assert count("metadata=camera eq 'door' and day ne 'mon'") == 1
    assert count("camera eq 'it''s'") == 0
    for bad in ("camera = 'door'", "camera eq door", "camera eq 'door' and", "(camera eq 'door'"):
        error = error_of(trainer.get_images, project.id, filter=bad)
        assert (error.response.status_code, error.error.code) == (400, "BadRequest")


def test_filter_parser_precedence() -> None:
    pred = compile_metadata_filter("a eq '1' or b eq '2' and c eq '3'")  # and binds tighter
    assert pred({"a": "1"}) and not pred({"b": "2"}) and pred({"b": "2", "c": "3"})
    with pytest.raises(CVError):
        compile_metadata_filter("   ")


def test_listing_tagging_status_tags_and_paging(trainer, project, images: ImageFactory) -> None:
    cat, dog = trainer.create_tag(project.id, "cat"), trainer.create_tag(project.id, "dog")
    ids = [
        one(project.id, trainer, images.entry(tag_ids=tags))[1].image.id
        for tags in ([cat.id], [dog.id], [cat.id, dog.id], [], [])
    ]
    assert [i.id for i in trainer.get_images(project.id)] == ids[::-1]  # Newest first by default
    assert [i.id for i in trainer.get_images(project.id, order_by="Oldest", take=2, skip=1)] == ids[1:3]
    assert {i.id for i in trainer.get_images(project.id, tagging_status="Untagged")} == set(ids[3:])
    assert {i.id for i in trainer.get_images(project.id, tagging_status="Tagged")} == set(ids[:3])
    assert {i.id for i in trainer.get_tagged_images(project.id, tag_ids=[cat.id])} == {ids[0], ids[2]}
    assert trainer.get_tagged_image_count(project.id, tag_ids=[cat.id, dog.id]) == 3  # any of the tags
    assert trainer.get_untagged_image_count(project.id) == 2
    assert len(trainer.get_images(project.id, take=0)) == 0
    assert error_of(trainer.get_images, project.id, order_by="Random").response.status_code == 400


def test_image_uris_serve_real_bytes_without_a_key(trainer, project, images: ImageFactory) -> None:
    data = images.png(2000, 1000)
    image = one(project.id, trainer, ImageFileCreateEntry(name="big.png", contents=data))[1].image
    original = requests.get(image.original_image_uri)
    assert original.status_code == 200 and original.content == data
    assert original.headers["Content-Type"] == "image/png"
    for uri, side in ((image.thumbnail_uri, 256), (image.resized_image_uri, 1024)):
        response = requests.get(uri)
        assert response.headers["Content-Type"] == "image/jpeg"
        assert max(PILImage.open(io.BytesIO(response.content)).size) == side
    assert trainer.get_project(project.id).thumbnail_uri == image.thumbnail_uri


def test_public_url_sets_the_base_of_image_uris(start_emulator: Start, images: ImageFactory) -> None:
    emu = start_emulator(public_url="http://cv.devstack.test:9999/")
    cv = emu.client()
    project = cv.create_project("P")
    image = one(project.id, cv, images.entry())[1].image
    assert image.original_image_uri == f"http://cv.devstack.test:9999/blobs/{image.id}/original"


def test_delete_images_by_id_and_all(emu: RunningEmulator, trainer, project, images: ImageFactory) -> None:
    tag = trainer.create_tag(project.id, "t")
    created = trainer.create_images_from_files(project.id, images.batch(4, tag_ids=[tag.id])).images
    gone = created[0].image
    raw = trainer.delete_images(project.id, image_ids=[gone.id, "00000000-0000-0000-0000-00000000ffff"], raw=True)
    assert raw.response.status_code == 204
    assert requests.get(gone.original_image_uri).status_code == 404
    assert trainer.get_tag(project.id, tag.id).image_count == 3
    assert trainer.delete_images(project.id, all_images=True, raw=True).response.status_code == 202
    assert trainer.get_image_count(project.id) == 0
    error = error_of(trainer.delete_images, project.id)
    assert (error.response.status_code, error.error.code) == (400, "BadRequestInvalidIds")


def test_uploads_from_many_threads_are_all_stored(emu: RunningEmulator, project, images: ImageFactory) -> None:
    batches = [images.batch(8) for _ in range(8)]
    results: list[bool] = []

    def upload(batch: ImageFileCreateBatch) -> None:
        results.append(make_client(emu.url).create_images_from_files(project.id, batch).is_batch_successful)

    threads = [threading.Thread(target=upload, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert len(emu.emulator.images(project.id)) == 64


# --- tags ---------------------------------------------------------------------------------------------


def test_tag_names_are_unique_ignoring_case_and_blanks(trainer, project) -> None:
    trainer.create_tag(project.id, "Golden Retriever")
    for name in ("golden retriever", " GOLDEN RETRIEVER "):
        error = error_of(trainer.create_tag, project.id, name)
        assert (error.response.status_code, error.error.code) == (400, "BadRequestTagNameNotUnique")


@pytest.mark.parametrize("name", ["", "   ", "x" * 257])
def test_bad_tag_names(trainer, project, name: str) -> None:
    error = error_of(trainer.create_tag, project.id, name)
    assert (error.response.status_code, error.error.code) == (400, "BadRequestTagName")


def test_longest_tag_name_and_tag_updates(trainer, project) -> None:
    long = trainer.create_tag(project.id, "x" * 256)
    other = trainer.create_tag(project.id, "other")
    assert long.description is None
    # The SDK's Tag model requires a description client-side, so a tag read back needs one set to update it.
    with pytest.raises(ValidationError):
        trainer.update_tag(project.id, long.id, long)
    long.name, long.description, other.description = "shorter", "", ""
    assert trainer.update_tag(project.id, long.id, long).name == "shorter"
    other.name = "SHORTER"
    assert error_of(trainer.update_tag, project.id, other.id, other).error.code == "BadRequestTagNameNotUnique"
    assert error_of(trainer.create_tag, project.id, "t", type="Odd").error.code == "BadRequestTagType"


def test_tag_image_count_follows_tagging(trainer, project, images: ImageFactory) -> None:
    tag = trainer.create_tag(project.id, "cat")
    ids = [i.image.id for i in trainer.create_images_from_files(project.id, images.batch(3)).images]
    summary = trainer.create_image_tags(project.id, [ImageTagCreateEntry(image_id=i, tag_id=tag.id) for i in ids])
    assert len(summary.created) == 3
    assert trainer.get_tag(project.id, tag.id).image_count == 3
    trainer.delete_image_tags(project.id, ids[:1], [tag.id])
    assert trainer.get_tag(project.id, tag.id).image_count == 2
    trainer.delete_images(project.id, image_ids=ids[1:2])
    assert trainer.get_tags(project.id)[0].image_count == 1
    trainer.delete_tag(project.id, tag.id)
    assert trainer.get_untagged_image_count(project.id) == 2


def test_create_image_tags_reports_duplicates_and_limits(trainer, project, images: ImageFactory) -> None:
    tags = [trainer.create_tag(project.id, f"t{i}").id for i in range(101)]
    image = one(project.id, trainer, images.entry(tag_ids=tags[:99]))[1].image
    entries = [ImageTagCreateEntry(image_id=image.id, tag_id=t) for t in tags[98:101]]
    summary = trainer.create_image_tags(project.id, entries)
    assert [e.tag_id for e in summary.duplicated] == [tags[98]]
    assert [e.tag_id for e in summary.created] == [tags[99]]
    assert [e.tag_id for e in summary.exceeded] == [tags[100]]
    too_many = [ImageTagCreateEntry(image_id=image.id, tag_id=tags[0])] * 129
    assert error_of(trainer.create_image_tags, project.id, too_many).error.code == "BadRequestExceededBatchSize"


def test_unknown_ids_are_404_with_the_service_codes(trainer, project, images: ImageFactory) -> None:
    missing = "00000000-0000-0000-0000-000000000404"
    tag = trainer.create_tag(project.id, "t")
    image = one(project.id, trainer, images.entry())[1].image
    cases = [
        (trainer.get_project, (missing,), "NotFoundProject"),
        (trainer.get_tags, (missing,), "NotFoundProject"),
        (trainer.get_tag, (project.id, missing), "NotFoundTag"),
        (trainer.delete_tag, (project.id, missing), "NotFoundTag"),
        (trainer.get_iteration, (project.id, missing), "NotFoundIteration"),
        (
            trainer.create_image_tags,
            (project.id, [ImageTagCreateEntry(image_id=missing, tag_id=tag.id)]),
            "NotFoundImage",
        ),
        (
            trainer.create_image_tags,
            (project.id, [ImageTagCreateEntry(image_id=image.id, tag_id=missing)]),
            "NotFoundTag",
        ),
    ]
    for call, args, code in cases:
        error = error_of(call, *args)
        assert (error.response.status_code, error.error.code) == (404, code), call.__name__
    assert error_of(trainer.get_project, "not-a-guid").error.code == "BadRequestInvalidIds"


# --- regions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        (0.5, 0.0, 0.6, 0.5),  # right edge past 1
        (0.0, 0.7, 0.5, 0.4),  # bottom edge past 1
        (-0.1, 0.0, 0.5, 0.5),
        (0.1, 0.1, 0.0, 0.5),  # zero width
        (0.1, 0.1, 0.5, -0.2),
    ],
)
def test_regions_must_lie_inside_the_image(trainer, detection, images: ImageFactory, box) -> None:
    tag = trainer.create_tag(detection.id, "item")
    image = one(detection.id, trainer, images.entry())[1].image
    entry = ImageRegionCreateEntry(
        image_id=image.id, tag_id=tag.id, left=box[0], top=box[1], width=box[2], height=box[3]
    )
    error = error_of(trainer.create_image_regions, detection.id, [entry])
    assert (error.response.status_code, error.error.code) == (400, "BadRequestImageRegions")
    upload = images.entry(regions=[Region(tag_id=tag.id, left=box[0], top=box[1], width=box[2], height=box[3])])
    assert error_of(
        trainer.create_images_from_files, detection.id, ImageFileCreateBatch(images=[upload])
    ).error.code == ("BadRequestImageRegions")
    assert trainer.get_image_count(detection.id) == 1


def test_region_edges_allow_float_rounding(trainer, detection, images: ImageFactory) -> None:
    tag = trainer.create_tag(detection.id, "item")
    image = one(detection.id, trainer, images.entry())[1].image
    left = 1 / 3
    entry = ImageRegionCreateEntry(
        image_id=image.id, tag_id=tag.id, left=left, top=0.0, width=1 - left + 1e-9, height=1.0
    )
    assert len(trainer.create_image_regions(detection.id, [entry]).created) == 1


def test_a_region_tags_its_image(trainer, detection, images: ImageFactory) -> None:
    tag = trainer.create_tag(detection.id, "can")
    image = one(detection.id, trainer, images.entry())[1].image
    assert trainer.get_untagged_image_count(detection.id) == 1
    entry = ImageRegionCreateEntry(image_id=image.id, tag_id=tag.id, left=0.1, top=0.1, width=0.2, height=0.2)
    created = trainer.create_image_regions(detection.id, [entry]).created[0]
    stored = trainer.get_images_by_ids(detection.id, [image.id])[0]
    assert [t.tag_name for t in stored.tags] == ["can"]
    assert [(r.region_id, r.tag_name) for r in stored.regions] == [(created.region_id, "can")]
    assert stored.regions[0].created is not None
    assert trainer.get_tag(detection.id, tag.id).image_count == 1
    trainer.delete_image_regions(detection.id, [created.region_id])
    assert trainer.get_untagged_image_count(detection.id) == 1
    assert trainer.get_images_by_ids(detection.id, [image.id])[0].regions is None


def test_region_batches_report_duplicates_and_the_300_limit(trainer, detection, images: ImageFactory) -> None:
    tag = trainer.create_tag(detection.id, "item")
    boxes = [Region(tag_id=tag.id, left=(i % 20) / 20, top=(i // 20) / 20, width=0.05, height=0.05) for i in range(299)]
    image = one(detection.id, trainer, images.entry(regions=boxes))[1].image

    def entry(left: float, top: float = 0.9) -> ImageRegionCreateEntry:
        return ImageRegionCreateEntry(image_id=image.id, tag_id=tag.id, left=left, top=top, width=0.05, height=0.05)

    # (0, 0) is boxes[0] again; (0.5, 0.9) is region 300; (0.6, 0.9) would be region 301.
    raw = trainer.create_image_regions(detection.id, [entry(0.0, 0.0), entry(0.5), entry(0.6)], raw=True)
    assert raw.response.status_code == 207
    assert (len(raw.output.created), len(raw.output.duplicated), len(raw.output.exceeded)) == (1, 1, 1)
    assert len(trainer.get_images_by_ids(detection.id, [image.id])[0].regions) == 300
    error = error_of(trainer.create_image_regions, detection.id, [entry(i / 100) for i in range(65)])
    assert (error.response.status_code, error.error.code) == (400, "BadRequestExceededBatchSize")


def test_regions_belong_to_detection_projects(trainer, project, images: ImageFactory) -> None:
    tag = trainer.create_tag(project.id, "cat")
    image = one(project.id, trainer, images.entry())[1].image
    entry = ImageRegionCreateEntry(image_id=image.id, tag_id=tag.id, left=0.1, top=0.1, width=0.2, height=0.2)
    assert error_of(trainer.create_image_regions, project.id, [entry]).error.code == "BadRequestImageRegions"


# --- training -----------------------------------------------------------------------------------------


def _tagged(cv: CustomVisionTrainingClient, project_id: str, images: ImageFactory, counts: dict[str, int]) -> dict:
    tags = {name: cv.create_tag(project_id, name) for name in counts}
    for name, n in counts.items():
        if n:
            cv.create_images_from_files(project_id, images.batch(n, tag_ids=[tags[name].id]))
    return tags


def test_training_completes_after_the_configured_delay(start_emulator: Start, images: ImageFactory) -> None:
    emu = start_emulator(training_seconds=30)
    cv = emu.client()
    project = cv.create_project("P")
    _tagged(cv, project.id, images, {"cat": 5, "dog": 5})
    iteration = cv.train_project(project.id)
    assert (iteration.status, iteration.trained_at, iteration.name) == ("Training", None, "Iteration 1")
    emu.clock.advance(29)
    assert cv.get_iteration(project.id, iteration.id).status == "Training"
    emu.clock.advance(1)
    done = cv.get_iteration(project.id, iteration.id)
    assert done.status == "Completed"
    assert done.trained_at.timestamp() == pytest.approx(iteration.created.timestamp() + 30, abs=0.01)


def test_training_not_needed_until_something_changes(emu: RunningEmulator, trainer, project, images) -> None:
    tags = _tagged(trainer, project.id, images, {"cat": 5, "dog": 5})
    trainer.train_project(project.id)
    emu.clock.advance(emu.config.training_seconds)
    error = error_of(trainer.train_project, project.id)
    assert (error.response.status_code, error.error.code) == (400, "BadRequestTrainingNotNeeded")
    first = trainer.get_images(project.id)[0]
    trainer.update_image_metadata(project.id, [first.id], {"k": "v"})
    again = requests.get(first.original_image_uri).content
    dup = trainer.create_images_from_files(
        project.id,
        ImageFileCreateBatch(
            images=[ImageFileCreateEntry(name="again.png", contents=again, tag_ids=[first.tags[0].tag_id])]
        ),
    )
    assert dup.images[0].status == "OKDuplicate"
    # Neither metadata nor a duplicate that adds nothing changes what a model would learn.
    assert error_of(trainer.train_project, project.id).error.code == "BadRequestTrainingNotNeeded"
    assert trainer.train_project(project.id, force_train=True).name == "Iteration 2"
    emu.clock.advance(emu.config.training_seconds)
    trainer.create_images_from_files(project.id, images.batch(1, tag_ids=[tags["cat"].id]))
    assert trainer.train_project(project.id).name == "Iteration 3"


def test_training_already_in_progress(emu: RunningEmulator, trainer, project, images) -> None:
    _tagged(trainer, project.id, images, {"cat": 5, "dog": 5})
    trainer.train_project(project.id)
    error = error_of(trainer.train_project, project.id, force_train=True)
    assert (error.response.status_code, error.error.code) == (400, "BadRequestTrainingAlreadyInProgress")


def test_classification_needs_two_tags_with_five_images(trainer, project, images: ImageFactory) -> None:
    tags = _tagged(trainer, project.id, images, {"cat": 5, "dog": 4, "empty": 0})
    trainer.create_images_from_files(project.id, images.batch(10))  # untagged images do not count
    error = error_of(trainer.train_project, project.id)
    assert (error.response.status_code, error.error.code) == (
        400,
        "BadRequestMultiClassClassificationTrainingValidationFailed",
    )
    assert "'dog'" in str(error) and "4" in str(error)
    trainer.delete_tag(project.id, tags["dog"].id)
    error = error_of(trainer.train_project, project.id)
    assert "at least 2 tags" in str(error)
    trainer.create_images_from_files(project.id, images.batch(5, tag_ids=[tags["empty"].id]))
    assert trainer.train_project(project.id).status == "Training"


def test_multilabel_projects_use_their_own_code(trainer, images: ImageFactory) -> None:
    project = trainer.create_project("ML", classification_type="Multilabel")
    _tagged(trainer, project.id, images, {"a": 5, "b": 1})
    error = error_of(trainer.train_project, project.id)
    assert error.error.code == "BadRequestMultiLabelClassificationTrainingValidationFailed"
    assert "'b'" in str(error)


def test_detection_needs_fifteen_images_per_tag(trainer, detection, images: ImageFactory) -> None:
    tag = trainer.create_tag(detection.id, "can")
    box = [Region(tag_id=tag.id, left=0.1, top=0.1, width=0.5, height=0.5)]
    trainer.create_images_from_files(
        detection.id, ImageFileCreateBatch(images=[images.entry(regions=box) for _ in range(14)])
    )
    error = error_of(trainer.train_project, detection.id)
    assert (error.response.status_code, error.error.code) == (400, "BadRequestDetectionTrainingValidationFailed")
    assert "'can'" in str(error) and "15" in str(error)
    trainer.create_images_from_files(detection.id, ImageFileCreateBatch(images=[images.entry(regions=box)]))
    assert trainer.train_project(detection.id).status == "Training"


def test_twenty_iterations_per_project(emu: RunningEmulator, trainer, project, images) -> None:
    _tagged(trainer, project.id, images, {"cat": 5, "dog": 5})
    for _ in range(20):
        trainer.train_project(project.id, force_train=True)
        emu.clock.advance(emu.config.training_seconds)
    error = error_of(trainer.train_project, project.id, force_train=True)
    assert error.error.code == "BadRequestExceedIterationPerProjectLimit"
    trainer.delete_iteration(project.id, trainer.get_iterations(project.id)[0].id)
    assert trainer.train_project(project.id, force_train=True).name == "Iteration 21"


def test_iterations_can_be_renamed_and_deleted(emu: RunningEmulator, trainer, project, images) -> None:
    _tagged(trainer, project.id, images, {"cat": 5, "dog": 5})
    first = trainer.train_project(project.id)
    emu.clock.advance(emu.config.training_seconds)
    second = trainer.train_project(project.id, force_train=True)
    assert trainer.update_iteration(project.id, first.id, "Baseline").name == "Baseline"
    error = error_of(trainer.update_iteration, project.id, second.id, "baseline")
    assert error.error.code == "BadRequestIterationNameNotUnique"
    trainer.delete_iteration(project.id, first.id)
    assert [i.id for i in trainer.get_iterations(project.id)] == [second.id]


# --- persistence --------------------------------------------------------------------------------------


def test_state_survives_a_restart(start_emulator: Start, images: ImageFactory, tmp_path: Path) -> None:
    first = start_emulator(state_dir=str(tmp_path / "cv"), training_seconds=10)
    cv = first.client()
    od = cv.create_project("Shelf", domain_id=GENERAL_DETECTION)
    tag = cv.create_tag(od.id, "can")
    box = Region(tag_id=tag.id, left=0.1, top=0.2, width=0.3, height=0.4)
    data = images.png()
    image = (
        cv.create_images_from_files(
            od.id,
            ImageFileCreateBatch(
                images=[ImageFileCreateEntry(name="a.png", contents=data, regions=[box])], metadata={"sha": "abc"}
            ),
        )
        .images[0]
        .image
    )
    cv.create_images_from_files(od.id, images.batch(14, regions=[box]))
    iteration = cv.train_project(od.id)
    first.stop()

    second = start_emulator(state_dir=str(tmp_path / "cv"), training_seconds=10, clock=first.clock)
    cv = second.client()
    assert [p.name for p in cv.get_projects()] == ["Shelf"]
    assert cv.get_tag(od.id, tag.id).image_count == 15
    again = cv.get_images_by_ids(od.id, [image.id])[0]
    assert again.metadata == {"sha": "abc"}
    assert [(r.tag_name, r.left, r.top, r.width, r.height) for r in again.regions] == [("can", 0.1, 0.2, 0.3, 0.4)]
    assert requests.get(again.original_image_uri).content == data
    assert cv.get_iteration(od.id, iteration.id).status == "Training"
    second.clock.advance(10)
    assert cv.get_iteration(od.id, iteration.id).status == "Completed"
    assert one(od.id, cv, ImageFileCreateEntry(name="b.png", contents=data))[1].status == "OKDuplicate"
    assert (tmp_path / "cv" / "customvision.sqlite").exists()


# --- fault injection ----------------------------------------------------------------------------------


def _faults(emu: RunningEmulator, *rules: dict) -> None:
    response = requests.post(f"{emu.url}/_emulator/faults", json=list(rules))
    assert response.status_code == 200, response.text


def test_fault_429_carries_retry_after(emu: RunningEmulator, trainer) -> None:
    _faults(emu, {"operation": "CreateProject", "kind": "429", "times": 1, "retry_after": 7})
    error = error_of(trainer.create_project, "P")
    assert (error.response.status_code, error.response.headers["Retry-After"]) == (429, "7")
    assert "Please retry after 7 second." in error.response.json()["error"]["message"]
    assert trainer.create_project("P").name == "P"
    stats = requests.get(f"{emu.url}/_emulator/stats").json()
    assert stats["answered429"] == 1 and stats["faultsFired"] == {"429": 1} and stats["throttled"] == 0


def test_fault_500_on_a_post_reaches_the_caller(emu: RunningEmulator, trainer) -> None:
    _faults(emu, {"operation": "*", "kind": "500", "times": 1})
    error = error_of(trainer.create_project, "P")
    assert (error.response.status_code, error.error.code) == (500, "ErrorUnknown")
    assert trainer.get_projects() == []  # the failed call changed nothing
    assert trainer.create_project("P").name == "P"


def test_fault_500_on_a_get_is_retried_by_the_sdk(emu: RunningEmulator, trainer) -> None:
    _faults(emu, {"operation": "GetProjects", "kind": "500", "times": 1})
    assert trainer.get_projects() == []  # msrest retried GET transparently
    assert emu.emulator.stats.requests["GetProjects"] == 2
    assert emu.emulator.stats.statuses["GetProjects"] == {500: 1, 200: 1}


def test_fault_503_exhausts_sdk_retries_on_gets(emu: RunningEmulator, trainer) -> None:
    trainer.config.retry_policy.retries = 0
    _faults(emu, {"operation": "GetDomains", "kind": "503", "times": 1, "retry_after": 3})
    with pytest.raises(ClientRequestError):
        trainer.get_domains()
    assert emu.emulator.stats.faults_fired == {"503": 1}
    assert len(trainer.get_domains()) > 0


def test_fault_reset_drops_the_connection_before_processing(emu: RunningEmulator, trainer) -> None:
    _faults(emu, {"operation": "CreateProject", "kind": "reset", "times": 1})
    with pytest.raises(ClientRequestError, match="reset|aborted"):
        trainer.create_project("P")
    assert emu.emulator.projects() == []
    assert trainer.create_project("P").name == "P"


def test_fault_reset_after_processing_loses_only_the_answer(emu: RunningEmulator, trainer) -> None:
    _faults(emu, {"operation": "CreateProject", "kind": "reset", "times": 1, "phase": "after"})
    with pytest.raises(ClientRequestError):
        trainer.create_project("P")
    assert [p.name for p in emu.emulator.projects()] == ["P"]  # a blind retry would now hit NameNotUnique
    assert error_of(trainer.create_project, "P").error.code == "BadRequestProjectNameNotUnique"


def test_fault_slow_holds_the_answer_after_doing_the_work(emu: RunningEmulator, trainer, project) -> None:
    _faults(emu, {"operation": "CreateTag", "kind": "slow", "delay": 1.5, "times": 1})
    with pytest.raises(ClientRequestError, match="[Tt]imed? ?out"):
        trainer.create_tag(project.id, "late", timeout=0.5)
    assert [t.name for t in emu.emulator.store.list_tags(project.id)] == ["late"]
    _faults(emu, {"operation": "GetTags", "kind": "slow", "delay": 0.3})
    started = time.monotonic()
    assert [t.name for t in trainer.get_tags(project.id)] == ["late"]
    assert time.monotonic() - started >= 0.3


def test_fault_plans_share_the_devstack_vocabulary(emu: RunningEmulator, trainer) -> None:
    """Patterns, skip, "401" and "reset_after" work as in devstack/faults.py (the MM emulator's plans)."""
    _faults(
        emu,
        {"operation": "create*", "kind": "reset_after", "skip": 1, "times": 1},
        {"operation": "GetTags", "kind": "401", "times": 1},
    )
    first = trainer.create_project("A")  # skipped by the rule
    with pytest.raises(ClientRequestError):
        trainer.create_tag(first.id, "t")  # processed, answer lost
    assert [t.name for t in emu.emulator.store.list_tags(first.id)] == ["t"]
    error = error_of(trainer.get_tags, first.id)
    assert error.response.status_code == 401 and error.response.json()["error"]["code"] == "401"
    assert [t.name for t in trainer.get_tags(first.id)] == ["t"]
    rules = requests.get(f"{emu.url}/_emulator/faults").json()
    assert [(r["kind"], r["phase"], r["seen"], r["fired"]) for r in rules] == [
        ("reset", "after", 2, 1),
        ("401", "before", 2, 1),
    ]


def test_fault_probability_is_repeatable_with_a_seed(emu: RunningEmulator) -> None:
    def run() -> list[int]:
        requests.post(
            f"{emu.url}/_emulator/faults",
            json={"seed": 7, "rules": [{"operation": "GetDomains", "kind": "503", "probability": 0.5}]},
        )
        return [
            requests.get(emu.api("/domains"), headers={"Training-Key": TRAINING_KEY}).status_code for _ in range(20)
        ]

    first = run()
    assert first == run()
    assert 0 < first.count(503) < 20
    assert set(first) == {200, 503}


def test_admin_routes_need_no_key(emu: RunningEmulator, trainer, images: ImageFactory) -> None:
    project = trainer.create_project("P")
    tag = trainer.create_tag(project.id, "t")
    trainer.create_images_from_files(project.id, images.batch(2, tag_ids=[tag.id], metadata={"k": "v"}))
    listing = requests.get(f"{emu.url}/_emulator/projects").json()
    assert [(p["name"], p["imageCount"], p["tags"][0]["imageCount"]) for p in listing] == [("P", 2, 2)]
    stored = requests.get(f"{emu.url}/_emulator/projects/{project.id}/images").json()
    assert [(i["tags"][0]["tagName"], i["metadata"], len(i["sha256"])) for i in stored] == [("t", {"k": "v"}, 64)] * 2
    bad = requests.post(f"{emu.url}/_emulator/faults", json=[{"kind": "explode"}])
    assert bad.status_code == 400 and "fault kind" in bad.json()["error"]
    _faults(emu, {"operation": "GetProjects", "kind": "500", "times": 2})
    assert requests.get(f"{emu.url}/_emulator/faults").json()[0]["remaining"] == 2
    assert requests.delete(f"{emu.url}/_emulator/faults").status_code == 204
    assert requests.get(f"{emu.url}/_emulator/faults").json() == []
    assert requests.get(f"{emu.url}/_emulator/stats").json()["requests"]["CreateImagesFromFiles"] == 1
    assert requests.post(f"{emu.url}/_emulator/reset").status_code == 204
    assert trainer.get_projects() == []
    assert requests.get(f"{emu.url}/_emulator/stats").json()["requests"] == {"GetProjects": 1}


def test_store_views_for_tests_and_tools(emu: RunningEmulator, trainer, detection, images: ImageFactory) -> None:
    tag = trainer.create_tag(detection.id, "can")
    box = Region(tag_id=tag.id, left=0.0, top=0.0, width=1.0, height=1.0)
    trainer.create_images_from_files(detection.id, images.batch(1, regions=[box], metadata={"etag": "1"}))
    (project,) = emu.emulator.projects()
    (image,) = emu.emulator.images(project.id)
    assert (project.name, project.is_detection) == ("Shelf", True)
    assert [t.tag_name for t in image.tags] == ["can"] and image.metadata == {"etag": "1"}
    assert image.regions[0].width == 1.0
    assert emu.emulator.stats.requests["CreateImagesFromFiles"] == 1


def _wait_for(url: str, process: subprocess.Popen, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)  # polling a readiness condition with a deadline, not synchronising on time
    raise AssertionError(f"{url} did not come up")


@pytest.mark.parametrize("via", ["cli", "env"])
def test_command_line_runs_the_emulator(tmp_path: Path, via: str) -> None:
    port = free_port()
    plan = json.dumps([{"operation": "GetDomains", "kind": "503", "times": 1}])
    args = [
        sys.executable,
        "-m",
        "devstack.customvision_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state",
        str(tmp_path / "state"),
        "--tier",
        "F0",
        "--rate",
        "0",
        "--training-seconds",
        "0",
        "--training-key",
        "cli-key",
        "other-key",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if via == "cli":
        args += ["--faults", plan]
    else:
        env["CV_EMULATOR_FAULTS"] = plan
    process = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        _wait_for(f"http://127.0.0.1:{port}/_emulator/health", process)
        cv = make_client(f"http://127.0.0.1:{port}", "other-key")
        cv.config.retry_policy.retries = 0
        with pytest.raises(ClientRequestError):
            cv.get_domains()  # the injected 503
        assert len(cv.get_domains()) == 13
        cv.create_project("A")
        cv.create_project("B")
        assert error_of(cv.create_project, "C").error.code == "BadRequestExceedProjectLimit"  # F0
        assert requests.get(f"http://127.0.0.1:{port}{API}/projects", headers={"Training-Key": "cli-key"}).ok
        assert (tmp_path / "state" / "customvision.sqlite").exists()
        cv.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
