"""Every target runs the same way: Custom Vision (push all untagged) and a dataset export, in the background
through the same registry, with the same progress fields, stopped by the same CancelToken."""

from __future__ import annotations

import pytest

from percept_core import Curator
from percept_core.exporting import ArchiveDestination, Include
from percept_core.jobs import PushJobs
from percept_core.pipeline import CancelToken
from percept_core.targets import CustomVisionTarget, DatasetTarget, TargetKind


@pytest.fixture
def curator(stack, project_id, tmp_path) -> Curator:
    settings = stack.settings(custom_vision_project_id=project_id, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    return Curator(settings, actor="reviewer")


def test_custom_vision_and_an_export_run_alike_in_the_background(curator, demo, project_id):
    jobs = PushJobs()
    good = [b for b in curator.blobs() if b.name not in demo.bad.values()]
    pushing = jobs.start(CustomVisionTarget(curator))
    assert pushing.wait(300) and pushing.error is None
    pushed = pushing.report
    assert not pushed.cancelled and pushed.counts["pushed"] == len(good)
    assert pushing.progress.done == len(good) + len(demo.bad)  # the undecryptable ones are reported too

    archive = ArchiveDestination("targets", "coco")
    exporting = jobs.start(DatasetTarget(curator, archive, "coco", Include.PUSHED))
    assert exporting.wait(300) and exporting.error is None
    exported = exporting.report
    assert not exported.cancelled and exported.frames == len(good)
    assert (exporting.progress.done, exporting.progress.total) == (len(good), len(good))
    assert jobs.current(project_id) is pushing and jobs.current(project_id, TargetKind.EXPORT) is exporting
    assert [job.description for job in jobs.all()] == ["Push all untagged", "Export to COCO"]


def test_a_cancelled_token_stops_every_target_before_it_sends_anything(curator, demo, stack, project_id):
    cancelled = CancelToken()
    cancelled.cancel()
    report = CustomVisionTarget(curator).run(None, cancelled)
    assert report.cancelled and report.counts["pushed"] == 0
    assert stack.trainer().get_untagged_image_count(project_id) == 0
    curator.push([b for b in curator.blobs() if b.name not in demo.bad.values()][:2])
    summary = DatasetTarget(curator, ArchiveDestination("targets", "coco"), "coco", migrate=True).run(None, cancelled)
    assert summary.cancelled and (summary.frames, summary.added) == (0, 0)
    assert [event.outcome for event in curator.ledger.events(action="migrate")] == ["0 added, 0 in all, cancelled"]
