"""Push all untagged over 500 blobs under each fault real services produce: exactly once, nothing lost,
and no re-send beyond what the fault justifies.

Each test runs push-all under the fault, then once more with the services healthy (what a user does
after a failed run), and checks the project by content and provenance, the ledger against the project,
and the Custom Vision emulator's upload counters against a bound that follows from the fault
(tests/faults/checks.py: a fault answered before the work justifies no duplicate answer; an answer lost
or late after the work justifies one re-send of its entries). Every test then writes its row for the
README's Reliability table to test-artifacts/reliability/.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from percept_core import Outcome
from tests.faults.checks import Uploads, bound_from_lost_answers, check_no_resend_of_recorded, check_resend_bound
from tests.faults.conftest import FRAMES, assert_exactly_once, record


def recorded_pushed(curator) -> set[str]:
    """Blob names the ledger records as pushed to the curator's project."""
    return {row["name"] for row in curator.ledger.pushed(curator.customvision.project_id)}


def uploads(stack, curator) -> Uploads:
    return Uploads.of(stack.customvision.url, curator.customvision.project_id)


def check_second_run(evidence, recorded: set[str], before: Uploads):
    """The re-send bound of the whole case, and nothing recorded by the first run sent by the second."""
    bound = bound_from_lost_answers(evidence.uploads)
    check_resend_bound(evidence, bound)
    check_no_resend_of_recorded(recorded, evidence.uploads.since(before))
    return bound


def fired(url: str) -> int:
    return sum(rule["fired"] for rule in requests.get(f"{url}/_emulator/faults", timeout=10).json())


CV_FAULTS = {
    "429-storm": [
        {"operation": "CreateImagesFromFiles", "kind": "429", "probability": 0.3, "times": 12, "retry_after": 1}
    ],
    "500-and-503": [
        {"operation": "CreateImagesFromFiles", "kind": "500", "probability": 0.1, "times": 40},
        {"operation": "CreateImagesFromFiles", "kind": "503", "probability": 0.1, "times": 40, "retry_after": 0},
    ],
    "reset-before-request": [{"operation": "CreateImagesFromFiles", "kind": "reset", "probability": 0.1, "times": 40}],
    "reset-after-work": [
        {"operation": "CreateImagesFromFiles", "kind": "reset", "phase": "after", "probability": 0.1, "times": 40}
    ],
    "all-of-them-at-once": [
        {"operation": "CreateImagesFromFiles", "kind": "429", "probability": 0.03, "times": 5, "retry_after": 1},
        {"operation": "CreateImagesFromFiles", "kind": "503", "probability": 0.05, "times": 25},
        {"operation": "CreateImagesFromFiles", "kind": "reset", "probability": 0.05, "times": 25},
        {"operation": "CreateImagesFromFiles", "kind": "reset", "phase": "after", "probability": 0.05, "times": 25},
    ],
}


BEFORE_THE_WORK = {"429-storm", "500-and-503", "reset-before-request"}


@pytest.mark.parametrize("case", sorted(CV_FAULTS))
def test_push_all_untagged_under_custom_vision_faults(case, profile, fault_stack, fault_bed, fault_curator, cv_faults):
    cv_faults(CV_FAULTS[case])
    first = fault_curator.push_all_untagged()
    count = fired(fault_stack.customvision.url)
    assert count > 0, "the fault never fired: the test proves nothing"
    assert all(o.reason for o in first.failed)
    assert first.counts[Outcome.UNDECRYPTABLE] == 0
    cv_faults([])
    recorded, before = recorded_pushed(fault_curator), uploads(fault_stack, fault_curator)
    second = fault_curator.push_all_untagged()
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = check_second_run(evidence, recorded, before)
    if case in BEFORE_THE_WORK:  # nothing was stored by a failed call, so nothing may come back as a duplicate
        assert bound.duplicate_answers == 0 and evidence.uploads.duplicate_answers == 0
    assert first.counts[Outcome.FAILED] == second.counts[Outcome.PUSHED] + second.counts[Outcome.DUPLICATE]
    record(case, profile, json.dumps(CV_FAULTS[case]), [first, second], count, evidence, bound)


