"""Negative controls: for each property the fault suite claims, a deliberately broken client, and the suite's
own check (tests/faults/checks.py, the functions the real cases use) failing on it.

A check that cannot fail proves nothing: the Custom Vision service (and its emulator) never stores the same
bytes twice, so "no image twice in the project" also holds for a client that re-sends every frame after
every fault. Each control breaks one thing in-process (monkeypatching percept_core for this test only) on a
24-frame bed, runs the real push, and shows the check raising. Where the old content-only check would have
passed, the control says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import threading
from collections import Counter

import pytest
import requests

import percept_core.customvision as cv_module
import percept_core.pipeline as pipeline_module
from percept_core.customvision import CustomVisionClient
from percept_core.ledger import Ledger
from percept_core.pipeline import Provenance, PushPipeline
from tests.faults.checks import (
    Evidence,
    PropertyViolated,
    ResendBound,
    Uploads,
    bound_from_lost_answers,
    check_exactly_once,
    check_ledger_agrees,
    check_no_duplicates,
    check_no_resend_of_recorded,
    check_nothing_lost,
    check_nothing_rejected_pushed,
    check_resend_bound,
)


@pytest.fixture
def plan(stack):
    url = f"{stack.customvision.url}/_emulator/faults"

    def apply(rules: list[dict]) -> None:
        requests.post(url, json=rules, timeout=10).raise_for_status()

    yield apply
    requests.delete(url, timeout=10)


def _keys_sql(keys) -> list[tuple]:
    return [tuple(key) for key in keys]


def forget_pushes_before_each_claim(monkeypatch) -> None:
    """Broken: the ledger's "already pushed" check is disabled (a pushed blob is eligible again)."""
    original = Ledger.claim

    def claim(self, keys, project_id, *args, **kwargs):
        with sqlite3.connect(self.path, timeout=30) as db:
            db.executemany(
                "DELETE FROM pushes WHERE container=? AND name=? AND etag=? AND project_id=? AND state='pushed'",
                [(*key, project_id) for key in _keys_sql(keys)],
            )
        return original(self, keys, project_id, *args, **kwargs)

    monkeypatch.setattr(Ledger, "claim", claim)
    monkeypatch.setattr(PushPipeline, "_unsettled", lambda self, blobs: iter(blobs))
    # Or the run rebuilds what the ledger forgot from the project's own provenance, and sends nothing again.
    monkeypatch.setattr(PushPipeline, "reconcile_with_project", False)


def test_control_exactly_once_a_client_that_resends_every_frame_after_every_fault(
    stack, control_bed, control_curator, plan, monkeypatch
):
    """Broken: after any fault, the client sends again every frame it ever sent. Content-only checks pass."""
    original = CustomVisionClient.upload
    sent: list = []
    lock = threading.Lock()

    def upload(self, items, **kwargs):
        faults_before = self.stats.retried + self.stats.throttled
        results = original(self, items, **kwargs)
        with lock:
            sent.extend(items)
            again = list(sent) if self.stats.retried + self.stats.throttled > faults_before else []
        for start in range(0, len(again), 64):  # without metadata: only the bytes go again
            original(self, again[start : start + 64])
        return results

    monkeypatch.setattr(CustomVisionClient, "upload", upload)
    plan([{"operation": "CreateImagesFromFiles", "kind": "503", "skip": 6, "times": 2}])  # before the work
    control_curator.push_all_untagged()
    evidence = Evidence.collect(stack, control_curator, control_bed)
    check_exactly_once(evidence)  # the project looks perfect: the service deduplicated the re-sends
    with pytest.raises(PropertyViolated, match="re-sent"):
        check_resend_bound(evidence, bound_from_lost_answers(evidence.uploads))
    assert evidence.uploads.ok_duplicate > 0


def test_control_exactly_once_a_ledger_that_forgets_what_it_pushed(stack, control_bed, control_curator, monkeypatch):
    """Broken: the ledger's "already pushed" check is disabled; a healthy second run sends everything again."""
    forget_pushes_before_each_claim(monkeypatch)
    control_curator.push_all_untagged()
    recorded = {row["name"] for row in control_curator.ledger.pushed(control_curator.customvision.project_id)}
    before = Uploads.of(stack.customvision.url, control_curator.customvision.project_id)
    control_curator.push_all_untagged()
    evidence = Evidence.collect(stack, control_curator, control_bed)
    check_no_duplicates(evidence)  # one image per frame: content-only evidence cannot see the re-sends
    with pytest.raises(PropertyViolated, match="recorded as pushed were sent again"):
        check_no_resend_of_recorded(recorded, evidence.uploads.since(before))
    with pytest.raises(PropertyViolated, match="re-sent"):
        check_resend_bound(evidence, bound_from_lost_answers(evidence.uploads))


