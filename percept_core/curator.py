"""`Curator`: one object that gives notebooks, the app, the CLI and the Function the whole core."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .blob_index import BlobIndex, IndexedBlobs, SqliteBlobIndex, SyncProgress, SyncReport, sync
from .blob_index_table import TableBlobIndex
from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient, is_blob_fault, map_bounded
from .config import ConfigError, Settings
from .customvision import CustomVisionClient, IterationInfo, ProjectInfo, ProjectNotTrained, Region, TagInfo
from .errors import CuratorError
from .images import THUMBNAIL_SIZE, PreviewCache, thumbnail
from .ledger import DEFAULT_LEDGER_PATH, BlobRecord, Ledger, default_actor
from .ledger_table import TableLedger
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
from .state import Action, BlobState, check, state_of_record
from .suggestion_cache import SuggestionCache
from .suggestions import Suggestion, SuggestionService

T = TypeVar("T")


class _Part(Generic[T]):
    """A part of a Curator, given or built from the settings on first use (once, whichever thread asks first)."""

    def __init__(self, build: Callable[[], T], value: T | None = None) -> None:
        self._build = build
        self._value = value
        self._lock = threading.Lock()

    def given_or_built(self) -> T | None:
        """The part if it was given or already built, else None (nothing is built)."""
        return self._value

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value


class Curator:
    """The core, composed of its parts: a blob source, a key service and locker, a Custom Vision client, a ledger,
    an actor (who decisions are recorded as) and a project (the Custom Vision client's).

    `Curator()` loads Settings from the usual sources (keyword arguments override them); `Curator(settings)` is
    `Curator.from_settings(settings)`. A part left out is built from the settings on first use; a part given
    (the Function's blob source, a test's) is used as it is. `with_actor` and `with_project` return Curators
    sharing the parts. It holds clients and the key cache, never decrypted images: sharing one Curator between
    users shares connections and keys, not plaintext.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        actor: str | None = None,
        data: RetrainingDataClient | None = None,
        key_service: KeyServiceClient | None = None,
        locker: Locker | None = None,
        customvision: CustomVisionClient | None = None,
        ledger: Ledger | TableLedger | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings if settings is not None else Settings.load(**overrides)
        self.actor = actor or default_actor()
        settings = self.settings
        self._data = _Part(lambda: RetrainingDataClient.from_settings(settings), data)
        self._key_service = _Part(lambda: _key_service(settings), key_service)
        self._locker = _Part(lambda: Locker(self._key_service.get()), locker)
        self._customvision = _Part(lambda: CustomVisionClient.from_settings(settings), customvision)
        self._ledger = _Part(lambda: _ledger(settings), ledger)
        self._source = _Part(lambda: IndexedBlobs(self.data, self._blob_index()))
        self._suggestion_cache = _Part(lambda: _suggestion_cache(self.ledger))
        self._pipeline = self._new_pipeline()

    @classmethod
    def from_settings(cls, settings: Settings, *, actor: str | None = None) -> Curator:
        """A Curator whose parts are built from `settings` as each is first needed."""
        return cls(settings, actor=actor)

    def __repr__(self) -> str:
        return f"Curator({self.settings!r})"

    def _new_pipeline(self) -> _Part[PushPipeline]:
        return _Part(
            lambda: PushPipeline(
                self.source, self.locker, self.customvision, self.ledger, tier=self.settings.custom_vision_tier
            )
        )

    def _sharing(self, *, actor: str, settings: Settings) -> Curator:
        """A new Curator on this one's parts (each built once, by whichever Curator needs it first)."""
        other = Curator.__new__(Curator)
        other.settings = settings
        other.actor = actor
        other._data = self._data
        other._key_service = self._key_service
        other._locker = self._locker
        other._customvision = self._customvision
        other._ledger = self._ledger
        other._source = self._source
        other._suggestion_cache = self._suggestion_cache
        other._pipeline = self._pipeline
        return other

    def with_actor(self, actor: str) -> Curator:
        """The same parts, recording decisions as `actor`: one shared app, many reviewers."""
        return self._sharing(actor=actor, settings=self.settings)

    def with_project(self, project_id: str) -> Curator:
        """The same storage, key cache and ledger, and another project of the same Custom Vision resource and key.

        Tags, pushes and the ledger's push state then follow that project (an app's project picker); the Custom
        Vision client shares this one's pacing, as the quota is per key.
        """
        if project_id == self.settings.custom_vision_project_id:
            return self
        other = self._sharing(
            actor=self.actor, settings=dataclasses.replace(self.settings, custom_vision_project_id=project_id)
        )
        if self.settings.custom_vision_project_id:
            base = self._customvision
            other._customvision = _Part(lambda: base.get().for_project(project_id))
        else:  # no client to share yet: none can be built without a project
            other._customvision = _Part(lambda: CustomVisionClient.from_settings(other.settings))
        other._pipeline = other._new_pipeline()
        return other

    # -- parts ----------------------------------------------------------------------------------------

    @property
    def data(self) -> RetrainingDataClient:
        return self._data.get()

    @property
    def key_service(self) -> KeyServiceClient:
        return self._key_service.get()

    @property
    def locker(self) -> Locker:
        return self._locker.get()

    @property
    def customvision(self) -> CustomVisionClient:
        return self._customvision.get()

    @property
    def ledger(self) -> Ledger | TableLedger:
        return self._ledger.get()

    @property
    def source(self) -> IndexedBlobs:
        """The container as it is read: from the blob index once built (`sync_index`), else listed."""
        return self._source.get()

    @property
    def pipeline(self) -> PushPipeline:
        return self._pipeline.get()

    def _blob_index(self) -> BlobIndex | None:
        """The blob index beside the ledger (None for a blob source that is no container). The SQLite file is
        named without opening the ledger, so that looking for an index creates no file."""
        container = getattr(self.data, "container", None)
        if not container:
            return None
        ledger = self._ledger.given_or_built()
        if isinstance(ledger, Ledger):
            return SqliteBlobIndex(ledger.path, container)
        if ledger is None and not (self.settings.ledger_table_connection_string or self.settings.ledger_table_endpoint):
            return SqliteBlobIndex(self.settings.ledger_path or DEFAULT_LEDGER_PATH, container)
        table_ledger = self.ledger  # the shared ledger: the index's table sits beside its tables, on its service
        return TableBlobIndex(table_ledger.service, container, prefix=table_ledger.prefix)

    # -- blobs --------------------------------------------------------------------------------------

    def blobs(
        self, blob_filter: BlobFilter | None = None, *, states: Sequence[str] = (), **filter_fields: Any
    ) -> Iterator[RetrainingBlob]:
        """Every matching retraining blob, streamed; keyword arguments build a BlobFilter.

        `states` keeps blobs whose review state (see `state_of`) is one of them, from the ledger,
        before anything is decrypted.
        """
        blob_filter = blob_filter or BlobFilter(**filter_fields)
        return self.source.list_blobs(blob_filter, predicate=self._state_predicate(states))

    def blob_page(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        states: Sequence[str] = (),
        page_size: int = 48,
        continuation: str | None = None,
    ) -> BlobPage:
        """One page of matching blobs; the continuation token gives the next page (None at the end)."""
        return self.source.list_page(
            blob_filter, page_size=page_size, continuation=continuation, predicate=self._state_predicate(states)
        )

    def count(self, blob_filter: BlobFilter | None = None) -> int | None:
        """How many blobs match the filter, from the blob index (None when there is none: a count would list the
        whole container)."""
        return self.source.count(blob_filter)

    def sync_index(
        self, *, restart: bool = False, progress: Callable[[SyncProgress], None] | None = None
    ) -> SyncReport:
        """Build or repair the blob index from the container's listing (resumes an interrupted sync)."""
        index = self.source.index
        if index is None:
            raise ConfigError("This ledger keeps no blob index.", hint="Use the SQLite or the Table Storage ledger.")
        report = sync(index, self.data, progress=progress, restart=restart)
        self.ledger.log(self.actor, "index", outcome=f"{report.listed} listed", details=report.to_json())
        return report

    def state_of(self, blob: RetrainingBlob, record: BlobRecord | None = None) -> str:
        """new, pushed, failed, pushing, rejected, near_duplicate or cannot decrypt (known without decrypting)."""
        return _state(blob, state_of_record(record)).label

    def _state_predicate(self, states: Sequence[str]) -> Callable[[RetrainingBlob], bool] | None:
        if not states:
            return None
        wanted = set(states)
        project_id = self.settings.custom_vision_project_id
        known = self.ledger.states(project_id)  # one snapshot: key -> state, for keys not "new"

        def matches(blob: RetrainingBlob) -> bool:
            return _state(blob, BlobState.of(known.get(blob.key, BlobState.NEW))).label in wanted

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
        deep: bool | None = None,
    ) -> PushReport | DryRunReport:
        """Every blob not yet in the project and not rejected, untagged; `dry_run` only counts.

        A dry run reads every eligible blob's content (`deep`) unless the blob index is built: then it counts from
        the index and the ledger alone, and the push checks contents as it goes (`deep=True` asks for both).
        """
        if dry_run:
            if deep is None:
                deep = self.source.built() is None
            return self.pipeline.dry_run(
                blob_filter, actor=self._who(actor), progress=progress, cancel=cancel, deep=deep
            )
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

    def suggestions(
        self, blobs: Iterable[RetrainingBlob], *, iteration_id: str | None = None
    ) -> dict[tuple[str, str, str], Suggestion | CuratorError]:
        """The project's trained model's suggestion for each blob, or the error that stands in for one, by blob key.

        The latest trained iteration unless `iteration_id` names one (ProjectNotTrained when there is none); each
        frame is predicted once per iteration (see `suggestions.SuggestionService`).
        """
        service = SuggestionService(self.customvision, self.decrypt, self._suggestion_cache.get())
        return service.suggest(blobs, iteration_id=iteration_id)

    def cached_suggestions(self, blobs: Iterable[RetrainingBlob]) -> dict[tuple[str, str, str], Suggestion]:
        """The suggestions the latest trained iteration already made for blobs, by blob key: nothing is decrypted
        or predicted, and there are none without a project or a trained iteration."""
        if not self.settings.custom_vision_project_id:
            return {}
        try:
            iteration = self.customvision.latest_trained_iteration()
        except ProjectNotTrained:
            return {}
        cached = self._suggestion_cache.get().get([b.key for b in blobs], iteration.id)
        return {key: Suggestion.of(key, iteration.id, found, made_at) for key, (made_at, found) in cached.items()}

    def predictions_made(self, iteration_ids: Iterable[str]) -> int:
        """Suggestions made with these iterations (the project's) in the last 30 days, kept in the ledger's file:
        each cost one prediction transaction. With the shared Table Storage ledger, this process's only."""
        return self._suggestion_cache.get().count(iteration_ids)

    def check_connections(self) -> list[ConnectionCheck]:
        """Reach storage, the MM server (bootstrap and login) and Custom Vision; one clear line each."""
        return check_connections(self)

    def status(self) -> dict[str, int]:
        """The ledger's counts for the current project."""
        return self.ledger.summary(self.settings.custom_vision_project_id)

    def _who(self, actor: str | None) -> str:
        return actor or self.actor


