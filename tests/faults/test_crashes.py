"""A push killed with SIGKILL at different points, then run again: zero duplicates, zero losses, and only
what was in flight at the kill sent again. Two push-all runs started at once: each blob sent once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from percept_core import Curator
from percept_core.customvision import MAX_IMAGES_PER_BATCH
from tests.faults.checks import ResendBound, Uploads, check_no_resend_of_recorded, check_resend_bound
from tests.faults.conftest import FRAMES, assert_exactly_once, record

CLI = [sys.executable, "-m", "percept_core.cli"]


def _count(ledger: Path, sql: str) -> int:
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(ledger, timeout=30) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def pushed(ledger: Path) -> int:
    return _count(ledger, "SELECT COUNT(*) FROM pushes WHERE state='pushed'")


def claimed(ledger: Path) -> int:
    return _count(ledger, "SELECT COUNT(*) FROM pushes WHERE state='pushing'")


def pushed_names(ledger: Path) -> set[str]:
    with sqlite3.connect(ledger, timeout=30) as db:
        return {row[0] for row in db.execute("SELECT name FROM pushes WHERE state='pushed'")}


def in_flight_bound(settings, extra: list[str]) -> ResendBound:
    """What a SIGKILL may leave unrecorded, derived from the pipeline the CLI builds (percept_core/pipeline.py).

    A blob is recorded as pushed when the answer of its upload call is collected, and the pipeline keeps at
    most `max_uploads_in_flight` calls out (it waits for one to finish before submitting another); a blob
    claimed but not yet submitted was never sent. So at the kill at most that many calls were stored by the
    service and not recorded; the next run sends those again and is answered "duplicate". A call carries one
    image with per-image provenance (the default) and up to MAX_IMAGES_PER_BATCH with `--provenance batch`.
    """
    calls = Curator(settings).pipeline.max_uploads_in_flight
    per_call = MAX_IMAGES_PER_BATCH if "batch" in extra else 1
    return ResendBound(calls * per_call, f"at most {calls} upload calls of {per_call} image(s) in flight at the kill")


# kill point -> (extra CLI arguments, fault plan, condition on (ledger, images in the project) to kill at)
KILL_POINTS: dict[str, tuple[list[str], list[dict], Callable[[Path, int], bool]]] = {
    "claimed-nothing-pushed": (
        [],
        [{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 3.0, "times": 3}],
        lambda ledger, images: claimed(ledger) > 0 and pushed(ledger) == 0,
    ),
    "answer-in-flight": (
        [],
        [{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 3.0, "skip": 20, "times": 3}],
        lambda ledger, images: images > pushed(ledger) >= 20,
    ),
    "a-tenth": ([], [], lambda ledger, images: pushed(ledger) >= FRAMES // 10),
    "half": ([], [], lambda ledger, images: pushed(ledger) >= FRAMES // 2),
    "nearly-done": ([], [], lambda ledger, images: pushed(ledger) >= FRAMES - 30),
    "mid-batch-of-64": (
        ["--provenance", "batch"],
        [{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 3.0, "skip": 2, "times": 2}],
        lambda ledger, images: images > pushed(ledger) >= 64,
    ),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_restart_loses_nothing_and_duplicates_nothing(
    point, profile, fault_stack, fault_bed, fault_curator, tmp_path
):
    stack = fault_stack
    extra, plan, kill_when = KILL_POINTS[point]
    project = fault_curator.customvision.project_id
    ledger = Path(fault_curator.ledger.path)
    bound = in_flight_bound(fault_curator.settings, extra)
    env = stack.environment(
        custom_vision_project_id=project,
        mm_telemetry_storage_container=fault_bed.container,
        percept_ledger_path=str(ledger),
        custom_vision_rate_per_second="150",
    )
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=plan, timeout=10).raise_for_status()
    try:
        process = subprocess.Popen(
            [*CLI, "push-untagged", "--yes", *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 180
        while not kill_when(ledger, len(stack.emulator.images(project))):
            assert process.poll() is None, f"the run ended before the kill point: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.01)  # polling the ledger and the project with a deadline
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        at_kill = {"pushed": pushed(ledger), "images": len(stack.emulator.images(project))}
    finally:
        requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10)
    assert at_kill["pushed"] < FRAMES - len(fault_bed.rejected)
    recorded, before = pushed_names(ledger), Uploads.of(stack.customvision.url, project)

    rerun = subprocess.run(
        [*CLI, "--json", "push-untagged", "--yes", *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    evidence = assert_exactly_once(stack, Curator(fault_curator.settings), fault_bed)
    check_resend_bound(evidence, bound)
    check_no_resend_of_recorded(recorded, evidence.uploads.since(before))
    fault = f"SIGKILL when {point.replace('-', ' ')} ({at_kill})"
    record(f"sigkill-{point}", profile, fault, [], 1, evidence, bound, run_count=2)


def test_two_push_all_runs_started_at_once_push_each_blob_once(
    profile, fault_stack, fault_bed, fault_curator, tmp_path
):
    stack = fault_stack
    project = fault_curator.customvision.project_id
    env = stack.environment(
        custom_vision_project_id=project,
        mm_telemetry_storage_container=fault_bed.container,
        percept_ledger_path=str(fault_curator.ledger.path),
    )
    runs = [
        subprocess.Popen(
            [*CLI, "--json", "push-untagged", "--yes"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1000:] for _, err in results]
    counts = [json.loads(out)["counts"] for out, _ in results]
    landed = sum(c.get("pushed", 0) + c.get("duplicate", 0) for c in counts)
    assert landed == FRAMES - len(fault_bed.rejected)
    assert all(c.get("pushed", 0) > 0 for c in counts), f"one run did all the work: {counts}"
    evidence = assert_exactly_once(stack, fault_curator, fault_bed)
    # Each blob is claimed by one run in the shared ledger, so no blob is sent by both.
    bound = ResendBound(0, "each blob is claimed by exactly one of the two runs")
    check_resend_bound(evidence, bound)
    fault = f"two CLI push-all runs started together ({counts})"
    record("two-runs-at-once", profile, fault, [], 1, evidence, bound, run_count=2)
