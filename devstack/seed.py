"""Demo devices: capture frames, encrypt them as Percept devices do and upload them through the MM server.

    python -m devstack.seed [--images N]      (settings from the environment, e.g. `. .devstack/env`)

Frames are real photographs (scikit-image's bundled samples) varied by crop, flip and lighting, at
camera sizes, so every frame is distinct; some come in bursts of near-identical frames, as a device
produces when an object lingers, and a few single frames are spoiled as a camera spoils them (out of
focus, underexposed, overexposed) for the quality flags to find. The container also gets the bad cases
a real one has: a tampered blob, a truncated blob, a plaintext that is not an image, a blob without
model metadata and a blob of a model version the MM server does not know. Seeding is idempotent: a
marker on the container says it was done.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from percept_core.config import Settings
from percept_core.locker import KeyServiceClient, derive_key, encrypt_bytes
from percept_core.quality import QualityFlag

SEED_MARKER = "percept_demo_seed"
MODELS = {"people-counter": ("1.0", "1.1"), "shelf-monitor": ("2.3",)}
UNKNOWN_VERSION = ("shelf-monitor", "9.9")
CAMERA_SIZES = ((640, 480), (1280, 720), (1920, 1080))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
BAD_CASES = ("tampered", "truncated", "not-an-image", "no-metadata", "unknown-version")
# The spoiled frames, in turn, one in every DEGRADE_EVERY single frames of these photos: scenes a camera
# sees. (Blurring the deep field's stars also dims them below the too-dark threshold: a real effect, but
# the demo's spoiled frames should each deserve one flag.) A frame of a burst is never spoiled: the burst
# would no longer be near-identical.
DEGRADATIONS = (QualityFlag.BLURRED, QualityFlag.TOO_DARK, QualityFlag.OVEREXPOSED)
DEGRADABLE_PHOTOS = frozenset({"astronaut", "chelsea", "coffee", "rocket"})
DEGRADE_EVERY = 5


@dataclass(frozen=True)
class FrameSpec:
    """Everything needed to render one frame, deterministically, in a worker process."""

    index: int
    photo: str
    size: tuple[int, int]
    crop: tuple[float, float, float]  # left, top as fractions; zoom (share of the photo kept)
    flip: bool
    brightness: float
    contrast: float
    quality: int
    model_name: str
    model_version: str
    confidence: int
    captured_at: datetime
    burst: int | None = None  # index of the burst's first frame, when the frame belongs to one
    degradation: QualityFlag | None = None  # how the camera spoiled the frame, if it did

    @property
    def device_name(self) -> str:
        return f"{self.confidence}-{self.captured_at:%Y-%m-%d-%H-%M-%S}.jpg"


@dataclass
class SeedReport:
    frames: int = 0
    bursts: int = 0
    burst_names: list[list[str]] = field(default_factory=list)  # each burst's blob names, in capture order
    bad: dict[str, str] = field(default_factory=dict)  # case -> blob name
    degraded: dict[str, QualityFlag] = field(default_factory=dict)  # blob name -> the flag it was spoiled to earn
    skipped: bool = False


_PHOTO_CACHE: dict[str, Image.Image] = {}


def _photo(name: str) -> Image.Image:
    if name not in _PHOTO_CACHE:
        import skimage.data

        _PHOTO_CACHE[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return _PHOTO_CACHE[name]


def render_frame(spec: FrameSpec) -> bytes:
    """A JPEG camera frame: a crop of a photograph, flipped and relit, at a camera size."""
    photo = _photo(spec.photo)
    left_f, top_f, zoom = spec.crop
    target_ratio = spec.size[0] / spec.size[1]
    crop_w = photo.width * zoom
    crop_h = crop_w / target_ratio
    if crop_h > photo.height * zoom:
        crop_h = photo.height * zoom
        crop_w = crop_h * target_ratio
    left = (photo.width - crop_w) * left_f
    top = (photo.height - crop_h) * top_f
    frame = photo.resize(spec.size, Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if spec.flip:
        frame = ImageOps.mirror(frame)
    frame = ImageEnhance.Brightness(frame).enhance(spec.brightness)
    frame = ImageEnhance.Contrast(frame).enhance(spec.contrast)
    if spec.degradation is not None:
        frame = _DEGRADE[spec.degradation](frame)
    buffer = io.BytesIO()
    frame.save(buffer, "JPEG", quality=spec.quality)
    return buffer.getvalue()


def _out_of_focus(frame: Image.Image) -> Image.Image:
    """A lens focused far off: a Gaussian blur of 1/70 of the frame's longest side."""
    return frame.filter(ImageFilter.GaussianBlur(max(frame.size) / 70))


def _underexposed(frame: Image.Image) -> Image.Image:
    """An exposure far too short: the brightest 1% of the frame ends at 14% of full scale."""
    highlights = float(np.percentile(np.asarray(frame.convert("L")), 99)) / 255
    return ImageEnhance.Brightness(frame).enhance(0.14 / max(highlights, 1 / 255))


