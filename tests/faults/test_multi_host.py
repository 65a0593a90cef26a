"""Three independent hosts push one container to one Custom Vision project at once, on the shared ledger (Azure
Table Storage; here Azurite's Table service), through faults: each eligible frame lands once (issue 13, "Proof
that it holds across machines").

The hosts are processes of their own, each in a working folder of its own (its HOME and TMPDIR too), with no
file in common: they share what machines share, the table service, the blob container, the MM server and one
Custom Vision training key. Their settings name the shared ledger (a connection string and a table prefix) and
no ledger file:
- the backfill: the CLI's push-all (`percept-curator push-untagged --yes --provenance batch`, batches of 64);
- the Azure Function's handler, fed the newest model version's blobs one after another, as Event Grid delivers
  them (tests/faults/hosts.py plays the Functions host around it);
- a reviewer pushing the frames of that version and the one before, tagged, through the app's core
  (`review.push_reviewed`).

Faults: 429 storms on the shared key, on top of its quota's own 429s (the three hosts together ask for more
than it allows, as their pace permits); the table
service restarted (gracefully) once a fifth of the frames is in; the CLI SIGKILLed while a batch of its is
stored by the service and not yet recorded, then started again, as an operator would.

The checks are the fault suite's (tests/faults/checks.py): every eligible blob in the project once, by content
and by provenance; nothing rejected sent; the ledger naming each blob's image. The service never stores the
same bytes twice, so those alone cannot see a blob sent by two hosts: the emulator's upload counters must show
no blob sent twice but those the killed CLI held when it died. The negative control runs the same check on a
Function host that takes over claims other live runs hold (last writer wins) and shows it failing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from devstack.customvision_server import CustomVisionEmulatorConfig
from devstack.customvision_server import create_app as create_cv_app
from devstack.servers import serve_in_thread
from percept_core import Curator
from percept_core.ledger_table import TableLedger
from percept_core.state import BlobState, left_out_because
from tests.conftest import CLI, REPO, LocalStack
from tests.faults.checks import (
    Evidence,
    PropertyViolated,
    ResendBound,
    Uploads,
    check_exactly_once,
    check_no_resend_of_recorded,
    check_resend_bound,
)
from tests.faults.conftest import FaultBed, make_bed, record
from tests.support.azurite_table import AzuriteTableProcess

FRAMES = 1_000
VERSIONS = (
    ("people-counter", "1.0"),
    ("people-counter", "1.1"),
    ("shelf-monitor", "2.3"),
    ("shelf-monitor", "2.4"),
)
REJECTED = slice(11, None, 83)  # a dozen frames across the four versions, rejected before the run
NEWEST = VERSIONS[-1][1]  # the version written last: Event Grid delivers its frames to the Function
REVIEWED = (VERSIONS[-2][1], NEWEST)  # the reviewer's selection: two versions' frames, rejected ones included
REVIEW_TAG = "person"
QUOTA_PER_SECOND = 10.0  # the shared training key's calls per second (the emulator's limiter)
HOST_RATE_PER_SECOND = "20"  # each host paces itself for the quota it believes it has: together they exceed it
STORMS = [  # 429s from the service, on every training operation, on top of the quota's own
    {"operation": "*", "kind": "429", "skip": 20, "times": 15, "retry_after": 1},
    {"operation": "*", "kind": "429", "skip": 80, "times": 15, "retry_after": 1},
]
CONTROL_MIN_CONFIDENCE = 60  # the controls' CLI pushes the newest version's frames of at least this confidence
CLI_ACTOR, FUNCTION_ACTOR, REVIEWER_ACTOR = "backfill", "azure-function", "reviewer-b"
HOSTS = [sys.executable, "-m", "tests.faults.hosts"]
DEADLINE_SECONDS = 150
POLL_SECONDS = 0.05

T = TypeVar("T")


@pytest.fixture(scope="module")
def shared_key_stack(stack) -> Iterator[LocalStack]:
    """The session's storage and MM server, and a Custom Vision emulator whose training key has a quota of
    QUOTA_PER_SECOND calls a second, shared by every host that uses the key, as on Azure."""
    training_key = secrets.token_hex(16)
    config = CustomVisionEmulatorConfig(
        training_keys=(training_key,), rate_per_second=QUOTA_PER_SECOND, training_seconds=0.5, max_projects=100_000
    )
    customvision = serve_in_thread(create_cv_app(config))
    yield LocalStack(stack.azurite, stack.mm, stack.mm_config, customvision, training_key)
    customvision.stop()


@pytest.fixture(scope="module")
def bed(shared_key_stack) -> FaultBed:
    """FRAMES small distinct encrypted frames over four model versions, in a container of their own."""
    return make_bed(shared_key_stack, "multihost", FRAMES, VERSIONS, 200_000, REJECTED)


@pytest.fixture
def cv_plan(shared_key_stack) -> Iterator[Callable[[list[dict]], None]]:
    """Set the Custom Vision emulator's fault plan; cleared afterwards."""
    url = f"{shared_key_stack.customvision.url}/_emulator/faults"

    def apply(rules: list[dict]) -> None:
        requests.post(url, json=rules, timeout=10).raise_for_status()

    yield apply
    requests.delete(url, timeout=10)


