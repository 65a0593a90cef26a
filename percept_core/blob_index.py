"""A metadata index of the `data` container: find, count and page its blobs without listing the container.

A row per blob (name, etag, size, last modified, the metadata as uploaded) with what the listing's parser
made of it (model name and version, confidence, capture time: the fields the app filters on), kept beside the
ledger: a table in the ledger's SQLite file (`SqliteBlobIndex`), or a table beside the shared ledger's
(`blob_index_table.TableBlobIndex`). A row is written from the blob the listing's parser made
(`RetrainingBlob.from_properties`) and read back as that blob, so what the index says of a blob is what a
listing says, and every filter is checked again on the blob
(`BlobFilter.matches`) after the query narrowed the rows.

The index is kept fresh by whoever sees a blob arrive (the Event Grid Function, `index_blob`) and repaired by
`sync` (`percept-curator index`): a walk of the container's listing beside the index, in name order, that adds
new blobs, rewrites changed ones (another etag) and removes deleted ones; resumable from its last page. A row
whose blob changed since it was indexed is never pushed from: every download names the etag it expects.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time as clock
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient, decode_page_token, encode_page_token
from .errors import BlobNotFoundError, CuratorError, StaleBlobError
from .state import Review

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_index (
    container TEXT NOT NULL, name TEXT NOT NULL,
    etag TEXT NOT NULL, size INTEGER NOT NULL, last_modified TEXT, metadata TEXT NOT NULL,
    model_name TEXT, model_version TEXT, confidence REAL, captured_at TEXT,
    file_ref TEXT, problems TEXT NOT NULL,
    PRIMARY KEY (container, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_index_model ON blob_index (container, model_name, model_version, captured_at);
CREATE INDEX IF NOT EXISTS blob_index_confidence ON blob_index (container, confidence);
CREATE INDEX IF NOT EXISTS blob_index_captured ON blob_index (container, captured_at);
CREATE TABLE IF NOT EXISTS blob_index_state (
    container TEXT PRIMARY KEY, built_at TEXT, sync_marker TEXT, sync_after TEXT
);
"""

SYNC_PAGE = 5000  # container entries listed per request by a sync


@dataclass
class SyncReport:
    """What a sync did: entries listed, rows added, rewritten (another etag) and removed (gone from the container)."""

    listed: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    seconds: float = 0.0
    resumed: bool = False

    @property
    def blobs_per_second(self) -> float:
        return self.listed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
        }


@dataclass
class SyncProgress:
    """How far a sync is: container entries listed so far (`done`), rows changed so far (`counts`)."""

    done: int
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexTally:
    """A group of indexed blobs alike for a dry run: model, version, capture day, over the size limit or not, and
    the ledger's facts for the project (`review`, `push_state`, as `state.state_of_record` reads them)."""

    model_name: str | None
    model_version: str | None
    day: date | None
    too_large: bool
    review: str
    push_state: str | None
    count: int


class BlobIndex(Protocol):
    """The contract both backends keep. `blobs` finds every matching row once, in the backend's stable order
    (SQLite: by name; Table Storage: by partition, then by the capture time or confidence the filter ranges over),
    and continues after a `position` it gave."""

    container: str

    def position(self, blob: RetrainingBlob) -> str: ...

    def built_at(self) -> datetime | None: ...

    def put(self, blobs: Iterable[RetrainingBlob]) -> int: ...

    def remove(self, names: Iterable[str]) -> int: ...

    def get(self, name: str) -> RetrainingBlob | None: ...

    def blobs(self, blob_filter: BlobFilter | None = None, *, after: str | None = None) -> Iterator[RetrainingBlob]: ...

    def count(self, blob_filter: BlobFilter | None = None) -> int: ...

    def etags(self, *, after: str | None, until: str | None) -> dict[str, str]: ...

    def sync_checkpoint(self) -> tuple[str | None, str | None]: ...

    def save_checkpoint(self, marker: str | None, after: str | None, *, built: bool = False) -> None: ...


def row_of(blob: RetrainingBlob) -> dict[str, Any]:
    """A blob as an index row: what the listing said of it and what the listing's parser made of that."""
    return {
        "name": blob.name,
        "etag": blob.etag,
        "size": blob.size,
        "last_modified": blob.last_modified.isoformat() if blob.last_modified else None,
        "metadata": json.dumps(dict(blob.metadata), sort_keys=True),
        "model_name": blob.model_name,
        "model_version": blob.model_version,
        "confidence": blob.confidence,
        "captured_at": blob.captured_at.isoformat() if blob.captured_at else None,
        "file_ref": blob.file_ref,
        "problems": json.dumps(list(blob.problems)),
    }


