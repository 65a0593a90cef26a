"""The benchmarks' own services, each a separate process (never a thread of the measuring process).

Azurite (persisted under `.devstack/bench/azurite`, so seeded containers survive between runs), Azurite's
Table service for the shared ledger (under `.devstack/bench/azurite-table`, emptied at every start: each
measured run gets its own tables and drops them), the MM emulator (keys persisted under
`.devstack/bench/mm`, so the seeded ciphertexts stay decryptable) and two Custom Vision emulators in
memory: one limited to `--rate 1` (the quota-bound benchmark) and one without a limit. Ports are picked
free at start, so `make devstack` (10000/8711/8712) and the tests are never disturbed; a lock file keeps
two benchmark runs from sharing the state folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.azurite import (
    azurite_command,
    azurite_table_command,
    connection_string,
    table_connection_string,
    wait_for_port,
)
from devstack.customvision_server import customvision_server_command
from devstack.mm_server import mm_server_command
from devstack.servers import free_port
from percept_core.config import SETTING_NAMES, Settings

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".devstack" / "bench"
HOST = "127.0.0.1"
QUOTA_RATE = 1.0  # transactions per second of the rate-limited Custom Vision emulator


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Nothing the engineer happens to have exported (a sourced .devstack/env, say) leaks into a measurement.
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class BenchStack:
    """The running services and what a client needs to reach them."""

    state: Path
    secrets: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    _lock_file: object | None = None

    # -- addresses --------------------------------------------------------------------------------

    @property
    def storage_connection_string(self) -> str:
        return connection_string(HOST, self.services["azurite"].port)

    @property
    def table_connection_string(self) -> str:
        return table_connection_string(HOST, self.services["azurite-table"].port)

    @property
    def mm_url(self) -> str:
        return f"http://{HOST}:{self.services['mm'].port}"

    def cv_url(self, which: str) -> str:
        """`which` is "quota" (limited to QUOTA_RATE calls/s) or "free" (no limit)."""
        return f"http://{HOST}:{self.services['cv-' + which].port}"

    @property
    def training_key(self) -> str:
        return self.secrets["custom_vision_training_key"]

    @property
    def bootstrap_secret(self) -> str:
        return self.secrets["mm_bootstrap_secret"]

    def settings_values(
        self,
        *,
        container: str,
        cv: str = "free",
        project_id: str | None = None,
        ledger: Path | None = None,
        table_prefix: str | None = None,
        rate: float | None = None,
    ) -> dict[str, str]:
        """The settings (by the names users write) of one run, as environment variables.

        The ledger is the SQLite file `ledger`, or the shared ledger's tables `table_prefix`* on the bench's
        Table service (no `percept_ledger_path` then, as `make devstack LEDGER=table` writes it).
        """
        values = {
            "mm_server_url": self.mm_url,
            "mm_storage_account": "devstoreaccount1",
            "mm_storage_connection_string": self.storage_connection_string,
            "mm_telemetry_storage_container": container,
            "mm_bootstrap_secret": self.bootstrap_secret,
            "custom_vision_endpoint": self.cv_url(cv),
            "custom_vision_training_key": self.training_key,
            "custom_vision_tier": "S0",
            "custom_vision_rate_per_second": str(rate if rate is not None else (QUOTA_RATE if cv == "quota" else 1000)),
        }
        if project_id:
            values["custom_vision_project_id"] = project_id
        if ledger is not None:
            values["percept_ledger_path"] = str(ledger)
        if table_prefix is not None:
            values["percept_ledger_table_connection_string"] = self.table_connection_string
            values["percept_ledger_table_prefix"] = table_prefix
        return values

    def settings(self, **kwargs) -> Settings:
        return Settings.load(
            env_file=None, local_settings_file=None, secrets_files=(), environ=self.settings_values(**kwargs)
        )

    def check(self) -> None:
        """Stop with a clear message when the state folder vanished (`make clean` removes .devstack/)."""
        if not (self.state / "secrets.json").exists():
            raise SystemExit(
                f"bench: {self.state} was deleted during the run (`make clean` removes .devstack/); "
                "run again, it seeds anew"
            )
        for name, service in self.services.items():
            if service.process.poll() is not None:
                raise SystemExit(f"bench: {name} exited ({service.process.returncode}); see {self.state / 'logs'}")

    # -- process accounting -------------------------------------------------------------------------

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each service (and any process it started) has used so far (Linux /proc)."""
        return {name: _tree_cpu_seconds(service.pid) for name, service in self.services.items()}

    # -- Custom Vision helpers ---------------------------------------------------------------------

    def trainer(self, which: str):
        from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
        from msrest.authentication import ApiKeyCredentials

        return CustomVisionTrainingClient(
            self.cv_url(which), ApiKeyCredentials(in_headers={"Training-key": self.training_key})
        )

    def new_project(self, which: str, name: str) -> str:
        """A fresh, empty classification project; on the limited emulator, waits until its bucket is full again."""
        project = _with_429_retry(lambda: self.trainer(which).create_project(name, classification_type="Multilabel"))
        if which == "quota":
            time.sleep(1.0 / QUOTA_RATE + 0.2)  # a full token bucket for whoever is measured next
        return project.id

    def drop_project(self, which: str, project_id: str) -> None:
        """Delete a benchmark project (its images leave the emulator's memory)."""
        with contextlib.suppress(Exception):
            _with_429_retry(lambda: self.trainer(which).delete_project(project_id))

    def cv_stats(self, which: str) -> dict:
        return requests.get(self.cv_url(which) + "/_emulator/stats", timeout=10).json()

    def image_count(self, which: str, project_id: str) -> int:
        """How many images the project holds (tagged or not), as the emulator counts them."""
        trainer = self.trainer(which)
        return _with_429_retry(lambda: trainer.get_image_count(project_id))

    # -- the shared ledger's tables -----------------------------------------------------------------

    def drop_tables(self, prefix: str) -> None:
        """Delete every table whose name starts with `prefix` (one measured run's shared ledger)."""
        from azure.data.tables import TableServiceClient

        with TableServiceClient.from_connection_string(self.table_connection_string) as service:
            for table in list(service.list_tables()):
                if table.name.startswith(prefix):
                    service.delete_table(table.name)

    # -- lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        for service in self.services.values():
            # Azurite's Table service ends cleanly on SIGINT only (devstack/azurite.py stop_process); the blob
            # service takes either, the emulators SIGTERM.
            ask = signal.SIGINT if service.name.startswith("azurite") else signal.SIGTERM
            with contextlib.suppress(OSError):
                os.killpg(service.pid, ask)
        deadline = time.monotonic() + 15
        for service in self.services.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                service.process.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(service.pid, signal.SIGKILL)
                service.process.wait(5)
        self.services.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the fields after "pid (comm)"


