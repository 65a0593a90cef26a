"""Decoding, validation against Custom Vision's limits, fitting, thumbnails and hashes. No network."""

from __future__ import annotations

import hashlib
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLimitError, NotAnImageError  # ImageLimitError: importable from here too

# Custom Vision's training-image limits, fitted to the stricter of the readings (issue 18): the documented
# 10,240 px a side was observed to be 10,000 px (MicrosoftDocs/azure-docs #117855), and "6 MB" may mean
# 6,000,000 bytes rather than 6 MiB. An image within these goes under either reading.
MAX_UPLOAD_BYTES = 6_000_000
MAX_SIDE = 10_000
MAX_ASPECT_RATIO = 25.0
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF"})
# Beyond this many pixels we refuse to decode at all: one limit for every decode path (thumbnails,
# validation, fitting, hashes, the annotator's larger view), checked from the header before decoding. It
# stays at the documented 10,240 px square, so an image the documentation allows still decodes (and is
# fitted to MAX_SIDE).
MAX_DECODE_SIDE = 10_240
MAX_PIXELS = MAX_DECODE_SIDE * MAX_DECODE_SIDE

# Pillow's own bomb check (a warning above the limit, an error above twice it) is set once, here, at import:
# it is process-wide, so it is never toggled per call, nor are warning filters (neither is thread-safe).
# At MAX_PIXELS, an image the documentation allows (up to 10,240 px a side) opens without a warning.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

THUMBNAIL_SIZE = (320, 320)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class PreparedImage:
    """Bytes ready for Custom Vision, the plaintext's sha256, and how they were fitted (if at all)."""

    data: bytes
    format: str
    width: int
    height: int
    sha256: str
    fitted: str | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(data: bytes, what: str) -> Image.Image:
    """The image with only its header read; anything over MAX_PIXELS is refused before a pixel is decoded."""
    if not data:
        raise NotAnImageError(f"{what} is empty (0 bytes), not an image.")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # The error is Pillow's refusal over twice its limit; the warning only arrives as an exception where
        # the application made warnings errors (we never change the filters: they are process-wide).
        raise NotAnImageError(
            f"{what} declares an enormous size (a decompression bomb?); it was not decoded."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise NotAnImageError(
            f"{what} is not an image ({len(data):,} bytes that no image decoder recognises).",
            hint="The device uploaded something other than a camera frame; reject it.",
        ) from None
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise NotAnImageError(
            f"{what} is {image.width}x{image.height} pixels, too large to decode safely (a decompression bomb?)."
        )
    return image


def _decode(data: bytes, what: str, *, reduced: bool = False) -> tuple[Image.Image, ImageInfo]:
    """The decoded image and what its header says; a damaged image is NotAnImageError.

    `reduced` decodes a JPEG at 1/8 scale: every byte of its data is still decoded (a truncated or corrupt
    frame fails just the same) but the full-size pixels are never built, at half the cost. That is enough
    to know the image decodes; fitting it needs the full decode.
    """
    image = _open(data, what)
    info = ImageInfo(image.format or "unknown", image.width, image.height, len(data))
    try:
        if reduced and image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except (OSError, ValueError, SyntaxError):
        raise NotAnImageError(f"{what} is a damaged {info.format} image that does not decode.") from None
    return image, info


def inspect_image(data: bytes, *, what: str = "The decrypted data") -> ImageInfo:
    """Format and size from the header, after checking the whole image decodes."""
    return _decode(data, what, reduced=True)[1]


def check_limits(info: ImageInfo) -> list[str]:
    """Which of Custom Vision's limits the image breaks (empty when it may be uploaded as it is)."""
    broken = []
    if info.format not in ACCEPTED_FORMATS:
        broken.append(f"format {info.format} (Custom Vision takes JPEG, PNG, BMP, GIF)")
    if info.size > MAX_UPLOAD_BYTES:
        broken.append(f"{info.size / 1_000_000:.2f} MB over the {MAX_UPLOAD_BYTES / 1_000_000:g} MB limit")
    if max(info.width, info.height) > MAX_SIDE:
        broken.append(f"{info.width}x{info.height} px over the {MAX_SIDE:,} px limit")
    if _aspect(info.width, info.height) > MAX_ASPECT_RATIO:
        broken.append(f"aspect ratio {_aspect(info.width, info.height):.0f}:1 over 25:1")
    return broken


def _aspect(width: int, height: int) -> float:
    return max(width, height) / max(1, min(width, height))


def prepare_for_upload(data: bytes, *, what: str = "The decrypted data") -> PreparedImage:
    """Validate; re-encode or downscale an image that is too big or of another format, deterministically."""
    digest = sha256_hex(data)
    info = inspect_image(data, what=what)
    if _aspect(info.width, info.height) > MAX_ASPECT_RATIO:
        raise ImageLimitError(
            f"{what} is {info.width}x{info.height} px: its aspect ratio is over Custom Vision's 25:1.",
            hint="Such an image cannot be uploaded without cropping; reject it.",
        )
    broken = check_limits(info)
    if not broken:
        return PreparedImage(data, info.format, info.width, info.height, digest)
    fitted = _fit(_decode(data, what)[0])
    return PreparedImage(fitted.data, "JPEG", fitted.width, fitted.height, digest, fitted="; ".join(broken))


@dataclass(frozen=True)
class _Fitted:
    data: bytes
    width: int
    height: int


def _fit(image: Image.Image) -> _Fitted:
    rgb = image.convert("RGB")
    scale = min(1.0, MAX_SIDE / max(rgb.width, rgb.height))
    quality = 92
    while True:
        size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
        candidate = rgb if size == rgb.size else rgb.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        candidate.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= MAX_UPLOAD_BYTES:
            return _Fitted(buffer.getvalue(), *candidate.size)
        if quality > 80:
            quality -= 6
        else:
            scale *= 0.8


def thumbnail(data: bytes, *, size: tuple[int, int] = THUMBNAIL_SIZE, what: str = "The decrypted data") -> bytes:
    """A JPEG thumbnail that fits in `size`, oriented as the camera meant."""
    image = _open(data, what)
    try:
        if image.format == "JPEG":
            # Decode at a reduced scale, still twice the thumbnail's size (Pillow's own reducing gap): a
            # 1920x1080 frame decodes at 960x540, four times fewer pixels. The size is the fitted one, for
            # either orientation (EXIF may turn the frame): asking for the box itself would not reduce a
            # wide frame at all. This must come before exif_transpose, which decodes.
            fit = min(size[0] / image.width, size[1] / image.height, size[0] / image.height, size[1] / image.width)
            image.draft("RGB", (math.ceil(image.width * fit * 2), math.ceil(image.height * fit * 2)))
        image = ImageOps.exif_transpose(image)
        image.thumbnail(size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=82)
    except (OSError, ValueError, SyntaxError):
        raise NotAnImageError(f"{what} is a damaged image that does not decode.") from None
    return buffer.getvalue()


def decode_for_display(data: bytes, *, size: tuple[int, int], what: str = "The decrypted data") -> Image.Image:
    """The image in RGB for a view of about `size` (the annotator's), under the same pixel limit as the rest.

    A JPEG is decoded at a reduced scale, still twice `size`, so a large frame never builds full-size pixels.
    """
    image = _open(data, what)
    try:
        if image.format == "JPEG":
            image.draft("RGB", (size[0] * 2, size[1] * 2))
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError):
        raise NotAnImageError(f"{what} is a damaged image that does not decode.") from None


