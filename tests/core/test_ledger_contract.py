"""The ledger's contract, run against both backends: SQLite (one machine) and Azure Table Storage (on Azurite).

Each "host" is a ledger object of its own on the same store (another connection, another table client), as
another process or machine would have.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from percept_core import ConfigError, Curator
from percept_core.ledger import LEASE_SECONDS, Ledger
from percept_core.ledger_table import TableLedger, table_key
from percept_core.pipeline import Outcome, PushPipeline, PushReport
from percept_core.protocols import PushLedger
from percept_core.state import BlobState, left_out_because
from tests.support.frames import jpeg, upload_frames

from .fakes import FakeBlobSource, FakeCustomVision, PlainDecryptor

PROJECT = "0a8b5d3e-1111-4222-8333-944455556666"
# Names a RowKey could not hold as they are: slashes, a backslash, '#', '?', a control character, the separator.
KEYS = [("data", f"cam/{i:02d}\\2026#11?02\x01|{i}%.jpg.dec", f"0x8D{i:04X}") for i in range(30)]

MakeLedger = Callable[..., PushLedger]


@pytest.fixture(params=["sqlite", "table"])
def make_ledger(request, tmp_path) -> Iterator[MakeLedger]:
    """A factory of ledgers on one shared store: each call is another host."""
    made: list = []
    if request.param == "sqlite":

        def make(lease_seconds: float = LEASE_SECONDS):
            made.append(Ledger(tmp_path / "ledger.sqlite", lease_seconds=lease_seconds))
            return made[-1]

    else:
        service = request.getfixturevalue("table_service")
        prefix = f"t{uuid.uuid4().hex[:12]}"  # one set of tables per test

        def make(lease_seconds: float = LEASE_SECONDS):
            made.append(
                TableLedger.from_connection_string(
                    service.connection_string, prefix=prefix, lease_seconds=lease_seconds
                )
            )
            return made[-1]

    yield make
    for ledger in made:
        ledger.close()


def _exited_pid() -> int:
    """The pid of a process of this machine that has ended."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_a_claim_keeps_a_second_run_off(make_ledger):
    first_host, second_host = make_ledger(), make_ledger()
    first, second = first_host.new_run_id(), second_host.new_run_id()
    claimed, skipped = first_host.claim(KEYS[:3], PROJECT, first, actor="a")
    assert claimed == KEYS[:3] and not skipped
    claimed2, skipped2 = second_host.claim(KEYS[:4], PROJECT, second, actor="b")
    assert claimed2 == [KEYS[3]]
    assert {left_out_because(state) for state in skipped2.values()} == {"being pushed by another run"}
    assert {claim.key for claim in second_host.claims(PROJECT) if claim.live} == set(KEYS[:4])


def test_a_pushed_blob_is_skipped_and_keeps_its_image(make_ledger):
    first_host, second_host = make_ledger(), make_ledger()
    run = first_host.new_run_id()
    first_host.claim(KEYS[:2], PROJECT, run, actor="a")
    assert first_host.record_pushed(
        KEYS[0], PROJECT, image_id="img-0", sha256="aa", tags=["person"], actor="a", claim=run
    )
    claimed, skipped = second_host.claim(KEYS[:1], PROJECT, second_host.new_run_id(), actor="b")
    assert claimed == [] and left_out_because(skipped[KEYS[0]]) == "already pushed"
    record = second_host.record(KEYS[0], PROJECT)
    assert (record.state, record.image_id, record.tags) == (BlobState.PUSHED, "img-0", ("person",))
    assert second_host.pushed_image_for_content(PROJECT, "aa") == "img-0"
    assert second_host.pushed_image_count(PROJECT) == 1


