"""The review ledger: what was decided and pushed for every blob version, and an append-only audit trail.

One SQLite file in WAL mode, safe for several processes at once (the app, the CLI, notebooks).
A blob version is (container, name, etag). Review facts (rejected, undecryptable, near-duplicate, the
plaintext's sha256) belong to the blob; push facts belong to the blob *and* the Custom Vision project,
so the same frame may go to a classification and a detection project. While a run pushes a blob it
holds a claim on it (its host, process and run id): a second run skips it, and a run that died leaves
a claim the next run takes over (immediately when the process is gone, else after the lease). Every write
that settles a claimed item names the claim it holds, so a run that lost its claim (it stalled past the
lease and another run took the item over) never writes its outcome over the other run's.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .state import Action, BlobState, PushState, Review, refusal, state_of_record

BlobKey = tuple[str, str, str]  # container, name, etag
# A box as the reviewer drew it: its tag's name, then left, top, width and height as fractions of the image.
ReviewedBox = tuple[str, float, float, float, float]

DEFAULT_LEDGER_PATH = Path.home() / ".percept-curator" / "ledger.sqlite"
LEASE_SECONDS = 300.0

# The states are state.py's words (Review, PushState): the schema names them from there.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS blobs (
    container TEXT NOT NULL, name TEXT NOT NULL, etag TEXT NOT NULL,
    review TEXT NOT NULL DEFAULT '{Review.NEW}',     -- {" | ".join(Review)}
    reason TEXT,
    model_name TEXT, model_version TEXT,
    sha256 TEXT, phash TEXT,
    updated_at REAL NOT NULL, updated_by TEXT,
    PRIMARY KEY (container, name, etag)
);
CREATE INDEX IF NOT EXISTS blobs_review ON blobs (review);
CREATE TABLE IF NOT EXISTS pushes (
    container TEXT NOT NULL, name TEXT NOT NULL, etag TEXT NOT NULL, project_id TEXT NOT NULL,
    state TEXT NOT NULL,                    -- {" | ".join(PushState)}
    image_id TEXT, sha256 TEXT, tags TEXT, regions TEXT, reason TEXT,
    claim TEXT, claimed_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL, updated_by TEXT,
    PRIMARY KEY (container, name, etag, project_id)
);
CREATE INDEX IF NOT EXISTS pushes_state ON pushes (project_id, state);
CREATE INDEX IF NOT EXISTS pushes_sha ON pushes (project_id, sha256);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    container TEXT, blob TEXT, etag TEXT, project_id TEXT,
    outcome TEXT, image_id TEXT, details TEXT
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


def regions_to_json(regions: Sequence[ReviewedBox]) -> str:
    return json.dumps([[tag, left, top, width, height] for tag, left, top, width, height in regions])


def regions_from_json(text: str | None) -> tuple[ReviewedBox, ...] | None:
    if text is None:
        return None
    return tuple(
        (str(tag), float(left), float(top), float(width), float(height))
        for tag, left, top, width, height in json.loads(text)
    )


@dataclass(frozen=True)
class BlobRecord:
    """What the ledger knows of one blob version for one project."""

    key: BlobKey
    review: str = Review.NEW
    reason: str | None = None
    sha256: str | None = None
    phash: str | None = None
    push_state: str | None = None
    image_id: str | None = None
    push_reason: str | None = None
    tags: tuple[str, ...] = ()
    # The image's boxes as the reviewer saved them; None when none were ever saved through this ledger.
    regions: tuple[ReviewedBox, ...] | None = None

    @property
    def state(self) -> BlobState:
        """The blob's state for the project, one word for a badge (`state.state_of_record`)."""
        return state_of_record(self)


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    actor: str
    action: str
    container: str | None
    blob: str | None
    etag: str | None
    project_id: str | None
    outcome: str | None
    image_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class RecordFacts:
    """A blob version's review mark and push state for one project, as `state.state_of_record` reads them."""

    review: str
    push_state: str | None


