"""The Custom Vision client: pacing to the quota, 429s and faults absorbed, tags validated, outcomes mapped."""

from __future__ import annotations

import secrets

import pytest
import requests

from devstack.customvision_server import CustomVisionEmulatorConfig, create_app
from devstack.servers import serve_in_thread
from percept_core.customvision import (
    CustomVisionClient,
    CustomVisionError,
    PushStatus,
    RateLimiter,
    Region,
    TagNameError,
    TrainingNotPossible,
    UploadItem,
)
from tests.support.frames import jpeg


@pytest.fixture(scope="module")
def throttled():
    """An emulator that allows 2 transactions per second per key, like a small quota."""
    key = secrets.token_hex(8)
    handle = serve_in_thread(create_app(CustomVisionEmulatorConfig(training_keys=(key,), rate_per_second=2)))
    yield handle, key
    handle.stop()


def _project(url: str, key: str) -> str:
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from msrest.authentication import ApiKeyCredentials

    trainer = CustomVisionTrainingClient(url, ApiKeyCredentials(in_headers={"Training-key": key}))
    trainer.config.retry_policy.retries = 0
    return trainer.create_project(f"p {secrets.token_hex(3)}").id


def test_a_client_faster_than_the_quota_meets_429s_and_still_delivers_everything(throttled):
    handle, key = throttled
    project = _project(handle.url, key)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        import time

        time.sleep(seconds)  # the client's real pause, recorded

    client = CustomVisionClient(handle.url, key, project, rate_per_second=None, sleep=sleep)
    results = [client.upload([UploadItem(f"f{i}.jpg", jpeg(700 + i))])[0] for i in range(6)]
    assert [r.status for r in results] == [PushStatus.PUSHED] * 6
    assert client.stats.throttled >= 1  # the service said 429 ...
    assert any(w >= 0.9 for w in waits)  # ... and the client waited about as long as Retry-After said (1 s)
    emulator = handle.server.config.app.state.emulator
    assert emulator.stats.snapshot()["answered429"] >= client.stats.throttled


def test_a_client_paced_to_the_quota_is_never_throttled(throttled):
    handle, key = throttled
    project = _project(handle.url, key)
    client = CustomVisionClient(handle.url, key, project, rate_per_second=2)
    client.limiter.pause(1.0)  # start from an empty bucket, as the service's is after the previous test
    for i in range(5):
        assert client.upload([UploadItem(f"g{i}.jpg", jpeg(800 + i))])[0].status == PushStatus.PUSHED
    assert client.stats.throttled == 0


def test_the_token_bucket_spaces_calls_at_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(9):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # one at once, then 8 more at 4 a second
    limiter.pause(3.0)
    limiter.acquire()
    assert now[0] == pytest.approx(5.0)


def test_tag_names_are_validated_before_the_service_is_asked(stack):
    project = stack.new_project("tags", tags=("person",))
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project)
    with pytest.raises(TagNameError, match="empty"):
        client.create_tag("   ")
    with pytest.raises(TagNameError, match="at most 256"):
        client.create_tag("x" * 257)
    with pytest.raises(TagNameError, match="already has a tag named 'Person'"):
        client.create_tag("Person")
    with pytest.raises(TagNameError, match="control characters"):
        client.create_tag("bad\x07name")
    created = client.create_tag("  forklift ")
    assert created.name == "forklift" and "forklift" in {t.name for t in client.tags()}


def test_per_image_outcomes_are_mapped_with_reasons(stack):
    project = stack.new_project("outcomes", tags=("person",))
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project)
    frame = jpeg(900)
    results = client.upload(
        [
            UploadItem("good.jpg", frame),
            UploadItem("text.jpg", b"plain text, not an image" * 20),
            UploadItem("again.jpg", frame),
        ]
    )
    good, text, again = results
    assert good.status == PushStatus.PUSHED and good.image_id
    assert text.status == PushStatus.REJECTED and "image format" in text.reason and text.service_status
    assert again.status == PushStatus.DUPLICATE and again.image_id == good.image_id
    assert len(stack.emulator.images(project)) == 1


def test_a_batch_refused_whole_for_one_image_is_halved_and_only_that_image_refused(stack):
    """A 400 for the whole batch (here: boxes on an image of a classification project) is not the other
    images' fault: the batch goes again in halves, and only the image the service refuses alone is refused."""
    project = stack.new_project("halves", tags=("person",))
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project)
    [tag] = client.tag_ids(["person"])
    items = [UploadItem(f"plain-{i}.jpg", jpeg(910 + i)) for i in range(5)]
    boxed = UploadItem("boxed.jpg", jpeg(920), tag_ids=(tag,), regions=(Region(tag, 0.1, 0.1, 0.5, 0.5),))
    results = client.upload([*items[:3], boxed, *items[3:]])
    assert [r.status for r in results] == [PushStatus.PUSHED] * 3 + [PushStatus.REJECTED] + [PushStatus.PUSHED] * 2
    assert "object detection" in results[3].reason
    assert len(stack.emulator.images(project)) == 5
    assert client.stats.split_batches >= 1 and client.stats.calls <= 2 * 6 - 1 + 1  # + the tags read


def test_a_wrong_key_is_a_clear_error_without_the_key(stack):
    project = stack.new_project("auth")
    wrong = "0123456789abcdef0123456789abcdef"
    client = CustomVisionClient(stack.customvision.url, wrong, project)
    with pytest.raises(CustomVisionError) as caught:
        client.tags()
    assert caught.value.status == 401 and "training key" in str(caught.value) and wrong not in str(caught.value)


def test_dropped_connections_and_5xx_on_reads_are_retried(stack):
    project = stack.new_project("retries", tags=("a",))
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project, backoff_seconds=0.01)
    plan = [
        {"operation": "GetTags", "kind": "reset", "times": 2},
        {"operation": "GetProject", "kind": "503", "times": 2},
    ]
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=plan, timeout=10).raise_for_status()
    try:
        assert [t.name for t in client.tags()] == ["a"]
        assert client.project().id == project
    finally:
        requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10)
    assert client.stats.retried == 4


def test_training_that_cannot_start_says_why(stack):
    project = stack.new_project("untrainable", tags=("person", "product"))
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project)
    with pytest.raises(TrainingNotPossible) as caught:
        client.train()
    assert caught.value.code and caught.value.status == 400 and str(caught.value)
