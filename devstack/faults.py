"""Fault plans for the emulators: the failures real Azure services produce, on demand.

A plan is a list of rules, set by an environment variable at start-up or at run time through
`POST /_emulator/faults` (JSON list), `GET` to read it with counters, `DELETE` to clear it:

    {"operation": "POST images*", "kind": "503", "times": 3}
    {"operation": "*", "kind": "429", "probability": 0.3, "retry_after": 1}
    {"operation": "POST images/files", "kind": "reset_after", "times": 2}

Kinds: "429" (with Retry-After), "500", "503", "401", "reset" (the connection drops before the
request is handled), "reset_after" (the request is handled, then the connection drops before the
answer: the case that tests idempotency), "slow" (answer after `delay` seconds).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fastapi import Request

KINDS = ("429", "500", "503", "401", "reset", "reset_after", "slow")


class ConnectionDropped(Exception):
    """Raised inside the ASGI app after a response has started: uvicorn then drops the connection."""


@dataclass
class FaultRule:
    kind: str
    operation: str = "*"  # fnmatch pattern over the emulator's operation names
    times: int | None = None  # fire at most this many times (None: no limit)
    probability: float = 1.0
    skip: int = 0  # let this many matching requests through first
    retry_after: float = 1.0
    delay: float = 0.0
    fired: int = 0
    seen: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")


@dataclass
class FaultPlan:
    rules: list[FaultRule] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)

    @classmethod
    def from_json(cls, text: str | list | None) -> FaultPlan:
        if not text:
            return cls()
        document = json.loads(text) if isinstance(text, str) else text
        if isinstance(document, dict):
            return cls([FaultRule(**rule) for rule in document.get("rules", [])], seed=document.get("seed"))
        return cls([FaultRule(**rule) for rule in document])

    def replace(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self.rules = rules

    def describe(self) -> list[dict]:
        with self._lock:
            return [asdict(rule) for rule in self.rules]

    def pick(self, operation: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if not fnmatch.fnmatchcase(operation, rule.operation):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip or (rule.times is not None and rule.fired >= rule.times):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
        return None


def _json_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _send_error(send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra_headers)})
    await send({"type": "http.response.body", "body": body})


def install_faults(
    app,
    plan: FaultPlan,
    *,
    operation_of: Callable[[str, str], str],
    rate_limit_message: Callable[[str, float], str] | None = None,
) -> None:
    """Wrap `app` (FastAPI) with the plan and add the /_emulator/faults admin routes."""

    @app.get("/_emulator/faults")
    def get_faults() -> list[dict]:
        return plan.describe()

    @app.post("/_emulator/faults")
    async def set_faults(request: Request) -> list[dict]:
        plan.replace(FaultPlan.from_json(await request.json()).rules)
        return plan.describe()

    @app.delete("/_emulator/faults")
    def clear_faults() -> list[dict]:
        plan.replace([])
        return []

    def middleware(inner):
        async def asgi(scope, receive, send):
            if scope["type"] != "http" or scope["path"].startswith("/_emulator/"):
                return await inner(scope, receive, send)
            rule = plan.pick(operation_of(scope["method"], scope["path"]))
            if rule is None:
                return await inner(scope, receive, send)
            kind = rule.kind
            if kind == "slow":
                await asyncio.sleep(rule.delay)
                return await inner(scope, receive, send)
            if kind == "429":
                seconds = max(1, round(rule.retry_after))
                message = (
                    rate_limit_message(operation_of(scope["method"], scope["path"]), seconds)
                    if rate_limit_message
                    else f"Rate limit is exceeded. Try again in {seconds} seconds."
                )
                return await _send_error(
                    send, 429, _json_body(429, "429", message), [(b"retry-after", str(seconds).encode())]
                )
            if kind in ("500", "503", "401"):
                status = int(kind)
                text = {500: "Internal server error", 503: "Service unavailable", 401: "Unauthorized"}[status]
                return await _send_error(send, status, _json_body(status, kind, f"{text} (injected fault)."))
            if kind == "reset_after":

                async def discard(message):  # handle the request fully, drop the answer
                    return None

                await inner(scope, receive, discard)
            # Start an answer and fail: uvicorn drops the connection with nothing usable sent.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
            raise ConnectionDropped(f"injected {kind}")

        return asgi

    app.add_middleware(lambda inner: middleware(inner))
