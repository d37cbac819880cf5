"""Apply retention policies: set-based batches, each its own transaction, recorded as a RetentionRun.

The order of one run:

1. Survey every selected category (``survey``): how many rows are due, held, already done.
2. Refuse to go on (status ``stopped``) when a policy would delete or anonymize more than
   ``AMAS_RETENTION_MAX_FRACTION`` of its category, unless confirmed.
3. Per category, batches of at most ``AMAS_RETENTION_BATCH_SIZE`` rows, in primary-key order:
   ``DELETE … WHERE id IN (SELECT id … WHERE due AND NOT held … LIMIT n)``, the same with
   ``UPDATE`` for anonymize, or for archive: export the batch to object storage
   (``archive/<category>/<run id>/<batch>.jsonl.gz``) and then delete it. The batch's
   statement and the run's progress commit together, so ``progress`` always says exactly
   what is done. The audit log is append-only: archiving it exports contiguous segments of
   the chain and deletes nothing.
4. One audit event per category (counts, cutoff, run id; never row contents).

On PostgreSQL, with ``AMAS_RETENTION_WORKERS`` above 1, a delete category runs in heap order on
that many connections at once, each in its own range of pages (see ``_parallel_deletes``).

Idempotent: every batch re-selects what is still due, so a second run finds nothing new, and
a run that crashed is finished by the next one (which marks the dead run ``failed``).
Only one run works on a store at a time: a PostgreSQL advisory lock, or a file lock beside a
SQLite database (``<file>.retention.lock``); a second run is refused at once (``exclusive``).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from amas.config import Settings
from amas.db.audit import append_event
from amas.db.ledger import subject_digest
from amas.db.models import RetentionRun, RunStatus, utcnow
from amas.db.session import session_scope
from amas.errors import AmasError, ConfigError
from amas.fsutil import exclusive_lock
from amas.retention import objects, prefect_meta
from amas.retention.policy import APPEND_ONLY_TABLES, REDACTED, Policy
from amas.retention.query import HEX_DIGEST, CategoryCounts, TableScope, count_table, empty_counts
from amas.storage.base import Storage

LOCK_KEY = 0x616D6172  # 'amar': one retention apply at a time on a PostgreSQL store
BUSY = "another retention apply is running on this store; wait for it to finish"
VACUUM_AFTER_ROWS = 50_000
"""After removing this many rows of a table, vacuum it (PostgreSQL) before the next category."""
FUTURE_TOLERANCE = timedelta(minutes=5)

BatchHook = Callable[[str, int, int], None]
"""Called after each committed batch with (category, batch number, rows so far in this category)."""


@dataclass
class CategoryProgress:
    category: str
    action: str
    status: str = "pending"
    """pending, running, completed, held (a category hold), nothing due, failed."""
    applied: int = 0
    batches: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    last_id: Any = None
    seconds: float | None = None
    """Wall time of the category, once it is finished (vacuum included)."""
    vacuum_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "status": self.status, "applied": self.applied, "batches": self.batches,
                "objects": self.objects, "manifest": self.manifest, "seconds": self.seconds,
                "vacuum_seconds": self.vacuum_seconds,
                "last_id": None if self.last_id is None else _jsonable(self.last_id)}


@dataclass
class RunOutcome:
    status: str
    """completed, stopped or dry-run."""
    as_of: datetime
    surveys: list[CategoryCounts]
    run_id: uuid.UUID | None = None
    categories: dict[str, CategoryProgress] = field(default_factory=dict)
    over_limit: dict[str, float] = field(default_factory=dict)
    max_fraction: float = 0.5
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "run_id": None if self.run_id is None else str(self.run_id),
            "as_of": self.as_of.isoformat(), "message": self.message, "max_fraction": self.max_fraction,
            "over_limit": self.over_limit,
            "surveys": [s.to_dict() for s in self.surveys],
            "categories": {name: p.to_dict() for name, p in self.categories.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def select_policies(policies: Sequence[Policy], categories: Sequence[str] | None) -> list[Policy]:
    """The policies to apply, in file order; an unknown category is refused naming the valid ones."""
    if not categories:
        return list(policies)
    known = {p.category: p for p in policies}
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise ConfigError(f"unknown retention category {unknown[0]!r}; categories: {', '.join(known)}")
    return [p for p in policies if p.category in set(categories)]


def check_as_of(as_of: datetime, now: datetime | None = None) -> datetime:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ConfigError("--as-of needs a time zone (the store keeps UTC); e.g. 2026-06-15T00:00:00+00:00")
    now = now or utcnow()
    if as_of > now + FUTURE_TOLERANCE:
        raise ConfigError(f"--as-of {as_of.isoformat()} is in the future; apply measures ages against now or an "
                          "earlier time (`amas retention plan --as-of` can look ahead)")
    return as_of.astimezone(UTC)


def policies_digest(policies: Sequence[Policy]) -> str:
    """sha256 of the policy files the run applies (of the policies' JSON when they came from no file)."""
    sources = getattr(policies, "sources", None) or {}
    digest = hashlib.sha256()
    files = sorted(set(sources.values()))
    if files:
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    else:
        digest.update(json.dumps([p.model_dump(mode="json") for p in policies], sort_keys=True).encode())
    return digest.hexdigest()


def survey(engine: Engine, policies: Sequence[Policy], as_of: datetime, *, every_policy: Sequence[Policy] | None = None,
           storage: Storage | None = None, prefect_client: Any = None, prefect_unavailable: str = "no Prefect API",
           samples: int = 0) -> list[CategoryCounts]:
    """What each policy would do at ``as_of``: counts per category (and samples), changing nothing.

    ``every_policy`` is the whole policy set (holds of other categories protect rows this one
    would delete); it defaults to ``policies``. A category that cannot be surveyed (no Prefect
    API, no storage) comes back with ``error`` set instead of failing the others.
    """
    every_policy = list(every_policy or policies)
    found: list[CategoryCounts] = []
    for policy in policies:
        if policy.kind == "table":
            with session_scope(engine) as session:
                found.append(count_table(session, TableScope(policy, every_policy, as_of), samples=samples))
        elif policy.kind == "storage":
            if storage is None:
                found.append(_unavailable(policy, as_of, "no object storage given"))
            else:
                found.append(objects.survey(storage, policy, as_of, samples=samples))
        elif prefect_client is None:
            found.append(_unavailable(policy, as_of, prefect_unavailable))
        else:
            try:
                found.append(prefect_meta.survey(prefect_client, policy, as_of, samples=samples))
            except Exception as exc:  # an unreachable API must not hide the store's categories
                found.append(_unavailable(policy, as_of, f"Prefect API: {' '.join(str(exc).split())[:200]}"))
    return found


def _unavailable(policy: Policy, as_of: datetime, reason: str) -> CategoryCounts:
    counts = empty_counts(policy, as_of)
    counts.error = reason
    return counts


@contextmanager
def exclusive(engine: Engine) -> Iterator[None]:
    """One retention apply per store at a time; a second one is refused at once, not queued.

    PostgreSQL: an advisory lock. SQLite: a file lock beside the database file. SQLite does
    serialise single writes, but two runs would interleave their batches, and each would take
    the other's ``running`` row for a dead run and mark it failed. An in-memory SQLite store
    belongs to one process and needs no lock.
    """
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        path = Path(database).resolve()
        with exclusive_lock(path.with_name(path.name + ".retention.lock"), BUSY):
            yield
        return
    if engine.dialect.name != "postgresql":
        yield
        return
    # Autocommit: an idle open transaction would hold back VACUUM for the whole run.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar():
            raise AmasError(BUSY)
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))


