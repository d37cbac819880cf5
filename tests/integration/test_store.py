"""The store on SQLite and PostgreSQL: migrations, models, audit chain, erasure ledger."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from amas.db import ledger
from amas.db.audit import append_event, verify_chain
from amas.db.migrate import current_revision, head_revision, upgrade
from amas.db.models import (
    GENESIS_HASH,
    AgentTask,
    Artifact,
    AuditEvent,
    Base,
    DataSubject,
    Priority,
    TaskResult,
    TaskStatus,
)
from amas.db.session import create_store_engine, session_scope

pytestmark = pytest.mark.integration


def test_upgrade_from_empty_reaches_head_and_is_repeatable(store_url: str) -> None:
    engine = create_store_engine(store_url)
    assert current_revision(engine) is None
    assert upgrade(engine) == (None, head_revision())
    assert upgrade(engine) == (head_revision(), head_revision())
    engine.dispose()


def test_upgrade_keeps_rows_written_under_the_first_schema(store_url: str) -> None:
    engine = create_store_engine(store_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO agent_tasks (id, agent, parameters, status, priority, created_at) "
                          "VALUES ('0b6f1d3e5a7c4e2f9d8b7a6c5e4f3a2b', 'forensics', '{}', 'completed', 50, "
                          "'2026-11-25 10:00:00')"))
        conn.execute(text("INSERT INTO task_results (task_id, summary, findings, created_at) "
                          "VALUES ('0b6f1d3e5a7c4e2f9d8b7a6c5e4f3a2b', 'old', '{}', '2026-11-25 10:00:01')"))
    upgrade(engine)
    with session_scope(engine) as session:
        task = session.scalars(select(AgentTask)).one()
        assert (task.actor, task.attempts, task.case_id) == ("amas", 0, None)
        assert [(r.summary, r.output, r.llm) for r in task.results] == [("old", {}, {})]
    engine.dispose()


def test_migrations_match_the_models(store_engine: Engine) -> None:
    with store_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_task_round_trip_keeps_aware_utc_times_and_json(store_engine: Engine) -> None:
    started = datetime(2026, 11, 25, 21, 0, 0, 123456, tzinfo=UTC)
    with session_scope(store_engine) as session:
        subject = DataSubject(external_ref="cust-1", email="ada@example.org", display_name="Ada")
        task = AgentTask(agent="data_analysis", parameters={"path": "data/x.csv", "n": [1, 2]},
                         subject=subject, started_at=started)
        task.results.append(TaskResult(summary="3 outliers", findings={"outliers": 3}))
        session.add(task)
        session.flush()
        task_id = task.id
    with session_scope(store_engine) as session:
        loaded = session.get(AgentTask, task_id)
        assert loaded is not None
        assert loaded.status is TaskStatus.pending
        assert loaded.priority == Priority.normal
        assert loaded.parameters == {"path": "data/x.csv", "n": [1, 2]}
        assert loaded.started_at == started and loaded.started_at.tzinfo is not None
        assert loaded.created_at.tzinfo is not None
        assert loaded.subject is not None and loaded.subject.email == "ada@example.org"
        assert [r.findings for r in loaded.results] == [{"outliers": 3}]


def test_queue_order_puts_critical_first(store_engine: Engine) -> None:
    with session_scope(store_engine) as session:
        for priority in (Priority.low, Priority.critical, Priority.normal, Priority.high):
            session.add(AgentTask(agent=f"a-{priority.name}", priority=int(priority)))
    with session_scope(store_engine) as session:
        order = session.scalars(
            select(AgentTask.agent).where(AgentTask.status == TaskStatus.pending)
            .order_by(AgentTask.priority.desc(), AgentTask.created_at)
        ).all()
    assert order == ["a-critical", "a-high", "a-normal", "a-low"]


def test_status_outside_the_enum_is_refused_by_the_database(store_engine: Engine) -> None:
    with pytest.raises((IntegrityError, DBAPIError)), store_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO agent_tasks (id, agent, parameters, status, priority, created_at) "
            "VALUES ('0123456789abcdef0123456789abcdef', 'x', '{}', 'bogus', 50, CURRENT_TIMESTAMP)"
        ))


def test_deleting_a_subject_keeps_tasks_and_artifacts_but_unlinks_them(store_engine: Engine) -> None:
    with session_scope(store_engine) as session:
        subject = DataSubject(external_ref="cust-2")
        task = AgentTask(agent="forensics", subject=subject)
        session.add(task)
        session.flush()
        session.add(Artifact(uri="file:///a.bin", sha256="a" * 64, size_bytes=3, subject_id=subject.id))
        task_id, subject_id = task.id, subject.id
    with session_scope(store_engine) as session:
        session.execute(DataSubject.__table__.delete().where(DataSubject.id == subject_id))
    with session_scope(store_engine) as session:
        assert session.get(AgentTask, task_id).subject_id is None
        assert session.scalar(select(Artifact.subject_id)) is None


def test_audit_chain_links_and_verifies(store_engine: Engine) -> None:
    with session_scope(store_engine) as session:
        first = append_event(session, actor="cli", action="backup.run", entity_type="backup", entity_id="b1",
                             details={"bytes": 10, "ratio": 0.25, "note": "ünïcode"})
        second = append_event(session, actor="cli", action="backup.verify", entity_type="backup", entity_id="b1")
        assert first.prev_hash == GENESIS_HASH
        assert second.prev_hash == first.hash
    with session_scope(store_engine) as session:
        assert verify_chain(session).ok
        assert verify_chain(session).checked == 2


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET actor = 'mallory'",
    "DELETE FROM audit_events",
])
def test_audit_rows_cannot_be_changed_or_removed(store_engine: Engine, statement: str) -> None:
    with session_scope(store_engine) as session:
        append_event(session, actor="cli", action="x", entity_type="y")
    with pytest.raises(DBAPIError, match="append-only"), store_engine.begin() as conn:
        conn.execute(text(statement))
    with session_scope(store_engine) as session:
        assert session.scalar(select(AuditEvent.actor)) == "cli"


def test_tampering_behind_the_triggers_is_detected(store_engine: Engine) -> None:
    with session_scope(store_engine) as session:
        for i in range(3):
            append_event(session, actor="cli", action=f"step{i}", entity_type="t")
    with store_engine.begin() as conn:
        # An attacker with DDL rights could drop the guard; the chain still tells.
        if store_engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE action = 'step1'"))
    with session_scope(store_engine) as session:
        verdict = verify_chain(session)
        tampered = session.scalar(select(AuditEvent.id).where(AuditEvent.action == "step1"))
    assert not verdict.ok
    assert verdict.first_bad_id == tampered
    assert "content" in verdict.reason


def test_concurrent_writers_do_not_fork_the_chain(store_engine: Engine) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                with session_scope(store_engine) as session:
                    append_event(session, actor=f"w{n}", action="tick", entity_type="t", entity_id=str(i))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with session_scope(store_engine) as session:
        verdict = verify_chain(session)
    assert verdict.ok and verdict.checked == 60


def test_erasure_ledger_holds_digests_and_is_idempotent(store_engine: Engine) -> None:
    key = b"k" * 32
    with session_scope(store_engine) as session:
        first = ledger.record_erasure(session, identifier="Ada@Example.org ", key=key, request_ref="req-1")
        again = ledger.record_erasure(session, identifier="ada@example.org", key=key, request_ref="req-2")
        assert first.id == again.id
        assert ledger.ledger_position(session) == first.id
    with session_scope(store_engine) as session:
        stored = session.scalars(select(ledger.ErasureLedgerEntry.subject_digest)).all()
        assert stored == [ledger.subject_digest("ada@example.org", key)]
        assert "ada" not in stored[0]
        assert ledger.is_erased(session, identifier="ADA@example.org", key=key)
        assert not ledger.is_erased(session, identifier="ada@example.org", key=b"x" * 32)


def test_local_erasure_key_is_made_once_and_kept(tmp_path) -> None:
    from amas.config import load_settings

    settings = load_settings(core={"home": tmp_path})
    first = ledger.erasure_key(settings)
    assert len(first) == 32
    assert ledger.erasure_key(settings) == first
    assert (tmp_path / "keys" / "erasure.key").read_text().strip() == first.hex()
    configured = load_settings(core={"home": tmp_path, "erasure_key": "a-configured-erasure-key"})
    assert ledger.erasure_key(configured) != first
