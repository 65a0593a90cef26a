"""What happened and where the project stands: the ledger's events as rows, their tallies, the project's state.

Rows are plain dicts (one per event, newest first), ready for `pandas.DataFrame(rows)` or a CSV writer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .csvsafe import csv_text
from .customvision import IterationInfo, ProjectInfo, TagInfo
from .ledger import Ledger
from .pipeline import PROJECT_IMAGE_QUOTA, Outcome

if TYPE_CHECKING:
    from .curator import Curator

COLUMNS = ("when", "who", "action", "blob", "outcome", "image_id", "model_version", "details")


def activity_rows(ledger: Ledger, *, project_id: str | None = None, limit: int | None = 20_000) -> list[dict[str, Any]]:
    """The newest `limit` events, for one project (plus the decisions that belong to no project)."""
    events = ledger.events(limit=limit)
    if project_id:
        events = [e for e in events if e.project_id in (None, project_id)]
    models = ledger.blob_models((e.container, e.blob, e.etag) for e in events if e.blob and e.container and e.etag)
    rows = []
    for event in events:
        name, version = models.get((event.container, event.blob, event.etag), (None, None))
        details = dict(event.details)
        reason = details.pop("reason", None)
        rows.append(
            {
                "when": datetime.fromisoformat(event.at),
                "who": event.actor,
                "action": event.action,
                "blob": event.blob or "",
                "outcome": event.outcome or "",
                "image_id": event.image_id or "",
                "model_version": f"{name or '?'} {version or '?'}" if name or version else "",
                "details": "; ".join(([str(reason)] if reason else []) + [f"{k}={v}" for k, v in details.items()]),
            }
        )
    return rows


def activity_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV under COLUMNS, safe to open in a spreadsheet: no cell starts a formula (see csvsafe)."""
    return csv_text(rows, COLUMNS)


def pushes_per_day(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New images per day and model version (push events whose outcome is Outcome.PUSHED)."""
    counts = Counter(
        (row["when"].date(), row["model_version"] or "unknown")
        for row in rows
        if row["action"] == "push" and row["outcome"] == Outcome.PUSHED
    )
    return [{"day": day, "model_version": label, "pushes": n} for (day, label), n in sorted(counts.items())]


def outcomes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events per action and outcome, most frequent first."""
    counts = Counter((row["action"], row["outcome"] or "-") for row in rows)
    return [{"action": a, "outcome": o, "events": n} for (a, o), n in counts.most_common()]


@dataclass(frozen=True)
class ProjectState:
    """The Custom Vision project as a reviewer sees it before training."""

    project: ProjectInfo
    tagged: int
    untagged: int
    tags: list[TagInfo]
    iterations: list[IterationInfo]
    quota: int | None

    @property
    def images(self) -> int:
        return self.tagged + self.untagged

    @property
    def training(self) -> IterationInfo | None:
        """The iteration being trained, if one is."""
        return next((i for i in self.iterations if not i.finished), None)


def project_state(curator: Curator) -> ProjectState:
    client = curator.customvision
    tagged, untagged = client.image_counts()
    return ProjectState(
        project=client.project(),
        tagged=tagged,
        untagged=untagged,
        tags=client.tags(refresh=True),
        iterations=client.iterations(),
        quota=PROJECT_IMAGE_QUOTA.get(curator.settings.custom_vision_tier),
    )


__all__ = ["COLUMNS", "ProjectState", "activity_csv", "activity_rows", "outcomes", "project_state", "pushes_per_day"]
