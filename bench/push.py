"""Benchmarks 3 and 4: push all untagged to Custom Vision, against the quota and the original; memory.

Ours is the real command, `percept-curator --json push-untagged --yes [--provenance batch]`, in a child
process with a fresh ledger and a fresh, empty Custom Vision project each time; its wall time runs from
spawn to exit (interpreter start-up included), its peak RSS and CPU come from os.wait4.

Quota-bound: the Custom Vision emulator answers 429 (Retry-After) beyond 1 transaction per second, and
ours is configured with that quota (custom_vision_rate_per_second=1). The bound is 1 call/s x 64 images
= 64 images/s. In batch provenance ours sends 64 images per call; in the default per-image provenance
each image carries its own source blob, etag and sha256 in Custom Vision's metadata, which is per call,
so that mode is bounded by one image per call: 1 image/s here, whatever the client does.

The original: its Function body, per blob, sequentially (the generous case: Functions would run several
at once and only meet more 429s): a new BlobClient, get_blob_properties, download to a temp file, sczpy
`client.decrypt` (key fetch + PBKDF2, file to file), read the file, `create_images_from_files` with one
image through the Custom Vision SDK's default client, delete the files. msrest's default retry policy
does not retry 429 (it treats codes below 500 as final), so a 429 fails the invocation, and the Functions
host runs a failed blob-trigger invocation up to 5 times in all, then gives up on the blob (poison
queue). We retry at once: the host's queue adds delay, so this flatters the original's throughput, while
the number of blobs it gives up on depends on that timing (read it as indicative). Measured on a 200-blob
sample and scaled linearly to 2,000 (its cost is per blob; the quota makes it ~1 image/s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from .common import CLI, median, python_child, rotate, run_child, run_dir, spread
from .sczpy_worker import SczpyWorker
from .stack import QUOTA_RATE, BenchStack, clean_environ

QUOTA_BOUND = QUOTA_RATE * 64  # images per second
THROTTLE_WORDS = ("429", "rate limit", "throttl", "too many requests", "exceeded")


def _stats_delta(before: dict, after: dict) -> dict:
    return {
        "answered_429": after["answered429"] - before["answered429"],
        "requests": sum(after["requests"].values()) - sum(before["requests"].values()),
    }


def _cpu_delta(before: dict, after: dict) -> dict:
    return {k: round(after[k] - before[k], 2) for k in before}


def push_untagged_arguments(folder: Path, provenance: str = "batch") -> list[str]:
    """`percept-curator`'s arguments for a push of everything, with its JSON report, settings from the environment
    only (the env file named does not exist)."""
    return ["--json", "--env-file", str(folder / "no.env"), "push-untagged", "--yes", "--provenance", provenance]


def push_document(child) -> dict:
    """The JSON report a `percept-curator --json push-untagged` child printed; an error when it printed none."""
    try:
        document = child.json()
    except ValueError:
        raise RuntimeError(f"push-untagged printed no JSON (exit {child.returncode}): {child.stderr[-2000:]}") from None
    if "error" in document:
        raise RuntimeError(f"push-untagged failed: {document}")
    return document


def cli_push(
    stack: BenchStack, *, container: str, cv: str, provenance: str, label: str, env_extra: dict | None = None
) -> dict:
    """One `percept-curator push-untagged` run into a new project; what it did and what it cost."""
    stack.check()
    folder = run_dir(stack.state, label)
    project = stack.new_project(cv, f"bench {label} {time.time_ns()}")
    try:
        env = stack.settings_values(container=container, cv=cv, project_id=project, ledger=folder / "ledger.sqlite")
        stats_before, cpu_before = stack.cv_stats(cv), stack.cpu_seconds()
        child = run_child(
            [str(CLI), *push_untagged_arguments(folder, provenance)],
            env=clean_environ({**env, **(env_extra or {})}),
            cwd=folder,
            timeout=1800,
        )
        stats, cpu = _stats_delta(stats_before, stack.cv_stats(cv)), _cpu_delta(cpu_before, stack.cpu_seconds())
    finally:
        stack.drop_project(cv, project)
    document = push_document(child)
    counts = document["counts"]
    landed = counts.get("pushed", 0) + counts.get("duplicate", 0)
    failed = [o for o in document["outcomes"] if o["outcome"] not in ("pushed", "duplicate", "skipped")]
    throttled_seen = [o for o in failed if any(w in (o["reason"] or "").lower() for w in THROTTLE_WORDS)]
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "exit_code": child.returncode,
        "wall_seconds": child.wall_seconds,
        "pipeline_seconds": document["seconds"],
        "images": landed,
        "images_per_s": landed / child.wall_seconds,
        "pipeline_images_per_s": landed / document["seconds"] if document["seconds"] else None,
        "calls": document["calls"],
        "throttled_retried": document["throttled"],
        "failed": len(failed),
        "throttled_seen_by_caller": len(throttled_seen),
        "peak_rss_mb": child.peak_rss_mb,
        "cli_cpu_seconds": round(child.cpu_seconds, 2),
        "service_cpu_seconds": cpu,
        "service": stats,
    }


def original_push(stack: BenchStack, sczpy: SczpyWorker, *, container: str) -> dict:
    """The original Function's body for every blob of `container`, one after another (see the module doc)."""
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from azure.cognitiveservices.vision.customvision.training.models import (
        CustomVisionErrorException,
        ImageFileCreateBatch,
        ImageFileCreateEntry,
    )
    from azure.storage.blob import BlobClient, BlobServiceClient
    from msrest.authentication import ApiKeyCredentials

    project_id = stack.new_project("quota", f"bench original {time.time_ns()}")
    stats_before = stack.cv_stats("quota")
    conn = stack.storage_connection_string
    with tempfile.TemporaryDirectory(prefix="bench-original-", dir=stack.state) as tmp:
        data_dir = Path(tmp)
        # What the Function did at import, once per worker: untimed, and the bucket refills afterwards.
        trainer = CustomVisionTrainingClient(
            stack.cv_url("quota"), ApiKeyCredentials(in_headers={"Training-key": stack.training_key})
        )
        project = trainer.get_project(project_id)
        with BlobServiceClient.from_connection_string(conn) as service:
            names = [b.name for b in service.get_container_client(container).list_blobs()]  # the trigger's job
        time.sleep(1.0 / QUOTA_RATE + 0.2)

        def invocation(blob_name: str) -> bool:
            storage_client = BlobClient.from_connection_string(conn, container_name=container, blob_name=blob_name)
            blob_prop = storage_client.get_blob_properties()
            model = (blob_prop.metadata["model_name"], blob_prop.metadata["model_version"])
            download_file = data_dir / blob_name
            decrypted_file = data_dir / (blob_name + ".dec.jpg")
            with open(download_file, "wb") as encrypted:
                encrypted.write(storage_client.download_blob().readall())
                encrypted.flush()
                sczpy.decrypt(model, [(download_file, decrypted_file)])
            with open(decrypted_file, "rb") as image_contents:
                image_list = [ImageFileCreateEntry(name=blob_name, contents=image_contents.read())]
            upload_result = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=image_list))
            os.remove(download_file)
            os.remove(decrypted_file)
            return bool(upload_result.is_batch_successful)

        landed = poisoned = not_ok = throttled_seen = other_errors = 0
        started = time.perf_counter()
        for name in names:
            for _attempt in range(5):  # the Functions host: 5 tries in all for a failing blob trigger
                try:
                    if invocation(name):
                        landed += 1
                    else:
                        not_ok += 1
                    break
                except CustomVisionErrorException as exc:
                    if exc.response is not None and exc.response.status_code == 429:
                        throttled_seen += 1
                    else:
                        other_errors += 1
            else:
                poisoned += 1
        seconds = time.perf_counter() - started
    stats = _stats_delta(stats_before, stack.cv_stats("quota"))
    stack.drop_project("quota", project_id)
    return {
        "blobs": len(names),
        "seconds": seconds,
        "images": landed,
        "images_per_s": landed / seconds,
        "throttled_seen_by_caller": throttled_seen,
        "other_errors": other_errors,
        "given_up_blobs": poisoned,
        "not_ok_in_batch": not_ok,
        "service": stats,
    }


