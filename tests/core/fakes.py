"""In-memory stand-ins for the push pipeline's blob source, decryptor and Custom Vision target (see
percept_core.protocols): the batching, claim and retry logic tested in milliseconds, with a real SQLite ledger.

The tests against the devstack stay for everything that crosses a wire; these fakes keep to the contracts the
real clients document: a call with more than 64 images is an error, a call-wide failure is retried up to
`max_attempts` and then raised as retryable, a 429 is waited out, and content the project holds already is
answered as a duplicate of that image.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import SimpleNamespace

from percept_core.blobs import BlobFilter, RetrainingBlob
from percept_core.customvision import (
    MAX_IMAGES_PER_BATCH,
    CallStats,
    CustomVisionError,
    Labelled,
    ProjectImage,
    ProjectIndex,
    PushStatus,
    Region,
    TagNameError,
    UploadItem,
    UploadResult,
)
from tests.support.frames import jpeg

CONTAINER = "data"


def frame_blob(name: str, *, model_version: str = "1", etag: str = "0x1") -> RetrainingBlob:
    """A retraining blob record as storage lists it, with its model's metadata."""
    properties = SimpleNamespace(
        name=name,
        etag=etag,
        size=0,
        last_modified=datetime(2024, 5, 1, tzinfo=UTC),
        metadata={"model_name": "ssd", "model_version": model_version},
    )
    return RetrainingBlob.from_properties(CONTAINER, properties)


class FakeBlobSource:
    """A container of frames kept in the clear (see PlainDecryptor): listed in name order, downloads counted."""

    def __init__(self) -> None:
        self.frames: dict[str, tuple[RetrainingBlob, bytes]] = {}
        self.downloads: Counter[str] = Counter()

    def add_frames(self, count: int, *, prefix: str = "frame", model_version: str = "1") -> list[RetrainingBlob]:
        """`count` distinct small JPEGs; returns their blob records."""
        added = []
        for _ in range(count):
            index = len(self.frames)
            blob = frame_blob(f"{prefix}-{index:05d}.jpg", model_version=model_version)
            self.frames[blob.name] = (blob, jpeg(index, size=(32, 24)))
            added.append(blob)
        return added

    def list_blobs(self, blob_filter: BlobFilter | None = None) -> Iterator[RetrainingBlob]:
        return iter([blob for blob, _ in sorted(self.frames.values(), key=lambda pair: pair[0].name)])

    def download(self, blob: RetrainingBlob) -> bytes:
        self.downloads[blob.name] += 1
        return self.frames[blob.name][1]


class PlainDecryptor:
    """The frames of FakeBlobSource are not encrypted: decrypting hands them over as they are."""

    def decrypt(self, ciphertext: bytes, model_name: str, model_version: str, *, blob_name: str | None = None) -> bytes:
        return ciphertext


class Answer(StrEnum):
    """What the fake project does with one upload attempt of an image (scripted per blob name)."""

    THROTTLE = "throttle"  # a 429 for the whole call: waited out and sent again, as the client does
    FAIL = "fail"  # a 503 for the whole call: retried up to max_attempts, then raised as retryable
    REFUSE = "refuse"  # the image is refused (ErrorImageFormat): trying again will not help


@dataclass
class FakeImage:
    id: str
    sha256: str
    name: str
    tag_ids: tuple[str, ...] = ()
    regions: list[tuple[str, Region]] = field(default_factory=list)


