"""A blob's metadata cannot choose which MM endpoint supplies its key (issue 12, item 1).

Anyone who can write one blob can write its metadata. `model_name=".."`, `model_version="bootstrap"` used to
make `/api/v1/keys/../bootstrap` fetch the public bootstrap JSON, whose bytes then served as the key: a frame
encrypted with them passed the HMAC, previewed and was pushed. Here forged blobs, each encrypted with that
bootstrap document (the only key material an outsider can read from the MM server), are refused with a
clear reason, before any request to the MM server, everywhere a blob is decrypted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass

import azure.functions as func
import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from streamlit import config as streamlit_config

from percept_core import (
    BlobError,
    Curator,
    KeyServiceClient,
    Outcome,
    decrypt_bytes,
    encrypt_bytes,
)
from percept_core.errors import InvalidMetadataError, MissingMetadataError
from percept_core.names import MAX_NAME_LENGTH, is_valid_name, shown, validate_model, validate_name
from tests.app.conftest import AppHarness, _apply_environment, _reset_app, tile
from tests.function.conftest import LOGGER, load_function_app, set_app_settings
from tests.support.frames import jpeg, upload_frames

# Forged (model_name, model_version) pairs that blob metadata (HTTP headers) can carry, by case.
STORABLE: dict[str, tuple[str, str]] = {
    "dotdot-bootstrap": ("..", "bootstrap"),
    "dot-x": (".", "x"),
    "dotdot-dotdot": ("..", ".."),
    "nested-dots": ("a/../..", "bootstrap"),
    "three-dots": ("...", "bootstrap"),
    "encoded-dots": ("%2e%2e", "bootstrap"),
    "encoded-slash": ("people-counter%2F..", "1.0"),
    "dots-encoded-slash": ("..%2f", "bootstrap"),
    "backslashes": ("..\\..", "bootstrap"),
    "backslash-in-name": ("people-counter\\1.0", "1.0"),
    "slash-in-version": ("people-counter", "../../bootstrap"),
    "very-long": ("x" * 10_000, "1.0"),
    "inner-space": ("people counter", "1.0"),
    "tab": ("people-counter", "1\t0"),
    "percent": ("people-counter", "100%"),
}
# Empty or blank values: storage keeps them, and the listing already calls them missing.
BLANK: dict[str, tuple[str, str]] = {"empty-name": ("", "1.0"), "blank-version": ("people-counter", "   ")}
# Values HTTP headers cannot carry, but a trigger's metadata, an event or a notebook's RetrainingBlob can.
UNSTORABLE: dict[str, tuple[str, str]] = {
    "cyrillic-e": ("p\u0435ople-counter", "1.0"),
    "fullwidth-dots": ("\uff0e\uff0e", "bootstrap"),
    "one-dot-leaders": ("\u2024\u2024", "bootstrap"),
    "nul": ("people-counter", "1\x000"),
    "newline": ("people\ncounter", "1.0"),
    "escape": ("\x1b[31m", "1.0"),
}
FORGED = {**STORABLE, **BLANK}
CONTAINER = "forgedmetadata"
ON_CONTAINER = {"mm_telemetry_storage_container": CONTAINER}  # where the CLI lists the forged blobs
CARRIERS = "forgedcarriers"


def blob_name(case: str) -> str:
    return f"forged-{case}.jpg.dec"


def invalid_field(model: tuple[str, str]) -> tuple[str, str]:
    """The metadata field a refusal names (the name is checked first) and its value."""
    name, version = model
    return ("model_name", name) if not is_valid_name(name) else ("model_version", version)


@dataclass
class Forged:
    """The forged blobs, the one real frame beside them, and what an attacker encrypted them with."""

    attack_key: bytes
    frames: dict[str, bytes]  # blob name -> plaintext
    good: str


@pytest.fixture(scope="module")
def forged(stack) -> Forged:
    """CONTAINER: one real frame and a blob per FORGED case; CARRIERS: a blob per UNSTORABLE case (metadata
    arrives with the trigger or the caller). Every forged frame is encrypted with the bootstrap document."""
    attack_key = requests.get(f"{stack.mm.url}/api/v1/bootstrap", timeout=10).content  # public, no sign-in
    [good] = upload_frames(stack, CONTAINER, [jpeg(1200)], names=["good-12-2026-11-20-09-00-00.jpg.dec"])
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    frames = {good: jpeg(1200)}
    for container, cases in ((CONTAINER, FORGED), (CARRIERS, UNSTORABLE)):
        client = service.get_container_client(container)
        with contextlib.suppress(ResourceExistsError):
            client.create_container()
        for index, (case, (name, version)) in enumerate(cases.items()):
            frames[blob_name(case)] = jpeg(1300 + index + 100 * (container == CARRIERS))
            metadata = {"model_name": name, "model_version": version} if container == CONTAINER else {}
            client.upload_blob(
                blob_name(case), encrypt_bytes(frames[blob_name(case)], attack_key), metadata=metadata, overwrite=True
            )
    return Forged(attack_key, frames, good)


def mm_requests(stack) -> Counter:
    """What the MM emulator has been asked, by operation ("GET keys", "GET bootstrap", "POST login", ...)."""
    return Counter(stack.mm_state.requests)


def assert_refused(error: BlobError, case: str, model: tuple[str, str], *, attack_key: bytes) -> None:
    """The refusal a user sees: the reason, the blob, the field, its value shown safely, what to do."""
    field, value = invalid_field(model)
    text = str(error)
    assert isinstance(error, InvalidMetadataError) and error.reason == "invalid metadata", (case, text)
    assert error.blob_name == blob_name(case) and repr(blob_name(case)) in error.message
    assert f"invalid {field} in its metadata: {shown(value)}" in error.message, (case, error.message)
    assert "Reject the blob" in error.hint
    assert attack_key.decode() not in text and len(text) < 600  # the 10,000-character value is not repeated
    assert text.isascii() and "\x00" not in text and "\x1b" not in text and "\n" not in text


# -- the validator -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["people-counter", "1", "v2.1", "ssd_mobilenet-v2", "Model.2023_11", "1.0", "a" * MAX_NAME_LENGTH, ".v1"]
)
def test_real_model_names_and_versions_are_accepted(value):
    assert validate_name(value, field="model_name") == value and is_valid_name(value)
    assert validate_model(value, value) == (value, value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is empty"),
        (".", "only of dots"),
        ("..", "only of dots"),
        ("....", "only of dots"),
        ("a" * (MAX_NAME_LENGTH + 1), "more than 128"),
        ("x" * 10_000, "more than 128"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("%2e%2e", "'%'"),
        ("%2F", "'%'"),
        ("..%2f", "'%'"),
        ("%5c", "'%'"),
        ("p\u0435ople-counter", "non-ASCII"),  # Cyrillic е
        ("\uff0e\uff0e", "non-ASCII"),  # fullwidth full stops
        ("\u2024", "non-ASCII"),  # one dot leader
        ("\uff50eople", "non-ASCII"),  # fullwidth p
        ("v1\u00a0", "non-ASCII"),  # no-break space
        ("a b", "whitespace or control"),
        (" a", "whitespace or control"),
        ("a\t", "whitespace or control"),
        ("a\x00", "whitespace or control"),
        ("a\x7f", "whitespace or control"),
        ("a:b", "other than letters"),
        ("a?b", "other than letters"),
        ("a#b", "other than letters"),
        ("a+b", "other than letters"),
    ],
)
def test_anything_else_is_invalid_metadata_saying_why(value, why):
    assert not is_valid_name(value)
    with pytest.raises(InvalidMetadataError) as caught:
        validate_name(value, field="model_version", blob_name="f.jpg.dec")
    message = caught.value.message
    assert caught.value.reason == "invalid metadata" and caught.value.blob_name == "f.jpg.dec"
    assert message.startswith("Blob 'f.jpg.dec' has an invalid model_version in its metadata: ") and why in message
    assert message.isascii() and len(message) < 300
    # Without a blob (a script registering a model), the message names the field and the rule.
    with pytest.raises(InvalidMetadataError, match="The model_name .* is not a valid model name or version"):
        validate_model(value, "1")


def test_only_text_is_a_name():
    for value in (None, 1, b"people-counter"):
        assert not is_valid_name(value)
        with pytest.raises(InvalidMetadataError, match="is not text"):
            validate_name(value, field="model_name")


# -- through every entry point, on the devstack ------------------------------------------------------------


def test_the_forged_blobs_are_a_real_attack(stack, forged):
    """Precondition: each forged frame decrypts with the bootstrap document's bytes, which anyone can read."""
    container = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        CONTAINER
    )
    ciphertext = container.download_blob(blob_name("dotdot-bootstrap")).readall()
    assert json.loads(forged.attack_key)["kv"]  # the bootstrap JSON, not a key
    assert decrypt_bytes(ciphertext, forged.attack_key) == forged.frames[blob_name("dotdot-bootstrap")]


