"""Azure Custom Vision Training API emulator (v3.3 and v3.4-preview routes) for the devstack and the tests.

The HTTP layer lives here: the API-gateway behaviour (``Training-Key`` check, per-key rate limits with
``Retry-After``), fault injection, routing by the vendored OpenAPI document, wire JSON shapes and the
admin routes under ``/_emulator/``. State and service rules are in :mod:`devstack.customvision_store`.

Run it with ``python -m devstack.customvision_server --host 127.0.0.1 --port 5005``; ``--help`` lists
the options. ``--profile strict`` (or ``CustomVisionEmulatorConfig(profile="strict")``) plays the stricter
reading of every behaviour the public notes leave uncertain (see :mod:`devstack.profiles`).

Predictions (QuickTestImage, SuggestTagsAndRegions, QuerySuggestedImages, QuerySuggestedImageCount) come from
the iteration's nearest-neighbour snapshot (see :mod:`devstack.customvision_store`). Every frame predicted is a
prediction transaction: ``GET /_emulator/stats`` reports them in all and per operation, and
``GET /_emulator/projects/{id}/predictions`` per project, with the quick tests kept by ``store=true``.

Upload counters: ``GET /_emulator/projects/{id}/uploads`` (and ``GET /_emulator/uploads`` for every project)
report each image entry the project received, how it was answered and how often each entry name came, so a
client's re-uploads are measured rather than hidden by the service's OKDuplicate (see :class:`UploadCounters`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import contextvars
import json
import logging
import math
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.customvision_store import (
    CONTENT_TYPES,
    DEFAULT_SUGGESTED_TAKE,
    DOMAINS,
    DOMAINS_BY_ID,
    MAX_BATCH_IMAGES,
    MAX_BATCH_TAG_IDS,
    MAX_IMAGE_ID_BATCH,
    MAX_METADATA_IMAGE_BATCH,
    MAX_REGION_BATCH,
    MAX_TAKE,
    RESIZED_SIDE,
    SUGGESTION_SORTS,
    THUMBNAIL_SIDE,
    CustomVisionStore,
    CVError,
    Domain,
    DuplicateOnlyBatch,
    ImagePrediction,
    ImageRegion,
    Iteration,
    NewImage,
    Project,
    RegionSpec,
    StoredImage,
    SuggestedImage,
    Tag,
    TagPrediction,
    TierLimits,
    bad_request,
    not_found,
    render_derived,
)
from devstack.faults import FaultPlan, FaultRule, abort_connection, drain, parse_fault_plan
from devstack.profiles import PROFILE_NAMES, AzureProfile, get_profile

log = logging.getLogger("devstack.customvision")

SPEC_PATH = Path(__file__).with_name("specs") / "customvision-training-v3.4-preview.json"
API_PREFIX = re.compile(r"^/customvision/v(3\.3|3\.4-preview)/training(?=/|$)", re.IGNORECASE)
BLOB_PATH = re.compile(r"^/blobs/([0-9a-f-]{36})/(original|thumbnail|resized)$")
BLOB_OPERATION = "GetImageBlob"  # not a service operation; faults may name it to break image downloads
TRAIN_OPERATION = "TrainProject"
# The operations that create images; every entry they receive is counted (see UploadCounters).
CREATE_IMAGE_OPERATIONS = frozenset(
    {"CreateImagesFromFiles", "CreateImagesFromData", "CreateImagesFromUrls", "CreateImagesFromPredictions"}
)
JSON_TYPE = "application/json; charset=utf-8"

# The API Management gateway in front of the service answers auth and throttling itself, with its own
# body shape ({"error": {...}}) rather than the service's CustomVisionError.
GATEWAY_401_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key"
    " for an active subscription and use a correct regional API endpoint for your resource."
)


def gateway_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": str(code), "message": message}}


def throttle_message(operation_id: str, version: str, tier: str, retry_after: int) -> str:
    # Text of the real gateway (Azure-Samples/cognitive-services-node-sdk-samples#47), "second" included.
    return (
        f"Requests to the {operation_id} Operation under Custom_Vision_Training_{version} have exceeded rate"
        f" limit of your current Custom_Vision.Training {tier} pricing tier. Please retry after {retry_after}"
        " second. To increase your rate limit switch to a paid tier."
    )


# --- configuration and clock --------------------------------------------------------------------------


@dataclass
class CustomVisionEmulatorConfig:
    training_keys: tuple[str, ...] = ("devstack-training-key",)  # accepted Training-Key values
    tier: str = "S0"  # "F0" or "S0": quotas (images/project 5,000 vs 100,000; tags 50 vs 500; projects 2 vs 100)
    rate_per_second: float | None = 10  # transactions/s per training key for non-train calls; None = unlimited
    train_rate_per_second: float | None = None  # default by tier: F0 2/s, S0 10/s
    training_seconds: float = 2.0  # delay before an iteration goes Training -> Completed
    state_dir: str | None = None  # None = in memory (tests); a folder = SQLite (and image files) persisted there
    public_url: str | None = None  # base URL used in thumbnailUri/originalImageUri (default: from the request)
    # Overrides of the tier's quotas, e.g. a tiny image quota to test ErrorLimitExceed, or more projects for a
    # long test session that never deletes its projects.
    images_per_project: int | None = None
    tags_per_project: int | None = None
    max_projects: int | None = None
    faults: list[dict[str, Any]] | dict[str, Any] | None = None  # initial plan, as for POST /_emulator/faults
    # "default" or "strict": which reading of the uncertain service behaviours to play (devstack/profiles.py).
    profile: str = "default"
    # CreateImages* calls/s per key; None: by profile and tier (strict F0: 2/s), else the general rate only.
    upload_rate_per_second: float | None = None

    def __post_init__(self) -> None:
        TierLimits.for_tier(self.tier)  # fail fast on an unknown tier
        self.tier = self.tier.upper()
        self.profile = get_profile(self.profile).name  # fail fast on an unknown profile
        if isinstance(self.training_keys, str):
            self.training_keys = (self.training_keys,)

    @property
    def azure_profile(self) -> AzureProfile:
        return get_profile(self.profile)

    @property
    def effective_upload_rate(self) -> float | None:
        if self.upload_rate_per_second is not None:
            return self.upload_rate_per_second
        return self.azure_profile.f0_upload_rate_per_second if self.tier == "F0" else None

    @property
    def limits(self) -> TierLimits:
        base = TierLimits.for_tier(self.tier)
        return TierLimits(
            max_projects=self.max_projects or base.max_projects,
            max_images_per_project=self.images_per_project or base.max_images_per_project,
            max_tags_per_project=self.tags_per_project or base.max_tags_per_project,
        )

    @property
    def effective_train_rate(self) -> float | None:
        if self.train_rate_per_second is not None:
            return self.train_rate_per_second
        return 2.0 if self.tier == "F0" else 10.0  # Limits and quotas: TrainProject calls per second


class ManualClock:
    """A clock tests move by hand: rate-limit refills and training completion follow it, not wall time."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


