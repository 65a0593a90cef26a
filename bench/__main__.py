"""`python -m bench [--quick] [--only NAME ...]`: every benchmark of issue 6, a table, bench/results/latest.json.

See bench/README.md for what each benchmark measures, against what, and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import data as bench_data
from . import decrypt, export, first_page, fleet, hosts, push, reviewer, suggestions
from .common import machine
from .push import QUOTA_BOUND
from .sczpy_worker import SczpyWorker
from .stack import QUOTA_RATE, start

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = (
    "decrypt",
    "first_page",
    "push",
    "hosts",
    "lost_ledger",
    "export",
    "fleet",
    "memory",
    "suggestions",
    "reviewer",
)


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one mode."""

    quick: bool
    decrypt_frames: int
    decrypt_repeats: int
    sczpy_files_per_repeat: int
    first_page_blobs: int
    first_page_repeats: int
    push_blobs: int
    push_repeats: int
    sample_blobs: int
    sample_repeats: int
    hosts_blobs: int
    hosts_repeats: int
    export_blobs: int
    export_repeats: int
    fleet_blobs: int
    fleet_repeats: int
    fleet_listing_cut_off: float
    memory_sizes: tuple[int, int]
    memory_repeats: tuple[int, int]
    profile_blobs: int
    suggestions_page: int
    suggestions_repeats: int


FULL = Plan(
    quick=False,
    decrypt_frames=500,
    decrypt_repeats=5,
    sczpy_files_per_repeat=100,  # 5 x 100: every frame of the 500 goes through sczpy once
    first_page_blobs=10_000,
    first_page_repeats=5,
    push_blobs=2_000,
    push_repeats=3,
    sample_blobs=200,
    sample_repeats=2,
    hosts_blobs=2_000,
    hosts_repeats=2,
    export_blobs=2_000,
    export_repeats=3,
    fleet_blobs=100_000,
    fleet_repeats=2,
    fleet_listing_cut_off=60.0,
    memory_sizes=(2_000, 10_000),
    memory_repeats=(3, 2),
    profile_blobs=2_000,
    suggestions_page=48,
    suggestions_repeats=3,
)
QUICK = Plan(
    quick=True,
    decrypt_frames=128,
    decrypt_repeats=3,
    sczpy_files_per_repeat=16,
    first_page_blobs=2_000,
    first_page_repeats=3,
    push_blobs=2_000,
    push_repeats=1,
    sample_blobs=20,
    sample_repeats=1,
    hosts_blobs=400,
    hosts_repeats=1,
    export_blobs=400,
    export_repeats=1,
    fleet_blobs=10_000,
    fleet_repeats=2,
    fleet_listing_cut_off=60.0,
    memory_sizes=(400, 2_000),
    memory_repeats=(1, 1),
    profile_blobs=400,
    suggestions_page=12,
    suggestions_repeats=1,
)


