"""A reviewer's session in a real browser against `streamlit run app.py` on the test stack.

Filter, pick three frames, create a tag, push them with it; then push all the rest untagged; look at
every page. Custom Vision is checked through its SDK, and afterwards no decrypted frame is on disk.
"""

from __future__ import annotations

import re
import secrets
import time

import pytest
from playwright.sync_api import Page, expect

from percept_core import Curator, Ledger
from percept_core.ledger import default_actor
from tests.browser.conftest import drawn, project_images, show_every_frame
from tests.support.disk_scan import REPO, scan, writable_areas

pytestmark = pytest.mark.browser


def sidebar_link(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()


def metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def images_by_tag(stack, project_id: str) -> dict[str, set[str]]:
    """source blob -> its tags, for every image of the project."""
    return {i.metadata["source_blob"]: {t.tag_name for t in i.tags or []} for i in project_images(stack, project_id)}


def test_review_push_with_a_new_tag_then_push_all_untagged(
    app_server, page, stack, demo, artifacts_dir, tmp_path_factory
):
    started = time.time()
    server, project_id, ledger_path = app_server
    trainer = stack.trainer()
    reader = Curator(stack.settings())  # the test's own view of the container, for names and plaintexts
    everything = list(reader.blobs())
    good = [b for b in everything if b.name not in demo.bad.values()]
    shelf = [b.name for b in good if b.model_name == "shelf-monitor"]

    # Review: the first page, then a filter on the model.
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
    expect(page.get_by_text(re.compile(rf"^Page 1 · {len(everything)} blobs")).first).to_be_visible()
    model = page.get_by_label("Model", exact=True)
    model.click()
    model.fill("shelf-monitor")
    model.press("Enter")
    model.press("Escape")
    shown = len(shelf) + 1  # the frames and the blob of the unknown version 9.9
    expect(page.get_by_text(re.compile(rf"^Page 1 · {shown} blobs")).first).to_be_visible()
    chosen = shelf[:3]

    for count, name in enumerate(chosen, start=1):
        page.get_by_text(name, exact=True).click()
        expect(page.get_by_label(name, exact=True)).to_be_checked()
        # The reviewer sees the count follow each pick (the app's answer to that click) before the next one.
        expect(page.get_by_text(re.compile(rf"^{count} selected \({count} on this page\)"))).to_be_visible()

    tag = f"forklift-{secrets.token_hex(2)}"
    page.get_by_label("New tag", exact=True).fill(tag)
    page.get_by_role("button", name="Add tag").click()
    expect(page.get_by_text(f"Tag '{tag}' created and chosen.")).to_be_visible()
    expect(page.get_by_text(f"push with tags {tag}")).to_be_visible()

    page.get_by_role("button", name="Push selected").click()
    expect(page.get_by_text("Push: 3 pushed")).to_be_visible()
    drawn(page)  # the tiles drawn before the push go once the page is drawn again
    for name in chosen:
        expect(page.get_by_label(name, exact=True)).not_to_be_checked()
    page.screenshot(path=artifacts_dir / "1-review.png", full_page=True)

    assert images_by_tag(stack, project_id) == {name: {tag} for name in chosen}
    assert {t.name: t.image_count for t in trainer.get_tags(project_id)}[tag] == 3

    # A larger view of one frame.
    page.get_by_role("button", name="Larger view").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("model version", exact=True)).to_be_visible()
    expect(dialog.locator("img")).to_have_count(1)
    page.screenshot(path=artifacts_dir / "2-larger-view.png")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    # Push untagged: a dry run, a confirmation, a run to its end.
    sidebar_link(page, "Push untagged")
    page.get_by_role("button", name="Dry run").click()
    expect(page.get_by_text("Dry run finished")).to_be_visible()
    eligible = int(metric(page, "Eligible").replace(",", ""))
    assert eligible == len(good) - 3
    assert metric(page, "Already pushed") == "3" and metric(page, "Cannot decrypt") == "5"
    page.screenshot(path=artifacts_dir / "3-push-untagged-dry-run.png", full_page=True)

    page.get_by_role("button", name="Push all untagged").click()
    confirm = page.get_by_role("dialog")
    expect(confirm.get_by_text(f"Push {eligible} images untagged")).to_be_visible()
    confirm.get_by_role("button", name=f"Push {eligible} images").click()
    expect(page.get_by_text(re.compile(rf"^Finished in .*: {eligible} pushed"))).to_be_visible(timeout=120_000)
    expect(page.get_by_role("button", name="Download results (CSV)")).to_be_visible()
    page.screenshot(path=artifacts_dir / "4-push-untagged-finished.png", full_page=True)

    assert trainer.get_untagged_image_count(project_id) == eligible
    assert trainer.get_tagged_image_count(project_id) == 3
    # Local use (no [auth]): every push is recorded under the OS user, as the CLI records it.
    assert {e.actor for e in Ledger(ledger_path).events(action="push")} == {default_actor()}

    # Activity and Connections.
    sidebar_link(page, "Activity")
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ events"))).to_be_visible()
    expect(page.get_by_text("Untagged images")).to_be_visible()
    assert metric(page, "Untagged images") == str(eligible) and metric(page, "Tagged images") == "3"
    page.screenshot(path=artifacts_dir / "5-activity.png", full_page=True)

    sidebar_link(page, "Connections")
    page.get_by_role("button", name="Test connections").click()
    for service in ("Storage", "MM server", "Custom Vision"):
        expect(page.get_by_text(re.compile(rf"^{service}: "))).to_be_visible()
    assert stack.training_key not in page.content()
    page.screenshot(path=artifacts_dir / "6-connections.png", full_page=True)

    # Afterwards: no decrypted frame anywhere the app (or the browser) could have written one.
    page.context.close()
    server.stop()
    plaintexts = [reader.decrypt(b) for b in good]
    findings = scan(
        plaintexts=plaintexts,
        secrets=[stack.training_key, stack.mm_config.bootstrap_secret],
        roots=writable_areas([ledger_path.parent, server.log_path.parent]),
        # pytest's own scratch space (this run and earlier ones), and a `make devstack`'s persisted storage:
        # emulator data of another stack, ciphertext only, often gigabytes.
        exclude=[tmp_path_factory.getbasetemp().parent, REPO / ".devstack"],
        images_newer_than=started,
    )
    assert findings == []


