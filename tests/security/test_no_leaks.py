"""Plaintext and secrets stay in: after a reviewer's session in the browser (signed in, every page, error
states included), both notebooks and a push-all from the CLI, no decrypted image and no secret is on disk
where the tool could have written it, in any page's HTML, in an error message, in the server's log, in the
CLI's output or in the notebooks' outputs (kept in memory).

Secrets: the Custom Vision training key, the AZURE client secret (a decoy the tool holds but never needs
here), the MM bootstrap secret, the storage connection string, every MM bearer token issued during the run,
the OpenID Connect client secret and cookie secret, and the wrong keys of the error states. The storage
connection string is checked whole: its account key alone is Azurite's published development key.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from devstack.servers import free_port
from percept_core import Curator
from tests.browser.conftest import (
    ALICE,
    MALLORY,
    keep_offline,
    oidc_provider,
    show_every_frame,
    sign_in,
    sign_out,
    write_auth_secrets,
)
from tests.notebooks.conftest import NOTEBOOKS, execute_notebook, kernel_environment
from tests.support.chromium import launch_chromium
from tests.support.disk_scan import REPO, Finding, scan, writable_areas
from tests.support.streamlit_server import StreamlitServer

pytestmark = pytest.mark.browser

CLI = [sys.executable, "-m", "percept_core.cli"]
ALERTS = '[data-testid="stAlert"], [data-testid="stException"], [data-testid="stToast"]'
# Where the notebooks' kernels keep state of their own (history, connection files), besides writable_areas().
KERNEL_AREAS = [Path.home() / ".ipython", Path.home() / ".jupyter"]

# -- the checks ------------------------------------------------------------------------------------------------


def image_fingerprints(plaintexts: Iterable[bytes]) -> list[str]:
    """A run of each plaintext's base64 (from a 4-aligned offset, so any text embedding the whole image as
    base64, a data: URI say, contains it)."""
    found = []
    for plaintext in plaintexts:
        encoded = base64.b64encode(plaintext).decode()
        middle = (len(encoded) // 2) // 4 * 4
        found.append(encoded[middle : middle + 64])
    return found


def leaks_in_text(texts: dict[str, str], *, secrets: Iterable[str], plaintexts: Iterable[bytes]) -> list[str]:
    """Where (the keys of `texts`) a secret or a decrypted image shows."""
    secrets = [s for s in secrets if s and len(s) >= 8]
    images = image_fingerprints(plaintexts)
    found = []
    for where, text in texts.items():
        if any(secret in text for secret in secrets):
            found.append(f"{where}: a secret")
        if any(image in text for image in images):
            found.append(f"{where}: a decrypted image (base64)")
    return found


def leaks_on_disk(
    *,
    plaintexts: list[bytes],
    secrets: list[str],
    started: float,
    extra_roots: Iterable[Path] = (),
    exclude_dirs: Iterable[Path] = (),
    exclude_files: Iterable[Path] = (),
    roots: list[Path] | None = None,
) -> list[Finding]:
    """`disk_scan.scan` over the areas the tool can write, minus single files that legitimately hold secrets."""
    roots = roots if roots is not None else writable_areas([*extra_roots, *(a for a in KERNEL_AREAS if a.exists())])
    findings = scan(
        plaintexts=plaintexts, secrets=secrets, roots=roots, exclude=exclude_dirs, images_newer_than=started
    )
    skipped = {p.resolve() for p in exclude_files}
    return [f for f in findings if f.path.resolve() not in skipped]


def test_each_check_finds_what_it_looks_for(tmp_path_factory):
    """Planted leaks are found: on disk (a copy, a slice, a new image file, a secret in a log), in text (a
    secret, an image as base64), and `.devstack/env` is skipped as a file, not its folder."""
    started = time.time()
    plaintext = b"\xff\xd8\xff\xe0" + secrets.token_bytes(4096)
    other = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2048)
    secret = secrets.token_urlsafe(24)
    # Outside pytest's folders, as a leak would be: in the system's temp folder.
    probe = Path(tempfile.mkdtemp(prefix="percept-leak-probe-"))
    try:
        (probe / "copy.jpg").write_bytes(plaintext)
        middle = len(plaintext) // 2  # the scanner matches a run of bytes from the middle of each plaintext
        (probe / "cache.bin").write_bytes(b"header" + plaintext[middle - 100 : middle + 100] + b"trailer")
        (probe / "thumbnail.png").write_bytes(other)
        (probe / "server.log").write_text(f"token={secret}\n")
        (probe / ".devstack").mkdir()
        (probe / ".devstack" / "env").write_text(f"mm_bootstrap_secret={secret}\n")  # the local stack's own
        (probe / ".devstack" / "leaked.txt").write_text(secret)
        findings = leaks_on_disk(
            plaintexts=[plaintext],
            secrets=[secret],
            started=started,
            roots=[probe],
            exclude_files=[probe / ".devstack" / "env"],
        )
        found = {(f.path.name, f.what) for f in findings}
        assert found == {
            ("copy.jpg", "a decrypted image (same sha256)"),
            ("copy.jpg", "an image file written during the run"),
            ("cache.bin", "bytes of a decrypted image"),
            ("thumbnail.png", "an image file written during the run"),
            ("server.log", "a secret"),
            ("leaked.txt", "a secret"),
        }
        # and the default roots reach the temp folder too
        assert probe.parent in [p.resolve() for p in writable_areas()]
    finally:
        for path in sorted(probe.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        probe.rmdir()

    page = f'<img src="data:image/jpeg;base64,{base64.b64encode(plaintext).decode()}">'
    texts = {"a page": page, "a log": f"Authorization: Bearer {secret}", "clean": "nothing here"}
    assert leaks_in_text(texts, secrets=[secret], plaintexts=[plaintext]) == [
        "a page: a decrypted image (base64)",
        "a log: a secret",
    ]


# -- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """Everything the tool showed or printed during the run, by where it showed it."""

    texts: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)

    def page(self, page: Page, where: str) -> None:
        """The page's HTML as it is now, and the text of every alert, exception and toast on it."""
        self.texts[f"HTML of {where}"] = page.content()
        shown = page.locator(ALERTS).all_inner_texts()
        self.alerts += shown
        self.texts[f"messages on {where}"] = "\n".join(shown)
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)  # no traceback, anywhere

    def note_tokens(self, stack) -> None:
        self.tokens |= set(stack.mm_state.tokens)