@pytest.mark.parametrize("case", sorted(STORABLE))
def test_curator_decrypt_refuses_forged_names_before_asking_the_mm_server(stack, forged, case):
    curator = Curator(stack.settings(mm_telemetry_storage_container=CONTAINER))
    blob = curator.blob(blob_name(case))
    before = mm_requests(stack)
    plaintext = None
    with pytest.raises(BlobError) as caught:
        plaintext = curator.decrypt(blob)
    assert plaintext is None
    assert_refused(caught.value, case, STORABLE[case], attack_key=forged.attack_key)
    assert mm_requests(stack) == before  # not the bootstrap, not a key, not even a login
    assert curator.locker.fetches == 0 and curator.locker.decryptions == 0


@pytest.mark.parametrize("case", sorted(BLANK))
def test_blank_names_are_missing_metadata(stack, forged, case):
    curator = Curator(stack.settings(mm_telemetry_storage_container=CONTAINER))
    before = mm_requests(stack)
    with pytest.raises(MissingMetadataError, match=blob_name(case)):
        curator.decrypt(curator.blob(blob_name(case)))
    assert mm_requests(stack) == before
    # The locker, which scripts may call with any strings, refuses them as invalid.
    with pytest.raises(InvalidMetadataError, match="is empty|whitespace"):
        curator.locker.decrypt(b"", *FORGED[case], blob_name=blob_name(case))
    assert mm_requests(stack) == before


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_names_storage_cannot_carry_are_refused_too(stack, forged, case):
    """Look-alikes and control characters arrive through a trigger's metadata or a caller's RetrainingBlob."""
    curator = Curator(stack.settings(mm_telemetry_storage_container=CARRIERS))
    name, version = UNSTORABLE[case]
    blob = dataclasses.replace(curator.blob(blob_name(case)), model_name=name, model_version=version)
    before = mm_requests(stack)
    with pytest.raises(BlobError) as caught:
        curator.decrypt(blob)
    assert_refused(caught.value, case, UNSTORABLE[case], attack_key=forged.attack_key)
    with pytest.raises(InvalidMetadataError):
        curator.locker.key_for(name, version)
    assert mm_requests(stack) == before and curator.locker.fetches == 0


