"""Measured code that must run in a fresh process of its own: `python -m bench.worker TASK`.

Settings come from the environment the orchestrator builds (nothing else is read). Each task prints one
JSON document on stdout.

    first-page      ours, cold: a new Curator (no key, no preview, no connection cached), the first page of
                    48 blobs listed, their thumbnails made; modules are imported before the clock starts,
                    as in a running app
    push-profile    push all untagged (batch provenance) with every stage timed: where the time goes
    decrypt-pair    ours and the lower bound over the decrypt corpus, alternating (bench/decrypt.py)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections import defaultdict


def _settings():
    from percept_core.config import Settings

    return Settings.load(env_file=None, local_settings_file=None, secrets_files=(), environ=dict(os.environ))


def first_page(page_size: int) -> dict:
    from PIL import Image

    from percept_core.curator import Curator
    from percept_core.images import PreviewCache

    Image.init()  # Pillow's plugin registry, as in a running app; no image of ours is touched
    settings = _settings()
    cpu_before = os.times()
    started = time.perf_counter()
    curator = Curator(settings, actor="bench")
    page = curator.blob_page(page_size=page_size)
    listed = time.perf_counter() - started
    thumbnails = curator.previews(page.blobs, cache=PreviewCache())
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    errors = [str(v) for v in thumbnails.values() if not isinstance(v, bytes)]
    return {
        "seconds": seconds,
        "cpu_seconds": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
        "list_seconds": listed,
        "thumbnails": sum(isinstance(v, bytes) for v in thumbnails.values()),
        "errors": errors[:3],
        "key_fetches": curator.locker.fetches,
        "versions": sorted({f"{b.model_name} {b.model_version}" for b in page.blobs}),
        "thumbnail_bytes": sum(len(v) for v in thumbnails.values() if isinstance(v, bytes)),
    }


class _Timer:
    """Per stage, summed over every thread: wall seconds inside it, and the CPU seconds its threads used.

    Wall minus CPU is waiting: for the network, for a service, for the GIL or for a core.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, stage: str, function):
        def timed(*args, **kwargs):
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed, cpu = time.perf_counter() - began, time.thread_time() - began_cpu
                with self._lock:
                    self.seconds[stage] += elapsed
                    self.cpu[stage] += cpu
                    self.calls[stage] += 1

        return timed


def push_profile() -> dict:
    import percept_core.locker as locker_module
    import percept_core.pipeline as pipeline_module
    from percept_core.curator import Curator
    from percept_core.pipeline import Outcome

    settings = _settings()
    curator = Curator(settings, actor="bench")
    timer = _Timer()
    data, locker, cv, ledger = curator.data, curator.locker, curator.customvision, curator.ledger
    # Instance attributes shadow the methods for this run only; percept_core itself is untouched.
    data.download = timer.wrap("download (Azurite)", data.download)
    locker.key_for = timer.wrap("key fetch + PBKDF2 (once per version)", locker.key_for)
    locker_module.decrypt_bytes = timer.wrap("decrypt (HMAC + AES)", locker_module.decrypt_bytes)
    pipeline_module.prepare_for_upload = timer.wrap("prepare (decode + validate)", pipeline_module.prepare_for_upload)
    cv.upload = timer.wrap("upload call (incl. pacing wait)", cv.upload)
    for name in ("claim", "record_pushed", "pushed_image_for_content", "records", "release", "heartbeat"):
        setattr(ledger, name, timer.wrap("ledger (SQLite)", getattr(ledger, name)))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = curator.pipeline.push_all_untagged(None, actor="bench", provenance="batch")
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    counts = report.counts
    landed = counts[Outcome.PUSHED] + counts[Outcome.DUPLICATE]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "wall_seconds": wall,
        "images": landed,
        "images_per_s": landed / wall if wall else None,
        "failed": len(report.failed),
        "calls": report.calls,
        "throttled_retried": report.throttled,
        "cpu_seconds": cpu,
        "quota_wait_seconds": cv.stats.seconds_waiting_for_quota,
        "stages_thread_seconds": dict(timer.seconds),
        "stages_cpu_seconds": dict(timer.cpu),
        "stage_calls": dict(timer.calls),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def decrypt_pair(folder: str, count: int, repeat: int) -> dict:
    from pathlib import Path

    from percept_core.locker import KeyServiceClient, Locker

    from .decrypt import time_pair

    settings = _settings()
    locker = Locker(KeyServiceClient(settings.mm_server_url, bootstrap_secret=settings.mm_bootstrap_secret))
    paths = sorted(Path(folder).glob("frame-*.jpg.dec"))[:count]
    return {"passes": time_pair(paths, locker, repeat=repeat)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    task = argv[0]
    if task == "first-page":
        result = first_page(int(argv[1]) if len(argv) > 1 else 48)
    elif task == "push-profile":
        result = push_profile()
    elif task == "decrypt-pair":
        result = decrypt_pair(argv[1], int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown task {task!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