@dataclass
class SharedProject:
    """A fresh project and a fresh set of tables on the shared ledger, and the hosts' settings for them."""

    settings: dict[str, str]  # by the names users write: the shared ledger's, no percept_ledger_path
    observer: Curator  # a first reviewer on the same ledger: rejects before the run, reads the ledger after

    @property
    def project_id(self) -> str:
        return self.observer.customvision.project_id

    @property
    def ledger(self) -> TableLedger:
        return self.observer.ledger


def shared_project(stack: LocalStack, table: AzuriteTableProcess, bed: FaultBed) -> SharedProject:
    """The project and ledger of one case; the bed's rejected frames are rejected in that ledger by a reviewer."""
    settings = {
        "custom_vision_project_id": stack.new_project("multi-host", tags=(REVIEW_TAG,)),
        "mm_telemetry_storage_container": bed.container,
        "percept_ledger_table_connection_string": table.connection_string,
        "percept_ledger_table_prefix": f"mh{secrets.token_hex(4)}",
        "custom_vision_rate_per_second": HOST_RATE_PER_SECOND,
    }
    observer = Curator(stack.settings(**settings), actor="reviewer-a")
    assert observer.settings.uses_shared_ledger and not observer.settings.ledger_path
    observer.reject([observer.blob(name) for name in bed.rejected], reason="not a useful frame")
    return SharedProject(settings, observer)


