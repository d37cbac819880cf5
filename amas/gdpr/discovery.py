"""Find everything AMAS holds about one data subject: a pure description, no changes.

Where it looks, and what each look costs:

- ``data_subjects``: by ``id`` (primary key), ``external_ref`` (unique index) and ``email``
  (index), trying the identifier as given and lower-cased; only when both miss does it fall
  back to ``lower(column) = :value``, a sequential scan of one narrow table.
- ``agent_tasks`` with the subject's ``subject_id`` (index), and their ``task_results`` and
  ``artifacts`` (indexes on ``task_id`` and ``subject_id``).
- Free text: ``agent_tasks.parameters``, ``task_results.summary``/``output`` and
  ``audit_events.details`` that mention the subject's email or external_ref. The database
  filters with ``CAST(json AS TEXT) ILIKE :pattern`` (bound, with ``%``/``_`` escaped): one
  sequential scan per table, O(rows), measured by ``scripts/bench_gdpr.py``. Python then
  confirms each candidate with a whole-token match, so ``ann@example.com`` does not match
  ``joann@example.com``. Identifiers shorter than ``MIN_TEXT_NEEDLE`` characters are not
  searched for in free text (they would match unrelated text); the discovery notes say so.
- Storage: the objects behind the subject's artifacts, and earlier Art. 15 exports about them.
- DVC datasets in the pipeline workspace: people whose ``subject_id`` or ``email`` matches,
  their cases, events and the notes of their cases, notes elsewhere that name them, and every
  dataset downstream of the raw tables (recorded OpenLineage runs, or the ``dvc.yaml`` stage
  graph when no run was recorded), with the PII columns the classifier found.
- Prefect's own metadata (flow-run parameters, logs, artifacts): ``amas.gdpr.prefect_mentions``,
  through the Prefect API, with the same needles and whole-token match; its result is attached
  to the discovery as ``prefect`` by the requests that search it.

The result's ``repr`` holds no identifier: identifiers are kept in fields excluded from it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Text, and_, cast, false, func, or_, select, true
from sqlalchemy.orm import Session

from amas.db.ledger import normalise_identifier, subject_digest
from amas.db.models import (
    AgentTask,
    Artifact,
    AuditEvent,
    DataSubject,
    ErasureLedgerEntry,
    GdprRequest,
    RequestKind,
    TaskResult,
)
from amas.gdpr.identifiers import By, InvalidIdentifier, SubjectQuery

if TYPE_CHECKING:
    from amas.gdpr.prefect_mentions import PrefectDiscovery

MIN_TEXT_NEEDLE = 6
"""Shortest identifier searched for in free text (task parameters, results, audit details)."""

SUBJECT_PII = ("external_ref", "email", "display_name")
RAW_PEOPLE = "data/raw/people.parquet"
RAW_CASES = "data/raw/cases.parquet"
RAW_EVENTS = "data/raw/events.parquet"
RAW_NOTES = "data/raw/notes.parquet"
RAW_TABLES = (RAW_PEOPLE, RAW_CASES, RAW_EVENTS, RAW_NOTES)


@dataclass(frozen=True)
class Found:
    """One place holding data about the subject: what, where, how many, why it matched."""

    store: str
    """``store`` (a table), ``storage`` (objects), ``dataset`` (a DVC-tracked file) or ``prefect``."""
    location: str
    count: int
    why: str
    pii_columns: tuple[str, ...] = ()
    version: str | None = None
    """A dataset's DVC md5 when it was looked at."""

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "location": self.location, "count": self.count, "why": self.why,
                "pii_columns": list(self.pii_columns), "version": self.version}


@dataclass(frozen=True)
class SubjectRow:
    id: int
    external_ref: str = field(repr=False)
    email: str | None = field(repr=False)
    display_name: str | None = field(repr=False)

    def identifiers(self) -> list[str]:
        return [value for value in (self.external_ref, self.email) if value]


@dataclass(frozen=True)
class ArtifactRow:
    id: int
    key: str | None = field(repr=False)
    """The storage key, or None when the URI is outside AMAS's configured storage."""