class _Run:
    """The RetentionRun row and its progress document, written with each batch."""

    def __init__(self, run_id: uuid.UUID, outcome: RunOutcome) -> None:
        self.id = run_id
        self.outcome = outcome

    def document(self) -> dict[str, Any]:
        return {
            "as_of": self.outcome.as_of.isoformat(),
            "max_fraction": self.outcome.max_fraction,
            "surveys": {s.category: {k: v for k, v in s.to_dict().items() if k != "samples"}
                        for s in self.outcome.surveys},
            "categories": {name: p.to_dict() for name, p in self.outcome.categories.items()},
        }

    def record(self, session: Session, **values: Any) -> None:
        session.execute(update(RetentionRun).where(RetentionRun.id == self.id)
                        .values(progress=copy.deepcopy(self.document()), **values))


def _mark_dead_runs(session: Session, run_id: uuid.UUID) -> list[str]:
    """Runs still 'running' while we hold the lock died mid-way; say so and who picked up."""
    dead = list(session.scalars(select(RetentionRun.id).where(RetentionRun.status == RunStatus.running,
                                                              RetentionRun.id != run_id)))
    if dead:
        session.execute(update(RetentionRun).where(RetentionRun.id.in_(dead)).values(
            status=RunStatus.failed, finished_at=utcnow(),
            error=f"interrupted; the rows it had not reached were handled by run {run_id}"))
    return [str(d) for d in dead]