# --- rate limiting ------------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """``rate`` tokens per second with a burst of one second's worth (at least one token)."""

    rate: float
    tokens: float
    updated: float

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate)

    def take(self, now: float) -> float | None:
        """None when a token was taken, else the seconds until one is available."""
        elapsed = max(0.0, now - self.updated)  # a clock set backwards never mints tokens
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return None
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per (training key, bucket name); the service limits TrainProject separately."""

    def __init__(self, rates: dict[str, float | None], clock: Callable[[], float]) -> None:
        self._rates = rates
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, bucket: str) -> int | None:
        """None to let the call through, else the Retry-After value in whole seconds (>= 1)."""
        rate = self._rates.get(bucket)
        if rate is None or rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            state = self._buckets.get((key, bucket))
            if state is None:
                state = self._buckets[(key, bucket)] = TokenBucket(rate, max(1.0, rate), now)
            wait = state.take(now)
        return None if wait is None else max(1, math.ceil(wait - 1e-9))

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


# --- counters -----------------------------------------------------------------------------------------


class Stats:
    """What the emulator answered: requests per operation, statuses, throttling and faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.statuses: dict[str, Counter[int]] = {}
            self.throttled: Counter[str] = Counter()  # 429s from the rate limiter, per operation
            self.answered_429 = 0  # every 429, throttling and injected
            self.unauthorized = 0
            self.faults_fired: Counter[str] = Counter()  # per kind
            self.faults_by_operation: Counter[str] = Counter()
            # Prediction transactions (frames predicted), per operation and per project.
            self.predictions: Counter[str] = Counter()
            self.predictions_by_project: dict[str, Counter[str]] = {}

    def request(self, operation_id: str) -> None:
        with self._lock:
            self.requests[operation_id] += 1

    def status(self, operation_id: str, status: int) -> None:
        with self._lock:
            self.statuses.setdefault(operation_id, Counter())[status] += 1
            if status == 429:
                self.answered_429 += 1

    def throttle(self, operation_id: str) -> None:
        with self._lock:
            self.throttled[operation_id] += 1

    def unauthorized_request(self) -> None:
        with self._lock:
            self.unauthorized += 1

    def fault(self, operation_id: str, kind: str) -> None:
        with self._lock:
            self.faults_fired[kind] += 1
            self.faults_by_operation[f"{operation_id}:{kind}"] += 1

    def predicted(self, operation_id: str, project_id: str, frames: int) -> None:
        """Count ``frames`` prediction transactions made by one call (answers from kept suggestions are free)."""
        if frames <= 0:
            return
        with self._lock:
            self.predictions[operation_id] += frames
            self.predictions_by_project.setdefault(project_id, Counter())[operation_id] += frames

    def project_predictions(self, project_id: str) -> dict[str, Any]:
        with self._lock:
            counts = self.predictions_by_project.get(project_id, Counter())
            return {"transactions": sum(counts.values()), "byOperation": dict(counts)}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "statuses": {op: {str(s): n for s, n in c.items()} for op, c in self.statuses.items()},
                "throttled": sum(self.throttled.values()),
                "throttledByOperation": dict(self.throttled),
                "answered429": self.answered_429,
                "unauthorized": self.unauthorized,
                "faultsFired": dict(self.faults_fired),
                "faultsFiredByOperation": dict(self.faults_by_operation),
                "predictionTransactions": sum(self.predictions.values()),
                "predictionTransactionsByOperation": dict(self.predictions),
            }


class UploadCounters:
    """Every image entry a project received and how it was answered, so re-uploads are measured.

    Per project: ``entries`` that reached the service (the work was done, whatever the answer),
    ``entriesRefusedBeforeWork`` (in calls answered 401/429/5xx or reset before the work: nothing stored),
    ``entriesAnswerLost`` (the work was done, the answer was reset away) and ``entriesAnswerLate`` (held
    back by a "slow" fault: a client may have given up and sent them again), ``okDuplicate`` answers,
    ``duplicatesRefused`` (entries of whole batches refused because every image was already in the project,
    strict profile) and, per entry name (the file name, for the Curator the source blob), how often it came
    and which images it produced or matched. In memory only: a restart starts from zero.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        with self._lock:
            self._projects.clear()

    def _project(self, project_id: str) -> dict[str, Any]:
        entry = self._projects.get(project_id)
        if entry is None:
            entry = self._projects[project_id] = {
                "calls": 0,
                "entries": 0,
                "entriesRefusedBeforeWork": 0,
                "entriesAnswerLost": 0,
                "entriesAnswerLate": 0,
                "okDuplicate": 0,
                "duplicatesRefused": 0,
                "statuses": Counter(),
                "byName": {},
            }
        return entry

    def _name(self, project: dict[str, Any], name: str) -> dict[str, Any]:
        return project["byName"].setdefault(name, {"entries": 0, "statuses": Counter(), "imageIds": []})

    def received(self, project_id: str, outcomes: Sequence[tuple[str, str, str | None]]) -> None:
        """A call the service worked on: (entry name, ImageCreateStatus or whole-call code, image id)."""
        with self._lock:
            project = self._project(project_id)
            project["calls"] += 1
            for name, status, image_id in outcomes:
                project["entries"] += 1
                project["statuses"][status] += 1
                if status == "OKDuplicate":
                    project["okDuplicate"] += 1
                elif status == DUPLICATES_REFUSED:
                    project["duplicatesRefused"] += 1
                per_name = self._name(project, name)
                per_name["entries"] += 1
                per_name["statuses"][status] += 1
                if image_id and image_id not in per_name["imageIds"]:
                    per_name["imageIds"].append(image_id)

    def refused_before_work(self, project_id: str, names: Sequence[str]) -> None:
        with self._lock:
            project = self._project(project_id)
            project["entriesRefusedBeforeWork"] += len(names)
            for name in names:
                self._name(project, name).setdefault("refusedBeforeWork", 0)
                self._name(project, name)["refusedBeforeWork"] += 1

    def answer_lost(self, project_id: str, count: int, *, late: bool = False) -> None:
        with self._lock:
            self._project(project_id)["entriesAnswerLate" if late else "entriesAnswerLost"] += count

    def snapshot(self, project_id: str | None = None, *, names: bool = True) -> dict[str, Any]:
        def view(project: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in project.items() if k not in ("statuses", "byName")}
            out["statuses"] = dict(project["statuses"])
            if names:
                out["byName"] = {
                    name: {**data, "statuses": dict(data["statuses"]), "imageIds": list(data["imageIds"])}
                    for name, data in project["byName"].items()
                }
            return out

        with self._lock:
            if project_id is not None:
                return view(self._projects.get(project_id) or UploadCounters()._project(project_id))
            return {pid: view(project) for pid, project in self._projects.items()}


# The status counted for each entry of a batch refused whole because all of it was already in the project.
DUPLICATES_REFUSED = "RefusedAllDuplicates"


def upload_entry_names(operation_id: str, headers: Headers, body: bytes) -> list[str]:
    """The entry names of a create-images request's body (what the counters key on); [] when unreadable."""
    try:
        if operation_id == "CreateImagesFromData":
            content_type = headers.get("content-type", "application/octet-stream")
            if content_type.split(";")[0].strip().lower() == "multipart/form-data":
                return [name or "" for name, data in parse_multipart(body, content_type) if data]
            return [""] if body else []
        document = json.loads(body) if body.strip() else {}
        images = document.get("images") if isinstance(document, dict) else None
        if not isinstance(images, list):
            return []
        key = "url" if operation_id == "CreateImagesFromUrls" else "name"
        return [str(e.get(key) or "") if isinstance(e, dict) else "" for e in images]
    except (CVError, ValueError, TypeError):
        return []


# --- wire shapes --------------------------------------------------------------------------------------

# Set while a handler runs: the strict profile writes timestamps without a timezone designator.
_NAIVE_TIMESTAMPS: contextvars.ContextVar[bool] = contextvars.ContextVar("naive_timestamps", default=False)


def iso(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2017-12-19T15:56:10.123Z (no Z under the strict profile)."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return text if _NAIVE_TIMESTAMPS.get() else text + "Z"


def domain_json(domain: Domain) -> dict[str, Any]:
    info: dict[str, Any] = {"description": domain.description}
    if domain.estimated_model_size_mb is not None:
        info["estimatedModelSizeInMegabytes"] = domain.estimated_model_size_mb
    return {
        "id": domain.id,
        "name": domain.name,
        "type": domain.type,
        "exportable": domain.exportable,
        "enabled": domain.enabled,
        "exportablePlatforms": domain.exportable_platforms,
        "modelInformation": info,
    }


def blob_url(base: str, image_id: str, kind: str) -> str:
    return f"{base}/blobs/{image_id}/{kind}"


def project_json(project: Project, base: str) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "settings": {
            "domainId": project.domain_id,
            "classificationType": project.classification_type,
            "targetExportPlatforms": project.target_export_platforms,
            "useNegativeSet": not project.is_detection,
            "imageProcessingSettings": {"augmentationMethods": {}},
            "exportModelContainerUri": project.export_model_container_uri,
            "notificationQueueUri": project.notification_queue_uri,
        },
        "created": iso(project.created),
        "lastModified": iso(project.last_modified),
        "thumbnailUri": blob_url(base, project.thumbnail_image_id, "thumbnail") if project.thumbnail_image_id else "",
        "drModeEnabled": False,
        "status": "Succeeded",
    }


def tag_json(tag: Tag) -> dict[str, Any]:
    return {
        "id": tag.id,
        "name": tag.name,
        "description": tag.description,
        "type": tag.type,
        "imageCount": tag.image_count,
    }


def region_json(region: ImageRegion) -> dict[str, Any]:
    return {
        "regionId": region.region_id,
        "tagName": region.tag_name,
        "created": iso(region.created),
        "tagId": region.tag_id,
        "left": region.left,
        "top": region.top,
        "width": region.width,
        "height": region.height,
    }


