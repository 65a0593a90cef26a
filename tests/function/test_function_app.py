"""The blob-trigger Function, called as the Functions host calls it, against the devstack."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import pytest
import requests

from percept_core import AuthenticationError, Curator, Ledger, Outcome
from tests.support.disk_scan import scan, writable_areas
from tests.support.frames import jpeg, upload_frames

from .conftest import LOGGER, FunctionHost, input_stream, load_function_app, set_app_settings

BAD_REASONS = {
    "tampered": "integrity check",
    "truncated": "integrity check",
    "not-an-image": "not an image",
    "no-metadata": "missing metadata",
    "unknown-version": "unknown model version",
}


def good_blobs(stack, demo, count: int | None = None):
    curator = Curator(stack.settings())
    blobs = sorted((b for b in curator.blobs() if b.name not in demo.bad.values()), key=lambda b: b.name)
    return blobs[:count] if count else blobs


def messages(caplog, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


def inject_faults(stack, rules: list[dict]) -> None:
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=rules, timeout=10).raise_for_status()


def clear_faults(stack) -> None:
    requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10).raise_for_status()


def test_the_trigger_watches_the_container_named_by_the_setting():
    function = load_function_app().push_blob.build()
    trigger = function.get_trigger().get_dict_repr()
    assert function.get_function_name() == "push_blob"
    assert trigger["type"] == "blobTrigger"
    assert trigger["path"] == "%mm_telemetry_storage_container%/{name}"
    assert trigger["connection"] == "MMStorage"


def test_a_new_blob_lands_untagged_with_its_provenance(host, stack, demo, caplog):
    blob = good_blobs(stack, demo, 1)[0]
    assert host.invoke(blob.name) is None

    (image,) = host.images()
    plaintext = Curator(stack.settings()).decrypt(blob)
    assert image.metadata["source_blob"] == blob.name
    assert image.metadata["source_etag"] == blob.etag
    assert image.metadata["sha256"] == hashlib.sha256(plaintext).hexdigest() == image.sha256
    assert (image.metadata["model_name"], image.metadata["model_version"]) == (blob.model_name, blob.model_version)
    assert image.tags == []
    assert messages(caplog) == [
        f"Pushed data/{blob.name} ({blob.model_name} {blob.model_version}) as untagged image {image.id}."
    ]


def test_a_redelivered_blob_lands_nothing_new(host, stack, demo, caplog, tmp_path):
    blob = good_blobs(stack, demo, 1)[0]
    host.invoke(blob.name)
    host.invoke(blob.name)  # the same instance: its ledger knows the blob
    assert len(host.images()) == 1
    assert "already pushed" in messages(caplog)[-1]

    # Another instance whose ledger did not persist: Custom Vision's OKDuplicate stops it.
    other = host.restarted(tmp_path / "instance-2" / "ledger.sqlite")
    other.invoke(blob.name)
    (image,) = host.images()
    assert messages(caplog)[-1].startswith(f"Nothing new from data/{blob.name}")
    record = Ledger(other.ledger_path).record(blob.key, host.project_id)
    assert record.state == "pushed" and record.image_id == image.id


def test_without_trigger_metadata_the_blob_is_read_from_storage(host, stack, demo):
    blob = good_blobs(stack, demo, 2)[1]
    host.invoke(blob.name, trigger_metadata=False)
    (image,) = host.images()
    assert (image.metadata["source_blob"], image.metadata["source_etag"]) == (blob.name, blob.etag)


@pytest.mark.parametrize("case", sorted(BAD_REASONS))
def test_a_bad_blob_is_logged_with_its_reason_and_not_retried(host, stack, demo, caplog, case):
    name = demo.bad[case]
    host.invoke(name)  # returns normally: the host records success, so no endless retries

    assert host.images() == []
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith(f"Not pushed, and not retried: data/{name} cannot be used: ")
    assert BAD_REASONS[case] in warning
    (record,) = Ledger(host.ledger_path).records([("data", name, _etag(stack, name))]).values()
    assert record.state == "undecryptable"


def _etag(stack, name: str) -> str:
    return Curator(stack.settings()).blob(name).etag


def test_keys_are_fetched_once_per_model_version_across_invocations(host, stack, demo):
    blobs = good_blobs(stack, demo, 8)
    for blob in blobs:
        host.invoke(blob.name)
    assert len(host.images()) == len(blobs)
    versions = {(b.model_name, b.model_version) for b in blobs}
    assert len(versions) > 1
    assert host.curator.locker.fetches == len(versions)
    assert host.curator.locker.decryptions == len(blobs)


def test_a_transient_custom_vision_failure_raises_so_the_host_retries(host, stack, demo, caplog):
    blob = good_blobs(stack, demo, 3)[2]
    host.invoke(good_blobs(stack, demo, 1)[0].name)  # warm: the project is known
    inject_faults(stack, [{"operation": "CreateImagesFromFiles", "kind": "503", "times": 100}])
    try:
        with pytest.raises(host.module.TransientPushError, match=f"data/{blob.name} did not reach Custom Vision"):
            host.invoke(blob.name)
    finally:
        clear_faults(stack)
    assert len(host.images()) == 1
    assert messages(caplog, logging.WARNING)[-1].startswith(
        f"Not pushed this time, the host will retry: data/{blob.name}"
    )
    assert Ledger(host.ledger_path).record(blob.key, host.project_id).state == "failed"

    host.invoke(blob.name)  # the host's retry
    assert {i.metadata["source_blob"] for i in host.images()} == {good_blobs(stack, demo, 1)[0].name, blob.name}


def test_a_throttled_upload_waits_for_retry_after_and_lands(host, stack, demo):
    blob = good_blobs(stack, demo, 4)[3]
    inject_faults(stack, [{"operation": "CreateImagesFromFiles", "kind": "429", "times": 1, "retry_after": 1}])
    try:
        started = time.monotonic()
        host.invoke(blob.name)
        waited = time.monotonic() - started
    finally:
        clear_faults(stack)
    assert [i.metadata["source_blob"] for i in host.images()] == [blob.name]
    assert host.curator.customvision.stats.throttled == 1
    assert waited >= 1.0  # it waited as long as the service asked


def test_a_wrong_training_key_fails_the_invocation_instead_of_dropping_blobs(host, stack, demo, monkeypatch):
    monkeypatch.setenv("custom_vision_training_key", "0" * 32)
    with pytest.raises(AuthenticationError, match="training key"):
        host.invoke(good_blobs(stack, demo, 1)[0].name)
    assert host.images() == []


def test_a_key_revoked_while_running_fails_the_invocation_instead_of_refusing_the_blob(host, stack, demo):
    first, second = good_blobs(stack, demo, 2)
    host.invoke(first.name)  # warm: the key worked when the worker started
    inject_faults(
        stack, [{"operation": "CreateImagesFromFiles", "kind": "401"}, {"operation": "GetProject", "kind": "401"}]
    )
    try:
        with pytest.raises(host.module.TransientPushError, match="refused the training key"):
            host.invoke(second.name)
    finally:
        clear_faults(stack)
    host.invoke(second.name)  # the host's retry, once the key is fixed
    assert {i.metadata["source_blob"] for i in host.images()} == {first.name, second.name}


def test_secrets_never_reach_the_logs(host, stack, demo, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' included
    blob = good_blobs(stack, demo, 5)[4]
    host.invoke(blob.name)
    host.invoke(demo.bad["tampered"])
    inject_faults(stack, [{"operation": "CreateImagesFromFiles", "kind": "500", "times": 100}])
    try:
        with pytest.raises(host.module.TransientPushError) as raised:
            host.invoke(good_blobs(stack, demo, 6)[5].name)
    finally:
        clear_faults(stack)
    secrets = stack.settings().secret_values()
    assert secrets and len(caplog.records) > 10
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records) + str(raised.value)
    assert not [s for s in secrets if s in logged]


def test_no_plaintext_is_written_to_disk(host, stack, demo, tmp_path_factory):
    started = time.time()
    blobs = good_blobs(stack, demo, 6)
    for blob in blobs:
        host.invoke(blob.name)
    plaintexts = [Curator(stack.settings()).decrypt(b) for b in blobs]
    scratch = tmp_path_factory.getbasetemp().parent  # the tests' own scratch space, this run and earlier ones
    temp = Path(tempfile.gettempdir())
    roots = [area for area in writable_areas([host.ledger_path.parent, Path.cwd()]) if area != temp]
    assert scan(plaintexts=plaintexts, roots=roots, exclude=[scratch], images_newer_than=started) == []
    # The temp folder (where the original sample wrote every frame) holds much else: read what changed,
    # looking for these frames' bytes (other processes may write images of their own there meanwhile).
    changed = [path for path in files_changed_since(temp, started, exclude=scratch) if holds_any(path, plaintexts)]
    assert changed == []


def files_changed_since(root: Path, since: float, *, exclude: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != exclude]
        for name in files:
            path = Path(folder, name)
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since:
                    found.append(path)
    return found


def holds_any(path: Path, plaintexts: list[bytes]) -> bool:
    """Whether the file holds a frame, whole or in part (48 bytes from its middle)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(p[len(p) // 2 : len(p) // 2 + 48] in data for p in plaintexts)


def test_a_blob_over_the_size_limit_is_refused_without_reading_it(host, stack, demo, caplog, monkeypatch):
    monkeypatch.setenv("percept_max_blob_bytes", "1024")  # below a camera frame: every demo frame is "too large"
    blob = good_blobs(stack, demo, 1)[0]
    stream = input_stream(stack, host.container, blob.name)
    host.module.push_blob.build().get_user_function()(stream)  # returns: retrying cannot make it smaller

    assert host.images() == []
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith(f"Not pushed, and not retried: data/{blob.name} cannot be used: too large")
    assert stream.read() == Curator(stack.settings()).data.download(blob)  # the host's stream was never read
    (record,) = Ledger(host.ledger_path).records([blob.key]).values()
    assert record.state == "undecryptable"


def test_a_redelivered_blob_on_a_new_instance_is_a_duplicate_under_the_strict_profile(
    strict_stack, clean_environment, monkeypatch, tmp_path, caplog
):
    # Strict Azure refuses a batch whose only image is already in the project whole, with 400 "No valid image
    # files": an instance with a ledger of its own (a new worker, a lost ledger) must still call it a duplicate.
    caplog.set_level(logging.INFO, logger=LOGGER)
    stack = dataclasses.replace(
        strict_stack, mm_config=dataclasses.replace(strict_stack.mm_config, container="fnstrict")
    )
    [name] = upload_frames(stack, "fnstrict", [jpeg(640)])
    project_id = stack.new_project("function strict")
    first_ledger = tmp_path / "instance-1" / "ledger.sqlite"
    set_app_settings(monkeypatch, stack, custom_vision_project_id=project_id, percept_ledger_path=str(first_ledger))
    first = FunctionHost(stack, project_id, first_ledger, monkeypatch)
    pushed = first.invoke_for_outcome(name)
    again = first.restarted(tmp_path / "instance-2" / "ledger.sqlite").invoke_for_outcome(name)

    assert (pushed.outcome, again.outcome) == (Outcome.PUSHED, Outcome.DUPLICATE)
    (image,) = stack.emulator.images(project_id)
    assert again.image_id == pushed.image_id == image.id
    assert f"Nothing new from fnstrict/{name}" in " ".join(messages(caplog))


def test_with_a_blob_index_each_arrival_is_indexed_as_it_is_pushed(host, stack, demo):
    blob = good_blobs(stack, demo, 1)[0]
    index = host.curator.source.index
    index.put(b for b in host.curator.data.list_blobs() if b.name != blob.name)
    index.save_checkpoint(None, None, built=True)  # as `percept-curator index` leaves it
    before = host.curator.count()
    host.invoke(blob.name)
    assert host.curator.count() == before + 1 and index.get(blob.name) == blob
    assert len(host.images()) == 1
