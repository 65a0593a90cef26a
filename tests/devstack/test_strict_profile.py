"""The strict Azure profile: every uncertain service behaviour played in its stricter reading (issue 18).

Each behaviour is driven through the real SDK (azure-cognitiveservices-vision-customvision 3.1.1) or plain
HTTP, under the strict profile and under the default one, which must stay as it was. Every emulator started
here is also checked against the v3.4-preview spec at teardown (tests/devstack/conftest.py).
"""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import requests
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
)
from PIL import Image as PILImage

from devstack.customvision_server import CustomVisionEmulatorConfig
from devstack.mm_server import MMEmulatorConfig, mm_server_command
from devstack.mm_server import create_app as create_mm_app
from devstack.profiles import PROFILES, get_profile
from devstack.servers import free_port, serve_in_thread

from .conftest import API, TRAINING_KEY, ImageFactory, RunningEmulator


def _project(trainer, name: str = "strict"):
    return trainer.create_project(name, classification_type="Multilabel")


def _upload(trainer, project_id: str, *entries: tuple[str, bytes], metadata=None):
    batch = ImageFileCreateBatch(
        images=[ImageFileCreateEntry(name=n, contents=d) for n, d in entries], metadata=metadata
    )
    return trainer.create_images_from_files(project_id, batch)


def _wide_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


def _padded_jpeg(images: ImageFactory, size: int) -> bytes:
    """A decodable JPEG of exactly `size` bytes (decoders ignore what follows the end-of-image marker)."""
    data = images.jpeg()
    return data + b"\0" * (size - len(data))


# --- the profiles themselves ----------------------------------------------------------------------------


def test_the_strict_profile_differs_from_the_default_in_every_uncertain_behaviour():
    default, strict = PROFILES["default"], PROFILES["strict"]
    fields = [f for f in default.__dataclass_fields__ if f != "name"]
    assert [f for f in fields if getattr(default, f) == getattr(strict, f)] == []
    assert get_profile(None) is default and get_profile("STRICT") is strict
    with pytest.raises(ValueError, match="unknown Azure profile"):
        CustomVisionEmulatorConfig(profile="lenient")
    with pytest.raises(ValueError, match="unknown_version"):
        MMEmulatorConfig(storage_connection_string="", unknown_version="500")


# --- a batch of only duplicates; OKDuplicate without an image -------------------------------------------


def test_default_profile_answers_a_batch_of_duplicates_with_207_and_the_existing_images(emu, images):
    trainer = emu.client()
    project = _project(trainer)
    first, second = images.png(), images.png()
    created = _upload(trainer, project.id, ("a.png", first), ("b.png", second))
    again = _upload(trainer, project.id, ("a.png", first), ("b.png", second))
    assert [r.status for r in again.images] == ["OKDuplicate", "OKDuplicate"]
    assert [r.image.id for r in again.images] == [r.image.id for r in created.images]
    assert again.is_batch_successful is False


def test_strict_profile_refuses_a_batch_of_only_duplicates_whole(start_emulator, images):
    emu = start_emulator(profile="strict")
    trainer = emu.client()
    project = _project(trainer)
    tag = trainer.create_tag(project.id, "person")
    first, second = images.png(), images.png()
    _upload(trainer, project.id, ("a.png", first), ("b.png", second))
    with pytest.raises(CustomVisionErrorException) as refused:
        trainer.create_images_from_files(
            project.id,
            ImageFileCreateBatch(
                images=[ImageFileCreateEntry(name="a.png", contents=first, tag_ids=[tag.id])],
            ),
        )
    # azure-sdk-for-python #17734: "CustomVisionErrorException: No valid image files".
    assert refused.value.response.status_code == 400
    assert str(refused.value) == "No valid image files"
    assert refused.value.error.code == "BadRequestImageBatch"
    # Refused whole: the tag the duplicate carried was not merged into the stored image.
    assert trainer.get_tagged_image_count(project.id) == 0
    assert trainer.get_image_count(project.id) == 2


