"""Retraining blobs in the MM storage account: records, filtered and paged listing, downloads."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient

from .config import Settings
from .errors import (
    AzureCall,
    BlobNotFoundError,
    BlobTooLargeError,
    CuratorError,
    MissingMetadataError,
    ServiceError,
    StaleBlobError,
    from_azure,
)
from .names import is_valid_name, validate_model

T = TypeVar("T")

# Larger blobs are refused before they are downloaded: an encrypted camera frame is a few MB at most.
DEFAULT_MAX_BLOB_BYTES = 32 * 1024 * 1024

# Devices name frames `<confidence>-<YYYY-mm-dd-HH-MM-SS>.jpg` (local time) and upload `<that>.dec`.
_DEVICE_NAME = re.compile(r"(?:^|/)(?P<confidence>\d{1,3})-(?P<stamp>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})")
_CAPTURE_KEYS = ("capture_time", "captured_at", "timestamp")


@dataclass(frozen=True)
class RetrainingBlob:
    """One encrypted frame in the `data` container, with what its metadata and name say about it."""

    name: str
    container: str
    etag: str
    size: int
    last_modified: datetime | None
    model_name: str | None
    model_version: str | None
    confidence: float | None
    captured_at: datetime | None
    file_ref: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    problems: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        """(container, name, etag): a blob version, the ledger's identity for it."""
        return (self.container, self.name, self.etag)

    @property
    def has_model(self) -> bool:
        """Whether the metadata names a model version whose key may be asked for (present and valid names)."""
        return bool(self.model_name and self.model_version) and all(
            is_valid_name(n) for n in (self.model_name, self.model_version)
        )

    def require_model(self) -> tuple[str, str]:
        """(model name, version) from the metadata, checked before anything is downloaded or asked of MM."""
        if not (self.model_name and self.model_version):
            raise MissingMetadataError(
                f"Blob {self.name!r} has no model_name/model_version metadata, so its key is unknown.",
                blob_name=self.name,
                hint="It was not uploaded through the MM server; reject it or fix its metadata.",
            )
        return validate_model(self.model_name, self.model_version, blob_name=self.name)

    @classmethod
    def from_properties(cls, container: str, properties: Any) -> RetrainingBlob:
        metadata = dict(properties.metadata or {})
        lowered = {k.lower(): v for k, v in metadata.items()}
        problems: list[str] = []
        model_name = (lowered.get("model_name") or "").strip() or None
        model_version = (lowered.get("model_version") or "").strip() or None
        if not model_name:
            problems.append("no model_name metadata")
        if not model_version:
            problems.append("no model_version metadata")
        name_match = _DEVICE_NAME.search(properties.name)
        confidence = _parse_confidence(lowered.get("confidence"), problems)
        if confidence is None and name_match and "confidence" not in lowered:
            confidence = _parse_confidence(name_match["confidence"], problems)
        captured_at = _parse_capture_time(lowered, name_match, problems)
        return cls(
            name=properties.name,
            container=container,
            etag=(properties.etag or "").strip('"'),
            size=int(properties.size or 0),
            last_modified=properties.last_modified,
            model_name=model_name,
            model_version=model_version,
            confidence=confidence,
            captured_at=captured_at,
            file_ref=lowered.get("file_ref"),
            metadata=metadata,
            problems=tuple(problems),
        )


def _parse_confidence(raw: str | None, problems: list[str]) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"confidence {raw[:40]!r} is not a number")
        return None
    if not math.isfinite(value) or not 0 <= value <= 100:
        problems.append(f"confidence {raw[:40]!r} is outside 0..100")
        return None
    return value


def _parse_capture_time(lowered: Mapping[str, str], name_match, problems: list[str]) -> datetime | None:
    for key in _CAPTURE_KEYS:
        if lowered.get(key):
            try:
                return datetime.fromisoformat(lowered[key])
            except ValueError:
                problems.append(f"{key} {lowered[key][:40]!r} is not a date and time")
    candidates = [name_match] if name_match else []
    if lowered.get("file_ref"):
        candidates.append(_DEVICE_NAME.search(lowered["file_ref"]))
    for match in candidates:
        if match:
            try:
                return datetime.strptime(match["stamp"], "%Y-%m-%d-%H-%M-%S")
            except ValueError:
                problems.append(f"capture time {match['stamp']!r} in the name is not a real date")
    return None


