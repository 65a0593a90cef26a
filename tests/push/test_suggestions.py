"""Suggestions from the current model: frames under review predicted by the project's trained iteration.

The frames are solid colours with a little unique noise, so "like the trained ones" (another red frame) and
"unlike" (a green one) are unambiguous to the emulator's nearest-neighbour model. The training images go
straight to the project through the SDK; the frames under review are encrypted blobs of a container of their own.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import numpy as np
import pytest
import requests
from azure.cognitiveservices.vision.customvision.training.models import (
    Region,
)
from azure.storage.blob import BlobServiceClient
from PIL import Image

from percept_core import ProjectNotTrained, Suggestion
from percept_core.frames import suggestion_columns, to_dataframe
from percept_core.suggestion_cache import SuggestionCache
from percept_core.suggestions import MAX_PREDICTION_BYTES, prediction_image
from tests.support.disk_scan import scan, writable_areas
from tests.support.frames import upload_frames
from tests.support.trained import BLUE, BOX, GREEN, RED, frame, train, upload_training_images


def predictions_of(stack, project_id: str) -> dict:
    """The emulator's count of the project's prediction transactions, and the quick tests it kept."""
    response = requests.get(f"{stack.customvision.url}/_emulator/projects/{project_id}/predictions", timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def colours(stack):
    """A project trained on 5 red frames tagged "person" and 5 blue ones tagged "product", and a container
    under review: 2 red frames, 1 blue and 1 green, none of them a training frame."""
    project_id = stack.new_project("suggestions", tags=("person", "product"))
    tags = {t.name: t.id for t in stack.trainer().get_tags(project_id)}
    upload_training_images(stack, project_id, [frame(RED, s) for s in range(5)], tag_ids=[tags["person"]])
    upload_training_images(stack, project_id, [frame(BLUE, s) for s in range(5)], tag_ids=[tags["product"]])
    iteration_id = train(stack, project_id)
    container = f"suggest{secrets.token_hex(4)}"
    plaintexts = {
        "red1": frame(RED, 101),
        "red2": frame(RED, 102),
        "blue": frame(BLUE, 103),
        "green": frame(GREEN, 104),
    }
    names = upload_frames(stack, container, list(plaintexts.values()))
    return {
        "project_id": project_id,
        "iteration_id": iteration_id,
        "container": container,
        "names": dict(zip(plaintexts, names, strict=True)),
        "plaintexts": plaintexts,
    }


def curator_for(make_curator, colours, **overrides):
    return make_curator(colours["project_id"], mm_telemetry_storage_container=colours["container"], **overrides)


def by_name(curator) -> dict[str, object]:
    return {b.name: b for b in curator.blobs()}


def test_a_trained_project_suggests_its_tags_for_frames_like_its_training_frames(stack, make_curator, colours):
    curator = curator_for(make_curator, colours)
    blobs = by_name(curator)
    names = colours["names"]
    before = predictions_of(stack, colours["project_id"])

    found = curator.suggestions(blobs.values())

    assert set(found) == {b.key for b in blobs.values()}
    assert all(isinstance(s, Suggestion) and s.iteration_id == colours["iteration_id"] for s in found.values())
    red = found[blobs[names["red1"]].key]
    assert red.top.tag_name == "person" and red.top.probability > 0.9 and red.margin > 0.8
    assert [p.tag_name for p in red.above(0.5)] == ["person"]
    assert red.predictions[0].probability >= red.predictions[1].probability  # most probable first
    assert found[blobs[names["red2"]].key].top.tag_name == "person"
    assert found[blobs[names["blue"]].key].top.tag_name == "product"
    unsure = found[blobs[names["green"]].key]
    assert unsure.top.probability < 0.7 and unsure.margin < 0.2 and unsure.above(0.7) == ()
    assert all(p.box is None for s in found.values() for p in s.predictions)  # classification: no boxes

    # One prediction transaction a frame, counted by the service and by the client; nothing kept or added.
    after = predictions_of(stack, colours["project_id"])
    assert after["transactions"] - before["transactions"] == 4 and after["stored"] == 0
    assert curator.customvision.stats.predictions == 4
    assert len(stack.emulator.images(colours["project_id"])) == 10


def test_a_frame_is_predicted_once_per_iteration_even_by_a_new_process(stack, make_curator, colours):
    curator = curator_for(make_curator, colours)
    blobs = list(curator.blobs())
    first = curator.suggestions(blobs)
    counted = predictions_of(stack, colours["project_id"])["transactions"]
    calls = curator.customvision.stats.calls

    again = curator.suggestions(blobs)
    assert curator.customvision.stats.calls == calls  # no call at all: nor the iteration looked up again
    later = curator_for(make_curator, colours)  # another process: a new Curator on the same ledger file
    from_the_file = later.suggestions(list(later.blobs()))

    assert predictions_of(stack, colours["project_id"])["transactions"] == counted
    assert later.customvision.stats.predictions == 0
    for key, suggestion in first.items():
        assert again[key].predictions == suggestion.predictions == from_the_file[key].predictions
        assert from_the_file[key].made_at == suggestion.made_at


def test_a_suggestion_expires_after_30_days(tmp_path):
    now = [1_000_000.0]
    cache = SuggestionCache(tmp_path / "ledger.sqlite", clock=lambda: now[0])
    key = ("data", "frame.jpg", "0x1")
    cache.put(key, "iteration", ())
    now[0] += 29 * 24 * 3600
    assert key in cache.get([key], "iteration")
    assert cache.get([key], "another iteration") == {}
    now[0] += 2 * 24 * 3600
    assert cache.get([key], "iteration") == {}


def test_an_untrained_project_says_to_train_it_first(stack, make_curator, container_name):
    upload_frames(stack, container_name, [frame(RED, 7)])
    project_id = stack.new_project("untrained", tags=("person",))
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    with pytest.raises(ProjectNotTrained) as raised:
        curator.suggestions(list(curator.blobs()))
    message = str(raised.value)
    assert "no trained iteration" in message and "Train the project first" in message
    assert stack.training_key not in message
    assert predictions_of(stack, project_id)["transactions"] == 0


def test_an_iteration_the_project_does_not_have_is_refused_clearly(stack, make_curator, colours):
    curator = curator_for(make_curator, colours)
    unknown = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ProjectNotTrained) as raised:
        curator.suggestions(list(curator.blobs()), iteration_id=unknown)
    assert f"no iteration {unknown}" in str(raised.value) and stack.training_key not in str(raised.value)
    # The client's own quick test says the same kind of thing when asked for it directly.
    with pytest.raises(ProjectNotTrained) as direct:
        curator.customvision.quick_test(colours["plaintexts"]["red1"], unknown)
    assert "Train the project first" in str(direct.value) and stack.training_key not in str(direct.value)
    named = curator.suggestions(list(curator.blobs()), iteration_id=colours["iteration_id"])
    assert {s.iteration_id for s in named.values()} == {colours["iteration_id"]}


def test_a_tampered_frame_gets_its_error_and_the_others_their_suggestions(stack, make_curator, colours):
    container = f"tampered{secrets.token_hex(4)}"
    names = upload_frames(stack, container, [frame(RED, 201), frame(BLUE, 202), frame(RED, 203)])
    blob = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(
        container, names[1]
    )
    ciphertext = bytearray(blob.download_blob().readall())
    ciphertext[-40] ^= 0x01
    metadata = blob.get_blob_properties().metadata
    blob.upload_blob(bytes(ciphertext), metadata=metadata, overwrite=True)
    curator = make_curator(colours["project_id"], mm_telemetry_storage_container=container)
    blobs = by_name(curator)
    before = predictions_of(stack, colours["project_id"])["transactions"]

    found = curator.suggestions(blobs.values())

    tampered = found[blobs[names[1]].key]
    assert not isinstance(tampered, Suggestion) and tampered.reason == "tampered"
    assert found[blobs[names[0]].key].top.tag_name == "person"
    assert found[blobs[names[2]].key].top.tag_name == "person"
    assert predictions_of(stack, colours["project_id"])["transactions"] - before == 2


def test_the_frames_table_gains_the_suggestion_columns(make_curator, colours):
    curator = curator_for(make_curator, colours)
    table = suggestion_columns(curator, to_dataframe(curator)).set_index("name")
    names = colours["names"]
    assert table.loc[names["red1"], "suggested_tag"] == "person"
    assert table.loc[names["blue"], "suggested_tag"] == "product"
    assert table.loc[names["red1"], "suggested_probability"] > 0.9
    assert table.loc[names["green"], "suggestion_margin"] < table.loc[names["red1"], "suggestion_margin"]


def test_a_detection_project_suggests_boxes(stack, make_curator, container_name):
    project_id = stack.new_project("suggested boxes", detection=True, tags=("person",))
    tag_id = stack.trainer().get_tags(project_id)[0].id
    training = [frame(RED, s) for s in range(300, 315)]
    upload_training_images(
        stack,
        project_id,
        training,
        regions=[Region(tag_id=tag_id, left=BOX[0], top=BOX[1], width=BOX[2], height=BOX[3])],
    )
    train(stack, project_id)
    upload_frames(stack, container_name, [frame(RED, 316)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)

    [suggestion] = curator.suggestions(list(curator.blobs())).values()

    assert isinstance(suggestion, Suggestion) and suggestion.top.tag_name == "person"
    box = suggestion.top.box
    assert box is not None and box.tag_id == tag_id
    assert (box.left, box.top, box.width, box.height) == pytest.approx(BOX, abs=1e-6)


def test_nothing_decrypted_reaches_disk(stack, make_curator, colours, tmp_path, tmp_path_factory):
    curator = curator_for(make_curator, colours)
    found = curator.suggestions(list(curator.blobs()))
    assert all(isinstance(s, Suggestion) for s in found.values())
    ledger = Path(curator.ledger.path)
    findings = scan(
        plaintexts=colours["plaintexts"].values(),
        roots=writable_areas([tmp_path, ledger.parent]),
        # pytest's scratch space of other tests (exports write their images there by design; a solid-colour
        # JPEG's header slice is any Pillow JPEG's), apart from this test's own folders above
        exclude=[tmp_path_factory.getbasetemp().parent],
    )
    assert findings == []


def test_a_frame_over_the_prediction_limit_is_sent_smaller():
    noise = np.random.default_rng(5).integers(0, 256, size=(2400, 3200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert len(buffer.getvalue()) > MAX_PREDICTION_BYTES

    sent = prediction_image(buffer.getvalue())

    assert len(sent) <= MAX_PREDICTION_BYTES
    assert max(Image.open(io.BytesIO(sent)).size) <= 2048
