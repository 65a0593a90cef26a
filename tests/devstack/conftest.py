"""Fixtures for the Custom Vision emulator tests: a live emulator per test, the real SDK client, images.

Every emulator started here records the responses it sends; at teardown each one is validated against the
vendored v3.4-preview OpenAPI document, so every test is also a conformance test of what it touched.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import jsonschema
import pytest
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import ImageFileCreateBatch, ImageFileCreateEntry
from msrest.authentication import ApiKeyCredentials
from PIL import Image as PILImage

from devstack.customvision_server import (
    API_PREFIX,
    SPEC_PATH,
    CustomVisionEmulator,
    CustomVisionEmulatorConfig,
    ManualClock,
    create_app,
)
from devstack.servers import ServerHandle, serve_in_thread

TRAINING_KEY = "devstack-training-key"
GENERAL_CLASSIFICATION = "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31"
GENERAL_DETECTION = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"
API = "/customvision/v3.4-preview/training"


# --- the spec as JSON Schema ---------------------------------------------------------------------------

SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
OPERATIONS: dict[str, dict[str, Any]] = {
    op["operationId"]: op for ops in SPEC["paths"].values() for m, op in ops.items() if m != "parameters"
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_SKIP = {
    "x-nullable",
    "x-ms-enum",
    "readOnly",
    "example",
    "description",
    "x-ms-client-name",
    "x-ms-discriminator-value",
}


def _convert(node: Any) -> Any:
    """Swagger 2.0 schema -> JSON Schema draft 7."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}  # siblings of $ref (description, readOnly) carry no constraints
    out: dict[str, Any] = {}
    required = set(node.get("required", []))
    for key, value in node.items():
        if key in _SKIP:
            continue
        if key == "properties":
            out["properties"] = {name: _property(prop, name in required) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value)
        else:
            out[key] = value
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False  # stricter than the spec: no undeclared keys on the wire
    return out


def _property(prop: dict[str, Any], required: bool) -> Any:
    schema = _convert(prop)
    # x-nullable says it; without it AutoRest treats optional properties as nullable and required ones not.
    if prop.get("x-nullable", not required):
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


DEFINITIONS = {name: _convert(schema) for name, schema in SPEC["definitions"].items()}
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("uuid")
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(UUID.match(value))  # lowercase, hyphenated


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


# The strict Azure profile writes timestamps without a timezone, as the real service is reported to; they must
# still be ISO-8601, and must carry no designator at all (so a strict emulator that sends "Z" fails here).
NAIVE_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$")
NAIVE_FORMATS = jsonschema.FormatChecker(formats=())
NAIVE_FORMATS.checks("uuid")(_is_uuid)
NAIVE_FORMATS.checks("int32")(_is_int32)


@NAIVE_FORMATS.checks("date-time")
def _is_naive_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not NAIVE_DATE_TIME.match(value):
        return False
    return datetime.fromisoformat(value).tzinfo is None


def validator_for(schema: dict[str, Any], *, naive_timestamps: bool = False) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(
        {"allOf": [_convert(schema)], "definitions": DEFINITIONS},
        format_checker=NAIVE_FORMATS if naive_timestamps else FORMATS,
    )


def response_schema(operation_id: str, status: int) -> dict[str, Any] | None:
    responses = OPERATIONS[operation_id]["responses"]
    declared = responses.get(str(status))
    if declared is None:
        assert status >= 400, f"{operation_id} answered {status}, which the spec does not declare"
        declared = responses["default"]
    return declared.get("schema")


GATEWAY_BODY = jsonschema.Draft7Validator(
    {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {"code": {"type": "string", "pattern": "^[0-9]{3}$"}, "message": {"type": "string"}},
            }
        },
    }
)


def wire_problems(
    operation_id: str | None, status: int, content_type: str, body: bytes, *, naive_timestamps: bool = False
) -> list[str]:
    """What is wrong with one response: the spec's schema for the service, the gateway's shape otherwise."""
    if status in (202, 204) and body == b"":
        return [] if operation_id is None or response_schema(operation_id, status) is None else ["missing body"]
    if content_type != "application/json; charset=utf-8":
        return [f"content type {content_type!r}"]
    document = json.loads(body)
    if isinstance(document, dict) and set(document) == {"error"}:  # API Management: 401, 404, 429, 503
        return [e.message for e in GATEWAY_BODY.iter_errors(document)]
    if operation_id is None:
        return ["a service body on an unknown route"]
    schema = response_schema(operation_id, status)
    if schema is None:
        return [f"{status} must have no body"]
    validator = validator_for(schema, naive_timestamps=naive_timestamps)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


