"""`make devstack LEDGER=table`: the stack's settings name one shared ledger on Azurite's tables.

Every process that loads `.devstack/env` then shares it, as hosts on Azure Table Storage do; the default keeps
this machine's SQLite file. The stack runs for real here (every service on a free port), and its table data
outlives `down` and `up`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import stack
from devstack.servers import free_port
from percept_core.config import Settings


@pytest.fixture
def devstack_ports() -> Iterator[dict[str, int]]:
    return {name: free_port() for name in stack.DEFAULT_PORTS}


def _settings(env: Path) -> Settings:
    return Settings.load(env_file=str(env), local_settings_file=None, environ={}, secrets_files=())


def _cli(env: Path, *args: str) -> dict:
    """`percept-curator --json --env-file env ...` in a process of its own, from a working folder of its own."""
    result = subprocess.run(
        [sys.executable, "-m", "percept_core.cli", "--json", "--env-file", str(env), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=env.parent,
        env={key: value for key, value in os.environ.items() if not key.lower().startswith(("percept_", "mm_"))},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ledger_table_names_the_shared_ledger_and_every_process_shares_it(tmp_path, devstack_ports):
    state = tmp_path / "state"
    try:
        env = stack.up(state, images=12, ports=devstack_ports, ledger="table")
        settings = _settings(env)
        assert settings.uses_shared_ledger
        assert f":{devstack_ports['table']}/" in settings.ledger_table_connection_string
        assert "percept_ledger_path" not in env.read_text()

        listed = _cli(env, "list")
        first = next(item["name"] for item in listed if item.get("model_name"))
        _cli(env, "reject", first)
        assert _cli(env, "status")["ledger"]["rejected"] == 1  # another process sees the rejection

        stack.down(state, quiet=True)
        env = stack.up(state, images=12, ports=devstack_ports, ledger="table", seed=False)
        assert _cli(env, "status")["ledger"]["rejected"] == 1  # the tables outlive a restart of the stack
    finally:
        stack.down(state, quiet=True)


def test_the_default_ledger_is_this_machines_file(tmp_path, devstack_ports):
    state = tmp_path / "state"
    try:
        env = stack.up(state, seed=False, ports=devstack_ports)
        settings = _settings(env)
        assert not settings.uses_shared_ledger
        assert Path(settings.ledger_path) == (state / "ledger.sqlite").resolve()
        assert "percept_ledger_table" not in env.read_text()
    finally:
        stack.down(state, quiet=True)
