"""State and service rules of the Custom Vision Training emulator: projects, tags, images, regions, iterations.

Everything lives in SQLite (``:memory:`` for tests, a WAL-mode file under ``state_dir`` for ``make run``);
image bytes go to a blob store beside it. One lock serialises all access, so the store is safe to call from
the server's worker threads. Methods raise :class:`CVError` with the service's error code when a rule is
broken; the HTTP layer turns that into the wire error body.

The limits below come from the service documentation ("Limits and quotas") and the v3.4-preview OpenAPI
document; the comments say where each number comes from.

Predictions (QuickTestImage, SuggestTagsAndRegions) come from a small nearest-neighbour model, not a network:
TrainProject snapshots, for every image of the training set, an 8x8 RGB thumbnail (192 values in 0-1) with
the image's trained tags (and regions, for detection), and keeps it with the iteration in SQLite, so an
iteration predicts from what it was trained on whatever is uploaded or deleted later. Predicting a frame
measures its RMS pixel distance ``d`` to every example; the examples' tags vote with the weights
``exp(-(d / FEATURE_SCALE)^2)`` and the vote is trusted as far as the nearest example is close: probability =
closeness * vote + (1 - closeness) / number of trained tags. An exact or near copy of a trained frame gets its
tags at close to 1; a frame far from everything gets every tag near 1 / number of tags. Detection answers the
nearest example's boxes with its closeness as the probability. The same input always gives the same answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from devstack.profiles import AzureProfile, get_profile

# --- limits ------------------------------------------------------------------------------------------

MAX_IMAGE_BYTES = 6 * 1024 * 1024  # spec: "Supports images up to 6MB"
MAX_IMAGE_SIDE = 10_240  # Limits and quotas: max image height/width
MAX_ASPECT_RATIO = 25.0  # Limits and quotas: "should not be larger than 25:1"
MAX_BATCH_IMAGES = 64  # spec: "Limited to 64 images and 20 tags per batch"; multipart: 64 files
MAX_BATCH_TAG_IDS = 20
MAX_TAGS_PER_IMAGE = 100  # Limits and quotas: max tags per image (classification)
MAX_REGIONS_PER_IMAGE = 300  # Limits and quotas: max regions per image (object detection)
MAX_IMAGE_TAG_BATCH = 128  # CreateImageTags: "Limited to 128 tags per batch"
MAX_REGION_BATCH = 64  # CreateImageRegions: "There is a limit of 64 entries in the batch"
MAX_IMAGE_ID_BATCH = 256  # GetImagesByIds / DeleteImages: "Limited to 256"
MAX_METADATA_IMAGE_BATCH = 64  # UpdateImageMetadata: "There is a limit of 64 images"
MAX_METADATA_PAIRS = 10  # v3.4-preview: "Limited to 10 key-value pairs per image"
MAX_METADATA_KEY = 128  # v3.4-preview: "The length of key is limited to 128"
MAX_METADATA_VALUE = 256  # v3.4-preview: "The length of value is limited to 256"
MAX_TAKE = 256  # GetImages: "Defaults to 50, limited to 256"
MAX_ITERATIONS_PER_PROJECT = 20  # Limits and quotas (both tiers)
MIN_IMAGES_PER_TAG_CLASSIFICATION = 5  # Limits and quotas: min labeled images per tag
MIN_IMAGES_PER_TAG_DETECTION = 15
# The service documents no tag-name length. 256 matches the longest string the v3.4-preview API bounds
# elsewhere (a metadata value) and is far beyond any real label, so it only rejects garbage.
MAX_TAG_NAME = 256
# Coordinates arrive as JSON doubles but the service stores float32; 1e-6 absorbs both float32 rounding
# (~6e-8) and client arithmetic such as x/w + w/w == 1.0000000000000002.
REGION_TOLERANCE = 1e-6

MAX_SUGGESTION_IMAGE_BATCH = 64  # SuggestTagsAndRegions: "There is a limit of 64 images in the batch"
SUGGESTION_RETENTION_SECONDS = 30 * 24 * 3600  # Suggested tags docs: results are kept 30 days, free to re-read
DEFAULT_SUGGESTED_TAKE = 50  # emulator choice: QuerySuggestedImages without maxCount (the spec names no default)

THUMBNAIL_SIDE = 256  # emulator choice: the service does not document its thumbnail size
RESIZED_SIDE = 1024  # emulator choice for resizedImageUri

TAG_TYPES = ("Regular", "Negative", "GeneralProduct")
CLASSIFICATION_TYPES = ("Multiclass", "Multilabel")
EXPORT_PLATFORMS = ("CoreML", "TensorFlow", "DockerFile", "ONNX", "VAIDK", "OpenVino")
TRAINING_TYPES = ("Regular", "Advanced")
SUGGESTION_SORTS = ("UncertaintyAscending", "UncertaintyDescending")

# The prediction model (emulator choices, see the module docstring).
FEATURE_SIDE = 8  # frames are compared as FEATURE_SIDE x FEATURE_SIDE RGB thumbnails
FEATURE_SCALE = 0.1  # RMS pixel distance (0-1) at which an example's weight falls to 1/e
NEIGHBOURS = 7  # how many nearest examples vote


@dataclass(frozen=True)
class TierLimits:
    """Quotas that differ between the free (F0) and standard (S0) tiers."""

    max_projects: int
    max_images_per_project: int
    max_tags_per_project: int

    @classmethod
    def for_tier(cls, tier: str) -> TierLimits:
        if tier.upper() == "F0":
            return cls(max_projects=2, max_images_per_project=5_000, max_tags_per_project=50)
        if tier.upper() == "S0":
            return cls(max_projects=100, max_images_per_project=100_000, max_tags_per_project=500)
        raise ValueError(f"unknown tier {tier!r}: use F0 or S0")


# The whole-request refusal users report for a batch of images already in the project (#17734); the code is
# the one the emulator uses for every "No valid image files" answer (no public capture names it).
DUPLICATE_ONLY_BATCH = ("BadRequestImageBatch", "No valid image files")


class CVError(Exception):
    """A service error: HTTP status plus a CustomVisionErrorCodes value and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class DuplicateOnlyBatch(CVError):
    """A batch refused whole because every image in it is already in the project (strict profile)."""

    def __init__(self, image_ids: Sequence[str]) -> None:
        super().__init__(400, *DUPLICATE_ONLY_BATCH)
        self.image_ids = list(image_ids)


def bad_request(code: str, message: str) -> CVError:
    return CVError(400, code, message)


def not_found(code: str, message: str) -> CVError:
    return CVError(404, code, message)


# --- domains -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    id: str
    name: str
    type: str  # "Classification" or "ObjectDetection"
    exportable: bool
    description: str
    estimated_model_size_mb: int | None = None
    enabled: bool = True

    @property
    def is_detection(self) -> bool:
        return self.type == "ObjectDetection"

    @property
    def exportable_platforms(self) -> list[str]:
        return list(EXPORT_PLATFORMS) if self.exportable else []


# Classification ids are the ones in the GetDomains example; the detection ids are the public ones from
# the "Select a domain" documentation page.
DOMAINS: tuple[Domain, ...] = (
    Domain(
        "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31",
        "General",
        "Classification",
        False,
        "Optimized for a broad range of image classification tasks.",
    ),
    Domain(
        "c151d5b5-dd07-472a-acc8-15d29dea8518",
        "Food",
        "Classification",
        False,
        "Optimized for photographs of dishes as you would see them on a restaurant menu.",
    ),
    Domain(
        "ca455789-012d-4b50-9fec-5bb63841c793",
        "Landmarks",
        "Classification",
        False,
        "Optimized for recognizable landmarks, both natural and artificial.",
    ),
    Domain(
        "b30a91ae-e3c1-4f73-a81e-c270bff27c39",
        "Retail",
        "Classification",
        False,
        "Optimized for images that are found in a shopping catalog or shopping website.",
    ),
    Domain(
        "45badf75-3591-4f26-a705-45678d3e9f5f",
        "Adult",
        "Classification",
        False,
        "Optimized to better define adult content and non-adult content.",
    ),
    Domain(
        "0732100f-1a38-4e49-a514-c9b44c697ab5",
        "General (compact)",
        "Classification",
        True,
        "Optimized for the constraints of real-time classification on edge devices.",
        6,
    ),
    Domain(
        "b5cfd229-2ac7-4b2b-8d0a-2b0661344894",
        "Landmarks (compact)",
        "Classification",
        True,
        "Optimized for the constraints of real-time landmark classification on edge devices.",
        6,
    ),
    Domain(
        "6b4faeda-8396-481b-9f8b-177b9fa3097f",
        "Retail (compact)",
        "Classification",
        True,
        "Optimized for the constraints of real-time retail classification on edge devices.",
        6,
    ),
    Domain(
        "da2e3a8a-40a5-4171-82f4-58522f70fbc1",
        "General",
        "ObjectDetection",
        False,
        "Optimized for a broad range of object detection tasks.",
    ),
    Domain(
        "9c616dff-2e7d-ea11-af59-1866da359ce6",
        "General [A1]",
        "ObjectDetection",
        False,
        "Optimized for better accuracy with comparable inference time as General domain.",
    ),
    Domain(
        "1d8ffafe-ec40-4fb2-8f90-72b3b6cecea4",
        "Logo",
        "ObjectDetection",
        False,
        "Optimized for finding brand logos in images.",
    ),
    Domain(
        "3780a898-81c3-4516-81ae-3a139614e1f3",
        "Products on Shelves",
        "ObjectDetection",
        False,
        "Optimized for detecting and classifying products on shelves.",
    ),
    Domain(
        "a27d5ca5-bb19-49d8-a70a-fec086c47f5b",
        "General (compact)",
        "ObjectDetection",
        True,
        "Optimized for the constraints of real-time object detection on edge devices.",
        8,
    ),
)
DOMAINS_BY_ID = {d.id: d for d in DOMAINS}
DEFAULT_DOMAIN_ID = "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31"  # CreateProject: "Defaults to General"
GENERAL_DETECTION_DOMAIN_ID = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"


