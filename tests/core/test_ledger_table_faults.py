"""What only the shared ledger meets: a table service that throttles, fails, restarts, loses answers, and other
hosts writing the same entity between this host's read and its write.

The table service is Azurite's, reached through devstack/storage_faults.py (a proxy applying a fault plan, as the
emulators' plans do) where a test needs faults. The contract both ledgers keep is tests/core/test_ledger_contract.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient, UpdateMode

from devstack.azurite import ACCOUNT_KEY, table_connection_string
from devstack.servers import ServerHandle, serve_in_thread
from devstack.storage_faults import storage_fault_proxy
from percept_core import ledger_table
from percept_core.errors import ServiceError
from percept_core.ledger_table import TableLedger
from percept_core.state import PushState, Review
from tests.support.azurite_table import AzuriteTableProcess

PROJECT = "0a8b5d3e-1111-4222-8333-944455556666"
KEY = ("data", "cam/07#1?.jpg.dec", "0x8D07")
OTHER = ("data", "cam/08.jpg.dec", "0x8D08")
RUN = "run-a"
SHA = "ab" * 32


@dataclass
class FaultyTables:
    """Azurite's Table service behind the fault proxy."""

    proxy: ServerHandle
    app: Any

    @property
    def connection_string(self) -> str:
        return table_connection_string(self.proxy.host, self.proxy.port)

    def plan(self, rules: list[dict[str, Any]], seed: int = 7) -> None:
        answer = requests.post(f"{self.proxy.url}/_emulator/faults", json={"rules": rules, "seed": seed}, timeout=10)
        answer.raise_for_status()

    def fired(self) -> Counter:
        return Counter({kind: count for kind, count in self.app.state.faults.items()})


@pytest.fixture
def faulty_tables(table_service) -> Iterator[FaultyTables]:
    app = storage_fault_proxy(f"http://{table_service.host}:{table_service.port}")
    proxy = serve_in_thread(app)
    yield FaultyTables(proxy, app)
    proxy.stop()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _kinds(fired: Counter) -> Counter:
    """Faults fired per kind ("429", "503", "reset"), over every operation."""
    kinds: Counter = Counter()
    for name, count in fired.items():
        kinds[name.rsplit(" ", 1)[1]] += count
    return kinds


# --- throttling, outages, lost answers ---------------------------------------------------------------------


def test_throttling_failures_and_lost_answers_never_reach_the_caller_nor_write_twice(faulty_tables):
    """Two hosts race for the same frames while the table service answers 429 and 503 and loses answers."""
    prefix = _prefix()
    hosts = [TableLedger.from_connection_string(faulty_tables.connection_string, prefix=prefix) for _ in range(2)]
    keys = [("data", f"cam/{i:03d}.jpg.dec", f"0x8D{i:04X}") for i in range(16)]
    faulty_tables.plan(
        [
            {"operation": "*", "kind": "429", "probability": 0.1, "retry_after": 0},
            {"operation": "*", "kind": "503", "probability": 0.1},
            {"operation": "POST *", "kind": "reset_after", "probability": 0.2},  # a create landed, its answer lost
            {"operation": "PUT *", "kind": "reset_after", "probability": 0.1},  # a replace landed, its answer lost
        ]
    )
    claimed: dict[str, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def push(ledger: TableLedger, run_id: str) -> None:
        try:
            start.wait(10)
            won, _ = ledger.claim(keys, PROJECT, run_id, actor=run_id)
            claimed[run_id] = won
            for key in won:
                assert ledger.record_pushed(
                    key, PROJECT, image_id=f"img-{key[1]}", sha256=None, tags=(), actor=run_id, claim=run_id
                ), f"{run_id} lost {key[1]} that it pushed"
        except BaseException as exc:  # reported below, with the run that met it
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(host, f"run-{i}")) for i, host in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    faulty_tables.plan([])

    everyone = [key for won in claimed.values() for key in won]
    assert sorted(everyone) == sorted(keys)  # each frame claimed by exactly one host
    reader = TableLedger.from_connection_string(faulty_tables.connection_string, prefix=prefix)
    assert reader.summary(PROJECT) == {PushState.PUSHED: len(keys)}
    pushes = Counter(event.blob for event in reader.events(action="push"))
    assert pushes == Counter({key[1]: 1 for key in keys})  # the audit trail holds each push once
    kinds = _kinds(faulty_tables.fired())
    assert kinds["429"] and kinds["503"] and kinds["reset"], kinds  # the faults did fire


