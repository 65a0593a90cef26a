"""The burst index: near-duplicate frames found by their perceptual hashes, and marking the rest. No UI.

A device that sees something linger uploads a burst of nearly identical frames. Frames of one model
version captured within `window_seconds` of one another whose perceptual hashes are at most
`max_distance` bits apart form a burst; its least confident frame stands for it (what the model was
least sure of). The app groups a page with `find_bursts`; the notebooks' table (`frames.mark_bursts`)
is a view of the same bursts. Hashes need the plaintext: `hash_blobs` decrypts in memory only what the
ledger has no hash for, and can make the thumbnail from the same plaintext, so a gallery that shows the
page afterwards decrypts nothing more. Only the hashes are kept (in the ledger).

    hashes = page_hashes(curator, page.blobs, cache=preview_cache)
    bursts = find_bursts(page.blobs, hashes, max_distance=curator.settings.near_duplicate_distance)
    mark_near_duplicates(curator, [(other, burst.representative) for burst in bursts for other in burst.others])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .blobs import RetrainingBlob, is_blob_fault, map_bounded
from .errors import BlobError, CuratorError
from .images import (
    THUMBNAIL_SIZE,
    PreviewCache,
    inspect_image,
    near_duplicate_groups,
    perceptual_hash,
    sha256_hex,
    thumbnail,
)
from .ledger import BlobKey
from .state import Action, Review, refusal

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


@dataclass
class ContentHashes:
    """What hashing blobs found: each hashed blob's sha256 and perceptual hash, why others could not be
    hashed, and the first service error (storage, MM) met on the way."""

    sha256: dict[BlobKey, str] = field(default_factory=dict)
    phash: dict[BlobKey, str] = field(default_factory=dict)
    problems: dict[BlobKey, str] = field(default_factory=dict)
    failure: CuratorError | None = None


def hash_blobs(
    curator: Curator,
    blobs: Iterable[RetrainingBlob],
    *,
    retry_undecryptable: bool = False,
    cache: PreviewCache | None = None,
    size: tuple[int, int] = THUMBNAIL_SIZE,
    actor: str | None = None,
    max_concurrency: int = 8,
) -> ContentHashes:
    """The hashes of `blobs`: from the ledger when they were hashed before, otherwise from the plaintext.

    Each blob still to hash is decrypted once, in memory; its hashes go to the ledger, and with a `cache` its
    thumbnail too (under the key `Curator.previews` reads). A blob the ledger knows cannot be decrypted (or
    without model metadata) is left alone unless `retry_undecryptable`. One that cannot be decrypted now is
    noted in the ledger and cached as `previews` would; one that changed or went since it was listed is not
    (its new version is another key); both get their reason in `problems`.
    """
    blobs = list(dict.fromkeys(blobs))
    records = curator.ledger.records([b.key for b in blobs])
    found = ContentHashes()
    todo: list[RetrainingBlob] = []
    for blob in blobs:
        record = records.get(blob.key)
        undecryptable = not blob.has_model or (record is not None and record.review == Review.UNDECRYPTABLE)
        if record is not None and record.sha256 and record.phash and not undecryptable:
            found.sha256[blob.key], found.phash[blob.key] = record.sha256, record.phash
        elif retry_undecryptable or not undecryptable:
            todo.append(blob)

    def digest(blob: RetrainingBlob) -> tuple[str, str, bytes | None]:
        plaintext = curator.decrypt(blob)
        what = f"Blob {blob.name!r}"
        try:
            if cache is None:
                inspect_image(plaintext, what=what)  # a reason that names the blob, if it is no image
                small = None
            else:
                cached = cache.get((*blob.key, size))
                small = cached if isinstance(cached, bytes) else thumbnail(plaintext, size=size, what=what)
            return sha256_hex(plaintext), perceptual_hash(plaintext, what=what), small
        except CuratorError:
            raise
        except Exception as exc:  # a decoder surprise: one broken frame, not a broken run
            raise CuratorError(f"Could not hash blob {blob.name!r} ({exc.__class__.__name__}).") from exc

    who = actor or curator.actor
    for blob, result in map_bounded(digest, todo, max_concurrency=max_concurrency):
        if is_blob_fault(result):
            found.problems[blob.key] = f"{result.reason}: {result.message}"
            if cache is not None:
                cache.put((*blob.key, size), result)
            curator.ledger.note_undecryptable(blob.key, reason=found.problems[blob.key], actor=who)
        elif isinstance(result, BlobError):  # stale or gone: not the blob's fault, nothing is noted
            found.problems[blob.key] = f"{result.reason}: {result.message} Refresh the listing."
        elif isinstance(result, CuratorError):
            found.failure = found.failure or result
        else:
            sha256, phash, small = result
            if cache is not None and small is not None:
                cache.put((*blob.key, size), small)
            curator.ledger.note_content(
                blob.key, sha256=sha256, phash=phash, model=(blob.model_name, blob.model_version), actor=who
            )
            found.sha256[blob.key], found.phash[blob.key] = sha256, phash
    return found


def page_hashes(
    curator: Curator,
    blobs: Iterable[RetrainingBlob],
    *,
    cache: PreviewCache | None = None,
    size: tuple[int, int] = THUMBNAIL_SIZE,
    max_concurrency: int = 8,
) -> dict[BlobKey, str]:
    """The perceptual hash of each blob of a gallery's page that has one, by blob key (see `hash_blobs`).

    A service error is left for `Curator.previews` to report on its tile.
    """
    return hash_blobs(curator, blobs, cache=cache, size=size, max_concurrency=max_concurrency).phash


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


@dataclass(frozen=True)
class NearDuplicateMark:
    """One frame of a burst and the frame that stands for it: marked, or why not (`refused`)."""

    blob: RetrainingBlob
    representative: RetrainingBlob
    refused: str | None = None

    @property
    def marked(self) -> bool:
        return self.refused is None


def mark_near_duplicates(
    curator: Curator,
    pairs: Iterable[tuple[RetrainingBlob, RetrainingBlob]],
    *,
    actor: str | None = None,
) -> list[NearDuplicateMark]:
    """Mark each (frame, the frame that stands for its burst) pair's frame a near-duplicate in the ledger.

    The one rule for these marks is `state.refusal(Action.MARK_NEAR_DUPLICATE, ...)`, on each frame's state as
    the ledger has it now (not as a table or a page showed it): a frame pushed, rejected or decided otherwise
    since keeps its state and comes back with the reason. Push-all-untagged leaves the marked frames out;
    `Curator.restore` undoes a mark. Marks come back in the order of `pairs`.
    """
    pairs = list(dict.fromkeys(pairs))
    frames = [blob for blob, _ in pairs]
    records = curator.ledger.records([b.key for b in frames], curator.settings.custom_vision_project_id or None)
    marks = [
        NearDuplicateMark(
            blob, representative, refusal(Action.MARK_NEAR_DUPLICATE, curator.state_of(blob, records.get(blob.key)))
        )
        for blob, representative in pairs
    ]
    by_representative: dict[BlobKey, list[BlobKey]] = {}
    for mark in marks:
        if mark.marked:
            by_representative.setdefault(mark.representative.key, []).append(mark.blob.key)
    for representative, keys in by_representative.items():
        curator.ledger.mark_near_duplicates(keys, of=representative, actor=actor or curator.actor)
    return marks


__all__ = [
    "WINDOW_SECONDS",
    "Burst",
    "ContentHashes",
    "NearDuplicateMark",
    "collapse",
    "find_bursts",
    "hash_blobs",
    "mark_near_duplicates",
    "page_hashes",
]