@contextmanager
def chromium() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(30_000)
        keep_offline(context)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def go(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()


def reviewer_session(page: Page, url: str, evidence: Evidence, *, bad: set[str], good: list[str]) -> None:
    """Sign-in page, a refused user, then the reviewer on every page, its dialogs and actions, and out."""
    page.goto(url)
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    evidence.page(page, "the sign-in page")
    sign_in(page, url, MALLORY)
    expect(page.get_by_text(f"{MALLORY.email} is not allowed")).to_be_visible()
    evidence.page(page, "the refusal")
    sign_out(page, url)

    sign_in(page, url, ALICE)
    expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
    show_every_frame(page)
    for name in sorted(bad) + good:  # every blob fits on page 1: a tile each, its checkbox labelled with its name
        expect(page.get_by_label(name, exact=True)).to_be_attached()
    expect(page.locator('[data-testid="stAlert"]')).to_have_count(len(bad))  # the tiles that cannot be decrypted
    evidence.page(page, "Review")
    for name in (min(bad), good[0]):  # a frame that cannot be decrypted, and one that can
        tile = page.locator('[data-testid="stVerticalBlock"]').filter(has=page.get_by_label(name, exact=True)).last
        tile.get_by_role("button", name="Larger view").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text(name, exact=True)).to_be_visible()
        expect(dialog.get_by_text("model version", exact=True)).to_be_visible()
        evidence.page(page, f"the larger view of {name}")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
    for name in good[1:3]:
        page.get_by_text(name, exact=True).click()
        expect(page.get_by_label(name, exact=True)).to_be_checked()
    page.get_by_role("button", name="Push selected").click()
    expect(page.get_by_text("Push: 2 pushed")).to_be_visible()
    evidence.page(page, "Review after a push")

    go(page, "Push untagged")
    page.get_by_role("button", name="Dry run").click()
    expect(page.get_by_text("Dry run finished")).to_be_visible()
    evidence.page(page, "Push untagged, dry run")
    page.get_by_role("button", name="Push all untagged").click()
    page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^Push [\d,]+ images?$")).click()
    expect(page.get_by_text(re.compile(r"^Finished in .*: \d+ pushed"))).to_be_visible(timeout=120_000)
    evidence.page(page, "Push untagged, finished")

    go(page, "Activity")
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ events"))).to_be_visible()
    evidence.page(page, "Activity")
    go(page, "Connections")
    page.get_by_role("button", name="Test connections").click()
    for service in ("Storage", "MM server", "Custom Vision"):
        expect(page.get_by_text(re.compile(rf"^{service}: "))).to_be_visible()
    evidence.page(page, "Connections, tested")
    sign_out(page, url)
    evidence.page(page, "the sign-in page after signing out")