def quota_bound(
    stack: BenchStack,
    sczpy: SczpyWorker,
    *,
    container: str,
    blobs: int,
    sample_container: str,
    sample: int,
    repeats: int,
    sample_repeats: int,
    versions: dict[str, int],
) -> dict:
    """Ours (batch and per-image provenance) and the original at 1 transaction/s, interleaved."""
    batch_runs, image_runs, original_runs = [], [], []
    for repeat in range(repeats):
        sides = ["batch"] + (["original", "image"] if repeat < sample_repeats else [])
        for side in rotate(sides, repeat):
            if side == "batch":
                batch_runs.append(
                    cli_push(stack, container=container, cv="quota", provenance="batch", label="quota-batch")
                )
            elif side == "image":
                image_runs.append(
                    cli_push(stack, container=sample_container, cv="quota", provenance="image", label="quota-image")
                )
            else:
                original_runs.append(original_push(stack, sczpy, container=sample_container))
    ours = median([r["images_per_s"] for r in batch_runs])
    ours_pipeline = median([r["pipeline_images_per_s"] for r in batch_runs])
    original = median([r["images_per_s"] for r in original_runs])
    image = median([r["images_per_s"] for r in image_runs])
    # Where the time goes against the bound (blobs / 64 s): see the README's reading of the table.
    median_run = sorted(batch_runs, key=lambda r: r["wall_seconds"])[len(batch_runs) // 2]
    min_calls = sum(-(-n // 64) for n in versions.values())
    pace = 1 / (QUOTA_RATE * 0.96)  # percept_core paces at 96% of the configured rate
    budget = {
        "bound_seconds": blobs / QUOTA_BOUND,
        "wall_seconds": median_run["wall_seconds"],
        "process_start_and_exit_seconds": median_run["wall_seconds"] - median_run["pipeline_seconds"],
        "calls": median_run["calls"],
        "minimum_calls_one_batch_per_version": min_calls,
        "versions": versions,
        "retried_429s": median_run["throttled_retried"],
        "partial_batches_seconds": (min_calls - blobs / 64) / QUOTA_RATE,
        "pacing_margin_seconds": (min_calls - 1) * (pace - 1 / QUOTA_RATE),
        "extra_calls_from_429s_seconds": (median_run["calls"] - min_calls) * pace,
    }
    budget["pipeline_seconds"] = median_run["pipeline_seconds"]
    budget["first_batch_and_rest_seconds"] = (
        median_run["pipeline_seconds"]
        - budget["bound_seconds"]
        - budget["partial_batches_seconds"]
        - budget["pacing_margin_seconds"]
        - budget["extra_calls_from_429s_seconds"]
    )
    return {
        "blobs": blobs,
        "time_budget": {k: round(v, 2) if isinstance(v, float) else v for k, v in budget.items()},
        "quota_transactions_per_s": QUOTA_RATE,
        "quota_bound_images_per_s": QUOTA_BOUND,
        "repeats": len(batch_runs),
        "ours_images_per_s": ours,
        "ours_images_per_s_range": spread([r["images_per_s"] for r in batch_runs]),
        "ours_seconds": median([r["wall_seconds"] for r in batch_runs]),
        "ours_pipeline_images_per_s": ours_pipeline,
        "vs_quota_bound": ours / QUOTA_BOUND,
        "vs_quota_bound_pipeline_only": ours_pipeline / QUOTA_BOUND,
        "target_vs_quota_bound": 0.9,
        "ours_calls": median([r["calls"] for r in batch_runs]),
        "ours_failed": max(r["failed"] for r in batch_runs),
        "throttled_429_seen_by_caller": max(r["throttled_seen_by_caller"] for r in batch_runs + image_runs),
        "throttled_429_retried": sum(r["throttled_retried"] for r in batch_runs + image_runs),
        "service_answered_429": sum(r["service"]["answered_429"] for r in batch_runs + image_runs),
        "original_sample_blobs": sample,
        "original_repeats": len(original_runs),
        "original_images_per_s": original,
        "original_seconds_scaled_to_blobs": blobs / original if original else None,
        "original_throttled_429_seen_by_caller": round(median([r["throttled_seen_by_caller"] for r in original_runs])),
        "original_given_up_blobs": round(median([r["given_up_blobs"] for r in original_runs])),
        "original_images": round(median([r["images"] for r in original_runs])),
        "vs_original": ours / original if original else None,
        "per_image_provenance": {
            "sample_blobs": sample,
            "images_per_s": image,
            "bound_images_per_s": QUOTA_RATE,  # one image per call
            "vs_its_bound": image / QUOTA_RATE if image else None,
            "vs_original": image / original if image and original else None,
            "failed": max((r["failed"] for r in image_runs), default=None),
        },
        "runs": {"batch": batch_runs, "image": image_runs, "original": original_runs},
    }


def lost_ledger(stack: BenchStack, *, container: str, blobs: int) -> dict:
    """A lost ledger: push all untagged (per-image provenance) into a project that already holds every frame,
    from a fresh ledger, after a first run that pushed them. What the second run costs, in upload and listing
    calls (the emulator's own request counts), beside what a client that does not reconcile sends: one upload
    call per frame (per-image provenance), every one answered OKDuplicate."""
    folder = run_dir(stack.state, "lost-ledger")
    project = stack.new_project("free", f"bench lost ledger {time.time_ns()}")
    command = [str(CLI), "--json", "--env-file", str(folder / "no.env"), "push-untagged", "--yes"]
    try:
        first_env = stack.settings_values(container=container, project_id=project, ledger=folder / "a.sqlite")
        first = run_child(command, env=clean_environ(first_env), cwd=folder, timeout=1800)
        before = stack.cv_stats("free")["requests"]
        lost_env = stack.settings_values(container=container, project_id=project, ledger=folder / "b.sqlite")
        second = run_child(command, env=clean_environ(lost_env), cwd=folder, timeout=1800)
        after = stack.cv_stats("free")["requests"]
    finally:
        stack.drop_project("free", project)
    shutil.rmtree(folder, ignore_errors=True)
    pushed, again = first.json(), second.json()
    calls = {op: after.get(op, 0) - before.get(op, 0) for op in after if after.get(op, 0) != before.get(op, 0)}
    return {
        "blobs": blobs,
        "first_run_images": pushed["counts"].get("pushed", 0),
        "counts": again["counts"],
        "upload_calls": calls.get("CreateImagesFromFiles", 0),
        "listing_calls": calls.get("GetImages", 0) + calls.get("GetImageCount", 0),
        "calls_by_operation": calls,
        "wall_seconds": second.wall_seconds,
        "without_reconciling_upload_calls": pushed["counts"].get("pushed", 0),  # one per frame, all OKDuplicate
    }


def unthrottled(stack: BenchStack, *, sizes: list[tuple[int, str]], repeats: dict[int, int]) -> dict:
    """Ours without a rate limit (batch provenance), which also gives the peak RSS at each size."""
    runs: dict[int, list[dict]] = {}
    for n, container in _interleave(sizes, repeats):  # the sizes take turns, never all repeats back to back
        runs.setdefault(n, []).append(
            cli_push(stack, container=container, cv="free", provenance="batch", label=f"free-{n}")
        )
    return {
        n: {
            "blobs": n,
            "repeats": len(r),
            "images_per_s": median([x["images_per_s"] for x in r]),
            "images_per_s_range": spread([x["images_per_s"] for x in r]),
            "pipeline_images_per_s": median([x["pipeline_images_per_s"] for x in r]),
            "wall_seconds": median([x["wall_seconds"] for x in r]),
            # Peak RSS varies from run to run (which batches happen to be in flight together, how the
            # allocator's arenas fragment): the median of the runs, and the maximum beside it.
            "peak_rss_mb": median([x["peak_rss_mb"] for x in r]),
            "peak_rss_mb_max": max(x["peak_rss_mb"] for x in r),
            "peak_rss_mb_runs": [round(x["peak_rss_mb"], 1) for x in r],
            "failed": max(x["failed"] for x in r),
            "cli_cpu_seconds": median([x["cli_cpu_seconds"] for x in r]),
            "service_cpu_seconds": r[len(r) // 2]["service_cpu_seconds"],
        }
        for n, r in runs.items()
    }


def _interleave(sizes: list[tuple[int, str]], repeats: dict[int, int]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for round_ in range(max(repeats.values())):
        for n, container in sizes:
            if round_ < repeats[n]:
                out.append((n, container))
    return out


def profile(stack: BenchStack, *, container: str, blobs: int) -> dict:
    """One instrumented in-process push (bench/worker.py push-profile): thread-seconds per stage."""
    folder = run_dir(stack.state, "profile")
    project = stack.new_project("free", f"bench profile {time.time_ns()}")
    try:
        env = stack.settings_values(container=container, cv="free", project_id=project, ledger=folder / "ledger.sqlite")
        cpu_before = stack.cpu_seconds()
        child = python_child(["bench.worker", "push-profile"], env_extra=env, cwd=folder)
        cpu = _cpu_delta(cpu_before, stack.cpu_seconds())
    finally:
        stack.drop_project("free", project)
    if child.returncode != 0:
        raise RuntimeError(f"push-profile failed: {child.stderr[-2000:]}")
    result = child.json()
    shutil.rmtree(folder, ignore_errors=True)
    images = max(1, result["images"])
    stages, cpu_stages = result["stages_thread_seconds"], result["stages_cpu_seconds"]
    upload = stages.pop("upload call (incl. pacing wait)", 0.0)
    stages["upload (serialize, send, wait for the service)"] = upload - result["quota_wait_seconds"]
    stages["upload (waiting for the quota)"] = result["quota_wait_seconds"]
    cpu_stages["upload (serialize, send, wait for the service)"] = cpu_stages.pop(
        "upload call (incl. pacing wait)", 0.0
    )
    cpu_stages["upload (waiting for the quota)"] = 0.0
    result["stages_wall_ms_per_image"] = {k: round(v * 1000 / images, 2) for k, v in stages.items()}
    result["stages_cpu_ms_per_image"] = {k: round(cpu_stages.get(k, 0.0) * 1000 / images, 2) for k in stages}
    result["stages_thread_seconds"] = {k: round(v, 2) for k, v in stages.items()}
    result["stages_cpu_seconds"] = {k: round(v, 2) for k, v in cpu_stages.items()}
    result["cpu_ms_per_image"] = {
        "push-untagged process": round(result["cpu_seconds"] * 1000 / images, 2),
        **{
            f"{name} (service)": round(seconds * 1000 / images, 2)
            for name, seconds in cpu.items()
            if seconds * 1000 / images >= 0.05
        },
    }
    result["service_cpu_seconds"] = cpu
    result["blobs"] = blobs
    with contextlib.suppress(KeyError):
        del result["stage_calls"]
    return result
