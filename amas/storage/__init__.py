"""Object storage for backups, artifacts and evidence: one contract, one module per backend.

``base`` states the contract (``Storage``) and the errors; ``local`` keeps objects in a
directory (the local profile), ``s3`` in an S3 bucket (production); ``factory`` chooses by
URL scheme. Callers depend on ``Storage`` and ``open_storage`` only.
"""

from amas.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageUnavailable,
    validate_key,
    validate_prefix,
)
from amas.storage.factory import BACKENDS, open_storage, storage_for_url
from amas.storage.local import LocalStorage
from amas.storage.s3 import S3Storage

__all__ = [
    "BACKENDS",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "S3Storage",
    "Storage",
    "StorageUnavailable",
    "open_storage",
    "storage_for_url",
    "validate_key",
    "validate_prefix",
]
