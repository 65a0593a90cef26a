"""Benchmark: fleet scale, with the blob index against listing the container (issue 20).

The container (setup, never timed, seeded once and reused: a marker on the container, as bench/data.py does):
`count` blobs (full: 100,000; quick: 10,000) with the demo's metadata and names: `plan_frames` gives each blob its
model name and version and its confidence, and its capture time is spread evenly over two weeks, so a day holds
a fourteenth of them; the name is the device's `<confidence>-<YYYY-mm-dd-HH-MM-SS>.jpg.dec`. The first
`REAL_FRAMES` are real camera frames (the bench's pool, bench/data.py), encrypted, and named with a confidence
of 1 so that they sort first (`1-...` before `10-...`): push all untagged uploads real images first. Every other
blob is tiny: a few hundred bytes of encrypted text, under the right key and with the right metadata, so the
index and a listing see it as a frame; its content is not an image (a push would find it undecryptable), which
counting never reads.

Measured, each in a child process of its own (`python -m bench.fleet TASK`), warm: the modules are imported and
the Curator is built, with its storage connection open, before the clock starts, the way the app holds them;
each child has a fresh SQLite ledger:

- build: `Curator.sync_index()` into an empty ledger, from scratch: blobs per second;
- the index side and the listing side, in turns (the order rotating), the same Curator settings, with a copy of
  the ledger the build left (the index, built; nothing else) or with an empty one (no index: listed); one child
  does the four operations with the index, one child per operation lists:
  (a) a sparse filter's first page of 48 (one model version, one day, a confidence range: well under 1% of the
  blobs), (b) the count of a broad filter (by listing: counting `Curator.blobs(filter)`), (c) the dry run of push
  all untagged (`deep=False` on both sides: neither reads content), and (d) push all untagged into a new project
  of the Custom Vision emulator without a rate limit: seconds from the call to the first image uploaded (the
  progress callback that sees the first pushed outcome cancels the run);
- the peak memory (RSS: VmHWM) of each child.

A listing still running after `listing_cut_off` seconds (full: at 100,000 blobs Azurite answers a list request in
0.3-2 s, and the sparse page lists 200 entries a request) is stopped there: its time is a lower bound, and the
requests it made against those the whole container needs give an estimate at its pace.

Both sides must agree (the same page, the same count, the same dry-run counts). Targets: the index side within
1 s for (a), (b) and (c), within 2 s for (d), and under 400 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from devstack.seed import plan_frames
from percept_core.blobs import BlobFilter
from percept_core.locker import DerivedKey, encrypt_bytes

from .common import median, python_child, rotate, run_dir, spread
from .data import CONTAINER_POOL, Seeder, fixed_iv, unique_jpeg
from .stack import BenchStack

FORMAT_VERSION = "v1"  # bump when what a fleet container holds changes: old ones are then re-seeded
MARKER = "percept_bench_fleet"
PLAN_SEED = 20261207
START = datetime(2026, 11, 2)
DAYS = 14
REAL_FRAMES = 200
TINY_BYTES = 256
SEED_PROCESSES = 2
SEED_THREADS = 8
PAGE_SIZE = 48
SIDES = ("index", "listing")
TARGET_SECONDS = 1.0
TARGET_FIRST_UPLOAD_SECONDS = 2.0
TARGET_PEAK_MB = 400

# (a) one model version, one day, a confidence range: about 0.15% of the blobs.
SPARSE = BlobFilter(
    model_names=("people-counter",),
    model_versions=("1.1",),
    min_confidence=60,
    max_confidence=64,
    captured_from=date(2026, 11, 9),
    captured_to=date(2026, 11, 9),
)
# (b) what "select all matching" counts: one model version over a week, about a sixth of the blobs.
BROAD = BlobFilter(
    model_names=("shelf-monitor",),
    model_versions=("2.3",),
    captured_from=date(2026, 11, 2),
    captured_to=date(2026, 11, 8),
)


# -- the container ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FleetBlob:
    """One blob of the fleet container, as the seeder writes it."""

    index: int
    name: str
    model_name: str
    model_version: str
    confidence: int
    captured_at: datetime

    @property
    def real(self) -> bool:
        return self.index < REAL_FRAMES

    @property
    def metadata(self) -> dict[str, str]:
        return {
            "confidence": str(self.confidence),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "file_ref": f"/app/captures/{self.name.removesuffix('.dec')}",
        }


def plan_fleet(count: int) -> list[FleetBlob]:
    """The container's blobs: the demo's model versions and confidences, capture times evenly over two weeks."""
    step = DAYS * 86_400 / count
    blobs = []
    for spec in plan_frames(count, rng_seed=PLAN_SEED):
        confidence = 1 if spec.index < REAL_FRAMES else spec.confidence  # `1-...` sorts before every other name
        spec = dataclasses.replace(
            spec, confidence=confidence, captured_at=START + timedelta(seconds=int(spec.index * step))
        )
        blobs.append(
            FleetBlob(
                spec.index, spec.device_name + ".dec", spec.model_name, spec.model_version, confidence, spec.captured_at
            )
        )
    return blobs


def container_name(seeder: Seeder, count: int) -> str:
    # "bench-" and the keys' fingerprint last: Seeder._drop_stale removes it once the MM emulator's keys change.
    return f"bench-fleet-{FORMAT_VERSION}-{count}-{seeder.keys.fingerprint}"


def seed(seeder: Seeder, count: int) -> str:
    """The name of the fleet container of `count` blobs, seeded now unless a previous run did it."""
    name = container_name(seeder, count)
    client = seeder.service.get_container_client(name)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    marker = f"{FORMAT_VERSION}:{count}:{seeder.keys.fingerprint}:{REAL_FRAMES}"
    if (client.get_container_properties().metadata or {}).get(MARKER) == marker:
        return name
    started = time.monotonic()
    print(f"bench: seeding {name} with {count:,} blobs (once; later runs reuse it)", file=sys.stderr)
    planned = plan_fleet(count)
    pool = seeder.pool(CONTAINER_POOL)
    keys = seeder.keys.derived
    connection = seeder.stack.storage_connection_string
    # One process per core, each with a thread pool: the SDK's own CPU per upload is about Azurite's, so one process
    # (one GIL) would leave a core idle whenever Azurite waits on it.
    slices = [planned[part::SEED_PROCESSES] for part in range(SEED_PROCESSES)]
    with ProcessPoolExecutor(SEED_PROCESSES) as processes:
        futures = [processes.submit(_seed_part, connection, name, part, keys, pool) for part in slices]
        done = sum(future.result() for future in futures)
    if done != count:
        raise RuntimeError(f"seeded {done} of {count} blobs")
    client.set_container_metadata({MARKER: marker})
    print(f"  seeded {count:,} blobs in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return name


def _seed_part(
    connection: str, container: str, blobs: list[FleetBlob], keys: dict[tuple[str, str], DerivedKey], pool: list[bytes]
) -> int:
    """Upload these blobs (one seeding process's share), `SEED_THREADS` at a time; how many were uploaded."""
    client = BlobServiceClient.from_connection_string(connection).get_container_client(container)

    def upload(blob: FleetBlob) -> None:
        if blob.real:
            plaintext = unique_jpeg(pool[blob.index % CONTAINER_POOL], blob.index)
        else:
            plaintext = f"percept-bench fleet blob {blob.index}".encode().ljust(TINY_BYTES, b".")
        ciphertext = encrypt_bytes(
            plaintext, keys[(blob.model_name, blob.model_version)], iv=fixed_iv(2_000_000 + blob.index)
        )
        client.upload_blob(blob.name, ciphertext, overwrite=True, metadata=blob.metadata)

    started = time.monotonic()
    with ThreadPoolExecutor(SEED_THREADS) as uploads:
        for done, _ in enumerate(uploads.map(upload, blobs), 1):
            if done % 10_000 == 0:
                print(f"  {done:,}/{len(blobs):,} of one share ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return len(blobs)


# -- the orchestrator ------------------------------------------------------------------------------


def _child(
    stack: BenchStack, folder: Path, task: str, *, container: str, project: str | None = None, timeout: float = 1800
) -> dict:
    """Run `python -m bench.fleet TASK` with its own ledger in `folder`; its JSON, peak RSS and wall time. A listing
    child still running after `timeout` seconds is killed and reported as cut off, with how far it had listed."""
    env = stack.settings_values(container=container, cv="free", project_id=project, ledger=folder / "ledger.sqlite")
    child = python_child(["bench.fleet", task], env_extra=env, cwd=folder, timeout=timeout)
    if child.returncode == -signal.SIGKILL and task.startswith("listing-"):
        watched = [line.split() for line in child.stderr.splitlines() if line.startswith("listing ")]
        if not watched:
            raise RuntimeError(f"bench.fleet {task} was cut off before its clock started: {child.stderr[-3000:]}")
        _, list_requests, seconds = watched[-1]
        return {"cut_off": True, "seconds": float(seconds), "list_requests": int(list_requests)}
    if child.returncode != 0:
        raise RuntimeError(f"bench.fleet {task} failed (exit {child.returncode}): {child.stderr[-3000:]}")
    result = child.json()
    result["child_wall_seconds"] = child.wall_seconds
    return result


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM, reset at exec). `os.wait4`'s ru_maxrss is not used here: Linux carries
    the parent's RSS at fork into it, and the orchestrator holds the 100,000 planned blobs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(stack: BenchStack, *, container: str, blobs: int, repeats: int, listing_cut_off: float) -> dict:
    planned = plan_fleet(blobs)
    sparse_matches = sum(_matches(SPARSE, b) for b in planned)
    broad_matches = sum(_matches(BROAD, b) for b in planned)
    folder = run_dir(stack.state, "fleet")

    def measured(side: str, task: str, repeat: int, **kwargs) -> dict:
        side_folder = folder / f"{task}-{repeat}"
        side_folder.mkdir()
        if side == "index":
            shutil.copyfile(folder / "build" / "ledger.sqlite", side_folder / "ledger.sqlite")
        project = stack.new_project("free", f"bench fleet {task} {time.time_ns()}")
        try:
            return _child(stack, side_folder, task, container=container, project=project, **kwargs)
        finally:
            stack.drop_project("free", project)
            stack.check()

    try:
        (folder / "build").mkdir()
        build = _child(stack, folder / "build", "build", container=container)
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for repeat in range(repeats):
            for side in rotate(list(SIDES), repeat):
                if side == "index":
                    runs["index"].append(measured("index", "index", repeat))
                else:
                    runs["listing"].append(
                        {op: measured("listing", f"listing-{op}", repeat, timeout=listing_cut_off) for op in OPERATIONS}
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return summarise(
        build,
        runs,
        blobs=blobs,
        repeats=repeats,
        sparse_matches=sparse_matches,
        broad_matches=broad_matches,
        listing_cut_off=listing_cut_off,
    )


def _matches(blob_filter: BlobFilter, blob: FleetBlob) -> bool:
    day = blob.captured_at.date()
    return (
        blob.model_name in blob_filter.model_names
        and blob.model_version in blob_filter.model_versions
        and (blob_filter.min_confidence is None or blob.confidence >= blob_filter.min_confidence)
        and (blob_filter.max_confidence is None or blob.confidence <= blob_filter.max_confidence)
        and blob_filter.captured_from <= day <= blob_filter.captured_to
    )


OPERATIONS = ("first_page", "count", "dry_run", "first_upload")
# Container entries a listing request asks for, as RetrainingDataClient asks: a filtered page 4 x 48 (at least 200),
# a whole listing (`list_blobs`: the count and the dry run) its list_page_size. Only to estimate a cut-off listing.
LISTED_PER_REQUEST = {"first_page": 200, "count": 1000, "dry_run": 1000}


def summarise(
    build: dict,
    runs: dict[str, list[dict]],
    *,
    blobs: int,
    repeats: int,
    sparse_matches: int,
    broad_matches: int,
    listing_cut_off: float,
) -> dict:
    """Medians per side and operation; a ratio is the median of the per-repeat listing/index ratios (a lower bound
    when the listing was cut off)."""
    result: dict = {
        "blobs": blobs,
        "real_frames": REAL_FRAMES,
        "repeats": repeats,
        "sparse_filter": _describe(SPARSE),
        "sparse_matches": sparse_matches,
        "broad_filter": _describe(BROAD),
        "broad_matches": broad_matches,
        "index_build_seconds": build["seconds"],
        "index_blobs_per_s": build["blobs_per_s"],
        "index_build_peak_mb": build["peak_rss_mb"],
        "index_build": build,
        "listing_cut_off_seconds": listing_cut_off,
    }
    for operation in OPERATIONS:
        index = [r[f"{operation}_seconds"] for r in runs["index"]]
        listed = [r[operation] for r in runs["listing"]]
        listing = [r["seconds"] if r.get("cut_off") else r[f"{operation}_seconds"] for r in listed]
        cut = [r for r in listed if r.get("cut_off")]
        result[f"{operation}_seconds"] = median(index)
        result[f"{operation}_listing_seconds"] = median(listing)
        result[f"{operation}_vs_listing"] = median([b / a for a, b in zip(index, listing, strict=True) if a])
        result[f"{operation}_spread"] = {"index": spread(index), "listing": spread(listing)}
        result[f"{operation}_listing_cut_off"] = bool(cut)
        if cut:
            # At the pace it had, the whole container's listing: the requests it needs over those it made.
            needed = -(-blobs // LISTED_PER_REQUEST[operation])
            result[f"{operation}_listing_estimated_seconds"] = median(
                [r["seconds"] * needed / r["list_requests"] for r in cut if r["list_requests"]]
            )
            result[f"{operation}_listing_requests"] = {"made": [r["list_requests"] for r in cut], "needed": needed}
    result["list_requests"] = {
        "index": median([r["list_calls_before_push"] for r in runs["index"]]),
        "listing": median([sum(r[op].get("list_requests", 0) for op in LISTED_PER_REQUEST) for r in runs["listing"]]),
    }
    result["push_until_stopped_seconds"] = median([r["push_until_stopped_seconds"] for r in runs["index"]])
    result["peak_mb"] = max(r["peak_rss_mb"] for r in runs["index"])
    result["listing_peak_mb"] = max(
        (r[op]["peak_rss_mb"] for r in runs["listing"] for op in OPERATIONS if "peak_rss_mb" in r[op]), default=None
    )
    index_answers = [_answers(r) for r in runs["index"]]
    listing_answers = [_answers(r[op]) for r in runs["listing"] for op in OPERATIONS if not r[op].get("cut_off")]
    compared = [answer[key] == index_answers[0][key] for answer in [*index_answers, *listing_answers] for key in answer]
    result["sides_agree"] = all(compared)
    result["answers_compared"] = sorted({key for answer in listing_answers for key in answer})
    result["answers"] = index_answers[0]
    pushed_first = [r["first_pushed"] for r in runs["index"]]
    pushed_first += [r["first_upload"]["first_pushed"] for r in runs["listing"] if "first_pushed" in r["first_upload"]]
    result["first_upload_real_frame"] = all(name.startswith("1-") for name in pushed_first)
    result["runs"] = runs
    result["targets"] = {
        "seconds": TARGET_SECONDS,
        "first_upload_seconds": TARGET_FIRST_UPLOAD_SECONDS,
        "peak_mb": TARGET_PEAK_MB,
    }
    return result


def _answers(run: dict) -> dict:
    """What a side answered, which must not depend on the side (a listing child answers one of them)."""
    return {
        key: run[field]
        for key, field in (("page", "page_names"), ("count", "count"), ("dry_run", "dry_run"))
        if field in run
    }


def _describe(blob_filter: BlobFilter) -> dict:
    return {k: str(v) for k, v in dataclasses.asdict(blob_filter).items() if v not in ((), None, "")}


# -- the children ----------------------------------------------------------------------------------


def _warm_curator():
    """A Curator as the app holds one: settings read, parts built, the storage connection open."""
    from percept_core.config import Settings
    from percept_core.curator import Curator

    settings = Settings.load(env_file=None, local_settings_file=None, secrets_files=(), environ=dict(os.environ))
    curator = Curator(settings, actor="bench")
    _ = curator.source
    if settings.custom_vision_project_id:  # the build's Curator has no project: it never pushes
        _ = curator.pipeline
    curator.data.container_client.get_container_properties()
    return curator


def build() -> dict:
    curator = _warm_curator()
    started = time.perf_counter()
    report = curator.sync_index()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "listed": report.listed, "blobs_per_s": report.listed / seconds, **report.to_json()}


def _first_page(curator) -> dict:
    started = time.perf_counter()
    page = curator.blob_page(SPARSE, page_size=PAGE_SIZE)
    return {"first_page_seconds": time.perf_counter() - started, "page_names": [blob.name for blob in page.blobs]}


def _count(curator) -> dict:
    started = time.perf_counter()
    indexed = curator.source.built() is not None
    count = curator.count(BROAD) if indexed else sum(1 for _ in curator.blobs(BROAD))
    return {"count_seconds": time.perf_counter() - started, "count": count}


def _dry_run(curator) -> dict:
    started = time.perf_counter()
    dry = curator.push_all_untagged(dry_run=True, deep=False)
    seconds = time.perf_counter() - started
    counts = {k: v for k, v in dry.as_dict().items() if k not in ("project_images", "project_quota", "headroom")}
    return {"dry_run_seconds": seconds, "dry_run": counts}


def _first_upload(curator) -> dict:
    from percept_core.pipeline import CancelToken, Outcome, PushProgress

    cancel = CancelToken()
    first: dict = {}

    def progress(event: PushProgress) -> None:
        if event.last is not None and event.last.outcome == Outcome.PUSHED and not first:
            first["seconds"] = time.perf_counter() - started
            first["name"] = event.last.name
            first["outcomes_before"] = event.done - 1
            cancel.cancel()

    started = time.perf_counter()
    report = curator.push_all_untagged(progress=progress, cancel=cancel)
    stopped = time.perf_counter() - started
    if not first:
        raise SystemExit(f"push all untagged uploaded nothing: {dict(report.counts)}")
    return {
        "first_upload_seconds": first["seconds"],
        "first_pushed": first["name"],
        "outcomes_before_first_upload": first["outcomes_before"],
        "push_until_stopped_seconds": stopped,
        "pushed_before_stopping": report.counts[Outcome.PUSHED],
    }


_MEASURE = {"first_page": _first_page, "count": _count, "dry_run": _dry_run, "first_upload": _first_upload}


def _require(curator, *, indexed: bool) -> None:
    if (curator.source.built() is not None) != indexed:
        raise SystemExit(f"expected the index {'built' if indexed else 'absent'}, found it otherwise")


def index_operations() -> dict:
    """Every operation in turn, with the index: (a), (b), (c), then the push (last: it claims blobs)."""
    curator = _warm_curator()
    _require(curator, indexed=True)
    result: dict = {}
    for operation in OPERATIONS:
        if operation == "first_upload":
            result["list_calls_before_push"] = curator.data.list_calls
        result.update(_MEASURE[operation](curator))
    return result


def listing_operation(operation: str) -> dict:
    """One operation by listing; how far it has listed goes to stderr as it runs, for a run cut off at its limit."""
    curator = _warm_curator()
    _require(curator, indexed=False)
    started = time.perf_counter()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            print(f"listing {curator.data.list_calls} {time.perf_counter() - started:.3f}", file=sys.stderr, flush=True)

    threading.Thread(target=watch, daemon=True).start()
    try:
        result = _MEASURE[operation](curator)
    finally:
        done.set()
    result["list_requests"] = curator.data.list_calls
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    task = argv[0] if argv else ""
    if task == "build":
        result = build()
    elif task == "index":
        result = index_operations()
    elif task.startswith("listing-") and task[8:] in OPERATIONS:
        result = listing_operation(task[8:])
    else:
        raise SystemExit(f"unknown task {task!r}: build, index or listing-OPERATION ({', '.join(OPERATIONS)})")
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
