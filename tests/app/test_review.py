"""The Review page as a reviewer uses it: filters, pages, tiles, selection, tags, push, reject, restore, re-tag."""

from __future__ import annotations

from datetime import date

import pytest
from azure.storage.blob import BlobServiceClient
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP, button, dialog, state_badge, tick, ticked, tile, tile_checkbox, tile_names
from tests.support.frames import jpeg, upload_frames

GALLERY = "appgallery"
GALLERY_SIZE = 260  # more than one service page (200 entries) and five pages of 48


@pytest.fixture(scope="module")
def gallery_container(stack):
    """A container of its own with GALLERY_SIZE small encrypted frames of one model version."""
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    if service.get_container_client(GALLERY).exists():
        return sorted(b.name for b in service.get_container_client(GALLERY).list_blobs())
    return sorted(upload_frames(stack, GALLERY, [jpeg(i, (160, 120)) for i in range(GALLERY_SIZE)]))


def good_names(at, demo) -> list[str]:
    return [name for name in tile_names(at) if name not in demo.bad.values()]


def test_first_page_shows_thumbnails_facts_and_why_bad_blobs_have_no_picture(app_env, demo):
    at = app_env.open()

    names = tile_names(at)
    listed = [b.name for b in app_env.curator.blobs()]
    assert names == listed[:48] and len(names) >= demo.frames + len(demo.bad)  # the demo's 41 fit on one page
    assert set(demo.bad.values()) <= set(names)
    assert len(at.image) == len(names) - len(demo.bad)  # a picture for each good frame, none for the bad ones
    good = next(n for n in names if n not in demo.bad.values())
    blob = app_env.curator.blob(good)
    caption = tile(at, good).caption[0].value
    assert f"{blob.captured_at:%Y-%m-%d %H:%M:%S}" in caption
    assert f"{blob.confidence:g}%" in caption and f"{blob.model_name} {blob.model_version}" in caption
    assert len(tile(at, good).image) == 1 and state_badge(at, good) == "new"

    expected = {
        "tampered": "tampered",
        "truncated": "tampered",
        "not-an-image": "not an image",
        "no-metadata": "missing metadata",
        "unknown-version": "unknown model version",
    }
    for case, reason in expected.items():
        bad = tile(at, demo.bad[case])
        assert len(bad.image) == 0, case
        assert bad.error[0].value == f"**{reason}**", (case, bad.error[0].value)
        assert state_badge(at, demo.bad[case]) == "cannot decrypt", case
    assert "failed its integrity check" in tile(at, demo.bad["tampered"]).caption[0].value
    assert "has no model_name/model_version metadata" in tile(at, demo.bad["no-metadata"]).caption[0].value


def test_filters_work_on_metadata_and_the_ledger_before_decrypting(app_env, demo):
    from tests.core.test_blobs import _as_seeded

    at = app_env.open()
    seeded = _as_seeded(app_env.stack)  # name -> (model, version, confidence, day, time), read with the Storage SDK
    assert set(tile_names(at)) == set(seeded)

    def expect(condition) -> set[str]:
        names = {name for name, row in seeded.items() if condition(*row)}
        assert 0 < len(names) < len(seeded)  # a filter case keeps some blobs and leaves out others
        return names

    at.multiselect(key="f_models").set_value(["shelf-monitor"]).run()
    assert set(tile_names(at)) == expect(lambda m, v, c, d, t: m == "shelf-monitor")

    at.multiselect(key="f_models").set_value([]).run()
    at.slider(key="f_confidence").set_value((0, 30)).run()
    assert set(tile_names(at)) == expect(lambda m, v, c, d, t: c <= 30)

    at.slider(key="f_confidence").set_value((0, 100)).run()
    # a day with frames before and after noon: the filter takes the whole day
    days = sorted({d for *_, d, _ in seeded.values()})
    day = next(x for x in days if {t < "12" for *_, d, t in seeded.values() if d == x} == {True, False})
    at.date_input(key="f_dates").set_value((day, day)).run()
    assert set(tile_names(at)) == expect(lambda m, v, c, d, t: d == day)

    at.date_input(key="f_dates").set_value(()).run()
    at.text_input(key="f_name").input("2026-11-15-12-0").run()
    by_name = {n for n in seeded if "2026-11-15-12-0" in n}
    assert set(demo.bad.values()) <= by_name and set(tile_names(at)) == by_name

    # The state comes from the ledger: the bad blobs were noted when their tiles could not be drawn.
    at.text_input(key="f_name").input("").run()
    at.multiselect(key="f_states").set_value(["cannot decrypt"]).run()
    assert set(tile_names(at)) == set(demo.bad.values())


