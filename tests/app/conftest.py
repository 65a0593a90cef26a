"""App fixtures: the app's settings in the environment (a fresh project and ledger per test), AppTest runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from streamlit.testing.v1 import AppTest

from pages._text import unescape
from percept_core import Curator, Settings
from percept_core.config import _SPECS

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
TIMEOUT = 60


@dataclass
class ProjectImage:
    """An image of the project as the Custom Vision SDK returns it."""

    id: str
    tags: frozenset[str]
    source_blob: str | None


@dataclass
class AppHarness:
    """The app under test: its settings, its project, its ledger, and ways to look behind it."""

    stack: object
    project_id: str
    ledger_path: Path

    def open(
        self,
        page: str | None = None,
        *,
        user: dict | None = None,
        secrets: dict | None = None,
        collapse_bursts: bool | None = False,
    ) -> AppTest:
        """A fresh session of the app (a new browser tab), on `page` (e.g. "views/activity.py").

        Bursts are shown frame by frame unless `collapse_bursts` says otherwise (None: the app's default, on),
        so that tests about single tiles see every frame. `secrets` are Streamlit's secrets of the session
        (`[auth]`, say); `user` is who st.user says is signed in.
        """
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        if secrets is not None:
            at.secrets = secrets
        if collapse_bursts is not None:
            at.session_state["kept:collapse_bursts"] = collapse_bursts
        if user is not None:
            at.user = user
        if page:
            at.switch_page(page)  # straight there, as a link to the page would
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    @property
    def curator(self) -> Curator:
        """The Curator the app shares between sessions (its clients, key cache and ledger)."""
        from pages import _curator

        return _curator.shared_curator(Settings.load())

    def trainer(self) -> CustomVisionTrainingClient:
        return self.stack.trainer()

    def project_images(self) -> list[ProjectImage]:
        """Every image of the project, through the Custom Vision SDK."""
        trainer = self.trainer()
        found = []
        for status in ("Tagged", "Untagged"):
            skip = 0
            while True:
                page = trainer.get_images(self.project_id, tagging_status=status, take=256, skip=skip)
                found += [
                    ProjectImage(
                        image.id,
                        frozenset(t.tag_name for t in image.tags or []),
                        (image.metadata or {}).get("source_blob"),
                    )
                    for image in page
                ]
                if len(page) < 256:
                    break
                skip += 256
        return found


@pytest.fixture(autouse=True)
def server_address() -> Iterator[Callable[[str], None]]:
    """The app's `server.address`, 127.0.0.1 as .streamlit/config.toml binds it (the option Streamlit read at
    start may come from another folder's config); a test binds elsewhere by calling what this yields."""
    from streamlit import config

    before = config.get_option("server.address")

    def bind(address: str) -> None:
        config.set_option("server.address", address)

    bind("127.0.0.1")
    yield bind
    config.set_option("server.address", before)


@pytest.fixture
def app_env(stack, demo, monkeypatch, tmp_path) -> Iterator[AppHarness]:
    """The app's settings in the environment, as `make run` gives them: the test stack, a fresh
    classification project with three tags, a ledger of the test's own, and an empty working folder."""
    project_id = stack.new_project("app", tags=("person", "product", "empty-shelf"))
    harness = AppHarness(stack, project_id, tmp_path / "ledger.sqlite")
    _apply_environment(monkeypatch, tmp_path, stack, harness)
    yield harness
    _reset_app()


@pytest.fixture
def app_env_factory(stack, demo, monkeypatch, tmp_path) -> Iterator[Callable[..., AppHarness]]:
    """Like app_env, with another kind of project or other settings (another container, a slow tier...)."""

    def make(*, detection: bool = False, tags: tuple[str, ...] = ("person", "product"), **overrides) -> AppHarness:
        project_id = stack.new_project("app", detection=detection, tags=tags)
        harness = AppHarness(stack, project_id, tmp_path / "ledger.sqlite")
        _apply_environment(monkeypatch, tmp_path, stack, harness, **overrides)
        return harness

    yield make
    _reset_app()


def _apply_environment(monkeypatch, tmp_path, stack, harness: AppHarness, **overrides: str) -> None:
    for spec in _SPECS.values():
        monkeypatch.delenv(spec.key, raising=False)
        monkeypatch.delenv(spec.key.upper(), raising=False)
    values = stack.values(
        custom_vision_project_id=harness.project_id, percept_ledger_path=str(harness.ledger_path), **overrides
    )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)  # no .env or local.settings.json of the developer's
    st.cache_resource.clear()  # a new process, as far as the app can tell


