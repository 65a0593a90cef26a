"""Reviewed frames as dataset files: Azure ML AutoML for images (JSONL + MLTable), COCO and YOLO, with a
train/validation split. Pure: every writer returns the files' bytes by relative path and where each image goes;
the caller writes them to a folder or a blob container. No I/O, no ledger, no network.

    task = task_of_project(project.kind, project.classification_type)
    frame_id = frame_id_of(blob.container, blob.name, blob.etag)
    frames = [LabelledFrame(frame_id, export_file_name(frame_id, blob.name, "JPEG"), 640, 480, boxes=...), ...]
    kept, left_out = exportable(frames, task)
    split = split_frames(kept, 0.2, previous=sides_written_before)  # then record split.sides()
    layout = automl_export(split, task, datastore=AzureMLDatastore("percept_frames"), prefix="exports/2024")
    # write layout.files[path] for each path, and each frame's image at layout.image_paths[frame.frame_id]

Boxes are `percept_core.boxes.Box`: left, top, width, height as fractions (0..1) of the image, as Custom Vision
keeps its regions. Fractions survive a resize: Custom Vision may serve an image smaller than the one uploaded,
and the same fractions stay right on it, so pixel coordinates (COCO) are always computed from the width and
height of the file the export writes, never from the original's.

Tag names are matched case-insensitively, as Custom Vision matches them: "Forklift" and "forklift" are one
category, written with the first spelling `Categories` was given.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from .boxes import Box

# What `export_file_name` writes: ASCII letters, digits, '_' and '-', a 16-hex-digit hash of the frame id, and
# the image format's extension. No dot but the extension's, so no Windows device name ("CON.jpg") can result.
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}\.(jpg|png|bmp|gif)")
_WINDOWS_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
_EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "bmp": "bmp", "gif": "gif"}
_MAX_STEM = 64
# Azure ML datastore names are letters, digits and underscores; the path of an export is plain segments.
_DATASTORE_NAME = re.compile(r"[A-Za-z0-9_]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")
_URI_PART = re.compile(r"[A-Za-z0-9._()-]{1,255}")
_SAFE_JSONL_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}\.jsonl")
_BOUNDS_TOLERANCE = 1e-6


class ExportTask(StrEnum):
    """What the labels are, named as Azure ML names its AutoML image tasks."""

    MULTICLASS = "image_classification"
    MULTILABEL = "image_classification_multilabel"
    OBJECT_DETECTION = "image_object_detection"


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"


def task_of_project(kind: str, classification_type: str | None) -> ExportTask:
    """The export task of a Custom Vision project (`ProjectInfo.kind`, `ProjectInfo.classification_type`).

    A classification project without a classification type is multi-class, Custom Vision's default.
    """
    if kind == "detection":
        return ExportTask.OBJECT_DETECTION
    if kind != "classification":
        raise ValueError(f"Unknown project kind {kind!r} (expected 'classification' or 'detection').")
    if classification_type is None or classification_type.lower() == "multiclass":
        return ExportTask.MULTICLASS
    if classification_type.lower() == "multilabel":
        return ExportTask.MULTILABEL
    raise ValueError(f"Unknown classification type {classification_type!r} (expected Multiclass or Multilabel).")


def frame_id_of(container: str, blob_name: str, etag: str) -> str:
    """A frame's stable id from the ledger's key of its blob version: 'container/name@etag'."""
    return f"{container}/{blob_name}@{etag}"


def export_file_name(frame_id: str, blob_name: str, image_format: str) -> str:
    """A file name for the frame's image that any filesystem takes, the same for the same frame every time.

    The stem is the blob name's last segment reduced to ASCII letters, digits, '_' and '-' (so no path
    traversal, control character, reserved name or case clash survives), then a hash of the frame id, which
    keeps names of different frames apart (even on case-insensitive filesystems) and never changes when other
    frames are added. `image_format` is the format of the bytes written (JPEG, PNG, BMP or GIF).
    """
    extension = _EXTENSIONS.get(image_format.lower())
    if extension is None:
        raise ValueError(f"Image format {image_format!r} is not one an export writes (JPEG, PNG, BMP, GIF).")
    last = re.split(r"[/\\]", blob_name)[-1]
    stem = safe_stem(last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last) or "frame"
    digest = hashlib.sha256(frame_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{stem}-{digest}.{extension}"


def safe_stem(text: str) -> str:
    """`text` reduced to ASCII letters, digits, '_' and '-' (accents dropped, runs of others one '_'), at most
    `_MAX_STEM` characters; empty when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", ascii_text)).strip("_-")[:_MAX_STEM]


