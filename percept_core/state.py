"""The review states of a blob and which action may happen in which state: the one rulebook of the app, the
CLI, the notebooks and the Function. No I/O.

    refusal(Action.REJECT, BlobState.PUSHED)
    # 'already in the Custom Vision project: it cannot be rejected (delete it there first)'
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

from .errors import ActionRefused


class BlobState(StrEnum):
    """A blob's review state for one project, as `BlobRecord.state` names it (the ledger's and the UI's words)."""

    NEW = "new"
    PUSHING = "pushing"
    PUSHED = "pushed"
    FAILED = "failed"
    REJECTED = "rejected"
    NEAR_DUPLICATE = "near_duplicate"
    UNDECRYPTABLE = "undecryptable"

    @classmethod
    def of(cls, state: str | BlobState) -> BlobState:
        """The state a word names, including `Curator.state_of`'s label for an undecryptable blob."""
        if state == CANNOT_DECRYPT:
            return cls.UNDECRYPTABLE
        return cls(state)

    @property
    def label(self) -> str:
        """The word a gallery shows and filters on (`Curator.state_of`): "cannot decrypt" for undecryptable."""
        return CANNOT_DECRYPT if self is BlobState.UNDECRYPTABLE else self.value


#: What `Curator.state_of` and the gallery call an undecryptable blob (or one without model metadata).
CANNOT_DECRYPT = "cannot decrypt"


class Review(StrEnum):
    """The states the ledger keeps of a blob itself (its `blobs.review` column), in BlobState's words."""

    NEW = BlobState.NEW.value
    REJECTED = BlobState.REJECTED.value
    UNDECRYPTABLE = BlobState.UNDECRYPTABLE.value
    NEAR_DUPLICATE = BlobState.NEAR_DUPLICATE.value


class PushState(StrEnum):
    """The states the ledger keeps of a blob's push to one project (its `pushes.state` column), in BlobState's
    words."""

    PUSHING = BlobState.PUSHING.value
    PUSHED = BlobState.PUSHED.value
    FAILED = BlobState.FAILED.value


class Action(StrEnum):
    """What a reviewer, a run or the Function may do to a blob."""

    PUSH = "push"
    REJECT = "reject"
    RESTORE = "restore"
    RETAG = "retag"
    SET_REGIONS = "set_regions"
    MARK_NEAR_DUPLICATE = "mark_near_duplicate"


_IN_PROJECT = "already in the Custom Vision project"

# Action -> state -> why it is refused. A state an action does not name allows it.
_REFUSALS: dict[Action, dict[BlobState, str]] = {
    Action.PUSH: {
        BlobState.PUSHED: f"{_IN_PROJECT}: it is not pushed again",
        BlobState.PUSHING: "being pushed by another run",
        BlobState.REJECTED: "rejected: restore it first",
        BlobState.NEAR_DUPLICATE: "a near-duplicate of a frame in the project: restore it first",
    },
    # A rejection only keeps a blob out of the project; one already there has to be deleted in Custom Vision.
    # Pushing is allowed: a claim may be a dead run's, and rejecting it keeps the next run from pushing it.
    Action.REJECT: {
        BlobState.PUSHED: f"{_IN_PROJECT}: it cannot be rejected (delete it there first)",
    },
    Action.RESTORE: {
        BlobState.NEW: "not rejected: nothing to restore",
        BlobState.FAILED: "not rejected: nothing to restore",
        BlobState.PUSHING: "not rejected: nothing to restore",
        BlobState.PUSHED: f"{_IN_PROJECT}: nothing to restore",
    },
    Action.RETAG: {state: "not pushed yet: push it instead" for state in BlobState if state is not BlobState.PUSHED},
    # Boxes go up with a new upload or change a pushed image's boxes; the rest cannot be pushed now.
    Action.SET_REGIONS: {
        BlobState.PUSHING: "being pushed by another run",
        BlobState.REJECTED: "rejected: restore it first",
        BlobState.NEAR_DUPLICATE: "a near-duplicate of a frame in the project: restore it first",
    },
    # Only a frame still to be decided can stand behind its burst's representative.
    Action.MARK_NEAR_DUPLICATE: {
        state: f"already {state.label}" for state in BlobState if state not in (BlobState.NEW, BlobState.FAILED)
    },
}


# What a push run's report says of a blob it leaves out, by the state that kept it out (other states: their label).
_LEFT_OUT = {
    BlobState.PUSHED: "already pushed",
    BlobState.PUSHING: "being pushed by another run",
    BlobState.FAILED: "failed before",
}


def left_out_because(state: BlobState | str) -> str:
    """The reason a push report gives for a blob it left out in `state` (a refusal of `Action.PUSH`, or a failed
    blob a run without retries leaves alone)."""
    state = BlobState.of(state)
    return _LEFT_OUT.get(state, state.label)


def refusal(action: Action | str, state: BlobState | str) -> str | None:
    """Why `action` may not happen to a blob in `state`, for the user; None when it may."""
    return _REFUSALS[Action(action)].get(BlobState.of(state))


def allowed(action: Action | str, state: BlobState | str) -> bool:
    """Whether `action` may happen to a blob in `state`."""
    return refusal(action, state) is None


class LedgerFacts(Protocol):
    """What the ledger keeps of a blob version for a project (a `ledger.BlobRecord`)."""

    @property
    def review(self) -> str: ...

    @property
    def push_state(self) -> str | None: ...


def state_of_record(record: LedgerFacts | None) -> BlobState:
    """The state of a blob the ledger knows as `record` (None: never seen, so new): the one derivation.

    In the project wins over a review mark (a pushed frame stays pushed); otherwise the review mark
    (rejected, undecryptable, near-duplicate) wins over a push that is under way or failed.
    """
    if record is None:
        return BlobState.NEW
    if record.push_state == PushState.PUSHED:
        return BlobState.PUSHED
    if record.review != Review.NEW:
        return BlobState(record.review)
    return BlobState(record.push_state) if record.push_state else BlobState.NEW


def check(action: Action | str, states: Iterable[tuple[str, BlobState | str]]) -> None:
    """Raise ActionRefused naming every (blob name, state) pair that `action` may not happen to."""
    refused = {name: why for name, state in states if (why := refusal(action, state)) is not None}
    if refused:
        raise ActionRefused(Action(action).value, refused)


__all__ = [
    "CANNOT_DECRYPT",
    "Action",
    "ActionRefused",
    "BlobState",
    "LedgerFacts",
    "PushState",
    "Review",
    "allowed",
    "check",
    "left_out_because",
    "refusal",
    "state_of_record",
]
