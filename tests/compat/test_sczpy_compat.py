"""Byte compatibility with the real sczpy 0.0.8, both ways, and the unmodified device client against our stack.

sczpy runs in its own environment (`.venv-sczpy`, built by `make test`), driven through tests/compat/sczpy_oracle.py
in a subprocess: it never enters the app's environment. Keys go to the oracle in files, secrets in its environment.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import random
import secrets
import struct
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from devstack.mm_server import MMEmulatorConfig
from devstack.mm_server import create_app as create_mm_app
from devstack.servers import serve_in_thread
from percept_core import Curator, IntegrityError, KeyServiceClient, decrypt_bytes, derive_key, encrypt_bytes

REPO = Path(__file__).resolve().parents[2]
SCZPY_PYTHON = REPO / ".venv-sczpy" / "bin" / "python"
ORACLE = Path(__file__).with_name("sczpy_oracle.py")
SCZPY_REFUSAL = "The encrypted data appears to be corrupt and cannot be verified."

SIZES = [0, 1, 15, 16, 17, 65_535, 65_536, 65_537]
CASES = [str(size) for size in SIZES] + ["jpeg"]
KNOWN_SIZES = {0: 56, 1: 72, 15: 72, 16: 72, 17: 88, 65_535: 65_592, 65_536: 65_592, 65_537: 65_608}


def oracle(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run sczpy_oracle.py with the sczpy environment's interpreter; never skips when that is missing."""
    if not SCZPY_PYTHON.exists():
        pytest.fail(
            f"{SCZPY_PYTHON.relative_to(REPO)} is missing: the sczpy compatibility oracle lives in its own "
            "environment. Run `make test` (it builds .venv-sczpy), or `make .venv-sczpy/.installed`.",
            pytrace=False,
        )
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    child_env.update(env or {})
    return subprocess.run(
        [str(SCZPY_PYTHON), str(ORACLE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
        cwd=REPO,
        check=False,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"sczpy oracle failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def make_jpeg(path: Path, width: int = 1600, height: int = 1200) -> bytes:
    """A few MB of JPEG: noise compresses badly, so the file is large and every byte matters."""
    noise = random.Random(1234).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(buffer, "JPEG", quality=95)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Plaintexts of every size, each encrypted by sczpy and by percept_core, and decrypted by the other side."""
    root = tmp_path_factory.mktemp("sczpy-compat")
    key_text = secrets.token_urlsafe(32)
    keyfile = root / "key.txt"
    keyfile.write_text(key_text)
    derived = derive_key(key_text)

    plain: dict[str, bytes] = {}
    for size in SIZES:
        plain[str(size)] = os.urandom(size)
        (root / f"{size}.bin").write_bytes(plain[str(size)])
    plain["jpeg"] = make_jpeg(root / "jpeg.bin")
    assert len(plain["jpeg"]) > 2_000_000

    pairs = []
    for case in CASES:
        pairs += [str(root / f"{case}.bin"), str(root / f"{case}.sczpy.enc")]
    ok(oracle("encrypt", str(keyfile), *pairs))
    by_sczpy = {case: (root / f"{case}.sczpy.enc").read_bytes() for case in CASES}

    by_core = {case: encrypt_bytes(plain[case], derived) for case in CASES}
    pairs = []
    for case in CASES:
        (root / f"{case}.core.enc").write_bytes(by_core[case])
        pairs += [str(root / f"{case}.core.enc"), str(root / f"{case}.core.sczpy-dec")]
    decrypted = {r["in"]: r for r in json.loads(ok(oracle("decrypt", "--json", str(keyfile), *pairs)).stdout)}
    sczpy_decrypted = {}
    for case in CASES:
        report = decrypted[str(root / f"{case}.core.enc")]
        sczpy_decrypted[case] = Path(report["out"]).read_bytes() if report["ok"] else report["message"]

    return {
        "root": root,
        "keyfile": keyfile,
        "key": derived,
        "plain": plain,
        "by_sczpy": by_sczpy,
        "by_core": by_core,
        "sczpy_decrypted": sczpy_decrypted,
    }


def test_sczpy_stays_out_of_the_app_environment():
    # sczpy pins azure-identity<1.3 and OpenTelemetry 0.15b0: installed into .venv it would break the app.
    assert importlib.util.find_spec("sczpy") is None
    # The oracle is sczpy's side only: it must not lean on the implementation it checks.
    imported = set()
    for node in ast.walk(ast.parse(ORACLE.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "sczpy" in imported
    assert not imported & {"percept_core", "devstack", "tests"}


@pytest.mark.parametrize("case", CASES)
def test_files_sczpy_encrypts_decrypt_with_percept_core(case, corpus):
    assert decrypt_bytes(corpus["by_sczpy"][case], corpus["key"], blob_name=f"{case}.enc") == corpus["plain"][case]


@pytest.mark.parametrize("case", CASES)
def test_files_percept_core_encrypts_decrypt_with_sczpy(case, corpus):
    assert corpus["sczpy_decrypted"][case] == corpus["plain"][case]


@pytest.mark.parametrize("case", CASES)
def test_sczpy_ciphertext_size_and_header_follow_the_format(case, corpus):
    ciphertext = corpus["by_sczpy"][case]
    size = len(corpus["plain"][case])
    assert len(ciphertext) == 56 + -(-size // 16) * 16
    if size in KNOWN_SIZES:
        assert len(ciphertext) == KNOWN_SIZES[size]
    assert struct.unpack_from("<Q", ciphertext, 32)[0] == size
    assert len(corpus["by_core"][case]) == len(ciphertext)


@pytest.mark.parametrize("case", CASES)
def test_with_sczpys_iv_percept_core_writes_the_same_bytes(case, corpus):
    ciphertext = corpus["by_sczpy"][case]
    assert encrypt_bytes(corpus["plain"][case], corpus["key"], iv=ciphertext[40:56]) == ciphertext


# -- damaged files: both refuse them -----------------------------------------------------------------


def _flip(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0x01
    return bytes(damaged)


DAMAGE = {
    "flip-tag": lambda c: _flip(c, 0),
    "flip-length": lambda c: _flip(c, 32),
    "flip-iv": lambda c: _flip(c, 47),
    "flip-body-first": lambda c: _flip(c, 56),
    "flip-body-last": lambda c: _flip(c, len(c) - 1),
    "truncate-0": lambda c: c[:0],
    "truncate-31": lambda c: c[:31],
    "truncate-55": lambda c: c[:55],
    "truncate-56": lambda c: c[:56],
    "drop-last-block": lambda c: c[:-16],
    "drop-last-byte": lambda c: c[:-1],
    "extra-byte": lambda c: c + b"\0",
}


@pytest.fixture(scope="module")
def damaged(corpus):
    """sczpy's verdict on each damaged variant of a file it made itself (65,537 bytes of plaintext)."""
    root = corpus["root"]
    original = corpus["by_sczpy"]["65537"]
    variants = {name: damage(original) for name, damage in DAMAGE.items()}
    pairs = []
    for name, data in variants.items():
        (root / f"damaged-{name}.enc").write_bytes(data)
        pairs += [str(root / f"damaged-{name}.enc"), str(root / f"damaged-{name}.out")]
    result = oracle("decrypt", "--json", str(corpus["keyfile"]), *pairs)
    assert result.returncode != 0
    verdicts = {Path(r["in"]).name.removeprefix("damaged-").removesuffix(".enc"): r for r in json.loads(result.stdout)}
    return variants, verdicts


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_sczpy_file_is_refused_by_both(name, damaged, corpus):
    variants, verdicts = damaged
    result = None
    with pytest.raises(IntegrityError) as caught:
        result = decrypt_bytes(variants[name], corpus["key"], blob_name=f"damaged-{name}.enc")
    assert result is None
    assert f"damaged-{name}.enc" in str(caught.value)

    verdict = verdicts[name]
    assert not verdict["ok"]
    assert verdict["message"] == SCZPY_REFUSAL
    assert not Path(verdict["out"]).exists()  # sczpy wrote nothing either


def test_sczpy_refuses_a_file_under_another_key_and_says_so(corpus, tmp_path):
    other = tmp_path / "other-key.txt"
    other.write_text(secrets.token_urlsafe(32))
    source = tmp_path / "frame.enc"
    source.write_bytes(corpus["by_sczpy"]["17"])
    target = tmp_path / "frame.out"

    result = oracle("decrypt", str(other), str(source), str(target))
    assert result.returncode != 0
    assert SCZPY_REFUSAL in result.stderr
    assert not target.exists()
    with pytest.raises(IntegrityError):
        decrypt_bytes(source.read_bytes(), derive_key(other.read_text()))


# -- the unmodified SCZClient against the MM emulator and Azurite --------------------------------------


def device_frame(directory: Path, confidence: int) -> tuple[Path, datetime]:
    """A frame named as a device names it: `<confidence>-<YYYY-mm-dd-HH-MM-SS>.jpg`, local capture time."""
    captured = datetime(2023, 3, random.randint(1, 28), random.randint(0, 23), random.randint(0, 59), 7)
    path = directory / f"{confidence}-{captured:%Y-%m-%d-%H-%M-%S}.jpg"
    make_jpeg(path, 640, 480)
    return path, captured


@pytest.fixture
def compat_mm(stack):
    """An MM emulator of its own, storing device uploads in a container of their own (not the demo's)."""
    config = MMEmulatorConfig(storage_connection_string=stack.storage_connection_string, container="compat")
    handle = serve_in_thread(create_mm_app(config))
    yield handle, config
    handle.stop()


def test_frame_uploaded_by_the_unmodified_sczpy_client_reaches_the_curator(stack, compat_mm, tmp_path):
    mm, mm_config = compat_mm
    model = f"compat-{secrets.token_hex(4)}"
    frame, captured = device_frame(tmp_path, 42)
    plaintext = frame.read_bytes()

    result = ok(
        oracle(
            "client-roundtrip",
            mm.url,
            model,
            "1",
            str(frame),
            "--confidence",
            "42",
            env={"SCZ_BOOTSTRAP_SECRET": mm_config.bootstrap_secret},
        )
    )
    assert mm_config.bootstrap_secret not in result.stdout + result.stderr
    report = json.loads(result.stdout)

    # sczpy asked Key Vault for the secret MM's bootstrap named, at the hard-coded vault URL.
    assert report["key_vault_calls"] == [
        {
            "vault_url": f"https://{mm_config.key_vault_name}.vault.azure.net",
            "secret_name": mm_config.secret_name,
        }
    ]
    assert report["register_reply"] == f"Registered {model} version 1"
    assert report["upload_reply"] == f"Stored {report['blob_name']}"
    assert report["decrypted_sha256"] == report["plaintext_sha256"]  # sczpy reads back its own upload

    blob_name = report["blob_name"]
    assert blob_name.startswith(f"42-{captured:%Y-%m-%d-%H-%M-%S}") and blob_name.endswith(".jpg.dec")

    curator = Curator(
        stack.settings(
            mm_server_url=mm.url,
            mm_telemetry_storage_container="compat",
            mm_bootstrap_secret=mm_config.bootstrap_secret,
        )
    )
    blob = curator.blob(blob_name)
    assert blob.container == "compat"
    assert {k: blob.metadata.get(k) for k in ("model_name", "model_version", "confidence", "file_ref")} == {
        "model_name": model,
        "model_version": "1",
        "confidence": "42",
        "file_ref": str(frame),
    }
    assert (blob.model_name, blob.model_version, blob.confidence) == (model, "1", 42.0)
    assert blob.captured_at == captured
    assert blob.size == report["encrypted_size"] == 56 + -(-len(plaintext) // 16) * 16
    assert curator.decrypt(blob) == plaintext


def test_decrypt_files_runs_the_original_functions_per_file_flow(stack, tmp_path):
    # The benchmarks' baseline: sczpy's client.decrypt per file (key fetch and PBKDF2 every time).
    model = f"compat-bench-{secrets.token_hex(4)}"
    client = KeyServiceClient(stack.mm.url, bootstrap_secret=stack.mm_config.bootstrap_secret)
    try:
        client.register_model(model, "3")
        key = derive_key(client.get_key(model, "3"))
    finally:
        client.close()
    frames = {}
    for index in range(3):
        frame, _ = device_frame(tmp_path, 10 + index)
        frames[frame.name + ".dec"] = frame.read_bytes()
        (tmp_path / (frame.name + ".dec")).write_bytes(encrypt_bytes(frames[frame.name + ".dec"], key))
    out = tmp_path / "out"

    result = ok(
        oracle(
            "decrypt-files",
            stack.mm.url,
            model,
            "3",
            str(out),
            *(str(tmp_path / name) for name in frames),
            env={"SCZ_BOOTSTRAP_SECRET": stack.mm_config.bootstrap_secret},
        )
    )
    report = json.loads(result.stdout)
    assert [Path(f["in"]).name for f in report["files"]] == list(frames)
    for entry in report["files"]:
        assert entry["ok"] and entry["seconds"] > 0
        assert Path(entry["out"]).read_bytes() == frames[Path(entry["in"]).name]
    assert report["total_seconds"] >= sum(f["seconds"] for f in report["files"])