@dataclass
class DatasetDiscovery:
    """Rows about the subject in the pipeline's datasets (counts; identifiers out of ``repr``)."""

    root: Path
    found: list[Found]
    subject_ids: frozenset[str] = field(default_factory=frozenset, repr=False)
    emails: frozenset[str] = field(default_factory=frozenset, repr=False)
    names: frozenset[str] = field(default_factory=frozenset, repr=False)
    lineage_source: str = "none"
    """Where downstream datasets came from: ``lineage`` (recorded runs), ``dvc.yaml`` or ``none``."""

    @property
    def people(self) -> int:
        return next((f.count for f in self.found if f.location == RAW_PEOPLE), 0)

    @property
    def contained(self) -> dict[str, str | None]:
        """Dataset path -> DVC md5 of every version that holds rows about the subject."""
        return {f.location: f.version for f in self.found if f.count > 0}

    def identifiers(self) -> set[str]:
        """Values whose digests keep the subject out of the datasets (their ids and emails)."""
        return set(self.subject_ids) | set(self.emails)


@dataclass
class Discovery:
    """Everything found about one subject. A plain value: the planner and the certificate read it."""

    query: SubjectQuery
    subjects: list[SubjectRow]
    erased_subjects: int
    """Rows the identifier names that an earlier erasure anonymised."""
    tasks: list[uuid.UUID] = field(repr=False)
    task_cases: dict[str, int]
    """How many of the subject's tasks belong to each case (for legal holds on a case)."""
    results_of_tasks: int
    mentioning_tasks: list[uuid.UUID] = field(repr=False)
    mentioning_results: list[int] = field(repr=False)
    artifacts: list[ArtifactRow]
    objects: list[str] = field(repr=False)
    exports: list[str] = field(repr=False)
    """Storage keys of earlier Art. 15 exports about the subject (they hold their data)."""
    audit_mentions: int
    audit_events: int
    ledger_entries: int
    """How many of the subject's identifiers the erasure ledger already lists."""
    datasets: DatasetDiscovery | None
    notes: list[str] = field(default_factory=list)
    erased_refs: list[str] = field(default_factory=list)
    """The external_ref of those rows: the ledger digest ``hash_identifier`` wrote there."""
    prefect: PrefectDiscovery | None = None
    """Mentions in Prefect's metadata; None when the request did not search Prefect at all."""

    def text_needles(self) -> list[str]:
        """The identifiers searched for in free text outside the store (Prefect)."""
        return text_needles(self.identifiers())

    @property
    def subject_ids(self) -> list[int]:
        return [s.id for s in self.subjects]

    def identifiers(self) -> set[str]:
        """Every identifier of the subject, normalised: the query's own (unless a bare id), the
        store rows' external_ref and email, and the dataset rows' subject_id and email."""
        values = {self.query.normalised} if self.query.by is not By.id else set()
        for subject in self.subjects:
            values.update(normalise_identifier(v) for v in subject.identifiers())
        if self.datasets is not None:
            values.update(normalise_identifier(v) for v in self.datasets.identifiers())
        return values

    def digests(self, key: bytes) -> list[str]:
        return sorted({subject_digest(value, key) for value in self.identifiers()})

    @property
    def found(self) -> list[Found]:
        rows: list[Found] = []
        if self.subjects:
            why = {By.id: "id matches", By.ref: "external_ref matches", By.email: "email matches",
                   By.auto: "external_ref, email or id matches"}[self.query.by]
            rows.append(Found("store", "data_subjects", len(self.subjects), why, SUBJECT_PII))
        if self.tasks:
            rows.append(Found("store", "agent_tasks", len(self.tasks), "subject_id is the subject",
                              ("parameters",)))
        if self.results_of_tasks:
            rows.append(Found("store", "task_results", self.results_of_tasks, "results of the subject's tasks",
                              ("summary", "output")))
        if self.mentioning_tasks:
            rows.append(Found("store", "agent_tasks.parameters", len(self.mentioning_tasks),
                              "parameters of other tasks mention the subject's email or external_ref",
                              ("parameters",)))
        if self.mentioning_results:
            rows.append(Found("store", "task_results.output", len(self.mentioning_results),
                              "results of other tasks mention the subject's email or external_ref",
                              ("summary", "output")))
        if self.artifacts:
            rows.append(Found("store", "artifacts", len(self.artifacts),
                              "subject_id is the subject, or task_id is one of the subject's tasks"))
        if self.objects:
            rows.append(Found("storage", "artifact objects", len(self.objects),
                              "objects behind the subject's artifacts"))
        if self.exports:
            rows.append(Found("storage", "gdpr exports", len(self.exports),
                              "earlier access-request exports about the subject"))
        rows.append(Found("store", "audit_events", self.audit_mentions,
                          f"{self.audit_mentions} of {self.audit_events} audit events mention the subject's "
                          "email or external_ref (audit details carry ids and counts, not personal data)"))
        if self.datasets is not None:
            rows.extend(self.datasets.found)
        if self.prefect is not None:
            rows.extend(self.prefect.found())
        return rows

    @property
    def nothing_found(self) -> bool:
        return not any(f.count for f in self.found if f.location != "audit_events")


