"""Benchmark 2: time until the first page's 48 thumbnails are ready, cold, on a large container.

Ours: a fresh process per repeat (bench/worker.py first-page): a new Curator, so no key, thumbnail or
connection is cached; it lists the first page (48 blobs) and makes their previews as the app does
(`Curator.previews`, bounded parallel download + decrypt + thumbnail). Modules are imported before the
clock starts, as in a running app; the MM login, the listing and the key derivations are all timed.

Baseline: the original sample's per-blob method, one blob after another: list the first 48 blobs, then
for each download it to a temp file, decrypt it with sczpy's `client.decrypt` (key fetched and PBKDF2
run every time, plaintext written to a file), open it with Pillow and make a 320x320 JPEG thumbnail
(`Image.thumbnail`), delete the files. The sczpy worker was bootstrapped before the clock starts (the
original built its client at import); its per-file IPC (~0.2 ms) is charged to the baseline.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient
from PIL import Image

from .common import median, python_child, rotate, run_dir, spread
from .sczpy_worker import SczpyWorker
from .stack import BenchStack

PAGE = 48


def baseline(stack: BenchStack, container: str, sczpy: SczpyWorker, tmp: Path) -> dict:
    started = time.perf_counter()
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    client = service.get_container_client(container)
    page = list(itertools.islice(client.list_blobs(include=["metadata"], results_per_page=PAGE), PAGE))
    thumbnails = []
    for item in page:
        encrypted = tmp / item.name
        decrypted = tmp / (item.name + ".dec.jpg")
        with open(encrypted, "wb") as handle:
            handle.write(client.get_blob_client(item.name).download_blob().readall())
        model = (item.metadata["model_name"], item.metadata["model_version"])
        answer = sczpy.decrypt(model, [(encrypted, decrypted)])
        if not answer["files"][0]["ok"]:
            raise RuntimeError(f"sczpy refused {item.name}: {answer['files'][0]['message']}")
        with Image.open(decrypted) as image:
            image.thumbnail((320, 320))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG")
        thumbnails.append(buffer.getvalue())
        os.remove(encrypted)
        os.remove(decrypted)
    seconds = time.perf_counter() - started
    service.close()
    return {"seconds": seconds, "thumbnails": len(thumbnails)}


def ours(stack: BenchStack, container: str) -> dict:
    stack.check()
    folder = run_dir(stack.state, "first-page")
    env = stack.settings_values(container=container, ledger=folder / "ledger.sqlite")
    child = python_child(["bench.worker", "first-page", str(PAGE)], env_extra=env, cwd=folder)
    if child.returncode != 0:
        raise RuntimeError(f"first-page worker failed: {child.stderr[-2000:]}")
    return child.json()


def run(stack: BenchStack, sczpy: SczpyWorker, *, container: str, blobs: int, repeats: int) -> dict:
    ours_s, base_s, ratios, details = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-firstpage-", dir=stack.state) as tmp:
        for repeat in range(repeats):
            result: dict[str, dict] = {}
            for side in rotate(["ours", "baseline"], repeat):
                result[side] = (
                    ours(stack, container) if side == "ours" else baseline(stack, container, sczpy, Path(tmp))
                )
            if result["ours"]["thumbnails"] != PAGE or result["baseline"]["thumbnails"] != PAGE:
                raise RuntimeError(f"a side made fewer than {PAGE} thumbnails: {result}")
            ours_s.append(result["ours"]["seconds"])
            base_s.append(result["baseline"]["seconds"])
            ratios.append(result["baseline"]["seconds"] / result["ours"]["seconds"])
            details.append(result["ours"])
    return {
        "container_blobs": blobs,
        "page": PAGE,
        "repeats": repeats,
        "seconds": median(ours_s),
        "seconds_range": spread(ours_s),
        "list_seconds": median([d["list_seconds"] for d in details]),
        "cpu_seconds": median([d["cpu_seconds"] for d in details]),
        "key_derivations": details[0]["key_fetches"],
        "versions_on_page": details[0]["versions"],
        "baseline_seconds": median(base_s),
        "baseline_seconds_range": spread(base_s),
        "vs_seed": median(ratios),
        "vs_seed_range": spread(ratios),
        "target_vs_seed": 20.0,
    }