def _state(blob: RetrainingBlob, recorded: BlobState) -> BlobState:
    """A blob's state: the ledger's, or undecryptable for a new blob that names no model (known without trying)."""
    return BlobState.UNDECRYPTABLE if recorded is BlobState.NEW and not blob.has_model else recorded


def _ledger(settings: Settings) -> Ledger | TableLedger:
    """The shared ledger on Table Storage when the settings name one, else this machine's SQLite file."""
    prefix = settings.ledger_table_prefix
    if settings.ledger_table_connection_string:
        return TableLedger.from_connection_string(settings.ledger_table_connection_string, prefix=prefix)
    if settings.ledger_table_endpoint:
        return TableLedger.from_endpoint(settings.ledger_table_endpoint, settings.credential(), prefix=prefix)
    return Ledger(settings.ledger_path or DEFAULT_LEDGER_PATH)


def _suggestion_cache(ledger: Ledger | TableLedger) -> SuggestionCache:
    """Suggestions kept in the SQLite ledger's file; with the shared ledger on Table Storage, in this process only."""
    return SuggestionCache(ledger.path if isinstance(ledger, Ledger) else None)


def _key_service(settings: Settings) -> KeyServiceClient:
    settings.require("mm_server_url")
    return KeyServiceClient(
        settings.mm_server_url,
        credential=None if settings.mm_bootstrap_secret else settings.credential(),
        bootstrap_secret=settings.mm_bootstrap_secret,
        key_vault_url=settings.mm_key_vault_url,
    )


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