def test_push_all_untagged_pushes_only_the_real_frame_and_records_why(stack, forged, make_curator, project_id):
    curator = make_curator(project_id, mm_telemetry_storage_container=CONTAINER)
    before = mm_requests(stack)
    report = curator.push_all_untagged()

    assert report.counts == Counter({Outcome.PUSHED: 1, Outcome.UNDECRYPTABLE: len(FORGED)})
    images = stack.emulator.images(project_id)
    assert [image.metadata["source_blob"] for image in images] == [forged.good]
    # One login and one key, for the real frame's version: nothing for any forged name.
    assert mm_requests(stack) - before == Counter({"POST login": 1, "GET keys": 1})
    assert curator.locker.fetches == 1
    reasons = {item.name: item.reason for item in report.failed}
    blobs = {b.name: b for b in curator.blobs()}
    records = curator.ledger.records([b.key for b in blobs.values()], project_id)
    for case, model in FORGED.items():
        name = blob_name(case)
        record = records[blobs[name].key]
        assert record.state == "undecryptable", case
        expected = "missing metadata" if case in BLANK else f"invalid metadata: Blob {name!r} has an invalid"
        assert reasons[name].startswith(expected), (case, reasons[name])
        assert expected in (record.reason or record.push_reason or ""), case
        if case not in BLANK:
            assert f"{invalid_field(model)[0]} in its metadata" in reasons[name]
    bootstrap_blob = blobs[blob_name("dotdot-bootstrap")]
    assert curator.state_of(bootstrap_blob, records[bootstrap_blob.key]) == "cannot decrypt"


