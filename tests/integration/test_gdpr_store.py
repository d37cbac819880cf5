"""GDPR erasure in the store and object storage, on SQLite and PostgreSQL.

One subject is seeded across every table (rows, tasks, results, artifacts with their objects,
mentions in other people's tasks and results, an earlier export); the tests erase them and look
everywhere for what is left, check the certificate and the audit chain, and restore an older copy
of the store to prove the ledger erases the subject again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text

from amas.config import get_settings
from amas.db.audit import verify_chain
from amas.db.ledger import erasure_key, subject_digest
from amas.db.migrate import upgrade
from amas.db.models import (
    AgentTask,
    Artifact,
    AuditEvent,
    DataSubject,
    ErasureLedgerEntry,
    GdprRequest,
    RequestKind,
    RequestStatus,
    TaskResult,
)
from amas.db.session import create_store_engine, session_scope
from amas.gdpr import erase as erase_module
from amas.gdpr.erase import erase_subject
from amas.gdpr.reapply import LEDGER_KEY, ledger_violations, reapply_ledger
from amas.retention.policy import PolicySet, load_policies
from amas.storage import Storage, open_storage
from tests.plugins.postgres import ADMIN_DSN, drop_database

pytestmark = pytest.mark.integration

REF = "CRM-1001"
EMAIL = "Ann.Lee@example.org"
NAME = "Ann Lee"
OTHER_EMAIL = "joann.lee@example.org"
SECRETS = (REF.lower(), EMAIL.lower(), NAME.lower())


@pytest.fixture
def storage() -> Storage:
    return open_storage(get_settings())


@pytest.fixture
def no_holds(tmp_path: Path) -> PolicySet:
    return policies_with(tmp_path, "[]")


def policies_with(tmp_path: Path, holds: str) -> PolicySet:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    (directory / "store.yaml").write_text(f"""
policies:
  - category: agent_tasks
    description: tasks
    table: agent_tasks
    age_field: finished_at
    max_age_days: 400
    action: delete
    legal_basis: legitimate interests
    legal_holds: {holds}
""", encoding="utf-8")
    return load_policies(directory)


def seed(engine: Engine, storage: Storage) -> dict[str, Any]:
    """The subject everywhere, a bystander whose data must survive, and mentions of the subject."""
    base = get_settings().storage_url.rstrip("/")
    with session_scope(engine) as session:
        ann = DataSubject(external_ref=REF, email=EMAIL, display_name=NAME)
        jo = DataSubject(external_ref="CRM-2002", email=OTHER_EMAIL, display_name="Jo Ann")
        session.add_all([ann, jo])
        session.flush()
        tasks = [AgentTask(agent="forensics", parameters={"paths": ["/evidence/ann"]}, subject_id=ann.id),
                 AgentTask(agent="report", parameters={"case_id": "CASE-9"}, subject_id=ann.id, case_id="CASE-9")]
        mention = AgentTask(agent="report", subject_id=jo.id,
                            parameters={"note": f"compare with {EMAIL.lower()} and {OTHER_EMAIL}"})
        session.add_all([*tasks, mention])
        session.flush()
        session.add_all([TaskResult(task_id=t.id, summary="found 3 files", output={"files": 3}) for t in tasks])
        session.add(TaskResult(task_id=mention.id, summary=f"see {REF}", output={"people": [EMAIL, OTHER_EMAIL]}))
        for key, task_id, subject_id in (("evidence/ann/photo.jpg", tasks[0].id, None),
                                         ("evidence/ann/id-scan.pdf", None, ann.id),
                                         ("evidence/jo/receipt.pdf", mention.id, jo.id)):
            info = storage.put(key, f"bytes of {key}".encode())
            session.add(Artifact(uri=f"{base}/{key}", sha256=info.sha256, size_bytes=info.size, task_id=task_id,
                                 subject_id=subject_id))
        export = GdprRequest(ref="EX-20260101-00000000", kind=RequestKind.export, actor="t",
                             subject_digest=subject_digest(EMAIL, erasure_key(get_settings())), key_id="x",
                             status=RequestStatus.completed, received_at=ann.created_at,
                             due_at=ann.created_at + timedelta(days=30),
                             certificate_uri=f"{base}/gdpr/EX-20260101-00000000/export.zip")
        session.add(export)
        storage.put("gdpr/EX-20260101-00000000/export.zip", b"an earlier export of Ann")
        return {"ann": ann.id, "jo": jo.id, "tasks": [t.id for t in tasks], "mention": mention.id}


def counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (DataSubject, AgentTask, TaskResult, Artifact, ErasureLedgerEntry, GdprRequest)}


def all_text(engine: Engine) -> str:
    """Every row of every table as text, lower-cased: the place to look for anything left."""
    with session_scope(engine) as session:
        parts = []
        for model in (DataSubject, AgentTask, TaskResult, Artifact, AuditEvent, ErasureLedgerEntry, GdprRequest):
            for row in session.scalars(select(model)):
                parts.append(json.dumps({c.key: getattr(row, c.key) for c in model.__table__.columns}, default=str))
        return "\n".join(parts).lower()


def holds_secret(text: str) -> str | None:
    """The first of the subject's identifiers in ``text`` (as a whole token: joann@ is not ann@)."""
    for secret in SECRETS:
        if re.search(rf"(?<![\w.]){re.escape(secret)}(?!\w)", text.lower()):
            return secret
    return None


