"""What the push pipeline needs of its parts, and nothing more: a blob source, a decryptor, a target and a ledger.

`RetrainingDataClient`, `Locker`, `CustomVisionClient` and `Ledger` are the real ones; the Function serves the
triggering blob from the host's stream, and the unit tests drive the pipeline with in-memory fakes
(tests/core/fakes.py). No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .blobs import BlobFilter, RetrainingBlob
    from .customvision import CallStats, Labelled, ProjectImage, ProjectIndex, Region, UploadItem, UploadResult
    from .ledger import BlobKey, BlobRecord, Claim, Event
    from .state import BlobState


class BlobSource(Protocol):
    """Where retraining blobs are listed and their (encrypted) bytes read."""

    def list_blobs(self, blob_filter: BlobFilter | None = None) -> Iterator[RetrainingBlob]: ...

    def download(self, blob: RetrainingBlob) -> bytes: ...


class Decryptor(Protocol):
    """Turns a blob's bytes into the frame, in memory, with its model version's key."""

    def decrypt(
        self, ciphertext: bytes, model_name: str, model_version: str, *, blob_name: str | None = None
    ) -> bytes: ...


class PushTarget(Protocol):
    """A Custom Vision project as the pipeline uses it: uploads, labels, and what reconciling with it needs."""

    project_id: str
    stats: CallStats  # calls, throttled and listings, read before and after a run

    def wait_budget(self, seconds: float | None) -> AbstractContextManager[None]: ...

    def tag_ids(self, names: Sequence[str]) -> list[str]: ...

    def upload(
        self, items: Sequence[UploadItem], *, batch_metadata: dict[str, str] | None = None
    ) -> list[UploadResult]: ...

    def label_image(self, image_id: str, tag_ids: Sequence[str] = (), regions: Sequence[Region] = ()) -> Labelled: ...

    def image_count(self) -> int: ...

    def image_counts(self) -> tuple[int, int]: ...

    def project_index(self, *, refresh: bool = False) -> ProjectIndex: ...

    def known_content(self, hashes: Sequence[str | None]) -> str | None: ...

    def images_by_ids(self, image_ids: Sequence[str]) -> list[ProjectImage]: ...

    def add_regions(self, image_id: str, regions: Sequence[Region]) -> list[str]: ...

    def delete_regions(self, region_ids: Sequence[str]) -> None: ...

    def add_image_tags(self, pairs: Sequence[tuple[str, str]]) -> None: ...

    def remove_image_tags(self, image_ids: Sequence[str], tag_ids: Sequence[str]) -> None: ...


class PushLedger(Protocol):
    """The ledger as the pipeline uses it: review state, claims with leases, push outcomes and audit events."""

    lease_seconds: float
    parallel_writes: int  # settlements a run may have in flight at once

    def new_run_id(self) -> str: ...

    def record(self, key: BlobKey, project_id: str | None = None) -> BlobRecord: ...

    def records(self, keys: Iterable[BlobKey], project_id: str | None = None) -> dict[BlobKey, BlobRecord]: ...

    def claims(self, project_id: str) -> list[Claim]: ...

    def claim(
        self, keys: Sequence[BlobKey], project_id: str, run_id: str, *, actor: str, retry_failed: bool = True
    ) -> tuple[list[BlobKey], dict[BlobKey, BlobState]]: ...

    def heartbeat(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> list[BlobKey]: ...

    def release(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> None: ...

    def record_pushed(
        self,
        key: BlobKey,
        project_id: str,
        *,
        image_id: str,
        sha256: str | None,
        tags: Sequence[str],
        actor: str,
        outcome: str = ...,
        details: dict[str, Any] | None = None,
        model: tuple[str | None, str | None] | None = None,
        claim: str | None = None,
    ) -> bool: ...

    def record_failed(
        self,
        key: BlobKey,
        project_id: str,
        *,
        reason: str,
        actor: str,
        retryable: bool,
        sha256: str | None = None,
        details: dict[str, Any] | None = None,
        claim: str | None = None,
    ) -> bool: ...

    def record_tags(
        self,
        key: BlobKey,
        project_id: str,
        *,
        tags: Sequence[str],
        actor: str,
        added: Sequence[str] = (),
        removed: Sequence[str] = (),
        claim: str | None = None,
    ) -> bool: ...

    def note_content(
        self,
        key: BlobKey,
        *,
        sha256: str,
        phash: str | None = None,
        model: tuple[str, str] | None = None,
        actor: str = ...,
    ) -> None: ...

    def note_undecryptable(self, key: BlobKey, *, reason: str, actor: str) -> None: ...

    def pushed_image_for_content(self, project_id: str, sha256: str) -> str | None: ...

    def pushed_image_count(self, project_id: str) -> int: ...

    def last_event(self, action: str, project_id: str) -> Event | None: ...

    def log(
        self,
        actor: str,
        action: str,
        *,
        key: BlobKey | None = None,
        project_id: str | None = None,
        outcome: str | None = None,
        image_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None: ...


__all__ = ["BlobSource", "Decryptor", "PushLedger", "PushTarget"]