def broken_session(page: Page, url: str, evidence: Evidence) -> None:
    """The app on a wrong training key and a wrong MM secret: every page's error state."""
    page.goto(url)
    expect(page.get_by_text("Custom Vision cannot be reached").first).to_be_visible()
    evidence.page(page, "Review, Custom Vision refusing the key")
    for title in ("Push untagged", "Activity"):
        go_by_url = f"{url}/{title.lower().replace(' ', '_')}"
        page.goto(go_by_url)
        expect(page.get_by_text("Custom Vision cannot be reached").first).to_be_visible()
        evidence.page(page, f"{title}, Custom Vision refusing the key")
    page.goto(f"{url}/connections")
    page.get_by_role("button", name="Test connections").click()
    expect(page.get_by_text(re.compile(r"^MM server: "))).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Custom Vision: "))).to_be_visible()
    evidence.page(page, "Connections, tested with wrong keys")


def run_cli(
    args: list[str], *, env: dict[str, str], cwd: Path, evidence: Evidence, where: str
) -> subprocess.CompletedProcess:
    """`percept-curator` as a user runs it; its stdout and stderr go to the evidence."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    evidence.texts[f"CLI output of {where}"] = result.stdout + result.stderr
    return result


def test_no_plaintext_or_secret_leaves_the_tool(stack, demo, tmp_path, tmp_path_factory):
    started = time.time()
    evidence = Evidence()
    reader = Curator(stack.settings())  # the test's own view: names and plaintexts, in memory
    blobs = list(reader.blobs())
    bad = set(demo.bad.values())
    good = [b.name for b in blobs if b.name not in bad]
    plaintexts = [reader.decrypt(b) for b in blobs if b.name not in bad]
    decoy = {"AZURE_CLIENT_SECRET": secrets.token_urlsafe(24)}  # held by every run, needed by none
    wrong = {"custom_vision_training_key": secrets.token_hex(16), "mm_bootstrap_secret": secrets.token_urlsafe(24)}
    servers: list[StreamlitServer] = []
    writes = [tmp_path / "app", tmp_path / "broken", tmp_path / "notebooks", tmp_path / "cli"]

    try:
        # The shared deployment: sign-in on, the reviewer's whole session.
        with oidc_provider() as provider:
            port = free_port()
            auth = write_auth_secrets(
                tmp_path / "secrets" / "secrets.toml",
                app_url=f"http://127.0.0.1:{port}",
                provider_url=provider,
                reviewers=ALICE.email,
            )
            env = stack.environment(
                custom_vision_project_id=stack.new_project("leaks", tags=("person",)),
                percept_ledger_path=str(tmp_path / "app" / "ledger.sqlite"),
                **decoy,
            )
            app = StreamlitServer.start(env, workdir=tmp_path / "app" / "cwd", secrets_file=auth.path, port=port)
            servers.append(app)
            with chromium() as page:
                reviewer_session(page, app.url, evidence, bad=bad, good=good)
        evidence.note_tokens(stack)

        # Local use with wrong keys: the error states.
        env = stack.environment(
            custom_vision_project_id=stack.new_project("leaks broken"),
            percept_ledger_path=str(tmp_path / "broken" / "ledger.sqlite"),
            **decoy,
            **wrong,
        )
        broken = StreamlitServer.start(env, workdir=tmp_path / "broken" / "cwd")
        servers.append(broken)
        with chromium() as page:
            broken_session(page, broken.url, evidence)
        for server in servers:
            server.stop()
            evidence.texts[f"log of the server at {server.url}"] = server.log_text()
        evidence.note_tokens(stack)

        # Both notebooks, executed in memory.
        ledger = str(tmp_path / "notebooks" / "ledger.sqlite")
        kernel_env = kernel_environment(stack, percept_ledger_path=ledger, **decoy)
        for notebook, parameters in (
            ("01_explore_retraining_data.ipynb", None),
            ("02_curate_and_push.ipynb", {"custom_vision_project_id": stack.new_project("leaks nb", tags=("person",))}),
        ):
            run = execute_notebook(
                NOTEBOOKS / notebook, env=kernel_env, cwd=tmp_path / "notebooks" / "cwd", parameters=parameters
            )
            evidence.texts[f"outputs of {notebook}"] = run.text()
        assert list((tmp_path / "notebooks" / "cwd").iterdir()) == []
        evidence.note_tokens(stack)

        # A push-all from the CLI, and its error states.
        cli_ledger = str(tmp_path / "cli" / "ledger.sqlite")
        project = stack.new_project("leaks cli")
        env = stack.environment(custom_vision_project_id=project, percept_ledger_path=cli_ledger, **decoy)
        cwd = tmp_path / "cli" / "cwd"
        dry = run_cli(["--json", "push-untagged", "--dry-run"], env=env, cwd=cwd, evidence=evidence, where="dry run")
        assert json.loads(dry.stdout)["eligible"] == len(good)
        pushed = run_cli(["push-untagged", "--yes"], env=env, cwd=cwd, evidence=evidence, where="push-untagged")
        assert f"{len(good)} pushed" in pushed.stdout, pushed.stderr
        env = stack.environment(
            custom_vision_project_id=project, percept_ledger_path=cli_ledger + ".wrong", **decoy, **wrong
        )
        refused = run_cli(["push-untagged", "--yes"], env=env, cwd=cwd, evidence=evidence, where="wrong keys")
        assert refused.returncode != 0 and "Custom Vision" in refused.stdout + refused.stderr
        evidence.note_tokens(stack)
    finally:
        for server in servers:
            server.stop()

    secret_values = [
        *stack.settings(**decoy).secret_values(),
        *wrong.values(),
        *auth.values,
        *evidence.tokens,
    ]
    assert decoy["AZURE_CLIENT_SECRET"] in secret_values and stack.training_key in secret_values
    assert len(evidence.tokens) >= 3  # the app, the kernels and the CLI each logged in to the MM server

    # The error states were reached, and they said what went wrong.
    messages = "\n".join(evidence.alerts)
    for expected in ("Custom Vision cannot be reached", "MM server", "is not allowed to use this app"):
        assert expected in messages

    assert leaks_in_text(evidence.texts, secrets=secret_values, plaintexts=plaintexts) == []
    findings = leaks_on_disk(
        plaintexts=plaintexts,
        secrets=secret_values,
        started=started,
        extra_roots=writes,
        # pytest's scratch space (this run's and earlier ones'), apart from the folders above the tool wrote;
        # the Custom Vision emulators' image stores stand for the cloud service, which holds pushed images
        # by design; the benchmarks' own stack is not the tool under test
        exclude_dirs=[
            tmp_path_factory.getbasetemp().parent,
            REPO / ".devstack" / "customvision",
            REPO / ".devstack" / "bench",
        ],
        # the local stack's own secrets, written by `make devstack` (the rest of .devstack is scanned)
        exclude_files=[REPO / ".devstack" / "env"],
    )
    assert findings == []