# free text ---------------------------------------------------------------------------------------

def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json_forms(needle: str) -> set[str]:
    """How a string appears inside JSON text: escaped as SQLite's JSON stores it and as-is (JSONB)."""
    return {json.dumps(needle)[1:-1], json.dumps(needle, ensure_ascii=False)[1:-1]}


def text_needles(values: Iterable[str]) -> list[str]:
    """The identifiers worth searching for in free text (long enough not to match by chance)."""
    return sorted({normalise_identifier(v) for v in values if v and len(v.strip()) >= MIN_TEXT_NEEDLE})


def mention_filter(columns: Sequence[tuple[Any, bool]], needles: Sequence[str], *,
                   dialect: str) -> ColumnElement[bool]:
    """The text of ``columns`` (``(column, is_json)``, joined) contains one of ``needles``.

    Every needle is a bound parameter with ``%``, ``_`` and ``\\`` escaped. The text is
    lower-cased once per row and matched with ``LIKE ANY(array)`` on PostgreSQL (2.4 times faster
    than one ``ILIKE`` per needle and column at a million rows); needles are already normalised
    (lower case). JSON columns are also searched for the needle as JSON escapes it.
    """
    if not needles:
        return false()
    parts = [cast(column, Text) if is_json else func.coalesce(column, "") for column, is_json in columns]
    text = parts[0]
    for part in parts[1:]:
        text = text + " " + part
    lowered = func.lower(text)
    json_text = any(is_json for _, is_json in columns)
    forms = sorted({form.lower() for n in needles for form in ({n} | (_json_forms(n) if json_text else set()))})
    patterns = [f"%{_like_escape(form)}%" for form in forms]
    if dialect == "postgresql":
        from sqlalchemy import any_
        from sqlalchemy.dialects.postgresql import array

        # PostgreSQL's LIKE escapes with a backslash by default.
        return lowered.like(any_(array(patterns)))
    return or_(*(lowered.like(pattern, escape="\\") for pattern in patterns))


def mention_pattern(needles: Sequence[str]) -> re.Pattern[str] | None:
    """A whole-token, case-insensitive match of any needle (``ann@x.org`` is not in ``joann@x.org``)."""
    if not needles:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
    return re.compile(rf"(?<![\w.%+@-])(?:{alternatives})(?![\w@-]|\.\w)", re.IGNORECASE)