def test_a_table_service_that_stays_down_ends_the_step_with_a_clear_error_naming_no_secret(faulty_tables):
    ledger = TableLedger(
        TableServiceClient.from_connection_string(
            faulty_tables.connection_string, retry_total=2, retry_backoff_factor=0
        ),
        prefix=_prefix(),
    )
    faulty_tables.plan([{"operation": "*", "kind": "503"}])
    with pytest.raises(ServiceError) as caught:
        ledger.claim([KEY], PROJECT, RUN, actor="reviewer")
    message = str(caught.value)
    assert caught.value.retryable and caught.value.status == 503
    assert f"127.0.0.1:{faulty_tables.proxy.port}" in message and "Run it again" in message
    assert ACCOUNT_KEY not in message and ACCOUNT_KEY[:12] not in repr(caught.value.__dict__)


def test_a_run_rides_through_a_restart_of_the_table_service(tmp_path):
    """The table service stops and starts again while a run claims and records: nothing fails, nothing is lost."""
    service = AzuriteTableProcess.start(tmp_path / "tables")
    try:
        ledger = TableLedger.from_connection_string(service.connection_string, prefix=_prefix())
        keys = [("data", f"cam/{i:03d}.jpg.dec", f"0x8D{i:04X}") for i in range(60)]
        recorded: list = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                for key in keys:
                    won, _ = ledger.claim([key], PROJECT, RUN, actor="cli")
                    assert won == [key]
                    ledger.record_pushed(key, PROJECT, image_id=f"img-{key[1]}", sha256=None, tags=(), actor="cli")
                    recorded.append(key)
            except BaseException as exc:  # reported below
                errors.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        _wait_for(lambda: len(recorded) >= 15 or not worker.is_alive())
        service.restart()
        worker.join(300)
        assert not errors, errors
        assert len(recorded) == len(keys)
        assert ledger.summary(PROJECT) == {PushState.PUSHED: len(keys)}
        assert len(ledger.events(action="push")) == len(keys)
    finally:
        service.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)  # polling an observable condition with a deadline


# --- another host writes between this host's read and its write, for every kind of write -------------------

MARK = "written_by_another_host"


@dataclass(frozen=True)
class WriteCase:
    """One kind of write: its table, the state before it, the write, and what must hold after another host's
    write came between its read and its own."""

    table: str
    prepare: Callable[[TableLedger], Any]
    write: Callable[[TableLedger], Any]
    then: Callable[[dict[str, Any] | None, Any], None]
    # How the other host writes: "mark" adds a property of its own (created when the entity is absent), "claim"
    # takes the item's claim for another run (after which this host's decision is to write nothing).
    interference: str = "mark"


def _claimed(ledger: TableLedger) -> None:
    ledger.claim([KEY], PROJECT, RUN, actor="cli")


def _pushed(ledger: TableLedger) -> None:
    _claimed(ledger)
    ledger.record_pushed(KEY, PROJECT, image_id="img-1", sha256=SHA, tags=("person",), actor="cli", claim=RUN)


def _kept(expect: dict[str, Any]) -> Callable[[dict[str, Any] | None, Any], None]:
    def then(entity: dict[str, Any] | None, result: Any) -> None:
        assert entity is not None and entity.get(MARK) == "yes", "the other host's write was overwritten"
        for name, value in expect.items():
            assert entity.get(name) == value, (name, entity.get(name))

    return then


def _nothing(ledger: TableLedger) -> None:
    return None


