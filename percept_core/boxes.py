"""Boxes on a frame for an object-detection project, by tag name, in 0..1 of the original image. No UI.

A reviewer (or a notebook) thinks in tag names and pixels; Custom Vision takes `Region`s with tag ids,
normalised to the image. `save_boxes` makes an image's boxes exactly the given ones: it uploads the
image with them, or changes the boxes of the image already in the project (no second upload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .blobs import RetrainingBlob
from .customvision import MAX_REGIONS_PER_IMAGE, Region
from .errors import CuratorError
from .pipeline import RegionUpdate
from .state import BlobState, state_of_record

if TYPE_CHECKING:
    from .curator import Curator


@dataclass(frozen=True)
class Box:
    """One box: its tag's name and left, top, width, height as fractions (0..1) of the original image."""

    tag: str
    left: float
    top: float
    width: float
    height: float

    @classmethod
    def from_pixels(
        cls, tag: str, x: float, y: float, width: float, height: float, *, image_width: int, image_height: int
    ) -> Box:
        """A box drawn in pixels of an image of the given size, normalised and clamped to the image."""
        region = Region.from_pixels("", x, y, width, height, image_width=image_width, image_height=image_height)
        return cls(tag, region.left, region.top, region.width, region.height)

    def pixels(self, image_width: int, image_height: int) -> tuple[float, float, float, float]:
        """x, y, width, height in pixels of an image of the given size."""
        return (self.left * image_width, self.top * image_height, self.width * image_width, self.height * image_height)

    def same_as(self, other: Box, tolerance: float = 1e-4) -> bool:
        return self.tag.lower() == other.tag.lower() and all(
            abs(a - b) <= tolerance
            for a, b in zip(
                (self.left, self.top, self.width, self.height),
                (other.left, other.top, other.width, other.height),
                strict=True,
            )
        )


def same_boxes(first: Sequence[Box], second: Sequence[Box]) -> bool:
    """The same boxes, in any order."""
    if len(first) != len(second):
        return False
    left = list(second)
    for box in first:
        match = next((other for other in left if box.same_as(other)), None)
        if match is None:
            return False
        left.remove(match)
    return True


def to_regions(curator: Curator, boxes: Sequence[Box]) -> list[Region]:
    """The boxes as Custom Vision regions of the curator's project.

    Raises CuratorError when there are more than Custom Vision takes or one lies outside the image, and
    TagNameError for a tag name the project does not have.
    """
    if not boxes:
        return []
    if len(boxes) > MAX_REGIONS_PER_IMAGE:
        raise CuratorError(f"An image can have at most {MAX_REGIONS_PER_IMAGE} boxes ({len(boxes)} drawn).")
    ids = curator.customvision.tag_ids([box.tag for box in boxes])
    regions = [Region(tag_id, box.left, box.top, box.width, box.height) for tag_id, box in zip(ids, boxes, strict=True)]
    for region, box in zip(regions, boxes, strict=True):
        try:
            region.validate()
        except ValueError as exc:
            raise CuratorError(f"The {box.tag!r} box is not valid: {exc}.") from None
    return regions


def boxes_of(curator: Curator, blob: RetrainingBlob) -> list[Box] | None:
    """The boxes the blob's image has in the project now, or None when the blob is not in the project."""
    record = curator.ledger.record(blob.key, curator.customvision.project_id)
    if state_of_record(record) is not BlobState.PUSHED or not record.image_id:
        return None
    images = curator.customvision.images_by_ids([record.image_id])
    if not images:
        return None
    return [Box(r["tag_name"], r["left"], r["top"], r["width"], r["height"]) for r in images[0].regions]


def save_boxes(curator: Curator, blob: RetrainingBlob, boxes: Sequence[Box]) -> RegionUpdate:
    """Make the blob's image have exactly `boxes`: uploaded with them, or its boxes changed in place.

    The ledger keeps them too, with their tags' names, once the image holds them: exports read them there.
    """
    update = curator.set_regions(blob, to_regions(curator, boxes))
    if update.image_id:
        reviewed = [(box.tag, box.left, box.top, box.width, box.height) for box in boxes]
        curator.ledger.record_regions(blob.key, curator.customvision.project_id, regions=reviewed, actor=curator.actor)
    return update


__all__ = ["Box", "boxes_of", "same_boxes", "save_boxes", "to_regions"]