@dataclass(frozen=True)
class Claim:
    """A blob a run holds for pushing: `live` is False when that run is gone (an interrupted run)."""

    key: BlobKey
    run_id: str
    claimed_at: float | None
    live: bool


def default_actor() -> str:
    """The OS user, for the CLI and notebooks (the app passes the signed-in reviewer)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _namespace_token() -> str | None:
    """This machine's boot and PID namespace, hashed: two containers may share a hostname and even pids."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        return None  # no /proc (macOS, Windows): the hostname alone names the machine
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _now() -> float:
    return time.time()


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else _now(), UTC).isoformat(timespec="milliseconds")


def _chunks(items: Sequence[Any], size: int = 400) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RunClaims:
    """How a ledger names its runs and tells a dead run's claim: one rule for every backend (SQLite, Table Storage),
    so each reads the other's claims the same way. A backend calls `_identify()` once and sets `lease_seconds`."""

    lease_seconds: float
    #: How many of a run's settlements may be in flight at once: one here (a file's writes take turns anyway);
    #: a ledger across a network says more, so a batch's round trips overlap.
    parallel_writes: int = 1

    def _identify(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.namespace = _namespace_token()

    def new_run_id(self) -> str:
        """`host:pid:namespace-uuid`: where the run lives (pids mean something only within one PID namespace of
        one boot, which containers sharing a hostname do not share), and a uuid4 that makes it unique."""
        namespace = f"{self.namespace}-" if self.namespace else ""
        return f"{self.host}:{self.pid}:{namespace}{uuid.uuid4().hex}"

    def _claim_is_dead(self, claim: str | None, claimed_at: float | None, now: float) -> bool:
        if not claim:
            return True
        host, _, rest = claim.partition(":")
        pid_text, _, tail = rest.partition(":")
        namespace, marked, _ = tail.partition("-")
        # Our os.kill sees the pids of our PID namespace only: a run of another container that shares our
        # hostname is judged by its lease. (A run id without a namespace is from an older version: as before.)
        same_namespace = not marked or namespace == self.namespace
        if host == self.host and same_namespace and pid_text.isdigit() and int(pid_text) != self.pid:
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return claimed_at is None or now - claimed_at > self.lease_seconds

    def kept_out(
        self,
        review: str,
        push_state: str | None,
        claim: str | None,
        claimed_at: float | None,
        run_id: str,
        *,
        retry_failed: bool,
        now: float,
    ) -> BlobState | None:
        """The state that keeps `run_id` from claiming a blob version, or None when it may: state.py's rule for a
        push, with a claim of this run or of a dead run taken over. The one decision of every backend's `claim`."""
        if push_state == PushState.FAILED and not retry_failed:
            return BlobState.FAILED
        state = state_of_record(RecordFacts(review, push_state))
        if state is BlobState.PUSHING and (claim == run_id or self._claim_is_dead(claim, claimed_at, now)):
            return None
        return state if refusal(Action.PUSH, state) is not None else None

    @staticmethod
    def failure_outcome(retryable: bool) -> str:
        """What a failed push's event says: failed (the next run tries again), or refused by Custom Vision."""
        return PushState.FAILED if retryable else "rejected by Custom Vision"


class Ledger(RunClaims):
    """Review state, push outcomes and the audit trail, in one SQLite file."""

    def __init__(self, path: str | os.PathLike | None = None, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.path = Path(path) if path else DEFAULT_LEDGER_PATH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_seconds = lease_seconds
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent: every statement says IF NOT EXISTS
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(pushes)")}
            if "regions" not in columns:  # a ledger written before boxes were kept
                self._db.execute("ALTER TABLE pushes ADD COLUMN regions TEXT")
        self._identify()

    @property
    def location(self) -> str:
        """Where the ledger is, for a status line: its file."""
        return str(self.path)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (e.g. on SQLITE_BUSY)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- reading ----------------------------------------------------------------------------------

    def records(self, keys: Iterable[BlobKey], project_id: str | None = None) -> dict[BlobKey, BlobRecord]:
        """What the ledger knows of each key (keys it has never seen are absent)."""
        keys = list(keys)
        found: dict[BlobKey, dict[str, Any]] = {}
        for chunk in _chunks(keys):
            clause = " OR ".join(["(container=? AND name=? AND etag=?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            for row in self._query(f"SELECT * FROM blobs WHERE {clause}", params):  # noqa: S608 - placeholders only
                found.setdefault((row["container"], row["name"], row["etag"]), {}).update(
                    review=row["review"], reason=row["reason"], sha256=row["sha256"], phash=row["phash"]
                )
            if project_id is not None:
                rows = self._query(
                    f"SELECT * FROM pushes WHERE project_id=? AND ({clause})",  # noqa: S608
                    [project_id, *params],
                )
                for row in rows:
                    record = found.setdefault((row["container"], row["name"], row["etag"]), {})
                    record.update(
                        push_state=row["state"],
                        image_id=row["image_id"],
                        push_reason=row["reason"],
                        tags=tuple(json.loads(row["tags"] or "[]")),
                        regions=regions_from_json(row["regions"]),
                    )
                    record.setdefault("sha256", row["sha256"])
        return {key: BlobRecord(key, **fields) for key, fields in found.items()}

    def record(self, key: BlobKey, project_id: str | None = None) -> BlobRecord:
        return self.records([key], project_id).get(key, BlobRecord(key))

    def keys_in_state(self, project_id: str, state: str, container: str | None = None) -> set[BlobKey]:
        """Keys whose combined state (as BlobRecord.state) is `state`: for filters that work before decrypting."""
        if state in (PushState.PUSHED, PushState.FAILED, PushState.PUSHING):
            sql = "SELECT container, name, etag FROM pushes WHERE project_id=? AND state=?"
            params: list[Any] = [project_id, state]
        else:
            sql = "SELECT container, name, etag FROM blobs WHERE review=?"
            params = [state]
        if container:
            sql += " AND container=?"
            params.append(container)
        return {(r[0], r[1], r[2]) for r in self._query(sql, params)}

    def states(self, project_id: str | None) -> dict[BlobKey, BlobState]:
        """Every key whose state is not new, with its state for the project (as BlobRecord.state)."""
        facts: dict[BlobKey, dict[str, str]] = {
            (r[0], r[1], r[2]): {"review": r[3]}
            for r in self._query("SELECT container, name, etag, review FROM blobs WHERE review != ?", (Review.NEW,))
        }
        if project_id:
            for container, name, etag, state in self._query(
                "SELECT container, name, etag, state FROM pushes WHERE project_id=?", (project_id,)
            ):
                facts.setdefault((container, name, etag), {})["push_state"] = state
        return {key: state_of_record(BlobRecord(key, **fields)) for key, fields in facts.items()}

    def blob_models(self, keys: Iterable[BlobKey]) -> dict[BlobKey, tuple[str | None, str | None]]:
        """(model name, model version) of each key the ledger knows them for (activity charts)."""
        keys = list(dict.fromkeys(keys))
        found: dict[BlobKey, tuple[str | None, str | None]] = {}
        for chunk in _chunks(keys):
            clause = " OR ".join(["(container=? AND name=? AND etag=?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            sql = f"SELECT container, name, etag, model_name, model_version FROM blobs WHERE ({clause})"  # noqa: S608
            for row in self._query(sql + " AND model_name IS NOT NULL", params):
                found[(row[0], row[1], row[2])] = (row[3], row[4])
        return found

    def known_models(self) -> list[tuple[str, str | None]]:
        """Every (model name, version) the ledger has seen, sorted: choices for a filter."""
        rows = self._query(
            "SELECT DISTINCT model_name, model_version FROM blobs WHERE model_name IS NOT NULL "
            "ORDER BY model_name, model_version"
        )
        return [(row[0], row[1]) for row in rows]

    def claims(self, project_id: str) -> list[Claim]:
        """The project's open claims (blobs a run was pushing), with whether their run is still alive.

        A claim whose run is dead is what an interrupted run (a killed process) leaves behind; the
        next run takes it over.
        """
        now = _now()
        rows = self._query(
            "SELECT container, name, etag, claim, claimed_at FROM pushes WHERE project_id=? AND state=?",
            (project_id, PushState.PUSHING),
        )
        return [
            Claim((row[0], row[1], row[2]), row[3] or "", row[4], not self._claim_is_dead(row[3], row[4], now))
            for row in rows
        ]

    def pushed_image_for_content(self, project_id: str, sha256: str) -> str | None:
        rows = self._query(
            "SELECT image_id FROM pushes WHERE project_id=? AND sha256=? AND state=? AND image_id IS NOT NULL LIMIT 1",
            (project_id, sha256, PushState.PUSHED),
        )
        return rows[0]["image_id"] if rows else None

    def pushed_image_count(self, project_id: str) -> int:
        """How many distinct project images the ledger knows of (a new or lost ledger knows fewer than the project)."""
        rows = self._query(
            "SELECT COUNT(DISTINCT image_id) FROM pushes WHERE project_id=? AND state=? "
            "AND image_id IS NOT NULL AND image_id != ''",
            (project_id, PushState.PUSHED),
        )
        return int(rows[0][0])

    def last_event(self, action: str, project_id: str) -> Event | None:
        """The newest event of that action for the project (e.g. the last reconciliation with it)."""
        found = self.events(action=action, project_id=project_id, limit=1)
        return found[0] if found else None

    def summary(self, project_id: str | None = None) -> dict[str, int]:
        """Counts per review state and, for a project, per push state."""
        counts = {row[0]: row[1] for row in self._query("SELECT review, COUNT(*) FROM blobs GROUP BY review")}
        counts.pop(Review.NEW, None)
        sql, params = "SELECT state, COUNT(*) FROM pushes GROUP BY state", ()
        if project_id:
            sql, params = "SELECT state, COUNT(*) FROM pushes WHERE project_id=? GROUP BY state", (project_id,)
        for state, count in self._query(sql, params):
            counts[state] = counts.get(state, 0) + count
        return counts

    def pushed(self, project_id: str) -> list[dict[str, Any]]:
        """Every pushed blob of a project with its image id (to reconcile with the project)."""
        rows = self._query(
            "SELECT container, name, etag, image_id, sha256, tags FROM pushes WHERE project_id=? AND state=?",
            (project_id, PushState.PUSHED),
        )
        return [dict(row) for row in rows]

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
        sql, params = "SELECT * FROM events WHERE 1=1", []
        for column, value in (("actor", actor), ("action", action), ("blob", blob), ("project_id", project_id)):
            if value:
                sql += f" AND {column}=?"
                params.append(value)
        if since:
            sql += " AND at>=?"
            params.append(since)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            Event(
                row["id"],
                row["at"],
                row["actor"],
                row["action"],
                row["container"],
                row["blob"],
                row["etag"],
                row["project_id"],
                row["outcome"],
                row["image_id"],
                json.loads(row["details"] or "{}"),
            )
            for row in self._query(sql, params)
        ]

    # -- review decisions ---------------------------------------------------------------------------

    def _set_review(self, db, key: BlobKey, review: str, reason: str | None, actor: str, **extra: Any) -> None:
        db.execute(
            "INSERT INTO blobs (container, name, etag, review, reason, model_name, model_version, updated_at, "
            "updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (container, name, etag) DO UPDATE SET "
            "review=excluded.review, reason=excluded.reason, updated_at=excluded.updated_at, "
            "updated_by=excluded.updated_by, model_name=COALESCE(excluded.model_name, blobs.model_name), "
            "model_version=COALESCE(excluded.model_version, blobs.model_version)",
            (*key, review, reason, extra.get("model_name"), extra.get("model_version"), _now(), actor),
        )

    def reject(self, keys: Iterable[BlobKey], *, actor: str, reason: str = "rejected by reviewer") -> int:
        return self._review_many(keys, Review.REJECTED, reason, actor, "reject")

    def restore(self, keys: Iterable[BlobKey], *, actor: str) -> int:
        return self._review_many(keys, Review.NEW, None, actor, "restore")

    def mark_near_duplicates(self, keys: Iterable[BlobKey], *, of: BlobKey, actor: str) -> int:
        return self._review_many(keys, Review.NEAR_DUPLICATE, f"near-duplicate of {of[1]}", actor, "near-duplicate")

    def _review_many(self, keys: Iterable[BlobKey], review: str, reason: str | None, actor: str, action: str) -> int:
        keys = list(keys)
        with self._transaction() as db:
            for key in keys:
                self._set_review(db, key, review, reason, actor)
                self._event(db, actor, action, key, outcome=review, details={"reason": reason} if reason else None)
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
        with self._transaction() as db:
            db.execute(
                "INSERT INTO blobs (container, name, etag, sha256, phash, model_name, model_version, updated_at, "
                "updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (container, name, etag) DO UPDATE SET "
                "sha256=excluded.sha256, phash=COALESCE(excluded.phash, blobs.phash), "
                "review=CASE WHEN blobs.review=? THEN ? ELSE blobs.review END",
                (*key, sha256, phash, *(model or (None, None)), _now(), actor, Review.UNDECRYPTABLE, Review.NEW),
            )

    def note_models(self, blobs: Iterable[tuple[BlobKey, str | None, str | None]], *, actor: str = "system") -> None:
        """Remember which model (name, version) each blob came from; changes no review state, logs no event."""
        items = [(key, name, version) for key, name, version in blobs if name or version]
        if not items:
            return
        with self._transaction() as db:
            for key, name, version in items:
                self._note_model(db, key, name, version, actor)

    @staticmethod
    def _note_model(db, key: BlobKey, name: str | None, version: str | None, actor: str) -> None:
        db.execute(
            "INSERT INTO blobs (container, name, etag, model_name, model_version, updated_at, updated_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (container, name, etag) DO UPDATE SET "
            "model_name=COALESCE(blobs.model_name, excluded.model_name), "
            "model_version=COALESCE(blobs.model_version, excluded.model_version)",
            (*key, name, version, _now(), actor),
        )

    def note_undecryptable(self, key: BlobKey, *, reason: str, actor: str) -> None:
        with self._transaction() as db:
            current = db.execute(
                "SELECT review, reason FROM blobs WHERE container=? AND name=? AND etag=?", key
            ).fetchone()
            if current and current["review"] == Review.REJECTED:
                return  # a reviewer's decision outranks what a run found
            if current and current["review"] == Review.UNDECRYPTABLE and current["reason"] == reason:
                return
            self._set_review(db, key, Review.UNDECRYPTABLE, reason, actor)
            self._event(db, actor, Review.UNDECRYPTABLE, key, outcome=reason)

    # -- pushes ------------------------------------------------------------------------------------

    def claim(
        self, keys: Sequence[BlobKey], project_id: str, run_id: str, *, actor: str, retry_failed: bool = True
    ) -> tuple[list[BlobKey], dict[BlobKey, BlobState]]:
        """Claim keys for pushing. Returns (claimed, skipped key -> the state that kept it out).

        A key is skipped when `state.py` refuses to push a blob in its state (already pushed, rejected, a
        near-duplicate, held by a live run), or when it failed before and `retry_failed` is off
        (`state.left_out_because` says each in words). A claim left by a dead run is taken over: its item may or
        may not have reached Custom Vision, which the upload then settles (Custom Vision answers OKDuplicate for
        content it has).
        """
        claimed: list[BlobKey] = []
        skipped: dict[BlobKey, BlobState] = {}
        now = _now()
        with self._transaction() as db:
            for key in keys:
                review = db.execute("SELECT review FROM blobs WHERE container=? AND name=? AND etag=?", key).fetchone()
                row = db.execute(
                    "SELECT state, claim, claimed_at FROM pushes WHERE container=? AND name=? AND etag=? "
                    "AND project_id=?",
                    (*key, project_id),
                ).fetchone()
                kept_out = self.kept_out(
                    review["review"] if review else Review.NEW,
                    row["state"] if row else None,
                    row["claim"] if row else None,
                    row["claimed_at"] if row else None,
                    run_id,
                    retry_failed=retry_failed,
                    now=now,
                )
                if kept_out is not None:
                    skipped[key] = kept_out
                    continue
                db.execute(
                    "INSERT INTO pushes (container, name, etag, project_id, state, claim, claimed_at, attempts, "
                    "updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
                    "ON CONFLICT (container, name, etag, project_id) DO UPDATE SET state=excluded.state, "
                    "claim=excluded.claim, claimed_at=excluded.claimed_at, attempts=pushes.attempts+1, "
                    "updated_at=excluded.updated_at, updated_by=excluded.updated_by",
                    (*key, project_id, PushState.PUSHING, run_id, now, now, actor),
                )
                claimed.append(key)
        return claimed, skipped

    def heartbeat(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> list[BlobKey]:
        """Keep this run's claims fresh; returns the keys whose claim this run no longer holds."""
        now = _now()
        lost: list[BlobKey] = []
        with self._transaction() as db:
            for key in keys:
                renewed = db.execute(
                    "UPDATE pushes SET claimed_at=? WHERE container=? AND name=? AND etag=? AND project_id=? "
                    "AND claim=? AND state=?",
                    (now, *key, project_id, run_id, PushState.PUSHING),
                ).rowcount
                if not renewed:
                    lost.append(key)
        return lost

    def release(self, keys: Sequence[BlobKey], project_id: str, run_id: str) -> None:
        """Give back this run's claims on items it did not push (cancelled, undecryptable): no trace is left."""
        with self._transaction() as db:
            for key in keys:
                db.execute(
                    "DELETE FROM pushes WHERE container=? AND name=? AND etag=? AND project_id=? AND claim=? "
                    "AND state=? AND image_id IS NULL",
                    (*key, project_id, run_id, PushState.PUSHING),
                )

    def _claim_lost(self, db, key: BlobKey, project_id: str, claim: str, actor: str, would: str, details) -> None:
        """Audit a settlement that was not written: the run no longer held the item's claim."""
        row = db.execute(
            "SELECT state, claim FROM pushes WHERE container=? AND name=? AND etag=? AND project_id=?",
            (*key, project_id),
        ).fetchone()
        self._event(
            db,
            actor,
            "claim-lost",
            key,
            project_id=project_id,
            outcome=would,
            details={
                "run": claim,
                "now": dict(row) if row else None,
                **(details or {}),
            },
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
        with self._transaction() as db:
            if model and any(model):
                self._note_model(db, key, *model, actor)
            if claim is not None:
                written = db.execute(
                    "UPDATE pushes SET state=?, image_id=?, sha256=?, tags=?, reason=NULL, claim=NULL, "
                    "claimed_at=NULL, updated_at=?, updated_by=? WHERE container=? AND name=? AND etag=? "
                    "AND project_id=? AND claim=? AND state=?",
                    (
                        PushState.PUSHED,
                        image_id,
                        sha256,
                        json.dumps(list(tags)),
                        _now(),
                        actor,
                        *key,
                        project_id,
                        claim,
                        PushState.PUSHING,
                    ),
                ).rowcount
                if not written:
                    self._claim_lost(db, key, project_id, claim, actor, outcome, {"image_id": image_id})
                    return False
            else:
                db.execute(
                    "INSERT INTO pushes (container, name, etag, project_id, state, image_id, sha256, tags, reason, "
                    "claim, claimed_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, "
                    "NULL, ?, ?) ON CONFLICT (container, name, etag, project_id) DO UPDATE SET state=excluded.state, "
                    "image_id=excluded.image_id, sha256=excluded.sha256, tags=excluded.tags, reason=NULL, "
                    "claim=NULL, claimed_at=NULL, updated_at=excluded.updated_at, updated_by=excluded.updated_by",
                    (*key, project_id, PushState.PUSHED, image_id, sha256, json.dumps(list(tags)), _now(), actor),
                )
            self._event(
                db, actor, "push", key, project_id=project_id, outcome=outcome, image_id=image_id, details=details
            )
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
        with self._transaction() as db:
            if claim is not None:
                written = db.execute(
                    "UPDATE pushes SET state=?, reason=?, sha256=COALESCE(?, sha256), claim=NULL, "
                    "claimed_at=NULL, updated_at=?, updated_by=? WHERE container=? AND name=? AND etag=? "
                    "AND project_id=? AND claim=? AND state=?",
                    (PushState.FAILED, reason, sha256, _now(), actor, *key, project_id, claim, PushState.PUSHING),
                ).rowcount
                if not written:
                    self._claim_lost(db, key, project_id, claim, actor, outcome, event_details)
                    return False
            else:
                db.execute(
                    "INSERT INTO pushes (container, name, etag, project_id, state, sha256, reason, updated_at, "
                    "updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (container, name, etag, "
                    "project_id) DO UPDATE SET state=excluded.state, reason=excluded.reason, "
                    "sha256=COALESCE(excluded.sha256, pushes.sha256), claim=NULL, claimed_at=NULL, "
                    "updated_at=excluded.updated_at, updated_by=excluded.updated_by WHERE pushes.state != ?",
                    (*key, project_id, PushState.FAILED, sha256, reason, _now(), actor, PushState.PUSHED),
                )
            self._event(db, actor, "push", key, project_id=project_id, outcome=outcome, details=event_details)
        return True

    def forget_push(self, key: BlobKey, project_id: str, *, actor: str, reason: str) -> None:
        """Drop a push record whose image is gone from the project (deleted in the portal), so it can go again."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM pushes WHERE container=? AND name=? AND etag=? AND project_id=?", (*key, project_id)
            )
            self._event(
                db, actor, "forget-push", key, project_id=project_id, outcome="forgotten", details={"reason": reason}
            )

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
        sql = (
            "UPDATE pushes SET tags=?, updated_at=?, updated_by=? WHERE container=? AND name=? AND etag=? "
            "AND project_id=?"
        )
        params: list[Any] = [json.dumps(list(tags)), _now(), actor, *key, project_id]
        if claim is not None:
            sql += " AND claim=? AND state=?"
            params += [claim, PushState.PUSHING]
        with self._transaction() as db:
            written = db.execute(sql, params).rowcount
            if claim is not None and not written:
                self._claim_lost(db, key, project_id, claim, actor, "retagged", {"tags": list(tags)})
                return False
            self._event(
                db,
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
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE pushes SET regions=?, updated_at=?, updated_by=? WHERE container=? AND name=? AND etag=? "
                    "AND project_id=? AND state=?",
                    (regions_to_json(regions), _now(), actor, *key, project_id, PushState.PUSHED),
                ).rowcount
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
        with self._transaction() as db:
            self._event(
                db, actor, action, key, project_id=project_id, outcome=outcome, image_id=image_id, details=details
            )

    @staticmethod
    def _event(
        db,
        actor: str,
        action: str,
        key: BlobKey | None,
        *,
        project_id: str | None = None,
        outcome: str | None = None,
        image_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        container, name, etag = key if key else (None, None, None)
        db.execute(
            "INSERT INTO events (at, actor, action, container, blob, etag, project_id, outcome, image_id, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _iso(),
                actor,
                action,
                container,
                name,
                etag,
                project_id,
                outcome,
                image_id,
                json.dumps(details) if details else None,
            ),
        )
