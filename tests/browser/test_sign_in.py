"""A shared deployment: sign-in through OpenID Connect (a local provider standing in for Microsoft Entra ID)
and the reviewers' allow-list, in a real browser against `streamlit run app.py` with `[auth]` in its secrets.

The browser uses 127.0.0.1, the host written in `redirect_uri`: the login cookie belongs to that origin.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from playwright.sync_api import Page, expect
from streamlit.testing.v1 import AppTest

from devstack.servers import free_port
from pages._text import unescape
from percept_core import Curator, Ledger
from percept_core.ledger import default_actor
from tests.support.entra import AUTH, TENANT
from tests.support.frames import jpeg, upload_frames
from tests.support.streamlit_server import StreamlitServer

from .conftest import ALICE, EVE, MALLORY, NOBODY, drawn, keep_offline, oidc_provider, sign_in, sign_out

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
APP_PAGES = ("", "review", "push_untagged", "activity", "connections")  # every URL the app answers


@pytest.fixture
def provider() -> str:
    with oidc_provider() as url:
        yield url


@pytest.fixture
def offline_page(page: Page) -> Page:
    keep_offline(page.context)
    return page


def data_of(stack, project_id: str) -> list[str]:
    """What a visitor must not see: every blob name, the services' addresses, the project."""
    names = [b.name for b in Curator(stack.settings()).blobs()]
    settings = stack.settings()
    return [*names, settings.mm_server_url, settings.custom_vision_endpoint, project_id, "devstoreaccount1"]


def expect_nothing_but(page: Page, message: str | re.Pattern, data: list[str], *, buttons: set[str]) -> None:
    """The page shows `message` and these buttons only: no navigation, no sidebar, no image, none of `data`."""
    expect(page.get_by_text(message).first).to_be_visible()
    main = page.locator('[data-testid="stMain"]')
    for label in buttons:
        expect(main.get_by_role("button", name=label, exact=True)).to_be_visible()
    expect(main.get_by_role("button")).to_have_count(len(buttons))
    expect(page.locator('[data-testid="stSidebar"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    expect(page.locator("img")).to_have_count(0)
    html = page.content()
    shown = [item for item in data if item and item in html]
    assert shown == [], f"the page shows {shown}"


def test_an_allowed_reviewer_signs_in_pushes_as_themselves_and_signs_out(
    start_signed_app, provider, offline_page, stack, demo, artifacts_dir
):
    page = offline_page
    app = start_signed_app(provider, reviewers="bob@contoso.example, ALICE@CONTOSO.EXAMPLE")
    reviewer = ALICE.email.lower()

    page.goto(app.server.url)
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    page.screenshot(path=artifacts_dir / "1-sign-in.png")
    sign_in(page, app.server.url, ALICE)

    # In: the app, with the reviewer and a way out in the sidebar.
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(f"Signed in as {reviewer}")).to_be_visible()
    expect(sidebar.get_by_text(f"Reviewer: {reviewer}")).to_be_visible()
    expect(sidebar.get_by_role("button", name="Sign out")).to_be_visible()

    # A push, recorded under the reviewer's e-mail.
    frame = next(b.name for b in Curator(stack.settings()).blobs() if b.name not in demo.bad.values())
    page.get_by_text(frame, exact=True).click()
    expect(page.get_by_label(frame, exact=True)).to_be_checked()
    page.get_by_role("button", name="Push selected").click()
    expect(page.get_by_text("Push: 1 pushed")).to_be_visible()
    page.screenshot(path=artifacts_dir / "2-pushed.png", full_page=True)

    pushes = Ledger(app.ledger_path).events(action="push")
    assert [(e.blob, e.actor, e.outcome) for e in pushes] == [(frame, reviewer, "pushed")]
    assert [i.metadata["source_blob"] for i in stack.emulator.images(app.project_id)] == [frame]

    # The Activity page names them too.
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Activity").click()
    expect(page.get_by_role("heading", name="Activity", level=1)).to_be_visible()
    page.get_by_label("Who", exact=True).click()
    expect(page.get_by_role("option", name=reviewer)).to_be_visible()
    page.keyboard.press("Escape")

    # Out: the sign-in page, and it stays there (the identity cookie is gone).
    sign_out(page, app.server.url)
    expect(page.locator('[data-testid="stSidebar"]')).to_have_count(0)
    page.screenshot(path=artifacts_dir / "3-signed-out.png")
    for path in ("", "activity"):
        page.goto(f"{app.server.url}/{path}")
        expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="Activity")).to_have_count(0)
    assert len(Ledger(app.ledger_path).events(action="push")) == 1


