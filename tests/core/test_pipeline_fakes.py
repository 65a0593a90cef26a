"""The push pipeline's batching, claims and retries, on in-memory fakes and a real SQLite ledger: milliseconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from percept_core.ledger import Ledger
from percept_core.pipeline import Outcome, Provenance, PushPipeline, PushReport

from .fakes import Answer, FakeBlobSource, FakeCustomVision, PlainDecryptor

ACTOR = "unit-test"


@pytest.fixture
def source() -> FakeBlobSource:
    return FakeBlobSource()


@pytest.fixture
def project() -> FakeCustomVision:
    return FakeCustomVision(max_attempts=3)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


def pipeline(source: FakeBlobSource, project: FakeCustomVision, ledger_path: Path) -> PushPipeline:
    return PushPipeline(source, PlainDecryptor(), project, Ledger(ledger_path))


def push_all(source, project, ledger_path, **options) -> PushReport:
    return pipeline(source, project, ledger_path).push_all_untagged(actor=ACTOR, **options)


def state(ledger_path: Path, project: FakeCustomVision, blob) -> str:
    return Ledger(ledger_path).record(blob.key, project.project_id).state


# -- batching --------------------------------------------------------------------------------------------


def test_a_large_push_goes_in_calls_of_at_most_64_images(source, project, ledger_path):
    blobs = source.add_frames(130)
    report = push_all(source, project, ledger_path, provenance=Provenance.BATCH)
    assert report.counts[Outcome.PUSHED] == 130 and report.ok
    assert sorted(project.batch_sizes, reverse=True) == [64, 64, 2]
    assert report.calls - report.listing_calls == 3  # and one call counted the project's images
    assert all(len(project.images_of(b.name)) == 1 for b in blobs)


def test_up_to_64_images_go_in_one_call(source, project, ledger_path):
    source.add_frames(64)
    report = push_all(source, project, ledger_path, provenance=Provenance.BATCH)
    assert report.counts[Outcome.PUSHED] == 64
    assert project.batch_sizes == [64]


def test_each_model_version_goes_in_batches_of_its_own(source, project, ledger_path):
    source.add_frames(3, prefix="a", model_version="1")
    source.add_frames(2, prefix="b", model_version="2")
    push_all(source, project, ledger_path, provenance=Provenance.BATCH)
    assert sorted(sorted(name[0] for name in call) for call in project.calls) == [["a", "a", "a"], ["b", "b"]]


# -- claims ----------------------------------------------------------------------------------------------


def test_two_runs_on_one_ledger_never_both_upload_a_blob(source, project, ledger_path):
    blobs = source.add_frames(10)
    second: list[PushReport] = []

    def second_run_meanwhile() -> None:  # while the first run holds its claims and sends its first image
        if not second:
            project.on_upload = None
            second.append(push_all(source, project, ledger_path))

    project.on_upload = second_run_meanwhile
    first = push_all(source, project, ledger_path)
    assert first.counts[Outcome.PUSHED] == 10
    (other,) = second
    # What the first run had settled meanwhile the second leaves out; the rest it skips, the first image among them.
    assert set(other.counts) == {Outcome.SKIPPED}
    assert {o.reason for o in other.outcomes} <= {"being pushed by another run", "already pushed"}
    assert (blobs[0].name, "being pushed by another run") in {(o.name, o.reason) for o in other.outcomes}
    assert all(len(project.images_of(b.name)) == 1 for b in blobs)
    assert sum(len(call) for call in project.calls) == 10  # and each was sent once


def test_a_claim_left_by_a_dead_run_is_taken_over(source, project, ledger_path):
    blobs = source.add_frames(4)
    ledger = Ledger(ledger_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host, _, rest = ledger.new_run_id().partition(":")
    dead_run = f"{host}:{gone.stdout.strip()}:{rest.partition(':')[2]}"  # this machine, a process that has exited
    claimed, _ = ledger.claim([b.key for b in blobs[:2]], project.project_id, dead_run, actor="killed-app")
    assert len(claimed) == 2 and state(ledger_path, project, blobs[0]) == "pushing"

    report = push_all(source, project, ledger_path)
    assert report.counts[Outcome.PUSHED] == 4
    assert all(len(project.images_of(b.name)) == 1 for b in blobs)
    assert Ledger(ledger_path).claims(project.project_id) == []


def test_a_pushed_blob_is_not_sent_again_by_a_later_run(source, project, ledger_path):
    blobs = source.add_frames(3)
    push_all(source, project, ledger_path)
    calls = len(project.calls)
    again = pipeline(source, project, ledger_path).push(blobs, actor=ACTOR)
    assert again.counts[Outcome.SKIPPED] == 3 and {o.reason for o in again.outcomes} == {"already pushed"}
    assert len(project.calls) == calls


# -- retries ---------------------------------------------------------------------------------------------


def test_a_failure_the_retries_outlast_is_pushed_once(source, project, ledger_path):
    (blob,) = source.add_frames(1)
    project.script(blob.name, Answer.FAIL, Answer.FAIL)  # max_attempts is 3
    report = push_all(source, project, ledger_path)
    assert [o.outcome for o in report.outcomes] == [Outcome.PUSHED]
    assert report.calls == 3 and len(project.images_of(blob.name)) == 1


def test_a_retryable_failure_past_the_client_limit_is_recorded_failed_and_pushed_once_later(
    source, project, ledger_path
):
    (blob,) = source.add_frames(1)
    project.script(blob.name, Answer.FAIL, Answer.FAIL, Answer.FAIL)
    first = push_all(source, project, ledger_path)
    assert [o.outcome for o in first.outcomes] == [Outcome.FAILED]
    assert "service unavailable" in first.outcomes[0].reason
    assert first.calls == 3 and project.images_of(blob.name) == []
    assert state(ledger_path, project, blob) == "failed"

    second = push_all(source, project, ledger_path)  # the service is back: the next run tries it again
    assert [o.outcome for o in second.outcomes] == [Outcome.PUSHED]
    third = push_all(source, project, ledger_path)
    assert third.outcomes == [] and len(project.images_of(blob.name)) == 1
    assert state(ledger_path, project, blob) == "pushed"


def test_a_refused_image_is_not_retried(source, project, ledger_path):
    refused, fine = source.add_frames(2)
    project.script(refused.name, Answer.REFUSE)
    report = push_all(source, project, ledger_path)
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes[refused.name].outcome == Outcome.REFUSED
    assert outcomes[refused.name].reason == "Custom Vision cannot read the image format"
    assert outcomes[fine.name].outcome == Outcome.PUSHED
    assert [call for call in project.calls if refused.name in call] == [[refused.name]]  # one attempt
    assert state(ledger_path, project, refused) == "failed" and project.images_of(refused.name) == []


def test_throttling_is_waited_out_and_reported(source, project, ledger_path):
    blobs = source.add_frames(2)
    project.script(blobs[0].name, Answer.THROTTLE, Answer.THROTTLE, Answer.THROTTLE, Answer.THROTTLE)
    report = push_all(source, project, ledger_path)
    assert report.counts[Outcome.PUSHED] == 2 and not report.failed
    assert report.throttled == 4
    assert all(len(project.images_of(b.name)) == 1 for b in blobs)


def test_a_frame_whose_content_is_in_the_project_is_recorded_against_that_image(source, project, ledger_path):
    first, copy = source.add_frames(2)
    source.frames[copy.name] = (copy, source.frames[first.name][1])  # the same bytes under another name
    report = push_all(source, project, ledger_path)
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes[first.name].outcome == Outcome.PUSHED
    assert outcomes[copy.name].outcome == Outcome.DUPLICATE
    assert outcomes[copy.name].image_id == outcomes[first.name].image_id
    assert len(project.images) == 1 and sum(len(call) for call in project.calls) == 1
