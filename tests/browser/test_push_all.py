"""Push all untagged in a real browser: one click counts and asks, Cancel pushes nothing, the confirmed push
pushes what the confirmation counted. Custom Vision is checked through its SDK, the ledger through its file."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from percept_core import Curator, Ledger
from tests.browser.conftest import drawn, project_images

pytestmark = pytest.mark.browser


def test_one_click_and_a_confirmation_push_all_untagged(app_server, page, stack, demo):
    server, project_id, ledger_path = app_server
    reader = Curator(stack.settings())  # the test's own view of the container
    good = {b.name for b in reader.blobs() if b.name not in demo.bad.values()}
    page.goto(f"{server.url}/push_untagged")
    expect(page.get_by_role("heading", name="Push untagged", level=1)).to_be_visible()

    # One click counts, and the confirmation says what it counted; Cancel closes it and nothing goes.
    page.get_by_role("button", name="Push all untagged").click()
    confirm = page.get_by_role("dialog")
    expect(confirm.get_by_text(f"Push {len(good)} images untagged")).to_be_visible(timeout=60_000)
    expect(confirm.get_by_text("Nothing is pushed twice")).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_have_count(0)
    drawn(page)
    assert project_images(stack, project_id) == []

    page.get_by_role("button", name="Push all untagged").click()
    confirm.get_by_role("button", name=f"Push {len(good)} images").click()
    expect(page.get_by_text(re.compile(rf"^Finished in .*: {len(good)} pushed"))).to_be_visible(timeout=120_000)

    images = {i.metadata["source_blob"]: i.id for i in project_images(stack, project_id)}
    assert set(images) == good  # exactly what the confirmation counted, each once
    pushed = {e.blob: e.image_id for e in Ledger(ledger_path).events(action="push") if e.outcome == "pushed"}
    assert pushed == images  # and the ledger records each by the id of its image