def test_the_dry_run_counts_forged_blobs_as_invalid_metadata(stack, forged, make_curator, project_id):
    curator = make_curator(project_id, mm_telemetry_storage_container=CONTAINER)
    before = mm_requests(stack)
    dry = curator.push_all_untagged(dry_run=True)
    assert dry.eligible == 1
    assert dry.undecryptable == Counter({"invalid metadata": len(STORABLE), "missing metadata": len(BLANK)})
    assert (
        mm_requests(stack)["GET keys"] - before["GET keys"] == 1
        and mm_requests(stack)["GET bootstrap"] == (before["GET bootstrap"])
    )
    assert stack.emulator.images(project_id) == []


@pytest.fixture
def review_page(stack, forged, monkeypatch, tmp_path):
    """The app's review page on the forged container, as `make run` would serve it (a fresh project)."""
    harness = AppHarness(stack, stack.new_project("forged"), tmp_path / "ledger.sqlite")
    _apply_environment(monkeypatch, tmp_path, stack, harness, mm_telemetry_storage_container=CONTAINER)
    # Local use, as .streamlit/config.toml configures it: bound to loopback, so the sign-in gate lets the OS user in.
    address = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "127.0.0.1")
    yield harness
    streamlit_config.set_option("server.address", address)
    _reset_app()


def test_the_review_page_shows_the_refusal_instead_of_a_picture(stack, forged, review_page):
    before = mm_requests(stack)
    at = review_page.open()

    assert len(tile(at, forged.good).image) == 1  # the real frame previews: the page works
    for case, model in STORABLE.items():
        shown_tile = tile(at, blob_name(case))
        assert len(shown_tile.image) == 0, case
        assert shown_tile.error[0].value == "**invalid metadata**", (case, shown_tile.error[0].value)
        caption = re.sub(r"\\(.)", r"\1", shown_tile.caption[0].value)  # as rendered: Markdown escapes undone
        assert f"has an invalid {invalid_field(model)[0]} in its metadata" in caption, (case, caption)
    for case in BLANK:
        assert tile(at, blob_name(case)).error[0].value == "**missing metadata**"
    # The sidebar's health check reads the bootstrap; keys were asked for the real frame's version only.
    assert mm_requests(stack)["GET keys"] - before["GET keys"] == 1
    assert review_page.curator.locker.fetches == 1
    # Noted in the ledger, so the "cannot decrypt" filter finds them.
    at.multiselect(key="f_states").set_value(["cannot decrypt"]).run()
    assert {c.label for c in at.checkbox if c.key and c.key.startswith("pick:")} == {blob_name(c) for c in FORGED}


def test_the_cli_decrypts_no_forged_blob_and_pushes_none(stack, forged, run_cli, tmp_path, project_id):
    before = mm_requests(stack)
    target = tmp_path / "frame.jpg"
    result = run_cli("--json", "decrypt", blob_name("dotdot-bootstrap"), "--out", str(target), **ON_CONTAINER)
    assert result.returncode == 1, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert document["error"] == "invalid metadata"
    assert (
        f"Blob {blob_name('dotdot-bootstrap')!r} has an invalid model_name in its metadata: '..'"
        in (document["message"])
    )
    assert not target.exists()

    text = run_cli("decrypt", blob_name("encoded-dots"), "--out", str(target), **ON_CONTAINER)
    assert text.returncode == 1 and "has an invalid model_name in its metadata: '%2e%2e'" in text.stderr
    assert "Reject the blob" in text.stderr and not target.exists()

    names = [blob_name(case) for case in STORABLE]
    pushed = run_cli("--json", "push", *names, custom_vision_project_id=project_id, **ON_CONTAINER)
    assert pushed.returncode == 1, pushed.stderr
    outcome = json.loads(pushed.stdout)
    assert outcome["counts"] == {"undecryptable": len(STORABLE)}
    rows = {row["blob"]: row["reason"] for row in outcome["outcomes"]}
    assert set(rows) == set(names) and all(r.startswith("invalid metadata: ") for r in rows.values())
    assert stack.emulator.images(project_id) == []
    for secret in (forged.attack_key.decode(), stack.mm_config.bootstrap_secret):
        assert secret not in result.stdout + text.stderr + pushed.stdout + pushed.stderr
    assert mm_requests(stack) == before  # the CLI asked the MM server nothing at all


