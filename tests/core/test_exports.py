"""Exports of reviewed frames: AutoML JSONL + MLTable, COCO and YOLO files that their own tools read back, the
same boxes in every format, safe file names, and a split that is stratified, deterministic and stable."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from percept_core.boxes import Box
from percept_core.exports import (
    AzureMLDatastore,
    Categories,
    ExportLayout,
    ExportTask,
    FrameSplit,
    LabelledFrame,
    Split,
    automl_export,
    coco_export,
    export_file_name,
    exportable,
    frame_id_of,
    is_safe_file_name,
    mltable_text,
    split_frames,
    stratum_of,
    task_of_project,
    yolo_export,
)

GOLDEN = Path(__file__).parent / "golden" / "exports"
DATASTORE = AzureMLDatastore("percept_frames")
AWKWARD_TAGS = ("fork lift", "Ünïcødé 😀", "pallet/box", 'say "cheese"', "it's: #1", "- dash", "null")
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Written from "Data schemas to train computer vision models with automated machine learning": one object a line,
# `image_url` a datastore URI, optional `image_details` (format, width and height as "<n>px"), and `label` by task.
_IMAGE_URL = {
    "type": "string",
    "pattern": r"^azureml://(subscriptions/[^/]+/resourcegroups/[^/]+/workspaces/[^/]+/)?datastores/[^/]+/paths/.+$",
}
_IMAGE_DETAILS = {
    "type": "object",
    "properties": {
        "format": {"enum": ["jpg", "png", "bmp", "gif"]},
        "width": {"type": "string", "pattern": r"^[1-9][0-9]*px$"},
        "height": {"type": "string", "pattern": r"^[1-9][0-9]*px$"},
    },
    "required": ["format", "width", "height"],
    "additionalProperties": False,
}
_COORDINATE = {"type": "number", "minimum": 0, "maximum": 1}
_LABELS = {
    ExportTask.MULTICLASS: {"type": "string", "minLength": 1},
    ExportTask.MULTILABEL: {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
    ExportTask.OBJECT_DETECTION: {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "topX": _COORDINATE,
                "topY": _COORDINATE,
                "bottomX": _COORDINATE,
                "bottomY": _COORDINATE,
                "isCrowd": {"enum": [0, 1]},
            },
            "required": ["label", "topX", "topY", "bottomX", "bottomY", "isCrowd"],
            "additionalProperties": False,
        },
    },
}


def automl_schema(task: ExportTask) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"image_url": _IMAGE_URL, "image_details": _IMAGE_DETAILS, "label": _LABELS[task]},
        "required": ["image_url", "label"],
        "additionalProperties": False,
    }


def frame(
    name: str,
    *,
    tags: tuple[str, ...] = (),
    boxes: tuple[Box, ...] = (),
    size: tuple[int, int] = (640, 480),
    version: str = "1",
    image_format: str = "JPEG",
) -> LabelledFrame:
    frame_id = frame_id_of("data", name, '"0x8DC0"')
    return LabelledFrame(
        frame_id,
        export_file_name(frame_id, name, image_format),
        size[0],
        size[1],
        tags=tags,
        boxes=boxes,
        model_name="factory",
        model_version=version,
        reviewer="ana@example.com",
    )


def golden_frames() -> list[LabelledFrame]:
    """The small fixed set of the golden files: boxes, a frame without boxes, a resized image, awkward tags."""
    return [
        frame(
            "cam1/2024/dock.jpg",
            tags=("forklift", "person"),
            boxes=(Box("forklift", 0.1, 0.2, 0.3, 0.4), Box("person", 0.5, 0.5, 0.25, 0.5)),
        ),
        frame("cam1/2024/empty-aisle.jpg", tags=("person",)),
        frame(
            'cam2/résumé "quoted".png',
            tags=('say "cheese"',),
            boxes=(Box('say "cheese"', 0, 0, 1, 1),),
            image_format="PNG",
            version="2",
        ),
        frame(
            "../../etc/passwd",
            tags=("pallet/box",),
            boxes=(Box("pallet/box", 0.25, 0.125, 0.5, 0.75),),
            size=(1600, 1200),
        ),
    ]


def golden_split() -> FrameSplit:
    frames = golden_frames()
    return FrameSplit(tuple(frames[:3]), tuple(frames[3:]))


def read_layout(layout: ExportLayout, root: Path) -> Path:
    """The layout's files written under `root`, as a caller would write them."""
    for path, data in layout.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def pixel_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    return (box.left * width, box.top * height, box.width * width, box.height * height)


