"""The uncertainty-first queue: least sure first, spread over model versions, days and bursts, the same every time;
and a review pager in that order, which reads the suggestions already made and predicts nothing."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from percept_core.blobs import RetrainingBlob
from percept_core.customvision import Prediction
from percept_core.queue import ReviewOrder, uncertainty_order
from percept_core.review import Pager, ReviewQuery
from percept_core.suggestions import Suggestion
from tests.push.test_suggestions import predictions_of
from tests.support.frames import upload_frames
from tests.support.trained import BLUE, GREEN, RED, train, upload_training_images
from tests.support.trained import frame as colour_frame

DAY_1 = datetime(2026, 11, 20, 8, 0, 0)
DAY_2 = DAY_1 + timedelta(days=1)
HOUR = timedelta(hours=1)


def frame(name: str, confidence: float | None, captured_at: datetime | None, version: str = "1.0") -> RetrainingBlob:
    return RetrainingBlob(
        name=name,
        container="data",
        etag=f"etag-{name}",
        size=1000,
        last_modified=None,
        model_name="people-counter",
        model_version=version,
        confidence=confidence,
        captured_at=captured_at,
    )


def suggestion(blob: RetrainingBlob, *probabilities: float) -> Suggestion:
    predictions = [Prediction(f"tag-{i}", f"tag {i}", p) for i, p in enumerate(probabilities)]
    return Suggestion.of(blob.key, "iteration-1", predictions, made_at=0.0)


def names(blobs: list[RetrainingBlob]) -> list[str]:
    return [b.name for b in blobs]


def pages(blobs: list[RetrainingBlob], size: int) -> list[list[RetrainingBlob]]:
    return [blobs[start : start + size] for start in range(0, len(blobs), size)]


def test_the_least_sure_come_first_and_frames_without_a_confidence_last():
    blobs = [
        frame("a", 70, DAY_1),
        frame("b", None, DAY_1 + HOUR),
        frame("c", 15, DAY_1 + 2 * HOUR),
        frame("d", 40, DAY_1 + 3 * HOUR),
        frame("e", 5, DAY_1 + 4 * HOUR),
    ]

    assert names(uncertainty_order(blobs, {}, page_size=48)) == ["e", "c", "d", "a", "b"]


def test_a_burst_of_the_least_confident_frames_does_not_fill_a_page():
    burst = [frame(f"burst-{i:02d}", i, DAY_1 + timedelta(seconds=i)) for i in range(1, 11)]
    singles = [frame(f"single-{i:02d}", 50 + i, DAY_1 + (i + 1) * HOUR) for i in range(10)]

    ordered = uncertainty_order(singles + burst, {}, page_size=4)

    assert sorted(names(ordered)) == sorted(names(burst + singles))  # every frame, once
    assert ordered[0].name == "burst-01"  # the least sure frame still comes first
    split = pages(ordered, 4)
    for number, page in enumerate(split[:3], 1):  # while single frames are left, one frame of the burst a page
        assert sum(b in burst for b in page) == 1, (number, names(page))
    assert names(split[0]) == ["burst-01", "single-00", "single-01", "single-02"]
    assert names(split[1])[0] == "burst-02"  # a frame held back leads the next page, still least sure first


def test_model_versions_and_days_take_turns():
    first = [frame(f"v1-day1-{c}", c, DAY_1 + c * HOUR / 10) for c in (1, 2, 3)]
    second = [frame(f"v2-day1-{c}", c, DAY_1 + c * HOUR / 10, version="2.0") for c in (40, 41, 42)]
    third = [frame(f"v1-day2-{c}", c, DAY_2 + c * HOUR / 10) for c in (70, 71, 72)]

    ordered = uncertainty_order(third + second + first, {}, page_size=48)

    assert names(ordered) == [
        "v1-day1-1",
        "v2-day1-40",
        "v1-day2-70",
        "v1-day1-2",
        "v2-day1-41",
        "v1-day2-71",
        "v1-day1-3",
        "v2-day1-42",
        "v1-day2-72",
    ]


def test_the_order_is_the_same_whatever_order_the_frames_came_in():
    rng = random.Random(5)
    blobs = [
        frame(f"frame-{i:03d}", rng.choice((10, 20, 30)), DAY_1 + timedelta(seconds=rng.randrange(0, 3 * 86400)))
        for i in range(60)
    ]
    blobs += [frame(f"no-time-{i}", 10, None) for i in range(3)]
    expected = uncertainty_order(blobs, {}, page_size=8)

    for _ in range(5):
        shuffled = blobs[:]
        rng.shuffle(shuffled)
        assert uncertainty_order(shuffled, {}, page_size=8) == expected
    # ties go by name: frames of one group at one confidence come in name order
    tied = [b.name for b in expected if b.captured_at is None]
    assert tied == ["no-time-0", "no-time-1", "no-time-2"]


def test_a_torn_model_moves_a_frame_the_device_was_sure_of_ahead():
    sure_device = frame("device-sure", 90, DAY_1)
    middling = frame("device-middling", 60, DAY_1 + HOUR)
    sure_model = frame("model-sure", 30, DAY_1 + 2 * HOUR)
    blobs = [sure_device, middling, sure_model]

    assert names(uncertainty_order(blobs, {}, page_size=48)) == ["model-sure", "device-middling", "device-sure"]

    suggestions = {
        sure_device.key: suggestion(sure_device, 0.51, 0.49),  # torn between two tags
        sure_model.key: suggestion(sure_model, 0.97, 0.02),  # the current model is sure of it
    }
    assert names(uncertainty_order(blobs, suggestions, page_size=48)) == [
        "device-sure",
        "device-middling",
        "model-sure",
    ]


def test_least_sure_first_pages_with_the_suggestions_already_made_and_predicts_nothing(
    stack, make_curator, container_name
):
    project_id = stack.new_project("queue", tags=("person", "product"))
    tags = {t.name: t.id for t in stack.trainer().get_tags(project_id)}
    upload_training_images(stack, project_id, [colour_frame(RED, s) for s in range(5)], tag_ids=[tags["person"]])
    upload_training_images(stack, project_id, [colour_frame(BLUE, s) for s in range(5)], tag_ids=[tags["product"]])
    train(stack, project_id)
    # The device was sure of the green frame; the trained model knows only red and blue ones.
    green, red, blue = (
        "90-2026-11-20-09-00-00.jpg.dec",
        "60-2026-11-20-10-00-00.jpg.dec",
        "70-2026-11-20-11-00-00.jpg.dec",
    )
    upload_frames(
        stack,
        container_name,
        [colour_frame(GREEN, 101), colour_frame(RED, 102), colour_frame(BLUE, 103)],
        names=[green, red, blue],
    )
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    pager = Pager(ReviewQuery(order=ReviewOrder.UNCERTAINTY), page_size=2)

    assert names(pager.page(curator).blobs) == [red, blue]  # nothing suggested yet: by the devices' confidence
    assert pager.next() and names(pager.page(curator).blobs) == [green] and not pager.has_next
    assert predictions_of(stack, project_id)["transactions"] == 0 and curator.locker.decryptions == 0

    curator.suggestions([curator.blob(green)])  # a reviewer asked for the green frame's suggestion
    spent = predictions_of(stack, project_id)["transactions"]
    assert spent == 1
    pager.refresh()
    pager.previous()
    assert names(pager.page(curator).blobs) == [green, red]  # the model is torn: the green frame comes first
    assert predictions_of(stack, project_id)["transactions"] == spent and curator.locker.decryptions == 1