def test_strict_profile_answers_a_duplicate_in_a_mixed_batch_without_its_image(start_emulator, images):
    emu = start_emulator(profile="strict")
    trainer = emu.client()
    project = _project(trainer)
    old, new = images.png(), images.png()
    stored = _upload(trainer, project.id, ("old.png", old)).images[0].image
    mixed = _upload(trainer, project.id, ("old.png", old), ("new.png", new))
    by_name = {r.source_url: r for r in mixed.images}
    assert by_name["old.png"].status == "OKDuplicate" and by_name["old.png"].image is None
    assert by_name["new.png"].status == "OK" and by_name["new.png"].image.id != stored.id
    assert mixed.is_batch_successful is False
    assert trainer.get_image_count(project.id) == 2


# --- limits: 10,000 px and 6,000,000 bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "width", "status"),
    [
        ("strict", 10_000, "OK"),
        ("strict", 10_001, "ErrorImageDimensions"),
        ("default", 10_001, "OK"),
        ("default", 10_240, "OK"),
        ("default", 10_241, "ErrorImageDimensions"),
    ],
)
def test_largest_side(start_emulator, profile, width, status):
    emu = start_emulator(profile=profile)
    trainer = emu.client()
    project = _project(trainer)
    result = _upload(trainer, project.id, ("wide.png", _wide_png(width, 420))).images[0]
    assert result.status == status


@pytest.mark.parametrize(
    ("profile", "size", "status"),
    [
        ("strict", 6_000_000, "OK"),
        ("strict", 6_000_001, "ErrorImageSize"),
        ("default", 6_000_001, "OK"),
        ("default", 6 * 1024 * 1024, "OK"),
        ("default", 6 * 1024 * 1024 + 1, "ErrorImageSize"),
    ],
)
def test_largest_upload(start_emulator, images, profile, size, status):
    emu = start_emulator(profile=profile)
    trainer = emu.client()
    project = _project(trainer)
    result = _upload(trainer, project.id, ("big.jpg", _padded_jpeg(images, size))).images[0]
    assert result.status == status


# --- timestamps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "aware"), [("strict", False), ("default", True)])
def test_timestamps_carry_a_timezone_only_under_the_default_profile(start_emulator, images, profile, aware):
    emu = start_emulator(profile=profile)
    trainer = emu.client()
    project = _project(trainer)
    image = _upload(trainer, project.id, ("a.png", images.png())).images[0].image
    listed = trainer.get_images(project.id)[0]
    for value in (project.created, project.last_modified, image.created, listed.created):
        assert isinstance(value, datetime)
        assert (value.tzinfo is not None) is aware
    raw = requests.get(emu.api(f"/projects/{project.id}"), headers={"Training-Key": TRAINING_KEY}, timeout=10)
    assert raw.json()["created"].endswith("Z") is aware
    # Strict drops the designator, not the UTC reading: the text is the UTC time either way.
    utc = datetime.fromtimestamp(emu.clock(), UTC).replace(tzinfo=None)
    assert datetime.fromisoformat(raw.json()["created"].removesuffix("Z")) == utc.replace(
        microsecond=utc.microsecond // 1000 * 1000
    )


# --- 429 without Retry-After; F0 uploads at 2 calls/s -----------------------------------------------------


@pytest.mark.parametrize(("profile", "header"), [("strict", False), ("default", True)])
def test_429_carries_retry_after_only_under_the_default_profile(start_emulator, profile, header):
    emu = start_emulator(profile=profile, rate_per_second=1)
    trainer = emu.client(retries=0)
    trainer.get_projects()
    with pytest.raises(CustomVisionErrorException) as throttled:
        trainer.get_projects()
    assert throttled.value.response.status_code == 429
    assert ("Retry-After" in throttled.value.response.headers) is header
    # An injected 429 follows the profile too.
    emu.clock.advance(5)
    requests.post(f"{emu.url}/_emulator/faults", json=[{"operation": "GetProjects", "kind": "429"}], timeout=10)
    injected = requests.get(emu.api("/projects"), headers={"Training-Key": TRAINING_KEY}, timeout=10)
    assert injected.status_code == 429 and ("Retry-After" in injected.headers) is header


