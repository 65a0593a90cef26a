"""Custom Vision: the only module that imports the (archived) Custom Vision SDK 3.1.1.

Tags, batch uploads with per-image outcomes, pacing to the tier's transactions per second (one token
bucket shared by every thread), retries of 429 (honouring Retry-After), 5xx and dropped connections
with backoff and jitter, regions, training. Replacing the training target later is a change here only.
"""

from __future__ import annotations

import hashlib
import io
import random
import ssl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import requests
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageRegionCreateEntry,
    ImageTagCreateEntry,
)
from azure.cognitiveservices.vision.customvision.training.models import Region as SdkRegion
from msrest.exceptions import ClientRequestError
from msrest.pipeline import SansIOHTTPPolicy

from .config import Settings
from .errors import (
    AuthenticationError,
    CustomVisionError,
    TagNameError,
    TrainingNotPossible,
    WaitBudgetExceeded,
)

T = TypeVar("T")

# How long the project's latest trained iteration is taken as known: a training finished elsewhere (the portal,
# another reviewer) is used for suggestions within this many seconds.
TRAINED_ITERATION_SECONDS = 30.0

# Limits of the Training API (v3.4-preview spec and the Limits and quotas page).
MAX_IMAGES_PER_BATCH = 64
MAX_BATCH_BYTES = 24 * 1024 * 1024  # raw bytes per request; base64 makes it ~32 MB, well under ~55 MB failures
MAX_TAG_NAME_LENGTH = 256
MAX_TAGS_PER_IMAGE_CALL = 128  # create_image_tags entries per call
MAX_IDS_PER_DELETE_TAGS = 64
MAX_REGIONS_PER_IMAGE = 300
MAX_REGIONS_PER_CALL = 64
MAX_METADATA_PAIRS = 10
MAX_METADATA_KEY = 128
MAX_METADATA_VALUE = 256
MIN_IMAGES_PER_TAG = {"classification": 5, "detection": 15}

# msrest's status for an accepted batch that is not all OK.
_RETRYABLE_STATUSES = {429, 500, 502, 503, 504}
# A 400 for a whole batch that halving cannot change: the metadata is the batch's, shared by every half.
_BATCH_WIDE_400 = {"BadRequestImageMetadataKey", "BadRequestImageMetadataValue"}
# What the service says when it takes none of a batch's images; users of the real service see it for a batch
# whose images are all in the project already (azure-sdk-for-python #17734), where the documented answer is
# 207 with OKDuplicate entries.
NO_VALID_IMAGES = "No valid image files"


class _WaitTooLong(Exception):
    """Raised by RateLimiter.acquire when the wait would pass `max_wait`."""


class PushStatus(StrEnum):
    PUSHED = "pushed"  # a new image in the project
    DUPLICATE = "duplicate"  # the same content is already in the project (that image is ours to use)
    REJECTED = "rejected"  # Custom Vision refuses this image; trying again will not help
    FAILED = "failed"  # did not get in this time; the next run tries again


# ImageCreateStatus -> (our status, what to tell the reviewer)
_IMAGE_STATUS: dict[str, tuple[PushStatus, str]] = {
    "OK": (PushStatus.PUSHED, PushStatus.PUSHED.value),
    "OKDuplicate": (PushStatus.DUPLICATE, "the same image is already in the project"),
    "ErrorImageFormat": (PushStatus.REJECTED, "Custom Vision cannot read the image format"),
    "ErrorImageSize": (PushStatus.REJECTED, "the image is over Custom Vision's 6 MB limit"),
    "ErrorImageDimensions": (PushStatus.REJECTED, "the image is over Custom Vision's largest side or 25:1"),
    "ErrorInvalidTag": (PushStatus.REJECTED, "a tag does not exist in the project (deleted?)"),
    "ErrorTagLimitExceed": (PushStatus.REJECTED, "too many tags on the image"),
    "ErrorRegionLimitExceed": (PushStatus.REJECTED, "too many regions on the image (300 at most)"),
    "ErrorNegativeAndRegularTagOnSameImage": (PushStatus.REJECTED, "the Negative tag cannot go with other tags"),
    "ErrorLimitExceed": (PushStatus.FAILED, "the project holds its tier's maximum of images"),
    "ErrorSource": (PushStatus.FAILED, "Custom Vision could not read the upload"),
    "ErrorStorage": (PushStatus.FAILED, "Custom Vision could not store the image"),
    "ErrorUnknown": (PushStatus.FAILED, "Custom Vision failed without saying why"),
}


@dataclass(frozen=True)
class ProjectInfo:
    id: str
    name: str
    kind: str  # "classification" or "detection"
    classification_type: str | None
    domain_name: str | None
    description: str | None = None

    @property
    def is_detection(self) -> bool:
        return self.kind == "detection"


@dataclass(frozen=True)
class TagInfo:
    id: str
    name: str
    type: str
    image_count: int


@dataclass(frozen=True)
class Region:
    """A box, normalised to 0..1 of the original image, with its tag's id."""

    tag_id: str
    left: float
    top: float
    width: float
    height: float

    @classmethod
    def from_pixels(
        cls, tag_id: str, x: float, y: float, width: float, height: float, *, image_width: int, image_height: int
    ) -> Region:
        """A box drawn in pixels of the original image, normalised and clamped to the image."""
        left = min(max(x / image_width, 0.0), 1.0)
        top = min(max(y / image_height, 0.0), 1.0)
        right = min(max((x + width) / image_width, 0.0), 1.0)
        bottom = min(max((y + height) / image_height, 0.0), 1.0)
        return cls(tag_id, round(left, 6), round(top, 6), round(right - left, 6), round(bottom - top, 6))

    def same_box(self, other: Region, tolerance: float = 1e-4) -> bool:
        return self.tag_id == other.tag_id and all(
            abs(a - b) <= tolerance
            for a, b in zip(
                (self.left, self.top, self.width, self.height),
                (other.left, other.top, other.width, other.height),
                strict=True,
            )
        )

    def validate(self) -> None:
        values = (self.left, self.top, self.width, self.height)
        if not all(0.0 <= v <= 1.0 for v in values) or self.width <= 0 or self.height <= 0:
            raise ValueError("a region's left, top, width and height must lie in 0..1, with a positive size")
        if self.left + self.width > 1.0 + 1e-6 or self.top + self.height > 1.0 + 1e-6:
            raise ValueError("a region must lie inside the image")