def test_boxes_as_the_reviewer_saved_them_are_kept_with_the_pushed_image(make_ledger):
    ana, ben = make_ledger(), make_ledger()
    run = ana.new_run_id()
    ana.claim(KEYS[:2], PROJECT, run, actor="ana")
    ana.record_pushed(KEYS[0], PROJECT, image_id="img-0", sha256="aa", tags=["person"], actor="ana", claim=run)
    assert ben.record(KEYS[0], PROJECT).regions is None  # never saved: unknown, not "no boxes"
    boxes = [("person", 0.1, 0.2, 0.3, 0.4), ('forklift / "red" é', 0.5, 0.5, 0.25, 0.125)]
    assert ana.record_regions(KEYS[0], PROJECT, regions=boxes, actor="ana")
    assert ben.record(KEYS[0], PROJECT).regions == tuple(boxes)  # another host reads them back exactly
    assert ben.record_regions(KEYS[0], PROJECT, regions=[], actor="ben")
    assert ana.record(KEYS[0], PROJECT).regions == ()  # every box removed: known to have none
    assert not ana.record_regions(KEYS[1], PROJECT, regions=boxes, actor="ana")  # claimed, not in the project
    assert ana.record(KEYS[1], PROJECT).regions is None


def test_a_ledger_file_from_before_boxes_were_kept_opens_and_keeps_them(tmp_path):
    path = tmp_path / "ledger.sqlite"
    old = Ledger(path)
    old.record_pushed(KEYS[0], PROJECT, image_id="img-0", sha256="aa", tags=[], actor="a")
    old._db.execute("ALTER TABLE pushes DROP COLUMN regions")  # as the file was written before
    old.close()
    ledger = Ledger(path)
    assert ledger.record(KEYS[0], PROJECT).image_id == "img-0"
    assert ledger.record_regions(KEYS[0], PROJECT, regions=[("person", 0, 0, 1, 1)], actor="a")
    assert ledger.record(KEYS[0], PROJECT).regions == (("person", 0.0, 0.0, 1.0, 1.0),)


def test_a_claim_of_a_dead_or_expired_run_is_taken_over(make_ledger):
    first_host = make_ledger()
    dead_run = f"{first_host.host}:{_exited_pid()}:{first_host.new_run_id().split(':', 2)[2]}"
    first_host.claim(KEYS[:1], PROJECT, dead_run, actor="killed run")  # a process that has since died
    slow_run = first_host.new_run_id()
    first_host.claim(KEYS[1:2], PROJECT, slow_run, actor="slow run")  # alive, but past a zero-second lease
    patient, impatient = make_ledger(), make_ledger(lease_seconds=0)
    assert [claim.live for claim in patient.claims(PROJECT) if claim.key == KEYS[0]] == [False]
    assert patient.claim(KEYS[:2], PROJECT, patient.new_run_id(), actor="b")[0] == [KEYS[0]]
    assert impatient.claim(KEYS[1:2], PROJECT, impatient.new_run_id(), actor="c")[0] == [KEYS[1]]