def within_a_pixel(first: tuple[float, ...], second: tuple[float, ...]) -> bool:
    return all(abs(a - b) <= 1.0 for a, b in zip(first, second, strict=True))


def parse_yolo(text: str, width: int, height: int, names: list[str]) -> list[tuple[str, tuple[float, ...]]]:
    """YOLO label lines back to (class name, pixel box x, y, width, height)."""
    boxes = []
    for line in text.splitlines():
        index, centre_x, centre_y, box_width, box_height = line.split(" ")
        cx, cy, w, h = (float(v) for v in (centre_x, centre_y, box_width, box_height))
        boxes.append((names[int(index)], ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)))
    return boxes


# -- COCO ----------------------------------------------------------------------------------------------------------


def test_coco_export_loads_with_pycocotools_and_its_boxes_round_trip_in_pixels(tmp_path):
    frames = golden_frames()
    categories = Categories.of(frames, known=("unused tag",))
    layout = coco_export(FrameSplit(tuple(frames), ()), ExportTask.OBJECT_DETECTION, categories=categories)
    assert set(layout.files) == {"annotations/instances_train.json"}
    coco = COCO(str(read_layout(layout, tmp_path) / "annotations/instances_train.json"))

    assert sorted(coco.getImgIds()) == list(range(1, len(frames) + 1))
    assert sorted(coco.getAnnIds()) == list(range(1, 5))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [
        "unused tag",
        "forklift",
        "pallet/box",
        "person",
        'say "cheese"',
    ]
    assert coco.getCatIds() == [1, 2, 3, 4, 5]
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    by_file = {image["file_name"]: image for image in coco.loadImgs(coco.getImgIds())}
    for original in frames:
        image = by_file[original.file_name]
        assert (image["width"], image["height"]) == (original.width, original.height)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        written = sorted((names[a["category_id"]], tuple(a["bbox"])) for a in annotations)
        expected = sorted((b.tag, pixel_box(b, original.width, original.height)) for b in original.boxes)
        assert [name for name, _ in written] == [name for name, _ in expected]
        assert all(within_a_pixel(w, e) for (_, w), (_, e) in zip(written, expected, strict=True))
        assert all(
            a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.01) for a in annotations
        )
    assert layout.image_paths[frames[0].frame_id] == f"images/train/{frames[0].file_name}"


def test_coco_classification_writes_image_level_labels_pycocotools_can_query(tmp_path):
    frames = [frame("a.jpg", tags=("forklift", "person")), frame("b.jpg", tags=("person",)), frame("c.jpg")]
    layout = coco_export(FrameSplit(tuple(frames), ()), ExportTask.MULTILABEL)
    coco = COCO(str(read_layout(layout, tmp_path) / "annotations/instances_train.json"))

    person = coco.getCatIds(catNms=["person"])
    files = {image["file_name"] for image in coco.loadImgs(coco.getImgIds(catIds=person))}
    assert files == {frames[0].file_name, frames[1].file_name}
    assert all("bbox" not in a for a in coco.loadAnns(coco.getAnnIds()))
    assert coco.dataset["info"]["task"] == "image_classification_multilabel"
    assert len(coco.getImgIds()) == 3  # the untagged frame is still an image


def test_a_detection_frame_without_boxes_is_an_image_without_annotations_in_every_format(tmp_path):
    frames = (frame("boxed.jpg", boxes=(Box("person", 0.1, 0.1, 0.2, 0.2),)), frame("nothing-here.jpg"))
    split = FrameSplit(frames, ())
    coco = COCO(
        str(
            read_layout(coco_export(split, ExportTask.OBJECT_DETECTION), tmp_path / "coco")
            / "annotations/instances_train.json"
        )
    )
    empty = next(i for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == frames[1].file_name)
    assert coco.getAnnIds(imgIds=[empty["id"]]) == []

    yolo = yolo_export(split, ExportTask.OBJECT_DETECTION)
    assert yolo.files[f"labels/train/{frames[1].stem}.txt"] == b""

    lines = automl_export(split, ExportTask.OBJECT_DETECTION, datastore=DATASTORE).files[
        "train/train_annotations.jsonl"
    ]
    assert json.loads(lines.splitlines()[1])["label"] == []