class WireRecorder:
    """ASGI wrapper keeping (method, path, status, content type, body) of every training API response.

    Only ``send`` is wrapped: ``receive`` must stay uvicorn's own for the "reset" fault to find the socket.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: list[tuple[str, str, int, str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = API_PREFIX.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if start:
            headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
            path = scope["path"][match.end() :]
            self.records.append(
                (scope["method"], path, start["status"], headers.get("content-type", ""), b"".join(chunks))
            )

    def problems(self, emulator: CustomVisionEmulator) -> list[str]:
        found = []
        for method, path, status, content_type, body in self.records:
            route, _ = emulator.match(method, path)
            operation_id = route.operation_id if route else None
            naive = emulator.profile.naive_timestamps
            for problem in wire_problems(operation_id, status, content_type, body, naive_timestamps=naive):
                found.append(f"{method} {path} -> {status}: {problem}")
        return found


def make_client(endpoint: str, key: str = TRAINING_KEY) -> CustomVisionTrainingClient:
    """The SDK exactly as an application builds it."""
    return CustomVisionTrainingClient(endpoint, ApiKeyCredentials(in_headers={"Training-key": key}))


@dataclass
class RunningEmulator:
    """An emulator served by uvicorn on a loopback port, driven by a manual clock."""

    handle: ServerHandle
    app: Any
    clock: ManualClock
    config: CustomVisionEmulatorConfig
    recorder: WireRecorder
    clients: list[CustomVisionTrainingClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def emulator(self) -> CustomVisionEmulator:
        return self.app.state.emulator

    def api(self, path: str) -> str:
        return f"{self.url}{API}{path}"

    def client(self, key: str = TRAINING_KEY, *, retries: int | None = None) -> CustomVisionTrainingClient:
        """An SDK client; ``retries=0`` stops msrest/urllib3 from retrying (and sleeping on) 429/5xx GETs."""
        client = make_client(self.url, key)
        if retries is not None:
            client.config.retry_policy.retries = retries
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()  # drop pooled keep-alive connections before the server goes away
        self.handle.stop()


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Start an emulator with config overrides; rate limits are off unless a test asks for them."""
    running: list[RunningEmulator] = []

    def start(clock: ManualClock | None = None, **overrides: Any) -> RunningEmulator:
        config = replace(CustomVisionEmulatorConfig(rate_per_second=None, train_rate_per_second=None), **overrides)
        if "train_rate_per_second" not in overrides and "tier" not in overrides:
            config.train_rate_per_second = 1000.0  # effectively off; tests of the train bucket set it
        clock = clock or ManualClock(start=1_760_000_000.0)
        app = create_app(config, clock=clock)
        recorder = WireRecorder(app)
        emulator = RunningEmulator(serve_in_thread(recorder), app, clock, config, recorder)
        running.append(emulator)
        return emulator

    yield start
    problems = []
    for emulator in running:
        emulator.stop()
        problems += emulator.recorder.problems(emulator.emulator)
    assert not problems, "responses that break the v3.4-preview spec:\n" + "\n".join(problems[:20])


@pytest.fixture
def emu(start_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return start_emulator()


@pytest.fixture
def trainer(emu: RunningEmulator) -> CustomVisionTrainingClient:
    return emu.client()


class ImageFactory:
    """Real, decodable images whose bytes never repeat (so uploads are not OKDuplicate by accident)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def _pixels(self, size: tuple[int, int]) -> PILImage.Image:
        n = next(self._counter)
        img = PILImage.new("RGB", size, ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
        # A unique pixel pattern makes every image's bytes distinct even when colours wrap around.
        for i, bit in enumerate(f"{n:020b}"):
            img.putpixel((i % size[0], (i // size[0]) % size[1]), (255, 255, 255) if bit == "1" else (0, 0, 0))
        return img

    def encode(self, fmt: str, width: int = 64, height: int = 48) -> bytes:
        out = io.BytesIO()
        img = self._pixels((width, height))
        if fmt == "GIF":
            img = img.convert("P")
        img.save(out, format=fmt)
        return out.getvalue()

    def png(self, width: int = 64, height: int = 48) -> bytes:
        return self.encode("PNG", width, height)

    def jpeg(self, width: int = 64, height: int = 48) -> bytes:
        return self.encode("JPEG", width, height)

    def entry(self, name: str | None = None, **kwargs: Any) -> ImageFileCreateEntry:
        data = self.png()
        return ImageFileCreateEntry(name=name or f"img-{len(data)}-{id(data)}.png", contents=data, **kwargs)

    def batch(self, count: int, **kwargs: Any) -> ImageFileCreateBatch:
        tag_ids = kwargs.pop("tag_ids", None)
        metadata = kwargs.pop("metadata", None)
        entries = [self.entry(name=f"img{i}.png", **kwargs) for i in range(count)]
        return ImageFileCreateBatch(images=entries, tag_ids=tag_ids, metadata=metadata)


@pytest.fixture
def images() -> ImageFactory:
    return ImageFactory()