@dataclass(frozen=True)
class UploadItem:
    """One image to upload: `name` identifies it in the answer (its blob name)."""

    name: str
    data: bytes = field(repr=False)
    tag_ids: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    sha256: str | None = None  # the plaintext's hash (when `data` was fitted, not the hash of `data`)


@dataclass(frozen=True)
class UploadResult:
    name: str
    status: PushStatus
    image_id: str | None
    reason: str
    service_status: str | None = None


@dataclass(frozen=True)
class IterationInfo:
    id: str
    name: str
    status: str
    created: datetime | None
    trained_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status not in ("Training", "Queued", "Staging")

    @property
    def trained(self) -> bool:
        """Whether the iteration finished training and can predict."""
        return self.status == "Completed"


@dataclass(frozen=True)
class Prediction:
    """What an iteration predicts for a frame: a tag, its probability and, for detection, a normalised box."""

    tag_id: str
    tag_name: str
    probability: float
    box: Region | None = None


@dataclass(frozen=True)
class ProjectImage:
    id: str
    width: int | None
    height: int | None
    tags: tuple[str, ...]
    tag_ids: tuple[str, ...]
    regions: tuple[dict[str, Any], ...]
    metadata: Mapping[str, str]
    created: datetime | None
    original_url: str | None = None


@dataclass
class ProjectIndex:
    """The project's images by provenance and by content: how a lost ledger, or a duplicate the service did not
    name, is reconciled with the project instead of uploading again.

    `by_source` maps (container, blob, etag) to (image id, sha256) from the per-image provenance metadata;
    `by_content` maps a sha256 (the `sha256` metadata, the plaintext's, or the hash of a downloaded original)
    to an image id. `unhashed` holds the images without `sha256` metadata (batch provenance) whose originals
    have not been hashed yet.
    """

    by_source: dict[tuple[str, str, str], tuple[str, str | None]] = field(default_factory=dict)
    by_content: dict[str, str] = field(default_factory=dict)
    known_ids: set[str] = field(default_factory=set)
    unhashed: dict[str, tuple[str | None, bool]] = field(default_factory=dict)  # id -> (original URL, ours)
    images: int = 0

    def add(self, image: ProjectImage) -> bool:
        """Index one image; False when it was indexed already."""
        if image.id in self.known_ids:
            return False
        self.known_ids.add(image.id)
        self.images += 1
        meta = image.metadata
        sha = meta.get("sha256") or None
        if sha:
            self.by_content.setdefault(sha, image.id)
        else:
            self.unhashed[image.id] = (image.original_url, meta.get("pushed_by") == "percept-curator")
        if meta.get("source_blob") and meta.get("source_etag"):
            key = (meta.get("source_container", ""), meta["source_blob"], meta["source_etag"])
            self.by_source.setdefault(key, (image.id, sha))
        return True

    def source(self, container: str, name: str, etag: str) -> tuple[str, str | None] | None:
        """(image id, sha256) of the image pushed from that blob version (metadata values as pushed, fitted)."""
        return self.by_source.get((container, name, etag))

    def content(self, hashes: Sequence[str | None]) -> str | None:
        return next((self.by_content[h] for h in hashes if h and h in self.by_content), None)


@dataclass
class CallStats:
    """What the client did: calls made, 429s met (all retried), other retries, listing calls, halved batches."""

    calls: int = 0
    throttled: int = 0
    retried: int = 0
    listings: int = 0  # GetImages/GetImageCount calls made to reconcile with the project
    originals_hashed: int = 0  # project images downloaded to learn their content hash
    split_batches: int = 0  # whole-batch 400s answered by sending the batch again in halves
    predictions: int = 0  # frames predicted (QuickTestImage): prediction transactions, billed as such
    seconds_waiting_for_quota: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)


