"""A Custom Vision project with a trained model whose suggestions are unambiguous: frames of one colour each
(with a little unique noise), red ones tagged "person" and blue ones "product"; the emulator's nearest-neighbour
model then suggests "person" for another red frame, "product" for a blue one, and is unsure of a green one."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

from azure.cognitiveservices.vision.customvision.training.models import ImageFileCreateBatch, ImageFileCreateEntry
from PIL import Image

from percept_core import CustomVisionClient

RED = (200, 40, 40)
BLUE = (40, 40, 200)
GREEN = (40, 200, 40)
BOX = (0.25, 0.2, 0.5, 0.6)  # left, top, width, height of the detection project's trained box


def frame(colour: tuple[int, int, int], seed: int) -> bytes:
    """A 320x240 JPEG of one colour with a few unique noisy pixels (so no two frames are duplicates)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (320, 240), colour)
    for _ in range(40):
        x, y = rng.randrange(320), rng.randrange(240)
        image.putpixel((x, y), tuple(max(0, min(255, c + rng.randint(-60, 60))) for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def upload_training_images(stack, project_id: str, frames: Sequence[bytes], **entry) -> None:
    batch = ImageFileCreateBatch(
        images=[ImageFileCreateEntry(name=f"t{i}.jpg", contents=data, **entry) for i, data in enumerate(frames)]
    )
    assert stack.trainer().create_images_from_files(project_id, batch).is_batch_successful


def train(stack, project_id: str) -> str:
    """Train through the client and wait for the iteration (the emulator trains in half a second)."""
    client = CustomVisionClient(stack.customvision.url, stack.training_key, project_id, rate_per_second=None)
    iteration = client.wait_for_training(client.train().id, timeout=60, poll_seconds=0.2)
    assert iteration.trained
    return iteration.id
