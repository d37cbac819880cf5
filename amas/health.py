"""Health checks that do real work: a write and read-back on every part AMAS depends on.

Each check returns a ``CheckResult``; the ``amas-health`` flow runs them as tasks and
publishes ``HealthReport.to_markdown()`` as a Prefect artifact. The doctor uses the cheaper
pre-flight checks in ``amas.doctor`` instead.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import pandas as pd
from pydantic import BaseModel, Field
from sqlalchemy import Engine, select

from amas.db.audit import append_event, verify_chain
from amas.db.migrate import current_revision, head_revision
from amas.db.models import AuditEvent, utcnow
from amas.db.session import check_connection, session_scope
from amas.errors import AmasError
from amas.storage import Storage

PROBE_BYTES = 256 * 1024


class CheckResult(BaseModel):
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    data: dict[str, object] = Field(default_factory=dict)


class HealthReport(BaseModel):
    started_at: datetime
    checks: list[CheckResult]
    inventory: dict[str, object] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_markdown(self) -> str:
        verdict = "healthy" if self.ok else "UNHEALTHY"
        lines = [
            f"# AMAS health: {verdict}",
            "",
            f"Checked at {self.started_at.isoformat(timespec='seconds')}.",
            "",
            "| check | result | time | detail |",
            "|---|---|---|---|",
        ]
        for check in self.checks:
            lines.append(f"| {check.name} | {'ok' if check.ok else '**FAILED**'} | {check.seconds:.2f} s | {check.detail} |")
        for check in self.checks:
            if isinstance(check.data.get("table"), str):
                lines += ["", f"## {check.name}", "", str(check.data["table"])]
        tables = self.inventory.get("tables")
        if isinstance(tables, dict):
            lines += ["", "## What the store holds", "", "| table | rows |", "|---|---|"]
            lines += [f"| {name} | {rows} |" for name, rows in tables.items()]
        storage = self.inventory.get("storage")
        if isinstance(storage, dict) and storage.get("prefixes"):
            lines += ["", f"## Object storage ({storage.get('url')})", "", "| prefix | objects | bytes |", "|---|---|---|"]
            for prefix, numbers in storage["prefixes"].items():  # type: ignore[union-attr]
                lines.append(f"| {prefix} | {numbers['objects']} | {numbers['bytes']} |")
        return "\n".join(lines) + "\n"


def timed(name: str, check: Callable[[], tuple[str, dict[str, object]]]) -> CheckResult:
    """Run one check; a user-fixable failure becomes a failed result with its one-line reason."""
    start = time.perf_counter()
    try:
        detail, data = check()
        return CheckResult(name=name, ok=True, detail=detail, seconds=time.perf_counter() - start, data=data)
    except AmasError as exc:
        return CheckResult(name=name, ok=False, detail=str(exc), seconds=time.perf_counter() - start)


def check_store(engine: Engine, *, actor: str) -> tuple[str, dict[str, object]]:
    """Reachable, migrated to head, accepts an audit event, and the audit chain verifies."""
    check_connection(engine)
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise AmasError(f"store schema is at {current or 'nothing'}, code expects {head}: run `amas db upgrade`")
    with session_scope(engine) as session:
        event = append_event(session, actor=actor, action="health.probe", entity_type="store",
                             details={"pid": os.getpid()})
        event_id = event.id
    with session_scope(engine) as session:
        verdict = verify_chain(session)
    if not verdict.ok:
        raise AmasError(f"audit chain broken at event {verdict.first_bad_id}: {verdict.reason}")
    return (f"{engine.dialect.name} at revision {current}; audit event {event_id} appended; "
            f"chain of {verdict.checked} events verifies", {"revision": current, "audit_events": verdict.checked})


def check_storage(storage: Storage) -> tuple[str, dict[str, object]]:
    """Write, stat, read back and delete a random probe object; compare checksums."""
    payload = os.urandom(PROBE_BYTES)
    expected = hashlib.sha256(payload).hexdigest()
    key = f"health/probe-{uuid.uuid4().hex}.bin"
    info = storage.put(key, payload)
    try:
        if info.sha256 != expected or info.size != len(payload):
            raise AmasError(f"storage at {storage.url} stored {info.size} bytes with sha256 {info.sha256}, sent {len(payload)} with {expected}")
        read_back = hashlib.sha256(storage.get(key)).hexdigest()
        if read_back != expected:
            raise AmasError(f"storage at {storage.url} returned different bytes for {key}")
    finally:
        storage.delete(key)
    if storage.exists(key):
        raise AmasError(f"storage at {storage.url} still lists {key} after delete")
    return f"{PROBE_BYTES // 1024} KiB probe written, read back and deleted at {storage.url}", {"sha256": expected}


def audit_frame(engine: Engine, limit: int = 100_000) -> pd.DataFrame:
    """The newest audit rows as a DataFrame, for the audit_events expectation suite."""
    query = select(AuditEvent.id, AuditEvent.action, AuditEvent.hash, AuditEvent.prev_hash).order_by(
        AuditEvent.id.desc()).limit(limit)
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def new_report() -> HealthReport:
    return HealthReport(started_at=utcnow(), checks=[])