def is_safe_file_name(name: str) -> bool:
    """Whether `name` is a plain file name an export may write on any filesystem (what `export_file_name` gives)."""
    return bool(_SAFE_FILE_NAME.fullmatch(name)) and name.split(".")[0].lower() not in _WINDOWS_DEVICE_NAMES


@dataclass(frozen=True)
class LabelledFrame:
    """One reviewed frame as an export sees it.

    `frame_id` is stable and unique (the ledger's blob version, see `frame_id_of`); `file_name` is the image's
    file name (see `export_file_name`; its extension is the image's format); `width` and `height` are the
    pixels of that image file. `tags` are the image's classes, `boxes` its boxes (object detection). The model
    name and version are empty when unknown (a Custom Vision image this tool did not push).
    """

    frame_id: str
    file_name: str
    width: int
    height: int
    tags: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    model_name: str = ""
    model_version: str = ""
    reviewer: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "boxes", tuple(self.boxes))
        if not is_safe_file_name(self.file_name):
            raise ValueError(f"Frame {self.frame_id!r}: {self.file_name!r} is not a safe file name (export_file_name).")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Frame {self.frame_id!r}: an image of {self.width}x{self.height} pixels.")
        for box in self.boxes:
            if not _inside_image(box):
                raise ValueError(f"Frame {self.frame_id!r}: the {box.tag!r} box {box} is not inside the image.")

    @property
    def image_format(self) -> str:
        """The image's format as AutoML's `image_details` names it: jpg, png, bmp or gif."""
        return self.file_name.rsplit(".", 1)[1]

    @property
    def stem(self) -> str:
        return self.file_name.rsplit(".", 1)[0]


def _inside_image(box: Box) -> bool:
    return (
        box.left >= 0
        and box.top >= 0
        and box.width > 0
        and box.height > 0
        and box.left + box.width <= 1 + _BOUNDS_TOLERANCE
        and box.top + box.height <= 1 + _BOUNDS_TOLERANCE
    )


def _tag_problem(name: str) -> str | None:
    if not name.strip():
        return "is empty"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        return "contains a control character, a line break or an unpaired surrogate"
    return None


@dataclass(frozen=True)
class Categories:
    """The classes of an export in a fixed order: COCO ids are positions from 1, YOLO classes positions from 0.

    Keep the order of an earlier export (`known`) so that files it wrote stay right: new tags only append.
    """

    names: tuple[str, ...]
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions: dict[str, int] = {}
        for position, name in enumerate(self.names):
            problem = _tag_problem(name)
            if problem is not None:
                raise ValueError(f"The tag name {name!r} {problem}.")
            if name.casefold() in positions:
                raise ValueError(f"The tag {name!r} is listed twice (tag names are case-insensitive).")
            positions[name.casefold()] = position
        object.__setattr__(self, "_positions", positions)

    @classmethod
    def of(cls, frames: Iterable[LabelledFrame], *, known: Sequence[str] = ()) -> Categories:
        """`known` in its order (the project's tags, or an earlier export's classes), then every other tag the
        frames use, sorted."""
        names = list(dict.fromkeys(known))
        seen = {name.casefold() for name in names}
        new: dict[str, str] = {}
        for frame in frames:
            for tag in (*frame.tags, *(box.tag for box in frame.boxes)):
                if tag.casefold() not in seen:
                    new.setdefault(tag.casefold(), tag)
        return cls((*names, *sorted(new.values(), key=lambda n: (n.casefold(), n))))

    def position(self, tag: str) -> int:
        """0-based position of the tag (case-insensitive); ValueError for a tag not among the categories."""
        try:
            return self._positions[tag.casefold()]
        except KeyError:
            raise ValueError(f"The tag {tag!r} is not one of the export's categories.") from None

    def name(self, tag: str) -> str:
        """The tag as the export writes it (the categories' spelling)."""
        return self.names[self.position(tag)]