def perceptual_hash(data: bytes, *, what: str = "The image") -> str:
    """A 64-bit perceptual hash (hex) for finding near-duplicate frames of a burst."""
    import imagehash

    image = _open(data, what)
    if image.format == "JPEG":
        image.draft("L", (128, 128))
    return str(imagehash.phash(image.convert("L")))


def hash_distance(first: str, second: str) -> int:
    """Hamming distance between two perceptual hashes from `perceptual_hash`."""
    return bin(int(first, 16) ^ int(second, 16)).count("1")


def near_duplicate_groups(
    items: Sequence[tuple[Any, str, str | None, Any]], *, max_distance: int, window_seconds: float = 120.0
) -> list[list[Any]]:
    """Group (item, phash, group key, captured_at) into bursts: same group key, close in time and in hash.

    Groups come in capture order; which frame stands for a group is the caller's choice (the review uses the
    least confident). Items are compared with the previous frames of the same group key within
    `window_seconds` (a burst is short), so this stays linear in practice.
    """
    ordered = sorted(items, key=lambda t: (t[2] or "", t[3] is None, t[3] or 0))
    groups: list[list[Any]] = []
    recent: dict[str | None, list[tuple[str, Any, list[Any]]]] = defaultdict(list)
    for item, phash, group_key, captured_at in ordered:
        placed = False
        candidates = recent[group_key]
        if captured_at is not None:
            candidates[:] = [
                c for c in candidates if c[1] is not None and (captured_at - c[1]).total_seconds() <= window_seconds
            ]
        for other_hash, _, group in reversed(candidates):
            if phash and other_hash and hash_distance(phash, other_hash) <= max_distance:
                group.append(item)
                placed = True
                break
        if not placed:
            group = [item]
            groups.append(group)
        candidates.append((phash, captured_at, group))
    return groups


class PreviewCache:
    """A bounded, thread-safe LRU of thumbnails (bytes), for one session: never share it between users."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        from collections import OrderedDict
        from threading import Lock

        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes | Exception] = OrderedDict()
        self._bytes = 0
        self._lock = Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: Any) -> bytes | Exception | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: bytes | Exception) -> None:
        """Remember a thumbnail, or the error that stands in for it (errors cost no bytes)."""
        size = len(value) if isinstance(value, bytes) else 0
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= len(old) if isinstance(old, bytes) else 0
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted) if isinstance(evicted, bytes) else 0

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
