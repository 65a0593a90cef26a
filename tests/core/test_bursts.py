"""The burst index: the app's grouping and the notebooks' table see the same bursts, and a near-duplicate
mark keeps to the one rule (state.py) whichever way it is made."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from percept_core.bursts import find_bursts, page_hashes
from percept_core.frames import hash_frames, mark_bursts, record_near_duplicates, to_dataframe
from percept_core.review import push_reviewed
from tests.support.frames import jpeg, upload_frames


def near_copy(seed: int, patch: int) -> bytes:
    """The frame `jpeg(seed)` with a small patch changed: what a camera sees a moment later."""
    image = Image.open(io.BytesIO(jpeg(seed)))
    image.paste((patch * 40 % 256, 0, 0), (patch * 8, 0, patch * 8 + 6, 6))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def stamp(second: int) -> str:
    return f"2026-11-20-09-{second // 60:02d}-{second % 60:02d}.jpg.dec"


# Names say the confidence and the capture time; "no-time" frames have neither.
BURST_A = {f"30-{stamp(10)}": 0, f"55-{stamp(15)}": 1, f"30-{stamp(20)}": 2, f"40-{stamp(25)}": 3}
LATER_A = {f"10-{stamp(600)}": 1, "no-time-a.jpg.dec": 2}  # burst A's scene ten minutes on: outside the window
OTHER_VERSION_A = {f"20-{stamp(12)}": 1, f"25-{stamp(14)}": 2}  # burst A's scene, from model version 2.0
BURST_B = {f"70-{stamp(30)}": 0, f"45-{stamp(40)}": 1}

KEEPER_A = f"30-{stamp(10)}"
EXPECTED = {
    KEEPER_A: {f"55-{stamp(15)}", f"30-{stamp(20)}", f"40-{stamp(25)}"},  # a tie: the earlier frame stands
    f"10-{stamp(600)}": {"no-time-a.jpg.dec"},  # a frame without a time joins its scene's latest burst
    f"20-{stamp(12)}": {f"25-{stamp(14)}"},
    f"45-{stamp(40)}": {f"70-{stamp(30)}"},
}


def upload(stack, container: str, frames: dict[str, int], seed: int, **options) -> None:
    upload_frames(
        stack, container, [near_copy(seed, patch) for patch in frames.values()], names=list(frames), **options
    )


def test_the_app_and_the_notebook_table_find_the_same_bursts(stack, project_id, make_curator, container_name):
    upload(stack, container_name, BURST_A | LATER_A, 900)
    upload(stack, container_name, BURST_B, 901)
    upload(stack, container_name, {f"60-{stamp(50)}": 0}, 902)  # two frames of their own
    upload(stack, container_name, {f"65-{stamp(55)}": 0}, 903)
    upload(stack, container_name, OTHER_VERSION_A, 900, model=("people-counter", "2.0"))
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = list(curator.blobs())

    app = find_bursts(blobs, page_hashes(curator, blobs), max_distance=6)
    app_bursts = {burst.representative.name: {b.name for b in burst.others} for burst in app}
    table = mark_bursts(hash_frames(curator, to_dataframe(curator, blobs)), max_distance=6)
    members = table[table["burst"].notna()]
    table_bursts = {
        burst["name"][burst["near_duplicate_of"].isna()].item(): set(burst["name"][burst["near_duplicate_of"].notna()])
        for _, burst in members.groupby("burst")
    }
    assert app_bursts == table_bursts == EXPECTED
    assert set(members["near_duplicate_of"].dropna()) == set(EXPECTED)


@pytest.mark.parametrize("entry", ["notebook", "app"])
def test_a_near_duplicate_mark_never_overwrites_a_pushed_or_rejected_frame(
    entry, stack, project_id, make_curator, container_name
):
    upload(stack, container_name, BURST_A, 900)
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = {b.name: b for b in curator.blobs()}
    keeper, pushed, rejected, new = (blobs[name] for name in (KEEPER_A, *sorted(EXPECTED[KEEPER_A])))
    frames = mark_bursts(hash_frames(curator, to_dataframe(curator)), max_distance=6)
    [burst] = find_bursts(list(blobs.values()), page_hashes(curator, blobs.values()), max_distance=6)

    # After the bursts were found and shown: one frame went to the project, another was rejected.
    curator.push([pushed])
    curator.reject([rejected])
    if entry == "notebook":
        assert (frames.set_index("name").loc[[pushed.name, rejected.name], "state"] == "new").all()  # as shown
        assert record_near_duplicates(curator, frames) == 1
    else:
        result = push_reviewed(curator, [keeper, pushed, rejected, new], bursts=[burst])
        assert {o.name: (o.outcome, o.reason) for o in result.near_duplicates} == {
            pushed.name: ("unchanged", "already pushed"),
            rejected.name: ("unchanged", "already rejected"),
            new.name: ("near-duplicate", f"near-duplicate of {keeper.name}"),
        }

    records = curator.records(list(blobs.values()))
    states = {name: curator.state_of(blob, records.get(blob.key)) for name, blob in blobs.items()}
    assert (states[pushed.name], states[rejected.name], states[new.name]) == ("pushed", "rejected", "near_duplicate")
    assert {e.blob for e in curator.ledger.events(action="near-duplicate")} == {new.name}
