"""Browser fixtures: the app as `make run` serves it (a subprocess on the test stack) and headless Chromium."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from oidc_provider_mock import User, run_server_in_thread
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from devstack.servers import free_port
from tests.support.chromium import launch_chromium
from tests.support.streamlit_server import StreamlitServer

# What the page shows when a browser test fails, in a few lines under its traceback (Playwright's own message
# is the whole page's accessibility tree, hundreds of lines that logs cut short): what a reviewer would see.
_PAGE_SUMMARY_JS = """() => {
  const texts = (selector) => [...document.querySelectorAll(selector)]
    .map((e) => e.innerText.replace(/\\s+/g, ' ').trim()).filter(Boolean);
  const active = document.activeElement;
  return {
    selection: texts('[data-testid="stCaptionContainer"]').filter((t) => / selected \\(/.test(t)),
    alerts: texts('[data-testid="stAlert"]').filter((t) => !t.startsWith('broken_image')),
    progress: texts('[data-testid="stProgress"]'),
    exceptions: texts('[data-testid="stException"]'),
    dialogs: texts('[role="dialog"]').map((t) => t.slice(0, 120)),
    running: !!document.querySelector('[data-testid="stStatusWidget"]'),
    focused: active && `${active.tagName} ${active.getAttribute('aria-label') || active.innerText}`.slice(0, 80),
  };
}"""


TILE = '[class*="st-key-tile-"]'
SLOW = 30_000  # ms an assertion waits for the app: a 2-core CI machine may be busy with other work


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page")
        if page is not None and not page.is_closed():
            try:
                summary = page.evaluate(_PAGE_SUMMARY_JS)
            except Exception as exc:  # the page may be gone with the failure
                summary = {"unavailable": str(exc).splitlines()[0]}
            report.sections.append(("the page at the failure", "\n".join(f"{k}: {v}" for k, v in summary.items())))
        values = [v for value in item.funcargs.values() for v in (value if isinstance(value, tuple) else (value,))]
        for server in (v for v in values if isinstance(v, StreamlitServer)):
            # Less the deprecation notice streamlit-shortcuts' components.html earns on every run.
            lines = [ln for ln in server.log_text().splitlines() if ln.strip() and "components.v1.html" not in ln]
            report.sections.append(("the app's log, last lines", "\n".join(lines[-15:])))
    return report


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
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


@pytest.fixture
def detection_app_server(stack, demo, tmp_path) -> Iterator[tuple[StreamlitServer, str]]:
    """The app on a fresh object-detection project with the tags person and product; (server, project id)."""
    project_id = stack.new_project("browser boxes", detection=True, tags=("person", "product"))
    env = stack.environment(
        custom_vision_project_id=project_id, percept_ledger_path=str(tmp_path / "ledger" / "ledger.sqlite")
    )
    server = StreamlitServer.start(env, workdir=tmp_path / "app")
    try:
        yield server, project_id
    finally:
        server.stop()


# -- sign-in: a local OpenID Connect provider and the app with [auth] in a secrets file of its own ------------


@dataclass(frozen=True)
class Person:
    """Someone the local provider can sign in: `sub` labels their button on its authorization page. Their ID
    token carries `oid` and `tid` as Entra ID's does (the provider passes claims it does not know through), and
    `email_verified` as an OpenID Connect provider that verified the address does."""

    sub: str
    email: str | None
    name: str
    oid: str | None = None
    tid: str | None = None
    email_verified: bool = True

    @property
    def user(self) -> User:
        claims: dict[str, object] = {"name": self.name}
        if self.email:
            claims |= {"email": self.email, "email_verified": self.email_verified}
        claims |= {k: v for k, v in (("oid", self.oid), ("tid", self.tid)) if v}
        return User(sub=self.sub, claims=claims)

    @property
    def account(self) -> str:
        """Their entry in percept_reviewers by account: `<tenant id>/<object id>`."""
        return f"{self.tid}/{self.oid}"


TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
# The reviewer's e-mail in mixed case: the allow-list is matched case-insensitively, the ledger records it lowered.
ALICE = Person("alice", "Alice@Contoso.example", "Alice Reviewer", "3d4c1a55-0d9b-4a8e-9d2f-6f1c2b7a0a11", TENANT)
MALLORY = Person(
    "mallory", "mallory@fabrikam.example", "Mallory Outsider", "9a7e6f10-3b1c-4f59-8c1e-2d0b5e4f7c22", OTHER_TENANT
)
NOBODY = Person("no-email", None, "No E-mail")  # an account whose ID token carries neither an e-mail nor an oid
# Claims a listed reviewer's e-mail, but the provider did not verify it: an address anyone can be given.
EVE = Person("eve", "bob@contoso.example", "Eve Unverified", "5b0e2d9c-7a61-4d3f-a8b4-0c9e1f2d3a33", TENANT, False)
PEOPLE = (ALICE, MALLORY, NOBODY, EVE)
CLIENT_ID = "percept-curator"


@contextmanager
def oidc_provider(people: Sequence[Person] = PEOPLE) -> Iterator[str]:
    """oidc-provider-mock on a free port of localhost; yields its base URL. Its authorization page signs in a
    person with one click on their `sub`; the ID token carries their claims for the scopes asked (Streamlit
    asks `openid email profile`, so `email` is in it)."""
    with run_server_in_thread(user_claims=[p.user for p in people]) as server:
        yield f"http://localhost:{server.server_port}"


@dataclass(frozen=True)
class AuthSecrets:
    """A Streamlit secrets file with [auth] for the local provider, and its secret values (for leak checks)."""

    path: Path
    client_secret: str
    cookie_secret: str

    @property
    def values(self) -> list[str]:
        return [self.client_secret, self.cookie_secret]


def write_auth_secrets(
    path: Path, *, app_url: str, provider_url: str, reviewers: str | None, auth: bool = True
) -> AuthSecrets:
    """The secrets.toml a shared deployment writes, for the local provider (plain HTTP on loopback)."""
    client_secret, cookie_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    lines = [] if reviewers is None else [f"percept_reviewers = {json.dumps(reviewers)}"]
    if auth:
        lines += [
            "[auth]",
            f"redirect_uri = {json.dumps(app_url + '/oauth2callback')}",
            f"cookie_secret = {json.dumps(cookie_secret)}",
            f"client_id = {json.dumps(CLIENT_ID)}",
            f"client_secret = {json.dumps(client_secret)}",
            f"server_metadata_url = {json.dumps(provider_url + '/.well-known/openid-configuration')}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return AuthSecrets(path, client_secret, cookie_secret)


def keep_offline(context: BrowserContext) -> None:
    """The provider's pages link a stylesheet on a CDN; there is no network, so fail that at once."""
    context.route(re.compile(r"^https?://(?!localhost[:/]|127\.0\.0\.1[:/])"), lambda route: route.abort())


def sign_in(page: Page, app_url: str, person: Person) -> None:
    """From the app's sign-in page, through the provider's authorization page, back to the app signed in."""
    page.goto(app_url)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()  # the provider's page
    page.get_by_role("button", name=person.sub, exact=True).click()
    page.wait_for_url(re.compile(rf"^{re.escape(app_url)}/"))


def sign_out(page: Page, app_url: str) -> None:
    """Sign out (the sidebar's button, or the refusal page's), confirm at the provider, and be back at sign-in."""
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="End session").click()  # the provider's end-session page asks
    page.wait_for_url(re.compile(rf"^{re.escape(app_url)}/"))
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()


