"""`streamlit run app.py` as a subprocess on a free port of 127.0.0.1, with the settings in its environment.

A test may give it a secrets file of its own (`--secrets.files`: Streamlit then reads neither the working
folder's nor ~/.streamlit's) and a port chosen beforehand (an `[auth]` redirect_uri names it); its output,
the server log, goes to `log_path`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from devstack.servers import free_port

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"


@dataclass
class StreamlitServer:
    """A running app: its URL, its process and the file its output goes to."""

    process: subprocess.Popen
    url: str
    log_path: Path

    @classmethod
    def start(
        cls,
        env: dict[str, str],
        *,
        workdir: Path,
        timeout: float = 60.0,
        secrets_file: Path | None = None,
        port: int | None = None,
    ) -> StreamlitServer:
        """Start the app in `workdir` (the repo's .streamlit/config.toml copied there, no .env) and wait
        until /_stcore/health answers. `secrets_file` is the only secrets file it reads (keep it outside
        `workdir`); `port` is a free port the caller picked (default: one is picked here)."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / ".streamlit").mkdir(exist_ok=True)
        shutil.copy(REPO / ".streamlit" / "config.toml", workdir / ".streamlit" / "config.toml")
        port = port or free_port()
        command = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ]
        if secrets_file is not None:
            command += ["--secrets.files", str(secrets_file)]
        log_path = workdir / "streamlit.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = cls(process, f"http://127.0.0.1:{port}", log_path)
        try:
            server.wait_until_healthy(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/_stcore/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)  # polling the health endpoint, with a deadline

    def log_text(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the app and anything it started (its process group)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> StreamlitServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
