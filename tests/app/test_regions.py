"""Boxes on frames of an object-detection project, as a reviewer draws them in the larger view (AppTest).

The annotator is a browser component. AppTest reads the arguments the app gives it (the image size it
shows, the tags, the boxes it starts with) and sends back what its "Complete" button sends: every box in
pixels of the image it shows, with its tag. What reaches Custom Vision is checked in the emulator's store.
"""

from __future__ import annotations

import json

import pytest
from azure.storage.blob import BlobServiceClient
from streamlit.testing.v1 import AppTest

from tests.app.conftest import button, dialog, state_badge, tick, ticked, tile, tile_names
from tests.support.frames import jpeg, upload_frames

BoxSpec = tuple[str, float, float, float, float]  # tag, left, top, width, height (0..1 of the frame)
PAGED = "appboxes"
PAGED_SIZE = 52  # a second page of four


@pytest.fixture(scope="module")
def paged_container(stack):
    """A container of its own with PAGED_SIZE distinct 320x240 frames of one model version."""
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    if service.get_container_client(PAGED).exists():
        return sorted(b.name for b in service.get_container_client(PAGED).list_blobs())
    return sorted(upload_frames(stack, PAGED, [jpeg(3000 + i) for i in range(PAGED_SIZE)]))


@pytest.fixture
def detection(app_env_factory):
    return app_env_factory(detection=True, tags=("person", "product"))


def good(at: AppTest, demo) -> list[str]:
    return [n for n in tile_names(at) if n not in demo.bad.values()]


