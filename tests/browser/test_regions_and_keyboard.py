"""Drawing boxes and reviewing by keyboard, in a real browser against `streamlit run app.py` on the test stack.

A box is dragged on the frame in the annotator, tagged and pushed; Custom Vision (through its SDK) then
holds the frame with that one region, where it was dragged. Three frames are picked and pushed with
nothing but key presses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from percept_core import Curator
from tests.browser.conftest import SLOW, TILE, drawn, open_review, project_images
from tests.support.disk_scan import REPO, scan, writable_areas
from tests.support.streamlit_server import StreamlitServer

pytestmark = pytest.mark.browser

TOLERANCE = 0.02  # of the image's size


def good_names(stack, demo) -> list[str]:
    """The demo's decryptable frames, in the order the gallery shows them (the container's listing order)."""
    return [b.name for b in Curator(stack.settings()).blobs() if b.name not in demo.bad.values()]


def test_a_box_dragged_on_the_frame_and_tagged_goes_up_with_it(
    detection_app_server, page, stack, demo, artifacts_dir, tmp_path_factory
):
    started = time.time()
    server, project_id = detection_app_server
    name = good_names(stack, demo)[0]
    open_review(page, server.url)
    expect(page.get_by_text("This is an object-detection project")).to_be_visible(timeout=SLOW)

    page.locator(f".st-key-open-{re.sub(r'[^a-zA-Z0-9_-]', '-', name)} button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(name, exact=True)).to_be_visible(timeout=SLOW)
    annotator = dialog.frame_locator("iframe").first
    canvas = annotator.locator("canvas").first
    expect(canvas).to_be_visible(timeout=SLOW)
    expect(annotator.get_by_role("button", name="Complete")).to_be_visible(timeout=SLOW)
    page.wait_for_function(
        "() => { const f = document.querySelector('[role=dialog] iframe'); return f && f.offsetHeight > 150; }"
    )
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 300

    # Drag from 20% / 30% of the frame to 60% / 75%: a box of 40% x 45%.
    start = (box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
    end = (box["x"] + 0.6 * box["width"], box["y"] + 0.75 * box["height"])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    annotator.locator("select").nth(1).select_option("product")  # the new box is selected: this tags it
    annotator.get_by_role("button", name="Complete").click()
    expect(dialog.get_by_text("Not in the project yet: it goes up with 1 box.")).to_be_visible(timeout=SLOW)
    expect(dialog.get_by_text(re.compile(r"^Box 1: product, left"))).to_be_visible(timeout=SLOW)
    page.screenshot(path=artifacts_dir / "1-box-drawn.png")

    dialog.get_by_role("button", name="Push with these boxes").click()
    expect(page.get_by_text(f"Pushed: {name} with 1 box.")).to_be_visible(timeout=SLOW)
    in_project = page.get_by_role("dialog").get_by_text("The frame is in the project with these boxes.")
    expect(in_project).to_be_visible(timeout=SLOW)
    page.screenshot(path=artifacts_dir / "2-box-pushed.png")

    [image] = project_images(stack, project_id)
    assert image.metadata["source_blob"] == name
    [region] = image.regions
    assert region.tag_name == "product"
    drawn = (0.2, 0.3, 0.4, 0.45)
    got = (region.left, region.top, region.width, region.height)
    assert all(abs(a - b) <= TOLERANCE for a, b in zip(got, drawn, strict=True)), (got, drawn)

    # The annotator had the decrypted frame in memory only: no file holds it, nor any image written meanwhile.
    page.context.close()
    server.stop()
    reader = Curator(stack.settings())
    findings = scan(
        plaintexts=[reader.decrypt(reader.blob(name))],
        roots=writable_areas([server.log_path.parent]),
        exclude=[tmp_path_factory.getbasetemp().parent, REPO / ".devstack"],
        images_newer_than=started,
    )
    assert findings == []


def test_three_frames_picked_and_pushed_with_key_presses_only(app_server, page, stack, demo, artifacts_dir):
    server, project_id, _ = app_server
    shown = [b.name for b in Curator(stack.settings()).blobs()]
    good = good_names(stack, demo)
    chosen = [good[0], good[2], good[3]]
    open_review(page, server.url)

    # Typing in a field is never a shortcut: "n", "a" and "p" would page, select the page and page back.
    new_tag = page.get_by_label("New tag", exact=True)
    new_tag.press_sequentially("nap")
    expect(new_tag).to_have_value("nap", timeout=SLOW)
    expect(page.get_by_text(re.compile(r"^0 selected"))).to_be_visible(timeout=SLOW)
    new_tag.blur()
    page.keyboard.press("a")
    everything = re.compile(rf"^{len(shown)} selected \({len(shown)} on this page\)")
    expect(page.get_by_text(everything)).to_be_visible(timeout=SLOW)
    # The caption comes before the tiles: the page is drawn once every tile shows the change (a key pressed
    # earlier would send the tiles' old boxes back, as a reviewer's click on a half-drawn page would).
    expect(page.locator(f"{TILE} input[type=checkbox]:not(:checked)")).to_have_count(0, timeout=SLOW)
    page.keyboard.press("Shift+A")
    expect(page.get_by_text(re.compile(r"^0 selected"))).to_be_visible(timeout=SLOW)
    expect(page.locator(f"{TILE} input[type=checkbox]:checked")).to_have_count(0, timeout=SLOW)
    drawn(page)

    focus = -1
    for count, name in enumerate(chosen, 1):
        target = shown.index(name)
        for _ in range(target - focus if focus >= 0 else target + 1):
            page.keyboard.press("j")
        focus = target
        expect(page.get_by_label(name, exact=True)).to_be_focused(timeout=SLOW)
        page.keyboard.press("x")
        expect(page.get_by_label(name, exact=True)).to_be_checked(timeout=SLOW)
        expect(page.get_by_text(re.compile(rf"^{count} selected \({count} on this page\)"))).to_be_visible(timeout=SLOW)
        drawn(page)
        if count == 2:  # the larger view opens on the focused tile; Escape closes it for good
            page.keyboard.press("o")
            expect(page.get_by_role("dialog").get_by_text(name, exact=True)).to_be_visible(timeout=SLOW)
            page.keyboard.press("Escape")
            expect(page.get_by_role("dialog")).to_have_count(0, timeout=SLOW)
            drawn(page)  # closing the larger view reruns the page
    # The picks since reran the page: the larger view stayed closed.
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=SLOW)

    # "?" lists the shortcuts.
    page.keyboard.press("?")
    expect(page.get_by_role("dialog").get_by_text("push the selection")).to_be_visible(timeout=SLOW)
    page.screenshot(path=artifacts_dir / "1-shortcuts.png")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=SLOW)
    drawn(page)

    page.keyboard.press("u")
    expect(page.get_by_text("Push: 3 pushed")).to_be_visible(timeout=SLOW)
    drawn(page)
    page.screenshot(path=artifacts_dir / "2-pushed-by-keyboard.png", full_page=True)
    sources = sorted(image.metadata["source_blob"] for image in project_images(stack, project_id))
    assert sources == sorted(chosen)

    # And one more, rejected: the focus stays where it was, "j" goes on to the next tile.
    page.keyboard.press("j")
    after = shown[shown.index(chosen[-1]) + 1]
    expect(page.get_by_label(after, exact=True)).to_be_focused(timeout=SLOW)
    page.keyboard.press("x")
    expect(page.get_by_text(re.compile(r"^1 selected"))).to_be_visible(timeout=SLOW)
    page.keyboard.press("d")
    expect(page.get_by_text("Reject: 1 rejected")).to_be_visible(timeout=SLOW)


CAPTION_SHOWS = "(start) => [...document.querySelectorAll('p')].some((p) => p.textContent.startsWith(start))"


def test_keys_pressed_while_the_app_runs_pick_what_the_reviewer_asked(app_server, page, stack):
    """A reviewer does not wait for the app. Select the page and press another key as soon as the caption counts
    the new selection: the tiles, drawn after it, are still being drawn, the key cuts that run short on the
    server, and the browser sends the tiles' old ticks (none) back with it. Every frame stays picked: old ticks
    are not the reviewer's changes (Streamlit calls their on_change after a run cut short). Then clear and
    press a key the same way: the selection stays empty. Ten times over, as a reviewer who knows the keys goes."""
    server, _, _ = app_server
    everything = len(list(Curator(stack.settings()).blobs()))
    open_review(page, server.url)
    for _ in range(10):
        for key, selected in (("a", everything), ("Shift+A", 0)):
            page.keyboard.press(key)
            # The caption is drawn before the tiles: press "?" as soon as it shows, with the run that `key` started
            # still going on (checked every frame: Playwright's own waits poll too slowly to catch it)
            page.wait_for_function(CAPTION_SHOWS, arg=f"{selected} selected (", polling="raf", timeout=SLOW)
            page.keyboard.press("?")
            expect(page.get_by_role("dialog").get_by_text("push the selection")).to_be_visible(timeout=SLOW)
            page.keyboard.press("Escape")
            drawn(page)
            expect(page.get_by_text(re.compile(rf"^{selected} selected \("))).to_be_visible(timeout=SLOW)
            expect(page.locator(f"{TILE} input[type=checkbox]:checked")).to_have_count(selected, timeout=SLOW)


KEYS_CONTAINER = "keyspaging"


@pytest.fixture
def two_page_app_server(stack, tmp_path) -> Iterator[tuple[StreamlitServer, list[str]]]:
    """The app on a container of 50 small frames, one more page than the 48 tiles of the first; (server, names
    in the order the gallery shows them)."""
    from azure.storage.blob import BlobServiceClient

    from tests.support.frames import jpeg, upload_frames

    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    if not service.get_container_client(KEYS_CONTAINER).exists():
        upload_frames(stack, KEYS_CONTAINER, [jpeg(3000 + i, (160, 120)) for i in range(50)])
    names = [b.name for b in Curator(stack.settings(mm_telemetry_storage_container=KEYS_CONTAINER)).blobs()]
    assert len(names) == 50
    env = stack.environment(
        mm_telemetry_storage_container=KEYS_CONTAINER,
        custom_vision_project_id=stack.new_project("browser keys", tags=("person",)),
        percept_ledger_path=str(tmp_path / "ledger" / "ledger.sqlite"),
    )
    server = StreamlitServer.start(env, workdir=tmp_path / "app")
    try:
        yield server, names
    finally:
        server.stop()


def test_arrows_k_space_enter_n_and_p_do_what_the_shortcut_list_says(two_page_app_server, page):
    """Each key is pressed once the previous key's effect shows on the page."""
    server, names = two_page_app_server
    columns = 6  # tiles a row: ↓ and ↑ move by a row
    open_review(page, server.url)
    expect(page.get_by_text(re.compile(r"^Page 1 · 48 blobs · more after it")).first).to_be_visible(timeout=SLOW)

    def focused(index: int) -> None:
        expect(page.get_by_label(names[index], exact=True)).to_be_focused(timeout=SLOW)

    page.keyboard.press("ArrowRight")  # nothing focused yet: the first tile
    focused(0)
    for key, index in (
        ("ArrowRight", 1),
        ("ArrowDown", 1 + columns),
        ("ArrowDown", 1 + 2 * columns),
        ("ArrowUp", 1 + columns),
        ("k", columns),
        ("ArrowLeft", columns - 1),
        ("j", columns),
    ):
        page.keyboard.press(key)
        focused(index)

    picked = names[columns]
    page.keyboard.press("Space")
    expect(page.get_by_label(picked, exact=True)).to_be_checked(timeout=SLOW)
    expect(page.get_by_text(re.compile(r"^1 selected \(1 on this page\)"))).to_be_visible(timeout=SLOW)
    drawn(page)
    focused(columns)
    page.keyboard.press("Space")  # again: unselected
    expect(page.get_by_label(picked, exact=True)).not_to_be_checked(timeout=SLOW)
    expect(page.get_by_text(re.compile(r"^0 selected"))).to_be_visible(timeout=SLOW)
    drawn(page)
    focused(columns)
    page.keyboard.press("Space")
    expect(page.get_by_text(re.compile(r"^1 selected \(1 on this page\)"))).to_be_visible(timeout=SLOW)
    drawn(page)

    focused(columns)
    page.keyboard.press("Enter")  # the focused tile's larger view
    expect(page.get_by_role("dialog").get_by_text(picked, exact=True)).to_be_visible(timeout=SLOW)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=SLOW)
    drawn(page)

    page.keyboard.press("n")  # the next page: the last two frames; the pick stays
    expect(page.get_by_text(re.compile(r"^Page 2 · 2 blobs · the last page")).first).to_be_visible(timeout=SLOW)
    expect(page.get_by_text(re.compile(r"^1 selected \(0 on this page\)"))).to_be_visible(timeout=SLOW)
    drawn(page)
    expect(page.locator(f"{TILE} input[type=checkbox]")).to_have_count(2, timeout=SLOW)
    for name in names[48:]:
        expect(page.get_by_label(name, exact=True)).to_be_visible(timeout=SLOW)

    page.keyboard.press("p")  # and back
    expect(page.get_by_text(re.compile(r"^Page 1 · 48 blobs · more after it")).first).to_be_visible(timeout=SLOW)
    drawn(page)
    expect(page.locator(f"{TILE} input[type=checkbox]")).to_have_count(48, timeout=SLOW)
    expect(page.get_by_label(picked, exact=True)).to_be_checked(timeout=SLOW)
    expect(page.get_by_text(re.compile(r"^1 selected \(1 on this page\)"))).to_be_visible(timeout=SLOW)