def _reset_app() -> None:
    """No push thread and no shared Curator outlive the test."""
    from pages import _jobs

    for job in _jobs.push_jobs().all():
        job.cancel()
        job.wait(60)
    st.cache_resource.clear()


def wait_until(condition: Callable[[], object], *, timeout: float = 60, what: str = "the condition") -> object:
    """Poll `condition` until it is truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)  # polling interval of a deadline-bounded wait, not a synchronisation


# -- reading and driving the app like a reviewer ------------------------------------------------------


def button(at: AppTest, label: str):
    """The one button with this label (on the page or in an open dialog)."""
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, f"{len(found)} buttons labelled {label!r}: {[b.label for b in at.button]}"
    return found[0]


def tile(at: AppTest, name: str):
    return at.get_by_key(f"tile:{name}")


def tile_checkboxes(at: AppTest) -> list:
    """The tiles' checkboxes, in order: each labelled with its blob name, keyed `pick:` (and the selection's
    generation, which changes when the selection is changed other than by a tile)."""
    return [c for c in at.checkbox if c.key and c.key.startswith("pick:")]


def tile_names(at: AppTest) -> list[str]:
    """The blob names of the tiles shown, in order (as a reviewer reads them: the labels are escaped Markdown)."""
    return [unescape(c.label) for c in tile_checkboxes(at)]


def ticked(at: AppTest) -> set[str]:
    return {unescape(c.label) for c in tile_checkboxes(at) if c.value}


def tile_checkbox(at: AppTest, name: str):
    """The checkbox of the tile of `name`."""
    [checkbox] = [c for c in tile_checkboxes(at) if unescape(c.label) == name]
    return checkbox


def tick(at: AppTest, *names: str) -> AppTest:
    for name in names:
        tile_checkbox(at, name).check()
    return at.run()


def state_badge(at: AppTest, name: str) -> str:
    """The state a tile shows (its badge, `:colour-badge[state]`)."""
    badges = [m.value for m in tile(at, name).markdown if "-badge[" in m.value]
    assert len(badges) == 1, badges
    return badges[0].split("[", 1)[1].rstrip("]")


def dialog(at: AppTest):
    """The open dialog's block, if one is open."""
    return next((node for node in at if getattr(node, "type", None) == "dialog"), None)


def texts(at: AppTest) -> str:
    """Every text the app shows (values, labels, captions, table cells), for looking for secrets."""
    parts = []
    for node in at:
        for attribute in ("value", "label", "body", "help", "placeholder"):
            value = getattr(node, attribute, None)
            if isinstance(value, str):
                parts.append(value)
        if getattr(node, "type", None) in ("dataframe", "arrow_data_frame"):
            parts.append(node.value.to_csv())
    return "\n".join(parts)


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """The files the app offers for download, by file name, as Streamlit's in-memory media store receives them
    (the bytes a reviewer's click on the download button saves); a file offered again replaces the last one."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    offered: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        if filename and isinstance(path_or_data, bytes):
            offered[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return offered


def csv_rows(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """A downloaded CSV as a spreadsheet reads it: its header and its rows."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def settings_reads(monkeypatch) -> list[int]:
    """One entry per `Settings.load()` from here on (the real one, counted)."""
    from percept_core import Settings

    reads: list[int] = []
    load = Settings.load.__func__

    def counted(cls, *args, **kwargs):
        reads.append(1)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Settings, "load", classmethod(counted))
    return reads
