"""The emulator's trained iterations predict: QuickTestImage, SuggestTagsAndRegions, QuerySuggestedImages(Count).

Driven through the real SDK 3.1.1 (v3.4-preview routes) and plain HTTP for v3.3; every answer is also checked
against the OpenAPI document by the conftest's recorder. The frames are solid colours with a little unique
noise, so "like the trained ones" (another red frame) and "unlike" (a green one) are unambiguous.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageTagCreateEntry,
    Region,
    SuggestedTagAndRegionQueryToken,
)
from PIL import Image as PILImage

from devstack.customvision_server import ManualClock
from devstack.customvision_store import CustomVisionStore, NewImage, TierLimits

from .conftest import GENERAL_DETECTION, TRAINING_KEY, RunningEmulator

RED = (200, 40, 40)
BLUE = (40, 40, 200)
GREEN = (40, 200, 40)
HEADERS = {"Training-Key": TRAINING_KEY}


def frame(colour: tuple[int, int, int], seed: int) -> bytes:
    """A 64x48 PNG of one colour with a few unique noisy pixels (so no two frames are duplicates)."""
    rng = random.Random(seed)
    img = PILImage.new("RGB", (64, 48), colour)
    for _ in range(12):
        x, y = rng.randrange(64), rng.randrange(48)
        img.putpixel((x, y), tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def upload(cv: CustomVisionTrainingClient, project_id: str, frames: list[bytes], **entry: Any) -> list[str]:
    batch = ImageFileCreateBatch(
        images=[ImageFileCreateEntry(name=f"f{i}.png", contents=data, **entry) for i, data in enumerate(frames)]
    )
    summary = cv.create_images_from_files(project_id, batch)
    assert summary.is_batch_successful
    return [entry.image.id for entry in summary.images]


def train(emu: RunningEmulator, cv: CustomVisionTrainingClient, project_id: str) -> str:
    iteration = cv.train_project(project_id)
    emu.clock.advance(emu.config.training_seconds + 1)
    return iteration.id


def trained_colours(
    emu: RunningEmulator, pace: Callable[[], None] = lambda: None
) -> tuple[CustomVisionTrainingClient, str, dict[str, str], list[bytes]]:
    """A Multiclass project trained on 5 red frames tagged "red" and 5 blue ones tagged "blue".

    ``pace`` runs after every call (a throttled test moves the clock there).
    """
    cv = emu.client()
    project = cv.create_project("Colours", classification_type="Multiclass")
    pace()
    tags = {}
    for name in ("red", "blue"):
        tags[name] = cv.create_tag(project.id, name).id
        pace()
    reds = [frame(RED, seed) for seed in range(5)]
    upload(cv, project.id, reds, tag_ids=[tags["red"]])
    pace()
    upload(cv, project.id, [frame(BLUE, seed) for seed in range(5)], tag_ids=[tags["blue"]])
    pace()
    train(emu, cv, project.id)
    pace()
    return cv, project.id, tags, reds


def quick_test(cv: CustomVisionTrainingClient, project_id: str, data: bytes, **kwargs: Any) -> Any:
    return cv.quick_test_image(project_id, io.BytesIO(data), **kwargs)


def top(prediction: Any) -> tuple[str, float]:
    best = max(prediction.predictions, key=lambda p: p.probability)
    return best.tag_name, best.probability


def predictions_counted(emu: RunningEmulator, project_id: str) -> dict[str, Any]:
    response = requests.get(f"{emu.url}/_emulator/projects/{project_id}/predictions", timeout=10)
    response.raise_for_status()
    return response.json()


def service_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(CustomVisionErrorException) as info:
        call(*args, **kwargs)
    return info.value.response.status_code, info.value.error.code


# --- QuickTestImage -----------------------------------------------------------------------------------


def test_a_trained_frame_gets_its_tag_and_an_unlike_frame_is_uncertain(emu: RunningEmulator) -> None:
    cv, project_id, tags, reds = trained_colours(emu)

    trained = quick_test(cv, project_id, reds[0])
    assert top(trained)[0] == "red"
    assert top(trained)[1] > 0.95
    assert {p.tag_id for p in trained.predictions} == set(tags.values())  # every trained tag, no boxes
    assert all(p.bounding_box is None and p.tag_type == "Regular" for p in trained.predictions)
    assert [p.probability for p in trained.predictions] == sorted(
        (p.probability for p in trained.predictions), reverse=True
    )

    new_red = quick_test(cv, project_id, frame(RED, 99))  # not trained on, but like the red frames
    assert top(new_red)[0] == "red"
    assert top(new_red)[1] > 0.8

    green = quick_test(cv, project_id, frame(GREEN, 1))
    assert top(green)[1] < 0.6  # far from everything: close to 1 / number of tags
    assert top(green)[1] < top(new_red)[1] < top(trained)[1] + 1e-9

    again = quick_test(cv, project_id, frame(GREEN, 1))
    assert [(p.tag_id, p.probability) for p in again.predictions] == [
        (p.tag_id, p.probability) for p in green.predictions
    ], "predictions are deterministic"
    assert trained.iteration == cv.get_iterations(project_id)[0].id
    counted = predictions_counted(emu, project_id)
    assert counted["transactions"] == counted["byOperation"]["QuickTestImage"] == 4
    assert emu.emulator.stats.snapshot()["predictionTransactionsByOperation"] == {"QuickTestImage": 4}


def test_store_false_keeps_no_prediction_and_no_frame_joins_the_project(emu: RunningEmulator) -> None:
    cv, project_id, _, _ = trained_colours(emu)
    images_before = cv.get_image_count(project_id)

    quick_test(cv, project_id, frame(RED, 50), store=False)
    assert predictions_counted(emu, project_id)["stored"] == 0
    quick_test(cv, project_id, frame(RED, 51))  # store defaults to true: the prediction is kept

    assert predictions_counted(emu, project_id) == {
        "transactions": 2,
        "byOperation": {"QuickTestImage": 2},
        "stored": 1,
    }
    assert cv.get_image_count(project_id) == images_before  # a quick test never adds training images
    assert len(emu.emulator.images(project_id)) == images_before


def test_an_iteration_predicts_what_it_was_trained_on(emu: RunningEmulator) -> None:
    cv, project_id, tags, _ = trained_colours(emu)
    first = cv.get_iterations(project_id)[0].id
    upload(cv, project_id, [frame(GREEN, seed) for seed in range(5)], tag_ids=[tags["blue"]])
    second = train(emu, cv, project_id)
    green = frame(GREEN, 77)

    assert top(quick_test(cv, project_id, green, iteration_id=first))[1] < 0.6  # iteration 1 never saw green
    later = quick_test(cv, project_id, green, iteration_id=second)
    assert top(later)[0] == "blue"
    assert top(later)[1] > 0.8
    default = quick_test(cv, project_id, green)  # no iterationId: the latest trained iteration
    assert default.iteration == second
    assert top(default) == top(later)


def test_detection_predictions_carry_normalised_boxes(emu: RunningEmulator) -> None:
    cv = emu.client()
    project = cv.create_project("Shelf", domain_id=GENERAL_DETECTION)
    can = cv.create_tag(project.id, "can").id
    box = {"left": 0.125, "top": 0.25, "width": 0.5, "height": 0.375}
    frames = [frame(RED, seed) for seed in range(15)]
    upload(cv, project.id, frames, regions=[Region(tag_id=can, **box)])
    train(emu, cv, project.id)

    prediction = quick_test(cv, project.id, frames[3])
    assert len(prediction.predictions) == 1
    found = prediction.predictions[0]
    assert (found.tag_id, found.tag_name, found.tag_type) == (can, "can", "Regular")
    assert found.probability > 0.95
    got = found.bounding_box
    assert (got.left, got.top, got.width, got.height) == pytest.approx(tuple(box.values()))
    assert all(0 <= value <= 1 for value in (got.left, got.top, got.left + got.width, got.top + got.height))
    assert quick_test(cv, project.id, frame(GREEN, 3)).predictions[0].probability < 0.5


# --- errors -------------------------------------------------------------------------------------------


def test_untrained_projects_and_unknown_iterations_get_the_service_errors(emu: RunningEmulator) -> None:
    cv = emu.client()
    project = cv.create_project("Untrained")
    assert service_error(quick_test, cv, project.id, frame(RED, 1)) == (400, "BadRequestIterationIsNotTrained")

    trained_cv, project_id, tags, _ = trained_colours(emu)
    unknown = str(uuid.uuid4())
    assert service_error(quick_test, trained_cv, project_id, frame(RED, 1), iteration_id=unknown) == (
        404,
        "NotFoundIteration",
    )
    image_id = upload(trained_cv, project_id, [frame(RED, 60)])[0]
    assert service_error(trained_cv.suggest_tags_and_regions, project_id, unknown, [image_id]) == (
        404,
        "NotFoundIteration",
    )
    upload(trained_cv, project_id, [frame(BLUE, 61)], tag_ids=[tags["blue"]])
    training = trained_cv.train_project(project_id).id  # the clock is not moved: still training
    assert service_error(trained_cv.suggest_tags_and_regions, project_id, training, [image_id]) == (
        400,
        "BadRequestIterationIsNotTrained",
    )
    assert service_error(trained_cv.query_suggested_image_count, project_id, training, tag_ids=[]) == (
        400,
        "BadRequestIterationIsNotTrained",
    )
    assert predictions_counted(emu, project_id)["transactions"] == 0
    assert predictions_counted(emu, project.id)["transactions"] == 0


def test_suggestions_take_at_most_64_images_of_the_project(emu: RunningEmulator) -> None:
    cv, project_id, _, _ = trained_colours(emu)
    iteration = cv.get_iterations(project_id)[0].id
    image_id = upload(cv, project_id, [frame(RED, 70)])[0]

    too_many = ",".join([image_id] + [str(uuid.uuid4()) for _ in range(64)])  # the SDK refuses these itself
    refused = requests.post(
        emu.api(f"/projects/{project_id}/tagsandregions/suggestions"),
        params={"iterationId": iteration, "imageIds": too_many},
        headers=HEADERS,
        timeout=10,
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "BadRequestExceededBatchSize")
    assert service_error(cv.suggest_tags_and_regions, project_id, iteration, [image_id, str(uuid.uuid4())]) == (
        404,
        "NotFoundImage",
    )
    assert predictions_counted(emu, project_id)["transactions"] == 0
    suggested = cv.suggest_tags_and_regions(project_id, iteration, [image_id])
    assert [s.id for s in suggested] == [image_id]


# --- suggested tags for untagged images ---------------------------------------------------------------


def test_suggested_images_and_counts_agree_for_untagged_images(emu: RunningEmulator) -> None:
    cv, project_id, tags, _ = trained_colours(emu)
    iteration = cv.get_iterations(project_id)[0].id
    reds = upload(cv, project_id, [frame(RED, seed) for seed in (80, 81, 82)])
    blues = upload(cv, project_id, [frame(BLUE, seed) for seed in (83, 84)])
    green = upload(cv, project_id, [frame(GREEN, 85)])[0]
    ids = [*reds, *blues, green]

    suggested = cv.suggest_tags_and_regions(project_id, iteration, ids)
    assert [s.id for s in suggested] == ids  # one suggestion per image, named by the image
    by_image = {s.id: s for s in suggested}
    assert all(top(by_image[i])[0] == "red" for i in reds)
    assert all(top(by_image[i])[0] == "blue" for i in blues)
    assert all(by_image[green].prediction_uncertainty > by_image[i].prediction_uncertainty for i in reds + blues)
    assert predictions_counted(emu, project_id)["byOperation"] == {"SuggestTagsAndRegions": 6}
    again = cv.suggest_tags_and_regions(project_id, iteration, ids)  # kept 30 days: answered, not billed again
    assert [(s.id, top(s)) for s in again] == [(s.id, top(s)) for s in suggested]
    assert predictions_counted(emu, project_id)["transactions"] == 6

    counts = cv.query_suggested_image_count(project_id, iteration, tag_ids=list(tags.values()), threshold=0.7)
    assert counts == {tags["red"]: 3, tags["blue"]: 2}
    assert cv.query_suggested_image_count(project_id, iteration, tag_ids=[tags["red"]], threshold=0.0) == {
        tags["red"]: 6
    }

    query = SuggestedTagAndRegionQueryToken(tag_ids=[tags["red"]], threshold=0.7, sort_by="UncertaintyAscending")
    result = cv.query_suggested_images(project_id, iteration, query)
    assert [r.id for r in result.results] == sorted(reds, key=lambda i: by_image[i].prediction_uncertainty)
    assert result.results[0].original_image_uri.endswith(f"/blobs/{result.results[0].id}/original")
    assert result.token.continuation == ""
    everything = SuggestedTagAndRegionQueryToken(
        tag_ids=list(tags.values()), threshold=0.0, sort_by="UncertaintyDescending"
    )
    assert cv.query_suggested_images(project_id, iteration, everything).results[0].id == green

    query.max_count = 2
    first = cv.query_suggested_images(project_id, iteration, query)
    assert len(first.results) == 2 and first.token.continuation
    rest = cv.query_suggested_images(project_id, iteration, first.token)
    assert [r.id for r in first.results + rest.results] == [r.id for r in result.results]
    assert rest.token.continuation == ""

    cv.create_image_tags(
        project_id, [ImageTagCreateEntry(image_id=reds[0], tag_id=tags["red"])]
    )  # only untagged images count
    assert cv.query_suggested_image_count(project_id, iteration, tag_ids=[tags["red"]], threshold=0.7) == {
        tags["red"]: 2
    }
    assert predictions_counted(emu, project_id)["transactions"] == 6  # querying kept suggestions is free


def test_v33_routes_serve_the_same_predictions(emu: RunningEmulator) -> None:
    cv, project_id, tags, reds = trained_colours(emu)
    iteration = cv.get_iterations(project_id)[0].id
    image_id = upload(cv, project_id, [frame(BLUE, 90)])[0]
    base = f"{emu.url}/customvision/v3.3/training/projects/{project_id}"

    quick = requests.post(
        f"{base}/quicktest/image", params={"store": "false"}, files={"imageData": reds[1]}, headers=HEADERS, timeout=10
    )
    assert quick.status_code == 200
    assert quick.json()["iteration"] == iteration
    assert quick.json()["predictions"][0]["tagName"] == "red"
    assert quick.json()["predictions"][0]["probability"] > 0.95
    suggestions = requests.post(
        f"{base}/tagsandregions/suggestions",
        params={"iterationId": iteration, "imageIds": image_id},
        headers=HEADERS,
        timeout=10,
    )
    assert suggestions.status_code == 200
    assert [(s["id"], s["predictions"][0]["tagId"]) for s in suggestions.json()] == [(image_id, tags["blue"])]
    count = requests.post(
        f"{base}/images/suggested/count",
        params={"iterationId": iteration},
        json={"tagIds": [tags["blue"]], "threshold": 0.7},
        headers=HEADERS,
        timeout=10,
    )
    assert count.json() == {tags["blue"]: 1}
    too_many = ",".join(str(uuid.uuid4()) for _ in range(65))
    refused = requests.post(
        f"{base}/tagsandregions/suggestions",
        params={"iterationId": iteration, "imageIds": too_many},
        headers=HEADERS,
        timeout=10,
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "BadRequestExceededBatchSize")
    assert predictions_counted(emu, project_id)["byOperation"] == {"QuickTestImage": 1, "SuggestTagsAndRegions": 1}


def test_predictions_are_throttled_like_every_other_call(start_emulator: Any) -> None:
    emu = start_emulator(rate_per_second=1)
    _, project_id, _, reds = trained_colours(emu, pace=lambda: emu.clock.advance(1))  # one call a second
    url = emu.api(f"/projects/{project_id}/quicktest/image")

    allowed = requests.post(url, files={"imageData": reds[0]}, headers=HEADERS, timeout=10)
    throttled = requests.post(url, files={"imageData": reds[0]}, headers=HEADERS, timeout=10)

    assert allowed.status_code == 200
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert "QuickTestImage" in throttled.json()["error"]["message"]
    stats = emu.emulator.stats.snapshot()
    assert stats["throttledByOperation"] == {"QuickTestImage": 1}
    assert stats["predictionTransactions"] == 1  # a refused call predicts nothing


def test_a_persisted_iteration_predicts_the_same_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(start=1_760_000_000.0)

    def open_store() -> CustomVisionStore:
        return CustomVisionStore(limits=TierLimits.for_tier("S0"), clock=clock, training_seconds=1, state_dir=tmp_path)

    store = open_store()
    project = store.create_project(name="Persisted")
    for name, colour in (("red", RED), ("blue", BLUE)):
        tag = store.create_tag(project.id, name=name)
        store.create_images(
            project.id,
            [NewImage(f"{name}{seed}.png", frame(colour, seed)) for seed in range(5)],
            batch_tag_ids=[tag.id],
        )
    iteration = store.train(project.id)
    clock.advance(2)
    before = store.quick_test(project.id, frame(RED, 40), iteration_id=iteration.id, store=False)
    store.close()

    reopened = open_store()
    after = reopened.quick_test(project.id, frame(RED, 40), iteration_id=iteration.id, store=False)
    reopened.close()
    assert before.predictions[0].tag_name == "red"
    assert after.predictions == before.predictions
