"""The compliance report on SQLite and PostgreSQL: every section, every format, escaping, a broken chain."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from amas.db.models import AuditEvent, Backup, BackupStatus, GdprRequest, RequestKind, RequestStatus
from amas.db.session import session_scope
from amas.retention.apply import survey
from amas.retention.policy import Policy
from amas.retention.report import build_report, render, store
from amas.storage.local import LocalStorage
from tests.integration.test_retention_apply import AS_OF, ago, policies, run, seed

pytestmark = pytest.mark.integration


def add_requests_and_backups(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all([
            GdprRequest(ref="GDPR-OPEN", kind=RequestKind.erase, subject_digest="a" * 64, key_id="k" * 16,
                        actor="dpo", received_at=ago(25), due_at=ago(25) + timedelta(days=30)),
            GdprRequest(ref="GDPR-LATE", kind=RequestKind.export, subject_digest="b" * 64, key_id="k" * 16,
                        actor="dpo", status=RequestStatus.in_progress, received_at=ago(40),
                        due_at=ago(40) + timedelta(days=30)),
            GdprRequest(ref="GDPR-OLD-DONE", kind=RequestKind.erase, subject_digest="c" * 64, key_id="k" * 16,
                        actor="dpo", status=RequestStatus.completed, received_at=ago(200), due_at=ago(170),
                        completed_at=ago(180)),
            Backup(id="bk-1", source="store:test", storage_uri="backups/bk-1", status=BackupStatus.verified,
                   started_at=ago(1.5), finished_at=ago(1.25), verified_at=ago(1), rto_seconds=12.5,
                   verification={"ok": True}),
            Backup(id="bk-0", source="store:test", storage_uri="backups/bk-0", status=BackupStatus.completed,
                   started_at=ago(9), finished_at=ago(8.9)),
        ])


def report_for(engine: Engine, policy_list: list[Policy], storage: LocalStorage, since_days: int = 7):  # type: ignore[no-untyped-def]
    surveys = survey(engine, policy_list, AS_OF, storage=storage)
    return build_report(engine, policy_list, surveys, as_of=AS_OF, since_days=since_days)


def test_the_report_covers_every_section(store_engine: Engine, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    seed(store_engine)
    run(store_engine, storage, categories=["task_results"])
    add_requests_and_backups(store_engine)
    report = report_for(store_engine, policies(), storage)

    inventory = {row.category: row for row in report.inventory}
    results = inventory["task_results"]
    assert (results.items, results.overdue, results.held, results.personal_data) == (3, 0, 2, True)
    tasks = inventory["agent_tasks"]
    assert (tasks.items, tasks.overdue, tasks.max_overdue_days, tasks.oldest_age_days) == (11, 6, 19, 419)
    assert inventory["audit_events"].personal_data is False
    assert "append-only" in inventory["audit_events"].note
    assert [a["applied"]["task_results"] for a in report.actions] == [8]
    assert report.action_totals["task_results"] == 8
    assert [(h["category"], h["scope"], h["held"], h["active"]) for h in report.holds] == [
        ("task_results", "subject", "crm-held", True), ("agent_tasks", "case", "CASE-HOLD", True)]
    requests = {r["ref"]: r for r in report.gdpr_requests}
    assert set(requests) == {"GDPR-OPEN", "GDPR-LATE"}, "old completed requests are outside the period"
    assert (requests["GDPR-OPEN"]["days_left"], requests["GDPR-OPEN"]["overdue"]) == (5, False)
    assert (requests["GDPR-LATE"]["days_left"], requests["GDPR-LATE"]["overdue"]) == (-10, True)
    assert report.backups["latest"]["id"] == "bk-1" and report.backups["rpo_hours"] == 30.0
    assert [v["backup"] for v in report.backups["verifications"]] == ["bk-1"]
    assert report.audit_chain == {"ok": True, "checked": 1, "first_bad_id": None, "reason": ""}


def test_every_format_renders_and_the_html_is_self_contained_and_escaped(store_engine: Engine,
                                                                         tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    seed(store_engine)
    hostile = [Policy.model_validate(p.model_dump() | {"legal_holds": [
        {"subject": "<script>alert(1)</script>", "reason": "R&D <b>inquiry</b>"}]}) if p.category == "task_results"
        else p for p in policies()]
    report = report_for(store_engine, hostile, storage)

    page = render(report, "html")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "R&amp;D &lt;b&gt;inquiry&lt;/b&gt;" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page), "no external resources"
    assert page.count("<rect") == 4, "one bar per category with data"

    document = json.loads(render(report, "json"))
    assert document["inventory"][0]["category"] == "task_results"
    assert document["backups"]["summary"] == "no backups recorded"

    rows = list(csv.reader(io.StringIO(render(report, "csv"))))
    assert rows[0] == ["section", "name", "field", "value"]
    assert ["inventory", "agent_tasks", "overdue", "8"] in rows, "the hold names no real subject: only the case hold is left"
    assert ["legal_hold", "task_results#1", "held", "<script>alert(1)</script>"] in rows
    assert ["audit_chain", "", "ok", "True"] in rows

    markdown = render(report, "markdown")
    assert "| agent_tasks | table agent_tasks (finished_at) | 11 | 419 | 400 | yes | 8 (up to 19 days late) |" in markdown
    assert "no backups recorded." in markdown and "No retention runs in the period." in markdown

    stored = store(storage, report, name="test")
    assert sorted(stored) == ["csv", "html", "json"]
    assert stored["html"]["key"] == "reports/compliance/test.html"
    assert storage.get(stored["html"]["key"]).decode() == page
    assert hashlib.sha256(storage.get(stored["csv"]["key"])).hexdigest() == stored["csv"]["sha256"]


def test_a_broken_audit_chain_is_reported_with_the_first_bad_event(store_engine: Engine, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    seed(store_engine)
    run(store_engine, storage, categories=["task_results"])
    with session_scope(store_engine) as session:
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).one()
        forged = AuditEvent(occurred_at=last.occurred_at, actor="mallory", action="retention.apply",
                            entity_type="x", details={}, prev_hash=last.hash, hash="f" * 64)
        session.add(forged)
        session.flush()
        forged_id = forged.id
    report = report_for(store_engine, policies(), storage)
    assert report.audit_chain == {"ok": False, "checked": report.audit_chain["checked"], "first_bad_id": forged_id,
                                  "reason": "hash does not match the event's content"}
    assert report.notes == [f"the audit chain is broken at event {forged_id}: hash does not match the event's content"]
    assert f"BROKEN</span> at event {forged_id}" in render(report, "html")
