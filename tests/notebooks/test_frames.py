"""percept_core.frames, the notebooks' table of frames: states, hashes remembered, bursts kept by one frame,
quality flags."""

from __future__ import annotations

import dataclasses
import secrets

import pandas as pd

from percept_core import Curator
from percept_core.frames import hash_frames, mark_bursts, quality_frames, record_near_duplicates, to_dataframe
from percept_core.quality import DEFAULT_THRESHOLDS, QualityFlag
from tests.support.frames import jpeg, upload_frames

FLAG_COLUMNS = [flag.value for flag in QualityFlag]


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


def test_quality_flags_are_exactly_the_demo_s_spoiled_frames_and_a_bad_blob_gets_its_reason(stack, demo, tmp_path):
    curator = Curator(stack.settings(percept_ledger_path=str(tmp_path / "ledger.sqlite")))
    frames = to_dataframe(curator)
    assessed = quality_frames(curator, frames).set_index("name")

    good = assessed[assessed["problem"].isna()]
    assert len(good) == demo.frames
    flagged = {
        name: {f for f in QualityFlag if row[f.value]} for name, row in good.iterrows() if row[FLAG_COLUMNS].any()
    }
    assert flagged == {name: {flag} for name, flag in demo.degraded.items()}
    assert {name: good.at[name, "quality_flags"] for name in flagged} == {n: f.label for n, f in demo.degraded.items()}
    assert (good.drop(index=list(flagged))["quality_flags"] == "").all()
    # a blob that cannot be decrypted (or is no image) says why, and has no flag at all
    bad = assessed.loc[list(demo.bad.values())]
    assert bad["problem"].str.split(":").str[0].to_dict() == {
        demo.bad["tampered"]: "tampered",
        demo.bad["truncated"]: "tampered",
        demo.bad["not-an-image"]: "not an image",
        demo.bad["no-metadata"]: "missing metadata",
        demo.bad["unknown-version"]: "unknown model version",
    }
    assert bad[FLAG_COLUMNS].isna().all().all() and bad["quality_flags"].isna().all()
    # each frame with a key was decrypted once, and nothing was kept: the ledger knows none of them
    assert curator.locker.decryptions == demo.frames + 3
    assert curator.ledger.records([b.key for b in frames["blob"]]) == {}

    # the thresholds are the caller's: with no highlight too dark, the dark frames are not flagged
    dark = frames[frames["name"].isin([n for n, f in demo.degraded.items() if f is QualityFlag.TOO_DARK])]
    lenient = dataclasses.replace(DEFAULT_THRESHOLDS, dark_highlights=0.0)
    assert len(dark) and not quality_frames(curator, dark, thresholds=lenient)["too_dark"].any()


def test_a_frame_changed_since_listing_is_not_assessed_and_says_to_refresh(stack, tmp_path):
    container = f"quality-{secrets.token_hex(4)}"
    names = upload_frames(stack, container, [jpeg(700), jpeg(701)])
    curator = Curator(
        stack.settings(percept_ledger_path=str(tmp_path / "ledger.sqlite"), mm_telemetry_storage_container=container)
    )
    frames = to_dataframe(curator)
    upload_frames(stack, container, [jpeg(702)], names=[names[0]])  # same name, new content: a new etag

    assessed = quality_frames(curator, frames).set_index("name")
    changed, kept = assessed.loc[names[0]], assessed.loc[names[1]]
    assert changed["problem"].startswith("changed since listed: ") and changed["problem"].endswith(
        "Refresh the listing."
    )
    assert changed[FLAG_COLUMNS].isna().all() and pd.isna(changed["quality_flags"])
    assert pd.isna(kept["problem"]) and kept["quality_flags"] == "" and not kept[FLAG_COLUMNS].any()
