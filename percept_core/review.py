"""What a review gallery needs beyond the facade: pages with a history, review decisions with outcomes. No UI.

A notebook pages and decides the same way the app does:

    pager = Pager(ReviewQuery(BlobFilter(model_names=("people-counter",)), states=(BlobState.NEW,)))
    page = pager.page(curator)          # lists one page, once
    least_sure = Pager(ReviewQuery(order=ReviewOrder.UNCERTAINTY))  # lists every match once, orders, pages
    thumbs = curator.previews(page.blobs, cache=PreviewCache())
    outcomes = reject(curator, page.blobs[:3])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import reduce
from typing import TYPE_CHECKING

from .blobs import BlobFilter, BlobPage, RetrainingBlob
from .boxes import Box, save_boxes, to_regions
from .bursts import Burst, mark_near_duplicates
from .customvision import Region
from .errors import CuratorError
from .ledger import BlobKey
from .pipeline import Outcome, PushProgress, PushReport
from .queue import ReviewOrder, uncertainty_order
from .state import Action, BlobState, refusal, state_of_record

if TYPE_CHECKING:
    from .curator import Curator

# Review states a gallery can filter on, as `Curator.state_of` names them, in the order a gallery lists them.
STATES = tuple(
    s.label
    for s in (
        BlobState.NEW,
        BlobState.PUSHED,
        BlobState.FAILED,
        BlobState.REJECTED,
        BlobState.UNDECRYPTABLE,
        BlobState.NEAR_DUPLICATE,
        BlobState.PUSHING,
    )
)


@dataclass(frozen=True)
class ReviewQuery:
    """What a gallery shows: a filter on metadata and review states from the ledger (empty: every state), in an
    order (see `queue.ReviewOrder`)."""

    blob_filter: BlobFilter = field(default_factory=BlobFilter)
    states: tuple[str, ...] = ()
    order: ReviewOrder = ReviewOrder.LISTING


class Pager:
    """Pages of a query's blobs with the tokens that start each page seen, so going back lists nothing.

    In the container's order (`ReviewOrder.LISTING`) each page is listed on first use. Least sure first
    (`ReviewOrder.UNCERTAINTY`) lists every matching blob once, orders them with the suggestions already cached
    (ordering predicts nothing: see `queue.uncertainty_order`) and pages through that order. Only blob records
    (metadata) are kept, never image bytes. `refresh()` lists the current page again (after a decision changed
    what matches) and forgets the pages after it; least sure first lists and orders everything again.
    """

    def __init__(self, query: ReviewQuery | None = None, *, page_size: int = 48) -> None:
        self.query = query or ReviewQuery()
        self.page_size = page_size
        self.index = 0
        self._starts: list[str | None] = [None]
        self._pages: dict[int, BlobPage] = {}
        self._ordered: list[RetrainingBlob] | None = None  # every match, least sure first (UNCERTAINTY only)

    def __repr__(self) -> str:
        return f"Pager(page {self.index + 1}, {self.query!r})"

    def page(self, curator: Curator) -> BlobPage:
        """The current page, listed on first use only."""
        listed = self._pages.get(self.index)
        if listed is None:
            if self.query.order is ReviewOrder.UNCERTAINTY:
                listed = self._ordered_page(curator)
            else:
                listed = curator.blob_page(
                    self.query.blob_filter,
                    states=self.query.states,
                    page_size=self.page_size,
                    continuation=self._starts[self.index],
                )
            self._pages[self.index] = listed
        return listed

    def _ordered_page(self, curator: Curator) -> BlobPage:
        """The current page of every match, least sure first; its continuation is the offset of the next page."""
        if self._ordered is None:
            matching = list(curator.blobs(self.query.blob_filter, states=self.query.states))
            suggestions = curator.cached_suggestions(matching)
            self._ordered = uncertainty_order(matching, suggestions, page_size=self.page_size)
        start = self.index * self.page_size
        end = start + self.page_size
        return BlobPage(self._ordered[start:end], str(end) if end < len(self._ordered) else None)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def has_previous(self) -> bool:
        return self.index > 0

    @property
    def has_next(self) -> bool:
        listed = self._pages.get(self.index)
        return listed is not None and listed.continuation is not None

    def next(self) -> bool:
        """Move to the next page (after the current one was listed); False at the end."""
        if not self.has_next:
            return False
        if len(self._starts) == self.index + 1:
            self._starts.append(self._pages[self.index].continuation)
        self.index += 1
        return True

    def previous(self) -> bool:
        if not self.has_previous:
            return False
        self.index -= 1
        return True

    def refresh(self) -> None:
        del self._starts[self.index + 1 :]
        self._pages.clear()
        self._ordered = None


class Decision(StrEnum):
    """What a review decision (a reject, a restore, boxes, a near-duplicate mark) did to one blob."""

    REJECTED = BlobState.REJECTED.value  # now rejected (or it was already)
    RESTORED = "restored"  # new again
    SKIPPED = "skipped"  # the rules refused it, or its boxes could not be used: it stays to be dealt with
    UNCHANGED = "unchanged"  # a burst's frame that the rules keep as it is
    NEAR_DUPLICATE = "near-duplicate"  # marked a near-duplicate of its burst's representative
    BOXES_UPDATED = "boxes updated"  # an image in the project got the reviewer's boxes


@dataclass(frozen=True)
class ReviewOutcome:
    """What a reject or a restore did to one blob; `ok` is False for what stays to be dealt with."""

    name: str
    etag: str
    outcome: Decision
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is not Decision.SKIPPED


def reject(
    curator: Curator,
    blobs: Sequence[RetrainingBlob],
    *,
    reason: str = "rejected by reviewer",
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 100,
) -> list[ReviewOutcome]:
    """Reject blobs in the ledger (as the curator's actor); one the rules refuse (see state.py) is skipped with why."""
    records = curator.records(list(blobs))
    outcomes: list[ReviewOutcome] = []
    todo: list[RetrainingBlob] = []
    for blob in blobs:
        state = state_of_record(records.get(blob.key))
        if (why := refusal(Action.REJECT, state)) is not None:
            outcomes.append(ReviewOutcome(blob.name, blob.etag, Decision.SKIPPED, why))
        elif state is BlobState.REJECTED:
            outcomes.append(ReviewOutcome(blob.name, blob.etag, Decision.REJECTED, "was already rejected"))
        else:
            todo.append(blob)
    done = len(outcomes)
    _in_chunks(todo, chunk_size, len(blobs), done, progress, lambda chunk: curator.reject(chunk, reason=reason))
    outcomes += [ReviewOutcome(b.name, b.etag, Decision.REJECTED) for b in todo]
    return outcomes


def restore(
    curator: Curator,
    blobs: Sequence[RetrainingBlob],
    *,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 100,
) -> list[ReviewOutcome]:
    """Undo a rejection (or a near-duplicate or undecryptable mark): the blob is new again."""
    records = curator.records(list(blobs))
    outcomes: list[ReviewOutcome] = []
    todo: list[RetrainingBlob] = []
    for blob in blobs:
        if (why := refusal(Action.RESTORE, state_of_record(records.get(blob.key)))) is not None:
            outcomes.append(ReviewOutcome(blob.name, blob.etag, Decision.SKIPPED, why))
        else:
            todo.append(blob)
    _in_chunks(todo, chunk_size, len(blobs), len(outcomes), progress, curator.restore)
    outcomes += [ReviewOutcome(b.name, b.etag, Decision.RESTORED, f"was {records[b.key].review}") for b in todo]
    return outcomes


def _in_chunks(items, chunk_size, total, done, progress, action) -> None:
    if progress:
        progress(done, total)
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        action(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)


def push_selected(
    curator: Curator,
    blobs: Sequence[RetrainingBlob],
    *,
    tags: Sequence[str] = (),
    progress: Callable[[PushProgress], None] | None = None,
) -> PushReport:
    """Push the reviewer's selection with image-level tags (untagged when none), noting each blob's model."""
    curator.ledger.note_models(((b.key, b.model_name, b.model_version) for b in blobs), actor=curator.actor)
    return curator.push(list(blobs), tags=list(tags), progress=progress)


@dataclass
class ReviewPush:
    """What pushing a reviewer's selection did: the uploads, boxes changed on images already in the
    project, and the frames of bursts marked near-duplicates of the frame that went for them."""

    report: PushReport
    boxes: list[ReviewOutcome] = field(default_factory=list)
    near_duplicates: list[ReviewOutcome] = field(default_factory=list)

    @property
    def outcomes(self) -> list[object]:
        return [*self.report.outcomes, *self.boxes, *self.near_duplicates]

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        """(blob name, outcome, reason) of what did not go through: it stays to be dealt with."""
        return [(o.name, str(o.outcome), o.reason) for o in self.outcomes if not o.ok]  # type: ignore[attr-defined]


def push_reviewed(
    curator: Curator,
    blobs: Sequence[RetrainingBlob],
    *,
    tags: Sequence[str] = (),
    frame_tags: Mapping[str, Sequence[str]] | None = None,
    boxes: Mapping[str, Sequence[Box]] | None = None,
    bursts: Iterable[Burst] = (),
    every_frame: bool = False,
    progress: Callable[[PushProgress], None] | None = None,
) -> ReviewPush:
    """Push a reviewer's selection, as `push_selected` does, with boxes and bursts.

    `frame_tags` (blob name -> tags) gives a frame tags of its own (a suggestion the reviewer accepted) instead
    of `tags`; the frames go up in one push per set of tags, each frame with exactly its own.

    `boxes` (blob name -> boxes, for an object-detection project) go up with their image; an image
    already in the project gets exactly those boxes instead (no second upload). Of a burst whose
    representative is chosen, only the representative is pushed, and the burst's other chosen frames
    are marked near-duplicates of it once it is in the project (`restore` undoes that); with
    `every_frame`, every chosen frame is pushed.
    """
    chosen = list(dict.fromkeys(blobs))
    boxes = boxes or {}
    keys = {b.key for b in chosen}
    stands_for: dict[BlobKey, RetrainingBlob] = {}  # a burst's other frame -> its representative
    if not every_frame:
        for burst in bursts:
            if burst.representative.key in keys:
                stands_for.update((o.key, burst.representative) for o in burst.others if o.key in keys)
    records = curator.records(chosen)

    def in_project(blob: RetrainingBlob) -> bool:
        record = records.get(blob.key)
        return state_of_record(record) is BlobState.PUSHED and bool(record and record.image_id)

    result = ReviewPush(PushReport())
    to_push: list[RetrainingBlob] = []
    regions: dict[str, list[Region]] = {}
    reboxed: list[RetrainingBlob] = []
    for blob in chosen:
        if blob.key in stands_for:
            continue
        if blob.name in boxes and in_project(blob):
            reboxed.append(blob)
            continue
        if boxes.get(blob.name):
            try:
                regions[blob.name] = to_regions(curator, boxes[blob.name])
            except CuratorError as exc:
                result.boxes.append(ReviewOutcome(blob.name, blob.etag, Decision.SKIPPED, f"its boxes: {exc.message}"))
                continue
        to_push.append(blob)

    curator.ledger.note_models(((b.key, b.model_name, b.model_version) for b in chosen), actor=curator.actor)
    frame_tags = frame_tags or {}
    groups: dict[tuple[str, ...], list[RetrainingBlob]] = {}
    for blob in to_push:
        groups.setdefault(tuple(frame_tags.get(blob.name, tags)), []).append(blob)
    reports = [
        curator.push(group, tags=list(group_tags), regions=regions or None, progress=progress)
        for group_tags, group in (groups or {tuple(tags): []}).items()
    ]
    result.report = reduce(_merged, reports)
    for blob in reboxed:
        try:
            update = save_boxes(curator, blob, boxes[blob.name])
        except CuratorError as exc:
            result.boxes.append(
                ReviewOutcome(blob.name, blob.etag, Decision.SKIPPED, f"boxes not changed: {exc.message}")
            )
            continue
        change = f"{update.added} added, {update.removed} removed" if update.added or update.removed else "no change"
        result.boxes.append(ReviewOutcome(blob.name, blob.etag, Decision.BOXES_UPDATED, change))
    if stands_for:
        result.near_duplicates = _mark_near_duplicates(curator, [b for b in chosen if b.key in stands_for], stands_for)
    return result


def _merged(first: PushReport, then: PushReport) -> PushReport:
    """One report of two pushes made one after the other (a selection pushed in groups of tags)."""
    return PushReport(
        outcomes=[*first.outcomes, *then.outcomes],
        cancelled=first.cancelled or then.cancelled,
        seconds=first.seconds + then.seconds,
        run_id=first.run_id,
        calls=first.calls + then.calls,
        throttled=first.throttled + then.throttled,
        listing_calls=first.listing_calls + then.listing_calls,
        reconciled=first.reconciled + then.reconciled,
    )


def _mark_near_duplicates(
    curator: Curator, others: list[RetrainingBlob], stands_for: dict[BlobKey, RetrainingBlob]
) -> list[ReviewOutcome]:
    """Mark the other frames of each burst whose representative is in the project (`bursts.mark_near_duplicates`:
    the one rule for what a mark may overwrite)."""
    representatives = curator.records(list({b.key: b for b in stands_for.values()}.values()))
    outcomes: list[ReviewOutcome] = []
    pairs: list[tuple[RetrainingBlob, RetrainingBlob]] = []
    for other in others:
        representative = stands_for[other.key]
        if state_of_record(representatives.get(representative.key)) is BlobState.PUSHED:
            pairs.append((other, representative))
        else:
            reason = f"{representative.name}, which stands for its burst, is not in the project"
            outcomes.append(ReviewOutcome(other.name, other.etag, Decision.SKIPPED, reason))
    for mark in mark_near_duplicates(curator, pairs):
        if mark.refused is None:
            reason = f"near-duplicate of {mark.representative.name}"
            outcomes.append(ReviewOutcome(mark.blob.name, mark.blob.etag, Decision.NEAR_DUPLICATE, reason))
        else:
            outcomes.append(ReviewOutcome(mark.blob.name, mark.blob.etag, Decision.UNCHANGED, mark.refused))
    return outcomes


# Outcomes in the order a summary names them: what went through first, what did not last.
OUTCOME_ORDER = tuple(
    str(outcome)
    for outcome in (
        Outcome.PUSHED,
        Outcome.DUPLICATE,
        Decision.REJECTED,
        Decision.RESTORED,
        Outcome.SKIPPED,  # Decision.SKIPPED too: the same word
        Outcome.UNDECRYPTABLE,
        Outcome.REFUSED,
        Outcome.FAILED,
    )
)


def outcome_counts(outcomes: Sequence[object]) -> dict[str, int]:
    """Outcome -> count, in OUTCOME_ORDER (for ItemOutcome and ReviewOutcome alike)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        label = str(outcome.outcome)  # type: ignore[attr-defined]
        counts[label] = counts.get(label, 0) + 1
    rank = {label: index for index, label in enumerate(OUTCOME_ORDER)}
    return dict(sorted(counts.items(), key=lambda item: rank.get(item[0], len(rank))))


__all__ = [
    "OUTCOME_ORDER",
    "STATES",
    "Decision",
    "Pager",
    "ReviewOutcome",
    "ReviewPush",
    "ReviewQuery",
    "outcome_counts",
    "push_reviewed",
    "push_selected",
    "reject",
    "restore",
]
