"""`make azure-probe` against the local emulators: the readings it prints under each Azure profile.

The probe is meant for the real services; here it runs against the Custom Vision and MM emulators, whose
`default` profile plays the documented reading of every uncertain behaviour and whose `strict` profile
(devstack/profiles.py) the stricter one, so the probe must tell the two apart, clean up its scratch project,
count its transactions exactly and never print a secret. Its waits (pacing, Retry-After) advance the
emulator's manual clock instead of sleeping.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devstack.mm_server import MMEmulatorConfig
from devstack.mm_server import create_app as create_mm_app
from devstack.servers import serve_in_thread
from percept_core import Settings
from tools.azure_probe import EXPIRED_TOKEN_ENV, PROJECT_PREFIX, main

from .conftest import TRAINING_KEY

REPO = Path(__file__).resolve().parents[2]
MODEL = "people-counter"

# What a user reads in the "reading" column, by question, under each profile.
EXPECTED = {
    "default": {
        "1": "**207 with OKDuplicate per image**: the documented reading",
        "2": "**the existing image (same id)**",
        "3": "**10,240 px**",
        "4": "**6 MiB (6,291,456 bytes)**",
        "5": "**with a timezone**",
        "6": "**Retry-After present** (1 s)",
        "7": "**≈10.0 uploads/s** sustained",
        "8": "**accepted**",
        "9a": "**401** for a made-up token (the documented reading); **401** for an expired token",
        "9b": "**404**",
    },
    "strict": {
        "1": "**refused whole: 400 BadRequestImageBatch**",
        "2": "**nothing (`image` is null)**",
        "3": "**10,000 px**",
        "4": "**6,000,000 bytes**",
        "5": "**naive (no timezone)**",
        "6": "**no Retry-After**",
        "7": "**≈2.0 uploads/s** sustained",
        "8": "**refused: 400 BadRequestImageMetadataValue**",
        "9a": "**401** for a made-up token (the documented reading); **403** for an expired token",
        "9b": "**200 with a text body**",
    },
}


def table(output: str) -> dict[str, list[str]]:
    """The Markdown table's rows by question number: [question, sent, came back, reading]."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and re.fullmatch(r"\d[ab]?", cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