def apply_retention(
    engine: Engine,
    policies: Sequence[Policy],
    *,
    as_of: datetime,
    actor: str,
    settings: Settings,
    storage: Storage | None = None,
    categories: Sequence[str] | None = None,
    confirm: bool = False,
    dry_run: bool = False,
    prefect_client: Any = None,
    on_batch: BatchHook | None = None,
) -> RunOutcome:
    """Apply the selected policies at ``as_of``; see the module docstring for the steps.

    ``dry_run`` surveys and says whether the run would stop, and writes nothing at all.
    """
    as_of = check_as_of(as_of)
    selected = select_policies(policies, categories)
    max_fraction = settings.retention.max_fraction
    needs_storage = any(p.kind == "storage" or p.action == "archive" for p in selected)
    if needs_storage and storage is None and not dry_run:
        raise ConfigError("archiving and storage categories need the object storage (AMAS_STORAGE_URL)")
    with exclusive(engine) if not dry_run else nullcontext():
        surveys = survey(engine, selected, as_of, every_policy=policies, storage=storage,
                         prefect_client=prefect_client)
        failed = [s for s in surveys if s.error]
        if failed and not dry_run:
            raise AmasError(f"cannot apply category {failed[0].category!r}: {failed[0].error}")
        over = {s.category: round(s.fraction, 4) for s, p in zip(surveys, selected, strict=True)
                if p.destructive and s.fraction > max_fraction}
        outcome = RunOutcome(status="dry-run" if dry_run else "running", as_of=as_of, surveys=surveys,
                             over_limit=over, max_fraction=max_fraction,
                             categories={p.category: CategoryProgress(p.category, p.action) for p in selected})
        if over and not confirm:
            outcome.message = _over_message(surveys, over, max_fraction)
        if dry_run:
            return outcome
        return _run(engine, selected, policies, outcome, actor=actor, settings=settings, storage=storage,
                    confirm=confirm, prefect_client=prefect_client, on_batch=on_batch)


def _over_message(surveys: list[CategoryCounts], over: dict[str, float], max_fraction: float) -> str:
    parts = []
    for s in surveys:
        if s.category in over:
            verb = "anonymize" if s.action == "anonymize" else "delete"
            parts.append(f"category {s.category!r} would {verb} {s.act:,} of {s.total:,} ({s.fraction:.0%})")
    return (f"{'; '.join(parts)}: more than AMAS_RETENTION_MAX_FRACTION={max_fraction:g} in one run; "
            "check `amas retention plan` and re-run with --confirm")


def _run(engine: Engine, selected: list[Policy], policies: Sequence[Policy], outcome: RunOutcome, *, actor: str,
         settings: Settings, storage: Storage | None, confirm: bool, prefect_client: Any,
         on_batch: BatchHook | None) -> RunOutcome:
    run_id = uuid.uuid4()
    run = _Run(run_id, outcome)
    outcome.run_id = run_id
    with session_scope(engine) as session:
        session.add(RetentionRun(id=run_id, actor=actor, dry_run=False, status=RunStatus.running,
                                 policies_sha256=policies_digest(policies), as_of=outcome.as_of,
                                 progress=run.document()))
        session.flush()
        dead = _mark_dead_runs(session, run_id)
        if dead:
            append_event(session, actor=actor, action="retention.interrupted", entity_type="retention_run",
                         entity_id=str(run_id), details={"runs": dead})
    if outcome.message:
        outcome.status = RunStatus.stopped.value
        with session_scope(engine) as session:
            run.record(session, status=RunStatus.stopped, finished_at=utcnow(), error=outcome.message)
            append_event(session, actor=actor, action="retention.stopped", entity_type="retention_run",
                         entity_id=str(run_id), details={"over_limit": outcome.over_limit,
                                                         "max_fraction": outcome.max_fraction,
                                                         "as_of": outcome.as_of.isoformat()})
        return outcome
    current: CategoryProgress | None = None
    try:
        for policy, counts in zip(selected, outcome.surveys, strict=True):
            current = outcome.categories[policy.category]
            _apply_category(engine, run, policy, policies, counts, actor=actor, settings=settings, storage=storage,
                            confirmed=confirm and policy.category in outcome.over_limit,
                            prefect_client=prefect_client, on_batch=on_batch)
        current = None
    except BaseException as exc:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
        if current is not None:
            current.status = "failed"
        with session_scope(engine) as session:
            run.record(session, status=RunStatus.failed, finished_at=utcnow(), error=error)
            if current is not None:
                # The event names the error's type only: a database message can quote row values.
                _category_event(session, run, current, actor, counts=None, error=type(exc).__name__)
        raise
    outcome.status = RunStatus.completed.value
    with session_scope(engine) as session:
        run.record(session, status=RunStatus.completed, finished_at=utcnow())
    return outcome