# -- YOLO ----------------------------------------------------------------------------------------------------------


def test_yolo_label_files_parse_back_to_the_same_boxes_and_data_yaml_names_every_class():
    frames = golden_frames()
    split = golden_split()
    layout = yolo_export(split, ExportTask.OBJECT_DETECTION)
    data = yaml.safe_load(layout.files["data.yaml"])
    names = [data["names"][i] for i in range(data["nc"])]
    assert names == ["forklift", "pallet/box", "person", 'say "cheese"']
    assert layout.files["classes.txt"].decode("utf-8").splitlines() == names
    assert (data["train"], data["val"]) == ("images/train", "images/validation")
    for original in frames:
        side = "train" if original in split.train else "validation"
        assert layout.image_paths[original.frame_id] == f"images/{side}/{original.file_name}"
        text = layout.files[f"labels/{side}/{original.stem}.txt"].decode("ascii")
        parsed = parse_yolo(text, original.width, original.height, names)
        expected = [(b.tag, pixel_box(b, original.width, original.height)) for b in original.boxes]
        assert [n for n, _ in parsed] == [n for n, _ in expected]
        assert all(within_a_pixel(p, e) for (_, p), (_, e) in zip(parsed, expected, strict=True))


def test_yolo_without_validation_frames_points_val_at_the_training_images():
    layout = yolo_export(FrameSplit((frame("a.jpg"),), ()), ExportTask.OBJECT_DETECTION)
    assert yaml.safe_load(layout.files["data.yaml"]) == {
        "train": "images/train",
        "val": "images/train",
        "nc": 0,
        "names": {},
    }


def test_yolo_refuses_a_classification_project():
    with pytest.raises(ValueError, match="YOLO label files hold boxes"):
        yolo_export(FrameSplit((frame("a.jpg", tags=("person",)),), ()), ExportTask.MULTICLASS)


# -- Azure ML AutoML -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(ExportTask))
def test_automl_lines_validate_against_the_documented_schema(task):
    frames = [f for f in golden_frames() if len(f.tags) == 1] if task is ExportTask.MULTICLASS else golden_frames()
    split = FrameSplit(tuple(frames[:-1]), tuple(frames[-1:]))
    layout = automl_export(split, task, datastore=DATASTORE, prefix="exports/2024")
    assert set(layout.files) == {
        "train/train_annotations.jsonl",
        "train/MLTable",
        "validation/validation_annotations.jsonl",
        "validation/MLTable",
    }
    validator = jsonschema.Draft202012Validator(automl_schema(task))
    for side, members in split.by_side().items():
        lines = layout.files[f"{side.value}/{side.value}_annotations.jsonl"].decode("ascii").splitlines()
        assert len(lines) == len(members)
        for line, original in zip(lines, members, strict=True):
            record = json.loads(line)
            validator.validate(record)
            assert record["image_url"] == (
                f"azureml://datastores/percept_frames/paths/exports/2024/images/{original.file_name}"
            )
            assert layout.image_paths[original.frame_id] == f"images/{original.file_name}"
            assert record["image_details"]["width"] == f"{original.width}px"


def test_automl_labels_by_task():
    tagged = frame("a.png", tags=("person", "forklift"), boxes=(Box("person", 0.2, 0.3, 0.4, 0.5),), image_format="PNG")
    single = frame("b.jpg", tags=("person",))
    split = FrameSplit((tagged,), ())

    def first(task: ExportTask, members: FrameSplit) -> dict:
        lines = automl_export(members, task, datastore=DATASTORE).files["train/train_annotations.jsonl"]
        return json.loads(lines.splitlines()[0])

    assert first(ExportTask.MULTICLASS, FrameSplit((single,), ()))["label"] == "person"
    assert first(ExportTask.MULTILABEL, split)["label"] == ["person", "forklift"]
    detection = first(ExportTask.OBJECT_DETECTION, split)
    assert detection["label"] == [
        {"label": "person", "topX": 0.2, "topY": 0.3, "bottomX": 0.6, "bottomY": 0.8, "isCrowd": 0}
    ]
    assert detection["image_details"] == {"format": "png", "width": "640px", "height": "480px"}