@dataclass
class Host:
    """One host: a process in a working folder of its own, its output in files there."""

    label: str
    folder: Path
    process: subprocess.Popen

    @classmethod
    def start(
        cls, label: str, command: Sequence[str], folder: Path, stack: LocalStack, settings: dict[str, str]
    ) -> Host:
        """Start `command` in `folder` with the settings in its environment; nothing on disk is shared with
        another host: HOME and TMPDIR are the folder's own."""
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        env = {
            **stack.environment(**settings),
            "PYTHONPATH": str(REPO),
            "HOME": str(folder),
            "TMPDIR": str(folder / "tmp"),
        }
        with open(folder / f"{label}.out", "wb") as out, open(folder / f"{label}.err", "wb") as err:
            process = subprocess.Popen(
                list(command), cwd=folder, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err
            )
        return cls(label, folder, process)

    def feed(self, names: Sequence[str]) -> None:
        """Blob names on stdin, one a line, then the end of input (the Function host stops once they are done)."""
        self.process.stdin.write("".join(f"{name}\n" for name in names).encode())
        self.process.stdin.close()

    @property
    def output(self) -> str:
        return (self.folder / f"{self.label}.out").read_text()

    @property
    def errors(self) -> str:
        return (self.folder / f"{self.label}.err").read_text()[-3000:]

    def finish(self, deadline: float) -> str:
        """Wait for the host to end (within the deadline); it must end well. Returns its output."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"{self.label} did not end within the deadline: {self.errors}")
        assert self.process.returncode == 0, f"{self.label} ended with {self.process.returncode}: {self.errors}"
        return self.output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_cli(label: str, folder: Path, stack: LocalStack, settings: dict[str, str], *extra: str) -> Host:
    command = [*CLI, "--actor", CLI_ACTOR, "--json", "push-untagged", "--yes", "--provenance", "batch", *extra]
    return Host.start(label, command, folder, stack, settings)


def wait_for(condition: Callable[[], T], what: str, deadline: float, hosts: Sequence[Host]) -> T:
    """Poll `condition` until it holds (returns its value); fails at the deadline or when a host ends early."""
    while not (value := condition()):
        for host in hosts:
            assert host.process.poll() is None, f"{host.label} ended before {what}: {host.errors}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(POLL_SECONDS)  # polling the ledger and the emulator's counters, with a deadline
    return value


def images_in(stack: LocalStack, project_id: str) -> int:
    return stack.emulator.store.count_images(project_id)


def claims_of(shared: SharedProject, host: Host) -> set[str]:
    """Blob names the host's runs hold claims on (a run id names its pid: `host:pid:...`)."""
    pid = str(host.process.pid)
    return {c.key[1] for c in shared.ledger.claims(shared.project_id) if c.run_id.split(":")[1] == pid}


def stored_names(stack: LocalStack, project_id: str) -> set[str]:
    """Blob names the service worked on (stored, or matched as already there), by its upload counters."""
    return {name for name, data in Uploads.of(stack.customvision.url, project_id).by_name.items() if data["entries"]}


def held_mid_batch(stack: LocalStack, shared: SharedProject, host: Host) -> set[str]:
    """The names the host holds claims on, once the service has stored some of them (a batch sent and not yet
    recorded); empty until then."""
    held = claims_of(shared, host)
    return held if held & stored_names(stack, shared.project_id) else set()


def check_sent_twice_only_if_held(evidence: Evidence, held_by_killed: set[str]) -> None:
    """No blob reached the service twice unless a killed host held it (its answer may have died with it)."""
    twice = sorted(name for name, data in evidence.uploads.by_name.items() if data.get("entries", 0) > 1)
    unjustified = [name for name in twice if name not in held_by_killed]
    if unjustified:
        raise PropertyViolated(
            f"re-sent: {len(unjustified)} blob(s) reached the service more than once though no killed host "
            f"held them, e.g. {unjustified[:3]}"
        )


def check_hosts(evidence: Evidence, held_by_killed: set[str]) -> ResendBound:
    """The multi-host property: every eligible blob in the project exactly once, nothing rejected sent, the
    ledger agreeing with the project, and each blob sent by one host only (a killed host's claims excepted)."""
    check_exactly_once(evidence)
    bound = ResendBound(len(held_by_killed), f"{len(held_by_killed)} blobs claimed by the host killed mid-batch")
    check_resend_bound(evidence, bound)
    check_sent_twice_only_if_held(evidence, held_by_killed)
    return bound


def emulator_counts(stack: LocalStack) -> dict[str, Any]:
    stats = requests.get(f"{stack.customvision.url}/_emulator/stats", timeout=10).json()
    plan = requests.get(f"{stack.customvision.url}/_emulator/faults", timeout=10).json()
    return {"answered429": stats["answered429"], "throttled": stats["throttled"], "storms": plan}


