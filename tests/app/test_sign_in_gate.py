"""Sign-in fails closed: who the app lets in (bind address, [auth], the token's oid/tid and e-mail proof), that
every click asks again, and that names from outside show as text (and CSV cells start no formula).

AppTest runs the real app on the test stack; st.user stands in for the ID token Streamlit's OIDC client checked.
"""

from __future__ import annotations

import csv
import io
import os
import re

import pandas as pd
import pytest
from azure.storage.blob import BlobServiceClient

from pages._text import md, unescape
from percept_core import Ledger
from percept_core.csvsafe import csv_text, safe_csv_bytes
from percept_core.ledger import default_actor
from percept_core.review import reject
from tests.app.conftest import button, texts, tick, tile_checkbox, tile_names
from tests.support.entra import AUTH, TENANT
from tests.support.frames import jpeg, upload_frames

OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
ALICE_OID = "00000000-0000-0000-0000-00000000a11c"
OTHER_OID = "00000000-0000-0000-0000-0000000000b0"
ALICE = "alice@contoso.example"
AUTH_KEYS = ("auth.redirect_uri", "auth.cookie_secret", "auth.client_id", "auth.client_secret")


def signed_in(**claims: object) -> dict:
    """st.user for someone signed in through Entra ID: the ID token's claims."""
    return {"is_logged_in": True, "name": "Alice Reviewer", **claims}


# Listed by a verified e-mail (which the gate of the previous release let in too), so that the tests of what a
# click does after the list changed test the click, not the admission.
VERIFIED_ALICE = signed_in(oid=ALICE_OID, tid=TENANT, email=ALICE, xms_edov=True)


def refusal(at) -> str:
    """The refusal page's message, as a reader sees it (no Markdown: escapes, bold and code marks undone)."""
    assert len(at.error) == 1, [e.value for e in at.error]
    return unescape(at.error[0].value.replace("**", "").replace("`", ""))


def refused(at) -> bool:
    """A refusal shows (the demo's bad frames show errors of their own, with another icon)."""
    return any(e.icon == ":material/block:" for e in at.error)


def let_in_nothing(at, harness) -> None:
    """What a refusal leaves: no tiles, no sidebar, no reviewer, no blob name, and the ledger untouched."""
    assert tile_names(at) == [] and len(at.sidebar) == 0
    assert "reviewer" not in at.session_state
    shown = texts(at)
    assert [b.name for b in harness.curator.blobs() if b.name in shown] == []


# -- without [auth]: local use only on a loopback bind with no reviewers listed ---------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "", "::", "192.0.2.10"])  # noqa: S104 - what is refused
def test_reachable_from_other_machines_without_secrets_it_lets_no_one_in_and_names_the_keys_to_add(
    app_env, server_address, address
):
    server_address(address)  # and no secrets file at all: not found, not mounted, another folder
    at = app_env.open()
    message = refusal(at)
    assert message.startswith("Sign-in is required, and it is not set up.")
    assert "reachable from other machines" in message
    assert all(key in message for key in (*AUTH_KEYS, "auth.server_metadata_url", "percept_reviewers"))
    assert "127.0.0.1" in message  # the other way out: bind to loopback
    assert [b.label for b in at.button] == []
    let_in_nothing(at, app_env)
    assert not app_env.ledger_path.exists()


def test_reviewers_listed_without_auth_let_no_one_in(app_env, monkeypatch):
    monkeypatch.setenv("percept_reviewers", ALICE)
    at = app_env.open(user={"email": ALICE})
    message = refusal(at)
    assert "reviewers are listed (percept_reviewers)" in message and "auth.client_secret" in message
    let_in_nothing(at, app_env)
    assert not app_env.ledger_path.exists()


def test_on_loopback_with_nothing_configured_the_reviewer_is_the_os_user(app_env):
    at = app_env.open()
    assert at.session_state["reviewer"] == default_actor()
    assert tile_names(at) and not refused(at)
    assert "Sign out" not in [b.label for b in at.button]


# -- with [auth]: the token's tenant and object id, and e-mails only where the token proves them ------------------


@pytest.mark.parametrize("entry", [ALICE_OID, f"{TENANT}/{ALICE_OID}"], ids=["object-id", "tenant/object-id"])
def test_an_account_listed_by_its_object_id_in_the_tenant_is_let_in(app_env, monkeypatch, entry):
    monkeypatch.setenv("percept_reviewers", f"bob@contoso.example, {entry}")
    at = app_env.open(secrets={"auth": AUTH}, user=signed_in(oid=ALICE_OID, tid=TENANT))  # no e-mail at all
    assert not refused(at) and tile_names(at)
    assert at.session_state["reviewer"] == f"{TENANT}/{ALICE_OID}"
    assert f"Signed in as {TENANT}/{ALICE_OID}" in [unescape(c.value).replace("**", "") for c in at.sidebar.caption]