def _overexposed(frame: Image.Image) -> Image.Image:
    """Flare lifting the blacks, then an exposure so long that two thirds of the frame saturate to white."""
    lifted = np.asarray(frame, dtype=np.float64) / 255 * 0.85 + 0.15
    exposure = 1 / float(np.percentile(lifted.min(axis=-1), 35))
    return Image.fromarray(np.round(np.clip(lifted * exposure, 0, 1) * 255).astype(np.uint8))


_DEGRADE = {
    QualityFlag.BLURRED: _out_of_focus,
    QualityFlag.TOO_DARK: _underexposed,
    QualityFlag.OVEREXPOSED: _overexposed,
}


def plan_frames(count: int, *, rng_seed: int = 7, start: datetime | None = None) -> list[FrameSpec]:
    """`count` frame specs over two weeks; about one in twelve starts a burst of 3-5 near-duplicates."""
    rng = random.Random(rng_seed)
    versions = [(m, v) for m, vs in MODELS.items() for v in vs]
    start = start or datetime(2026, 11, 2, 6, 0, 0)
    specs: list[FrameSpec] = []
    moment = start
    while len(specs) < count:
        moment += timedelta(seconds=rng.randint(60, 7200))
        model_name, model_version = rng.choice(versions)
        base = dict(
            photo=rng.choice(PHOTOS),
            size=rng.choice(CAMERA_SIZES),
            crop=(rng.random(), rng.random(), rng.uniform(0.45, 1.0)),
            flip=rng.random() < 0.5,
            brightness=rng.uniform(0.6, 1.4),
            contrast=rng.uniform(0.7, 1.3),
            quality=rng.randint(88, 95),
            model_name=model_name,
            model_version=model_version,
        )
        shots = min(rng.randint(3, 5) if rng.random() < 1 / 12 else 1, count - len(specs))
        first = len(specs)
        for shot in range(shots):
            spec = dict(base)
            if shot:  # the object lingers: the same view, a second later, a little relit and shifted
                left, top, zoom = base["crop"]
                spec["crop"] = (min(1.0, left + 0.004 * shot), top, zoom)
                spec["brightness"] = base["brightness"] * rng.uniform(0.98, 1.02)
            specs.append(
                FrameSpec(
                    index=len(specs),
                    confidence=rng.randint(5, 89),
                    captured_at=moment + timedelta(seconds=shot),
                    burst=first if shots > 1 else None,
                    **spec,
                )
            )
    return _spoil_some(specs)


