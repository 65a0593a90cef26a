"""Where reviewed frames go, behind one interface: the Custom Vision project, or a dataset for Azure ML, COCO or YOLO.

Every target runs the same way: `run(progress, cancel)` reports progress as it goes (a `PushProgress` or an
`ExportProgress`: `done`, `total`, `counts`), stops on the pipeline's `CancelToken` after the work in flight and
returns its report (a `PushReport` or an `ExportSummary`: `cancelled`, `seconds`). The app runs any target in
the background (`jobs.PushJobs.start`), where a closed tab does not stop it; the CLI and the notebooks call it
directly. Each keeps the idempotency its destination needs: an upload to Custom Vision is not idempotent, so
the pipeline claims every blob in the ledger before it goes; a file written twice is the same file, so an
export's manifest is enough to add only what is new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from .exporting import Destination, ExportSummary, Include, export, migrate
from .exports import AzureMLDatastore
from .pipeline import CancelToken, PushReport

if TYPE_CHECKING:
    from .blobs import BlobFilter
    from .curator import Curator


class TargetKind(StrEnum):
    """What a target does to the project's frames: at most one run of each kind per project at a time."""

    PUSH = "push"
    EXPORT = "export"


class Target(Protocol):
    """Somewhere reviewed frames go, from the curator's project."""

    curator: Curator
    kind: TargetKind

    @property
    def description(self) -> str: ...

    def run(self, progress: Callable[[Any], None] | None, cancel: CancelToken) -> Any: ...


@dataclass
class CustomVisionTarget:
    """The configured Custom Vision project: every blob not yet in it and not rejected goes, untagged (push all
    untagged, as the original Azure Function did)."""

    curator: Curator
    blob_filter: BlobFilter | None = None
    kind: TargetKind = TargetKind.PUSH

    @property
    def description(self) -> str:
        return "Push all untagged"

    def run(self, progress: Callable[[Any], None] | None, cancel: CancelToken) -> PushReport:
        return self.curator.push_all_untagged(self.blob_filter, dry_run=False, progress=progress, cancel=cancel)


@dataclass
class DatasetTarget:
    """A dataset in `format` ("azureml", "coco", "yolo") at `destination`: the frames reviewed here (`include`),
    or with `migrate` every image of the Custom Vision project with the labels it has there."""

    curator: Curator
    destination: Destination
    format: str
    include: str = Include.PUSHED
    validation_fraction: float = 0.2
    datastore: AzureMLDatastore | None = None
    migrate: bool = False
    kind: TargetKind = TargetKind.EXPORT

    @property
    def description(self) -> str:
        what = "Migration" if self.migrate else "Export"
        return f"{what} to {FORMAT_NAMES.get(self.format, self.format)}"

    def run(self, progress: Callable[[Any], None] | None, cancel: CancelToken) -> ExportSummary:
        options: dict[str, Any] = {
            "format": self.format,
            "validation_fraction": self.validation_fraction,
            "datastore": self.datastore,
            "progress": progress,
            "cancel": cancel,
        }
        if self.migrate:
            return migrate(self.curator, self.destination, **options)
        return export(self.curator, self.destination, include=self.include, **options)


FORMAT_NAMES = {"azureml": "Azure ML (AutoML for images)", "coco": "COCO", "yolo": "YOLO"}

__all__ = ["FORMAT_NAMES", "CustomVisionTarget", "DatasetTarget", "Target", "TargetKind"]
