"""Quality flags: blurred, too dark, overexposed and low-information frames are found from their pixels, whatever
their size or contrast, and the demo devices' deliberately spoiled frames are exactly the ones flagged."""

from __future__ import annotations

import inspect
import io
import struct
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from devstack.seed import FrameSpec, plan_frames, render_frame, seed
from percept_core import Curator
from percept_core.config import Settings
from percept_core.errors import NotAnImageError
from percept_core.images import MAX_DECODE_SIDE, near_duplicate_groups, perceptual_hash
from percept_core.quality import QualityFlag, QualityReport, QualityThresholds, assess_quality, quality_flags


def encode(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo() -> Image.Image:
    """A well exposed, focused photograph (scikit-image's astronaut, 512x512)."""
    return Image.fromarray(skimage.data.astronaut())


def scene(width: int) -> Image.Image:
    """The same drawn scene (shapes, lines, text-sized marks) at any width, 4:3: sharp at every size."""
    height = width * 3 // 4
    image = Image.new("RGB", (width, height), (70, 90, 110))
    draw = ImageDraw.Draw(image)
    unit = width / 64
    for i in range(12):
        left, top = (i * 5 % 60) * unit, (i * 7 % 44) * unit
        draw.rectangle((left, top, left + 6 * unit, top + 4 * unit), fill=(40 + i * 17, 200 - i * 13, 90 + i * 9))
        draw.ellipse((top, left * 0.7, top + 5 * unit, left * 0.7 + 5 * unit), fill=(230, 220 - i * 15, 40))
        draw.line((0, i * 4 * unit, width, (i * 4 + 9) * unit), fill=(20, 20, 20), width=max(1, round(unit / 2)))
    return image


def blurred(image: Image.Image, share: float = 1 / 70) -> Image.Image:
    """Out of focus by the same share of the frame at any size."""
    return image.filter(ImageFilter.GaussianBlur(max(image.size) * share))


def test_a_focused_photograph_is_flagged_nothing_and_its_blur_is_flagged_blurred():
    sharp = assess_quality(encode(photo()))
    assert sharp.flags == frozenset() and sharp.labels == []
    soft = assess_quality(encode(blurred(photo())))
    assert soft.flags == {QualityFlag.BLURRED} and soft.labels == ["Blurred"]
    assert soft.edge_width > sharp.edge_width * 2


@pytest.mark.parametrize("width", [320, 640, 1920, 4000])
def test_blur_is_judged_the_same_at_any_frame_size(width):
    assert quality_flags(encode(scene(width))) == frozenset()
    assert quality_flags(encode(blurred(scene(width)))) == {QualityFlag.BLURRED}


@pytest.mark.parametrize("contrast", [0.15, 1.0, 1.6])
def test_blur_is_judged_the_same_at_any_contrast(contrast):
    def relit(image: Image.Image) -> Image.Image:
        return ImageEnhance.Contrast(image).enhance(contrast)

    assert QualityFlag.BLURRED not in quality_flags(encode(relit(photo())))
    assert QualityFlag.BLURRED in quality_flags(encode(relit(blurred(photo()))))


def test_motion_along_one_direction_is_blurred():
    # A horizontal smear over 3% of the frame: vertical edges spread, horizontal ones stay sharp.
    image = photo()
    smear = image.width * 3 // 100
    moved = Image.new("RGB", image.size)
    for shift in range(smear):
        moved = Image.blend(
            moved, image.transform(image.size, Image.Transform.AFFINE, (1, 0, shift, 0, 1, 0)), 1 / (shift + 1)
        )
    assert quality_flags(encode(moved)) == {QualityFlag.BLURRED}


def test_an_underexposed_frame_is_too_dark_and_nothing_else():
    report = assess_quality(encode(ImageEnhance.Brightness(photo()).enhance(0.12)))
    assert report.flags == {QualityFlag.TOO_DARK} and report.labels == ["Too dark"]
    assert report.highlights < 0.2


def test_an_overexposed_frame_is_overexposed_and_nothing_else():
    report = assess_quality(encode(ImageEnhance.Brightness(photo()).enhance(4.0)))
    assert report.flags == {QualityFlag.OVEREXPOSED} and report.labels == ["Overexposed"]
    assert report.clipped_share >= 0.5


def test_a_flat_grey_frame_is_low_information_not_blurred():
    flat = assess_quality(encode(Image.new("RGB", (1280, 720), (128, 128, 128))))
    assert flat.flags == {QualityFlag.LOW_INFORMATION} and flat.labels == ["Low information"]
    # A soft shadow on a blank wall: its only edge is wide, but there is nothing in focus or out of it.
    wall = Image.new("RGB", (1280, 720), (128, 128, 128))
    ImageDraw.Draw(wall).ellipse((300, 100, 900, 600), fill=(160, 160, 160))
    shadow = assess_quality(encode(wall.filter(ImageFilter.GaussianBlur(15))))
    assert shadow.flags == {QualityFlag.LOW_INFORMATION} and shadow.edge_width > 6


def test_a_covered_lens_is_too_dark_and_low_information():
    noise = Image.effect_noise((640, 480), 3).point(lambda v: v // 16)  # sensor noise in the blacks
    report = assess_quality(encode(noise.convert("RGB")))
    assert report.labels == ["Too dark", "Low information"]


def test_thresholds_decide_the_flags():
    image = encode(ImageEnhance.Brightness(photo()).enhance(0.5))
    assert quality_flags(image) == frozenset()
    assert quality_flags(image, thresholds=QualityThresholds(dark_highlights=0.6)) == {QualityFlag.TOO_DARK}
    assert quality_flags(image, thresholds=QualityThresholds(blur_edge_width=1.0)) == {QualityFlag.BLURRED}


def test_a_decoded_image_is_assessed_as_its_bytes_are():
    image = blurred(photo())
    from_pixels, from_bytes = assess_quality(image), assess_quality(encode(image, quality=95))
    assert from_pixels.flags == from_bytes.flags == {QualityFlag.BLURRED}
    assert from_pixels.edge_width == pytest.approx(from_bytes.edge_width, rel=0.1)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b'{"event": "inference", "objects": []}\n' * 40, "not an image"),
        (encode(photo())[:-3000], "damaged"),
        (_png_declaring(60_000, 60_000), "decompression bomb"),
    ],
    ids=["empty", "json", "truncated", "bomb"],
)
def test_what_is_not_an_image_is_refused_as_everywhere_else(data, message):
    with pytest.raises(NotAnImageError, match=message):
        assess_quality(data, what="Blob 'x.jpg.dec'")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, just over the limit