@dataclass(frozen=True)
class LeftOut:
    """A frame an export cannot express for its task, and why."""

    frame_id: str
    reason: str


def exportable(frames: Iterable[LabelledFrame], task: ExportTask) -> tuple[list[LabelledFrame], list[LeftOut]]:
    """The frames the task can express, and the others with why.

    Multi-class needs exactly one tag a frame. Multi-label takes any number (none is an empty list); object
    detection takes frames without boxes (an image with no object in it).
    """
    kept: list[LabelledFrame] = []
    left_out: list[LeftOut] = []
    for frame in frames:
        count = len({tag.casefold() for tag in frame.tags})
        if task is ExportTask.MULTICLASS and count != 1:
            why = "no tag" if count == 0 else f"{count} tags"
            left_out.append(LeftOut(frame.frame_id, f"{why}: a multi-class export needs exactly one tag a frame"))
        else:
            kept.append(frame)
    return kept, left_out


# -- the split ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSplit:
    """Frames for training and for validation, each sorted by file name."""

    train: tuple[LabelledFrame, ...]
    validation: tuple[LabelledFrame, ...]

    def sides(self) -> dict[str, Split]:
        """Each frame id's side: what to record, and give back as `previous` next time."""
        return {f.frame_id: Split.TRAIN for f in self.train} | {f.frame_id: Split.VALIDATION for f in self.validation}

    def by_side(self) -> dict[Split, tuple[LabelledFrame, ...]]:
        return {Split.TRAIN: self.train, Split.VALIDATION: self.validation}


def stratum_of(frame: LabelledFrame) -> tuple[str, str, tuple[str, ...]]:
    """The group a frame is split within: its model name and version, and the set of its labels."""
    labels = {tag.casefold() for tag in frame.tags} | {box.tag.casefold() for box in frame.boxes}
    return (frame.model_name, frame.model_version, tuple(sorted(labels)))


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64


def split_frames(
    frames: Iterable[LabelledFrame], validation_fraction: float, *, previous: Mapping[str, Split] | None = None
) -> FrameSplit:
    """A train/validation split stratified by labels and model version, deterministic and stable.

    Each stratum (`stratum_of`) gets its share of the validation frames: the fraction of its size, with the
    remainders across strata rounded so that the total is the fraction of all frames (largest remainders first).
    Which frames of a stratum go to validation is decided by a hash of their ids, so the same frames give the
    same split in any order. Frames in `previous` (the sides of an earlier export) keep their side: only new
    frames fill what a stratum lacks, so adding frames never moves one already written. A split from scratch
    cannot promise that and stay stratified: pass `previous` whenever an export is extended.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"A validation fraction is in [0, 1), not {validation_fraction}.")
    sides = {frame_id: Split(side) for frame_id, side in (previous or {}).items()}
    strata: dict[tuple[str, str, tuple[str, ...]], list[LabelledFrame]] = defaultdict(list)
    seen: set[str] = set()
    for frame in frames:
        if frame.frame_id in seen:
            raise ValueError(f"The frame {frame.frame_id!r} is given twice.")
        seen.add(frame.frame_id)
        strata[stratum_of(frame)].append(frame)
    fraction = Fraction(validation_fraction).limit_denominator(10**6)
    quotas = {key: fraction * len(members) for key, members in strata.items()}
    targets = {key: math.floor(quota) for key, quota in quotas.items()}
    total = math.floor(fraction * len(seen) + Fraction(1, 2))
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - targets[key]), _unit_hash(repr(key))))
    for key in by_remainder[: max(0, total - sum(targets.values()))]:
        targets[key] += 1

    train: list[LabelledFrame] = []
    validation: list[LabelledFrame] = []
    for key, members in strata.items():
        kept_validation = [f for f in members if sides.get(f.frame_id) is Split.VALIDATION]
        kept_train = [f for f in members if sides.get(f.frame_id) is Split.TRAIN]
        new = sorted(
            (f for f in members if f.frame_id not in sides), key=lambda f: (_unit_hash(f.frame_id), f.frame_id)
        )
        wanted = min(max(targets[key] - len(kept_validation), 0), len(new))
        validation += kept_validation + new[:wanted]
        train += kept_train + new[wanted:]
    return FrameSplit(tuple(sorted(train, key=_file_order)), tuple(sorted(validation, key=_file_order)))


def _file_order(frame: LabelledFrame) -> tuple[str, str]:
    return (frame.file_name, frame.frame_id)


# -- what every writer returns -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportLayout:
    """An export's contents by POSIX path relative to its root: the annotation files' bytes, and the path each
    frame's image is to be written at (by frame id)."""

    files: dict[str, bytes]
    image_paths: dict[str, str]


