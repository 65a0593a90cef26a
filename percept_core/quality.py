"""Quality flags from a frame's decoded pixels: blurred, too dark, overexposed, low information. No network.

A camera frame can be useless for plain reasons (out of focus, a night without light, the sun in the lens,
a covered lens) that a reviewer should not have to find one by one. Each measure is a few lines of numpy on
a grayscale copy downscaled to at most `WORKING_SIDE` pixels, so it is fast and does not depend on the
frame's size; each flag compares one measure with a named threshold (`QualityThresholds`).

    report = assess_quality(plaintext)
    report.flags          # frozenset({QualityFlag.TOO_DARK})
    report.highlights     # 0.09: the measured score behind that flag
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from .errors import NotAnImageError
from .images import MAX_PIXELS, decode_for_display

# The measures are taken at this size (the longest side, in pixels): large enough to see the focus a
# reviewer sees in a tile, small enough to take a few milliseconds. A smaller image is measured as it is:
# enlarging it would blur it.
WORKING_SIDE = 384
# Edges are measured over runs of this many steps (the widest edge the measure can tell apart) ...
EDGE_WINDOW = 10
# ... at the share of runs with the highest contrast: the frame's strongest edges, whatever its contrast.
EDGE_SHARE = 0.01


class QualityFlag(enum.Enum):
    """Why a frame may not be worth training on; the value is a stable key (ledger, DataFrame columns)."""

    BLURRED = "blurred"
    TOO_DARK = "too_dark"
    OVEREXPOSED = "overexposed"
    LOW_INFORMATION = "low_information"

    @property
    def label(self) -> str:
        """The flag as a badge shows it."""
        return _LABELS[self]


_LABELS = {
    QualityFlag.BLURRED: "Blurred",
    QualityFlag.TOO_DARK: "Too dark",
    QualityFlag.OVEREXPOSED: "Overexposed",
    QualityFlag.LOW_INFORMATION: "Low information",
}


@dataclass(frozen=True)
class QualityThresholds:
    """Where each flag starts. Luminance is ITU-R 601 luma on a 0-1 scale (0 black, 1 white).

    The defaults are for camera frames in general, not tuned to one data set: each sits where a frame is
    unusable to a person looking at it, with a wide margin over properly exposed, focused photographs.
    """

    #: BLURRED when the frame's strongest edges spread over more than this many pixels (at WORKING_SIDE,
    #: so 1.6% of the frame's longest side), in either direction (motion smears one). In focus an edge
    #: takes 1-3 pixels, an enlarged or soft frame up to 5; a lens focused far off spreads them to 7 and more.
    blur_edge_width: float = 6.0
    #: TOO_DARK when the 99th percentile of luminance is below this: even the brightest 1% of the frame
    #: is in the bottom fifth of the range, so nothing in it is exposed well enough to be seen.
    #: (cleanvision's dark-image check scores the same percentile.)
    dark_highlights: float = 0.2
    #: OVEREXPOSED when at least this share of the pixels is clipped (luminance at or above
    #: `clipped_level`): half the frame is blown out to white and whatever was there is lost.
    overexposed_share: float = 0.5
    #: The luminance from which a pixel counts as clipped (250 of 255: JPEG leaves white a few levels off).
    clipped_level: float = 250 / 255
    #: LOW_INFORMATION when the entropy of the luminance histogram (bits, 0-8) is below this: the pixels
    #: take about as many distinct levels as 2**entropy equally common ones, four at 2 bits (a covered lens,
    #: a blank wall or screen). Photographs measure 5-7.5 bits; a dark starry sky still measures over 3.
    low_information_bits: float = 2.0


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class QualityReport:
    """A frame's measured scores and the flags they raise (under the thresholds it was assessed with)."""

    edge_width: float  # pixels, at WORKING_SIDE; 0 when the frame has no edge at all
    highlights: float  # the 99th percentile of luminance
    clipped_share: float  # of the pixels, 0-1
    entropy_bits: float  # of the luminance histogram, 0-8
    flags: frozenset[QualityFlag]

    @property
    def labels(self) -> list[str]:
        """The flags' labels in a stable order, for badges."""
        return [flag.label for flag in QualityFlag if flag in self.flags]


