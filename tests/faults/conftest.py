"""The fault suite's set-up: 500 encrypted frames of three model versions, the stacks of each Azure profile,
and the Reliability table's rows.

Profiles: every case runs against the emulators' default Azure profile and against a second stack whose
emulators play the strict profile (devstack/profiles.py), as issue 18 asks: the client gets every frame in
exactly once under both. `FAULTS_PROFILE_STRICT=0` in the environment runs the default profile only (a
quicker local loop); `--profile-strict` is still accepted and changes nothing.

Rows: `test-artifacts/reliability/` is emptied when the first fault test starts, and each case writes its row
only after its checks passed, so a case that fails or no longer exists leaves no row. Rows are written to a
folder of this session's own and moved into place when the session ends, so two test sessions running at
once in one working tree never mix (or delete) each other's rows: the table is the last finished run's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from percept_core import Curator, Outcome
from percept_core.images import sha256_hex
from tests.conftest import ARTIFACTS, LocalStack
from tests.faults.checks import Evidence, ResendBound, check_exactly_once, row_measurements
from tests.support.frames import jpeg, upload_frames

FRAMES = 500
CONTROL_FRAMES = 24
VERSIONS = (("people-counter", "1.0"), ("people-counter", "1.1"), ("shelf-monitor", "2.3"))
RELIABILITY = ARTIFACTS / "reliability"
STRICT_ENV = "FAULTS_PROFILE_STRICT"


def pytest_addoption(parser):
    parser.addoption(
        "--profile-strict",
        action="store_true",
        help="run the fault cases against the strict Azure profile too (the default; FAULTS_PROFILE_STRICT=0 skips it)",
    )


def strict_enabled(config) -> bool:
    """Both profiles run unless FAULTS_PROFILE_STRICT=0 (the flag, where it was added, forces them on)."""
    try:
        flag = bool(config.getoption("--profile-strict"))
    except ValueError:  # this conftest was not an initial one, so the option was never added
        flag = False
    return flag or os.environ.get(STRICT_ENV, "1") != "0"


def pytest_generate_tests(metafunc):
    if "profile" in metafunc.fixturenames:
        profiles = ["default", "strict"] if strict_enabled(metafunc.config) else ["default"]
        metafunc.parametrize("profile", profiles, scope="function")


_session_rows: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def reliability_rows():
    """The Reliability table starts empty: rows come only from cases that pass in this run."""
    shutil.rmtree(RELIABILITY, ignore_errors=True)
    RELIABILITY.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".reliability-", dir=ARTIFACTS))
    _session_rows.append(staging)
    yield RELIABILITY
    _session_rows.remove(staging)
    shutil.rmtree(RELIABILITY, ignore_errors=True)
    os.replace(staging, RELIABILITY)


@dataclass
class FaultBed:
    container: str
    names: list[str]
    rejected: list[str]
    sha256: dict[str, str]  # blob name -> its plaintext's sha256


def make_bed(stack, container: str, frames_count: int, versions, first_seed: int, rejected: slice) -> FaultBed:
    names: list[str] = []
    digests: dict[str, str] = {}
    per_version = frames_count // len(versions) + 1
    for index, model in enumerate(versions):
        count = min(per_version, frames_count - len(names))
        start = index * per_version
        frames = [jpeg(first_seed + start + i, (96, 72)) for i in range(count)]
        uploaded = upload_frames(stack, container, frames, model=model, start=datetime(2026, 11, 1 + index, 8, 0, 0))
        digests.update({name: sha256_hex(frame) for name, frame in zip(uploaded, frames, strict=True)})
        names += uploaded
    assert len(names) == frames_count and len(set(digests.values())) == frames_count
    return FaultBed(container, names, rejected=names[rejected], sha256=digests)


@pytest.fixture
def fault_stack(profile, request) -> LocalStack:
    """The stack of this case's Azure profile."""
    return request.getfixturevalue("stack" if profile == "default" else "strict_stack")