def _check_writable(split: FrameSplit) -> list[LabelledFrame]:
    frames = [*split.train, *split.validation]
    stems: dict[str, str] = {}
    for frame in frames:
        other = stems.setdefault(frame.stem.casefold(), frame.frame_id)
        if other != frame.frame_id:
            raise ValueError(f"Frames {other!r} and {frame.frame_id!r} have the same file name {frame.file_name!r}.")
    return frames


def _json_bytes(value: Any) -> bytes:
    # ASCII only: every tag name arrives intact whatever the reader's encoding, and no U+2028 splits a line.
    return (json.dumps(value, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _yaml_string(text: str) -> str:
    """`text` as a YAML double-quoted scalar: quotes, backslashes and anything not plainly printable escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F or (code > 0x9F and char.isprintable() and char not in "\u2028\u2029\ufeff"):
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


# -- Azure ML AutoML for images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureMLDatastore:
    """An Azure ML datastore (type azure_blob) over the container the export is written to.

    AutoML reads an image by a datastore URI: `azureml://datastores/<name>/paths/<path in the container>`
    inside its workspace, or the long form naming the subscription, resource group and workspace
    (all three, or none).
    """

    name: str
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None

    def __post_init__(self) -> None:
        if not _DATASTORE_NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not an Azure ML datastore name (letters, digits and underscores).")
        parts = (self.subscription_id, self.resource_group, self.workspace)
        if any(p is not None for p in parts) and not all(p is not None and _URI_PART.fullmatch(p) for p in parts):
            raise ValueError("A datastore's subscription, resource group and workspace are given all three, or none.")

    def uri(self, path: str) -> str:
        """The datastore URI of a path in the container."""
        scope = (
            f"subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}/workspaces/{self.workspace}/"
            if self.workspace is not None
            else ""
        )
        return f"azureml://{scope}datastores/{self.name}/paths/{path}"


def _checked_prefix(prefix: str) -> str:
    segments = [segment for segment in prefix.split("/") if segment]
    for segment in segments:
        if not _PATH_SEGMENT.fullmatch(segment) or not segment.strip("."):
            raise ValueError(
                f"The prefix {prefix!r} has a segment {segment!r}: a prefix is made of letters, digits, '.', '_' "
                "and '-', separated by '/', and no segment is only dots."
            )
    return "/".join(segments)


def automl_line(frame: LabelledFrame, task: ExportTask, categories: Categories, image_url: str) -> dict[str, Any]:
    """The JSONL object of one frame in AutoML's image schema.

    `label` is the class name (multi-class), a list of class names (multi-label), or a list of boxes
    `{label, topX, topY, bottomX, bottomY, isCrowd}` with (topX, topY) the upper left and (bottomX, bottomY)
    the lower right corner as fractions of the image (object detection); `image_details` gives the format and
    the size as AutoML writes it ("640px").
    """
    label: Any
    if task is ExportTask.MULTICLASS:
        if len({tag.casefold() for tag in frame.tags}) != 1:
            raise ValueError(f"Frame {frame.frame_id!r} has {len(frame.tags)} tags; multi-class needs one.")
        label = categories.name(frame.tags[0])
    elif task is ExportTask.MULTILABEL:
        label = list(dict.fromkeys(categories.name(tag) for tag in frame.tags))
    else:
        label = [
            {
                "label": categories.name(box.tag),
                "topX": round(float(box.left), 6),
                "topY": round(float(box.top), 6),
                "bottomX": round(min(float(box.left + box.width), 1.0), 6),
                "bottomY": round(min(float(box.top + box.height), 1.0), 6),
                "isCrowd": 0,
            }
            for box in frame.boxes
        ]
    details = {"format": frame.image_format, "width": f"{frame.width}px", "height": f"{frame.height}px"}
    return {"image_url": image_url, "image_details": details, "label": label}


def mltable_text(jsonl_file_name: str) -> str:
    """The `MLTable` file that makes a folder with the JSONL file an Azure ML data asset of type mltable.

    It reads the JSON lines (UTF-8, a bad line is an error) and converts `image_url` to a stream, which is
    what an AutoML image job's `training_data` and `validation_data` take.
    """
    if not _SAFE_JSONL_NAME.fullmatch(jsonl_file_name):
        raise ValueError(f"{jsonl_file_name!r} is not a plain .jsonl file name.")
    return (
        "paths:\n"
        f"  - file: ./{jsonl_file_name}\n"
        "transformations:\n"
        "  - read_json_lines:\n"
        "      encoding: utf8\n"
        "      invalid_lines: error\n"
        "      include_path_column: false\n"
        "  - convert_column_types:\n"
        "      - columns: image_url\n"
        "        column_type: stream_info\n"
    )


def automl_image_path(file_name: str) -> str:
    """Where AutoML's export puts an image, relative to its root: one place whatever the image's side."""
    return f"images/{file_name}"


def automl_export(
    split: FrameSplit,
    task: ExportTask,
    *,
    datastore: AzureMLDatastore,
    prefix: str = "",
    categories: Categories | None = None,
) -> ExportLayout:
    """AutoML's files for a split, relative to `prefix` in the datastore's container.

    Images go to `images/<file name>` (one place whatever their side, so none moves); each side that has frames
    gets a folder, `train/` and `validation/`, with `<side>_annotations.jsonl` and its `MLTable`: register each
    folder as a data asset of type mltable (`az ml data create --type mltable --path <folder>`) and give them
    to the AutoML job as training and validation data. A side without frames gets no folder.
    """
    frames = _check_writable(split)
    categories = categories or Categories.of(frames)
    root = _checked_prefix(prefix)
    image_paths = {frame.frame_id: automl_image_path(frame.file_name) for frame in frames}
    files: dict[str, bytes] = {}
    for side, members in split.by_side().items():
        if not members:
            continue
        jsonl_name = f"{side.value}_annotations.jsonl"
        lines = b"".join(
            _json_bytes(automl_line(f, task, categories, datastore.uri(_joined(root, image_paths[f.frame_id]))))
            for f in members
        )
        files[f"{side.value}/{jsonl_name}"] = lines
        files[f"{side.value}/MLTable"] = mltable_text(jsonl_name).encode("utf-8")
    return ExportLayout(files, image_paths)


def _joined(root: str, path: str) -> str:
    return f"{root}/{path}" if root else path


# -- COCO --------------------------------------------------------------------------------------------------------


def coco_instances(frames: Sequence[LabelledFrame], task: ExportTask, categories: Categories) -> dict[str, Any]:
    """A COCO instances document for the frames, in their order: image and annotation ids from 1, every category.

    Object detection: an annotation a box, `bbox` [x, y, width, height] in pixels of the image written, `area`
    its width times height, `iscrowd` 0. Classification has no COCO standard; an image's classes are written as
    image-level annotations (as Datumaro's "COCO labels" does): `id`, `image_id` and `category_id` with no
    `bbox`, so `pycocotools` indexes them (`getImgIds(catIds=...)`) and detection tools find no boxes. `info`
    names the task.
    """
    images = []
    annotations: list[dict[str, Any]] = []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "file_name": frame.file_name, "width": frame.width, "height": frame.height})
        if task is ExportTask.OBJECT_DETECTION:
            for box in frame.boxes:
                x, y, width, height = _pixel_box(box, frame.width, frame.height)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": categories.position(box.tag) + 1,
                        "bbox": [x, y, width, height],
                        "area": round(width * height, 2),
                        "iscrowd": 0,
                    }
                )
        else:
            for position in dict.fromkeys(categories.position(tag) for tag in frame.tags):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": position + 1})
    described = "boxes" if task is ExportTask.OBJECT_DETECTION else "image-level labels (annotations without bbox)"
    return {
        "info": {"description": f"Percept Curator export: {described}", "task": task.value},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": position + 1, "name": name} for position, name in enumerate(categories.names)],
    }


def _pixel_box(box: Box, image_width: int, image_height: int) -> tuple[float, float, float, float]:
    x = min(float(box.left * image_width), image_width)
    y = min(float(box.top * image_height), image_height)
    width = min(box.width * image_width, image_width - x)
    height = min(box.height * image_height, image_height - y)
    return (round(x, 2), round(y, 2), round(float(width), 2), round(float(height), 2))


def coco_export(split: FrameSplit, task: ExportTask, *, categories: Categories | None = None) -> ExportLayout:
    """COCO files for a split: `annotations/instances_<side>.json`, images in `images/<side>/`, for each side
    that has frames. Both sides share the categories."""
    frames = _check_writable(split)
    categories = categories or Categories.of(frames)
    files: dict[str, bytes] = {}
    image_paths: dict[str, str] = {}
    for side, members in split.by_side().items():
        if not members:
            continue
        files[f"annotations/instances_{side.value}.json"] = _json_bytes(coco_instances(members, task, categories))
        image_paths |= {frame.frame_id: f"images/{side.value}/{frame.file_name}" for frame in members}
    return ExportLayout(files, image_paths)


# -- YOLO --------------------------------------------------------------------------------------------------------


def yolo_label_text(frame: LabelledFrame, categories: Categories) -> str:
    """A YOLO label file: a line a box, `class centre_x centre_y width height`, the class from 0 and the rest
    fractions of the image; empty for a frame without boxes (an image with no object, which YOLO trains on)."""
    lines = []
    for box in frame.boxes:
        right = min(box.left + box.width, 1.0)
        bottom = min(box.top + box.height, 1.0)
        centre_x, centre_y = (box.left + right) / 2, (box.top + bottom) / 2
        width, height = right - box.left, bottom - box.top
        lines.append(f"{categories.position(box.tag)} {centre_x:.6f} {centre_y:.6f} {width:.6f} {height:.6f}\n")
    return "".join(lines)


def yolo_data_yaml(categories: Categories, *, has_validation: bool) -> str:
    """Ultralytics' `data.yaml`: image folders relative to the file's own folder (no `path` key, so the folder of
    data.yaml is the dataset's root), and the class names by index. Without validation frames, `val` names the
    training images (Ultralytics requires a `val` entry)."""
    validation = "images/validation" if has_validation else "images/train"
    names = "".join(f"  {position}: {_yaml_string(name)}\n" for position, name in enumerate(categories.names))
    return (
        "# YOLO dataset written by Percept Curator\n"
        "train: images/train\n"
        f"val: {validation}\n"
        f"nc: {len(categories.names)}\n"
        f"names:{' {}' if not categories.names else ''}\n"
        f"{names}"
    )


def yolo_export(split: FrameSplit, task: ExportTask, *, categories: Categories | None = None) -> ExportLayout:
    """YOLO files for an object-detection split: `images/<side>/<file>` with `labels/<side>/<stem>.txt` beside
    (where Ultralytics looks for them), `data.yaml`, and `classes.txt` (a class a line, for Darknet tools).

    YOLO label files hold boxes: a classification project exports to Azure ML or COCO instead.
    """
    if task is not ExportTask.OBJECT_DETECTION:
        raise ValueError("YOLO label files hold boxes: export a classification project to Azure ML or COCO.")
    frames = _check_writable(split)
    categories = categories or Categories.of(frames)
    files: dict[str, bytes] = {}
    image_paths: dict[str, str] = {}
    for side, members in split.by_side().items():
        for frame in members:
            image_paths[frame.frame_id] = f"images/{side.value}/{frame.file_name}"
            files[f"labels/{side.value}/{frame.stem}.txt"] = yolo_label_text(frame, categories).encode("ascii")
    files["data.yaml"] = yolo_data_yaml(categories, has_validation=bool(split.validation)).encode("utf-8")
    files["classes.txt"] = "".join(f"{name}\n" for name in categories.names).encode("utf-8")
    return ExportLayout(files, image_paths)


__all__ = [
    "AzureMLDatastore",
    "Categories",
    "ExportLayout",
    "ExportTask",
    "FrameSplit",
    "LabelledFrame",
    "LeftOut",
    "Split",
    "automl_export",
    "automl_line",
    "coco_export",
    "coco_instances",
    "export_file_name",
    "exportable",
    "frame_id_of",
    "is_safe_file_name",
    "mltable_text",
    "split_frames",
    "stratum_of",
    "task_of_project",
    "yolo_data_yaml",
    "yolo_export",
    "yolo_label_text",
]
