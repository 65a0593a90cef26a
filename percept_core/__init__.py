"""Percept Curator's core: review, tag and push encrypted Azure Percept retraining data."""

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient
from .config import Settings
from .curator import Curator
from .errors import (
    AuthenticationError,
    BlobError,
    ConfigError,
    CuratorError,
    IntegrityError,
    MissingMetadataError,
    NotAnImageError,
    ServiceError,
    UnknownModelVersionError,
)
from .locker import KeyServiceClient, Locker, decrypt_bytes, derive_key, encrypt_bytes

__all__ = [
    "AuthenticationError",
    "BlobError",
    "BlobFilter",
    "BlobPage",
    "ConfigError",
    "Curator",
    "CuratorError",
    "IntegrityError",
    "KeyServiceClient",
    "Locker",
    "MissingMetadataError",
    "NotAnImageError",
    "RetrainingBlob",
    "RetrainingDataClient",
    "ServiceError",
    "Settings",
    "UnknownModelVersionError",
    "decrypt_bytes",
    "derive_key",
    "encrypt_bytes",
]