def test_a_filter_set_before_the_first_page_decrypts_only_what_matches(app_env, demo):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["f_models"] = ["shelf-monitor"]  # as a filter carried over from another page
    at.run()
    shown = tile_names(at)
    good = [n for n in shown if n not in demo.bad.values()]
    assert good and len(at.image) == len(good)
    assert app_env.curator.locker.decryptions == len(good) < demo.frames  # only the matching blobs


def test_paging_back_decrypts_nothing_again_and_the_first_page_lists_once(app_env_factory, gallery_container):
    harness = app_env_factory(mm_telemetry_storage_container=GALLERY)
    at = harness.open()
    curator = harness.curator
    page1 = tile_names(at)
    assert page1 == gallery_container[:48] and len(at.image) == 48
    assert curator.data.list_calls == 1  # one service page, not the whole container
    assert curator.locker.decryptions == 48

    at.button(key="top_next").click().run()
    assert tile_names(at) == gallery_container[48:96]
    assert curator.locker.decryptions == 96

    at.button(key="top_prev").click().run()
    assert tile_names(at) == page1 and len(at.image) == 48
    assert curator.locker.decryptions == 96  # nothing decrypted again
    assert curator.data.list_calls == 2  # nor listed again

    at.button(key="top_next").click().run()
    assert tile_names(at) == gallery_container[48:96]
    assert curator.locker.decryptions == 96 and curator.data.list_calls == 2

    for _ in range(4):  # to the end: 260 blobs are 5 full pages and 20 more
        at.button(key="top_next").click().run()
    assert tile_names(at) == gallery_container[240:]
    assert at.button(key="top_next").disabled and not at.button(key="top_prev").disabled
    assert any("the last page" in m.value for m in at.markdown)


def test_selection_survives_paging_and_select_page_and_clear_work(app_env_factory, gallery_container):
    harness = app_env_factory(mm_telemetry_storage_container=GALLERY)
    at = harness.open()
    first, second = gallery_container[0], gallery_container[5]
    tick(at, first, second)
    assert ticked(at) == {first, second}

    at.button(key="top_next").click().run()
    assert ticked(at) == set()
    button(at, "Select page").click().run()
    assert ticked(at) == set(gallery_container[48:96])
    assert any(c.value.startswith("50 selected (48 on this page)") for c in at.caption)

    at.button(key="top_prev").click().run()
    assert ticked(at) == {first, second}  # still picked after paging away and back
    tile_checkbox(at, second).uncheck().run()
    assert any(c.value.startswith("49 selected (1 on this page)") for c in at.caption)

    button(at, "Clear selection").click().run()
    assert ticked(at) == set()
    assert any(c.value.startswith("0 selected") for c in at.caption)


def test_select_all_matching_selects_every_match_not_only_the_page(app_env_factory, gallery_container):
    harness = app_env_factory(mm_telemetry_storage_container=GALLERY)
    at = harness.open()
    at.slider(key="f_confidence").set_value((50, 100)).run()
    expected = [b.name for b in harness.curator.blobs(min_confidence=50)]
    assert len(expected) > 48  # more than the page shows

    button(at, "Select all matching").click().run()
    assert any(f"All {len(expected):,} matching blobs are selected." in i.value for i in at.info)
    assert ticked(at) == set(tile_names(at))
    assert any(c.value.startswith(f"{len(expected)} selected (48 on this page)") for c in at.caption)
    assert set(at.session_state["selection"].blobs) == set(expected)


