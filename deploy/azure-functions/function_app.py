"""Percept Curator's Azure Function: each new blob in the MM `data` container becomes an untagged image
in the Custom Vision project. The original sample's job, on percept_core (Python v2 programming model).

Better than the original:
- No plaintext on disk: the host hands over the encrypted bytes, which are decrypted in memory.
- One Curator per worker process: the MM login, each model version's derived key and the Custom Vision
  client serve every later invocation.
- Event Grid delivers each new blob as it is written (the polling source can lag by minutes, miss blobs and
  is not offered on the Flex Consumption plan); blobs written before the subscription existed are a
  backfill's (README.md).
- Idempotent: the ledger skips a blob version already pushed. With the shared ledger (Table Storage) every
  instance sees every other's claims and pushes, so any number of instances push each blob once; with a
  worker's own SQLite file, Custom Vision answers OKDuplicate for bytes another instance pushed. Every image
  carries its provenance (source blob, etag, sha256, model name and version) as metadata.
- A bad blob (tampered, truncated, not an image, missing metadata, unknown model version) is logged with
  its reason and the invocation succeeds: retrying cannot fix it. A transient failure (Custom Vision
  5xx or 429 after the client's own retries, the MM server or storage unreachable) raises, so the host
  retries the blob, `poisonBlobThreshold` times at most (host.json), then puts it on the poison queue.

Settings are the original sample's names (see local.settings.json.example and README.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import azure.functions as func

from percept_core import (
    BlobError,
    Curator,
    CuratorError,
    Outcome,
    Provenance,
    RetrainingBlob,
    RetrainingDataClient,
    Settings,
)
from percept_core.customvision import CustomVisionClient
from percept_core.pipeline import ItemOutcome

#: The app setting (a connection string) or setting prefix (`MMStorage__blobServiceUri`, ...) of the trigger.
CONNECTION = "MMStorage"
ACTOR = "azure-function"
#: Custom Vision retries within one invocation (a 429 waits for Retry-After, a 5xx backs off); beyond
#: them the invocation fails and the host's retries take over.
CUSTOM_VISION_RETRIES: dict[str, Any] = {"max_attempts": 4, "backoff_seconds": 0.5, "max_backoff_seconds": 8.0}

logger = logging.getLogger("percept_curator.function")
# azure-core logs every request with its headers at INFO: keep the function's log for what matters.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp()


class TransientPushError(RuntimeError):
    """The blob did not reach Custom Vision this time: raised so that the host retries it later."""


_curator: Curator | None = None
_curator_lock = threading.Lock()


def default_ledger_path() -> str:
    """A local file: SQLite must not live on the app's network share (HOME on Azure), and a lost ledger
    costs nothing but an OKDuplicate answer per re-delivered blob."""
    return os.path.join(tempfile.gettempdir(), "percept-curator", "ledger.sqlite")


def get_curator() -> Curator:
    """The worker's Curator, built on first use and kept for every later invocation: its Custom Vision client's
    retries fit in one invocation; its other parts are built from the settings as they are first needed."""
    global _curator
    with _curator_lock:
        if _curator is None:
            settings = Settings.load()
            if not settings.ledger_path and not settings.uses_shared_ledger:
                settings = dataclasses.replace(settings, ledger_path=default_ledger_path())
            customvision = CustomVisionClient.from_settings(settings, **CUSTOM_VISION_RETRIES)
            curator = Curator(settings, actor=ACTOR, customvision=customvision)
            curator.customvision.project()  # a wrong key or project id fails here, loudly, and is retried
            _curator = curator
    return _curator


@app.function_name("push_blob")
@app.blob_trigger(
    arg_name="blob",
    path="%mm_telemetry_storage_container%/{name}",
    connection=CONNECTION,
    source=func.BlobSource.EVENT_GRID,  # each new blob as it is written, to any number of instances
)
def push_blob(blob: func.InputStream) -> None:
    """Push the new blob as an untagged image (see the module's docstring for what happens when it cannot)."""
    push_new_blob(blob)


def push_new_blob(stream: func.InputStream) -> ItemOutcome | None:
    """Push one triggering blob; returns its outcome (None when the blob is gone). Raises TransientPushError
    when trying again later may succeed."""
    curator = get_curator()
    container = curator.settings.mm_telemetry_storage_container
    name = blob_name(stream.name or "", container)
    where = f"{container}/{name}"
    try:
        blob = triggering_blob(curator, stream, container, name)
    except BlobError as error:
        logger.warning("Not pushed, and not retried: %s: %s", where, error)
        index_arrival(curator, name, None)
        return None
    index_arrival(curator, name, blob)
    # The worker's parts, with the trigger's blob source: the bytes come from the host's stream.
    invocation = Curator(
        curator.settings,
        actor=ACTOR,
        data=_TriggeredBlobData(curator.data, blob, stream),
        key_service=curator.key_service,
        locker=curator.locker,
        customvision=curator.customvision,
        ledger=curator.ledger,
    )
    report = invocation.push([blob], provenance=Provenance.IMAGE)
    (outcome,) = report.outcomes
    version = outcome.model_version
    if outcome.outcome == Outcome.PUSHED:
        logger.info("Pushed %s (%s) as untagged image %s.", where, version, outcome.image_id)
    elif outcome.outcome == Outcome.DUPLICATE:
        logger.info("Nothing new from %s (%s): image %s has the same bytes.", where, version, outcome.image_id)
    elif outcome.outcome == Outcome.SKIPPED:
        logger.info("Skipped %s (%s): %s.", where, version, outcome.reason)
    elif outcome.outcome == Outcome.UNDECRYPTABLE:
        logger.warning("Not pushed, and not retried: %s cannot be used: %s", where, outcome.reason)
    elif outcome.outcome == Outcome.REFUSED:
        logger.warning("Not pushed, and not retried: Custom Vision refuses %s: %s", where, outcome.reason)
    else:
        logger.warning("Not pushed this time, the host will retry: %s: %s", where, outcome.reason)
        raise TransientPushError(f"{where} did not reach Custom Vision ({outcome.reason}); retry later.")
    return outcome


def index_arrival(curator: Curator, name: str, blob: RetrainingBlob | None) -> None:
    """Keep the blob index (when one is built) fresh: the new blob's row, or none for a blob that is gone. An
    index that cannot be written is logged and left to `percept-curator index`: the push goes on."""
    try:
        index = curator.source.built()
        if index is None:
            return
        if blob is None:
            index.remove([name])
        else:
            index.put([blob])
    except CuratorError as error:
        logger.warning("The blob index was not updated for %s (percept-curator index repairs it): %s", name, error)


def blob_name(path: str, container: str) -> str:
    """The blob's name from the trigger's `<container>/<name>` path."""
    prefix = f"{container}/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def triggering_blob(curator: Curator, stream: func.InputStream, container: str, name: str) -> RetrainingBlob:
    """The blob as the trigger saw it (its etag and metadata), or as storage describes it now."""
    properties = {str(k).lower(): v for k, v in (stream.blob_properties or {}).items()}
    etag = str(properties.get("etag") or "").strip('"')
    if etag and stream.metadata is not None:
        size = properties.get("contentlength") or properties.get("length") or stream.length or 0
        return RetrainingBlob.from_properties(
            container,
            SimpleNamespace(
                name=name,
                etag=etag,
                size=int(size),
                last_modified=_timestamp(properties.get("lastmodified")),
                metadata=dict(stream.metadata),
            ),
        )
    return curator.blob(name)


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


class _TriggeredBlobData(RetrainingDataClient):
    """The container, serving the triggering blob's bytes from the host's stream without a second download.

    The stream is read only when the pipeline asks for the bytes, after the size limit: a blob over
    `percept_max_blob_bytes` is refused without being read.
    """

    def __init__(self, data: RetrainingDataClient, blob: RetrainingBlob, stream: func.InputStream) -> None:
        super().__init__(data.container_client, max_blob_bytes=data.max_blob_bytes)
        self._inner = data
        self._key = blob.key
        self._stream = stream

    def download(self, blob: RetrainingBlob) -> bytes:
        if blob.key != self._key:
            return self._inner.download(blob)
        self.refuse_if_too_large(blob)
        content = self._stream.read()
        return content if not blob.size or len(content) == blob.size else self._inner.download(blob)
