"""Images: what Custom Vision accepts, fitting what it would refuse, thumbnails, bombs, near-duplicates."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from datetime import datetime, timedelta

import pytest
from PIL import Image

from percept_core.images import (
    MAX_DECODE_SIDE,
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    ImageLimitError,
    NotAnImageError,
    check_limits,
    inspect_image,
    near_duplicate_groups,
    perceptual_hash,
    prepare_for_upload,
    sha256_hex,
    thumbnail,
)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    import random

    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), bytes(rng.getrandbits(8) for _ in range(width * height * 3)))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_accepted_formats_go_as_they_are(fmt):
    data = encode(Image.new("RGB", (400, 300), (10, 120, 200)), fmt)
    prepared = prepare_for_upload(data)
    assert prepared.data == data and prepared.fitted is None
    assert prepared.format == fmt and (prepared.width, prepared.height) == (400, 300)
    assert prepared.sha256 == sha256_hex(data)


def test_other_formats_are_re_encoded_as_jpeg_and_say_so():
    data = encode(Image.new("RGB", (300, 200), "red"), "WEBP")
    prepared = prepare_for_upload(data)
    assert prepared.format == "JPEG" and "format WEBP" in prepared.fitted
    assert inspect_image(prepared.data).format == "JPEG"
    assert prepared.sha256 == sha256_hex(data)  # provenance names the plaintext, not the re-encoding


def test_images_over_6_mb_are_fitted_under_the_limit():
    data = encode(noise(2000, 1500), "PNG")
    assert len(data) > MAX_UPLOAD_BYTES
    prepared = prepare_for_upload(data)
    assert len(prepared.data) <= MAX_UPLOAD_BYTES and "over the 6 MB limit" in prepared.fitted
    assert (prepared.width, prepared.height) == (2000, 1500)


def test_images_over_10240_px_are_downscaled_and_fitting_is_deterministic():
    data = encode(Image.new("L", (MAX_SIDE + 500, 600), 128), "PNG")
    first, second = prepare_for_upload(data), prepare_for_upload(data)
    assert first.width == MAX_SIDE and first.data == second.data  # a re-run uploads identical bytes
    assert not check_limits(inspect_image(first.data))


def test_aspect_ratio_over_25_to_1_is_refused_with_the_reason():
    data = encode(Image.new("RGB", (2600, 100), "white"), "PNG")
    with pytest.raises(ImageLimitError, match="25:1"):
        prepare_for_upload(data, what="Blob 'x.jpg.dec'")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 not an image at all" * 10, "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 50, "image"),
    ],
)
def test_non_images_are_refused_clearly(data, message):
    with pytest.raises(NotAnImageError, match=message):
        prepare_for_upload(data)


@pytest.mark.parametrize("kept", [0.3, 0.6, 0.95])
def test_a_camera_frame_cut_short_is_refused_as_damaged_not_pushed(kept):
    """Validation decodes JPEGs at a reduced scale: every byte of the data still has to decode."""
    whole = encode(noise(640, 360), quality=90)
    cut = whole[: int(len(whole) * kept)]
    with pytest.raises(NotAnImageError, match="damaged JPEG image"):
        prepare_for_upload(cut, what="Blob 'cut.jpg.dec'")
    with pytest.raises(NotAnImageError, match="damaged"):
        thumbnail(cut)
    assert prepare_for_upload(whole).data == whole


def test_a_decompression_bomb_is_refused_before_decoding():
    # A valid PNG header that declares 60,000 x 60,000 pixels, with a tiny payload.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(NotAnImageError, match="decompression bomb|too large"):
        thumbnail(bomb)
    with pytest.raises(NotAnImageError):
        prepare_for_upload(bomb)


def test_thumbnails_are_small_jpegs_that_keep_the_aspect_ratio():
    data = encode(Image.new("RGB", (1920, 1080), "green"))
    thumb = inspect_image(thumbnail(data))
    assert thumb.format == "JPEG" and thumb.width == 320 and thumb.height == 180
    portrait = inspect_image(thumbnail(encode(Image.new("RGB", (1080, 1920), "green"))))
    assert (portrait.width, portrait.height) == (180, 320)


def test_near_duplicate_frames_of_a_burst_group_together_and_others_do_not():
    base = noise(320, 240, seed=3)
    burst = [base, base.point(lambda v: min(255, v + 3)), base.crop((2, 0, 320, 240)).resize((320, 240))]
    other = noise(320, 240, seed=4)
    t0 = datetime(2026, 11, 2, 10, 0, 0)
    items = [
        (f"b{i}", perceptual_hash(encode(img)), "people-counter 1.0", t0 + timedelta(seconds=i))
        for i, img in enumerate(burst)
    ]
    items.append(("other", perceptual_hash(encode(other)), "people-counter 1.0", t0 + timedelta(seconds=3)))
    items.append(("later", items[0][1], "people-counter 1.0", t0 + timedelta(hours=2)))  # same view, not a burst
    items.append(("elsewhere", items[0][1], "shelf-monitor 2.3", t0))  # another model version
    groups = near_duplicate_groups(items, max_distance=6)
    assert sorted(map(sorted, groups)) == [["b0", "b1", "b2"], ["elsewhere"], ["later"], ["other"]]


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG that declares `width` x `height` pixels, with a tiny payload."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, just over the limit
@pytest.mark.parametrize("side", [60_000, MAX_DECODE_SIDE + 1])  # far over Pillow's own limit, and just over ours
def test_one_pixel_limit_refuses_a_bomb_header_on_every_decode_path(side):
    from percept_core.images import decode_for_display

    bomb = _png_header(side, side)
    with pytest.raises(NotAnImageError, match="decompression bomb"):
        thumbnail(bomb)
    with pytest.raises(NotAnImageError, match="decompression bomb"):
        prepare_for_upload(bomb)
    with pytest.raises(NotAnImageError, match="decompression bomb"):
        decode_for_display(bomb, size=(960, 720))  # the annotator's larger view
    with pytest.raises(NotAnImageError, match="decompression bomb"):
        perceptual_hash(bomb)


def test_the_larger_view_decodes_a_frame_reduced_to_about_its_size():
    from percept_core.images import decode_for_display

    view = decode_for_display(encode(Image.new("RGB", (3840, 2160), "green")), size=(960, 540))
    assert view.mode == "RGB" and view.width <= 3840 and view.width >= 960 * 2 - 8


def test_decoding_in_threads_leaves_the_process_warning_filters_alone():
    """Warning filters are process-wide: a decode that swaps them (catch_warnings) races every other thread.

    A probe Pillow consults first while it opens an image records what every thread sees at that moment.
    """
    import threading
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    frames = [encode(Image.new("RGB", (64, 48), (i, 0, 0))) for i in range(8)]
    bomb = _png_header(60_000, 60_000)
    original, snapshot = warnings.filters, list(warnings.filters)
    seen: list[bool] = []

    def probe(prefix: bytes) -> bool:
        seen.append(warnings.filters is original and warnings.filters == snapshot)
        return False  # not ours: Pillow carries on with its own plugins

    Image.init()
    Image.register_open("FILTERPROBE", lambda *args: None, probe)
    Image.ID.remove("FILTERPROBE")
    Image.ID.insert(0, "FILTERPROBE")
    start = threading.Barrier(8)

    def decode(index: int) -> int:
        start.wait()
        for _ in range(50):
            thumbnail(frames[index])
            prepare_for_upload(frames[index])
            with contextlib.suppress(NotAnImageError):
                thumbnail(bomb)
        return index

    try:
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(decode, range(8))) == list(range(8))
    finally:
        Image.ID.remove("FILTERPROBE")
        del Image.OPEN["FILTERPROBE"]
    assert len(seen) >= 8 * 50 * 3 and all(seen)
    assert warnings.filters is original and warnings.filters == snapshot


# -- the session's thumbnail cache keeps to its bound ---------------------------------------------------------------


def test_the_thumbnail_cache_evicts_the_least_recently_used_and_never_holds_more_than_its_bound():
    from percept_core.images import PreviewCache
    from tests.support.frames import jpeg

    thumbs = {f"{10 + i}-2026-11-02-10-00-{i:02d}.jpg.dec": thumbnail(jpeg(900 + i, (640, 480))) for i in range(24)}
    sizes = sorted(len(t) for t in thumbs.values())
    bound = sum(sizes[:8])  # room for about eight thumbnails, whatever their sizes
    cache = PreviewCache(max_bytes=bound)
    names = list(thumbs)
    recent = names[0]
    for index, name in enumerate(names):
        cache.put(name, thumbs[name])
        assert cache.get(recent) == thumbs[recent]  # read on every step: the most recently used, it stays
        held = [n for n in names if n in cache]
        assert cache.size_bytes == sum(len(thumbs[n]) for n in held) <= bound, index
        assert name in cache  # the newest is always kept
    held = [n for n in names if n in cache]
    assert 2 <= len(held) < len(names) and len(cache) == len(held)
    assert recent in held
    # What was evicted is the least recently used: the rest held are the newest, in a row, up to the last put.
    newest = [n for n in held if n != recent]
    assert newest == names[names.index(newest[0]) :]
    assert bound - cache.size_bytes < len(thumbs[names[names.index(newest[0]) - 1]])  # evicted no more than needed

    errors_cost_nothing = PreviewCache(max_bytes=bound)
    errors_cost_nothing.put("thumb", thumbs[names[0]])
    errors_cost_nothing.put("tampered.jpg.dec", NotAnImageError("not an image"))
    assert errors_cost_nothing.size_bytes == len(thumbs[names[0]]) and len(errors_cost_nothing) == 2
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0