class RateLimiter:
    """A token bucket shared by every thread: at most `rate` calls a second, and a common pause on 429."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, *, max_wait: float | None = None) -> float:
        """Wait for a token; returns the seconds waited. Waiting past `max_wait` raises _WaitTooLong instead."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if self.rate:
                    self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if now < self._paused_until:
                    delay = self._paused_until - now
                elif not self.rate or self._tokens >= 1.0:
                    if self.rate:
                        self._tokens -= 1.0
                    return waited
                else:
                    delay = (1.0 - self._tokens) / self.rate
            if max_wait is not None and waited + delay > max_wait:
                raise _WaitTooLong(waited + delay)
            self._sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Everyone waits `seconds` (the service said so with Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0


@dataclass
class _WaitBudget:
    """Seconds this thread's calls may still wait in all (retries, backoff, Retry-After, quota)."""

    seconds: float
    spent: float = 0.0

    @property
    def remaining(self) -> float:
        return max(0.0, self.seconds - self.spent)


def _over_budget(budget: _WaitBudget | None) -> WaitBudgetExceeded:
    seconds = budget.seconds if budget is not None else 0.0
    return WaitBudgetExceeded(
        f"Custom Vision kept this call waiting (retries and quota) past its {seconds:.0f} s budget.",
        hint="The service is throttling or failing; the next run tries again.",
        retryable=True,
    )


@dataclass(frozen=True)
class Labelled:
    """What labelling an image already in the project did: tags and boxes added, or there already."""

    tags_added: int = 0
    tags_present: int = 0
    tags_refused: int = 0  # the image holds its maximum of tags
    regions_added: int = 0
    regions_present: int = 0
    regions_refused: int = 0  # the image holds its maximum of regions

    @property
    def complete(self) -> bool:
        return not self.tags_refused and not self.regions_refused

    def describe(self) -> str:
        """What a reviewer reads next to the duplicate: "tags added", "2 boxes added", ..."""
        parts = []
        if self.tags_added or self.tags_present:
            parts.append("tags added" if self.tags_added else "tags already on it")
        if self.regions_added or self.regions_present:
            parts.append(f"{self.regions_added} box(es) added" if self.regions_added else "boxes already on it")
        if self.tags_refused:
            parts.append(f"{self.tags_refused} tag(s) refused: the image has 100 tags")
        if self.regions_refused:
            parts.append(f"{self.regions_refused} box(es) refused: the image has {MAX_REGIONS_PER_IMAGE} boxes")
        return ", ".join(parts) or "labels applied"  # the service reported none of them back


class _PacedTrainingKey(SansIOHTTPPolicy):
    """The SDK's credential step: the Training-Key header, and a quota token taken as the request leaves.

    The token is taken here, after the SDK has serialized the body (a 64-image batch is ~18 MB of JSON and
    50-150 ms of work that varies with load), so that requests reach the service as evenly spaced as we
    paced them; a token taken before the serialization lets two calls arrive closer than the quota allows.
    """

    def __init__(self, training_key: str, take_token: Callable[[], None]) -> None:
        self._training_key = training_key
        self._take_token = take_token

    def on_request(self, request: Any, **kwargs: Any) -> None:
        request.http_request.headers["Training-Key"] = self._training_key
        self._take_token()


class CustomVisionConnection:
    """One Custom Vision resource and training key, shared by the clients of its projects: the pacing (the quota is
    per key), the call counts, each thread's SDK client and the wait budget of the call that thread is making."""

    def __init__(
        self,
        endpoint: str,
        training_key: str,
        *,
        rate_per_second: float | None = 10.0,
        train_rate_per_second: float | None = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.training_key = training_key
        # Pace a little under the quota: clocks differ, and a 429 costs a whole Retry-After.
        self.limiter = RateLimiter(rate_per_second * 0.96 if rate_per_second else None, sleep=sleep)
        self.train_limiter = RateLimiter(train_rate_per_second, sleep=sleep)
        self.stats = CallStats()
        self.local = threading.local()  # per thread: the SDK client, and the limiter and budget of its call
        self.domains: dict[str, Any] | None = None

    def trainer(self, timeout_seconds: float) -> CustomVisionTrainingClient:
        """This thread's SDK client (the SDK's session is not thread-safe), its timeout the calling client's."""
        trainer = getattr(self.local, "trainer", None)
        if trainer is None:
            trainer = CustomVisionTrainingClient(self.endpoint, _PacedTrainingKey(self.training_key, self.take_token))
            trainer.config.retry_policy.retries = 0  # one retry policy: ours, for every verb
            self.local.trainer = trainer
        trainer.config.connection.timeout = timeout_seconds
        return trainer

    def take_token(self) -> None:
        """Wait for the quota of the call this thread is making (see _PacedTrainingKey), within its budget."""
        limiter = getattr(self.local, "limiter", None) or self.limiter
        budget: _WaitBudget | None = getattr(self.local, "budget", None)
        try:
            waited = limiter.acquire(max_wait=budget.remaining if budget is not None else None)
        except _WaitTooLong:
            raise _over_budget(budget) from None
        if budget is not None:
            budget.spent += waited
        self.stats.add(calls=1, seconds_waiting_for_quota=waited)


class CustomVisionClient:
    """A Custom Vision Training project, reached with a training key.

    `connection` shares another client's pacing, counts and SDK clients (see `for_project`); without it the
    client has a connection of its own, paced at `rate_per_second`.
    """

    def __init__(
        self,
        endpoint: str,
        training_key: str,
        project_id: str,
        *,
        rate_per_second: float | None = 10.0,
        train_rate_per_second: float | None = 2.0,
        max_attempts: int = 8,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 20.0,
        timeout_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        connection: CustomVisionConnection | None = None,
    ) -> None:
        self.connection = connection or CustomVisionConnection(
            endpoint,
            training_key,
            rate_per_second=rate_per_second,
            train_rate_per_second=train_rate_per_second,
            sleep=sleep,
        )
        self.endpoint = self.connection.endpoint
        self.project_id = project_id
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._sleep = sleep
        self._project: ProjectInfo | None = None
        self._tags: list[TagInfo] | None = None
        self._latest_trained: tuple[float, IterationInfo] | None = None  # (time.monotonic() read, iteration)
        self._index: ProjectIndex | None = None
        self._index_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CustomVisionClient({self.endpoint!r}, project={self.project_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings, *, project_id: str | None = None, **kwargs: Any) -> CustomVisionClient:
        settings.require("custom_vision_endpoint", "custom_vision_training_key")
        project_id = project_id or settings.custom_vision_project_id
        if not project_id:
            settings.require("custom_vision_project_id")
        kwargs.setdefault("rate_per_second", settings.custom_vision_rate_per_second)
        return cls(settings.custom_vision_endpoint, settings.custom_vision_training_key, project_id, **kwargs)

    def for_project(self, project_id: str) -> CustomVisionClient:
        """The same resource and key, another project: the connection (pacing, counts, SDK clients) is shared, as
        the quota is per key; the retry settings are this client's; the project's caches start empty."""
        return CustomVisionClient(
            self.endpoint,
            self.connection.training_key,
            project_id,
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            timeout_seconds=self.timeout_seconds,
            sleep=self._sleep,
            connection=self.connection,
        )

    @property
    def limiter(self) -> RateLimiter:
        return self.connection.limiter

    @property
    def train_limiter(self) -> RateLimiter:
        return self.connection.train_limiter

    @property
    def stats(self) -> CallStats:
        return self.connection.stats

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def _trainer(self) -> CustomVisionTrainingClient:
        return self.connection.trainer(self.timeout_seconds)

    @contextmanager
    def wait_budget(self, seconds: float | None) -> Iterator[None]:
        """Within the block, this thread's calls wait (backoff, Retry-After, quota) at most `seconds` in all.

        The push pipeline gives each item a budget under its claim's lease: an item stuck behind 429s gives up
        (retryable) rather than wait for hours; the time a request itself takes is the timeout's business.
        """
        local = self.connection.local
        previous = getattr(local, "budget", None)
        local.budget = None if seconds is None else _WaitBudget(seconds)
        try:
            yield
        finally:
            local.budget = previous

    def _call(self, operation: str, function: Callable[..., T], *args: Any, train: bool = False, **kwargs: Any) -> T:
        attempt = 0
        throttled = 0
        self.connection.local.limiter = self.train_limiter if train else self.limiter
        while True:
            attempt += 1
            try:
                return function(*args, **kwargs)
            except CustomVisionErrorException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status == 429:
                    throttled += 1
                    retry_after = _retry_after(exc.response)
                    if retry_after is None:
                        # No Retry-After (real gateways may send none): 1 s, doubling, with jitter that only ever
                        # lengthens the wait, so the pause is never shorter than the quota's own second.
                        retry_after = min(self.max_backoff_seconds, 2.0 ** (throttled - 1)) * random.uniform(1.0, 1.25)
                    self.stats.add(throttled=1)
                    (self.train_limiter if train else self.limiter).pause(retry_after)
                    if attempt < self.max_attempts * 3:  # 429s only say "later"; keep waiting longer
                        continue
                if status in _RETRYABLE_STATUSES and attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
                raise self._error(operation, exc, status) from None
            except (ClientRequestError, ConnectionError) as exc:
                if _is_tls_failure(exc):
                    raise CustomVisionError(
                        f"TLS verification failed for Custom Vision at {self.endpoint}.",
                        hint="The endpoint's certificate is not trusted; fix the certificate rather than the check.",
                    ) from None
                if attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
                raise CustomVisionError(
                    f"Could not reach Custom Vision at {self.endpoint} for {operation} after {attempt} attempts "
                    f"({exc.__class__.__name__}).",
                    hint="Check custom_vision_endpoint and the network; the next run picks up what did not go.",
                    retryable=True,
                ) from None

    def _backoff(self, attempt: int) -> None:
        self.stats.add(retried=1)
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # full jitter keeps parallel workers apart
        budget: _WaitBudget | None = getattr(self.connection.local, "budget", None)
        if budget is not None:
            if delay > budget.remaining:
                raise _over_budget(budget)
            budget.spent += delay
        self._sleep(delay)

    def _error(self, operation: str, exc: CustomVisionErrorException, status: int | None) -> CustomVisionError:
        code = getattr(getattr(exc, "error", None), "code", None)
        message = getattr(getattr(exc, "error", None), "message", None) or ""
        if status in (401, 403):
            return AuthenticationCustomVisionError(
                f"Custom Vision refused the training key ({status}) for {operation}.",
                code=code,
                status=status,
                hint="Check custom_vision_training_key and custom_vision_endpoint (they belong to one resource).",
            )
        if code == "NotFoundProject":
            return CustomVisionError(
                f"Custom Vision has no project {self.project_id} for this training key.",
                code=code,
                status=status,
                hint="Check custom_vision_project_id.",
            )
        retryable = status in _RETRYABLE_STATUSES
        text = message or f"status {status}"
        return CustomVisionError(
            f"Custom Vision refused {operation}: {text}" + (f" ({code})" if code else ""),
            code=code,
            status=status,
            retryable=retryable,
            hint="Try again later." if retryable else None,
        )

    # -- project and tags ----------------------------------------------------------------------------

    def project(self, *, refresh: bool = False) -> ProjectInfo:
        if self._project is None or refresh:
            project = self._call("get project", self._trainer.get_project, self.project_id)
            self._project = self._project_info(project)
        return self._project

    def projects(self) -> list[ProjectInfo]:
        """Every project the training key can see."""
        return [self._project_info(p) for p in self._call("get projects", self._trainer.get_projects)]

    def _project_info(self, project: Any) -> ProjectInfo:
        settings = project.settings
        domain_id = getattr(settings, "domain_id", None)
        domain = self._domains().get(domain_id) if domain_id else None
        kind = "detection" if domain is not None and domain.type == "ObjectDetection" else "classification"
        return ProjectInfo(
            id=project.id,
            name=project.name,
            kind=kind,
            classification_type=getattr(settings, "classification_type", None) if kind == "classification" else None,
            domain_name=domain.name if domain is not None else None,
            description=project.description,
        )

    def _domains(self) -> dict[str, Any]:
        if self.connection.domains is None:
            self.connection.domains = {d.id: d for d in self._call("get domains", self._trainer.get_domains)}
        return self.connection.domains

    def tags(self, *, refresh: bool = False) -> list[TagInfo]:
        if self._tags is None or refresh:
            tags = self._call("get tags", self._trainer.get_tags, self.project_id)
            self._tags = sorted(
                (TagInfo(t.id, t.name, t.type or "Regular", t.image_count or 0) for t in tags),
                key=lambda t: t.name.lower(),
            )
        return list(self._tags)

    def tag_ids(self, names: Sequence[str]) -> list[str]:
        """Ids of the named tags (case-insensitive); an unknown name is an error naming it."""
        by_name = {t.name.lower(): t.id for t in self.tags()}
        missing = [n for n in names if n.lower() not in by_name]
        if missing:
            by_name = {t.name.lower(): t.id for t in self.tags(refresh=True)}
            missing = [n for n in names if n.lower() not in by_name]
        if missing:
            raise TagNameError(
                f"The project has no tag named {', '.join(repr(m) for m in missing)}.",
                hint="Create it first (Add tag), or pick one of the project's tags.",
            )
        return [by_name[n.lower()] for n in names]

    def validate_tag_name(self, name: str) -> str:
        """The cleaned name, or TagNameError saying what is wrong with it."""
        cleaned = unicodedata.normalize("NFC", name or "").strip()
        if not cleaned:
            raise TagNameError("A tag name cannot be empty.")
        if len(cleaned) > MAX_TAG_NAME_LENGTH:
            raise TagNameError(f"A tag name can have at most {MAX_TAG_NAME_LENGTH} characters ({len(cleaned)} given).")
        if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in cleaned):
            raise TagNameError("A tag name cannot contain control characters.")
        if any(t.name.lower() == cleaned.lower() for t in self.tags(refresh=True)):
            raise TagNameError(f"The project already has a tag named {cleaned!r}.")
        return cleaned

    def create_tag(self, name: str, *, description: str | None = None) -> TagInfo:
        cleaned = self.validate_tag_name(name)
        try:
            tag = self._call("create tag", self._trainer.create_tag, self.project_id, cleaned, description=description)
        except CustomVisionError as exc:
            if exc.code in ("BadRequestTagNameNotUnique", "BadRequestTagName", "BadRequestExceedTagPerProjectLimit"):
                raise TagNameError(str(exc.message)) from None
            raise
        self._tags = None
        return TagInfo(tag.id, tag.name, tag.type or "Regular", tag.image_count or 0)

    # -- images ----------------------------------------------------------------------------------------

    def upload(
        self, items: Sequence[UploadItem], *, batch_metadata: Mapping[str, str] | None = None
    ) -> list[UploadResult]:
        """Upload one batch (<= 64 images, <= MAX_BATCH_BYTES); one result per item, in order.

        `batch_metadata` goes on every image of the batch (Custom Vision's metadata is per batch); an empty
        value is left out (the service may refuse it). A 429/5xx/dropped connection is retried; content that
        got in before a dropped answer comes back as a duplicate of itself, so a retry never adds an image
        twice. A 400 that refuses the whole batch is answered by sending it again in halves, down to single
        images, before any image is called refused; an image refused alone with "No valid image files" whose
        content is in the project, and an OKDuplicate that does not name its image, are found in the project by
        content hash (see `find_by_content`).
        """
        if not items:
            return []
        if len(items) > MAX_IMAGES_PER_BATCH:
            raise ValueError(f"at most {MAX_IMAGES_PER_BATCH} images per batch")
        metadata = {k: v for k, v in (batch_metadata or {}).items() if v != ""}
        check_metadata(metadata)
        return self._upload(list(items), metadata, split=False)

    def _upload(self, items: list[UploadItem], metadata: dict[str, str], *, split: bool) -> list[UploadResult]:
        entries = [
            ImageFileCreateEntry(
                name=item.name,
                contents=item.data,
                tag_ids=list(item.tag_ids) or None,
                regions=[
                    SdkRegion(tag_id=r.tag_id, left=r.left, top=r.top, width=r.width, height=r.height)
                    for r in item.regions
                ]
                or None,
            )
            for item in items
        ]
        batch = ImageFileCreateBatch(images=entries, metadata=metadata or None)
        try:
            summary = self._call("upload images", self._trainer.create_images_from_files, self.project_id, batch)
        except CustomVisionError as exc:
            if exc.status != 400 or exc.code in _BATCH_WIDE_400:
                raise
            if len(items) > 1:
                # Refused whole: one reading is "every image is a duplicate", another is one bad image. Halves
                # tell them apart, in at most 2n-1 calls, each paced like any other.
                self.stats.add(split_batches=1)
                half = len(items) // 2
                return self._upload(items[:half], metadata, split=True) + self._upload(
                    items[half:], metadata, split=True
                )
            [item] = items
            if exc.code == "BadRequestImageBatch" or NO_VALID_IMAGES in str(exc.message):
                image_id = self.find_by_content(_item_hashes(item))
                if image_id:
                    return [self._duplicate_result(item, image_id)]
            if not split:
                raise
            return [UploadResult(item.name, PushStatus.REJECTED, None, exc.message, exc.code)]
        results = list(summary.images or [])
        by_position = _match_results(items, results)
        outcomes = []
        for item, result in zip(items, by_position, strict=True):
            if result is None:
                outcomes.append(UploadResult(item.name, PushStatus.FAILED, None, "Custom Vision did not answer for it"))
                continue
            status, text = _IMAGE_STATUS.get(result.status, (PushStatus.FAILED, f"Custom Vision said {result.status}"))
            image_id = result.image.id if result.image is not None else None
            if status == PushStatus.DUPLICATE and not image_id:
                # No public capture says an OKDuplicate names its image; find it by content instead.
                image_id = self.find_by_content(_item_hashes(item))
            if status in (PushStatus.PUSHED, PushStatus.DUPLICATE) and not image_id:
                status, text = PushStatus.FAILED, f"Custom Vision said {result.status} without an image"
            if status == PushStatus.DUPLICATE and image_id and (item.tag_ids or item.regions):
                status, text = self._label_duplicate(image_id, item, text)
            outcomes.append(UploadResult(item.name, status, image_id, text, result.status))
        return outcomes

    def _duplicate_result(self, item: UploadItem, image_id: str) -> UploadResult:
        """An image refused alone whose content the project holds: that image is ours, with this upload's labels."""
        status, text = PushStatus.DUPLICATE, "the same image is already in the project"
        if item.tag_ids or item.regions:
            status, text = self._label_duplicate(image_id, item, text)
        return UploadResult(item.name, status, image_id, text, "OKDuplicate")

    # -- reconciling with the project ----------------------------------------------------------------

    def image_count(self) -> int:
        """How many images the project holds, tagged or not, in one call."""
        self.stats.add(listings=1)
        return int(self._call("count images", self._trainer.get_image_count, self.project_id, tagging_status="All"))

    def project_index(self, *, refresh: bool = False) -> ProjectIndex:
        """The project's images by provenance and content: listed once (256 a call), then topped up; `refresh`
        lists it afresh (a push run starts from a fresh one: images may have been deleted in the portal)."""
        with self._index_lock:
            if refresh:
                self._index = None
            return self._index_locked()

    def _index_locked(self) -> ProjectIndex:
        if self._index is None:
            index = ProjectIndex()
            for image in self.iter_images(page_size=256):
                index.add(image)
            self._index = index
        return self._index

    def _top_up(self, index: ProjectIndex) -> None:
        """Add the images that came in since the index was built: newest first, until a known one."""
        skip = 0
        while True:
            page = self._images_page(order_by="Newest", take=256, skip=skip)
            added = [index.add(_project_image(image)) for image in page]
            if len(page) < 256 or not all(added):
                return
            skip += 256

    def find_by_content(self, hashes: Sequence[str | None]) -> str | None:
        """The id of the project's image with one of these sha256s (plaintext or uploaded bytes), or None.

        The index (built once) answers first; then the images that came in since; then, for images without
        `sha256` metadata (batch provenance), their originals are downloaded and hashed, each once per client.
        """
        wanted = [h for h in hashes if h]
        if not wanted:
            return None
        with self._index_lock:
            index = self._index_locked()
            found = index.content(wanted)
            if found is None:
                self._top_up(index)
                found = index.content(wanted)
            if found is None and index.unhashed:
                found = self._hash_originals(index, wanted)
            return found

    def known_content(self, hashes: Sequence[str | None]) -> str | None:
        """Like `find_by_content` without asking the project for newer images, and hashing only the originals of
        images we pushed in batches: what reconciling each frame of a run with the index costs."""
        wanted = [h for h in hashes if h]
        with self._index_lock:
            index = self._index_locked()
            found = index.content(wanted)
            if found is None and index.unhashed:
                found = self._hash_originals(index, wanted, ours_only=True)
            return found

    def _hash_originals(self, index: ProjectIndex, wanted: Sequence[str], *, ours_only: bool = False) -> str | None:
        for image_id, (url, ours) in list(index.unhashed.items()):
            if ours_only and not ours:
                continue
            data = self._download_original(url) if url else None
            if data is None:
                continue  # unreadable now: left in `unhashed` for a later lookup
            index.unhashed.pop(image_id, None)
            digest = hashlib.sha256(data).hexdigest()
            index.by_content.setdefault(digest, image_id)
            if digest in wanted:
                return image_id
        return None

    def original_image(self, image: ProjectImage) -> bytes:
        """An image's original bytes, from the URL the service gives for it (storage, not a Training API call)."""
        data = self._download_original(image.original_url) if image.original_url else None
        if data is None:
            raise CustomVisionError(
                f"Could not download image {image.id} of the project.", hint="Try again later.", retryable=True
            )
        return data

    def _download_original(self, url: str) -> bytes | None:
        """An image's original bytes from its (SAS) URL: storage, not a Training API transaction."""
        self.stats.add(originals_hashed=1)
        try:
            response = requests.get(url, timeout=self.timeout_seconds)
        except requests.RequestException:
            return None
        return response.content if response.status_code == 200 else None

    def _label_duplicate(self, image_id: str, item: UploadItem, text: str) -> tuple[PushStatus, str]:
        """OKDuplicate answers with the image already in the project, and the service need not have given it the
        upload's tags and boxes: apply them to that image (idempotently) and say so."""
        try:
            labelled = self.label_image(image_id, item.tag_ids, item.regions)
        except CustomVisionError as exc:
            status = PushStatus.FAILED if exc.retryable else PushStatus.REJECTED
            return status, f"{text}, but its tags or boxes could not be added: {exc.message}"
        if not labelled.complete:
            return PushStatus.REJECTED, f"{text}, but {labelled.describe()}"
        return PushStatus.DUPLICATE, f"duplicate, {labelled.describe()}"

    def label_image(self, image_id: str, tag_ids: Sequence[str] = (), regions: Sequence[Region] = ()) -> Labelled:
        """Give an image already in the project these tags and boxes; those it has already are left as they are.

        A box's tag tags the image by itself (object detection), so only the other tags go as image tags.
        """
        region_tags = {r.tag_id for r in regions}
        image_tags = [t for t in dict.fromkeys(tag_ids) if t not in region_tags]
        counts = dict.fromkeys(
            ("tags_added", "tags_present", "tags_refused", "regions_added", "regions_present", "regions_refused"), 0
        )
        for start in range(0, len(image_tags), MAX_TAGS_PER_IMAGE_CALL):
            entries = [
                ImageTagCreateEntry(image_id=image_id, tag_id=t)
                for t in image_tags[start : start + MAX_TAGS_PER_IMAGE_CALL]
            ]
            summary = self._call("tag images", self._trainer.create_image_tags, self.project_id, entries)
            counts["tags_added"] += len(summary.created or [])
            counts["tags_present"] += len(summary.duplicated or [])
            counts["tags_refused"] += len(summary.exceeded or [])
        for start in range(0, len(regions), MAX_REGIONS_PER_CALL):
            entries = [
                ImageRegionCreateEntry(
                    image_id=image_id, tag_id=r.tag_id, left=r.left, top=r.top, width=r.width, height=r.height
                )
                for r in regions[start : start + MAX_REGIONS_PER_CALL]
            ]
            summary = self._call("add regions", self._trainer.create_image_regions, self.project_id, entries)
            counts["regions_added"] += len(summary.created or [])
            counts["regions_present"] += len(summary.duplicated or [])
            counts["regions_refused"] += len(summary.exceeded or [])
        # The cached tags' image counts go stale here, as they do with any upload; clearing the cache from an
        # upload thread would race with tag_ids() on the run's thread.
        return Labelled(**counts)

    def add_image_tags(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Tag existing images: (image id, tag id) pairs, 128 per call."""
        for start in range(0, len(pairs), MAX_TAGS_PER_IMAGE_CALL):
            chunk = pairs[start : start + MAX_TAGS_PER_IMAGE_CALL]
            entries = [ImageTagCreateEntry(image_id=i, tag_id=t) for i, t in chunk]
            self._call("tag images", self._trainer.create_image_tags, self.project_id, entries)
        self._tags = None

    def remove_image_tags(self, image_ids: Sequence[str], tag_ids: Sequence[str]) -> None:
        for start in range(0, len(image_ids), MAX_IDS_PER_DELETE_TAGS):
            for tag_start in range(0, len(tag_ids), 20):
                self._call(
                    "untag images",
                    self._trainer.delete_image_tags,
                    self.project_id,
                    list(image_ids[start : start + MAX_IDS_PER_DELETE_TAGS]),
                    list(tag_ids[tag_start : tag_start + 20]),
                )
        self._tags = None

    def add_regions(self, image_id: str, regions: Sequence[Region]) -> list[str]:
        """Add boxes to an image already in the project; returns the new region ids."""
        created: list[str] = []
        for start in range(0, len(regions), MAX_REGIONS_PER_CALL):
            chunk = regions[start : start + MAX_REGIONS_PER_CALL]
            entries = [
                ImageRegionCreateEntry(
                    image_id=image_id, tag_id=r.tag_id, left=r.left, top=r.top, width=r.width, height=r.height
                )
                for r in chunk
            ]
            summary = self._call("add regions", self._trainer.create_image_regions, self.project_id, entries)
            created += [r.region_id for r in summary.created or []]
        return created

    def delete_regions(self, region_ids: Sequence[str]) -> None:
        for start in range(0, len(region_ids), MAX_REGIONS_PER_CALL):
            self._call(
                "delete regions",
                self._trainer.delete_image_regions,
                self.project_id,
                list(region_ids[start : start + MAX_REGIONS_PER_CALL]),
            )

    def images_by_ids(self, image_ids: Sequence[str]) -> list[ProjectImage]:
        found: list[ProjectImage] = []
        for start in range(0, len(image_ids), 256):
            images = self._call(
                "get images", self._trainer.get_images_by_ids, self.project_id, list(image_ids[start : start + 256])
            )
            found += [_project_image(i) for i in images]
        return found

    def iter_images(self, *, tagging_status: str | None = None, page_size: int = 256) -> Iterator[ProjectImage]:
        """Every image of the project (oldest first), page by page."""
        skip = 0
        while True:
            page = self._images_page(tagging_status=tagging_status, order_by="Oldest", take=page_size, skip=skip)
            for image in page:
                yield _project_image(image)
            if len(page) < page_size:
                return
            skip += page_size

    def _images_page(self, *, order_by: str, take: int, skip: int, tagging_status: str | None = None) -> list[Any]:
        self.stats.add(listings=1)
        return self._call(
            "get images",
            self._trainer.get_images,
            self.project_id,
            tagging_status=tagging_status,
            order_by=order_by,
            take=take,
            skip=skip,
        )

    def image_counts(self) -> tuple[int, int]:
        """(tagged, untagged) images in the project."""
        tagged = self._call("count tagged", self._trainer.get_tagged_image_count, self.project_id)
        untagged = self._call("count untagged", self._trainer.get_untagged_image_count, self.project_id)
        return int(tagged), int(untagged)

    # -- training ------------------------------------------------------------------------------------

    def train(self) -> IterationInfo:
        self._latest_trained = None
        try:
            iteration = self._call("train", self._trainer.train_project, self.project_id, train=True)
        except CustomVisionError as exc:
            if exc.status == 400:
                raise TrainingNotPossible(
                    str(exc.message).removeprefix("Custom Vision refused train: "), code=exc.code, status=400
                ) from None
            raise
        return _iteration_info(iteration)

    def iterations(self) -> list[IterationInfo]:
        found = [
            _iteration_info(i) for i in self._call("get iterations", self._trainer.get_iterations, self.project_id)
        ]
        return sorted(found, key=lambda i: i.created or datetime.min.replace(tzinfo=UTC), reverse=True)

    def iteration(self, iteration_id: str) -> IterationInfo:
        return _iteration_info(self._call("get iteration", self._trainer.get_iteration, self.project_id, iteration_id))

    def trained_iterations(self) -> list[IterationInfo]:
        """The project's iterations that finished training, newest first."""
        return [i for i in self.iterations() if i.trained]

    def latest_trained_iteration(self) -> IterationInfo:
        """The newest trained iteration (what the portal's quick test uses); ProjectNotTrained when there is none.

        Read again after TRAINED_ITERATION_SECONDS (or once this client trains): the Review page asks on every
        run while suggestions are on, and each reading is a transaction under the key's quota.
        """
        known = self._latest_trained
        if known is not None and time.monotonic() - known[0] < TRAINED_ITERATION_SECONDS:
            return known[1]
        trained = self.trained_iterations()
        if not trained:
            raise ProjectNotTrained(
                f"Custom Vision project {self.project_id} has no trained iteration to suggest tags with.",
                code="BadRequestIterationIsNotTrained",
                status=400,
                hint="Train the project first (push tagged images, then Train).",
            )
        self._latest_trained = (time.monotonic(), trained[0])
        return trained[0]

    def trained_iteration(self, iteration_id: str) -> IterationInfo:
        """The named iteration, if it finished training; ProjectNotTrained otherwise (unknown or still training)."""
        try:
            iteration = self.iteration(iteration_id)
        except CustomVisionError as exc:
            if exc.code != "NotFoundIteration":
                raise
            raise ProjectNotTrained(
                f"Custom Vision project {self.project_id} has no iteration {iteration_id}.",
                code=exc.code,
                status=exc.status,
                hint="Name one of the project's trained iterations, or none for the latest; train the project first "
                "if it has none.",
            ) from None
        if not iteration.trained:
            raise ProjectNotTrained(
                f"Iteration {iteration.name!r} of Custom Vision project {self.project_id} is {iteration.status}, "
                "not trained.",
                code="BadRequestIterationIsNotTrained",
                status=400,
                hint="Wait for its training to finish, or name another iteration; train the project first if it "
                "has none.",
            )
        return iteration

    def quick_test(self, image: bytes, iteration_id: str) -> list[Prediction]:
        """The iteration's predictions for an image that is not added to the project (QuickTestImage, store=false).

        One prediction transaction, paced, retried and budgeted like every call. An untrained project or an
        iteration it does not have is ProjectNotTrained.
        """
        trainer = self._trainer
        try:
            answer = self._call(
                "quick test",
                # A new stream per attempt: a retry must send the whole image again.
                lambda: trainer.quick_test_image(
                    self.project_id, io.BytesIO(image), iteration_id=iteration_id, store=False
                ),
            )
        except CustomVisionError as exc:
            if exc.code in ("BadRequestIterationIsNotTrained", "NotFoundIteration"):
                raise ProjectNotTrained(
                    f"Custom Vision project {self.project_id} cannot predict with iteration {iteration_id}: "
                    f"{exc.message.removeprefix('Custom Vision refused quick test: ')}",
                    code=exc.code,
                    status=exc.status,
                    hint="Train the project first, or name one of its trained iterations.",
                ) from None
            raise
        self.stats.add(predictions=1)
        return [_prediction(p) for p in answer.predictions or []]

    def wait_for_training(
        self,
        iteration_id: str,
        *,
        timeout: float = 3600,
        poll_seconds: float = 2.0,
        on_poll: Callable[[IterationInfo], None] | None = None,
    ) -> IterationInfo:
        deadline = time.monotonic() + timeout
        while True:
            info = self.iteration(iteration_id)
            if on_poll:
                on_poll(info)
            if info.finished or time.monotonic() > deadline:
                return info
            self._sleep(poll_seconds)  # polling the service's status with a deadline


class AuthenticationCustomVisionError(CustomVisionError, AuthenticationError):
    reason = "not authorised"


class ProjectNotTrained(CustomVisionError):
    """The project has no trained iteration to predict with, or not the one named."""

    reason = "not trained"


def check_metadata(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"Custom Vision takes at most {MAX_METADATA_PAIRS} metadata pairs per image")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise ValueError(f"metadata key {key[:20]!r}... must have 1..{MAX_METADATA_KEY} characters")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r} is over {MAX_METADATA_VALUE} characters")


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # msrest wraps requests wraps urllib3 wraps ssl
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        current = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
    return False


def _retry_after(response: Any) -> float | None:
    """The seconds a 429's Retry-After asks for, or None when it has none (or one we cannot read)."""
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.5, min(120.0, float(header)))
    except (TypeError, ValueError):
        return None


def _item_hashes(item: UploadItem) -> list[str | None]:
    """The hashes an image of this item's content may be indexed under: the plaintext's and the bytes sent."""
    return [item.sha256, item.metadata.get("sha256"), hashlib.sha256(item.data).hexdigest()]


def _utc(moment: datetime | None) -> datetime | None:
    """Custom Vision's timestamps are UTC; some answers carry no timezone (the SDK then gives naive datetimes)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _match_results(items: Sequence[UploadItem], results: list[Any]) -> list[Any]:
    """Results by item: by `sourceUrl` (the entry name), else by position."""
    by_name: dict[str, list[Any]] = {}
    for result in results:
        by_name.setdefault((result.source_url or "").strip('"'), []).append(result)
    matched = []
    for index, item in enumerate(items):
        candidates = by_name.get(item.name)
        if candidates:
            matched.append(candidates.pop(0))
        else:
            matched.append(results[index] if index < len(results) and len(results) == len(items) else None)
    return matched


def _project_image(image: Any) -> ProjectImage:
    return ProjectImage(
        id=image.id,
        width=image.width,
        height=image.height,
        tags=tuple(t.tag_name for t in image.tags or []),
        tag_ids=tuple(t.tag_id for t in image.tags or []),
        regions=tuple(
            {
                "region_id": r.region_id,
                "tag_id": r.tag_id,
                "tag_name": r.tag_name,
                "left": r.left,
                "top": r.top,
                "width": r.width,
                "height": r.height,
            }
            for r in image.regions or []
        ),
        metadata=dict(image.metadata or {}),
        created=_utc(image.created),
        original_url=image.original_image_uri,
    )


def _prediction(prediction: Any) -> Prediction:
    box = prediction.bounding_box
    region = (
        None
        if box is None
        else Region(prediction.tag_id, float(box.left), float(box.top), float(box.width), float(box.height))
    )
    return Prediction(prediction.tag_id, prediction.tag_name, float(prediction.probability), region)


def _iteration_info(iteration: Any) -> IterationInfo:
    return IterationInfo(
        iteration.id, iteration.name, iteration.status, _utc(iteration.created), _utc(iteration.trained_at)
    )


__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_IMAGES_PER_BATCH",
    "CustomVisionClient",
    "CustomVisionConnection",
    "CustomVisionError",
    "IterationInfo",
    "Labelled",
    "Prediction",
    "ProjectImage",
    "ProjectIndex",
    "ProjectInfo",
    "ProjectNotTrained",
    "PushStatus",
    "RateLimiter",
    "Region",
    "TagInfo",
    "TagNameError",
    "TrainingNotPossible",
    "UploadItem",
    "UploadResult",
    "WaitBudgetExceeded",
]
