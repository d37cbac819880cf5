"""``erasures/subjects.json``: who the data pipeline must leave out, as keyed digests only.

The raw datasets are made by a deterministic generator, so an erased person would come back on
the next ``dvc repro``; DVC cannot erase a file from history either. Instead the pipeline
re-applies the erasure ledger: this git-tracked file lists the HMAC digests (erasure key,
``amas.db.ledger.subject_digest``) of erased subjects' ids and emails, it is a dependency of the
``generate`` stage, and ``generate`` drops every person whose ``subject_id`` or ``email`` digest is
listed, with their cases, events and the notes of their cases, and writes ``[erased]`` where
another note names them (full name or email). An empty list changes nothing: the outputs are
byte-identical to a run without this step.

The file holds no identifier, only digests and the id of the key that made them. The key must be
the same wherever the pipeline runs (``AMAS_ERASURE_KEY``; production requires it): with
another key the digests match nobody, so the stage refuses to run rather than quietly bring
erased people back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from amas.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

ERASURE_LIST = "erasures/subjects.json"
FORMAT = 1
ERASED = "[erased]"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class ErasureList:
    key_id: str | None
    digests: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.digests)


def read_erasure_list(root: Path) -> ErasureList:
    """The list in workspace ``root`` (an absent file is an empty list); ``ConfigError`` if malformed."""
    path = root / ERASURE_LIST
    if not path.exists():
        return ErasureList(None, frozenset())
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ERASURE_LIST}: not readable JSON ({exc}); restore it from git") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{ERASURE_LIST}: expected an object with format {FORMAT}, key_id and digests")
    digests = document.get("digests")
    key_id = document.get("key_id")
    if not isinstance(digests, list) or not all(isinstance(d, str) and _DIGEST.match(d) for d in digests):
        raise ConfigError(f"{ERASURE_LIST}: digests must be a list of 64-character lower-case hex digests")
    if digests and not (isinstance(key_id, str) and _KEY_ID.match(key_id)):
        raise ConfigError(f"{ERASURE_LIST}: key_id must be the 16-character id of the erasure key")
    return ErasureList(key_id if digests else None, frozenset(digests))


def render(erasures: ErasureList) -> bytes:
    document = {"format": FORMAT, "key_id": erasures.key_id if erasures.digests else None,
                "digests": sorted(erasures.digests),
                "about": "HMAC-SHA256 digests (erasure key) of erased subjects' ids and emails; no identifiers. "
                         "The generate stage leaves these people out. Written by `amas gdpr erase`."}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_erasure_list(root: Path, erasures: ErasureList) -> bool:
    """Write the list atomically (sorted, stable bytes); False when the file already says this."""
    from amas.fsutil import atomic_write

    path = root / ERASURE_LIST
    data = render(erasures)
    if path.exists() and path.read_bytes() == data:
        return False

    def write(sink: BinaryIO) -> None:
        sink.write(data)

    atomic_write(path, write)
    return True


def check_key(erasures: ErasureList, key_id: str) -> None:
    if erasures.digests and erasures.key_id != key_id:
        raise ConfigError(f"{ERASURE_LIST} was made with erasure key {erasures.key_id}, but this machine's key is "
                          f"{key_id}: set AMAS_ERASURE_KEY to the key the erasure ledger uses (it must be the same "
                          "on every machine that runs the pipeline)")


def apply_erasure_list(root: Path, raw_dir: Path) -> dict[str, int]:
    """Leave the listed people out of the raw tables in ``raw_dir``; rows removed/redacted per table.

    Does nothing (and reads no key) when the list is empty. Tables with nothing to change keep
    their bytes; the others are rewritten atomically, one row group per original row group.
    """
    erasures = read_erasure_list(root)
    if not erasures:
        return {}
    from amas.config import get_settings
    from amas.db.ledger import erasure_key, key_id

    key = erasure_key(get_settings())
    check_key(erasures, key_id(key))
    return filter_raw_tables(raw_dir, erasures.digests, key)


def filter_raw_tables(raw_dir: Path, digests: frozenset[str], key: bytes) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from amas.db.ledger import subject_digest

    def listed(value: str | None) -> bool:
        return value is not None and subject_digest(value, key) in digests

    people = pq.read_table(raw_dir / "people.parquet", columns=["subject_id", "email", "full_name"])
    erased = [i for i, (sid, email) in enumerate(zip(people["subject_id"].to_pylist(), people["email"].to_pylist(),
                                                     strict=True)) if listed(sid) or listed(email)]
    if not erased:
        return {"people": 0, "cases": 0, "events": 0, "notes": 0, "notes_redacted": 0}
    rows = people.take(pa.array(erased))
    ids = pa.array(sorted({v for v in rows["subject_id"].to_pylist() if v}), type=pa.string())
    needles = sorted({v for column in ("full_name", "email") for v in rows[column].to_pylist() if v},
                     key=len, reverse=True)
    cases = pq.read_table(raw_dir / "cases.parquet", columns=["case_id", "subject_id"])
    case_ids = cases.filter(pc.is_in(cases["subject_id"], value_set=ids).fill_null(False))["case_id"]
    case_ids = pa.array([c for c in case_ids.to_pylist() if c], type=pa.string())
    erased_set = set(erased)
    notes = pq.read_table(raw_dir / "notes.parquet", columns=["case_id", "body"])
    own_notes = int(pc.sum(pc.is_in(notes["case_id"], value_set=case_ids).fill_null(False)).as_py() or 0)
    named = any(pc.any(pc.match_substring(notes["body"], n)).as_py() for n in needles)
    events = pq.read_table(raw_dir / "events.parquet", columns=["subject_id"])
    own_events = int(pc.sum(pc.is_in(events["subject_id"], value_set=ids).fill_null(False)).as_py() or 0)

    def not_theirs(column: str, values: pa.Array):  # noqa: ANN202
        return lambda table, _: pc.invert(pc.is_in(table[column], value_set=values).fill_null(False))

    counts = {"people": _rewrite(raw_dir / "people.parquet",
                                 lambda t, start: pa.array([start + i not in erased_set for i in range(t.num_rows)])),
              "cases": _rewrite(raw_dir / "cases.parquet", not_theirs("subject_id", ids)) if len(case_ids) else 0,
              "events": _rewrite(raw_dir / "events.parquet", not_theirs("subject_id", ids)) if own_events else 0}
    redacted = 0

    def redact(table: pa.Table) -> pa.Table:
        nonlocal redacted
        body = table["body"]
        hit = pa.array([False] * table.num_rows)
        for needle in needles:
            hit = pc.or_(hit, pc.match_substring(body, needle).fill_null(False))
            body = pc.replace_substring(body, pattern=needle, replacement=ERASED)
        redacted += int(pc.sum(hit).as_py() or 0)
        return table.set_column(table.schema.get_field_index("body"), "body", body)

    counts["notes"] = (_rewrite(raw_dir / "notes.parquet", not_theirs("case_id", case_ids), transform=redact)
                       if own_notes or named else 0)
    counts["notes_redacted"] = redacted
    return counts


def _rewrite(path: Path, keep: Callable[[pa.Table, int], Any],
             transform: Callable[[pa.Table], pa.Table] | None = None) -> int:
    """Rewrite ``path`` atomically, streaming one row group at a time, keeping the rows where
    ``keep(row_group, index_of_its_first_row)`` is true and passing them through ``transform``.
    Returns the number of rows dropped."""
    import pyarrow.parquet as pq

    from amas.datasets.generate import SCHEMAS
    from amas.fsutil import atomic_write

    schema = SCHEMAS[path.stem]
    dropped = 0

    def write(sink: BinaryIO) -> None:
        nonlocal dropped
        source = pq.ParquetFile(path)
        start = 0
        # The generator's writer settings (amas.datasets.generate._write_parquet).
        with pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=True) as writer:
            for index in range(source.num_row_groups):
                table = source.read_row_group(index).cast(schema)
                kept = table.filter(keep(table, start))
                start += table.num_rows
                dropped += table.num_rows - kept.num_rows
                if transform is not None:
                    kept = transform(kept)
                if kept.num_rows:
                    writer.write_table(kept, row_group_size=kept.num_rows)

    atomic_write(path, write)
    return dropped
