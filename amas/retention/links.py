"""How a table's rows reach a data subject or a case, worked out from the schema's foreign keys.

A legal hold names a subject (its ``external_ref``) or a case (``agent_tasks.case_id``); the
rows it protects are those whose own columns, or the row one foreign key away, carry that
subject or case. Every column used here comes from ``MetaData``: nothing a policy file says
is pasted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, MetaData, Table, false, func, or_, select

from amas.db.models import AgentTask, Base, DataSubject

SUBJECT_TABLE = DataSubject.__tablename__
CASE_COLUMN = AgentTask.case_id.key


@dataclass(frozen=True)
class Link:
    """``column`` of the table holds the value itself, or (``via``) a key of a row whose ``target`` holds it."""

    column: Column[Any]
    via_key: Column[Any] | None = None
    target: Column[Any] | None = None

    def matches(self, values: Any) -> ColumnElement[bool]:
        """Rows linked to any of ``values`` (a list or a subquery of subject ids or case ids)."""
        if self.via_key is None or self.target is None:
            return self.column.in_(values)
        return self.column.in_(select(self.via_key).where(self.target.in_(values)))

    def value(self) -> ColumnElement[Any]:
        """The linked value of each row, as a (correlated) column expression."""
        if self.via_key is None or self.target is None:
            return self.column
        return select(self.target).where(self.via_key == self.column).correlate(self.column.table).scalar_subquery()


def _pk(table: Table) -> Column[Any]:
    columns = list(table.primary_key.columns)
    if len(columns) != 1:
        raise ValueError(f"table {table.name!r} has a composite primary key; retention needs one id column")
    return columns[0]


def primary_key(table: Table) -> Column[Any]:
    return _pk(table)


def _direct(table: Table, holds: Any) -> list[Link]:
    return [Link(col) for col in table.columns if holds(col)]


def _links(table: Table, holds: Any) -> tuple[Link, ...]:
    """Direct columns first, then one foreign key away (parents other than the table itself)."""
    found = _direct(table, holds)
    for col in table.columns:
        for fk in col.foreign_keys:
            parent = fk.column.table
            if parent is table or not fk.column.primary_key:
                continue
            for target in parent.columns:
                if holds(target):
                    found.append(Link(col, fk.column, target))
    return tuple(found)


def subject_links(table: Table, metadata: MetaData = Base.metadata) -> tuple[Link, ...]:
    """How rows of ``table`` name a data subject's id (``data_subjects.id``)."""
    subjects = metadata.tables[SUBJECT_TABLE]
    if table is subjects:
        return (Link(_pk(table)),)

    def is_subject_key(col: Column[Any]) -> bool:
        return any(fk.column.table is subjects for fk in col.foreign_keys)

    return _links(table, is_subject_key)


def case_links(table: Table) -> tuple[Link, ...]:
    """How rows of ``table`` name a case (a ``case_id`` column, here or one foreign key away)."""
    return _links(table, lambda col: col.name == CASE_COLUMN)


def held_subject_ids(refs: frozenset[str], metadata: MetaData = Base.metadata) -> Any:
    """A subquery of the ids of the subjects whose ``external_ref`` is in ``refs``."""
    subjects = metadata.tables[SUBJECT_TABLE]
    return select(_pk(subjects)).where(subjects.c.external_ref.in_(sorted(refs)))


def linked_to(links: tuple[Link, ...], values: Any) -> ColumnElement[bool]:
    return or_(*(link.matches(values) for link in links)) if links else false()


def subject_ref(table: Table, metadata: MetaData = Base.metadata) -> ColumnElement[Any] | None:
    """Each row's subject ``external_ref`` (the first link that has one), for showing a plan's samples."""
    subjects = metadata.tables[SUBJECT_TABLE]
    links = subject_links(table, metadata)
    if not links:
        return None
    if table is subjects:
        return table.c.external_ref
    refs = []
    for link in links:
        query = select(subjects.c.external_ref).where(_pk(subjects) == (link.target if link.via_key is not None
                                                                        else link.column))
        if link.via_key is not None:
            query = query.where(link.via_key == link.column)
        refs.append(query.correlate(table).scalar_subquery())
    return refs[0] if len(refs) == 1 else func.coalesce(*refs)


def case_ref(table: Table) -> ColumnElement[Any] | None:
    links = case_links(table)
    if not links:
        return None
    values = [link.value() for link in links]
    return values[0] if len(values) == 1 else func.coalesce(*values)
