"""The erasure ledger: who was erased, kept as a keyed hash instead of the identifier.

A restore re-applies every entry past the position its backup recorded, so restoring an old
backup never brings an erased person back. The digest is an HMAC so the ledger alone cannot
be used to test whether a guessed email was ever a customer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from amas.config import Profile, Settings, decode_key
from amas.db.models import ErasureLedgerEntry
from amas.errors import ConfigError


def normalise_identifier(identifier: str) -> str:
    """Emails and ids are compared case-insensitively and without surrounding space."""
    return identifier.strip().casefold()


def subject_digest(identifier: str, key: bytes) -> str:
    return hmac.new(key, normalise_identifier(identifier).encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"amas-erasure-key-id\n" + key).hexdigest()[:16]


def erasure_key(settings: Settings) -> bytes:
    """The ledger key: from AMAS_ERASURE_KEY, or in the local profile a key file made once."""
    if settings.core.erasure_key is not None:
        raw = settings.core.erasure_key.get_secret_value()
        try:
            return decode_key(settings.core.erasure_key, "AMAS_ERASURE_KEY")
        except ConfigError:
            if len(raw) < 16:
                raise ConfigError("AMAS_ERASURE_KEY must be at least 16 characters") from None
            return hashlib.sha256(raw.encode()).digest()
    if settings.core.profile is Profile.production:
        raise ConfigError("AMAS_ERASURE_KEY is required in production")
    return _local_key(settings.core.home / "keys" / "erasure.key")


def _local_key(path: Path) -> bytes:
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".erasure-key-")
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
        handle.flush()
        os.fsync(handle.fileno())
    try:
        # link() fails if another process made the key first; then its key wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())


def record_erasure(session: Session, *, identifier: str, key: bytes, request_ref: str) -> ErasureLedgerEntry:
    """Add a subject to the ledger, or return the existing entry (idempotent)."""
    digest = subject_digest(identifier, key)
    entry = session.scalar(select(ErasureLedgerEntry).where(ErasureLedgerEntry.subject_digest == digest))
    if entry is None:
        entry = ErasureLedgerEntry(subject_digest=digest, key_id=key_id(key), request_ref=request_ref)
        session.add(entry)
        session.flush()
    return entry


def is_erased(session: Session, *, identifier: str, key: bytes) -> bool:
    digest = subject_digest(identifier, key)
    return session.scalar(select(ErasureLedgerEntry.id).where(ErasureLedgerEntry.subject_digest == digest)) is not None


def ledger_position(session: Session) -> int:
    """The highest position so far (0 for an empty ledger); a backup records it."""
    return session.scalar(select(func.coalesce(func.max(ErasureLedgerEntry.id), 0))) or 0
