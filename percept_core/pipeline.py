"""Push selected blobs, or push all untagged: stream download+decrypt, batch, upload, record. No UI.

Memory stays bounded whatever the container's size: blobs are listed page by page, a bounded pool
downloads and decrypts a window of them, and at most a few batches are in flight. Every blob is
claimed in the ledger before it is pushed and settled after, so a run that is cancelled, killed or
racing another run never pushes a blob twice and never loses one.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from itertools import islice
from typing import Any, Generic, TypeVar

from .blob_index import IndexTally
from .blobs import BlobFilter, RetrainingBlob, map_bounded
from .customvision import (
    MAX_BATCH_BYTES,
    MAX_IMAGES_PER_BATCH,
    MAX_METADATA_VALUE,
    MAX_REGIONS_PER_IMAGE,
    CustomVisionError,
    ProjectIndex,
    PushStatus,
    Region,
    UploadItem,
    UploadResult,
)
from .errors import AuthenticationError, BlobError, CuratorError, ServiceError, StaleBlobError
from .images import ImageLimitError, PreparedImage, prepare_for_upload
from .ledger import BlobKey, PushState
from .protocols import BlobSource, Decryptor, PushLedger, PushTarget
from .state import BlobState, left_out_because, state_of_record

# What a reviewer reads for a blob that changed (or went away) after it was listed: not its fault.
STALE_REASON = "changed since listed, refresh"
# What the ledger says of a blob found in the project instead of uploaded (a new or lost ledger).
RECONCILED = "reconciled from the project"
SAME_IMAGE = "the same image is already in the project"

PROJECT_IMAGE_QUOTA = {"F0": 5_000, "S0": 100_000}
# States push-all leaves out without a word: in the project, or kept out of it by a reviewer.
_SETTLED = (BlobState.PUSHED, BlobState.REJECTED, BlobState.NEAR_DUPLICATE)


class Provenance(StrEnum):
    """Where each image's origin is written in Custom Vision (its metadata is per upload call)."""

    IMAGE = "image"  # one image per call, with its own blob, etag, sha256...: every image traceable
    BATCH = "batch"  # up to 64 per call, sharing model name/version and the run id: 64x fewer calls


class Outcome(StrEnum):
    PUSHED = "pushed"  # a new image in the project
    DUPLICATE = "duplicate"  # its content was already in the project: recorded against that image
    SKIPPED = "skipped"  # already pushed, rejected, a near-duplicate, being pushed by another run, or changed
    UNDECRYPTABLE = "undecryptable"  # tampered, unknown version, missing metadata, not an image
    REFUSED = "refused"  # Custom Vision will not take it (format, size, ...); trying again will not help
    FAILED = "failed"  # did not get in this time (quota, service errors); the next run tries again


@dataclass(frozen=True)
class ItemOutcome:
    name: str
    etag: str
    outcome: Outcome
    reason: str = ""
    image_id: str | None = None
    model_version: str | None = None
    fitted: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.PUSHED, Outcome.DUPLICATE, Outcome.SKIPPED)


@dataclass
class PushProgress:
    done: int
    total: int | None
    counts: Counter
    elapsed: float
    last: ItemOutcome | None = None

    @property
    def images_per_second(self) -> float:
        landed = self.counts[Outcome.PUSHED] + self.counts[Outcome.DUPLICATE]
        return landed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class PushReport:
    outcomes: list[ItemOutcome] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    run_id: str = ""
    calls: int = 0
    throttled: int = 0
    listing_calls: int = 0  # of `calls`: counting and listing the project's images to reconcile the ledger
    reconciled: int = 0  # blobs found in the project (by provenance or content) and recorded, not uploaded

    @property
    def counts(self) -> Counter:
        return Counter(o.outcome for o in self.outcomes)

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    @property
    def images_per_second(self) -> float:
        landed = self.counts[Outcome.PUSHED] + self.counts[Outcome.DUPLICATE]
        return landed / self.seconds if self.seconds else 0.0

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "blob": o.name,
                "outcome": str(o.outcome),
                "reason": o.reason,
                "image_id": o.image_id,
                "model_version": o.model_version,
                "fitted": o.fitted,
            }
            for o in self.outcomes
        ]


@dataclass
class DryRunReport:
    """What push-all would do, counted without pushing."""

    listed: int = 0
    eligible: int = 0
    already_pushed: int = 0
    rejected: int = 0
    near_duplicates: int = 0
    in_progress: int = 0
    duplicates_by_content: int = 0
    stale: int = 0  # changed or deleted since listed: the next listing sees their new version
    unchecked: int = 0  # of `eligible`: contents not read (a quick dry run); checked while pushing
    undecryptable: Counter = field(default_factory=Counter)  # reason -> count
    eligible_by_version: Counter = field(default_factory=Counter)  # "model version" -> count
    eligible_by_day: Counter = field(default_factory=Counter)  # date -> count
    project_images: int | None = None
    project_quota: int | None = None

    @property
    def headroom(self) -> int | None:
        if self.project_images is None or self.project_quota is None:
            return None
        return self.project_quota - self.project_images

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "eligible": self.eligible,
            "already_pushed": self.already_pushed,
            "rejected": self.rejected,
            "near_duplicates": self.near_duplicates,
            "in_progress_elsewhere": self.in_progress,
            "duplicates_by_content": self.duplicates_by_content,
            "changed_since_listed": self.stale,
            "content_unchecked": self.unchecked,
            "undecryptable": sum(self.undecryptable.values()),
            "undecryptable_by_reason": dict(self.undecryptable),
            "eligible_by_model_version": dict(self.eligible_by_version),
            "eligible_by_day": {str(k): v for k, v in sorted(self.eligible_by_day.items(), key=lambda kv: str(kv[0]))},
            "project_images": self.project_images,
            "project_quota": self.project_quota,
            "headroom": self.headroom,
        }


class CancelToken:
    """Set it from any thread to stop a run after the batches in flight."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class _Prepared:
    blob: RetrainingBlob
    image: PreparedImage


@dataclass(frozen=True)
class _Settlement:
    """One item's outcome, to be recorded in the ledger and reported."""

    blob: RetrainingBlob
    outcome: Outcome
    reason: str
    image_id: str | None = None
    sha256: str | None = None
    fitted: str | None = None
    service_status: str | None = None


