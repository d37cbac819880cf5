"""Reading and writing the pipeline's files: atomic writes, md5 as DVC computes it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from amas.datasets.sample import _fsync_dir

HASH_CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    """The md5 DVC 3 records for a file output: the md5 of its bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``target``, fsync it and rename it over
    ``target``: a reader (or DVC) sees the old file or the complete new one, never a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": True, "row_group_size": 1 << 20}
"""One setting for every derived table, so the same table always gives the same bytes."""


def write_parquet(table: pa.Table, target: Path) -> Path:
    return atomic_write(target, lambda tmp: pq.write_table(table, tmp, **PARQUET_OPTIONS))


def write_json(document: Any, target: Path) -> Path:
    """Sorted keys, two-space indent, final newline: stable bytes for DVC and for review."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def arrow_schema(path: Path) -> pa.Schema:
    """The schema from the Parquet footer, without reading the data."""
    return pq.read_schema(path)