def test_an_opened_image_over_the_pixel_limit_is_refused_before_it_decodes():
    lazily_opened = Image.open(io.BytesIO(_png_declaring(MAX_DECODE_SIDE + 1, MAX_DECODE_SIDE)))
    with pytest.raises(NotAnImageError, match="too large"):
        assess_quality(lazily_opened)


def test_an_opened_image_that_does_not_decode_is_refused():
    truncated = Image.open(io.BytesIO(encode(photo())[:-3000]))
    with pytest.raises(NotAnImageError, match="damaged"):
        assess_quality(truncated)


def _assess_planned(spec: FrameSpec) -> tuple[FrameSpec, QualityReport, str]:
    frame = render_frame(spec)
    return spec, assess_quality(frame), perceptual_hash(frame)


def test_the_demo_plan_flags_exactly_its_spoiled_frames_and_keeps_its_bursts():
    """Every frame the stack seeds by default, rendered in-process: each spoiled frame earns its own flag and only
    it, no other frame is flagged, and the frames still fall into exactly the planned bursts."""
    count = inspect.signature(seed).parameters["images"].default
    specs = plan_frames(count)
    with ProcessPoolExecutor(2) as workers:
        assessed = list(workers.map(_assess_planned, specs, chunksize=10))

    flagged = {spec.index: report.flags for spec, report, _ in assessed if report.flags}
    spoiled = {spec.index: {spec.degradation} for spec in specs if spec.degradation}
    assert flagged == spoiled
    by_flag = {flag: {i for i, flags in flagged.items() if flag in flags} for flag in QualityFlag}
    assert all(by_flag[flag] for flag in (QualityFlag.BLURRED, QualityFlag.TOO_DARK, QualityFlag.OVEREXPOSED))
    assert not by_flag[QualityFlag.LOW_INFORMATION]

    planned: dict[int, set[int]] = defaultdict(set)
    for spec in specs:
        if spec.burst is not None:
            planned[spec.burst].add(spec.index)
    groups = near_duplicate_groups(
        [
            (spec.index, phash, f"{spec.model_name} {spec.model_version}", spec.captured_at)
            for spec, _, phash in assessed
        ],
        max_distance=Settings().near_duplicate_distance,
    )
    assert sorted(map(sorted, (g for g in groups if len(g) > 1))) == sorted(map(sorted, planned.values()))


def test_the_seeded_demo_container_reports_the_frames_it_spoiled(demo, stack):
    """What the seeder says it spoiled is what the decrypted frames in the container are flagged with."""
    assert set(demo.degraded.values()) == {QualityFlag.BLURRED, QualityFlag.TOO_DARK, QualityFlag.OVEREXPOSED}
    curator = Curator(stack.settings())
    good = [blob for blob in curator.blobs() if blob.name not in demo.bad.values()]
    assert len(good) == demo.frames
    flagged = {}
    for blob in good:
        flags = quality_flags(curator.decrypt(blob))
        if flags:
            flagged[blob.name] = flags
    assert flagged == {name: {flag} for name, flag in demo.degraded.items()}
