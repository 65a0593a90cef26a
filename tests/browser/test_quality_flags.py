"""Quality flags in a real browser: the demo's spoiled frames (and only they) get badges, the page narrows to them,
and "Reject flagged" rejects exactly them after a confirmation that counts them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from percept_core import Ledger
from tests.browser.conftest import SLOW, TILE, drawn, show_every_frame

pytestmark = pytest.mark.browser


def test_spoiled_frames_are_flagged_shown_alone_and_rejected_together(app_server, page, demo):
    server, _, ledger_path = app_server
    degraded = demo.degraded  # blob name -> the flag the seeder spoiled it to earn
    assert len(set(degraded.values())) == 3  # one of each: blurred, too dark, overexposed
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible(timeout=SLOW)
    show_every_frame(page)

    page.get_by_text("Flag poor frames", exact=True).click()
    expect(page.get_by_role("button", name=f"Reject flagged ({len(degraded)})…")).to_be_visible(timeout=60_000)
    any_flag = page.get_by_text(re.compile(r"\b(Blurred|Too dark|Overexposed|Low information)$"))
    badges = page.locator(TILE).filter(has=any_flag)
    for name, flag in degraded.items():
        tile = page.locator(f".st-key-tile-{re.sub(r'[^a-zA-Z0-9_-]', '-', name)}")
        expect(tile.get_by_text(re.compile(rf"\b{flag.label}$"))).to_be_visible()  # after its icon
        expect(tile.locator("img")).to_have_attribute("alt", re.compile(f"flagged {flag.label.lower()}$"))
    expect(badges).to_have_count(len(degraded))  # nothing else is flagged

    only = page.get_by_label("Show only frames flagged")
    only.click()
    for flag in sorted({f.label for f in degraded.values()}):
        page.get_by_role("option", name=flag).click()
    page.keyboard.press("Escape")
    expect(page.get_by_text(f"Showing the {len(degraded)} of ")).to_be_visible()
    drawn(page)
    expect(page.locator(TILE)).to_have_count(len(degraded))

    page.get_by_role("button", name=f"Reject flagged ({len(degraded)})…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Reject the {len(degraded)} flagged frames of this page?")).to_be_visible()
    dialog.get_by_role("button", name=f"Reject {len(degraded)} frames").click()
    expect(page.get_by_text(re.compile(rf"Reject flagged: {len(degraded)} rejected"))).to_be_visible(timeout=SLOW)

    assert {e.blob for e in Ledger(ledger_path).events(action="reject")} == set(degraded)
