"""Near-duplicate bursts among a page of frames: perceptual hashes, grouping, and marking the rest. No UI.

A device that sees something linger uploads a burst of nearly identical frames. Frames of one model
version captured within `window_seconds` of one another whose perceptual hashes are at most
`max_distance` bits apart form a burst; its least confident frame stands for it (what the model was
least sure of), as in `frames.mark_bursts`. Hashes need the plaintext: `page_hashes` decrypts in memory
only what the ledger has no hash for, and makes the thumbnail from the same plaintext, so a gallery that
shows the page afterwards decrypts nothing more. Only the hashes are kept (in the ledger).

    hashes = page_hashes(curator, page.blobs, cache=preview_cache)
    bursts = find_bursts(page.blobs, hashes, max_distance=curator.settings.near_duplicate_distance)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .blobs import RetrainingBlob, is_blob_fault, map_bounded
from .errors import CuratorError
from .images import THUMBNAIL_SIZE, PreviewCache, near_duplicate_groups, perceptual_hash, sha256_hex, thumbnail
from .ledger import BlobKey, Review

if TYPE_CHECKING:
    from .curator import Curator

WINDOW_SECONDS = 120.0  # frames further apart in time than this are never one burst


@dataclass(frozen=True)
class Burst:
    """Near-identical frames: the one that stands for them and the others (in capture order)."""

    representative: RetrainingBlob
    others: tuple[RetrainingBlob, ...]

    @property
    def members(self) -> tuple[RetrainingBlob, ...]:
        return (self.representative, *self.others)

    def __len__(self) -> int:
        return 1 + len(self.others)


def page_hashes(
    curator: Curator,
    blobs: Iterable[RetrainingBlob],
    *,
    cache: PreviewCache | None = None,
    size: tuple[int, int] = THUMBNAIL_SIZE,
    max_concurrency: int = 8,
) -> dict[BlobKey, str]:
    """The perceptual hash of each blob that has one, by blob key.

    From the ledger when it was hashed before; otherwise the blob is decrypted once, in memory, for its
    sha256 and perceptual hash (noted in the ledger) and its thumbnail (put in `cache`, under the key
    `Curator.previews` reads). A blob that cannot be decrypted is noted and cached as `previews` would;
    a service error is left for `previews` to report.
    """
    blobs = list(dict.fromkeys(blobs))
    records = curator.ledger.records([b.key for b in blobs])
    hashes = {key: record.phash for key, record in records.items() if record.phash}
    todo = [
        b
        for b in blobs
        if b.key not in hashes and b.has_model and getattr(records.get(b.key), "review", None) != Review.UNDECRYPTABLE
    ]

    def digest(blob: RetrainingBlob) -> tuple[str, str, bytes]:
        plaintext = curator.decrypt(blob)
        what = f"Blob {blob.name!r}"
        try:
            cached = cache.get((*blob.key, size)) if cache is not None else None
            small = cached if isinstance(cached, bytes) else thumbnail(plaintext, size=size, what=what)
            return sha256_hex(plaintext), perceptual_hash(plaintext, what=what), small
        except CuratorError:
            raise
        except Exception as exc:  # a decoder surprise: one broken tile, not a broken page
            raise CuratorError(f"Could not hash blob {blob.name!r} ({exc.__class__.__name__}).") from exc

    for blob, result in map_bounded(digest, todo, max_concurrency=max_concurrency):
        if isinstance(result, CuratorError):
            if is_blob_fault(result):  # the blob's own fault (a stale listing is not: its new version is another key)
                if cache is not None:
                    cache.put((*blob.key, size), result)
                reason = f"{result.reason}: {result.message}"
                curator.ledger.note_undecryptable(blob.key, reason=reason, actor=curator.actor)
            continue
        sha256, phash, small = result
        if cache is not None:
            cache.put((*blob.key, size), small)
        curator.ledger.note_content(
            blob.key, sha256=sha256, phash=phash, model=(blob.model_name, blob.model_version), actor=curator.actor
        )
        hashes[blob.key] = phash
    return hashes


def find_bursts(
    blobs: Sequence[RetrainingBlob],
    hashes: dict[BlobKey, str],
    *,
    max_distance: int,
    window_seconds: float = WINDOW_SECONDS,
) -> list[Burst]:
    """The bursts (two frames or more) among `blobs`, in the order of each burst's first frame in `blobs`."""
    items = [
        (blob, hashes[blob.key], f"{blob.model_name} {blob.model_version}", blob.captured_at)
        for blob in blobs
        if blob.key in hashes and blob.has_model
    ]
    position = {blob.key: index for index, blob in enumerate(blobs)}
    bursts = []
    for group in near_duplicate_groups(items, max_distance=max_distance, window_seconds=window_seconds):
        if len(group) < 2:
            continue
        representative = min(group, key=_least_confident_first)
        others = sorted((b for b in group if b is not representative), key=_captured)
        bursts.append(Burst(representative, tuple(others)))
    return sorted(bursts, key=lambda burst: min(position[b.key] for b in burst.members))


def _least_confident_first(blob: RetrainingBlob) -> tuple[float, datetime]:
    return (float("inf") if blob.confidence is None else blob.confidence, _captured(blob))


def _captured(blob: RetrainingBlob) -> datetime:
    return blob.captured_at.replace(tzinfo=None) if blob.captured_at else datetime.max


def collapse(blobs: Sequence[RetrainingBlob], bursts: Iterable[Burst]) -> list[RetrainingBlob | Burst]:
    """`blobs` with each burst in one place (where its first frame was): what a gallery shows."""
    burst_of = {member.key: burst for burst in bursts for member in burst.members}
    shown: list[RetrainingBlob | Burst] = []
    placed: set[int] = set()
    for blob in blobs:
        burst = burst_of.get(blob.key)
        if burst is None:
            shown.append(blob)
        elif id(burst) not in placed:
            placed.add(id(burst))
            shown.append(burst)
    return shown


__all__ = ["WINDOW_SECONDS", "Burst", "collapse", "find_bursts", "page_hashes"]