def test_a_page_opened_by_its_url_on_a_fresh_server_has_the_whole_app_around_it(app_server, page, artifacts_dir):
    """With a pages/ folder beside app.py, Streamlit would run the page file alone; the app still wraps it."""
    server, _, _ = app_server
    page.goto(f"{server.url}/connections")
    expect(page.get_by_role("heading", name="Connections", level=1)).to_be_visible()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("Local devstack")).to_be_visible()
    expect(sidebar.get_by_text(f"Reviewer: {default_actor()}")).to_be_visible()  # local use: no sign-in
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    links = page.locator('[data-testid="stSidebarNav"]').get_by_role("link")
    titles = ("Review", "Push untagged", "Activity", "Export", "Connections")  # the app's navigation, not the folder's
    expect(links).to_have_text([re.compile(f"{title}$") for title in titles])
    page.get_by_role("button", name="Test connections").click()
    expect(page.get_by_text(re.compile(r"^Custom Vision: project "))).to_be_visible()
    page.screenshot(path=artifacts_dir / "connections-opened-by-url.png")


def until(condition, *, what: str, timeout: float = 30) -> None:
    """Poll `condition` (the test's own view of a service) until it holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # polling interval of a deadline-bounded wait, not a synchronisation


def test_a_push_goes_on_and_is_reported_when_the_reviewer_acts_meanwhile(app_server, page, stack, demo, cv_faults):
    """Streamlit stops a page's run as soon as the reviewer clicks anything: the push must not stop with it,
    must be reported, and must leave the frame picked meanwhile picked."""
    server, project_id, ledger_path = app_server
    reader = Curator(stack.settings())
    blobs = {b.name: b for b in reader.blobs()}
    good = [name for name in blobs if name not in demo.bad.values()]
    chosen, picked_meanwhile = good[:4], good[4]
    # Custom Vision stores the images at once and holds its answer to one upload 6 s: the push is in flight meanwhile.
    cv_faults([{"operation": "CreateImagesFromFiles", "kind": "slow", "delay": 6, "times": 1}])

    page.goto(server.url)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
    show_every_frame(page)
    for count, name in enumerate(chosen, 1):
        page.get_by_text(name, exact=True).click()
        expect(page.get_by_text(re.compile(rf"^{count} selected"))).to_be_visible()

    page.get_by_role("button", name="Push selected").click()
    expect(page.get_by_text(re.compile(r"^Pushing: \d+/4"))).to_be_visible()
    ledger = Ledger(ledger_path)
    keys = [blobs[name].key for name in chosen]

    def in_flight() -> bool:
        """The four frames reached Custom Vision, and an answer has not come back: the ledger still holds a frame
        as claimed, and has recorded fewer than four pushes."""
        records = ledger.records(keys, project_id)
        return "pushing" in {r.push_state for r in records.values()} and len(ledger.events(action="push")) < 4

    until(lambda: len(stack.emulator.images(project_id)) == 4, what="the uploads to reach Custom Vision")
    assert in_flight()
    page.get_by_text(picked_meanwhile, exact=True).click()
    # The app took the click (the caption, drawn by the server, counts the new pick with the four being pushed)
    # while the held upload was still unanswered.
    expect(page.get_by_text(re.compile(r"^5 selected \(5 on this page\)"))).to_be_visible(timeout=30_000)
    assert in_flight()

    expect(page.get_by_text("Push: 4 pushed")).to_be_visible(timeout=30_000)
    drawn(page)
    expect(page.get_by_text(re.compile(r"^1 selected \(1 on this page\)"))).to_be_visible()
    expect(page.get_by_label(picked_meanwhile, exact=True)).to_be_checked()
    for name in chosen:
        expect(page.get_by_label(name, exact=True)).not_to_be_checked()
    assert {r.push_state for r in ledger.records(keys, project_id).values()} == {"pushed"}
    sources = [image.metadata["source_blob"] for image in project_images(stack, project_id)]
    assert sorted(sources) == sorted(chosen)  # each once, and nothing of the frame picked meanwhile
