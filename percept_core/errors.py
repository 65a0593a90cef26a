"""The errors percept_core raises: one base class, each error saying what happened and what to do."""

from __future__ import annotations

from collections.abc import Mapping


class CuratorError(Exception):
    """Base of every error percept_core raises on purpose.

    `reason` is a short label for a badge or a table column; `hint` says what the user can do next.
    Messages never contain keys, secrets, tokens or decrypted bytes.
    """

    reason: str = "error"
    #: Whether the same item may succeed on a later try: the world's fault (a service, a network), not the item's.
    retryable: bool = True
    #: Whether the blob itself is at fault (tampered, no metadata, too large, not an image): worth noting in the
    #: ledger so the "cannot decrypt" filter finds it, and never worth retrying.
    blob_fault: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ActionRefused(CuratorError):
    """An action was asked for blobs whose review state does not allow it (`percept_core.state` says which);
    `refused` maps each blob name to why. Nothing was changed."""

    reason = "refused"

    def __init__(self, action: str, refused: Mapping[str, str]) -> None:
        self.action = action
        self.refused = dict(refused)
        listed = "; ".join(f"{name}: {why}" for name, why in self.refused.items())
        super().__init__(
            f"Cannot {action.replace('_', ' ')} {len(self.refused)} blob(s): {listed}.",
            hint="Nothing was changed; leave those out (percept_core.review decides item by item).",
        )


class ConfigError(CuratorError):
    """A setting is missing or malformed."""

    reason = "configuration"
    retryable = False


class ServiceError(CuratorError):
    """A service (MM server, storage, Custom Vision) answered with an error or could not be reached."""

    reason = "service error"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class AuthenticationError(ServiceError):
    """A service refused our credentials."""

    reason = "not authorised"


class BlobError(CuratorError):
    """A retraining blob cannot be turned into an image; `blob_name` names it."""

    reason = "cannot decrypt"
    retryable = False
    blob_fault = True

    def __init__(self, message: str, *, blob_name: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.blob_name = blob_name


class IntegrityError(BlobError):
    """The HMAC does not match: a wrong key, a tampered or a truncated file. Nothing was decrypted."""

    reason = "tampered"


class MissingMetadataError(BlobError):
    """The blob lacks the model_name/model_version metadata that names its key."""

    reason = "missing metadata"


class UnknownModelVersionError(BlobError):
    """The MM server has no key for the blob's model version."""

    reason = "unknown model version"


class NotAnImageError(BlobError):
    """The decrypted bytes are not an image Custom Vision accepts (or not an image at all)."""

    reason = "not an image"


class InvalidMetadataError(BlobError):
    """The blob's metadata names a model or version that is not a valid name: no key is asked for it."""

    reason = "invalid metadata"


class BlobTooLargeError(BlobError):
    """The blob is larger than `percept_max_blob_bytes`: it is refused before it is downloaded."""

    reason = "too large"


class StaleBlobError(BlobError):
    """The blob changed or went away after it was listed (HTTP 412 or 404): the listing is stale, the blob is
    not at fault. Refresh the listing; the blob's new version is reviewed afresh."""

    reason = "changed since listed"
    retryable = True
    blob_fault = False


class BlobNotFoundError(BlobError):
    """No blob of that name is in the container (a name typed or passed in, not one from a listing)."""

    reason = "no such blob"
    blob_fault = False