def image_json(image: StoredImage, base: str) -> dict[str, Any]:
    # The service sends null, not [], for an image without tags, regions or metadata.
    return {
        "id": image.id,
        "created": iso(image.created),
        "width": image.width,
        "height": image.height,
        "resizedImageUri": blob_url(base, image.id, "resized"),
        "thumbnailUri": blob_url(base, image.id, "thumbnail"),
        "originalImageUri": blob_url(base, image.id, "original"),
        "tags": [{"tagId": t.tag_id, "tagName": t.tag_name, "created": iso(t.created)} for t in image.tags] or None,
        "regions": [region_json(r) for r in image.regions] or None,
        "metadata": image.metadata or None,
    }


def region_entry_json(image_id: str, region: RegionSpec) -> dict[str, Any]:
    return {
        "imageId": image_id,
        "tagId": region.tag_id,
        "left": region.left,
        "top": region.top,
        "width": region.width,
        "height": region.height,
    }


def iteration_json(iteration: Iteration, now: float) -> dict[str, Any]:
    done = iteration.is_completed(now)
    domain = DOMAINS_BY_ID.get(iteration.domain_id)
    exportable = bool(domain and domain.exportable)
    minutes = max(1, math.ceil((iteration.completes_at - iteration.created) / 60)) if done else 0
    return {
        "id": iteration.id,
        "name": iteration.name,
        "status": iteration.status(now),
        "created": iso(iteration.created),
        "lastModified": iso(max(iteration.last_modified, iteration.completes_at) if done else iteration.last_modified),
        "trainedAt": iso(iteration.completes_at) if done else None,
        "projectId": iteration.project_id,
        "exportable": exportable and done,
        "exportableTo": domain.exportable_platforms if domain and exportable else [],
        "domainId": iteration.domain_id,
        "classificationType": iteration.classification_type,
        "trainingType": iteration.training_type,
        "reservedBudgetInHours": iteration.reserved_budget_in_hours,
        "trainingTimeInMinutes": minutes,
        "publishName": iteration.publish_name,
        "originalPublishResourceId": iteration.prediction_resource_id,
        "customBaseModelInfo": None,
        "trainingErrorDetails": None,
    }


def tag_prediction_json(prediction: TagPrediction) -> dict[str, Any]:
    body: dict[str, Any] = {
        "probability": prediction.probability,
        "tagId": prediction.tag_id,
        "tagName": prediction.tag_name,
        "tagType": prediction.tag_type,
    }
    if prediction.box is not None:  # detection only; classification answers carry no boundingBox
        left, top, width, height = prediction.box
        body["boundingBox"] = {"left": left, "top": top, "width": width, "height": height}
    return body


def image_prediction_json(prediction: ImagePrediction) -> dict[str, Any]:
    return {
        "id": prediction.id,
        "project": prediction.project_id,
        "iteration": prediction.iteration_id,
        "created": iso(prediction.created),
        "predictions": [tag_prediction_json(p) for p in prediction.predictions],
    }


def suggestion_json(suggestion: ImagePrediction) -> dict[str, Any]:
    return {**image_prediction_json(suggestion), "predictionUncertainty": suggestion.uncertainty}


def suggested_image_json(item: SuggestedImage, base: str) -> dict[str, Any]:
    image = item.image
    scale = min(1.0, RESIZED_SIDE / max(image.width, image.height))
    return {
        **suggestion_json(item.suggestion),
        "width": max(1, round(image.width * scale)),
        "height": max(1, round(image.height * scale)),
        "resizedImageUri": blob_url(base, image.id, "resized"),
        "thumbnailUri": blob_url(base, image.id, "thumbnail"),
        "originalImageUri": blob_url(base, image.id, "original"),
        "domain": item.suggestion.domain_id,
    }


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if status == 204 or (status == 202 and body is None):
        return Response(status_code=status, headers=headers)
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(content, status_code=status, headers=headers, media_type=JSON_TYPE)


def error_response(error: CVError) -> Response:
    return json_response(error.status, {"code": error.code, "message": error.message})


# --- $filter on image metadata ------------------------------------------------------------------------

_FILTER_TOKEN = re.compile(r"\s*(?:(\()|(\))|'((?:[^']|'')*)'|([^\s()']+))")


def compile_metadata_filter(expression: str) -> Callable[[dict[str, str]], bool]:
    """Compile the GetImages ``$filter``: ``key eq 'v'``, ``ne``, ``and``, ``or`` and parentheses.

    The spec's example reads ``metadata=key1 eq 'value1' and key2 ne 'value2'``, so a leading
    ``metadata=`` is accepted too. ``and`` binds tighter than ``or`` (as in OData); ``ne`` is true for an
    image without the key; string literals double a quote to escape it (``'it''s'``).
    """
    text = expression.strip()
    if text[:9].lower() == "metadata=":
        text = text[9:]
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _FILTER_TOKEN.match(text, pos)
        if m is None:
            raise bad_request("BadRequest", f"Invalid $filter expression near position {pos}.")
        pos = m.end()
        if m.group(1):
            tokens.append(("(", "("))
        elif m.group(2):
            tokens.append((")", ")"))
        elif m.group(3) is not None:
            tokens.append(("str", m.group(3).replace("''", "'")))
        else:
            word = m.group(4)
            kind = word.lower() if word.lower() in ("and", "or", "eq", "ne") else "word"
            tokens.append((kind, word))
    index = 0

    def peek() -> str | None:
        return tokens[index][0] if index < len(tokens) else None

    def take(kind: str) -> str:
        nonlocal index
        if peek() != kind:
            raise bad_request("BadRequest", f"Invalid $filter expression: expected {kind}.")
        value = tokens[index][1]
        index += 1
        return value

    Pred = Callable[[dict[str, str]], bool]

    def parse_or() -> Pred:
        parts = [parse_and()]
        while peek() == "or":
            take("or")
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else (lambda md, ps=tuple(parts): any(p(md) for p in ps))

    def parse_and() -> Pred:
        parts = [parse_atom()]
        while peek() == "and":
            take("and")
            parts.append(parse_atom())
        return parts[0] if len(parts) == 1 else (lambda md, ps=tuple(parts): all(p(md) for p in ps))

    def parse_atom() -> Pred:
        if peek() == "(":
            take("(")
            inner = parse_or()
            take(")")
            return inner
        key = take("str") if peek() == "str" else take("word")
        op = peek()
        if op not in ("eq", "ne"):
            raise bad_request("BadRequest", "Invalid $filter expression: only eq and ne are supported.")
        take(op)
        value = take("str")
        if op == "eq":
            return lambda md: md.get(key) == value
        return lambda md: md.get(key) != value

    if not tokens:
        raise bad_request("BadRequest", "Empty $filter expression.")
    predicate = parse_or()
    if index != len(tokens):
        raise bad_request("BadRequest", "Invalid $filter expression: unexpected trailing input.")
    return predicate


# --- requests -----------------------------------------------------------------------------------------


def canonical_id(value: str, what: str = "id") -> str:
    """Lowercase hyphenated GUID; the service's ids are GUIDs and clients may send any case."""
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise bad_request("BadRequestInvalidIds", f"'{value}' is not a valid {what}.") from None


def loose_id(value: Any) -> str:
    """A GUID when it parses, else the raw text (it then simply matches nothing)."""
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        return str(value)


