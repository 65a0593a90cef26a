"""Azurite's Table service for tests: started on a free port with its data in a folder, stopped after."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.azurite import azurite_table_command, stop_process, table_connection_string, wait_for_port
from devstack.servers import free_port


@dataclass
class AzuriteTableProcess:
    """A running Azurite Table service (the well-known development account)."""

    process: subprocess.Popen
    host: str
    port: int
    location: Path

    @property
    def connection_string(self) -> str:
        return table_connection_string(self.host, self.port)

    @classmethod
    def start(cls, location: Path, *, host: str = "127.0.0.1", port: int | None = None) -> AzuriteTableProcess:
        """Start the Table service with its data in `location` (its log goes there too), on `port` or a free one."""
        location.mkdir(parents=True, exist_ok=True)
        port = port or free_port(host)
        command = azurite_table_command(host=host, port=port, location=str(location))
        log = open(location / "azurite-table.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "AZURITE_ACCOUNTS": ""}
        )
        log.close()
        wait_for_port(host, port, timeout=60, process=process)
        return cls(process, host, port, location)

    def restart(self) -> None:
        """Stop the service and start it again on the same port and data: a table service restarting mid-run."""
        self.stop()
        self.process = type(self).start(self.location, host=self.host, port=self.port).process

    def stop(self) -> None:
        stop_process(self.process)
