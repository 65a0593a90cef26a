"""Near-duplicate frames on the Review page: the demo devices' bursts collapse into one tile each (AppTest).

Which frames make a burst is known from the demo seeder's plan (the frames it rendered as one burst), not
from the hashes the app computes.
"""

from __future__ import annotations

from collections import defaultdict

from devstack.seed import plan_frames
from tests.app.conftest import button, dialog, state_badge, tick, ticked, tile, tile_names


def demo_bursts(demo) -> list[list[str]]:
    """The blob names of each burst the demo devices uploaded, least confident first."""
    members: dict[int, list] = defaultdict(list)
    for spec in plan_frames(demo.frames):
        if spec.burst is not None:
            members[spec.burst].append(spec)
    bursts = [[s.device_name + ".dec" for s in sorted(specs, key=lambda s: s.confidence)] for specs in members.values()]
    assert len(bursts) == demo.bursts
    return bursts


def about(at) -> str:
    [caption] = [c.value for c in at.caption if c.value.startswith("A burst:")]
    return caption


def collapse(at):
    at.toggle(key="collapse_bursts").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_each_demo_burst_collapses_into_one_tile_with_its_count(app_env, demo):
    bursts = demo_bursts(demo)
    more = sum(len(b) - 1 for b in bursts)
    at = app_env.open()
    assert len(tile_names(at)) == demo.frames + len(demo.bad)  # every frame, with collapsing turned off
    assert "at most **6** bits (setting `percept_near_duplicate_distance`)" in about(at)
    assert f"This page: {demo.bursts} bursts ({more} more frames)." in about(at)

    collapse(at)
    names = tile_names(at)
    assert len(names) == demo.frames + len(demo.bad) - more
    for burst in bursts:
        assert [n for n in burst if n in names] == [burst[0]]  # the least confident frame stands for it
        assert f"**{len(burst)} near-identical frames** ({len(burst)} new)" in tile(at, burst[0]).caption[1].value
    assert len(at.image) == len(names) - len(demo.bad)
    at.switch_page("views/activity.py").run()
    at.switch_page("views/review.py").run()
    assert tile_names(at) == names  # still collapsed after a look at another page

    # Hashing cost no decrypt of its own: each frame was decrypted once, for its thumbnail and its hashes ...
    curator = app_env.curator
    assert curator.locker.decryptions == demo.frames + 3  # the tampered, truncated and not-an-image blobs fail late
    good = [b for b in curator.blobs() if b.name not in demo.bad.values()]
    records = curator.ledger.records([b.key for b in good])
    assert len(records) == demo.frames and all(r.phash and r.sha256 for r in records.values())
    # ... and only the hashes are kept: a new session decrypts for its thumbnails, not for hashes again.
    again = app_env.open()
    collapse(again)
    assert tile_names(again) == names
    assert curator.locker.decryptions == 2 * (demo.frames + 3)


def test_a_burst_pushes_its_representative_and_marks_the_rest_reversibly_or_pushes_every_frame(app_env, demo):
    burst = max(demo_bursts(demo), key=len)
    keeper, others = burst[0], burst[1:]
    at = collapse(app_env.open())
    at.button(key=f"open:{keeper}").click().run()  # its larger view shows the frames it stands for
    view = dialog(at)
    assert any(m.value == f"**Stands for {len(burst)} near-identical frames.** The others:" for m in view.markdown)
    in_capture_order = sorted(others, key=lambda name: name.split("-", 1)[1])  # names: confidence-time.jpg.dec
    assert [c.value.split(" · ")[0] for c in view.caption if " · " in c.value] == in_capture_order
    assert len(view.image) == 1 + len(others)
    at.button(key="close_view").click().run()
    tick(at, keeper)
    assert any(c.value.startswith(f"{len(burst)} selected ({len(burst)} on this page)") for c in at.caption)

    button(at, "Push selected").click().run()
    assert at.success[0].value == f"**Push:** 1 pushed, {len(others)} near-duplicate"
    assert ticked(at) == set()
    assert [i.source_blob for i in app_env.project_images()] == [keeper]
    rows = at.dataframe[0].value
    assert set(rows.loc[rows["outcome"] == "near-duplicate", "blob"]) == set(others)
    assert set(rows["reason"]) >= {f"near-duplicate of {keeper}"}
    assert state_badge(at, keeper) == "pushed"
    assert f"(1 pushed, {len(others)} near_duplicate)" in tile(at, keeper).caption[1].value
    curator = app_env.curator
    records = curator.records([curator.blob(n) for n in others])
    assert {r.review for r in records.values()} == {"near_duplicate"}
    assert {e.blob for e in curator.ledger.events(action="near-duplicate")} == set(others)
    assert curator.push_all_untagged(dry_run=True).near_duplicates == len(others)  # push-all leaves them out

    # Restore: the marked frames, found by their state, are new again.
    at.multiselect(key="f_states").set_value(["near_duplicate"]).run()
    assert tile_names(at) == [others[0]]  # still one burst among themselves
    button(at, "Select page").click().run()
    button(at, "Restore").click().run()
    assert at.success[0].value == f"**Restore:** {len(others)} restored"
    records = curator.records([curator.blob(n) for n in others])
    assert {r.review for r in records.values()} == {"new"}

    # The reviewer's choice: every frame of the burst goes up.
    at.multiselect(key="f_states").set_value([]).run()
    at.checkbox(key="push_every_frame").check().run()
    tick(at, keeper)
    button(at, "Push selected").click().run()
    assert at.success[0].value == f"**Push:** {len(others)} pushed, 1 skipped"  # its representative was in already
    assert sorted(i.source_blob for i in app_env.project_images()) == sorted(burst)
    assert f"({len(burst)} pushed)" in tile(at, keeper).caption[1].value


def test_rejecting_a_burst_rejects_every_frame_of_it(app_env, demo):
    burst = min(demo_bursts(demo), key=len)
    at = collapse(app_env.open())
    tick(at, burst[0])
    button(at, "Reject selected").click().run()
    assert at.success[0].value == f"**Reject:** {len(burst)} rejected"
    assert f"({len(burst)} rejected)" in tile(at, burst[0]).caption[1].value


def test_the_threshold_is_the_setting_and_the_page_says_so(app_env_factory, demo):
    harness = app_env_factory(percept_near_duplicate_distance="2")
    at = harness.open()
    assert "at most **2** bits (setting `percept_near_duplicate_distance`)" in about(at)
    tight = int(about(at).split("This page: ")[1].split(" burst")[0])
    assert tight <= demo.bursts  # a tighter threshold finds no more bursts than the default


def test_a_new_session_shows_bursts_collapsed(app_env, demo):
    """Collapsing is the default: a reviewer opening the app sees one tile per burst."""
    bursts = demo_bursts(demo)
    at = app_env.open(collapse_bursts=None)
    assert at.toggle(key="collapse_bursts").value is True
    names = tile_names(at)
    assert len(names) == demo.frames + len(demo.bad) - sum(len(b) - 1 for b in bursts)
    assert all([n for n in burst if n in names] == [burst[0]] for burst in bursts)