def test_an_account_of_another_tenant_is_refused_whatever_its_e_mail_or_object_id(app_env, monkeypatch):
    monkeypatch.setenv("percept_reviewers", f"{ALICE_OID}, {ALICE}")
    user = signed_in(oid=ALICE_OID, tid=OTHER_TENANT, email=ALICE, xms_edov=True)
    at = app_env.open(secrets={"auth": AUTH}, user=user)
    assert refusal(at).startswith(f"{ALICE} is not an account of this app's organisation.")
    assert [b.label for b in at.button] == ["Sign out"]
    let_in_nothing(at, app_env)


def test_a_listed_e_mail_the_token_does_not_prove_is_refused(app_env, monkeypatch):
    monkeypatch.setenv("percept_reviewers", ALICE)
    user = signed_in(oid=OTHER_OID, tid=TENANT, email=ALICE.upper())  # Entra ID: no xms_edov, no proof
    at = app_env.open(secrets={"auth": AUTH}, user=user)
    message = refusal(at)
    assert message.startswith(f"Your sign-in did not prove that {ALICE} is yours")
    assert "xms_edov" in message and "oid" in message  # what an administrator can do about it
    let_in_nothing(at, app_env)


def test_a_listed_e_mail_of_a_verified_domain_is_let_in(app_env, monkeypatch):
    monkeypatch.setenv("percept_reviewers", ALICE)
    user = signed_in(oid=OTHER_OID, tid=TENANT, email=ALICE.upper(), xms_edov=True)
    at = app_env.open(secrets={"auth": AUTH}, user=user)
    assert not refused(at) and tile_names(at)
    assert at.session_state["reviewer"] == ALICE


# -- every click asks again ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["Add tag", "Reject selected", "Select all matching"])
def test_a_reviewer_taken_off_the_list_does_nothing_with_the_next_click(app_env, monkeypatch, action):
    monkeypatch.setenv("percept_reviewers", ALICE)
    at = app_env.open(secrets={"auth": AUTH}, user=VERIFIED_ALICE)
    name = tile_names(at)[0]
    tick(at, name)
    at.text_input(key="new_tag").input("forklift")
    rejects_before = len(Ledger(app_env.ledger_path).events(action="reject"))

    monkeypatch.setenv("percept_reviewers", OTHER_OID)  # taken off the list, no restart
    button(at, action).click().run()

    assert refusal(at).startswith(f"{ALICE} is not allowed to use this app.")
    assert len(Ledger(app_env.ledger_path).events(action="reject")) == rejects_before
    assert "forklift" not in [t.name for t in app_env.trainer().get_tags(app_env.project_id)]
    assert "select_all_note" not in at.session_state  # nothing was listed for them
    let_in_nothing(at, app_env)


def test_a_reviewer_taken_off_the_list_while_the_push_dialog_is_open_pushes_nothing(app_env, monkeypatch):
    monkeypatch.setenv("percept_reviewers", ALICE)
    at = app_env.open("views/push_untagged.py", secrets={"auth": AUTH}, user=VERIFIED_ALICE)
    button(at, "Push all untagged").click().run()  # counts, and opens the confirmation
    [push] = [b for b in at.button if re.fullmatch(r"Push [\d,]+ images?", b.label)]  # the dialog is open

    monkeypatch.setenv("percept_reviewers", OTHER_OID)
    push.click().run()

    assert "is not allowed to use this app" in refusal(at)
    assert app_env.project_images() == []
    assert Ledger(app_env.ledger_path).events(action="push") == []


def test_a_signed_in_reviewers_run_reads_the_settings_once(app_env, monkeypatch, settings_reads):
    """The gate checks the run's reading of the settings instead of reading them again."""
    monkeypatch.setenv("percept_reviewers", ALICE)
    at = app_env.open("views/connections.py", secrets={"auth": AUTH}, user=VERIFIED_ALICE)
    assert not refused(at) and at.title[0].value == "Connections"
    assert len(settings_reads) == 1


@pytest.fixture
def streamlit_secrets_file(tmp_path, monkeypatch):
    """Streamlit's own secrets (st.secrets, outside AppTest) read from one file of this test's."""
    from streamlit import config as streamlit_config
    from streamlit.runtime.secrets import secrets_singleton

    path = tmp_path / "secrets.toml"
    chosen = {"secrets.files": [str(path)], "server.fileWatcherType": "none"}
    previous = {option: streamlit_config.get_option(option) for option in chosen}
    for option, value in chosen.items():
        streamlit_config.set_option(option, value)
    monkeypatch.delenv("percept_reviewers", raising=False)
    secrets_singleton._reset()
    yield path
    secrets_singleton._reset()  # takes Streamlit's copies out of the environment again
    for option, value in previous.items():
        streamlit_config.set_option(option, value)


