"""Boxes for object-detection projects: uploaded with the image, then edited on the pushed image."""

from __future__ import annotations

import pytest

from percept_core import CuratorError, Region
from tests.support.frames import jpeg, upload_frames


@pytest.fixture
def detection(stack, make_curator, container_name):
    project = stack.new_project("boxes", detection=True, tags=("person", "product"))
    upload_frames(stack, container_name, [jpeg(950), jpeg(951)])
    curator = make_curator(project, mm_telemetry_storage_container=container_name)
    assert curator.project().is_detection
    return curator


def test_boxes_go_up_with_the_image_and_later_edits_change_only_what_changed(stack, detection):
    tags = {t.name: t.id for t in detection.tags()}
    blob = next(detection.blobs())
    first = [
        Region.from_pixels(tags["person"], 32, 24, 64, 48, image_width=320, image_height=240),
        Region(tags["product"], 0.5, 0.5, 0.25, 0.25),
    ]
    update = detection.set_regions(blob, first)
    assert update.added == 2 and update.image_id
    [image] = stack.emulator.images(detection.customvision.project_id)
    boxes = sorted(
        (r.tag_name, round(r.left, 3), round(r.top, 3), round(r.width, 3), round(r.height, 3)) for r in image.regions
    )
    assert boxes == [("person", 0.1, 0.1, 0.2, 0.2), ("product", 0.5, 0.5, 0.25, 0.25)]

    second = [first[0], Region(tags["product"], 0.6, 0.5, 0.25, 0.25), Region(tags["person"], 0.0, 0.0, 0.1, 0.1)]
    update = detection.set_regions(blob, second)
    assert (update.added, update.removed, update.kept) == (2, 1, 1)
    [image] = stack.emulator.images(detection.customvision.project_id)
    assert len(image.regions) == 3
    assert {(r.tag_name, round(r.left, 3)) for r in image.regions} == {
        ("person", 0.1),
        ("product", 0.6),
        ("person", 0.0),
    }
    assert len(stack.emulator.images(detection.customvision.project_id)) == 1  # never uploaded twice
    assert detection.ledger.events(action="regions")[0].details == {"added": 2, "removed": 1, "total": 3}


def test_invalid_boxes_are_refused_before_anything_is_sent(stack, detection):
    tag = detection.tags()[0].id
    blob = next(detection.blobs())
    with pytest.raises(CuratorError, match="must lie inside the image"):
        detection.set_regions(blob, [Region(tag, 0.9, 0.1, 0.2, 0.2)])
    with pytest.raises(CuratorError, match="at most 300 regions"):
        detection.set_regions(blob, [Region(tag, 0.001 * i, 0.0, 0.001, 0.001) for i in range(301)])
    assert stack.emulator.images(detection.customvision.project_id) == []


def test_pixels_outside_the_image_are_clamped():
    box = Region.from_pixels("t", -10, 200, 100, 100, image_width=320, image_height=240)
    assert (box.left, box.top, box.width, box.height) == (0.0, 0.833333, 0.28125, 0.166667)
    box.validate()
