"""The blob index on Azure Table Storage: `blob_index.BlobIndex`'s contract, shared by every host of a fleet.

One table, `<prefix>blobindex`, holds four families of partitions for each container:

- a filter partition per (model name, model version, capture day), so model, version and day are partition
  lookups. Per blob it holds three rows, written together in one transaction: `t|<capture time>|<name key>`
  and `c|<confidence>|<name key>`, each carrying the whole row (so a time or confidence range is one key range
  that returns blobs directly), and `n|<name key>`, which says which version of the blob is here and where its
  other two rows are. The partition's `count` row is changed in the same transaction, under its ETag, so a
  partition's count is exact and counting a model/version/day filter is a sum of counters. Blobs without a
  model or a capture time go to the partitions whose part is empty.
- a catalog (one partition per container, a row per filter partition), so a filter finds its partitions
  without a scan.
- a name directory (one partition per container), a row per blob with its whole row and its filter
  partition, for `get`, for a sync's `etags` by name range, and to find a changed blob's old rows. Its row keys
  begin with the hex of the name's first UTF-8 bytes, so a name range is a key range (trimmed exactly on the
  names the rows carry); the rest of the key is a hash, so any name fits.
- a state row (built_at and the sync checkpoint).

A put moves each blob into its filter partition (and out of the one the directory had it in), then writes its
directory row only if nobody wrote that row since it was read; when another host did, the put reads it again
and moves the blob out of the partition that host put it in. Each step is decided on what is there (creates,
ETag conditions), so hosts indexing one blob at once leave one set of rows, named by the directory. A host that
dies between the two steps leaves the directory with the blob's old etag, so the next sync rewrites the blob;
only if the blob also changed partition again before that sync are the dead host's rows left behind, naming an
etag the container no longer has (nothing is pushed from them: every download names its etag).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import partial
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableServiceClient, TableTransactionError, UpdateMode

from .blob_index import ROW_DEFAULTS, blob_of, row_of
from .blobs import BlobFilter, RetrainingBlob, url_without_query
from .errors import AzureCall, CuratorError, from_azure
from .ledger_table import (
    CLIENT_RETRIES,
    CONCURRENT_REQUESTS,
    CREATE_RETRIES,
    DEFAULT_TABLE_PREFIX,
    RANGE_READ_MIN_KEYS,
    RANGE_READ_PAGE,
    RANGE_READ_SLACK,
    WRITE_ATTEMPTS,
    LedgerContention,
    table_key,
)

T = TypeVar("T")
R = TypeVar("R")

TRANSACTION_ROWS = 100  # the most operations Table Storage takes in one transaction
NAME_PREFIX_BYTES = 32  # of a name, hex-encoded at the start of its key: name ranges are key ranges
_COUNTER = "count"
_STATE = "state"
_LOST_RACE = (404, 409, 412)  # a transaction that met another host's write: read again, decide again
_UNAVAILABLE_HINT = (
    "The table service did not answer through a minute and a half of retries. Run it again when the service "
    "answers; `percept-curator index` repairs whatever this step left half done."
)
_REFUSED_HINT = (
    "Check the table connection string, or give this identity the Storage Table Data Contributor role on the account."
)


def name_key(name: str) -> str:
    """A blob name as a key: the hex of its first UTF-8 bytes (name order), `!`, and a hash (any name fits)."""
    encoded = name.encode()
    return encoded[:NAME_PREFIX_BYTES].hex() + "!" + hashlib.sha256(encoded).hexdigest()[:40]


def _confidence_key(confidence: float | None) -> str:
    # Rounding is monotonic, so a range of rounded keys holds every blob of the range (matches has the last word).
    return "none" if confidence is None else f"{confidence:011.6f}"


def _time_key(moment: datetime | None) -> str:
    return "none" if moment is None else moment.replace(tzinfo=None).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class _Place:
    """Where a blob's rows are: its filter partition and the keys of its time and confidence rows."""

    partition: str
    time_row: str
    confidence_row: str


@dataclass(frozen=True)
class _Drop:
    """A blob version a partition is not to hold any more (another version, put meanwhile, stays)."""

    etag: str