def test_custom_vision_down_for_longer_than_the_retries(profile, fault_stack, fault_bed, fault_curator, cv_faults):
    """Every upload fails for the whole first run: each item is reported with its reason, none is lost."""
    fault_curator.customvision.max_attempts = 2
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "503"}])
    first = fault_curator.push_all_untagged()
    count = fired(fault_stack.customvision.url)
    eligible = FRAMES - len(fault_bed.rejected)
    assert first.counts[Outcome.FAILED] == eligible and count == 2 * eligible
    assert all("Custom Vision refused upload images" in o.reason for o in first.failed)
    assert fault_curator.status()["failed"] == eligible
    cv_faults([])
    recorded, before = recorded_pushed(fault_curator), uploads(fault_stack, fault_curator)
    second = fault_curator.push_all_untagged()
    assert second.counts[Outcome.PUSHED] == eligible
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = check_second_run(evidence, recorded, before)
    assert evidence.uploads.refused_before_work == 2 * eligible and evidence.uploads.entries == eligible
    fault = "every upload 503 during the first run (2 attempts each)"
    record("custom-vision-down", profile, fault, [first, second], count, evidence, bound)


def test_429_storm_never_reaches_the_caller(profile, fault_stack, fault_bed, fault_curator, cv_faults):
    """429s are waited out (Retry-After) and retried: not one item fails because of them, none is sent twice."""
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "429", "times": 6, "retry_after": 1}])
    report = fault_curator.push_all_untagged()
    assert report.throttled == 6 and report.counts[Outcome.FAILED] == 0
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = bound_from_lost_answers(evidence.uploads)
    check_resend_bound(evidence, bound)
    assert evidence.uploads.refused_before_work == 6 and evidence.uploads.duplicate_answers == 0
    record("429-burst-single-run", profile, "6 x 429, Retry-After 1", [report], 6, evidence, bound)


def test_slow_answers_past_the_client_timeout_are_retried_without_duplicates(
    profile, fault_stack, fault_bed, fault_curator, cv_faults
):
    # The timeout leaves an answer not held back a wide margin on a busy machine (a 0.5 s timeout once gave up on
    # an ordinary answer there, and the re-send counted against the bound); the held ones come well after it.
    fault_curator.customvision.timeout_seconds = 2.0
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 3.0, "probability": 0.05, "times": 10}])
    first = fault_curator.push_all_untagged()
    count = fired(fault_stack.customvision.url)
    cv_faults([])
    recorded, before = recorded_pushed(fault_curator), uploads(fault_stack, fault_curator)
    second = fault_curator.push_all_untagged()
    assert count == 10 and first.counts[Outcome.DUPLICATE] >= 1  # the work was done before the timeout
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = check_second_run(evidence, recorded, before)
    assert bound.duplicate_answers == 10  # ten late answers: each justifies one re-send, no more
    fault = "10 answers held 3 s, client timeout 2 s"
    record("slow-answers-past-timeout", profile, fault, [first, second], count, evidence, bound)


def test_mm_token_expiry_and_5xx_on_keys(profile, fault_stack, fault_bed, fault_curator, mm_faults):
    """The curator holds a bearer token when it expires: the server's own expiry answer (not an injected one)
    reaches it, then two 503s; it logs in again and waits them out, and no item fails."""

    def mm_requests() -> dict[str, int]:
        return requests.get(f"{fault_stack.mm.url}/_emulator/stats", timeout=10).json()["requests"]

    fault_curator.decrypt(fault_curator.blob(fault_bed.names[0]))  # logged in; one version's key is cached
    logins = mm_requests().get("POST login", 0)
    expired = requests.post(f"{fault_stack.mm.url}/_emulator/expire-tokens", timeout=10)
    assert expired.json()["expired"] >= 1
    # The first keys request carries the expired token and reaches the server; the next two get 503.
    mm_faults([{"operation": "GET keys", "kind": "503", "skip": 1, "times": 2}])
    report = fault_curator.push_all_untagged()
    count = fired(fault_stack.mm.url)
    assert count == 2 and report.counts[Outcome.FAILED] == 0
    assert mm_requests()["POST login"] == logins + 1  # the expired token was renewed once
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = bound_from_lost_answers(evidence.uploads)
    check_resend_bound(evidence, bound)
    fault = "the held token expired (the server's answer), then 2 x 503 on keys"
    record("mm-token-expiry-and-5xx", profile, fault, [report], count + 1, evidence, bound)