def assert_subject_gone(engine: Engine, storage: Storage, ids: dict[str, Any]) -> None:
    everything = all_text(engine)
    assert holds_secret(everything) is None, f"{holds_secret(everything)!r} is still in the store"
    assert OTHER_EMAIL in everything, "the bystander's data went too"
    keys = [info.key for info in storage.list("")]
    assert not any(k.startswith("evidence/ann/") for k in keys)
    assert "evidence/jo/receipt.pdf" in keys
    assert "gdpr/EX-20260101-00000000/export.zip" not in keys
    with session_scope(engine) as session:
        ann = session.get(DataSubject, ids["ann"])
        assert ann is not None and ann.erased_at is not None
        assert (ann.email, ann.display_name) == (None, None)
        assert ann.external_ref == subject_digest(REF, erasure_key(get_settings()))
        assert session.scalar(select(func.count()).select_from(AgentTask).where(AgentTask.subject_id == ann.id)) == 0
        assert session.scalar(select(func.count()).select_from(TaskResult)
                              .where(TaskResult.task_id.in_(ids["tasks"]))) == 0
        mention = session.get(AgentTask, ids["mention"])
        assert mention is not None and mention.parameters["note"] == f"compare with [redacted] and {OTHER_EMAIL}"
        assert verify_chain(session).ok


def test_erasure_reaches_every_table_and_object_and_issues_a_certificate(store_engine: Engine, storage: Storage,
                                                                         no_holds: PolicySet) -> None:
    ids = seed(store_engine, storage)
    outcome = erase_subject(EMAIL.upper(), by="email", engine=store_engine, storage=storage, policies=no_holds)

    assert_subject_gone(store_engine, storage, ids)
    assert outcome.done["artifacts"] == {"rows": 2, "objects": 2}
    assert outcome.done["agent_tasks"] == {"tasks": 2, "results": 2}
    assert outcome.done["task_mentions"] == {"tasks": 1} and outcome.done["result_mentions"] == {"results": 1}
    assert outcome.done["exports"] == {"objects": 1}
    assert outcome.remaining and set(outcome.remaining.values()) == {0}

    key = erasure_key(get_settings())
    with session_scope(store_engine) as session:
        request = session.scalars(select(GdprRequest).where(GdprRequest.ref == outcome.request_ref)).one()
        assert request.status is RequestStatus.completed
        assert request.due_at - request.received_at == timedelta(days=30)
        assert request.subject_digest == subject_digest(REF, key)
        ledger = set(session.scalars(select(ErasureLedgerEntry.subject_digest)))
        assert {subject_digest(REF, key), subject_digest(EMAIL, key)} <= ledger
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == request.ref)).all()
        certificate_sha = request.summary["certificate_sha256"]
    assert actions[:2] == ["gdpr.erase.received", "gdpr.erase.planned"]
    assert {"gdpr.erase.artifacts", "gdpr.erase.agent_tasks", "gdpr.erase.data_subjects",
            "gdpr.erase.completed"} <= set(actions)

    json_key, html_key = f"gdpr/{outcome.request_ref}/certificate.json", f"gdpr/{outcome.request_ref}/certificate.html"
    raw_json, raw_html = storage.get(json_key), storage.get(html_key)
    assert hashlib.sha256(raw_json).hexdigest() == certificate_sha
    certificate = json.loads(raw_json)
    assert certificate["files"]["certificate.html"]["sha256"] == hashlib.sha256(raw_html).hexdigest()
    assert certificate["result"] == "erased"
    assert certificate["subject"]["digest"] == subject_digest(REF, key)
    found = {f["location"]: f["count"] for f in certificate["found"]}
    assert found["data_subjects"] == 1 and found["agent_tasks"] == 2 and found["artifact objects"] == 2
    done = {a["step"]: a for a in certificate["actions"]}
    assert done["data_subjects"]["action"] == "anonymise" and done["audit_events"]["action"] == "keep"
    assert certificate["ledger"]["published"]["entries"] >= 2
    assert holds_secret(raw_json.decode()) is None and holds_secret(raw_html.decode()) is None
    assert "<h1>Certificate of erasure" in raw_html.decode()
    assert json.loads(storage.get(LEDGER_KEY))["entries"]


