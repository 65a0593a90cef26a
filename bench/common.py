"""Small shared pieces: medians, the machine, running a child and reading its peak memory."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .stack import clean_environ


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values: list[float]) -> list[float] | None:
    values = [v for v in values if v is not None]
    return [min(values), max(values)] if values else None


def rotate(items: list[Any], repeat: int) -> list[Any]:
    """The order of the sides in repeat `repeat`: each side goes first equally often (interleaving)."""
    shift = repeat % len(items)
    return items[shift:] + items[:shift]


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass
class ChildResult:
    returncode: int
    wall_seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_child(command: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 1800) -> ChildResult:
    """Run a child to completion; its own peak RSS and CPU come from os.wait4 (that child only)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)  # blocks; the rusage is this child's alone
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            returncode=process.returncode,
            wall_seconds=wall,
            peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def python_child(module_args: list[str], *, env_extra: dict[str, str], cwd: Path, timeout: float = 1800) -> ChildResult:
    return run_child([sys.executable, "-m", *module_args], env=clean_environ(env_extra), cwd=cwd, timeout=timeout)


def run_dir(state: Path, label: str) -> Path:
    """An empty folder for one measured run (its ledger, its temp files); the CLI runs with it as cwd."""
    folder = state / "runs" / f"{label}-{time.time_ns()}"
    folder.mkdir(parents=True)
    return folder


CLI = Path(sys.executable).parent / "percept-curator"
