"""The reviewer-facing cost of the Review page in a real browser (issue 8): reported, not gated.

On pages of 48 frames, in headless Chromium against `streamlit run app.py`, as a reviewer opens it (each
burst of near-duplicates one tile, so a page has a few tiles fewer: `tiles_per_page`):

- `open_page_seconds`: from opening the app's URL in a new browser session (a new Streamlit session:
  no thumbnail of it is cached) to all the page's tiles showing their picture, the median over `repeats`; the
  first open after the server started (modules imported, keys fetched) is `open_page_cold_process_seconds`.
- `next_page_key_seconds` / `previous_page_key_seconds`: from the "n" (or "p") key press to all the
  tiles of the other page showing (going back, the session's thumbnails are cached).
- `key_to_checkbox_seconds`: from the "x" key press on a focused tile to its checkbox showing ticked;
  `key_to_selection_count_seconds`: to the page's "N selected" line counting it (a server round trip).
- `first_page_thumbnails_seconds` / `first_page_thumbnails_and_hashes_seconds`: the same first page
  prepared in process, cold, without and with the perceptual hashes the near-duplicate grouping needs
  (one decrypt a frame serves both), to show what grouping adds to the first page.

Times are taken in the page (`performance.now()` at the key press or the navigation start, and when
the condition first holds, polled every animation frame), so Playwright's own round trips are not in them.

    from bench import reviewer
    reviewer.run(quick=True)                        # its own services and frames, in a temporary folder
    reviewer.run(quick=False, settings={...})       # an app's settings, by the names users write them:
                                                    # its container needs 49+ decryptable frames (97+ to
                                                    # page); nothing is pushed, hashes go to its ledger

`python -m bench.reviewer [--quick]` prints the result as JSON. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PAGE = 48
FRAMES = 100  # two full pages and a few more
TIMEOUT_MS = 120_000

# True (and the time it first was) once `count` tiles, none of `exclude`, all show their picture.
_TILES_SHOWN = """
([count, exclude]) => {
  const tiles = [...document.querySelectorAll('[class*="st-key-tile-"]')];
  if (tiles.length < count) return false;
  const ids = tiles.map(t => [...t.classList].find(c => c.startsWith('st-key-tile-')));
  if (ids.some(id => exclude.includes(id))) return false;
  if (!tiles.every(t => { const i = t.querySelector('img'); return i && i.complete && i.naturalWidth > 0; })) {
    return false;
  }
  window.__benchDone = window.__benchDone ?? performance.now();
  return true;
}
"""
_TILE_IDS = """() => [...document.querySelectorAll('[class*="st-key-tile-"]')]
  .map(t => [...t.classList].find(c => c.startsWith('st-key-tile-')))"""
_ARM = """() => {
  window.__benchKey = undefined; window.__benchDone = undefined;
  window.__benchChecked = undefined; window.__benchCounted = undefined;
  document.addEventListener('keydown', () => { window.__benchKey = performance.now(); }, {capture: true, once: true});
}"""
# The page's "N selected" line (a burst's tile selects every frame of it).
_SELECTION_LINE = """() => ([...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
  .map(e => e.textContent).find(t => / selected \\(/.test(t)) ?? null)"""
# The focused tile's checkbox ticked, and the page's "N selected" line no longer `before`.
_SELECTED = """
([before]) => {
  const box = document.activeElement;
  if (box && box.type === 'checkbox' && box.checked) window.__benchChecked = window.__benchChecked ?? performance.now();
  const line = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .map(e => e.textContent).find(t => / selected \\(/.test(t));
  if (line !== undefined && line !== before) window.__benchCounted = window.__benchCounted ?? performance.now();
  return window.__benchChecked !== undefined && window.__benchCounted !== undefined;
}
"""


def _log(message: str) -> None:
    print(f"bench reviewer [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _range(values: list[float]) -> list[float] | None:
    return [round(min(values), 4), round(max(values), 4)] if values else None


# -- services -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _own_services(work: Path) -> Iterator[dict[str, str]]:
    """Azurite, the MM and Custom Vision emulators (processes, free ports) and FRAMES camera frames."""
    from devstack import stack
    from devstack.seed import seed
    from devstack.servers import free_port
    from percept_core.config import Settings

    state = work / "stack"
    ports = {name: free_port() for name in stack.DEFAULT_PORTS}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            env_file = stack.up(state, seed=False, ports=ports)
        values = _read_env(env_file) | {"percept_ledger_path": str(work / "ledger.sqlite")}
        settings = Settings.load(env_file=None, local_settings_file=None, secrets_files=(), environ=values)
        _log(f"seeding {FRAMES} camera frames through the MM emulator (setup, not measured)")
        seed(settings, images=FRAMES, bad_cases=False, workers=2)
        yield values
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            stack.down(state, quiet=True)


def _read_env(path: Path) -> dict[str, str]:
    import shlex

    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


@contextlib.contextmanager
def _app(values: dict[str, str], work: Path) -> Iterator[str]:
    """`streamlit run app.py` with these settings in its environment; yields its URL."""
    from devstack.servers import free_port
    from percept_core.config import SETTING_NAMES

    folder = work / "app"
    (folder / ".streamlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".streamlit" / "config.toml", folder / ".streamlit" / "config.toml")
    names = SETTING_NAMES | {name.upper() for name in SETTING_NAMES}
    env = {k: v for k, v in os.environ.items() if k not in names} | values
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1"]
    command += ["--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(folder / "streamlit.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}; see {folder / 'streamlit.log'}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("streamlit did not answer within 60 s")
            time.sleep(0.2)  # polling the health endpoint, with a deadline
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# -- measurements ---------------------------------------------------------------------------------------


def _tiles_per_page(values: dict[str, str], work: Path) -> list[int]:
    """How many tiles the first two pages of 48 frames show: each burst of near-duplicates is one tile (the
    app's default), grouped as the app groups them. Setup, not measured."""
    from percept_core import Curator, Settings
    from percept_core.bursts import collapse, find_bursts, page_hashes

    settings = Settings.load(
        env_file=None,
        local_settings_file=None,
        secrets_files=(),
        environ=values | {"percept_ledger_path": str(work / "tiles.sqlite")},
    )
    curator = Curator(settings)
    counts, continuation = [], None
    for _ in range(2):
        page = curator.blob_page(page_size=PAGE, continuation=continuation)
        bursts = find_bursts(
            page.blobs, page_hashes(curator, page.blobs), max_distance=settings.near_duplicate_distance
        )
        counts.append(len(collapse(page.blobs, bursts)))
        continuation = page.continuation
    return counts


def _open_page(browser, url: str, tiles: int) -> tuple[float, object, object]:
    """Seconds from navigation start to the page's tiles shown, in a new browser session; (seconds, context,
    page)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="commit")
    page.wait_for_function(_TILES_SHOWN, arg=[tiles, []], polling="raf", timeout=TIMEOUT_MS)
    return page.evaluate("() => window.__benchDone") / 1000, context, page


def _page_key(page, key: str, tiles: int) -> float:
    """Seconds from pressing `key` to the other page's `tiles` tiles shown."""
    before = page.evaluate(_TILE_IDS)
    page.evaluate(_ARM)
    page.keyboard.press(key)
    page.wait_for_function(_TILES_SHOWN, arg=[tiles, before], polling="raf", timeout=TIMEOUT_MS)
    return page.evaluate("() => window.__benchDone - window.__benchKey") / 1000


def _select_keys(page, repeats: int) -> tuple[list[float], list[float]]:
    """Tick `repeats` tiles with "j" and "x"; seconds from each "x" to the checkbox and to the count."""
    page.wait_for_function("() => window.__perceptTileKeys === true", timeout=TIMEOUT_MS)
    checkbox, counted = [], []
    for _ in range(repeats):
        page.keyboard.press("j")
        page.wait_for_function("() => document.activeElement && document.activeElement.type === 'checkbox'")
        before = page.evaluate(_SELECTION_LINE)
        page.evaluate(_ARM)
        page.keyboard.press("x")
        page.wait_for_function(_SELECTED, arg=[before], polling="raf", timeout=TIMEOUT_MS)
        times = page.evaluate(
            "() => [window.__benchChecked - window.__benchKey, window.__benchCounted - window.__benchKey]"
        )
        checkbox.append(times[0] / 1000)
        counted.append(times[1] / 1000)
    return checkbox, counted


def _first_page_in_process(values: dict[str, str], repeats: int, work: Path) -> dict:
    """The first page prepared as the app does, cold (new ledger and cache; keys already fetched)."""
    from percept_core import Curator, Settings
    from percept_core.bursts import page_hashes
    from percept_core.images import PreviewCache

    thumbnails_only, with_hashes = [], []
    for repeat in range(repeats):
        for hashing in (False, True) if repeat % 2 == 0 else (True, False):
            ledger = work / f"first-page-{repeat}-{hashing}.sqlite"
            settings = Settings.load(
                env_file=None,
                local_settings_file=None,
                secrets_files=(),
                environ=values | {"percept_ledger_path": str(ledger)},
            )
            curator = Curator(settings)
            page = curator.blob_page(page_size=PAGE)
            for version in {(b.model_name, b.model_version) for b in page.blobs}:
                curator.locker.key_for(*version)  # keys are a process-wide cache in the app
            cache = PreviewCache()
            started = time.perf_counter()
            if hashing:
                page_hashes(curator, page.blobs, cache=cache)
            curator.previews(page.blobs, cache=cache)
            (with_hashes if hashing else thumbnails_only).append(time.perf_counter() - started)
    return {
        "first_page_thumbnails_seconds": _median(thumbnails_only),
        "first_page_thumbnails_and_hashes_seconds": _median(with_hashes),
    }


def run(*, quick: bool, settings: dict[str, str] | None = None) -> dict:
    """Measure; with `settings` (an app's, by the names users write) use its services and container."""
    from playwright.sync_api import sync_playwright

    from tests.support.chromium import launch_chromium

    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="bench-reviewer-") as tmp:
        work = Path(tmp)
        services = contextlib.nullcontext(dict(settings)) if settings is not None else _own_services(work)
        with services as values:
            values = dict(values)
            values.setdefault("percept_ledger_path", str(work / "ledger.sqlite"))
            result: dict = {"page_tiles": PAGE, "repeats": repeats, "own_services": settings is None}
            result |= _first_page_in_process(values, repeats, work)
            first_tiles, second_tiles = result["tiles_per_page"] = _tiles_per_page(values, work)
            with _app(values, work) as url, sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                result["browser"] = f"chromium {browser.version}"
                opens, nexts, backs = [], [], []
                cold = None
                for repeat in range(repeats + 1):
                    seconds, context, page = _open_page(browser, url, first_tiles)
                    if repeat == 0:
                        cold = seconds
                    else:
                        opens.append(seconds)
                    if repeat > 0 and page.locator(".st-key-top_next button").is_enabled():
                        page.wait_for_function("() => window.__streamlitShortcutsInitialized === true")
                        nexts.append(_page_key(page, "n", second_tiles))
                        backs.append(_page_key(page, "p", first_tiles))
                    if repeat == repeats:
                        checkbox, counted = _select_keys(page, repeats * 2)
                    context.close()
                browser.close()
            _log(f"done: open {_median(opens)} s, key to selection {_median(counted)} s")
    return result | {
        "open_page_cold_process_seconds": round(cold, 4) if cold is not None else None,
        "open_page_seconds": _median(opens),
        "open_page_seconds_range": _range(opens),
        "next_page_key_seconds": _median(nexts),
        "next_page_key_seconds_range": _range(nexts),
        "previous_page_key_seconds": _median(backs),
        "previous_page_key_seconds_range": _range(backs),
        "key_to_checkbox_seconds": _median(checkbox),
        "key_to_checkbox_seconds_range": _range(checkbox),
        "key_to_selection_count_seconds": _median(counted),
        "key_to_selection_count_seconds_range": _range(counted),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reviewer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
