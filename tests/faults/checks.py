"""The fault suite's checks, as functions over what was measured, shared by the real cases and the negative controls.

Each check raises `PropertyViolated` (an AssertionError) naming what broke. The measurements come from the
services a user would look at: the project's images (by content, and by provenance: the `source_blob` metadata
and the entry names the Custom Vision emulator counted), the emulator's upload counters (every image entry it
received and every duplicate it answered, on `/_emulator/projects/{id}/uploads`) and the ledger.

Why the counters: the service, like the emulator, never stores the same bytes twice (it answers OKDuplicate),
so "no image twice in the project" cannot fail for a client that re-sends every frame after every fault.
What such a client cannot hide is the entries it sent and the duplicate answers it got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

# Statuses the emulator counts for an entry that met content already in the project: an OKDuplicate answer,
# or (strict profile) a whole batch of such entries refused with 400 "No valid image files".
DUPLICATE_STATUSES = ("OKDuplicate", "RefusedAllDuplicates")


class PropertyViolated(AssertionError):
    """A property the Reliability table claims does not hold for this run."""


@dataclass(frozen=True)
class Uploads:
    """A project's upload counters as the Custom Vision emulator reports them."""

    entries: int = 0  # entries the service worked on (stored, matched as duplicates, or refused)
    refused_before_work: int = 0  # entries of calls answered before any work (429, 5xx, reset before)
    answer_lost: int = 0  # entries stored whose answer was reset away
    answer_late: int = 0  # entries whose answer was held back ("slow"): a client may have given up on them
    ok_duplicate: int = 0
    duplicates_refused: int = 0
    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, customvision_url: str, project_id: str) -> Uploads:
        raw = requests.get(f"{customvision_url}/_emulator/projects/{project_id}/uploads", timeout=30)
        raw.raise_for_status()
        data = raw.json()
        return cls(
            entries=data["entries"],
            refused_before_work=data["entriesRefusedBeforeWork"],
            answer_lost=data["entriesAnswerLost"],
            answer_late=data["entriesAnswerLate"],
            ok_duplicate=data["okDuplicate"],
            duplicates_refused=data["duplicatesRefused"],
            by_name=data.get("byName", {}),
        )

    @property
    def duplicate_answers(self) -> int:
        """Entries the service told "already in the project" (OKDuplicate, or refused whole under strict)."""
        return self.ok_duplicate + self.duplicates_refused

    @property
    def sent(self) -> int:
        """Entries on the wire: worked on, or refused before the work."""
        return self.entries + self.refused_before_work

    def entries_of(self, name: str) -> int:
        return self.by_name.get(name, {}).get("entries", 0)

    def since(self, before: Uploads) -> Uploads:
        """What arrived after `before` (both of the same project)."""
        return Uploads(
            entries=self.entries - before.entries,
            refused_before_work=self.refused_before_work - before.refused_before_work,
            answer_lost=self.answer_lost - before.answer_lost,
            answer_late=self.answer_late - before.answer_late,
            ok_duplicate=self.ok_duplicate - before.ok_duplicate,
            duplicates_refused=self.duplicates_refused - before.duplicates_refused,
            by_name={
                name: {"entries": data.get("entries", 0) - before.entries_of(name)}
                for name, data in self.by_name.items()
                if data.get("entries", 0) > before.entries_of(name)
            },
        )


@dataclass(frozen=True)
class StoredImage:
    id: str
    sha256: str
    metadata: dict[str, str]


@dataclass
class Evidence:
    """Everything measured after a case: the bed's truth, the project, the counters and the ledger."""

    eligible: set[str]  # blob names that must end up in the project
    rejected: set[str]  # blob names a reviewer rejected: must never be sent
    sha256: dict[str, str]  # blob name -> its plaintext's sha256
    images: list[StoredImage]
    uploads: Uploads
    ledger_pushed: dict[str, str]  # blob name -> image id, as the ledger recorded it

    @classmethod
    def collect(cls, stack, curator, bed, *, eligible: set[str] | None = None) -> Evidence:
        project_id = curator.customvision.project_id
        images = [StoredImage(i.id, i.sha256, dict(i.metadata)) for i in stack.emulator.images(project_id)]
        ledger_pushed = {row["name"]: row["image_id"] for row in curator.ledger.pushed(project_id)}
        return cls(
            eligible=set(bed.names) - set(bed.rejected) if eligible is None else set(eligible),
            rejected=set(bed.rejected),
            sha256=dict(bed.sha256),
            images=images,
            uploads=Uploads.of(stack.customvision.url, project_id),
            ledger_pushed=ledger_pushed,
        )


# --- measurements -------------------------------------------------------------------------------------


def lost(evidence: Evidence) -> set[str]:
    """Eligible blobs whose content is not in the project."""
    present = {image.sha256 for image in evidence.images}
    return {name for name in evidence.eligible if evidence.sha256[name] not in present}


def duplicated(evidence: Evidence) -> dict[str, int]:
    """Extra copies in the project, per blob: by content, by `source_blob` metadata, and by entry name.

    The last two are provenance: a client that re-encodes a frame on each attempt gets a new image each time
    (the service compares bytes), which content alone cannot see.
    """
    extra: Counter[str] = Counter()
    by_content = Counter(image.sha256 for image in evidence.images)
    name_of = {sha: name for name, sha in evidence.sha256.items()}
    for sha, count in by_content.items():
        if count > 1:
            extra[name_of.get(sha, sha)] = max(extra[name_of.get(sha, sha)], count - 1)
    by_source = Counter(image.metadata["source_blob"] for image in evidence.images if "source_blob" in image.metadata)
    for name, count in by_source.items():
        extra[name] = max(extra[name], count - 1)
    stored = {image.id for image in evidence.images}
    for name, data in evidence.uploads.by_name.items():
        images = [i for i in data.get("imageIds", []) if i in stored]
        if len(images) > 1:
            extra[name] = max(extra[name], len(images) - 1)
    return {name: n for name, n in extra.items() if n > 0}