def test_erasing_again_finds_nothing_and_says_so(store_engine: Engine, storage: Storage,
                                                 no_holds: PolicySet) -> None:
    seed(store_engine, storage)
    first = erase_subject(REF, engine=store_engine, storage=storage, policies=no_holds)
    before = counts(store_engine)
    second = erase_subject(REF, engine=store_engine, storage=storage, policies=no_holds)
    assert second.request_ref != first.request_ref and not second.resumed
    assert second.nothing_found and second.certificate is not None
    assert second.certificate["result"] == "no data found"
    assert any("already lists this subject" in note for note in second.certificate["notes"])
    assert [a["step"] for a in second.certificate["actions"]] == ["audit_events"]
    after = counts(store_engine)
    assert after == {**before, "gdpr_requests": before["gdpr_requests"] + 1}


def test_a_dry_run_changes_nothing(store_engine: Engine, storage: Storage, no_holds: PolicySet) -> None:
    seed(store_engine, storage)
    before, objects = counts(store_engine), sorted(i.key for i in storage.list(""))
    with session_scope(store_engine) as session:
        events = session.scalar(select(func.count()).select_from(AuditEvent))
    outcome = erase_subject(REF, dry_run=True, engine=store_engine, storage=storage, policies=no_holds)
    assert outcome.request_ref is None and outcome.certificate is None
    assert {s.name: s.count for s in outcome.plan}["agent_tasks"] == 2
    assert counts(store_engine) == before and sorted(i.key for i in storage.list("")) == objects
    with session_scope(store_engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == events


@pytest.mark.parametrize("identifier", ["x' OR 1=1 --", "' OR ''='", "%_%_%_%", "CRM-1001' --", "1 OR 1=1",
                                        "ann.lee@example.org'; DELETE FROM data_subjects; --"])
def test_injection_attempts_are_literals_that_match_nobody(store_engine: Engine, storage: Storage,
                                                           no_holds: PolicySet, identifier: str) -> None:
    seed(store_engine, storage)
    before = counts(store_engine)
    outcome = erase_subject(identifier, engine=store_engine, storage=storage, policies=no_holds)
    assert outcome.nothing_found and outcome.certificate["result"] == "no data found"  # type: ignore[index]
    assert counts(store_engine) == {**before, "gdpr_requests": before["gdpr_requests"] + 1}
    assert REF.lower() in all_text(store_engine)


def test_a_legal_hold_keeps_the_held_rows_with_its_reason(store_engine: Engine, storage: Storage,
                                                          tmp_path: Path) -> None:
    ids = seed(store_engine, storage)
    policies = policies_with(tmp_path, f"[{{subject: {REF}, reason: litigation 2026-17}}]")
    outcome = erase_subject(REF, engine=store_engine, storage=storage, policies=policies)
    kept = next(a for a in outcome.certificate["actions"] if a["step"] == "agent_tasks")  # type: ignore[index]
    assert kept["action"] == "keep" and "litigation 2026-17" in kept["reason"]
    with session_scope(store_engine) as session:
        assert session.scalar(select(func.count()).select_from(AgentTask)
                              .where(AgentTask.id.in_(ids["tasks"]))) == 2
        ann = session.get(DataSubject, ids["ann"])
        assert ann is not None and ann.email is None  # the subject row itself is not held


def test_a_failed_step_leaves_a_failed_request_that_the_next_run_resumes(
        store_engine: Engine, storage: Storage, no_holds: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(store_engine, storage)

    def broken(session: Any, ctx: Any) -> dict[str, int]:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setitem(erase_module.STORE_STEPS, "agent_tasks", broken)
    with pytest.raises(RuntimeError):
        erase_subject(REF, engine=store_engine, storage=storage, policies=no_holds)
    with session_scope(store_engine) as session:
        request = session.scalars(select(GdprRequest).where(GdprRequest.kind == RequestKind.erase)).one()
        assert request.status is RequestStatus.failed and "disk is on fire" in (request.error or "")
        assert set(request.summary["steps"]) == {"artifacts", "exports"}
        ref = request.ref
    assert not any(i.key.startswith("evidence/ann/") for i in storage.list("evidence/"))

    monkeypatch.undo()
    resumed = erase_subject(REF, engine=store_engine, storage=storage, policies=no_holds)
    assert resumed.resumed and resumed.request_ref == ref
    # Checked against the store as it is now: the artifacts are gone, so that step is not planned again.
    assert "artifacts" not in resumed.done
    assert resumed.done["agent_tasks"] == {"tasks": 2, "results": 2}
    steps = resumed.certificate["steps"]  # type: ignore[index]
    assert steps["artifacts"]["rows"] == 2 and steps["agent_tasks"]["tasks"] == 2  # both attempts, one certificate
    assert_subject_gone(store_engine, storage, ids)
    with session_scope(store_engine) as session:
        assert session.scalar(select(func.count()).select_from(GdprRequest)
                              .where(GdprRequest.kind == RequestKind.erase)) == 1


def _snapshot(engine: Engine, url: str, tmp_path: Path) -> str:
    """A copy of the store as it is now (a file copy on SQLite, a template copy on PostgreSQL)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        engine.dispose()
        copy = tmp_path / "backup.db"
        shutil.copy2(engine.url.database, copy)  # type: ignore[arg-type]
        return str(copy)
    engine.dispose()
    source = url.rsplit("/", 1)[1]
    name = f"{source}_old_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


def test_restoring_an_older_store_then_reapplying_the_ledger_erases_the_subject_again(
        store_engine: Engine, store_url: str, storage: Storage, no_holds: PolicySet, tmp_path: Path) -> None:
    ids = seed(store_engine, storage)
    backup = _snapshot(store_engine, store_url, tmp_path)
    erase_subject(REF, engine=store_engine, storage=storage, policies=no_holds)
    store_engine.dispose()

    if store_engine.dialect.name == "sqlite":
        live = Path(store_engine.url.database)  # type: ignore[arg-type]
        for suffix in ("-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        shutil.copy2(backup, live)  # the restore: the old file is back
        restored = create_store_engine(store_url)
    else:
        restored = create_store_engine(backup)  # the restore: the old database
    try:
        upgrade(restored)
        key = erasure_key(get_settings())
        with session_scope(restored) as session:
            assert session.scalar(select(func.count()).select_from(ErasureLedgerEntry)) == 0  # older than the erasure
            assert ledger_violations(session, key) == 0  # nothing listed yet: the restore must merge the ledger
            totals = reapply_ledger(session, key, storage=storage, storage_url=get_settings().storage_url,
                                    policies=no_holds)
        assert totals["subjects"] == 1 and totals["ledger_entries_merged"] >= 2
        assert totals["agent_tasks.tasks"] == 2 and totals["artifacts.rows"] == 2
        assert_subject_gone(restored, storage, ids)
        with session_scope(restored) as session:
            assert ledger_violations(session, key) == 0
            assert session.scalars(select(AuditEvent.action).order_by(AuditEvent.id.desc())).first() == \
                "gdpr.ledger.reapplied"
    finally:
        restored.dispose()
        if store_engine.dialect.name != "sqlite":
            drop_database(backup)