@dataclass
class RequestContext:
    emulator: CustomVisionEmulator
    operation_id: str
    params: dict[str, str]
    query: list[tuple[str, str]]
    headers: Headers
    body: bytes
    base_url: str
    # Set by the create-images handlers: (entry name, ImageCreateStatus, image id) of every entry.
    upload_outcomes: list[tuple[str, str, str | None]] | None = None

    def q(self, name: str) -> str | None:
        # ASP.NET binds query parameters case-insensitively.
        lowered = name.lower()
        return next((v for k, v in self.query if k.lower() == lowered), None)

    def q_list(self, name: str) -> list[str] | None:
        raw = self.q(name)
        if raw is None:
            return None
        return [part.strip() for part in raw.split(",") if part.strip()]

    def q_ids(self, name: str, what: str = "id") -> list[str] | None:
        values = self.q_list(name)
        return None if values is None else [canonical_id(v, what) for v in values]

    def q_bool(self, name: str, default: bool = False) -> bool:
        raw = self.q(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise bad_request("BadRequest", f"'{raw}' is not a valid value for {name}.")

    def q_int(self, name: str, default: int) -> int:
        raw = self.q(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise bad_request("BadRequest", f"'{raw}' is not a valid value for {name}.") from None

    def param_id(self, name: str, what: str) -> str:
        return canonical_id(self.params[name], what)

    def json_body(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise bad_request("BadRequest", "The request body is not valid JSON.") from None

    @property
    def store(self) -> CustomVisionStore:
        return self.emulator.store

    @property
    def project_id(self) -> str:
        return self.param_id("projectId", "project id")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    literals: int


def load_spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def load_routes(spec: dict[str, Any]) -> list[Route]:
    """Every operation of the vendored OpenAPI document, so unimplemented ones are still recognised."""
    routes = []
    for template, operations in spec["paths"].items():
        regex = "".join(
            f"(?P<{seg[1:-1]}>[^/]+)" if seg.startswith("{") else re.escape(seg)
            for seg in re.split(r"(\{[^}]+\})", template)
            if seg
        )
        literals = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
        for method, operation in operations.items():
            if method == "parameters":
                continue
            routes.append(
                Route(
                    method.upper(),
                    template,
                    operation["operationId"],
                    re.compile(f"^{regex}/?$", re.IGNORECASE),
                    literals,
                )
            )
    # /projects/import must win over /projects/{projectId}: prefer the most literal segments.
    routes.sort(key=lambda r: -r.literals)
    return routes


# --- handlers -----------------------------------------------------------------------------------------

Handler = Callable[[RequestContext], Response]
HANDLERS: dict[str, Handler] = {}


def handles(operation_id: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[operation_id] = fn
        return fn

    return register


def _paging(ctx: RequestContext) -> tuple[bool, int, int]:
    order = (ctx.q("orderBy") or "Newest").lower()
    if order not in ("newest", "oldest"):
        raise bad_request("BadRequest", f"orderBy must be Newest or Oldest, not '{ctx.q('orderBy')}'.")
    take = ctx.q_int("take", 50)
    skip = ctx.q_int("skip", 0)
    if not 0 <= take <= MAX_TAKE:
        raise bad_request("BadRequest", f"take must be between 0 and {MAX_TAKE}.")
    if skip < 0:
        raise bad_request("BadRequest", "skip must not be negative.")
    return order == "newest", take, skip


def _tagging_status(ctx: RequestContext) -> str:
    raw = (ctx.q("taggingStatus") or "All").lower()
    match = {"all": "All", "tagged": "Tagged", "untagged": "Untagged"}.get(raw)
    if match is None:
        raise bad_request("BadRequest", "taggingStatus must be All, Tagged or Untagged.")
    return match


def _check_iteration(ctx: RequestContext, project_id: str) -> None:
    """iterationId is validated; listings serve the workspace (only predictions use an iteration's snapshot)."""
    raw = ctx.q("iterationId")
    if raw:
        ctx.store.get_iteration(project_id, canonical_id(raw, "iteration id"))


def _filter(ctx: RequestContext) -> Callable[[dict[str, str]], bool] | None:
    raw = ctx.q("$filter")
    return compile_metadata_filter(raw) if raw and raw.strip() else None


def _images(ctx: RequestContext, images: Sequence[StoredImage]) -> Response:
    return json_response(200, [image_json(i, ctx.base_url) for i in images])


@handles("GetDomains")
def get_domains(ctx: RequestContext) -> Response:
    return json_response(200, [domain_json(d) for d in DOMAINS])


@handles("GetDomain")
def get_domain(ctx: RequestContext) -> Response:
    domain = DOMAINS_BY_ID.get(ctx.param_id("domainId", "domain id"))
    if domain is None:
        raise not_found("NotFoundDomain", f"Domain {ctx.params['domainId']} not found.")
    return json_response(200, domain_json(domain))


@handles("GetProjects")
def get_projects(ctx: RequestContext) -> Response:
    return json_response(200, [project_json(p, ctx.base_url) for p in ctx.store.list_projects()])


@handles("CreateProject")
def create_project(ctx: RequestContext) -> Response:
    options = ctx.json_body() or {}
    if not isinstance(options, dict):
        raise bad_request("BadRequest", "The project options must be a JSON object.")
    domain = ctx.q("domainId")
    project = ctx.store.create_project(
        name=ctx.q("name"),
        description=ctx.q("description"),
        domain_id=canonical_id(domain, "domain id") if domain else None,
        classification_type=ctx.q("classificationType"),
        target_export_platforms=ctx.q_list("targetExportPlatforms") or [],
        export_model_container_uri=options.get("exportModelContainerUri"),
        notification_queue_uri=options.get("notificationQueueUri"),
    )
    return json_response(200, project_json(project, ctx.base_url))


@handles("GetProject")
def get_project(ctx: RequestContext) -> Response:
    return json_response(200, project_json(ctx.store.get_project(ctx.project_id), ctx.base_url))


@handles("DeleteProject")
def delete_project(ctx: RequestContext) -> Response:
    ctx.store.delete_project(ctx.project_id)
    return json_response(204, None)


@handles("UpdateProject")
def update_project(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    if not isinstance(body, dict):
        raise bad_request("BadRequest", "The updated project must be a JSON object.")
    settings = body.get("settings") or {}
    domain = settings.get("domainId")
    project = ctx.store.update_project(
        ctx.project_id,
        name=body.get("name"),
        description=body.get("description"),
        domain_id=canonical_id(domain, "domain id") if domain else None,
        classification_type=settings.get("classificationType"),
        target_export_platforms=settings.get("targetExportPlatforms"),
    )
    return json_response(200, project_json(project, ctx.base_url))


@handles("GetTags")
def get_tags(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    return json_response(200, [tag_json(t) for t in ctx.store.list_tags(project_id)])


@handles("CreateTag")
def create_tag(ctx: RequestContext) -> Response:
    tag = ctx.store.create_tag(
        ctx.project_id, name=ctx.q("name"), description=ctx.q("description"), tag_type=ctx.q("type")
    )
    return json_response(200, tag_json(tag))


@handles("GetTag")
def get_tag(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    return json_response(200, tag_json(ctx.store.get_tag(project_id, ctx.param_id("tagId", "tag id"))))


@handles("DeleteTag")
def delete_tag(ctx: RequestContext) -> Response:
    ctx.store.delete_tag(ctx.project_id, ctx.param_id("tagId", "tag id"))
    return json_response(204, None)


@handles("UpdateTag")
def update_tag(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    if not isinstance(body, dict):
        raise bad_request("BadRequest", "The updated tag must be a JSON object.")
    tag = ctx.store.update_tag(
        ctx.project_id,
        ctx.param_id("tagId", "tag id"),
        name=body.get("name"),
        description=body.get("description"),
        tag_type=body.get("type"),
    )
    return json_response(200, tag_json(tag))


@handles("GetImages")
def get_images(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    newest, take, skip = _paging(ctx)
    images = ctx.store.query_images(
        project_id,
        tagging_status=_tagging_status(ctx),
        tag_ids=ctx.q_ids("tagIds"),
        predicate=_filter(ctx),
        newest_first=newest,
        take=take,
        skip=skip,
    )
    return _images(ctx, images)


@handles("GetImageCount")
def get_image_count(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    count = ctx.store.count_images(
        project_id, tagging_status=_tagging_status(ctx), tag_ids=ctx.q_ids("tagIds"), predicate=_filter(ctx)
    )
    return json_response(200, count)


@handles("GetTaggedImages")
def get_tagged_images(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    newest, take, skip = _paging(ctx)
    images = ctx.store.query_images(
        project_id, tagging_status="Tagged", tag_ids=ctx.q_ids("tagIds"), newest_first=newest, take=take, skip=skip
    )
    return _images(ctx, images)


@handles("GetTaggedImageCount")
def get_tagged_image_count(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    return json_response(200, ctx.store.count_images(project_id, tagging_status="Tagged", tag_ids=ctx.q_ids("tagIds")))


@handles("GetUntaggedImages")
def get_untagged_images(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    newest, take, skip = _paging(ctx)
    images = ctx.store.query_images(project_id, tagging_status="Untagged", newest_first=newest, take=take, skip=skip)
    return _images(ctx, images)


@handles("GetUntaggedImageCount")
def get_untagged_image_count(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    return json_response(200, ctx.store.count_images(project_id, tagging_status="Untagged"))


@handles("GetImagesByIds")
def get_images_by_ids(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    _check_iteration(ctx, project_id)
    ids = ctx.q_ids("imageIds", "image id") or []
    if len(ids) > MAX_IMAGE_ID_BATCH:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_IMAGE_ID_BATCH} images.")
    return _images(ctx, ctx.store.get_images_by_ids(project_id, ids))


def _summary(ctx: RequestContext, results: Sequence[Any]) -> Response:
    ok = all(r.status == "OK" for r in results)
    with_duplicate_image = ctx.emulator.profile.duplicate_carries_image

    def shown(r: Any) -> bool:
        return r.image is not None and (r.status != "OKDuplicate" or with_duplicate_image)

    body = {
        "isBatchSuccessful": ok,
        "images": [
            {
                "sourceUrl": r.source_url,
                "status": r.status,
                "image": image_json(r.image, ctx.base_url) if shown(r) else None,
            }
            for r in results
        ],
    }
    # 200 only when every image is OK; OKDuplicate and every error give 207 Multi-Status.
    return json_response(200 if ok else 207, body)


def _batch_tag_ids(values: Any) -> list[str]:
    tag_ids = [loose_id(t) for t in (values or [])]
    if len(tag_ids) > MAX_BATCH_TAG_IDS:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_BATCH_TAG_IDS} tags per batch.")
    return tag_ids


def _region_spec(raw: Any) -> RegionSpec:
    if not isinstance(raw, dict) or any(k not in raw for k in ("tagId", "left", "top", "width", "height")):
        raise bad_request("BadRequestImageRegions", "A region needs tagId, left, top, width and height.")
    try:
        return RegionSpec(
            loose_id(raw["tagId"]), float(raw["left"]), float(raw["top"]), float(raw["width"]), float(raw["height"])
        )
    except (TypeError, ValueError):
        raise bad_request("BadRequestImageRegions", "Region coordinates must be numbers.") from None


NO_VALID_IMAGES = ("BadRequestImageBatch", "No valid image files")


@handles("CreateImagesFromFiles")
def create_images_from_files(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    images = body.get("images") if isinstance(body, dict) else None
    if not isinstance(images, list) or not images:
        raise bad_request(*NO_VALID_IMAGES)
    if len(images) > MAX_BATCH_IMAGES:
        raise bad_request(
            "BadRequestExceededBatchSize", f"Batch size exceeded: limited to {MAX_BATCH_IMAGES} images per batch."
        )
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("BadRequestImageMetadataKey", "Metadata must be a JSON object of strings.")
    entries = []
    for raw in images:
        if not isinstance(raw, dict):
            raise bad_request(*NO_VALID_IMAGES)
        data: bytes | None
        try:
            data = base64.b64decode(raw.get("contents") or "", validate=True) if raw.get("contents") else None
        except (binascii.Error, ValueError, TypeError):
            data = None
        regions = [_region_spec(r) for r in raw.get("regions") or []]
        entries.append(
            NewImage(
                source_url=str(raw.get("name") or ""),
                data=data,
                tag_ids=[loose_id(t) for t in raw.get("tagIds") or []],
                regions=regions,
            )
        )
    if all(e.data is None for e in entries):
        raise bad_request(*NO_VALID_IMAGES)
    results = ctx.store.create_images(
        ctx.project_id,
        entries,
        batch_tag_ids=_batch_tag_ids(body.get("tagIds")),
        metadata=metadata,
    )
    ctx.upload_outcomes = [
        (e.source_url, r.status, r.image.id if r.image else None) for e, r in zip(entries, results, strict=True)
    ]
    return _summary(ctx, results)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str | None, bytes]]:
    """(filename as sent, bytes) for every part; bytes stay bytes whether or not a part has a filename."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_request("BadRequestImageStream", "The multipart body has no boundary.")
    parts: list[tuple[str | None, bytes]] = []
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=bytearray(), field=bytearray(), value=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][bytes(current["field"]).lower()] = bytes(current["value"])
        current["field"], current["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        _, disposition = parse_options_header(current["headers"].get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        parts.append((filename.decode("utf-8", "replace") if filename is not None else None, bytes(current["data"])))

    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception:
        raise bad_request("BadRequestImageStream", "The multipart body could not be parsed.") from None
    return parts


def request_files(ctx: RequestContext) -> list[tuple[str | None, bytes]]:
    """(filename, bytes) of the files of a multipart body, or the raw body sent as one file."""
    content_type = ctx.headers.get("content-type", "application/octet-stream")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return parse_multipart(ctx.body, content_type)
    if media in ("application/octet-stream", "") or media.startswith("image/"):
        return [(None, ctx.body)] if ctx.body else []
    raise CVError(415, "UnsupportedMediaType", f"Unsupported content type {media}.")


@handles("CreateImagesFromData")
def create_images_from_data(ctx: RequestContext) -> Response:
    parts = request_files(ctx)
    if len(parts) > MAX_BATCH_IMAGES:
        raise bad_request(
            "BadRequestExceededBatchSize", f"Batch size exceeded: limited to {MAX_BATCH_IMAGES} files per request."
        )
    parts = [p for p in parts if p[1]]
    if not parts:
        raise bad_request(*NO_VALID_IMAGES)
    # sourceUrl is the Content-Disposition filename with its quotes, as the spec examples show.
    entries = [NewImage(source_url=f'"{name}"' if name is not None else "", data=data) for name, data in parts]
    results = ctx.store.create_images(
        ctx.project_id,
        entries,
        batch_tag_ids=_batch_tag_ids(ctx.q_list("tagIds")),
    )
    ctx.upload_outcomes = [
        (e.source_url.strip('"'), r.status, r.image.id if r.image else None)
        for e, r in zip(entries, results, strict=True)
    ]
    return _summary(ctx, results)


@handles("DeleteImages")
def delete_images(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    ids = ctx.q_ids("imageIds", "image id")
    all_images = ctx.q_bool("allImages")
    all_iterations = ctx.q_bool("allIterations")
    if ids and len(ids) > MAX_IMAGE_ID_BATCH:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_IMAGE_ID_BATCH} images per batch.")
    if not ids and not all_images:
        raise bad_request("BadRequestInvalidIds", "Specify imageIds or allImages=true.")
    ctx.store.delete_images(project_id, ids, all_images=all_images)
    # The spec: allImages / allIterations "will return a 202 response to indicate the images are being deleted".
    return json_response(202 if all_images or all_iterations else 204, None)


@handles("UpdateImageMetadata")
def update_image_metadata(ctx: RequestContext) -> Response:
    ids = ctx.q_ids("imageIds", "image id") or []
    if not ids:
        raise bad_request("BadRequestInvalidIds", "imageIds is required.")
    if len(ids) > MAX_METADATA_IMAGE_BATCH:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_METADATA_IMAGE_BATCH} images.")
    metadata = ctx.json_body()
    if not isinstance(metadata, dict):
        raise bad_request("BadRequestImageMetadataKey", "Metadata must be a JSON object of strings.")
    outcomes = ctx.store.update_metadata(ctx.project_id, ids, metadata)
    ok = all(o.status == "OK" for o in outcomes)
    body = {
        "isBatchSuccessful": ok,
        "images": [{"imageId": o.image_id, "status": o.status, "metadata": o.metadata} for o in outcomes],
    }
    return json_response(200 if ok else 207, body)


@handles("CreateImageTags")
def create_image_tags(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    raw = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw:
        raise bad_request("BadRequestImageTags", "No image tags provided.")
    pairs = []
    for entry in raw:
        if not isinstance(entry, dict) or not entry.get("imageId") or not entry.get("tagId"):
            raise bad_request("BadRequestImageTags", "Each entry needs imageId and tagId.")
        pairs.append((canonical_id(entry["imageId"], "image id"), canonical_id(entry["tagId"], "tag id")))
    created, duplicated, exceeded = ctx.store.create_image_tags(ctx.project_id, pairs)

    def listing(items: list[tuple[str, str]]) -> list[dict[str, str]] | None:
        return [{"imageId": i, "tagId": t} for i, t in items] or None  # the example sends null when empty

    return json_response(
        200,
        {
            "created": [{"imageId": i, "tagId": t} for i, t in created],
            "duplicated": listing(duplicated),
            "exceeded": listing(exceeded),
        },
    )


@handles("DeleteImageTags")
def delete_image_tags(ctx: RequestContext) -> Response:
    image_ids = ctx.q_ids("imageIds", "image id")
    tag_ids = ctx.q_ids("tagIds", "tag id")
    if not image_ids or not tag_ids:
        raise bad_request("BadRequestInvalidIds", "imageIds and tagIds are required.")
    if len(image_ids) > 64 or len(tag_ids) > MAX_BATCH_TAG_IDS:
        raise bad_request("BadRequestExceededBatchSize", "Limited to 64 images and 20 tags.")
    ctx.store.delete_image_tags(ctx.project_id, image_ids, tag_ids)
    return json_response(204, None)


@handles("CreateImageRegions")
def create_image_regions(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    raw = body.get("regions") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw:
        raise bad_request("BadRequestImageRegions", "No regions provided.")
    if len(raw) > MAX_REGION_BATCH:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_REGION_BATCH} regions per batch.")
    entries = []
    for entry in raw:
        if not isinstance(entry, dict) or not entry.get("imageId"):
            raise bad_request("BadRequestImageRegions", "Each region needs an imageId.")
        spec = _region_spec(entry)
        entries.append(
            (
                canonical_id(entry["imageId"], "image id"),
                RegionSpec(canonical_id(spec.tag_id, "tag id"), spec.left, spec.top, spec.width, spec.height),
            )
        )
    outcome = ctx.store.create_regions(ctx.project_id, entries)
    body = {
        "created": [{"imageId": r.image_id, **region_json(r)} for r in outcome.created],
        "duplicated": [region_entry_json(i, r) for i, r in outcome.duplicated],
        "exceeded": [region_entry_json(i, r) for i, r in outcome.exceeded],
    }
    return json_response(207 if outcome.duplicated or outcome.exceeded else 200, body)


@handles("DeleteImageRegions")
def delete_image_regions(ctx: RequestContext) -> Response:
    ids = ctx.q_ids("regionIds", "region id")
    if not ids:
        raise bad_request("BadRequestInvalidIds", "regionIds is required.")
    if len(ids) > MAX_REGION_BATCH:
        raise bad_request("BadRequestExceededBatchSize", f"Limited to {MAX_REGION_BATCH} regions.")
    ctx.store.delete_regions(ctx.project_id, ids)
    return json_response(204, None)


@handles("TrainProject")
def train_project(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    params = ctx.json_body() or {}
    if not isinstance(params, dict):
        raise bad_request("BadRequest", "The training parameters must be a JSON object.")
    base = params.get("customBaseModelInfo")
    if base:
        base_iteration = ctx.store.get_iteration(
            canonical_id(str(base.get("projectId")), "project id"),
            canonical_id(str(base.get("iterationId")), "iteration id"),
        )
        if not base_iteration.is_completed(ctx.store.now()):
            raise bad_request(
                "BadRequestCustomBaseModelIterationStatusNotCompleted",
                "The base model iteration has not completed training.",
            )
    selected = params.get("selectedTags")
    iteration = ctx.store.train(
        project_id,
        training_type=ctx.q("trainingType"),
        reserved_budget_in_hours=ctx.q_int("reservedBudgetInHours", 0),
        force_train=ctx.q_bool("forceTrain"),
        notification_email_address=ctx.q("notificationEmailAddress"),
        selected_tags=[canonical_id(str(t), "tag id") for t in selected] if selected else None,
    )
    return json_response(200, iteration_json(iteration, ctx.store.now()))


@handles("GetIterations")
def get_iterations(ctx: RequestContext) -> Response:
    now = ctx.store.now()
    return json_response(200, [iteration_json(i, now) for i in ctx.store.list_iterations(ctx.project_id)])


@handles("GetIteration")
def get_iteration(ctx: RequestContext) -> Response:
    iteration = ctx.store.get_iteration(ctx.project_id, ctx.param_id("iterationId", "iteration id"))
    return json_response(200, iteration_json(iteration, ctx.store.now()))


@handles("DeleteIteration")
def delete_iteration(ctx: RequestContext) -> Response:
    ctx.store.delete_iteration(ctx.project_id, ctx.param_id("iterationId", "iteration id"))
    return json_response(204, None)


@handles("UpdateIteration")
def update_iteration(ctx: RequestContext) -> Response:
    body = ctx.json_body()
    if not isinstance(body, dict):
        raise bad_request("BadRequest", "The updated iteration must be a JSON object.")
    iteration = ctx.store.update_iteration(
        ctx.project_id, ctx.param_id("iterationId", "iteration id"), name=body.get("name")
    )
    return json_response(200, iteration_json(iteration, ctx.store.now()))


@handles("PublishIteration")
def publish_iteration(ctx: RequestContext) -> Response:
    ctx.store.publish_iteration(
        ctx.project_id,
        ctx.param_id("iterationId", "iteration id"),
        publish_name=ctx.q("publishName"),
        prediction_id=ctx.q("predictionId"),
    )
    return json_response(200, True)


@handles("UnpublishIteration")
def unpublish_iteration(ctx: RequestContext) -> Response:
    ctx.store.unpublish_iteration(ctx.project_id, ctx.param_id("iterationId", "iteration id"))
    return json_response(204, None)


def _required_iteration(ctx: RequestContext) -> str:
    raw = ctx.q("iterationId")
    if not raw:
        raise bad_request("BadRequest", "iterationId is required.")
    return canonical_id(raw, "iteration id")


def _tag_filter(body: dict[str, Any]) -> tuple[list[str], float]:
    """tagIds and threshold of a TagFilter or SuggestedTagAndRegionQueryToken."""
    tag_ids = body.get("tagIds") or []
    if not isinstance(tag_ids, list):
        raise bad_request("BadRequest", "tagIds must be an array of tag ids.")
    threshold = body.get("threshold") or 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise bad_request("BadRequest", "threshold must be a number.")
    return [canonical_id(str(t), "tag id") for t in tag_ids], float(threshold)


def _json_object(ctx: RequestContext, what: str) -> dict[str, Any]:
    body = ctx.json_body()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("BadRequest", f"The {what} must be a JSON object.")
    return body


@handles("QuickTestImage")
def quick_test_image(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    data = next((data for _, data in request_files(ctx) if data), b"")
    raw_iteration = ctx.q("iterationId")
    prediction = ctx.store.quick_test(
        project_id,
        data,
        iteration_id=canonical_id(raw_iteration, "iteration id") if raw_iteration else None,
        store=ctx.q_bool("store", default=True),
    )
    ctx.emulator.stats.predicted(ctx.operation_id, project_id, 1)
    return json_response(200, image_prediction_json(prediction))


@handles("SuggestTagsAndRegions")
def suggest_tags_and_regions(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    iteration_id = _required_iteration(ctx)
    outcome = ctx.store.suggest(project_id, iteration_id, ctx.q_ids("imageIds", "image id") or [])
    ctx.emulator.stats.predicted(ctx.operation_id, project_id, outcome.predicted)
    return json_response(200, [suggestion_json(s) for s in outcome.suggestions])


@handles("QuerySuggestedImages")
def query_suggested_images(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    iteration_id = _required_iteration(ctx)
    token = _json_object(ctx, "query")
    tag_ids, threshold = _tag_filter(token)
    raw_sort = token.get("sortBy") or "UncertaintyDescending"  # emulator choice: least sure first
    sort_by = next((s for s in SUGGESTION_SORTS if s.lower() == str(raw_sort).lower()), None)
    if sort_by is None:
        raise bad_request("BadRequest", f"sortBy must be one of {', '.join(SUGGESTION_SORTS)}.")
    max_count = token.get("maxCount") or 0
    if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 0:
        raise bad_request("BadRequest", "maxCount must be a non-negative integer.")
    continuation = str(token.get("continuation") or "")
    if continuation and not continuation.isdigit():
        raise bad_request("BadRequest", "The continuation is not one this service handed out.")
    skip = int(continuation or 0)
    items, total = ctx.store.suggested_images(
        project_id,
        iteration_id,
        tag_ids=tag_ids,
        threshold=threshold,
        sort_by=sort_by,
        skip=skip,
        take=min(max_count or DEFAULT_SUGGESTED_TAKE, MAX_TAKE),
    )
    following = skip + len(items)
    body = {
        "token": {
            "tagIds": tag_ids,
            "threshold": threshold,
            "session": str(token.get("session") or iteration_id),
            "continuation": str(following) if following < total else "",
            "maxCount": max_count,
            "sortBy": sort_by,
        },
        "results": [suggested_image_json(item, ctx.base_url) for item in items],
    }
    return json_response(200, body)


@handles("QuerySuggestedImageCount")
def query_suggested_image_count(ctx: RequestContext) -> Response:
    project_id = ctx.project_id
    iteration_id = _required_iteration(ctx)
    tag_ids, threshold = _tag_filter(_json_object(ctx, "tag filter"))
    counts = ctx.store.suggested_image_counts(project_id, iteration_id, tag_ids=tag_ids, threshold=threshold)
    return json_response(200, counts)


def not_implemented(ctx: RequestContext) -> Response:
    # 501 is not retried by msrest (it is one of its "safe" codes), so a client fails fast and clearly.
    raise CVError(
        501, "BadRequestOperationNotSupported", f"The Custom Vision emulator does not implement {ctx.operation_id}."
    )


# --- the emulator -------------------------------------------------------------------------------------


class CustomVisionEmulator:
    """Everything behind one app: store, limiter, faults and counters. ``app.state.emulator`` is this."""

    def __init__(self, config: CustomVisionEmulatorConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.clock = clock or time.time
        self.store = CustomVisionStore(
            limits=config.limits,
            clock=self.clock,
            training_seconds=config.training_seconds,
            state_dir=config.state_dir,
            profile=config.profile,
        )
        self.profile = config.azure_profile
        self.limiter = RateLimiter(
            {
                "default": config.rate_per_second,
                "train": config.effective_train_rate,
                "upload": config.effective_upload_rate,
            },
            self.clock,
        )
        self.faults = FaultPlan(wildcard_excludes=frozenset({BLOB_OPERATION}))
        if config.faults:
            self.faults.replace(*parse_fault_plan(config.faults))
        self.stats = Stats()
        self.uploads = UploadCounters()
        self.spec = load_spec()
        self.routes = load_routes(self.spec)

    # -- views for tests and tools --

    def projects(self) -> list[Project]:
        return self.store.list_projects()

    def images(self, project_id: str) -> list[StoredImage]:
        """Every image of a project with its tags, regions and metadata, oldest first."""
        return self.store.all_images(project_id)

    def reset(self, *, keep_faults: bool = False) -> None:
        self.store.reset()
        self.stats.reset()
        self.uploads.reset()
        self.limiter.reset()
        if not keep_faults:
            self.faults.clear()

    # -- request pipeline --

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            if route.method != method:
                continue
            m = route.pattern.match(path)
            if m:
                return route, m.groupdict()
        return None, {}

    def base_url(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    async def handle_api(self, scope: Scope, receive: Receive, send: Send, version: str, path: str) -> None:
        request = Request(scope, receive)
        key = request.headers.get("training-key")
        if key is None or key not in self.config.training_keys:
            self.stats.unauthorized_request()
            await drain(receive)  # an unread upload would make the server drop the connection mid-send
            await json_response(401, gateway_error(401, GATEWAY_401_MESSAGE))(scope, receive, send)
            return
        route, params = self.match(scope["method"], path)
        if route is None:
            await drain(receive)
            await json_response(404, gateway_error(404, "Resource not found"))(scope, receive, send)
            return
        op = route.operation_id
        self.stats.request(op)
        rule = self.faults.pick(op)
        if rule is not None and await self._fault_before(rule, op, version, scope, receive, send, params):
            return
        retry_after = self._throttle(key, op)
        if retry_after is not None:
            self.stats.throttle(op)
            self.stats.status(op, 429)
            await self._refuse_before_work(op, params, scope, receive)
            body = gateway_error(429, throttle_message(op, version, self.config.tier, retry_after))
            headers = {"Retry-After": str(retry_after)} if self.profile.retry_after_on_429 else {}
            await json_response(429, body, headers)(scope, receive, send)
            return
        ctx = RequestContext(
            self,
            op,
            params,
            urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
            request.headers,
            await request.body(),
            self.base_url(request),
        )
        response = await run_in_threadpool(self._dispatch, ctx)
        upload_project = self._upload_project(op, params) if ctx.upload_outcomes else None
        await self._answer(rule, op, response, scope, receive, send, upload_project, len(ctx.upload_outcomes or ()))

    def _throttle(self, key: str, op: str) -> int | None:
        """The Retry-After of a throttled call, or None; uploads also take from their own bucket (F0 strict)."""
        if op == TRAIN_OPERATION:
            return self.limiter.check(key, "train")
        if op in CREATE_IMAGE_OPERATIONS:
            wait = self.limiter.check(key, "upload")
            if wait is not None:
                return wait
        return self.limiter.check(key, "default")

    def _dispatch(self, ctx: RequestContext) -> Response:
        handler = HANDLERS.get(ctx.operation_id, not_implemented)
        token = _NAIVE_TIMESTAMPS.set(self.profile.naive_timestamps)
        try:
            return handler(ctx)
        except CVError as error:
            self._count_refused_call(ctx, error)
            return error_response(error)
        except Exception:
            log.exception("emulator failure in %s", ctx.operation_id)
            return error_response(CVError(500, "ErrorUnknown", "Unexpected emulator error; see its log."))
        finally:
            _NAIVE_TIMESTAMPS.reset(token)
            project_id = self._upload_project(ctx.operation_id, ctx.params)
            if project_id is not None and ctx.upload_outcomes is not None:
                self.uploads.received(project_id, ctx.upload_outcomes)

    def _upload_project(self, operation_id: str, params: dict[str, str]) -> str | None:
        """The project of a create-images call, or None for any other call (or an unreadable id)."""
        if operation_id not in CREATE_IMAGE_OPERATIONS or "projectId" not in params:
            return None
        try:
            return canonical_id(params["projectId"], "project id")
        except CVError:
            return None

    def _count_refused_call(self, ctx: RequestContext, error: CVError) -> None:
        """A create-images call the service read and refused whole: its entries still count as received."""
        project_id = self._upload_project(ctx.operation_id, ctx.params)
        if project_id is None or ctx.upload_outcomes is not None:
            return
        names = upload_entry_names(ctx.operation_id, ctx.headers, ctx.body)
        if isinstance(error, DuplicateOnlyBatch):
            ids: list[str | None] = [*error.image_ids]
            ids += [None] * (len(names) - len(ids))
            ctx.upload_outcomes = [(n, DUPLICATES_REFUSED, i) for n, i in zip(names, ids[: len(names)], strict=True)]
        else:
            ctx.upload_outcomes = [(n, f"{error.status} {error.code}", None) for n in names]

    async def _refuse_before_work(self, op: str, params: dict[str, str], scope: Scope, receive: Receive) -> None:
        """Read (rather than drain) a refused request's body, counting the image entries it carried."""
        project_id = self._upload_project(op, params)
        if project_id is None:
            await drain(receive)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.uploads.refused_before_work(project_id, upload_entry_names(op, Headers(scope=scope), bytes(body)))

    async def _fault_before(
        self,
        rule: FaultRule,
        op: str,
        version: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        params: dict[str, str] | None = None,
    ) -> bool:
        """Apply a fault that replaces the answer; True when the request is finished."""
        if rule.kind == "slow" or (rule.kind == "reset" and rule.phase == "after"):
            return False
        self.stats.fault(op, rule.kind)
        if rule.kind == "reset":
            await self._refuse_before_work(op, params or {}, scope, receive)
            await abort_connection(receive, send)
            return True
        headers: dict[str, str] = {}
        if rule.kind == "401":
            body = gateway_error(401, GATEWAY_401_MESSAGE)
        elif rule.kind == "429":
            retry = max(0, math.ceil(rule.retry_after if rule.retry_after is not None else 1))
            if self.profile.retry_after_on_429:
                headers["Retry-After"] = str(retry)
            body = gateway_error(429, throttle_message(op, version, self.config.tier, retry))
        elif rule.kind == "503":
            if rule.retry_after is not None:
                headers["Retry-After"] = str(max(0, math.ceil(rule.retry_after)))
            body = gateway_error(503, "The service is temporarily unavailable. Please retry later.")
        else:
            body = {"code": "ErrorUnknown", "message": "Injected fault: internal server error."}
        await self._refuse_before_work(op, params or {}, scope, receive)
        self.stats.status(op, int(rule.kind))
        await json_response(int(rule.kind), body, headers)(scope, receive, send)
        return True

    async def _answer(
        self,
        rule: FaultRule | None,
        op: str,
        response: Response,
        scope: Scope,
        receive: Receive,
        send: Send,
        upload_project: str | None = None,
        upload_entries: int = 0,
    ) -> None:
        """Send the handler's answer, late for "slow", or not at all for "reset" after processing."""
        if rule is not None and rule.kind == "slow":
            self.stats.fault(op, "slow")
            if upload_project is not None:
                self.uploads.answer_lost(upload_project, upload_entries, late=True)
            await asyncio.sleep(rule.delay)  # the work is done; only the answer is late
        if rule is not None and rule.kind == "reset" and rule.phase == "after":
            self.stats.fault(op, "reset")
            if upload_project is not None:
                self.uploads.answer_lost(upload_project, upload_entries)
            await abort_connection(receive, send)
            return
        self.stats.status(op, response.status_code)
        await response(scope, receive, send)

    async def handle_blob(self, scope: Scope, receive: Receive, send: Send, image_id: str, kind: str) -> None:
        """Image bytes without a key, like the SAS URLs the service hands out."""
        if scope["method"] not in ("GET", "HEAD"):
            await Response(status_code=405)(scope, receive, send)
            return
        self.stats.request(BLOB_OPERATION)
        rule = self.faults.pick(BLOB_OPERATION)
        if rule is not None and await self._fault_before(rule, BLOB_OPERATION, "3.4-preview", scope, receive, send):
            return
        response = await run_in_threadpool(self._blob, image_id, kind)
        await self._answer(rule, BLOB_OPERATION, response, scope, receive, send)

    def _blob(self, image_id: str, kind: str) -> Response:
        image = self.store.get_image(image_id)
        original = self.store.blobs.get(image_id, "original") if image else None
        if image is None or original is None:
            return Response(b"BlobNotFound", status_code=404, media_type="text/plain")
        if kind == "original":
            return Response(original, media_type=CONTENT_TYPES[image.format])
        data = self.store.blobs.get(image_id, kind)
        if data is None:  # derived images are rendered on first use and kept
            data = render_derived(original, THUMBNAIL_SIDE if kind == "thumbnail" else RESIZED_SIDE)
            self.store.blobs.put(image_id, kind, data)
        return Response(data, media_type="image/jpeg")


class TrainingApiMiddleware:
    """Takes the training API and blob paths before FastAPI's router sees them.

    A raw ASGI layer because the service matches its paths case-insensitively under two version
    prefixes, and because a "reset" fault needs the connection itself.
    """

    def __init__(self, app: ASGIApp, emulator: CustomVisionEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            m = API_PREFIX.match(path)
            if m:
                version = "3.3" if m.group(1) == "3.3" else "3.4-preview"
                await self.emulator.handle_api(scope, receive, send, version, path[m.end() :])
                return
            b = BLOB_PATH.match(path)
            if b:
                await self.emulator.handle_blob(scope, receive, send, b.group(1), b.group(2))
                return
        await self.app(scope, receive, send)


def _image_view(image: StoredImage, base: str) -> dict[str, Any]:
    view = image_json(image, base)
    view.update(format=image.format, size=image.size, sha256=image.sha256)
    return view


def create_app(config: CustomVisionEmulatorConfig, *, clock: Callable[[], float] | None = None) -> fastapi.FastAPI:
    """The emulator as an ASGI app; ``clock`` (epoch seconds) lets tests drive rate limits and training."""
    emulator = CustomVisionEmulator(config, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
        yield
        emulator.store.close()  # checkpoints the WAL so a persisted state folder is tidy after a clean stop

    app = fastapi.FastAPI(
        title="Custom Vision Training emulator",
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    app.add_middleware(TrainingApiMiddleware, emulator=emulator)

    @app.get("/_emulator/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "tier": config.tier,
            "profile": config.profile,
            "persistent": config.state_dir is not None,
        }

    @app.get("/_emulator/stats")
    def stats() -> dict[str, Any]:
        return emulator.stats.snapshot()

    @app.get("/_emulator/faults")
    def get_faults() -> list[dict[str, Any]]:
        return emulator.faults.snapshot()

    @app.post("/_emulator/faults")
    async def set_faults(request: Request) -> Response:
        try:
            rules, seed = parse_fault_plan(json.loads(await request.body()))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        emulator.faults.replace(rules, seed)
        return JSONResponse(emulator.faults.snapshot())

    @app.delete("/_emulator/faults", status_code=204)
    def clear_faults() -> Response:
        emulator.faults.clear()
        return Response(status_code=204)

    @app.post("/_emulator/reset", status_code=204)
    def reset(keepFaults: bool = False) -> Response:
        emulator.reset(keep_faults=keepFaults)
        return Response(status_code=204)

    @app.get("/_emulator/projects")
    def projects(request: Request) -> list[dict[str, Any]]:
        base = emulator.base_url(request)
        return [
            {
                **project_json(p, base),
                "imageCount": emulator.store.count_images(p.id),
                "tags": [tag_json(t) for t in emulator.store.list_tags(p.id)],
            }
            for p in emulator.projects()
        ]

    @app.get("/_emulator/uploads")
    def uploads(names: bool = False) -> dict[str, Any]:
        """The upload counters of every project that received images (per entry name with ?names=true)."""
        return emulator.uploads.snapshot(names=names)

    @app.get("/_emulator/projects/{project_id}/uploads")
    def project_uploads(project_id: str, names: bool = True) -> Response:
        """One project's upload counters: entries received, OKDuplicate answers, re-sends per entry name."""
        try:
            canonical = canonical_id(project_id, "project id")
        except CVError as error:
            return error_response(error)
        return JSONResponse(emulator.uploads.snapshot(canonical, names=names))

    @app.get("/_emulator/projects/{project_id}/predictions")
    def project_predictions(project_id: str) -> Response:
        """One project's prediction transactions (frames predicted) per operation and its stored quick tests."""
        try:
            canonical = canonical_id(project_id, "project id")
            stored = emulator.store.count_stored_predictions(canonical)
        except CVError as error:
            return error_response(error)
        return JSONResponse({**emulator.stats.project_predictions(canonical), "stored": stored})

    @app.get("/_emulator/projects/{project_id}/images")
    def project_images(project_id: str, request: Request) -> Response:
        try:
            images = emulator.images(canonical_id(project_id, "project id"))
        except CVError as error:
            return error_response(error)
        base = emulator.base_url(request)
        return JSONResponse([_image_view(i, base) for i in images])

    return app


# --- command line -------------------------------------------------------------------------------------


def _rate(value: str) -> float | None:
    """``--rate 0`` or ``--rate none`` switches a limit off."""
    if value.lower() in ("none", "off", "unlimited"):
        return None
    rate = float(value)
    return None if rate <= 0 else rate


def _faults_arg(value: str) -> list[dict[str, Any]] | dict[str, Any]:
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    plan = json.loads(text)
    parse_fault_plan(plan)  # validate now rather than on the first request
    return plan


def customvision_server_command(*, host: str, port: int, training_key: str, options: Sequence[str] = ()) -> list[str]:
    """The command that runs this emulator as a process of its own; `options` are more of main's flags."""
    command = [sys.executable, "-m", "devstack.customvision_server", "--host", host, "--port", str(port)]
    return [*command, *options, "--training-key", training_key]


def main(argv: Sequence[str] | None = None) -> None:
    from devstack.servers import serve_forever

    parser = argparse.ArgumentParser(prog="python -m devstack.customvision_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", help="folder for SQLite and image files (default: in memory)")
    parser.add_argument("--tier", default="S0", choices=["F0", "S0", "f0", "s0"])
    parser.add_argument(
        "--profile",
        default=os.environ.get("CV_EMULATOR_PROFILE", "default"),
        choices=PROFILE_NAMES,
        help="Azure profile: default, or strict (the stricter reading of every uncertain behaviour)",
    )
    parser.add_argument(
        "--upload-rate", type=_rate, default=None, help="CreateImages* calls/s (default: by profile and tier)"
    )
    parser.add_argument("--rate", type=_rate, default=10.0, help="calls/s per key (0 or none: unlimited)")
    parser.add_argument("--train-rate", type=_rate, default=None, help="TrainProject calls/s (default by tier)")
    parser.add_argument("--training-seconds", type=float, default=2.0)
    parser.add_argument(
        "--training-key",
        action="extend",
        nargs="+",
        dest="training_keys",
        help="accepted Training-Key values (default: devstack-training-key)",
    )
    parser.add_argument("--images-per-project", type=int, default=None, help="override the tier's image quota")
    parser.add_argument("--tags-per-project", type=int, default=None, help="override the tier's tag quota")
    parser.add_argument("--max-projects", type=int, default=None, help="override the tier's project quota")
    parser.add_argument("--public-url", default=None, help="base URL for image URIs (default: from the request)")
    parser.add_argument(
        "--faults", type=_faults_arg, default=None, help="fault plan as JSON or @file (default: $CV_EMULATOR_FAULTS)"
    )
    args = parser.parse_args(argv)
    faults = args.faults
    if faults is None and os.environ.get("CV_EMULATOR_FAULTS"):
        faults = _faults_arg(os.environ["CV_EMULATOR_FAULTS"])
    config = CustomVisionEmulatorConfig(
        training_keys=tuple(args.training_keys or ("devstack-training-key",)),
        tier=args.tier,
        rate_per_second=args.rate,
        train_rate_per_second=args.train_rate,
        training_seconds=args.training_seconds,
        state_dir=args.state,
        public_url=args.public_url,
        images_per_project=args.images_per_project,
        tags_per_project=args.tags_per_project,
        max_projects=args.max_projects,
        faults=faults,
        profile=args.profile,
        upload_rate_per_second=args.upload_rate,
    )
    serve_forever(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
