"""percept_core.frames, the notebooks' table of frames: states, hashes remembered, bursts kept by one frame."""

from __future__ import annotations

from percept_core import Curator
from percept_core.frames import hash_frames, mark_bursts, record_near_duplicates, to_dataframe


def test_a_second_look_decrypts_only_the_blobs_that_failed(stack, demo, tmp_path):
    ledger = str(tmp_path / "ledger.sqlite")
    first = Curator(stack.settings(percept_ledger_path=ledger))
    frames = to_dataframe(first)
    assert len(frames) == demo.frames + len(demo.bad)
    assert set(frames.loc[frames["state"] == "cannot decrypt", "name"]) == {demo.bad["no-metadata"]}  # known early
    hashed = hash_frames(first, frames)
    assert set(hashed.loc[hashed["problem"].notna(), "name"]) == set(demo.bad.values())
    assert set(hashed.loc[hashed["state"] == "cannot decrypt", "name"]) == set(demo.bad.values())
    assert hashed["phash"].notna().sum() == demo.frames

    again = Curator(stack.settings(percept_ledger_path=ledger))  # another session, the same ledger
    rehashed = hash_frames(again, to_dataframe(again))
    # only the three bad blobs that have a key are tried again; every good frame's hashes come from the ledger
    assert again.locker.decryptions == 3
    assert rehashed.set_index("name")["phash"].equals(hashed.set_index("name")["phash"])


def test_a_burst_is_kept_by_its_least_confident_frame_and_the_rest_stay_out_of_pushes(stack, demo, tmp_path):
    project_id = stack.new_project("bursts")
    curator = Curator(
        stack.settings(percept_ledger_path=str(tmp_path / "ledger.sqlite"), custom_vision_project_id=project_id)
    )
    frames = mark_bursts(hash_frames(curator, to_dataframe(curator)), max_distance=6)
    bursts = frames[frames["burst"].notna()]
    assert bursts["burst"].nunique() == demo.bursts
    for _, members in bursts.groupby("burst"):
        keeper = members[members["near_duplicate_of"].isna()]
        assert len(keeper) == 1 and keeper["confidence"].iloc[0] == members["confidence"].min()
        assert set(members["near_duplicate_of"].dropna()) == {keeper["name"].iloc[0]}
    assert frames.loc[frames["burst"].isna(), "near_duplicate_of"].isna().all()

    near_duplicates = frames["near_duplicate_of"].notna().sum()
    assert record_near_duplicates(curator, frames) == near_duplicates
    assert record_near_duplicates(curator, to_dataframe(curator).assign(near_duplicate_of=None)) == 0
    assert (to_dataframe(curator)["state"] == "near_duplicate").sum() == near_duplicates
    plan = curator.push_all_untagged(dry_run=True)
    assert plan.near_duplicates == near_duplicates
    assert plan.eligible == demo.frames - near_duplicates