WRITES: dict[str, WriteCase] = {
    "reject": WriteCase(
        "blobs", _nothing, lambda lg: lg.reject([KEY], actor="ana"), _kept({"review": Review.REJECTED})
    ),
    "restore": WriteCase(
        "blobs",
        lambda lg: lg.reject([KEY], actor="ana"),
        lambda lg: lg.restore([KEY], actor="ana"),
        _kept({"review": Review.NEW}),
    ),
    "near-duplicate": WriteCase(
        "blobs",
        _nothing,
        lambda lg: lg.mark_near_duplicates([KEY], of=OTHER, actor="ana"),
        _kept({"review": Review.NEAR_DUPLICATE}),
    ),
    "note content": WriteCase("blobs", _nothing, lambda lg: lg.note_content(KEY, sha256=SHA), _kept({"sha256": SHA})),
    "note model": WriteCase(
        "blobs",
        _nothing,
        lambda lg: lg.note_models([(KEY, "people-counter", "1.0")]),
        _kept({"model_name": "people-counter", "model_version": "1.0"}),
    ),
    "note undecryptable": WriteCase(
        "blobs",
        _nothing,
        lambda lg: lg.note_undecryptable(KEY, reason="integrity: tampered", actor="cli"),
        _kept({"review": Review.UNDECRYPTABLE}),
    ),
    "claim": WriteCase(
        "pushes",
        _nothing,
        lambda lg: lg.claim([KEY], PROJECT, RUN, actor="cli")[0],
        lambda entity, won: (_kept({"state": PushState.PUSHING, "claim": RUN})(entity, won), _is(won, [KEY])),
    ),
    "claim taken first by another host": WriteCase(
        "pushes",
        _nothing,
        lambda lg: lg.claim([KEY], PROJECT, RUN, actor="cli")[0],
        lambda entity, won: (_is(entity["claim"], "run-b"), _is(won, [])),
        interference="claim",
    ),
    "heartbeat": WriteCase(
        "pushes",
        _claimed,
        lambda lg: lg.heartbeat([KEY], PROJECT, RUN),
        lambda entity, lost: (_kept({"claim": RUN})(entity, lost), _is(lost, [])),
    ),
    "release after another host took the claim": WriteCase(
        "pushes",
        _claimed,
        lambda lg: lg.release([KEY], PROJECT, RUN),
        lambda entity, _: _is(entity and entity["claim"], "run-b"),
        interference="claim",
    ),
    "record pushed": WriteCase(
        "pushes",
        _claimed,
        lambda lg: lg.record_pushed(KEY, PROJECT, image_id="img-1", sha256=SHA, tags=(), actor="cli", claim=RUN),
        lambda entity, held: (_kept({"state": PushState.PUSHED, "image_id": "img-1"})(entity, held), _is(held, True)),
    ),
    "record failed": WriteCase(
        "pushes",
        _claimed,
        lambda lg: lg.record_failed(KEY, PROJECT, reason="503", actor="cli", retryable=True, claim=RUN),
        lambda entity, held: (_kept({"state": PushState.FAILED})(entity, held), _is(held, True)),
    ),
    "record tags": WriteCase(
        "pushes",
        _pushed,
        lambda lg: lg.record_tags(KEY, PROJECT, tags=("person", "product"), actor="ana", added=("product",)),
        _kept({"tags": '["person", "product"]'}),
    ),
    "forget push": WriteCase(
        "pushes",
        _pushed,
        lambda lg: lg.forget_push(KEY, PROJECT, actor="cli", reason="image deleted in the portal"),
        lambda entity, _: _is(entity, None),
    ),
}


def _is(actual: Any, expected: Any) -> None:
    assert actual == expected, (actual, expected)


@pytest.mark.parametrize("case", list(WRITES.values()), ids=list(WRITES))
def test_a_write_that_meets_another_hosts_write_decides_again_on_it(table_service, monkeypatch, case: WriteCase):
    """Between this host's read and its write, another host writes the same entity: the write fails on its
    ETag (412) or on the entity's existence (409), is decided again on what is there, and never overwrites it."""
    prefix = _prefix()
    ledger = TableLedger.from_connection_string(table_service.connection_string, prefix=prefix)
    other = TableServiceClient.from_connection_string(table_service.connection_string).get_table_client(
        f"{prefix}{case.table}"
    )
    case.prepare(ledger)

    real_write = TableLedger._write
    attempts: list[str] = []

    def write_after_another_host(table, address, current, write) -> None:
        if table.table_name == other.table_name and write.entity is not None:
            attempts.append("conflict" if not attempts else "again")
            if len(attempts) == 1:
                _interfere(other, address, current, case.interference)
        real_write(table, address, current, write)

    monkeypatch.setattr(TableLedger, "_write", staticmethod(write_after_another_host))
    result = case.write(ledger)
    monkeypatch.undo()

    # The first write failed on the other host's; decided again on it, this host writes again or, where the other
    # host took the claim, not at all.
    assert attempts == (["conflict"] if case.interference == "claim" else ["conflict", "again"])
    address = ledger._push_address(KEY, PROJECT) if case.table == "pushes" else ledger._blob_address(KEY)
    found = ledger._get(other, address)
    case.then(dict(found) if found is not None else None, result)


