"""The SQL side of a table policy: which rows are due, held, or already done, as set-based queries.

Every identifier comes from ``Base.metadata`` (the policy only names a table and columns that
``policy_problems`` found there); values (cutoffs, held subjects and cases) are bound
parameters. A row is *held* when a legal hold of its own policy covers it (the category,
its subject, its case) or when deleting it would delete or unlink a held row of another
category (``task_results`` rows go with their ``agent_tasks`` row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    and_,
    any_,
    case,
    column,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session

from amas.db.models import Base
from amas.retention.links import (
    case_links,
    case_ref,
    held_subject_ids,
    linked_to,
    primary_key,
    subject_links,
    subject_ref,
)
from amas.retention.plan import Item, Verdict, decide
from amas.retention.policy import APPEND_ONLY_TABLES, REDACTED, Policy, cutoff

HEX_DIGEST = "^[0-9a-f]{64}$"
"""What a value written by hash_identifier looks like; such a value is not hashed again."""


def hold_condition(table: Table, policy: Policy, day: date,
                   metadata: MetaData = Base.metadata) -> ColumnElement[bool] | None:
    """Rows of ``table`` that ``policy``'s own legal holds cover on ``day``; None when it holds nothing."""
    if policy.category_held_on(day):
        return true()
    conditions: list[ColumnElement[bool]] = []
    subjects = policy.held_subjects_on(day)
    if subjects:
        conditions.append(linked_to(subject_links(table, metadata), held_subject_ids(subjects, metadata)))
    cases = policy.held_cases_on(day)
    if cases:
        conditions.append(linked_to(case_links(table), sorted(cases)))
    return or_(*conditions) if conditions else None


@dataclass(frozen=True)
class Dependent:
    """Rows of another category that deleting a row of this table would delete (CASCADE) or unlink (SET NULL)."""

    category: str
    condition: ColumnElement[bool]


def dependents(table: Table, policies: Sequence[Policy], day: date, metadata: MetaData = Base.metadata,
               _seen: frozenset[str] = frozenset()) -> list[Dependent]:
    """Held rows elsewhere that depend on rows of ``table``, as conditions on ``table``'s primary key."""
    pk = primary_key(table)
    found: list[Dependent] = []
    for child in metadata.sorted_tables:
        if child is table or child.name in _seen:
            continue
        for fk in child.foreign_keys:
            if fk.column.table is not table:
                continue
            child_column: Column[Any] = fk.parent
            for policy in policies:
                if policy.kind != "table" or policy.table != child.name:
                    continue
                held = hold_condition(child, policy, day, metadata)
                if held is not None:
                    found.append(Dependent(policy.category,
                                           pk.in_(select(child_column).where(child_column.is_not(None), held))))
            if (fk.ondelete or "").upper() == "CASCADE":
                # Grandchildren go with the child rows the cascade deletes.
                for deeper in dependents(child, policies, day, metadata, _seen | {table.name}):
                    found.append(Dependent(deeper.category, pk.in_(
                        select(child_column).where(child_column.is_not(None), deeper.condition))))
    return found