# What a row leaves out when a store drops empty values (Table Storage keeps no null properties).
ROW_DEFAULTS: dict[str, Any] = dict.fromkeys(
    ("last_modified", "model_name", "model_version", "confidence", "captured_at", "file_ref")
) | {"problems": "[]"}


class _StoredMetadata(Mapping[str, str]):
    """A row's metadata, parsed from its JSON the first time it is read (a walk of the index rarely reads it)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._parsed: dict[str, str] | None = None

    def _items(self) -> dict[str, str]:
        if self._parsed is None:
            self._parsed = json.loads(self._text)
        return self._parsed

    def __getitem__(self, key: str) -> str:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


def blob_of(container: str, row: Any) -> RetrainingBlob:
    """An index row back as the blob the listing's parser made when the row was written (parsing each row again,
    its capture time out of the name above all, would cost a dry run of a million blobs over ten seconds). The
    model names are checked again where they are used (`RetrainingBlob.require_model`), as for a listed blob."""
    return RetrainingBlob(
        name=row["name"],
        container=container,
        etag=row["etag"],
        size=int(row["size"]),
        last_modified=datetime.fromisoformat(row["last_modified"]) if row["last_modified"] else None,
        model_name=row["model_name"],
        model_version=row["model_version"],
        confidence=row["confidence"],
        captured_at=datetime.fromisoformat(row["captured_at"]) if row["captured_at"] else None,
        file_ref=row["file_ref"],
        metadata=_StoredMetadata(row["metadata"]),
        problems=tuple(json.loads(row["problems"])) if row["problems"] != "[]" else (),
    )


class SqliteBlobIndex:
    """The index as a table of the ledger's SQLite file (WAL: the app, the CLI and notebooks share it)."""

    def __init__(self, path: str | Path, container: str) -> None:
        self.path = Path(path)
        self.container = container
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        """The file, opened (and created) on first use: asking whether an index is built creates nothing."""
        with self._lock:
            if self._connection is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=60000")
                # Python's lower(), so that a name filter matches as BlobFilter.matches does (SQLite's is ASCII).
                db.create_function("py_lower", 1, lambda text: text.lower() if text else text, deterministic=True)
                db.executescript(_SCHEMA)
                self._connection = db
            return self._connection

    def __repr__(self) -> str:
        return f"SqliteBlobIndex({str(self.path)!r}, {self.container!r})"

    def position(self, blob: RetrainingBlob) -> str:
        """Where a blob is in this index's order (by name): `blobs(after=...)` continues after it."""
        return blob.name

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- state --------------------------------------------------------------------------------------

    def built_at(self) -> datetime | None:
        """When a sync last walked the whole container (None: never, so the index is not to be read)."""
        if self._connection is None and not self.path.exists():
            return None
        rows = self._query("SELECT built_at FROM blob_index_state WHERE container=?", (self.container,))
        return datetime.fromisoformat(rows[0]["built_at"]) if rows and rows[0]["built_at"] else None

    def sync_checkpoint(self) -> tuple[str | None, str | None]:
        """(listing marker, last name synced) where an interrupted sync resumes; (None, None) to start over."""
        rows = self._query("SELECT sync_marker, sync_after FROM blob_index_state WHERE container=?", (self.container,))
        return (rows[0]["sync_marker"], rows[0]["sync_after"]) if rows else (None, None)

    def save_checkpoint(self, marker: str | None, after: str | None, *, built: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO blob_index_state (container, built_at, sync_marker, sync_after) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (container) DO UPDATE SET sync_marker=excluded.sync_marker, "
                "sync_after=excluded.sync_after, built_at=COALESCE(excluded.built_at, blob_index_state.built_at)",
                (self.container, _now() if built else None, marker, after),
            )

    # -- writing ------------------------------------------------------------------------------------

    def put(self, blobs: Iterable[RetrainingBlob]) -> int:
        """Add or rewrite these blobs' rows (a newer etag replaces the row); how many were written."""
        rows = [row_of(blob) for blob in blobs]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO blob_index (container, name, etag, size, last_modified, metadata, "
                    "model_name, model_version, confidence, captured_at, file_ref, problems) VALUES "
                    "(:container, :name, :etag, :size, :last_modified, :metadata, :model_name, :model_version, "
                    ":confidence, :captured_at, :file_ref, :problems)",
                    [{"container": self.container, **row} for row in rows],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(rows)

    def remove(self, names: Iterable[str]) -> int:
        names = list(names)
        with self._lock:
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM blob_index WHERE container=? AND name=?", [(self.container, name) for name in names]
            )
            return self._db.total_changes - before

    # -- reading ------------------------------------------------------------------------------------

    def get(self, name: str) -> RetrainingBlob | None:
        rows = self._query("SELECT * FROM blob_index WHERE container=? AND name=?", (self.container, name))
        return blob_of(self.container, rows[0]) if rows else None

    def _where(self, blob_filter: BlobFilter) -> tuple[str, list[Any]]:
        """SQL narrowing the rows to those the filter may match (BlobFilter.matches has the last word)."""
        clauses, params = ["container=?"], [self.container]
        if blob_filter.model_names:
            clauses.append(f"model_name IN ({','.join('?' * len(blob_filter.model_names))})")
            params += blob_filter.model_names
        if blob_filter.model_versions:
            clauses.append(f"model_version IN ({','.join('?' * len(blob_filter.model_versions))})")
            params += blob_filter.model_versions
        if blob_filter.min_confidence is not None:
            clauses.append("confidence >= ?")
            params.append(blob_filter.min_confidence)
        if blob_filter.max_confidence is not None:
            clauses.append("confidence <= ?")
            params.append(blob_filter.max_confidence)
        if (start := blob_filter.capture_start) is not None:
            clauses.append("captured_at >= ?")
            params.append(start.isoformat())
        if (end := blob_filter.capture_end) is not None:
            clauses.append("captured_at <= ?")
            params.append(end.isoformat())
        if blob_filter.name_prefix:
            clauses.append("substr(name, 1, ?) = ?")
            params += [len(blob_filter.name_prefix), blob_filter.name_prefix]
        if blob_filter.name_contains:
            clauses.append("instr(py_lower(name), ?) > 0")
            params.append(blob_filter.name_contains.lower())
        return " AND ".join(clauses), params

    def blobs(
        self, blob_filter: BlobFilter | None = None, *, after: str | None = None, chunk: int = 1000
    ) -> Iterator[RetrainingBlob]:
        """Every matching blob in name order after the position `after`, read `chunk` rows at a time (bounded
        memory)."""
        blob_filter = blob_filter or BlobFilter()
        where, params = self._where(blob_filter)
        while True:
            since = "" if after is None else " AND name > ?"
            rows = self._query(
                f"SELECT * FROM blob_index WHERE {where}{since} ORDER BY name LIMIT ?",  # noqa: S608 - placeholders
                [*params, *([] if after is None else [after]), chunk],
            )
            for row in rows:
                blob = blob_of(self.container, row)
                if blob_filter.matches(blob):
                    yield blob
            if len(rows) < chunk:
                return
            after = rows[-1]["name"]

    def count(self, blob_filter: BlobFilter | None = None) -> int:
        """How many blobs match, counted by the query alone (its conditions are `BlobFilter.matches`'s, capture times
        compared as the ISO text the rows hold)."""
        blob_filter = blob_filter or BlobFilter()
        where, params = self._where(blob_filter)
        [row] = self._query(f"SELECT COUNT(*) FROM blob_index WHERE {where}", params)  # noqa: S608 - placeholders
        return int(row[0])

    def tally(self, blob_filter: BlobFilter, project_id: str, max_size: int) -> list[IndexTally] | None:
        """The matching blobs grouped as a dry run counts them, with the ledger's facts joined in one query (the
        ledger's tables are in this file); None when the filter has a condition the query cannot decide exactly
        (capture times: `BlobFilter.matches` compares them as datetimes) or the ledger's tables are not here."""
        if blob_filter.captured_from is not None or blob_filter.captured_to is not None:
            return None
        where, params = self._where(blob_filter)
        columns = "container, name, etag, model_name, model_version, captured_at, size"
        # The filter's clauses hold placeholders only (`_where`).
        sql = (
            "SELECT b.model_name, b.model_version, substr(b.captured_at, 1, 10) AS day, b.size > ? AS too_large, "  # noqa: S608
            f"r.review, p.state, COUNT(*) FROM (SELECT {columns} FROM blob_index WHERE {where}) b "
            "LEFT JOIN blobs r ON r.container=b.container AND r.name=b.name AND r.etag=b.etag "
            "LEFT JOIN pushes p ON p.container=b.container AND p.name=b.name AND p.etag=b.etag AND p.project_id=? "
            "GROUP BY 1, 2, 3, 4, 5, 6"
        )
        try:
            rows = self._query(sql, [max_size, *params, project_id])
        except sqlite3.OperationalError:  # no ledger tables in this file (yet): the caller walks the rows
            return None
        return [
            IndexTally(
                model_name=row[0],
                model_version=row[1],
                day=date.fromisoformat(row[2]) if row[2] else None,
                too_large=bool(row[3]),
                review=row[4] or Review.NEW,
                push_state=row[5],
                count=int(row[6]),
            )
            for row in rows
        ]

    def etags(self, *, after: str | None, until: str | None) -> dict[str, str]:
        """name -> etag of the rows with after < name <= until (None: unbounded), for a sync to compare."""
        sql, params = "SELECT name, etag FROM blob_index WHERE container=?", [self.container]
        if after is not None:
            sql += " AND name > ?"
            params.append(after)
        if until is not None:
            sql += " AND name <= ?"
            params.append(until)
        return {row["name"]: row["etag"] for row in self._query(sql, params)}