def transactions(output: str) -> int:
    match = re.search(r"^Transactions used: (\d+) Custom Vision calls", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


@pytest.fixture
def start_mm():
    handles = []

    def start(profile: str):
        config = MMEmulatorConfig(storage_connection_string="UseDevelopmentStorage=true", profile=profile)
        handle = serve_in_thread(create_mm_app(config))
        handles.append(handle)
        return handle, config

    yield start
    for handle in handles:
        handle.stop()


def expired_mm_token(url: str, config: MMEmulatorConfig) -> str:
    """A token the MM server issued, then expired (what a user keeps from an earlier `--mm-save-token` run)."""
    login = requests.post(
        f"{url}/api/v1/login", json={"CLIENT_SECRET": config.bootstrap_secret, "CLIENT_ID": "TBD"}, timeout=10
    )
    token = login.json()["access_token"]
    requests.post(f"{url}/api/v1/registry/{MODEL}/1.0", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    requests.post(f"{url}/_emulator/expire-tokens", timeout=10).raise_for_status()
    return token


def mm_calls(url: str) -> int:
    counts = requests.get(f"{url}/_emulator/stats", timeout=10).json()["requests"]
    return sum(n for op, n in counts.items() if "/_emulator" not in op)


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_probe_prints_each_profiles_readings_cleans_up_and_counts(start_emulator, start_mm, tmp_path, profile):
    emu = start_emulator(profile=profile, tier="F0", rate_per_second=10)
    mm, mm_config = start_mm(profile)
    expired = expired_mm_token(mm.url, mm_config)
    settings = _settings(
        emu,
        TRAINING_KEY,
        custom_vision_tier="F0",
        mm_server_url=mm.url,
        mm_bootstrap_secret=mm_config.bootstrap_secret,
    )
    mm_before = mm_calls(mm.url)
    out, err = io.StringIO(), io.StringIO()
    saved = tmp_path / "token"
    argv = ["--provoke-429", "--measure-pace", "--mm", "--mm-model", MODEL, "--mm-save-token", str(saved)]
    code = main(
        argv,
        settings=settings,
        environ={EXPIRED_TOKEN_ENV: expired},
        out=out,
        err=err,
        sleep=emu.clock.advance,
        clock=emu.clock,
    )
    printed = out.getvalue()
    assert code == 0, err.getvalue()
    rows = table(printed)
    readings = {number: rows[number][3] for number in rows}
    for number, expected in EXPECTED[profile].items():
        assert expected in readings[number], f"question {number}: {readings[number]}"
    assert sorted(rows) == ["1", "2", "3", "4", "5", "6", "7", "8", "9a", "9b"]

    # The scratch project is gone, and the output says so with its name and id.
    assert emu.emulator.projects() == []
    deleted = re.search(
        rf"scratch project ({PROJECT_PREFIX}[0-9a-f]+) \(id ([0-9a-f-]{{36}})\): created and deleted", printed
    )
    assert deleted, printed
    # Every call the emulators received is counted (429s included), and nothing else.
    stats = emu.emulator.stats.snapshot()
    assert transactions(printed) == sum(stats["requests"].values())
    assert stats["requests"]["CreateProject"] == stats["requests"]["DeleteProject"] == 1
    assert f"; {mm_calls(mm.url) - mm_before} MM server calls." in printed
    # No secret reaches the output: training key, bootstrap secret, any bearer token (valid, expired, made up).
    issued = list(mm.server.config.app.state.mm.tokens)
    assert saved.read_text() in issued and saved.stat().st_mode & 0o777 == 0o600
    both = printed + err.getvalue()
    for secret in (TRAINING_KEY, mm_config.bootstrap_secret, *issued):
        assert secret not in both


def test_probe_runs_as_a_command_with_the_usual_settings(start_emulator, tmp_path):
    """`make azure-probe` with no opt-in: few transactions, no 429 provoked, nothing left behind."""
    emu = start_emulator()  # no rate limit: nothing may be throttled, so nothing waits
    names = {"custom_vision_endpoint", "custom_vision_training_key", "mm_server_url", EXPIRED_TOKEN_ENV}
    env = {k: v for k, v in os.environ.items() if k.lower() not in names}
    env.update(
        custom_vision_endpoint=emu.url,
        custom_vision_training_key=TRAINING_KEY,
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tools.azure_probe", "--interval", "0"],
        cwd=tmp_path,  # no .env or local.settings.json of the developer's
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert rows["1"][3].startswith("**207 with OKDuplicate")
    assert rows["6"][3] == "**not observed**"
    assert rows["7"][3].startswith("not measured") and rows["9"][3].startswith("not run")
    assert transactions(done.stdout) == sum(emu.emulator.stats.snapshot()["requests"].values()) == 9  # README
    assert emu.emulator.projects() == []
    assert TRAINING_KEY not in done.stdout + done.stderr


def test_a_project_that_cannot_be_deleted_is_named_with_its_id(start_emulator):
    emu = start_emulator()
    requests.post(
        f"{emu.url}/_emulator/faults", json=[{"operation": "DeleteProject", "kind": "500"}], timeout=10
    ).raise_for_status()
    settings = _settings(emu, TRAINING_KEY)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--interval", "0"], settings=settings, out=out, err=err, sleep=emu.clock.advance, clock=emu.clock)
    (project,) = emu.emulator.projects()
    assert code == 1
    assert f"(id {project.id}) was NOT deleted** (500" in out.getvalue()
    assert project.id in err.getvalue()
    assert TRAINING_KEY not in out.getvalue() + err.getvalue()


def test_a_refused_key_creates_nothing_and_is_not_echoed(start_emulator):
    emu = start_emulator()
    wrong = "wrong-training-key-0123456789"
    settings = _settings(emu, wrong)
    out, err = io.StringIO(), io.StringIO()
    assert main([], settings=settings, out=out, err=err, sleep=emu.clock.advance, clock=emu.clock) == 2
    assert "401" in err.getvalue() and "custom_vision_training_key" in err.getvalue()
    assert wrong not in out.getvalue() + err.getvalue()
    assert emu.emulator.projects() == []


def test_missing_settings_are_named(clean_environment):
    err = io.StringIO()
    assert main([], out=io.StringIO(), err=err) == 2
    assert "custom_vision_endpoint" in err.getvalue() and "custom_vision_training_key" in err.getvalue()


def test_make_lists_the_probe_and_runs_it_with_probe_args():
    helped = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "make azure-probe" in helped.stdout
    dry = subprocess.run(
        ["make", "-n", "azure-probe", "PROBE_ARGS=--mm --measure-pace"], cwd=REPO, capture_output=True, text=True
    )
    assert "-m tools.azure_probe --mm --measure-pace" in dry.stdout


def _settings(emu, training_key: str, **more: str) -> Settings:
    """Settings naming only the emulator (and `more`), whatever this machine's environment holds."""
    return Settings.load(
        env_file=None,
        local_settings_file=None,
        secrets_files=(),
        environ={},
        custom_vision_endpoint=emu.url,
        custom_vision_training_key=training_key,
        **more,
    )
