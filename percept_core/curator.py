"""`Curator`: one object that gives notebooks, the app, the CLI and the Function the whole core."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient, is_blob_fault, map_bounded
from .config import Settings
from .customvision import CustomVisionClient, IterationInfo, ProjectInfo, Region, TagInfo
from .errors import CuratorError
from .images import THUMBNAIL_SIZE, PreviewCache, thumbnail
from .ledger import DEFAULT_LEDGER_PATH, BlobRecord, Ledger, default_actor
from .locker import KeyServiceClient, Locker
from .pipeline import (
    CancelToken,
    DryRunReport,
    ItemOutcome,
    Provenance,
    PushPipeline,
    PushProgress,
    PushReport,
    RegionUpdate,
)
from .state import Action, check, state_of_record


class Curator:
    """The core, configured once: `Curator()` loads Settings from the usual sources.

    It holds clients and the key cache, never decrypted images: sharing one Curator between users
    shares connections and keys, not plaintext.
    """

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None, **overrides: Any) -> None:
        self.settings = settings if settings is not None else Settings.load(**overrides)
        self.actor = actor or default_actor()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Curator({self.settings!r})"

    # -- clients, built on first use --------------------------------------------------------------

    @cached_property
    def data(self) -> RetrainingDataClient:
        return RetrainingDataClient.from_settings(self.settings)

    @cached_property
    def key_service(self) -> KeyServiceClient:
        s = self.settings
        s.require("mm_server_url")
        return KeyServiceClient(
            s.mm_server_url,
            credential=None if s.mm_bootstrap_secret else s.credential(),
            bootstrap_secret=s.mm_bootstrap_secret,
            key_vault_url=s.mm_key_vault_url,
        )

    @cached_property
    def locker(self) -> Locker:
        return Locker(self.key_service)

    # -- blobs --------------------------------------------------------------------------------------

    def blobs(
        self, blob_filter: BlobFilter | None = None, *, states: Sequence[str] = (), **filter_fields: Any
    ) -> Iterator[RetrainingBlob]:
        """Every matching retraining blob, streamed; keyword arguments build a BlobFilter.

        `states` keeps blobs whose review state (see `state_of`) is one of them, from the ledger,
        before anything is decrypted.
        """
        return self.data.list_blobs(blob_filter or BlobFilter(**filter_fields), predicate=self._state_predicate(states))

    def blob_page(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        states: Sequence[str] = (),
        page_size: int = 48,
        continuation: str | None = None,
    ) -> BlobPage:
        """One page of matching blobs; the continuation token gives the next page (None at the end)."""
        return self.data.list_page(
            blob_filter, page_size=page_size, continuation=continuation, predicate=self._state_predicate(states)
        )

    def state_of(self, blob: RetrainingBlob, record: BlobRecord | None = None) -> str:
        """new, pushed, failed, pushing, rejected, near_duplicate or cannot decrypt (known without decrypting)."""
        if record is not None and record.state != "new":
            return "cannot decrypt" if record.state == "undecryptable" else record.state
        return "cannot decrypt" if not blob.has_model else "new"

    def _state_predicate(self, states: Sequence[str]) -> Callable[[RetrainingBlob], bool] | None:
        if not states:
            return None
        wanted = set(states)
        project_id = self.settings.custom_vision_project_id
        known = self.ledger.states(project_id)  # one snapshot: key -> state, for keys not "new"

        def matches(blob: RetrainingBlob) -> bool:
            state = known.get(blob.key, "new")
            if state == "undecryptable" or (state == "new" and not blob.has_model):
                state = "cannot decrypt"
            return state in wanted

        return matches

    def blob(self, name: str) -> RetrainingBlob:
        return self.data.get_blob(name)

    def decrypt(self, blob: RetrainingBlob) -> bytes:
        """The blob's plaintext, in memory: downloaded, key fetched once per version, HMAC checked."""
        model_name, model_version = blob.require_model()
        ciphertext = self.data.download(blob)
        return self.locker.decrypt(ciphertext, model_name, model_version, blob_name=blob.name)

    def preview(self, blob: RetrainingBlob, *, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
        """A JPEG thumbnail of the decrypted frame (in memory only)."""
        return thumbnail(self.decrypt(blob), size=size, what=f"Blob {blob.name!r}")

    def previews(
        self,
        blobs: Iterable[RetrainingBlob],
        *,
        cache: PreviewCache | None = None,
        size: tuple[int, int] = THUMBNAIL_SIZE,
        max_concurrency: int = 8,
        record_failures: bool = True,
    ) -> dict[tuple[str, str, str], bytes | CuratorError]:
        """Thumbnails by blob key, or the error that stands in for one; only what `cache` lacks is decrypted.

        At most `max_concurrency` blobs are downloaded and decrypted at once. Errors of the blob itself
        (tampered, unknown version, missing metadata, not an image, too large) are cached too and, with
        `record_failures`, noted in the ledger so the "cannot decrypt" filter finds the blob; a
        service error is not cached, so the next call tries again. A blob that changed since it was
        listed (StaleBlobError, "changed since listed") is neither cached nor noted: refresh the listing.
        """
        results: dict[tuple[str, str, str], bytes | CuratorError] = {}
        missing: list[RetrainingBlob] = []
        for blob in dict.fromkeys(blobs):
            hit = cache.get((*blob.key, size)) if cache is not None else None
            if hit is None:
                missing.append(blob)
            else:
                results[blob.key] = hit

        # Keys are fetched as the first blob of each version needs one, while the others download: one fetch
        # and one PBKDF2 per version (the locker's), and a version whose key cannot be had fails its other
        # blobs at once (the locker remembers the failure for a while).
        def attempt(blob: RetrainingBlob) -> bytes:
            try:
                return self.preview(blob, size=size)
            except CuratorError:
                raise
            except Exception as exc:  # a decoder or SDK surprise: one broken tile, not a broken page
                raise CuratorError(f"Could not preview blob {blob.name!r} ({exc.__class__.__name__}).") from exc

        for blob, result in map_bounded(attempt, missing, max_concurrency=max_concurrency):
            intrinsic = is_blob_fault(result)
            if cache is not None and (isinstance(result, bytes) or intrinsic):
                cache.put((*blob.key, size), result)
            if intrinsic and record_failures:
                self.ledger.note_undecryptable(blob.key, reason=f"{result.reason}: {result.message}", actor=self.actor)
            results[blob.key] = result
        return results

    # -- Custom Vision and the ledger -----------------------------------------------------------------

    @cached_property
    def customvision(self) -> CustomVisionClient:
        return CustomVisionClient.from_settings(self.settings)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_path or DEFAULT_LEDGER_PATH)

    @cached_property
    def pipeline(self) -> PushPipeline:
        return PushPipeline(
            self.data, self.locker, self.customvision, self.ledger, tier=self.settings.custom_vision_tier
        )

    def project(self) -> ProjectInfo:
        return self.customvision.project()

    def tags(self, *, refresh: bool = False) -> list[TagInfo]:
        """The Custom Vision project's tags."""
        return self.customvision.tags(refresh=refresh)

    def create_tag(self, name: str, *, actor: str | None = None) -> TagInfo:
        tag = self.customvision.create_tag(name)
        self.ledger.log(self._who(actor), "create-tag", project_id=self.customvision.project_id, outcome=tag.name)
        return tag

    def records(self, blobs: list[RetrainingBlob]) -> dict[tuple[str, str, str], BlobRecord]:
        """What the ledger knows of each blob for the current project (state, image id, tags)."""
        return self.ledger.records([b.key for b in blobs], self.customvision.project_id)

    def push(
        self,
        blobs: Any,
        *,
        tags: list[str] | tuple[str, ...] = (),
        regions: dict[str, list[Region]] | None = None,
        actor: str | None = None,
        provenance: Provenance | str = Provenance.IMAGE,
        progress: Callable[[PushProgress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> PushReport:
        """Push blobs (RetrainingBlob records or blob names) with image-level tags, once each."""
        items = [self.blob(b) if isinstance(b, str) else b for b in blobs]
        return self.pipeline.push(
            items,
            tags=tags,
            regions=regions,
            actor=self._who(actor),
            provenance=provenance,
            progress=progress,
            cancel=cancel,
            total=len(items),
        )

    def push_all_untagged(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        dry_run: bool = False,
        actor: str | None = None,
        provenance: Provenance | str = Provenance.IMAGE,
        progress: Callable[[PushProgress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> PushReport | DryRunReport:
        """Every blob not yet in the project and not rejected, untagged; `dry_run` only counts."""
        if dry_run:
            return self.pipeline.dry_run(blob_filter, actor=self._who(actor), progress=progress, cancel=cancel)
        return self.pipeline.push_all_untagged(
            blob_filter, actor=self._who(actor), provenance=provenance, progress=progress, cancel=cancel
        )

    def reject(
        self, blobs: list[RetrainingBlob], *, actor: str | None = None, reason: str = "rejected by reviewer"
    ) -> int:
        """Reject blobs (push-untagged leaves them out); raises ActionRefused, changing nothing, if one may not be."""
        self._check(Action.REJECT, blobs)
        return self.ledger.reject([b.key for b in blobs], actor=self._who(actor), reason=reason)

    def restore(self, blobs: list[RetrainingBlob], *, actor: str | None = None) -> int:
        """Undo a rejection or mark; raises ActionRefused, changing nothing, if a blob has none to undo."""
        self._check(Action.RESTORE, blobs)
        return self.ledger.restore([b.key for b in blobs], actor=self._who(actor))

    def _check(self, action: Action, blobs: list[RetrainingBlob]) -> None:
        # The project's push state from the ledger alone: a decision needs no Custom Vision client.
        records = self.ledger.records([b.key for b in blobs], self.settings.custom_vision_project_id or None)
        check(action, ((b.name, state_of_record(records.get(b.key))) for b in blobs))

    def set_regions(self, blob: RetrainingBlob, regions: list[Region], *, actor: str | None = None) -> RegionUpdate:
        """Boxes for an object-detection project: upload the image with them, or update a pushed image's boxes."""
        return self.pipeline.set_regions(blob, regions, actor=self._who(actor))

    def retag(
        self, blobs: list[RetrainingBlob], *, add: list[str] = (), remove: list[str] = (), actor: str | None = None
    ) -> list[ItemOutcome]:
        """Change the tags of images already pushed, without uploading them again."""
        return self.pipeline.retag(blobs, add=add, remove=remove, actor=self._who(actor))

    def train(
        self, *, wait: bool = False, actor: str | None = None, on_poll: Callable[[IterationInfo], None] | None = None
    ) -> IterationInfo:
        """Start training the project (and wait for it with `wait=True`)."""
        iteration = self.customvision.train()
        self.ledger.log(
            self._who(actor),
            "train",
            project_id=self.customvision.project_id,
            outcome=iteration.status,
            details={"iteration": iteration.id, "name": iteration.name},
        )
        if wait:
            iteration = self.customvision.wait_for_training(iteration.id, on_poll=on_poll)
        return iteration

    def check_connections(self) -> list[ConnectionCheck]:
        """Reach storage, the MM server (bootstrap and login) and Custom Vision; one clear line each."""
        return check_connections(self)

    def status(self) -> dict[str, int]:
        """The ledger's counts for the current project."""
        return self.ledger.summary(self.settings.custom_vision_project_id)

    def _who(self, actor: str | None) -> str:
        return actor or self.actor

    def acting_as(self, actor: str) -> Curator:
        """The same clients, key cache and ledger, recording decisions as `actor`: one shared app, many reviewers."""
        return _ActingCurator(self, actor)

    def for_project(self, project_id: str) -> Curator:
        """The same storage, key cache and ledger, and another project of the same Custom Vision resource and key.

        Tags, pushes and the ledger's push state then follow that project (an app's project picker).
        """
        if project_id == self.settings.custom_vision_project_id:
            return self
        return _ProjectCurator(self, project_id)


class _ProjectCurator(Curator):
    """A Curator for another Custom Vision project that shares another's storage client, keys and ledger."""

    def __init__(self, base: Curator, project_id: str) -> None:
        self._base = base
        self.settings = dataclasses.replace(base.settings, custom_vision_project_id=project_id)
        self.actor = base.actor
        self._lock = threading.Lock()

    data = property(lambda self: self._base.data)
    key_service = property(lambda self: self._base.key_service)
    locker = property(lambda self: self._base.locker)
    ledger = property(lambda self: self._base.ledger)

    @cached_property
    def customvision(self) -> CustomVisionClient:
        if not self._base.settings.custom_vision_project_id:
            return CustomVisionClient.from_settings(self.settings)
        # The base's client for another project: pacing stays shared, as the quota is per key.
        return self._base.customvision.for_project(self.settings.custom_vision_project_id)

    def for_project(self, project_id: str) -> Curator:
        return self if project_id == self.settings.custom_vision_project_id else self._base.for_project(project_id)


class _ActingCurator(Curator):
    """A Curator that shares another's clients (built once, on the shared one) under another actor's name."""

    def __init__(self, base: Curator, actor: str) -> None:
        self._base = base
        self.settings = base.settings
        self.actor = actor
        self._lock = base._lock

    data = property(lambda self: self._base.data)
    key_service = property(lambda self: self._base.key_service)
    locker = property(lambda self: self._base.locker)
    customvision = property(lambda self: self._base.customvision)
    ledger = property(lambda self: self._base.ledger)
    pipeline = property(lambda self: self._base.pipeline)

    def acting_as(self, actor: str) -> Curator:
        return _ActingCurator(self._base, actor)


@dataclass(frozen=True)
class ConnectionCheck:
    service: str
    ok: bool
    message: str


def check_connections(curator: Curator) -> list[ConnectionCheck]:
    checks: list[ConnectionCheck] = []

    def attempt(service: str, action: Callable[[], str]) -> None:
        try:
            checks.append(ConnectionCheck(service, True, action()))
        except CuratorError as exc:
            checks.append(ConnectionCheck(service, False, str(exc)))
        except Exception as exc:  # an SDK error we did not map: say what it was, never a secret
            checks.append(ConnectionCheck(service, False, f"{exc.__class__.__name__} (unexpected)"))

    def storage() -> str:
        page = curator.data.list_page(page_size=1)
        container = curator.settings.mm_telemetry_storage_container
        return f"container {container!r} is readable ({'not empty' if page.blobs else 'empty'})"

    def mm() -> str:
        client = curator.key_service
        info = client.bootstrap()
        client.login()
        return f"bootstrap answered (vault {info.key_vault!r}) and login succeeded"

    def customvision() -> str:
        project = curator.customvision.project(refresh=True)
        return f"project {project.name!r} ({project.kind}) is reachable with the training key"

    attempt("Storage", storage)
    attempt("MM server", mm)
    attempt("Custom Vision", customvision)
    return checks