# --- records -----------------------------------------------------------------------------------------


@dataclass
class Project:
    id: str
    name: str
    description: str | None
    domain_id: str
    classification_type: str | None
    target_export_platforms: list[str]
    export_model_container_uri: str | None
    notification_queue_uri: str | None
    created: float
    last_modified: float
    data_version: int
    thumbnail_image_id: str | None = None

    @property
    def domain(self) -> Domain:
        return DOMAINS_BY_ID[self.domain_id]

    @property
    def is_detection(self) -> bool:
        return self.domain.is_detection


@dataclass
class Tag:
    id: str
    project_id: str
    name: str
    description: str | None
    type: str
    created: float
    image_count: int = 0


@dataclass
class ImageTag:
    tag_id: str
    tag_name: str
    created: float


@dataclass
class ImageRegion:
    region_id: str
    image_id: str
    tag_id: str
    tag_name: str
    left: float
    top: float
    width: float
    height: float
    created: float


@dataclass
class StoredImage:
    id: str
    project_id: str
    created: float
    width: int
    height: int
    format: str  # "jpg", "png", "bmp" or "gif"
    size: int
    sha256: str
    metadata: dict[str, str]
    tags: list[ImageTag] = field(default_factory=list)
    regions: list[ImageRegion] = field(default_factory=list)


@dataclass
class Iteration:
    id: str
    project_id: str
    name: str
    created: float
    last_modified: float
    completes_at: float  # training is modelled as a deadline, so no background thread is needed
    training_type: str
    reserved_budget_in_hours: int
    domain_id: str
    classification_type: str | None
    data_version: int
    publish_name: str
    prediction_resource_id: str

    def is_completed(self, now: float) -> bool:
        return now >= self.completes_at

    def status(self, now: float) -> str:
        return "Completed" if self.is_completed(now) else "Training"


@dataclass
class RegionSpec:
    """A region as a client sends it (tag and normalised box)."""

    tag_id: str
    left: float
    top: float
    width: float
    height: float


@dataclass
class NewImage:
    """One image of a create batch, already extracted from the wire format."""

    source_url: str
    data: bytes | None  # None when the entry carried no usable contents
    tag_ids: list[str] = field(default_factory=list)
    regions: list[RegionSpec] = field(default_factory=list)


@dataclass
class CreateResult:
    source_url: str
    status: str  # an ImageCreateStatus value
    image: StoredImage | None


@dataclass
class RegionCreateOutcome:
    created: list[ImageRegion]
    duplicated: list[tuple[str, RegionSpec]]
    exceeded: list[tuple[str, RegionSpec]]


@dataclass
class MetadataUpdateOutcome:
    image_id: str
    status: str  # an ImageMetadataUpdateStatus value
    metadata: dict[str, str] | None


@dataclass(frozen=True)
class TagPrediction:
    """One entry of a prediction: a trained tag, its probability and, for detection, a normalised box."""

    probability: float
    tag_id: str
    tag_name: str
    tag_type: str
    box: tuple[float, float, float, float] | None = None  # left, top, width, height


@dataclass(frozen=True)
class ImagePrediction:
    """What an iteration predicted for one frame (a quick test or a suggestion for a project image)."""

    id: str  # the prediction id; for a suggestion, the id of the image it is about
    project_id: str
    iteration_id: str
    domain_id: str
    created: float
    predictions: list[TagPrediction]
    uncertainty: float  # entropy of the predicted probabilities (0 = sure)


@dataclass(frozen=True)
class SuggestionOutcome:
    """SuggestTagsAndRegions: the suggestions in the order asked and how many were newly predicted (billed)."""

    suggestions: list[ImagePrediction]
    predicted: int


@dataclass(frozen=True)
class SuggestedImage:
    image: StoredImage
    suggestion: ImagePrediction


# --- image probing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "gif": "image/gif"}
_PIL_FORMATS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif"}
FULL_DECODE_PIXELS = 25_000_000  # above this a full decode costs more memory than a check is worth