def mentions(value: Any, pattern: re.Pattern[str] | None) -> bool:
    """Whether any string inside ``value`` (JSON-like: dicts, lists, scalars) matches ``pattern``."""
    if pattern is None:
        return False
    if isinstance(value, str):
        return pattern.search(value) is not None
    if isinstance(value, Mapping):
        return any(mentions(k, pattern) or mentions(v, pattern) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(mentions(v, pattern) for v in value)
    return False


def redact_mentions(value: Any, pattern: re.Pattern[str] | None, replacement: str) -> Any:
    """``value`` with every match of ``pattern`` in its strings replaced (keys included)."""
    if pattern is None:
        return value
    if isinstance(value, str):
        return pattern.sub(replacement, value)
    if isinstance(value, Mapping):
        return {redact_mentions(k, pattern, replacement): redact_mentions(v, pattern, replacement)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_mentions(v, pattern, replacement) for v in value]
    return value


# store ---------------------------------------------------------------------------------------------

def find_subjects(session: Session, query: SubjectQuery) -> list[DataSubject]:
    """Rows of ``data_subjects`` the identifier names (erased ones included; the caller splits them)."""
    found: dict[int, DataSubject] = {}
    by_id: set[int] = set()
    by_text: set[int] = set()
    if query.subject_id is not None:
        row = session.get(DataSubject, query.subject_id)
        if row is not None:
            found[row.id] = row
            by_id.add(row.id)
    columns = []
    if query.searches_ref:
        columns.append(DataSubject.external_ref)
    if query.searches_email:
        columns.append(DataSubject.email)
    for column in columns:
        # The indexed lookups first; the case-insensitive scan only when both miss.
        rows = session.scalars(select(DataSubject).where(column.in_({query.value, query.normalised}))).all()
        if not rows:
            rows = session.scalars(select(DataSubject).where(func.lower(column) == query.normalised)).all()
        for row in rows:
            if normalise_identifier(getattr(row, column.key) or "") == query.normalised:
                found[row.id] = row
                by_text.add(row.id)
    if by_id and by_text and by_id != by_text:
        raise InvalidIdentifier("the identifier names one subject by id and another by external_ref or email; "
                                "choose with --by id, --by ref or --by email")
    return [found[i] for i in sorted(found)]


def storage_key(uri: str, storage_url: str) -> str | None:
    """The key of ``uri`` in the storage at ``storage_url``, or None when it lives elsewhere."""
    base = storage_url.rstrip("/") + "/"
    return uri[len(base):] if uri.startswith(base) else None


def discover(session: Session, query: SubjectQuery, *, key: bytes, storage_url: str,
             object_exists: Any = None, workspace: Path | None = None,
             lineage_file: Path | None = None) -> Discovery:
    """Everything about the subject ``query`` names, without changing anything.

    ``object_exists(key) -> bool`` checks storage (None: objects are not checked and every
    artifact key counts as present); ``workspace`` is the DVC pipeline root (None: datasets are
    not searched).
    """
    notes: list[str] = []
    rows = find_subjects(session, query)
    active = [SubjectRow(r.id, r.external_ref, r.email, r.display_name) for r in rows if r.erased_at is None]
    erased = sum(1 for r in rows if r.erased_at is not None)
    ids = [s.id for s in active]

    linked = select(AgentTask.id).where(AgentTask.subject_id.in_(ids)) if ids else None
    tasks: list[uuid.UUID] = []
    task_cases: dict[str, int] = {}
    if ids:
        for task_id, case_id in session.execute(select(AgentTask.id, AgentTask.case_id)
                                                .where(AgentTask.subject_id.in_(ids))):
            tasks.append(task_id)
            if case_id is not None:
                task_cases[case_id] = task_cases.get(case_id, 0) + 1
    results_of_tasks = (session.scalar(select(func.count()).select_from(TaskResult)
                                       .where(TaskResult.task_id.in_(linked))) or 0) if linked is not None else 0

    raw_values = [v for s in active for v in s.identifiers()]
    if query.by is not By.id:
        raw_values.append(query.value)
    needles = text_needles(raw_values)
    if any(v and len(v.strip()) < MIN_TEXT_NEEDLE for v in raw_values):
        notes.append(f"identifiers shorter than {MIN_TEXT_NEEDLE} characters were not searched for in free text")
    pattern = mention_pattern(needles)

    mentioning_tasks: list[uuid.UUID] = []
    mentioning_results: list[int] = []
    audit_mentions = 0
    if needles:
        dialect = session.get_bind().dialect.name
        not_linked = AgentTask.subject_id.is_(None) | AgentTask.subject_id.not_in(ids) if ids else true()
        for task_id, parameters in session.execute(
                select(AgentTask.id, AgentTask.parameters)
                .where(and_(not_linked, mention_filter([(AgentTask.parameters, True)], needles, dialect=dialect)))):
            if mentions(parameters, pattern):
                mentioning_tasks.append(task_id)
        result_filter = mention_filter([(TaskResult.output, True), (TaskResult.summary, False)], needles,
                                       dialect=dialect)
        if linked is not None:
            result_filter = and_(TaskResult.task_id.not_in(linked), result_filter)
        for result_id, summary, output in session.execute(
                select(TaskResult.id, TaskResult.summary, TaskResult.output).where(result_filter)):
            if mentions(summary, pattern) or mentions(output, pattern):
                mentioning_results.append(result_id)
        for details, entity_id in session.execute(
                select(AuditEvent.details, AuditEvent.entity_id)
                .where(mention_filter([(AuditEvent.details, True), (AuditEvent.entity_id, False)], needles,
                                      dialect=dialect))):
            if mentions(details, pattern) or mentions(entity_id, pattern):
                audit_mentions += 1
    audit_events = session.scalar(select(func.count()).select_from(AuditEvent)) or 0

    artifact_filter = []
    if ids:
        artifact_filter = [Artifact.subject_id.in_(ids), Artifact.task_id.in_(linked)]
    artifacts = [ArtifactRow(a_id, storage_key(uri, storage_url))
                 for a_id, uri in session.execute(select(Artifact.id, Artifact.uri).where(or_(*artifact_filter))
                                                  .order_by(Artifact.id))] if artifact_filter else []
    outside = sum(1 for a in artifacts if a.key is None)
    if outside:
        notes.append(f"{outside} artifact(s) point outside AMAS's storage; their objects cannot be checked here")
    objects = [a.key for a in artifacts if a.key is not None and (object_exists is None or object_exists(a.key))]

    digests = sorted({subject_digest(v, key) for v in raw_values if v})
    exports = []
    if digests:
        for uri in session.scalars(select(GdprRequest.certificate_uri).where(
                GdprRequest.kind == RequestKind.export, GdprRequest.subject_digest.in_(digests),
                GdprRequest.certificate_uri.is_not(None))):
            export_key = storage_key(uri, storage_url)
            if export_key is not None and (object_exists is None or object_exists(export_key)):
                exports.append(export_key)
    ledger_entries = (session.scalar(select(func.count()).select_from(ErasureLedgerEntry)
                                     .where(ErasureLedgerEntry.subject_digest.in_(digests))) or 0) if digests else 0

    datasets = None
    if workspace is not None:
        exact = {normalise_identifier(v) for v in raw_values if v}
        datasets = discover_datasets(workspace, exact, lineage_file=lineage_file)
        notes.extend(_dataset_notes(datasets))
    return Discovery(query=query, subjects=active, erased_subjects=erased, tasks=tasks, task_cases=task_cases,
                     results_of_tasks=results_of_tasks, mentioning_tasks=mentioning_tasks,
                     mentioning_results=mentioning_results, artifacts=artifacts, objects=objects,
                     exports=sorted(set(exports)), audit_mentions=audit_mentions, audit_events=audit_events,
                     ledger_entries=ledger_entries, datasets=datasets, notes=notes,
                     erased_refs=[r.external_ref for r in rows if r.erased_at is not None])


def _dataset_notes(datasets: DatasetDiscovery) -> list[str]:
    if not (datasets.root / RAW_PEOPLE).exists():
        return [f"no pipeline datasets in {datasets.root} (run the data pipeline or pull them first)"]
    return [f"downstream datasets from {datasets.lineage_source}"]


# datasets --------------------------------------------------------------------------------------------

def downstream_datasets(root: Path, starts: Sequence[str], lineage_file: Path | None) -> tuple[dict[str, str], str]:
    """Dataset path -> how it derives from ``starts``; from recorded lineage, else from dvc.yaml."""
    if lineage_file is not None and lineage_file.exists():
        from amas.lineage.graph import DatasetRef, LineageGraph, load_runs, read_events

        graph = LineageGraph.from_log(load_runs(read_events(lineage_file)))
        known = [DatasetRef("file", s) for s in starts if DatasetRef("file", s) in graph.datasets]
        if known:
            found: dict[str, str] = {}
            for start in known:
                for _, edge in graph.walk(start, "downstream"):
                    if edge.target.namespace == "file" and edge.target.name not in starts:
                        found.setdefault(edge.target.name, f"derived from {edge.source.name} ({edge.job})")
            return found, "lineage"
    return _dvc_downstream(root, starts), "dvc.yaml"


def _dvc_downstream(root: Path, starts: Sequence[str]) -> dict[str, str]:
    import yaml

    path = root / "dvc.yaml"
    if not path.exists():
        return {}
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    found: dict[str, str] = {}
    frontier = list(starts)
    seen = set(starts)
    while frontier:
        current = frontier.pop(0)
        for name, stage in stages.items():
            if current in (stage.get("deps") or []):
                for out in stage.get("outs") or []:
                    out = out if isinstance(out, str) else next(iter(out))
                    if out not in seen:
                        seen.add(out)
                        found[out] = f"derived from {current} (dvc.yaml stage {name})"
                        frontier.append(out)
    return found


def _lower(values: Any) -> Any:
    import pyarrow.compute as pc

    return pc.utf8_lower(pc.utf8_trim_whitespace(values))


def discover_datasets(root: Path, identifiers: set[str], *, lineage_file: Path | None = None) -> DatasetDiscovery:
    """Rows about the subject in ``root``'s pipeline datasets; ``identifiers`` are normalised ids/emails."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from amas.pipeline.dvc import locked_outputs
    from amas.pipeline.stages import LINEAGE, load_pii, propagate_pii

    root = root.resolve()
    if not (root / RAW_PEOPLE).exists():
        return DatasetDiscovery(root=root, found=[])
    versions = {out["path"]: out["md5"] for out in locked_outputs(root)}
    pii = load_pii(root)
    wanted = pa.array(sorted(identifiers), type=pa.string())

    people = pq.read_table(root / RAW_PEOPLE, columns=["subject_id", "email", "full_name"])
    match = pc.or_kleene(pc.is_in(_lower(people["subject_id"]), value_set=wanted),
                         pc.is_in(_lower(people["email"]), value_set=wanted)).fill_null(False)
    matched = people.filter(match)
    subject_ids = frozenset(v for v in matched["subject_id"].to_pylist() if v)
    emails = frozenset(v for v in matched["email"].to_pylist() if v)
    names = frozenset(v for v in matched["full_name"].to_pylist() if v)
    ids_array = pa.array(sorted(subject_ids), type=pa.string())

    def pii_of(path: str) -> tuple[str, ...]:
        if path in pii:
            return tuple(sorted(pii[path]))
        name = Path(path).stem
        return tuple(sorted(propagate_pii(name, pii))) if name in LINEAGE else ()

    found = [Found("dataset", RAW_PEOPLE, matched.num_rows, "subject_id or email matches",
                   pii_of(RAW_PEOPLE), versions.get(RAW_PEOPLE))]
    cases = pq.read_table(root / RAW_CASES, columns=["case_id", "subject_id"])
    case_rows = cases.filter(pc.is_in(cases["subject_id"], value_set=ids_array).fill_null(False))
    found.append(Found("dataset", RAW_CASES, case_rows.num_rows, "subject_id is the person's",
                       pii_of(RAW_CASES), versions.get(RAW_CASES)))
    events = pq.read_table(root / RAW_EVENTS, columns=["subject_id"])
    event_count = int(pc.sum(pc.is_in(events["subject_id"], value_set=ids_array).fill_null(False)).as_py() or 0)
    found.append(Found("dataset", RAW_EVENTS, event_count, "subject_id is the person's",
                       pii_of(RAW_EVENTS), versions.get(RAW_EVENTS)))
    notes = pq.read_table(root / RAW_NOTES, columns=["case_id", "body"])
    own = pc.is_in(notes["case_id"], value_set=case_rows["case_id"].combine_chunks()).fill_null(False)
    named = pa.array([False] * notes.num_rows)
    for needle in sorted(names | emails):
        named = pc.or_(named, pc.match_substring(notes["body"], needle).fill_null(False))
    note_count = int(pc.sum(pc.or_(own, named)).as_py() or 0)
    found.append(Found("dataset", RAW_NOTES, note_count,
                       "notes of the person's cases, and notes naming them (full name or email)",
                       ("body",), versions.get(RAW_NOTES)))

    derived, source = downstream_datasets(root, RAW_TABLES, lineage_file)
    for path, via in sorted(derived.items()):
        target = root / path
        if not target.exists():
            continue
        count = 0
        why = f"{via}; holds no per-person rows"
        if target.suffix == ".parquet" and "subject_id" in pq.read_schema(target).names:
            column = pq.read_table(target, columns=["subject_id"])["subject_id"]
            count = int(pc.sum(pc.is_in(column, value_set=ids_array).fill_null(False)).as_py() or 0)
            why = f"{via}; subject_id is the person's"
        found.append(Found("dataset", path, count, why, pii_of(path), versions.get(path)))
    return DatasetDiscovery(root=root, found=found, subject_ids=subject_ids, emails=emails, names=names,
                            lineage_source=source)