def test_automl_workspace_uri_and_an_empty_multilabel_label_validate():
    datastore = AzureMLDatastore(
        "frames",
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="rg-percept",
        workspace="ws-percept",
    )
    layout = automl_export(FrameSplit((frame("a.jpg"),), ()), ExportTask.MULTILABEL, datastore=datastore)
    record = json.loads(layout.files["train/train_annotations.jsonl"])
    jsonschema.validate(record, automl_schema(ExportTask.MULTILABEL))
    assert record["image_url"].startswith(
        "azureml://subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-percept/"
        "workspaces/ws-percept/datastores/frames/paths/images/"
    )
    assert record["label"] == []


def test_the_mltable_file_parses_to_the_documented_structure():
    layout = automl_export(golden_split(), ExportTask.OBJECT_DETECTION, datastore=DATASTORE)
    for side in ("train", "validation"):
        assert yaml.safe_load(layout.files[f"{side}/MLTable"]) == {
            "paths": [{"file": f"./{side}_annotations.jsonl"}],
            "transformations": [
                {"read_json_lines": {"encoding": "utf8", "invalid_lines": "error", "include_path_column": False}},
                {"convert_column_types": [{"columns": "image_url", "column_type": "stream_info"}]},
            ],
        }
    with pytest.raises(ValueError):
        mltable_text("../train.jsonl")


def test_a_side_without_frames_gets_no_files():
    layout = automl_export(FrameSplit((frame("a.jpg"),), ()), ExportTask.MULTILABEL, datastore=DATASTORE)
    assert set(layout.files) == {"train/train_annotations.jsonl", "train/MLTable"}


@pytest.mark.parametrize("prefix", ["../up", "a/../../b", "with space", "a\\b", "..", "ok/\u202e"])
def test_a_prefix_that_could_leave_the_export_or_needs_escaping_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        automl_export(golden_split(), ExportTask.OBJECT_DETECTION, datastore=DATASTORE, prefix=prefix)


def test_a_datastore_name_or_a_partial_workspace_is_refused():
    for bad in ("has/slash", "has-dash", ""):
        with pytest.raises(ValueError):
            AzureMLDatastore(bad)
    with pytest.raises(ValueError, match="all three"):
        AzureMLDatastore("frames", workspace="ws")


# -- labels: empty, awkward, case-insensitive ---------------------------------------------------------------------


def test_multiclass_leaves_out_frames_without_exactly_one_tag_and_says_why():
    frames = [
        frame("one.jpg", tags=("person",)),
        frame("none.jpg"),
        frame("two.jpg", tags=("person", "forklift")),
        frame("same-twice.jpg", tags=("Person", "person")),
    ]
    kept, left_out = exportable(frames, ExportTask.MULTICLASS)
    assert [f.file_name for f in kept] == [frames[0].file_name, frames[3].file_name]
    assert [(o.frame_id, o.reason.split(":")[0]) for o in left_out] == [
        (frames[1].frame_id, "no tag"),
        (frames[2].frame_id, "2 tags"),
    ]
    assert exportable(frames, ExportTask.MULTILABEL) == (frames, [])
    assert exportable(frames, ExportTask.OBJECT_DETECTION) == (frames, [])


