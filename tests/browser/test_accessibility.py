"""WCAG 2.1 AA in a real browser: axe-core's WCAG 2 A/AA rules on every page of the app in its main states.

Each state is checked where a reviewer meets it; the test fails with every violation found, by rule and element.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Frame, Locator, Page, expect

from tests.browser.conftest import ALICE, MALLORY, SLOW, TILE, drawn, keep_offline, oidc_provider, open_review, sign_in
from tests.support.axe import wcag_violations

pytestmark = pytest.mark.browser


def sidebar_link(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()


def outline_of(locator: Locator) -> str:
    return locator.evaluate("(e) => { const s = getComputedStyle(e); return `${s.outlineStyle} ${s.outlineWidth}`; }")


class Audit:
    """The violations of each state checked, reported together at the end."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.found: dict[str, list] = {}

    def check(self, where: str, *, include: str | None = None) -> None:
        drawn(self.page)
        if include:
            expect(self.page.locator(include).first).to_be_visible()
        self.found[where] = wcag_violations(self.page, include=include)

    def check_frame(self, where: str, frame: Frame) -> None:
        self.found[where] = wcag_violations(frame)

    def assert_clean(self) -> None:
        report = [f"{where}:\n" + "\n".join(f"  {v}" for v in found) for where, found in self.found.items() if found]
        assert not report, "WCAG 2 A/AA violations:\n" + "\n".join(report)


def test_every_page_and_state_meets_wcag_2_1_aa(app_server, page, stack, demo, cv_faults):
    server, _, _ = app_server
    audit = Audit(page)
    page.goto(server.url)  # near-duplicates collapsed, as a reviewer first sees them
    expect(page.locator(f"{TILE} img").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("near-identical frames").first).to_be_visible()
    page.wait_for_function("() => window.__perceptTileKeys === true", timeout=SLOW)
    audit.check("Review: the gallery")
    # What a screen reader says of a thumbnail: the frame, its state, model version, confidence and capture time.
    alt = (
        r"^Frame [^,]+\.jpg\.dec, new, model \S+ version \S+, device confidence \d+%, "
        r"captured 2026-\d\d-\d\d \d\d:\d\d:\d\d, stands for [3-5] near-identical frames$"
    )
    expect(page.locator(TILE).first.locator("img")).to_have_attribute("alt", re.compile(alt))

    # The quality flags' badges and filter, the class balance panel open.
    page.get_by_text("Flag poor frames", exact=True).click()
    expect(page.get_by_role("button", name=re.compile(r"^Reject flagged \(\d+\)"))).to_be_visible(timeout=60_000)
    page.get_by_text("Class balance", exact=True).click()
    audit.check("Review: quality flags on, class balance open")

    # Focus is visible: on the tile the keyboard review moves to, and on the control Tab moves to from there.
    page.keyboard.press("ArrowRight")
    tile = page.locator(TILE).first
    expect(tile.locator('input[type="checkbox"]')).to_be_focused()
    assert outline_of(tile) == "solid 3px"
    page.keyboard.press("Tab")
    expect(tile.get_by_role("button", name="Larger view")).to_be_focused()
    assert outline_of(page.locator("*:focus")) == "solid 3px"

    page.get_by_role("button", name="Larger view").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("img").first).to_be_visible()
    audit.check("Review: a frame's larger view", include='[role="dialog"]')
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    sidebar_link(page, "Push untagged")
    page.get_by_role("button", name="Dry run").click()
    expect(page.get_by_text("Dry run finished")).to_be_visible()
    audit.check("Push untagged: dry-run results")

    # Custom Vision holds its answer to the first upload: the push is in progress while the page is checked.
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 8, "times": 1}])
    page.get_by_role("button", name="Push all untagged").click()
    confirm = page.get_by_role("dialog")
    audit.check("Push untagged: the confirmation", include='[role="dialog"]')
    confirm.get_by_role("button", name=re.compile(r"^Push [\d,]+ images?$")).click()
    expect(page.get_by_text(re.compile(r"^Pushing: "))).to_be_visible()
    audit.check("Push untagged: a push in progress")
    expect(page.get_by_text(re.compile(r"^Finished in "))).to_be_visible(timeout=120_000)
    audit.check("Push untagged: a finished push")

    sidebar_link(page, "Activity")
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ events"))).to_be_visible()
    audit.check("Activity with events")

    sidebar_link(page, "Export")
    audit.check("Export")

    sidebar_link(page, "Connections")
    page.get_by_role("button", name="Test connections").click()
    expect(page.get_by_text(re.compile(r"^Custom Vision: "))).to_be_visible()
    audit.check("Connections, tested")
    audit.assert_clean()


@pytest.fixture
def provider() -> str:
    with oidc_provider() as url:
        yield url


def test_the_sign_in_page_and_the_refusal_page_meet_wcag_2_1_aa(start_signed_app, provider, page):
    keep_offline(page.context)
    app = start_signed_app(provider, reviewers=ALICE.email)
    audit = Audit(page)
    page.goto(app.server.url)
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    audit.check("the sign-in page")
    sign_in(page, app.server.url, MALLORY)  # signed in, not a reviewer: the refusal page
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    audit.check("the refusal page")
    audit.assert_clean()


def test_the_annotator_of_an_object_detection_project_meets_wcag_2_1_aa(detection_app_server, page, stack, demo):
    server, _ = detection_app_server
    audit = Audit(page)
    open_review(page, server.url)
    page.get_by_role("button", name="Larger view").first.click()
    annotator = page.get_by_role("dialog").frame_locator("iframe").first
    expect(annotator.get_by_role("button", name="Complete")).to_be_visible(timeout=SLOW)
    expect(annotator.get_by_role("combobox", name="Class")).to_be_visible()  # named by the app, not the component
    audit.check("Review: the annotator dialog", include='[role="dialog"]')
    frame = next(f for f in page.frames if f != page.main_frame and f.locator("canvas").count())
    audit.check_frame("Review: inside the annotator", frame)
    audit.assert_clean()
