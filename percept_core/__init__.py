"""Percept Curator's core: review, tag and push encrypted Azure Percept retraining data.

`Curator` is composed of its parts: a blob source (`RetrainingDataClient`), a key service and `Locker`, a
`CustomVisionClient` (the target), a `Ledger`, an actor and a project. `Curator()` or
`Curator.from_settings(settings)` builds each part from the settings when it is first needed; a part given to
the constructor is used as it is; `with_actor()` and `with_project()` return Curators sharing the parts. The
push pipeline depends only on what it uses of them (`protocols`), so fakes can stand in for each.
"""

from .blobs import BlobFilter, BlobPage, RetrainingBlob, RetrainingDataClient
from .config import Settings
from .curator import Curator
from .customvision import CustomVisionClient, Prediction, ProjectInfo, ProjectNotTrained, Region, TagInfo
from .errors import (
    ActionRefused,
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobTooLargeError,
    ConfigError,
    CuratorError,
    CustomVisionError,
    IntegrityError,
    InvalidMetadataError,
    MissingMetadataError,
    NotAnImageError,
    ServiceError,
    StaleBlobError,
    TagNameError,
    TrainingNotPossible,
    UnknownModelVersionError,
)
from .ledger import Ledger
from .locker import KeyServiceClient, Locker, decrypt_bytes, derive_key, encrypt_bytes
from .pipeline import CancelToken, DryRunReport, Outcome, Provenance, PushReport
from .suggestions import Suggestion

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
    "Prediction",
    "ProjectInfo",
    "ProjectNotTrained",
    "Provenance",
    "PushReport",
    "Region",
    "RetrainingBlob",
    "RetrainingDataClient",
    "ServiceError",
    "Settings",
    "StaleBlobError",
    "Suggestion",
    "TagInfo",
    "TagNameError",
    "TrainingNotPossible",
    "UnknownModelVersionError",
    "decrypt_bytes",
    "derive_key",
    "encrypt_bytes",
]