def _category_event(session: Session, run: _Run, progress: CategoryProgress, actor: str,
                    counts: CategoryCounts | None, error: str | None = None, confirmed: bool = False) -> None:
    details: dict[str, Any] = {
        "run_id": str(run.id), "action": progress.action, "status": progress.status,
        "as_of": run.outcome.as_of.isoformat(), "applied": progress.applied, "batches": progress.batches,
    }
    if counts is not None:
        details.update(cutoff=counts.cutoff.isoformat(), due=counts.due, held=counts.held, total=counts.total,
                       strategy=counts.strategy)
    if progress.manifest is not None:
        details["manifest"] = progress.manifest
    if confirmed:
        details["confirmed_over_max_fraction"] = True
    if error is not None:
        details["error"] = error
    append_event(session, actor=actor, action="retention.apply", entity_type="retention_category",
                 entity_id=progress.category, details=details)


def _apply_category(engine: Engine, run: _Run, policy: Policy, policies: Sequence[Policy], counts: CategoryCounts,
                    *, actor: str, settings: Settings, storage: Storage | None, confirmed: bool,
                    prefect_client: Any, on_batch: BatchHook | None) -> None:
    progress = run.outcome.categories[policy.category]
    started = time.perf_counter()
    held_category = policy.category_held_on(run.outcome.as_of.date())
    progress.status = "held" if held_category else "running"
    batch_size = settings.retention.batch_size
    if not held_category:
        if policy.kind == "table":
            steps = _table_batches(engine, run, policy, policies, progress, settings, storage, batch_size)
        else:
            steps = _api_batches(engine, run, policy, progress, storage, prefect_client, batch_size)
        # closing: a hook that raises stops the batches at once (parallel workers included), and
        # batches they committed meanwhile are counted before the run is recorded as failed.
        with closing(steps):
            for _ in steps:
                if on_batch is not None:
                    on_batch(policy.category, progress.batches, progress.applied)
        progress.status = "completed" if progress.batches else "nothing due"
    if policy.kind == "table" and policy.destructive and progress.applied >= VACUUM_AFTER_ROWS:
        progress.vacuum_seconds = _vacuum(engine, policy)
    if progress.objects and storage is not None:
        progress.manifest = _write_manifest(storage, run, policy, progress)
    progress.seconds = round(time.perf_counter() - started, 3)
    with session_scope(engine) as session:
        run.record(session)
        _category_event(session, run, progress, actor, counts, confirmed=confirmed)


def _vacuum(engine: Engine, policy: Policy) -> float | None:
    """VACUUM ANALYZE the table after a bulk removal, on PostgreSQL; return how long it took.

    Until then every index entry of a removed row still leads to the heap: the next category's
    deletes pay for it in their foreign-key checks (deleting a task looks up its results through
    ``ix_task_results_task_id``, whose entries for the results just deleted are all dead), and
    the planner's row counts are stale. Plain VACUUM blocks neither readers nor writers.
    """
    if engine.dialect.name != "postgresql" or policy.table is None:
        return None
    from amas.db.models import Base

    table = Base.metadata.tables[policy.table]
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {engine.dialect.identifier_preparer.format_table(table)}")
    return round(time.perf_counter() - started, 3)


def _api_batches(engine: Engine, run: _Run, policy: Policy, progress: CategoryProgress, storage: Storage | None,
                 prefect_client: Any, batch_size: int) -> Iterator[None]:
    while True:
        if policy.kind == "storage":
            assert storage is not None
            done = objects.purge_batch(storage, policy, run.outcome.as_of, batch_size)
        else:
            done = prefect_meta.purge_batch(prefect_client, policy, run.outcome.as_of, batch_size)
        if not done:
            return
        progress.applied += len(done)
        progress.batches += 1
        with session_scope(engine) as session:
            run.record(session)
        yield


