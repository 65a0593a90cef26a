"""percept_core's own sczpy-format implementation, and its MM key client and per-version key cache.

Byte compatibility with the real sczpy is in tests/compat; here: the format's invariants, integrity failures,
and how `KeyServiceClient`/`Locker` behave against the MM emulator (login, renewal, faults, concurrency).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devstack.mm_server import MMEmulatorConfig, create_app
from devstack.servers import serve_in_thread
from percept_core import (
    AuthenticationError,
    BlobError,
    CuratorError,
    IntegrityError,
    KeyServiceClient,
    Locker,
    ServiceError,
    UnknownModelVersionError,
    decrypt_bytes,
    derive_key,
    encrypt_bytes,
)
from percept_core.errors import InvalidMetadataError

SIZES = [0, 1, 15, 16, 17, 65_535, 65_536, 65_537]
MARKER = b"PLAINTEXT-MARKER"
# Only the data upload touches storage, and these tests upload nothing.
UNUSED_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=unused;AccountKey=dW51c2Vk;BlobEndpoint=http://127.0.0.1:9/x;"
)


def expected_size(plaintext_length: int) -> int:
    return 56 + -(-plaintext_length // 16) * 16


def plaintext_of(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


@pytest.fixture(scope="module")
def key_text() -> str:
    return secrets.token_urlsafe(32)  # what the MM server hands out per model version


@pytest.fixture(scope="module")
def key(key_text):
    return derive_key(key_text)


@pytest.fixture(scope="module")
def sample(key) -> tuple[bytes, bytes]:
    plaintext = plaintext_of(100)
    return plaintext, encrypt_bytes(plaintext, key)


# -- the format -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_size(size, key):
    plaintext = plaintext_of(size)
    ciphertext = encrypt_bytes(plaintext, key)
    assert len(ciphertext) == expected_size(size)
    assert struct.unpack_from("<Q", ciphertext, 32)[0] == size
    assert decrypt_bytes(ciphertext, key) == plaintext


def test_key_text_and_derived_key_are_interchangeable(key_text, key):
    plaintext = plaintext_of(33)
    assert decrypt_bytes(encrypt_bytes(plaintext, key_text), key) == plaintext
    assert decrypt_bytes(encrypt_bytes(plaintext, key), key_text.encode()) == plaintext
    # PBKDF2-HMAC-SHA512, sczpy's salt, 100,000 rounds: AES key first, HMAC key last.
    material = hashlib.pbkdf2_hmac(
        "sha512", key_text.encode(), b"Microsoft Santa Cruz Secure AI Lifecycle", 100_000, 64
    )
    assert (key.encryption, key.authentication) == (material[:32], material[32:])


@pytest.mark.parametrize(
    "plaintext",
    [b"\x10" * 16, b"A" * 15 + b"\x01", b"B" * 30 + b"\x02\x02", b"C" * 17 + b"\x0f" * 15],
    ids=["full-padding-block", "ends-in-01", "ends-in-0202", "ends-in-0f-run"],
)
def test_plaintext_that_looks_padded_is_returned_unchanged(plaintext, key):
    # sczpy pads nothing when the length is a multiple of 16: a decryptor that strips PKCS#7 would eat these bytes.
    ciphertext = encrypt_bytes(plaintext, key)
    assert len(ciphertext) == 56 + len(plaintext)
    assert decrypt_bytes(ciphertext, key) == plaintext


def test_same_iv_same_bytes_and_random_iv_by_default(key):
    plaintext = plaintext_of(50)
    iv = bytes(range(16))
    assert encrypt_bytes(plaintext, key, iv=iv) == encrypt_bytes(plaintext, key, iv=iv)
    assert encrypt_bytes(plaintext, key, iv=iv)[40:56] == iv
    assert encrypt_bytes(plaintext, key)[40:56] != encrypt_bytes(plaintext, key)[40:56]


@pytest.mark.parametrize(
    "position",
    [0, 31, 32, 39, 40, 55, 56, -1],
    ids=["tag-first", "tag-last", "length-first", "length-last", "iv-first", "iv-last", "body-first", "body-last"],
)
@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_one_flipped_bit_is_an_integrity_error(position, bit, sample, key):
    _, ciphertext = sample
    tampered = bytearray(ciphertext)
    tampered[position] ^= bit
    result = None
    with pytest.raises(IntegrityError) as caught:
        result = decrypt_bytes(bytes(tampered), key, blob_name="42-2023-01-02-03-04-05.jpg.dec")
    assert result is None
    assert caught.value.blob_name == "42-2023-01-02-03-04-05.jpg.dec"
    assert "42-2023-01-02-03-04-05.jpg.dec" in str(caught.value)
    assert MARKER.decode() not in str(caught.value)


@pytest.mark.parametrize("length", [0, 31, 55, 56, "minus-one-block", "minus-one-byte"])
def test_truncation_is_an_integrity_error(length, sample, key):
    _, ciphertext = sample
    cut = {"minus-one-block": len(ciphertext) - 16, "minus-one-byte": len(ciphertext) - 1}.get(length, length)
    with pytest.raises(IntegrityError) as caught:
        decrypt_bytes(ciphertext[:cut], key, blob_name="frame.jpg.dec")
    assert "frame.jpg.dec" in str(caught.value)


def test_wrong_key_is_an_integrity_error(sample):
    _, ciphertext = sample
    with pytest.raises(IntegrityError, match="integrity check"):
        decrypt_bytes(ciphertext, derive_key(secrets.token_urlsafe(32)))


def test_integrity_error_is_a_curator_error():
    assert issubclass(IntegrityError, CuratorError)
    try:
        raise IntegrityError("x", blob_name="b")
    except CuratorError as exc:  # what the app and the CLI catch
        assert exc.reason == "tampered"


@pytest.mark.parametrize("claimed", [0, 96, 113, 1_000], ids=["zero", "one-block-short", "one-block-long", "huge"])
def test_authentic_file_with_inconsistent_length_returns_nothing(claimed, sample, key):
    # Only a broken encoder writes this (the HMAC is valid): it must not come back as a shorter or padded plaintext.
    _, ciphertext = sample
    body = bytearray(ciphertext[32:])
    struct.pack_into("<Q", body, 0, claimed)
    forged = hmac.digest(key.authentication, bytes(body), "sha256") + bytes(body)
    result = None
    with pytest.raises(IntegrityError):
        result = decrypt_bytes(forged, key)
    assert result is None


# -- the MM key service and the key cache ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mm():
    config = MMEmulatorConfig(storage_connection_string=UNUSED_STORAGE, bootstrap_secret=secrets.token_urlsafe(24))
    handle = serve_in_thread(create_app(config))
    yield handle, config
    handle.stop()


@pytest.fixture
def client(mm):
    handle, config = mm
    client = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret)
    yield client
    client.close()


@pytest.fixture
def model(client) -> str:
    name = f"locker-{secrets.token_hex(4)}"
    assert client.register_model(name, "1").startswith("Registered")
    return name


def emulator_key(mm, model: str, version: str = "1") -> str:
    return mm[0].server.config.app.state.mm.keys[f"{model}/{version}"]


def request_counts(mm) -> dict[str, int]:
    return requests.get(mm[0].url + "/_emulator/stats", timeout=5).json()["requests"]


def test_keys_of_a_registered_version_decrypt_its_frames(mm, client, model):
    key_text = emulator_key(mm, model)
    assert client.get_key(model, "1") == key_text.encode()
    # Registering again keeps the key: frames already uploaded stay readable.
    assert client.register_model(model, "1").startswith("Already registered")
    assert client.get_key(model, "1") == key_text.encode()

    frame = plaintext_of(5_000)
    locker = Locker(client)
    assert locker.decrypt(encrypt_bytes(frame, key_text), model, "1", blob_name="f.jpg.dec") == frame
    assert locker.key_for(model, "1") == derive_key(key_text)
    assert locker.fetches == 1


def test_another_versions_key_does_not_decrypt(mm, client, model):
    assert client.register_model(model, "2").startswith("Registered")
    ciphertext = encrypt_bytes(plaintext_of(64), emulator_key(mm, model, "1"))
    with pytest.raises(IntegrityError):
        Locker(client).decrypt(ciphertext, model, "2", blob_name="f.jpg.dec")


def test_unknown_model_version(client, model):
    locker = Locker(client)
    with pytest.raises(UnknownModelVersionError) as caught:
        locker.key_for(model, "99")
    assert model in str(caught.value) and "'99'" in str(caught.value)
    assert isinstance(caught.value, CuratorError)
    assert locker.fetches == 0
    with pytest.raises(UnknownModelVersionError):
        client.get_key("never-registered", "1")


def test_expired_token_is_renewed_with_one_login(mm, client, model):
    key = client.get_key(model, "1")
    before = request_counts(mm)
    expired = requests.post(mm[0].url + "/_emulator/expire-tokens", timeout=5).json()["expired"]
    assert expired >= 1

    assert client.get_key(model, "1") == key  # no error reaches the caller
    after = request_counts(mm)
    assert after["POST login"] - before["POST login"] == 1
    assert after["GET keys"] - before["GET keys"] == 2  # refused once, then answered


@pytest.fixture(scope="module")
def strict_mm():
    """An MM emulator with the strict Azure profile: an expired token is answered 403, not 401 (issue 18)."""
    config = MMEmulatorConfig(
        storage_connection_string=UNUSED_STORAGE, bootstrap_secret=secrets.token_urlsafe(24), profile="strict"
    )
    handle = serve_in_thread(create_app(config))
    yield handle, config
    handle.stop()


def test_expired_token_answered_403_is_renewed_with_one_login(strict_mm):
    handle, config = strict_mm
    client = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret)
    try:
        name = f"locker-{secrets.token_hex(4)}"
        client.register_model(name, "1")
        key = client.get_key(name, "1")
        before = request_counts(strict_mm)
        assert requests.post(handle.url + "/_emulator/expire-tokens", timeout=5).json()["expired"] >= 1

        assert client.get_key(name, "1") == key  # the 403 never reaches the caller
        after = request_counts(strict_mm)
    finally:
        client.close()
    assert after["POST login"] - before["POST login"] == 1
    assert after["GET keys"] - before["GET keys"] == 2  # refused once (403), then answered


def test_an_unknown_version_answered_200_with_text_ends_tampered_and_says_why(strict_mm):
    handle, config = strict_mm
    client = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret)
    try:
        name = f"locker-{secrets.token_hex(4)}"
        client.register_model(name, "1")
        ciphertext = encrypt_bytes(plaintext_of(64), emulator_key(strict_mm, name))
        with pytest.raises(IntegrityError) as caught:  # the server's text became a "key" that does not fit
            Locker(client).decrypt(ciphertext, name, "99", blob_name="f.jpg.dec")
    finally:
        client.close()
    assert caught.value.reason == "tampered" and "may not know that model version" in str(caught.value)


def test_a_403_after_a_fresh_login_is_an_authentication_error(impostor):
    client = KeyServiceClient(impostor.endpoint, bootstrap_secret="unused")
    logins = len(IMPOSTOR_LOGINS)
    try:
        with pytest.raises(AuthenticationError) as caught:
            Locker(client).key_for("forbidden", "1")
    finally:
        client.close()
    assert caught.value.status == 403 and "refused GET /api/v1/keys/forbidden/1 (403)" in caught.value.message
    assert len(IMPOSTOR_LOGINS) - logins == 2  # the first login and one fresh one after the 403: no more


def test_wrong_bootstrap_secret_is_an_authentication_error(mm, model):
    handle, config = mm
    wrong = "wrong-" + secrets.token_urlsafe(24)
    client = KeyServiceClient(handle.url, bootstrap_secret=wrong)
    try:
        with pytest.raises(AuthenticationError) as caught:
            Locker(client).key_for(model, "1")
    finally:
        client.close()
    assert caught.value.status == 401
    for text in (str(caught.value), repr(caught.value), repr(client)):
        assert wrong not in text and config.bootstrap_secret not in text


def test_server_error_on_keys_never_becomes_a_key(mm, client, model):
    handle, _ = mm
    locker = Locker(client)
    client.login()
    plan = [{"operation": "GET keys", "kind": "500", "times": 10}]
    assert requests.post(f"{handle.url}/_emulator/faults", json=plan, timeout=10).status_code == 200
    try:
        with pytest.raises(ServiceError) as caught:
            locker.key_for(model, "1")
        fired = requests.get(f"{handle.url}/_emulator/faults", timeout=10).json()[0]["fired"]
    finally:
        requests.delete(f"{handle.url}/_emulator/faults", timeout=10)

    assert fired >= 1
    assert caught.value.status == 500
    assert not isinstance(caught.value, AuthenticationError | UnknownModelVersionError)
    assert "500" in str(caught.value)
    assert locker.fetches == 0  # nothing was derived from the error body, nothing cached
    # Right after the failure the locker fails fast: it does not hammer a failing server ...
    requests_before = handle.server.config.app.state.mm.requests["GET keys"]
    with pytest.raises(ServiceError):
        locker.key_for(model, "1")
    assert handle.server.config.app.state.mm.requests["GET keys"] == requests_before
    # ... and once the failure is forgotten (after a few seconds, or explicitly) the real key comes back.
    locker.forget()
    assert locker.key_for(model, "1") == derive_key(emulator_key(mm, model))
    assert locker.fetches == 1


def test_sixteen_threads_share_one_fetch_and_one_derivation(mm, model):
    handle, config = mm
    client = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret)
    locker = Locker(client)
    before = request_counts(mm)
    start = threading.Barrier(16)

    def ask(_):
        start.wait(timeout=30)
        return locker.key_for(model, "1")

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            keys = list(pool.map(ask, range(16)))
    finally:
        client.close()

    assert locker.fetches == 1
    assert all(k is keys[0] for k in keys)
    assert keys[0] == derive_key(emulator_key(mm, model))
    after = request_counts(mm)
    assert after["GET keys"] - before.get("GET keys", 0) == 1
    assert after["POST login"] - before.get("POST login", 0) == 1


def test_no_message_or_repr_reveals_the_secret_or_a_key(mm, client, model):
    handle, config = mm
    key_text = emulator_key(mm, model)
    locker = Locker(client)
    derived = locker.key_for(model, "1")
    texts = [repr(client), str(client), repr(locker), repr(derived), str(derived)]

    def collect(call):
        try:
            call()
        except CuratorError as exc:
            texts.extend([str(exc), repr(exc), str(exc.hint), *map(str, exc.args)])
        else:
            pytest.fail("expected a CuratorError")

    ciphertext = encrypt_bytes(plaintext_of(40), key_text)
    collect(lambda: locker.decrypt(ciphertext[:-1], model, "1", blob_name="cut.jpg.dec"))
    collect(lambda: decrypt_bytes(ciphertext, derive_key("another key"), blob_name="wrong.jpg.dec"))
    collect(lambda: locker.key_for(model, "404"))
    wrong = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret + "x")
    try:
        collect(wrong.login)
        texts.append(repr(wrong))
    finally:
        wrong.close()

    forbidden = [
        config.bootstrap_secret,
        key_text,
        derived.encryption.hex(),
        derived.authentication.hex(),
        repr(derived.encryption),
        repr(derived.authentication),
    ]
    for text in texts:
        for secret in forbidden:
            assert secret not in text


# -- names from metadata, and what a key looks like ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "model_version"),
    [("..", "bootstrap"), (".", "x"), ("a/../..", "1"), ("%2e%2e", "bootstrap"), ("p\u0435ople", "1"), ("m", "")],
)
def test_invalid_names_are_refused_before_the_cache_and_any_request(mm, client, model, model_name, model_version):
    locker = Locker(client)
    locker.key_for(model, "1")  # a cached key and a live token: nothing else stands in the way of a request
    before = request_counts(mm)
    with pytest.raises(InvalidMetadataError) as caught:
        locker.decrypt(b"\0" * 80, model_name, model_version, blob_name="forged.jpg.dec")
    assert caught.value.reason == "invalid metadata" and caught.value.blob_name == "forged.jpg.dec"
    assert caught.value.message.startswith("Blob 'forged.jpg.dec' has an invalid model_")
    with pytest.raises(InvalidMetadataError, match="is not a valid model name or version"):
        client.get_key(model_name, model_version)
    after = request_counts(mm)
    assert after.get("GET keys") == before.get("GET keys") and after.get("GET bootstrap") == before.get("GET bootstrap")
    assert locker.fetches == 1 and locker.decryptions == 0


def test_key_urls_are_exactly_the_expected_segments(client):
    assert client._model_path("keys", "people-counter", "v2.1") == "/api/v1/keys/people-counter/v2.1"
    for name in ("..", ".", "a/b", "a%2fb"):
        with pytest.raises(InvalidMetadataError):
            client._model_path("keys", name, "1")


IMPOSTOR_KEY = "impostor-" + secrets.token_urlsafe(24)  # what a message must never show
# model name -> (status, content type or None, body) that the impostor answers for /api/v1/keys/{model}/1
ANSWERS: dict[str, tuple[int, str | None, bytes]] = {
    "status-203": (203, "text/plain", IMPOSTOR_KEY.encode()),
    "html": (200, "text/html", f"<html><body>Sign in {IMPOSTOR_KEY}</body></html>".encode()),
    "json": (200, "application/json", json.dumps({"kv": "vault", "key": IMPOSTOR_KEY}).encode()),
    "octet-stream": (200, "application/octet-stream", IMPOSTOR_KEY.encode()),
    "no-content-type": (200, None, IMPOSTOR_KEY.encode()),
    "too-long": (200, "text/plain", (IMPOSTOR_KEY * 100)[:1025].encode()),
    "huge": (200, "text/plain", IMPOSTOR_KEY.encode() * 100_000),
    "too-short": (200, "text/plain", b"k3y"),
    "empty": (200, "text/plain", b""),
    "nul": (200, "text/plain", IMPOSTOR_KEY.encode() + b"\0"),
    "newline": (200, "text/plain", IMPOSTOR_KEY.encode() + b"\n"),
    "non-ascii": (200, "text/plain; charset=utf-8", IMPOSTOR_KEY.encode() + "\u00e9".encode()),
    # accepted:
    "plain": (200, "text/plain", IMPOSTOR_KEY.encode()),
    "charset": (200, "Text/Plain; charset=us-ascii", IMPOSTOR_KEY.encode()),
    "shortest": (200, "text/plain", b"12345678"),
    "longest": (200, "text/plain", b"k" * 1024),
    # refused whatever the token (a second 403 after a fresh login):
    "forbidden": (403, "application/json", b'{"error": "forbidden"}'),
}
IMPOSTOR_LOGINS: list[str] = []


@pytest.fixture(scope="module")
def impostor():
    """An MM look-alike on 127.0.0.1 that answers /api/v1/keys as ANSWERS says (the emulator cannot)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    app = FastAPI()

    @app.post("/api/v1/login")
    def login() -> JSONResponse:
        IMPOSTOR_LOGINS.append("token")
        return JSONResponse({"access_token": "token"})

    @app.get("/api/v1/keys/{model}/{version}")
    def key(model: str, version: str) -> Response:
        status, content_type, body = ANSWERS[model]
        headers = {"content-type": content_type} if content_type else {}
        response = Response(body, status_code=status, headers=headers)
        if content_type is None:
            del response.headers["content-type"]
        return response

    handle = serve_in_thread(app)
    client = KeyServiceClient(handle.url, bootstrap_secret="unused")
    yield client
    client.close()
    handle.stop()


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("status-203", "status 203, not 200"),
        ("html", "content type 'text/html', not text/plain"),
        ("json", "content type 'application/json', not text/plain"),
        ("octet-stream", "content type 'application/octet-stream', not text/plain"),
        ("no-content-type", "content type missing"),
        ("too-long", "more than 1024 bytes"),
        ("huge", "more than 1024 bytes"),
        ("too-short", "3 bytes, fewer than 8"),
        ("empty", "0 bytes, fewer than 8"),
        ("nul", "it contains bytes that are not printable ASCII"),
        ("newline", "it contains bytes that are not printable ASCII"),
        ("non-ascii", "it contains bytes that are not printable ASCII"),
    ],
)
def test_an_answer_that_is_not_a_key_never_becomes_one(impostor, case, why):
    locker = Locker(impostor)
    with pytest.raises(ServiceError) as caught:
        locker.key_for(case, "1")
    error = caught.value
    assert not isinstance(error, BlobError)  # the server's fault, not the blob's
    assert f"is not a key for model {case!r} version '1': {why}" in error.message, error.message
    assert "mm_server_url" in error.hint
    for text in (str(error), repr(error), *map(str, error.args)):
        assert IMPOSTOR_KEY not in text and "Sign in" not in text
    assert locker.fetches == 0


@pytest.mark.parametrize("case", ["plain", "charset", "shortest", "longest"])
def test_a_plausible_key_is_used_verbatim(impostor, case):
    assert impostor.get_key(case, "1") == ANSWERS[case][2]
    assert Locker(impostor).key_for(case, "1") == derive_key(ANSWERS[case][2])
