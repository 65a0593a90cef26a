"""Browser fixtures: the app as `make run` serves it (a subprocess on the test stack) and headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.streamlit_server import StreamlitServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def app_server(stack, demo, tmp_path) -> Iterator[tuple[StreamlitServer, str, object]]:
    """The app on a fresh Custom Vision project and a ledger of its own; yields (server, project id, ledger path)."""
    project_id = stack.new_project("browser", tags=("person", "product"))
    ledger_path = tmp_path / "ledger" / "ledger.sqlite"
    env = stack.environment(custom_vision_project_id=project_id, percept_ledger_path=str(ledger_path))
    server = StreamlitServer.start(env, workdir=tmp_path / "app")
    try:
        yield server, project_id, ledger_path
    finally:
        server.stop()
