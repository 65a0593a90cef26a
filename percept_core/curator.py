"""`Curator`: one object that gives notebooks, the app, the CLI and the Function the whole core."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient
from .config import Settings
from .errors import MissingMetadataError
from .images import THUMBNAIL_SIZE, thumbnail
from .locker import KeyServiceClient, Locker


class Curator:
    """The core, configured once: `Curator()` loads Settings from the usual sources.

    It holds clients and the key cache, never decrypted images: sharing one Curator between users
    shares connections and keys, not plaintext.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings if settings is not None else Settings.load(**overrides)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Curator({self.settings!r})"

    # -- clients, built on first use --------------------------------------------------------------

    @cached_property
    def data(self) -> RetrainingDataClient:
        return RetrainingDataClient.from_settings(self.settings)

    @cached_property
    def key_service(self) -> KeyServiceClient:
        s = self.settings
        s.require("mm_server_url")
        return KeyServiceClient(
            s.mm_server_url,
            credential=None if s.mm_bootstrap_secret else s.credential(),
            bootstrap_secret=s.mm_bootstrap_secret,
            key_vault_url=s.mm_key_vault_url,
        )

    @cached_property
    def locker(self) -> Locker:
        return Locker(self.key_service)

    # -- blobs --------------------------------------------------------------------------------------

    def blobs(self, blob_filter: BlobFilter | None = None, **filter_fields: Any) -> Iterator[RetrainingBlob]:
        """Every matching retraining blob, streamed; keyword arguments build a BlobFilter."""
        return self.data.list_blobs(blob_filter or BlobFilter(**filter_fields))

    def blob_page(
        self, blob_filter: BlobFilter | None = None, *, page_size: int = 48, continuation: str | None = None
    ) -> BlobPage:
        return self.data.list_page(blob_filter, page_size=page_size, continuation=continuation)

    def blob(self, name: str) -> RetrainingBlob:
        return self.data.get_blob(name)

    def decrypt(self, blob: RetrainingBlob) -> bytes:
        """The blob's plaintext, in memory: downloaded, key fetched once per version, HMAC checked."""
        if not blob.has_model:
            raise MissingMetadataError(
                f"Blob {blob.name!r} has no model_name/model_version metadata, so its key is unknown.",
                blob_name=blob.name,
                hint="It was not uploaded through the MM server; reject it or fix its metadata.",
            )
        ciphertext = self.data.download(blob)
        return self.locker.decrypt(ciphertext, blob.model_name, blob.model_version, blob_name=blob.name)

    def preview(self, blob: RetrainingBlob, *, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
        """A JPEG thumbnail of the decrypted frame (in memory only)."""
        return thumbnail(self.decrypt(blob), size=size, what=f"Blob {blob.name!r}")
