"""`make azure-probe`: settle, against your own Azure services, the behaviours public documentation leaves uncertain.

With your Custom Vision training key and endpoint (the usual settings, read by `Settings.load()`), the probe
creates a scratch project `percept-curator-probe-<random>`, sends the few calls that tell each reading apart,
deletes the project (always, in a `finally`; if that fails it says so, with the project id) and prints a
Markdown table to paste into an issue, with the number of transactions it used. `--provoke-429`,
`--measure-pace` and `--mm` opt in to more (bounded) calls.

A diagnostic tool, not part of percept_core: it speaks plain REST (`requests`) to the v3.4-preview routes the
Custom Vision SDK 3.1.1 calls, so raw statuses, headers and JSON stay visible, and imports the SDK's own
serializer (msrest) to show how the SDK reads a timestamp; the rule that only `percept_core/customvision.py`
imports the SDK is about percept_core, not about this tool. TLS is always verified and no secret is printed.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import secrets
import struct
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
from PIL import Image

from percept_core import Settings
from percept_core.errors import ConfigError
from percept_core.names import is_valid_name

API = "/customvision/v3.4-preview/training"  # the SDK 3.1.1 route (reference/customvision.md §1)
PROJECT_PREFIX = "percept-curator-probe-"
SIDES = (10_000, 10_001, 10_240, 10_241)  # the two readings of "largest side", each side of its limit
SIDE_HEIGHT = 420  # keeps every width under the 25:1 aspect ratio, so only the side can be refused
SIZE_CONTROL = 6_000_000  # accepted under both readings of "6 MB"
SIZE_PROBE = 6_100_000  # accepted only if "6 MB" means 6 MiB (6,291,456 bytes)
MAX_BURST = 20  # --provoke-429: at most this many quick GetTags calls
MAX_PACE_CALLS = 40  # --measure-pace: at most this many upload calls
DEFAULT_PACE_CALLS = 24
MAX_RETRIES = 4  # an ordinary call answered 429 is sent again at most this many times
EXPIRED_TOKEN_ENV = "PERCEPT_PROBE_MM_EXPIRED_TOKEN"  # noqa: S105 - a variable name, not a secret
REDACTED = "***"  # as Settings shows a secret


@dataclass
class Finding:
    """One row of the table: what was asked, sent and answered, and which reading holds."""

    number: str
    question: str
    sent: str = ""
    came_back: str = ""
    reading: str = "not run"


@dataclass
class Throttled:
    """A 429 as it came back: the operation, its Retry-After header (None when absent) and its body."""

    operation: str
    retry_after: str | None
    code: str
    message: str


# --- output ------------------------------------------------------------------------------------------


class Output:
    """Writes text with every secret replaced by `***` (the settings' secrets and tokens met on the way)."""

    def __init__(self, out: TextIO, err: TextIO, secrets_: Sequence[str] = ()) -> None:
        self.out = out
        self.err = err
        self._secrets: list[str] = []
        for value in secrets_:
            self.add_secret(value)

    def add_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets.append(value)
            self._secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, REDACTED)
        return text

    def print(self, text: str = "") -> None:
        self.out.write(self.scrub(text) + "\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        self.err.write(self.scrub(f"azure-probe: {text}") + "\n")
        self.err.flush()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(value: object, limit: int = 90) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the Training API, counted ------------------------------------------------------------------------


class TrainingApi:
    """Plain REST on the Custom Vision Training API: every request is counted (each is a transaction).

    Ordinary calls are spaced `interval` seconds apart; a 429 is recorded (the first one is question 6)
    and the call is sent again after its Retry-After (1 s when absent), at most MAX_RETRIES times.
    """

    def __init__(
        self,
        endpoint: str,
        training_key: str,
        *,
        interval: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        timeout: tuple[float, float] = (10.0, 180.0),
    ) -> None:
        self.base = endpoint.rstrip("/") + API
        self.session = requests.Session()  # verifies TLS (requests' default); nothing turns it off
        self.session.headers.update({"Training-key": training_key, "Accept": "application/json"})
        self.interval = interval
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout
        self.calls = 0
        self.throttled = 0
        self.images_sent = 0
        self.first_429: Throttled | None = None
        self._last: float | None = None

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        paced: bool = True,
        retry: bool = True,
    ) -> requests.Response:
        """One request (and its retries after 429); the response whatever its status."""
        for attempt in range(MAX_RETRIES + 1):
            if paced and self._last is not None:
                wait = self.interval - (self.clock() - self._last)
                if wait > 0:
                    self.sleep(wait)
            response = self.session.request(method, self.base + path, params=params, json=body, timeout=self.timeout)
            self.calls += 1
            self._last = self.clock()
            if response.status_code != 429:
                return response
            self.throttled += 1
            code, message = error_of(response)
            if self.first_429 is None:
                self.first_429 = Throttled(operation, response.headers.get("Retry-After"), code, message)
            if not retry or attempt == MAX_RETRIES:
                return response
            self.sleep(retry_after_seconds(response))
        raise AssertionError("unreachable")

    def upload(
        self,
        project_id: str,
        entries: Sequence[tuple[str, bytes]],
        *,
        metadata: Mapping[str, str] | None = None,
        paced: bool = True,
        retry: bool = True,
    ) -> requests.Response:
        """CreateImagesFromFiles, as the SDK sends it (base64 contents, batch metadata)."""
        body: dict[str, Any] = {
            "images": [{"name": name, "contents": base64.b64encode(data).decode("ascii")} for name, data in entries]
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        self.images_sent += len(entries)
        return self.call(
            "CreateImagesFromFiles",
            "POST",
            f"/projects/{project_id}/images/files",
            body=body,
            paced=paced,
            retry=retry,
        )


def retry_after_seconds(response: requests.Response) -> float:
    """The wait a 429 asks for: its Retry-After, else the "retry after N second" of its message, else 1 s."""
    header = response.headers.get("Retry-After", "")
    if header.strip().isdigit():
        return min(60.0, max(1.0, float(header)))
    match = re.search(r"retry after (\d+) second", error_of(response)[1], re.IGNORECASE)
    return min(60.0, max(1.0, float(match.group(1)))) if match else 1.0


def error_of(response: requests.Response) -> tuple[str, str]:
    """(code, message) of an error body: the service's flat shape or the gateway's {"error": {...}}."""
    try:
        document = response.json()
    except ValueError:
        return "", _short(response.text.strip(), 80)
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        document = document["error"]
    if not isinstance(document, dict):
        return "", ""
    return str(document.get("code") or ""), str(document.get("message") or "")


def results_of(response: requests.Response) -> list[dict[str, Any]]:
    """The per-image results of an ImageCreateSummary ([] for an error answer)."""
    if response.status_code not in (200, 207):
        return []
    try:
        images = response.json().get("images") or []
    except (ValueError, AttributeError):
        return []
    return [r for r in images if isinstance(r, dict)]


def describe(response: requests.Response, *, entries: bool = True) -> str:
    """Status, error code and message, or the summary's isBatchSuccessful and per-entry statuses."""
    if response.status_code >= 400:
        code, message = error_of(response)
        return f'{response.status_code} {code or "(no code)"}: "{_short(message, 70)}"'
    text = str(response.status_code)
    if not entries:
        return text
    try:
        document = response.json()
    except ValueError:
        return text
    if isinstance(document, dict) and "isBatchSuccessful" in document:
        text += f", isBatchSuccessful={str(document['isBatchSuccessful']).lower()}"
        for result in results_of(response):
            image = result.get("image")
            shown = f"image {str(image.get('id', '?'))[:8]}" if isinstance(image, dict) else "image null"
            text += f"; {result.get('sourceUrl')}: {result.get('status')} ({shown})"
    return text


# --- images -------------------------------------------------------------------------------------------


def noise_png(side: int = 16) -> bytes:
    """A tiny PNG of random pixels: its bytes never repeat, so it is never an OKDuplicate by accident."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


def wide_png(width: int, height: int = SIDE_HEIGHT) -> bytes:
    """A flat grey PNG of that size: a few kilobytes however wide."""
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


def padded_png(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a small image plus a private ancillary chunk of noise.

    Decoders skip ancillary chunks they do not know (PNG spec §5.4), so only the byte count can be refused.
    """
    base = noise_png()
    iend = base.rindex(b"IEND") - 4  # the IEND chunk: length (4), type, CRC
    length = size - len(base) - 12
    if length < 0:
        raise ValueError(f"{size} bytes is too small for a padded PNG")
    data = os.urandom(length)
    chunk = struct.pack(">I", length) + b"prVt" + data + struct.pack(">I", zlib.crc32(b"prVt" + data) & 0xFFFFFFFF)
    padded = base[:iend] + chunk + base[iend:]
    assert len(padded) == size
    return padded


# --- the questions ------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One run against one endpoint: the scratch project, the findings, and what was counted."""

    api: TrainingApi
    out: Output
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    project_id: str = ""
    findings: dict[str, Finding] = field(default_factory=dict)

    def finding(self, number: str, question: str) -> Finding:
        self.findings[number] = Finding(number, question)
        return self.findings[number]

    # 1 and 2 -----------------------------------------------------------------------------------------

    def duplicates(self) -> None:
        q1 = self.finding("1", "A CreateImagesFromFiles batch whose images are all already in the project")
        q2 = self.finding("2", "What `image` holds for an OKDuplicate entry")
        a, b = noise_png(), noise_png()
        first = self.api.upload(self.project_id, [("dup-a.png", a), ("dup-b.png", b)])
        stored = {r.get("sourceUrl"): (r.get("image") or {}).get("id") for r in results_of(first)}
        q1.sent = "2 new images, then the same 2 again in one batch"
        if first.status_code != 200 or not all(stored.values()):
            q1.came_back = f"first upload: {describe(first)}"
            q1.reading = "inconclusive: the first upload did not store both images"
            return
        again = self.api.upload(self.project_id, [("dup-a.png", a), ("dup-b.png", b)])
        q1.came_back = describe(again)
        statuses = [r.get("status") for r in results_of(again)]
        duplicates = [r for r in results_of(again) if r.get("status") == "OKDuplicate"]
        if again.status_code in (200, 207) and statuses == ["OKDuplicate", "OKDuplicate"]:
            q1.reading = f"**{again.status_code} with OKDuplicate per image**: the documented reading"
        elif again.status_code == 400:
            code, _ = error_of(again)
            q1.reading = (
                f"**refused whole: 400 {code or '(no code)'}** (the stricter reading, azure-sdk-for-python #17734)"
            )
        else:
            q1.reading = "neither reading: see what came back"
        q2.sent = "the duplicates of question 1"
        source = again
        if not duplicates:
            # The duplicates-only batch was refused: a duplicate beside a new image gets a per-entry answer.
            source = self.api.upload(self.project_id, [("dup-a.png", a), ("fresh.png", noise_png())])
            duplicates = [r for r in results_of(source) if r.get("status") == "OKDuplicate"]
            q2.sent = "1 image already in the project + 1 new image in one batch"
        q2.came_back = describe(source)
        if not duplicates:
            q2.reading = "inconclusive: no OKDuplicate entry came back"
            return
        image = duplicates[0].get("image")
        existing = stored.get(duplicates[0].get("sourceUrl"))
        if image is None:
            q2.reading = "**nothing (`image` is null)**: the stricter reading; match duplicates by content hash"
        elif isinstance(image, dict) and image.get("id") == existing:
            q2.reading = "**the existing image (same id)**: the documented reading"
        else:
            q2.reading = "**an image with another id** than the stored one: neither reading"

    # 3 -------------------------------------------------------------------------------------------------

    def largest_side(self) -> None:
        q = self.finding(
            "3", "The largest image side accepted: 10,240 px (documented) or 10,000 px (azure-docs #117855)"
        )
        names = {f"side-{w}x{SIDE_HEIGHT}.png": w for w in SIDES}
        q.sent = "one batch of flat PNGs " + ", ".join(f"{w:,}" for w in SIDES) + f" x {SIDE_HEIGHT} px"
        response = self.api.upload(self.project_id, [(name, wide_png(w)) for name, w in names.items()])
        q.came_back = describe(response)
        status = {names.get(r.get("sourceUrl", "")): r.get("status") for r in results_of(response)}
        accepted = [w for w in SIDES if status.get(w) == "OK"]
        if len(status) != len(SIDES):
            q.reading = "inconclusive: no per-image answer for every size"
        elif accepted == [10_000, 10_001, 10_240]:
            q.reading = "**10,240 px**: the documented reading (10,241 refused)"
        elif accepted == [10_000]:
            q.reading = "**10,000 px**: the stricter reading (MicrosoftDocs/azure-docs #117855)"
        else:
            q.reading = f"neither reading: accepted {', '.join(f'{w:,}' for w in accepted) or 'none'}"

    # 4 -------------------------------------------------------------------------------------------------

    def largest_upload(self) -> None:
        q = self.finding("4", 'The largest upload: "6 MB" = 6 MiB (6,291,456 bytes) or 6,000,000 bytes')
        q.sent = f"a valid PNG of {SIZE_CONTROL:,} bytes, then one of {SIZE_PROBE:,} bytes (padded with noise)"
        control = self.api.upload(self.project_id, [(f"bytes-{SIZE_CONTROL}.png", padded_png(SIZE_CONTROL))])
        probe = self.api.upload(self.project_id, [(f"bytes-{SIZE_PROBE}.png", padded_png(SIZE_PROBE))])
        q.came_back = f"{SIZE_CONTROL:,}: {describe(control)}. {SIZE_PROBE:,}: {describe(probe)}"
        control_ok = [r.get("status") for r in results_of(control)] == ["OK"]
        probe_status = [r.get("status") for r in results_of(probe)]
        if not control_ok:
            q.reading = f"inconclusive: even {SIZE_CONTROL:,} bytes was not accepted"
        elif probe_status == ["OK"]:
            q.reading = f"**6 MiB (6,291,456 bytes)**: the documented reading ({SIZE_PROBE:,} accepted)"
        elif probe_status == ["ErrorImageSize"] or (probe.status_code == 400 and "Size" in error_of(probe)[0]):
            q.reading = f"**6,000,000 bytes**: the stricter reading ({SIZE_PROBE:,} refused)"
        else:
            q.reading = "neither reading: see what came back"

    # 8 -------------------------------------------------------------------------------------------------

    def empty_metadata(self) -> None:
        q = self.finding("8", "Whether an empty metadata value is accepted on an image")
        q.sent = 'a new image with batch metadata {"probe": ""}'
        response = self.api.upload(self.project_id, [("metadata.png", noise_png())], metadata={"probe": ""})
        q.came_back = describe(response)
        statuses = [r.get("status") for r in results_of(response)]
        if response.status_code in (200, 207) and statuses == ["OK"]:
            stored = (results_of(response)[0].get("image") or {}).get("metadata")
            q.came_back += f"; metadata {stored}" if stored is not None else ""
            q.reading = "**accepted**: the documented reading"
        elif response.status_code == 400:
            code, _ = error_of(response)
            q.reading = f"**refused: 400 {code or '(no code)'}**: the stricter reading; send no empty values"
        else:
            q.reading = "neither reading: see what came back"

    # 5 -------------------------------------------------------------------------------------------------

    def timestamps(self) -> None:
        from msrest.serialization import Deserializer  # the SDK's own parser, to show what callers get

        q = self.finding("5", "Image `created` timestamps: with a timezone, or naive")
        q.sent = "GetImages (take=1), raw JSON"
        response = self.api.call("GetImages", "GET", f"/projects/{self.project_id}/images", params={"take": "1"})
        try:
            created = response.json()[0]["created"] if response.status_code == 200 else None
        except (ValueError, LookupError, TypeError):
            created = None
        if not isinstance(created, str):
            q.came_back = describe(response, entries=False)
            q.reading = "inconclusive: no image with a `created` text came back"
            return
        parsed = Deserializer.deserialize_iso(created)
        sdk = f"aware (UTC offset {parsed.utcoffset()})" if parsed.tzinfo else "naive (tzinfo None)"
        q.came_back = f'200, created "{created}"; the SDK (msrest) reads it as {sdk}'
        if re.search(r"(Z|[+-]\d{2}:?\d{2})$", created):
            q.reading = "**with a timezone**: the documented reading (aware datetimes)"
        else:
            q.reading = "**naive (no timezone)**: the stricter reading; treat them as UTC"

    # 6 -------------------------------------------------------------------------------------------------

    def provoke_429(self, burst: int) -> None:
        q = self.finding("6", "Whether a 429 carries `Retry-After`")
        q.sent = f"a burst of at most {burst} quick GetTags calls, stopped at the first 429"
        for sent in range(1, burst + 1):
            response = self.api.call("GetTags", "GET", f"/projects/{self.project_id}/tags", paced=False, retry=False)
            if response.status_code == 429:
                q.sent += f" (429 after {sent})"
                self.sleep(retry_after_seconds(response))  # let the window recover before the next call
                return
        q.sent += f" (no 429 in {burst})"

    def record_429(self) -> None:
        q = self.findings.get("6") or self.finding("6", "Whether a 429 carries `Retry-After`")
        seen = self.api.first_429
        if not q.sent:
            q.sent = "nothing on purpose (opt in with --provoke-429); any 429 the other calls met"
        if seen is None:
            q.came_back = "no 429"
            q.reading = "**not observed**"
            return
        header = f"Retry-After: {seen.retry_after}" if seen.retry_after is not None else "no Retry-After header"
        q.came_back = f'429 on {seen.operation}, {header}, code {seen.code or "(none)"}: "{_short(seen.message, 80)}"'
        if seen.retry_after is not None:
            q.reading = f"**Retry-After present** ({seen.retry_after} s): the documented reading"
        else:
            q.reading = "**no Retry-After**: the stricter reading; wait by the message or back off"

    # 7 -------------------------------------------------------------------------------------------------

    def measure_pace(self, calls: int, tier: str) -> None:
        q = self.finding("7", f"The upload pace the key's tier allows (setting custom_vision_tier: {tier})")
        q.sent = f"at most {calls} one-image uploads back to back, waiting out each 429"
        self.sleep(1.0)  # start from a full second's allowance
        started = self.clock()
        throttled_at: list[float] = []
        accepted_at: list[float] = []
        for _ in range(calls):
            response = self.api.upload(self.project_id, [("pace.png", noise_png())], paced=False, retry=False)
            now = self.clock()
            if response.status_code == 429:
                throttled_at.append(now)
                self.sleep(retry_after_seconds(response))
            elif response.status_code in (200, 207):
                accepted_at.append(now)
        burst = sum(1 for t in accepted_at if not throttled_at or t <= throttled_at[0])
        q.came_back = f"{len(accepted_at)} accepted, {len(throttled_at)} answered 429; {burst} before the first 429"
        if len(throttled_at) >= 2 and throttled_at[-1] > throttled_at[0]:
            between = sum(1 for t in accepted_at if throttled_at[0] < t <= throttled_at[-1])
            rate = between / (throttled_at[-1] - throttled_at[0])
            q.came_back += f"; {between} accepted in the {throttled_at[-1] - throttled_at[0]:.1f} s between 429s"
            q.reading = f"**≈{rate:.1f} uploads/s** sustained (burst of {burst})"
        elif throttled_at:
            q.reading = f"**burst of {burst}** before a 429; too few calls for a sustained rate (raise --pace-calls)"
        else:
            elapsed = max(self.clock() - started, 1e-9)
            q.reading = f"**no 429**: at least {len(accepted_at) / elapsed:.1f} uploads/s over {elapsed:.1f} s"


# --- the MM server ------------------------------------------------------------------------------------


@dataclass
class MMProbe:
    """Question 9: how the Percept MM server answers a bad bearer token and an unknown model version."""

    settings: Settings
    out: Output
    model: str
    expired_token: str | None = None
    save_token: Path | None = None
    calls: int = 0

    def run(self) -> list[Finding]:
        token_q = Finding("9a", "MM: how an invalid or expired bearer token is answered (401 or 403)")
        version_q = Finding("9b", "MM: how an unknown model version is answered (404, or 200 with a text body)")
        base = (self.settings.mm_server_url or "").rstrip("/")
        version = f"probe-{secrets.token_hex(4)}"
        path = f"/api/v1/keys/{self.model}/{version}"
        with requests.Session() as session:
            token, expires_in = self._login(session, base)
            self.out.add_secret(token)
            if self.save_token is not None:
                fd = os.open(self.save_token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)  # also when the file was there before, with wider permissions
                with os.fdopen(fd, "w", encoding="utf-8") as saved:
                    saved.write(token)
                self.out.progress(
                    f"saved this run's MM bearer token to {self.save_token} (expires in {expires_in} s); after that,"
                    f' run again with {EXPIRED_TOKEN_ENV}="$(cat {self.save_token})" to ask about an expired token'
                )
            garbage = secrets.token_urlsafe(32)
            self.out.add_secret(garbage)
            answers = [("a made-up token", self._get(session, base + path, garbage))]
            if self.expired_token:
                answers.append(("an expired token", self._get(session, base + path, self.expired_token)))
            token_q.sent = f"GET {path} with " + " and with ".join(what for what, _ in answers)
            token_q.came_back = "; ".join(f"{what}: {r.status_code}" for what, r in answers)
            readings = []
            for what, response in answers:
                strictness = "the stricter reading" if response.status_code == 403 else "the documented reading"
                readings.append(f"**{response.status_code}** for {what} ({strictness})")
            if not self.expired_token:
                readings.append(f"expired token not tried (set {EXPIRED_TOKEN_ENV}; see --mm-save-token)")
            token_q.reading = "; ".join(readings)
            unknown = self._get(session, base + path, token)
            version_q.sent = f"GET {path} (a random unknown version) with a valid token"
            content_type = unknown.headers.get("Content-Type", "(none)")
            body = unknown.text.strip()
            shown = f'"{_short(body, 70)}"' if re.search(r"\s", body) else f"{len(body)} characters, not shown"
            version_q.came_back = f"{unknown.status_code}, {content_type}, body {shown}"
            if unknown.status_code == 404:
                version_q.reading = "**404**: the documented reading"
            elif unknown.status_code == 200:
                version_q.reading = (
                    "**200 with a text body**: the stricter reading; never take a 200 as a key unchecked"
                )
            else:
                version_q.reading = f"**{unknown.status_code}**: neither reading"
        return [token_q, version_q]

    def _login(self, session: requests.Session, base: str) -> tuple[str, object]:
        secret = self.settings.mm_bootstrap_secret or self._secret_from_key_vault(session, base)
        self.out.add_secret(secret)
        response = session.post(
            base + "/api/v1/login", json={"CLIENT_SECRET": secret, "CLIENT_ID": "TBD"}, timeout=(10, 60)
        )
        self.calls += 1
        response.raise_for_status()
        document = response.json()
        return str(document["access_token"]), document.get("expires_in", "an unknown number of")

    def _secret_from_key_vault(self, session: requests.Session, base: str) -> str:
        from azure.keyvault.secrets import SecretClient

        bootstrap = session.get(base + "/api/v1/bootstrap", timeout=(10, 60))
        self.calls += 1
        bootstrap.raise_for_status()
        info = bootstrap.json()
        vault = self.settings.mm_key_vault_url or f"https://{info['kv']}.vault.azure.net"
        with SecretClient(vault, self.settings.credential()) as client:
            return str(client.get_secret(info["key"]).value)

    def _get(self, session: requests.Session, url: str, token: str) -> requests.Response:
        self.calls += 1
        return session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=(10, 60))