def test_awkward_tag_names_arrive_intact_in_every_format(tmp_path):
    frames = [
        frame(f"f{i}.jpg", tags=(tag,), boxes=(Box(tag, 0.1, 0.1, 0.5, 0.5),)) for i, tag in enumerate(AWKWARD_TAGS)
    ]
    split = FrameSplit(tuple(frames), ())
    expected = sorted(AWKWARD_TAGS, key=lambda n: (n.casefold(), n))

    coco = COCO(
        str(read_layout(coco_export(split, ExportTask.OBJECT_DETECTION), tmp_path) / "annotations/instances_train.json")
    )
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == expected

    yolo = yolo_export(split, ExportTask.OBJECT_DETECTION)
    data = yaml.safe_load(yolo.files["data.yaml"])
    assert [data["names"][i] for i in range(data["nc"])] == expected
    assert yolo.files["classes.txt"].decode("utf-8").splitlines() == expected

    for task in ExportTask:
        lines = automl_export(split, task, datastore=DATASTORE).files["train/train_annotations.jsonl"]
        labels = [json.loads(line)["label"] for line in lines.splitlines()]
        if task is ExportTask.OBJECT_DETECTION:
            labels = [label[0]["label"] for label in labels]
        elif task is ExportTask.MULTILABEL:
            labels = [label[0] for label in labels]
        assert sorted(labels) == sorted(AWKWARD_TAGS)


def test_tag_names_that_differ_only_in_case_are_one_category():
    frames = [
        frame("a.jpg", boxes=(Box("Forklift", 0.1, 0.1, 0.2, 0.2),)),
        frame("b.jpg", boxes=(Box("forklift", 0.1, 0.1, 0.2, 0.2),)),
    ]
    categories = Categories.of(frames)
    assert categories.names == ("Forklift",)
    layout = yolo_export(FrameSplit(tuple(frames), ()), ExportTask.OBJECT_DETECTION, categories=categories)
    assert {layout.files[f"labels/train/{f.stem}.txt"].split()[0] for f in frames} == {b"0"}


def test_categories_keep_an_earlier_order_and_append_new_tags():
    frames = [frame("a.jpg", tags=("zebra", "apple", "person"))]
    assert Categories.of(frames, known=("person", "zebra")).names == ("person", "zebra", "apple")


@pytest.mark.parametrize("name", ["", "   ", "line\nbreak", "tab\tbed", "nul\x00", "sep\u2028arator"])
def test_a_tag_name_no_format_can_carry_is_refused(name):
    with pytest.raises(ValueError, match="tag name"):
        Categories((name,))


def test_a_tag_outside_the_categories_is_refused():
    with pytest.raises(ValueError, match="not one of the export's categories"):
        yolo_export(
            FrameSplit((frame("a.jpg", boxes=(Box("cat", 0, 0, 1, 1),)),), ()),
            ExportTask.OBJECT_DETECTION,
            categories=Categories(("dog",)),
        )


# -- boxes survive every conversion, also on images Custom Vision resized -------------------------------------------


def test_boxes_of_a_resized_image_land_on_the_same_objects():
    """Custom Vision keeps boxes as fractions: drawn on the 4000x3000 original, they are right on its 1600x1200
    copy, and the pixels an export writes are those of the copy it writes."""
    original = Box.from_pixels("person", 1000, 600, 800, 1500, image_width=4000, image_height=3000)
    resized = frame("resized.jpg", boxes=(original,), size=(1600, 1200))
    coco = json.loads(
        coco_export(FrameSplit((resized,), ()), ExportTask.OBJECT_DETECTION).files["annotations/instances_train.json"]
    )
    assert within_a_pixel(tuple(coco["annotations"][0]["bbox"]), (400, 240, 320, 600))
    assert coco["images"][0]["width"] == 1600


sizes = st.integers(min_value=1, max_value=10_240)


@st.composite
def boxes_on_resized_images(draw) -> tuple[Box, tuple[float, float, float, float], tuple[int, int]]:
    """A box drawn in pixels of an original image, and the size of the (maybe resized) image that is exported."""
    width, height = draw(sizes), draw(sizes)
    x = draw(st.floats(min_value=0, max_value=width - 1))
    y = draw(st.floats(min_value=0, max_value=height - 1))
    box_width = draw(st.floats(min_value=min(1, width - x), max_value=width - x))
    box_height = draw(st.floats(min_value=min(1, height - y), max_value=height - y))
    box = Box.from_pixels("object", x, y, box_width, box_height, image_width=width, image_height=height)
    exported = draw(st.sampled_from([(width, height), None]))
    exported = exported or (draw(sizes), draw(sizes))
    scale_x, scale_y = exported[0] / width, exported[1] / height
    return box, (x * scale_x, y * scale_y, box_width * scale_x, box_height * scale_y), exported


