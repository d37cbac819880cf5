"""Access and portability (GDPR Art. 15 and 20): everything about a subject as one ZIP.

The ZIP holds, per store, a JSON file and a CSV file of the rows about the subject (store tables
under ``store/``, DVC datasets under ``datasets/``, and what Prefect's metadata says about them
under ``prefect/``: flow runs, log lines and artifacts that mention them), the evidence objects behind their artifacts
under ``objects/``, and ``manifest.json`` with the sha256, size and row count of every other file.
It is written atomically to ``--out`` and to ``gdpr/<ref>/export.zip`` in object storage (an
erasure of the same subject deletes that copy). The request is tracked in ``gdpr_requests`` like
an erasure. An unknown subject gets a ZIP whose manifest says no data was found.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import Engine, inspect, or_, select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import erasure_key, key_id
from amas.db.models import AgentTask, Artifact, DataSubject, RequestKind, RequestStatus, TaskResult, utcnow
from amas.errors import AmasError
from amas.gdpr import requests
from amas.gdpr.discovery import RAW_CASES, RAW_EVENTS, RAW_NOTES, RAW_PEOPLE, Discovery, discover
from amas.gdpr.identifiers import By, parse_identifier

if TYPE_CHECKING:
    from amas.config import Settings
    from amas.storage import Storage

FORMAT = 1


@dataclass
class ExportOutcome:
    request_ref: str
    uri: str
    out: Path | None
    sha256: str
    manifest: dict[str, Any]
    discovery: Discovery = field(repr=False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _rows(session: Session, model: type, where: Any) -> list[dict[str, Any]]:
    columns = [c.key for c in inspect(model).column_attrs]
    return [{c: _plain(getattr(obj, c)) for c in columns}
            for obj in session.scalars(select(model).where(where).order_by(*inspect(model).primary_key))]


def _csv(rows: Sequence[dict[str, Any]]) -> bytes:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                         for c, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def store_rows(session: Session, discovery: Discovery) -> dict[str, list[dict[str, Any]]]:
    ids = discovery.subject_ids
    task_ids = list(discovery.tasks) + list(discovery.mentioning_tasks)
    tables: dict[str, list[dict[str, Any]]] = {
        "data_subjects": _rows(session, DataSubject, DataSubject.id.in_(ids)),
        "agent_tasks": _rows(session, AgentTask, AgentTask.id.in_(task_ids)),
        "task_results": _rows(session, TaskResult, or_(TaskResult.task_id.in_(list(discovery.tasks)),
                                                        TaskResult.id.in_(discovery.mentioning_results))),
        "artifacts": _rows(session, Artifact, Artifact.id.in_([a.id for a in discovery.artifacts])),
    }
    return {name: rows for name, rows in tables.items() if rows}


def dataset_rows(discovery: Discovery) -> dict[str, list[dict[str, Any]]]:
    """Dataset path -> the rows about the subject (people, their cases, events, notes, derived rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    datasets = discovery.datasets
    if datasets is None or not datasets.people:
        return {}
    root = datasets.root
    ids = pa.array(sorted(datasets.subject_ids), type=pa.string())
    found: dict[str, list[dict[str, Any]]] = {}
    people = pq.read_table(root / RAW_PEOPLE)
    found[RAW_PEOPLE] = people.filter(pc.is_in(people["subject_id"], value_set=ids).fill_null(False)).to_pylist()
    cases = pq.read_table(root / RAW_CASES)
    own_cases = cases.filter(pc.is_in(cases["subject_id"], value_set=ids).fill_null(False))
    found[RAW_CASES] = own_cases.to_pylist()
    events = pq.read_table(root / RAW_EVENTS)
    found[RAW_EVENTS] = events.filter(pc.is_in(events["subject_id"], value_set=ids).fill_null(False)).to_pylist()
    notes = pq.read_table(root / RAW_NOTES)
    keep = pc.is_in(notes["case_id"], value_set=own_cases["case_id"].combine_chunks()).fill_null(False)
    for needle in sorted(datasets.names | datasets.emails):
        keep = pc.or_(keep, pc.match_substring(notes["body"], needle).fill_null(False))
    found[RAW_NOTES] = notes.filter(keep).to_pylist()
    for item in datasets.found:
        if item.location in found or not item.count or not item.location.endswith(".parquet"):
            continue
        table = pq.read_table(root / item.location)
        found[item.location] = table.filter(pc.is_in(table["subject_id"], value_set=ids).fill_null(False)).to_pylist()
    return {path: [{k: _plain(v) for k, v in row.items()} for row in rows] for path, rows in found.items() if rows}


def build_zip(sink: BinaryIO, *, files: dict[str, tuple[bytes, int]], object_keys: Sequence[str],
              manifest: dict[str, Any], storage: Storage) -> None:
    """Write the ZIP: every file (with its row count), the evidence objects (streamed), and
    ``manifest.json`` last, listing the sha256 and size of everything before it."""
    entries = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, (data, rows) in files.items():
            archive.writestr(name, data)
            entries.append({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "rows": rows})
        for key in object_keys:
            name = f"objects/{key}"
            digest = hashlib.sha256()
            size = 0
            with storage.open(key) as source, archive.open(name, "w") as target:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    target.write(chunk)
            entries.append({"path": name, "sha256": digest.hexdigest(), "size": size})
        manifest["files"] = entries
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def prefect_rows(discovery: Discovery) -> dict[str, list[dict[str, Any]]]:
    """Prefect's flow runs, log lines and artifacts that mention the subject, as found."""
    if discovery.prefect is None:
        return {}
    return {name: [{k: _plain(v) for k, v in row.items()} for row in rows]
            for name, rows in discovery.prefect.records.items() if rows}


def export_subject(identifier: str | None = None, *, by: By | str = By.auto, out: Path | None = None,
                   actor: str = "amas", settings: Settings | None = None, engine: Engine | None = None,
                   storage: Storage | None = None, workspace: Path | None = None, now: datetime | None = None,
                   request_ref: str | None = None, prefect: bool = True) -> ExportOutcome:
    """Gather everything about the subject into a ZIP, store it, and record the request.

    Give ``identifier`` or ``request_ref`` (an export staged with ``requests.stage_request``).
    """
    from amas.config import get_settings
    from amas.db.session import get_engine, session_scope
    from amas.fsutil import atomic_write
    from amas.gdpr.erase import search_prefect
    from amas.storage import open_storage

    settings = settings or get_settings()
    engine = engine or get_engine(settings)
    storage = storage if storage is not None else open_storage(settings)
    key = erasure_key(settings)
    now = now or utcnow()
    if request_ref is not None:
        with session_scope(engine) as session:
            query = requests.unseal(session, request_ref, key, kind=RequestKind.export)
    elif identifier is not None:
        query = parse_identifier(identifier, by)
    else:
        raise AmasError("give a subject identifier or a request reference")
    with session_scope(engine) as session:
        discovery = discover(session, query, key=key, storage_url=settings.storage_url, object_exists=storage.exists,
                             workspace=workspace, lineage_file=settings.lineage_file)
        tables = store_rows(session, discovery)
    if prefect:
        search_prefect(discovery, settings)
    else:
        discovery.notes.append("Prefect metadata was not searched: left out by the caller")
    with session_scope(engine) as session:
        digest = requests.request_digest(query, discovery, key)
        request, _ = requests.open_request(session, kind=RequestKind.export, subject_digest=digest,
                                           key_id=key_id(key), actor=actor, now=now, ref=request_ref)
        ref = request.ref
    datasets = dataset_rows(discovery)

    files: dict[str, tuple[bytes, int]] = {}
    for prefix, groups in (("store", tables), ("datasets", datasets), ("prefect", prefect_rows(discovery))):
        for name, rows in groups.items():
            stem = f"{prefix}/{Path(name).with_suffix('').as_posix().removeprefix('data/')}"
            text = json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n"
            files[stem + ".json"] = (text.encode("utf-8"), len(rows))
            files[stem + ".csv"] = (_csv(rows), len(rows))
    manifest = {"format": FORMAT, "export": "GDPR Art. 15/20 access and portability", "request": ref,
                "generated_at": utcnow().isoformat(), "subject_digest": digest, "key_id": key_id(key),
                "result": "no data found" if discovery.nothing_found else "exported",
                "found": [f.as_dict() for f in discovery.found], "notes": discovery.notes,
                "prefect": discovery.prefect.as_dict() if discovery.prefect is not None else None}
    export_key = f"gdpr/{ref}/export.zip"
    try:
        with tempfile.TemporaryDirectory(prefix="amas-export-") as scratch:
            staged = Path(scratch) / "export.zip"
            with staged.open("wb") as sink:
                build_zip(sink, files=files, object_keys=discovery.objects, manifest=manifest, storage=storage)
            sha256 = hashlib.sha256(staged.read_bytes()).hexdigest()
            with staged.open("rb") as source:
                storage.put(export_key, source)
            if out is not None:
                atomic_write(out, lambda sink: _copy(staged, sink))
    except Exception as exc:
        with session_scope(engine) as session:
            failed = requests.load(session, ref)
            failed.status = RequestStatus.failed
            failed.error = " ".join(str(exc).split())[:500] or type(exc).__name__
            append_event(session, actor=actor, action="gdpr.export.failed", entity_type="gdpr_request",
                         entity_id=ref, details={"error_type": type(exc).__name__})
        raise
    uri = f"{settings.storage_url.rstrip('/')}/{export_key}"
    with session_scope(engine) as session:
        request = requests.load(session, ref)
        request.status = RequestStatus.completed
        request.completed_at = utcnow()
        request.certificate_uri = uri
        requests.forget_subject(request)
        rows = {name: count for name, (_, count) in files.items() if name.endswith(".json")}
        requests.update_summary(request, result=manifest["result"], sha256=sha256, files=len(manifest["files"]),
                                rows=rows)
        append_event(session, actor=actor, action="gdpr.export.completed", entity_type="gdpr_request", entity_id=ref,
                     details={"result": manifest["result"], "sha256": sha256, "files": len(manifest["files"])})
    return ExportOutcome(request_ref=ref, uri=uri, out=out, sha256=sha256, manifest=manifest, discovery=discovery)


def _copy(path: Path, sink: BinaryIO) -> None:
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            sink.write(chunk)

