"""Encrypted frames in containers of their own, for tests that need a particular set of blobs."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from PIL import Image

from percept_core import KeyServiceClient, derive_key, encrypt_bytes

MODEL = ("people-counter", "1.0")


def jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small, distinct JPEG: blocks of colour drawn from `seed`."""
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    for x in range(0, size[0], 40):
        for y in range(0, size[1], 40):
            image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 40, y + 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def upload_frames(
    stack,
    container: str,
    plaintexts: Sequence[bytes],
    *,
    model: tuple[str, str] = MODEL,
    start: datetime = datetime(2026, 11, 20, 9, 0, 0),
    names: Sequence[str] | None = None,
) -> list[str]:
    """Encrypt each plaintext with the model version's key (registered on the MM emulator) and upload it
    with device-like metadata and names; returns the blob names in order."""
    client = KeyServiceClient(stack.mm.url, bootstrap_secret=stack.mm_config.bootstrap_secret)
    client.register_model(*model)
    key = derive_key(client.get_key(*model))
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    target = service.get_container_client(container)
    with contextlib.suppress(ResourceExistsError):
        target.create_container()
    rng = random.Random(len(plaintexts))
    chosen = list(names) if names else []
    for index in range(len(chosen), len(plaintexts)):
        confidence = rng.randint(5, 89)
        chosen.append(f"{confidence}-{start + timedelta(seconds=7 * index):%Y-%m-%d-%H-%M-%S}.jpg.dec")

    def upload(pair: tuple[str, bytes]) -> None:
        name, plaintext = pair
        confidence = name.split("-", 1)[0]
        metadata = {"model_name": model[0], "model_version": model[1]}
        if name.isascii():  # metadata travels in HTTP headers: ASCII only
            metadata["file_ref"] = f"/app/captures/{name[:-4]}"
        if confidence.isdigit():
            metadata["confidence"] = confidence
        target.upload_blob(name, encrypt_bytes(plaintext, key), metadata=metadata, overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, zip(chosen, plaintexts, strict=True)))
    return chosen