@pytest.mark.parametrize(("profile", "uploads_per_second"), [("strict", 2), ("default", 10)])
def test_f0_upload_pace(start_emulator, images, profile, uploads_per_second):
    emu = start_emulator(profile=profile, tier="F0", rate_per_second=10)
    trainer = emu.client(retries=0)
    project = _project(trainer)
    emu.clock.advance(1)  # a full bucket
    for _ in range(uploads_per_second):
        _upload(trainer, project.id, ("a.png", images.png()))
    with pytest.raises(CustomVisionErrorException) as throttled:
        _upload(trainer, project.id, ("a.png", images.png()))
    assert throttled.value.response.status_code == 429
    if profile == "strict":
        trainer.get_tags(project.id)  # other calls keep the tier's 10/s
        emu.clock.advance(0.5)  # one more upload token at 2/s
        assert _upload(trainer, project.id, ("a.png", images.png())).images[0].status == "OK"
    assert emu.emulator.uploads.snapshot(project.id)["entriesRefusedBeforeWork"] == 1


def test_s0_uploads_are_not_paced_separately_under_strict(start_emulator, images):
    emu = start_emulator(profile="strict", tier="S0", rate_per_second=None)
    trainer = emu.client(retries=0)
    project = _project(trainer)
    for _ in range(5):
        _upload(trainer, project.id, ("a.png", images.png()))


# --- empty metadata values -------------------------------------------------------------------------------


def test_strict_profile_refuses_an_empty_metadata_value(start_emulator, images):
    emu = start_emulator(profile="strict")
    trainer = emu.client()
    project = _project(trainer)
    with pytest.raises(CustomVisionErrorException) as refused:
        _upload(trainer, project.id, ("a.png", images.png()), metadata={"source_blob": "a", "confidence": ""})
    assert refused.value.response.status_code == 400
    assert refused.value.error.code == "BadRequestImageMetadataValue" and "confidence" in str(refused.value)
    assert trainer.get_image_count(project.id) == 0
    image = _upload(trainer, project.id, ("a.png", images.png()), metadata={"confidence": "42"}).images[0].image
    with pytest.raises(CustomVisionErrorException) as update:
        trainer.update_image_metadata(project.id, [image.id], {"captured_at": ""})
    assert update.value.error.code == "BadRequestImageMetadataValue"


def test_default_profile_accepts_an_empty_metadata_value(emu, images):
    trainer = emu.client()
    project = _project(trainer)
    image = _upload(trainer, project.id, ("a.png", images.png()), metadata={"confidence": ""}).images[0].image
    assert image.metadata == {"confidence": ""}


# --- the MM server: expired tokens and unknown versions -------------------------------------------------


@pytest.fixture
def start_mm():
    handles = []

    def start(**overrides):
        config = MMEmulatorConfig(storage_connection_string="UseDevelopmentStorage=true", **overrides)
        handle = serve_in_thread(create_mm_app(config))
        handles.append(handle)
        session = requests.Session()
        token = session.post(
            f"{handle.url}/api/v1/login", json={"CLIENT_SECRET": config.bootstrap_secret, "CLIENT_ID": "TBD"}
        ).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        session.post(f"{handle.url}/api/v1/registry/people-counter/1.0").raise_for_status()
        return handle, session

    yield start
    for handle in handles:
        handle.stop()


@pytest.mark.parametrize(("profile", "expired_status"), [("strict", 403), ("default", 401)])
def test_mm_expired_token(start_mm, profile, expired_status):
    handle, session = start_mm(profile=profile)
    assert session.get(f"{handle.url}/api/v1/keys/people-counter/1.0").status_code == 200
    requests.post(f"{handle.url}/_emulator/expire-tokens", timeout=10).raise_for_status()
    assert session.get(f"{handle.url}/api/v1/keys/people-counter/1.0").status_code == expired_status
    made_up = requests.get(
        f"{handle.url}/api/v1/keys/people-counter/1.0", headers={"Authorization": "Bearer made-up"}, timeout=10
    )
    assert made_up.status_code == 401  # a token the server never issued is not "expired"
    assert requests.get(f"{handle.url}/api/v1/keys/people-counter/1.0", timeout=10).status_code == 401