def _interfere(table, address: tuple[str, str], current, how: str) -> None:
    """Another host's write to the entity, made without regard to this host's read."""
    entity = {"PartitionKey": address[0], "RowKey": address[1]}
    if how == "claim":
        entity.update(state=PushState.PUSHING.value, claim="run-b", claimed_at=time.time())
        if current is not None:
            entity = {**dict(current), **entity}
    else:
        entity[MARK] = "yes"
    if current is None:
        table.create_entity(entity)
    else:
        table.update_entity(entity, mode=UpdateMode.MERGE)


# --- many-key reads ------------------------------------------------------------------------------------------


def test_many_key_reads_find_every_key_whether_its_neighbours_are_asked_for_or_not(table_service, monkeypatch):
    """A chunk of neighbouring names is one range query; keys far apart, with many rows between them, and
    keys never seen are read right too (the range gives way to point reads)."""
    monkeypatch.setattr(ledger_table, "RANGE_READ_PAGE", 10)  # a small page: "many rows between" stays small
    ledger = TableLedger.from_connection_string(table_service.connection_string, prefix=_prefix())
    keys = [("data", f"cam/{i:04d}.jpg.dec", f"0x8D{i:04X}") for i in range(240)]
    rejected = set(keys[::2])
    ledger.reject(sorted(rejected), actor="ana")  # rows at every other name
    point_reads: list = []
    real_get = ledger._get
    monkeypatch.setattr(ledger, "_get", lambda table, address: point_reads.append(address) or real_get(table, address))
    neighbours = keys[100:124]
    far_apart = [keys[0], keys[1], keys[120], keys[239], keys[238]]
    never_seen = [("data", "cam/0100.jpg.dec", "0xOTHER"), ("other", "cam/0001.jpg.dec", "0x8D0001")]
    for asked, range_only in ((neighbours, True), (far_apart + never_seen, False)):
        point_reads.clear()
        records = ledger.records(asked)
        assert set(records) == {key for key in asked if key in rejected}
        assert all(record.review == Review.REJECTED for record in records.values())
        # Neighbours: the range alone. Far apart: the range gave up, and the keys it had not reached (the other
        # partition's too) were read one by one.
        assert not point_reads if range_only else 3 <= len(point_reads) < len(asked)


def test_a_host_that_remembers_its_own_last_write_still_decides_on_what_another_host_wrote_since(table_service):
    """Each ledger remembers what it wrote last, to write again without reading it back; another host's write
    in between must still win: a write fails on its ETag and is decided again, and a decision to write nothing
    is taken on a fresh read."""
    prefix = _prefix()
    ana, ben = (TableLedger.from_connection_string(table_service.connection_string, prefix=prefix) for _ in range(2))
    ana.note_undecryptable(KEY, reason="integrity: tampered", actor="cli")
    ben.restore([KEY], actor="ben")  # ben looked at it and put it back
    ana.note_undecryptable(KEY, reason="integrity: tampered", actor="cli")  # the same finding, made again
    assert ben.record(KEY).review == Review.UNDECRYPTABLE  # not skipped as "already noted" on ana's memory

    ana.claim([OTHER], PROJECT, RUN, actor="cli")
    ben.claim([OTHER], PROJECT, "run-b", actor="cli")  # kept out: ana's run is alive
    ana.record_pushed(OTHER, PROJECT, image_id="img-1", sha256=SHA, tags=(), actor="cli", claim=RUN)
    ben.forget_push(OTHER, PROJECT, actor="ben", reason="image deleted in the portal")
    assert ana.claim([OTHER], PROJECT, "run-c", actor="cli")[0] == [OTHER]  # not kept out as "pushed"