class TableScope:
    """One table policy's questions at one as-of time, as SQLAlchemy expressions."""

    def __init__(self, policy: Policy, policies: Sequence[Policy], as_of: datetime,
                 metadata: MetaData = Base.metadata) -> None:
        if policy.kind != "table" or policy.table is None or policy.age_field is None:
            raise ValueError(f"policy {policy.category!r} is not a table policy")
        self.policy = policy
        self.metadata = metadata
        self.table: Table = metadata.tables[policy.table]
        self.pk: Column[Any] = primary_key(self.table)
        self.age: Column[Any] = self.table.c[policy.age_field]
        self.as_of = as_of.astimezone(UTC)
        self.cutoff = cutoff(policy, as_of)
        self.day = self.as_of.date()
        self.columns: list[Column[Any]] = [self.table.c[name] for name in policy.columns]
        self.own_hold = hold_condition(self.table, policy, self.day, metadata)
        self.removes_rows = policy.action == "delete" or (
            policy.action == "archive" and self.table.name not in APPEND_ONLY_TABLES)
        self.dependents = dependents(self.table, policies, self.day, metadata) if self.removes_rows else []

    def due(self) -> ColumnElement[bool]:
        return self.age < self.cutoff

    def held(self) -> ColumnElement[bool]:
        conditions = [c for c in (self.own_hold, *(d.condition for d in self.dependents)) if c is not None]
        return or_(*conditions) if conditions else false()

    def pending(self) -> ColumnElement[bool]:
        """Rows the action has not reached yet (anonymize only; removed rows are gone)."""
        if self.policy.action != "anonymize":
            return true()
        if self.policy.strategy == "null_personal_fields":
            return or_(*(c.is_not(None) for c in self.columns))
        if self.policy.strategy == "redact":
            return or_(*(and_(c.is_not(None), c != REDACTED) for c in self.columns))
        return or_(*(and_(c.is_not(None), not_(c.regexp_match(HEX_DIGEST))) for c in self.columns))

    def actionable(self) -> ColumnElement[bool]:
        return and_(self.due(), not_(self.held()), self.pending())

    def batch_ids(self, after: Any, limit: int) -> Select[Any]:
        """The next ``limit`` actionable ids after ``after`` (keyset order by primary key)."""
        query = select(self.pk).where(self.actionable())
        if after is not None:
            query = query.where(self.pk > after)
        return query.order_by(self.pk).limit(limit)

    def in_batch(self, after: Any, limit: int, dialect: str) -> ColumnElement[bool]:
        """``pk`` is one of the next batch's ids, in a form each dialect plans as primary-key lookups.

        PostgreSQL plans ``id IN (SELECT … LIMIT n)`` as a hash join over a sequential scan of the
        whole table, once per batch; ``id = ANY(ARRAY(SELECT …))`` is an index scan of n keys.
        """
        ids = self.batch_ids(after, limit)
        if dialect == "postgresql":
            return self.pk == any_(func.array(ids.scalar_subquery()))
        return self.pk.in_(ids)

    def heap_pages(self, session: Session) -> tuple[int, float]:
        """PostgreSQL: the table's heap pages now, and the planner's estimate of rows per page."""
        pages, tuples, counted = session.execute(text(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.reltuples, c.relpages "
            "FROM pg_class c WHERE c.oid = to_regclass(:name)"), {"name": self.table.fullname}).one()
        per_page = float(tuples) / counted if counted and tuples and tuples > 0 else 0.0
        return int(pages or 0), per_page

    def in_pages(self, first: int, stop: int, limit: int) -> ColumnElement[bool]:
        """At most ``limit`` actionable rows stored in heap pages ``first`` to ``stop - 1``.

        Both the inner search and the outer match are TID scans (PostgreSQL 14+): the pages are
        read in storage order and each chosen row is found again by its address.
        """
        ctid = column("ctid", _selectable=self.table)
        inner = select(ctid).where(ctid >= literal_column(f"'({int(first)},0)'::tid"),
                                   ctid < literal_column(f"'({int(stop)},0)'::tid"), self.actionable()).limit(limit)
        return ctid == any_(func.array(inner.scalar_subquery()))

    def dependents_label(self) -> ColumnElement[Any]:
        if not self.dependents:
            return literal(None)
        return case(*((d.condition, literal(d.category)) for d in self.dependents), else_=literal(None))

    def items(self, session: Session, condition: ColumnElement[bool], limit: int) -> list[Item]:
        """Rows matching ``condition`` as plan items (oldest first), with their subject and case."""
        subject = subject_ref(self.table, self.metadata)
        case_value = case_ref(self.table)
        query = select(
            self.pk, self.age,
            (subject if subject is not None else literal(None)).label("subject"),
            (case_value if case_value is not None else literal(None)).label("case"),
            self.dependents_label().label("dependents"),
            (not_(self.pending()) if self.policy.action == "anonymize" else false()).label("done"),
        ).where(condition).order_by(self.age, self.pk).limit(limit)
        return [Item(self.policy.category, str(row[0]), row[1], row[2], None if row[3] is None else str(row[3]),
                     row[4], bool(row[5])) for row in session.execute(query)]


@dataclass
class CategoryCounts:
    """What a policy would do now: counts over its whole category, and a few sample verdicts."""

    category: str
    kind: str
    action: str
    strategy: str | None
    max_age_days: int
    cutoff: datetime
    total: int = 0
    due: int = 0
    held: int = 0
    done: int = 0
    no_age: int = 0
    oldest: datetime | None = None
    oldest_actionable: datetime | None = None
    samples: list[Verdict] = field(default_factory=list)
    error: str | None = None
    """Set when the category could not be surveyed (e.g. no Prefect API); counts are then zero."""

    @property
    def act(self) -> int:
        return max(self.due - self.held - self.done, 0)

    @property
    def within_limit(self) -> int:
        return max(self.total - self.due - self.no_age, 0)

    @property
    def fraction(self) -> float:
        return self.act / self.total if self.total else 0.0

    @property
    def max_overdue_days(self) -> int | None:
        if self.oldest_actionable is None:
            return None
        return int((self.cutoff - self.oldest_actionable).total_seconds() // 86400)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category, "kind": self.kind, "action": self.action, "strategy": self.strategy,
            "max_age_days": self.max_age_days, "cutoff": self.cutoff.isoformat(),
            "total": self.total, "due": self.due, "act": self.act, "held": self.held, "done": self.done,
            "within_limit": self.within_limit, "no_age": self.no_age,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "max_overdue_days": self.max_overdue_days,
            "samples": [s.to_dict() for s in self.samples], "error": self.error,
        }


def empty_counts(policy: Policy, as_of: datetime) -> CategoryCounts:
    return CategoryCounts(category=policy.category, kind=policy.kind, action=policy.action, strategy=policy.strategy,
                          max_age_days=policy.max_age_days, cutoff=cutoff(policy, as_of))


def count_table(session: Session, scope: TableScope, *, samples: int = 0) -> CategoryCounts:
    """One pass over the table: total, due, held, already done, undated, oldest; then samples."""
    due, held = scope.due(), scope.held()
    done = and_(due, not_(held), not_(scope.pending())) if scope.policy.action == "anonymize" else false()
    row = session.execute(select(
        func.count(),
        func.count().filter(due),
        func.count().filter(and_(due, held)),
        func.count().filter(done),
        func.count().filter(scope.age.is_(None)),
        func.min(scope.age),
        func.min(scope.age).filter(scope.actionable()),
    ).select_from(scope.table)).one()
    counts = empty_counts(scope.policy, scope.as_of)
    counts.total, counts.due, counts.held, counts.done, counts.no_age = (int(v or 0) for v in row[:5])
    counts.oldest, counts.oldest_actionable = _aware(row[5]), _aware(row[6])
    if samples:
        items = scope.items(session, scope.actionable(), samples) + scope.items(session, and_(due, held), samples)
        counts.samples = [decide(item, scope.policy, scope.as_of) for item in items]
    return counts


def _aware(value: Any) -> datetime | None:
    """``min()`` over a timestamp comes back untyped on SQLite (a string); make it an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
