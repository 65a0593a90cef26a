"""The Review page's order: least sure first puts the demo's least confident frames on page 1, spread (AppTest)."""

from __future__ import annotations

from pages import _filters
from percept_core.queue import ReviewOrder
from tests.app.conftest import tile_names

PAGE_SIZE = 24  # the demo's 41 blobs make two pages, and page 1 takes a third frame of some version and day


def test_least_sure_first_shows_the_least_confident_frames_spread_and_pages_through_them(app_env, demo, monkeypatch):
    monkeypatch.setattr(_filters, "PAGE_SIZE", PAGE_SIZE)
    at = app_env.open()
    curator = app_env.curator
    blobs = {b.name: b for b in curator.blobs()}
    container_page = tile_names(at)
    assert len(container_page) == PAGE_SIZE
    assert any(sum(n in container_page for n in burst) > 1 for burst in demo.burst_names)  # what spreading avoids
    decrypted = curator.locker.decryptions

    order = at.selectbox(key=_filters.ORDER_KEY)
    assert order.options == ["Container order", "Least sure first"]
    order.set_value(ReviewOrder.UNCERTAINTY).run()
    assert not at.exception, [e.value for e in at.exception]
    page1 = tile_names(at)

    assert len(page1) == PAGE_SIZE and page1 != container_page
    confident = [b for b in blobs.values() if b.confidence is not None]
    assert page1[0] == min(confident, key=lambda b: (b.confidence, b.name)).name  # the least sure frame leads
    groups: dict[tuple, list] = {}
    for blob in confident:
        groups.setdefault((blob.model_name, blob.model_version, blob.captured_at.date()), []).append(blob)
    assert 1 < len(groups) <= PAGE_SIZE
    for group, members in groups.items():  # every model version and day has its least sure frame on page 1
        assert min(members, key=lambda b: (b.confidence, b.name)).name in page1, group
    for burst in demo.burst_names:  # and no burst has two frames on it
        assert sum(name in page1 for name in burst) <= 1, burst
    # Ordering read metadata only: the frames decrypted since are the new page's, for their thumbnails.
    cannot_be_read = {demo.bad["no-metadata"], demo.bad["unknown-version"]}
    new_on_page = set(page1) - set(container_page) - cannot_be_read
    assert curator.locker.decryptions == decrypted + len(new_on_page)

    at.button(key="top_next").click().run()
    assert not at.exception, [e.value for e in at.exception]
    page2 = tile_names(at)
    assert at.button(key="top_next").disabled  # the last page
    assert not set(page1) & set(page2)  # page 2 continues: nothing repeated, nothing left out
    assert sorted(page1 + page2) == sorted(blobs)
    at.button(key="top_prev").click().run()
    assert tile_names(at) == page1
