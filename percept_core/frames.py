"""Retraining frames as a pandas DataFrame: metadata, review state, perceptual hashes and bursts.

For notebooks (and any page that wants a table). Hashing decrypts in memory only and remembers the
hashes, never the plaintext, in the ledger: looking at the same blobs again decrypts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from .blobs import RetrainingBlob, map_bounded
from .errors import BlobError, CuratorError, StaleBlobError
from .images import inspect_image, near_duplicate_groups, perceptual_hash, sha256_hex
from .ledger import Review

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

    Only frames the ledger has not hashed yet are downloaded and decrypted, in memory; their hashes go to
    the ledger. A blob that cannot be decrypted (tampered, truncated, not an image, no metadata, unknown
    version, too large) gets its reason in `problem` and the state "cannot decrypt"; one that changed since
    it was listed gets "changed since listed" in `problem` and keeps its state (list the frames again). A
    service error (storage, MM) is raised after the others are done: run it again.
    """
    out = frames.copy()
    blobs: list[RetrainingBlob] = list(out["blob"])
    project_id = curator.settings.custom_vision_project_id
    who = actor or curator.actor
    known = curator.ledger.records([b.key for b in blobs], project_id)
    sha256: dict[str, str] = {}
    phash: dict[str, str] = {}
    problem: dict[str, str] = {}
    todo: list[RetrainingBlob] = []
    for blob in blobs:
        record = known.get(blob.key)
        if record is not None and record.sha256 and record.phash and record.review != Review.UNDECRYPTABLE:
            sha256[blob.name], phash[blob.name] = record.sha256, record.phash
        else:
            todo.append(blob)

    def digest(blob: RetrainingBlob) -> tuple[str, str]:
        plaintext = curator.decrypt(blob)
        inspect_image(plaintext, what=f"Blob {blob.name!r}")  # a reason that names the blob, if it is no image
        return sha256_hex(plaintext), perceptual_hash(plaintext)

    failure: CuratorError | None = None
    for blob, result in map_bounded(digest, todo, max_concurrency=max_concurrency):
        if isinstance(result, StaleBlobError):  # not the blob's fault: nothing is noted, list again
            problem[blob.name] = f"{result.reason}: {result.message} Refresh the listing."
        elif isinstance(result, BlobError):
            problem[blob.name] = f"{result.reason}: {result.message}"
            curator.ledger.note_undecryptable(blob.key, reason=problem[blob.name], actor=who)
        elif isinstance(result, CuratorError):
            failure = failure or result
        else:
            sha256[blob.name], phash[blob.name] = result
            curator.ledger.note_content(
                blob.key, sha256=result[0], phash=result[1], model=(blob.model_name, blob.model_version), actor=who
            )
    if failure is not None:
        raise failure
    out["sha256"] = out["name"].map(sha256)
    out["phash"] = out["name"].map(phash)
    out["problem"] = out["name"].map(problem)
    records = curator.ledger.records([b.key for b in blobs], project_id)
    out["state"] = [curator.state_of(b, records.get(b.key)) for b in blobs]
    return out


def mark_bursts(frames: pd.DataFrame, *, max_distance: int, window_seconds: float = 120.0) -> pd.DataFrame:
    """A copy of hashed `frames` (see `hash_frames`) with the bursts of near-duplicate frames marked.

    A burst is two or more frames of one model version, captured within `window_seconds` of each other
    and at most `max_distance` apart in perceptual hash. `burst` numbers the bursts (<NA> outside one);
    `near_duplicate_of` names, for every other member, the burst's least confident frame, which stands
    for the burst (it is what the model was least sure of); it is None for that frame and outside bursts.
    """
    if "phash" not in frames.columns:
        raise ValueError("mark_bursts needs the phash column: run hash_frames first")
    out = frames.copy()
    items: list[tuple[Any, str, str | None, Any]] = []
    for index, row in out.iterrows():
        if not isinstance(row["phash"], str):
            continue
        captured = row["captured_at"].to_pydatetime() if pd.notna(row["captured_at"]) else None
        items.append((index, row["phash"], f"{row['model']} {row['version']}", captured))
    burst = pd.Series(pd.NA, index=out.index, dtype="Int64")
    near_duplicate_of = pd.Series(None, index=out.index, dtype="object")
    number = 0
    for group in near_duplicate_groups(items, max_distance=max_distance, window_seconds=window_seconds):
        if len(group) < 2:
            continue
        number += 1
        keeper = min(group, key=lambda i: (_confidence_or_inf(out.at[i, "confidence"]), out.at[i, "captured_at"]))
        for index in group:
            burst[index] = number
            if index != keeper:
                near_duplicate_of[index] = out.at[keeper, "name"]
    out["burst"] = burst
    out["near_duplicate_of"] = near_duplicate_of
    return out


def _confidence_or_inf(value: Any) -> float:
    return float("inf") if pd.isna(value) else float(value)


def record_near_duplicates(curator: Curator, frames: pd.DataFrame, *, actor: str | None = None) -> int:
    """Record in the ledger that each frame with `near_duplicate_of` (see `mark_bursts`) is one, unless a
    decision was made about it already; push-all-untagged then leaves them out. Returns how many."""
    by_name = {row["name"]: row for _, row in frames.iterrows()}
    marked = 0
    for keeper_name, members in frames[frames["near_duplicate_of"].notna()].groupby("near_duplicate_of"):
        keys = [b.key for b, state in zip(members["blob"], members["state"], strict=True) if state == "new"]
        if keys:
            marked += curator.ledger.mark_near_duplicates(
                keys, of=by_name[keeper_name]["blob"].key, actor=actor or curator.actor
            )
    return marked


__all__ = ["FRAME_COLUMNS", "hash_frames", "mark_bursts", "record_near_duplicates", "to_dataframe"]
