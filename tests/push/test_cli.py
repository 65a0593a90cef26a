"""`percept-curator` against the devstack, as a user runs it: a subprocess with settings in its environment."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import CLI
from tests.support.frames import jpeg, upload_frames


def test_push_untagged_pushes_every_eligible_demo_blob_and_reports_the_bad_ones(demo, stack, project_id, run_cli):
    dry = run_cli("--json", "push-untagged", "--dry-run", custom_vision_project_id=project_id)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["eligible"] == demo.frames

    result = run_cli("--json", "push-untagged", "--yes", custom_vision_project_id=project_id)
    assert result.returncode == 1, result.stderr  # some items failed: the five bad blobs
    document = json.loads(result.stdout)
    assert document["counts"] == {"pushed": demo.frames, "undecryptable": 5}
    failed = {row["blob"]: row["reason"] for row in document["outcomes"] if row["outcome"] == "undecryptable"}
    assert set(failed) == set(demo.bad.values())
    assert all(reason for reason in failed.values())

    images = stack.emulator.images(project_id)
    assert len(images) == demo.frames and not any(image.tags for image in images)
    assert {image.metadata["source_blob"] for image in images} == {
        row["blob"] for row in document["outcomes"] if row["outcome"] == "pushed"
    }
    second = run_cli("--json", "push-untagged", "--yes", custom_vision_project_id=project_id)
    assert json.loads(second.stdout)["counts"] == {"undecryptable": 5}
    assert len(stack.emulator.images(project_id)) == demo.frames


def test_rejected_blobs_stay_out_and_the_run_then_succeeds(stack, project_id, run_cli, container_name):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(300, 304)])
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    assert run_cli("reject", names[0], "--reason", "out of focus", **settings).returncode == 0
    result = run_cli("push-untagged", "--yes", **settings)
    assert result.returncode == 0, result.stderr
    assert "push-untagged: 3 pushed" in result.stdout
    assert names[0] not in {i.metadata["source_blob"] for i in stack.emulator.images(project_id)}
    assert run_cli("restore", names[0], **settings).returncode == 0
    assert "1 pushed" in run_cli("push-untagged", "--yes", **settings).stdout


def test_push_with_tags_and_status(demo, stack, project_id, run_cli):
    names = [n for n in (b.name for b in _blobs(stack)) if n not in demo.bad.values()][:2]
    result = run_cli("push", "--tag", "person", "--tag", "product", *names, custom_vision_project_id=project_id)
    assert result.returncode == 0, result.stderr
    assert "push: 2 pushed" in result.stdout
    images = stack.emulator.images(project_id)
    assert sorted(sorted(t.tag_name for t in i.tags) for i in images) == [["person", "product"]] * 2
    status = json.loads(run_cli("--json", "status", custom_vision_project_id=project_id).stdout)
    assert status["ledger"]["pushed"] == 2 and status["project"]["tagged"] == 2


def test_unknown_tag_is_an_error_naming_it(demo, stack, project_id, run_cli):
    name = next(b.name for b in _blobs(stack) if b.name not in demo.bad.values())
    result = run_cli("push", "--tag", "unicorn", name, custom_vision_project_id=project_id)
    assert result.returncode == 1 and "no tag named 'unicorn'" in result.stderr
    assert stack.emulator.images(project_id) == []


def test_decrypt_writes_the_plaintext_only_where_asked_privately(demo, stack, run_cli, tmp_path):
    from percept_core import Curator

    curator = Curator(stack.settings())
    blob = next(b for b in curator.blobs() if b.name not in demo.bad.values())
    target = tmp_path / "frame.jpg"
    result = run_cli("decrypt", blob.name, "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == curator.decrypt(blob)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = run_cli("decrypt", blob.name, "--out", str(target))
    assert again.returncode == 2 and "pass --force" in again.stderr
    tampered = run_cli("decrypt", demo.bad["tampered"], "--out", str(tmp_path / "t.jpg"))
    assert tampered.returncode == 1 and "integrity check" in tampered.stderr and demo.bad["tampered"] in tampered.stderr
    assert not (tmp_path / "t.jpg").exists()


def test_configuration_errors_exit_2_and_name_the_setting(run_cli, tmp_path):
    result = run_cli("push-untagged", "--dry-run", custom_vision_endpoint="", custom_vision_training_key="")
    assert result.returncode == 2
    assert "custom_vision_endpoint" in result.stderr and "Traceback" not in result.stderr
    wrong = run_cli("status", custom_vision_project_id="not-a-guid")
    assert wrong.returncode == 2 and "not a GUID" in wrong.stderr


def test_push_untagged_asks_before_pushing(project_id, run_cli, stack):
    result = run_cli("push-untagged", custom_vision_project_id=project_id)
    assert result.returncode == 2 and "pass --yes" in result.stderr
    assert stack.emulator.images(project_id) == []


def test_training_waits_for_the_iteration_or_says_why_it_cannot(stack, run_cli, container_name):
    project = stack.new_project("train", tags=("person", "product"))
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(400, 410)])
    settings = {"custom_vision_project_id": project, "mm_telemetry_storage_container": container_name}
    refused = run_cli("train", **settings)
    assert refused.returncode == 1 and "train" in refused.stderr.lower()
    assert run_cli("push", "--tag", "person", *names[:5], **settings).returncode == 0
    assert run_cli("push", "--tag", "product", *names[5:], **settings).returncode == 0
    trained = run_cli("--json", "train", "--wait", **settings)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["status"] == "Completed"


def test_a_push_killed_mid_way_and_restarted_leaves_no_duplicate_and_no_loss(stack, run_cli, tmp_path, container_name):
    project = stack.new_project("crash")
    upload_frames(stack, container_name, [jpeg(i) for i in range(500, 560)])
    ledger = tmp_path / "crash-ledger.sqlite"
    settings = {
        "custom_vision_project_id": project,
        "mm_telemetry_storage_container": container_name,
        "percept_ledger_path": str(ledger),
    }
    # Slow answers keep the run going long enough to be killed in the middle, uploads in flight.
    plan = [{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 0.15}]
    requests.post(f"{stack.customvision.url}/_emulator/faults", json=plan, timeout=10).raise_for_status()
    try:
        workdir = tmp_path / "cwd"
        workdir.mkdir(exist_ok=True)
        process = subprocess.Popen(
            [*CLI, "push-untagged", "--yes"],
            cwd=workdir,
            env=stack.environment(**settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while _pushed(ledger) < 15:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling the ledger with a deadline
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        requests.delete(f"{stack.customvision.url}/_emulator/faults", timeout=10)
    assert 15 <= _pushed(ledger) < 60
    result = run_cli("--json", "push-untagged", "--yes", **settings)
    assert result.returncode == 0, result.stderr
    images = stack.emulator.images(project)
    assert len(images) == 60
    assert len({i.sha256 for i in images}) == 60 and len({i.metadata["source_blob"] for i in images}) == 60
    assert _pushed(ledger) == 60


# -- one set of rules: the CLI refuses what the app refuses, item by item ------------------------------------


def _states(run_cli, settings: dict[str, str]) -> dict[str, str]:
    """Blob name -> state, as `percept-curator list` shows it (from the ledger)."""
    listed = run_cli("list", "--json", **settings)
    assert listed.returncode == 0, listed.stderr
    return {row["name"]: row["state"] for row in json.loads(listed.stdout)}


def test_reject_refuses_an_image_already_in_the_project_and_says_why(stack, project_id, run_cli, container_name):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(600, 603)])
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    assert run_cli("push", names[0], **settings).returncode == 0

    result = run_cli("reject", names[0], names[1], "--reason", "blurred", **settings)
    assert result.returncode == 1, result.stderr  # some item failed
    assert result.stdout.splitlines()[0] == "rejected 1 blob(s): push-untagged leaves them out"
    assert f"skipped: {names[0]}: already in the Custom Vision project: it cannot be rejected" in result.stdout
    assert _states(run_cli, settings) == {names[0]: "pushed", names[1]: "rejected", names[2]: "new"}

    document = json.loads(run_cli("--json", "reject", names[0], **settings).stdout)
    assert document["rejected"] == [] and document["counts"] == {"skipped": 1}
    assert document["outcomes"][0]["blob"] == names[0] and "cannot be rejected" in document["outcomes"][0]["reason"]
    # rejecting again what is rejected is no failure: the decision stands
    assert run_cli("reject", names[1], **settings).returncode == 0


def test_restore_refuses_what_has_nothing_to_restore_and_names_an_unknown_blob(
    stack, project_id, run_cli, container_name
):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(610, 612)])
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    assert run_cli("reject", names[0], **settings).returncode == 0

    result = run_cli("restore", names[0], names[1], "no-such-blob.jpg.dec", **settings)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "restored 1 blob(s)"
    assert f"  skipped: {names[1]}: not rejected: nothing to restore" in lines
    assert any(line.startswith("  skipped: no-such-blob.jpg.dec: No blob named") for line in lines)
    assert _states(run_cli, settings) == {names[0]: "new", names[1]: "new"}
    assert run_cli("restore", names[0], **settings).returncode == 1  # restored already: nothing to do again


@pytest.mark.parametrize(
    "command",
    [("status",), ("list", "--limit", "3"), ("push-untagged", "--dry-run"), ("reject", "{blob}")],
    ids=lambda c: c[0],
)
def test_json_works_before_and_after_the_command(command, stack, project_id, run_cli, container_name):
    names = upload_frames(stack, container_name, [jpeg(i) for i in range(620, 623)])
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    args = [a.format(blob=names[0]) for a in command]
    before = run_cli("--json", *args, **settings)
    after = run_cli(*args, "--json", **settings)
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    first, second = json.loads(before.stdout), json.loads(after.stdout)
    assert type(first) is type(second) and first and second
    assert (first.keys() if isinstance(first, dict) else first[0].keys()) == (
        second.keys() if isinstance(second, dict) else second[0].keys()
    )


def test_push_untagged_with_json_after_the_command_pushes_and_reports_in_json(
    stack, project_id, run_cli, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(630, 633)])
    settings = {"custom_vision_project_id": project_id, "mm_telemetry_storage_container": container_name}
    result = run_cli("push-untagged", "--yes", "--json", **settings)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"] == {"pushed": 3}
    assert len(stack.emulator.images(project_id)) == 3
    plain = run_cli("push-untagged", "--yes", **settings)
    assert plain.returncode == 0 and plain.stdout.startswith("push-untagged: ")  # no --json: text


# -- decrypt --out: a new private file, never through a link ---------------------------------------------------


@pytest.fixture
def one_frame(stack, container_name):
    """A container with one encrypted frame: (its settings, its name, its plaintext)."""
    plaintext = jpeg(640)
    (name,) = upload_frames(stack, container_name, [plaintext])
    return {"mm_telemetry_storage_container": container_name}, name, plaintext


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_decrypt_creates_a_0600_file_whatever_the_umask(one_frame, run_cli, tmp_path, umask):
    settings, name, plaintext = one_frame
    target = tmp_path / "frame.jpg"
    result = run_cli("decrypt", name, "--out", str(target), umask=umask, **settings)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == plaintext
    forced = run_cli("decrypt", name, "--out", str(target), "--force", umask=umask, **settings)
    assert forced.returncode == 0, forced.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == plaintext
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_decrypt_does_not_follow_a_symlink_planted_at_the_path(one_frame, run_cli, tmp_path):
    settings, name, plaintext = one_frame
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_bytes(b"someone else's file")
    link = tmp_path / "frame.jpg"
    link.symlink_to(victim)
    refused = run_cli("decrypt", name, "--out", str(link), **settings)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert victim.read_bytes() == b"someone else's file" and link.is_symlink()

    dangling = tmp_path / "new.jpg"
    dangling.symlink_to(elsewhere / "created-through-the-link.jpg")
    refused = run_cli("decrypt", name, "--out", str(dangling), **settings)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert list(elsewhere.iterdir()) == [victim]  # nothing created where the link points

    forced = run_cli("decrypt", name, "--out", str(link), "--force", **settings)
    assert forced.returncode == 0, forced.stderr
    assert victim.read_bytes() == b"someone else's file"
    assert not link.is_symlink() and link.is_file() and link.read_bytes() == plaintext
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


def test_decrypt_force_replaces_the_file_and_leaves_its_other_hard_link_alone(one_frame, run_cli, tmp_path):
    settings, name, plaintext = one_frame
    target = tmp_path / "frame.jpg"
    target.write_bytes(b"old content")
    other = tmp_path / "other-link.jpg"
    os.link(target, other)
    refused = run_cli("decrypt", name, "--out", str(target), **settings)
    assert refused.returncode == 2 and target.read_bytes() == b"old content"
    forced = run_cli("decrypt", name, "--out", str(target), "--force", **settings)
    assert forced.returncode == 0, forced.stderr
    assert target.read_bytes() == plaintext and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert other.read_bytes() == b"old content" and other.stat().st_nlink == 1


def _pushed(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger, timeout=30) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM pushes WHERE state='pushed'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _blobs(stack):
    from percept_core import Curator

    return list(Curator(stack.settings()).blobs())


# -- list: exactly the blobs whose metadata matches; --actor; each image's provenance -----------------------------

# name -> (model, version, confidence as its metadata says, capture time): the expectations below are computed from it
LISTED_MODELS = {"people-counter": "1.0", "shelf-monitor": "2.3"}
LISTED = {
    "12-2026-11-02-10-00-00.jpg.dec": ("people-counter", "1.0", "12.5", "2026-11-02T09:59:58"),  # metadata wins
    "35-2026-11-02-15-00-00.jpg.dec": ("people-counter", "1.0", "35", "2026-11-02T15:00:00"),
    "58-2026-11-03-09-00-00.jpg.dec": ("people-counter", "1.0", "58", "2026-11-03T09:00:00"),
    "81-2026-11-04-23-59-59.jpg.dec": ("people-counter", "1.0", "81", "2026-11-04T23:59:59"),
    "20-2026-11-02-11-00-00.jpg.dec": ("shelf-monitor", "2.3", "20", "2026-11-02T11:00:00"),
    "47-2026-11-03-00-00-00.jpg.dec": ("shelf-monitor", "2.3", "47", "2026-11-03T00:00:00"),
    "66-2026-11-05-08-00-00.jpg.dec": ("shelf-monitor", "2.3", "66", "2026-11-05T08:00:00"),
}


@pytest.fixture(scope="module")
def listed_container(stack) -> str:
    """A container of LISTED frames, written once for the module (listing and pushing leave it as it is)."""
    from azure.storage.blob import BlobServiceClient

    container = "clilisted"
    for model, version in LISTED_MODELS.items():
        names = [n for n, row in LISTED.items() if row[0] == model]
        upload_frames(
            stack, container, [jpeg(700 + len(n) + int(n[:2])) for n in names], model=(model, version), names=names
        )
    # One blob says more in its metadata than its name does: a decimal confidence and a capture time of its own.
    blob = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(
        container, "12-2026-11-02-10-00-00.jpg.dec"
    )
    metadata = blob.get_blob_properties().metadata
    blob.set_blob_metadata({**metadata, "confidence": "12.5", "capture_time": "2026-11-02T09:59:58"})
    return container


def _listed(run_cli, container: str, *filters: str) -> set[str]:
    result = run_cli("list", "--json", *filters, mm_telemetry_storage_container=container)
    assert result.returncode == 0, result.stderr
    return {row["name"] for row in json.loads(result.stdout)}


def _where(condition) -> set[str]:
    names = {name for name, row in LISTED.items() if condition(row[0], row[1], float(row[2]), row[3])}
    assert 0 < len(names) < len(LISTED)  # each case keeps some blobs and leaves others out
    return names


def test_list_shows_exactly_the_blobs_each_filter_matches(listed_container, run_cli):
    c = listed_container
    result = run_cli("list", "--json", mm_telemetry_storage_container=c)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(LISTED)
    for name, (model, version, confidence, captured) in LISTED.items():
        row = rows[name]
        assert (row["model_name"], row["model_version"], row["confidence"], row["captured_at"], row["state"]) == (
            model,
            version,
            float(confidence),
            captured,
            "new",
        )
    assert _listed(run_cli, c, "--model", "people-counter") == _where(lambda m, v, conf, t: m == "people-counter")
    assert _listed(run_cli, c, "--version", "2.3") == _where(lambda m, v, conf, t: v == "2.3")
    assert _listed(run_cli, c, "--max-confidence", "35") == _where(lambda m, v, conf, t: conf <= 35)
    assert _listed(run_cli, c, "--min-confidence", "40", "--max-confidence", "70") == _where(
        lambda m, v, conf, t: 40 <= conf <= 70
    )
    # whole days, from 00:00:00 to 23:59:59
    assert _listed(run_cli, c, "--since", "2026-11-03", "--until", "2026-11-04") == _where(
        lambda m, v, conf, t: "2026-11-03" <= t[:10] <= "2026-11-04"
    )
    assert _listed(run_cli, c, "--contains=-11-02-", "--model", "people-counter", "--max-confidence", "40") == (
        _where(lambda m, v, conf, t: m == "people-counter" and conf <= 40 and t.startswith("2026-11-02"))
    )
    text = run_cli("list", "--limit", "2", "--prefix", "3", mm_telemetry_storage_container=c)
    assert text.returncode == 0 and text.stdout.splitlines()[-1] == "1 blob(s)"  # only 35-... starts with 3
    assert "35-2026-11-02-15-00-00.jpg.dec" in text.stdout


def test_actor_is_who_the_ledger_records_and_the_os_user_otherwise(
    listed_container, stack, project_id, run_cli, tmp_path
):
    from percept_core import Ledger
    from percept_core.ledger import default_actor

    settings = {"mm_telemetry_storage_container": listed_container, "custom_vision_project_id": project_id}
    first, second, third = sorted(LISTED)[:3]
    assert run_cli("--actor", "ana@contoso.example", "reject", first, **settings).returncode == 0
    assert run_cli("--actor", "ben@contoso.example", "push", second, **settings).returncode == 0
    assert run_cli("reject", third, **settings).returncode == 0
    events = Ledger(tmp_path / "ledger.sqlite").events()
    assert {(e.actor, e.action, e.blob) for e in events if e.action in ("reject", "push")} == {
        ("ana@contoso.example", "reject", first),
        ("ben@contoso.example", "push", second),
        (default_actor(), "reject", third),
    }


def test_each_pushed_image_carries_the_blob_s_confidence_and_capture_time(listed_container, stack, project_id, run_cli):
    from azure.storage.blob import BlobServiceClient

    settings = {"mm_telemetry_storage_container": listed_container, "custom_vision_project_id": project_id}
    result = run_cli("push-untagged", "--yes", **settings)
    assert result.returncode == 0, result.stderr
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        listed_container
    )
    blobs = {b.name: b for b in container.list_blobs(include=["metadata"])}
    images = {image.metadata["source_blob"]: image.metadata for image in stack.emulator.images(project_id)}
    assert set(images) == set(LISTED) == set(blobs)
    for name, metadata in images.items():
        blob = blobs[name]
        assert metadata["confidence"] == blob.metadata["confidence"] == LISTED[name][2]
        assert metadata["captured_at"] == blob.metadata.get("capture_time", LISTED[name][3]) == LISTED[name][3]
        assert (metadata["model_name"], metadata["model_version"]) == (
            blob.metadata["model_name"],
            blob.metadata["model_version"],
        )
        assert (metadata["source_container"], metadata["source_etag"]) == (listed_container, blob.etag.strip('"'))
