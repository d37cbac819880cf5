"""OpenLineage events to JSON in one pass: the same bytes as the client's ``Serde.to_json``.

The client serialises with ``attr.asdict`` and then a second walk that drops ``None`` values
and turns enums, dates and UUIDs into text. For a pipeline stage's COMPLETE event (about
17 KB: seven datasets with schema, column-lineage and tag facets) that took 0.92 ms of the
1.26 ms an emission cost (scripts/bench_pipeline.py); one walk over the attrs fields, with the
field names cached per class, does the same work in a fraction of it. A unit test checks the
output is identical to the client's for every facet AMAS emits.
"""

from __future__ import annotations

import datetime
import json
import uuid
from enum import Enum
from typing import Any

import attr
from openlineage.client.transport.file import FileTransport

_FIELDS: dict[type, tuple[str, ...] | None] = {}
_SCALARS = (str, int, float, bool)


def _fields(cls: type) -> tuple[str, ...] | None:
    try:
        return _FIELDS[cls]
    except KeyError:
        names = tuple(a.name for a in attr.fields(cls)) if attr.has(cls) else None
        _FIELDS[cls] = names
        return names


def plain(obj: Any) -> Any:
    """``Serde.remove_nulls_and_enums(attr.asdict(obj))`` in one walk."""
    if type(obj) in _SCALARS or obj is None:
        return obj
    names = _fields(type(obj))
    if names is not None:
        out = {}
        for name in names:
            value = plain(getattr(obj, name))
            if value is not None:
                out[name] = value
        return out
    if isinstance(obj, dict):
        return {key: value for key, value in ((k, plain(v)) for k, v in obj.items()) if value is not None}
    if isinstance(obj, list | tuple | set | frozenset):
        items = (plain(v) for v in obj if v is not None)
        return [v for v in items if v is not None and v != {}]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime.date):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if type(obj).__name__ == "int64":  # a numpy integer, as the client allows
        return int(obj)
    return obj


def to_json(event: Any) -> str:
    return json.dumps(plain(event), sort_keys=True,
                      default=lambda o: f"<<non-serializable: {type(o).__qualname__}>>")


class JsonlFileTransport(FileTransport):
    """The client's file transport (append mode, same file handling), serialising in one pass."""

    def emit(self, event: Any) -> None:
        path = self._get_file_path(event)
        try:
            with self._file_handler.open_file(path, "a" if self.config.append else "w") as handle:
                handle.write(to_json(event) + "\n")
        except Exception as error:
            raise RuntimeError(f"Failed to write to log file `{path}`: {error}") from error