def page(
    index: BlobIndex,
    blob_filter: BlobFilter | None = None,
    *,
    page_size: int = 48,
    continuation: str | None = None,
    predicate: Callable[[RetrainingBlob], bool] | None = None,
) -> BlobPage:
    """The next `page_size` matching blobs after `continuation` (the position of the last one shown), in the
    index's order."""
    after = _decode(continuation) if continuation else None
    found: list[RetrainingBlob] = []
    for blob in index.blobs(blob_filter, after=after):
        if predicate is not None and not predicate(blob):
            continue
        if len(found) == page_size:
            return BlobPage(found, _encode(index.position(found[-1])))
        found.append(blob)
    return BlobPage(found, None)


_INDEX_PAGE = "i"  # what starts a page token of the index (a listing's never does: base64 of "{")


def is_index_token(token: str) -> bool:
    return token.startswith(_INDEX_PAGE)


def _encode(after: str) -> str:
    return _INDEX_PAGE + encode_page_token({"after": after})


def _decode(token: str) -> str:
    # Another token (a listing's) is given as no text at all: refused as not ours, as any unreadable token is.
    fields = token.removeprefix(_INDEX_PAGE) if is_index_token(token) else ""
    return decode_page_token(fields, lambda document: str(document["after"]))


def sync(
    index: BlobIndex,
    data: RetrainingDataClient,
    *,
    progress: Callable[[SyncProgress], None] | None = None,
    restart: bool = False,
    page_size: int = SYNC_PAGE,
) -> SyncReport:
    """Make the index agree with the container: walk the listing page by page beside the index's rows of the same
    names, add what is new, rewrite what changed, remove what is gone. After each page the listing's marker is
    saved, so an interrupted sync resumes there; the walk's end marks the index built."""
    report = SyncReport()
    started = clock.monotonic()
    marker, after = (None, None) if restart else index.sync_checkpoint()
    report.resumed = marker is not None
    ended = False
    for _, entries, next_marker in data.service_pages(BlobFilter(), marker, page_size):
        blobs = [RetrainingBlob.from_properties(data.container, entry) for entry in entries]
        after = _sync_page(index, report, blobs, after, next_marker)
        ended = not next_marker
        if progress is not None:
            counts = {"added": report.added, "changed": report.changed, "removed": report.removed}
            progress(SyncProgress(report.listed, None, counts))
    if not ended:  # the listing ended without a last page (an empty container): every row after `after` goes
        _sync_page(index, report, [], after, None)
    report.seconds = clock.monotonic() - started
    return report


