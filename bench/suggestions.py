"""Benchmark: suggestions from the current model for a page of frames at the S0 quota, cold and cached.

A Custom Vision emulator of its own (a separate process) plays the S0 tier at its quota of 10 transactions
per second (`--tier S0 --rate 10`), and ours is configured with that quota. A project is trained once on 10
of the pool's camera frames; each repeat then asks `Curator.suggestions` for the first page (48 frames) of a
seeded container with a fresh ledger (an empty suggestions cache): every frame is downloaded, decrypted and
sent as a quick test (store=false), a few at a time, paced under the quota. A prediction is one transaction,
so the bound is page / quota seconds (4.8 s for 48 frames at 10 TPS). The same Curator then asks again: the
cache answers, with no prediction transaction (the emulator's own count says so).

Measured in the benchmark's process (the time is the quota's, not the interpreter's); the Curator is built
and the first listing made before the clock starts, as in a running app.
"""

from __future__ import annotations

import shutil
import time

import requests
from azure.cognitiveservices.vision.customvision.training.models import ImageFileCreateBatch, ImageFileCreateEntry

from devstack.azurite import wait_for_port
from devstack.customvision_server import customvision_server_command
from devstack.servers import free_port
from percept_core import Curator, CustomVisionClient, Settings, Suggestion

from .common import median, run_dir, spread
from .data import Seeder
from .stack import HOST, BenchStack, _spawn, clean_environ

S0_RATE = 10.0  # the S0 tier's transactions per second per key (the emulator's default for S0)
TRAINING_FRAMES = 10  # pool frames the project is trained on, half of them a tag


class S0Emulator:
    """A Custom Vision emulator process playing the S0 tier at its quota, stopped on exit."""

    def __init__(self, stack: BenchStack) -> None:
        self.port = free_port(HOST)
        command = customvision_server_command(
            host=HOST,
            port=self.port,
            training_key=stack.training_key,
            options=["--tier", "S0", "--rate", str(S0_RATE), "--training-seconds", "0.5"],
        )
        self.process = _spawn("cv-s0", command, stack.state, clean_environ())
        wait_for_port(HOST, self.port, timeout=90, process=self.process)
        self.url = f"http://{HOST}:{self.port}"

    def prediction_transactions(self) -> int:
        return int(requests.get(f"{self.url}/_emulator/stats", timeout=10).json()["predictionTransactions"])

    def __enter__(self) -> S0Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(15)


def _trained_project(stack: BenchStack, emulator: S0Emulator, seeder: Seeder) -> str:
    """A classification project trained on the pool's first frames, tagged "first" and "second" by halves."""
    from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
    from msrest.authentication import ApiKeyCredentials

    trainer = CustomVisionTrainingClient(
        emulator.url, ApiKeyCredentials(in_headers={"Training-key": stack.training_key})
    )
    project = trainer.create_project(f"bench suggestions {time.time_ns()}", classification_type="Multiclass")
    frames = seeder.pool(TRAINING_FRAMES)
    half = TRAINING_FRAMES // 2
    for tag_name, chunk in (("first", frames[:half]), ("second", frames[half:])):
        tag = trainer.create_tag(project.id, tag_name)
        entries = [ImageFileCreateEntry(name=f"{tag_name}{i}.jpg", contents=data) for i, data in enumerate(chunk)]
        trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries, tag_ids=[tag.id]))
    client = CustomVisionClient(emulator.url, stack.training_key, project.id, rate_per_second=S0_RATE)
    iteration = client.wait_for_training(client.train().id, timeout=120, poll_seconds=0.2)
    if not iteration.trained:
        raise RuntimeError(f"bench: the suggestions project did not train ({iteration.status})")
    return project.id


def run(stack: BenchStack, seeder: Seeder, *, container: str, page: int, repeats: int) -> dict:
    """Cold suggestions for a page (fresh ledger each repeat), then the same page again from the cache."""
    with S0Emulator(stack) as emulator:
        project_id = _trained_project(stack, emulator, seeder)
        cold, cached, transactions, cached_transactions, failures = [], [], [], [], []
        for repeat in range(repeats):
            folder = run_dir(stack.state, f"suggestions-{repeat}")
            values = {
                **stack.settings_values(
                    container=container, project_id=project_id, ledger=folder / "ledger.sqlite", rate=S0_RATE
                ),
                "custom_vision_endpoint": emulator.url,
            }
            curator = Curator(
                Settings.load(env_file=None, local_settings_file=None, secrets_files=(), environ=values),
                actor="bench",
            )
            blobs = curator.blob_page(page_size=page).blobs
            time.sleep(1.0)  # the emulator's bucket full again after the setup calls, for whoever is measured
            before = emulator.prediction_transactions()
            started = time.perf_counter()
            found = curator.suggestions(blobs)
            cold.append(time.perf_counter() - started)
            middle = emulator.prediction_transactions()
            started = time.perf_counter()
            again = curator.suggestions(blobs)
            cached.append(time.perf_counter() - started)
            transactions.append(middle - before)
            cached_transactions.append(emulator.prediction_transactions() - middle)
            failures.append(sum(not isinstance(s, Suggestion) for s in [*found.values(), *again.values()]))
            curator.ledger.close()
            shutil.rmtree(folder, ignore_errors=True)
    bound = page / S0_RATE
    seconds = median(cold)
    return {
        "frames": page,
        "quota_transactions_per_s": S0_RATE,
        "seconds": seconds,
        "seconds_range": spread(cold),
        "bound_seconds": bound,
        "vs_bound": bound / seconds,
        "prediction_transactions": max(transactions),
        "cached_seconds": median(cached),
        "cached_prediction_transactions": max(cached_transactions),
        "frames_without_suggestion": max(failures),
        "repeats": repeats,
    }


__all__ = ["S0_RATE", "run"]