def assess_quality(
    image: Image.Image | bytes, *, thresholds: QualityThresholds = DEFAULT_THRESHOLDS, what: str = "The image"
) -> QualityReport:
    """Measure a frame (its bytes, decoded under the same limits as every other decode, or a decoded image).

    Bytes that are not an image, or that declare an enormous size, raise NotAnImageError.
    """
    luminance = _working_luminance(image, what)
    edge_width = _edge_width(luminance)
    highlights = float(np.percentile(luminance, 99))
    clipped_share = float(np.mean(luminance >= thresholds.clipped_level))
    entropy_bits = _entropy_bits(luminance)
    flags = set()
    if entropy_bits < thresholds.low_information_bits:
        flags.add(QualityFlag.LOW_INFORMATION)
    elif edge_width > thresholds.blur_edge_width:  # a frame with nothing in it has no focus to judge
        flags.add(QualityFlag.BLURRED)
    if highlights < thresholds.dark_highlights:
        flags.add(QualityFlag.TOO_DARK)
    if clipped_share >= thresholds.overexposed_share:
        flags.add(QualityFlag.OVEREXPOSED)
    return QualityReport(edge_width, highlights, clipped_share, entropy_bits, frozenset(flags))


def quality_flags(
    image: Image.Image | bytes, *, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> frozenset[QualityFlag]:
    """The flags alone (see `assess_quality` for the scores behind them)."""
    return assess_quality(image, thresholds=thresholds).flags


def _working_luminance(image: Image.Image | bytes, what: str) -> np.ndarray:
    """Luminance (0-1, float) with the longest side at most WORKING_SIDE, averaged down, never enlarged."""
    if isinstance(image, bytes | bytearray | memoryview):
        image = decode_for_display(bytes(image), size=(WORKING_SIDE, WORKING_SIDE), what=what)
    elif image.width * image.height > MAX_PIXELS:
        raise NotAnImageError(f"{what} is {image.width}x{image.height} pixels, too large to assess.")
    try:
        gray = image.convert("L").convert("F")
    except (OSError, ValueError, SyntaxError):  # an opened image decodes here
        raise NotAnImageError(f"{what} is a damaged image that does not decode.") from None
    scale = WORKING_SIDE / max(gray.width, gray.height)
    if scale < 1:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)  # an average: no ringing that would pass for detail
    return np.asarray(gray, dtype=np.float64) / 255


def _edge_width(luminance: np.ndarray) -> float:
    """How many pixels the frame's strongest edges spread over (the wider of the two directions); 0 if none.

    Along each direction, every run of EDGE_WINDOW steps has a contrast (its largest minus smallest value)
    and a largest single step. At the runs of highest contrast (the top EDGE_SHARE), contrast over largest
    step is the edge's width: 1 for a step made in one pixel, growing with blur. Being a ratio it does not
    depend on the frame's brightness or contrast, and the weak steps of noise and compression are never
    among the strongest edges.
    """
    widths = []
    for axis in (0, 1):
        if luminance.shape[axis] <= EDGE_WINDOW:
            return 0.0  # too small to judge
        runs = sliding_window_view(luminance, EDGE_WINDOW + 1, axis=axis)
        contrast = runs.max(axis=-1) - runs.min(axis=-1)
        largest_step = np.abs(np.diff(runs, axis=-1)).max(axis=-1)
        strongest = contrast >= max(float(np.quantile(contrast, 1 - EDGE_SHARE)), 1 / 255)
        if strongest.any():
            widths.append(float(np.median(contrast[strongest] / largest_step[strongest])))
    return max(widths, default=0.0)


def _entropy_bits(luminance: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-level luminance histogram."""
    counts = np.bincount(np.clip(np.round(luminance * 255), 0, 255).astype(np.intp).ravel(), minlength=256)
    shares = counts[counts > 0] / luminance.size
    return float(-(shares * np.log2(shares)).sum())
