"""The blob index's contract against a real container on Azurite: it agrees with the container after uploads,
deletions and overwrites, finds and counts what a listing finds, and resumes an interrupted sync."""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from percept_core.blob_index import SqliteBlobIndex, index_blob, page, sync
from percept_core.blob_index_table import TableBlobIndex
from percept_core.blobs import BlobFilter, RetrainingDataClient
from percept_core.errors import AuthenticationError, CuratorError

_containers = itertools.count()
MakeIndex = Callable[[str], object]


@pytest.fixture
def container(azurite) -> Iterator[ContainerClient]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        f"index{next(_containers)}x"
    )
    client.create_container()
    yield client
    client.delete_container()


@pytest.fixture(params=["sqlite", "table"])
def make_index(request, tmp_path) -> Iterator[MakeIndex]:
    """A factory of indexes of one container on one store: each call is another process."""
    made: list = []
    if request.param == "sqlite":

        def make(container: str):
            made.append(SqliteBlobIndex(tmp_path / "ledger.sqlite", container))
            return made[-1]

    else:
        service = request.getfixturevalue("table_service")
        prefix = f"t{uuid.uuid4().hex[:12]}"  # one table per test

        def make(container: str):
            made.append(TableBlobIndex.from_connection_string(service.connection_string, container, prefix=prefix))
            return made[-1]

    yield make
    for index in made:
        index.close()


# Device-like names and metadata: three model versions, confidences, capture times; and the awkward ones.
def _frames(count: int, *, start: int = 0) -> list[tuple[str, dict[str, str]]]:
    frames = []
    for i in range(start, start + count):
        version = ("1", "2", "3")[i % 3]
        stamp = f"2026-11-{1 + i % 5:02d}-{i % 24:02d}-{i % 60:02d}-00"
        metadata = {"model_name": "people-counter", "model_version": version, "confidence": f"{(i * 7) % 100 / 100}"}
        frames.append((f"{(i * 7) % 100:02d}-{stamp}-{i:05d}.jpg.dec", metadata))
    return frames


AWKWARD = [
    ("no-metadata.jpg.dec", {}),
    ("ÄÖ/Überwachung-55-2026-11-03-10-00-00.jpg.dec", {"model_name": "people-counter", "model_version": "2"}),
    ("bad-confidence.jpg.dec", {"model_name": "shelf", "model_version": "1", "confidence": "lots"}),
    ("<b>evil</b> 40-2026-11-02-10-00-00.jpg.dec", {"model_name": "../../bootstrap", "model_version": "1"}),
]


def _upload(container: ContainerClient, frames) -> None:
    for name, metadata in frames:
        container.upload_blob(name, b"\0" * 16, metadata=metadata, overwrite=True)


def _listed(data: RetrainingDataClient, blob_filter: BlobFilter | None = None) -> list[tuple[str, str]]:
    return [(b.name, b.etag) for b in data.list_blobs(blob_filter)]


def _indexed(index, blob_filter: BlobFilter | None = None) -> list[tuple[str, str]]:
    return [(b.name, b.etag) for b in index.blobs(blob_filter)]


def _by_name(index, found: list) -> list:
    """What the index found, for comparing with a listing: SQLite gives it in name order (asserted as given);
    Table Storage by partition and row, so its finds are put in name order (the same blobs, each once)."""
    return found if isinstance(index, SqliteBlobIndex) else sorted(found)


FILTERS = [
    BlobFilter(),
    BlobFilter(model_versions=("2",)),
    BlobFilter(model_names=("people-counter",), model_versions=("1", "3")),
    BlobFilter(min_confidence=0.3, max_confidence=0.5),
    BlobFilter(captured_from=date(2026, 11, 2), captured_to=date(2026, 11, 3)),
    BlobFilter(captured_from=datetime(2026, 11, 4, 12, 0), min_confidence=0.9),
    BlobFilter(name_prefix="1"),
    BlobFilter(name_contains="ÜBER"),
    BlobFilter(name_contains="00042"),
    BlobFilter(model_names=("shelf",)),
    BlobFilter(model_names=("nobody",)),
]


def test_a_sync_makes_the_index_agree_with_the_container_after_uploads_deletions_and_overwrites(container, make_index):
    _upload(container, [*_frames(120), *AWKWARD])
    data = RetrainingDataClient(container)
    index = make_index(container.container_name)
    assert index.built_at() is None  # never synced: not to be read
    first = sync(index, data, page_size=50)
    assert (first.listed, first.added, first.changed, first.removed) == (124, 124, 0, 0)
    assert index.built_at() is not None
    assert _by_name(index, _indexed(index)) == _listed(data)

    frames = _frames(120)
    container.delete_blob(frames[0][0])
    container.delete_blob(frames[119][0])  # the last name: removed at the listing's end
    _upload(container, [(frames[5][0], {**frames[5][1], "confidence": "0.99"})])  # overwritten: a new etag
    _upload(container, [(frames[6][0], {**frames[6][1], "model_version": "2"})])  # and filed under another version
    _upload(container, _frames(3, start=500))
    again = sync(make_index(container.container_name), data, page_size=50)  # another process
    assert (again.listed, again.added, again.changed, again.removed) == (125, 3, 2, 2)
    assert _by_name(index, _indexed(index)) == _listed(data)
    assert index.get(frames[5][0]).confidence == 0.99 and index.get(frames[0][0]) is None
    assert index.get(frames[6][0]).model_version == "2"

    for blob_filter in FILTERS:
        expected = _listed(data, blob_filter)
        assert _by_name(index, _indexed(index, blob_filter)) == expected, blob_filter
        assert index.count(blob_filter) == len(expected), blob_filter
    assert len(_listed(data, BlobFilter(name_contains="ÜBER"))) == 1  # the filters do select something
    assert 0 < len(_listed(data, FILTERS[5])) < 20


