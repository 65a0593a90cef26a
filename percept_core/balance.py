"""Class balance: how many frames each tag has in the Custom Vision project and in a push, per model version, and
whether a push would make the imbalance between tags worse. No UI.

    counts = project_tag_counts(curator.customvision)          # one call: the service counts each tag's images
    rows = class_balance(counts, selected_blobs, ["person"])   # one TagBalance a tag
    imbalance_warning(rows, max_ratio=curator.settings.max_class_imbalance)   # None, or what is wrong and why

A model trained on far more frames of one tag than of another learns to favour the first; the ratio of the
tag with the most images to the tag with the fewest (tags without images left out) measures that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .blobs import RetrainingBlob
from .customvision import CustomVisionClient, ProjectImage
from .pipeline import model_label, version_label


@dataclass(frozen=True)
class ProjectTagCounts:
    """How many of the project's images carry each tag (every tag of the project, none left out), and per model
    version once the project's images were listed (`by_version` is None until then)."""

    by_tag: Mapping[str, int]
    by_version: Mapping[str, Mapping[str, int]] | None = None  # tag -> '<model> <version>' -> images


@dataclass(frozen=True)
class TagBalance:
    """One tag: its images in the project and the frames a push would add to it, per model version where known."""

    tag: str
    in_project: int
    in_selection: int
    project_by_version: Mapping[str, int] | None  # None: the project's images were not listed
    selection_by_version: Mapping[str, int]

    @property
    def after_push(self) -> int:
        return self.in_project + self.in_selection


def project_tag_counts(client: CustomVisionClient) -> ProjectTagCounts:
    """Each tag's images, as the service counts them, in one call."""
    return ProjectTagCounts({tag.name: tag.image_count for tag in client.tags(refresh=True)})


def project_tag_counts_by_version(client: CustomVisionClient) -> ProjectTagCounts:
    """Each tag's images per model version, from one listing of the project's tagged images (256 a call).

    An image's model version is the provenance a push wrote on it; an image that came from elsewhere (the
    portal, another tool) counts under '? ?'. The totals are the listing's, so they add up with the versions.
    """
    by_version: dict[str, Counter[str]] = {tag.name: Counter() for tag in client.tags(refresh=True)}
    for image in client.iter_images(tagging_status="Tagged"):
        version = model_label(image.metadata.get("model_name"), image.metadata.get("model_version"))
        for tag in _image_tags(image):
            by_version.setdefault(tag, Counter())[version] += 1
    return ProjectTagCounts(
        {tag: sum(versions.values()) for tag, versions in by_version.items()},
        {tag: dict(versions) for tag, versions in by_version.items()},
    )


def class_balance(
    project_counts: ProjectTagCounts,
    selection: Sequence[RetrainingBlob],
    chosen_tags: Sequence[str],
    frame_tags: Mapping[str, Sequence[str]] | None = None,
) -> list[TagBalance]:
    """One row a tag of the project (in its order), then each tag a push would add that it does not know yet: its
    images in the project, and the selected frames a push would add to it. A frame gets every chosen tag, or its
    own tags when `frame_tags` (blob name -> tags: a suggestion the reviewer accepted) names it.

    Tag names match as Custom Vision matches them, whatever their case. The selection is counted as picked: a
    frame the push will skip (already pushed, undecryptable) is still counted, so the push adds at most this.
    """
    by_name = {tag.lower(): tag for tag in project_counts.by_tag}
    frame_tags = frame_tags or {}
    added: dict[str, Counter[str]] = {}  # tag -> model version -> frames
    for blob in selection:
        for tag in dict.fromkeys(by_name.get(t.lower(), t) for t in frame_tags.get(blob.name, chosen_tags)):
            added.setdefault(tag, Counter())[version_label(blob)] += 1
    rows = []
    for tag in [*project_counts.by_tag, *sorted(set(added) - set(project_counts.by_tag))]:
        versions = added.get(tag, Counter())
        rows.append(
            TagBalance(
                tag=tag,
                in_project=project_counts.by_tag.get(tag, 0),
                in_selection=sum(versions.values()),
                project_by_version=(
                    None if project_counts.by_version is None else dict(project_counts.by_version.get(tag, {}))
                ),
                selection_by_version=dict(versions),
            )
        )
    return rows


def imbalance_ratio(counts: Iterable[int]) -> float | None:
    """The most images of a tag over the fewest, among the tags that have any; None when none has any."""
    held = [count for count in counts if count > 0]
    return max(held) / min(held) if held else None


def imbalance_warning(balance: Sequence[TagBalance], max_ratio: float) -> str | None:
    """What is wrong when the push would take the imbalance past `max_ratio` and further than it is now; else None.

    A push that leaves the imbalance as it was, or lessens it, never warns, however imbalanced the project is:
    the push is not what made it so, and frames of the rarer tags are what would mend it.
    """
    before = imbalance_ratio(row.in_project for row in balance) or 1.0  # no tagged image: nothing imbalanced yet
    after = imbalance_ratio(row.after_push for row in balance) or 1.0
    if after <= max_ratio or after <= before:
        return None
    most = max(balance, key=lambda row: row.after_push)
    fewest = min((row for row in balance if row.after_push > 0), key=lambda row: row.after_push)
    return (
        f"This push would leave tag {most.tag!r} with {most.after_push:,} images against {fewest.after_push:,} of "
        f"tag {fewest.tag!r}: {ratio_text(after)}, past the {ratio_text(max_ratio)} the setting "
        f"percept_max_class_imbalance allows (it is {ratio_text(before)} now). A model trained on it learns to "
        f"favour {most.tag!r}: push frames of {fewest.tag!r} first, or fewer frames with {most.tag!r}."
    )


def ratio_text(ratio: float) -> str:
    """'12.5:1', '10:1'."""
    return f"{ratio:.1f}".removesuffix(".0") + ":1"


def _image_tags(image: ProjectImage) -> set[str]:
    """The tags of an image: its own (classification) and its boxes' (object detection), each counted once."""
    return set(image.tags) | {region["tag_name"] for region in image.regions if region.get("tag_name")}
