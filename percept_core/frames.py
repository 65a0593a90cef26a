"""Retraining frames as a pandas DataFrame: metadata, review state, perceptual hashes, bursts and quality flags.

For notebooks (and any page that wants a table): a view of `bursts`, the app's burst index, and of `quality`,
with no grouping, marking or flagging rule of its own. Hashing decrypts in memory only and remembers the
hashes, never the plaintext, in the ledger: looking at the same blobs again decrypts nothing. Quality flags
are measured in memory and kept nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from .blobs import RetrainingBlob, is_blob_fault, map_bounded
from .bursts import WINDOW_SECONDS, find_bursts, hash_blobs, mark_near_duplicates
from .errors import BlobError, CuratorError
from .ledger import BlobKey
from .quality import DEFAULT_THRESHOLDS, QualityFlag, QualityReport, QualityThresholds, assess_quality
from .suggestions import Suggestion

if TYPE_CHECKING:
    from .curator import Curator

#: The columns of `to_dataframe`; `blob` holds the RetrainingBlob itself, to push a selection.
FRAME_COLUMNS = (
    "name",
    "model",
    "version",
    "confidence",
    "captured_at",
    "size",
    "state",
    "last_modified",
    "problems",
    "blob",
)


def to_dataframe(curator: Curator, blobs: Iterable[RetrainingBlob] | None = None) -> pd.DataFrame:
    """One row per blob (all of the container's when `blobs` is None), with its review state from the ledger.

    Nothing is downloaded: everything comes from the listing's metadata and the ledger. The `blob` column
    holds the records, so `curator.push(frames.query(...)["blob"])` pushes a selection.
    """
    items = list(curator.blobs() if blobs is None else blobs)
    records = curator.ledger.records([b.key for b in items], curator.settings.custom_vision_project_id)
    rows = [
        {
            "name": blob.name,
            "model": blob.model_name,
            "version": blob.model_version,
            "confidence": blob.confidence,
            "captured_at": blob.captured_at,
            "size": blob.size,
            "state": curator.state_of(blob, records.get(blob.key)),
            "last_modified": blob.last_modified,
            "problems": "; ".join(blob.problems) or None,
            "blob": blob,
        }
        for blob in items
    ]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
    frame["captured_at"] = pd.to_datetime(frame["captured_at"])
    frame["size"] = frame["size"].astype("int64")
    return frame


def hash_frames(
    curator: Curator, frames: pd.DataFrame, *, max_concurrency: int = 4, actor: str | None = None
) -> pd.DataFrame:
    """A copy of `frames` with `sha256` and `phash` of each plaintext and `problem` (why it cannot be decrypted).

    Only frames the ledger has not hashed yet are downloaded and decrypted, in memory (`bursts.hash_blobs`);
    their hashes go to the ledger. A blob that cannot be decrypted (tampered, truncated, not an image, no
    metadata, unknown version, too large) gets its reason in `problem` and the state "cannot decrypt"; one
    that changed since it was listed gets "changed since listed" in `problem` and keeps its state (list the
    frames again). A service error (storage, MM) is raised after the others are done: run it again.
    """
    out = frames.copy()
    blobs: list[RetrainingBlob] = list(out["blob"])
    found = hash_blobs(curator, blobs, retry_undecryptable=True, actor=actor, max_concurrency=max_concurrency)
    if found.failure is not None:
        raise found.failure
    out["sha256"] = [found.sha256.get(b.key) for b in blobs]
    out["phash"] = [found.phash.get(b.key) for b in blobs]
    out["problem"] = [found.problems.get(b.key) for b in blobs]
    records = curator.ledger.records([b.key for b in blobs], curator.settings.custom_vision_project_id)
    out["state"] = [curator.state_of(b, records.get(b.key)) for b in blobs]
    return out


def quality_frames(
    curator: Curator,
    frames: pd.DataFrame,
    *,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    max_concurrency: int = 4,
) -> pd.DataFrame:
    """A copy of `frames` with the quality flags of each frame (`quality.assess_quality` under `thresholds`).

    One boolean column per flag, named by its value (`blurred`, `too_dark`, ...), `quality_flags` (the flags'
    labels joined, "" when none) and `problem`, as in `hash_frames`. Each frame is downloaded and decrypted
    once, in memory, at most `max_concurrency` at a time; nothing is written anywhere, the ledger included.
    A frame that cannot be decrypted or is no image gets empty flag values and its reason in `problem`; a
    service error (storage, MM) is raised after the others are done: run it again.
    """
    out = frames.copy()
    blobs: list[RetrainingBlob] = list(out["blob"])

    def assess(blob: RetrainingBlob) -> QualityReport:
        return assess_quality(curator.decrypt(blob), thresholds=thresholds, what=f"Blob {blob.name!r}")

    reports: dict[BlobKey, QualityReport] = {}
    problems: dict[BlobKey, str] = {}
    failure: CuratorError | None = None
    for blob, result in map_bounded(assess, dict.fromkeys(blobs), max_concurrency=max_concurrency):
        if isinstance(result, QualityReport):
            reports[blob.key] = result
        elif is_blob_fault(result):
            problems[blob.key] = f"{result.reason}: {result.message}"
        elif isinstance(result, BlobError):  # stale or gone: the listing's fault, not the blob's
            problems[blob.key] = f"{result.reason}: {result.message} Refresh the listing."
        else:
            failure = failure or result
    if failure is not None:
        raise failure
    found = [reports.get(b.key) for b in blobs]
    for flag in QualityFlag:
        out[flag.value] = pd.array([None if r is None else flag in r.flags for r in found], dtype="boolean")
    out["quality_flags"] = [None if r is None else ", ".join(r.labels) for r in found]
    out["problem"] = [problems.get(b.key) for b in blobs]
    return out


def mark_bursts(frames: pd.DataFrame, *, max_distance: int, window_seconds: float = WINDOW_SECONDS) -> pd.DataFrame:
    """A copy of hashed `frames` (see `hash_frames`) with the bursts of near-duplicate frames marked.

    The bursts are `bursts.find_bursts`' (the app's) among the frames: two or more frames of one model
    version, captured within `window_seconds` of each other and at most `max_distance` apart in perceptual
    hash. `burst` numbers them in the order of their first frame in the table (<NA> outside one);
    `near_duplicate_of` names, for every other member, the burst's least confident frame, which stands for
    the burst (it is what the model was least sure of); it is None for that frame and outside bursts.
    """
    if "phash" not in frames.columns:
        raise ValueError("mark_bursts needs the phash column: run hash_frames first")
    out = frames.copy()
    blobs: list[RetrainingBlob] = list(out["blob"])
    hashes = {b.key: phash for b, phash in zip(blobs, out["phash"], strict=True) if isinstance(phash, str)}
    found = find_bursts(blobs, hashes, max_distance=max_distance, window_seconds=window_seconds)
    number_of = {member.key: number for number, burst in enumerate(found, 1) for member in burst.members}
    standing_for = {other.key: burst.representative.name for burst in found for other in burst.others}
    out["burst"] = pd.array([number_of.get(b.key) for b in blobs], dtype="Int64")
    out["near_duplicate_of"] = pd.Series([standing_for.get(b.key) for b in blobs], index=out.index, dtype="object")
    return out


def record_near_duplicates(curator: Curator, frames: pd.DataFrame, *, actor: str | None = None) -> int:
    """Record in the ledger that each frame with `near_duplicate_of` (see `mark_bursts`) is one, where the
    rule allows it on the frame's state now (`bursts.mark_near_duplicates`: a frame pushed or rejected since
    the table was made keeps its state); push-all-untagged then leaves them out. Returns how many."""
    blob_named = dict(zip(frames["name"], frames["blob"], strict=True))
    marked = frames[frames["near_duplicate_of"].notna()]
    pairs = [(blob, blob_named[name]) for blob, name in zip(marked["blob"], marked["near_duplicate_of"], strict=True)]
    return sum(mark.marked for mark in mark_near_duplicates(curator, pairs, actor=actor))


def suggestion_columns(curator: Curator, frames: pd.DataFrame, *, iteration_id: str | None = None) -> pd.DataFrame:
    """A copy of a frames table (`frames.to_dataframe`) with the model's suggestion for each frame.

    `suggested_tag` and `suggested_probability` are the most probable tag and its probability,
    `suggestion_margin` how far it leads the second (small: the model is unsure); all are empty for a frame
    without a suggestion (it could not be decrypted: see `hash_frames`' `problem`).
    """
    out = frames.copy()
    blobs: list[RetrainingBlob] = list(out["blob"])
    found = curator.suggestions(blobs, iteration_id=iteration_id)
    suggestions = [found.get(b.key) for b in blobs]
    tops = [s.top if isinstance(s, Suggestion) else None for s in suggestions]
    out["suggested_tag"] = [t.tag_name if t is not None else None for t in tops]
    out["suggested_probability"] = [t.probability if t is not None else float("nan") for t in tops]
    out["suggestion_margin"] = [s.margin if isinstance(s, Suggestion) else float("nan") for s in suggestions]
    return out


__all__ = [
    "FRAME_COLUMNS",
    "hash_frames",
    "mark_bursts",
    "quality_frames",
    "record_near_duplicates",
    "suggestion_columns",
    "to_dataframe",
]
