"""Fault plans for the emulators: the failures real Azure services produce, on demand.

A plan is a list of rules, set at start-up (an environment variable or a command-line flag) or at run
time through `POST /_emulator/faults` (a JSON list, or {"rules": [...], "seed": n}); `GET` reads it with
its counters, `DELETE` clears it:

    {"operation": "CreateImagesFromFiles", "kind": "503", "times": 3}
    {"operation": "*", "kind": "429", "probability": 0.3, "retry_after": 1}
    {"operation": "CreateImages*", "kind": "reset", "phase": "after", "times": 2}

Kinds: "429" (with Retry-After), "500", "503", "401", "reset" (a TCP reset; with phase "after" the
request is handled first and only the answer is lost: the case that tests idempotency; "reset_after"
is short for that), "slow" (the answer is held back `delay` seconds after the work is done).
Operation names are the emulator's (an OperationId for Custom Vision, "GET keys" for MM), fnmatch
patterns allowed, matched case-insensitively.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import math
import random
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# --- fault injection ----------------------------------------------------------------------------------

FAULT_KINDS = ("429", "500", "503", "401", "reset", "reset_after", "slow")
_RULE_FIELDS = {"operation", "kind", "times", "probability", "retry_after", "delay", "phase", "skip"}


@dataclass
class FaultRule:
    """One rule of a fault plan; the first rule that matches a request and fires decides its fate."""

    # An OperationId such as "CreateImagesFromFiles", or an fnmatch pattern ("CreateImages*", "*"), matched
    # case-insensitively. "*" covers the training API only; image downloads are "GetImageBlob".
    operation: str = "*"
    kind: str = "500"  # one of FAULT_KINDS; "reset" closes the connection with no response at all
    times: int | None = None  # fire this many times, then stay quiet; None = no limit
    probability: float | None = None  # fire with this probability on each matching request
    retry_after: float | None = None  # Retry-After for 429 (default 1) and 503 (none unless given)
    delay: float = 1.0  # seconds a "slow" answer is held back
    # "before": the request is dropped unprocessed; "after": it is processed and only the answer is lost.
    phase: str = "before"
    skip: int = 0  # let this many matching requests through before the rule may fire
    fired: int = 0
    seen: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise ValueError("a fault rule is a JSON object")
        unknown = set(raw) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        kind = str(raw.get("kind", "500")).lower()
        phase = str(raw.get("phase", "before")).lower()
        if kind == "reset_after":
            kind, phase = "reset", "after"
        rule = cls(
            operation=str(raw.get("operation", "*")),
            kind=kind,
            times=None if raw.get("times") is None else int(raw["times"]),
            probability=None if raw.get("probability") is None else float(raw["probability"]),
            retry_after=None if raw.get("retry_after") is None else float(raw["retry_after"]),
            delay=float(raw.get("delay", 1.0)),
            phase=phase,
            skip=int(raw.get("skip", 0)),
        )
        if rule.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {rule.kind!r}")
        if (rule.times is not None and rule.times < 0) or rule.skip < 0:
            raise ValueError("times and skip must be >= 0")
        if rule.probability is not None and not 0.0 <= rule.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if rule.delay < 0 or (rule.retry_after is not None and rule.retry_after < 0):
            raise ValueError("delay and retry_after must be >= 0")
        if rule.phase not in ("before", "after"):
            raise ValueError("phase must be 'before' or 'after'")
        return rule

    def matches(self, operation_id: str, wildcard_excludes: frozenset[str] = frozenset()) -> bool:
        if self.operation == "*":
            return operation_id not in wildcard_excludes
        return fnmatch.fnmatchcase(operation_id.lower(), self.operation.lower())

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "kind": self.kind,
            "times": self.times,
            "probability": self.probability,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "phase": self.phase,
            "skip": self.skip,
            "seen": self.seen,
            "fired": self.fired,
            "remaining": None if self.times is None else max(0, self.times - self.fired),
        }


def parse_fault_plan(raw: Any) -> tuple[list[FaultRule], int | None]:
    """A plan is a list of rules, or {"rules": [...], "seed": n} for repeatable probabilities."""
    seed = None
    if isinstance(raw, dict):
        seed = raw.get("seed")
        raw = raw.get("rules", [])
    if not isinstance(raw, list):
        raise ValueError("a fault plan is a list of rules or {'rules': [...], 'seed': n}")
    return [FaultRule.from_json(r) for r in raw], None if seed is None else int(seed)


class FaultPlan:
    """The rules in force; thread-safe. `wildcard_excludes` are operations "*" does not cover."""

    def __init__(
        self,
        rules: Sequence[FaultRule] = (),
        *,
        seed: int | None = None,
        wildcard_excludes: frozenset[str] = frozenset(),
    ) -> None:
        self._rules: list[FaultRule] = list(rules)
        self._seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.wildcard_excludes = wildcard_excludes

    @classmethod
    def from_json(cls, raw: Any, **kwargs: Any) -> FaultPlan:
        """A plan from JSON text or the parsed list/dict; empty text gives an empty plan."""
        if isinstance(raw, str):
            raw = json.loads(raw) if raw.strip() else []
        rules, seed = parse_fault_plan(raw or [])
        return cls(rules, seed=seed, **kwargs)

    def replace(self, rules: Sequence[FaultRule], seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            self._seed = seed
            self._rng = random.Random(seed)

    def clear(self) -> None:
        self.replace([])

    def pick(self, operation_id: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(operation_id, self.wildcard_excludes):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip or rule.exhausted:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]


# --- connection reset ---------------------------------------------------------------------------------


async def abort_connection(receive: Receive, send: Send) -> None:
    """Close the client's connection with a TCP reset and no response at all.

    ASGI has no verb for this, so the transport is taken from uvicorn's request cycle (``receive`` is its
    bound method). SO_LINGER 0 turns the close into an RST, so the client sees "connection reset" rather
    than a clean EOF. Servers that hide the transport get a response that dies after its headers instead.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # uvicorn learns about the closed connection on its next loop turn; waiting for the disconnect
        # event stops it from trying to send a 500 of its own.
        with contextlib.suppress(Exception):
            while (await asyncio.wait_for(receive(), 2.0))["type"] != "http.disconnect":
                pass
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    raise ConnectionAbortedError("fault injection: connection reset")