def test_visitors_not_signed_in_get_the_sign_in_page_and_nothing_else(start_signed_app, provider, offline_page, stack):
    page = offline_page
    app = start_signed_app(provider, reviewers=ALICE.email)
    data = data_of(stack, app.project_id)
    for path in APP_PAGES:  # a bookmark of any page leads to the same sign-in page
        page.goto(f"{app.server.url}/{path}")
        expect_nothing_but(page, "Reviewers sign in with their organisation account", data, buttons={"Sign in"})
        expect(page.get_by_text("Page not found")).to_have_count(0)
    assert not app.ledger_path.exists()  # not even the ledger was opened


@pytest.mark.parametrize("person", [MALLORY, NOBODY], ids=["not-on-the-list", "no-e-mail-in-the-token"])
def test_a_signed_in_user_not_allowed_sees_nothing_and_can_do_nothing(
    start_signed_app, provider, offline_page, stack, person, artifacts_dir
):
    page = offline_page
    app = start_signed_app(provider, reviewers=f"{ALICE.email}, bob@contoso.example")
    data = data_of(stack, app.project_id)
    refusal = (
        f"{person.email} is not allowed to use this app."
        if person.email
        else "Your sign-in did not say which e-mail address is yours"
    )

    sign_in(page, app.server.url, person)
    expect_nothing_but(page, refusal, data, buttons={"Sign out"})
    page.screenshot(path=artifacts_dir / "refused.png")
    for path in APP_PAGES:  # no page of the app opens, whatever the URL
        page.goto(f"{app.server.url}/{path}")
        expect_nothing_but(page, refusal, data, buttons={"Sign out"})
    assert not app.ledger_path.exists()
    assert stack.emulator.images(app.project_id) == []
    assert "not in percept_reviewers" in app.server.log_text() or not person.email

    sign_out(page, app.server.url)
    expect_nothing_but(page, "Reviewers sign in with their organisation account", data, buttons={"Sign in"})


def test_with_no_reviewers_listed_everyone_is_refused_and_told_how_to_list_them(
    start_signed_app, provider, offline_page, stack, artifacts_dir
):
    page = offline_page
    app = start_signed_app(provider, reviewers=None)
    data = data_of(stack, app.project_id)
    sign_in(page, app.server.url, ALICE)
    expect_nothing_but(page, "No one is allowed to use this app yet.", data, buttons={"Sign out"})
    expect(page.get_by_text(f"You are signed in as {ALICE.email.lower()}")).to_be_visible()
    expect(page.get_by_text("percept_reviewers", exact=True).first).to_be_visible()
    page.screenshot(path=artifacts_dir / "no-reviewers.png")
    assert "percept_reviewers is empty" in app.server.log_text()
    assert not app.ledger_path.exists()


def test_secrets_that_cannot_be_read_let_no_one_in(start_signed_app, provider, offline_page, stack):
    """A typo in secrets.toml must not turn a shared deployment into an open one."""
    page = offline_page
    broken = f'percept_reviewers = "{ALICE.email}"\n[auth]\nredirect_uri = "http://127.0.0.1/oauth2callback\n'
    app = start_signed_app(provider, reviewers=ALICE.email, secrets_text=broken)
    data = data_of(stack, app.project_id)
    for path in ("", "connections"):
        page.goto(f"{app.server.url}/{path}")
        expect_nothing_but(page, "Streamlit's secrets cannot be read", data, buttons=set())
    assert "secrets cannot be read" in app.server.log_text()
    assert not app.ledger_path.exists()


def test_a_reviewer_listed_by_tenant_and_object_id_is_let_in_and_recorded_by_their_verified_e_mail(
    start_signed_app, provider, offline_page, stack
):
    page = offline_page
    app = start_signed_app(provider, reviewers=f"bob@contoso.example, {ALICE.account}")  # no e-mail of Alice's
    sign_in(page, app.server.url, ALICE)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(f"Signed in as {ALICE.email.lower()}")).to_be_visible()  # verified: the ledger's name