@dataclass
class SignedApp:
    """The app with sign-in on: its server, secrets, project and ledger."""

    server: StreamlitServer
    auth: AuthSecrets
    project_id: str
    ledger_path: Path


@pytest.fixture
def start_signed_app(stack, demo, tmp_path) -> Iterator[Callable[..., SignedApp]]:
    """Start the app as a shared deployment: [auth] for the local provider and `reviewers` in its secrets
    file (outside the app's working folder), a fresh project and ledger; stopped after the test."""
    started: list[StreamlitServer] = []

    def start(provider_url: str, *, reviewers: str | None, name: str = "app", secrets_text: str | None = None):
        project_id = stack.new_project("sign-in", tags=("person", "product"))
        ledger_path = tmp_path / name / "ledger" / "ledger.sqlite"
        port = free_port()
        app_url = f"http://127.0.0.1:{port}"
        secrets_path = tmp_path / name / "secrets" / "secrets.toml"
        auth = write_auth_secrets(secrets_path, app_url=app_url, provider_url=provider_url, reviewers=reviewers)
        if secrets_text is not None:
            auth.path.write_text(secrets_text, encoding="utf-8")
        env = stack.environment(custom_vision_project_id=project_id, percept_ledger_path=str(ledger_path))
        server = StreamlitServer.start(env, workdir=tmp_path / name / "cwd", secrets_file=auth.path, port=port)
        started.append(server)
        assert server.url == app_url
        return SignedApp(server, auth, project_id, ledger_path)

    yield start
    for server in started:
        server.stop()


def project_images(stack, project_id: str) -> list:
    """Every image of the project (up to 256 tagged and 256 untagged), as the Custom Vision SDK returns them."""
    trainer = stack.trainer()
    return [
        image
        for status in ("Tagged", "Untagged")
        for image in trainer.get_images(project_id, tagging_status=status, take=256)
    ]


def drawn(page, timeout: float = 30_000) -> None:
    """Wait until the page shows the app's last run whole: Streamlit marks what an unfinished run has not
    drawn again `data-stale`, as a reviewer sees it greyed out. After an action the tiles' checkboxes are new
    elements (their key follows the selection's generation), and the old ones stay, stale, until then."""
    from playwright.sync_api import expect

    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout)


def show_every_frame(page) -> None:
    """Turn off burst collapsing (on by default), for tests about single frames."""
    from playwright.sync_api import expect

    toggle = page.get_by_label("Collapse near-duplicates", exact=True)
    expect(toggle).to_be_attached(timeout=60_000)
    if toggle.is_checked():
        page.get_by_text("Collapse near-duplicates", exact=True).click()
    expect(toggle).not_to_be_checked(timeout=60_000)
    # The rerun is over once the app has drawn what depends on the toggle: this checkbox is off without it,
    # and no tile stands for a burst any more.
    expect(page.get_by_label("Push every frame of a burst", exact=True)).to_be_disabled(timeout=60_000)
    expect(page.get_by_text("near-identical frames")).to_have_count(0, timeout=60_000)
    drawn(page, timeout=60_000)  # and the tiles of the run before it (keyed by another generation) are gone


def open_review(page: Page, url: str) -> None:
    """The Review page with every frame a tile of its own, its thumbnails shown and the keyboard review ready."""
    page.goto(url)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible(timeout=SLOW)
    show_every_frame(page)
    expect(page.locator(f"{TILE} img").first).to_be_visible(timeout=60_000)
    page.wait_for_function(
        "() => window.__perceptTileKeys === true && window.__streamlitShortcutsInitialized", timeout=SLOW
    )
