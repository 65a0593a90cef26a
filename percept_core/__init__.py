"""Percept Curator's core: review, tag and push encrypted Azure Percept retraining data."""

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient
from .config import Settings
from .curator import Curator
from .customvision import CustomVisionClient, CustomVisionError, ProjectInfo, Region, TagInfo, TagNameError
from .errors import (
    ActionRefused,
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobTooLargeError,
    ConfigError,
    CuratorError,
    IntegrityError,
    InvalidMetadataError,
    MissingMetadataError,
    NotAnImageError,
    ServiceError,
    StaleBlobError,
    UnknownModelVersionError,
)
from .ledger import Ledger
from .locker import KeyServiceClient, Locker, decrypt_bytes, derive_key, encrypt_bytes
from .pipeline import CancelToken, DryRunReport, Outcome, Provenance, PushReport

__all__ = [
    "ActionRefused",
    "AuthenticationError",
    "BlobError",
    "BlobFilter",
    "BlobNotFoundError",
    "BlobPage",
    "BlobTooLargeError",
    "CancelToken",
    "ConfigError",
    "Curator",
    "CuratorError",
    "CustomVisionClient",
    "CustomVisionError",
    "DryRunReport",
    "IntegrityError",
    "InvalidMetadataError",
    "KeyServiceClient",
    "Ledger",
    "Locker",
    "MissingMetadataError",
    "NotAnImageError",
    "Outcome",
    "ProjectInfo",
    "Provenance",
    "PushReport",
    "Region",
    "RetrainingBlob",
    "RetrainingDataClient",
    "ServiceError",
    "Settings",
    "StaleBlobError",
    "TagInfo",
    "TagNameError",
    "UnknownModelVersionError",
    "decrypt_bytes",
    "derive_key",
    "encrypt_bytes",
]
