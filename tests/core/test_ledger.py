"""The ledger: review decisions, claims that keep two runs apart, push records and an append-only audit trail."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from percept_core.ledger import Ledger
from percept_core.state import BlobState, left_out_because

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
    assert {left_out_because(state) for state in skipped2.values()} == {"being pushed by another run"}
    ledger.record_pushed(KEYS[0], PROJECT, image_id="img-0", sha256="aa", tags=["person"], actor="a")
    _, skipped3 = other.claim(KEYS[:1], PROJECT, second, actor="b")
    assert skipped3 == {KEYS[0]: BlobState.PUSHED} and left_out_because(skipped3[KEYS[0]]) == "already pushed"
    record = other.record(KEYS[0], PROJECT)
    assert (record.state, record.image_id, record.tags) == ("pushed", "img-0", ("person",))
    assert other.pushed_image_for_content(PROJECT, "aa") == "img-0"
    # another project is another target: the same blob may go there
    assert other.claim(KEYS[:1], "another-project", second, actor="b")[0] == KEYS[:1]


def test_rejected_blobs_are_never_claimed(ledger):
    ledger.reject(KEYS[:1], actor="ana")
    claimed, skipped = ledger.claim(KEYS[:2], PROJECT, ledger.new_run_id(), actor="x")
    assert claimed == [KEYS[1]] and skipped == {KEYS[0]: BlobState.REJECTED}


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


def _claim_in_step(path: str, me: int, ready, entered, results) -> None:
    """Claim KEYS one by one so that, for every key, both processes are inside `claim` at once.

    Both meet at the barrier `ready` before each key. `entered[i][k]` is set by process i at the first statement of
    its claim of key k (BEGIN, before it waits for the lock). At its next statement (inside the transaction), each
    process waits until the other has begun too: whoever holds the lock then settles the key while the other is
    inside `claim`, waiting for it (or, were the lock broken, reading the same row).
    """
    ledger = Ledger(path)
    run = ledger.new_run_id()
    other = 1 - me
    current = {"key": 0, "statements": 0, "lost": False}

    def rendezvous(statement: str) -> None:
        current["statements"] += 1
        if current["statements"] == 1:
            entered[me][current["key"]].set()
        elif current["statements"] == 2 and not entered[other][current["key"]].wait(timeout=60):
            current["lost"] = True  # (an exception raised here would be swallowed by sqlite3)

    got = []
    try:
        ledger._db.set_trace_callback(rendezvous)  # the ledger's own connection: statements as SQLite runs them
        for index, key in enumerate(KEYS):
            # Both at the start line of this key (and done with the last one, whose lock the other may still hold)
            ready.wait(timeout=60)
            current.update(key=index, statements=0)
            claimed, skipped = ledger.claim([key], PROJECT, run, actor=run)
            if current["lost"]:
                raise TimeoutError("the other process never began its claim of this key")
            got.append((key, claimed == [key], skipped.get(key)))
        ledger._db.set_trace_callback(None)
    except Exception as exc:  # reported, and the other process let go at once, so the test fails fast
        ready.abort()
        for event in entered[me]:
            event.set()
        got = f"{KEYS[current['key']][1]}: {exc!r}"
    results.put((run, got))


def test_two_processes_claiming_the_same_blobs_at_once_get_each_exactly_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Ledger(path)
    context = multiprocessing.get_context("spawn")
    ready, entered, results = context.Barrier(2), [[context.Event() for _ in KEYS] for _ in range(2)], context.Queue()
    processes = [context.Process(target=_claim_in_step, args=(path, me, ready, entered, results)) for me in range(2)]
    for process in processes:
        process.start()
    (first_run, first), (second_run, second) = results.get(timeout=120), results.get(timeout=120)
    for process in processes:
        process.join(timeout=60)
    assert isinstance(first, list) and isinstance(second, list), (first, second)
    for (key, got_first, why_first), (_, got_second, why_second) in zip(first, second, strict=True):
        assert got_first != got_second, f"{key[1]}: claimed by {'both processes' if got_first else 'neither process'}"
        # the loser saw the winner's claim
        assert left_out_because(why_first or why_second) == "being pushed by another run"
    # The ledger agrees: each blob is held by one run, and the claims add up to every blob once.
    holders = {claim.key: claim.run_id for claim in Ledger(path).claims(PROJECT)}
    assert set(holders) == set(KEYS)
    assert {key for key, got, _ in first if got} == {k for k, run in holders.items() if run == first_run}
    assert {key for key, got, _ in second if got} == {k for k, run in holders.items() if run == second_run}


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
    assert claimed == [] and skipped == {KEYS[0]: BlobState.PUSHING}


def test_the_gallerys_snapshot_of_states_says_what_each_blobs_badge_says(ledger):
    # Every combination the ledger keeps: a review mark, a push under way, failed or done, and both at once.
    run = ledger.new_run_id()
    ledger.reject(KEYS[0:2], actor="ana")
    ledger.note_undecryptable(KEYS[2], reason="tampered", actor="run")
    ledger.mark_near_duplicates(KEYS[3:5], of=KEYS[9], actor="ana")
    ledger.claim(KEYS[5:7], PROJECT, run, actor="run")
    ledger.record_failed(KEYS[6], PROJECT, reason="quota", actor="run", retryable=True, claim=run)
    ledger.record_pushed(KEYS[7], PROJECT, image_id="img-7", sha256="77", tags=[], actor="run")
    ledger.record_pushed(KEYS[4], PROJECT, image_id="img-4", sha256="44", tags=[], actor="run")  # marked, then in
    ledger.record_failed(KEYS[1], PROJECT, reason="quota", actor="run", retryable=True)  # rejected, a push failed

    snapshot = ledger.states(PROJECT)
    badges = {key: ledger.record(key, PROJECT).state for key in KEYS}
    assert snapshot == {key: state for key, state in badges.items() if state != "new"}
    assert [snapshot[key] for key in KEYS[:8]] == [
        "rejected",
        "rejected",
        "undecryptable",
        "near_duplicate",
        "pushed",
        "pushing",
        "failed",
        "pushed",
    ]
    assert ledger.states(None) == {key: ledger.record(key).state for key in KEYS[:5]}