@PROPERTY
@given(boxes_on_resized_images())
def test_a_box_survives_every_format_within_a_pixel(case):
    box, expected, (width, height) = case
    exported = frame("property.jpg", boxes=(box,), size=(width, height))
    split = FrameSplit((exported,), ())

    coco = json.loads(coco_export(split, ExportTask.OBJECT_DETECTION).files["annotations/instances_train.json"])
    assert within_a_pixel(tuple(coco["annotations"][0]["bbox"]), expected)

    yolo = yolo_export(split, ExportTask.OBJECT_DETECTION).files[f"labels/train/{exported.stem}.txt"]
    assert within_a_pixel(parse_yolo(yolo.decode("ascii"), width, height, ["object"])[0][1], expected)

    line = automl_export(split, ExportTask.OBJECT_DETECTION, datastore=DATASTORE).files["train/train_annotations.jsonl"]
    label = json.loads(line)["label"][0]
    automl = (
        label["topX"] * width,
        label["topY"] * height,
        (label["bottomX"] - label["topX"]) * width,
        (label["bottomY"] - label["topY"]) * height,
    )
    assert within_a_pixel(automl, expected)


# -- file names ----------------------------------------------------------------------------------------------------

HOSTILE_BLOB_NAMES = [
    "../../etc/passwd",
    "..\\..\\windows\\system32\\config",
    "/absolute/path.jpg",
    "dir/CON",
    "dir/con.jpg",
    "nul",
    "line\nbreak\r.jpg",
    "nul\x00byte.jpg",
    "trailing dot.",
    "trailing space ",
    "...",
    "",
    "a" * 1000 + ".jpg",
    "Ünïcødé 😀.jpg",
    "Case.jpg",
    "case.jpg",
    "\u202eright-to-left.jpg",
]


def test_file_names_from_hostile_blob_names_are_safe_unique_and_stable(tmp_path):
    frame_ids = [frame_id_of("data", name, '"0x1"') for name in HOSTILE_BLOB_NAMES]
    names = [export_file_name(fid, blob, "jpeg") for fid, blob in zip(frame_ids, HOSTILE_BLOB_NAMES, strict=True)]
    assert all(is_safe_file_name(n) and len(n) <= 100 for n in names)
    assert len({n.casefold() for n in names}) == len(names)
    assert names == [
        export_file_name(fid, blob, "JPEG") for fid, blob in zip(frame_ids, HOSTILE_BLOB_NAMES, strict=True)
    ]
    for name in names:
        target = tmp_path / name
        target.write_bytes(b"x")
        assert target.resolve().parent == tmp_path.resolve()
    assert len(list(tmp_path.iterdir())) == len(names)
    assert export_file_name(frame_ids[0], HOSTILE_BLOB_NAMES[0], "PNG").endswith(".png")


@PROPERTY
@given(st.text(max_size=300), st.text(max_size=60))
def test_any_blob_name_gives_a_safe_file_name(blob_name, etag):
    name = export_file_name(frame_id_of("data", blob_name, etag), blob_name, "GIF")
    assert is_safe_file_name(name)
    assert "/" not in name and "\\" not in name and ".." not in name


def test_a_frame_with_an_unsafe_file_name_or_a_box_outside_the_image_is_refused():
    for unsafe in ("../x.jpg", "a/b.jpg", "CON.jpg", "x.exe", "x\n.jpg", "x.jpg.", ""):
        with pytest.raises(ValueError, match="safe file name"):
            LabelledFrame("id", unsafe, 10, 10)
    with pytest.raises(ValueError, match="not inside the image"):
        LabelledFrame("id", "x.jpg", 10, 10, boxes=(Box("t", 0.5, 0.5, 0.6, 0.1),))
    with pytest.raises(ValueError, match="format"):
        export_file_name("id", "x.tiff", "TIFF")


def test_two_frames_with_one_file_name_are_refused():
    first = frame("a.jpg")
    twin = LabelledFrame("another id", first.file_name.upper().replace(".JPG", ".png"), 10, 10)
    with pytest.raises(ValueError, match="same file name"):
        coco_export(FrameSplit((first, twin), ()), ExportTask.MULTILABEL)


# -- the split -----------------------------------------------------------------------------------------------------


