"""`python -m bench.ledger_calls OUT PREFIX -- ARGS...`: `percept-curator ARGS...`, its ledger requests counted.

The child side of the multi-host push benchmark (bench/hosts.py). It runs the CLI's own entry point
(`percept_core.cli.main`, what the `percept-curator` script calls) in this process, after giving the
TableServiceClient the shared ledger builds a per-request hook (azure-core's `raw_request_hook` /
`raw_response_hook`, which run once per HTTP attempt, after the SDK's retry policy). Every request to the
table service is counted by method, table and status, with its time from the hook on the way out to the
hook on the way back (the round trip to the service, summed over threads); PREFIX is the ledger's table
prefix, dropped from the table names. When the command ends, the counts go to OUT as JSON; stdout stays
the command's own. With a SQLite ledger nothing is counted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.data.tables import TableServiceClient

import percept_core.ledger_table
from percept_core.cli import main as cli_main


class TableRequests:
    """Requests to the table service, by "operation table status": how many and the seconds they took.

    The operations: `read` (one entity by its keys), `query` (a filter), `insert`, `replace`, `delete`,
    `create-table`, or the HTTP method for anything else.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counts: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def on_request(self, request: Any) -> None:
        request.context["bench_sent"] = time.perf_counter()

    def on_response(self, response: Any) -> None:
        elapsed = time.perf_counter() - response.context.get("bench_sent", time.perf_counter())
        http = response.http_request
        operation = f"{self._operation(http.method, http.url)} {response.http_response.status_code}"
        with self._lock:
            self.counts[operation] += 1
            self.seconds[operation] += elapsed

    def _operation(self, method: str, url: str) -> str:
        """E.g. `read pushes`, `query pushes`, `insert events` (the tables' prefix dropped), `create-table`."""
        last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        name, _, keys = last.partition("(")
        if name == "Tables":
            return "create-table" if method == "POST" else f"{method} Tables"
        table = name.removeprefix(self.prefix)
        if method == "GET":
            return f"{'read' if keys.startswith('PartitionKey') else 'query'} {table}"
        verb = {"POST": "insert", "PUT": "replace", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}
        return f"{verb.get(method, method)} {table}"

    def document(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self.counts.values()),
                "seconds": sum(self.seconds.values()),
                "by_operation": {
                    op: {"requests": self.counts[op], "seconds": round(self.seconds[op], 4)}
                    for op in sorted(self.counts)
                },
            }


def counting_client(requests: TableRequests) -> type[TableServiceClient]:
    """A TableServiceClient whose every request (and every table client it hands out) reports to `requests`."""

    class CountedTableServiceClient(TableServiceClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(
                *args, raw_request_hook=requests.on_request, raw_response_hook=requests.on_response, **kwargs
            )

    return CountedTableServiceClient


def main(argv: list[str]) -> int:
    out, prefix, separator, *args = argv
    if separator != "--":
        raise SystemExit("usage: python -m bench.ledger_calls OUT PREFIX -- ARGS...")
    requests = TableRequests(prefix)
    percept_core.ledger_table.TableServiceClient = counting_client(requests)
    try:
        return cli_main(args)
    finally:
        Path(out).write_text(json.dumps(requests.document()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