@dataclass(frozen=True)
class _Partition:
    """A filter partition as the catalog lists it."""

    key: str
    model_name: str | None
    model_version: str | None
    day: date | None

    def may_hold(self, blob_filter: BlobFilter) -> bool:
        """Whether a blob of this partition can match the filter at all."""
        if blob_filter.model_names and self.model_name not in blob_filter.model_names:
            return False
        if blob_filter.model_versions and self.model_version not in blob_filter.model_versions:
            return False
        if blob_filter.captured_from is None and blob_filter.captured_to is None:
            return True
        if self.day is None:
            return False
        first, last = datetime.combine(self.day, time.min), datetime.combine(self.day, time.max)
        start, end = blob_filter.capture_start, blob_filter.capture_end
        return (start is None or last >= start) and (end is None or first <= end)

    def wholly_in(self, blob_filter: BlobFilter) -> bool:
        """Whether every blob of this partition matches the filter (so its counter counts them)."""
        if not self.may_hold(blob_filter):
            return False
        if blob_filter.min_confidence is not None or blob_filter.max_confidence is not None:
            return False
        if blob_filter.name_prefix or blob_filter.name_contains:
            return False
        if self.day is None:
            return True
        first, last = datetime.combine(self.day, time.min), datetime.combine(self.day, time.max)
        start, end = blob_filter.capture_start, blob_filter.capture_end
        return (start is None or first >= start) and (end is None or last <= end)


