"""Session fixtures: the local stack (Azurite in memory, the MM and Custom Vision emulators) on free ports."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from devstack.azurite import AzuriteProcess
from devstack.customvision_server import CustomVisionEmulatorConfig
from devstack.customvision_server import create_app as create_cv_app
from devstack.mm_server import MMEmulatorConfig
from devstack.mm_server import create_app as create_mm_app
from devstack.servers import ServerHandle, free_port, serve_in_thread
from percept_core import Curator, Settings
from tests.support.azurite_table import AzuriteTableProcess

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CLI = [sys.executable, "-m", "percept_core.cli"]  # `percept-curator`, as the console script runs it


@dataclass
class LocalStack:
    """The services of one test session and settings that point at them."""

    azurite: AzuriteProcess
    mm: ServerHandle
    mm_config: MMEmulatorConfig
    customvision: ServerHandle | None = None
    training_key: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def emulator(self):
        """The Custom Vision emulator's store and counters (for assertions)."""
        return self.customvision.server.config.app.state.emulator

    def trainer(self):
        """The Custom Vision Training SDK's client on the emulator, with the stack's training key."""
        from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
        from msrest.authentication import ApiKeyCredentials

        return CustomVisionTrainingClient(
            self.customvision.url, ApiKeyCredentials(in_headers={"Training-key": self.training_key})
        )

    def new_project(self, name: str = "test project", *, detection: bool = False, tags: tuple[str, ...] = ()):
        """A fresh Custom Vision project through the real SDK; returns its id."""
        trainer = self.trainer()
        domain_id = None
        if detection:
            domain_id = next(d.id for d in trainer.get_domains() if d.type == "ObjectDetection")
        project = trainer.create_project(
            f"{name} {secrets.token_hex(3)}",
            domain_id=domain_id,
            classification_type=None if detection else "Multilabel",
        )
        for tag in tags:
            trainer.create_tag(project.id, tag)
        return project.id

    @property
    def storage_connection_string(self) -> str:
        return self.azurite.connection_string

    @property
    def mm_state(self):
        return self.mm.server.config.app.state.mm

    def values(self, **overrides) -> dict[str, str]:
        """The settings, by the names users write, as a process environment would carry them."""
        values = {
            "mm_server_url": self.mm.url,
            "mm_storage_account": "devstoreaccount1",
            "mm_telemetry_storage_container": self.mm_config.container,
            "mm_storage_connection_string": self.azurite.connection_string,
            "mm_bootstrap_secret": self.mm_config.bootstrap_secret,
            "custom_vision_endpoint": self.customvision.url,
            "custom_vision_training_key": self.training_key,
            "custom_vision_rate_per_second": "1000",
            **self.extra,
            **overrides,
        }
        return {key: str(value) for key, value in values.items()}

    def settings(self, **overrides) -> Settings:
        return Settings.load(
            env_file=None, local_settings_file=None, secrets_files=(), environ={}, **self.values(**overrides)
        )

    def environment(self, **overrides) -> dict[str, str]:
        """os.environ plus these settings, for a subprocess (the CLI, `streamlit run`)."""
        from percept_core.config import _SPECS

        names = {spec.key for spec in _SPECS.values()} | {spec.key.upper() for spec in _SPECS.values()}
        base = {k: v for k, v in os.environ.items() if k not in names}
        return {**base, **self.values(**overrides)}


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteProcess]:
    process = AzuriteProcess.start(port=free_port())
    yield process
    process.stop()


@pytest.fixture(scope="session")
def stack(azurite) -> Iterator[LocalStack]:
    config = MMEmulatorConfig(
        storage_connection_string=azurite.connection_string,
        container="data",
        bootstrap_secret=secrets.token_urlsafe(24),
    )
    mm = serve_in_thread(create_mm_app(config))
    training_key = secrets.token_hex(16)
    customvision = serve_in_thread(
        create_cv_app(
            CustomVisionEmulatorConfig(
                training_keys=(training_key,), rate_per_second=None, training_seconds=0.5, max_projects=100_000
            )
        )
    )
    yield LocalStack(azurite, mm, config, customvision, training_key)
    customvision.stop()
    mm.stop()