def _table_batches(engine: Engine, run: _Run, policy: Policy, policies: Sequence[Policy],
                   progress: CategoryProgress, settings: Settings, storage: Storage | None,
                   batch_size: int) -> Iterator[None]:
    scope = TableScope(policy, policies, run.outcome.as_of)
    append_only = scope.table.name in APPEND_ONLY_TABLES
    if append_only:
        progress.last_id = _last_archived_id(engine, policy.category)
    key = None
    if policy.action == "anonymize" and policy.strategy == "hash_identifier":
        from amas.db.ledger import erasure_key

        key = erasure_key(settings)
    after: Any = None
    dialect = engine.dialect.name
    if policy.action == "delete" and dialect == "postgresql" and settings.retention.workers > 1:
        yield from _parallel_deletes(engine, run, scope, progress, settings.retention.workers, batch_size)
        return
    while True:
        with session_scope(engine) as session:
            if append_only:
                assert storage is not None
                changed, more = _archive_segment(session, scope, run, progress, storage, batch_size)
            elif policy.action == "archive":
                assert storage is not None
                changed, after = _archive_batch(session, scope, run, progress, storage, after, batch_size)
                more = after is not None
            elif policy.action == "delete":
                ids = _delete_batch(session, scope, after, batch_size)
                changed, after = len(ids), max(ids) if ids else None
                more = bool(ids)
            elif key is not None:
                changed, after = _hash_batch(session, scope, key, after, batch_size)
                more = after is not None
            else:
                ids = session.scalars(update(scope.table).where(scope.in_batch(after, batch_size, dialect))
                                      .values(_anonymized_values(scope)).returning(scope.pk)).all()
                changed, after = len(ids), max(ids) if ids else None
                more = bool(ids)
            if not more:
                return
            progress.applied += changed
            progress.batches += 1
            run.record(session)
        yield


def _delete_batch(session: Session, scope: TableScope, after: Any, limit: int) -> list[Any]:
    dialect = session.get_bind().dialect.name
    return list(session.scalars(delete(scope.table).where(scope.in_batch(after, limit, dialect))
                                .returning(scope.pk)).all())


