"""Start and stop the local stack in the background: Azurite, the MM emulator, the Custom Vision emulator.

    python -m devstack up [--state .devstack] [--images N] [--no-seed] [--profile default|strict]
                          [--ledger sqlite|table]
    python -m devstack down [--state .devstack]
    python -m devstack status [--state .devstack]

`up` writes `<state>/env`, a file a shell can source (`set -a; . .devstack/env; set +a`) with the
original sample's setting names pointing at the local services. Secrets for the local services are
made once and kept in `<state>/secrets.json` (mode 0600), so a restart keeps the data readable.
`--profile strict` starts both emulators with the strict Azure profile (devstack/profiles.py: the
stricter reading of every service behaviour the public notes leave uncertain); a running stack with
another profile is restarted with the one asked for (its data is kept).
`--ledger table` writes the shared ledger's settings (Azurite's Table service, which the stack always runs)
into `<state>/env` instead of `percept_ledger_path`: every process that loads that file, on any machine that
reaches the stack, then shares one ledger, as hosts on Azure Table Storage do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .azurite import (
    azurite_command,
    azurite_table_command,
    connection_string,
    table_connection_string,
    wait_for_port,
)
from .customvision_server import customvision_server_command
from .mm_server import mm_server_command
from .profiles import PROFILE_NAMES, get_profile

HOST = "127.0.0.1"
DEFAULT_PORTS = {"azurite": 10000, "table": 10002, "mm": 8711, "customvision": 8712}
LEDGERS = ("sqlite", "table")
LEDGER_TABLE_PREFIX = "devstack"
DEMO_PROJECT_NAME = "Percept retraining (demo)"
DEMO_DETECTION_PROJECT_NAME = "Percept detection (demo)"
DEMO_TAGS = ("person", "empty-shelf", "product", "false-positive")


@dataclass
class StackPaths:
    state: Path

    @property
    def env(self) -> Path:
        return self.state / "env"

    @property
    def pids(self) -> Path:
        return self.state / "pids.json"

    @property
    def secrets(self) -> Path:
        return self.state / "secrets.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def profile(self) -> Path:
        return self.state / "profile"

    def running_profile(self) -> str:
        return self.profile.read_text().strip() if self.profile.exists() else "default"


def _load_secrets(paths: StackPaths) -> dict[str, str]:
    if paths.secrets.exists():
        return json.loads(paths.secrets.read_text())
    values = {
        "mm_bootstrap_secret": secrets.token_urlsafe(24),
        "custom_vision_training_key": secrets.token_hex(16),
        "azure_client_secret": secrets.token_urlsafe(24),
    }
    paths.state.mkdir(parents=True, exist_ok=True)
    paths.secrets.write_text(json.dumps(values))
    os.chmod(paths.secrets, 0o600)
    return values


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running(paths: StackPaths) -> dict[str, int]:
    if not paths.pids.exists():
        return {}
    pids = json.loads(paths.pids.read_text())
    return {name: pid for name, pid in pids.items() if _alive(pid)}


def _spawn(name: str, command: list[str], paths: StackPaths, env: dict[str, str]) -> subprocess.Popen:
    paths.logs.mkdir(parents=True, exist_ok=True)
    log = open(paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=Path.cwd()
    )


def up(
    state: Path,
    *,
    images: int = 300,
    seed: bool = True,
    ports: dict[str, int] | None = None,
    profile: str = "default",
    ledger: str = "sqlite",
) -> Path:
    paths = StackPaths(state)
    ports = {**DEFAULT_PORTS, **(ports or {})}
    profile = get_profile(profile).name
    state.mkdir(parents=True, exist_ok=True)
    values = _load_secrets(paths)
    storage = connection_string(HOST, ports["azurite"])
    running = _running(paths)
    if ledger not in LEDGERS:
        raise SystemExit(f"devstack: the ledger is one of {', '.join(LEDGERS)}, not {ledger!r}")
    everything = len(running) == len(DEFAULT_PORTS)
    if everything and paths.running_profile() != profile:
        print(f"devstack: running with the {paths.running_profile()} profile; restarting with {profile}")
    if not everything or paths.running_profile() != profile:
        down(state, quiet=True)
        env = {
            **os.environ,
            "MM_EMULATOR_STORAGE_CONNECTION_STRING": storage,
            "MM_EMULATOR_BOOTSTRAP_SECRET": values["mm_bootstrap_secret"],
            "CV_EMULATOR_TRAINING_KEYS": values["custom_vision_training_key"],
        }
        (state / "azurite").mkdir(exist_ok=True)
        processes = {
            "azurite": _spawn(
                "azurite",
                azurite_command(host=HOST, port=ports["azurite"], location=str(state / "azurite")),
                paths,
                env,
            ),
            "table": _spawn(
                "table",
                azurite_table_command(host=HOST, port=ports["table"], location=str(state / "azurite")),
                paths,
                env,
            ),
            "mm": _spawn(
                "mm",
                mm_server_command(host=HOST, port=ports["mm"], state=state / "mm", profile=profile),
                paths,
                env,
            ),
            "customvision": _spawn(
                "customvision",
                customvision_server_command(
                    host=HOST,
                    port=ports["customvision"],
                    training_key=values["custom_vision_training_key"],
                    options=["--state", str(state / "customvision"), "--profile", profile],
                ),
                paths,
                env,
            ),
        }
        paths.pids.write_text(json.dumps({name: p.pid for name, p in processes.items()}))
        paths.profile.write_text(profile + "\n")
        for name, process in processes.items():
            try:
                wait_for_port(HOST, ports[name], timeout=60, process=process)
            except (RuntimeError, TimeoutError) as exc:
                down(state, quiet=True)
                raise SystemExit(
                    f"devstack: {name} did not start ({exc}); see {paths.logs / (name + '.log')}. "
                    f"Is port {ports[name]} taken by another program?"
                ) from None
        print(
            f"devstack: Azurite on {HOST}:{ports['azurite']} (blobs) and {HOST}:{ports['table']} (tables), "
            f"MM emulator on {HOST}:{ports['mm']}, "
            f"Custom Vision emulator on {HOST}:{ports['customvision']} ({profile} Azure profile)"
        )
    else:
        print("devstack: already running")

    cv_endpoint = f"http://{HOST}:{ports['customvision']}"
    project_id = ensure_demo_projects(cv_endpoint, values["custom_vision_training_key"], state)
    _write_env(paths, ports, values, storage, project_id, ledger=ledger)
    if seed:
        from percept_core.config import Settings

        from .seed import seed as seed_demo

        settings = Settings.load(env_file=str(paths.env), local_settings_file=None, environ={}, secrets_files=())
        report = seed_demo(settings, images=images, progress=True)
        if report.skipped:
            print("devstack: demo data already seeded")
        else:
            print(f"devstack: seeded {report.frames} frames ({report.bursts} bursts) and {len(report.bad)} bad blobs")
    print(f"devstack: settings in {paths.env} (set -a; . {paths.env}; set +a)")
    return paths.env


def ensure_demo_projects(endpoint: str, training_key: str, state: Path) -> str:
    """The demo classification project (and a detection one), made once; returns the classification id."""
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from msrest.authentication import ApiKeyCredentials

    trainer = CustomVisionTrainingClient(endpoint, ApiKeyCredentials(in_headers={"Training-key": training_key}))
    projects = {p.name: p for p in trainer.get_projects()}
    classification = projects.get(DEMO_PROJECT_NAME)
    if classification is None:
        classification = trainer.create_project(
            DEMO_PROJECT_NAME, description="Frames from the demo devices", classification_type="Multilabel"
        )
        for tag in DEMO_TAGS:
            trainer.create_tag(classification.id, tag)
    if DEMO_DETECTION_PROJECT_NAME not in projects:
        detection_domain = next(
            (d for d in trainer.get_domains() if d.type == "ObjectDetection" and not d.exportable), None
        )
        if detection_domain is not None:
            detection = trainer.create_project(
                DEMO_DETECTION_PROJECT_NAME, description="Boxes drawn on demo frames", domain_id=detection_domain.id
            )
            for tag in ("person", "product"):
                trainer.create_tag(detection.id, tag)
    return classification.id


def _ledger_settings(paths: StackPaths, ports: dict[str, int], ledger: str) -> dict[str, str]:
    """This machine's SQLite file, or the shared ledger on the stack's Table service."""
    if ledger == "sqlite":
        return {"percept_ledger_path": str((paths.state / "ledger.sqlite").resolve())}
    return {
        "percept_ledger_table_connection_string": table_connection_string(HOST, ports["table"]),
        "percept_ledger_table_prefix": LEDGER_TABLE_PREFIX,
    }


def _write_env(
    paths: StackPaths, ports: dict[str, int], values: dict[str, str], storage: str, project_id: str, *, ledger: str
) -> None:
    settings = {
        # The original Azure Function's names, pointing at the local services.
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-00000000d5c1",
        "AZURE_CLIENT_SECRET": values["azure_client_secret"],
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-00000000d5c0",
        "mm_server_url": f"http://{HOST}:{ports['mm']}",
        "mm_storage_account": "devstoreaccount1",
        "mm_telemetry_storage_container": "data",
        "custom_vision_endpoint": f"http://{HOST}:{ports['customvision']}",
        "custom_vision_training_key": values["custom_vision_training_key"],
        "custom_vision_project_id": project_id,
        # Local additions: Azurite's connection string, the MM login secret (no Key Vault locally).
        "mm_storage_connection_string": storage,
        "mm_bootstrap_secret": values["mm_bootstrap_secret"],
        **_ledger_settings(paths, ports, ledger),
    }
    lines = ["# Written by `make devstack`: the local stack's settings. Load with: set -a; . .devstack/env; set +a"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in settings.items()]
    paths.env.write_text("\n".join(lines) + "\n")
    os.chmod(paths.env, 0o600)
    # The emulators' ids go in uuid form only; make sure we wrote one.
    uuid.UUID(project_id)


def down(state: Path, *, quiet: bool = False) -> None:
    paths = StackPaths(state)
    running = _running(paths)
    for pid in running.values():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGINT)  # Azurite's Table service saves its data on SIGINT only
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in running.values()) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for processes to exit, with a deadline
    for pid in running.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    if paths.pids.exists():
        paths.pids.unlink()
    if not quiet:
        print("devstack: stopped" if running else "devstack: was not running")


def status(state: Path) -> int:
    paths = StackPaths(state)
    running = _running(paths)
    for name in DEFAULT_PORTS:
        print(f"{name:13} {f'running (pid {running[name]})' if name in running else 'stopped'}")
    if running:
        print(f"{'profile':13} {paths.running_profile()}")
    return 0 if len(running) == len(DEFAULT_PORTS) else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="The local Azure stand-ins.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the stack in the background and seed the demo data once")
    start.add_argument("--state", default=".devstack", type=Path)
    start.add_argument("--images", type=int, default=int(os.environ.get("DEVSTACK_IMAGES", "300")))
    start.add_argument("--no-seed", action="store_true")
    start.add_argument(
        "--ledger",
        default=os.environ.get("DEVSTACK_LEDGER", "sqlite"),
        choices=LEDGERS,
        help="the ledger the written settings name: this machine's SQLite file, or one shared on the stack's tables",
    )
    start.add_argument(
        "--profile",
        default=os.environ.get("DEVSTACK_PROFILE", "default"),
        choices=PROFILE_NAMES,
        help="Azure profile of the emulators: default, or strict (devstack/profiles.py)",
    )
    stop = sub.add_parser("down", help="stop the stack")
    stop.add_argument("--state", default=".devstack", type=Path)
    show = sub.add_parser("status", help="which services run")
    show.add_argument("--state", default=".devstack", type=Path)
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.state, images=args.images, seed=not args.no_seed, profile=args.profile, ledger=args.ledger)
    elif args.command == "down":
        down(args.state)
    else:
        raise SystemExit(status(args.state))