def population(count: int, *, start: int = 0) -> list[LabelledFrame]:
    """Frames over three tags and two model versions, unevenly."""
    tags = ["person"] * 5 + ["forklift"] * 3 + ["pallet"]
    return [frame(f"p{i}.jpg", tags=(tags[i % len(tags)],), version=f"v{i % 2}") for i in range(start, start + count)]


def test_the_split_gives_every_stratum_its_share_of_validation_frames():
    frames = population(900)
    split = split_frames(frames, 0.2)
    assert len(split.validation) == 180
    strata: dict[tuple, list[int]] = {}
    for side, members in split.by_side().items():
        for member in members:
            strata.setdefault(stratum_of(member), [0, 0])[side is Split.VALIDATION] += 1
    assert len(strata) == 6
    for train, validation in strata.values():
        assert abs(validation - 0.2 * (train + validation)) <= 1


def test_small_strata_still_add_up_to_the_fraction_overall():
    frames = [frame(f"s{i}.jpg", tags=(f"tag {i}",)) for i in range(10)]
    assert len(split_frames(frames, 0.3).validation) == 3


def test_the_split_is_the_same_for_the_same_frames_in_any_order():
    frames = population(300)
    shuffled = frames[:]
    random.Random(7).shuffle(shuffled)
    assert split_frames(frames, 0.25) == split_frames(shuffled, 0.25)


@PROPERTY
@given(st.integers(1, 120), st.integers(1, 120), st.sampled_from([0.1, 0.2, 0.25, 0.5]), st.randoms())
def test_adding_frames_never_moves_a_frame_already_split(first, added, fraction, rng):
    before = split_frames(population(first), fraction)
    grown = population(first) + population(added, start=first)
    rng.shuffle(grown)
    after = split_frames(grown, fraction, previous=before.sides()).sides()
    assert all(after[frame_id] is side for frame_id, side in before.sides().items())
    assert len(after) == first + added


def test_a_split_with_previous_sides_from_the_ledger_takes_them_as_words():
    frames = population(10)
    after = split_frames(frames, 0.5, previous={frames[0].frame_id: "validation", frames[1].frame_id: "train"})
    assert after.sides()[frames[0].frame_id] is Split.VALIDATION
    assert after.sides()[frames[1].frame_id] is Split.TRAIN


def test_no_validation_fraction_puts_everything_in_training_and_a_bad_fraction_is_refused():
    assert split_frames(population(20), 0).validation == ()
    for bad in (-0.1, 1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            split_frames(population(3), bad)


def test_a_frame_given_twice_is_refused():
    frames = population(2)
    with pytest.raises(ValueError, match="twice"):
        split_frames([*frames, frames[0]], 0.5)


# -- the project's task, and the golden files ----------------------------------------------------------------------


def test_the_task_follows_the_custom_vision_project():
    assert task_of_project("detection", None) is ExportTask.OBJECT_DETECTION
    assert task_of_project("classification", "Multiclass") is ExportTask.MULTICLASS
    assert task_of_project("classification", None) is ExportTask.MULTICLASS
    assert task_of_project("classification", "Multilabel") is ExportTask.MULTILABEL
    with pytest.raises(ValueError):
        task_of_project("segmentation", None)


def golden_layouts() -> dict[str, ExportLayout]:
    split = golden_split()
    return {
        "automl": automl_export(split, ExportTask.OBJECT_DETECTION, datastore=DATASTORE, prefix="exports/demo"),
        "coco": coco_export(split, ExportTask.OBJECT_DETECTION),
        "coco-multilabel": coco_export(split, ExportTask.MULTILABEL),
        "yolo": yolo_export(split, ExportTask.OBJECT_DETECTION),
    }


@pytest.mark.parametrize("target", ["automl", "coco", "coco-multilabel", "yolo"])
def test_exports_of_the_fixed_set_match_the_golden_files(target):
    """`<target>/files/` holds every file the export writes, `<target>/image_paths.json` where each image goes."""
    layout = golden_layouts()[target]
    folder = GOLDEN / target / "files"
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert layout.files == on_disk
    assert layout.image_paths == json.loads((GOLDEN / target / "image_paths.json").read_text("utf-8"))
