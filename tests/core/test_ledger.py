"""The ledger: review decisions, claims that keep two runs apart, push records and an append-only audit trail."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor

import pytest

from percept_core.ledger import Ledger

PROJECT = "0a8b5d3e-1111-4222-8333-944455556666"
KEYS = [("data", f"{10 + i}-2026-11-02-10-00-{i:02d}.jpg.dec", f"0x8D{i:04X}") for i in range(20)]


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite")


def test_reject_and_restore_are_recorded_with_the_reviewer(ledger):
    ledger.reject(KEYS[:2], actor="ana@example.com", reason="blurred")
    assert ledger.record(KEYS[0]).state == "rejected"
    assert ledger.record(KEYS[0]).reason == "blurred"
    ledger.restore(KEYS[:1], actor="ben@example.com")
    assert ledger.record(KEYS[0]).state == "new" and ledger.record(KEYS[1]).state == "rejected"
    events = ledger.events()
    assert [(e.actor, e.action, e.blob) for e in events[:3]] == [
        ("ben@example.com", "restore", KEYS[0][1]),
        ("ana@example.com", "reject", KEYS[1][1]),
        ("ana@example.com", "reject", KEYS[0][1]),
    ]


def test_the_audit_trail_cannot_be_edited_or_deleted(ledger):
    ledger.reject(KEYS[:1], actor="ana")
    db = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET actor='mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events")
    assert ledger.events()[0].actor == "ana"


def test_a_claim_keeps_a_second_run_off_and_a_push_settles_it(ledger, tmp_path):
    first, second = ledger.new_run_id(), ledger.new_run_id()
    claimed, skipped = ledger.claim(KEYS[:3], PROJECT, first, actor="a")
    assert claimed == KEYS[:3] and not skipped
    other = Ledger(tmp_path / "ledger.sqlite")  # another connection, as another process would have
    claimed2, skipped2 = other.claim(KEYS[:4], PROJECT, second, actor="b")
    assert claimed2 == [KEYS[3]]
    assert set(skipped2.values()) == {"being pushed by another run"}
    ledger.record_pushed(KEYS[0], PROJECT, image_id="img-0", sha256="aa", tags=["person"], actor="a")
    _, skipped3 = other.claim(KEYS[:1], PROJECT, second, actor="b")
    assert skipped3 == {KEYS[0]: "already pushed"}
    record = other.record(KEYS[0], PROJECT)
    assert (record.state, record.image_id, record.tags) == ("pushed", "img-0", ("person",))
    assert other.pushed_image_for_content(PROJECT, "aa") == "img-0"
    # another project is another target: the same blob may go there
    assert other.claim(KEYS[:1], "another-project", second, actor="b")[0] == KEYS[:1]


def test_rejected_blobs_are_never_claimed(ledger):
    ledger.reject(KEYS[:1], actor="ana")
    claimed, skipped = ledger.claim(KEYS[:2], PROJECT, ledger.new_run_id(), actor="x")
    assert claimed == [KEYS[1]] and skipped == {KEYS[0]: "rejected"}


def test_a_claim_left_by_a_dead_process_is_taken_over_at_once(ledger):
    script = textwrap.dedent(f"""
        import os
        from percept_core.ledger import Ledger
        ledger = Ledger({str(ledger.path)!r})
        print(ledger.claim([{KEYS[0]!r}], {PROJECT!r}, ledger.new_run_id(), actor="crashed")[0])
        os._exit(9)  # dies holding the claim, as a SIGKILL would leave it
    """)
    subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, timeout=60)
    assert ledger.record(KEYS[0], PROJECT).push_state == "pushing"
    claimed, skipped = ledger.claim([KEYS[0]], PROJECT, ledger.new_run_id(), actor="next run")
    assert claimed == [KEYS[0]] and not skipped


def test_a_stale_claim_from_another_host_expires_with_its_lease(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", lease_seconds=0.0)
    ledger.claim([KEYS[0]], PROJECT, "other-host:4242:abc", actor="remote")
    claimed, _ = ledger.claim([KEYS[0]], PROJECT, ledger.new_run_id(), actor="here")
    assert claimed == [KEYS[0]]
    patient = Ledger(tmp_path / "l.sqlite", lease_seconds=3600)
    patient.claim([KEYS[1]], PROJECT, "other-host:4242:abc", actor="remote")
    assert patient.claim([KEYS[1]], PROJECT, patient.new_run_id(), actor="here")[0] == []


def _claim_all(path: str) -> list:
    ledger = Ledger(path)
    run = ledger.new_run_id()
    got = []
    for key in KEYS:
        claimed, _ = ledger.claim([key], PROJECT, run, actor=run)
        got += claimed
    return got


def test_two_processes_claiming_at_once_split_the_work(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Ledger(path)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        first, second = pool.map(_claim_all, [path, path])
    assert sorted(first + second) == sorted(KEYS)
    assert not set(first) & set(second)


def test_failed_pushes_are_retried_and_released_claims_leave_no_trace(ledger):
    run = ledger.new_run_id()
    ledger.claim(KEYS[:2], PROJECT, run, actor="a")
    ledger.record_failed(KEYS[0], PROJECT, reason="503 from Custom Vision", actor="a", retryable=True)
    ledger.release([KEYS[1]], PROJECT, run)
    assert ledger.record(KEYS[0], PROJECT).state == "failed"
    assert ledger.record(KEYS[1], PROJECT).state == "new"
    claimed, _ = ledger.claim(KEYS[:2], PROJECT, ledger.new_run_id(), actor="b")
    assert claimed == KEYS[:2]
    assert ledger.summary(PROJECT) == {"pushing": 2}


def test_a_run_that_lost_its_claim_leaves_the_run_that_took_it_alone(tmp_path):
    path = tmp_path / "ledger.sqlite"
    slow = Ledger(path)
    taker = Ledger(path, lease_seconds=0.0)  # to it, the slow run's claim has expired
    slow_run, taker_run = slow.new_run_id(), taker.new_run_id()
    assert slow.claim(KEYS[:1], PROJECT, slow_run, actor="slow")[0] == KEYS[:1]
    assert taker.claim(KEYS[:1], PROJECT, taker_run, actor="taker")[0] == KEYS[:1]

    assert not slow.record_failed(KEYS[0], PROJECT, reason="timed out", actor="slow", retryable=True, claim=slow_run)
    assert not slow.record_pushed(KEYS[0], PROJECT, image_id="late", sha256="aa", tags=[], actor="slow", claim=slow_run)
    assert not slow.record_tags(KEYS[0], PROJECT, tags=["person"], actor="slow", claim=slow_run)
    slow.release(KEYS[:1], PROJECT, slow_run)
    [claim] = slow.claims(PROJECT)
    assert (claim.key, claim.run_id, slow.record(KEYS[0], PROJECT).state) == (KEYS[0], taker_run, "pushing")
    assert slow.heartbeat(KEYS[:1], PROJECT, slow_run) == KEYS[:1]  # the slow run learns it lost it
    assert {e.outcome for e in slow.events(action="claim-lost")} == {"failed", "pushed", "retagged"}
    assert not slow.events(action="push")

    assert taker.record_pushed(KEYS[0], PROJECT, image_id="img", sha256="aa", tags=[], actor="taker", claim=taker_run)
    record = slow.record(KEYS[0], PROJECT)
    assert (record.state, record.image_id) == ("pushed", "img")


def test_run_ids_are_unique_even_for_containers_that_share_a_hostname_and_pid(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "getpid", lambda: 1)  # pid 1 in every container
    ledgers = [Ledger(tmp_path / "shared.sqlite") for _ in range(2)]
    ids = [ledger.new_run_id() for ledger in ledgers for _ in range(500)]
    assert len(set(ids)) == len(ids)


def test_a_live_run_in_another_container_with_our_hostname_is_not_taken_for_dead(tmp_path, monkeypatch):
    """Its pid means nothing in our PID namespace: only its lease says whether it is alive."""
    import os

    import percept_core.ledger as ledger_module

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that does not exist here, but does in the other container
    here = Ledger(tmp_path / "shared.sqlite")
    monkeypatch.setattr(ledger_module, "_namespace_token", lambda: "elsewhere", raising=False)
    monkeypatch.setattr(os, "getpid", lambda: gone.pid)
    there = Ledger(tmp_path / "shared.sqlite")
    monkeypatch.undo()
    assert there.claim(KEYS[:1], PROJECT, there.new_run_id(), actor="container b")[0] == KEYS[:1]
    claimed, skipped = here.claim(KEYS[:1], PROJECT, here.new_run_id(), actor="container a")
    assert claimed == [] and skipped == {KEYS[0]: "being pushed by another run"}
