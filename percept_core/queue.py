"""The review queue's orders: the container's own, or the frames the models are least sure of first. No I/O.

A frame's uncertainty runs from 0 (sure) to 1 (unsure) and is the mean of the doubts known about it:
the device's, 1 - confidence / 100 (the confidence the device model put in the blob's metadata), and the
current model's, 1 - margin of its cached suggestion (how far the most probable tag leads the second: a
model torn between two tags doubts as much as a device at 0%). A frame with only one of them is scored by
that one; a frame with neither (no confidence metadata, no suggestion) has no score and comes after every
scored frame, as nothing says the model doubts it.

Least sure first would let one device, one day or one burst of near-identical frames fill the first pages,
so the order is spread: frames are grouped by (model version, capture day) and taken round-robin, the
least sure of every group before the second of any, and a frame in the burst window of one already on its
page (same model version, captured within `bursts.WINDOW_SECONDS`: known from metadata, before anything
is decrypted) waits for a later page while other frames can fill this one. Ties go by blob name.

    ordered = uncertainty_order(blobs, curator.cached_suggestions(blobs), page_size=48)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from itertools import zip_longest

from .blobs import RetrainingBlob
from .bursts import WINDOW_SECONDS
from .ledger import BlobKey
from .suggestions import Suggestion


class ReviewOrder(StrEnum):
    """The order a review gallery pages in."""

    LISTING = "listing"  # the container's (or the blob index's) order: pages as they are listed
    UNCERTAINTY = "uncertainty"  # least sure first, spread (see the module's docstring)

    @property
    def label(self) -> str:
        """What a reviewer picks it by."""
        return "Container order" if self is ReviewOrder.LISTING else "Least sure first"


def uncertainty(blob: RetrainingBlob, suggestion: Suggestion | None = None) -> float | None:
    """How unsure the models are of the frame, 0 to 1 (the mean of the device's and the suggestion's doubt),
    or None when neither says."""
    doubts: list[float] = []
    if blob.confidence is not None:
        doubts.append(1.0 - min(max(blob.confidence, 0.0), 100.0) / 100.0)
    if suggestion is not None:
        doubts.append(1.0 - suggestion.margin)
    return sum(doubts) / len(doubts) if doubts else None


def uncertainty_order(
    blobs: Iterable[RetrainingBlob], suggestions: Mapping[BlobKey, Suggestion], *, page_size: int = 48
) -> list[RetrainingBlob]:
    """`blobs` least sure first, spread over model versions, days and bursts for pages of `page_size`."""
    scored: list[tuple[float, RetrainingBlob]] = []
    unscored: list[RetrainingBlob] = []
    for blob in dict.fromkeys(blobs):
        score = uncertainty(blob, suggestions.get(blob.key))
        if score is None:
            unscored.append(blob)
        else:
            scored.append((score, blob))
    scored.sort(key=lambda item: (-item[0], item[1].name))
    unscored.sort(key=lambda blob: blob.name)
    ranked = _round_robin([blob for _, blob in scored]) + _round_robin(unscored)
    return _keep_bursts_apart(ranked, page_size=page_size)


def _round_robin(ranked: Sequence[RetrainingBlob]) -> list[RetrainingBlob]:
    """The first of each (model version, capture day) group, then the second of each, ...; each round in the
    order of `ranked`."""
    groups: dict[tuple[str | None, str | None, date | None], list[int]] = {}
    for position, blob in enumerate(ranked):
        day = blob.captured_at.date() if blob.captured_at else None
        groups.setdefault((blob.model_name, blob.model_version, day), []).append(position)
    order: list[RetrainingBlob] = []
    for turn in zip_longest(*groups.values()):
        order += [ranked[position] for position in sorted(p for p in turn if p is not None)]
    return order


def _keep_bursts_apart(ranked: Sequence[RetrainingBlob], *, page_size: int) -> list[RetrainingBlob]:
    """`ranked` cut into pages where a frame in the burst window of one already on the page waits, first in line,
    for the next page; only when nothing else is left does a page take it anyway."""
    pending = deque(ranked)
    waiting: deque[RetrainingBlob] = deque()
    order: list[RetrainingBlob] = []
    while pending or waiting:
        page = _Page(page_size)
        deferred: deque[RetrainingBlob] = deque()
        for source in (waiting, pending):
            while source and not page.full:
                blob = source.popleft()
                if page.fits(blob):
                    page.add(blob)
                else:
                    deferred.append(blob)
        deferred.extend(waiting)  # what waited and was not reached keeps its place in line
        while deferred and not page.full:  # nothing else is left for this page
            page.add(deferred.popleft())
        waiting = deferred
        order += page.blobs
    return order


@dataclass
class _Page:
    """A page being filled, with the capture times of its frames by model version."""

    size: int
    blobs: list[RetrainingBlob] = field(default_factory=list)
    times: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return len(self.blobs) >= self.size

    def fits(self, blob: RetrainingBlob) -> bool:
        """Whether no frame of the page is in `blob`'s burst window (same model version, captured close in time)."""
        window = _window(blob)
        if window is None:
            return True
        version, when = window
        return all(abs((when - other).total_seconds()) > WINDOW_SECONDS for other in self.times.get(version, ()))

    def add(self, blob: RetrainingBlob) -> None:
        self.blobs.append(blob)
        if (window := _window(blob)) is not None:
            self.times.setdefault(window[0], []).append(window[1])


def _window(blob: RetrainingBlob) -> tuple[tuple[str, str], datetime] | None:
    """(model version, capture time) of a frame that can be in a burst: one with both."""
    if not (blob.model_name and blob.model_version and blob.captured_at):
        return None
    return (blob.model_name, blob.model_version), blob.captured_at.replace(tzinfo=None)


__all__ = ["ReviewOrder", "uncertainty", "uncertainty_order"]