def test_rows_come_back_as_the_listing_parses_the_blob(container, make_index):
    _upload(container, AWKWARD)
    data = RetrainingDataClient(container)
    index = make_index(container.container_name)
    sync(index, data)
    for listed in data.list_blobs():
        indexed = index.get(listed.name)
        assert indexed == listed and indexed.metadata == listed.metadata and indexed.problems == listed.problems
    assert not index.get(AWKWARD[3][0]).has_model  # a hostile model name is as refused from the index


def test_an_interrupted_sync_resumes_from_its_last_page(container, make_index):
    _upload(container, _frames(90))
    data = RetrainingDataClient(container)
    index = make_index(container.container_name)
    pages = []

    def stop_after_two_pages(progress) -> None:
        pages.append(progress.done)
        if len(pages) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(index, data, page_size=20, progress=stop_after_two_pages)
    assert index.built_at() is None and len(_indexed(index)) == 40
    resumed = sync(make_index(container.container_name), data, page_size=20)
    assert resumed.resumed and resumed.listed == 50 and resumed.added == 50
    assert index.built_at() is not None and _by_name(index, _indexed(index)) == _listed(data)
    fresh = sync(index, data, page_size=20)
    assert not fresh.resumed and (fresh.listed, fresh.added, fresh.changed, fresh.removed) == (90, 0, 0, 0)


def test_pages_walk_the_index_with_a_continuation_and_a_state_predicate(container, make_index):
    _upload(container, _frames(100))
    data = RetrainingDataClient(container)
    index = make_index(container.container_name)
    sync(index, data)
    version_two = BlobFilter(model_versions=("2",))
    odd = {name for name, _ in _listed(data)[1::2]}
    expected = [name for name, _ in _listed(data, version_two) if name in odd]
    shown, token = [], None
    while True:
        current = page(index, version_two, page_size=7, continuation=token, predicate=lambda b: b.name in odd)
        assert len(current.blobs) == 7 or current.continuation is None
        shown += [b.name for b in current.blobs]
        token = current.continuation
        if token is None:
            break
    assert _by_name(index, shown) == expected and len(expected) > 7
    with pytest.raises(CuratorError, match="page token"):
        page(index, continuation="not-ours")


def test_one_new_or_deleted_blob_is_indexed_as_its_event_arrives(container, make_index):
    data = RetrainingDataClient(container)
    index = make_index(container.container_name)
    sync(index, data)
    [(name, metadata)] = _frames(1, start=7)
    _upload(container, [(name, metadata)])
    assert index_blob(index, data, name).name == name
    assert _by_name(index, _indexed(index)) == _listed(data)
    container.delete_blob(name)
    assert index_blob(index, data, name) is None and _indexed(index) == []


def test_two_hosts_indexing_two_versions_of_one_blob_at_once_leave_it_in_one_place(container, table_service):
    """Table Storage has no transaction across partitions: both hosts move the blob into their version's partition
    before either names it in the directory, and still it ends up in one partition, the one the directory names."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    hosts = [
        TableBlobIndex.from_connection_string(table_service.connection_string, container.container_name, prefix=prefix)
        for _ in range(2)
    ]
    data = RetrainingDataClient(container)
    [(name, metadata)] = _frames(1, start=3)
    versions = []
    for version in ("1", "2", "3"):
        _upload(container, [(name, {**metadata, "model_version": version})])
        versions.append(data.get_blob(name))
    hosts[0].put([versions[0]])
    both_moved = threading.Barrier(2)

    def directory_written_after_the_other_moved(host: TableBlobIndex):
        write_directory, waited = host._list, []

        def write(names, *, blobs, before):
            if not waited:  # the first time only: a host that lost the race writes again at once
                waited.append(both_moved.wait(timeout=60))
            return write_directory(names, blobs=blobs, before=before)

        return write

    for host in hosts:
        host._list = directory_written_after_the_other_moved(host)
    racers = [threading.Thread(target=host.put, args=([blob],)) for host, blob in zip(hosts, versions[1:], strict=True)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    named = hosts[0].get(name)
    assert named.etag in {versions[1].etag, versions[2].etag}
    assert _indexed(hosts[1]) == [(name, named.etag)]
    for version in ("1", "2", "3"):
        assert hosts[1].count(BlobFilter(model_versions=(version,))) == int(version == named.model_version)
    sync(hosts[1], data)  # the container has the last version: the index follows
    assert _indexed(hosts[0]) == [(name, versions[2].etag)] and hosts[0].count() == 1
    for host in hosts:
        host.close()


def test_a_table_service_that_refuses_the_key_says_so_without_quoting_it(table_service):
    wrong_key = "V3JvbmdLZXk" * 8
    connection_string = re.sub(r"AccountKey=[^;]+", f"AccountKey={wrong_key}", table_service.connection_string)
    index = TableBlobIndex.from_connection_string(connection_string, "data", prefix=f"t{uuid.uuid4().hex[:12]}")
    for call in (index.built_at, index.count, lambda: index.save_checkpoint("marker", "name")):
        with pytest.raises(AuthenticationError, match="refused") as refused:
            call()
        assert wrong_key not in str(refused.value) and "Storage Table Data Contributor" in refused.value.hint
    index.close()