def version_label(blob: RetrainingBlob) -> str:
    return model_label(blob.model_name, blob.model_version)


def model_label(model_name: str | None, model_version: str | None) -> str:
    """'<model> <version>', '?' for either that is missing: how counts per model version are keyed."""
    return f"{model_name or '?'} {model_version or '?'}"


def _raw_bytes(batch: Sequence[_Prepared]) -> int:
    return sum(len(prepared.image.data) for prepared in batch)


def provenance_metadata(blob: RetrainingBlob, sha256: str) -> dict[str, str]:
    """Each image's origin, within Custom Vision's limits (10 pairs, values <= 256 characters).

    A fact the blob lacks (no confidence, no capture time) is left out rather than sent empty: the service
    may refuse an empty value (issue 18), and a missing key says the same.
    """
    metadata = {
        "source_container": _fit_value(blob.container),
        "source_blob": _fit_value(blob.name),
        "source_etag": _fit_value(blob.etag),
        "sha256": sha256,
        "model_name": _fit_value(blob.model_name or ""),
        "model_version": _fit_value(blob.model_version or ""),
        "confidence": "" if blob.confidence is None else f"{blob.confidence:g}",
        "captured_at": blob.captured_at.isoformat() if blob.captured_at else "",
        "pushed_by": "percept-curator",
    }
    return {key: value for key, value in metadata.items() if value}


def _fit_value(value: str) -> str:
    if len(value) <= MAX_METADATA_VALUE:
        return value
    digest = hashlib.sha1(value.encode()).hexdigest()[:16]  # noqa: S324 - a name tag, not security
    return value[: MAX_METADATA_VALUE - 17] + "~" + digest