async def drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


def install_faults(
    app,
    plan: FaultPlan,
    *,
    operation_of: Callable[[str, str], str],
    on_fault: Callable[[str, str], None] | None = None,
) -> None:
    """Apply `plan` to every request of a FastAPI `app` (but /_emulator/) and add the admin routes."""

    async def set_faults(request: Request) -> JSONResponse:
        try:
            fresh = FaultPlan.from_json(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        plan.replace(fresh._rules, fresh._seed)
        return JSONResponse(plan.snapshot())

    app.add_api_route("/_emulator/faults", lambda: plan.snapshot(), methods=["GET"])
    app.add_api_route("/_emulator/faults", set_faults, methods=["POST"])
    app.add_api_route("/_emulator/faults", lambda: plan.clear() or [], methods=["DELETE"])

    def middleware(inner: ASGIApp) -> ASGIApp:
        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/_emulator/"):
                return await inner(scope, receive, send)
            operation = operation_of(scope["method"], scope["path"])
            rule = plan.pick(operation)
            if rule is None:
                return await inner(scope, receive, send)
            if on_fault:
                on_fault(operation, rule.kind)
            if rule.kind in ("429", "500", "503", "401"):
                await drain(receive)
                status = int(rule.kind)
                headers = [(b"content-type", b"application/json")]
                if rule.kind == "429" or (rule.kind == "503" and rule.retry_after is not None):
                    retry = max(0, math.ceil(rule.retry_after if rule.retry_after is not None else 1))
                    headers.append((b"retry-after", str(retry).encode()))
                body = json.dumps({"error": {"code": rule.kind, "message": f"Injected fault {rule.kind}."}}).encode()
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return None
            if rule.kind == "reset" and rule.phase == "before":
                await drain(receive)
                return await abort_connection(receive, send)
            held: list[dict] = []

            async def hold(message: dict) -> None:  # the work is done; the answer waits or is lost
                held.append(message)

            await inner(scope, receive, hold)
            if rule.kind == "reset":
                return await abort_connection(receive, send)
            await asyncio.sleep(rule.delay)
            for message in held:
                await send(message)
            return None

        return asgi

    app.add_middleware(lambda inner: middleware(inner))
