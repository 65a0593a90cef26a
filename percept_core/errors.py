"""The errors percept_core raises: one hierarchy under CuratorError, each error saying what happened and what to
do, and the one place per SDK that maps its exceptions into ours (as httpx maps its transports').

Callers branch on class attributes (`retryable`, `blob_fault`) and on classes, never on messages:

    try:
        data = container.download_blob(name).readall()
    except AzureError as exc:
        raise from_azure(exc, AzureCall("Storage", f"download blob {name!r}", hint="Try again.")) from None
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import requests
from azure.core import exceptions as azure_errors  # a module: this one's classes stay ours alone


class CuratorError(Exception):
    """Base of every error percept_core raises on purpose.

    `reason` is a short label for a badge or a table column; `hint` says what the user can do next.
    Messages never contain keys, secrets, tokens or decrypted bytes.
    """

    reason: str = "error"
    #: Whether the same item may succeed on a later try: the world's fault (a service, a network), not the item's.
    retryable: bool = True
    #: Whether the blob itself is at fault (tampered, no metadata, too large, not an image): worth noting in the
    #: ledger so the gallery's filter on undecryptable blobs finds it, and never worth retrying.
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
    """A retraining blob cannot be turned into an image; `blob_name` names it. Every kind says its own `reason`;
    the gallery shows the blob's state as `state.CANNOT_DECRYPT`."""

    reason = "unusable blob"
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


class ImageLimitError(NotAnImageError):
    """An image that Custom Vision refuses and that cannot be fitted without changing what it shows."""

    reason = "exceeds Custom Vision limits"


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


class CustomVisionError(ServiceError):
    """Custom Vision answered with an error; `code` is the service's CustomVisionErrorCodes value."""

    reason = "Custom Vision error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, status=status)
        self.code = code
        self.retryable = retryable


class TagNameError(CuratorError):
    """A tag name Custom Vision would refuse (empty, too long, or a reserved character)."""

    reason = "invalid tag name"


class ExportError(CuratorError):
    """An export cannot be written as asked (a tag or file name its format cannot hold, a folder of another
    export); nothing of this run was recorded as exported."""

    reason = "export"
    retryable = False


class TrainingNotPossible(CustomVisionError):
    reason = "cannot train"


class WaitBudgetExceeded(CustomVisionError):
    """This thread's calls waited (backoff, Retry-After, quota) as long as their budget allows: try later."""

    reason = "Custom Vision kept it waiting"


# -- mapping the SDKs' exceptions into ours ----------------------------------------------------------------

_UNTRUSTED_CERTIFICATE = "The certificate is not trusted; fix the certificate rather than the check."


@dataclass(frozen=True)
class AzureCall:
    """An Azure SDK call, described in the words its errors are told in (see `from_azure`).

    `service` says who answered ("Storage", "Key Vault https://..."), `doing` what was asked, as in "could not
    <doing>"; `refused_hint` is what to do when our identity is refused, `hint` what to do otherwise.
    `not_found` and `modified` are the errors a 404 or a 412 means for this call (a blob that went away after
    it was listed is stale, a name typed in is not found); without them they are service errors.
    """

    service: str
    doing: str
    hint: str
    refused_hint: str | None = None
    not_found: CuratorError | None = None
    modified: CuratorError | None = None


def from_azure(exc: azure_errors.AzureError, call: AzureCall) -> CuratorError:
    """Our error for an azure-core exception (azure-storage-blob, azure-keyvault-secrets) raised by `call`.

    Messages name the service, what was asked and the HTTP status, never the SDK's text: that may quote a
    request, a token or a secret.
    """
    status = exc.status_code if isinstance(exc, azure_errors.HttpResponseError) else None
    if isinstance(exc, azure_errors.ClientAuthenticationError) or status in (401, 403):
        refused = f" ({status})" if status else ""
        return AuthenticationError(
            f"{call.service} refused to {call.doing}{refused}.", hint=call.refused_hint or call.hint, status=status
        )
    if isinstance(exc, azure_errors.ResourceNotFoundError) or status == 404:
        if call.not_found is not None:
            return call.not_found
        return ServiceError(f"Could not {call.doing}: {call.service} has no such resource.", hint=call.hint, status=404)
    if isinstance(exc, azure_errors.ResourceModifiedError) or status == 412:
        if call.modified is not None:
            return call.modified
        return ServiceError(f"Could not {call.doing}: it changed meanwhile.", hint=call.hint, status=412)
    if isinstance(exc, azure_errors.ServiceRequestError) and _is_tls_failure(exc):
        return ServiceError(f"TLS verification failed for {call.service}.", hint=_UNTRUSTED_CERTIFICATE)
    if isinstance(exc, azure_errors.ServiceRequestError | azure_errors.ServiceResponseError):
        return ServiceError(f"Could not reach {call.service} ({exc.__class__.__name__}).", hint=call.hint)
    if status is not None:
        return ServiceError(
            f"{call.service} answered {status} when asked to {call.doing}.", hint=call.hint, status=status
        )
    return ServiceError(f"Could not {call.doing}: {exc.__class__.__name__}.", hint=call.hint)


def _is_tls_failure(exc: azure_errors.AzureError) -> bool:
    """Whether the transport failed its TLS handshake (the SDK wraps the transport's exception)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError | requests.exceptions.SSLError):
            return True
        seen.add(id(cause))
        inner = getattr(cause, "inner_exception", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__ or cause.__context__
    return False


def from_requests(exc: requests.RequestException, service: str, *, hint: str) -> ServiceError:
    """Our error for a `requests` exception raised while talking to `service` (the MM server): the request
    never got an answer. The message names the exception's kind only: its text may quote the request."""
    if isinstance(exc, requests.exceptions.SSLError):
        return ServiceError(f"TLS verification failed for {service}.", hint=_UNTRUSTED_CERTIFICATE)
    return ServiceError(f"Could not reach {service} ({exc.__class__.__name__}).", hint=hint)