class TableBlobIndex:
    """The blob index in Azure Table Storage (or Azurite): find, count and page a container's blobs."""

    def __init__(self, service: TableServiceClient, container: str, *, prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        self.service = service
        self.container = container
        self.prefix = prefix
        # Partitions and directory chunks are worked on side by side (`_fanout`), and each may read its keys side by
        # side (`_requests`): two pools, so that a worker never waits for a free worker of its own pool.
        self._fanout = ThreadPoolExecutor(CONCURRENT_REQUESTS, thread_name_prefix="percept-blob-index")
        self._requests = ThreadPoolExecutor(CONCURRENT_REQUESTS, thread_name_prefix="percept-blob-index-read")
        self._catalogued: set[str] = set()
        self._table = service.get_table_client(f"{prefix}blobindex")
        self._table_created = False
        self._catalog = table_key("catalog", container)
        self._directory = table_key("names", container)
        self._state = table_key("state", container)

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str, **options: Any) -> TableBlobIndex:
        return cls(TableServiceClient.from_connection_string(connection_string, **CLIENT_RETRIES), container, **options)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, container: str, **options: Any) -> TableBlobIndex:
        """E.g. `https://<account>.table.core.windows.net` and DefaultAzureCredential (role: Storage Table Data
        Contributor)."""
        service = TableServiceClient(endpoint=endpoint, credential=credential, **CLIENT_RETRIES)
        return cls(service, container, **options)

    @property
    def location(self) -> str:
        """Where the index is, for a status line: the table service and the table (never a key)."""
        return f"{url_without_query(self.service.url)} (table {self._table.table_name})"

    def __repr__(self) -> str:
        return f"TableBlobIndex({url_without_query(self.service.url)!r}, {self.container!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        self._fanout.shutdown(wait=True)
        self._requests.shutdown(wait=True)
        self.service.close()

    @contextlib.contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """Turn the table service's failures (after the SDK's retries) into our ServiceError, naming no secret.

        A transaction that lost a race (404, 409, 412) passes through: the caller reads again and decides again.
        """
        try:
            yield
        except TableTransactionError as exc:
            if exc.status_code in _LOST_RACE:
                raise
            raise from_azure(exc, self._call(doing)) from None
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise
        except AzureError as exc:
            raise from_azure(exc, self._call(doing)) from None

    def _call(self, doing: str) -> AzureCall:
        return AzureCall(f"the blob index at {self.location}", doing, _UNAVAILABLE_HINT, refused_hint=_REFUSED_HINT)

    def _each(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`work` applied to every item (a partition, a chunk of names), CONCURRENT_REQUESTS at a time, results in
        the items' order."""
        items = list(items)
        if len(items) <= 1:
            return [work(item) for item in items]
        return list(self._fanout.map(work, items))

    def _query(self, query: str, *, select: list[str] | None = None, **parameters: Any) -> Iterator[TableEntity]:
        """The matching entities in key order, a page at a time (bounded memory); none before the table exists."""
        with contextlib.suppress(ResourceNotFoundError), self._answering(f"query table {self._table.table_name}"):
            yield from self._table.query_entities(
                query, parameters=parameters, select=select, results_per_page=RANGE_READ_PAGE
            )

    def _writable(self) -> None:
        """Create the table before the first write (asking whether an index is built creates nothing)."""
        if not self._table_created:
            with contextlib.suppress(ResourceExistsError), self._answering(f"create table {self._table.table_name}"):
                self._table.create_table()
            self._table_created = True

    def _get(self, partition: str, row: str) -> TableEntity | None:
        try:
            with self._answering(f"read from table {self._table.table_name}"):
                return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    def _read_rows(self, partition: str, rows: Iterable[str]) -> dict[str, TableEntity]:
        """The entities of one partition found at `rows`: one range query when the keys sort close together (a
        sync's page), point reads side by side when the range holds many more rows than were asked for."""
        wanted = set(rows)
        found: dict[str, TableEntity] = {}
        unread = sorted(wanted)
        if len(wanted) >= RANGE_READ_MIN_KEYS:
            budget = RANGE_READ_SLACK * len(wanted) + RANGE_READ_PAGE
            query = "PartitionKey eq @pk and RowKey ge @first and RowKey le @last"
            for seen, entity in enumerate(self._query(query, pk=partition, first=unread[0], last=unread[-1]), 1):
                if entity["RowKey"] in wanted:
                    found[entity["RowKey"]] = entity
                if seen > budget:
                    break
            else:
                return found
            unread = [row for row in unread if row not in found]
        for row, entity in zip(unread, self._requests.map(lambda row: self._get(partition, row), unread), strict=True):
            if entity is not None:
                found[row] = entity
        return found

    # -- where a blob goes --------------------------------------------------------------------------------

    def _partition_of(self, blob: RetrainingBlob) -> _Partition:
        day = blob.captured_at.date() if blob.captured_at else None
        parts = (blob.model_name or "", blob.model_version or "", day.isoformat() if day else "")
        return _Partition(table_key("blobs", self.container, *parts), blob.model_name, blob.model_version, day)

    def _place_of(self, blob: RetrainingBlob) -> _Place:
        key = name_key(blob.name)
        return _Place(
            self._partition_of(blob).key,
            f"t|{_time_key(blob.captured_at)}|{key}",
            f"c|{_confidence_key(blob.confidence)}|{key}",
        )

    def position(self, blob: RetrainingBlob) -> str:
        """Where a blob is in this index's order (its partition, then its time or confidence row, whichever the
        filter walks): `blobs(after=...)` continues after it."""
        place = self._place_of(blob)
        return json.dumps([place.partition, place.time_row, place.confidence_row])

    # -- state --------------------------------------------------------------------------------------------

    def built_at(self) -> datetime | None:
        """When a sync last walked the whole container (None: never, so the index is not to be read)."""
        state = self._get(self._state, _STATE)
        return datetime.fromisoformat(state["built_at"]) if state and state.get("built_at") else None

    def sync_checkpoint(self) -> tuple[str | None, str | None]:
        """(listing marker, last name synced) where an interrupted sync resumes; (None, None) to start over."""
        state = self._get(self._state, _STATE)
        if state is None:
            return None, None
        return state.get("sync_marker") or None, state.get("sync_after") or None

    def save_checkpoint(self, marker: str | None, after: str | None, *, built: bool = False) -> None:
        entity = {"PartitionKey": self._state, "RowKey": _STATE, "sync_marker": marker or "", "sync_after": after or ""}
        if built:
            entity["built_at"] = datetime.now(UTC).isoformat()
        self._writable()
        with self._answering("save the sync checkpoint"):
            self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    # -- writing ------------------------------------------------------------------------------------------

    def put(self, blobs: Iterable[RetrainingBlob]) -> int:
        """Add or rewrite these blobs' rows (a newer etag replaces the rows, wherever they were); how many."""
        latest = {blob.name: blob for blob in blobs}
        pending = dict(latest)
        if latest:
            self._writable()
        for _ in range(WRITE_ATTEMPTS):
            if not pending:
                return len(latest)
            before = self._directory_rows(pending)
            changes: dict[str, dict[str, RetrainingBlob | _Drop]] = defaultdict(dict)
            partitions: dict[str, _Partition] = {}
            for name, blob in pending.items():
                partition = self._partition_of(blob)
                partitions[partition.key] = partition
                changes[partition.key][name] = blob
                old = before.get(name)
                if old is not None and old["partition"] != partition.key:
                    changes[old["partition"]][name] = _Drop(old["etag"])
            self._each(self._catalogue, [partitions[key] for key in partitions if key not in self._catalogued])
            self._each(lambda change: self._settle(*change), changes.items())
            chunks = _chunks(sorted(pending))
            written = self._each(partial(self._list, blobs=pending, before=before), chunks)
            pending = {
                name: latest[name] for names, ok in zip(chunks, written, strict=True) if not ok for name in names
            }
        raise LedgerContention(f"blob index of {self.container}: still changing after {WRITE_ATTEMPTS} attempts")

    def remove(self, names: Iterable[str]) -> int:
        """Remove these blobs' rows (unless another host indexed another version meanwhile); how many it removed."""
        before = self._directory_rows(set(names))
        removed = 0
        for _ in range(WRITE_ATTEMPTS):
            if not before:
                return removed
            changes: dict[str, dict[str, RetrainingBlob | _Drop]] = defaultdict(dict)
            for name, entity in before.items():
                changes[entity["partition"]][name] = _Drop(entity["etag"])
            self._each(lambda change: self._settle(*change), changes.items())
            chunks = _chunks(sorted(before))
            dropped = self._each(partial(self._unlist, before=before), chunks)
            lost = [name for names, ok in zip(chunks, dropped, strict=True) if not ok for name in names]
            removed += len(before) - len(lost)
            again = self._directory_rows(lost)  # still there: removed again if it is still the version to remove
            before = {name: entity for name, entity in again.items() if entity["etag"] == before[name]["etag"]}
        raise LedgerContention(f"blob index of {self.container}: still changing after {WRITE_ATTEMPTS} attempts")

    def _directory_rows(self, names: Iterable[str]) -> dict[str, TableEntity]:
        """name -> directory row of those of `names` the index holds."""
        keys = {name_key(name): name for name in names}
        found = self._read_rows(self._directory, keys)
        return {keys[key]: entity for key, entity in found.items() if entity["name"] == keys[key]}

    def _list(self, names: list[str], blobs: dict[str, RetrainingBlob], before: dict[str, TableEntity]) -> bool:
        """Write these blobs' directory rows, each only if unchanged since `before` was read; False when another
        host wrote one of them meanwhile (none is written then)."""
        operations: list[tuple] = []
        for name in names:
            blob = blobs[name]
            place = self._place_of(blob)
            row = {key: value for key, value in row_of(blob).items() if value is not None}
            row |= {"PartitionKey": self._directory, "RowKey": name_key(name), "partition": place.partition}
            old = before.get(name)
            if old is None:
                operations.append(("create", row))
            else:
                condition = {"etag": old.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
                operations.append(("update", row, {"mode": UpdateMode.REPLACE, **condition}))
        return self._transact(operations, "write the blob directory") is not None

    def _unlist(self, names: list[str], before: dict[str, TableEntity]) -> bool:
        """Drop these blobs' directory rows, each only if unchanged since `before` was read; False when another host
        wrote one of them meanwhile (none is dropped then)."""
        operations = [
            (
                "delete",
                before[name],
                {"etag": before[name].metadata["etag"], "match_condition": MatchConditions.IfNotModified},
            )
            for name in names
        ]
        return self._transact(operations, "remove from the blob directory") is not None

    def _transact(self, operations: list[tuple], doing: str) -> list[dict[str, Any]] | None:
        """The transaction's answers, or None when it met another host's write (nothing of it was written).

        A transaction whose answer was lost is sent again: each holds a create or an ETag condition (a partition's
        counter, a directory row), so a first try that landed makes the second one fail, and it is decided again.
        """
        try:
            with self._answering(doing):
                return list(self._table.submit_transaction(operations, **CREATE_RETRIES))
        except TableTransactionError:
            return None

    def _catalogue(self, partition: _Partition) -> None:
        entity = {"PartitionKey": self._catalog, "RowKey": partition.key, "model_name": partition.model_name}
        entity |= {
            "model_version": partition.model_version,
            "day": partition.day.isoformat() if partition.day else None,
        }
        entity = {key: value for key, value in entity.items() if value is not None}
        with contextlib.suppress(ResourceExistsError), self._answering("add a partition to the catalog"):
            self._table.create_entity(entity, **CREATE_RETRIES)
        self._catalogued.add(partition.key)

    def _settle(self, partition: str, wanted: dict[str, RetrainingBlob | _Drop]) -> None:
        """Make one filter partition hold each wanted blob and not hold each dropped version, in transactions that
        also move the partition's counter, each decided on what the partition holds (another host's write in
        between makes it fail, and it is decided again)."""
        pending = dict(wanted)
        for _ in range(WRITE_ATTEMPTS):
            counted = self._requests.submit(self._get, partition, _COUNTER)
            held = self._read_rows(partition, [f"n|{name_key(name)}" for name in pending])
            counter = counted.result()
            count, etag = (int(counter["count"]), counter.metadata["etag"]) if counter else (0, None)
            for names, operations, change in self._transactions(partition, pending, held):
                if operations:
                    row = {"PartitionKey": partition, "RowKey": _COUNTER, "count": count + change}
                    if etag is None:
                        operations.append(("create", row))
                    else:
                        condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
                        operations.append(("update", row, {"mode": UpdateMode.REPLACE, **condition}))
                    answers = self._transact(operations, "write a partition of the blob index")
                    if answers is None:
                        break  # another host wrote here meanwhile: read again, decide again
                    count, etag = count + change, answers[-1]["etag"]
                pending = {name: blob for name, blob in pending.items() if name not in names}
            else:
                return
        raise LedgerContention(f"blob index partition {partition}: still changing after {WRITE_ATTEMPTS} attempts")

    def _transactions(
        self, partition: str, wanted: dict[str, RetrainingBlob | _Drop], held: dict[str, TableEntity]
    ) -> Iterator[tuple[set[str], list[tuple], int]]:
        """The operations that bring `held` to `wanted`, in transactions of whole blobs (names, operations, and the
        change in the partition's count), each leaving room for the counter."""
        names: set[str] = set()
        operations: list[tuple] = []
        change = 0
        for name, blob in wanted.items():
            mine, counted = self._blob_operations(partition, name_key(name), blob, held.get(f"n|{name_key(name)}"))
            if len(operations) + len(mine) >= TRANSACTION_ROWS:
                yield names, operations, change
                names, operations, change = set(), [], 0
            names.add(name)
            operations += mine
            change += counted
        yield names, operations, change

    def _blob_operations(
        self, partition: str, key: str, blob: RetrainingBlob | _Drop, have: TableEntity | None
    ) -> tuple[list[tuple], int]:
        """The operations that make one blob's rows in `partition` what `blob` says, and the change in its count."""
        condition = (
            {} if have is None else {"etag": have.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
        )
        if isinstance(blob, _Drop):
            if have is None or have["etag"] != blob.etag:
                return [], 0  # not here, or another version is (put by another host meanwhile)
            deletes = [("delete", {"PartitionKey": partition, "RowKey": have[row]}) for row in ("t", "c")]
            return [("delete", {"PartitionKey": partition, "RowKey": f"n|{key}"}, condition), *deletes], -1
        place = self._place_of(blob)
        if have is not None and (have["etag"], have["t"], have["c"]) == (
            blob.etag,
            place.time_row,
            place.confidence_row,
        ):
            return [], 0
        row = {key: value for key, value in row_of(blob).items() if value is not None}
        marker = {"PartitionKey": partition, "RowKey": f"n|{key}", "etag": blob.etag}
        marker |= {"t": place.time_row, "c": place.confidence_row}
        if have is None:
            operations: list[tuple] = [("create", marker)]
        else:
            operations = [("update", marker, {"mode": UpdateMode.REPLACE, **condition})]
            operations += [
                ("delete", {"PartitionKey": partition, "RowKey": have[row]})
                for row, new in (("t", place.time_row), ("c", place.confidence_row))
                if have[row] != new
            ]
        for row_key in (place.time_row, place.confidence_row):
            operations.append(
                ("upsert", {**row, "PartitionKey": partition, "RowKey": row_key}, {"mode": UpdateMode.REPLACE})
            )
        return operations, int(have is None)

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, name: str) -> RetrainingBlob | None:
        entity = self._get(self._directory, name_key(name))
        return self._blob(entity) if entity is not None and entity["name"] == name else None

    def _blob(self, entity: TableEntity) -> RetrainingBlob:
        return blob_of(self.container, {**ROW_DEFAULTS, **entity})

    def _partitions(self, blob_filter: BlobFilter, *, first: str = "") -> Iterator[_Partition]:
        """The catalog's partitions from `first` on that may hold a match, in key order."""
        for entity in self._query("PartitionKey eq @pk and RowKey ge @first", pk=self._catalog, first=first):
            day = date.fromisoformat(entity["day"]) if entity.get("day") else None
            partition = _Partition(entity["RowKey"], entity.get("model_name"), entity.get("model_version"), day)
            if partition.may_hold(blob_filter):
                yield partition

    @staticmethod
    def _family(blob_filter: BlobFilter) -> tuple[int, str, str]:
        """Which rows a filter walks (the index into a position) and their key range [low, high)."""
        low_confidence, high_confidence = blob_filter.min_confidence, blob_filter.max_confidence
        if low_confidence is not None or high_confidence is not None:
            low = "c|" + (_confidence_key(low_confidence) if low_confidence is not None else "")
            high = "c|" + (_confidence_key(high_confidence) + "}" if high_confidence is not None else "none")
            return 2, low, high
        low = "t|" + (_time_key(blob_filter.capture_start) if blob_filter.capture_start else "")
        high = "t}" if blob_filter.capture_end is None else "t|" + _time_key(blob_filter.capture_end) + "}"
        return 1, low, high

    def blobs(self, blob_filter: BlobFilter | None = None, *, after: str | None = None) -> Iterator[RetrainingBlob]:
        """Every matching blob after the position `after`: partition by partition, each by the rows of its time or
        confidence range, a page of rows at a time (bounded memory)."""
        blob_filter = blob_filter or BlobFilter()
        column, low, high = self._family(blob_filter)
        since = _position(after) if after is not None else None
        for partition in self._partitions(blob_filter, first=since[0] if since is not None else ""):
            start, bound = low, "ge"
            if since is not None and partition.key == since[0] and since[column] >= low:
                start, bound = since[column], "gt"
            query = f"PartitionKey eq @pk and RowKey {bound} @start and RowKey lt @high"
            for entity in self._query(query, pk=partition.key, start=start, high=high):
                blob = self._blob(entity)
                if blob_filter.matches(blob):
                    yield blob

    def count(self, blob_filter: BlobFilter | None = None) -> int:
        """How many blobs match: the partitions' counters where a whole partition matches, its rows otherwise."""
        blob_filter = blob_filter or BlobFilter()
        _, low, high = self._family(blob_filter)

        def count_in(partition: _Partition) -> int:
            if partition.wholly_in(blob_filter):
                counter = self._get(partition.key, _COUNTER)
                return int(counter["count"]) if counter else 0
            query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
            rows = self._query(query, pk=partition.key, low=low, high=high)
            return sum(1 for entity in rows if blob_filter.matches(self._blob(entity)))

        return sum(self._each(count_in, self._partitions(blob_filter)))

    def etags(self, *, after: str | None, until: str | None) -> dict[str, str]:
        """name -> etag of the rows with after < name <= until (None: unbounded), for a sync to compare."""
        clauses, parameters = ["PartitionKey eq @pk"], {"pk": self._directory}
        if after is not None:
            clauses.append("RowKey ge @low")
            parameters["low"] = after.encode()[:NAME_PREFIX_BYTES].hex()
        if until is not None:
            clauses.append("RowKey lt @high")
            parameters["high"] = until.encode()[:NAME_PREFIX_BYTES].hex() + '"'  # just after `!`
        return {
            entity["name"]: entity["etag"]
            for entity in self._query(" and ".join(clauses), select=["name", "etag"], **parameters)
            if (after is None or entity["name"] > after) and (until is None or entity["name"] <= until)
        }


def _position(after: str) -> list[str]:
    """A position `TableBlobIndex.position` gave: [partition, time row, confidence row]."""
    try:
        since = json.loads(after)
    except ValueError:
        since = None
    if not (isinstance(since, list) and len(since) == 3 and all(isinstance(part, str) for part in since)):
        raise CuratorError("That page token is not one this tool made.")
    return since


def _chunks(names: list[str]) -> list[list[str]]:
    return [names[start : start + TRANSACTION_ROWS] for start in range(0, len(names), TRANSACTION_ROWS)]


__all__ = ["TableBlobIndex", "name_key"]
