"""Background runs of this process (push all untagged, exports), one of each per project, and the push runs a
dead process left behind.

A run lives in a thread of its own (`BackgroundPush`), so it outlives the browser tab that started it;
the registry lets any later page find it. A run killed with its process leaves claims in the ledger:
`interrupted` finds them, and the next run takes them over, pushing nothing twice.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .ledger import Claim
from .pipeline import BackgroundPush, DryRunReport
from .targets import Target, TargetKind

if TYPE_CHECKING:
    from .curator import Curator


class PushJobs:
    """The process's background runs by project id: at most one of each target kind running per project."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[TargetKind, str], BackgroundPush] = {}
        self._lock = threading.Lock()

    def current(self, project_id: str, kind: TargetKind = TargetKind.PUSH) -> BackgroundPush | None:
        """The running or the last finished run of that kind (push all untagged, an export) for the project."""
        with self._lock:
            return self._jobs.get((kind, project_id))

    def all(self) -> list[BackgroundPush]:
        with self._lock:
            return list(self._jobs.values())

    def start(self, target: Target, *, total: int | None = None) -> BackgroundPush:
        """Run the target in the background (or return the run of its kind already going for the project)."""
        curator = target.curator
        key = (target.kind, curator.customvision.project_id)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.running:
                return job
            job = BackgroundPush(target.run, description=target.description, actor=curator.actor, total=total)
            self._jobs[key] = job.start()
            return job


def expected_items(report: DryRunReport) -> int:
    """How many items a push-all run after this dry run will report on (eligible, duplicates, undecryptable)."""
    return report.eligible + report.duplicates_by_content + sum(report.undecryptable.values()) + report.in_progress


def interrupted(curator: Curator) -> list[Claim]:
    """Claims of runs that are gone (a killed app or CLI): the next run resumes them."""
    return [claim for claim in curator.ledger.claims(curator.customvision.project_id) if not claim.live]


__all__ = ["PushJobs", "expected_items", "interrupted"]