def _sync_page(
    index: BlobIndex, report: SyncReport, blobs: list[RetrainingBlob], after: str | None, next_marker: str | None
) -> str | None:
    """One page of the listing against the index's rows of the same names (after `after`, up to the page's last
    name; at the listing's end, every row after): add, rewrite, remove, then save where the next page starts.
    Returns the name the next page's rows start after."""
    last = blobs[-1].name if blobs and next_marker else None
    known = index.etags(after=after, until=last)
    listed = {blob.name for blob in blobs}
    new = [blob for blob in blobs if blob.name not in known]
    changed = [blob for blob in blobs if blob.name in known and known[blob.name] != blob.etag]
    gone = [name for name in known if name not in listed]
    index.put([*new, *changed])
    index.remove(gone)
    report.listed += len(blobs)
    report.added += len(new)
    report.changed += len(changed)
    report.removed += len(gone)
    index.save_checkpoint(next_marker, last, built=not next_marker)
    return last


def index_blob(index: BlobIndex, data: RetrainingDataClient, name: str) -> RetrainingBlob | None:
    """Index one blob as it is now in the container (an Event Grid event names it): its row is written, or
    removed when the blob is gone. Returns the blob, or None when it is gone."""
    try:
        blob = data.get_blob(name)
    except BlobNotFoundError:
        index.remove([name])
        return None
    index.put([blob])
    return blob


