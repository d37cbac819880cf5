"""Reading and writing the pipeline's files: atomic writes, md5 as DVC computes it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from amas.fsutil import atomic_write

HASH_CHUNK = 1 << 20


_MD5_CACHE: dict[tuple[str, int, int, int], str] = {}


def md5_file(path: Path) -> str:
    """The md5 DVC 3 records for a file output: the md5 of its bytes.

    Remembered per (path, inode, size, mtime): a stage describes its inputs for lineage before
    and after it runs, and hashing a 10 M-row table twice cost 0.65 s (scripts/bench_pipeline.py).
    Every write here is a rename of a new file, so a changed file never matches an old key.
    """
    info = path.stat()
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _MD5_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    _MD5_CACHE[key] = digest.hexdigest()
    return _MD5_CACHE[key]


PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": True, "row_group_size": 1 << 20}
"""One setting for every derived table, so the same table always gives the same bytes."""


def write_parquet(table: pa.Table, target: Path) -> Path:
    return atomic_write(target, lambda sink: pq.write_table(table, sink, **PARQUET_OPTIONS))


def write_json(document: Any, target: Path) -> Path:
    """Sorted keys, two-space indent, final newline: stable bytes for DVC and for review."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return atomic_write(target, lambda sink: sink.write(text.encode("utf-8")))


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def arrow_schema(path: Path) -> pa.Schema:
    """The schema from the Parquet footer, without reading the data."""
    return pq.read_schema(path)