def _log(message: str) -> None:
    print(f"bench [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(plan: Plan, only: tuple[str, ...]) -> dict:
    began = time.monotonic()
    results: dict = {
        "quick": plan.quick,
        "mode": "quick (smaller sizes, fewer repeats)" if plan.quick else "full",
        "machine": machine(),
        "plan": plan.__dict__,
    }
    _log(f"{results['mode']} run; starting Azurite (blob and table), the MM emulator and two Custom Vision emulators")
    stack = start()
    try:
        seeder = bench_data.Seeder(stack)
        containers: dict[int, str] = {}

        def container(n: int) -> str:
            if n not in containers:
                containers[n] = seeder.container(n)
            return containers[n]

        # Seeding is setup: everything any selected benchmark reads is seeded before the first clock starts.
        seed_started = time.monotonic()
        if "decrypt" in only:
            seeder.decrypt_corpus(plan.decrypt_frames)
        if "first_page" in only:
            container(plan.first_page_blobs)
        if "push" in only:
            container(plan.push_blobs)
            container(plan.sample_blobs)
        if "hosts" in only:
            container(plan.hosts_blobs)
        if "lost_ledger" in only:
            container(plan.sample_blobs)
        if "export" in only:
            container(plan.export_blobs)
        if "fleet" in only:
            fleet_container = fleet.seed(seeder, plan.fleet_blobs)
        if "memory" in only:
            for n in plan.memory_sizes:
                container(n)
            container(plan.profile_blobs)
        if "suggestions" in only:
            container(plan.suggestions_page)
        results["seeding_seconds"] = round(time.monotonic() - seed_started, 1)

        with SczpyWorker(stack) as sczpy:
            if "decrypt" in only:
                _log(f"decrypt: {plan.decrypt_frames} frames, {plan.decrypt_repeats} repeats")
                results["decrypt"] = decrypt.run(
                    stack,
                    seeder,
                    sczpy,
                    frames=plan.decrypt_frames,
                    repeats=plan.decrypt_repeats,
                    sczpy_per_repeat=plan.sczpy_files_per_repeat,
                )
            if "first_page" in only:
                _log(f"first page: {plan.first_page_blobs:,}-blob container, {plan.first_page_repeats} repeats")
                results["first_page"] = first_page.run(
                    stack,
                    sczpy,
                    container=container(plan.first_page_blobs),
                    blobs=plan.first_page_blobs,
                    repeats=plan.first_page_repeats,
                )
            if "push" in only:
                _log(
                    f"push at {QUOTA_RATE:g} transaction/s: {plan.push_blobs:,} blobs x {plan.push_repeats}, "
                    f"original and per-image provenance on {plan.sample_blobs} x {plan.sample_repeats}"
                )
                results["push"] = push.quota_bound(
                    stack,
                    sczpy,
                    container=container(plan.push_blobs),
                    blobs=plan.push_blobs,
                    sample_container=container(plan.sample_blobs),
                    sample=plan.sample_blobs,
                    repeats=plan.push_repeats,
                    sample_repeats=plan.sample_repeats,
                    versions=seeder.versions(plan.push_blobs),
                )
        if "hosts" in only:
            _log(
                f"push at {QUOTA_RATE:g} transaction/s from 3 and 1 hosts on the shared ledger (Table service) and "
                f"1 on SQLite: {plan.hosts_blobs:,} blobs x {plan.hosts_repeats}"
            )
            results.setdefault("push", {}).update(
                hosts.run(
                    stack, container=container(plan.hosts_blobs), blobs=plan.hosts_blobs, repeats=plan.hosts_repeats
                )
            )
        if "lost_ledger" in only:
            _log(f"lost ledger: push all untagged of {plan.sample_blobs} frames already in the project, fresh ledger")
            results["lost_ledger"] = push.lost_ledger(
                stack, container=container(plan.sample_blobs), blobs=plan.sample_blobs
            )
        if "export" in only:
            _log(
                f"export for Azure ML: {plan.export_blobs:,} frames x {plan.export_repeats}, and Azurite's own uploads"
            )
            results["export"] = export.run(
                stack, container=container(plan.export_blobs), blobs=plan.export_blobs, repeats=plan.export_repeats
            )
        if "fleet" in only:
            _log(
                f"fleet: {plan.fleet_blobs:,} blobs, the index built once, then index vs listing x {plan.fleet_repeats}"
            )
            results["fleet"] = fleet.run(
                stack,
                container=fleet_container,
                blobs=plan.fleet_blobs,
                repeats=plan.fleet_repeats,
                listing_cut_off=plan.fleet_listing_cut_off,
            )
        if "memory" in only:
            small, large = plan.memory_sizes
            _log(f"unthrottled push and peak RSS at {small:,} and {large:,} blobs")
            runs = push.unthrottled(
                stack,
                sizes=[(small, container(small)), (large, container(large))],
                repeats=dict(zip(plan.memory_sizes, plan.memory_repeats, strict=True)),
            )
            _log(f"profile: instrumented push of {plan.profile_blobs:,} blobs")
            prof = push.profile(stack, container=container(plan.profile_blobs), blobs=plan.profile_blobs)
            throughput_size = plan.push_blobs if plan.push_blobs in runs else large
            results.setdefault("push", {})
            results["push"]["unthrottled_images_per_s"] = runs[throughput_size]["images_per_s"]
            results["push"]["unthrottled_blobs"] = throughput_size
            results["push"]["unthrottled"] = {str(n): r for n, r in runs.items()}
            results["push"]["profile"] = prof
            growth = runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"] - 1
            results["memory"] = {
                "mode": "push-untagged --provenance batch, no rate limit (the most in flight)",
                "sizes": [small, large],
                "peak_mb_2000": runs[2000]["peak_rss_mb"] if 2000 in runs else None,
                "peak_mb_10000": runs[10000]["peak_rss_mb"] if 10000 in runs else None,
                f"peak_mb_{small}": runs[small]["peak_rss_mb"],
                f"peak_mb_{large}": runs[large]["peak_rss_mb"],
                "peak_mb_max": {str(n): runs[n]["peak_rss_mb_max"] for n in runs},
                "peak_mb_runs": {str(n): runs[n]["peak_rss_mb_runs"] for n in runs},
                "statistic": "median of the runs at each size (max in peak_mb_max)",
                "growth": growth,
                "target_peak_mb": 400,
                "target_growth": 0.20,
            }
        if "suggestions" in only:
            _log(
                f"suggestions: a page of {plan.suggestions_page} frames at the S0 quota "
                f"({suggestions.S0_RATE:g} transaction/s), cold and cached, x {plan.suggestions_repeats}"
            )
            results["suggestions"] = suggestions.run(
                stack,
                seeder,
                container=container(plan.suggestions_page),
                page=plan.suggestions_page,
                repeats=plan.suggestions_repeats,
            )
    finally:
        stack.stop()
        shutil.rmtree(stack.state / "runs", ignore_errors=True)
    if "reviewer" in only:  # its own services and app, once the others are stopped
        _log("reviewer: the Review page in headless Chromium (reported, not gated)")
        results["reviewer"] = reviewer.run(quick=plan.quick)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - began, 1)
    return results


