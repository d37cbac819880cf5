"""Pick a storage backend by URL scheme, from settings or from a URL found in a manifest."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from amas.config import Settings, StorageSettings, hide_url_password
from amas.errors import ConfigError
from amas.storage.base import Storage
from amas.storage.local import LocalStorage
from amas.storage.s3 import S3Storage


class Backend(Protocol):
    """A backend class: builds itself from a URL of its scheme and the storage settings."""

    def from_url(self, url: str, settings: StorageSettings) -> Storage: ...


BACKENDS: dict[str, Backend] = {
    "": LocalStorage,
    "file": LocalStorage,
    "s3": S3Storage,
}
"""Scheme -> backend class. A new backend is one module and one line here."""


def storage_for_url(url: str, settings: StorageSettings) -> Storage:
    """Open the store at ``url``; ``settings`` supplies what a URL cannot say (S3 endpoint, credentials)."""
    scheme = urlsplit(url).scheme.lower()
    backend = BACKENDS.get(scheme)
    if backend is None:
        valid = ", ".join(f"{name}://" for name in sorted(BACKENDS) if name) + " or a plain directory path"
        raise ConfigError(
            f"storage URL {hide_url_password(url)!r} has scheme {scheme!r}, which is not supported; use {valid}"
        )
    return backend.from_url(url, settings)


def open_storage(settings: Settings) -> Storage:
    """The configured store: ``AMAS_STORAGE_URL``, or ``AMAS_HOME/storage`` when it is empty."""
    return storage_for_url(settings.storage_url, settings.storage)