# --- checks -------------------------------------------------------------------------------------------


def check_nothing_lost(evidence: Evidence) -> None:
    missing = lost(evidence)
    if missing:
        raise PropertyViolated(
            f"lost: {len(missing)} eligible blob(s) never reached the project, e.g. {sorted(missing)[:3]}"
        )


def check_no_duplicates(evidence: Evidence) -> None:
    extra = duplicated(evidence)
    if extra:
        sample = sorted(extra.items())[:3]
        raise PropertyViolated(
            f"duplicated: {sum(extra.values())} extra image(s) for {len(extra)} blob(s), e.g. {sample}"
        )
    if len(evidence.images) != len(evidence.eligible):
        raise PropertyViolated(f"the project holds {len(evidence.images)} images for {len(evidence.eligible)} blobs")


def check_nothing_rejected_pushed(evidence: Evidence) -> None:
    """No rejected blob's content is in the project, and none was even sent (an attempt is the violation)."""
    present = {image.sha256 for image in evidence.images}
    stored = sorted(name for name in evidence.rejected if evidence.sha256[name] in present)
    sent = sorted(
        name
        for name in evidence.rejected
        if evidence.uploads.entries_of(name) or evidence.uploads.by_name.get(name, {}).get("refusedBeforeWork", 0)
    )
    if stored or sent:
        raise PropertyViolated(f"rejected blobs pushed: in the project {stored[:3]}, sent {sent[:3]}")


def check_ledger_agrees(evidence: Evidence) -> None:
    """The ledger names, for every eligible blob, the very image that holds its content."""
    image_of_content = {image.sha256: image.id for image in evidence.images}
    expected = {name: image_of_content.get(evidence.sha256[name]) for name in evidence.eligible}
    wrong = sorted(name for name in expected if evidence.ledger_pushed.get(name) != expected[name])
    extra = sorted(set(evidence.ledger_pushed) - set(expected))
    if wrong or extra:
        raise PropertyViolated(
            f"the ledger disagrees with the project for {len(wrong)} blob(s), e.g. {wrong[:3]}; "
            f"records {len(extra)} blob(s) that are not eligible"
        )


def check_exactly_once(evidence: Evidence) -> None:
    """Every eligible blob in the project exactly once, nothing rejected sent, and the ledger agrees."""
    check_nothing_lost(evidence)
    check_no_duplicates(evidence)
    check_nothing_rejected_pushed(evidence)
    check_ledger_agrees(evidence)


@dataclass(frozen=True)
class ResendBound:
    """How many duplicate answers a fault can justify, and why."""

    duplicate_answers: int
    reason: str


def bound_from_lost_answers(uploads: Uploads) -> ResendBound:
    """The bound for service faults. A fault answered before the work (401, 429, 5xx, reset before the request)
    stored nothing, so its entries must be sent again and find nothing there: no duplicate answer at all. Only
    an entry that was stored and whose answer never arrived (reset after the work) or arrived after the client
    gave up (a "slow" answer past its timeout) may be sent again and be answered as a duplicate: once each."""
    justified = uploads.answer_lost + uploads.answer_late
    return ResendBound(
        justified,
        f"{uploads.answer_lost} entries stored with their answer lost + {uploads.answer_late} answered late",
    )


def check_resend_bound(evidence: Evidence, bound: ResendBound) -> None:
    """Re-sends stay within what the fault justifies: duplicate answers, and entries worked on per blob."""
    uploads = evidence.uploads
    if uploads.duplicate_answers > bound.duplicate_answers:
        raise PropertyViolated(
            f"re-sent: {uploads.duplicate_answers} duplicate answers (OKDuplicate {uploads.ok_duplicate}, refused "
            f"whole {uploads.duplicates_refused}) where the fault justifies {bound.duplicate_answers} ({bound.reason})"
        )
    # Each eligible blob is worked on once, plus once per justified re-send: no entry arrives for nothing.
    allowed = len(evidence.eligible) + bound.duplicate_answers
    if uploads.entries > allowed:
        raise PropertyViolated(
            f"re-sent: the service worked on {uploads.entries} entries for {len(evidence.eligible)} eligible blobs; "
            f"the fault justifies {allowed} ({bound.reason})"
        )


def check_no_resend_of_recorded(recorded: set[str], later: Uploads) -> None:
    """A later run sends nothing again for what an earlier run recorded as pushed."""
    again = sorted(name for name in recorded if later.entries_of(name))
    if again:
        raise PropertyViolated(
            f"re-sent: {len(again)} blob(s) the ledger had recorded as pushed were sent again, e.g. {again[:3]}"
        )


def row_measurements(evidence: Evidence, bound: ResendBound) -> dict[str, Any]:
    """The Reliability table's measured cells (written only once every check passed)."""
    eligible = len(evidence.eligible)
    return {
        "eligible": eligible,
        "entries_sent": evidence.uploads.sent,
        "entries_worked_on": evidence.uploads.entries,
        "uploads_per_eligible_blob": round(evidence.uploads.sent / eligible, 3) if eligible else 0.0,
        "duplicate_answers": evidence.uploads.duplicate_answers,
        "duplicate_answers_bound": bound.duplicate_answers,
        "bound_reason": bound.reason,
        "lost": len(lost(evidence)),
        "duplicated": sum(duplicated(evidence).values()),
    }
