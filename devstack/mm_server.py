"""Emulator of the Percept Model Management (MM) server, after the client contract of sczpy 0.0.8.

Endpoints (all but bootstrap and login need `Authorization: Bearer <token>`, else 401):
    GET  /api/v1/bootstrap                   {"kv": <vault name>, "key": <secret name>}
    POST /api/v1/login                       {"CLIENT_SECRET", "CLIENT_ID"} -> {"access_token", ...}
    POST /api/v1/registry/{model}/{version}  a new random key for the version (kept if it exists)
    GET  /api/v1/keys/{model}/{version}      the key, text/plain; 404 for an unknown version
    POST /api/v1/models/{model}/{version}    multipart `file`: an encrypted model
    GET  /api/v1/models/{model}/{version}    that model's bytes
    POST /api/v1/data/{model}/{version}      multipart form fields + `file`: stored as a blob in the
                                             `data` container, the fields as blob metadata
Admin (tests and the devstack): /_emulator/stats, /_emulator/expire-tokens, /_emulator/faults.

Profiles (devstack/profiles.py): the public notes do not say how the real server answers an expired token
or an unknown model version. "default" answers 401 and 404; "strict" answers 403 for an expired token (a
missing or unknown token stays 401) and, for an unknown version, what `unknown_version` says: "200-text"
(its default: a 200 text/plain error message, which a client that does not check would take as the key)
or "404".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .faults import FaultPlan, install_faults
from .profiles import PROFILE_NAMES, UNKNOWN_VERSION_ANSWERS, AzureProfile, get_profile

_SAFE_METADATA_KEY = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class MMEmulatorConfig:
    storage_connection_string: str
    container: str = "data"
    key_vault_name: str = "percept-devstack-kv"
    secret_name: str = "scz-secret-key"
    bootstrap_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    token_ttl_seconds: float = 3600.0
    state_dir: str | None = None  # None: keys and models in memory
    clock: Callable[[], float] = time.time
    faults: FaultPlan = field(default_factory=FaultPlan)
    profile: str = "default"  # "default" or "strict" (devstack/profiles.py)
    unknown_version: str | None = None  # "404" or "200-text"; None: the profile's choice

    def __post_init__(self) -> None:
        self.azure_profile  # noqa: B018 - fail fast on an unknown profile or answer

    @property
    def azure_profile(self) -> AzureProfile:
        return get_profile(self.profile).with_unknown_version(self.unknown_version)


class MMState:
    """Keys per model version, encrypted models, issued tokens; persisted when a folder is given."""

    def __init__(self, config: MMEmulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.requests: Counter[str] = Counter()
        self._keys_file = Path(config.state_dir, "keys.json") if config.state_dir else None
        self._models_dir = Path(config.state_dir, "models") if config.state_dir else None
        self.keys: dict[str, str] = {}
        self.models: dict[str, bytes] = {}
        if self._keys_file and self._keys_file.exists():
            self.keys = json.loads(self._keys_file.read_text())
        self._container: ContainerClient | None = None

    @staticmethod
    def ident(model: str, version: str) -> str:
        return f"{model}/{version}"

    def register(self, model: str, version: str) -> bool:
        with self.lock:
            ident = self.ident(model, version)
            if ident in self.keys:
                return False
            self.keys[ident] = secrets.token_urlsafe(32)
            if self._keys_file:
                self._keys_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._keys_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.keys))
                os.chmod(tmp, 0o600)
                tmp.replace(self._keys_file)
            return True

    def put_model(self, ident: str, data: bytes) -> None:
        if self._models_dir:
            path = self._models_dir / ident.replace("/", "__")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.models[ident] = data

    def get_model(self, ident: str) -> bytes | None:
        if self._models_dir:
            path = self._models_dir / ident.replace("/", "__")
            return path.read_bytes() if path.exists() else None
        return self.models.get(ident)

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = self.config.clock() + self.config.token_ttl_seconds
        return token

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and expiry > self.config.clock()

    def token_expired(self, token: str) -> bool:
        """Issued by this server and past its lifetime (as opposed to missing or made up)."""
        expiry = self.tokens.get(token)
        return expiry is not None and expiry <= self.config.clock()

    def expire_tokens(self) -> int:
        """Every issued token expires now; they stay known, so an expired one is told from a made-up one."""
        with self.lock:
            now = self.config.clock()
            live = [token for token, expiry in self.tokens.items() if expiry > now]
            for token in live:
                self.tokens[token] = now
        return len(live)

    @property
    def container(self) -> ContainerClient:
        if self._container is None:
            service = BlobServiceClient.from_connection_string(self.config.storage_connection_string)
            container = service.get_container_client(self.config.container)
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
            self._container = container
        return self._container

    def store_data(self, filename: str, data: bytes, metadata: dict[str, str]) -> str:
        """Store under the uploaded file's name, made unique on collision (`name_1.jpg.dec`, ...)."""
        base = PurePosixPath(filename.replace("\\", "/")).name or "upload.dec"
        stem, dot, suffix = base.partition(".")
        for attempt in range(1000):
            name = base if attempt == 0 else f"{stem}_{attempt}{dot}{suffix}"
            try:
                self.container.upload_blob(name, data, metadata=metadata, overwrite=False)
                return name
            except ResourceExistsError:
                continue
        raise RuntimeError(f"no free name for {base}")


