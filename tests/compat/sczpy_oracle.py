"""The real sczpy 0.0.8, driven from the command line: the oracle of the compatibility tests and benchmarks.

Run it with the isolated interpreter only (`.venv-sczpy/bin/python tests/compat/sczpy_oracle.py ...`): it imports
sczpy and must never import percept_core. No secret goes on the command line: key text is read from a file, the
MM bootstrap secret from the environment variable named by --secret-env (default SCZ_BOOTSTRAP_SECRET).

    encrypt KEYFILE IN OUT [IN OUT ...]      sczpy's own file encryption (SCZClient.__encrypt)
    decrypt KEYFILE IN OUT [IN OUT ...]      sczpy's own file decryption (SCZClient.__decrypt); exits 1 and prints
                                             sczpy's message when sczpy refuses a file (it writes no output then)
    client-roundtrip MM_URL MODEL VERSION PLAINTEXT
                                             the unmodified SCZClient as a device uses it: bootstrap and login,
                                             register_model, encrypt, upload_data, decrypt; prints JSON
    decrypt-files MM_URL MODEL VERSION OUTDIR IN [IN ...]
                                             what the original Azure Function did per blob: client.decrypt(...)
                                             for each file (key fetched and PBKDF2 run every time); prints JSON
                                             with per-file seconds
    serve MM_URL                             the benchmarks' baseline: a long-running worker, as the Functions
                                             host is. SCZClient is built once at start (the original Function
                                             built it at import); then each JSON line on stdin asks for files to
                                             be decrypted with client.decrypt (key fetched and PBKDF2 run for
                                             every file, files on disk, exactly as the Function did per blob)
                                             and gets one JSON line back with per-file seconds

Only `sczpy.DefaultAzureCredential` and `sczpy.SecretClient` are replaced (the Key Vault URL is hard-coded to
`https://{kv}.vault.azure.net`); everything else is sczpy's code, unmodified.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import sczpy

REFUSED_EXIT = 1


# -- sczpy's private file primitives -----------------------------------------------------------------


def _bare_client() -> sczpy.SCZClient:
    """An SCZClient without __init__ (no server): only what __encrypt/__decrypt need, set as __init__ does."""
    client = object.__new__(sczpy.SCZClient)
    client._SCZClient__signature_size = hashlib.sha256().digest_size
    return client


def _read_key_text(keyfile: str) -> str:
    # sczpy receives the key as `response.text` (a str) and hands it to PyCryptodome's PBKDF2.
    return Path(keyfile).read_bytes().decode("utf-8")


def _pairs(paths: list[str]) -> list[tuple[str, str]]:
    if not paths or len(paths) % 2:
        raise SystemExit("give IN OUT pairs")
    return list(zip(paths[::2], paths[1::2], strict=True))


def _sczpy_decrypt_file(client: sczpy.SCZClient, key: str, source: str, target: str) -> tuple[bool, str]:
    """(decrypted?, what sczpy printed). sczpy prints and returns None on an HMAC mismatch, writing nothing."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(target)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        client._SCZClient__decrypt(key, source, target, 64 * 1024)
    return os.path.exists(target), printed.getvalue().strip()