def test_a_listed_e_mail_the_provider_did_not_verify_lets_no_one_in(start_signed_app, provider, offline_page, stack):
    page = offline_page
    app = start_signed_app(provider, reviewers=f"{EVE.email}, {ALICE.account}")
    data = data_of(stack, app.project_id)
    sign_in(page, app.server.url, EVE)
    expect_nothing_but(page, f"Your sign-in did not prove that {EVE.email} is yours", data, buttons={"Sign out"})
    assert "does not prove the e-mail" in app.server.log_text()
    assert not app.ledger_path.exists()


def test_a_reviewer_taken_off_the_list_while_the_push_dialog_is_open_pushes_nothing(
    start_signed_app, provider, offline_page, stack, artifacts_dir
):
    """A dialog reruns on its own, without app.py's gate; the list is read again at the click, no restart."""
    page = offline_page
    app = start_signed_app(provider, reviewers=ALICE.email)
    sign_in(page, app.server.url, ALICE)
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Push untagged").click()
    page.get_by_role("button", name="Dry run").click()
    expect(page.get_by_role("heading", name="Dry run")).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Push all untagged").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name=re.compile(r"^Push [\d,]+ images?$"))).to_be_visible()
    # The reviewer reads the dialog once the run that opened it is over, then is taken off the list.
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
    drawn(page)

    secrets_text = app.auth.path.read_text(encoding="utf-8")
    app.auth.path.write_text(
        secrets_text.replace(f'percept_reviewers = "{ALICE.email}"', 'percept_reviewers = "bob@contoso.example"'),
        encoding="utf-8",
    )
    dialog.get_by_role("button", name=re.compile(r"^Push [\d,]+ images?$")).click()

    expect(page.get_by_text(f"{ALICE.email.lower()} is not allowed to use this app.")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.screenshot(path=artifacts_dir / "taken-off.png")
    assert stack.emulator.images(app.project_id) == []
    assert Ledger(app.ledger_path).events(action="push") == []


class _Hits(BaseHTTPRequestHandler):
    """Counts every request (a browser that renders a name as Markdown or HTML loads the image it names)."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


def test_blob_names_that_are_markdown_or_html_show_as_written_and_load_nothing(page, stack, demo, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    names = [
        f"![x](http://127.0.0.1:{port}/markdown.png).jpg.dec",
        f'<img src="http://127.0.0.1:{port}/html.png">.jpg.dec',
        "**bold** :red[red] $x$ _it_.jpg.dec",
    ]
    container = f"markdown{port}"
    upload_frames(stack, container, [jpeg(6000 + i, (160, 120)) for i in range(len(names))], names=names)
    env = stack.environment(
        custom_vision_project_id=stack.new_project("markdown"),
        percept_ledger_path=str(tmp_path / "ledger.sqlite"),
        mm_telemetry_storage_container=container,
    )
    app = StreamlitServer.start(env, workdir=tmp_path / "app")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(app.url)
        expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
        for name in names:
            expect(page.get_by_text(name, exact=True)).to_be_visible()  # the whole name, as written
        main = page.locator('[data-testid="stMain"]')
        expect(main.locator("strong", has_text="bold")).to_have_count(0)
        expect(main.locator(f'img[src*="127.0.0.1:{port}"]')).to_have_count(0)
        expect(main.locator(".katex")).to_have_count(0)
        page.get_by_role("button", name="Larger view").first.click()
        expect(page.get_by_role("dialog")).to_be_visible()
        expect(page.get_by_role("dialog").locator(f'img[src*="127.0.0.1:{port}"]')).to_have_count(0)
    finally:
        app.stop()
        server.shutdown()
    assert [url for url in requested if f"127.0.0.1:{port}" in url] == []
    assert _Hits.hits == []


# -- the gate's other refusals, decided without a browser (AppTest, with [auth] in its secrets) -----------------


@pytest.fixture(autouse=True)
def loopback():
    """server.address as .streamlit/config.toml binds it, 127.0.0.1, for the AppTest runs (the option Streamlit
    read may come from another folder's config)."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)


def gate_run(monkeypatch, tmp_path, *, auth: dict | None, user: dict | None = None, **settings: str) -> AppTest:
    """One run of app.py with `auth` as [auth] (None: secrets without it) and `settings` in the environment,
    bound to 127.0.0.1 (the `loopback` fixture)."""
    from percept_core.config import _SPECS

    for spec in _SPECS.values():
        monkeypatch.delenv(spec.key, raising=False)
        monkeypatch.delenv(spec.key.upper(), raising=False)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.secrets = {"auth": auth} if auth is not None else {"percept_reviewers": ""}
    at.user = user or {}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_sign_in_that_is_not_set_up_completely_says_what_is_missing_and_lets_no_one_in(monkeypatch, tmp_path):
    incomplete = {k: v for k, v in AUTH.items() if k not in ("cookie_secret", "client_secret")}
    at = gate_run(monkeypatch, tmp_path, auth=incomplete, user={"is_logged_in": True, "email": ALICE.email})
    assert [e.value for e in at.error] == [
        "**Sign-in is not set up completely.** Streamlit's secrets lack auth.cookie_secret, auth.client_secret.  \n"
        "No one can sign in until it is."
    ]
    assert [b.label for b in at.button] == [] and len(at.sidebar) == 0


def test_a_named_provider_gets_its_own_sign_in_button(monkeypatch, tmp_path):
    shared = {k: AUTH[k] for k in ("redirect_uri", "cookie_secret")}
    provider = {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}
    at = gate_run(monkeypatch, tmp_path, auth={**shared, "microsoft": provider})
    assert [b.label for b in at.button] == ["Sign in with Microsoft"]
    assert not at.error and len(at.sidebar) == 0


def test_an_e_mail_the_provider_marks_unverified_is_refused(monkeypatch, tmp_path):
    # Entra ID's own proof of an e-mail is `xms_edov`; `email_verified` false (and no xms_edov) proves nothing.
    user = {"is_logged_in": True, "email": ALICE.email, "email_verified": False, "tid": TENANT}
    at = gate_run(monkeypatch, tmp_path, auth=AUTH, user=user, percept_reviewers=ALICE.email)
    assert f"did not prove that {ALICE.email.lower()} is yours" in unescape(at.error[0].value)
    assert [b.label for b in at.button] == ["Sign out"] and len(at.sidebar) == 0


def test_settings_that_cannot_be_read_let_no_one_in_and_show_no_reason_to_visitors(monkeypatch, tmp_path):
    user = {"is_logged_in": True, "email": ALICE.email}
    secret_host = "mm.internal.contoso.example"
    at = gate_run(
        monkeypatch,
        tmp_path,
        auth=AUTH,
        user=user,
        percept_reviewers=ALICE.email,
        mm_server_url=f"http://{secret_host}",
    )
    assert "The app cannot check who may use it." in at.error[0].value
    assert secret_host not in at.error[0].value  # the reason names hosts: it goes to the log only
    assert [b.label for b in at.button] == ["Sign out"] and len(at.sidebar) == 0


def test_without_auth_the_reviewer_is_the_os_user_and_there_is_no_sign_out(monkeypatch, tmp_path):
    at = gate_run(monkeypatch, tmp_path, auth=None, user={"email": ALICE.email})  # an e-mail, not signed in
    assert at.session_state["reviewer"] == default_actor()
    assert "Sign out" not in [b.label for b in at.button]


A_GUID = "00000000-0000-0000-0000-00000000a11c"


@pytest.mark.parametrize("endpoint", ["common", "organizations", "consumers", "Organizations"])
def test_entra_s_multi_tenant_endpoints_are_refused_for_an_allow_list_of_e_mails(monkeypatch, tmp_path, endpoint):
    """Through `common`, `organizations` or `consumers`, any tenant's account (or any personal Microsoft account)
    could sign in and carry a reviewer's e-mail (the "nOAuth" pattern): the app names the setting and lets no one in."""
    shared = {**AUTH, "server_metadata_url": AUTH["server_metadata_url"].replace(TENANT, endpoint)}
    at = gate_run(
        monkeypatch,
        tmp_path,
        auth=shared,
        user={"is_logged_in": True, "email": ALICE.email, "xms_edov": True, "tid": TENANT, "oid": A_GUID},
        percept_reviewers=ALICE.email,
    )
    assert "auth.server_metadata_url must name your Microsoft Entra tenant" in at.error[0].value
    assert [b.label for b in at.button] == [] and len(at.sidebar) == 0
    assert "reviewer" not in at.session_state
