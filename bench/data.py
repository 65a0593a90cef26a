"""What the benchmarks read: camera frames, encrypted as devices do, in Azurite containers and on disk.

Seeding is setup, never measured, and done once: a container carries a marker and is reused by later
runs while the MM emulator's keys are the same (the keys' fingerprint is in the container's name).

The fair and cheap way to 10,000 frames: rendering a 1920x1080 demo frame costs ~85 ms, so a pool of
128 distinct real camera frames (the demo seeder's `plan_frames`/`render_frame`, at 1280x720 and
1920x1080, kept only when the JPEG is 150-400 KB) is rendered once, and blob i carries pool frame
i % 128 with a JPEG comment segment naming i inserted after the SOI marker. Every blob is therefore a
real camera JPEG of camera size that decodes exactly like a rendered one, and every blob's bytes (and
sha256) are distinct, so neither our content de-duplication nor Custom Vision's `OKDuplicate` ever
shortcuts an upload. Names, model versions, confidences and capture times come from `plan_frames`
(three model versions, device naming), metadata as the MM server stores it. The IV of blob i is
derived from i, so blob i is byte-identical in every container that holds it (`bench-200` is the
first 200 blobs of `bench-2000`): the original's 200-blob sample and our 2,000-blob run read the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient

from devstack.seed import MODELS, FrameSpec, plan_frames, render_frame
from percept_core.locker import DerivedKey, KeyServiceClient, derive_key, encrypt_bytes

from .stack import BenchStack

FORMAT_VERSION = "v1"  # bump when what a container holds changes: old containers are then re-seeded
PLAN_SEED = 20261126
POOL_SEED = 4242
CONTAINER_POOL = 128
MIN_BYTES, MAX_BYTES = 150 * 1024, 400 * 1024
DECRYPT_MODEL = ("people-counter", "1.0")
MARKER = "percept_bench"


# -- frames ---------------------------------------------------------------------------------------


def _candidate(spec: FrameSpec) -> FrameSpec:
    size = (1280, 720) if spec.size[0] < 1280 else spec.size
    return dataclasses.replace(spec, size=size)


def _render(spec: FrameSpec) -> bytes | None:
    data = render_frame(_candidate(spec))
    return data if MIN_BYTES <= len(data) <= MAX_BYTES else None


def render_pool(count: int) -> list[bytes]:
    """The first `count` candidate frames whose JPEG is 150-400 KB (deterministic), rendered on every core."""
    candidates = plan_frames(max(64, count * 4), rng_seed=POOL_SEED)
    pool: list[bytes] = []
    started = time.monotonic()
    with ProcessPoolExecutor(2) as workers:
        for frame in workers.map(_render, candidates, chunksize=4):
            if frame is not None:
                pool.append(frame)
                if len(pool) == count:
                    break
    if len(pool) < count:
        raise RuntimeError(f"only {len(pool)} of {count} frames fell in the 150-400 KB band")
    print(f"  rendered {count} camera frames in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return pool


def unique_jpeg(frame: bytes, index: int) -> bytes:
    """The same JPEG with a comment segment (COM) naming `index`: same pixels, distinct bytes."""
    assert frame[:2] == b"\xff\xd8"
    comment = f"percept-bench frame {index}".encode()
    return frame[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + frame[2:]


def fixed_iv(index: int) -> bytes:
    return hashlib.sha256(f"percept-bench iv {index}".encode()).digest()[:16]


# -- keys ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Keys:
    texts: dict[tuple[str, str], bytes]
    derived: dict[tuple[str, str], DerivedKey]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for ident in sorted(self.texts):
            digest.update(f"{ident}".encode() + b"\0" + self.texts[ident] + b"\0")
        return digest.hexdigest()[:8]


def ensure_keys(stack: BenchStack) -> Keys:
    """Register the demo model versions with the MM emulator (kept if known) and read their keys."""
    client = KeyServiceClient(stack.mm_url, bootstrap_secret=stack.bootstrap_secret)
    texts: dict[tuple[str, str], bytes] = {}
    try:
        for model_name, versions in MODELS.items():
            for version in versions:
                client.register_model(model_name, version)
                texts[(model_name, version)] = client.get_key(model_name, version)
    finally:
        client.close()
    return Keys(texts, {ident: derive_key(text) for ident, text in texts.items()})


# -- containers ------------------------------------------------------------------------------------


class Seeder:
    """Seeds containers and the decrypt corpus on demand, rendering the frame pool at most once."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.keys = ensure_keys(stack)
        self._pool: list[bytes] | None = None
        self._plan: list[FrameSpec] | None = None
        self.service = BlobServiceClient.from_connection_string(stack.storage_connection_string)

    def pool(self, count: int) -> list[bytes]:
        if self._pool is None or len(self._pool) < count:
            self._pool = render_pool(max(count, CONTAINER_POOL))
        return self._pool[:count]

    def plan(self, count: int) -> list[FrameSpec]:
        if self._plan is None or len(self._plan) < count:
            self._plan = plan_frames(max(count, 10_000), rng_seed=PLAN_SEED)
        return self._plan[:count]

    def versions(self, count: int) -> dict[str, int]:
        """How many of a container's blobs each model version has."""
        counts: dict[str, int] = {}
        for spec in self.plan(count):
            key = f"{spec.model_name} {spec.model_version}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def container_name(self, count: int) -> str:
        return f"bench-{FORMAT_VERSION}-{count}-{self.keys.fingerprint}"

    def marker(self, count: int) -> str:
        return f"{FORMAT_VERSION}:{count}:{self.keys.fingerprint}:{CONTAINER_POOL}"

    def container(self, count: int) -> str:
        """The name of a container of `count` frames, seeded now unless a previous run did it."""
        name = self.container_name(count)
        client = self.service.get_container_client(name)
        with contextlib.suppress(ResourceExistsError):
            client.create_container()
        if (client.get_container_properties().metadata or {}).get(MARKER) == self.marker(count):
            return name
        self._drop_stale()
        started = time.monotonic()
        print(f"bench: seeding {name} with {count:,} frames (once; later runs reuse it)", file=sys.stderr)
        self._upload(client, count)
        client.set_container_metadata({MARKER: self.marker(count)})
        print(f"  seeded {count:,} frames in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return name

    def _upload(self, client: ContainerClient, count: int) -> None:
        pool = self.pool(CONTAINER_POOL)
        plan = self.plan(count)

        def one(index: int) -> None:
            spec = plan[index]
            ident = (spec.model_name, spec.model_version)
            plaintext = unique_jpeg(pool[index % CONTAINER_POOL], index)
            ciphertext = encrypt_bytes(plaintext, self.keys.derived[ident], iv=fixed_iv(index))
            client.upload_blob(
                spec.device_name + ".dec",
                ciphertext,
                overwrite=True,
                metadata={
                    "confidence": str(spec.confidence),
                    "model_name": spec.model_name,
                    "model_version": spec.model_version,
                    "file_ref": f"/app/captures/{spec.device_name}",
                },
            )

        with ThreadPoolExecutor(8) as uploads:
            for done, _ in enumerate(uploads.map(one, range(count)), 1):
                if done % 2000 == 0:
                    print(f"  {done:,}/{count:,}", file=sys.stderr)

    def _drop_stale(self) -> None:
        """Containers of an older format or of keys the MM emulator no longer has: never read again."""
        for item in self.service.list_containers(include_metadata=True):
            if item.name.startswith("bench-") and not item.name.endswith(self.keys.fingerprint):
                with contextlib.suppress(Exception):
                    self.service.delete_container(item.name)

    # -- the decrypt corpus: ciphertext files on disk (sczpy reads files) --------------------------------

    def decrypt_corpus(self, count: int) -> list[Path]:
        """`count` distinct camera frames of one model version, encrypted, as files (ciphertext only)."""
        folder = self.stack.state / f"decrypt-{FORMAT_VERSION}-{self.keys.fingerprint}"
        marker = folder / "corpus.json"
        if marker.exists() and json.loads(marker.read_text()).get("count", 0) >= count:
            return [folder / f"frame-{i:04d}.jpg.dec" for i in range(count)]
        for old in self.stack.state.glob("decrypt-*"):
            if old != folder:
                for path in old.iterdir():
                    path.unlink()
                old.rmdir()
        folder.mkdir(parents=True, exist_ok=True)
        print(f"bench: writing the decrypt corpus ({count} frames, once)", file=sys.stderr)
        key = self.keys.derived[DECRYPT_MODEL]
        paths = []
        for i, frame in enumerate(self.pool(count)):
            path = folder / f"frame-{i:04d}.jpg.dec"
            path.write_bytes(encrypt_bytes(frame, key, iv=fixed_iv(1_000_000 + i)))
            paths.append(path)
        marker.write_text(json.dumps({"count": count, "model": DECRYPT_MODEL}))
        return paths