@pytest.fixture
def function_worker(stack, forged, clean_environment, monkeypatch, tmp_path, caplog):
    """A worker of the blob-trigger Function whose trigger watches CONTAINER, pushing to a fresh project."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    project_id = stack.new_project("forged function")
    set_app_settings(
        monkeypatch,
        stack,
        custom_vision_project_id=project_id,
        percept_ledger_path=str(tmp_path / "ledger.sqlite"),
        mm_telemetry_storage_container=CONTAINER,
    )
    return load_function_app(), project_id


def trigger(stack, container: str, name: str, metadata: dict[str, str] | None = None) -> func.blob.InputStream:
    """What the Functions host hands over for a blob; `metadata` as the trigger reports it (default: storage's)."""
    client = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(container, name)
    download = client.download_blob()
    data = download.readall()
    return func.blob.InputStream(
        data=data,
        name=f"{CONTAINER}/{name}",
        uri=client.url,
        length=len(data),
        blob_properties={"ETag": download.properties.etag, "ContentLength": len(data), "BlobType": "BlockBlob"},
        metadata=dict(download.properties.metadata) if metadata is None else metadata,
    )


def test_the_function_logs_forged_blobs_and_pushes_only_the_real_one(stack, forged, function_worker, caplog):
    module, project_id = function_worker
    handler = module.push_blob.build().get_user_function()
    streams = {blob_name(case): trigger(stack, CONTAINER, blob_name(case)) for case in STORABLE}
    # The carriers' metadata arrives with the trigger; their name is what a CONTAINER blob would be called.
    streams |= {
        blob_name(case): trigger(stack, CARRIERS, blob_name(case), {"model_name": n, "model_version": v})
        for case, (n, v) in UNSTORABLE.items()
    }
    before = mm_requests(stack)
    for name, stream in streams.items():
        assert handler(stream) is None, name  # returns: the host must not retry a forged blob
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == len(streams)
    for (name, _), warning in zip(streams.items(), warnings, strict=True):
        assert warning.startswith(f"Not pushed, and not retried: {CONTAINER}/{name} cannot be used: invalid metadata: ")
    assert all("\x00" not in w and "\x1b" not in w and forged.attack_key.decode() not in w for w in warnings)
    assert stack.emulator.images(project_id) == []
    assert mm_requests(stack) - before == Counter()  # (the worker's start-up reads nothing from MM either)
    ledger = module.get_curator().ledger
    for case in STORABLE:
        blob = module.get_curator().blob(blob_name(case))
        assert ledger.record(blob.key, project_id).state == "undecryptable", case

    handler(trigger(stack, CONTAINER, forged.good))  # the same worker still pushes a real frame
    assert [i.metadata["source_blob"] for i in stack.emulator.images(project_id)] == [forged.good]


# -- the key the MM server answers with ------------------------------------------------------------------


def test_client_calls_that_build_urls_refuse_invalid_names(stack):
    client = KeyServiceClient(stack.mm.url, bootstrap_secret=stack.mm_config.bootstrap_secret)
    before = mm_requests(stack)
    try:
        for call in (
            lambda: client.get_key("..", "bootstrap"),
            lambda: client.register_model("..", "bootstrap"),
            lambda: client.upload_data("people-counter", "../x", "f.jpg.dec", b"x", {}),
            lambda: client.upload_model("people-counter", "%2e%2e", "m.bin", b"x"),
            lambda: client.download_model("a\\b", "1"),
        ):
            with pytest.raises(InvalidMetadataError, match="is not a valid model name or version"):
                call()
    finally:
        client.close()
    assert mm_requests(stack) == before
