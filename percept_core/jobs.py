"""Background runs of this process (push all untagged, exports), one of each per project, and the push runs a
dead process left behind.

A run lives in a thread of its own (`BackgroundPush`), so it outlives the browser tab that started it;
the registry lets any later page find it. A run killed with its process leaves claims in the ledger:
`interrupted` finds them, and the next run takes them over, pushing nothing twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .ledger import Claim
from .pipeline import BackgroundPush, CancelToken, DryRunReport

if TYPE_CHECKING:
    from .curator import Curator


class PushJobs:
    """The process's background runs by project id: at most one push-all and one export running per project."""

    def __init__(self) -> None:
        self._jobs: dict[str, BackgroundPush] = {}
        self._lock = threading.Lock()

    def current(self, project_id: str) -> BackgroundPush | None:
        """The running or the last finished push-all run for the project."""
        with self._lock:
            return self._jobs.get(project_id)

    def current_export(self, project_id: str) -> BackgroundPush | None:
        """The running or the last finished export (or migration) of the project."""
        with self._lock:
            return self._jobs.get(_EXPORT + project_id)

    def all(self) -> list[BackgroundPush]:
        with self._lock:
            return list(self._jobs.values())

    def start_push_all(self, curator: Curator, *, total: int | None = None) -> BackgroundPush:
        """Push everything not yet in the project, untagged, in the background (or return the run already going)."""
        return self._start(
            curator.customvision.project_id,
            lambda progress, cancel: curator.push_all_untagged(dry_run=False, progress=progress, cancel=cancel),
            description="Push all untagged",
            actor=curator.actor,
            total=total,
        )

    def start_export(
        self, curator: Curator, run: Callable[[Callable[[Any], None], CancelToken], Any], *, description: str
    ) -> BackgroundPush:
        """Run an export of the project (`exporting.export` or `migrate` given progress and cancel) in the
        background, or return the one already going."""
        return self._start(_EXPORT + curator.customvision.project_id, run, description=description, actor=curator.actor)

    def _start(self, key: str, run, *, description: str, actor: str, total: int | None = None) -> BackgroundPush:
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.running:
                return job
            job = BackgroundPush(run, description=description, actor=actor, total=total)
            self._jobs[key] = job.start()
            return job


_EXPORT = "export:"  # project ids are GUIDs: no push-all key starts so


def expected_items(report: DryRunReport) -> int:
    """How many items a push-all run after this dry run will report on (eligible, duplicates, undecryptable)."""
    return report.eligible + report.duplicates_by_content + sum(report.undecryptable.values()) + report.in_progress


def interrupted(curator: Curator) -> list[Claim]:
    """Claims of runs that are gone (a killed app or CLI): the next run resumes them."""
    return [claim for claim in curator.ledger.claims(curator.customvision.project_id) if not claim.live]


__all__ = ["PushJobs", "expected_items", "interrupted"]