class PushPipeline:
    """Push blobs to one Custom Vision project, recording everything in the ledger.

    It depends on what it uses of its parts (see `protocols`): a blob source, a decryptor, a target and a ledger.
    """

    # Before the first upload of a run, rebuild what the ledger lacks from the project's own provenance when
    # the project holds more images than the ledger knows (a new or lost ledger): listings instead of uploads.
    reconcile_with_project: bool = True

    def __init__(
        self,
        data: BlobSource,
        locker: Decryptor,
        customvision: PushTarget,
        ledger: PushLedger,
        *,
        max_concurrency: int = 8,
        max_uploads_in_flight: int = 4,
        max_upload_bytes_in_flight: int = 32 * 1024 * 1024,
        batch_bytes: int = MAX_BATCH_BYTES,
        tier: str = "S0",
    ) -> None:
        self.data = data
        self.locker = locker
        self.customvision = customvision
        self.ledger = ledger
        self.max_concurrency = max_concurrency
        self.max_uploads_in_flight = max_uploads_in_flight
        # The SDK holds each request's images about five times over while it sends them (the bytes, their
        # base64, the JSON text, the encoded body), so in-flight bytes, not calls, bound the memory: two
        # batches of camera frames at once, or many single images.
        self.max_upload_bytes_in_flight = max_upload_bytes_in_flight
        self.batch_bytes = batch_bytes
        self.tier = tier

    @property
    def project_id(self) -> str:
        return self.customvision.project_id

    # -- decrypting ---------------------------------------------------------------------------------

    def _decrypt(self, blob: RetrainingBlob) -> bytes:
        model_name, model_version = blob.require_model()
        return self.locker.decrypt(self.data.download(blob), model_name, model_version, blob_name=blob.name)

    def _prepare(self, blob: RetrainingBlob) -> _Prepared:
        plaintext = self._decrypt(blob)
        return _Prepared(blob, prepare_for_upload(plaintext, what=f"Blob {blob.name!r}"))

    # -- pushing ------------------------------------------------------------------------------------

    def push(
        self,
        blobs: Iterable[RetrainingBlob],
        *,
        tags: Sequence[str] = (),
        regions: Mapping[str, Sequence[Region]] | None = None,
        actor: str,
        provenance: Provenance | str = Provenance.IMAGE,
        progress: Callable[[PushProgress], None] | None = None,
        cancel: CancelToken | None = None,
        total: int | None = None,
        retry_failed: bool = True,
    ) -> PushReport:
        """Push `blobs` with image-level `tags` (names) and optional boxes per blob name."""
        provenance = Provenance(provenance)
        tag_ids = tuple(self.customvision.tag_ids(list(tags))) if tags else ()
        run = _Run(
            self,
            actor=actor,
            tag_ids=tag_ids,
            tag_names=tuple(tags),
            regions=regions or {},
            provenance=provenance,
            progress=progress,
            cancel=cancel or CancelToken(),
            total=total,
            retry_failed=retry_failed,
        )
        return run.execute(blobs)

    def push_all_untagged(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        actor: str,
        provenance: Provenance | str = Provenance.IMAGE,
        progress: Callable[[PushProgress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> PushReport:
        """Every blob not yet in the project and not rejected, as untagged images: the original Function's job."""
        candidates = self._unsettled(self.data.list_blobs(blob_filter))
        return self.push(candidates, actor=actor, provenance=provenance, progress=progress, cancel=cancel)

    def _unsettled(self, blobs: Iterable[RetrainingBlob]) -> Iterator[RetrainingBlob]:
        """Drop, without a word, what the ledger already settled (pushed, rejected, near-duplicate)."""
        iterator = iter(blobs)
        while chunk := list(islice(iterator, 500)):
            records = self.ledger.records([b.key for b in chunk], self.project_id)
            for blob in chunk:
                record = records.get(blob.key)
                if state_of_record(record) not in _SETTLED:
                    yield blob

    # -- dry run ---------------------------------------------------------------------------------------

    def dry_run(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        actor: str,
        progress: Callable[[PushProgress], None] | None = None,
        cancel: CancelToken | None = None,
        deep: bool = True,
    ) -> DryRunReport:
        """Count what push-all would do. Deep, every eligible blob's content is read (in memory), hashed once per
        blob version and remembered, so undecryptable blobs and duplicates by content are counted. Not deep, only
        the ledger and the metadata are read: what metadata alone condemns (missing or invalid model names, a
        size over the limit) is counted, the other eligible blobs are `unchecked` and their contents are checked
        while pushing (a second of work for a million indexed blobs, not an hour of downloads)."""
        report = DryRunReport()
        started = time.monotonic()
        seen_content: dict[str, str] = {}
        to_hash: list[RetrainingBlob] = []
        counts: Counter = Counter()

        def tally_eligible(blob: RetrainingBlob, sha256: str | None) -> None:
            if sha256 is not None:
                if sha256 in seen_content or self.ledger.pushed_image_for_content(self.project_id, sha256):
                    report.duplicates_by_content += 1
                    return
                seen_content[sha256] = blob.name
            report.eligible += 1
            report.eligible_by_version[version_label(blob)] += 1
            report.eligible_by_day[blob.captured_at.date() if blob.captured_at else date.min] += 1

        being_pushed = {claim.key for claim in self.ledger.claims(self.project_id) if claim.live}
        # Not deep, a blob index counts the blobs in groups, joined with the ledger in one query; without one (or
        # for a filter it cannot decide) the ledger is read once (every key whose state is not new), not once per
        # 500 blobs, and the blobs are walked. Either way the contents the ledger knows are left to the push.
        tally = None if deep else getattr(self.data, "tally", None)  # a blob source with an index has one
        tallies = None if tally is None else tally(blob_filter, self.project_id)
        known = {} if deep or tallies is not None else self.ledger.states(self.project_id)
        if tallies is not None:
            self._count_tallies(report, tallies, blob_filter, being_pushed)
        iterator = iter(()) if tallies is not None else iter(self.data.list_blobs(blob_filter))
        while chunk := list(islice(iterator, 500)):
            if cancel is not None and cancel.cancelled:
                break
            report.listed += len(chunk)
            records = self.ledger.records([b.key for b in chunk], self.project_id) if deep else {}
            for blob in chunk:
                record = records.get(blob.key)
                state = state_of_record(record) if deep else known.get(blob.key, BlobState.NEW)
                if state == BlobState.PUSHED:
                    report.already_pushed += 1
                elif state == BlobState.REJECTED:
                    report.rejected += 1
                elif state == BlobState.NEAR_DUPLICATE:
                    report.near_duplicates += 1
                elif blob.key in being_pushed:
                    report.in_progress += 1  # another live run holds it: not ours to count as eligible
                elif record is not None and record.sha256 and state != BlobState.UNDECRYPTABLE:
                    tally_eligible(blob, record.sha256)
                elif deep:
                    to_hash.append(blob)
                else:
                    condemned = self._condemned_by_metadata(blob)
                    if condemned is not None:
                        report.undecryptable[condemned.reason] += 1
                        self.ledger.note_undecryptable(blob.key, reason=_short_reason(condemned), actor=actor)
                    else:
                        report.unchecked += 1
                        tally_eligible(blob, None)
            for blob, result in map_bounded(self._hash, to_hash, max_concurrency=self.max_concurrency):
                if isinstance(result, StaleBlobError):
                    report.stale += 1  # not the blob's fault: nothing is noted, it stays eligible
                elif isinstance(result, CuratorError):
                    reason = result.reason if isinstance(result, BlobError) else "error"
                    report.undecryptable[reason] += 1
                    self.ledger.note_undecryptable(blob.key, reason=_short_reason(result), actor=actor)
                else:
                    self.ledger.note_content(
                        blob.key, sha256=result, model=(blob.model_name, blob.model_version), actor=actor
                    )
                    tally_eligible(blob, result)
                counts["hashed"] += 1
                if progress:
                    progress(PushProgress(report.listed, None, counts, time.monotonic() - started))
            to_hash.clear()
            if progress and not deep:
                progress(PushProgress(report.listed, None, counts, time.monotonic() - started))
        try:
            tagged, untagged = self.customvision.image_counts()
            report.project_images = tagged + untagged
            report.project_quota = PROJECT_IMAGE_QUOTA.get(self.tier)
        except CustomVisionError:
            report.project_images = None
        self.ledger.log(
            actor,
            "dry-run",
            project_id=self.project_id,
            outcome=f"{report.eligible} eligible",
            details=report.as_dict(),
        )
        return report

    def _count_tallies(
        self,
        report: DryRunReport,
        tallies: Sequence[IndexTally],
        blob_filter: BlobFilter | None,
        being_pushed: set[BlobKey],
    ) -> None:
        """A dry run's counts from an index's groups, by the rules the walk applies to each blob: the state from the
        ledger's facts, then what metadata alone condemns; then each blob another live run holds moves, as a group
        of -1, from where its group put it to in progress."""

        def bucket(model_name: str | None, model_version: str | None, too_large: bool) -> BlobError | None:
            stand_in = RetrainingBlob(
                name="",
                container="",
                etag="",
                size=self.data.max_blob_bytes + 1 if too_large else 0,
                last_modified=None,
                model_name=model_name,
                model_version=model_version,
                confidence=None,
                captured_at=None,
            )
            return self._condemned_by_metadata(stand_in)

        def add(group: IndexTally) -> None:
            n = group.count
            state = state_of_record(group)
            if state == BlobState.PUSHED:
                report.already_pushed += n
            elif state == BlobState.REJECTED:
                report.rejected += n
            elif state == BlobState.NEAR_DUPLICATE:
                report.near_duplicates += n
            elif (condemned := bucket(group.model_name, group.model_version, group.too_large)) is not None:
                report.undecryptable[condemned.reason] += n
            else:
                report.eligible += n
                report.unchecked += n
                report.eligible_by_version[model_label(group.model_name, group.model_version)] += n
                report.eligible_by_day[group.day or date.min] += n

        for group in tallies:
            report.listed += group.count
            add(group)
        for key in being_pushed:
            blob = self.data.indexed(key[1])
            if blob is None or blob.key != key or (blob_filter is not None and not blob_filter.matches(blob)):
                continue
            record = self.ledger.record(key, self.project_id)
            state = state_of_record(record)
            if state in (BlobState.PUSHED, BlobState.REJECTED, BlobState.NEAR_DUPLICATE):
                continue  # counted as the walk counts it: settled before in progress
            day = blob.captured_at.date() if blob.captured_at else None
            too_large = blob.size > self.data.max_blob_bytes
            add(IndexTally(blob.model_name, blob.model_version, day, too_large, record.review, record.push_state, -1))
            report.in_progress += 1

    def _condemned_by_metadata(self, blob: RetrainingBlob) -> BlobError | None:
        """What the listing alone says makes the blob undecryptable or unpushable (None: its content decides)."""
        try:
            blob.require_model()
            refuse = getattr(self.data, "refuse_if_too_large", None)
            if refuse is not None:
                refuse(blob)
        except BlobError as exc:
            return exc
        return None

    def _hash(self, blob: RetrainingBlob) -> str:
        prepared = self._prepare(blob)
        return prepared.image.sha256

    # -- review helpers that need the project ------------------------------------------------------------

    def set_regions(
        self,
        blob: RetrainingBlob,
        regions: Sequence[Region],
        *,
        actor: str,
        provenance: Provenance | str = Provenance.IMAGE,
    ) -> RegionUpdate:
        """Make the image's boxes exactly `regions`: upload it with them, or change the boxes of the pushed image."""
        if len(regions) > MAX_REGIONS_PER_IMAGE:
            raise CuratorError(f"An image can have at most {MAX_REGIONS_PER_IMAGE} regions ({len(regions)} drawn).")
        for region in regions:
            try:
                region.validate()
            except ValueError as exc:
                raise CuratorError(f"A box on {blob.name!r} is not valid: {exc}.") from None
        record = self.ledger.record(blob.key, self.project_id)
        if record.push_state != PushState.PUSHED or not record.image_id:
            report = self.push([blob], regions={blob.name: list(regions)}, actor=actor, provenance=provenance)
            outcome = report.outcomes[0]
            return RegionUpdate(outcome.image_id, len(regions) if outcome.image_id else 0, 0, 0, outcome)
        images = self.customvision.images_by_ids([record.image_id])
        if not images:
            raise CuratorError(
                f"Image {record.image_id} of {blob.name!r} is no longer in the project.",
                hint="It was deleted in the Custom Vision portal; push the blob again.",
            )
        current = [
            (r["region_id"], Region(r["tag_id"], r["left"], r["top"], r["width"], r["height"]))
            for r in images[0].regions
        ]
        removed = [rid for rid, box in current if not any(box.same_box(r) for r in regions)]
        added = [r for r in regions if not any(box.same_box(r) for _, box in current)]
        if removed:
            self.customvision.delete_regions(removed)
        if added:
            self.customvision.add_regions(record.image_id, added)
        self.ledger.log(
            actor,
            "regions",
            key=blob.key,
            project_id=self.project_id,
            outcome="regions updated",
            image_id=record.image_id,
            details={"added": len(added), "removed": len(removed), "total": len(regions)},
        )
        return RegionUpdate(record.image_id, len(added), len(removed), len(current) - len(removed))

    def retag(
        self, blobs: Sequence[RetrainingBlob], *, add: Sequence[str] = (), remove: Sequence[str] = (), actor: str
    ) -> list[ItemOutcome]:
        """Add or remove tags on images already pushed (no new upload)."""
        records = self.ledger.records([b.key for b in blobs], self.project_id)
        pushed = [
            (b, records[b.key])
            for b in blobs
            if b.key in records and records[b.key].image_id and records[b.key].push_state == PushState.PUSHED
        ]
        outcomes = [
            ItemOutcome(b.name, b.etag, Outcome.SKIPPED, "not pushed yet: push it instead")
            for b in blobs
            if b.key not in {p[0].key for p in pushed}
        ]
        if not pushed:
            return outcomes
        add_ids = self.customvision.tag_ids(list(add)) if add else []
        remove_ids = self.customvision.tag_ids(list(remove)) if remove else []
        image_ids = [record.image_id for _, record in pushed]
        if add_ids:
            self.customvision.add_image_tags([(i, t) for i in image_ids for t in add_ids])
        if remove_ids:
            self.customvision.remove_image_tags(image_ids, remove_ids)
        lowered_remove = {r.lower() for r in remove}
        for blob, record in pushed:
            tags = [t for t in record.tags if t.lower() not in lowered_remove]
            tags += [t for t in add if t.lower() not in {x.lower() for x in tags}]
            self.ledger.record_tags(blob.key, self.project_id, tags=tags, actor=actor, added=add, removed=remove)
            outcomes.append(
                ItemOutcome(blob.name, blob.etag, Outcome.PUSHED, "retagged", record.image_id, version_label(blob))
            )
        return outcomes


@dataclass(frozen=True)
class RegionUpdate:
    """What changed on an image's boxes: added and removed counts, and the image (None if not in the project)."""

    image_id: str | None
    added: int
    removed: int
    kept: int
    outcome: ItemOutcome | None = None


def _short_reason(error: CuratorError) -> str:
    return f"{error.reason}: {error.message}"


class _Heartbeat:
    """Renews a run's live claims every lease/3 from a daemon thread of its own, whatever the run waits on
    (a throttled or slow upload), so no other run takes over an item this run is still working on."""

    def __init__(self, ledger: PushLedger, project_id: str, run_id: str, keys: Callable[[], list[BlobKey]]) -> None:
        self.ledger = ledger
        self.project_id = project_id
        self.run_id = run_id
        self.keys = keys
        self.lost: set[BlobKey] = set()  # claims another run took over (this run stalled past the lease)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"percept-heartbeat-{run_id[-8:]}", daemon=True)

    def start(self) -> _Heartbeat:
        self._thread.start()
        return self

    def _main(self) -> None:
        interval = max(0.05, self.ledger.lease_seconds / 3)
        while not self._stop.wait(interval):
            keys = self.keys()
            if not keys:
                continue
            try:
                self.lost.update(self.ledger.heartbeat(keys, self.project_id, self.run_id))
            except (sqlite3.Error, ServiceError):
                continue  # a busy file or an unanswering table service: the next beat tries again, within the lease

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Run:
    """One push run: the streaming machinery behind PushPipeline.push."""

    def __init__(
        self,
        pipeline: PushPipeline,
        *,
        actor: str,
        tag_ids: tuple[str, ...],
        tag_names: tuple[str, ...],
        regions: Mapping[str, Sequence[Region]],
        provenance: Provenance,
        progress: Callable[[PushProgress], None] | None,
        cancel: CancelToken,
        total: int | None,
        retry_failed: bool,
    ) -> None:
        self.p = pipeline
        self.ledger = pipeline.ledger
        self.project_id = pipeline.project_id
        self.actor = actor
        self.tag_ids = tag_ids
        self.tag_names = tag_names
        self.regions = regions
        self.provenance = provenance
        self.progress = progress
        self.cancel = cancel
        self.total = total
        self.retry_failed = retry_failed
        self.run_id = self.ledger.new_run_id()
        self.report = PushReport(run_id=self.run_id)
        self.started = time.monotonic()
        self.claimed: set[BlobKey] = set()  # claimed and not yet settled; the heartbeat thread reads it
        self._claimed_lock = threading.Lock()
        self.content_leader: dict[str, BlobKey] = {}  # sha256 -> the blob of this run that carries it
        self.followers: dict[BlobKey, list[_Prepared]] = defaultdict(list)
        self._settler: ThreadPoolExecutor | None = None  # a batch's settlements side by side (ledger.parallel_writes)
        # What one upload may wait in all (retries, Retry-After, quota), well under the lease: an item stuck
        # behind a throttled service gives up (and is retried by the next run) rather than sit on its claim.
        self.wait_budget = self.ledger.lease_seconds / 2
        self.calls_before = pipeline.customvision.stats.calls
        self.throttled_before = pipeline.customvision.stats.throttled
        self.listings_before = pipeline.customvision.stats.listings
        # The project's images by provenance and content, when the project holds images the ledger does not know
        # (a new or lost ledger, or answers lost after the work): decided once, before the first upload.
        self.index: ProjectIndex | None = None
        self.index_decided = False
        self.project_images: int | None = None

    # -- bookkeeping ----------------------------------------------------------------------------------

    def emit(self, outcome: ItemOutcome) -> None:
        self.report.outcomes.append(outcome)
        if self.progress:
            self.progress(
                PushProgress(
                    len(self.report.outcomes), self.total, self.report.counts, time.monotonic() - self.started, outcome
                )
            )

    def live_claims(self) -> list[BlobKey]:
        with self._claimed_lock:
            return list(self.claimed)

    def _unclaim(self, keys: Iterable[BlobKey]) -> None:
        with self._claimed_lock:
            self.claimed.difference_update(keys)

    def settle(
        self,
        blob: RetrainingBlob,
        outcome: Outcome,
        reason: str,
        *,
        image_id: str | None = None,
        sha256: str | None = None,
        fitted: str | None = None,
        service_status: str | None = None,
    ) -> None:
        self.settle_all([_Settlement(blob, outcome, reason, image_id, sha256, fitted, service_status)])

    def settle_all(self, settlements: Sequence[_Settlement]) -> None:
        """Record each outcome in the ledger (side by side where the ledger allows) and report them in order."""
        if len(settlements) > 1 and self.ledger.parallel_writes > 1:
            if self._settler is None:
                self._settler = ThreadPoolExecutor(self.ledger.parallel_writes, thread_name_prefix="percept-settle")
            held = list(self._settler.map(self.record, settlements))
        else:
            held = [self.record(settlement) for settlement in settlements]
        for settlement, still_held in zip(settlements, held, strict=True):
            blob, outcome, reason = settlement.blob, settlement.outcome, settlement.reason
            if not still_held:
                said = f"{outcome}: {reason}" if reason else str(outcome)
                outcome, reason = Outcome.SKIPPED, f"another run took it over before this run recorded it ({said})"
            self.emit(
                ItemOutcome(
                    blob.name, blob.etag, outcome, reason, settlement.image_id, version_label(blob), settlement.fitted
                )
            )

    def record(self, settlement: _Settlement) -> bool:
        """Write one outcome to the ledger; False when this run no longer held the item's claim."""
        blob, outcome, reason = settlement.blob, settlement.outcome, settlement.reason
        key = blob.key
        details = {"reason": reason} if reason else {}
        if settlement.fitted:
            details["fitted"] = settlement.fitted
        if settlement.service_status:
            details["custom_vision_status"] = settlement.service_status
        held = True  # every write names this run's claim: one that lost it must not overwrite another run's
        if outcome in (Outcome.PUSHED, Outcome.DUPLICATE):
            held = self.ledger.record_pushed(
                key,
                self.project_id,
                image_id=settlement.image_id or "",
                sha256=settlement.sha256,
                tags=self.tag_names,
                actor=self.actor,
                outcome=str(outcome),
                details=details or None,
                model=(blob.model_name, blob.model_version),
                claim=self.run_id,
            )
        elif outcome == Outcome.UNDECRYPTABLE:
            self.ledger.note_undecryptable(key, reason=reason, actor=self.actor)  # a fact of the blob, not the run
            self.ledger.release([key], self.project_id, self.run_id)
        elif outcome in (Outcome.REFUSED, Outcome.FAILED):
            held = self.ledger.record_failed(
                key,
                self.project_id,
                reason=reason,
                actor=self.actor,
                retryable=outcome == Outcome.FAILED,
                sha256=settlement.sha256,
                details=details or None,
                claim=self.run_id,
            )
        elif outcome == Outcome.SKIPPED:  # changed since listed: no trace, it stays eligible
            self.ledger.release([key], self.project_id, self.run_id)
        self._unclaim([key])
        return held

    # -- stages ---------------------------------------------------------------------------------------

    def claimed_blobs(self, blobs: Iterable[RetrainingBlob]) -> Iterator[RetrainingBlob]:
        iterator = iter(blobs)
        while not self.cancel.cancelled and (chunk := list(islice(iterator, 64))):
            unique = list({b.key: b for b in chunk}.values())
            claimed, skipped = self.ledger.claim(
                [b.key for b in unique], self.project_id, self.run_id, actor=self.actor, retry_failed=self.retry_failed
            )
            claimed_set = set(claimed)
            already = [b for b in unique if skipped.get(b.key) is BlobState.PUSHED]
            retagged = self.tag_pushed(already) if already and self.tag_ids else {}
            for blob in unique:
                if blob.key in skipped:
                    left_out = (Outcome.SKIPPED, left_out_because(skipped[blob.key]))
                    outcome, reason = retagged.get(blob.key, left_out)
                    self.emit(ItemOutcome(blob.name, blob.etag, outcome, reason, model_version=version_label(blob)))
            with self._claimed_lock:
                self.claimed |= claimed_set
            if claimed_set and not self.index_decided:
                # A chunk shorter than 64 is the whole run: its size is known exactly.
                self.decide_reconcile(len(claimed_set), whole_run=len(chunk) < 64)
            for blob in unique:
                if blob.key in claimed_set and not self.reconcile_by_source(blob):
                    yield blob

    def decide_reconcile(self, claimed: int, *, whole_run: bool) -> None:
        """One count of the project's images (one call) against what the ledger knows: when the project holds
        more than the ledger can account for, list it (256 a call) and record what is there instead of uploading.

        Only when it can pay: a one-blob run (the Function, a box edit) never counts (one count would cost what
        one upload costs), and the listing must cost fewer calls than the uploads it may save. Images that are
        not ours (uploaded in the portal, say) would make every run list the project again, so the last
        reconciliation's unmatched count is remembered in its audit event and allowed for.
        """
        self.index_decided = True
        if not self.p.reconcile_with_project or claimed < 2:
            return
        customvision = self.p.customvision
        known = self.ledger.pushed_image_count(self.project_id)
        last = self.ledger.last_event("reconcile", self.project_id)
        foreign = int(last.details.get("unmatched", 0)) if last is not None else 0
        try:
            with customvision.wait_budget(self.wait_budget):
                self.project_images = customvision.image_count()
                gap = self.project_images - known - foreign
                if gap <= 0:
                    return
                in_doubt = min(gap, claimed) if whole_run else gap
                # Per-image provenance: one upload call a frame. Batches: a batch of duplicates may be refused
                # whole and halved (2 calls a batch at least).
                saves = in_doubt if self.provenance == Provenance.IMAGE else 2 * -(-in_doubt // MAX_IMAGES_PER_BATCH)
                if -(-self.project_images // 256) > saves:
                    return
                self.index = customvision.project_index(refresh=True)
        except CustomVisionError:
            # Reconciling saves uploads; without it the uploads' own duplicate handling still keeps each frame once.
            self.index = None
            return
        self.ledger.log(
            self.actor,
            "reconcile",
            project_id=self.project_id,
            outcome="listed the project",
            details={"project_images": self.project_images, "ledger_images": known, "run": self.run_id},
        )

    def reconcile_by_source(self, blob: RetrainingBlob) -> bool:
        """Settle a claimed blob whose image the project holds by its provenance (no download, no upload)."""
        if self.index is None or self.tag_ids or self.regions.get(blob.name):
            return False  # a push with labels goes the long way, so the labels reach that image
        found = self.index.source(_fit_value(blob.container), _fit_value(blob.name), _fit_value(blob.etag))
        if found is None:
            return False
        image_id, sha256 = found
        self.report.reconciled += 1
        self.settle(
            blob,
            Outcome.DUPLICATE,
            f"{RECONCILED}: its image carries this blob's provenance",
            image_id=image_id,
            sha256=sha256,
        )
        return True

    def tag_pushed(self, blobs: Sequence[RetrainingBlob]) -> dict[BlobKey, tuple[Outcome, str]]:
        """This push's tags onto the images of blobs pushed before without them: what to report for each."""
        records = self.ledger.records([b.key for b in blobs], self.project_id)
        said: dict[BlobKey, tuple[Outcome, str]] = {}
        for blob in blobs:
            record = records.get(blob.key)
            if record is None or not record.image_id:
                continue
            have = {t.lower() for t in record.tags}
            missing = [(n, i) for n, i in zip(self.tag_names, self.tag_ids, strict=True) if n.lower() not in have]
            if not missing:
                continue
            try:
                with self.p.customvision.wait_budget(self.wait_budget):
                    labelled = self.p.customvision.label_image(record.image_id, [i for _, i in missing])
            except CustomVisionError as exc:
                said[blob.key] = (Outcome.FAILED, f"already pushed, but its tags could not be added: {exc.message}")
                continue
            if not labelled.complete:
                said[blob.key] = (Outcome.REFUSED, f"already pushed, but {labelled.describe()}")
                continue
            names = [n for n, _ in missing]
            self.ledger.record_tags(
                blob.key, self.project_id, tags=[*record.tags, *names], actor=self.actor, added=names
            )
            said[blob.key] = (Outcome.SKIPPED, f"already pushed, {labelled.describe()}")
        return said

    def execute(self, blobs: Iterable[RetrainingBlob]) -> PushReport:
        uploads: dict[Future, list[_Prepared]] = {}
        open_batches: dict[tuple[str, str], list[_Prepared]] = defaultdict(list)
        open_bytes: Counter = Counter()
        prepared_stream = map_bounded(
            self.p._prepare, self.claimed_blobs(blobs), max_concurrency=self.p.max_concurrency
        )
        heartbeat = _Heartbeat(self.ledger, self.project_id, self.run_id, self.live_claims).start()
        with ThreadPoolExecutor(self.p.max_uploads_in_flight, thread_name_prefix="percept-upload") as uploader:

            def submit(batch: list[_Prepared], task: Callable[[], list[UploadResult]] | None = None) -> None:
                size = _raw_bytes(batch)
                while uploads and (
                    len(uploads) >= self.p.max_uploads_in_flight
                    or sum(map(_raw_bytes, uploads.values())) + size > self.p.max_upload_bytes_in_flight
                ):
                    self.collect(uploads, wait_for_one=True)
                uploads[uploader.submit(task or (lambda: self.upload(batch)))] = batch

            try:
                for blob, result in prepared_stream:
                    if self.cancel.cancelled:
                        break  # what was claimed and not sent is released below
                    self.collect(uploads, wait_for_one=False)
                    if isinstance(result, StaleBlobError):
                        self.settle(blob, Outcome.SKIPPED, STALE_REASON)
                        continue
                    if blob.key in heartbeat.lost:  # this run stalled past the lease: the item is another run's now
                        self.settle(blob, Outcome.SKIPPED, "another run took it over before this run sent it")
                        continue
                    if isinstance(result, CuratorError):
                        outcome = (
                            Outcome.REFUSED
                            if isinstance(result, ImageLimitError)
                            else (Outcome.UNDECRYPTABLE if isinstance(result, BlobError) else Outcome.FAILED)
                        )
                        self.settle(blob, outcome, _short_reason(result))
                        continue
                    sha = result.image.sha256
                    existing = self.ledger.pushed_image_for_content(self.project_id, sha)
                    reconciled = False
                    if not existing and self.index is not None:
                        existing = self.reconcile_by_content(result)
                        reconciled = existing is not None
                    if existing:
                        if self.tag_ids or self.regions.get(blob.name):
                            # Its content is in the project already: no upload, but this push's tags and boxes
                            # go onto that image (Custom Vision would answer OKDuplicate and may not add them).
                            batch = [result]
                            submit(batch, lambda batch=batch, image_id=existing: self.label_existing(batch, image_id))
                        else:
                            self.report.reconciled += reconciled
                            self.settle(
                                blob,
                                Outcome.DUPLICATE,
                                f"{RECONCILED}: the same image"
                                if reconciled
                                else "the same image is already in the project",
                                image_id=existing,
                                sha256=sha,
                            )
                        continue
                    leader = self.content_leader.get(sha)
                    if leader is not None:
                        self.followers[leader].append(result)
                        continue
                    self.content_leader[sha] = blob.key
                    group = (blob.model_name or "", blob.model_version or "")
                    if self.provenance == Provenance.IMAGE:
                        submit([result])
                        continue
                    size = len(result.image.data)
                    if open_batches[group] and (
                        len(open_batches[group]) >= MAX_IMAGES_PER_BATCH
                        or open_bytes[group] + size > self.p.batch_bytes
                    ):
                        submit(open_batches.pop(group))
                        open_bytes[group] = 0
                    open_batches[group].append(result)
                    open_bytes[group] += size
                if not self.cancel.cancelled:
                    for group in list(open_batches):
                        submit(open_batches.pop(group))
                while uploads:
                    self.collect(uploads, wait_for_one=True)
            finally:
                prepared_stream.close()
                for future in list(uploads):  # an exception above: settle what is in flight
                    self.collect({future: uploads.pop(future)}, wait_for_one=True)
                leftovers = [p for batch in open_batches.values() for p in batch]
                self._unclaim(p.blob.key for p in leftovers)
                unsent = self.live_claims() + [p.blob.key for p in leftovers]
                if unsent:  # cancelled (or failed) before these went out: they stay eligible
                    self.ledger.release(unsent, self.project_id, self.run_id)
                    self._unclaim(unsent)
                heartbeat.stop()
                if self._settler is not None:
                    self._settler.shutdown(wait=True)
        stats = self.p.customvision.stats
        self.report.cancelled = self.cancel.cancelled
        self.report.seconds = time.monotonic() - self.started
        self.report.calls = stats.calls - self.calls_before
        self.report.throttled = stats.throttled - self.throttled_before
        self.report.listing_calls = stats.listings - self.listings_before
        if self.index is not None:
            self.note_reconciled()
        return self.report

    def reconcile_by_content(self, prepared: _Prepared) -> str | None:
        """The project's image with this frame's content (sha256 metadata, or a hashed original), if any."""
        hashes = (prepared.image.sha256, hashlib.sha256(prepared.image.data).hexdigest())
        try:
            with self.p.customvision.wait_budget(self.wait_budget):
                return self.p.customvision.known_content(hashes)
        except CustomVisionError:
            return None  # the upload's own duplicate handling still applies

    def note_reconciled(self) -> None:
        """The audit event a later run reads: how many of the project's images the ledger still cannot name."""
        pushed_now = self.report.counts[Outcome.PUSHED]
        unmatched = max(0, (self.project_images or 0) + pushed_now - self.ledger.pushed_image_count(self.project_id))
        self.ledger.log(
            self.actor,
            "reconcile",
            project_id=self.project_id,
            outcome=f"{self.report.reconciled} {RECONCILED}",
            details={"reconciled": self.report.reconciled, "unmatched": unmatched, "run": self.run_id},
        )

    def upload(self, batch: list[_Prepared]) -> list[UploadResult]:
        """Upload a batch (in an upload thread), its waits capped by the run's budget."""
        with self.p.customvision.wait_budget(self.wait_budget):
            return self._upload(batch)

    def _upload(self, batch: list[_Prepared]) -> list[UploadResult]:
        items = []
        for prepared in batch:
            blob = prepared.blob
            regions = tuple(self.regions.get(blob.name, ()))
            tag_ids = self.tag_ids
            if regions:  # a box's tag tags the image too; keep both lists consistent
                tag_ids = tuple(dict.fromkeys(tag_ids + tuple(r.tag_id for r in regions)))
            items.append(
                UploadItem(
                    name=blob.name,
                    data=prepared.image.data,
                    tag_ids=tag_ids,
                    regions=regions,
                    sha256=prepared.image.sha256,
                )
            )
        if self.provenance == Provenance.IMAGE:
            metadata = provenance_metadata(batch[0].blob, batch[0].image.sha256)
        else:
            first = batch[0].blob
            metadata = {
                "source_container": _fit_value(first.container),
                "model_name": _fit_value(first.model_name or ""),
                "model_version": _fit_value(first.model_version or ""),
                "push_run": _fit_value(self.run_id),
                "pushed_by": "percept-curator",
            }
            metadata = {key: value for key, value in metadata.items() if value}
        return self.p.customvision.upload(items, batch_metadata=metadata)

    def label_existing(self, batch: list[_Prepared], image_id: str) -> list[UploadResult]:
        """Put this push's tags and boxes on the project's image of the same content (in an upload thread)."""
        [prepared] = batch
        regions = tuple(self.regions.get(prepared.blob.name, ()))
        with self.p.customvision.wait_budget(self.wait_budget):
            try:
                labelled = self.p.customvision.label_image(image_id, self.tag_ids, regions)
            except CustomVisionError as exc:
                if exc.code == "NotFoundImage":  # deleted in the portal since: upload it afresh
                    return self._upload(batch)
                raise
        if not labelled.complete:
            reason = f"the same image is already in the project, but {labelled.describe()}"
            return [UploadResult(prepared.blob.name, PushStatus.REJECTED, image_id, reason)]
        reason = f"duplicate, {labelled.describe()}"
        return [UploadResult(prepared.blob.name, PushStatus.DUPLICATE, image_id, reason)]

    def collect(self, uploads: dict[Future, list[_Prepared]], *, wait_for_one: bool) -> None:
        if not uploads:
            return
        done, _ = wait(list(uploads), timeout=None if wait_for_one else 0, return_when=FIRST_COMPLETED)
        for future in done:
            batch = uploads.pop(future)
            try:
                results = future.result()
            except CuratorError as exc:
                # A refused key is not the images' fault: they stay eligible for the next run.
                retryable = exc.retryable or isinstance(exc, AuthenticationError)
                results = [
                    UploadResult(
                        p.blob.name, PushStatus.FAILED if retryable else PushStatus.REJECTED, None, exc.message
                    )
                    for p in batch
                ]
            pairs = list(zip(batch, results, strict=True))
            settlements = [self.upload_settlement(prepared, result) for prepared, result in pairs]
            self.settle_all(settlements)
            for (prepared, result), settlement in zip(pairs, settlements, strict=True):
                self.settle_followers(prepared, result, settlement.outcome)

    def upload_settlement(self, prepared: _Prepared, result: UploadResult) -> _Settlement:
        outcome = {
            PushStatus.PUSHED: Outcome.PUSHED,
            PushStatus.DUPLICATE: Outcome.DUPLICATE,
            PushStatus.REJECTED: Outcome.REFUSED,
            PushStatus.FAILED: Outcome.FAILED,
        }[result.status]
        image = prepared.image
        return _Settlement(
            prepared.blob,
            outcome,
            result.reason if outcome != Outcome.PUSHED else "",
            result.image_id if outcome in (Outcome.PUSHED, Outcome.DUPLICATE) else None,
            image.sha256,
            image.fitted,
            result.service_status,
        )

    def settle_followers(self, prepared: _Prepared, result: UploadResult, outcome: Outcome) -> None:
        """The frames of this run with the same content as `prepared`, settled as its upload went (`outcome`)."""
        image = prepared.image
        for follower in self.followers.pop(prepared.blob.key, []):
            if outcome in (Outcome.PUSHED, Outcome.DUPLICATE):
                self.settle_follower(follower, prepared, result)
            else:
                self.settle(
                    follower.blob,
                    outcome,
                    f"same image as {prepared.blob.name}, which: {result.reason}",
                    sha256=image.sha256,
                )

    def settle_follower(self, follower: _Prepared, leader: _Prepared, result: UploadResult) -> None:
        """A frame of the same content as one this run uploaded: that image, with the follower's own boxes."""
        reason = f"same image as {leader.blob.name}"
        boxes = tuple(self.regions.get(follower.blob.name, ()))
        if boxes and result.image_id:  # rare (identical frames, different boxes): done here, on the run's thread
            try:
                with self.p.customvision.wait_budget(self.wait_budget):
                    labelled = self.p.customvision.label_image(result.image_id, (), boxes)
            except CustomVisionError as exc:
                outcome = Outcome.FAILED if exc.retryable else Outcome.REFUSED
                self.settle(
                    follower.blob, outcome, f"{reason}, but its boxes: {exc.message}", sha256=follower.image.sha256
                )
                return
            if not labelled.complete:
                self.settle(follower.blob, Outcome.REFUSED, f"{reason}, but {labelled.describe()}")
                return
            reason = f"{reason}, {labelled.describe()}"
        self.settle(follower.blob, Outcome.DUPLICATE, reason, image_id=result.image_id, sha256=follower.image.sha256)


ReportT = TypeVar("ReportT")


class BackgroundPush(Generic[ReportT]):
    """A push run in a thread of its own, so it outlives the page that started it (a closed tab) and
    the script run that started it (Streamlit stops a run when the reviewer acts meanwhile).

    `report` is what `run` returned (a `PushReport` for push all untagged, an `exporting.ExportSummary` for an
    export) and `progress` what it reported last (a `PushProgress`, an `exporting.ExportProgress`). The app keeps
    push-all runs and exports in a process-wide registry (`jobs.PushJobs`); the ledger's claims make a restarted
    app resume a push where a killed one stopped, an export's manifest an export.
    """

    def __init__(
        self,
        run: Callable[[Callable[[Any], None], CancelToken], ReportT],
        *,
        description: str,
        actor: str,
        total: int | None = None,
    ) -> None:
        self.description = description
        self.actor = actor
        self.total = total
        self.cancel_token = CancelToken()
        self.progress: Any = None
        self.report: ReportT | None = None
        self.error: BaseException | None = None
        self.started_at = time.time()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(run,), name="percept-push", daemon=True)

    def start(self) -> BackgroundPush:
        self._thread.start()
        return self

    def _main(self, run) -> None:
        try:
            self.report = run(self._on_progress, self.cancel_token)
        except BaseException as exc:  # reported to whoever looks at the job
            self.error = exc
        finally:
            self._done.set()

    def _on_progress(self, progress: Any) -> None:
        if self.total is not None and progress.total is None:
            progress.total = self.total
        self.progress = progress

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


__all__ = [
    "BackgroundPush",
    "CancelToken",
    "DryRunReport",
    "ItemOutcome",
    "Outcome",
    "Provenance",
    "PushPipeline",
    "PushProgress",
    "PushReport",
    "RegionUpdate",
    "provenance_metadata",
]
