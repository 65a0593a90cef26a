"""What callers branch on is said by each error's class (retryable, the blob's own fault), never by its message."""

from __future__ import annotations

import pytest

from percept_core import errors
from percept_core.blobs import is_blob_fault
from percept_core.customvision import CustomVisionError
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