def _tree_cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        todo.extend(parents.get(current, []))
    return total


def _with_429_retry(call, attempts: int = 20):
    """Setup calls (create/delete project) on the limited emulator: wait out its 429s."""
    from azure.cognitiveservices.vision.customvision.training.models import CustomVisionErrorException

    for attempt in range(attempts):
        try:
            return call()
        except CustomVisionErrorException as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status != 429 or attempt == attempts - 1:
                raise
            time.sleep(float(exc.response.headers.get("Retry-After", "1")))
    raise AssertionError("unreachable")


def _load_secrets(state: Path) -> dict[str, str]:
    path = state / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "mm_bootstrap_secret": secrets.token_urlsafe(24),
        "custom_vision_training_key": secrets.token_hex(16),
    }
    path.write_text(json.dumps(values))
    os.chmod(path, 0o600)
    return values


def _spawn(name: str, command: list[str], state: Path, env: dict[str, str]) -> subprocess.Popen:
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)


def start(state: Path = STATE) -> BenchStack:
    """Start every service on free ports; raise with the log's path when one does not come up."""
    state.mkdir(parents=True, exist_ok=True)
    lock_file = open(state / "lock", "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise SystemExit(f"bench: another benchmark run holds {state / 'lock'}; wait for it to finish") from None
    values = _load_secrets(state)
    stack = BenchStack(state, values, _lock_file=lock_file)
    ports = {name: free_port(HOST) for name in ("azurite", "azurite-table", "mm", "cv-quota", "cv-free")}
    storage = connection_string(HOST, ports["azurite"])
    env = clean_environ(
        {
            "MM_EMULATOR_STORAGE_CONNECTION_STRING": storage,
            "MM_EMULATOR_BOOTSTRAP_SECRET": values["mm_bootstrap_secret"],
            "AZURITE_ACCOUNTS": "",
        }
    )
    env.pop("CV_EMULATOR_FAULTS", None)
    env.pop("MM_EMULATOR_FAULTS", None)
    (state / "azurite").mkdir(exist_ok=True)
    shutil.rmtree(state / "azurite-table", ignore_errors=True)  # nothing in it outlives a run
    (state / "azurite-table").mkdir()
    commands = {
        "azurite": azurite_command(host=HOST, port=ports["azurite"], location=str(state / "azurite")),
        "azurite-table": azurite_table_command(
            host=HOST, port=ports["azurite-table"], location=str(state / "azurite-table")
        ),
        "mm": mm_server_command(host=HOST, port=ports["mm"], state=state / "mm"),
    }
    for which, rate in (("quota", str(QUOTA_RATE)), ("free", "0")):
        commands[f"cv-{which}"] = customvision_server_command(
            host=HOST,
            port=ports[f"cv-{which}"],
            training_key=values["custom_vision_training_key"],
            options=["--rate", rate, "--tier", "S0", "--max-projects", "10000", "--training-seconds", "0.5"],
        )
    try:
        for name, command in commands.items():
            stack.services[name] = Service(name, _spawn(name, command, state, env), ports[name])
        for name, service in stack.services.items():
            try:
                wait_for_port(HOST, service.port, timeout=90, process=service.process)
            except (RuntimeError, TimeoutError) as exc:
                raise SystemExit(
                    f"bench: {name} did not start ({exc}); see {state / 'logs' / (name + '.log')}"
                ) from None
    except BaseException:
        stack.stop()
        raise
    return stack
