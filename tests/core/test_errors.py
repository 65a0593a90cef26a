"""What callers branch on is said by each error's class (retryable, the blob's own fault), never by its message."""

from __future__ import annotations

import pytest
import requests
from azure.core import exceptions as azure_errors

from percept_core import errors
from percept_core.blobs import is_blob_fault
from percept_core.errors import CustomVisionError
from percept_core.images import ImageLimitError

# error -> (retryable: a later try may succeed, blob_fault: noted in the ledger as the blob's own)
EXPECTED = {
    errors.IntegrityError("x"): (False, True),
    errors.MissingMetadataError("x"): (False, True),
    errors.InvalidMetadataError("x"): (False, True),
    errors.UnknownModelVersionError("x"): (False, True),
    errors.NotAnImageError("x"): (False, True),
    errors.BlobTooLargeError("x"): (False, True),
    ImageLimitError("x"): (False, True),
    errors.StaleBlobError("x"): (True, False),
    errors.BlobNotFoundError("x"): (False, False),
    errors.ServiceError("x"): (True, False),
    errors.AuthenticationError("x"): (True, False),
    errors.ConfigError("x"): (False, False),
    CustomVisionError("x", retryable=True): (True, False),
    CustomVisionError("x", retryable=False): (False, False),
}


@pytest.mark.parametrize("error", list(EXPECTED), ids=lambda e: type(e).__name__)
def test_each_error_says_whether_to_retry_and_whose_fault_it_is(error):
    assert (error.retryable, error.blob_fault) == EXPECTED[error]
    assert is_blob_fault(error) is EXPECTED[error][1]


def test_every_error_of_percept_core_is_a_curator_error_with_a_reason():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, errors.CuratorError)
        assert cls.reason and isinstance(cls.reason, str)


def test_an_error_moved_into_errors_py_is_still_importable_where_it_was():
    assert ImageLimitError is errors.ImageLimitError


# -- one place per SDK maps its exceptions into ours -----------------------------------------------------------

SECRET = "sv=2026-01-01&sig=c2VjcmV0LXNpZ25hdHVyZQ"  # what an SDK's text may quote: a SAS, a token, a secret


class _Answer:
    """The little of an HTTP answer azure-core's HttpResponseError reads; its body quotes a secret."""

    reason = "Some Reason"
    request = None

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}

    def text(self, encoding: str | None = None) -> str:
        return f"<Error><Message>signature {SECRET} did not match</Message></Error>"


def _answered(kind: type[azure_errors.HttpResponseError], status: int) -> azure_errors.HttpResponseError:
    return kind(message=f"the service said no to {SECRET}", response=_Answer(status))


GONE = errors.StaleBlobError("Blob 'a.jpg.dec' was deleted after it was listed.", blob_name="a.jpg.dec")
CHANGED = errors.StaleBlobError("Blob 'a.jpg.dec' changed after it was listed.", blob_name="a.jpg.dec")
DOWNLOAD = errors.AzureCall(
    "Storage",
    "download blob 'a.jpg.dec'",
    hint="Try again.",
    refused_hint="Grant a role.",
    not_found=GONE,
    modified=CHANGED,
)
TLS_FAILURE = requests.exceptions.SSLError(f"CERTIFICATE_VERIFY_FAILED for {SECRET}")