# --- the run ------------------------------------------------------------------------------------------


def shown_endpoint(endpoint: str) -> str:
    """The endpoint without the resource name (users paste this in public issues)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    labels = host.split(".")
    if len(labels) > 2 and not host.replace(".", "").isdigit():
        host = ".".join(["<resource>", *labels[1:]])
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.azure_probe",
        description="Settle, against your own services, the Custom Vision (and MM) behaviours docs leave uncertain.",
    )
    parser.add_argument(
        "--provoke-429",
        action="store_true",
        help=f"send a burst of at most --burst (<= {MAX_BURST}) quick GetTags calls and report the first 429",
    )
    parser.add_argument("--burst", type=int, default=MAX_BURST, help=f"GetTags calls in that burst (1..{MAX_BURST})")
    parser.add_argument(
        "--measure-pace", action="store_true", help="measure the upload pace the tier allows (bounded by --pace-calls)"
    )
    parser.add_argument(
        "--pace-calls",
        type=int,
        default=DEFAULT_PACE_CALLS,
        help=f"one-image uploads for --measure-pace (1..{MAX_PACE_CALLS})",
    )
    parser.add_argument("--mm", action="store_true", help="also ask the MM server (needs the MM settings)")
    parser.add_argument("--mm-model", default="percept-curator-probe", help="a model name for the MM questions")
    parser.add_argument(
        "--mm-save-token", type=Path, help="write this run's MM bearer token to FILE (mode 0600) for a later run"
    )
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between ordinary calls (default 0.5: 2 calls/s)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the probe; 0 when it ran and cleaned up, 1 when the project could not be made or deleted, 2 on setup."""
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    output = Output(out or sys.stdout, err or sys.stderr)
    if not 1 <= args.burst <= MAX_BURST or not 1 <= args.pace_calls <= MAX_PACE_CALLS:
        output.progress(f"--burst must be 1..{MAX_BURST} and --pace-calls 1..{MAX_PACE_CALLS}")
        return 2
    if not is_valid_name(args.mm_model):
        output.progress(f"--mm-model {args.mm_model!r} is not a valid model name")
        return 2
    try:
        settings = settings or Settings.load()
        settings.require("custom_vision_endpoint", "custom_vision_training_key")
        if args.mm:
            settings.require("mm_server_url")
    except ConfigError as exc:
        output.progress(str(exc))
        return 2
    for value in settings.secret_values():
        output.add_secret(value)
    expired_token = environ.get(EXPIRED_TOKEN_ENV) or None
    output.add_secret(expired_token)
    assert settings.custom_vision_endpoint and settings.custom_vision_training_key
    api = TrainingApi(
        settings.custom_vision_endpoint,
        settings.custom_vision_training_key,
        interval=max(0.0, args.interval),
        sleep=sleep,
        clock=clock,
    )
    probe = Probe(api, output, sleep, clock)
    started = datetime.now(UTC)
    name = PROJECT_PREFIX + secrets.token_hex(4)
    project_line = ""
    status = 0
    try:
        output.progress(f"creating the scratch project {name}")
        try:
            created = api.call(
                "CreateProject", "POST", "/projects", params={"name": name, "classificationType": "Multilabel"}
            )
        except requests.RequestException as exc:
            output.progress(f"could not reach {shown_endpoint(api.base)}: {exc.__class__.__name__}")
            return 2
        if created.status_code != 200:
            hint = " Check custom_vision_training_key and custom_vision_endpoint." if created.status_code == 401 else ""
            output.progress(f"could not create the scratch project: {describe(created)}.{hint}")
            return 2 if created.status_code == 401 else 1
        probe.project_id = str(created.json()["id"])
        steps: list[tuple[str, Callable[[], None]]] = [
            ("questions 1-2: duplicates", probe.duplicates),
            ("question 3: largest side", probe.largest_side),
            ("question 4: largest upload (two ~6 MB uploads)", probe.largest_upload),
            ("question 8: empty metadata value", probe.empty_metadata),
            ("question 5: timestamps", probe.timestamps),
        ]
        if args.provoke_429:
            steps.append(("question 6: a bounded burst for a 429", lambda: probe.provoke_429(args.burst)))
        if args.measure_pace:
            steps.append(
                ("question 7: upload pace", lambda: probe.measure_pace(args.pace_calls, settings.custom_vision_tier))
            )
        for label, step in steps:
            output.progress(label)
            before = set(probe.findings)
            try:
                step()
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                failure = f"error: {exc.__class__.__name__}: {_short(exc, 120)}"
                output.progress(f"{label} failed: {failure}")
                for number in set(probe.findings) - before:
                    probe.findings[number].reading = failure
    finally:
        if probe.project_id:
            try:
                deleted = api.call("DeleteProject", "DELETE", f"/projects/{probe.project_id}")
                answer = describe(deleted, entries=False)
            except requests.RequestException as exc:
                deleted, answer = None, exc.__class__.__name__
            if deleted is not None and deleted.status_code == 204:
                project_line = f"scratch project {name} (id {probe.project_id}): created and deleted"
            else:
                status = 1
                project_line = (
                    f"**scratch project {name} (id {probe.project_id}) was NOT deleted** ({answer}):"
                    " delete it in the Custom Vision portal (customvision.ai) or with DELETE /projects/<id>"
                )
                output.progress(f"could not delete the scratch project {name}, id {probe.project_id} ({answer})")
        api.close()
    probe.record_429()
    if "7" not in probe.findings:
        probe.finding("7", "The upload pace the key's tier allows").reading = "not measured (opt in: --measure-pace)"
    mm_calls = 0
    if args.mm:
        output.progress("question 9: the MM server")
        mm = MMProbe(settings, output, args.mm_model, expired_token, args.mm_save_token)
        try:
            for finding in mm.run():
                probe.findings[finding.number] = finding
        except (requests.RequestException, ValueError, KeyError, TypeError, OSError) as exc:
            probe.finding(
                "9", "MM: bad tokens and unknown versions"
            ).reading = f"error: {exc.__class__.__name__}: {_short(exc, 120)}"
        mm_calls = mm.calls
    else:
        probe.finding("9", "MM: bad tokens and unknown versions").reading = "not run (opt in: --mm)"
    _report(output, probe, settings, started, project_line, mm_calls)
    return status