@pytest.fixture(scope="session")
def _beds() -> dict[str, FaultBed]:
    return {}


@pytest.fixture
def fault_bed(profile, fault_stack, _beds) -> FaultBed:
    """FRAMES small distinct frames split over three model versions, in a container of their own (per profile);
    three of them are rejected by a reviewer in each case's ledger."""
    if profile not in _beds:
        container = "faults" if profile == "default" else f"faults{profile}"
        _beds[profile] = make_bed(fault_stack, container, FRAMES, VERSIONS, 10_000, slice(7, 10))
    return _beds[profile]


@pytest.fixture(scope="session")
def control_bed(stack) -> FaultBed:
    """A small bed for the negative controls: one model version (so one batch holds them all), two rejected."""
    return make_bed(stack, "faultcontrols", CONTROL_FRAMES, VERSIONS[:1], 90_000, slice(3, 5))


def make_fault_curator(stack, bed: FaultBed, tmp_path):
    """A Curator on a fresh project, with a ledger of its own, retrying fast (faults are frequent here);
    the bed's rejected blobs are rejected in that ledger. `curator.make_another()` gives a second Curator
    on the same project and ledger."""
    project = stack.new_project("faults")

    def make() -> Curator:
        curator = Curator(
            stack.settings(
                custom_vision_project_id=project,
                mm_telemetry_storage_container=bed.container,
                percept_ledger_path=str(tmp_path / "ledger.sqlite"),
            ),
            actor="fault-suite",
        )
        curator.customvision.backoff_seconds = 0.05
        curator.customvision.max_backoff_seconds = 0.5
        return curator

    curator = make()
    curator.reject([curator.blob(n) for n in bed.rejected], reason="reviewer said no")
    curator.make_another = make
    return curator


@pytest.fixture
def fault_curator(fault_stack, fault_bed, tmp_path):
    return make_fault_curator(fault_stack, fault_bed, tmp_path)


@pytest.fixture
def control_curator(stack, control_bed, tmp_path):
    return make_fault_curator(stack, control_bed, tmp_path)


def _fault_plan(url: str):
    def apply(plan: list[dict]) -> None:
        requests.post(url, json=plan, timeout=10).raise_for_status()

    yield apply
    requests.delete(url, timeout=10)


@pytest.fixture
def cv_faults(fault_stack):
    """Set the Custom Vision fault plan of this case's stack; cleared afterwards."""
    yield from _fault_plan(f"{fault_stack.customvision.url}/_emulator/faults")


@pytest.fixture
def mm_faults(fault_stack):
    """Set the MM server fault plan of this case's stack; cleared afterwards."""
    yield from _fault_plan(f"{fault_stack.mm.url}/_emulator/faults")


def assert_exactly_once(stack, curator: Curator, bed: FaultBed) -> Evidence:
    """Every eligible blob in the project exactly once (by content and by provenance), nothing rejected sent,
    and the ledger agrees with the project; returns the evidence for the re-send checks and the row."""
    evidence = Evidence.collect(stack, curator, bed)
    check_exactly_once(evidence)
    return evidence


def record(
    case: str,
    profile: str,
    fault: str,
    runs: list,
    fired: int,
    evidence: Evidence,
    bound: ResendBound,
    **extra: Any,
) -> None:
    """Write the case's Reliability row; call it only once every check of the case has passed."""
    row = {
        "case": case,
        "profile": profile,
        "fault": fault,
        "blobs": len(evidence.eligible) + len(evidence.rejected),
        "runs": extra.pop("run_count", len(runs)),
        "fired": fired,
        "failed_in_first_run": runs[0].counts[Outcome.FAILED] if runs and hasattr(runs[0], "counts") else None,
        **row_measurements(evidence, bound),
        **extra,
    }
    suffix = "" if profile == "default" else f"--{profile}"
    folder = _session_rows[-1] if _session_rows else RELIABILITY
    (folder / f"{case}{suffix}.json").write_text(json.dumps(row, indent=1, default=str))