# SDK exception -> (our class, its message, retryable, blob_fault, status)
AZURE = {
    "no token": (
        azure_errors.ClientAuthenticationError(f"no token for {SECRET}"),
        (errors.AuthenticationError, "Storage refused to download blob 'a.jpg.dec'.", True, False, None),
    ),
    "401": (
        _answered(azure_errors.ClientAuthenticationError, 401),
        (errors.AuthenticationError, "Storage refused to download blob 'a.jpg.dec' (401).", True, False, 401),
    ),
    "403": (
        _answered(azure_errors.HttpResponseError, 403),
        (errors.AuthenticationError, "Storage refused to download blob 'a.jpg.dec' (403).", True, False, 403),
    ),
    "404": (
        _answered(azure_errors.ResourceNotFoundError, 404),
        (errors.StaleBlobError, "Blob 'a.jpg.dec' was deleted after it was listed.", True, False, None),
    ),
    "412": (
        _answered(azure_errors.ResourceModifiedError, 412),
        (errors.StaleBlobError, "Blob 'a.jpg.dec' changed after it was listed.", True, False, None),
    ),
    "412 unnamed": (
        _answered(azure_errors.HttpResponseError, 412),
        (errors.StaleBlobError, "Blob 'a.jpg.dec' changed after it was listed.", True, False, None),
    ),
    "500": (
        _answered(azure_errors.HttpResponseError, 500),
        (errors.ServiceError, "Storage answered 500 when asked to download blob 'a.jpg.dec'.", True, False, 500),
    ),
    "tls": (
        azure_errors.ServiceRequestError(TLS_FAILURE, error=TLS_FAILURE),
        (errors.ServiceError, "TLS verification failed for Storage.", True, False, None),
    ),
    "unreachable": (
        azure_errors.ServiceRequestError(f"connection refused by {SECRET}"),
        (errors.ServiceError, "Could not reach Storage (ServiceRequestError).", True, False, None),
    ),
    "cut off": (
        azure_errors.ServiceResponseError(f"connection reset by {SECRET}"),
        (errors.ServiceError, "Could not reach Storage (ServiceResponseError).", True, False, None),
    ),
    "other": (
        azure_errors.DecodeError(f"cannot decode {SECRET}"),
        (errors.ServiceError, "Could not download blob 'a.jpg.dec': DecodeError.", True, False, None),
    ),
}


@pytest.mark.parametrize("case", list(AZURE))
def test_each_azure_exception_becomes_our_error_with_what_to_branch_on_and_no_secret(case):
    exc, (kind, message, retryable, blob_fault, status) = AZURE[case]
    error = errors.from_azure(exc, DOWNLOAD)
    assert type(error) is kind and error.message == message
    assert (error.retryable, error.blob_fault, getattr(error, "status", None)) == (retryable, blob_fault, status)
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in (error.hint or "")


def test_a_refusal_says_what_to_grant_and_a_call_without_its_own_404_or_412_says_the_service_failed():
    assert errors.from_azure(azure_errors.ClientAuthenticationError("no"), DOWNLOAD).hint == "Grant a role."
    listing = errors.AzureCall("Storage", "list the 'data' container", hint="Check the settings.")
    assert errors.from_azure(azure_errors.ClientAuthenticationError("no"), listing).hint == "Check the settings."
    missing = errors.from_azure(_answered(azure_errors.ResourceNotFoundError, 404), listing)
    changed = errors.from_azure(_answered(azure_errors.ResourceModifiedError, 412), listing)
    assert [(type(e), e.status) for e in (missing, changed)] == [(errors.ServiceError, 404), (errors.ServiceError, 412)]
    assert missing.message == "Could not list the 'data' container: Storage has no such resource."


# requests exception -> (its message, that TLS is said to be the cause)
REQUESTS = {
    "tls": (TLS_FAILURE, "TLS verification failed for the MM server at https://mm.example."),
    "refused": (
        requests.exceptions.ConnectionError(f"refused {SECRET}"),
        "Could not reach the MM server at https://mm.example (ConnectionError).",
    ),
    "timeout": (
        requests.exceptions.ConnectTimeout(f"timed out {SECRET}"),
        "Could not reach the MM server at https://mm.example (ConnectTimeout).",
    ),
    "read timeout": (
        requests.exceptions.ReadTimeout(f"timed out {SECRET}"),
        "Could not reach the MM server at https://mm.example (ReadTimeout).",
    ),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_each_requests_exception_becomes_a_retryable_service_error_without_a_secret(case):
    exc, message = REQUESTS[case]
    error = errors.from_requests(exc, "the MM server at https://mm.example", hint="Check mm_server_url.")
    assert type(error) is errors.ServiceError and error.message == message
    assert (error.retryable, error.blob_fault) == (True, False)
    assert SECRET not in str(error) and SECRET not in repr(error)