def test_new_tag_is_validated_and_created_in_the_project(app_env):
    at = app_env.open()
    assert at.multiselect(key="push_tags").options == ["empty-shelf", "person", "product"]

    def add(name: str):
        at.text_input(key="new_tag").input(name)
        return button(at, "Add tag").click().run()

    add("   ")
    assert "A tag name cannot be empty." in at.error[0].value
    add("x" * 300)
    assert "at most 256 characters (300 given)" in at.error[0].value
    add("Person")
    assert "already has a tag named 'Person'" in at.error[0].value

    add("forklift")
    assert "Tag 'forklift' created and chosen." in at.success[0].value
    assert "forklift" in at.multiselect(key="push_tags").options
    assert at.multiselect(key="push_tags").value == ["forklift"]
    assert at.text_input(key="new_tag").value == ""
    tags = {t.name for t in app_env.trainer().get_tags(app_env.project_id)}
    assert tags == {"person", "product", "empty-shelf", "forklift"}


def test_push_selected_lands_exactly_those_images_with_the_chosen_tags(app_env, demo):
    at = app_env.open()
    chosen = good_names(at, demo)[:3]
    tick(at, *chosen)
    at.multiselect(key="push_tags").set_value(["person", "product"]).run()
    assert any("push with tags person, product" in c.value for c in at.caption)

    button(at, "Push selected").click().run()
    assert not at.exception
    assert at.success[0].value == "**Push:** 3 pushed"
    assert ticked(at) == set()  # done: nothing stays picked
    assert all(state_badge(at, name) == "pushed" for name in chosen)

    images = app_env.project_images()
    assert sorted(i.source_blob for i in images) == sorted(chosen)
    assert all(i.tags == {"person", "product"} for i in images)
    events = app_env.curator.ledger.events(action="push")
    assert {e.blob for e in events} == set(chosen) and all(e.image_id for e in events)


def test_failed_items_stay_selected_with_their_reasons_and_untagged_push(app_env, demo):
    at = app_env.open()
    good = good_names(at, demo)[:2]
    bad = [demo.bad["tampered"], demo.bad["no-metadata"]]
    tick(at, *good, *bad)
    assert at.multiselect(key="push_tags").value == []

    button(at, "Push selected").click().run()
    assert at.warning[0].value == "**Push:** 2 pushed, 2 undecryptable"
    assert ticked(at) == set(bad)  # what did not go stays picked ...
    assert "tampered" in tile(at, demo.bad["tampered"]).warning[0].value  # ... with its reason on the tile
    assert "missing metadata" in tile(at, demo.bad["no-metadata"]).warning[0].value
    problems = at.dataframe[0].value
    assert set(problems["blob"]) == set(bad) and set(problems["outcome"]) == {"undecryptable"}

    images = app_env.project_images()
    assert sorted(i.source_blob for i in images) == sorted(good)
    assert all(i.tags == frozenset() for i in images)  # no tag chosen: untagged


def test_reject_and_restore_are_recorded_with_the_reviewer_and_reversible(app_env, demo):
    reviewer = {"is_logged_in": True, "email": "reviewer@contoso.example", "name": "Rae Viewer"}
    at = app_env.open(user=reviewer)
    chosen = good_names(at, demo)[:3]
    tick(at, *chosen)

    button(at, "Reject selected").click().run()
    assert at.success[0].value == "**Reject:** 3 rejected"
    assert all(state_badge(at, n) == "rejected" for n in chosen) and ticked(at) == set()
    rejects = app_env.curator.ledger.events(action="reject")
    assert {e.blob for e in rejects} == set(chosen)
    assert {e.actor for e in rejects} == {"reviewer@contoso.example"}

    at.multiselect(key="f_states").set_value(["rejected"]).run()
    assert set(tile_names(at)) == set(chosen)
    button(at, "Select page").click().run()
    button(at, "Restore").click().run()
    assert at.success[0].value == "**Restore:** 3 restored"
    assert tile_names(at) == [] or all(state_badge(at, n) == "new" for n in tile_names(at))
    at.multiselect(key="f_states").set_value(["new"]).run()
    assert set(chosen) <= set(tile_names(at))
    assert {e.actor for e in app_env.curator.ledger.events(action="restore")} == {"reviewer@contoso.example"}