def _parallel_deletes(engine: Engine, run: _Run, scope: TableScope, progress: CategoryProgress, workers: int,
                      batch_size: int) -> Iterator[None]:
    """Delete in heap order on ``workers`` connections at once, each in its own range of pages.

    A batch is at most ``batch_size`` rows from a run of heap pages that holds about that many
    (the planner's rows per page), found by a TID range scan: the pages are visited in storage order, each once, instead
    of in primary-key order, which for random keys (uuid4) touches a random page per row, churns
    the shared buffers and writes a full-page image to the WAL for most rows. The page ranges are
    disjoint, so the workers never wait on each other's rows, and on a CPU-bound server each
    keeps one core busy. Each batch is still its own transaction that re-selects what is due, so
    a crash at any point leaves a run the next one finishes. Pages added after the start hold
    rows too new to be due. Progress is recorded here, in the calling thread, after each batch.
    """
    import queue
    import threading

    with session_scope(engine) as session:
        pages, per_page = scope.heap_pages(session)
    step = max(1, int(batch_size / per_page)) if per_page else 1
    share = -(-pages // workers) if pages else 0
    ranges = [(k * share, min(pages, (k + 1) * share)) for k in range(workers) if k * share < pages]
    done: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()
    stop = threading.Event()

    def work(page: int, end: int) -> None:
        try:
            while page < end and not stop.is_set():
                upto = min(page + step, end)
                with session_scope(engine) as session:
                    deleted = int(session.execute(delete(scope.table).where(
                        scope.in_pages(page, upto, batch_size))).rowcount or 0)
                if deleted < batch_size:  # else the same pages again: the estimate was low
                    page = upto
                if deleted:
                    done.put((deleted, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            done.put((0, exc))
        finally:
            done.put((-1, None))

    threads = [threading.Thread(target=work, args=r, name=f"retention-{scope.policy.category}-{i}", daemon=True)
               for i, r in enumerate(ranges)]
    for thread in threads:
        thread.start()
    running, failure = len(threads), None
    try:
        while running:
            count, exc = done.get()
            if count < 0:
                running -= 1
            elif exc is not None:
                failure = failure or exc
                stop.set()
            else:
                progress.applied += count
                progress.batches += 1
                with session_scope(engine) as session:
                    run.record(session)
                yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        while not done.empty():  # batches committed after the last one reported here
            count, _ = done.get()
            if count > 0:
                progress.applied += count
                progress.batches += 1
    if failure is not None:
        raise failure


def _anonymized_values(scope: TableScope) -> dict[str, Any]:
    value = None if scope.policy.strategy == "null_personal_fields" else REDACTED
    return {column.key: value for column in scope.columns}


def _hash_batch(session: Session, scope: TableScope, key: bytes, after: Any, limit: int) -> tuple[int, Any]:
    """hash_identifier needs the erasure key, which SQL never sees: hash this batch's values in Python."""
    hexed = re.compile(HEX_DIGEST)
    dialect = session.get_bind().dialect.name
    rows = session.execute(select(scope.pk, *scope.columns).where(scope.in_batch(after, limit, dialect))
                           .order_by(scope.pk)).all()
    if not rows:
        return 0, None
    params = []
    for row in rows:
        values = {f"v_{c.key}": (v if v is None or hexed.match(str(v)) else subject_digest(str(v), key))
                  for c, v in zip(scope.columns, row[1:], strict=True)}
        params.append({"row_id": row[0], **values})
    statement = (update(scope.table).where(scope.pk == bindparam("row_id"))
                 .values({c.key: bindparam(f"v_{c.key}") for c in scope.columns}))
    session.execute(statement, params)
    return len(rows), rows[-1][0]


def _export(rows: list[dict[str, Any]]) -> bytes:
    lines = (json.dumps({k: _jsonable(v) for k, v in row.items()}, sort_keys=True, ensure_ascii=False,
                        default=str) for row in rows)
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)


def _put_object(storage: Storage, run: _Run, policy: Policy, progress: CategoryProgress, rows: list[dict[str, Any]],
                pk: str) -> dict[str, Any]:
    key = f"archive/{policy.category}/{run.id}/{progress.batches + 1:06d}.jsonl.gz"
    info = storage.put(key, _export(rows))
    return {"key": key, "sha256": info.sha256, "bytes": info.size, "rows": len(rows),
            "first_id": _jsonable(rows[0][pk]), "last_id": _jsonable(rows[-1][pk])}


def _archive_batch(session: Session, scope: TableScope, run: _Run, progress: CategoryProgress, storage: Storage,
                   after: Any, limit: int) -> tuple[int, Any]:
    """Export one batch (rows locked on PostgreSQL) and delete exactly what was exported."""
    dialect = session.get_bind().dialect.name
    rows = [dict(r) for r in session.execute(
        select(scope.table).where(scope.in_batch(after, limit, dialect)).order_by(scope.pk).with_for_update()
    ).mappings()]
    if not rows:
        return 0, None
    ids = [r[scope.pk.key] for r in rows]
    progress.objects.append(_put_object(storage, run, scope.policy, progress, rows, scope.pk.key))
    deleted = session.execute(delete(scope.table).where(scope.pk.in_(ids))).rowcount
    return int(deleted or 0), ids[-1]


def _archive_segment(session: Session, scope: TableScope, run: _Run, progress: CategoryProgress, storage: Storage,
                     limit: int) -> tuple[int, bool]:
    """Export the next contiguous stretch of the append-only table older than the cutoff; delete nothing."""
    query = select(scope.table).order_by(scope.pk).limit(limit)
    if progress.last_id is not None:
        query = query.where(scope.pk > progress.last_id)
    rows = []
    for row in session.execute(query).mappings():
        if row[scope.age.key] is None or row[scope.age.key] >= scope.cutoff:
            break
        rows.append(dict(row))
    if not rows:
        return 0, False
    progress.objects.append(_put_object(storage, run, scope.policy, progress, rows, scope.pk.key))
    progress.last_id = rows[-1][scope.pk.key]
    return len(rows), True


def _last_archived_id(engine: Engine, category: str) -> Any:
    """Where earlier runs' archive of an append-only category ended (committed batches only)."""
    last = None
    with session_scope(engine) as session:
        for progress in session.scalars(select(RetentionRun.progress)):
            value = ((progress or {}).get("categories", {}).get(category) or {}).get("last_id")
            if value is not None and (last is None or int(value) > last):
                last = int(value)
    return last


def _write_manifest(storage: Storage, run: _Run, policy: Policy, progress: CategoryProgress) -> dict[str, Any]:
    key = f"archive/{policy.category}/{run.id}/manifest.json"
    document = {"run_id": str(run.id), "category": policy.category, "table": policy.table,
                "as_of": run.outcome.as_of.isoformat(), "rows": sum(o["rows"] for o in progress.objects),
                "deleted": policy.table not in APPEND_ONLY_TABLES, "objects": progress.objects}
    info = storage.put(key, json.dumps(document, indent=2).encode())
    return {"key": key, "sha256": info.sha256, "objects": len(progress.objects)}