@dataclass(frozen=True)
class BlobFilter:
    """Which blobs to show; everything here works on metadata, before anything is downloaded."""

    model_names: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()
    min_confidence: float | None = None
    max_confidence: float | None = None
    captured_from: datetime | date | None = None
    captured_to: datetime | date | None = None
    name_prefix: str = ""
    name_contains: str = ""

    def matches(self, blob: RetrainingBlob) -> bool:
        if self.model_names and blob.model_name not in self.model_names:
            return False
        if self.model_versions and blob.model_version not in self.model_versions:
            return False
        if self.min_confidence is not None and (blob.confidence is None or blob.confidence < self.min_confidence):
            return False
        if self.max_confidence is not None and (blob.confidence is None or blob.confidence > self.max_confidence):
            return False
        start, end = self.capture_start, self.capture_end
        if start is not None or end is not None:
            if blob.captured_at is None:
                return False
            if start is not None and blob.captured_at < start:
                return False
            if end is not None and blob.captured_at > end:
                return False
        if self.name_prefix and not blob.name.startswith(self.name_prefix):
            return False
        return not (self.name_contains and self.name_contains.lower() not in blob.name.lower())

    @property
    def is_empty(self) -> bool:
        return self == BlobFilter()

    @property
    def capture_start(self) -> datetime | None:
        """The earliest capture time that matches, naive: a date means from its first moment."""
        return None if self.captured_from is None else _as_datetime(self.captured_from, time.min)

    @property
    def capture_end(self) -> datetime | None:
        """The latest capture time that matches, naive: a date means to its last moment."""
        return None if self.captured_to is None else _as_datetime(self.captured_to, time.max)


def _as_datetime(value: datetime | date, at: time) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.combine(value, at)


@dataclass(frozen=True)
class BlobPage:
    """Up to `page_size` matching blobs and the token that continues after them (None at the end)."""

    blobs: list[RetrainingBlob]
    continuation: str | None


def encode_page_token(fields: Mapping[str, Any]) -> str:
    """A page token: the fields saying where the next page starts, as URL-safe text."""
    return base64.urlsafe_b64encode(json.dumps(dict(fields)).encode()).decode()


def decode_page_token(token: str, read: Callable[[dict[str, Any]], T]) -> T:
    """What `read` takes from the fields of a token this tool made; any other text is refused as not ours."""
    try:
        return read(json.loads(base64.urlsafe_b64decode(token.encode())))
    except (ValueError, KeyError, TypeError):
        raise CuratorError("That page token is not one this tool made.") from None


def _encode_token(marker: str | None, offset: int) -> str:
    return encode_page_token({"m": marker, "o": offset})


def _decode_token(token: str) -> tuple[str | None, int]:
    return decode_page_token(token, lambda fields: (fields["m"], int(fields["o"])))


def url_without_query(url: str) -> str:
    """A storage URL fit to show: a client's URL carries its SAS token (a secret) as its query."""
    return url.split("?", 1)[0]


def blob_service(settings: Settings) -> BlobServiceClient:
    """The MM storage account's blob service: by connection string, or by URL with the settings' credential."""
    if settings.mm_storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.mm_storage_connection_string)
    settings.require("mm_storage_account")
    return BlobServiceClient(settings.storage_account_url, credential=settings.credential())


