"""The suggestions cache: what an iteration predicted for a blob version, kept as a table of the ledger's SQLite file.

A frame is predicted once per iteration: the answer is kept by (container, name, etag, iteration id) with the
time it was made, and read back until it is `KEEP_SECONDS` old (the service keeps its suggestions 30 days).
Only tags, probabilities and boxes are stored, never a byte of the frame.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .customvision import Prediction, Region
from .ledger import BlobKey

KEEP_SECONDS = 30 * 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suggestions (
    container TEXT NOT NULL, name TEXT NOT NULL, etag TEXT NOT NULL, iteration_id TEXT NOT NULL,
    made_at REAL NOT NULL,
    predictions TEXT NOT NULL,  -- [[tag id, tag name, probability, [left, top, width, height] | null], ...]
    PRIMARY KEY (container, name, etag, iteration_id)
);
CREATE INDEX IF NOT EXISTS suggestions_made_at ON suggestions (made_at);
"""


def predictions_to_json(predictions: Sequence[Prediction]) -> str:
    return json.dumps(
        [
            [
                p.tag_id,
                p.tag_name,
                p.probability,
                None if p.box is None else [p.box.left, p.box.top, p.box.width, p.box.height],
            ]
            for p in predictions
        ]
    )


def predictions_from_json(text: str) -> tuple[Prediction, ...]:
    return tuple(
        Prediction(str(tag_id), str(tag_name), float(probability), None if box is None else Region(str(tag_id), *box))
        for tag_id, tag_name, probability, box in json.loads(text)
    )


class SuggestionCache:
    """Predictions by blob version and iteration, in the SQLite file at `path` (None: in memory, this process only).

    The ledger's file is shared in WAL mode by the app, the CLI and notebooks, so a suggestion made in one is
    read by the others and by the next process.
    """

    def __init__(
        self, path: str | Path | None, *, keep_seconds: float = KEEP_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path if self.path is not None else ":memory:",
            timeout=60,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        with self._lock:
            self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SuggestionCache({str(self.path) if self.path else ':memory:'!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, keys: Iterable[BlobKey], iteration_id: str) -> dict[BlobKey, tuple[float, tuple[Prediction, ...]]]:
        """(made at, predictions) of each key that has a suggestion of this iteration younger than `keep_seconds`."""
        oldest = self._clock() - self.keep_seconds
        found: dict[BlobKey, tuple[float, tuple[Prediction, ...]]] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                row = self._db.execute(
                    "SELECT made_at, predictions FROM suggestions "
                    "WHERE container=? AND name=? AND etag=? AND iteration_id=? AND made_at>=?",
                    (*key, iteration_id, oldest),
                ).fetchone()
                if row is not None:
                    found[key] = (float(row[0]), predictions_from_json(row[1]))
        return found

    def count(self, iteration_ids: Iterable[str]) -> int:
        """How many suggestions of these iterations are kept (made in the last `keep_seconds`): each cost one
        prediction transaction."""
        oldest = self._clock() - self.keep_seconds
        with self._lock:
            return sum(
                self._db.execute(
                    "SELECT COUNT(*) FROM suggestions WHERE iteration_id=? AND made_at>=?", (iteration_id, oldest)
                ).fetchone()[0]
                for iteration_id in dict.fromkeys(iteration_ids)
            )

    def put(self, key: BlobKey, iteration_id: str, predictions: Sequence[Prediction]) -> float:
        """Keep what `iteration_id` predicted for `key`, made now (the time is returned); expired rows go."""
        made_at = self._clock()
        with self._lock:
            self._db.execute("DELETE FROM suggestions WHERE made_at<?", (made_at - self.keep_seconds,))
            self._db.execute(
                "INSERT OR REPLACE INTO suggestions (container, name, etag, iteration_id, made_at, predictions) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*key, iteration_id, made_at, predictions_to_json(predictions)),
            )
        return made_at


__all__ = ["KEEP_SECONDS", "SuggestionCache", "predictions_from_json", "predictions_to_json"]