class IndexedBlobs:
    """The container as the app, the CLI, the notebooks and the pipeline read it: listed from the index once a
    sync has built it, else from the container itself; downloads always from the container, by etag.

    Everything a `RetrainingDataClient` offers is here (its other attributes are its own), plus `count`.
    """

    def __init__(self, data: RetrainingDataClient, index: BlobIndex | None) -> None:
        self.data = data
        self.index = index

    def __getattr__(self, name: str) -> Any:  # downloads, single blobs, call counts: the container's
        return getattr(self.data, name)

    def built(self) -> BlobIndex | None:
        """The index, when one has been built for this container (else None: list the container)."""
        return self.index if self.index is not None and self.index.built_at() is not None else None

    def list_blobs(
        self, blob_filter: BlobFilter | None = None, *, predicate: Callable[[RetrainingBlob], bool] | None = None
    ) -> Iterator[RetrainingBlob]:
        index = self.built()
        if index is None:
            return self.data.list_blobs(blob_filter, predicate=predicate)
        return (blob for blob in index.blobs(blob_filter) if predicate is None or predicate(blob))

    def list_page(
        self,
        blob_filter: BlobFilter | None = None,
        *,
        page_size: int = 48,
        continuation: str | None = None,
        predicate: Callable[[RetrainingBlob], bool] | None = None,
    ) -> BlobPage:
        index = self.built()
        if index is None or (continuation is not None and not is_index_token(continuation)):
            # A token of a listing stays one (the index was built meanwhile): the listing continues.
            return self.data.list_page(blob_filter, page_size=page_size, continuation=continuation, predicate=predicate)
        return page(index, blob_filter, page_size=page_size, continuation=continuation, predicate=predicate)

    def download(self, blob: RetrainingBlob) -> bytes:
        """The blob's bytes, exactly the version listed; a blob that changed or went away since is re-indexed as it
        is now (its old row never comes back) and StaleBlobError is raised as for a listing."""
        try:
            return self.data.download(blob)
        except StaleBlobError:
            try:
                if self.built() is not None:
                    index_blob(self.index, self.data, blob.name)
            except CuratorError:
                pass  # the next sync repairs the row; what the caller must hear is that the blob is stale
            raise

    def tally(self, blob_filter: BlobFilter | None, project_id: str) -> list[IndexTally] | None:
        """The matching blobs grouped for a dry run, when the index can group them in one query (else None)."""
        index = self.built()
        if not isinstance(index, SqliteBlobIndex):
            return None
        return index.tally(blob_filter or BlobFilter(), project_id, self.data.max_blob_bytes)

    def indexed(self, name: str) -> RetrainingBlob | None:
        """The blob as the index has it (None: not indexed, or no index built)."""
        index = self.built()
        return None if index is None else index.get(name)

    def count(self, blob_filter: BlobFilter | None = None) -> int | None:
        """How many blobs match, from the index; None without one (counting would read the whole container)."""
        index = self.built()
        return None if index is None else index.count(blob_filter)


def _now() -> str:
    return datetime.now(UTC).isoformat()


__all__ = [
    "BlobIndex",
    "IndexTally",
    "IndexedBlobs",
    "SqliteBlobIndex",
    "SyncProgress",
    "SyncReport",
    "index_blob",
    "page",
    "sync",
]