def test_two_hosts_racing_for_the_same_keys_claim_each_exactly_once(make_ledger):
    hosts = [make_ledger(), make_ledger()]
    workers = 4
    runs = [hosts[index % 2].new_run_id() for index in range(workers)]
    start = threading.Barrier(workers)
    claimed: list[list] = [[] for _ in range(workers)]

    def race(index: int) -> None:
        order = KEYS if index % 2 else list(reversed(KEYS))
        start.wait()
        for key in order:
            claimed[index] += hosts[index % 2].claim([key], PROJECT, runs[index], actor=f"worker {index}")[0]

    threads = [threading.Thread(target=race, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(key for keys in claimed for key in keys) == Counter(KEYS)
    # The ledger names, for every key, the run that was told it holds it.
    owners = {claim.key: claim.run_id for claim in hosts[1].claims(PROJECT)}
    assert owners == {key: runs[index] for index, keys in enumerate(claimed) for key in keys}


def test_heartbeat_reports_the_claims_a_run_lost(make_ledger):
    slow_host, other_host = make_ledger(), make_ledger(lease_seconds=0)
    slow = slow_host.new_run_id()
    slow_host.claim(KEYS[:3], PROJECT, slow, actor="slow")
    assert slow_host.heartbeat(KEYS[:3], PROJECT, slow) == []
    other_host.claim(KEYS[1:2], PROJECT, other_host.new_run_id(), actor="other")  # the lease ran out for it
    assert slow_host.heartbeat([*KEYS[:3], KEYS[5]], PROJECT, slow) == [KEYS[1], KEYS[5]]


def test_a_run_that_lost_its_claim_does_not_overwrite_the_outcome(make_ledger):
    slow_host, other_host = make_ledger(), make_ledger(lease_seconds=0)
    slow, other = slow_host.new_run_id(), other_host.new_run_id()
    slow_host.claim(KEYS[:2], PROJECT, slow, actor="slow")
    assert other_host.claim(KEYS[:2], PROJECT, other, actor="other")[0] == KEYS[:2]
    assert other_host.record_pushed(
        KEYS[0], PROJECT, image_id="img-other", sha256="bb", tags=["car"], actor="other", claim=other
    )
    written = slow_host.record_pushed(
        KEYS[0], PROJECT, image_id="img-slow", sha256="bb", tags=["person"], actor="slow", claim=slow
    )
    failed = slow_host.record_failed(KEYS[1], PROJECT, reason="timeout", actor="slow", retryable=True, claim=slow)
    assert (written, failed) == (False, False)
    record = other_host.record(KEYS[0], PROJECT)
    assert (record.state, record.image_id, record.tags) == (BlobState.PUSHED, "img-other", ("car",))
    assert other_host.record(KEYS[1], PROJECT).state == BlobState.PUSHING  # still the other run's
    lost = other_host.events(action="claim-lost")
    assert sorted((event.blob, event.outcome, event.actor) for event in lost) == [
        (KEYS[0][1], "pushed", "slow"),
        (KEYS[1][1], "failed", "slow"),
    ]


def test_the_audit_trail_keeps_every_event_as_written(make_ledger):
    hosts = [make_ledger(), make_ledger()]
    hosts[0].reject(KEYS[:1], actor="ana", reason="blurred")
    rejection = hosts[0].events()[0]
    start = threading.Barrier(4)

    def log(index: int) -> None:
        start.wait()
        for n in range(15):
            hosts[index % 2].log(f"worker {index}", "note", project_id=PROJECT, details={"n": n})

    threads = [threading.Thread(target=log, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hosts[1].restore(KEYS[:1], actor="ben")
    events = hosts[1].events()
    notes = [(event.actor, event.details["n"]) for event in events if event.action == "note"]
    assert sorted(notes) == sorted((f"worker {index}", n) for index in range(4) for n in range(15))
    assert (events[0].actor, events[0].action) == ("ben", "restore")  # newest first
    assert events[-1] == rejection  # the first event, as it was written
    assert hosts[0].record(KEYS[0]).state == BlobState.NEW


def test_every_blob_name_makes_a_valid_table_key():
    for name in ["a/b", "a\\b", "a#b", "a?b", "tab\there", "nul\x00", "del\x7f", "x" * 1024, "é" * 1024]:
        key = table_key("data", name, "0x8D01")
        assert not any(char in key for char in "/\\#?") and key.isprintable()
        assert len(key.encode("utf-16-le")) <= 1024
    assert table_key("data", "a|b", "e") != table_key("data", "a", "b|e")  # the separator cannot be forged
    assert table_key("data", "a/b", "e") != table_key("data", "a%2Fb", "e")  # nor an escape


def test_the_table_ledger_keeps_a_blob_name_of_1024_characters(table_service):
    ledger = TableLedger.from_connection_string(table_service.connection_string, prefix=f"t{uuid.uuid4().hex[:12]}")
    key = ("data", "cam/" + "x" * 1020, "0x8D01")
    ledger.reject([key], actor="ana", reason="blurred")
    assert ledger.record(key).state == BlobState.REJECTED
    assert ledger.keys_in_state(PROJECT, BlobState.REJECTED) == {key}
    ledger.close()


def test_two_hosts_pushing_the_same_frames_at_once_send_each_once(make_ledger):
    source, project = FakeBlobSource(), FakeCustomVision(max_attempts=3)
    blobs = source.add_frames(40)
    hosts = [make_ledger(), make_ledger()]
    start = threading.Barrier(len(hosts))
    reports: list[PushReport] = []

    def push_all(ledger: PushLedger) -> None:
        start.wait()
        reports.append(PushPipeline(source, PlainDecryptor(), project, ledger).push_all_untagged(actor="host"))

    threads = [threading.Thread(target=push_all, args=(ledger,)) for ledger in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(report.counts[Outcome.PUSHED] for report in reports) == 40
    assert all(len(project.images_of(blob.name)) == 1 for blob in blobs)
    assert hosts[0].pushed_image_count(project.project_id) == 40 and hosts[1].claims(project.project_id) == []


def test_two_reviewers_on_two_hosts_see_each_others_decisions(make_ledger):
    ana, ben = make_ledger(), make_ledger()
    ana.reject(KEYS[:2], actor="ana@example.com", reason="blurred")
    ben.mark_near_duplicates(KEYS[2:3], of=KEYS[3], actor="ben@example.com")
    ben.restore(KEYS[1:2], actor="ben@example.com")
    assert ana.states(PROJECT) == {KEYS[0]: BlobState.REJECTED, KEYS[2]: BlobState.NEAR_DUPLICATE}
    assert ana.record(KEYS[1]).state == BlobState.NEW  # restored
    assert ana.keys_in_state(PROJECT, BlobState.REJECTED, container="data") == {KEYS[0]}
    assert ben.record(KEYS[0]).reason == "blurred"
    assert ben.summary(PROJECT) == {"rejected": 1, "near_duplicate": 1}
    assert [(event.actor, event.action) for event in ana.events(since="2020-01-01T00:00:00+00:00", limit=2)] == [
        ("ben@example.com", "restore"),
        ("ben@example.com", "near-duplicate"),
    ]
    assert [event.blob for event in ben.events(actor="ana@example.com")] == [KEYS[1][1], KEYS[0][1]]


# -- the settings choose it ----------------------------------------------------------------------------------


def test_two_hosts_whose_settings_name_the_shared_ledger_push_each_frame_once(stack, table_service):
    """Two Curators built from settings alone (as two machines would be) share the tables: what one pushed, the
    other skips, and both see the same review state."""
    project = stack.new_project("shared-ledger")
    prefix = f"s{uuid.uuid4().hex[:12]}"
    container = f"shared{uuid.uuid4().hex[:8]}"
    names = upload_frames(stack, container, [jpeg(7000 + i, (160, 120)) for i in range(8)])

    def host(actor: str) -> Curator:
        settings = stack.settings(
            custom_vision_project_id=project,
            mm_telemetry_storage_container=container,
            percept_ledger_table_connection_string=table_service.connection_string,
            percept_ledger_table_prefix=prefix,
        )
        return Curator(settings, actor=actor)

    first, second = host("host-a"), host("host-b")
    assert isinstance(first.ledger, TableLedger) and first.ledger is not second.ledger
    assert first.ledger.location == f"{table_service.connection_string.split('TableEndpoint=')[1].rstrip(';')} " + (
        f"(tables {prefix}*)"
    )
    pushed = first.push_all_untagged()
    assert pushed.counts[Outcome.PUSHED] == len(names)
    again = second.push_all_untagged()
    assert again.outcomes == []  # the shared ledger says every frame is in: none is even claimed
    assert len(stack.emulator.images(project)) == len(names)
    assert {row["name"] for row in second.ledger.pushed(project)} == set(names)


def test_one_ledger_is_chosen_or_the_settings_are_refused(stack, table_service, tmp_path):
    with pytest.raises(ConfigError, match="each choose a ledger"):
        stack.settings(
            percept_ledger_path=str(tmp_path / "ledger.sqlite"),
            percept_ledger_table_connection_string=table_service.connection_string,
        )
    with pytest.raises(ConfigError, match="percept_ledger_table_prefix"):
        stack.settings(
            percept_ledger_table_endpoint="https://acct.table.core.windows.net", percept_ledger_table_prefix="a-b"
        )
    with pytest.raises(ConfigError, match="https"):
        stack.settings(percept_ledger_table_endpoint="http://acct.table.core.windows.net")
