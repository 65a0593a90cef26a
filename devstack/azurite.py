"""Azurite, Microsoft's storage emulator (npm package `azurite`, pinned in devstack/package.json)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DEVSTACK_DIR = Path(__file__).resolve().parent
AZURITE_BLOB = DEVSTACK_DIR / "node_modules" / ".bin" / "azurite-blob"
AZURITE_TABLE = DEVSTACK_DIR / "node_modules" / ".bin" / "azurite-table"
_COMMON_OPTIONS = [
    "--skipApiVersionCheck",  # the Python SDK may be newer than this Azurite
    "--loose",
    "--disableProductStyleUrl",
    "--disableTelemetry",
]

# Azurite's fixed development account (documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(host: str, port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};"
    )


def table_connection_string(host: str, port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://{host}:{port}/{ACCOUNT_NAME};"
    )


def azurite_command(*, host: str, port: int, location: str | None) -> list[str]:
    """The blob service only; in memory when `location` is None, else persisted there."""
    if not AZURITE_BLOB.exists():
        raise FileNotFoundError(f"{AZURITE_BLOB} is missing: run `make setup` (npm ci in devstack/).")
    command = [
        str(AZURITE_BLOB),
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        *_COMMON_OPTIONS,
    ]
    if location is None:
        command.append("--inMemoryPersistence")
    else:
        command += ["--location", location]
    return command


def azurite_table_command(*, host: str, port: int, location: str) -> list[str]:
    """The Table service, persisted in `location` (stop it with SIGINT, see stop_process)."""
    if not AZURITE_TABLE.exists():
        raise FileNotFoundError(f"{AZURITE_TABLE} is missing: run `make setup` (npm ci in devstack/).")
    return [str(AZURITE_TABLE), "--tableHost", host, "--tablePort", str(port), "--location", location, *_COMMON_OPTIONS]


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for {host}:{port} exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)  # polling a port with a deadline


@dataclass
class AzuriteProcess:
    """A running Azurite blob service (tests start one in memory on a free port)."""

    process: subprocess.Popen
    host: str
    port: int

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.port)

    @classmethod
    def start(
        cls, *, host: str = "127.0.0.1", port: int, location: str | None = None, log_path: str | None = None
    ) -> AzuriteProcess:
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            azurite_command(host=host, port=port, location=location),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AZURITE_ACCOUNTS": ""},
        )
        wait_for_port(host, port, timeout=60, process=process)
        return cls(process, host, port)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """End an Azurite service: asked first, killed when it does not go within 10 s.

    Asked with SIGINT: the Table service saves its data on SIGINT only (SIGTERM ends it with up to its last
    five seconds of writes unsaved); the Blob service takes either.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
