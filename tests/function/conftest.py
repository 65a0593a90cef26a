"""The Azure Function, called as the Functions host calls it, against the test devstack."""

from __future__ import annotations

import importlib.util
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "deploy" / "azure-functions"
LOGGER = "percept_curator.function"


def load_function_app() -> ModuleType:
    """function_app.py as a fresh module: one per worker process of the Functions host."""
    spec = importlib.util.spec_from_file_location(f"function_app_{uuid.uuid4().hex}", FUNCTION_DIR / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CUSTOM_VISION_RETRIES["backoff_seconds"] = 0.02  # the same retries, with shorter pauses
    return module


def input_stream(stack, container: str, name: str, *, trigger_metadata: bool = True) -> func.blob.InputStream:
    """What the host passes for a new blob: its bytes, `<container>/<name>`, and its properties and metadata."""
    client = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(container, name)
    download = client.download_blob()
    data = download.readall()
    properties = download.properties
    return func.blob.InputStream(
        data=data,
        name=f"{container}/{name}",
        uri=client.url,
        length=len(data),
        blob_properties={
            "ETag": properties.etag,
            "ContentLength": properties.size,
            "LastModified": properties.last_modified.isoformat(),
            "BlobType": "BlockBlob",
        }
        if trigger_metadata
        else None,
        metadata=dict(properties.metadata or {}) if trigger_metadata else None,
    )


@dataclass
class FunctionHost:
    """One worker process of the Function, with its app settings in the environment, as on Azure."""

    stack: object
    project_id: str
    ledger_path: Path
    monkeypatch: pytest.MonkeyPatch
    module: ModuleType = field(default_factory=load_function_app)

    @property
    def container(self) -> str:
        return self.stack.mm_config.container

    def invoke(self, name: str, *, trigger_metadata: bool = True) -> None:
        function = self.module.push_blob.build().get_user_function()
        return function(input_stream(self.stack, self.container, name, trigger_metadata=trigger_metadata))

    def invoke_for_outcome(self, name: str):
        """What the handler reports for the blob (the host itself sees only success or an exception)."""
        return self.module.push_new_blob(input_stream(self.stack, self.container, name))

    def images(self):
        return self.stack.emulator.images(self.project_id)

    def restarted(self, ledger_path: Path | None = None) -> FunctionHost:
        """Another worker process: nothing cached, and the ledger at `ledger_path` (default: the same file)."""
        ledger_path = ledger_path or self.ledger_path
        self.monkeypatch.setenv("percept_ledger_path", str(ledger_path))
        return FunctionHost(self.stack, self.project_id, ledger_path, self.monkeypatch)

    @property
    def curator(self):
        return self.module.get_curator()


def set_app_settings(monkeypatch, stack, **overrides: str) -> None:
    settings = stack.settings()
    values = {
        "mm_server_url": settings.mm_server_url,
        "mm_storage_account": settings.mm_storage_account,
        "mm_telemetry_storage_container": settings.mm_telemetry_storage_container,
        "mm_storage_connection_string": settings.mm_storage_connection_string,
        "mm_bootstrap_secret": settings.mm_bootstrap_secret,
        "custom_vision_endpoint": settings.custom_vision_endpoint,
        "custom_vision_training_key": settings.custom_vision_training_key,
        "custom_vision_rate_per_second": "1000",
        "MMStorage": settings.mm_storage_connection_string,  # the trigger's own connection (read by the host)
        **overrides,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def host(stack, demo, clean_environment, monkeypatch, tmp_path, caplog) -> FunctionHost:
    """A fresh Function instance pushing to a fresh project, its settings in the environment."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    project_id = stack.new_project("function")
    ledger_path = tmp_path / "instance-1" / "ledger.sqlite"
    set_app_settings(monkeypatch, stack, custom_vision_project_id=project_id, percept_ledger_path=str(ledger_path))
    return FunctionHost(stack, project_id, ledger_path, monkeypatch)