def open_frame(at: AppTest, name: str) -> AppTest:
    at.button(key=f"open:{name}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert dialog(at) is not None
    return at


def close_frame(at: AppTest) -> AppTest:
    at.button(key="close_view").click().run()
    assert dialog(at) is None
    return at


def annotator(at: AppTest) -> dict:
    """The arguments the annotator in the open larger view was given."""
    [component] = [n for n in dialog(at) if getattr(n, "type", None) == "component_instance"]
    return json.loads(component.proto.json_args)


def shown_boxes(at: AppTest) -> list[BoxSpec]:
    """The boxes the annotator starts with, as fractions of the frame."""
    args = annotator(at)
    width, height = args["image_size"]
    return sorted(
        (b["label"], b["bbox"][0] / width, b["bbox"][1] / height, b["bbox"][2] / width, b["bbox"][3] / height)
        for b in args["bbox_info"]
    )


def complete(at: AppTest, boxes: list[BoxSpec]) -> AppTest:
    """What pressing Complete in the annotator sends with these boxes drawn."""
    args = annotator(at)
    width, height = args["image_size"]
    at.session_state[args["key"]] = [
        {
            "bbox": [left * width, top * height, w * width, h * height],
            "label_id": args["label_list"].index(tag),
            "label": tag,
        }
        for tag, left, top, w, h in boxes
    ]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def dialog_texts(at: AppTest) -> str:
    view = dialog(at)
    return "\n".join(str(getattr(node, "value", "")) for node in view if getattr(node, "type", None) != "table")


def regions(stack, project_id: str) -> dict[str, list[BoxSpec]]:
    """source blob -> its regions (tag, left, top, width, height, rounded), for every image of the project."""
    return {
        image.metadata["source_blob"]: sorted(
            (r.tag_name, round(r.left, 3), round(r.top, 3), round(r.width, 3), round(r.height, 3))
            for r in image.regions
        )
        for image in stack.emulator.images(project_id)
    }


def image_ids(stack, project_id: str) -> dict[str, str]:
    return {image.metadata["source_blob"]: image.id for image in stack.emulator.images(project_id)}


def test_boxes_drawn_on_a_frame_go_up_with_it(detection, demo, stack):
    at = detection.open()
    assert "object-detection project" in at.info[0].value and "draw boxes" in at.info[0].value
    name = good(at, demo)[0]

    open_frame(at, name)
    args = annotator(at)
    assert args["label_list"] == ["person", "product"] and args["bbox_info"] == []
    assert max(args["image_size"]) <= 720  # the frame, scaled down to fit the dialog
    assert "No boxes on this frame yet." in dialog_texts(at)

    complete(at, [("person", 0.1, 0.2, 0.3, 0.4), ("product", 0.5, 0.5, 0.25, 0.4)])
    texts = dialog_texts(at)
    assert "Box 1: **person**, left 10.0%, top 20.0%, 30.0% × 40.0% of the frame" in texts
    assert "Not in the project yet: it goes up with 2 boxes." in texts
    assert stack.emulator.images(detection.project_id) == []  # nothing leaves before the reviewer pushes

    at.button(key="save_boxes").click().run()
    assert f"**Pushed:** {name} with 2 boxes." in dialog_texts(at)
    assert "The frame is in the project with these boxes." in dialog_texts(at)
    assert regions(stack, detection.project_id) == {
        name: [("person", 0.1, 0.2, 0.3, 0.4), ("product", 0.5, 0.5, 0.25, 0.4)]
    }
    close_frame(at)
    assert state_badge(at, name) == "pushed"
    assert any("2 boxes · in the project" in c.value for c in tile(at, name).caption)


def test_moving_resizing_and_deleting_boxes_of_a_pushed_frame_changes_its_regions_not_its_image(detection, demo, stack):
    at = detection.open()
    name = good(at, demo)[1]
    open_frame(at, name)
    complete(at, [("person", 0.1, 0.1, 0.2, 0.2), ("product", 0.6, 0.6, 0.3, 0.3)])
    at.button(key="save_boxes").click().run()
    close_frame(at)
    [first_id] = image_ids(stack, detection.project_id).values()

    # Another session opens it: the annotator starts from the boxes the project has.
    at = detection.open()
    open_frame(at, name)
    assert [(t, round(x, 3), round(y, 3), round(w, 3), round(h, 3)) for t, x, y, w, h in shown_boxes(at)] == [
        ("person", 0.1, 0.1, 0.2, 0.2),
        ("product", 0.6, 0.6, 0.3, 0.3),
    ]
    assert at.button(key="save_boxes").label == "Update boxes" and at.button(key="save_boxes").disabled

    # Move and resize the person box, keep the product box, add a third.
    complete(at, [("person", 0.15, 0.05, 0.3, 0.25), ("product", 0.6, 0.6, 0.3, 0.3), ("person", 0.0, 0.7, 0.2, 0.3)])
    assert "your changes are not pushed yet" in dialog_texts(at)
    at.button(key="save_boxes").click().run()
    assert f"**Boxes updated** on {name}: 2 added, 1 removed." in dialog_texts(at)
    assert regions(stack, detection.project_id) == {
        name: [("person", 0.0, 0.7, 0.2, 0.3), ("person", 0.15, 0.05, 0.3, 0.25), ("product", 0.6, 0.6, 0.3, 0.3)]
    }
    assert image_ids(stack, detection.project_id) == {name: first_id}  # the same image: no second upload

    # Delete every box.
    complete(at, [])
    at.button(key="save_boxes").click().run()
    assert "The frame is in the project with no boxes." in dialog_texts(at)
    assert regions(stack, detection.project_id) == {name: []}
    assert image_ids(stack, detection.project_id) == {name: first_id}
    events = detection.curator.ledger.events(action="regions")
    assert [e.details for e in events] == [
        {"added": 0, "removed": 3, "total": 0},
        {"added": 2, "removed": 1, "total": 3},
    ]


def test_discarding_changes_goes_back_to_the_boxes_the_project_has(detection, demo, stack):
    at = detection.open()
    name = good(at, demo)[2]
    open_frame(at, name)
    complete(at, [("product", 0.2, 0.2, 0.2, 0.2)])
    at.button(key="save_boxes").click().run()
    complete(at, [("product", 0.2, 0.2, 0.2, 0.2), ("person", 0.5, 0.1, 0.1, 0.1)])
    assert "your changes are not pushed yet" in dialog_texts(at)

    at.button(key="discard_boxes").click().run()
    assert "The frame is in the project with these boxes." in dialog_texts(at)
    assert [(t, round(x, 3)) for t, x, *_ in shown_boxes(at)] == [("product", 0.2)]  # a fresh annotator
    assert regions(stack, detection.project_id) == {name: [("product", 0.2, 0.2, 0.2, 0.2)]}


def test_boxes_in_progress_survive_paging_and_other_pages_then_go_up_with_push_selected(
    app_env_factory, paged_container, stack
):
    harness = app_env_factory(detection=True, tags=("person", "product"), mm_telemetry_storage_container=PAGED)
    at = harness.open()
    boxed, plain = paged_container[0], paged_container[1]
    open_frame(at, boxed)
    complete(at, [("product", 0.25, 0.25, 0.5, 0.5)])
    close_frame(at)
    assert any("1 box · not pushed yet" in c.value for c in tile(at, boxed).caption)

    at.button(key="top_next").click().run()
    assert tile_names(at) == paged_container[48:]
    at.button(key="top_prev").click().run()
    at.switch_page("views/activity.py").run()
    at.switch_page("views/review.py").run()
    assert not at.exception
    assert any("1 box · not pushed yet" in c.value for c in tile(at, boxed).caption)
    open_frame(at, boxed)
    assert shown_boxes(at) == [("product", 0.25, 0.25, 0.5, 0.5)]
    close_frame(at)

    tick(at, boxed, plain)
    assert any(c.value.startswith("2 selected (2 on this page) · push untagged · 1 with boxes") for c in at.caption)
    button(at, "Push selected").click().run()
    assert at.success[0].value == "**Push:** 2 pushed"
    assert ticked(at) == set()
    assert regions(stack, harness.project_id) == {boxed: [("product", 0.25, 0.25, 0.5, 0.5)], plain: []}
    tags = {i.source_blob: i.tags for i in harness.project_images()}
    assert tags == {boxed: {"product"}, plain: frozenset()}  # a box's tag tags the image; no box: untagged
    assert any("1 box · in the project" in c.value for c in tile(at, boxed).caption)

    # Change the boxes of the pushed frame and push it again: its regions change, no new image.
    before = image_ids(stack, harness.project_id)
    open_frame(at, boxed)
    complete(at, [("product", 0.3, 0.25, 0.5, 0.5), ("person", 0.0, 0.0, 0.1, 0.2)])
    close_frame(at)
    assert any("2 boxes · not pushed yet" in c.value for c in tile(at, boxed).caption)
    tick(at, boxed)
    button(at, "Push selected").click().run()
    assert at.success[0].value == "**Push:** 1 boxes updated"
    assert regions(stack, harness.project_id)[boxed] == [
        ("person", 0.0, 0.0, 0.1, 0.2),
        ("product", 0.3, 0.25, 0.5, 0.5),
    ]
    assert image_ids(stack, harness.project_id) == before


def test_the_sidebar_picks_the_project_and_the_app_follows_it(app_env, demo, stack):
    boxes_project = stack.new_project("picked", detection=True, tags=("forklift",))
    at = app_env.open()
    picker = at.sidebar.selectbox(key="project_id")
    assert picker.value == app_env.project_id  # the settings' project first
    assert picker.format_func(boxes_project) in picker.options
    assert picker.format_func(boxes_project).endswith("· object detection")
    assert picker.format_func(app_env.project_id).endswith("· classification")
    assert at.multiselect(key="push_tags").options == ["empty-shelf", "person", "product"]

    name = good(at, demo)[0]
    tick(at, name)
    at.multiselect(key="push_tags").set_value(["person"]).run()
    picker.set_value(boxes_project).run()
    name_of_boxes_project = app_env.trainer().get_project(boxes_project).name
    assert any(f"{name_of_boxes_project} (detection)" in m.value for m in at.sidebar.markdown)
    assert "object-detection project" in at.info[0].value
    assert at.multiselect(key="push_tags").disabled and at.multiselect(key="push_tags").value == []
    assert ticked(at) == {name}  # the selection stays; the tags were the other project's
    open_frame(at, name)
    assert annotator(at)["label_list"] == ["forklift"]
    complete(at, [("forklift", 0.1, 0.1, 0.5, 0.5)])
    close_frame(at)

    button(at, "Push selected").click().run()
    assert at.success[0].value == "**Push:** 1 pushed"
    assert regions(stack, boxes_project) == {name: [("forklift", 0.1, 0.1, 0.5, 0.5)]}
    assert stack.emulator.images(app_env.project_id) == []
    assert state_badge(at, name) == "pushed"

    at.sidebar.selectbox(key="project_id").set_value(app_env.project_id).run()
    assert state_badge(at, name) == "new"  # push state is per project
