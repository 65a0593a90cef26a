"""Benchmark: export pushed frames for Azure ML, against Azurite's own upload rate for the same bytes.

Setup (not measured): the container's frames are pushed, untagged, into a new project of the emulator without a
rate limit, with a fresh ledger, so the ledger records them as pushed. Measured, in turns (the order rotating):

- ours: `percept-curator --json export --to azureml --container C --datastore D` in a child process, from spawn
  to exit (its start-up, the listing, the ledger, the downloads, the decryption, the uploads, the annotation
  files and the manifest all count); a new container each time;
- the baseline: Azurite's own upload rate for the same bytes: a child uploads, with the Azure SDK and as many
  uploads at once as ours (`exporting.WRITERS`), one blob per frame with the frame's plaintext (decrypted
  beforehand, outside the clock), from spawn to exit.

The ratio is ours over the baseline, in images per second (the same images, the same bytes): target >= 0.8.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from percept_core import Curator
from percept_core.exporting import WRITERS

from .common import CLI, median, rotate, run_child, run_dir, spread
from .push import push_document, push_untagged_arguments
from .stack import BenchStack, clean_environ

TARGET = 0.8

_UPLOADER = """
import sys, pathlib
from concurrent.futures import ThreadPoolExecutor
from azure.storage.blob import BlobServiceClient
connection, container, folder, workers = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
client = BlobServiceClient.from_connection_string(connection).get_container_client(container)
client.create_container()
files = sorted(folder.iterdir())
def upload(path):
    client.upload_blob("images/" + path.name, path.read_bytes(), overwrite=True)
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(upload, files))
print(len(files))
"""


def run(stack: BenchStack, *, container: str, blobs: int, repeats: int) -> dict:
    folder = run_dir(stack.state, "export")
    project = stack.new_project("free", f"bench export {time.time_ns()}")
    ledger = folder / "ledger.sqlite"
    env = clean_environ(stack.settings_values(container=container, cv="free", project_id=project, ledger=ledger))
    try:
        pushed = run_child(
            [str(CLI), *push_untagged_arguments(folder)],
            env=env,
            cwd=folder,
        )
        counts = push_document(pushed)["counts"]
        frames = counts.get("pushed", 0) + counts.get("duplicate", 0)
        plaintext = Path(tempfile.mkdtemp(prefix="bench-export-", dir=folder))
        curator = Curator(stack.settings(container=container, cv="free", project_id=project, ledger=ledger))
        total_bytes = 0
        for index, blob in enumerate(curator.blobs()):
            data = curator.decrypt(blob)
            (plaintext / f"{index:06d}.jpg").write_bytes(data)
            total_bytes += len(data)
        ours: list[float] = []
        baseline: list[float] = []
        exported = 0
        for repeat in range(repeats):
            for side in rotate(["ours", "baseline"], repeat):
                target = f"export-{side}-{repeat}-{time.time_ns() % 10**9}"
                if side == "ours":
                    child = run_child(
                        [
                            str(CLI),
                            "--json",
                            "--env-file",
                            str(folder / "no.env"),
                            "export",
                            "--to",
                            "azureml",
                            "--container",
                            target,
                            "--datastore",
                            "bench_frames",
                        ],
                        env=env,
                        cwd=folder,
                    )
                    if child.returncode != 0:
                        raise RuntimeError(f"export failed (exit {child.returncode}): {child.stderr[-2000:]}")
                    exported = child.json()["frames"]
                    ours.append(exported / child.wall_seconds)
                else:
                    child = run_child(
                        [
                            sys.executable,
                            "-c",
                            _UPLOADER,
                            stack.storage_connection_string,
                            target,
                            str(plaintext),
                            str(WRITERS),
                        ],
                        env=clean_environ(),
                        cwd=folder,
                    )
                    if child.returncode != 0:
                        raise RuntimeError(f"the baseline upload failed: {child.stderr[-2000:]}")
                    baseline.append(int(child.stdout.strip()) / child.wall_seconds)
    finally:
        stack.drop_project("free", project)
        shutil.rmtree(folder, ignore_errors=True)  # the baseline's plaintext files
        # What both sides wrote is decrypted frames: gone from Azurite's folder when the run is over.
        service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
        for written in service.list_containers(name_starts_with="export-"):
            service.delete_container(written.name)
    ratio = median(ours) / median(baseline) if ours and baseline else None
    return {
        "frames": frames,
        "exported": exported,
        "bytes": total_bytes,
        "ours_images_per_s": median(ours),
        "ours_runs": ours,
        "baseline_images_per_s": median(baseline),
        "baseline_runs": baseline,
        "spread": {"ours": spread(ours), "baseline": spread(baseline)},
        "vs_azurite_upload": ratio,
        "target": TARGET,
        "writers": WRITERS,
        "python": sys.version.split()[0],
    }