@pytest.fixture(scope="session")
def demo(stack):
    """The `data` container seeded by the demo devices: good frames, bursts and the five bad cases."""
    from devstack.seed import seed

    report = seed(stack.settings(), images=int(os.environ.get("TEST_DEMO_IMAGES", "36")), workers=2)
    assert not report.skipped and report.frames and len(report.bad) == 5
    return report


@pytest.fixture(scope="module")
def table_service(tmp_path_factory) -> Iterator[AzuriteTableProcess]:
    """Azurite's Table service for a test module (each test keeps to tables of a prefix of its own)."""
    process = AzuriteTableProcess.start(tmp_path_factory.mktemp("azurite-table"))
    yield process
    process.stop()


@pytest.fixture
def artifacts_dir(request) -> Path:
    path = ARTIFACTS / request.node.name.replace("/", "_")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No setting leaks in from the machine: empty environment keys and an empty working folder."""
    from percept_core.config import _SPECS

    for spec in _SPECS.values():
        monkeypatch.delenv(spec.key, raising=False)
        monkeypatch.delenv(spec.key.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with contextlib.suppress(FileExistsError):
        (tmp_path / "home").mkdir()
    return tmp_path


_containers = itertools.count()


@pytest.fixture
def project_id(stack):
    """A fresh multilabel classification project with two tags."""
    return stack.new_project("push tests", tags=("person", "product"))


@pytest.fixture
def make_curator(stack, tmp_path):
    """Curator on the test stack, a fresh project by default and a ledger of this test's own."""

    def make(project: str, **overrides) -> Curator:
        overrides.setdefault("percept_ledger_path", str(tmp_path / "ledger.sqlite"))
        return Curator(stack.settings(custom_vision_project_id=project, **overrides), actor="tester")

    return make


@pytest.fixture
def container_name():
    """A container name no other test uses."""
    return f"push{next(_containers)}x"


def _fault_plan(url: str) -> Iterator[Callable[[list[dict]], None]]:
    """Set an emulator's fault plan (its `/_emulator/faults`) for a test; cleared afterwards."""

    def apply(plan: list[dict]) -> None:
        requests.post(url, json=plan, timeout=10).raise_for_status()

    yield apply
    requests.delete(url, timeout=10)


@pytest.fixture
def cv_faults(stack) -> Iterator[Callable[[list[dict]], None]]:
    """Set a Custom Vision fault plan for the test; cleared afterwards."""
    yield from _fault_plan(f"{stack.customvision.url}/_emulator/faults")


@pytest.fixture
def mm_faults(stack) -> Iterator[Callable[[list[dict]], None]]:
    """Set an MM server fault plan for the test; cleared afterwards."""
    yield from _fault_plan(f"{stack.mm.url}/_emulator/faults")


@pytest.fixture
def run_cli(stack, tmp_path):
    """Run the CLI in an empty folder with the test stack's settings in its environment."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*args: str, check_secrets: bool = True, umask: int = -1, **settings: str) -> subprocess.CompletedProcess:
        settings.setdefault("percept_ledger_path", str(tmp_path / "ledger.sqlite"))
        env = stack.environment(**settings)
        result = subprocess.run(
            [*CLI, *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            umask=umask,
        )
        if check_secrets:
            for secret in (stack.training_key, stack.mm_config.bootstrap_secret):
                assert secret not in result.stdout + result.stderr
        return result

    return run


@pytest.fixture(scope="session")
def strict_stack(azurite) -> Iterator[LocalStack]:
    """An MM and a Custom Vision emulator with the strict Azure profile, on the session's Azurite."""
    config = MMEmulatorConfig(
        storage_connection_string=azurite.connection_string,
        container="data",
        bootstrap_secret=secrets.token_urlsafe(24),
        profile="strict",
    )
    mm = serve_in_thread(create_mm_app(config))
    training_key = secrets.token_hex(16)
    customvision = serve_in_thread(
        create_cv_app(
            CustomVisionEmulatorConfig(
                training_keys=(training_key,),
                rate_per_second=None,
                training_seconds=0.5,
                max_projects=100_000,
                profile="strict",
            )
        )
    )
    yield LocalStack(azurite, mm, config, customvision, training_key)
    customvision.stop()
    mm.stop()
