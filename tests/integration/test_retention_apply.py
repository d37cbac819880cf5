"""retention apply on SQLite and PostgreSQL: batches, holds, idempotence, resuming, the --confirm guard."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, func, select

from amas.config import Settings, load_settings
from amas.db.audit import canonical_payload, chain_hash, verify_chain
from amas.db.ledger import erasure_key, subject_digest
from amas.db.models import (
    GENESIS_HASH,
    AgentTask,
    Artifact,
    AuditEvent,
    Base,
    DataSubject,
    RetentionRun,
    RunStatus,
    TaskResult,
)
from amas.db.session import session_scope
from amas.errors import AmasError, ConfigError
from amas.retention.apply import apply_retention, survey
from amas.retention.policy import Policy
from amas.storage.local import LocalStorage

pytestmark = pytest.mark.integration

AS_OF = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


def policy(**fields: Any) -> Policy:
    return Policy.model_validate({"description": "test", "legal_basis": "legitimate interests", "action": "delete"}
                                 | fields)


def policies(erased_strategy: str = "null_personal_fields") -> list[Policy]:
    columns = ["email", "display_name"]
    return [
        policy(category="task_results", table="task_results", age_field="created_at", max_age_days=365,
               legal_holds=[{"subject": "crm-held", "reason": "litigation 2026-117"}]),
        policy(category="agent_tasks", table="agent_tasks", age_field="finished_at", max_age_days=400,
               legal_holds=[{"case": "CASE-HOLD", "reason": "open investigation"}]),
        policy(category="artifacts", table="artifacts", age_field="created_at", max_age_days=730, action="archive"),
        policy(category="audit_events", table="audit_events", age_field="occurred_at", max_age_days=2555,
               action="archive", legal_basis="legal obligation"),
        policy(category="erased_subjects", table="data_subjects", age_field="erased_at", max_age_days=30,
               action="anonymize", strategy=erased_strategy, columns=columns, legal_basis="legal obligation"),
    ]


def settings(**retention: Any) -> Settings:
    return load_settings(retention={"batch_size": 4, "max_fraction": 1.0} | retention)


def seed(engine: Engine) -> dict[str, Any]:
    """Ten old tasks with old results, one recent one, old and new artifacts, erased subjects."""
    ids: dict[str, Any] = {}
    with session_scope(engine) as session:
        held = DataSubject(external_ref="crm-held", email="held@example.org", display_name="Held Person")
        free = DataSubject(external_ref="crm-free", email="free@example.org", display_name="Free Person")
        erased = DataSubject(external_ref="crm-erased", email="Erased@Example.org", display_name="Erased Person",
                             erased_at=ago(40))
        recent = DataSubject(external_ref="crm-erased-recent", email="new@example.org", display_name="New",
                             erased_at=ago(5))
        session.add_all([held, free, erased, recent])
        tasks = []
        for i in range(10):
            task = AgentTask(agent="forensics", created_at=ago(420 + i),
                             finished_at=None if i == 3 else ago(410 + i),
                             subject=held if i in (0, 1) else free, case_id="CASE-HOLD" if i == 2 else f"CASE-{i}")
            task.results.append(TaskResult(summary=f"result {i}", created_at=ago(410 + i)))
            tasks.append(task)
        fresh = AgentTask(agent="forensics", created_at=ago(11), finished_at=ago(10), subject=free)
        fresh.results.append(TaskResult(summary="fresh", created_at=ago(10)))
        session.add_all([*tasks, fresh])
        session.flush()
        for i in range(5):
            session.add(Artifact(uri=f"s3://evidence/old-{i}", sha256="0" * 64, size_bytes=10 + i,
                                 created_at=ago(800 + i), task_id=tasks[5].id, subject_id=free.id))
        session.add(Artifact(uri="s3://evidence/new", sha256="1" * 64, size_bytes=1, created_at=ago(3)))
        session.flush()
        ids["held_results"] = sorted(r.id for t in tasks[:2] for r in t.results)
        ids["kept_tasks"] = sorted([tasks[0].id, tasks[1].id, tasks[2].id, tasks[3].id, fresh.id])
        ids["fresh_result"] = fresh.results[0].id
    return ids


def rows(engine: Engine, table: Table) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return [dict(r) for r in session.execute(select(table).order_by(*table.primary_key.columns)).mappings()]


def count(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def retention_events(engine: Engine) -> list[AuditEvent]:
    with session_scope(engine) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action.like("retention.%"))
                                    .order_by(AuditEvent.id)))


def run(engine: Engine, storage: LocalStorage, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"as_of": AS_OF, "actor": "test", "settings": settings(), "storage": storage}
    return apply_retention(engine, kwargs.pop("policy_list", policies()), **(options | kwargs))


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "objects")


def test_apply_removes_due_rows_in_batches_and_never_touches_held_ones(store_engine: Engine,
                                                                       storage: LocalStorage) -> None:
    ids = seed(store_engine)
    tables = Base.metadata.tables
    held_before = [r for r in rows(store_engine, tables["task_results"]) if r["id"] in ids["held_results"]]
    tasks_before = [r for r in rows(store_engine, tables["agent_tasks"]) if r["id"] in ids["kept_tasks"][:3]]

    outcome = run(store_engine, storage)

    assert outcome.status == "completed"
    applied = {name: (p.applied, p.batches, p.status) for name, p in outcome.categories.items()}
    assert applied == {
        # 8 due and not held: batches of 4.
        "task_results": (8, 2, "completed"),
        # 0 and 1 have held results, 2 is held by its case, 3 never finished.
        "agent_tasks": (6, 2, "completed"),
        "artifacts": (5, 2, "completed"),
        "audit_events": (0, 0, "nothing due"),
        "erased_subjects": (1, 1, "completed"),
    }
    results = rows(store_engine, tables["task_results"])
    assert sorted(r["id"] for r in results) == sorted([*ids["held_results"], ids["fresh_result"]])
    assert [r for r in results if r["id"] in ids["held_results"]] == held_before
    tasks = rows(store_engine, tables["agent_tasks"])
    assert sorted(r["id"] for r in tasks) == ids["kept_tasks"]
    assert [r for r in tasks if r["id"] in ids["kept_tasks"][:3]] == tasks_before
    assert [a["uri"] for a in rows(store_engine, tables["artifacts"])] == ["s3://evidence/new"]
    subjects = {s["external_ref"]: s for s in rows(store_engine, tables["data_subjects"])}
    assert (subjects["crm-erased"]["email"], subjects["crm-erased"]["display_name"]) == (None, None)
    assert subjects["crm-erased-recent"]["email"] == "new@example.org"
    assert subjects["crm-held"]["email"] == "held@example.org"

    with session_scope(store_engine) as session:
        stored = session.get(RetentionRun, outcome.run_id)
        assert stored is not None
        assert (stored.status, stored.actor, stored.dry_run) == (RunStatus.completed, "test", False)
        assert stored.finished_at is not None and stored.as_of == AS_OF
        assert stored.progress["categories"]["task_results"]["applied"] == 8
        assert stored.progress["surveys"]["agent_tasks"]["held"] == 3
        assert len(stored.policies_sha256) == 64
        assert verify_chain(session).ok

    events = retention_events(store_engine)
    assert [(e.action, e.entity_id) for e in events] == [("retention.apply", p.category) for p in policies()]
    results_event = events[0].details
    assert results_event["run_id"] == str(outcome.run_id)
    assert (results_event["applied"], results_event["due"], results_event["held"]) == (8, 10, 2)
    assert results_event["cutoff"] == (AS_OF - timedelta(days=365)).isoformat()
    text = json.dumps([e.details for e in events])
    for personal in ("held@example.org", "Erased Person", "result 5", "s3://evidence/old-0"):
        assert personal not in text, "audit events carry counts, never row contents"


def test_a_second_run_finds_nothing_new(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    run(store_engine, storage)
    before = {t: rows(store_engine, Base.metadata.tables[t]) for t in ("task_results", "agent_tasks", "artifacts",
                                                                       "data_subjects")}
    again = run(store_engine, storage)
    assert again.status == "completed"
    assert {p.applied for p in again.categories.values()} == {0}
    assert {t: rows(store_engine, Base.metadata.tables[t]) for t in before} == before
    assert len(list(storage.list("archive/artifacts/"))) == 3, "2 batches and a manifest, from the first run only"


def test_a_run_that_fails_mid_way_is_finished_by_the_next(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    batches: list[tuple[str, int]] = []

    def crash_after_three(category: str, batch: int, _applied: int) -> None:
        batches.append((category, batch))
        if len(batches) == 3:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run(store_engine, storage, on_batch=crash_after_three, settings=settings(workers=1))
    assert batches == [("task_results", 1), ("task_results", 2), ("agent_tasks", 1)]
    with session_scope(store_engine) as session:
        failed = session.scalars(select(RetentionRun)).one()
        assert failed.status is RunStatus.failed and failed.error == "RuntimeError: worker lost"
        # The third batch committed before the hook ran: progress says exactly what is done.
        assert failed.progress["categories"]["agent_tasks"] | {"objects": []} == {
            "action": "delete", "status": "failed", "applied": 4, "batches": 1, "objects": [], "manifest": None,
            "seconds": None, "vacuum_seconds": None, "last_id": None}
    assert count(store_engine, AgentTask) == 11 - 4
    event = retention_events(store_engine)[-1]
    assert (event.entity_id, event.details["status"], event.details["error"]) == ("agent_tasks", "failed",
                                                                                  "RuntimeError")

    finished = run(store_engine, storage)
    assert finished.categories["agent_tasks"].applied == 2
    assert finished.categories["task_results"].applied == 0
    assert count(store_engine, AgentTask) == 5
    assert count(store_engine, TaskResult) == 3


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_parallel_deletes_that_fail_mid_way_record_exactly_what_they_deleted(store_engine: Engine,
                                                                             storage: LocalStorage) -> None:
    seed(store_engine)
    with store_engine.begin() as conn:  # the split points come from the planner's row estimate
        conn.exec_driver_sql("ANALYZE agent_tasks")
    before = count(store_engine, AgentTask)

    def crash_in_agent_tasks(category: str, _batch: int, _applied: int) -> None:
        if category == "agent_tasks":
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run(store_engine, storage, on_batch=crash_in_agent_tasks, settings=settings(batch_size=1, workers=2))
    with session_scope(store_engine) as session:
        failed = session.scalars(select(RetentionRun)).one()
        recorded = failed.progress["categories"]["agent_tasks"]["applied"]
    # Both workers stopped, and every batch either committed, counted, or never ran.
    assert recorded >= 1 and count(store_engine, AgentTask) == before - recorded

    finished = run(store_engine, storage, settings=settings(workers=2))
    assert finished.categories["agent_tasks"].applied == 6 - recorded
    assert count(store_engine, AgentTask) == 5


def test_a_killed_run_is_marked_failed_by_the_next(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    killed = uuid.uuid4()
    with session_scope(store_engine) as session:
        session.add(RetentionRun(id=killed, actor="test", policies_sha256="0" * 64, as_of=AS_OF,
                                 progress={"categories": {}}))
    outcome = run(store_engine, storage)
    with session_scope(store_engine) as session:
        dead = session.get(RetentionRun, killed)
        assert dead is not None and dead.status is RunStatus.failed
        assert dead.error == f"interrupted; the rows it had not reached were handled by run {outcome.run_id}"
    assert retention_events(store_engine)[0].action == "retention.interrupted"


def test_more_than_the_allowed_fraction_stops_until_confirmed(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    strict = settings(max_fraction=0.5)
    stopped = run(store_engine, storage, settings=strict)
    assert stopped.status == "stopped"
    assert stopped.over_limit == {"task_results": 0.7273, "agent_tasks": 0.5455, "artifacts": 0.8333}
    assert stopped.message.startswith("category 'task_results' would delete 8 of 11 (73%); category 'agent_tasks' "
                                      "would delete 6 of 11 (55%); category 'artifacts' would delete 5 of 6 (83%): "
                                      "more than AMAS_RETENTION_MAX_FRACTION=0.5 in one run")
    assert stopped.message.endswith("re-run with --confirm")
    assert (count(store_engine, TaskResult), count(store_engine, AgentTask), count(store_engine, Artifact)) == (11, 11, 6)
    with session_scope(store_engine) as session:
        record = session.scalars(select(RetentionRun)).one()
        assert (record.status, record.error) == (RunStatus.stopped, stopped.message)
    assert [e.action for e in retention_events(store_engine)] == ["retention.stopped"]

    confirmed = run(store_engine, storage, settings=strict, confirm=True)
    assert confirmed.status == "completed"
    assert count(store_engine, TaskResult) == 3
    event = next(e for e in retention_events(store_engine) if e.entity_id == "task_results")
    assert event.details["confirmed_over_max_fraction"] is True


def test_dry_run_reports_and_changes_nothing(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    tables = ("task_results", "agent_tasks", "artifacts", "data_subjects", "audit_events", "retention_runs")
    before = {t: rows(store_engine, Base.metadata.tables[t]) for t in tables}
    outcome = run(store_engine, storage, dry_run=True, settings=settings(max_fraction=0.5))
    assert outcome.status == "dry-run" and outcome.run_id is None
    assert "would delete 8 of 11" in outcome.message
    assert [(s.category, s.act, s.held) for s in outcome.surveys] == [
        ("task_results", 8, 2), ("agent_tasks", 6, 3), ("artifacts", 5, 0), ("audit_events", 0, 0),
        ("erased_subjects", 1, 0)]
    assert {t: rows(store_engine, Base.metadata.tables[t]) for t in tables} == before
    assert list(storage.list()) == []


def test_survey_samples_give_the_plan_s_reasons(store_engine: Engine) -> None:
    seed(store_engine)
    found = {s.category: s for s in survey(store_engine, policies(), AS_OF, samples=20)}
    tasks = found["agent_tasks"]
    assert (tasks.total, tasks.due, tasks.held, tasks.no_age, tasks.within_limit) == (11, 9, 3, 1, 1)
    reasons = sorted(v.reason.split(";")[0] for v in tasks.samples if v.held)
    assert reasons == ["held by case CASE-HOLD until removed (open investigation)",
                       "held: rows of task_results that depend on it are under a legal hold",
                       "held: rows of task_results that depend on it are under a legal hold"]
    results = found["task_results"]
    assert {v.reason.split(";")[0] for v in results.samples if v.held} == {
        "held by subject crm-held until removed (litigation 2026-117)"}
    assert results.max_overdue_days == 54  # the oldest result not held is 419 days old, the limit 365
    assert [v.decision for v in found["erased_subjects"].samples] == ["anonymize"]


def test_archive_exports_each_batch_with_its_checksum_before_deleting(store_engine: Engine,
                                                                      storage: LocalStorage) -> None:
    seed(store_engine)
    exported = [a for a in rows(store_engine, Base.metadata.tables["artifacts"]) if a["uri"] != "s3://evidence/new"]
    outcome = run(store_engine, storage, categories=["artifacts"])
    progress = outcome.categories["artifacts"]
    archived: list[dict[str, Any]] = []
    for item in progress.objects:
        assert item["key"].startswith(f"archive/artifacts/{outcome.run_id}/")
        data = storage.get(item["key"])
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
        lines = gzip.decompress(data).decode().splitlines()
        assert len(lines) == item["rows"]
        archived.extend(json.loads(line) for line in lines)
    assert [a["uri"] for a in archived] == [a["uri"] for a in exported]
    assert archived[0]["created_at"] == exported[0]["created_at"].isoformat()
    manifest = json.loads(storage.get(progress.manifest["key"]))
    assert manifest["rows"] == 5 and manifest["deleted"] is True and manifest["objects"] == progress.objects
    assert hashlib.sha256(storage.get(progress.manifest["key"])).hexdigest() == progress.manifest["sha256"]
    assert retention_events(store_engine)[-1].details["manifest"] == progress.manifest


def _old_audit_events(engine: Engine, n: int) -> None:
    """Hash-chained events dated 8 years back, inserted as append_event would (INSERT is allowed)."""
    with session_scope(engine) as session:
        prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS_HASH
        for i in range(n):
            when = ago(2950 - i)
            details = {"n": i}
            payload = canonical_payload(occurred_at=when, actor="old", action="legacy", entity_type="x",
                                        entity_id=str(i), details=details)
            digest = chain_hash(prev, payload)
            session.add(AuditEvent(occurred_at=when, actor="old", action="legacy", entity_type="x",
                                   entity_id=str(i), details=details, prev_hash=prev, hash=digest))
            session.flush()
            prev = digest


def test_the_audit_log_is_archived_in_segments_and_never_deleted(store_engine: Engine,
                                                                 storage: LocalStorage) -> None:
    _old_audit_events(store_engine, 6)
    before = rows(store_engine, Base.metadata.tables["audit_events"])
    first = run(store_engine, storage, categories=["audit_events"])
    progress = first.categories["audit_events"]
    assert (progress.applied, progress.batches, progress.last_id) == (6, 2, before[5]["id"])
    assert rows(store_engine, Base.metadata.tables["audit_events"])[:6] == before
    exported = [json.loads(line) for o in progress.objects
                for line in gzip.decompress(storage.get(o["key"])).decode().splitlines()]
    assert [e["hash"] for e in exported] == [e["hash"] for e in before]
    assert exported[0]["prev_hash"] == GENESIS_HASH, "a segment carries the links to check it"
    manifest = json.loads(storage.get(progress.manifest["key"]))
    assert manifest["deleted"] is False

    _old_audit_events(store_engine, 2)
    second = run(store_engine, storage, categories=["audit_events"])
    # Only the two new old events: the earlier segment is not exported again. The newer
    # retention events in between end the stretch older than the cutoff, so these wait.
    assert second.categories["audit_events"].applied == 0
    with session_scope(store_engine) as session:
        assert verify_chain(session).ok


@pytest.mark.parametrize("strategy", ["null_personal_fields", "redact", "hash_identifier"])
def test_each_anonymisation_strategy_changes_due_rows_once(store_engine: Engine, storage: LocalStorage,
                                                           strategy: str) -> None:
    seed(store_engine)
    chosen = [p for p in policies(strategy) if p.category == "erased_subjects"]
    first = run(store_engine, storage, policy_list=chosen)
    assert first.categories["erased_subjects"].applied == 1
    subjects = {s["external_ref"]: s for s in rows(store_engine, Base.metadata.tables["data_subjects"])}
    erased = subjects["crm-erased"]
    expected = {
        "null_personal_fields": (None, None),
        "redact": ("[redacted]", "[redacted]"),
        "hash_identifier": (subject_digest("erased@example.org", erasure_key(settings())),
                            subject_digest("Erased Person", erasure_key(settings()))),
    }[strategy]
    assert (erased["email"], erased["display_name"]) == expected
    assert subjects["crm-erased-recent"]["email"] == "new@example.org"
    again = run(store_engine, storage, policy_list=chosen)
    assert again.categories["erased_subjects"].applied == 0
    assert {s["external_ref"]: s for s in rows(store_engine, Base.metadata.tables["data_subjects"])} == subjects


def test_a_category_hold_suspends_the_whole_category(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    results = policies()[0]
    held = Policy.model_validate(results.model_dump() | {"legal_holds": [
        {"category": "task_results", "reason": "regulator inquiry"}]})
    outcome = run(store_engine, storage, policy_list=[held])
    assert outcome.categories["task_results"].status == "held"
    assert outcome.surveys[0].held == outcome.surveys[0].due == 10
    assert count(store_engine, TaskResult) == 11
    assert retention_events(store_engine)[-1].details["status"] == "held"


def test_bad_input_is_refused_in_one_line(store_engine: Engine, storage: LocalStorage) -> None:
    with pytest.raises(ConfigError, match=r"^unknown retention category 'task_result'; categories: task_results, "):
        run(store_engine, storage, categories=["task_result"])
    with pytest.raises(ConfigError, match=r"--as-of .* is in the future"):
        run(store_engine, storage, as_of=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(ConfigError, match="time zone"):
        run(store_engine, storage, as_of=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="need the object storage"):
        run(store_engine, None)
    assert count(store_engine, RetentionRun) == 0


def test_a_concurrent_apply_is_refused_on_postgresql(fresh_pg_url: str, storage: LocalStorage) -> None:
    from amas.db.migrate import upgrade
    from amas.db.session import create_store_engine
    from amas.retention.apply import exclusive

    engine = create_store_engine(fresh_pg_url)
    upgrade(engine)
    try:
        with exclusive(engine), pytest.raises(AmasError, match="another retention apply is running"):
            run(engine, storage)
        assert run(engine, storage).status == "completed", "the lock is released after the block"
    finally:
        engine.dispose()


def test_a_concurrent_apply_is_refused_on_sqlite(tmp_path: Path, storage: LocalStorage) -> None:
    import threading

    from amas.db.migrate import upgrade
    from amas.db.session import create_store_engine

    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    try:
        seed(engine)
        refused: list[BaseException] = []
        second_outcomes: list[Any] = []

        def second_apply() -> None:
            try:
                second_outcomes.append(run(engine, storage))
            except BaseException as exc:  # kept for the assertions below
                refused.append(exc)

        def start_another(category: str, batch: int, _applied: int) -> None:
            # Mid-run, after the first batch committed: another apply (its own thread, its own
            # open of the lock file, as another process would be) tries to start.
            if (category, batch) == ("task_results", 1):
                other = threading.Thread(target=second_apply)
                other.start()
                other.join(timeout=30)

        first = run(engine, storage, on_batch=start_another)

        assert second_outcomes == [] and len(refused) == 1
        assert isinstance(refused[0], AmasError)
        assert str(refused[0]) == "another retention apply is running on this store; wait for it to finish"
        assert first.status == "completed"
        assert {name: p.applied for name, p in first.categories.items()} == {
            "task_results": 8, "agent_tasks": 6, "artifacts": 5, "audit_events": 0, "erased_subjects": 1}
        with session_scope(engine) as session:
            (stored,) = session.scalars(select(RetentionRun)).all()
            assert stored.id == first.run_id and stored.status is RunStatus.completed
        assert [e.action for e in retention_events(engine)] == ["retention.apply"] * len(policies())
        assert len(list(storage.list("archive/artifacts/"))) == 3, "2 batches and a manifest, archived once"
        assert count(engine, AgentTask) == 5 and count(engine, TaskResult) == 3

        # The lock goes with the run: the next apply works, and finds nothing left to do.
        again = run(engine, storage)
        assert again.status == "completed" and {p.applied for p in again.categories.values()} == {0}
    finally:
        engine.dispose()


def test_a_bulk_removal_is_followed_by_vacuum_on_postgresql(store_engine: Engine, storage: LocalStorage,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store_engine)
    monkeypatch.setattr("amas.retention.apply.VACUUM_AFTER_ROWS", 5)
    outcome = run(store_engine, storage)
    vacuumed = {name: p.vacuum_seconds is not None for name, p in outcome.categories.items()}
    if store_engine.dialect.name == "sqlite":
        assert set(vacuumed.values()) == {False}
        return
    # Removed at least 5 rows: results (8), tasks (6), artifacts (5); anonymize removes nothing.
    assert vacuumed == {"task_results": True, "agent_tasks": True, "artifacts": True, "audit_events": False,
                        "erased_subjects": False}
    from sqlalchemy import text

    with store_engine.connect() as conn:
        last = conn.execute(text("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'task_results'")).scalar()
    assert last is not None


def test_hostile_hold_values_are_literal_values(store_engine: Engine, storage: LocalStorage) -> None:
    seed(store_engine)
    hostile = [Policy.model_validate(p.model_dump() | {"legal_holds": [
        {"subject": "crm-held' OR '1'='1", "reason": "x"},
        {"case": "'); DROP TABLE agent_tasks; --", "reason": "y"},
        {"subject": "crm-held", "reason": "the real one"}]}) if p.category == "task_results" else p
        for p in policies()]
    outcome = run(store_engine, storage, policy_list=hostile)
    # Exactly as with the plain hold: only crm-held's two results are kept.
    assert outcome.categories["task_results"].applied == 8
    assert count(store_engine, AgentTask) == 5
