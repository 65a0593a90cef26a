"""The hosts of the multi-host test (tests/faults/test_multi_host.py), each a process of its own that reads its
settings from its environment, as a deployed host does (the shared ledger's settings, no ledger file):

    python -m tests.faults.hosts function          # the Azure Function's handler, fed blob names on stdin
    python -m tests.faults.hosts reviewer --version 1.1 --tag person   # a reviewer pushing a selection

The third host of the test is the CLI itself (`percept-curator push-untagged`), run as it is.

`function` plays the Functions host around the handler (deploy/azure-functions): it calls `push_new_blob` for each
blob name read from stdin, as Event Grid delivers them, with host.json's parallelism, and retries an invocation
that raised, up to host.json's poisonBlobThreshold tries (then the blob is "poisoned": lost to the Function).
It prints `ready` once its Curator is built, a line `<outcome> <blob>` per blob, and a last line `done <json>`;
it exits 1 when a blob was poisoned. `--takes-over-live-claims` breaks it for the negative control: in this
process only, a claim that another live run holds is taken over (last writer wins).

`reviewer` lists the container with the reviewer's filter, pushes the selection through the app's core
(`review.push_reviewed`) and prints its report as JSON; it exits 1 when the report shows a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from percept_core import BlobFilter, Curator, Settings
from percept_core.ledger_table import TableLedger
from percept_core.review import push_reviewed
from percept_core.state import PushState
from tests.function.conftest import FUNCTION_DIR, input_stream, load_function_app

HOST_JSON = json.loads((FUNCTION_DIR / "host.json").read_text())["extensions"]["blobs"]
INVOCATION_RETRY_SECONDS = 0.2  # the Functions host's pause before trying a failed invocation again, doubling


def take_over_live_claims() -> None:
    """Broken on purpose (negative control): this process's TableLedger treats another live run's claim as free."""
    original = TableLedger.kept_out

    def kept_out(self, review, push_state, claim, claimed_at, run_id, **kwargs):
        if push_state == PushState.PUSHING:
            push_state, claim = None, None
        return original(self, review, push_state, claim, claimed_at, run_id, **kwargs)

    TableLedger.kept_out = kept_out


class FunctionHost:
    """The Functions host around the handler: invocations in parallel, each retried until the poison threshold."""

    def __init__(self) -> None:
        self.module = load_function_app()
        settings = self.module.get_curator().settings  # built now, as a worker does on its first invocation
        # The trigger reads the container the handler is set to watch, from the same storage account.
        self.storage = SimpleNamespace(storage_connection_string=settings.mm_storage_connection_string)
        self.container = settings.mm_telemetry_storage_container
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # invocations run in parallel: one line, one count at a time

    def say(self, line: str, *, counted: str | None = None) -> None:
        """Print `line`, and count what it says happened."""
        with self._lock:
            if counted:
                self.counts[counted] += 1
            print(line, flush=True)

    def invoke(self, name: str) -> None:
        """One blob's delivery: invoked, and invoked again after a failure, as the host does."""
        tries = int(HOST_JSON["poisonBlobThreshold"])
        for attempt in range(1, tries + 1):
            try:
                outcome = self.module.push_new_blob(input_stream(self.storage, self.container, name))
            except Exception as exc:  # the host sees an exception, whatever it is, and retries the blob
                said = " ".join(str(exc).split())[:200]  # one line
                self.say(f"retry {name} {type(exc).__name__}: {said}", counted="retried")
                if attempt < tries:
                    time.sleep(INVOCATION_RETRY_SECONDS * 2 ** (attempt - 1))
                continue
            said = "gone" if outcome is None else str(outcome.outcome)
            self.say(f"{said} {name}", counted=said)
            return
        self.say(f"poisoned {name}", counted="poisoned")

    def run(self) -> int:
        self.say("ready")
        with ThreadPoolExecutor(int(HOST_JSON["maxDegreeOfParallelism"])) as pool:
            for line in sys.stdin:
                if line.strip():
                    pool.submit(self.invoke, line.strip())
        self.say(f"done {json.dumps(dict(self.counts))}")
        return 1 if self.counts["poisoned"] else 0


def review(versions: Sequence[str], tags: Sequence[str], actor: str) -> int:
    """A reviewer filters the container by model version, selects every frame shown and pushes the selection."""
    curator = Curator(Settings.load(), actor=actor)
    selection = list(curator.blobs(BlobFilter(model_versions=tuple(versions))))
    pushed = push_reviewed(curator, selection, tags=tags)
    report = pushed.report
    document = {
        "selected": len(selection),
        "counts": {str(k): v for k, v in report.counts.items()},
        "throttled": report.throttled,
        "outcomes": [[o.name, str(o.outcome), o.reason] for o in report.outcomes],
        "failed": pushed.failed,
    }
    print(json.dumps(document), flush=True)
    return 1 if pushed.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.hosts")
    hosts = parser.add_subparsers(dest="host", required=True)
    function = hosts.add_parser("function", help="the Function's handler, fed blob names on stdin")
    function.add_argument("--takes-over-live-claims", action="store_true", help="broken: last writer wins")
    reviewer = hosts.add_parser("reviewer", help="a reviewer pushing the frames of some model versions")
    reviewer.add_argument("--version", action="append", default=[], dest="versions")
    reviewer.add_argument("--tag", action="append", default=[])
    reviewer.add_argument("--actor", default="reviewer")
    args = parser.parse_args(argv)
    if args.host == "function":
        if args.takes_over_live_claims:
            take_over_live_claims()
        return FunctionHost().run()
    return review(args.versions, args.tag, args.actor)


if __name__ == "__main__":
    sys.exit(main())