class FakeCustomVision:
    """A Custom Vision project in memory, as the pipeline's target (percept_core.protocols.PushTarget).

    `script(name, *answers)` queues what the next attempts carrying that blob meet; an image without a queued
    answer is created, or answered as a duplicate when its content is in the project. `calls` holds the blob
    names of every upload attempt, in order; `on_upload` runs at the start of each upload call (a test's hook).
    """

    def __init__(self, project_id: str = "fake-project", *, max_attempts: int = 3, tags: Sequence[str] = ()) -> None:
        self.project_id = project_id
        self.max_attempts = max_attempts
        self.stats = CallStats()
        self.images: dict[str, FakeImage] = {}
        self.tags = {name: f"tag-{name}" for name in tags}
        self.calls: list[list[str]] = []
        self.on_upload: Callable[[], None] | None = None
        self._script: dict[str, list[Answer]] = defaultdict(list)

    def script(self, name: str, *answers: Answer) -> None:
        self._script[name].extend(answers)

    # -- what a test reads ----------------------------------------------------------------------------

    @property
    def batch_sizes(self) -> list[int]:
        return [len(names) for names in self.calls]

    def images_of(self, name: str) -> list[FakeImage]:
        """The project's images uploaded from blob `name`: more than one would be a frame pushed twice."""
        return [image for image in self.images.values() if image.name == name]

    # -- the target -----------------------------------------------------------------------------------

    def wait_budget(self, seconds: float | None) -> AbstractContextManager[None]:
        return nullcontext()

    def tag_ids(self, names: Sequence[str]) -> list[str]:
        missing = [name for name in names if name not in self.tags]
        if missing:
            raise TagNameError(f"The project has no tag named {missing[0]!r}.")
        return [self.tags[name] for name in names]

    def upload(
        self, items: Sequence[UploadItem], *, batch_metadata: dict[str, str] | None = None
    ) -> list[UploadResult]:
        if len(items) > MAX_IMAGES_PER_BATCH:
            raise ValueError(f"at most {MAX_IMAGES_PER_BATCH} images per batch")
        if self.on_upload is not None:
            self.on_upload()
        attempt = 0
        while True:
            attempt += 1
            self.stats.add(calls=1)
            self.calls.append([item.name for item in items])
            call_wide = {self._take_call_wide(item.name) for item in items}
            if Answer.THROTTLE in call_wide:
                self.stats.add(throttled=1)
                continue
            if Answer.FAIL in call_wide:
                if attempt < self.max_attempts:
                    self.stats.add(retried=1)
                    continue
                raise CustomVisionError(
                    "Custom Vision refused upload images: service unavailable", status=503, retryable=True
                )
            return [self._answer(item) for item in items]

    def _take_call_wide(self, name: str) -> Answer | None:
        """The blob's next queued answer if it concerns the whole call (a throttle or a failure), taken."""
        queued = self._script.get(name)
        if queued and queued[0] in (Answer.THROTTLE, Answer.FAIL):
            return queued.pop(0)
        return None

    def _answer(self, item: UploadItem) -> UploadResult:
        if self._script.get(item.name):
            self._script[item.name].pop(0)  # a queued REFUSE
            return UploadResult(item.name, PushStatus.REJECTED, None, "Custom Vision cannot read the image format")
        sha256 = item.sha256 or hashlib.sha256(item.data).hexdigest()
        existing = next((image for image in self.images.values() if image.sha256 == sha256), None)
        if existing is not None:
            return UploadResult(
                item.name, PushStatus.DUPLICATE, existing.id, "the same image is already in the project"
            )
        image = FakeImage(f"image-{len(self.images) + 1}", sha256, item.name, tuple(item.tag_ids))
        self.images[image.id] = image
        return UploadResult(item.name, PushStatus.PUSHED, image.id, "pushed", "OK")

    def label_image(self, image_id: str, tag_ids: Sequence[str] = (), regions: Sequence[Region] = ()) -> Labelled:
        image = self.images[image_id]
        added = [tag for tag in tag_ids if tag not in image.tag_ids]
        image.tag_ids += tuple(added)
        image.regions += [(f"region-{len(image.regions) + i}", region) for i, region in enumerate(regions)]
        return Labelled(tags_added=len(added), tags_present=len(tag_ids) - len(added), regions_added=len(regions))

    def image_count(self) -> int:
        self.stats.add(calls=1, listings=1)
        return len(self.images)

    def image_counts(self) -> tuple[int, int]:
        tagged = sum(1 for image in self.images.values() if image.tag_ids)
        return tagged, len(self.images) - tagged

    def project_index(self, *, refresh: bool = False) -> ProjectIndex:
        index = ProjectIndex()
        for image in self._project_images(list(self.images)):
            index.add(image)
        return index

    def known_content(self, hashes: Sequence[str | None]) -> str | None:
        return next((image.id for image in self.images.values() if image.sha256 in hashes), None)

    def images_by_ids(self, image_ids: Sequence[str]) -> list[ProjectImage]:
        return self._project_images([i for i in image_ids if i in self.images])

    def _project_images(self, image_ids: Sequence[str]) -> list[ProjectImage]:
        return [
            ProjectImage(
                id=image.id,
                width=32,
                height=24,
                tags=(),
                tag_ids=image.tag_ids,
                regions=tuple(
                    {
                        "region_id": rid,
                        "tag_id": r.tag_id,
                        "left": r.left,
                        "top": r.top,
                        "width": r.width,
                        "height": r.height,
                    }
                    for rid, r in image.regions
                ),
                metadata={"sha256": image.sha256, "source_blob": image.name},
                created=None,
            )
            for image in (self.images[i] for i in image_ids)
        ]

    def add_regions(self, image_id: str, regions: Sequence[Region]) -> list[str]:
        self.label_image(image_id, (), regions)
        return [rid for rid, _ in self.images[image_id].regions[-len(regions) :]]

    def delete_regions(self, region_ids: Sequence[str]) -> None:
        for image in self.images.values():
            image.regions = [(rid, r) for rid, r in image.regions if rid not in region_ids]

    def add_image_tags(self, pairs: Sequence[tuple[str, str]]) -> None:
        for image_id, tag_id in pairs:
            self.label_image(image_id, (tag_id,))

    def remove_image_tags(self, image_ids: Sequence[str], tag_ids: Sequence[str]) -> None:
        for image_id in image_ids:
            image = self.images[image_id]
            image.tag_ids = tuple(tag for tag in image.tag_ids if tag not in tag_ids)
