"""``manifest.json``: what a backup holds, written last — a backup without one does not exist.

The manifest is plain JSON a person (or ``jq``) can read: the objects with their stored size
and sha256, how they were compressed and encrypted (never the key: only its id), the row count
and content digest of every store table taken in the dump's own snapshot, the erasure-ledger
position and the schema revision. When the backup is encrypted the manifest carries an HMAC
under a key derived from the backup key, so an edited manifest is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amas.backup.codec import CorruptObject

FORMAT = "amas-backup/1"
MANIFEST_NAME = "manifest.json"
PREFIX = "backups/"


class ObjectEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["store", "artifacts", "dvc-index"]
    key: str = Field(description="Key in the backup storage.")
    format: str = Field(description="What the plaintext is: pg_dump-custom, sqlite, tar or json.")
    size: int = Field(ge=0, description="Stored bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the stored bytes.")
    plain_size: int = Field(ge=0, description="Bytes before compression and encryption.")
    details: dict[str, Any] = Field(default_factory=dict)


class TableDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=0)
    digest: str


class Encryption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["AES-256-GCM"] = "AES-256-GCM"
    format: Literal["amas-aead-1"] = "amas-aead-1"
    chunk_size: int
    key_id: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["amas-backup/1"] = FORMAT
    id: str
    started_at: datetime
    finished_at: datetime
    source: dict[str, Any] = Field(description="The store's dialect and server version, the storage URL (no secrets).")
    tools: dict[str, str]
    compression: dict[str, Any]
    encryption: Encryption | None
    objects: list[ObjectEntry]
    digest_method: str
    tables: dict[str, TableDigest]
    schema_revision: str | None
    erasure_ledger_position: int
    hmac: str | None = None

    def object(self, name: str) -> ObjectEntry | None:
        return next((o for o in self.objects if o.name == name), None)

    @property
    def stored_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def unsigned_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"hmac"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sign(self, key: bytes) -> Manifest:
        self.hmac = hmac.new(_mac_key(key), self.unsigned_bytes(), hashlib.sha256).hexdigest()
        return self

    def check_signature(self, key: bytes) -> None:
        if self.hmac is None:
            raise CorruptObject("manifest.json of an encrypted backup has no hmac")
        expected = hmac.new(_mac_key(key), self.unsigned_bytes(), hashlib.sha256).hexdigest()
        # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (an edited hmac field).
        if not hmac.compare_digest(expected.encode(), self.hmac.encode()):
            raise CorruptObject("manifest.json fails its HMAC: it was edited after the backup was written")

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def _mac_key(key: bytes) -> bytes:
    return hmac.new(key, b"amas-backup-manifest", hashlib.sha256).digest()


def parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "(document)"
        raise CorruptObject(f"{where}: not a valid backup manifest ({field}: {err['msg']})") from None


def backup_prefix(backup_id: str) -> str:
    return f"{PREFIX}{backup_id}/"


def manifest_key(backup_id: str) -> str:
    return f"{backup_prefix(backup_id)}{MANIFEST_NAME}"