# -- the table ------------------------------------------------------------------------------------


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text}{unit}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "MISS")


def rows(results: dict) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    d = results.get("decrypt")
    if d:
        n = f"{d['frames']} frames, {d['mean_frame_kb']:.0f} KB"
        out.append(
            (
                f"decrypt vs sczpy ({n})",
                _fmt(d["ours_frames_per_s"], " fr/s", 0),
                _fmt(d["sczpy_frames_per_s"], " fr/s"),
                _fmt(d["vs_sczpy"], "x", 0),
                ">= 50x",
                _verdict(d["vs_sczpy"] >= 50),
            )
        )
        out.append(
            (
                "decrypt vs HMAC+AES lower bound",
                _fmt(d["ours_mb_per_s"], " MB/s", 0),
                _fmt(d["bound_mb_per_s"], " MB/s", 0),
                _fmt(d["vs_bound"], "", 2),
                ">= 0.80",
                _verdict(d["vs_bound"] >= 0.8),
            )
        )
    f = results.get("first_page")
    if f:
        out.append(
            (
                f"first page, 48 previews, cold ({f['container_blobs']:,} blobs)",
                _fmt(f["seconds"], " s", 2),
                _fmt(f["baseline_seconds"], " s", 2),
                _fmt(f["vs_seed"], "x"),
                ">= 20x",
                _verdict(f["vs_seed"] >= 20),
            )
        )
    p = results.get("push", {})
    if "vs_quota_bound" in p:
        out.append(
            (
                f"push {p['blobs']:,} @{p['quota_transactions_per_s']:g} TPS, batch provenance",
                _fmt(p["ours_images_per_s"], " img/s"),
                _fmt(p["quota_bound_images_per_s"], " img/s (bound)", 0),
                _fmt(p["vs_quota_bound"], "", 2),
                ">= 0.90",
                _verdict(p["vs_quota_bound"] >= 0.9),
            )
        )
        out.append(
            (
                f"  same, vs the original (1 img/call, {p['original_sample_blobs']} scaled)",
                _fmt(p["ours_images_per_s"], " img/s"),
                _fmt(p["original_images_per_s"], " img/s", 2),
                _fmt(p["vs_original"], "x"),
                "-",
                "info",
            )
        )
        pi = p["per_image_provenance"]
        out.append(
            (
                f"push @{p['quota_transactions_per_s']:g} TPS, per-image provenance ({pi['sample_blobs']})",
                _fmt(pi["images_per_s"], " img/s", 2),
                _fmt(pi["bound_images_per_s"], " img/s (1/call)", 0),
                _fmt(pi["vs_its_bound"], "", 2),
                "bounded",
                "info",
            )
        )
        out.append(
            (
                "429s reaching the caller (ours; original)",
                _fmt(p["throttled_429_seen_by_caller"]),
                _fmt(p["original_throttled_429_seen_by_caller"]),
                "-",
                "0",
                _verdict(p["throttled_429_seen_by_caller"] == 0),
            )
        )
    if "hosts3_table" in p:
        for name, label, target in (
            ("hosts3_table", "3 hosts, shared ledger (Table)", 0.85),
            ("hosts1_table", "1 host, shared ledger (Table)", None),
            ("hosts1_sqlite", "1 host, SQLite", None),
        ):
            h = p[name]
            out.append(
                (
                    f"push {h['blobs']:,} @{QUOTA_RATE:g} TPS, {label}",
                    _fmt(h["images_per_s"], " img/s"),
                    _fmt(QUOTA_BOUND, " img/s (bound)", 0),
                    _fmt(h["vs_quota_bound"], "", 2),
                    f">= {target:.2f}" if target else "-",
                    _verdict(h["vs_quota_bound"] >= target) if target else "info",
                )
            )
        out.append(
            (
                "429s reaching the caller (1 and 3 hosts)",
                _fmt(p["hosts_throttled_429_seen_by_caller"]),
                "-",
                "-",
                "0",
                _verdict(p["hosts_throttled_429_seen_by_caller"] == 0),
            )
        )
        h = p["hosts3_table"]
        out.append(
            (
                "  3 hosts: blobs pushed twice / missing from the project",
                f"{h['pushed_twice']} / {h['project_images_short']}",
                "-",
                "-",
                "0 / 0",
                _verdict(h["pushed_twice"] == 0 and h["project_images_short"] == 0),
            )
        )
        for name, label in (("hosts3_table", "3 hosts"), ("hosts1_table", "1 host")):
            h = p[name]
            out.append(
                (
                    f"  shared ledger per image, {label}: table calls / ms",
                    f"{_fmt(h['ledger_calls_per_image'])} / {_fmt(h['ledger_ms_per_image'], ' ms')}",
                    "-",
                    "-",
                    "report",
                    "info",
                )
            )
    if "unthrottled_images_per_s" in p:
        out.append(
            (
                f"push unthrottled, batch provenance ({p['unthrottled_blobs']:,})",
                _fmt(p["unthrottled_images_per_s"], " img/s"),
                "-",
                "-",
                "report",
                "info",
            )
        )
    lost = results.get("lost_ledger")
    if lost:
        out.append(
            (
                f"lost ledger: push-all of {lost['blobs']} frames already in the project, upload calls",
                _fmt(lost["upload_calls"]),
                _fmt(lost["without_reconciling_upload_calls"], " (1/frame)"),
                "-",
                "0",
                _verdict(lost["upload_calls"] == 0),
            )
        )
        out.append(
            (
                "  same, listing calls (count + images 256 a call)",
                _fmt(lost["listing_calls"]),
                "-",
                "-",
                "report",
                "info",
            )
        )
    e = results.get("export")
    if e:
        out.append(
            (
                f"export {e['exported']:,} frames for Azure ML vs Azurite's uploads",
                _fmt(e["ours_images_per_s"], " img/s"),
                _fmt(e["baseline_images_per_s"], " img/s"),
                _fmt(e["vs_azurite_upload"], "", 2),
                f">= {e['target']:.2f}",
                _verdict(e["vs_azurite_upload"] is not None and e["vs_azurite_upload"] >= e["target"]),
            )
        )
    fl = results.get("fleet")
    if fl:
        n = f"{fl['blobs']:,}"
        out.append(
            (
                f"fleet: build the index from scratch ({n} blobs)",
                _fmt(fl["index_blobs_per_s"], " blobs/s", 0),
                "-",
                "-",
                "report",
                "info",
            )
        )
        within, first_upload_within = fl["targets"]["seconds"], fl["targets"]["first_upload_seconds"]
        for key, label, target in (
            ("first_page", f"sparse filter's first page ({fl['sparse_matches']:,} of {n} match)", within),
            ("count", f"count of a filter ({fl['broad_matches']:,} of {n} match)", within),
            ("dry_run", f"dry run of push all untagged ({n})", within),
            ("first_upload", "push all untagged: call to first upload", first_upload_within),
        ):
            seconds = fl[f"{key}_seconds"]
            listing, ratio = _fmt(fl[f"{key}_listing_seconds"], " s", 2), _fmt(fl[f"{key}_vs_listing"], "x")
            if fl[f"{key}_listing_cut_off"]:  # stopped at the limit: a lower bound, and the pace's estimate
                estimate = fl.get(f"{key}_listing_estimated_seconds")
                listing = f"> {listing}" + (f" (~{estimate:,.0f} s)" if estimate else "")
                ratio = f">= {ratio}"
            out.append(
                (
                    f"fleet: {label}, index vs listing",
                    _fmt(seconds, " s", 2),
                    listing,
                    ratio,
                    f"<= {target:g} s",
                    _verdict(seconds <= target),
                )
            )
        limit = fl["targets"]["peak_mb"]
        out.append(
            (
                "fleet: peak RSS, index operations and push (listing side)",
                _fmt(fl["peak_mb"], " MB", 0),
                _fmt(fl["listing_peak_mb"], " MB", 0),
                "-",
                f"< {limit} MB",
                _verdict(fl["peak_mb"] < limit),
            )
        )
        out.append(
            (
                "fleet: peak RSS, building the index",
                _fmt(fl["index_build_peak_mb"], " MB", 0),
                "-",
                "-",
                f"< {limit} MB",
                _verdict(fl["index_build_peak_mb"] < limit),
            )
        )
        out.append(
            (
                f"fleet: the sides agree ({', '.join(fl['answers_compared']) or 'nothing compared'}); first upload "
                "a real frame",
                f"{'yes' if fl['sides_agree'] else 'no'} / {'yes' if fl['first_upload_real_frame'] else 'no'}",
                "-",
                "-",
                "yes / yes",
                _verdict(fl["sides_agree"] and fl["first_upload_real_frame"]),
            )
        )
    m = results.get("memory")
    if m:
        small, large = m["sizes"]
        for n in (small, large):
            peak = m[f"peak_mb_{n}"]
            out.append(
                (
                    f"peak RSS, push-untagged, {n:,} blobs",
                    _fmt(peak, " MB", 0),
                    "-",
                    "-",
                    "< 400 MB",
                    _verdict(peak < 400),
                )
            )
        out.append(
            (
                f"peak RSS growth {small:,} -> {large:,}",
                _fmt(m["growth"] * 100, " %"),
                "-",
                "-",
                "< 20 %",
                _verdict(m["growth"] < 0.2),
            )
        )
    s = results.get("suggestions")
    if s:
        out.append(
            (
                f"suggestions for {s['frames']} frames @{s['quota_transactions_per_s']:g} TPS (S0), cold",
                _fmt(s["seconds"], " s", 2),
                _fmt(s["bound_seconds"], " s (bound)", 2),
                _fmt(s["vs_bound"], "", 2),
                "report",
                "info",
            )
        )
        out.append(
            (
                "  prediction transactions: cold / the same page again (cached)",
                f"{s['prediction_transactions']} / {s['cached_prediction_transactions']}",
                f"{s['frames']} / 0",
                "-",
                f"{s['frames']} / 0",
                _verdict(s["prediction_transactions"] == s["frames"] and s["cached_prediction_transactions"] == 0),
            )
        )
    r = results.get("reviewer")
    if r:
        tiles = "/".join(str(n) for n in r["tiles_per_page"])
        for label, key in (
            (f"review: open a page of 48 frames ({tiles} tiles), new session", "open_page_seconds"),
            ("review: next page by key, all tiles shown", "next_page_key_seconds"),
            ("review: previous page by key (cached)", "previous_page_key_seconds"),
            ("review: key press to the selection count", "key_to_selection_count_seconds"),
        ):
            out.append((label, _fmt(r[key], " s", 2), "-", "-", "report", "info"))
    return out