def test_rejecting_an_image_already_pushed_is_refused_with_the_reason(app_env, demo):
    at = app_env.open()
    pushed, other = good_names(at, demo)[:2]
    tick(at, pushed)
    button(at, "Push selected").click().run()
    tick(at, pushed, other)

    button(at, "Reject selected").click().run()
    assert at.warning[0].value == "**Reject:** 1 rejected, 1 skipped"
    assert ticked(at) == {pushed}
    assert "already in the Custom Vision project" in tile(at, pushed).warning[0].value
    assert state_badge(at, pushed) == "pushed" and state_badge(at, other) == "rejected"


def test_pushed_images_are_retagged_without_uploading_them_again(app_env, demo):
    at = app_env.open()
    chosen = good_names(at, demo)[:2]
    tick(at, *chosen)
    at.multiselect(key="push_tags").set_value(["person"]).run()
    button(at, "Push selected").click().run()
    before = {i.source_blob: i.id for i in app_env.project_images()}
    uploads = app_env.curator.customvision.stats.calls

    tick(at, *chosen)
    at.multiselect(key="retag_add").set_value(["product"])
    at.multiselect(key="retag_remove").set_value(["person"]).run()
    button(at, "Re-tag selected").click().run()
    assert at.success[0].value == "**Re-tag:** 2 retagged"

    after = app_env.project_images()
    assert {i.source_blob: i.id for i in after} == before  # the same images, none uploaded again
    assert all(i.tags == {"product"} for i in after)
    assert app_env.curator.customvision.stats.calls - uploads <= 4  # tag calls, not 2 uploads
    records = app_env.curator.records([app_env.curator.blob(n) for n in chosen])
    assert all(r.tags == ("product",) for r in records.values())


def test_larger_view_shows_the_full_frame_and_all_metadata(app_env, demo):
    at = app_env.open()
    name = good_names(at, demo)[0]
    blob = app_env.curator.blob(name)
    assert dialog(at) is None

    at.button(key=f"open:{name}").click().run()
    view = dialog(at)
    assert view is not None and view.proto.dialog.title == "Frame"
    assert len(view.image) == 1 and any(name in m.value for m in view.markdown)
    facts = view.table[0].value["value"].to_dict()
    assert facts["model name"] == blob.model_name and facts["model version"] == blob.model_version
    assert facts["etag"] == blob.etag and facts["file_ref"] == blob.file_ref
    assert facts["metadata: confidence"] == blob.metadata["confidence"]


def test_detection_project_pushes_untagged_and_says_why_tags_are_off(app_env_factory, demo):
    harness = app_env_factory(detection=True, tags=("person",))
    at = harness.open()
    assert at.multiselect(key="push_tags").disabled
    assert "object-detection project" in at.info[0].value and "pushed untagged" in at.info[0].value
    assert not [t for t in at.text_input if t.key == "new_tag"]

    chosen = good_names(at, demo)[:2]
    tick(at, *chosen)
    button(at, "Push selected").click().run()
    assert at.success[0].value == "**Push:** 2 pushed"
    images = harness.project_images()
    assert sorted(i.source_blob for i in images) == sorted(chosen) and all(not i.tags for i in images)


def test_capture_dates_are_offered_as_a_range(app_env):
    at = app_env.open()
    assert at.date_input(key="f_dates").value in ((), None, [])
    at.date_input(key="f_dates").set_value((date(2030, 1, 1), date(2030, 1, 2))).run()
    assert tile_names(at) == []
    assert "No blob matches these filters" in at.info[0].value


def test_refresh_lists_the_page_again_to_show_new_uploads(app_env_factory, stack):
    names = upload_frames(stack, "apprefresh", [jpeg(1000 + i, (160, 120)) for i in range(3)])
    harness = app_env_factory(mm_telemetry_storage_container="apprefresh")
    at = harness.open()
    assert sorted(tile_names(at)) == sorted(names)

    later = upload_frames(stack, "apprefresh", [jpeg(2000, (160, 120))], names=["99-2026-11-30-10-00-00.jpg.dec"])
    at.run()
    assert sorted(tile_names(at)) == sorted(names)  # the page's listing is kept: reruns list nothing
    button(at, "Refresh").click().run()
    assert sorted(tile_names(at)) == sorted(names + later)
    assert len(at.image) == 4
