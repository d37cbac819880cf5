"""The AMAS store: typed SQLAlchemy 2 models, the same on SQLite and PostgreSQL.

Timestamps are stored as UTC and always come back timezone-aware, whatever the dialect
keeps. JSON is JSONB on PostgreSQL. Schema changes go through Alembic migrations in
``amas/db/migrations``; a test checks the models and the migrations agree.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so migrations can alter them on both dialects.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

GENESIS_HASH = "0" * 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class TaskStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Priority(enum.IntEnum):
    """Higher runs first: ordering by ``priority DESC`` is the queue order."""

    low = 10
    normal = 50
    high = 80
    critical = 100


class BackupStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    verified = "verified"
    unverified = "unverified"
    failed = "failed"
    deleted = "deleted"


class RunStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"
    """Refused to go on (e.g. a policy would delete more than the allowed share) until confirmed."""


class RequestKind(enum.StrEnum):
    erase = "erase"
    export = "export"


class RequestStatus(enum.StrEnum):
    received = "received"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings with a CHECK, so adding a member is a small migration on both dialects.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e],
                create_constraint=True, name=cls.__name__.lower())


class DataSubject(Base):
    """A person personal data is about; the anchor of retention and GDPR requests."""

    __tablename__ = "data_subjects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(200), unique=True, comment="The id the source system uses.")
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(comment="Set when an erasure request anonymised this row.")

    tasks: Mapped[list[AgentTask]] = relationship(back_populates="subject")


class AgentTask(Base):
    """One request for an agent to do work, and where it stands."""

    __tablename__ = "agent_tasks"
    __table_args__ = (Index("ix_agent_tasks_queue", "status", "priority", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus), default=TaskStatus.pending)
    priority: Mapped[int] = mapped_column(Integer, default=int(Priority.normal))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("data_subjects.id", ondelete="SET NULL"), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), comment="Prefect flow run that executed the task.")
    case_id: Mapped[str | None] = mapped_column(String(64), index=True, comment="The investigation the task belongs to.")
    actor: Mapped[str] = mapped_column(String(200), default="amas", comment="Who asked for the task.")
    attempts: Mapped[int] = mapped_column(Integer, default=0, comment="Times the task was started (retries count).")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    subject: Mapped[DataSubject | None] = relationship(back_populates="tasks")
    results: Mapped[list[TaskResult]] = relationship(back_populates="task", cascade="all, delete-orphan")


class TaskResult(Base):
    """What an agent found: a summary, the whole typed output, and which model (if any) helped.

    ``output`` is the agent's ``Output`` model as JSON; ``findings`` counts findings per
    severity so reports can rank tasks without reading every output.
    """

    __tablename__ = "task_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agent_tasks.id", ondelete="CASCADE"), index=True)
    summary: Mapped[str] = mapped_column(Text)
    findings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)
    llm_model: Mapped[str | None] = mapped_column(String(200))
    llm: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="Provider, tokens and cost of the model summary.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    task: Mapped[AgentTask] = relationship(back_populates="results")


class Artifact(Base):
    """An object in storage that AMAS produced or took in, with its checksum."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(String(1024), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("data_subjects.id", ondelete="SET NULL"), index=True)
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agent_tasks.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only log: each row carries the hash of the previous one (see ``amas.db.audit``).

    The database refuses UPDATE and DELETE on this table (triggers on both dialects), and
    ``prev_hash`` is unique, so two writers racing for the same predecessor cannot fork
    the chain: one of them gets an integrity error and retries.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    entity_type: Mapped[str] = mapped_column(String(100))
    entity_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Backup(Base):
    """The backup catalog: one row per backup, with its verification verdict and RTO."""

    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), comment="What was backed up, e.g. store:postgresql.")
    storage_uri: Mapped[str] = mapped_column(String(1024))
    status: Mapped[BackupStatus] = mapped_column(_enum(BackupStatus), default=BackupStatus.running)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    erasure_ledger_position: Mapped[int | None] = mapped_column(Integer)
    verified_at: Mapped[datetime | None]
    verification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rto_seconds: Mapped[float | None] = mapped_column(Float)


class ErasureLedgerEntry(Base):
    """An erased subject, kept only as a keyed hash so the ledger holds no personal data.

    ``id`` is the ledger position; a backup records the position it saw, and a restore
    re-applies every entry after it.
    """

    __tablename__ = "erasure_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16), comment="Which erasure key made the digest.")
    request_ref: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class RetentionRun(Base):
    """One ``retention apply`` (or recorded plan): what it did per category, and where it stopped.

    ``progress`` holds per-category counts as batches commit, so a run that crashed shows how far
    it got; applying again picks up the rows still due (each batch re-selects them).
    """

    __tablename__ = "retention_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    actor: Mapped[str] = mapped_column(String(200))
    dry_run: Mapped[bool] = mapped_column(default=False)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.running)
    policies_sha256: Mapped[str] = mapped_column(String(64), comment="Digest of the policy files the run applied.")
    as_of: Mapped[datetime] = mapped_column(comment="The 'now' the plan measured ages against.")
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class GdprRequest(Base):
    """An erasure or access request, tracked against its statutory deadline (GDPR Art. 12(3)).

    The subject appears as a keyed digest. Until the request completes, ``summary`` also holds
    the identifier sealed (AES-256-GCM under a key derived from the erasure key and bound to the
    reference, see ``amas.gdpr.requests``), so the flow run that handles the request takes only
    the reference and Prefect never stores the identifier; completion removes the sealed copy.
    """

    __tablename__ = "gdpr_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True, comment="The request's public reference.")
    kind: Mapped[RequestKind] = mapped_column(_enum(RequestKind))
    subject_digest: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(16), comment="Which erasure key made the digest.")
    status: Mapped[RequestStatus] = mapped_column(_enum(RequestStatus), default=RequestStatus.received)
    actor: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime] = mapped_column(comment="Statutory deadline: received_at + 30 days.")
    completed_at: Mapped[datetime | None]
    certificate_uri: Mapped[str | None] = mapped_column(String(1024), comment="Certificate or export in storage.")
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="Counts per store; never identifiers.")
    error: Mapped[str | None] = mapped_column(Text)