def table(results: dict) -> str:
    header = ("benchmark", "ours", "baseline", "ratio", "target", "result")
    body = rows(results)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(6)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    m = results["machine"]
    title = (
        f"Percept Curator benchmarks, {results['mode']}: {m['cores']} cores, {m['cpu_model']}, "
        f"{m['memory_gb']} GB, {m['date']}, load average {m['load_average_at_start'][0]:.1f} at start / "
        f"{m.get('load_average_at_end', [0])[0]:.1f} at end, {results.get('seconds', 0):.0f} s"
    )
    return "\n".join([title, line(header), line(tuple("-" * w for w in widths)), *map(line, body)])


def explain(results: dict) -> str:
    """Where the time goes, in a few lines under the table."""
    lines = ["where the time goes:"]
    d = results.get("decrypt")
    if d:
        lines.append(
            f"  decrypt: ours {d['ours_ms_per_frame']:.2f} ms/frame, bound {d['bound_ms_per_frame']:.2f}, sczpy "
            f"{d['sczpy_ms_per_frame']:.0f} (key fetch + 100,000 PBKDF2 rounds every file); our one key fetch + "
            f"derivation took {d['key_fetch_and_derive_seconds_once'] * 1000:.0f} ms, once"
        )
    f = results.get("first_page")
    if f:
        lines.append(
            f"  first page: ours {f['seconds']:.2f} s = listing {f['list_seconds']:.2f} s + {f['key_derivations']} key "
            f"derivations (one per model version on the page) + 48 downloads, decryptions and thumbnails, using "
            f"{f['cpu_seconds']:.2f} s of CPU on {results['machine']['cores']} cores; the original pays a key fetch "
            f"+ PBKDF2 per blob ({f['baseline_seconds'] / 48 * 1000:.0f} ms/blob)"
        )
    p = results.get("push", {})
    b = p.get("time_budget")
    if b:
        lines.append(
            f"  push @{p['quota_transactions_per_s']:g} TPS (median run): {b['wall_seconds']:.1f} s against a "
            f"{b['bound_seconds']:.2f} s bound = +{b['partial_batches_seconds']:.1f} s partial batches "
            f"({b['minimum_calls_one_batch_per_version']} calls at least for {len(b['versions'])} model versions) "
            f"+{b['pacing_margin_seconds']:.1f} s pacing at 96% of the quota "
            f"+{b['extra_calls_from_429s_seconds']:.1f} s "
            f"for {b['calls'] - b['minimum_calls_one_batch_per_version']} extra calls ({b['retried_429s']} 429s "
            f"retried) +{b['process_start_and_exit_seconds']:.1f} s process start-up "
            f"+{b['first_batch_and_rest_seconds']:.1f} s first batch fill, waits for CPU and the rest"
        )
        lines.append(
            f"  the original @{p['quota_transactions_per_s']:g} TPS: {p['original_images_per_s']:.2f} img/s, "
            f"{p['original_throttled_429_seen_by_caller']} 429s failed its invocations and "
            f"{p['original_given_up_blobs']} of {p['original_sample_blobs']} blobs were given up after 5 tries "
            f"(immediate retries; a slower host retry would lose fewer, the rate stays ~1 image per second)"
        )
    for name, label in (("hosts3_table", "3 hosts, shared ledger"), ("hosts1_table", "1 host, shared ledger")):
        if name not in p:
            continue
        h = p[name]
        b = h["time_budget_median_run"]
        ops = sorted(h["ledger_requests_by_operation_median_run"].items(), key=lambda kv: -kv[1]["seconds"])
        top = ", ".join(
            f"{op} {v['requests'] / h['blobs']:.1f}/{v['seconds'] * 1000 / h['blobs']:.1f}" for op, v in ops[:6]
        )
        lines.append(
            f"  push @{QUOTA_RATE:g} TPS, {label} (median run): {b['wall_seconds']:.1f} s against a "
            f"{b['bound_seconds']:.2f} s bound = +{b['calls_beyond_the_bound_seconds']:.1f} s for the "
            f"{b['service_accepted_calls']} calls the service took beyond {h['blobs'] / 64:g} full batches "
            f"+{b['process_start_up_and_exit_seconds_fastest_host']:.1f} s process start-up "
            f"+{b['quota_idle_seconds']:.1f} s with the quota idle; each host's ledger round trips "
            f"{'/'.join(f'{x:.1f}' for x in b['ledger_round_trip_seconds_per_host'])} s of its "
            f"{'/'.join(f'{x:.1f}' for x in b['pipeline_seconds_per_host'])} s push, one after another; "
            f"CPU {b['cpu_busy_fraction'] * 100:.0f}% busy"
        )
        lines.append(f"    table calls/ms per image by operation: {top}")
    fl = results.get("fleet")
    if fl:
        requests = fl["list_requests"]
        lines.append(
            f"  fleet ({fl['blobs']:,} blobs): the listing side made {requests['listing']:.0f} list requests for the "
            f"first page, the count and the dry run (the index side {requests['index']:.0f}; a listing still running "
            f"after {fl['listing_cut_off_seconds']:.0f} s is stopped there); the index was built at "
            f"{fl['index_blobs_per_s']:,.0f} blobs/s ({fl['index_build_seconds']:.1f} s); the dry run counts the "
            f"index's rows in groups joined with the ledger in one query ({fl['blobs'] / fl['dry_run_seconds']:,.0f} "
            "rows/s); the "
            f"push, cancelled at its first upload, returned after {fl['push_until_stopped_seconds']:.2f} s"
        )
    prof = p.get("profile")
    if prof:
        per_image = ", ".join(f"{k} {v:.1f}" for k, v in prof["cpu_ms_per_image"].items())
        lines.append(
            f"  push unthrottled ({prof['blobs']:,} blobs, instrumented): {prof['images_per_s']:.0f} img/s; CPU ms per "
            f"image: {per_image}"
        )
        stages = ", ".join(
            f"{k} {prof['stages_cpu_ms_per_image'][k]:.1f}/{v:.1f}" for k, v in prof["stages_wall_ms_per_image"].items()
        )
        lines.append(f"  inside push-untagged, CPU/wall ms per image (wall summed over threads): {stages}")
    return "\n".join(lines)


