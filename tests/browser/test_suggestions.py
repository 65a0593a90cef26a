"""Model-assisted review in a real browser: the trained project's suggestions on the tiles, accepted for the page
with one click, pushed; Custom Vision (through its SDK) then holds exactly the accepted tags."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from azure.cognitiveservices.vision.customvision.training.models import Region
from playwright.sync_api import expect

from tests.browser.conftest import SLOW, TILE, drawn, project_images
from tests.support.frames import upload_frames
from tests.support.streamlit_server import StreamlitServer
from tests.support.trained import BLUE, BOX, GREEN, RED, frame, train, upload_training_images

pytestmark = pytest.mark.browser


def app_reviewing(stack, tmp_path, project_id: str, plaintexts: list[bytes]) -> tuple[list[str], StreamlitServer]:
    """The app on `project_id`, reviewing a container of its own holding these frames an hour apart (no bursts);
    (the blob names in order, the server)."""
    start = datetime(2026, 11, 20, 6, 0, 0)
    wanted = [f"{30 + i}-{start + timedelta(hours=i):%Y-%m-%d-%H-%M-%S}.jpg.dec" for i in range(len(plaintexts))]
    container = f"suggest{secrets.token_hex(3)}"
    names = upload_frames(stack, container, plaintexts, names=wanted)
    env = stack.environment(
        mm_telemetry_storage_container=container,
        custom_vision_project_id=project_id,
        percept_ledger_path=str(tmp_path / "ledger" / "ledger.sqlite"),
    )
    return names, StreamlitServer.start(env, workdir=tmp_path / "app")


@pytest.fixture
def trained_app(stack, tmp_path) -> Iterator[tuple[StreamlitServer, str, dict[str, str]]]:
    """The app on a project trained on red frames tagged person and blue ones tagged product, reviewing a container
    of 3 red, 2 blue and 1 green frame, hours apart (no bursts); (server, project id, blob name -> colour)."""
    project_id = stack.new_project("browser suggestions", tags=("person", "product"))
    tags = {t.name: t.id for t in stack.trainer().get_tags(project_id)}
    upload_training_images(stack, project_id, [frame(RED, s) for s in range(5)], tag_ids=[tags["person"]])
    upload_training_images(stack, project_id, [frame(BLUE, s) for s in range(5)], tag_ids=[tags["product"]])
    train(stack, project_id)
    colours = ["red", "red", "red", "blue", "blue", "green"]
    values = {"red": RED, "blue": BLUE, "green": GREEN}
    names, server = app_reviewing(
        stack, tmp_path, project_id, [frame(values[c], 500 + i) for i, c in enumerate(colours)]
    )
    try:
        yield server, project_id, dict(zip(names, colours, strict=True))
    finally:
        server.stop()


def test_a_page_of_suggestions_accepted_and_pushed_lands_with_exactly_those_tags(trained_app, page, stack):
    server, project_id, colours = trained_app
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible(timeout=SLOW)
    expect(page.locator(f"{TILE} img")).to_have_count(6, timeout=60_000)

    page.get_by_text("Suggest from the model", exact=True).click()
    # Red and blue frames are like the trained ones; the green one is not, and its even odds stay hidden.
    expect(
        page.get_by_text(re.compile(r"^5 of 6 frames not in the project have a suggestion at or above 0\.60"))
    ).to_be_visible(timeout=SLOW)
    for name, colour in colours.items():
        tile = page.locator(f"{TILE}").filter(has=page.get_by_label(name, exact=True))
        if colour == "green":
            expect(tile.get_by_text("Suggested:")).to_have_count(0)
        else:
            tag = "person" if colour == "red" else "product"
            expect(tile.get_by_text(re.compile(rf"Suggested: {tag} \d+%$"))).to_be_visible()
            expect(tile.locator("img")).to_have_attribute("alt", re.compile(rf"the model suggests {tag} \d+%$"))
    assert stack.trainer().get_untagged_image_count(project_id) == 0  # quick tests add nothing to the project

    # One key accepts the focused tile's suggestion, another the page's.
    page.wait_for_function("() => window.__perceptTileKeys === true && window.__streamlitShortcutsInitialized")
    first = next(iter(colours))
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label(first, exact=True)).to_be_focused()
    page.keyboard.press("s")
    expect(
        page.get_by_text(re.compile(r"^1 selected \(1 on this page\) · push untagged · 1 with the tags"))
    ).to_be_visible()
    page.keyboard.press("Shift+S")
    expect(
        page.get_by_text(re.compile(r"^5 selected \(5 on this page\) · push untagged · 5 with the tags"))
    ).to_be_visible()
    expect(page.get_by_text(re.compile(r"Accepted: "))).to_have_count(5)
    drawn(page)  # the run that drew the caption is over: the button clicked is the one it drew
    page.get_by_role("button", name="Push selected").click()
    expect(page.get_by_text("Push: 5 pushed")).to_be_visible(timeout=SLOW)
    # What is in the project is no longer offered: only the green frame is left, without a suggestion.
    expect(page.get_by_text(re.compile(r"^0 of 1 frames not in the project have a suggestion"))).to_be_visible()
    expect(page.get_by_role("button", name="Accept suggestion")).to_have_count(0)

    pushed = {
        image.metadata["source_blob"]: {t.tag_name for t in image.tags or []}
        for image in project_images(stack, project_id)
        if image.metadata and "source_blob" in image.metadata
    }
    expected = {name: {"person" if c == "red" else "product"} for name, c in colours.items() if c != "green"}
    assert pushed == expected

    # Activity counts the predictions made: one a frame of the page, the cache answering every rerun since.
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Activity").click()
    predictions = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text("Predictions (30 days)"))
    expect(predictions.locator('[data-testid="stMetricValue"]')).to_have_text("6", timeout=SLOW)


def test_suggested_boxes_accepted_for_the_page_go_up_as_the_frames_regions(stack, page, tmp_path):
    """An object-detection project trained on 15 red frames (the least it trains on) with one box: the model
    suggests that box for other red frames; accepted, they become the frames' boxes in progress and go up as their
    regions."""
    project_id = stack.new_project("browser suggested boxes", detection=True, tags=("person",))
    [tag] = stack.trainer().get_tags(project_id)
    region = Region(tag_id=tag.id, left=BOX[0], top=BOX[1], width=BOX[2], height=BOX[3])
    upload_training_images(stack, project_id, [frame(RED, s) for s in range(15)], regions=[region])
    train(stack, project_id)
    names, server = app_reviewing(stack, tmp_path, project_id, [frame(RED, 700 + i) for i in range(2)])
    try:
        page.goto(server.url)
        expect(page.locator(f"{TILE} img")).to_have_count(2, timeout=60_000)
        page.get_by_text("Suggest from the model", exact=True).click()
        expect(page.get_by_text(re.compile(r"Suggested: 1 box: person \d+%$"))).to_have_count(2, timeout=SLOW)
        page.get_by_role("button", name="Accept the page's suggestions").click()
        expect(
            page.get_by_text(re.compile(r"^2 selected \(2 on this page\) · push untagged · 2 with boxes"))
        ).to_be_visible()
        drawn(page)  # the run that drew the caption is over: the button clicked is the one it drew
        page.get_by_role("button", name="Push selected").click()
        expect(page.get_by_text("Push: 2 pushed")).to_be_visible(timeout=SLOW)
    finally:
        server.stop()

    pushed = {
        image.metadata["source_blob"]: [(r.tag_name, r.left, r.top, r.width, r.height) for r in image.regions or []]
        for image in project_images(stack, project_id)
        if image.metadata and "source_blob" in image.metadata
    }
    assert set(pushed) == set(names)
    for regions in pushed.values():
        [(tag_name, *box)] = regions
        assert tag_name == "person" and box == pytest.approx(BOX, abs=0.01)
