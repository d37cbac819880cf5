"""The report agent over real AgentTask/TaskResult rows in a migrated SQLite store, with real evidence objects."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from markdown_it import MarkdownIt
from pydantic import ValidationError

from agents.report import AGENT, ReportInput, ReportOutput, md
from amas.db.models import AgentTask, TaskResult, TaskStatus
from amas.db.session import session_scope
from amas.registry import AgentContext, AgentInputError, AgentResult, Evidence, Finding, LLMNote

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def stored_evidence(context: AgentContext, task_id: str, name: str, data: bytes) -> Evidence:
    return dataclasses.replace(context, task_id=uuid.UUID(task_id)).put_evidence(
        name, data, media_type="application/json", description=f"{name} of {task_id}")


def make_output(agent: str, summary: str, findings: list[tuple[str, str]], evidence: list[Evidence] = (),
                llm: LLMNote | None = None, **detail: str) -> dict[str, Any]:
    result = AgentResult(agent=agent, summary=summary, evidence=list(evidence), llm=llm or LLMNote(),
                         findings=[Finding(severity=sev, title=title, detail=detail.get(title, ""),
                                           location=f"{agent}:{n}") for n, (sev, title) in enumerate(findings)])
    return result.model_dump(mode="json")


def add_task(context: AgentContext, agent: str, status: TaskStatus, *, output: dict[str, Any] | None = None,
             case_id: str | None = None, error: str | None = None, minute: int = 0, seconds: float = 1.0,
             task_id: str | None = None, llm_model: str | None = None) -> str:
    tid = uuid.UUID(task_id) if task_id else uuid.uuid4()
    created = T0 + timedelta(minutes=minute)
    with session_scope(context.engine) as session:
        session.add(AgentTask(id=tid, agent=agent, status=status, case_id=case_id, error=error, created_at=created,
                              started_at=created, finished_at=created + timedelta(seconds=seconds),
                              parameters={}, actor="test"))
        session.flush()
        if output is not None:
            session.add(TaskResult(task_id=tid, summary=output["summary"], output=output, llm_model=llm_model,
                                   llm=output["llm"], created_at=created + timedelta(seconds=seconds)))
    return str(tid)


def run(context: AgentContext, **params: Any) -> ReportOutput:
    return AGENT.run(ReportInput(**params), context)


@pytest.fixture
def three_tasks(agent_context: AgentContext) -> dict[str, Any]:
    """web_audit (critical, medium, low; a model summary), code_analysis (high, info; no model), forensics failed."""
    web_id, code_id, forensic_id = (str(uuid.uuid4()) for _ in range(3))
    web_ev = stored_evidence(agent_context, web_id, "web_audit.json", b'{"grade": "F"}')
    code_ev = stored_evidence(agent_context, code_id, "code.json", b'{"secrets": 1}')
    web_out = make_output(
        "web_audit", "https://shop.test answered HTTP 200. Grade F.",
        [("medium", "Missing Content-Security-Policy"), ("critical", "Certificate expired 3 days ago"),
         ("low", "Missing Referrer-Policy")], [web_ev],
        LLMNote(used=True, reason="ok", provider="openai", model="gpt-test", text="The shop's certificate expired."))
    code_out = make_output("code_analysis", "12 files, 1 secret.",
                           [("info", "3 functions above complexity 10"), ("high", "Hard-coded AWS access key")],
                           [code_ev], LLMNote(reason="no model configured"))
    add_task(agent_context, "web_audit", TaskStatus.completed, output=web_out, task_id=web_id, seconds=2.5,
             llm_model="gpt-test")
    add_task(agent_context, "code_analysis", TaskStatus.completed, output=code_out, task_id=code_id, minute=1,
             seconds=75)
    add_task(agent_context, "forensics", TaskStatus.failed, task_id=forensic_id, minute=2,
             error="path: /evidence/disk.img does not exist")
    return {"ids": [web_id, code_id, forensic_id], "evidence": [web_ev, code_ev]}


def test_findings_are_ranked_across_agents(agent_context: AgentContext, three_tasks: dict[str, Any]) -> None:
    web_id, code_id, forensic_id = three_tasks["ids"]
    out = run(agent_context, task_ids=three_tasks["ids"], title="Shop audit")

    assert [(f.severity.value, f.agent, f.title) for f in out.ranked_findings] == [
        ("critical", "web_audit", "Certificate expired 3 days ago"),
        ("high", "code_analysis", "Hard-coded AWS access key"),
        ("medium", "web_audit", "Missing Content-Security-Policy"),
        ("medium", "report", f"Task {forensic_id[:8]} (forensics) failed"),
        ("low", "web_audit", "Missing Referrer-Policy"),
        ("info", "code_analysis", "3 functions above complexity 10"),
    ]
    assert out.severity_counts == {"critical": 1, "high": 1, "medium": 2, "low": 1, "info": 1}
    assert [f.severity for f in out.findings] == [f.severity for f in out.ranked_findings]
    assert out.findings[0].location == f"web_audit {web_id[:8]}: web_audit:1"
    assert out.failed_tasks == 1

    rows = {t.task_id: t for t in out.tasks}
    assert [t.task_id for t in out.tasks] == three_tasks["ids"]  # the order asked for
    assert (rows[web_id].agent, rows[web_id].status, rows[web_id].duration_seconds) == ("web_audit", "completed", 2.5)
    assert (rows[web_id].worst_severity, rows[web_id].findings, rows[web_id].source) == ("critical", 3, "store")
    assert (rows[code_id].worst_severity, rows[code_id].duration_seconds) == ("high", 75.0)
    assert (rows[forensic_id].status, rows[forensic_id].error) == ("failed", "path: /evidence/disk.img does not exist")
    assert (rows[forensic_id].worst_severity, rows[forensic_id].source) == (None, "none")
    assert (rows[web_id].llm_summary, rows[web_id].llm_model) == ("The shop's certificate expired.", "openai/gpt-test")
    assert (rows[code_id].llm_summary, rows[code_id].llm_reason) == (None, "no model configured")
    assert out.summary.startswith("Shop audit: 3 task(s) from the selected tasks (2 completed, 1 failed). 6 finding(s)")


def test_markdown_report_contents(agent_context: AgentContext, three_tasks: dict[str, Any]) -> None:
    web_id, code_id, forensic_id = three_tasks["ids"]
    out = run(agent_context, task_ids=three_tasks["ids"], title="Shop audit")
    text = out.markdown

    assert text.startswith("# Shop audit\n\nGenerated ")
    assert f"| `{web_id}` | web\\_audit | completed | 2.5 s | critical | 3 |" in text
    assert f"| `{code_id}` | code\\_analysis | completed | 1 min 15 s | high | 2 |" in text
    assert f"| `{forensic_id}` | forensics | failed | 1.0 s | - | 0 |" in text
    assert f"- `{forensic_id}` forensics: path: /evidence/disk.img does not exist" in text
    ranked = ["Certificate expired 3 days ago", "Hard-coded AWS access key", "Missing Content-Security-Policy",
              f"Task {forensic_id[:8]} (forensics) failed", "Missing Referrer-Policy", "3 functions above complexity 10"]
    positions = [text.index(title) for title in ranked]
    assert positions == sorted(positions)
    assert "**Model summary** (openai/gpt-test): The shop's certificate expired." in text
    assert "_No model used_ (no model configured)." in text
    for evidence in three_tasks["evidence"]:
        assert f"`{evidence.sha256}` | {evidence.size} | ok |" in text
    assert "| critical | 1 |" in text and "| medium | 2 |" in text
    assert "_Failed:_ path: /evidence/disk.img does not exist" in text
    assert "at `web_audit:1`" in text


def test_reports_are_stored_as_evidence(agent_context: AgentContext, three_tasks: dict[str, Any]) -> None:
    out = run(agent_context, task_ids=three_tasks["ids"], title="Shop audit")

    md_ev, html_ev = out.evidence
    prefix = f"evidence/{agent_context.task_id}"
    assert (md_ev.key, html_ev.key) == (f"{prefix}/report.md", f"{prefix}/report.html")
    assert out.writes == [md_ev.key, html_ev.key]
    assert agent_context.storage.get(md_ev.key) == out.markdown.encode()
    for ev in out.evidence:
        data = agent_context.storage.get(ev.key)
        assert ev.sha256 == hashlib.sha256(data).hexdigest() and ev.size == len(data)
    html = agent_context.storage.get(html_ev.key).decode()
    assert html.startswith("<!doctype html>")
    assert "<title>Shop audit</title>" in html
    for evidence in three_tasks["evidence"]:
        assert evidence.sha256 in html and evidence.key in html
    assert "path: /evidence/disk.img does not exist" in html
    assert [e.check for e in out.evidence_items] == ["ok", "ok"]
    assert out.reads == ["agent_tasks", "task_results"] + [e.key for e in three_tasks["evidence"]]


def test_untrusted_text_is_escaped_in_html_and_markdown(agent_context: AgentContext) -> None:
    hostile = "<script>alert('x')</script>"
    link = "[click me](javascript:alert(1)) | *bold* `code`"
    output = make_output("web_audit", f"Page said {hostile}", [("high", hostile)], **{hostile: link})
    task_id = add_task(agent_context, "web_audit", TaskStatus.completed, output=output)
    out = run(agent_context, task_ids=[task_id], title="<b>title</b>")

    html = agent_context.storage.get(out.evidence[1].key).decode()
    assert "<script" not in html and "<b>title" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;title&lt;/b&gt;" in html

    assert "\\<script\\>" in out.markdown
    rendered = MarkdownIt("commonmark").enable("table").render(out.markdown)  # raw HTML is allowed in this preset
    assert "<script" not in rendered and "<b>" not in rendered
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in rendered
    assert 'href="javascript' not in rendered
    assert "<em>bold</em>" not in rendered and "<code>code</code>" not in rendered


def test_case_reports_every_task_of_the_case_but_not_itself(agent_context: AgentContext) -> None:
    own_id = str(agent_context.task_id)
    first = add_task(agent_context, "data_analysis", TaskStatus.completed, case_id="case-7", minute=5,
                     output=make_output("data_analysis", "1000 rows.", [("low", "3 outliers in amount")]))
    second = add_task(agent_context, "pii_classifier", TaskStatus.completed, case_id="case-7", minute=9,
                      output=make_output("pii_classifier", "2 PII columns.", [("high", "email column unmasked")]))
    earlier_report = add_task(agent_context, "report", TaskStatus.completed, case_id="case-7", minute=10,
                              output=make_output("report", "Earlier.", [("high", "email column unmasked")]))
    add_task(agent_context, "report", TaskStatus.running, case_id="case-7", minute=11, task_id=own_id)
    add_task(agent_context, "forensics", TaskStatus.completed, case_id="case-8", minute=1,
             output=make_output("forensics", "1 file.", [("critical", "other case")]))

    out = run(agent_context, case_id="case-7", title="Case 7")

    assert [t.task_id for t in out.tasks] == [first, second, earlier_report]  # creation order, without itself
    assert {t.case_id for t in out.tasks} == {"case-7"}
    # The earlier report's findings repeat its tasks' findings: listed, not counted again.
    assert [(f.agent, f.title) for f in out.ranked_findings] == [
        ("pii_classifier", "email column unmasked"), ("data_analysis", "3 outliers in amount")]
    assert out.severity_counts["high"] == 1 and out.severity_counts["critical"] == 0
    assert out.tasks[2].findings == 1
    assert "case `case-7` · 3 task(s)" in out.markdown


def test_latest_result_of_a_task_is_used(agent_context: AgentContext) -> None:
    task_id = add_task(agent_context, "data_analysis", TaskStatus.completed,
                       output=make_output("data_analysis", "first run", [("low", "old finding")]))
    with session_scope(agent_context.engine) as session:
        newer = make_output("data_analysis", "second run", [("medium", "new finding")])
        session.add(TaskResult(task_id=uuid.UUID(task_id), summary="second run", output=newer, llm={},
                               created_at=T0 + timedelta(hours=1)))

    out = run(agent_context, task_ids=[task_id])

    assert out.tasks[0].summary == "second run"
    assert [f.title for f in out.ranked_findings] == ["new finding"]


def test_context_results_fill_in_for_tasks_the_store_lacks(agent_context: AgentContext) -> None:
    only_in_run = str(uuid.uuid4())
    running = add_task(agent_context, "forensics", TaskStatus.running)
    context = dataclasses.replace(agent_context, results={
        only_in_run: make_output("code_analysis", "from this run", [("high", "secret in config.py")]),
        running: make_output("forensics", "hashed 2 files", [("info", "2 files hashed")]),
    })

    out = run(context, task_ids=[only_in_run, running])

    assert [(t.agent, t.status, t.source) for t in out.tasks] == [
        ("code_analysis", "completed", "context"), ("forensics", "running", "context")]
    assert [f.title for f in out.ranked_findings] == ["secret in config.py", "2 files hashed"]
    assert out.tasks[0].llm_reason == "no model configured"


def test_tasks_without_results_are_reported(agent_context: AgentContext) -> None:
    pending = add_task(agent_context, "forensics", TaskStatus.pending)
    lost = add_task(agent_context, "code_analysis", TaskStatus.completed)

    out = run(agent_context, task_ids=[pending, lost])

    assert [(f.severity.value, f.title) for f in out.ranked_findings] == [
        ("low", f"Task {lost[:8]} (code_analysis) has no result"),
        ("info", f"Task {pending[:8]} (forensics) is pending"),
    ]
    assert "_No result._" in out.markdown and "_No model used_ (no result)." in out.markdown


def test_tampered_and_missing_evidence_is_flagged(agent_context: AgentContext) -> None:
    task_id = str(uuid.uuid4())
    kept = stored_evidence(agent_context, task_id, "kept.json", b"{}")
    changed = stored_evidence(agent_context, task_id, "changed.json", b'{"rows": 10}')
    gone = stored_evidence(agent_context, task_id, "gone.json", b'{"rows": 3}')
    add_task(agent_context, "data_analysis", TaskStatus.completed, task_id=task_id,
             output=make_output("data_analysis", "ok", [], [kept, changed, gone]))
    agent_context.storage.put(changed.key, b'{"rows": 11}')
    agent_context.storage.delete(gone.key)

    out = run(agent_context, task_ids=[task_id])

    assert [(e.key, e.check) for e in out.evidence_items] == [(kept.key, "ok"), (changed.key, "mismatch"),
                                                              (gone.key, "missing")]
    assert [(f.severity.value, f.title) for f in out.ranked_findings] == [
        ("high", f"Evidence {changed.key} does not match its recorded sha256"),
        ("medium", f"Evidence {gone.key} is missing from storage"),
    ]
    unchecked = run(agent_context, task_ids=[task_id], verify_evidence=False)
    assert {e.check for e in unchecked.evidence_items} == {"not checked"}
    assert unchecked.ranked_findings == []


def test_unknown_task_ids_name_the_field(agent_context: AgentContext, three_tasks: dict[str, Any]) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(AgentInputError) as caught:
        run(agent_context, task_ids=[three_tasks["ids"][0], unknown])
    assert str(caught.value) == (f"task_ids: no task {unknown} in the store or in this run's results; "
                                 "give the ids of earlier agent tasks")


def test_case_without_tasks_names_the_field(agent_context: AgentContext) -> None:
    with pytest.raises(AgentInputError, match=r"^case_id: no tasks belong to case 'nope'"):
        run(agent_context, case_id="nope")


@pytest.mark.parametrize(("params", "message"), [
    ({}, "give exactly one of task_ids (a list of task UUIDs) or case_id (a case name); neither was given"),
    ({"case_id": "   "}, "neither was given"),
    ({"task_ids": [str(uuid.uuid4())], "case_id": "c1"}, "both was given"),
])
def test_exactly_one_selection_is_required(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ReportInput(**params)
    assert message in str(caught.value)


def test_task_ids_must_be_uuids() -> None:
    with pytest.raises(ValidationError) as caught:
        ReportInput(task_ids=["abc"])
    [error] = caught.value.errors()
    assert error["loc"] == ("task_ids",)
    assert "'abc' is not a task UUID" in error["msg"]
    same = str(uuid.uuid4())
    assert ReportInput(task_ids=[same.upper(), same]).task_ids == [same]


def test_markdown_escape() -> None:
    assert md("a|b <i>x</i>\n*y* [l](u) `c` _u_ & ~s~ \\") == (
        "a\\|b \\<i\\>x\\</i\\> \\*y\\* \\[l\\](u) \\`c\\` \\_u\\_ \\& \\~s\\~ \\\\")