def _report(
    output: Output, probe: Probe, settings: Settings, started: datetime, project_line: str, mm_calls: int
) -> None:
    api = probe.api
    output.print("### Percept Curator azure-probe")
    output.print()
    output.print(f"- run: {started:%Y-%m-%d %H:%M} UTC, `python -m tools.azure_probe`")
    output.print(
        f"- endpoint: {shown_endpoint(settings.custom_vision_endpoint or '')}{API}"
        f" (the route SDK 3.1.1 calls); tier setting: {settings.custom_vision_tier}"
    )
    if project_line:
        output.print(f"- {project_line}")
    output.print()
    output.print("| # | question | what was sent | what came back | reading |")
    output.print("| --- | --- | --- | --- | --- |")
    for number in sorted(probe.findings, key=lambda n: (int(n[0]), n)):
        f = probe.findings[number]
        cells = (f.number, f.question, f.sent or "–", f.came_back or "–", f.reading)
        output.print("| " + " | ".join(_cell(c) for c in cells) + " |")
    output.print()
    output.print(
        f"Transactions used: {api.calls} Custom Vision calls ({api.throttled} answered 429;"
        f" {api.images_sent} images sent, deleted with the project)"
        + (f"; {mm_calls} MM server calls" if mm_calls else "")
        + "."
    )


if __name__ == "__main__":
    sys.exit(main())