def test_three_hosts_on_the_shared_ledger_push_each_frame_once_through_faults(
    shared_key_stack, bed, table_service, cv_plan, tmp_path
):
    stack, started = shared_key_stack, time.monotonic()
    shared = shared_project(stack, table_service, bed)
    project = shared.project_id
    eligible = len(bed.names) - len(bed.rejected)
    before_run = emulator_counts(stack)
    cv_plan(STORMS)
    deadline = time.monotonic() + DEADLINE_SECONDS
    newest = {blob.name for blob in shared.observer.blobs(model_versions=(NEWEST,))}
    # Started slowest first: the reviewer reads its selection's state before it pushes.
    review = [*HOSTS, "reviewer", "--tag", REVIEW_TAG, "--actor", REVIEWER_ACTOR]
    review += [argument for version in REVIEWED for argument in ("--version", version)]
    reviewer = Host.start("reviewer", review, tmp_path / "reviewer", stack, shared.settings)
    function = Host.start("function", [*HOSTS, "function"], tmp_path / "function", stack, shared.settings)
    function.feed([name for name in bed.names if name in newest])  # in the order they were written
    cli = start_cli("run-1", tmp_path / "cli", stack, shared.settings)
    hosts = [cli, function, reviewer]
    try:
        # The table service restarts once a fifth of the frames is in the project.
        wait_for(lambda: images_in(stack, project) >= eligible // 5, "a fifth in the project", deadline, hosts)
        table_service.restart()
        in_project_at_restart = images_in(stack, project)

        # The CLI is killed while a batch of its is stored by the service and not yet recorded in the ledger.
        held_before = wait_for(lambda: held_mid_batch(stack, shared, cli), "the CLI mid-batch", deadline, [cli])
        os.kill(cli.process.pid, signal.SIGKILL)
        cli.process.wait(30)
        # Its claims stay, held by a dead run, until another run takes them over (the other hosts may already).
        held_by_killed = held_before | claims_of(shared, cli)
        recorded = {row["name"] for row in shared.ledger.pushed(project)}  # before the counters: see below
        before_restart = Uploads.of(stack.customvision.url, project)
        stored_unrecorded = (held_by_killed & stored_names(stack, project)) - recorded
        assert stored_unrecorded and len(recorded) < eligible, "the kill was not mid-batch"

        # The operator starts it again, in the same folder; every host must end well.
        cli_again = start_cli("run-2", tmp_path / "cli", stack, shared.settings)
        hosts = [cli_again, function, reviewer]
        finished = {host.label: host.finish(deadline) for host in hosts}
    finally:
        for host in hosts:
            host.stop()

    # Every eligible frame once, nothing rejected, the ledger right, and no blob sent by two hosts.
    evidence = Evidence.collect(stack, shared.observer, bed)
    bound = check_hosts(evidence, held_by_killed)
    # A blob recorded as pushed before the restart is never sent again, by any host (read in that order: a blob
    # recorded before the counters were read had its upload counted in them).
    check_no_resend_of_recorded(recorded, evidence.uploads.since(before_restart))

    # The faults fired, and every host did part of the work.
    after_run = emulator_counts(stack)
    assert [rule["fired"] for rule in after_run["storms"]] == [rule["times"] for rule in STORMS]
    answered_429 = after_run["answered429"] - before_run["answered429"]
    throttled_by_quota = after_run["throttled"] - before_run["throttled"]  # as the hosts' pace allows: not asserted
    pushes = Counter(
        event.actor for event in shared.ledger.events(action="push", project_id=project) if event.outcome == "pushed"
    )
    assert pushes[CLI_ACTOR] > 0 and pushes[FUNCTION_ACTOR] > 0, pushes
    function_counts = json.loads(finished["function"].splitlines()[-1].removeprefix("done "))
    assert not function_counts.get("poisoned")
    # The reviewer's selection is in the project with the reviewer's tag, whoever pushed each frame (the reviewer,
    # or another host before it: then the tag went onto that image), but for the frames it was told another run
    # was pushing at that moment (left to that run, untagged, as its report says).
    reviewed = json.loads(finished["reviewer"])
    blob_of_content = {sha256: name for name, sha256 in bed.sha256.items()}  # batches carry no blob names
    tagged = {
        blob_of_content[image.sha256]
        for image in stack.emulator.images(project)
        if REVIEW_TAG in {tag.tag_name for tag in image.tags}
    }
    selection = {name for name, _, _ in reviewed["outcomes"]} - set(bed.rejected)
    left_to_others = {name for name, _, reason in reviewed["outcomes"] if reason == left_out_because(BlobState.PUSHING)}
    untagged = sorted(selection - tagged - left_to_others)
    assert not untagged, f"{len(untagged)} frames of the reviewer's selection lack its tag, e.g. {untagged[:3]}"
    assert reviewed["selected"] == len(reviewed["outcomes"]), "frames of the selection the report says nothing of"

    seconds = round(time.monotonic() - started, 1)
    fault = (
        f"3 hosts (CLI push-all, Function handler, reviewer) on the shared ledger; {answered_429} 429s "
        f"({throttled_by_quota} from the key's quota); table service restarted at {in_project_at_restart} images in; "
        f"CLI SIGKILLed mid-batch ({len(stored_unrecorded)} of its blobs stored and not recorded, "
        f"{len(held_by_killed)} claimed, {len(recorded)} recorded in all) and run again"
    )
    record(
        "multi-host",
        "default",
        fault,
        [],
        answered_429 + 2,
        evidence,
        bound,
        run_count=len(hosts) + 1,
        pushes_by_host=dict(pushes),
        function=function_counts,
        reviewer=reviewed["counts"],
        seconds=seconds,
    )


@pytest.mark.parametrize("function_host", ["correct", "takes-over-live-claims"])
def test_control_a_host_that_takes_over_live_claims_fails_the_multi_host_check(
    function_host, shared_key_stack, bed, table_service, cv_plan, tmp_path
):
    """The check above, on a Function host fed exactly the blobs a live CLI run holds while the service holds
    back the answer of that run's first batch (stored, not yet recorded). A correct host leaves them to the
    CLI; one whose claims are last-writer-wins (patched in that child only) takes them over and sends them
    again. The project looks perfect either way: only the upload counters tell."""
    stack = shared_key_stack
    shared = shared_project(stack, table_service, bed)
    chosen = {"model_versions": (NEWEST,), "min_confidence": CONTROL_MIN_CONFIDENCE}  # about one batch of 64
    eligible = {blob.name for blob in shared.observer.blobs(**chosen)} - set(bed.rejected)
    deadline = time.monotonic() + DEADLINE_SECONDS
    command = [*HOSTS, "function"] + (["--takes-over-live-claims"] if function_host != "correct" else [])
    function = Host.start("function", command, tmp_path / "function", stack, shared.settings)
    hosts = [function]
    try:
        wait_for(lambda: "ready" in function.output, "the Function host ready", deadline, hosts)
        cv_plan([{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 3, "times": 1}])
        chosen_by_cli = ("--version", NEWEST, "--min-confidence", str(CONTROL_MIN_CONFIDENCE))
        cli = start_cli("run-1", tmp_path / "cli", stack, shared.settings, *chosen_by_cli)
        hosts.append(cli)
        in_batch = wait_for(lambda: held_mid_batch(stack, shared, cli), "the CLI's batch stored", deadline, hosts)
        function.feed(sorted(in_batch))
        outputs = {host.label: host.finish(deadline) for host in hosts}
    finally:
        for host in hosts:
            host.stop()

    evidence = Evidence.collect(stack, shared.observer, bed, eligible=eligible)
    check_exactly_once(evidence)  # content, provenance, rejections and the ledger: all fine in both variants
    if function_host == "correct":
        check_hosts(evidence, held_by_killed=set())
        said = Counter(line.split(" ", 1)[0] for line in outputs["function"].splitlines()[1:-1])
        assert said == {"skipped": len(in_batch)}, said  # left to the run that holds them
    else:
        with pytest.raises(PropertyViolated, match="re-sent"):
            check_hosts(evidence, held_by_killed=set())