def test_control_exactly_once_two_runs_with_the_claim_lock_disabled(stack, control_bed, control_curator, monkeypatch):
    """Broken: a run takes over claims that another live run holds; two overlapping runs both send every blob.

    The overlap is forced, not hoped for: both runs meet before either claims, take their first claims one
    after the other (the second taking over the first's), and meet again before either sends anything."""
    original = Ledger.claim
    before_claiming, before_sending = threading.Barrier(2), threading.Barrier(2)
    one_at_a_time = threading.Lock()
    first_claim: set[str] = set()

    def claim(self, keys, project_id, run_id, *args, **kwargs):
        first = run_id not in first_claim
        if first:
            first_claim.add(run_id)
            before_claiming.wait(timeout=60)
        with one_at_a_time:
            with sqlite3.connect(self.path, timeout=30) as db:
                db.executemany(
                    "DELETE FROM pushes WHERE container=? AND name=? AND etag=? AND project_id=? AND state='pushing'"
                    " AND claim<>?",
                    [(*key, project_id, run_id) for key in _keys_sql(keys)],
                )
            claimed = original(self, keys, project_id, run_id, *args, **kwargs)
        if first:
            before_sending.wait(timeout=60)
        return claimed

    monkeypatch.setattr(Ledger, "claim", claim)
    monkeypatch.setattr(PushPipeline, "reconcile_with_project", False)  # or the later run finds the other's images
    runs = [control_curator, control_curator.make_another()]
    threads = [threading.Thread(target=c.push_all_untagged) for c in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not before_claiming.broken and not before_sending.broken, "the two runs did not overlap"
    evidence = Evidence.collect(stack, control_curator, control_bed)
    with pytest.raises(PropertyViolated, match="re-sent"):
        check_resend_bound(evidence, ResendBound(0, "each blob is claimed by exactly one of the two runs"))


def test_control_nothing_lost_failed_uploads_recorded_as_pushed(stack, control_bed, control_curator, plan, monkeypatch):
    """Broken: a failed upload is recorded as pushed, so the next (healthy) run never tries it again."""

    def record_failed(self, key, project_id, *, actor, sha256=None, **kwargs):
        return self.record_pushed(key, project_id, image_id="", sha256=sha256, tags=(), actor=actor)

    monkeypatch.setattr(Ledger, "record_failed", record_failed)
    control_curator.customvision.max_attempts = 1
    plan([{"operation": "CreateImagesFromFiles", "kind": "503", "skip": 4, "times": 5}])
    control_curator.push_all_untagged()
    plan([])
    control_curator.push_all_untagged()
    evidence = Evidence.collect(stack, control_curator, control_bed)
    with pytest.raises(PropertyViolated, match="lost: 5 eligible"):
        check_nothing_lost(evidence)


def test_control_nothing_rejected_pushed_rejections_ignored(stack, control_bed, control_curator, monkeypatch):
    """Broken: the claim ignores the reviewer's rejections."""
    original = Ledger.claim

    def claim(self, keys, *args, **kwargs):
        with sqlite3.connect(self.path, timeout=30) as db:
            db.executemany(
                "UPDATE blobs SET review='new' WHERE container=? AND name=? AND etag=? AND review='rejected'",
                _keys_sql(keys),
            )
        return original(self, keys, *args, **kwargs)

    monkeypatch.setattr(Ledger, "claim", claim)
    monkeypatch.setattr(PushPipeline, "_unsettled", lambda self, blobs: iter(blobs))
    control_curator.push_all_untagged()
    evidence = Evidence.collect(stack, control_curator, control_bed)
    check_nothing_lost(evidence)
    with pytest.raises(PropertyViolated, match="rejected blobs pushed"):
        check_nothing_rejected_pushed(evidence)


def test_control_ledger_agrees_results_matched_by_position(stack, control_bed, control_curator, monkeypatch):
    """Broken: a batch's results are matched to its items by position against an answer in another order."""
    monkeypatch.setattr(cv_module, "_match_results", lambda items, results: list(reversed(results)))
    report = control_curator.push_all_untagged(provenance=Provenance.BATCH)
    assert report.calls >= 1
    evidence = Evidence.collect(stack, control_curator, control_bed)
    check_nothing_lost(evidence)
    check_no_duplicates(evidence)
    with pytest.raises(PropertyViolated, match="the ledger disagrees with the project"):
        check_ledger_agrees(evidence)


def test_control_duplicated_by_provenance_a_client_that_reencodes_each_send(
    stack, control_bed, control_curator, monkeypatch
):
    """Broken: each send carries freshly encoded bytes (here: a trailing byte) and the ledger forgets pushes,
    so the service stores every re-send as a new image. By content every image is distinct; by provenance
    (the `source_blob` metadata and the entry names the emulator counted) each frame is there twice."""
    forget_pushes_before_each_claim(monkeypatch)
    original = pipeline_module.prepare_for_upload
    serial = itertools.count(1)

    def prepare(data, **kwargs):
        prepared = original(data, **kwargs)
        return dataclasses.replace(prepared, data=prepared.data + next(serial).to_bytes(4, "big"))

    monkeypatch.setattr(pipeline_module, "prepare_for_upload", prepare)
    control_curator.push_all_untagged()
    control_curator.push_all_untagged()
    evidence = Evidence.collect(stack, control_curator, control_bed)
    assert max(Counter(image.sha256 for image in evidence.images).values()) == 1  # content sees nothing
    with pytest.raises(PropertyViolated, match="duplicated: 22 extra image"):
        check_no_duplicates(evidence)