def flat(results: dict) -> dict:
    """The keys issue 6 names, dotted, for comparing runs over time."""
    keys = {}
    for section, names in {
        "decrypt": ("vs_sczpy", "vs_bound"),
        "first_page": ("vs_seed", "seconds"),
        "push": (
            "vs_quota_bound",
            "throttled_429_seen_by_caller",
            "unthrottled_images_per_s",
            "hosts1_table.vs_quota_bound",
            "hosts3_table.vs_quota_bound",
            "hosts1_sqlite.vs_quota_bound",
            "hosts_throttled_429_seen_by_caller",
            "table_ledger_calls_per_image",
            "table_ledger_ms_per_image",
        ),
        "lost_ledger": ("upload_calls", "listing_calls"),
        "export": ("vs_azurite_upload", "ours_images_per_s", "baseline_images_per_s"),
        "fleet": (
            "first_page_seconds",
            "count_seconds",
            "dry_run_seconds",
            "first_upload_seconds",
            "first_page_vs_listing",
            "count_vs_listing",
            "dry_run_vs_listing",
            "first_upload_vs_listing",
            "index_blobs_per_s",
            "peak_mb",
        ),
        "memory": ("peak_mb_2000", "peak_mb_10000", "growth"),
        "suggestions": ("seconds", "vs_bound", "prediction_transactions", "cached_prediction_transactions"),
        "reviewer": ("open_page_seconds", "next_page_key_seconds", "key_to_selection_count_seconds"),
    }.items():
        for name in names:
            value = results.get(section, {})
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            keys[f"{section}.{name}"] = value
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (under five minutes)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    results = run(plan, tuple(args.only or BENCHMARKS))
    results["summary"] = flat(results)
    text = table(results) + "\n\n" + explain(results)
    results["table"] = text.splitlines()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(text)
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