def test_a_reviewer_taken_off_the_secrets_file_is_off_although_streamlit_copied_the_old_list_into_the_environment(
    streamlit_secrets_file,
):
    """Streamlit copies the top-level strings of the secrets it read into os.environ, so the environment, which
    comes first, still says what the file said at start. The gate reads the file as it is now. (Under a served
    app this let a reviewer taken off the list push from an open dialog about one run in two.)"""
    from pages import _auth

    streamlit_secrets_file.write_text(f'percept_reviewers = "{ALICE}"\n', encoding="utf-8")
    assert not _auth.sign_in_required()  # the gate's first question reads st.secrets, as at every start
    assert os.environ.get("percept_reviewers") == ALICE  # Streamlit's copy, of the file as it was  # noqa: SIM112 - the name Streamlit gives it
    assert _auth.current_reviewers() == (ALICE,)

    streamlit_secrets_file.write_text('percept_reviewers = "bob@contoso.example"\n', encoding="utf-8")
    assert _auth.current_reviewers() == ("bob@contoso.example",)


# -- names from outside show as text ---------------------------------------------------------------------------------

MARKDOWN = "appmarkdown"
MARKDOWN_NAMES = (
    "![x](http://127.0.0.1:9/x.png).jpg.dec",
    '<img src="http://127.0.0.1:9/y.png">.jpg.dec',
    "**bold** :red[red] $x$.jpg.dec",
)


@pytest.fixture(scope="module")
def markdown_container(stack):
    """Frames whose names (and so their file_ref metadata) are Markdown and HTML."""
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    if not service.get_container_client(MARKDOWN).exists():
        upload_frames(stack, MARKDOWN, [jpeg(4000 + i, (160, 120)) for i in range(3)], names=MARKDOWN_NAMES)
    return MARKDOWN_NAMES


def test_blob_names_that_are_markdown_show_as_written(app_env_factory, markdown_container):
    harness = app_env_factory(mm_telemetry_storage_container=MARKDOWN)
    at = harness.open()
    assert sorted(tile_names(at)) == sorted(markdown_container)
    for name in markdown_container:
        label = tile_checkbox(at, name).label  # a checkbox label is Markdown: escaped, so it shows as written
        assert label == md(name) and label != name

    image = markdown_container[0]
    at.button(key=f"open:{image}").click().run()
    view = next(node for node in at if getattr(node, "type", None) == "dialog")
    assert f"**{md(image)}**" in [m.value for m in view.markdown]
    cells = view.table[0].value["value"].to_dict()
    assert cells["file_ref"] == md(f"/app/captures/{image[:-4]}")  # metadata in a table cell: escaped too


# -- CSV downloads start no formula ------------------------------------------------------------------------------------

FORMULAS = "appformulas"
FORMULA_NAMES = ('=HYPERLINK("http://127.0.0.1:9/","x").jpg.dec', "+1+1.jpg.dec", "-2+3.jpg.dec", "@SUM(1).jpg.dec")


def test_the_activity_csv_neutralises_cells_a_spreadsheet_would_run_as_formulas(app_env_factory, stack, downloads):
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    if not service.get_container_client(FORMULAS).exists():
        upload_frames(stack, FORMULAS, [jpeg(5000 + i, (160, 120)) for i in range(4)], names=FORMULA_NAMES)
    harness = app_env_factory(mm_telemetry_storage_container=FORMULAS)
    reject(harness.curator.with_actor("=cmd|' /C calc'!A0"), list(harness.curator.blobs()))

    harness.open("views/activity.py")
    data = downloads["percept-curator-activity.csv"]
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert sorted(row["blob"] for row in rows) == sorted("'" + name for name in FORMULA_NAMES)
    assert {row["who"] for row in rows} == {"'=cmd|' /C calc'!A0"}
    assert not any(line.startswith(("=", "+", "-", "@")) for line in data.decode().splitlines())


def test_csv_cells_starting_with_a_tab_or_carriage_return_are_neutralised_and_numbers_stay_numbers():
    frame = pd.DataFrame({"blob": ["\tcmd", "\rcmd", "ok-=", "=1"], "count": [-1, 2, 3, 4]})
    assert safe_csv_bytes(frame) == b"blob,count\n'\tcmd,-1\n'\rcmd,2\nok-=,3\n'=1,4\n"
    assert csv_text([{"blob": "@x", "count": -5}], ["blob", "count"]) == "blob,count\n'@x,-5\n"