def cmd_encrypt(args: argparse.Namespace) -> int:
    client = _bare_client()
    key = _read_key_text(args.keyfile)
    for source, target in _pairs(args.paths):
        client._SCZClient__encrypt(key, source, target, 64 * 1024)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    client = _bare_client()
    key = _read_key_text(args.keyfile)
    results = []
    for source, target in _pairs(args.paths):
        ok, message = _sczpy_decrypt_file(client, key, source, target)
        results.append({"in": source, "out": target, "ok": ok, "message": message})
        if not ok:
            print(f"sczpy refused {source}: {message or '(no message)'}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    return 0 if all(r["ok"] for r in results) else REFUSED_EXIT


# -- the unmodified SCZClient against an MM server ---------------------------------------------------


class _StandInCredential:
    """Replaces azure.identity.DefaultAzureCredential: the stand-in vault below never asks it for a token."""

    def get_token(self, *scopes, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("the Key Vault stand-in needs no token")


class _Secret:
    def __init__(self, value: str) -> None:
        self.value = value


def _install_key_vault_stand_in(secret_env: str) -> list[dict]:
    """Replace sczpy's two Azure globals; return the list that records what sczpy asked Key Vault for."""
    calls: list[dict] = []
    secret = os.environ.get(secret_env)
    if not secret:
        raise SystemExit(f"set {secret_env} to the MM bootstrap secret")

    class StandInSecretClient:
        def __init__(self, vault_url: str, credential=None, **kwargs) -> None:
            self.vault_url = vault_url

        def get_secret(self, name: str, version=None, **kwargs) -> _Secret:
            calls.append({"vault_url": self.vault_url, "secret_name": name})
            return _Secret(secret)

    sczpy.DefaultAzureCredential = _StandInCredential
    sczpy.SecretClient = StandInSecretClient
    return calls


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cmd_client_roundtrip(args: argparse.Namespace) -> int:
    key_vault_calls = _install_key_vault_stand_in(args.secret_env)
    client = sczpy.SCZClient(args.mm_url)  # bootstrap, Key Vault (stand-in), login: all sczpy's code
    file_ref = os.path.abspath(args.plaintext)
    encrypted = file_ref + ".dec"  # the device's name for the encrypted copy (sic)
    attributes = {
        # What SCZSpanExporter sends: the inference event's attributes, as form fields.
        "confidence": args.confidence,
        "model_name": args.model,
        "model_version": args.version,
        "file_ref": file_ref,
    }
    register_reply = client.register_model(args.model, args.version)
    client.encrypt(args.model, args.version, file_ref, encrypted)
    upload_reply = client.upload_data(args.model, args.version, encrypted, attributes)
    decrypted = file_ref + ".roundtrip"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        client.decrypt(args.model, args.version, encrypted, decrypted)
    report = {
        "key_vault_calls": key_vault_calls,
        "register_reply": register_reply,
        "upload_reply": upload_reply,
        "blob_name": upload_reply.removeprefix("Stored ").strip() if upload_reply.startswith("Stored ") else None,
        "attributes": {k: str(v) for k, v in attributes.items()},
        "encrypted_path": encrypted,
        "encrypted_size": os.path.getsize(encrypted),
        "decrypted_path": decrypted if os.path.exists(decrypted) else None,
        "decrypt_message": printed.getvalue().strip(),
        "plaintext_sha256": _sha256(file_ref),
        "decrypted_sha256": _sha256(decrypted) if os.path.exists(decrypted) else None,
    }
    print(json.dumps(report))
    return 0


def cmd_decrypt_files(args: argparse.Namespace) -> int:
    _install_key_vault_stand_in(args.secret_env)
    started = time.perf_counter()
    client = sczpy.SCZClient(args.mm_url)
    bootstrap_seconds = time.perf_counter() - started
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for source in args.files:
        target = str(out_dir / (Path(source).name + ".dec.jpg"))  # the Function's /tmp/<name>.dec.jpg
        with contextlib.suppress(FileNotFoundError):
            os.remove(target)
        printed = io.StringIO()
        began = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            client.decrypt(args.model, args.version, source, target)  # fetches the key and runs PBKDF2 each time
        seconds = time.perf_counter() - began
        ok = os.path.exists(target)
        files.append(
            {
                "in": source,
                "out": target if ok else None,
                "seconds": seconds,
                "ok": ok,
                "message": printed.getvalue().strip(),
            }
        )
    print(
        json.dumps(
            {
                "bootstrap_seconds": bootstrap_seconds,
                "total_seconds": time.perf_counter() - started,
                "files": files,
            }
        )
    )
    return 0 if all(f["ok"] for f in files) else REFUSED_EXIT


def cmd_serve(args: argparse.Namespace) -> int:
    """One JSON request per stdin line, one JSON answer per stdout line.

    {"op": "decrypt", "model": M, "version": V, "pairs": [[IN, OUT], ...], "sha256": bool, "remove": bool}
        -> {"seconds": total, "files": [{"seconds", "ok", "message", "sha256"}]}; only client.decrypt is timed
    {"op": "quit"} -> exits
    Start-up (interpreter, imports) and SCZClient's bootstrap are reported in the first line, not charged per
    file: the original Function paid them once per worker process, at import.
    """
    started = time.perf_counter()
    _install_key_vault_stand_in(args.secret_env)
    client = sczpy.SCZClient(args.mm_url)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "bootstrap_seconds": time.perf_counter() - started}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        if request.get("op") != "decrypt":
            out.write(json.dumps({"error": f"unknown op {request.get('op')!r}"}) + "\n")
            out.flush()
            continue
        files = []
        for source, target in request["pairs"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
            printed = io.StringIO()
            began = time.perf_counter()
            with contextlib.redirect_stdout(printed):
                client.decrypt(request["model"], request["version"], source, target)  # key + PBKDF2 every time
            seconds = time.perf_counter() - began
            ok = os.path.exists(target)
            files.append(
                {
                    "seconds": seconds,
                    "ok": ok,
                    "message": printed.getvalue().strip(),
                    "sha256": _sha256(target) if ok and request.get("sha256") else None,
                }
            )
            if ok and request.get("remove"):
                os.remove(target)
        out.write(json.dumps({"seconds": sum(f["seconds"] for f in files), "files": files}) + "\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    encrypt = sub.add_parser("encrypt", help="encrypt files with sczpy's own code")
    encrypt.add_argument("keyfile", help="a file holding the key text (the MM server's key for a model version)")
    encrypt.add_argument("paths", nargs="+", metavar="IN OUT", help="plaintext and ciphertext paths, in pairs")
    encrypt.set_defaults(run=cmd_encrypt)

    decrypt = sub.add_parser("decrypt", help="decrypt files with sczpy's own code")
    decrypt.add_argument("keyfile")
    decrypt.add_argument("paths", nargs="+", metavar="IN OUT", help="ciphertext and plaintext paths, in pairs")
    decrypt.add_argument("--json", action="store_true", help="print a JSON list of per-file results")
    decrypt.set_defaults(run=cmd_decrypt)

    roundtrip = sub.add_parser("client-roundtrip", help="the unmodified SCZClient as a device uses it")
    roundtrip.add_argument("mm_url")
    roundtrip.add_argument("model")
    roundtrip.add_argument("version")
    roundtrip.add_argument("plaintext", help="the frame; its path becomes file_ref, as on a device")
    roundtrip.add_argument("--confidence", type=int, default=42)
    roundtrip.add_argument("--secret-env", default="SCZ_BOOTSTRAP_SECRET")
    roundtrip.set_defaults(run=cmd_client_roundtrip)

    decrypt_files = sub.add_parser("decrypt-files", help="decrypt files one by one as the original Function did")
    decrypt_files.add_argument("mm_url")
    decrypt_files.add_argument("model")
    decrypt_files.add_argument("version")
    decrypt_files.add_argument("out_dir")
    decrypt_files.add_argument("files", nargs="+")
    decrypt_files.add_argument("--secret-env", default="SCZ_BOOTSTRAP_SECRET")
    decrypt_files.set_defaults(run=cmd_decrypt_files)

    serve = sub.add_parser("serve", help="a long-running decrypt worker for the benchmarks (JSON lines on stdin)")
    serve.add_argument("mm_url")
    serve.add_argument("--secret-env", default="SCZ_BOOTSTRAP_SECRET")
    serve.set_defaults(run=cmd_serve)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