def test_mm_down_for_longer_than_the_retries(profile, fault_stack, fault_bed, fault_curator, mm_faults):
    mm_faults([{"operation": "GET keys", "kind": "500"}])
    first = fault_curator.push_all_untagged()
    count = fired(fault_stack.mm.url)
    assert first.counts[Outcome.FAILED] == FRAMES - len(fault_bed.rejected)
    assert all("MM server" in o.reason for o in first.failed)
    assert count < 50  # failures are remembered per version, not retried for every blob
    mm_faults([])
    fault_curator.locker.forget()
    recorded, before = recorded_pushed(fault_curator), uploads(fault_stack, fault_curator)
    second = fault_curator.push_all_untagged()
    evidence = assert_exactly_once(fault_stack, fault_curator, fault_bed)
    bound = check_second_run(evidence, recorded, before)
    assert evidence.uploads.sent == len(evidence.eligible)  # nothing reached Custom Vision in the first run
    record("mm-down", profile, "every keys request 500 during the first run", [first, second], count, evidence, bound)


def test_azurite_stopped_and_restarted_during_a_run(profile, fault_stack, tmp_path):
    """Storage goes away mid-run and comes back on the same port with its data: the next run finishes."""
    from azure.storage.blob import BlobServiceClient

    from devstack.azurite import AzuriteProcess
    from devstack.servers import free_port
    from percept_core import Curator, KeyServiceClient, derive_key, encrypt_bytes
    from percept_core.images import sha256_hex
    from tests.faults.conftest import FaultBed
    from tests.support.frames import jpeg

    port, location = free_port(), str(tmp_path / "azurite")
    azurite = AzuriteProcess.start(port=port, location=location)
    try:
        client = KeyServiceClient(fault_stack.mm.url, bootstrap_secret=fault_stack.mm_config.bootstrap_secret)
        client.register_model("people-counter", "1.0")
        key = derive_key(client.get_key("people-counter", "1.0"))
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("data")
        container.create_container()
        names = [f"{10 + i % 80}-2026-11-21-10-{i // 60:02d}-{i % 60:02d}.jpg.dec" for i in range(FRAMES)]
        frames = [jpeg(50_000 + i, (64, 48)) for i in range(FRAMES)]
        for name, frame in zip(names, frames, strict=True):
            metadata = {"model_name": "people-counter", "model_version": "1.0"}
            container.upload_blob(name, encrypt_bytes(frame, key), metadata=metadata)
        project = fault_stack.new_project("azurite restart")
        settings = fault_stack.settings(
            custom_vision_project_id=project,
            mm_storage_connection_string=azurite.connection_string,
            percept_ledger_path=str(tmp_path / "ledger.sqlite"),
            custom_vision_rate_per_second="60",
        )
        curator = Curator(settings, actor="fault-suite")
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["report"] = curator.push_all_untagged()
            except Exception as exc:  # the listing itself may fail while storage is down
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 120
        while curator.ledger.summary(project).get("pushed", 0) < 100:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.02)  # polling the ledger with a deadline
        azurite.stop()
        time.sleep(1.0)  # storage stays away for a while: this is the fault itself, not synchronisation
        azurite = AzuriteProcess.start(port=port, location=location)
        worker.join(300)
        assert not worker.is_alive()
        first = outcome.get("report")
        second = Curator(settings, actor="fault-suite").push_all_untagged()
        bed = FaultBed(
            "data", names, rejected=[], sha256={n: sha256_hex(f) for n, f in zip(names, frames, strict=True)}
        )
        evidence = assert_exactly_once(fault_stack, Curator(settings), bed)
        # Storage going away fails downloads, never an upload's answer: nothing may come back as a duplicate.
        bound = bound_from_lost_answers(evidence.uploads)
        check_resend_bound(evidence, bound)
        runs = [r for r in (first, second) if r is not None]
        fault = "Azurite stopped for 1 s after 100 pushes, then restarted"
        record("azurite-restart", profile, fault, runs, 1, evidence, bound)
    finally:
        azurite.stop()
