"""Run a notebook top to bottom against the test devstack, in memory: the executed notebook (its
outputs hold decrypted thumbnails) is never written anywhere."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell

from percept_core.config import _SPECS

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SUMMARY_MARK = "NOTEBOOK-SUMMARY="
_SETTING_KEYS = {spec.key.lower() for spec in _SPECS.values()}


def kernel_environment(stack, **settings: str) -> dict[str, str]:
    """This process's environment without any Percept setting, plus the devstack's settings (as the
    app would read them from the environment) and `settings`."""
    env = {key: value for key, value in os.environ.items() if key.lower() not in _SETTING_KEYS}
    s = stack.settings()
    env.update(
        {
            "mm_server_url": s.mm_server_url,
            "mm_storage_account": s.mm_storage_account,
            "mm_telemetry_storage_container": s.mm_telemetry_storage_container,
            "mm_storage_connection_string": s.mm_storage_connection_string,
            "mm_bootstrap_secret": s.mm_bootstrap_secret,
            "custom_vision_endpoint": s.custom_vision_endpoint,
            "custom_vision_training_key": s.custom_vision_training_key,
            "custom_vision_rate_per_second": "1000",
            **settings,
        }
    )
    return env


@dataclass
class ExecutedNotebook:
    notebook: NotebookNode
    summary: dict[str, Any]
    kernel_python: str

    def cell(self, cell_id: str) -> NotebookNode:
        return next(c for c in self.notebook.cells if c.get("id") == cell_id)

    def images(self, cell_id: str) -> int:
        """PNG images the cell displayed (held in memory only)."""
        return sum(1 for o in self.cell(cell_id).outputs if "image/png" in o.get("data", {}))

    def text(self) -> str:
        """Every text output of every cell: streams, results, errors."""
        parts = []
        for cell in self.notebook.cells:
            for output in cell.get("outputs", []):
                parts.append(output.get("text", ""))
                parts.append(str(output.get("data", {}).get("text/plain", "")))
                parts.append(str(output.get("data", {}).get("text/html", "")))
                parts.extend(output.get("traceback", []))
        return "\n".join(parts)


def execute_notebook(
    path: Path, *, env: dict[str, str], cwd: Path, parameters: dict[str, Any] | None = None
) -> ExecutedNotebook:
    """Execute `path` in a fresh kernel of this Python with `env`, in `cwd`; read back its `summary`."""
    notebook = nbformat.read(path, as_version=4)
    if parameters:  # what papermill does: a cell after the one tagged `parameters`
        at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
        source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        notebook.cells.insert(at + 1, new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    notebook.cells.append(
        new_code_cell(
            "import json as _json, sys as _sys\n"
            f"print({SUMMARY_MARK!r} + _json.dumps({{'summary': summary, 'python': _sys.executable}}, default=str))"
        )
    )
    cwd.mkdir(parents=True, exist_ok=True)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(
        env=env
    )
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs if o.get("output_type") == "stream")
    readback = json.loads(printed.split(SUMMARY_MARK, 1)[1])
    return ExecutedNotebook(notebook, readback["summary"], readback["python"])