class RetrainingDataClient:
    """The `data` container: list, filter and page retraining blobs, and download them."""

    def __init__(
        self,
        container_client: ContainerClient,
        *,
        list_page_size: int = 1000,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        self.container_client = container_client
        self.container = container_client.container_name
        self.list_page_size = list_page_size
        self.max_blob_bytes = max_blob_bytes
        self.list_calls = 0  # service list requests made (the app's paging is checked with it)
        self.downloads = 0  # download requests made (a refused blob must not add one)
        self._count_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RetrainingDataClient:
        kwargs.setdefault("max_blob_bytes", settings.max_blob_bytes)
        return cls(blob_service(settings).get_container_client(settings.mm_telemetry_storage_container), **kwargs)

    def __repr__(self) -> str:
        return f"RetrainingDataClient({url_without_query(self.container_client.url)!r})"

    # -- listing ----------------------------------------------------------------------------------

    def service_pages(self, blob_filter: BlobFilter, marker: str | None, per_page: int):
        """The container's listing (with metadata, under the filter's name prefix) a service page at a time, from
        `marker`: (the page's marker, its entries, the next page's marker or None at the end). Counted in
        `list_calls`; a failure is our error naming the container."""
        pager = self.container_client.list_blobs(
            name_starts_with=blob_filter.name_prefix or None, include=["metadata"], results_per_page=per_page
        ).by_page(continuation_token=marker)
        while True:
            current = pager.continuation_token
            try:
                page = list(next(pager))
            except StopIteration:
                return
            except AzureError as exc:
                raise storage_error(exc, f"list the {self.container!r} container") from None
            with self._count_lock:
                self.list_calls += 1
            yield current, page, pager.continuation_token
            if not pager.continuation_token:
                return

    def list_blobs(
        self, blob_filter: BlobFilter | None = None, *, predicate: Callable[[RetrainingBlob], bool] | None = None
    ) -> Iterator[RetrainingBlob]:
        """Every matching blob, streamed page by page (never the whole listing in memory).

        `predicate` adds a test of the caller's (the review state from the ledger, say).
        """
        blob_filter = blob_filter or BlobFilter()
        for _, page, _ in self.service_pages(blob_filter, None, self.list_page_size):
            for properties in page:
                blob = RetrainingBlob.from_properties(self.container, properties)
                if blob_filter.matches(blob) and (predicate is None or predicate(blob)):
                    yield blob

    def list_page(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        page_size: int = 48,
        continuation: str | None = None,
        predicate: Callable[[RetrainingBlob], bool] | None = None,
    ) -> BlobPage:
        """The next `page_size` matching blobs after `continuation`, listing no further than needed."""
        blob_filter = blob_filter or BlobFilter()
        marker, offset = _decode_token(continuation) if continuation else (None, 0)
        # Filtered here (not by the service's name prefix), a service page a few times the page size keeps a
        # page to one request; unfiltered, a service page is the page: nothing is listed that is not shown.
        filtered_here = predicate is not None or not replace(blob_filter, name_prefix="").is_empty
        per_page = min(5000, max(page_size * 4, 200) if filtered_here else page_size)
        found: list[RetrainingBlob] = []
        for current_marker, entries, next_marker in self.service_pages(blob_filter, marker, per_page):
            for index in range(offset, len(entries)):
                blob = RetrainingBlob.from_properties(self.container, entries[index])
                if not blob_filter.matches(blob) or (predicate is not None and not predicate(blob)):
                    continue
                found.append(blob)
                if len(found) == page_size:
                    if index + 1 < len(entries):
                        return BlobPage(found, _encode_token(current_marker, index + 1))
                    return BlobPage(found, _encode_token(next_marker, 0) if next_marker else None)
            offset = 0
        return BlobPage(found, None)

    def get_blob(self, name: str) -> RetrainingBlob:
        try:
            properties = self.container_client.get_blob_client(name).get_blob_properties()
        except AzureError as exc:
            missing = BlobNotFoundError(f"No blob named {name!r} in container {self.container!r}.", blob_name=name)
            raise storage_error(exc, f"read blob {name!r}", not_found=missing) from None
        return RetrainingBlob.from_properties(self.container, properties)

    # -- downloads --------------------------------------------------------------------------------

    def refuse_if_too_large(self, blob: RetrainingBlob) -> None:
        """BlobTooLargeError when the listed size is over `max_blob_bytes`: checked before any byte is read."""
        if blob.size > self.max_blob_bytes:
            raise BlobTooLargeError(
                f"Blob {blob.name!r} is {blob.size:,} bytes, over the {self.max_blob_bytes:,}-byte limit "
                "(percept_max_blob_bytes); it was not downloaded.",
                blob_name=blob.name,
                hint="A camera frame is a few MB; reject it, or raise percept_max_blob_bytes if it is genuine.",
            )

    def download(self, blob: RetrainingBlob) -> bytes:
        """The blob's bytes, exactly the version (etag) that was listed.

        A blob over `max_blob_bytes` (by the listing's size) is refused with BlobTooLargeError before any
        request; a blob that changed or went away since it was listed is StaleBlobError (not its fault).
        """
        self.refuse_if_too_large(blob)
        client = self.container_client.get_blob_client(blob.name)
        with self._count_lock:
            self.downloads += 1
        try:
            return client.download_blob(
                etag=f'"{blob.etag}"', match_condition=MatchConditions.IfNotModified, max_concurrency=1
            ).readall()
        except AzureError as exc:
            deleted = StaleBlobError(
                f"Blob {blob.name!r} was deleted after it was listed.", blob_name=blob.name, hint="Refresh the list."
            )
            changed = StaleBlobError(
                f"Blob {blob.name!r} changed after it was listed.", blob_name=blob.name, hint="Refresh the list."
            )
            raise storage_error(exc, f"download blob {blob.name!r}", not_found=deleted, modified=changed) from None


def is_blob_fault(error: BaseException) -> bool:
    """True when the error is the blob's own (tampered, no metadata, too large...): worth noting in the ledger.

    A stale listing (StaleBlobError) is not: the blob's new version is another key, reviewed afresh.
    """
    return isinstance(error, CuratorError) and error.blob_fault


def map_bounded(function, items: Iterable[Any], *, max_concurrency: int) -> Iterator[tuple[Any, Any]]:
    """(item, result or CuratorError) in input order, with at most `max_concurrency` calls in flight."""
    window: list[tuple[Any, Future]] = []
    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="percept-io") as pool:
        for item in items:
            window.append((item, pool.submit(function, item)))
            if len(window) >= max_concurrency * 2:
                yield _settle(*window.pop(0))
        while window:
            yield _settle(*window.pop(0))


def _settle(item: Any, future: Future) -> tuple[Any, Any]:
    try:
        return item, future.result()
    except CuratorError as exc:
        return item, exc


def storage_error(
    exc: AzureError, doing: str, *, not_found: CuratorError | None = None, modified: CuratorError | None = None
) -> CuratorError:
    """Our error for a storage call that failed (`errors.from_azure` with the storage account's hints); a 404
    is a missing container unless `not_found` says what it means for this call."""
    if not_found is None:
        not_found = ServiceError(
            f"Could not {doing}: the container does not exist.", hint="Check mm_telemetry_storage_container."
        )
    call = AzureCall(
        "Storage",
        doing,
        hint="Check the storage account settings and try again.",
        refused_hint="The identity needs the Storage Blob Data Reader role on the MM storage account.",
        not_found=not_found,
        modified=modified,
    )
    return from_azure(exc, call)
