"""The fault suite's set-up: 500 encrypted frames of three model versions, and helpers to check a project."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import pytest

from percept_core import Curator
from percept_core.images import sha256_hex
from tests.support.frames import jpeg, upload_frames

FRAMES = 500
VERSIONS = (("people-counter", "1.0"), ("people-counter", "1.1"), ("shelf-monitor", "2.3"))


@dataclass
class FaultBed:
    container: str
    names: list[str]
    rejected: list[str]
    sha256: dict[str, str]  # blob name -> its plaintext's sha256


@pytest.fixture(scope="session")
def fault_bed(stack) -> FaultBed:
    """FRAMES small distinct frames split over three model versions, in a container of their own."""
    names: list[str] = []
    digests: dict[str, str] = {}
    per_version = FRAMES // len(VERSIONS) + 1
    for index, model in enumerate(VERSIONS):
        count = min(per_version, FRAMES - len(names))
        start = index * per_version
        frames = [jpeg(10_000 + start + i, (96, 72)) for i in range(count)]
        uploaded = upload_frames(stack, "faults", frames, model=model, start=datetime(2026, 11, 1 + index, 8, 0, 0))
        digests.update({name: sha256_hex(frame) for name, frame in zip(uploaded, frames, strict=True)})
        names += uploaded
    assert len(names) == FRAMES and len(set(digests.values())) == FRAMES
    return FaultBed("faults", names, rejected=names[7:10], sha256=digests)


@pytest.fixture
def fault_curator(stack, fault_bed, tmp_path):
    """A Curator on a fresh project, with a ledger of its own, retrying fast (faults are frequent here)."""
    project = stack.new_project("faults")

    def make() -> Curator:
        curator = Curator(
            stack.settings(
                custom_vision_project_id=project,
                mm_telemetry_storage_container=fault_bed.container,
                percept_ledger_path=str(tmp_path / "ledger.sqlite"),
            ),
            actor="fault-suite",
        )
        curator.customvision.backoff_seconds = 0.05
        curator.customvision.max_backoff_seconds = 0.5
        return curator

    curator = make()
    curator.reject([curator.blob(n) for n in fault_bed.rejected], reason="reviewer said no")
    curator.make_another = make
    return curator


def assert_exactly_once(stack, curator: Curator, bed: FaultBed) -> None:
    """Every eligible blob is in the project exactly once, nothing rejected went, and the ledger agrees.

    Checked by content (each frame is distinct) and, where images carry per-image provenance, by source blob.
    """
    images = stack.emulator.images(curator.customvision.project_id)
    eligible = set(bed.names) - set(bed.rejected)
    by_content = Counter(image.sha256 for image in images)
    duplicated = {sha: n for sha, n in by_content.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} frame(s) pushed more than once"
    missing = {name for name in eligible if bed.sha256[name] not in by_content}
    assert not missing, f"never pushed: {sorted(missing)[:5]} ({len(missing)} in all)"
    assert not {bed.sha256[name] for name in bed.rejected} & set(by_content), "a rejected blob was pushed"
    assert len(images) == len(eligible)
    sources = [image.metadata.get("source_blob") for image in images if "source_blob" in image.metadata]
    assert len(sources) == len(set(sources))
    image_of_content = {image.sha256: image.id for image in images}
    pushed = {row["name"]: row["image_id"] for row in curator.ledger.pushed(curator.customvision.project_id)}
    assert pushed == {name: image_of_content[bed.sha256[name]] for name in eligible}