def _spoil_some(specs: list[FrameSpec]) -> list[FrameSpec]:
    """The plan with one in DEGRADE_EVERY single frames of DEGRADABLE_PHOTOS spoiled, in turn by each way."""
    eligible = [i for i, spec in enumerate(specs) if spec.burst is None and spec.photo in DEGRADABLE_PHOTOS]
    spoiled = eligible[DEGRADE_EVERY // 2 :: DEGRADE_EVERY]
    for turn, index in enumerate(spoiled):
        specs[index] = replace(specs[index], degradation=DEGRADATIONS[turn % len(DEGRADATIONS)])
    return specs


def _render_and_encrypt(job: tuple[FrameSpec, bytes]) -> tuple[FrameSpec, bytes]:
    spec, key_text = job
    return spec, encrypt_bytes(render_frame(spec), _derived(key_text))


_DERIVED: dict[bytes, object] = {}


def _derived(key_text: bytes):
    if key_text not in _DERIVED:  # once per version per worker process
        _DERIVED[key_text] = derive_key(key_text)
    return _DERIVED[key_text]


def _container(settings: Settings) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(settings.mm_storage_connection_string)
    container = service.get_container_client(settings.mm_telemetry_storage_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


def seed(
    settings: Settings,
    *,
    images: int = 300,
    rng_seed: int = 7,
    force: bool = False,
    bad_cases: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> SeedReport:
    """Upload `images` demo frames (and the bad cases) unless the container says it was seeded."""
    settings.require("mm_server_url", "mm_storage_connection_string")
    container = _container(settings)
    marker = (container.get_container_properties().metadata or {}).get(SEED_MARKER)
    if marker and not force:
        return SeedReport(skipped=True)

    client = KeyServiceClient(settings.mm_server_url, bootstrap_secret=settings.mm_bootstrap_secret)
    keys: dict[tuple[str, str], bytes] = {}
    for model_name, versions in MODELS.items():
        for version in versions:
            client.register_model(model_name, version)
            keys[(model_name, version)] = client.get_key(model_name, version)

    specs = plan_frames(images, rng_seed=rng_seed)
    report = SeedReport(
        frames=len(specs),
        bursts=_count_bursts(specs),
        burst_names=_burst_names(specs),
        degraded={spec.device_name + ".dec": spec.degradation for spec in specs if spec.degradation},
    )

    def upload(item: tuple[FrameSpec, bytes]) -> str:
        spec, ciphertext = item
        return client.upload_data(
            spec.model_name,
            spec.model_version,
            spec.device_name + ".dec",
            ciphertext,
            {
                "confidence": spec.confidence,
                "model_name": spec.model_name,
                "model_version": spec.model_version,
                "file_ref": f"/app/captures/{spec.device_name}",
            },
        )

    jobs = ((spec, keys[(spec.model_name, spec.model_version)]) for spec in specs)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as renderers, ThreadPoolExecutor(8) as uploaders:
        encrypted: Iterator[tuple[FrameSpec, bytes]] = renderers.map(_render_and_encrypt, jobs, chunksize=8)
        for done, _ in enumerate(uploaders.map(upload, encrypted), 1):
            if progress and done % 500 == 0:
                print(f"  {done}/{len(specs)} frames uploaded", file=sys.stderr)

    if bad_cases:
        report.bad = _upload_bad_cases(client, container, keys, rng_seed)
    container.set_container_metadata({SEED_MARKER: f"{len(specs)}"})
    return report


def _burst_names(specs: list[FrameSpec]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for spec in specs:
        if spec.burst is not None:
            groups.setdefault(spec.burst, []).append(spec.device_name + ".dec")
    return list(groups.values())


def _count_bursts(specs: list[FrameSpec]) -> int:
    return len({spec.burst for spec in specs if spec.burst is not None})


def _upload_bad_cases(
    client: KeyServiceClient, container: ContainerClient, keys: dict[tuple[str, str], bytes], rng_seed: int
) -> dict[str, str]:
    """The five kinds of broken blob a real container holds; returns case -> blob name."""
    rng = random.Random(rng_seed + 1)
    model_name, version = "people-counter", "1.0"
    key = derive_key(keys[(model_name, version)])
    when = datetime(2026, 11, 15, 12, 0, 0)
    frame = render_frame(plan_frames(1, rng_seed=rng_seed + 2)[0])
    names: dict[str, str] = {}

    def device_upload(case: str, ciphertext: bytes, confidence: int, offset: int) -> None:
        device_name = f"{confidence}-{when + timedelta(minutes=offset):%Y-%m-%d-%H-%M-%S}.jpg"
        reply = client.upload_data(
            model_name,
            version,
            device_name + ".dec",
            ciphertext,
            {
                "confidence": confidence,
                "model_name": model_name,
                "model_version": version,
                "file_ref": f"/app/captures/{device_name}",
            },
        )
        names[case] = reply.removeprefix("Stored ").strip()

    tampered = bytearray(encrypt_bytes(frame, key))
    tampered[len(tampered) // 2] ^= 0x5A
    device_upload("tampered", bytes(tampered), 41, 0)
    device_upload("truncated", encrypt_bytes(frame, key)[:-4096], 42, 1)
    device_upload("not-an-image", encrypt_bytes(b'{"event": "inference", "objects": []}\n' * 40, key), 43, 2)

    # Not through the MM server: a copy made by hand, without metadata.
    name = f"44-{when + timedelta(minutes=3):%Y-%m-%d-%H-%M-%S}.jpg.dec"
    container.upload_blob(name, encrypt_bytes(frame, key), overwrite=True)
    names["no-metadata"] = name
    # A version the MM server never registered (a device on a stale deployment).
    name = f"45-{when + timedelta(minutes=4):%Y-%m-%d-%H-%M-%S}.jpg.dec"
    unknown_model, unknown_version = UNKNOWN_VERSION
    container.upload_blob(
        name,
        encrypt_bytes(frame, derive_key(rng.randbytes(24).hex())),
        metadata={
            "model_name": unknown_model,
            "model_version": unknown_version,
            "confidence": "45",
            "file_ref": f"/app/captures/{name.removesuffix('.dec')}",
        },
        overwrite=True,
    )
    names["unknown-version"] = name
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Seed the local stack with demo device uploads.")
    parser.add_argument("--images", type=int, default=300, help="how many good frames (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="random seed: the same seed gives the same frames")
    parser.add_argument("--force", action="store_true", help="seed again even if the container was seeded")
    parser.add_argument("--no-bad-cases", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.load(env_file=os.environ.get("PERCEPT_ENV_FILE", ".devstack/env"))
    report = seed(
        settings,
        images=args.images,
        rng_seed=args.seed,
        force=args.force,
        bad_cases=not args.no_bad_cases,
        progress=True,
    )
    if report.skipped:
        print("demo data: already seeded")
    else:
        print(f"demo data: {report.frames} frames ({report.bursts} bursts) and {len(report.bad)} bad blobs uploaded")


if __name__ == "__main__":
    main()
