"""A fault plan in front of an Azurite service: the throttling and outages Azure Storage produces, on demand.

Azurite has no fault injection of its own. This proxy forwards every request to it unchanged (the SDK signs
the path, not the host, so its Shared Key signatures still verify) and applies a fault plan on the way, as
the emulators do (devstack/faults.py: the same rules, the same `/_emulator/faults` routes). Operation names
are "<METHOD> <resource>", the resource being the first path segment after the account: for the Table
service, the table's name (`GET perceptpushes`, `PUT perceptblobs`, `POST perceptevents`, `DELETE ...`) or
`Tables` for the table list; fnmatch patterns allowed (`* *events`, `PUT *`).

    proxy = serve_in_thread(storage_fault_proxy("http://127.0.0.1:10002"))
    requests.post(f"{proxy.url}/_emulator/faults", json=[{"operation": "*", "kind": "503", "probability": 0.3}])
"""

from __future__ import annotations

from collections import Counter

import httpx
from fastapi import FastAPI, Request, Response

from .faults import FaultPlan, install_faults

# Headers that describe one hop, not the message: the proxy's client and server set their own.
_HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"})


def storage_operation(method: str, path: str) -> str:
    """ "<METHOD> <resource>": e.g. `PUT perceptpushes` for `/devstoreaccount1/perceptpushes(PartitionKey=...)`."""
    segments = [segment for segment in path.split("/") if segment]
    resource = segments[1] if len(segments) > 1 else (segments[0] if segments else "")
    return f"{method.upper()} {resource.split('(', 1)[0]}"


def storage_fault_proxy(upstream: str, plan: FaultPlan | None = None) -> FastAPI:
    """An ASGI app forwarding to `upstream` (e.g. Azurite's Table service) under a fault plan.

    `app.state.faults` counts the faults it injected per operation; `GET /_emulator/faults` shows the plan.
    """
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.faults = Counter()
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def forward(request: Request, path: str) -> Response:
        # The path exactly as it came (Shared Key signs it as sent: decoding and encoding again would break that).
        raw = request.scope["raw_path"] + (
            b"?" + request.scope["query_string"] if request.scope["query_string"] else b""
        )
        answer = await client.request(
            request.method,
            client.base_url.copy_with(raw_path=raw),
            headers=[(name, value) for name, value in request.headers.items() if name.lower() not in _HOP_HEADERS],
            content=await request.body(),
        )
        headers = {name: value for name, value in answer.headers.items() if name.lower() not in _HOP_HEADERS}
        headers.pop("content-encoding", None)  # httpx has already decoded the body
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    def count(operation: str, kind: str) -> None:
        app.state.faults[f"{operation} {kind}"] += 1

    install_faults(app, plan or FaultPlan(), operation_of=storage_operation, on_fault=count)
    app.add_api_route(
        "/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "MERGE", "DELETE", "HEAD", "OPTIONS"]
    )
    return app
