"""The files `func azure functionapp publish` ships: what they must hold for the Function to start on Azure."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from percept_core import Settings

from .conftest import FUNCTION_DIR

REPO = FUNCTION_DIR.parents[1]
ORIGINAL_SETTINGS = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "mm_server_url",
    "mm_storage_account",
    "mm_telemetry_storage_container",
    "custom_vision_endpoint",
    "custom_vision_training_key",
    "custom_vision_project_id",
)
# Imported by percept_core only for what the Function never does (perceptual hashes for bursts).
NOT_NEEDED_BY_THE_FUNCTION = {"imagehash"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            found[_normal(name.split("[", 1)[0])] = version.strip()
    return found


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def distribution_of(module: str) -> str:
    """The installed distribution that provides `module` (namespace packages such as azure.* resolved)."""
    top = module.split(".", 1)[0]
    candidates = _providers().get(top, [])
    path = module.replace(".", "/")
    for name in dict.fromkeys(candidates):
        files = importlib.metadata.distribution(name).files or []
        if len(candidates) == 1 or any(str(f).startswith(path + "/") or str(f) == path + ".py" for f in files):
            return _normal(name)
    raise LookupError(f"no installed distribution provides {module}")


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def modules_the_function_loads() -> list[Path]:
    """function_app.py and the percept_core modules it imports, as a worker process would load them."""
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('function_app', {str(FUNCTION_DIR / 'function_app.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.startswith('percept_core')]))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True).stdout)
    return [FUNCTION_DIR / "function_app.py", *sorted(Path(p) for p in loaded)]


def third_party_imports(files: list[Path]) -> set[str]:
    """Every absolute import (at module level or inside a function) that is neither stdlib nor percept_core."""
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in ("percept_core", "__future__"):
                    found.add(name)
    return found


def test_requirements_install_everything_the_function_imports_at_the_tested_versions():
    required = pins(FUNCTION_DIR / "requirements.txt")
    loaded = modules_the_function_loads()
    assert "frames.py" not in {p.name for p in loaded}  # pandas stays out of the Function
    imports = third_party_imports(loaded)
    needed = {distribution_of(m) for m in imports if m.split(".", 1)[0] not in NOT_NEEDED_BY_THE_FUNCTION}
    assert {"azure-functions", "azure-identity", "azure-keyvault-secrets", "azure-storage-blob"} <= needed
    assert sorted(needed - required.keys()) == []
    tested = {**pins(REPO / "constraints.txt"), **pins(REPO / "requirements.txt")}
    assert {name: version for name, version in required.items() if tested.get(name) != version} == {}


def test_host_json_bounds_retries_and_concurrency():
    host = json.loads((FUNCTION_DIR / "host.json").read_text())
    assert host["version"] == "2.0"
    # storage extension 5.x (bundle 4): identity-based connections and the blobs settings below
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    assert host["extensions"]["blobs"] == {"maxDegreeOfParallelism": 4, "poisonBlobThreshold": 5}
    assert host["functionTimeout"] == "00:05:00"


def test_local_settings_example_has_the_original_names_and_no_secret():
    values = json.loads((FUNCTION_DIR / "local.settings.json.example").read_text())["Values"]
    assert set(ORIGINAL_SETTINGS) <= values.keys()
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["MMStorage__blobServiceUri"].startswith("https://")  # the trigger's connection
    for secret in ("AZURE_CLIENT_SECRET", "custom_vision_training_key"):
        assert values[secret] == ""
    # percept_core reads the file as it is (copied to local.settings.json for `func start`)
    settings = Settings.load(
        env_file=None, local_settings_file=FUNCTION_DIR / "local.settings.json.example", secrets_files=(), environ={}
    )
    assert settings.mm_telemetry_storage_container == "data"
    assert settings.storage_account_url == "https://mmstorageaccount.blob.core.windows.net"


def test_the_package_leaves_out_local_settings():
    ignored = (FUNCTION_DIR / ".funcignore").read_text().split()
    assert {"local.settings.json", ".venv", "__pycache__"} <= set(ignored)


def test_the_trigger_takes_each_new_blob_from_event_grid():
    """Event Grid, not polling: new blobs arrive as they are written, to any number of instances (and on the Flex
    Consumption plan, which has no polling); the deploy README says how to subscribe and how to backfill."""
    spec = importlib.util.spec_from_file_location("function_app_under_test", FUNCTION_DIR / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (function,) = module.app.get_functions()
    (trigger,) = [b.get_dict_repr() for b in function.get_bindings() if b.get_dict_repr()["type"] == "blobTrigger"]
    assert trigger["source"] == "EventGrid"
    assert trigger["path"] == "%mm_telemetry_storage_container%/{name}" and trigger["connection"] == "MMStorage"
    readme = (FUNCTION_DIR / "README.md").read_text(encoding="utf-8")
    assert "Microsoft.Storage.BlobCreated" in readme and "functionName=Host.Functions.push_blob" in readme
    assert "percept-curator push-untagged" in readme  # the backfill
