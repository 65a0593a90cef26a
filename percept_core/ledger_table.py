"""The review ledger on Azure Table Storage: the SQLite ledger's contract, shared by every host that reaches it.

Four tables under one prefix: `<prefix>blobs` (review facts of a blob version: partition = container),
`<prefix>pushes` (push facts of a blob version for a project: partition = project), `<prefix>contents`
(the project's image for a content's sha256: partition = project, so "is this frame in the project
already" is one point read, not a scan) and `<prefix>events` (the audit trail: partition = day, newest
first). A many-key call (a chunk's records or claims, a page's rejections) sends its keys' requests side
by side. Every write that depends on what is there is a read-modify-write taken with optimistic
concurrency: create-if-absent (409 when another host created it first) or update with the ETag read
(`If-Match`, 412 when another host wrote first), and the decision is taken again on the fresh entity;
nothing is last-writer-wins. That is how a claim is taken exactly once across hosts. Events are only ever
created (a new row key per event, never upserted): nothing in this module updates or deletes one. Table
Storage has no transaction across tables, so an event is written after the state it reports: a host that
dies between the two leaves the state without its event. For the same reason a claim reads the blob's
review mark and then writes its claim: a rejection that lands between the two does not keep that claim off
(SQLite does both in one transaction).

Keys: blob names may hold characters a PartitionKey/RowKey may not (`/`, `\\`, `#`, `?`, control
characters), so they are percent-encoded; a key longer than the 1 KiB limit is replaced by its hash
(the entity keeps the real names in its properties).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from .blobs import url_without_query
from .errors import AzureCall, from_azure
from .ledger import (
    LEASE_SECONDS,
    BlobKey,
    BlobRecord,
    Claim,
    Event,
    ReviewedBox,
    RunClaims,
    regions_from_json,
    regions_to_json,
)
from .state import BlobState, PushState, Review, state_of_record

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TABLE_PREFIX = "percept"
MAX_KEY_BYTES = 1024  # PartitionKey and RowKey: up to 1 KiB each
# A many-key read of at least RANGE_READ_MIN_KEYS keys of one partition is one range query, given up for point
# reads once it has returned RANGE_READ_SLACK times the keys asked for (plus a page) without reaching its end.
RANGE_READ_MIN_KEYS = 4
RANGE_READ_SLACK = 2
RANGE_READ_PAGE = 1000  # the most rows Table Storage returns in one page
CONCURRENT_REQUESTS = 16  # requests one ledger has in flight at once for a many-key call (each key is independent)
OWN_WRITES_REMEMBERED = 4096  # entities a ledger remembers having written (a few runs' chunks in flight)
WRITE_ATTEMPTS = 50  # optimistic retries of one entity before giving up (each lost race means progress elsewhere)
# The SDK's retries of one request (429, 5xx, a connection refused or reset), backing off 0.5 s, 1 s, 2 s ... up to
# 15 s apart and honouring Retry-After: about a minute and a half in all, so a table service that throttles or
# restarts holds a run up instead of ending it.
CLIENT_RETRIES = {
    "retry_total": 10,
    "retry_connect": 10,
    "retry_read": 10,
    "retry_status": 10,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 15,
}
# Creates (POST) are retried too, which azure-core does not do by default after a lost answer or a 429 without
# Retry-After: every write here is conditional (a create meets 409 if its first try landed, a replace or delete
# 412), and each decision is taken again on what is there, so a retry never writes anything twice. The Tables
# SDK builds its retry policy itself, so the methods go with each create call.
CREATE_RETRIES = {"retry_on_methods": frozenset({"POST"})}
_UNAVAILABLE_HINT = (
    "The table service did not answer through a minute and a half of retries; nothing was recorded for this step. "
    "Run it again when the service answers: the claims keep any blob from being pushed twice."
)

_UNSAFE_KEY_CHARS = re.compile(r"[%/\\#?|\x00-\x1f\x7f-\x9f]")
_SEPARATOR = "|"  # escaped inside every part, so it only ever separates


class LedgerContention(RuntimeError):
    """An entity kept changing under this host for WRITE_ATTEMPTS reads in a row."""


def escape_key_part(text: str) -> str:
    """`text` with `%`, `/`, `\\`, `#`, `?`, `|` and control characters percent-encoded: valid in a key."""
    return _UNSAFE_KEY_CHARS.sub(lambda match: f"%{ord(match.group()):02X}", text)


def table_key(*parts: str) -> str:
    """A PartitionKey or RowKey for `parts`: escaped and joined, or `~` and a hash when that exceeds 1 KiB."""
    key = _SEPARATOR.join(escape_key_part(part) for part in parts)
    if len(key.encode("utf-16-le")) <= MAX_KEY_BYTES:
        return key
    return "~" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()  # no `|`: never an escaped key


class _Unread:
    """The entity was not read beforehand: `_modify` reads it."""


@dataclass(frozen=True)
class _Write:
    """What a read-modify-write decided: the entity to write (None: nothing, _DELETE: remove it) and its result."""

    entity: dict[str, Any] | None
    result: Any = None


_DELETE: dict[str, Any] = {}


class _WrittenEntity(dict):
    """An entity as this ledger last wrote it, with the ETag the service gave it (read like a TableEntity)."""

    def __init__(self, entity: dict[str, Any], etag: str) -> None:
        super().__init__(entity)
        self.metadata = {"etag": etag}


class _OwnWrites:
    """The entities this ledger wrote last (by table and keys; None: it deleted it), so the next write of one
    (a claim's settlement, a heartbeat) is decided on it without reading it back. Another host's write since
    makes that write fail on its ETag and the entity is read again, so a stale entry costs a round trip, never
    a wrong write; a decision not to write is taken on a fresh read only (see `_modify`)."""

    def __init__(self, size: int = OWN_WRITES_REMEMBERED) -> None:
        self._entities: OrderedDict[tuple[str, str, str], _WrittenEntity | None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, own: tuple[str, str, str]) -> bool:
        with self._lock:
            return own in self._entities

    def get(self, own: tuple[str, str, str]) -> _WrittenEntity | None:
        with self._lock:
            return self._entities.get(own)

    def put(self, own: tuple[str, str, str], entity: _WrittenEntity | None) -> None:
        with self._lock:
            self._entities[own] = entity
            self._entities.move_to_end(own)
            while len(self._entities) > self._size:
                self._entities.popitem(last=False)


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _without_none(entity: dict[str, Any]) -> dict[str, Any]:
    """The entity as written: a property that is None is absent (Table Storage has no nulls)."""
    return {name: value for name, value in entity.items() if value is not None}


class TableLedger(RunClaims):
    """Review state, push outcomes and the audit trail, in Azure Table Storage (or Azurite, or Cosmos DB for Table)."""

    parallel_writes = CONCURRENT_REQUESTS  # see RunClaims

    def __init__(
        self,
        service: TableServiceClient,
        *,
        prefix: str = DEFAULT_TABLE_PREFIX,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.service = service
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        # A many-key call (a chunk's records, claims, settlements) runs its keys' round trips side by side: one at
        # a time, 64 frames' ledger work took longer than the quota's second per upload call.
        self._requests = ThreadPoolExecutor(CONCURRENT_REQUESTS, thread_name_prefix="percept-ledger")
        self._written = _OwnWrites()
        self._blobs = self._table("blobs")
        self._pushes = self._table("pushes")
        self._events = self._table("events")
        self._contents = self._table("contents")
        self._identify()

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> TableLedger:
        return cls(TableServiceClient.from_connection_string(connection_string, **CLIENT_RETRIES), **options)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, **options: Any) -> TableLedger:
        """E.g. `https://<account>.table.core.windows.net` and DefaultAzureCredential (role: Storage Table Data
        Contributor)."""
        return cls(TableServiceClient(endpoint=endpoint, credential=credential, **CLIENT_RETRIES), **options)

    @property
    def location(self) -> str:
        """Where the ledger is, for a status line: the table service and the tables' prefix (never a key)."""
        return f"{url_without_query(self.service.url)} (tables {self.prefix}*)"

    def __repr__(self) -> str:
        return f"TableLedger({url_without_query(self.service.url)!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        self._requests.shutdown(wait=True)
        self.service.close()

    def _each(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`work` applied to every item, CONCURRENT_REQUESTS at a time, results in the items' order."""
        items = list(items)
        if len(items) <= 1:
            return [work(item) for item in items]
        return list(self._requests.map(work, items))

    @contextlib.contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """Turn the table service's failures (after the SDK's retries) into our ServiceError, naming no secret.

        409, 412 and 404 pass through: they are the answers optimistic concurrency and point reads expect.
        """
        try:
            yield
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise
        except AzureError as exc:
            call = AzureCall(f"the shared ledger at {self.location}", doing, hint=_UNAVAILABLE_HINT)
            raise from_azure(exc, call) from None

    def _table(self, name: str) -> TableClient:
        table = self.service.get_table_client(f"{self.prefix}{name}")
        with contextlib.suppress(ResourceExistsError), self._answering(f"create table {table.table_name}"):
            table.create_table()
        return table

    # -- entities -------------------------------------------------------------------------------------

    @staticmethod
    def _blob_address(key: BlobKey) -> tuple[str, str]:
        return table_key(key[0]), table_key(key[1], key[2])

    @staticmethod
    def _push_address(key: BlobKey, project_id: str) -> tuple[str, str]:
        return table_key(project_id), table_key(*key)

    def _get(self, table: TableClient, address: tuple[str, str]) -> TableEntity | None:
        try:
            with self._answering(f"read from table {table.table_name}"):
                return table.get_entity(*address)
        except ResourceNotFoundError:
            return None

    def _modify(
        self,
        table: TableClient,
        address: tuple[str, str],
        decide: Callable[[dict[str, Any] | None], _Write],
        *,
        read: TableEntity | type[_Unread] | None = _Unread,
    ) -> Any:
        """Read the entity, let `decide` say what to write, and write it only if nobody wrote in between.

        A lost race (409 on create, 412 on an ETag mismatch) reads again and decides again, so the decision
        is always taken on what is there. `read` is the entity as a many-key read just found it (None: absent),
        used for the first decision instead of reading it again.
        """
        own = (table.table_name, *address)
        fresh = read is _Unread and own not in self._written
        current = self._get(table, address) if fresh else (read if read is not _Unread else self._written.get(own))
        for _ in range(WRITE_ATTEMPTS):
            write = decide(dict(current) if current is not None else None)
            if write.entity is None and not fresh:  # not to write is decided on a fresh read only
                current, fresh = self._get(table, address), True
                continue
            try:
                with self._answering(f"write to table {table.table_name}"):
                    self._written.put(own, self._write(table, address, current, write))
            except (ResourceExistsError, ResourceModifiedError):
                current, fresh = self._get(table, address), True
                continue
            except ResourceNotFoundError:
                if write.entity is _DELETE:
                    self._written.put(own, None)
                    return write.result  # someone else removed it first: gone either way
                current, fresh = self._get(table, address), True
                continue
            return write.result
        raise LedgerContention(f"{table.table_name} {address}: still changing after {WRITE_ATTEMPTS} attempts")

    @staticmethod
    def _write(
        table: TableClient, address: tuple[str, str], current: TableEntity | None, write: _Write
    ) -> _WrittenEntity | None:
        """Create the entity if absent, else replace or delete it only if unchanged since `current` was read.

        Returns the entity as it now is (with its new ETag), None when it is gone.
        """
        if write.entity is None:
            return current
        if write.entity is _DELETE:
            if current is not None:
                table.delete_entity(
                    *address, etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
            return None
        entity = _without_none({**write.entity, "PartitionKey": address[0], "RowKey": address[1], "updated_at": _now()})
        if current is None:
            answer = table.create_entity(entity, **CREATE_RETRIES)
        else:
            answer = table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        return _WrittenEntity(entity, answer["etag"])

    @staticmethod
    def _blob_entity(key: BlobKey, current: dict[str, Any] | None) -> dict[str, Any]:
        base = {"review": Review.NEW.value, "container": key[0], "name": key[1], "etag": key[2]}
        return {**base, **(current or {})}

    @staticmethod
    def _push_entity(key: BlobKey, project_id: str, current: dict[str, Any] | None) -> dict[str, Any]:
        base = {"container": key[0], "name": key[1], "etag": key[2], "project_id": project_id, "attempts": 0}
        return {**base, **(current or {})}

    @staticmethod
    def _key_of(entity: dict[str, Any]) -> BlobKey:
        return entity["container"], entity["name"], entity["etag"]

    def _read_many(
        self, table: TableClient, addresses: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], TableEntity]:
        """The entities found at `addresses` (absent ones left out), in few requests.

        Keys of one partition that sort close together (a listing's chunk: blob names in order) come back in one
        range query; the range is abandoned for point reads, side by side, when it holds many more rows than
        were asked for (keys far apart), so a read never costs more than about twice the point reads.
        """
        wanted: dict[str, set[str]] = defaultdict(set)
        for partition, row in addresses:
            wanted[partition].add(row)
        found: dict[tuple[str, str], TableEntity] = {}
        unread: list[tuple[str, str]] = []
        for partition, rows in wanted.items():
            if len(rows) < RANGE_READ_MIN_KEYS:
                unread += [(partition, row) for row in rows]
                continue
            first, last = min(rows), max(rows)
            budget = RANGE_READ_SLACK * len(rows) + RANGE_READ_PAGE
            query = "PartitionKey eq @pk and RowKey ge @first and RowKey le @last"
            rows_in_range = self._query(
                table, query, results_per_page=RANGE_READ_PAGE, pk=partition, first=first, last=last
            )
            for seen, entity in enumerate(rows_in_range, start=1):
                if entity["RowKey"] in rows:
                    found[(partition, entity["RowKey"])] = entity
                if seen > budget:
                    unread += [(partition, row) for row in rows if (partition, row) not in found]
                    break
        for address, entity in zip(unread, self._each(lambda address: self._get(table, address), unread), strict=True):
            if entity is not None:
                found[address] = entity
        return found

    def _query(
        self, table: TableClient, query: str, *, results_per_page: int | None = None, **parameters: Any
    ) -> Iterator[TableEntity]:
        with self._answering(f"query table {table.table_name}"):
            yield from table.query_entities(query, parameters=parameters, results_per_page=results_per_page)

    # -- reading --------------------------------------------------------------------------------------

    def records(self, keys: Iterable[BlobKey], project_id: str | None = None) -> dict[BlobKey, BlobRecord]:
        """What the ledger knows of each key (keys it has never seen are absent): `_read_many` on both tables."""
        unique = list(dict.fromkeys(keys))
        blobs = self._read_many(self._blobs, map(self._blob_address, unique))
        pushes = (
            self._read_many(self._pushes, (self._push_address(key, project_id) for key in unique))
            if project_id is not None
            else {}
        )
        found = {}
        for key in unique:
            blob = blobs.get(self._blob_address(key))
            push = pushes.get(self._push_address(key, project_id)) if project_id is not None else None
            fields = self._record_fields(blob, push)
            if fields:
                found[key] = BlobRecord(key, **fields)
        return found

    @staticmethod
    def _record_fields(blob: TableEntity | None, push: TableEntity | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if blob is not None:
            fields.update(
                review=blob.get("review", Review.NEW.value),
                reason=blob.get("reason"),
                sha256=blob.get("sha256"),
                phash=blob.get("phash"),
            )
        if push is not None:
            fields.update(
                push_state=push["state"],
                image_id=push.get("image_id"),
                push_reason=push.get("reason"),
                tags=tuple(json.loads(push.get("tags") or "[]")),
                regions=regions_from_json(push.get("regions")),
            )
            if fields.get("sha256") is None:
                fields["sha256"] = push.get("sha256")
        return fields

    def record(self, key: BlobKey, project_id: str | None = None) -> BlobRecord:
        return self.records([key], project_id).get(key, BlobRecord(key))

    def keys_in_state(self, project_id: str, state: str, container: str | None = None) -> set[BlobKey]:
        """Keys whose combined state (as BlobRecord.state) is `state`: for filters that work before decrypting."""
        if state in (PushState.PUSHED, PushState.FAILED, PushState.PUSHING):
            rows = self._query(
                self._pushes, "PartitionKey eq @pk and state eq @state", pk=table_key(project_id), state=state
            )
        elif container:
            rows = self._query(
                self._blobs, "PartitionKey eq @pk and review eq @review", pk=table_key(container), review=state
            )
        else:
            rows = self._query(self._blobs, "review eq @review", review=state)
        return {self._key_of(row) for row in rows if not container or row["container"] == container}

    def states(self, project_id: str | None) -> dict[BlobKey, BlobState]:
        """Every key whose state is not new, with its state for the project (as BlobRecord.state)."""
        facts: dict[BlobKey, dict[str, str]] = {
            self._key_of(row): {"review": row["review"]}
            for row in self._query(self._blobs, "review ne @new", new=Review.NEW.value)
        }
        if project_id:
            for row in self._query(self._pushes, "PartitionKey eq @pk", pk=table_key(project_id)):
                facts.setdefault(self._key_of(row), {})["push_state"] = row["state"]
        return {key: state_of_record(BlobRecord(key, **fields)) for key, fields in facts.items()}

    def blob_models(self, keys: Iterable[BlobKey]) -> dict[BlobKey, tuple[str | None, str | None]]:
        """(model name, model version) of each key the ledger knows them for (activity charts)."""
        unique = list(dict.fromkeys(keys))
        blobs = self._read_many(self._blobs, map(self._blob_address, unique))
        found = {key: blobs.get(self._blob_address(key)) for key in unique}
        return {
            key: (blob["model_name"], blob.get("model_version"))
            for key, blob in found.items()
            if blob is not None and blob.get("model_name") is not None
        }

    def known_models(self) -> list[tuple[str, str | None]]:
        """Every (model name, version) the ledger has seen, sorted: choices for a filter."""
        rows = self._query(self._blobs, "model_name ne ''")
        models = {(row["model_name"], row.get("model_version")) for row in rows if row.get("model_name")}
        return sorted(models, key=lambda model: (model[0], model[1] or ""))

    def claims(self, project_id: str) -> list[Claim]:
        """The project's open claims (blobs a run was pushing), with whether their run is still alive."""
        now = _now()
        rows = self._query(
            self._pushes, "PartitionKey eq @pk and state eq @state", pk=table_key(project_id), state=PushState.PUSHING
        )
        return [
            Claim(
                self._key_of(row),
                row.get("claim") or "",
                row.get("claimed_at"),
                not self._claim_is_dead(row.get("claim"), row.get("claimed_at"), now),
            )
            for row in rows
        ]

    def _pushed_rows(self, project_id: str) -> Iterable[TableEntity]:
        return self._query(
            self._pushes, "PartitionKey eq @pk and state eq @state", pk=table_key(project_id), state=PushState.PUSHED
        )

    def pushed_image_for_content(self, project_id: str, sha256: str) -> str | None:
        """The project's image with this content, if a push recorded one: a point read of the content index."""
        row = self._get(self._contents, (table_key(project_id), table_key(sha256)))
        return row.get("image_id") if row is not None else None

    def _remember_content(self, project_id: str, sha256: str, image_id: str) -> None:
        """Index the image by its content; the first image recorded for a content stays (as the project keeps)."""
        row = {"PartitionKey": table_key(project_id), "RowKey": table_key(sha256), "image_id": image_id}
        with contextlib.suppress(ResourceExistsError), self._answering("index an image by its content"):
            self._contents.create_entity(row, **CREATE_RETRIES)

    def _forget_content(self, project_id: str, sha256: str, image_id: str | None) -> None:
        address = (table_key(project_id), table_key(sha256))
        row = self._get(self._contents, address)
        if row is not None and row.get("image_id") == image_id:
            with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError), self._answering("unindex an image"):
                self._contents.delete_entity(
                    *address, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )

    def pushed_image_count(self, project_id: str) -> int:
        """How many distinct project images the ledger knows of (a new or lost ledger knows fewer than the project)."""
        return len({row["image_id"] for row in self._pushed_rows(project_id) if row.get("image_id")})

    def last_event(self, action: str, project_id: str) -> Event | None:
        """The newest event of that action for the project (e.g. the last reconciliation with it)."""
        found = self.events(action=action, project_id=project_id, limit=1)
        return found[0] if found else None

    def summary(self, project_id: str | None = None) -> dict[str, int]:
        """Counts per review state and, for a project, per push state."""
        counts: dict[str, int] = {}
        for row in self._query(self._blobs, "review ne @new", new=Review.NEW.value):
            counts[row["review"]] = counts.get(row["review"], 0) + 1
        pushes = (
            self._query(self._pushes, "PartitionKey eq @pk", pk=table_key(project_id))
            if project_id
            else self._query(self._pushes, "PartitionKey ne ''")
        )
        for row in pushes:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        return counts

    def pushed(self, project_id: str) -> list[dict[str, Any]]:
        """Every pushed blob of a project with its image id (to reconcile with the project)."""
        columns = ("container", "name", "etag", "image_id", "sha256", "tags")
        return [{column: row.get(column) for column in columns} for row in self._pushed_rows(project_id)]

    def events(
        self,
        *,
        since: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        blob: str | None = None,
        project_id: str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """The audit trail, newest first (partitions are days, newest first; rows within a day newest first)."""
        clauses, parameters = [], {}
        for column, value in (("actor", actor), ("action", action), ("blob", blob), ("project_id", project_id)):
            if value:
                clauses.append(f"{column} eq @{column}")
                parameters[column] = value
        if since:
            clauses.append("PartitionKey le @day and at ge @since")
            parameters.update(day=_event_partition(datetime.fromisoformat(since).timestamp()), since=since)
        query = " and ".join(clauses) or "PartitionKey ne ''"
        found: list[Event] = []
        for row in self._query(self._events, query, results_per_page=limit or None, **parameters):
            found.append(
                Event(
                    int(row["event_id"]),
                    row["at"],
                    row["actor"],
                    row["action"],
                    row.get("container"),
                    row.get("blob"),
                    row.get("etag"),
                    row.get("project_id"),
                    row.get("outcome"),
                    row.get("image_id"),
                    json.loads(row.get("details") or "{}"),
                )
            )
            if limit and len(found) >= limit:
                break
        return found

    # -- the audit trail ------------------------------------------------------------------------------

    def _event(
        self,
        actor: str,
        action: str,
        key: BlobKey | None,
        *,
        project_id: str | None = None,
        outcome: str | None = None,
        image_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an event: created under a fresh row key, never upserted, so no event overwrites another."""
        at = _now()
        micros = int(at * 1_000_000)
        container, name, etag = key if key else (None, None, None)
        # A retry whose first answer was lost finds its own row (409): the event is there, once.
        with contextlib.suppress(ResourceExistsError), self._answering("append to the audit trail"):
            self._events.create_entity(
                **CREATE_RETRIES,
                entity=_without_none(
                    {
                        "PartitionKey": _event_partition(at),
                        "RowKey": f"{_INVERTED_MICROS - micros:017d}-{uuid.uuid4().hex}",
                        "event_id": str(micros * 1000 + secrets.randbelow(1000)),  # ordered by time, unique in practice
                        "at": _iso(at),
                        "actor": actor,
                        "action": action,
                        "container": container,
                        "blob": name,
                        "etag": etag,
                        "project_id": project_id,
                        "outcome": outcome,
                        "image_id": image_id,
                        "details": json.dumps(details) if details else None,
                    }
                ),
            )

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
    ) -> None:
        """Append an event that changes no state (a training started, a dry run, a sign-in)."""
        self._event(actor, action, key, project_id=project_id, outcome=outcome, image_id=image_id, details=details)

    # -- review decisions -----------------------------------------------------------------------------

    def _set_review(self, key: BlobKey, review: str, reason: str | None, actor: str) -> None:
        def decide(current: dict[str, Any] | None) -> _Write:
            entity = self._blob_entity(key, current)
            return _Write({**entity, "review": review, "reason": reason, "updated_by": actor})

        self._modify(self._blobs, self._blob_address(key), decide)

    def reject(self, keys: Iterable[BlobKey], *, actor: str, reason: str = "rejected by reviewer") -> int:
        return self._review_many(keys, Review.REJECTED, reason, actor, "reject")

    def restore(self, keys: Iterable[BlobKey], *, actor: str) -> int:
        return self._review_many(keys, Review.NEW, None, actor, "restore")

    def mark_near_duplicates(self, keys: Iterable[BlobKey], *, of: BlobKey, actor: str) -> int:
        return self._review_many(keys, Review.NEAR_DUPLICATE, f"near-duplicate of {of[1]}", actor, "near-duplicate")

    def _review_many(self, keys: Iterable[BlobKey], review: str, reason: str | None, actor: str, action: str) -> int:
        keys = list(keys)
        self._each(lambda key: self._set_review(key, review, reason, actor), keys)
        for key in keys:  # the audit trail in the order the reviewer gave
            self._event(actor, action, key, outcome=review, details={"reason": reason} if reason else None)
        return len(keys)

    def note_content(
        self,
        key: BlobKey,
        *,
        sha256: str,
        phash: str | None = None,
        model: tuple[str, str] | None = None,
        actor: str = "system",
    ) -> None:
        """Remember the plaintext's hashes (never the plaintext) so dry runs need not decrypt again."""

        def decide(current: dict[str, Any] | None) -> _Write:
            entity = self._blob_entity(key, current)
            if current is None:
                entity.update(model_name=(model or (None, None))[0], model_version=(model or (None, None))[1])
                entity["updated_by"] = actor
            entity.update(sha256=sha256, phash=phash or entity.get("phash"))
            if entity["review"] == Review.UNDECRYPTABLE:
                entity["review"] = Review.NEW.value
            return _Write(entity)

        self._modify(self._blobs, self._blob_address(key), decide)

    def note_models(self, blobs: Iterable[tuple[BlobKey, str | None, str | None]], *, actor: str = "system") -> None:
        """Remember which model (name, version) each blob came from; changes no review state, logs no event."""
        self._each(lambda blob: self._note_model(*blob, actor), [blob for blob in blobs if blob[1] or blob[2]])

    def _note_model(self, key: BlobKey, name: str | None, version: str | None, actor: str) -> None:
        def decide(current: dict[str, Any] | None) -> _Write:
            entity = self._blob_entity(key, current)
            if current is None:
                entity["updated_by"] = actor
            if entity.get("model_name") is not None and entity.get("model_version") is not None:
                return _Write(None)
            entity.update(
                model_name=entity.get("model_name") or name, model_version=entity.get("model_version") or version
            )
            return _Write(entity)

        self._modify(self._blobs, self._blob_address(key), decide)

    def note_undecryptable(self, key: BlobKey, *, reason: str, actor: str) -> None:
        def decide(current: dict[str, Any] | None) -> _Write:
            entity = self._blob_entity(key, current)
            if entity["review"] == Review.REJECTED:
                return _Write(None, False)  # a reviewer's decision outranks what a run found
            if entity["review"] == Review.UNDECRYPTABLE and entity.get("reason") == reason:
                return _Write(None, False)
            return _Write({**entity, "review": Review.UNDECRYPTABLE.value, "reason": reason, "updated_by": actor}, True)

        if self._modify(self._blobs, self._blob_address(key), decide):
            self._event(actor, Review.UNDECRYPTABLE, key, outcome=reason)

    # -- pushes ---------------------------------------------------------------------------------------

    def claim(
        self, keys: Sequence[BlobKey], project_id: str, run_id: str, *, actor: str, retry_failed: bool = True
    ) -> tuple[list[BlobKey], dict[BlobKey, BlobState]]:
        """Claim keys for pushing. Returns (claimed, skipped key -> the state that kept it out).

        As `Ledger.claim`; each claim is created if absent or written with the ETag it was decided on, so of
        two hosts claiming one key at once exactly one gets it.
        """
        blobs = self._read_many(self._blobs, map(self._blob_address, keys))
        pushes = self._read_many(self._pushes, (self._push_address(key, project_id) for key in keys))

        def claim_one(key: BlobKey) -> BlobState | None:
            blob = blobs.get(self._blob_address(key))
            review = blob.get("review", Review.NEW.value) if blob is not None else Review.NEW.value

            def decide(current: dict[str, Any] | None) -> _Write:
                now = _now()
                found = current or {}
                kept_out = self.kept_out(
                    review,
                    found.get("state"),
                    found.get("claim"),
                    found.get("claimed_at"),
                    run_id,
                    retry_failed=retry_failed,
                    now=now,
                )
                if kept_out is not None:
                    return _Write(None, kept_out)
                entity = self._push_entity(key, project_id, current)
                entity.update(
                    state=PushState.PUSHING.value,
                    claim=run_id,
                    claimed_at=now,
                    attempts=int(entity["attempts"]) + 1,
                    updated_by=actor,
                )
                return _Write(entity, None)

            address = self._push_address(key, project_id)
            return self._modify(self._pushes, address, decide, read=pushes.get(address))

        claimed: list[BlobKey] = []
        skipped: dict[BlobKey, BlobState] = {}
        for key, kept_out in zip(keys, self._each(claim_one, keys), strict=True):
            if kept_out is None:
                claimed.append(key)
            else:
                skipped[key] = kept_out
        return claimed, skipped

    def _holds(self, current: dict[str, Any] | None, run_id: str) -> bool:
        return current is not None and current.get("claim") == run_id and current["state"] == PushState.PUSHING

    def heartbeat(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> list[BlobKey]:
        """Keep this run's claims fresh; returns the keys whose claim this run no longer holds."""

        def decide(current: dict[str, Any] | None) -> _Write:
            if not self._holds(current, run_id):
                return _Write(None, False)
            return _Write({**current, "claimed_at": _now()}, True)

        held = self._each(lambda key: self._modify(self._pushes, self._push_address(key, project_id), decide), keys)
        return [key for key, still in zip(keys, held, strict=True) if not still]

    def release(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> None:
        """Give back this run's claims on items it did not push (cancelled, undecryptable): no trace is left."""

        def decide(current: dict[str, Any] | None) -> _Write:
            if self._holds(current, run_id) and not current.get("image_id"):
                return _Write(_DELETE)
            return _Write(None)

        self._each(lambda key: self._modify(self._pushes, self._push_address(key, project_id), decide), keys)

    def _settle(
        self,
        key: BlobKey,
        project_id: str,
        claim: str | None,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> tuple[bool, dict[str, Any] | None]:
        """Apply `change` to the push entity, only while `claim` holds it when one is named.

        Returns (written, the entity as found when the claim did not hold it).
        """

        def decide(current: dict[str, Any] | None) -> _Write:
            if claim is not None and not self._holds(current, claim):
                if current is not None and current.get("settled_by") == claim and current["state"] != PushState.PUSHING:
                    return _Write(None, (True, None))  # this run's own settlement, whose answer was lost and retried
                return _Write(None, (False, current))
            changed = change(self._push_entity(key, project_id, current))
            if changed is not None and claim is not None:
                changed = {**changed, "settled_by": claim}
            return _Write(changed, (True, None))

        return self._modify(self._pushes, self._push_address(key, project_id), decide)

    def _claim_lost(
        self, key: BlobKey, project_id: str, claim: str, actor: str, would: str, found: dict[str, Any] | None, details
    ) -> None:
        """Audit a settlement that was not written: the run no longer held the item's claim."""
        columns = ("container", "name", "etag", "project_id", "state", "image_id", "claim", "claimed_at")
        now = {column: found.get(column) for column in columns} if found else None
        self._event(
            actor,
            "claim-lost",
            key,
            project_id=project_id,
            outcome=would,
            details={"run": claim, "now": now, **(details or {})},
        )

    def record_pushed(
        self,
        key: BlobKey,
        project_id: str,
        *,
        image_id: str,
        sha256: str | None,
        tags: Sequence[str],
        actor: str,
        outcome: str = PushState.PUSHED,
        details: dict[str, Any] | None = None,
        model: tuple[str | None, str | None] | None = None,
        claim: str | None = None,
    ) -> bool:
        """Record the item as in the project. With `claim`, only while that claim holds it: False when it does not."""
        if model and any(model):
            self._note_model(key, *model, actor)

        def change(entity: dict[str, Any]) -> dict[str, Any]:
            return {
                **entity,
                "state": PushState.PUSHED.value,
                "image_id": image_id,
                "sha256": sha256,
                "tags": json.dumps(list(tags)),
                "reason": None,
                "claim": None,
                "claimed_at": None,
                "updated_by": actor,
            }

        written, found = self._settle(key, project_id, claim, change)
        if not written:
            self._claim_lost(key, project_id, claim or "", actor, outcome, found, {"image_id": image_id})
            return False
        if sha256 and image_id:
            self._remember_content(project_id, sha256, image_id)
        self._event(actor, "push", key, project_id=project_id, outcome=outcome, image_id=image_id, details=details)
        return True

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
    ) -> bool:
        """Record a failed push. With `claim`, only while that claim holds the item: False when it does not."""
        outcome = self.failure_outcome(retryable)
        event_details = {"reason": reason, "retryable": retryable, **(details or {})}

        def change(entity: dict[str, Any]) -> dict[str, Any] | None:
            if claim is None and entity.get("state") == PushState.PUSHED:
                return None  # without a claim, a failure never overwrites a push
            return {
                **entity,
                "state": PushState.FAILED.value,
                "reason": reason,
                "sha256": sha256 or entity.get("sha256"),
                "claim": None,
                "claimed_at": None,
                "updated_by": actor,
            }

        written, found = self._settle(key, project_id, claim, change)
        if not written:
            self._claim_lost(key, project_id, claim or "", actor, outcome, found, event_details)
            return False
        self._event(actor, "push", key, project_id=project_id, outcome=outcome, details=event_details)
        return True

    def forget_push(self, key: BlobKey, project_id: str, *, actor: str, reason: str) -> None:
        """Drop a push record whose image is gone from the project (deleted in the portal), so it can go again."""
        address = self._push_address(key, project_id)
        gone = self._get(self._pushes, address)
        self._modify(self._pushes, address, lambda current: _Write(_DELETE), read=gone)
        if gone is not None and gone.get("sha256"):
            self._forget_content(project_id, gone["sha256"], gone.get("image_id"))
        self._event(actor, "forget-push", key, project_id=project_id, outcome="forgotten", details={"reason": reason})

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
    ) -> bool:
        """Record an image's tags. With `claim`, only while that claim holds the item: False when it does not."""

        def decide(current: dict[str, Any] | None) -> _Write:
            if claim is not None and not self._holds(current, claim):
                return _Write(None, (False, current))
            if current is None:
                return _Write(None, (True, None))  # as an UPDATE of no row: nothing to retag, the event still says so
            return _Write({**current, "tags": json.dumps(list(tags)), "updated_by": actor}, (True, None))

        written, found = self._modify(self._pushes, self._push_address(key, project_id), decide)
        if not written:
            self._claim_lost(key, project_id, claim or "", actor, "retagged", found, {"tags": list(tags)})
            return False
        self._event(
            actor,
            "retag",
            key,
            project_id=project_id,
            outcome="retagged",
            details={"added": list(added), "removed": list(removed)},
        )
        return True

    def record_regions(self, key: BlobKey, project_id: str, *, regions: Sequence[ReviewedBox], actor: str) -> bool:
        """Keep the image's boxes as the reviewer saved them (exports read them here); False when it is not pushed."""

        def decide(current: dict[str, Any] | None) -> _Write:
            if current is None or current.get("state") != PushState.PUSHED:
                return _Write(None, False)
            return _Write({**current, "regions": regions_to_json(regions), "updated_by": actor}, True)

        return self._modify(self._pushes, self._push_address(key, project_id), decide)


# Event partitions are days and row keys are microseconds, both inverted, so the natural order is newest first.
_INVERTED_MICROS = 10**17


def _event_partition(ts: float) -> str:
    return f"{99999999 - int(datetime.fromtimestamp(ts, UTC).strftime('%Y%m%d')):08d}"