def sniff_format(data: bytes) -> str | None:
    """The format by magic number, so a .jpg name on PNG bytes or a text file is judged by content."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def probe_image(data: bytes) -> ImageInfo | None:
    """Format and size of an accepted image, or None when it is not a decodable jpg/png/bmp/gif."""
    fmt = sniff_format(data)
    if fmt is None:
        return None
    try:
        with warnings.catch_warnings():
            # A 10,240 x 10,240 image is legal here but trips Pillow's decompression-bomb warning.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as img:
                pil_format = img.format
                width, height = img.size
                img.verify()  # structure and checksums (PNG CRCs)
            # verify() does not read JPEG scan data, so truncated files pass it; decoding catches them.
            # JPEGs decode at 1/8 scale (cheap, still reads every byte); huge PNG/GIFs keep verify() only.
            with PILImage.open(io.BytesIO(data)) as img:
                if pil_format == "JPEG":
                    img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    img.load()
                elif width * height <= FULL_DECODE_PIXELS:
                    img.load()
    except Exception:
        return None
    if _PIL_FORMATS.get(pil_format or "") != fmt or width <= 0 or height <= 0:
        return None
    return ImageInfo(fmt, width, height)


def dimensions_ok(width: int, height: int, max_side: int = MAX_IMAGE_SIDE) -> bool:
    if max(width, height) > max_side:
        return False
    return max(width, height) / min(width, height) <= MAX_ASPECT_RATIO


def render_derived(data: bytes, max_side: int) -> bytes:
    """A JPEG no larger than max_side on either side (thumbnails and the resized training image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(io.BytesIO(data)) as img:
            img.seek(0)
            frame = img.convert("RGB")
    frame.thumbnail((max_side, max_side))
    out = io.BytesIO()
    frame.save(out, format="JPEG", quality=85)
    return out.getvalue()


# --- the prediction model ----------------------------------------------------------------------------

FEATURE_LENGTH = FEATURE_SIDE * FEATURE_SIDE * 3


def image_features(data: bytes) -> np.ndarray:
    """A frame as the model sees it: a FEATURE_SIDE x FEATURE_SIDE RGB thumbnail, values 0-1, flattened."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(io.BytesIO(data)) as img:
            img.draft("RGB", (FEATURE_SIDE * 4, FEATURE_SIDE * 4))  # JPEG: decode at a reduced scale, much faster
            small = img.convert("RGB").resize((FEATURE_SIDE, FEATURE_SIDE), PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def entropy(probabilities: Sequence[float]) -> float:
    """Shannon entropy (nats) of the probabilities normalised to sum 1; 0 for none."""
    total = sum(probabilities)
    if total <= 0:
        return 0.0
    return max(0.0, -sum((p / total) * math.log(p / total) for p in probabilities if p > 0))


def binary_entropy(probability: float) -> float:
    return max(0.0, -sum(p * math.log(p) for p in (probability, 1.0 - probability) if p > 0))


@dataclass(frozen=True)
class TrainedTag:
    id: str
    name: str
    type: str


@dataclass(frozen=True)
class TrainedExample:
    """The labels of one training image: its trained tags and, for detection, its boxes."""

    tag_ids: tuple[str, ...]
    regions: tuple[tuple[str, float, float, float, float], ...] = ()  # tag id, left, top, width, height


@dataclass(frozen=True)
class TrainedModel:
    """What an iteration learnt: its trained tags and a feature row plus labels per training image."""

    tags: tuple[TrainedTag, ...]
    detection: bool
    features: np.ndarray  # shape (len(examples), FEATURE_LENGTH), float32
    examples: tuple[TrainedExample, ...]

    def predict(self, features: np.ndarray) -> tuple[list[TagPrediction], float]:
        """(predictions, most probable first; their uncertainty) for a frame's features; see the module docstring."""
        if not self.examples or not self.tags:
            return [], 0.0
        distances = np.sqrt(np.mean((self.features - features) ** 2, axis=1))
        nearest = np.argsort(distances, kind="stable")[:NEIGHBOURS]
        logits = -((distances[nearest] / FEATURE_SCALE) ** 2)
        closeness = float(np.exp(logits[0]))
        weights = np.exp(logits - logits[0])
        weights /= weights.sum()
        tags = {t.id: t for t in self.tags}
        if self.detection:
            example = self.examples[int(nearest[0])]
            predictions = [
                TagPrediction(round(closeness, 8), tag_id, tags[tag_id].name, tags[tag_id].type, (left, top, w, h))
                for tag_id, left, top, w, h in example.regions
                if tag_id in tags
            ]
            uncertainty = sum(binary_entropy(p.probability) for p in predictions) / max(1, len(predictions))
            return predictions, uncertainty
        vote = dict.fromkeys(tags, 0.0)
        for weight, index in zip(weights, nearest, strict=True):
            for tag_id in self.examples[int(index)].tag_ids:
                vote[tag_id] += float(weight)
        floor = (1.0 - closeness) / len(tags)
        predictions = [
            TagPrediction(round(min(1.0, closeness * vote[t.id] + floor), 8), t.id, t.name, t.type) for t in self.tags
        ]
        predictions.sort(key=lambda p: -p.probability)
        return predictions, entropy([p.probability for p in predictions])

    def to_row(self) -> tuple[str, str, bytes]:
        tags = json.dumps([[t.id, t.name, t.type] for t in self.tags])
        labels = json.dumps({"detection": self.detection, "examples": [[e.tag_ids, e.regions] for e in self.examples]})
        return tags, labels, np.ascontiguousarray(self.features, dtype=np.float32).tobytes()

    @classmethod
    def from_row(cls, tags: str, labels: str, features: bytes) -> TrainedModel:
        decoded = json.loads(labels)
        examples = tuple(
            TrainedExample(tuple(tag_ids), tuple(tuple(r) for r in regions)) for tag_ids, regions in decoded["examples"]
        )
        return cls(
            tags=tuple(TrainedTag(*t) for t in json.loads(tags)),
            detection=decoded["detection"],
            features=np.frombuffer(features, dtype=np.float32).reshape(len(examples), FEATURE_LENGTH),
            examples=examples,
        )


def predictions_to_json(predictions: Sequence[TagPrediction]) -> str:
    return json.dumps([[p.probability, p.tag_id, p.tag_name, p.tag_type, p.box] for p in predictions])


def predictions_from_json(text: str) -> list[TagPrediction]:
    return [
        TagPrediction(probability, tag_id, name, tag_type, tuple(box) if box else None)
        for probability, tag_id, name, tag_type, box in json.loads(text)
    ]


# QuickTestImage refuses a frame whole, with the error codes of the upload rules it breaks.
QUICK_TEST_IMAGE_ERRORS = {
    "ErrorSource": ("BadRequestImageStream", "No image data was sent."),
    "ErrorImageSize": ("BadRequestImageSizeBytes", "The image is larger than 6 MB."),
    "ErrorImageFormat": ("BadRequestImageFormat", "The image is not a JPEG, PNG, BMP or GIF."),
    "ErrorImageDimensions": ("BadRequestImageDimensions", "The image dimensions are out of bounds."),
}


# --- blob storage ------------------------------------------------------------------------------------


class BlobStore:
    """Image bytes by (image id, kind); kinds are "original", "thumbnail" and "resized"."""

    def put(self, image_id: str, kind: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, image_id: str, kind: str) -> bytes | None:
        raise NotImplementedError

    def delete(self, image_id: str) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._blobs: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def put(self, image_id: str, kind: str, data: bytes) -> None:
        with self._lock:
            self._blobs[(image_id, kind)] = data

    def get(self, image_id: str, kind: str) -> bytes | None:
        with self._lock:
            return self._blobs.get((image_id, kind))

    def delete(self, image_id: str) -> None:
        with self._lock:
            for key in [k for k in self._blobs if k[0] == image_id]:
                del self._blobs[key]

    def clear(self) -> None:
        with self._lock:
            self._blobs.clear()


class DirectoryBlobStore(BlobStore):
    """One file per blob under ``root/<id[:2]>/<id>/<kind>``; writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, image_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f-]{36}", image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self._root / image_id[:2] / image_id

    def put(self, image_id: str, kind: str, data: bytes) -> None:
        folder = self._dir(image_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{kind}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / kind)

    def get(self, image_id: str, kind: str) -> bytes | None:
        try:
            return (self._dir(image_id) / kind).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def delete(self, image_id: str) -> None:
        folder = self._dir(image_id)
        if folder.is_dir():
            for child in folder.iterdir():
                child.unlink(missing_ok=True)
            folder.rmdir()

    def clear(self) -> None:
        for shard in list(self._root.iterdir()):
            if shard.is_dir():
                for folder in list(shard.iterdir()):
                    self.delete(folder.name)
                with contextlib.suppress(OSError):
                    shard.rmdir()


# --- the store ---------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects(
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, name TEXT NOT NULL, name_key TEXT NOT NULL,
    description TEXT, domain_id TEXT NOT NULL, classification_type TEXT,
    target_export_platforms TEXT NOT NULL, export_model_container_uri TEXT, notification_queue_uri TEXT,
    created REAL NOT NULL, last_modified REAL NOT NULL, data_version INTEGER NOT NULL DEFAULT 0,
    iteration_counter INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tags(
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, name TEXT NOT NULL, name_key TEXT NOT NULL, description TEXT,
    type TEXT NOT NULL, created REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS tags_by_name ON tags(project_id, name_key);
CREATE TABLE IF NOT EXISTS images(
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, created REAL NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    format TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS images_by_hash ON images(project_id, sha256);
CREATE INDEX IF NOT EXISTS images_by_seq ON images(project_id, seq);
CREATE TABLE IF NOT EXISTS image_tags(
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id TEXT NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    created REAL NOT NULL, via_region INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(image_id, tag_id));
CREATE INDEX IF NOT EXISTS image_tags_by_tag ON image_tags(tag_id);
CREATE TABLE IF NOT EXISTS regions(
    id TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id TEXT NOT NULL REFERENCES tags(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS regions_by_image ON regions(image_id);
CREATE TABLE IF NOT EXISTS iterations(
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, name TEXT NOT NULL, name_key TEXT NOT NULL, created REAL NOT NULL,
    last_modified REAL NOT NULL, completes_at REAL NOT NULL, training_type TEXT NOT NULL,
    reserved_budget_in_hours INTEGER NOT NULL, domain_id TEXT NOT NULL, classification_type TEXT,
    data_version INTEGER NOT NULL, publish_name TEXT NOT NULL DEFAULT '',
    prediction_resource_id TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS iteration_models(
    iteration_id TEXT PRIMARY KEY REFERENCES iterations(id) ON DELETE CASCADE,
    tags TEXT NOT NULL, labels TEXT NOT NULL, features BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS image_features(
    image_id TEXT PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE, features BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS suggestions(
    iteration_id TEXT NOT NULL REFERENCES iterations(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    created REAL NOT NULL, predictions TEXT NOT NULL, uncertainty REAL NOT NULL,
    PRIMARY KEY(iteration_id, image_id));
CREATE TABLE IF NOT EXISTS predictions(
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    iteration_id TEXT NOT NULL, created REAL NOT NULL, predictions TEXT NOT NULL);
"""

MetadataPredicate = Callable[[dict[str, str]], bool]


def new_id() -> str:
    return str(uuid.uuid4())


def name_key(name: str) -> str:
    """Names are unique case-insensitively and ignoring surrounding blanks."""
    return name.strip().casefold()


def _placeholders(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class CustomVisionStore:
    """All emulator state. Thread-safe: every public method holds one re-entrant lock."""

    def __init__(
        self,
        *,
        limits: TierLimits,
        clock: Callable[[], float],
        training_seconds: float,
        state_dir: str | os.PathLike[str] | None = None,
        profile: AzureProfile | str | None = None,
    ) -> None:
        self.limits = limits
        self.profile = get_profile(profile)
        self.training_seconds = training_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._seq: dict[str, int] = {}
        if state_dir is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self.blobs: BlobStore = MemoryBlobStore()
        else:
            root = Path(state_dir)
            root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(root / "customvision.sqlite", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.blobs = DirectoryBlobStore(root / "blobs")
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    # -- plumbing --

    def now(self) -> float:
        return self._clock()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """Lock plus an explicit transaction: a rule broken half-way leaves nothing behind."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _next_seq(self, table: str) -> int:
        """Insertion order (ids are random GUIDs); kept in memory since this process owns the database."""
        if table not in self._seq:
            row = self._db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()  # noqa: S608
            self._seq[table] = int(row[0])
        self._seq[table] += 1
        return self._seq[table]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Drop every project, image and blob."""
        with self._tx() as db:
            tables = ("suggestions", "predictions", "iteration_models", "image_features", "regions", "image_tags")
            for table in (*tables, "images", "iterations", "tags", "projects"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608
        self.blobs.clear()

    # -- projects --

    def _project_from_row(self, row: sqlite3.Row) -> Project:
        thumb = self._db.execute(
            "SELECT id FROM images WHERE project_id=? ORDER BY seq DESC LIMIT 1", (row["id"],)
        ).fetchone()
        return Project(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            domain_id=row["domain_id"],
            classification_type=row["classification_type"],
            target_export_platforms=json.loads(row["target_export_platforms"]),
            export_model_container_uri=row["export_model_container_uri"],
            notification_queue_uri=row["notification_queue_uri"],
            created=row["created"],
            last_modified=row["last_modified"],
            data_version=row["data_version"],
            thumbnail_image_id=thumb["id"] if thumb else None,
        )

    def list_projects(self) -> list[Project]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM projects ORDER BY seq").fetchall()
            return [self._project_from_row(r) for r in rows]

    def get_project(self, project_id: str) -> Project:
        with self._lock:
            row = self._db.execute("SELECT * FROM projects WHERE id=?", (project_id,)).fetchone()
            if row is None:
                raise not_found("NotFoundProject", f"Project {project_id} not found.")
            return self._project_from_row(row)

    def _require_project(self, project_id: str) -> Project:
        return self.get_project(project_id)

    @staticmethod
    def _check_project_name(name: str | None) -> str:
        if name is None or not name.strip():
            raise bad_request("BadRequestProjectName", "The project name must not be empty.")
        return name

    @staticmethod
    def _resolve_domain(domain_id: str | None) -> Domain:
        domain = DOMAINS_BY_ID.get((domain_id or DEFAULT_DOMAIN_ID).lower())
        if domain is None:
            raise bad_request("BadRequestProjectUnknownDomain", f"Unknown domain {domain_id}.")
        return domain

    @staticmethod
    def _check_platforms(platforms: Iterable[str]) -> list[str]:
        out = []
        for platform in platforms:
            match = next((p for p in EXPORT_PLATFORMS if p.lower() == platform.lower()), None)
            if match is None:
                raise bad_request(
                    "BadRequestProjectUnsupportedExportPlatform", f"Unsupported export platform {platform}."
                )
            out.append(match)
        return out

    @staticmethod
    def _classification_for(domain: Domain, requested: str | None) -> str | None:
        if domain.is_detection:
            return None  # the service ignores the classifier type of a detection project
        if requested is None:
            return "Multiclass"
        match = next((c for c in CLASSIFICATION_TYPES if c.lower() == requested.lower()), None)
        if match is None:
            raise bad_request("BadRequestProjectUnknownClassification", f"Unknown classification type {requested}.")
        return match

    def create_project(
        self,
        *,
        name: str | None,
        description: str | None = None,
        domain_id: str | None = None,
        classification_type: str | None = None,
        target_export_platforms: Sequence[str] = (),
        export_model_container_uri: str | None = None,
        notification_queue_uri: str | None = None,
    ) -> Project:
        name = self._check_project_name(name)
        domain = self._resolve_domain(domain_id)
        classification = self._classification_for(domain, classification_type)
        platforms = self._check_platforms(target_export_platforms)
        with self._tx() as db:
            count = db.execute("SELECT COUNT(*) FROM projects").fetchone()[0]
            if count >= self.limits.max_projects:
                raise bad_request(
                    "BadRequestExceedProjectLimit",
                    f"Exceeded the project limit of {self.limits.max_projects} for this subscription.",
                )
            if db.execute("SELECT 1 FROM projects WHERE name_key=?", (name_key(name),)).fetchone():
                raise bad_request("BadRequestProjectNameNotUnique", f"A project named '{name}' already exists.")
            project_id = new_id()
            now = self.now()
            db.execute(
                "INSERT INTO projects(id, seq, name, name_key, description, domain_id, classification_type,"
                " target_export_platforms, export_model_container_uri, notification_queue_uri, created,"
                " last_modified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    project_id,
                    self._next_seq("projects"),
                    name,
                    name_key(name),
                    description,
                    domain.id,
                    classification,
                    json.dumps(platforms),
                    export_model_container_uri,
                    notification_queue_uri,
                    now,
                    now,
                ),
            )
            return self.get_project(project_id)

    def update_project(
        self,
        project_id: str,
        *,
        name: str | None,
        description: str | None,
        domain_id: str | None,
        classification_type: str | None,
        target_export_platforms: Sequence[str] | None,
    ) -> Project:
        with self._tx() as db:
            project = self._require_project(project_id)
            new_name = self._check_project_name(name) if name is not None else project.name
            clash = db.execute(
                "SELECT 1 FROM projects WHERE name_key=? AND id<>?", (name_key(new_name), project_id)
            ).fetchone()
            if clash:
                raise bad_request("BadRequestProjectNameNotUnique", f"A project named '{new_name}' already exists.")
            domain = self._resolve_domain(domain_id) if domain_id else project.domain
            if domain.is_detection != project.domain.is_detection:
                raise bad_request(
                    "BadRequestProjectUnsupportedDomainTypeChange",
                    "Cannot change between classification and object detection domains.",
                )
            classification = self._classification_for(domain, classification_type or project.classification_type)
            platforms = (
                self._check_platforms(target_export_platforms)
                if target_export_platforms is not None
                else project.target_export_platforms
            )
            # Changing what the model learns (domain, classifier) makes the next training necessary.
            changed = domain.id != project.domain_id or classification != project.classification_type
            db.execute(
                "UPDATE projects SET name=?, name_key=?, description=?, domain_id=?, classification_type=?,"
                " target_export_platforms=?, last_modified=?, data_version=data_version+? WHERE id=?",
                (
                    new_name,
                    name_key(new_name),
                    description if description is not None else project.description,
                    domain.id,
                    classification,
                    json.dumps(platforms),
                    self.now(),
                    int(changed),
                    project_id,
                ),
            )
            return self.get_project(project_id)

    def delete_project(self, project_id: str) -> None:
        with self._tx() as db:
            self._require_project(project_id)
            image_ids = [r[0] for r in db.execute("SELECT id FROM images WHERE project_id=?", (project_id,))]
            db.execute("DELETE FROM projects WHERE id=?", (project_id,))
        for image_id in image_ids:
            self.blobs.delete(image_id)

    def _touch(self, project_id: str) -> None:
        """Record a change of the training data (images, tags, regions): the next training is needed."""
        self._db.execute(
            "UPDATE projects SET data_version=data_version+1, last_modified=? WHERE id=?",
            (self.now(), project_id),
        )

    # -- tags --

    def _tags(self, project_id: str) -> dict[str, Tag]:
        counts = dict(
            self._db.execute(
                "SELECT it.tag_id, COUNT(*) FROM image_tags it JOIN tags t ON t.id=it.tag_id"
                " WHERE t.project_id=? GROUP BY it.tag_id",
                (project_id,),
            ).fetchall()
        )
        rows = self._db.execute("SELECT * FROM tags WHERE project_id=? ORDER BY seq", (project_id,)).fetchall()
        return {
            r["id"]: Tag(
                r["id"], project_id, r["name"], r["description"], r["type"], r["created"], counts.get(r["id"], 0)
            )
            for r in rows
        }

    def list_tags(self, project_id: str) -> list[Tag]:
        with self._lock:
            self._require_project(project_id)
            return list(self._tags(project_id).values())

    def get_tag(self, project_id: str, tag_id: str) -> Tag:
        with self._lock:
            self._require_project(project_id)
            tag = self._tags(project_id).get(tag_id)
            if tag is None:
                raise not_found("NotFoundTag", f"Tag {tag_id} not found.")
            return tag

    @staticmethod
    def _check_tag_name(name: str | None) -> str:
        if name is None or not name.strip():
            raise bad_request("BadRequestTagName", "The tag name must not be empty.")
        if len(name) > MAX_TAG_NAME:
            raise bad_request("BadRequestTagName", f"The tag name is longer than {MAX_TAG_NAME} characters.")
        return name

    @staticmethod
    def _check_tag_type(tag_type: str | None) -> str:
        if tag_type is None:
            return "Regular"
        match = next((t for t in TAG_TYPES if t.lower() == tag_type.lower()), None)
        if match is None:
            raise bad_request("BadRequestTagType", f"Unknown tag type {tag_type}.")
        return match

    @staticmethod
    def _check_special_tag(tags: Iterable[Tag], tag_type: str, except_id: str | None = None) -> None:
        """A project has at most one Negative and one GeneralProduct tag."""
        if tag_type == "Regular":
            return
        if any(t.type == tag_type and t.id != except_id for t in tags):
            code = "BadRequestMultipleNegativeTag" if tag_type == "Negative" else "BadRequestMultipleGeneralProductTag"
            raise bad_request(code, f"The project already has a {tag_type} tag.")

    def create_tag(
        self, project_id: str, *, name: str | None, description: str | None = None, tag_type: str | None = None
    ) -> Tag:
        name = self._check_tag_name(name)
        tag_type = self._check_tag_type(tag_type)
        with self._tx() as db:
            self._require_project(project_id)
            tags = self._tags(project_id)
            if len(tags) >= self.limits.max_tags_per_project:
                raise bad_request(
                    "BadRequestExceedTagPerProjectLimit",
                    f"Exceeded the limit of {self.limits.max_tags_per_project} tags per project.",
                )
            if any(name_key(t.name) == name_key(name) for t in tags.values()):
                raise bad_request("BadRequestTagNameNotUnique", f"A tag named '{name}' already exists.")
            self._check_special_tag(tags.values(), tag_type)
            tag_id = new_id()
            db.execute(
                "INSERT INTO tags(id, project_id, seq, name, name_key, description, type, created)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (tag_id, project_id, self._next_seq("tags"), name, name_key(name), description, tag_type, self.now()),
            )
            return self._tags(project_id)[tag_id]

    def update_tag(
        self, project_id: str, tag_id: str, *, name: str | None, description: str | None, tag_type: str | None
    ) -> Tag:
        with self._tx() as db:
            tag = self.get_tag(project_id, tag_id)
            tags = self._tags(project_id)
            new_name = self._check_tag_name(name) if name is not None else tag.name
            new_type = self._check_tag_type(tag_type) if tag_type is not None else tag.type
            if any(name_key(t.name) == name_key(new_name) and t.id != tag_id for t in tags.values()):
                raise bad_request("BadRequestTagNameNotUnique", f"A tag named '{new_name}' already exists.")
            self._check_special_tag(tags.values(), new_type, except_id=tag_id)
            db.execute(
                "UPDATE tags SET name=?, name_key=?, description=?, type=? WHERE id=?",
                (
                    new_name,
                    name_key(new_name),
                    description if description is not None else tag.description,
                    new_type,
                    tag_id,
                ),
            )
            if new_name != tag.name or new_type != tag.type:
                self._touch(project_id)
            return self._tags(project_id)[tag_id]

    def delete_tag(self, project_id: str, tag_id: str) -> None:
        with self._tx() as db:
            tag = self.get_tag(project_id, tag_id)
            db.execute("DELETE FROM tags WHERE id=?", (tag_id,))  # cascades to image tags and regions
            if tag.image_count:
                self._touch(project_id)

    # -- images: reading --

    def _load_images(self, image_ids: Sequence[str]) -> list[StoredImage]:
        """Full records (tags, regions, metadata) in the order of image_ids."""
        if not image_ids:
            return []
        out: dict[str, StoredImage] = {}
        for start in range(0, len(image_ids), 500):
            chunk = list(image_ids[start : start + 500])
            marks = _placeholders(chunk)
            for r in self._db.execute(f"SELECT * FROM images WHERE id IN ({marks})", chunk):  # noqa: S608
                out[r["id"]] = StoredImage(
                    id=r["id"],
                    project_id=r["project_id"],
                    created=r["created"],
                    width=r["width"],
                    height=r["height"],
                    format=r["format"],
                    size=r["size"],
                    sha256=r["sha256"],
                    metadata=json.loads(r["metadata"]),
                )
            tags_sql = (
                "SELECT it.image_id, it.tag_id, t.name, it.created FROM image_tags it JOIN tags t"  # noqa: S608
                " ON t.id=it.tag_id WHERE it.image_id IN (" + marks + ") ORDER BY it.created, t.seq"
            )
            for r in self._db.execute(tags_sql, chunk):
                out[r[0]].tags.append(ImageTag(r[1], r[2], r[3]))
            regions_sql = (
                "SELECT r.*, t.name AS tag_name FROM regions r JOIN tags t ON t.id=r.tag_id"  # noqa: S608
                " WHERE r.image_id IN (" + marks + ") ORDER BY r.seq"
            )
            for r in self._db.execute(regions_sql, chunk):
                out[r["image_id"]].regions.append(
                    ImageRegion(
                        r["id"], r["image_id"], r["tag_id"], r["tag_name"], r["x"], r["y"], r["w"], r["h"], r["created"]
                    )
                )
        return [out[i] for i in image_ids if i in out]

    def get_image(self, image_id: str) -> StoredImage | None:
        with self._lock:
            images = self._load_images([image_id])
            return images[0] if images else None

    def _query_ids(
        self,
        project_id: str,
        *,
        tagging_status: str,
        tag_ids: Sequence[str] | None,
        predicate: MetadataPredicate | None,
        newest_first: bool,
        take: int | None = None,
        skip: int = 0,
    ) -> list[str]:
        """Matching image ids in order; paging happens in SQL unless a metadata predicate must run first."""
        sql = "SELECT id, metadata FROM images WHERE project_id=?"
        args: list[object] = [project_id]
        tag_filter = ""
        if tag_ids:
            tag_filter = f" AND it.tag_id IN ({_placeholders(tag_ids)})"
        if tagging_status == "Tagged" or tag_ids:
            # "and/or relationship": an image matches when it carries any of the given tags.
            sql += " AND EXISTS (SELECT 1 FROM image_tags it WHERE it.image_id=images.id" + tag_filter + ")"  # noqa: S608
            args.extend(tag_ids or [])
        if tagging_status == "Untagged":
            sql += " AND NOT EXISTS (SELECT 1 FROM image_tags it WHERE it.image_id=images.id)"
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq ASC"
        if predicate is None:
            if take is not None:
                sql += " LIMIT ? OFFSET ?"
                args.extend([take, skip])
            return [r[0] for r in self._db.execute(sql, args)]
        ids = [r[0] for r in self._db.execute(sql, args) if predicate(json.loads(r[1]))]
        return ids[skip:] if take is None else ids[skip : skip + take]

    def query_images(
        self,
        project_id: str,
        *,
        tagging_status: str = "All",
        tag_ids: Sequence[str] | None = None,
        predicate: MetadataPredicate | None = None,
        newest_first: bool = True,
        take: int = 50,
        skip: int = 0,
    ) -> list[StoredImage]:
        with self._lock:
            self._require_project(project_id)
            ids = self._query_ids(
                project_id,
                tagging_status=tagging_status,
                tag_ids=tag_ids,
                predicate=predicate,
                newest_first=newest_first,
                take=take,
                skip=skip,
            )
            return self._load_images(ids)

    def count_images(
        self,
        project_id: str,
        *,
        tagging_status: str = "All",
        tag_ids: Sequence[str] | None = None,
        predicate: MetadataPredicate | None = None,
    ) -> int:
        with self._lock:
            self._require_project(project_id)
            if predicate is None and tagging_status == "All" and not tag_ids:
                row = self._db.execute("SELECT COUNT(*) FROM images WHERE project_id=?", (project_id,)).fetchone()
                return int(row[0])
            ids = self._query_ids(
                project_id, tagging_status=tagging_status, tag_ids=tag_ids, predicate=predicate, newest_first=True
            )
            return len(ids)

    def get_images_by_ids(self, project_id: str, image_ids: Sequence[str]) -> list[StoredImage]:
        with self._lock:
            self._require_project(project_id)
            return [img for img in self._load_images(list(image_ids)) if img.project_id == project_id]

    def all_images(self, project_id: str) -> list[StoredImage]:
        """Every image of a project, oldest first (for tools and tests)."""
        with self._lock:
            self._require_project(project_id)
            ids = self._query_ids(project_id, tagging_status="All", tag_ids=None, predicate=None, newest_first=False)
            return self._load_images(ids)

    # -- images: creating --

    @staticmethod
    def check_region(region: RegionSpec) -> None:
        """Normalised box inside the image: 0 <= left, top; width, height > 0; right and bottom <= 1."""
        values = (region.left, region.top, region.width, region.height)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise bad_request("BadRequestImageRegions", "Region coordinates must be finite numbers.")
        eps = REGION_TOLERANCE
        if (
            region.left < -eps
            or region.top < -eps
            or region.width <= 0
            or region.height <= 0
            or region.left + region.width > 1 + eps
            or region.top + region.height > 1 + eps
        ):
            raise bad_request(
                "BadRequestImageRegions",
                f"Invalid region (left={region.left}, top={region.top}, width={region.width},"
                f" height={region.height}): coordinates are normalised to 0..1, width and height must be"
                " positive and the region must lie inside the image.",
            )

    def check_metadata(self, metadata: dict[str, str] | None) -> None:
        if not metadata:
            return
        if len(metadata) > MAX_METADATA_PAIRS:
            raise bad_request(
                "BadRequestImageMetadataKey", f"Metadata is limited to {MAX_METADATA_PAIRS} key-value pairs."
            )
        for key, value in metadata.items():
            if not isinstance(key, str) or not key or len(key) > MAX_METADATA_KEY:
                raise bad_request(
                    "BadRequestImageMetadataKey",
                    f"Metadata key '{str(key)[:40]}' must be 1 to {MAX_METADATA_KEY} characters.",
                )
            if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
                raise bad_request(
                    "BadRequestImageMetadataValue",
                    f"The value of metadata key '{key}' must be a string of at most {MAX_METADATA_VALUE} characters.",
                )
            if value == "" and self.profile.refuse_empty_metadata_value:
                raise bad_request("BadRequestImageMetadataValue", f"The value of metadata key '{key}' is empty.")

    @staticmethod
    def _tag_conflict(tag_ids: Iterable[str], tags: dict[str, Tag]) -> bool:
        """The Negative tag means "none of the others", so it never shares an image with a regular tag."""
        types = {tags[t].type for t in tag_ids}
        return "Negative" in types and len(types) > 1

    def _add_image_tag(self, image_id: str, tag_id: str, *, via_region: bool) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO image_tags(image_id, tag_id, created, via_region) VALUES (?,?,?,?)",
            (image_id, tag_id, self.now(), int(via_region)),
        )

    def _add_region(self, image_id: str, region: RegionSpec) -> str:
        region_id = new_id()
        self._db.execute(
            "INSERT INTO regions(id, image_id, tag_id, seq, x, y, w, h, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                region_id,
                image_id,
                region.tag_id,
                self._next_seq("regions"),
                region.left,
                region.top,
                region.width,
                region.height,
                self.now(),
            ),
        )
        self._add_image_tag(image_id, region.tag_id, via_region=True)
        return region_id

    @staticmethod
    def _same_box(a: ImageRegion | RegionSpec, b: RegionSpec) -> bool:
        return a.tag_id == b.tag_id and all(
            abs(x - y) <= REGION_TOLERANCE
            for x, y in zip((a.left, a.top, a.width, a.height), (b.left, b.top, b.width, b.height), strict=True)
        )

    def create_images(
        self,
        project_id: str,
        entries: Sequence[NewImage],
        *,
        batch_tag_ids: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
    ) -> list[CreateResult]:
        """Apply the per-image upload rules; failed entries store nothing."""
        self.check_metadata(metadata)
        quota = self.limits.max_images_per_project
        # Decoding and hashing are the slow part; they run before taking the lock so uploads overlap.
        probes = [self._probe(entry.data) for entry in entries]
        results: list[tuple[str, str, str | None]] = []
        new_blobs: list[tuple[str, bytes]] = []
        with self._tx() as db:
            project = self._require_project(project_id)
            if not project.is_detection:
                for entry in entries:
                    if entry.regions:
                        raise bad_request(
                            "BadRequestImageRegions", "Regions are only supported by object detection projects."
                        )
            for entry in entries:
                for region in entry.regions:
                    self.check_region(region)
            tags = self._tags(project_id)
            image_count = db.execute("SELECT COUNT(*) FROM images WHERE project_id=?", (project_id,)).fetchone()[0]
            changed = False
            for entry, probe in zip(entries, probes, strict=True):
                status, image_id, entry_changed = self._create_one(
                    project_id, entry, probe, tags, batch_tag_ids, metadata or {}, image_count >= quota, new_blobs
                )
                image_count += status == "OK"
                changed = changed or entry_changed
                results.append((entry.source_url, status, image_id))
            if self.profile.refuse_duplicate_only_batch and all(r[1] == "OKDuplicate" for r in results):
                # Strict reading (azure-sdk-for-python #17734): the whole batch is refused and nothing changes;
                # raising inside the transaction rolls back the tags and regions merged into the duplicates.
                raise DuplicateOnlyBatch([r[2] or "" for r in results])
            if changed:
                self._touch(project_id)
            # Blobs are written inside the transaction so a failed commit never leaves an image without bytes.
            for image_id, data in new_blobs:
                self.blobs.put(image_id, "original", data)
            loaded = {img.id: img for img in self._load_images([r[2] for r in results if r[2]])}
        return [
            CreateResult(url, status, loaded.get(image_id) if image_id else None) for url, status, image_id in results
        ]

    def _probe(self, data: bytes | None) -> tuple[str, ImageInfo | None, str]:
        """(failure status or "", image info, sha256) of an entry's bytes, checked in the service's order."""
        if data is None:
            return "ErrorSource", None, ""
        if len(data) > self.profile.max_image_bytes:
            return "ErrorImageSize", None, ""
        info = probe_image(data)
        if info is None:
            return "ErrorImageFormat", None, ""
        if not dimensions_ok(info.width, info.height, self.profile.max_image_side):
            return "ErrorImageDimensions", None, ""
        return "", info, hashlib.sha256(data).hexdigest()

    def _create_one(
        self,
        project_id: str,
        entry: NewImage,
        probe: tuple[str, ImageInfo | None, str],
        tags: dict[str, Tag],
        batch_tag_ids: Sequence[str],
        metadata: dict[str, str],
        quota_full: bool,
        new_blobs: list[tuple[str, bytes]],
    ) -> tuple[str, str | None, bool]:
        failure, info, sha = probe
        if failure or info is None or entry.data is None:
            return failure, None, False
        data = entry.data
        wanted = list(dict.fromkeys([*batch_tag_ids, *entry.tag_ids, *(r.tag_id for r in entry.regions)]))
        if any(t not in tags for t in wanted):
            return "ErrorInvalidTag", None, False
        row = self._db.execute("SELECT id FROM images WHERE project_id=? AND sha256=?", (project_id, sha)).fetchone()
        if row is not None:
            status, changed = self._merge_duplicate(row["id"], entry, wanted, tags, metadata)
            return status, row["id"] if status == "OKDuplicate" else None, changed
        if self._tag_conflict(wanted, tags):
            return "ErrorNegativeAndRegularTagOnSameImage", None, False
        if len(wanted) > MAX_TAGS_PER_IMAGE:
            return "ErrorTagLimitExceed", None, False
        if len(entry.regions) > MAX_REGIONS_PER_IMAGE:
            return "ErrorRegionLimitExceed", None, False
        if quota_full:
            return "ErrorLimitExceed", None, False
        image_id = new_id()
        self._db.execute(
            "INSERT INTO images(id, project_id, seq, created, width, height, format, size, sha256, metadata)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                image_id,
                project_id,
                self._next_seq("images"),
                self.now(),
                info.width,
                info.height,
                info.format,
                len(data),
                sha,
                json.dumps(metadata),
            ),
        )
        region_tags = {r.tag_id for r in entry.regions}
        for tag_id in wanted:
            if tag_id not in region_tags:
                self._add_image_tag(image_id, tag_id, via_region=False)
        for region in entry.regions:
            self._add_region(image_id, region)
        new_blobs.append((image_id, data))
        return "OK", image_id, True

    def _merge_duplicate(
        self, image_id: str, entry: NewImage, wanted: list[str], tags: dict[str, Tag], metadata: dict[str, str]
    ) -> tuple[str, bool]:
        """Same bytes already in the project: the service adds the new tags and regions to that image.

        Returns the status and whether the training data changed (new tags or regions, not metadata)."""
        existing = self._load_images([image_id])[0]
        merged_tags = list(dict.fromkeys([*(t.tag_id for t in existing.tags), *wanted]))
        if self._tag_conflict(merged_tags, tags):
            return "ErrorNegativeAndRegularTagOnSameImage", False
        if len(merged_tags) > MAX_TAGS_PER_IMAGE:
            return "ErrorTagLimitExceed", False
        new_regions = [r for r in entry.regions if not any(self._same_box(o, r) for o in existing.regions)]
        # Identical boxes within the entry itself count once, as they would against stored ones.
        unique: list[RegionSpec] = []
        for region in new_regions:
            if not any(self._same_box(u, region) for u in unique):
                unique.append(region)
        if len(existing.regions) + len(unique) > MAX_REGIONS_PER_IMAGE:
            return "ErrorRegionLimitExceed", False
        region_tags = {r.tag_id for r in entry.regions}
        for tag_id in wanted:
            if tag_id not in region_tags:
                self._add_image_tag(image_id, tag_id, via_region=False)
        for region in unique:
            self._add_region(image_id, region)
        # Batch metadata is merged when the result still fits the limits; the image keeps its own otherwise.
        merged_meta = {**existing.metadata, **metadata}
        if metadata and len(merged_meta) <= MAX_METADATA_PAIRS:
            self._db.execute("UPDATE images SET metadata=? WHERE id=?", (json.dumps(merged_meta), image_id))
        return "OKDuplicate", len(merged_tags) > len(existing.tags) or bool(unique)

    # -- images: changing --

    def delete_images(self, project_id: str, image_ids: Sequence[str] | None, *, all_images: bool) -> None:
        with self._tx() as db:
            self._require_project(project_id)
            if all_images:
                ids = [r[0] for r in db.execute("SELECT id FROM images WHERE project_id=?", (project_id,))]
            else:
                wanted = list(image_ids or [])
                ids = (
                    [
                        r[0]
                        for r in db.execute(
                            f"SELECT id FROM images WHERE project_id=? AND id IN ({_placeholders(wanted)})",  # noqa: S608
                            [project_id, *wanted],
                        )
                    ]
                    if wanted
                    else []
                )
            # Unknown ids are ignored, as the service does.
            if ids:
                db.execute(f"DELETE FROM images WHERE id IN ({_placeholders(ids)})", ids)  # noqa: S608
                self._touch(project_id)
        for image_id in ids:
            self.blobs.delete(image_id)

    def update_metadata(
        self, project_id: str, image_ids: Sequence[str], metadata: dict[str, str]
    ) -> list[MetadataUpdateOutcome]:
        self.check_metadata(metadata)
        out = []
        with self._tx() as db:
            self._require_project(project_id)
            found = {img.id: img for img in self._load_images(list(image_ids)) if img.project_id == project_id}
            for image_id in image_ids:
                image = found.get(image_id)
                if image is None:
                    out.append(MetadataUpdateOutcome(image_id, "ErrorImageNotFound", None))
                    continue
                merged = {**image.metadata, **metadata}
                if len(merged) > MAX_METADATA_PAIRS:
                    out.append(MetadataUpdateOutcome(image_id, "ErrorLimitExceed", None))
                    continue
                db.execute("UPDATE images SET metadata=? WHERE id=?", (json.dumps(merged), image_id))
                image.metadata = merged
                out.append(MetadataUpdateOutcome(image_id, "OK", merged))
        return out

    def _require_images(self, project_id: str, image_ids: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(image_ids))
        if not wanted:
            return
        rows = self._db.execute(
            f"SELECT id FROM images WHERE project_id=? AND id IN ({_placeholders(wanted)})",  # noqa: S608
            [project_id, *wanted],
        ).fetchall()
        missing = set(wanted) - {r[0] for r in rows}
        if missing:
            raise not_found("NotFoundImage", f"Image {sorted(missing)[0]} not found.")

    def create_image_tags(
        self, project_id: str, pairs: Sequence[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """(created, duplicated, exceeded) lists of (image id, tag id); validates everything first."""
        if len(pairs) > MAX_IMAGE_TAG_BATCH:
            raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_IMAGE_TAG_BATCH} tags per batch.")
        created: list[tuple[str, str]] = []
        duplicated: list[tuple[str, str]] = []
        exceeded: list[tuple[str, str]] = []
        with self._tx():
            self._require_project(project_id)
            tags = self._tags(project_id)
            for _, tag_id in pairs:
                if tag_id not in tags:
                    raise not_found("NotFoundTag", f"Tag {tag_id} not found.")
            self._require_images(project_id, (image_id for image_id, _ in pairs))
            current = {
                img.id: [t.tag_id for t in img.tags]
                for img in self._load_images(list(dict.fromkeys(i for i, _ in pairs)))
            }
            for image_id, tag_id in pairs:
                have = current[image_id]
                if tag_id in have:
                    duplicated.append((image_id, tag_id))
                elif len(have) >= MAX_TAGS_PER_IMAGE:
                    exceeded.append((image_id, tag_id))
                elif self._tag_conflict([*have, tag_id], tags):
                    raise bad_request(
                        "BadRequestNegativeAndRegularTagOnSameImage",
                        f"Image {image_id} cannot carry the Negative tag together with a regular tag.",
                    )
                else:
                    have.append(tag_id)
                    self._add_image_tag(image_id, tag_id, via_region=False)
                    created.append((image_id, tag_id))
            if created:
                self._touch(project_id)
        return created, duplicated, exceeded

    def delete_image_tags(self, project_id: str, image_ids: Sequence[str], tag_ids: Sequence[str]) -> None:
        """Untag; regions with those tags go too, since a region's tag is what tags the image."""
        with self._tx() as db:
            self._require_project(project_id)
            images = list(dict.fromkeys(image_ids))
            tag_list = list(dict.fromkeys(tag_ids))
            if not images or not tag_list:
                return
            where = (
                "image_id IN (" + _placeholders(images) + ") AND tag_id IN (" + _placeholders(tag_list) + ")"  # noqa: S608
                " AND image_id IN (SELECT id FROM images WHERE project_id=?)"
            )
            args = [*images, *tag_list, project_id]
            removed = db.execute(f"DELETE FROM image_tags WHERE {where}", args).rowcount  # noqa: S608
            removed += db.execute(f"DELETE FROM regions WHERE {where}", args).rowcount  # noqa: S608
            if removed:
                self._touch(project_id)

    def create_regions(self, project_id: str, entries: Sequence[tuple[str, RegionSpec]]) -> RegionCreateOutcome:
        if len(entries) > MAX_REGION_BATCH:
            raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_REGION_BATCH} regions per batch.")
        outcome = RegionCreateOutcome([], [], [])
        with self._tx():
            project = self._require_project(project_id)
            if not project.is_detection:
                raise bad_request("BadRequestImageRegions", "Regions are only supported by object detection projects.")
            tags = self._tags(project_id)
            for _, region in entries:
                self.check_region(region)
                if region.tag_id not in tags:
                    raise not_found("NotFoundTag", f"Tag {region.tag_id} not found.")
            self._require_images(project_id, (image_id for image_id, _ in entries))
            images = {img.id: img for img in self._load_images(list(dict.fromkeys(i for i, _ in entries)))}
            for image_id, region in entries:
                image = images[image_id]
                if any(self._same_box(r, region) for r in image.regions):
                    outcome.duplicated.append((image_id, region))
                    continue
                if len(image.regions) >= MAX_REGIONS_PER_IMAGE:
                    outcome.exceeded.append((image_id, region))
                    continue
                if self._tag_conflict([*(t.tag_id for t in image.tags), region.tag_id], tags):
                    raise bad_request(
                        "BadRequestNegativeAndRegularTagOnSameImage",
                        f"Image {image_id} cannot carry the Negative tag together with a regular tag.",
                    )
                region_id = self._add_region(image_id, region)
                stored = ImageRegion(
                    region_id,
                    image_id,
                    region.tag_id,
                    tags[region.tag_id].name,
                    region.left,
                    region.top,
                    region.width,
                    region.height,
                    self.now(),
                )
                image.regions.append(stored)
                if all(t.tag_id != region.tag_id for t in image.tags):
                    image.tags.append(ImageTag(region.tag_id, tags[region.tag_id].name, self.now()))
                outcome.created.append(stored)
            if outcome.created:
                self._touch(project_id)
        return outcome

    def delete_regions(self, project_id: str, region_ids: Sequence[str]) -> None:
        with self._tx() as db:
            self._require_project(project_id)
            ids = list(dict.fromkeys(region_ids))
            if not ids:
                return
            rows = db.execute(
                f"SELECT r.id, r.image_id, r.tag_id FROM regions r JOIN images i ON i.id=r.image_id"  # noqa: S608
                f" WHERE i.project_id=? AND r.id IN ({_placeholders(ids)})",
                [project_id, *ids],
            ).fetchall()
            if not rows:
                return
            db.execute(f"DELETE FROM regions WHERE id IN ({_placeholders(rows)})", [r[0] for r in rows])  # noqa: S608
            # A tag that came only from regions leaves the image with its last region.
            for _, image_id, tag_id in rows:
                db.execute(
                    "DELETE FROM image_tags WHERE image_id=? AND tag_id=? AND via_region=1 AND NOT EXISTS"
                    " (SELECT 1 FROM regions WHERE image_id=? AND tag_id=?)",
                    (image_id, tag_id, image_id, tag_id),
                )
            self._touch(project_id)

    # -- iterations and training --

    def _iteration_from_row(self, r: sqlite3.Row) -> Iteration:
        return Iteration(
            id=r["id"],
            project_id=r["project_id"],
            name=r["name"],
            created=r["created"],
            last_modified=r["last_modified"],
            completes_at=r["completes_at"],
            training_type=r["training_type"],
            reserved_budget_in_hours=r["reserved_budget_in_hours"],
            domain_id=r["domain_id"],
            classification_type=r["classification_type"],
            data_version=r["data_version"],
            publish_name=r["publish_name"],
            prediction_resource_id=r["prediction_resource_id"],
        )

    def list_iterations(self, project_id: str) -> list[Iteration]:
        with self._lock:
            self._require_project(project_id)
            rows = self._db.execute(
                "SELECT * FROM iterations WHERE project_id=? ORDER BY seq", (project_id,)
            ).fetchall()
            return [self._iteration_from_row(r) for r in rows]

    def get_iteration(self, project_id: str, iteration_id: str) -> Iteration:
        with self._lock:
            self._require_project(project_id)
            row = self._db.execute(
                "SELECT * FROM iterations WHERE project_id=? AND id=?", (project_id, iteration_id)
            ).fetchone()
            if row is None:
                raise not_found("NotFoundIteration", f"Iteration {iteration_id} not found.")
            return self._iteration_from_row(row)

    def update_iteration(self, project_id: str, iteration_id: str, *, name: str | None) -> Iteration:
        with self._tx() as db:
            self.get_iteration(project_id, iteration_id)
            if name is None or not name.strip():
                raise bad_request("BadRequestIterationName", "The iteration name must not be empty.")
            clash = db.execute(
                "SELECT 1 FROM iterations WHERE project_id=? AND name_key=? AND id<>?",
                (project_id, name_key(name), iteration_id),
            ).fetchone()
            if clash:
                raise bad_request("BadRequestIterationNameNotUnique", f"An iteration named '{name}' already exists.")
            db.execute(
                "UPDATE iterations SET name=?, name_key=?, last_modified=? WHERE id=?",
                (name, name_key(name), self.now(), iteration_id),
            )
            return self.get_iteration(project_id, iteration_id)

    def delete_iteration(self, project_id: str, iteration_id: str) -> None:
        with self._tx() as db:
            iteration = self.get_iteration(project_id, iteration_id)
            if iteration.publish_name:
                raise bad_request("BadRequestIterationIsPublished", "Unpublish the iteration before deleting it.")
            db.execute("DELETE FROM iterations WHERE id=?", (iteration_id,))

    def publish_iteration(
        self, project_id: str, iteration_id: str, *, publish_name: str | None, prediction_id: str | None
    ) -> None:
        with self._tx() as db:
            iteration = self.get_iteration(project_id, iteration_id)
            if not iteration.is_completed(self.now()):
                raise bad_request("BadRequestIterationIsNotTrained", "The iteration has not finished training.")
            if not publish_name or not publish_name.strip():
                raise bad_request("BadRequestInvalidPublishName", "A publish name is required.")
            if not prediction_id:
                raise bad_request("BadRequestInvalidPublishTarget", "A prediction resource id is required.")
            db.execute(
                "UPDATE iterations SET publish_name=?, prediction_resource_id=?, last_modified=? WHERE id=?",
                (publish_name, prediction_id, self.now(), iteration_id),
            )

    def unpublish_iteration(self, project_id: str, iteration_id: str) -> None:
        with self._tx() as db:
            iteration = self.get_iteration(project_id, iteration_id)
            if not iteration.publish_name:
                raise bad_request("BadRequestIterationNotPublished", "The iteration is not published.")
            db.execute(
                "UPDATE iterations SET publish_name='', prediction_resource_id='', last_modified=? WHERE id=?",
                (self.now(), iteration_id),
            )

    def train(
        self,
        project_id: str,
        *,
        training_type: str | None = None,
        reserved_budget_in_hours: int = 0,
        force_train: bool = False,
        notification_email_address: str | None = None,
        selected_tags: Sequence[str] | None = None,
    ) -> Iteration:
        with self._tx() as db:
            project = self._require_project(project_id)
            now = self.now()
            iterations = self.list_iterations(project_id)
            if any(not it.is_completed(now) for it in iterations):
                raise bad_request("BadRequestTrainingAlreadyInProgress", "Training is already in progress.")
            if not force_train and iterations and iterations[-1].data_version == project.data_version:
                raise bad_request(
                    "BadRequestTrainingNotNeeded",
                    "Nothing changed since the last training; no training is needed.",
                )
            if len(iterations) >= MAX_ITERATIONS_PER_PROJECT:
                raise bad_request(
                    "BadRequestExceedIterationPerProjectLimit",
                    f"Exceeded the limit of {MAX_ITERATIONS_PER_PROJECT} iterations per project;"
                    " delete an iteration first.",
                )
            kind = next((t for t in TRAINING_TYPES if t.lower() == (training_type or "Regular").lower()), None)
            if kind is None:
                raise bad_request("BadRequest", f"Unknown training type {training_type}.")
            if kind == "Advanced" and reserved_budget_in_hours < 1:
                raise bad_request(
                    "BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining",
                    "Advanced training needs a reserved budget of at least 1 hour.",
                )
            if notification_email_address and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", notification_email_address):
                raise bad_request("BadRequestInvalidEmailAddress", "The notification email address is invalid.")
            tags = self._tags(project_id)
            if selected_tags:
                for tag_id in selected_tags:
                    if tag_id not in tags:
                        raise not_found("NotFoundTag", f"Tag {tag_id} not found.")
                tags = {t: tags[t] for t in selected_tags}
            self._validate_training_set(project, list(tags.values()))
            counter = db.execute(
                "UPDATE projects SET iteration_counter=iteration_counter+1 WHERE id=? RETURNING iteration_counter",
                (project_id,),
            ).fetchone()[0]
            iteration_id = new_id()
            name = f"Iteration {counter}"
            db.execute(
                "INSERT INTO iterations(id, project_id, seq, name, name_key, created, last_modified, completes_at,"
                " training_type, reserved_budget_in_hours, domain_id, classification_type, data_version)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    iteration_id,
                    project_id,
                    self._next_seq("iterations"),
                    name,
                    name_key(name),
                    now,
                    now,
                    now + self.training_seconds,
                    kind,
                    reserved_budget_in_hours,
                    project.domain_id,
                    project.classification_type,
                    project.data_version,
                ),
            )
            db.execute(
                "INSERT INTO iteration_models(iteration_id, tags, labels, features) VALUES (?,?,?,?)",
                (iteration_id, *self._snapshot_model(project, tags).to_row()),
            )
            return self.get_iteration(project_id, iteration_id)

    @staticmethod
    def _validate_training_set(project: Project, tags: list[Tag]) -> None:
        """The documented minimums: untagged images and empty tags do not count."""
        used = [t for t in tags if t.image_count > 0 and t.type != "Negative"]
        if project.is_detection:
            code = "BadRequestDetectionTrainingValidationFailed"
            minimum = MIN_IMAGES_PER_TAG_DETECTION
            if not used:
                raise bad_request(
                    code, f"Object detection training needs at least one tag with {minimum} tagged images."
                )
        else:
            code = {
                "Multiclass": "BadRequestMultiClassClassificationTrainingValidationFailed",
                "Multilabel": "BadRequestMultiLabelClassificationTrainingValidationFailed",
            }.get(project.classification_type or "", "BadRequestClassificationTrainingValidationFailed")
            minimum = MIN_IMAGES_PER_TAG_CLASSIFICATION
            if len(used) < 2:
                raise bad_request(
                    code,
                    "Classification training needs at least 2 tags with images; the project has"
                    f" {len(used)}" + (f" ('{used[0].name}')." if used else "."),
                )
        for tag in used:
            if tag.image_count < minimum:
                raise bad_request(
                    code,
                    f"Tag '{tag.name}' has {tag.image_count} images; at least {minimum} are required to train.",
                )

    # -- predictions: quick tests and suggested tags --

    def _image_features(self, image_id: str) -> np.ndarray | None:
        """A project image's features, computed from its bytes once and kept; None when its bytes are gone."""
        row = self._db.execute("SELECT features FROM image_features WHERE image_id=?", (image_id,)).fetchone()
        if row is not None:
            return np.frombuffer(row[0], dtype=np.float32)
        data = self.blobs.get(image_id, "original")
        if data is None:
            return None
        features = image_features(data)
        self._db.execute(
            "INSERT OR REPLACE INTO image_features(image_id, features) VALUES (?,?)", (image_id, features.tobytes())
        )
        return features

    def _snapshot_model(self, project: Project, tags: dict[str, Tag]) -> TrainedModel:
        """The training set of a new iteration: every image carrying a trained tag, as features plus labels."""
        trained = {t.id: t for t in tags.values() if t.image_count > 0}
        image_ids = []
        if trained:
            image_ids = self._query_ids(
                project.id, tagging_status="Tagged", tag_ids=list(trained), predicate=None, newest_first=False
            )
        rows: list[np.ndarray] = []
        examples: list[TrainedExample] = []
        for image in self._load_images(image_ids):
            if project.is_detection:
                regions = tuple(
                    (r.tag_id, r.left, r.top, r.width, r.height) for r in image.regions if r.tag_id in trained
                )
                example = TrainedExample(tuple(dict.fromkeys(r[0] for r in regions)), regions)
            else:
                example = TrainedExample(tuple(t.tag_id for t in image.tags if t.tag_id in trained))
            features = self._image_features(image.id)
            if example.tag_ids and features is not None:
                rows.append(features)
                examples.append(example)
        return TrainedModel(
            tags=tuple(TrainedTag(t.id, t.name, t.type) for t in trained.values()),
            detection=project.is_detection,
            features=np.stack(rows) if rows else np.zeros((0, FEATURE_LENGTH), dtype=np.float32),
            examples=tuple(examples),
        )

    def _load_model(self, iteration_id: str) -> TrainedModel:
        row = self._db.execute(
            "SELECT tags, labels, features FROM iteration_models WHERE iteration_id=?", (iteration_id,)
        ).fetchone()
        if row is None:  # an iteration trained by an emulator that kept no snapshot: it knows nothing
            return TrainedModel((), False, np.zeros((0, FEATURE_LENGTH), dtype=np.float32), ())
        return TrainedModel.from_row(row[0], row[1], row[2])

    def _prediction_iteration(self, project_id: str, iteration_id: str | None) -> Iteration:
        """The iteration to predict with: the one named, else the latest trained; it must have finished training."""
        now = self.now()
        if iteration_id is None:
            trained = [it for it in self.list_iterations(project_id) if it.is_completed(now)]
            if not trained:
                raise bad_request("BadRequestIterationIsNotTrained", "The project has no trained iteration.")
            return trained[-1]
        iteration = self.get_iteration(project_id, iteration_id)
        if not iteration.is_completed(now):
            raise bad_request("BadRequestIterationIsNotTrained", f"Iteration {iteration_id} has not finished training.")
        return iteration

    def quick_test(self, project_id: str, data: bytes, *, iteration_id: str | None, store: bool) -> ImagePrediction:
        """QuickTestImage: predict a frame that is not added to the project; ``store`` keeps the prediction."""
        failure, _, _ = self._probe(data or None)
        if failure:
            code, message = QUICK_TEST_IMAGE_ERRORS[failure]
            raise bad_request(code, message)
        features = image_features(data)
        with self._tx() as db:
            iteration = self._prediction_iteration(project_id, iteration_id)
            predictions, uncertainty = self._load_model(iteration.id).predict(features)
            prediction = ImagePrediction(
                new_id(), project_id, iteration.id, iteration.domain_id, self.now(), predictions, uncertainty
            )
            if store:
                db.execute(
                    "INSERT INTO predictions(id, project_id, iteration_id, created, predictions) VALUES (?,?,?,?,?)",
                    (prediction.id, project_id, iteration.id, prediction.created, predictions_to_json(predictions)),
                )
        return prediction

    def count_stored_predictions(self, project_id: str) -> int:
        """Quick tests kept with store=true (QueryPredictions would list them)."""
        with self._lock:
            self._require_project(project_id)
            row = self._db.execute("SELECT COUNT(*) FROM predictions WHERE project_id=?", (project_id,)).fetchone()
            return int(row[0])

    def _suggestion_from_row(self, iteration: Iteration, row: sqlite3.Row) -> ImagePrediction:
        return ImagePrediction(
            row["image_id"],
            iteration.project_id,
            iteration.id,
            iteration.domain_id,
            row["created"],
            predictions_from_json(row["predictions"]),
            row["uncertainty"],
        )

    def suggest(self, project_id: str, iteration_id: str, image_ids: Sequence[str]) -> SuggestionOutcome:
        """SuggestTagsAndRegions: an iteration's suggestions for project images, kept 30 days.

        A suggestion already kept for the image and iteration is answered again without predicting (and
        without billing), as the service does within its 30 days.
        """
        if len(image_ids) > MAX_SUGGESTION_IMAGE_BATCH:
            raise bad_request(
                "BadRequestExceededBatchSize", f"Limited to {MAX_SUGGESTION_IMAGE_BATCH} images per batch."
            )
        with self._tx() as db:
            iteration = self._prediction_iteration(project_id, iteration_id)
            self._require_images(project_id, image_ids)
            now = self.now()
            model: TrainedModel | None = None
            suggestions: list[ImagePrediction] = []
            predicted = 0
            for image_id in dict.fromkeys(image_ids):
                row = db.execute(
                    "SELECT * FROM suggestions WHERE iteration_id=? AND image_id=? AND created>?",
                    (iteration.id, image_id, now - SUGGESTION_RETENTION_SECONDS),
                ).fetchone()
                if row is not None:
                    suggestions.append(self._suggestion_from_row(iteration, row))
                    continue
                model = model or self._load_model(iteration.id)
                features = self._image_features(image_id)
                predictions, uncertainty = model.predict(features) if features is not None else ([], 0.0)
                db.execute(
                    "INSERT OR REPLACE INTO suggestions(iteration_id, image_id, created, predictions, uncertainty)"
                    " VALUES (?,?,?,?,?)",
                    (iteration.id, image_id, now, predictions_to_json(predictions), uncertainty),
                )
                suggestion = ImagePrediction(
                    image_id, project_id, iteration.id, iteration.domain_id, now, predictions, uncertainty
                )
                suggestions.append(suggestion)
                predicted += 1
        return SuggestionOutcome(suggestions, predicted)

    def _kept_suggestions(self, iteration: Iteration) -> list[ImagePrediction]:
        """The iteration's unexpired suggestions for images that are still untagged, oldest image first."""
        rows = self._db.execute(
            "SELECT s.* FROM suggestions s JOIN images i ON i.id=s.image_id WHERE s.iteration_id=? AND s.created>?"
            " AND NOT EXISTS (SELECT 1 FROM image_tags it WHERE it.image_id=i.id) ORDER BY i.seq",
            (iteration.id, self.now() - SUGGESTION_RETENTION_SECONDS),
        ).fetchall()
        return [self._suggestion_from_row(iteration, r) for r in rows]

    @staticmethod
    def _suggests(suggestion: ImagePrediction, tag_ids: Iterable[str], threshold: float) -> bool:
        wanted = set(tag_ids)
        return any(p.tag_id in wanted and p.probability >= threshold for p in suggestion.predictions)

    def suggested_images(
        self,
        project_id: str,
        iteration_id: str,
        *,
        tag_ids: Sequence[str],
        threshold: float,
        sort_by: str,
        skip: int,
        take: int,
    ) -> tuple[list[SuggestedImage], int]:
        """QuerySuggestedImages: untagged images whose kept suggestion has one of the tags at ``threshold`` or
        more (any trained tag when ``tag_ids`` is empty), by uncertainty; (one page, how many match in all)."""
        with self._lock:
            iteration = self._prediction_iteration(project_id, iteration_id)
            wanted = tag_ids or [t.id for t in self._load_model(iteration.id).tags]
            matches = [s for s in self._kept_suggestions(iteration) if self._suggests(s, wanted, threshold)]
            descending = sort_by == "UncertaintyDescending"
            matches.sort(key=lambda s: -s.uncertainty if descending else s.uncertainty)
            page = matches[skip : skip + take]
            images = {image.id: image for image in self._load_images([s.id for s in page])}
            return [SuggestedImage(images[s.id], s) for s in page], len(matches)

    def suggested_image_counts(
        self, project_id: str, iteration_id: str, *, tag_ids: Sequence[str], threshold: float
    ) -> dict[str, int]:
        """QuerySuggestedImageCount: per tag (every trained tag when none is given), how many untagged images
        have it suggested at ``threshold`` or more."""
        with self._lock:
            iteration = self._prediction_iteration(project_id, iteration_id)
            wanted = tag_ids or [t.id for t in self._load_model(iteration.id).tags]
            kept = self._kept_suggestions(iteration)
            return {tag_id: sum(self._suggests(s, [tag_id], threshold) for s in kept) for tag_id in wanted}