def create_app(config: MMEmulatorConfig) -> FastAPI:
    state = MMState(config)
    app = FastAPI(title="Percept MM server emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mm = state
    install_faults(app, config.faults, operation_of=_operation_name)

    def missing_file() -> PlainTextResponse:
        return PlainTextResponse("a multipart part named 'file' is required", 400)

    profile = config.azure_profile

    def unauthorized(request: Request) -> JSONResponse:
        if profile.expired_token_status == 403 and state.token_expired(_bearer(request)):
            return JSONResponse({"error": "forbidden", "message": "the bearer token has expired"}, 403)
        return JSONResponse({"error": "unauthorized", "message": "missing, invalid or expired bearer token"}, 401)

    def authorised(request: Request) -> bool:
        return state.token_valid(_bearer(request))

    def unknown_version(model: str, version: str, what: str) -> Response:
        if profile.unknown_version == "200-text":
            return PlainTextResponse(f"Error: {what} {model} version {version} was not found", 200)
        return PlainTextResponse(f"{what} {model} version {version} is not registered", 404)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        state.requests[_operation_name(request.method, request.url.path)] += 1
        return await call_next(request)

    @app.get("/api/v1/bootstrap")
    def bootstrap() -> dict:
        return {"kv": config.key_vault_name, "key": config.secret_name}

    @app.post("/api/v1/login")
    async def login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "bad_request", "message": "a JSON body is required"}, 400)
        supplied = body.get("CLIENT_SECRET") if isinstance(body, dict) else None
        if not isinstance(supplied, str) or not secrets.compare_digest(supplied, config.bootstrap_secret):
            return JSONResponse({"error": "unauthorized", "message": "invalid client secret"}, 401)
        token = state.issue_token()
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(config.token_ttl_seconds)}
        )

    @app.post("/api/v1/registry/{model}/{version}")
    def register(model: str, version: str, request: Request) -> Response:
        if not authorised(request):
            return unauthorized(request)
        created = state.register(model, version)
        verb = "Registered" if created else "Already registered"
        return PlainTextResponse(f"{verb} {model} version {version}")

    @app.get("/api/v1/keys/{model}/{version}")
    def get_key(model: str, version: str, request: Request) -> Response:
        if not authorised(request):
            return unauthorized(request)
        key = state.keys.get(state.ident(model, version))
        if key is None:
            return unknown_version(model, version, "Model")
        return PlainTextResponse(key)

    @app.post("/api/v1/models/{model}/{version}")
    async def upload_model(model: str, version: str, request: Request) -> Response:
        if not authorised(request):
            return unauthorized(request)
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return missing_file()
        state.put_model(state.ident(model, version), await upload.read())
        return PlainTextResponse(f"Uploaded model {model} version {version}")

    @app.get("/api/v1/models/{model}/{version}")
    def download_model(model: str, version: str, request: Request) -> Response:
        if not authorised(request):
            return unauthorized(request)
        data = state.get_model(state.ident(model, version))
        if data is None:
            return unknown_version(model, version, "Model file of")
        return Response(data, media_type="application/octet-stream")

    @app.post("/api/v1/data/{model}/{version}")
    async def upload_data(model: str, version: str, request: Request) -> Response:
        if not authorised(request):
            return unauthorized(request)
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return missing_file()
        metadata = {
            _SAFE_METADATA_KEY.sub("_", key): str(value)
            for key, value in form.multi_items()
            if key != "file" and isinstance(value, str)
        }
        metadata.setdefault("model_name", model)
        metadata.setdefault("model_version", version)
        name = state.store_data(upload.filename or "upload.dec", await upload.read(), metadata)
        return PlainTextResponse(f"Stored {name}")

    @app.get("/_emulator/stats")
    def stats() -> dict:
        now = config.clock()
        live = sum(1 for expiry in list(state.tokens.values()) if expiry > now)
        return {"requests": dict(state.requests), "tokens": live, "models": sorted(state.keys)}

    @app.get("/_emulator/health")
    def health() -> dict:
        return {"status": "ok", "profile": profile.name, "unknown_version": profile.unknown_version}

    @app.post("/_emulator/expire-tokens")
    def expire_tokens() -> dict:
        return {"expired": state.expire_tokens()}

    return app


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _operation_name(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
        return f"{method} {parts[2]}"
    return f"{method} {path}"


def mm_server_command(*, host: str, port: int, state: Path | str, profile: str = "default") -> list[str]:
    """The command that runs this emulator as a process of its own, keeping its keys under `state`."""
    command = [sys.executable, "-m", "devstack.mm_server", "--host", host, "--port", str(port), "--state", str(state)]
    return [*command, "--profile", profile]


def main(argv: list[str] | None = None) -> None:
    from .servers import serve_forever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", help="folder that keeps keys and models across restarts")
    parser.add_argument("--container", default="data")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="bearer token lifetime, seconds")
    parser.add_argument("--profile", default=os.environ.get("MM_EMULATOR_PROFILE", "default"), choices=PROFILE_NAMES)
    parser.add_argument(
        "--unknown-version",
        choices=UNKNOWN_VERSION_ANSWERS,
        default=None,
        help="answer for an unknown model version (default: by profile; strict: 200-text)",
    )
    args = parser.parse_args(argv)
    # Secrets come through the environment, not the command line (which `ps` shows).
    config = MMEmulatorConfig(
        storage_connection_string=os.environ["MM_EMULATOR_STORAGE_CONNECTION_STRING"],
        container=args.container,
        bootstrap_secret=os.environ["MM_EMULATOR_BOOTSTRAP_SECRET"],
        token_ttl_seconds=args.token_ttl,
        state_dir=args.state,
        faults=FaultPlan.from_json(os.environ.get("MM_EMULATOR_FAULTS", "")),
        profile=args.profile,
        unknown_version=args.unknown_version,
    )
    serve_forever(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