def test_the_tile_size_sets_the_tiles_a_row_for_eyes_and_keys_and_stays_for_the_session(two_page_app_server, page):
    server, names = two_page_app_server
    open_review(page, server.url)

    def tile_top(index: int) -> float:
        box = page.locator(f".st-key-tile-{re.sub(r'[^a-zA-Z0-9_-]', '-', names[index])}").bounding_box()
        assert box is not None
        return box["y"]

    def tiles_a_row() -> int:
        drawn(page)
        first = tile_top(0)
        return next(i for i in range(1, 12) if tile_top(i) > first + 1)

    assert tiles_a_row() == 6  # medium, until the reviewer chooses
    page.get_by_text("Large", exact=True).click()
    expect(page.locator(TILE)).to_have_count(48, timeout=SLOW)
    page.wait_for_function("() => window.__perceptTileColumns === 4", timeout=SLOW)
    assert tiles_a_row() == 4
    page.evaluate("() => document.activeElement.blur()")  # arrows on the size control move between its options
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label(names[0], exact=True)).to_be_focused(timeout=SLOW)
    page.keyboard.press("ArrowDown")  # a row down is 4 tiles now
    expect(page.get_by_label(names[4], exact=True)).to_be_focused(timeout=SLOW)

    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Activity").click()
    expect(page.get_by_role("heading", name="Activity", level=1)).to_be_visible(timeout=SLOW)
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Review").click()
    expect(page.locator(f"{TILE} img").first).to_be_visible(timeout=SLOW)
    assert tiles_a_row() == 4  # remembered for the session
    page.get_by_text("Small", exact=True).click()
    page.wait_for_function("() => window.__perceptTileColumns === 8", timeout=SLOW)
    assert tiles_a_row() == 8
