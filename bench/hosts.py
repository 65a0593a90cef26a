"""Benchmark 3c: push all untagged at the 1 transaction/s quota from 1 and 3 hosts on the shared ledger, beside SQLite.

A host is one `percept-curator --json push-untagged --yes --provenance batch` process with a working folder
of its own, run through `python -m bench.ledger_calls` (the CLI's own entry point, with the shared ledger's
requests to the table service counted and timed in that process). Three hosts push one container into
one project at once, on one shared ledger (Azure Table Storage on Azurite's Table service: the settings
`percept_ledger_table_connection_string` and `percept_ledger_table_prefix`, no `percept_ledger_path`),
each configured with the full quota: they do not know about each other, and the service's 429s (with
Retry-After) share the quota among them. Beside them, in the same run and in turn: one host on the same
shared ledger, and one host on SQLite, every side through the same wrapper.

Every measured side gets a new, empty project and new tables (a prefix of its own, dropped afterwards).
The aggregate rate is the frames in the project over the time from spawning the first host to the last
host's exit; against the quota bound (QUOTA_RATE x 64 images/s).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import ChildResult, median, rotate, run_child, run_dir, spread
from .push import QUOTA_BOUND, THROTTLE_WORDS, push_document, push_untagged_arguments
from .stack import QUOTA_RATE, BenchStack, clean_environ

SIDES = (("table", 3), ("table", 1), ("sqlite", 1))  # (ledger, hosts)


def side_name(ledger: str, hosts: int) -> str:
    """The key of a side in the results: `hosts3_table`, `hosts1_table`, `hosts1_sqlite`."""
    return f"hosts{hosts}_{ledger}"


def _host_command(folder: Path, table_prefix: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.ledger_calls",
        str(folder / "table-requests.json"),
        table_prefix,
        "--",
        *push_untagged_arguments(folder),
    ]


def _host_report(child: ChildResult, folder: Path) -> dict:
    document = push_document(child)
    outcomes = document["outcomes"]
    failed = [o for o in outcomes if o["outcome"] not in ("pushed", "duplicate", "skipped")]
    return {
        "exit_code": child.returncode,
        "wall_seconds": round(child.wall_seconds, 2),
        "pipeline_seconds": round(document["seconds"], 2),
        "counts": document["counts"],
        "pushed_names": [o["blob"] for o in outcomes if o["outcome"] == "pushed"],
        "calls": document["calls"],
        "throttled_retried": document["throttled"],
        "failed": len(failed),
        "throttled_seen_by_caller": sum(any(w in (o["reason"] or "").lower() for w in THROTTLE_WORDS) for o in failed),
        "cli_cpu_seconds": round(child.cpu_seconds, 2),
        "table_requests": json.loads((folder / "table-requests.json").read_text()),
    }


def push_from_hosts(stack: BenchStack, *, container: str, blobs: int, ledger: str, hosts: int) -> dict:
    """`hosts` push-untagged processes at once into one new project, on one new ledger; what they did together."""
    stack.check()
    label = side_name(ledger, hosts)
    project = stack.new_project("quota", f"bench {label} {time.time_ns()}")
    prefix = f"b{secrets.token_hex(4)}"  # a table name starts with a letter: letters and digits only
    folders = [run_dir(stack.state, f"{label}-{i}") for i in range(hosts)]
    try:
        envs = []
        for folder in folders:
            settings = (
                stack.settings_values(container=container, cv="quota", project_id=project, table_prefix=prefix)
                if ledger == "table"
                else stack.settings_values(
                    container=container, cv="quota", project_id=project, ledger=folder / "ledger.sqlite"
                )
            )
            envs.append(clean_environ(settings))
        stats_before, cpu_before = stack.cv_stats("quota"), stack.cpu_seconds()
        with ThreadPoolExecutor(hosts) as pool:
            started = time.perf_counter()
            futures = [
                pool.submit(run_child, _host_command(folder, prefix), env=env, cwd=folder, timeout=1800)
                for folder, env in zip(folders, envs, strict=True)
            ]
            children = [f.result() for f in futures]
            wall = time.perf_counter() - started
        stats_after, cpu_after = stack.cv_stats("quota"), stack.cpu_seconds()
        project_images = stack.image_count("quota", project)
        reports = [_host_report(child, folder) for child, folder in zip(children, folders, strict=True)]
    finally:
        stack.drop_project("quota", project)
        if ledger == "table":
            stack.drop_tables(prefix)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    service_cpu = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_before}
    return _side_result(blobs, hosts, wall, project_images, reports, stats_before, stats_after, service_cpu)


def _side_result(
    blobs: int,
    hosts: int,
    wall: float,
    project_images: int,
    reports: list[dict],
    before: dict,
    after: dict,
    service_cpu: dict[str, float],
) -> dict:
    pushed = [name for r in reports for name in r.pop("pushed_names")]
    answered_429 = after["answered429"] - before["answered429"]
    service_calls = sum(after["requests"].values()) - sum(before["requests"].values())
    accepted = service_calls - answered_429
    requests = sum(r["table_requests"]["requests"] for r in reports)
    table_seconds = sum(r["table_requests"]["seconds"] for r in reports)
    images = len(set(pushed))
    by_operation: dict[str, dict] = {}
    for r in reports:
        for op, v in r["table_requests"]["by_operation"].items():
            into = by_operation.setdefault(op, {"requests": 0, "seconds": 0.0})
            into["requests"] += v["requests"]
            into["seconds"] = round(into["seconds"] + v["seconds"], 3)
    bound_seconds = blobs / QUOTA_BOUND
    start_up = min(r["wall_seconds"] - r["pipeline_seconds"] for r in reports)
    budget = {
        "bound_seconds": round(bound_seconds, 2),
        "wall_seconds": round(wall, 2),
        # Every call the service accepted took one token: its quota time, whatever the call.
        "service_accepted_calls": accepted,
        "calls_beyond_the_bound_seconds": round((accepted - blobs / 64) / QUOTA_RATE, 2),
        "process_start_up_and_exit_seconds_fastest_host": round(start_up, 2),
        "quota_idle_seconds": round(wall - accepted / QUOTA_RATE - start_up, 2),
        # The shared ledger's round trips of each host, one after another in its push (claims, content
        # look-ups, settling), against that host's pipeline time.
        "ledger_round_trip_seconds_per_host": [round(r["table_requests"]["seconds"], 2) for r in reports],
        "pipeline_seconds_per_host": [r["pipeline_seconds"] for r in reports],
        # CPU used on the machine's cores during the run: the hosts and every service.
        "cpu_seconds_hosts": round(sum(r["cli_cpu_seconds"] for r in reports), 2),
        "cpu_seconds_services": service_cpu,
        "cpu_busy_fraction": round(
            (sum(r["cli_cpu_seconds"] for r in reports) + sum(service_cpu.values())) / (wall * (os.cpu_count() or 1)), 2
        ),
    }
    return {
        "hosts": hosts,
        "blobs": blobs,
        "wall_seconds": round(wall, 2),
        "images": images,
        "images_per_s": images / wall,
        "vs_quota_bound": images / wall / QUOTA_BOUND,
        "project_images": project_images,
        "pushed_twice": len(pushed) - images,
        "failed": sum(r["failed"] for r in reports),
        "throttled_429_seen_by_caller": sum(r["throttled_seen_by_caller"] for r in reports),
        "throttled_429_retried": sum(r["throttled_retried"] for r in reports),
        "service_answered_429": answered_429,
        "service_calls": service_calls,
        "ledger_calls_per_image": requests / images if images else None,
        "ledger_ms_per_image": table_seconds * 1000 / images if images else None,
        "ledger_requests": requests,
        "ledger_requests_by_operation": by_operation,
        "time_budget": budget,
        "runs": reports,
    }


def run(stack: BenchStack, *, container: str, blobs: int, repeats: int) -> dict:
    """Every side `repeats` times, interleaved (the order rotates); medians per side."""
    runs: dict[str, list[dict]] = {side_name(*side): [] for side in SIDES}
    for repeat in range(repeats):
        for ledger, hosts in rotate(list(SIDES), repeat):
            runs[side_name(ledger, hosts)].append(
                push_from_hosts(stack, container=container, blobs=blobs, ledger=ledger, hosts=hosts)
            )
    results: dict = {}
    for name, side_runs in runs.items():
        middle = sorted(side_runs, key=lambda r: r["wall_seconds"])[len(side_runs) // 2]
        results[name] = {
            "hosts": middle["hosts"],
            "blobs": blobs,
            "repeats": len(side_runs),
            "images_per_s": median([r["images_per_s"] for r in side_runs]),
            "images_per_s_range": spread([r["images_per_s"] for r in side_runs]),
            "vs_quota_bound": median([r["vs_quota_bound"] for r in side_runs]),
            "throttled_429_seen_by_caller": max(r["throttled_429_seen_by_caller"] for r in side_runs),
            "failed": max(r["failed"] for r in side_runs),
            "pushed_twice": max(r["pushed_twice"] for r in side_runs),
            "project_images_short": max(blobs - r["project_images"] for r in side_runs),
            "throttled_429_retried": sum(r["throttled_429_retried"] for r in side_runs),
            "service_answered_429": sum(r["service_answered_429"] for r in side_runs),
            "ledger_calls_per_image": median([r["ledger_calls_per_image"] for r in side_runs]),
            "ledger_ms_per_image": median([r["ledger_ms_per_image"] for r in side_runs]),
            "time_budget_median_run": middle["time_budget"],
            "ledger_requests_by_operation_median_run": middle["ledger_requests_by_operation"],
            "runs": side_runs,
        }
    table = results[side_name("table", 3)]
    results["table_ledger_calls_per_image"] = table["ledger_calls_per_image"]
    results["table_ledger_ms_per_image"] = table["ledger_ms_per_image"]
    results["hosts_throttled_429_seen_by_caller"] = max(
        results[side_name(*s)]["throttled_429_seen_by_caller"] for s in SIDES
    )
    results["target_hosts3_table_vs_quota_bound"] = 0.85
    return results
