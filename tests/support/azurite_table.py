"""Azurite's Table service for tests: started on a free port with its data in a folder, stopped after."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.azurite import ACCOUNT_KEY, ACCOUNT_NAME, DEVSTACK_DIR, stop_process, wait_for_port
from devstack.servers import free_port

AZURITE_TABLE = DEVSTACK_DIR / "node_modules" / ".bin" / "azurite-table"


@dataclass
class AzuriteTableProcess:
    """A running Azurite Table service (the well-known development account)."""

    process: subprocess.Popen
    host: str
    port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://{self.host}:{self.port}/{ACCOUNT_NAME};"
        )

    @classmethod
    def start(cls, location: Path, *, host: str = "127.0.0.1") -> AzuriteTableProcess:
        """Start the Table service with its data in `location` (its log goes there too)."""
        if not AZURITE_TABLE.exists():
            raise FileNotFoundError(f"{AZURITE_TABLE} is missing: run `make setup` (npm ci in devstack/).")
        location.mkdir(parents=True, exist_ok=True)
        port = free_port(host)
        command = [
            str(AZURITE_TABLE),
            "--tableHost",
            host,
            "--tablePort",
            str(port),
            "--location",
            str(location),
            "--skipApiVersionCheck",  # the Python SDK may be newer than this Azurite
            "--loose",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ]
        log = open(location / "azurite-table.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "AZURITE_ACCOUNTS": ""}
        )
        log.close()
        wait_for_port(host, port, timeout=60, process=process)
        return cls(process, host, port)

    def stop(self) -> None:
        stop_process(self.process)