@pytest.mark.parametrize(
    ("profile", "unknown_version", "status"),
    [("strict", None, 200), ("strict", "404", 404), ("default", None, 404), ("default", "200-text", 200)],
)
def test_mm_unknown_model_version(start_mm, profile, unknown_version, status):
    handle, session = start_mm(profile=profile, unknown_version=unknown_version)
    known = session.get(f"{handle.url}/api/v1/keys/people-counter/1.0")
    answer = session.get(f"{handle.url}/api/v1/keys/people-counter/9.9")
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text != known.text and "9.9" in answer.text
    assert session.get(f"{handle.url}/api/v1/models/people-counter/9.9").status_code == status
    assert requests.get(f"{handle.url}/_emulator/health", timeout=10).json()["profile"] == profile


# --- chosen at start-up ----------------------------------------------------------------------------------


def test_profile_is_chosen_on_the_command_line(tmp_path):
    """`python -m devstack.customvision_server --profile strict` (what `make devstack PROFILE=strict` runs)."""
    assert mm_server_command(host="127.0.0.1", port=1, state=tmp_path, profile="strict")[-2:] == [
        "--profile",
        "strict",
    ]
    port = free_port()
    command = [sys.executable, "-m", "devstack.customvision_server", "--port", str(port), "--profile", "strict"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from devstack.azurite import wait_for_port

        wait_for_port("127.0.0.1", port, timeout=30, process=process)
        health = requests.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=10).json()
        assert health["profile"] == "strict"
        created = requests.post(
            f"http://127.0.0.1:{port}{API}/projects?name=cli",
            headers={"Training-Key": "devstack-training-key"},
            timeout=10,
        ).json()
        assert not created["created"].endswith("Z")
    finally:
        process.terminate()
        process.wait(10)


def test_devstack_up_refuses_an_unknown_profile(capsys):
    from devstack.stack import main

    with pytest.raises(SystemExit):
        main(["up", "--profile", "lenient", "--no-seed"])
    assert "invalid choice: 'lenient'" in capsys.readouterr().err


# --- upload counters (both profiles) -------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_upload_counters_measure_every_entry_and_duplicate_answer(start_emulator, images, profile):
    emu: RunningEmulator = start_emulator(profile=profile)
    trainer = emu.client(retries=0)
    project = _project(trainer)
    a, b, c = images.png(), images.png(), images.png()
    _upload(trainer, project.id, ("a", a), ("b", b))
    _upload(trainer, project.id, ("a", a), ("c", c))  # one duplicate in a mixed batch
    if profile == "strict":
        with pytest.raises(CustomVisionErrorException):
            _upload(trainer, project.id, ("b", b))  # a batch of only duplicates: refused whole
    else:
        _upload(trainer, project.id, ("b", b))
    requests.post(
        f"{emu.url}/_emulator/faults",
        json=[
            {"operation": "CreateImagesFromFiles", "kind": "503", "times": 1},
            {"operation": "CreateImagesFromFiles", "kind": "reset", "phase": "after", "times": 1},
        ],
        timeout=10,
    ).raise_for_status()
    with pytest.raises(CustomVisionErrorException):
        _upload(trainer, project.id, ("d", images.png()), ("e", images.png()))  # 503 before the work
    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the reset in its own ClientRequestError
        _upload(trainer, project.id, ("f", images.png()))  # stored, answer lost
    counts = requests.get(f"{emu.url}/_emulator/projects/{project.id}/uploads", timeout=10).json()
    assert counts["calls"] == 4 and counts["entries"] == 6
    assert counts["entriesRefusedBeforeWork"] == 2 and counts["entriesAnswerLost"] == 1
    assert counts["okDuplicate"] == (1 if profile == "strict" else 2)
    assert counts["duplicatesRefused"] == (1 if profile == "strict" else 0)
    assert counts["byName"]["a"]["entries"] == 2 and len(counts["byName"]["a"]["imageIds"]) == 1
    assert counts["byName"]["b"]["entries"] == 2 and len(counts["byName"]["b"]["imageIds"]) == 1
    assert counts["byName"]["d"] == {"entries": 0, "statuses": {}, "imageIds": [], "refusedBeforeWork": 1}
    assert counts["byName"]["f"]["statuses"] == {"OK": 1}
    every = requests.get(f"{emu.url}/_emulator/uploads", timeout=10).json()
    assert every[project.id]["entries"] == 6 and "byName" not in every[project.id]
    requests.post(f"{emu.url}/_emulator/reset", timeout=10).raise_for_status()
    assert requests.get(f"{emu.url}/_emulator/uploads", timeout=10).json() == {}
