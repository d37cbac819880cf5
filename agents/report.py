"""report: one Markdown and one HTML report over earlier agent tasks (a list of ids, or a whole case).

Results are read from the store (the latest ``TaskResult`` of each ``AgentTask``); a task the
store does not know, or knows without a result yet, falls back to ``context.results`` (what the
runner passes in from the same flow run). Every finding of every task is ranked by severity
across agents; failed tasks are listed with their error; each evidence object is listed with its
sha256 and, unless ``verify_evidence`` is off, re-hashed from storage so the report says whether
it still matches.

Findings, summaries and keys come from untrusted inputs (scanned code, web pages, file
metadata): the HTML is rendered by jinja2 with autoescape on, and the Markdown escapes every
character that could start markup (``<``, ``[``, ``*``, backticks, ``|``...), so neither can
smuggle HTML or links into the rendered report.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from amas.db.models import AgentTask, TaskResult, TaskStatus
from amas.db.session import lineage_table_name
from amas.registry import SEVERITY_ORDER, AgentContext, AgentInputError, AgentResult, Finding, Severity, worst_severity
from amas.storage import InvalidKey, ObjectNotFound

CHUNK = 1024 * 1024
SEVERITIES_DESC = sorted(Severity, key=SEVERITY_ORDER.__getitem__, reverse=True)

EvidenceCheck = Literal["ok", "mismatch", "missing", "not checked"]


class ReportInput(BaseModel):
    title: str = Field("AMAS report", min_length=1, max_length=200, description="Heading of the report.")
    task_ids: list[str] = Field(default_factory=list, description="UUIDs of the agent tasks to report on (or give case_id instead).")
    case_id: str | None = Field(None, max_length=64, description="Report on every task of this case (or give task_ids instead).")
    verify_evidence: bool = Field(True, description="Re-hash every evidence object in storage and say whether it still matches its recorded sha256.")

    @field_validator("task_ids")
    @classmethod
    def _uuids(cls, values: list[str]) -> list[str]:
        ids: list[str] = []
        for value in values:
            try:
                normalised = str(uuid.UUID(value.strip()))
            except ValueError:
                raise ValueError(f"{value!r} is not a task UUID") from None
            if normalised not in ids:
                ids.append(normalised)
        return ids

    @field_validator("case_id")
    @classmethod
    def _blank_case_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @model_validator(mode="after")
    def _exactly_one_selection(self) -> ReportInput:
        if bool(self.task_ids) == bool(self.case_id):
            given = "both" if self.task_ids else "neither"
            raise ValueError(f"give exactly one of task_ids (a list of task UUIDs) or case_id (a case name); {given} "
                             "was given")
        return self


class TaskRow(BaseModel):
    task_id: str
    agent: str
    status: str = Field(description="pending, running, completed, failed or cancelled.")
    source: Literal["store", "context", "none"] = Field(description="Where the result came from.")
    case_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    worst_severity: Severity | None = None
    findings: int = 0
    error: str | None = None
    summary: str | None = None
    llm_summary: str | None = Field(None, description="The model-written summary, when a model was used.")
    llm_model: str | None = None
    llm_reason: str | None = Field(None, description="Why no model was used.")


class RankedFinding(Finding):
    agent: str = Field(description="The agent that reported it ('report' for the report's own).")
    task_id: str


class EvidenceRow(BaseModel):
    task_id: str
    agent: str
    key: str
    sha256: str
    size: int
    media_type: str = "application/octet-stream"
    description: str = ""
    check: EvidenceCheck = Field(description="Whether storage still holds exactly these bytes.")


class ReportOutput(AgentResult):
    title: str
    generated_at: datetime
    case_id: str | None
    tasks: list[TaskRow]
    ranked_findings: list[RankedFinding] = Field(description="The findings of every task, most severe first.")
    evidence_items: list[EvidenceRow] = Field(description="Evidence of every task, with its verification.")
    severity_counts: dict[str, int] = Field(description="Findings per severity, most severe first.")
    failed_tasks: int
    markdown: str = Field(description="The report as Markdown (also stored as report.md).")


@dataclass
class _Task:
    row: TaskRow
    output: dict[str, Any] = field(default_factory=dict)
    result_llm: dict[str, Any] = field(default_factory=dict)


def _duration(started: datetime | None, finished: datetime | None) -> float | None:
    return round((finished - started).total_seconds(), 3) if started and finished else None


def _context_results(context: AgentContext) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for key, output in context.results.items():
        try:
            results[str(uuid.UUID(str(key)))] = output
        except ValueError:
            continue
    return results


def load_tasks(context: AgentContext, *, task_ids: list[str] | None = None, case_id: str | None = None) -> list[_Task]:
    """The selected tasks with their latest result, in the order asked (or creation order for a case)."""
    fallback = _context_results(context)
    with Session(context.engine) as session:
        query = select(AgentTask)
        if task_ids:
            query = query.where(AgentTask.id.in_([uuid.UUID(t) for t in task_ids]))
        else:
            query = query.where(AgentTask.case_id == case_id).order_by(AgentTask.created_at, AgentTask.id)
            if context.task_id is not None:  # the report's own task belongs to the case too
                query = query.where(AgentTask.id != context.task_id)
        stored = {str(t.id): t for t in session.scalars(query)}
        latest: dict[str, TaskResult] = {}
        if stored:
            rows = session.scalars(
                select(TaskResult).where(TaskResult.task_id.in_([t.id for t in stored.values()]))
                .order_by(TaskResult.created_at, TaskResult.id))
            for result in rows:
                latest[str(result.task_id)] = result  # later rows replace earlier ones
        order = task_ids or list(stored)
        missing = [t for t in order if t not in stored and t not in fallback]
        if missing:
            raise AgentInputError(f"task_ids: no task {', '.join(missing)} in the store or in this run's results; "
                                  "give the ids of earlier agent tasks")
        if not order:
            raise AgentInputError(f"case_id: no tasks belong to case {case_id!r}; check the case name")
        return [_task(tid, stored.get(tid), latest.get(tid), fallback.get(tid)) for tid in order]


def _task(task_id: str, task: AgentTask | None, result: TaskResult | None, fallback: dict[str, Any] | None) -> _Task:
    output = (result.output if result is not None and result.output else None) or fallback or {}
    source: Literal["store", "context", "none"] = (
        "store" if result is not None and result.output else "context" if fallback else "none")
    if task is None:
        row = TaskRow(task_id=task_id, agent=str(output.get("agent") or "unknown"), status="completed", source=source)
    else:
        row = TaskRow(task_id=task_id, agent=task.agent, status=str(task.status.value), source=source,
                      case_id=task.case_id, created_at=task.created_at, started_at=task.started_at,
                      finished_at=task.finished_at, duration_seconds=_duration(task.started_at, task.finished_at),
                      error=task.error)
    row.summary = str(output.get("summary") or "") or (result.summary if result is not None else None) or None
    item = _Task(row=row, output=output, result_llm=dict(result.llm or {}) if result is not None else {})
    _fill_llm(item, result.llm_model if result is not None else None)
    return item


def _fill_llm(item: _Task, llm_model: str | None) -> None:
    notes = [n for n in (item.output.get("llm"), item.result_llm) if isinstance(n, dict)]
    used = next((n for n in notes if n.get("used") and n.get("text")), None)
    if used is not None:
        item.row.llm_summary = str(used["text"])
        provider, model = used.get("provider"), used.get("model") or llm_model
        item.row.llm_model = "/".join(str(p) for p in (provider, model) if p) or None
    else:
        item.row.llm_reason = next((str(n["reason"]) for n in notes if n.get("reason")), "no result")


def _finding(raw: Any) -> Finding:
    """A finding from stored JSON; an unknown severity counts as info rather than being dropped."""
    raw = raw if isinstance(raw, dict) else {"title": str(raw)}
    severity = raw.get("severity")
    return Finding(severity=severity if severity in SEVERITY_ORDER else Severity.info,
                   title=str(raw.get("title") or "(untitled finding)"), detail=str(raw.get("detail") or ""),
                   location=str(raw["location"]) if raw.get("location") is not None else None)


def verify_object(context: AgentContext, key: str, sha256: str) -> EvidenceCheck:
    """Hash the stored object in chunks and compare it with the recorded digest."""
    digest = hashlib.sha256()
    try:
        with context.storage.open(key) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except (ObjectNotFound, InvalidKey):
        return "missing"
    return "ok" if digest.hexdigest() == sha256.lower() else "mismatch"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~])")


def md(text: Any) -> str:
    """Untrusted text as inert Markdown on one line: markup characters are backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def code(text: Any) -> str:
    """Text as a Markdown code span (shown literally), or escaped text when it could break out of one."""
    text = " ".join(str(text).split())
    return md(text) if "`" in text or "|" in text or not text else f"`{text}`"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _short(task_id: str) -> str:
    return task_id.split("-", 1)[0]


def render_markdown(out: ReportOutput) -> str:
    lines = [f"# {md(out.title)}", ""]
    scope = f"case {code(out.case_id)} · {len(out.tasks)} task(s)" if out.case_id else f"{len(out.tasks)} selected task(s)"
    lines += [f"Generated {_when(out.generated_at)} · {scope}", "", md(out.summary), ""]
    lines += ["| severity | findings |", "|---|---:|"]
    lines += [f"| {sev} | {out.severity_counts[sev]} |" for sev in out.severity_counts]
    lines += ["", "## Tasks", "", "| task | agent | status | duration | worst severity | findings |",
              "|---|---|---|---:|---|---:|"]
    for t in out.tasks:
        lines.append(f"| `{t.task_id}` | {md(t.agent)} | {t.status} | {_seconds(t.duration_seconds)} | "
                     f"{t.worst_severity or '-'} | {t.findings} |")
    failed = [t for t in out.tasks if t.status == TaskStatus.failed]
    if failed:
        lines += ["", "### Failed tasks", ""]
        lines += [f"- `{t.task_id}` {md(t.agent)}: {md(t.error or 'no error recorded')}" for t in failed]
    lines += ["", "## Findings, most severe first", ""]
    if not out.ranked_findings:
        lines.append("No findings.")
    for n, f in enumerate(out.ranked_findings, 1):
        where = f" · at {code(f.location)}" if f.location else ""
        marker = f"{n}. "
        head = f"{marker}**{f.severity.value}** · {md(f.title)} ({md(f.agent)}, task `{_short(f.task_id)}`){where}"
        if f.detail:
            # A trailing backslash is a hard line break; the detail is indented to stay inside the item.
            lines += [head + "\\", " " * len(marker) + md(f.detail)]
        else:
            lines.append(head)
    lines += ["", "## Agent summaries", ""]
    for t in out.tasks:
        lines += [f"### {md(t.agent)} · task `{t.task_id}` · {t.status}", ""]
        if t.summary:
            lines += [md(t.summary), ""]
        else:
            lines += [f"_Failed:_ {md(t.error or 'no error recorded')}" if t.status == TaskStatus.failed
                      else "_No result._", ""]
        if t.llm_summary:
            lines += [f"**Model summary** ({md(t.llm_model or 'model')}): {md(t.llm_summary)}", ""]
        else:
            lines += [f"_No model used_ ({md(t.llm_reason or 'no result')}).", ""]
    lines += ["## Evidence", ""]
    if not out.evidence_items:
        lines.append("No evidence stored.")
    else:
        lines += ["Verify an object with `sha256sum` against the digest below.", "",
                  "| task | agent | key | sha256 | bytes | check |", "|---|---|---|---|---:|---|"]
        lines += [f"| `{_short(e.task_id)}` | {md(e.agent)} | {code(e.key)} | {code(e.sha256)} | {e.size} | {e.check} |"
                  for e in out.evidence_items]
    return "\n".join(lines) + "\n"


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ out.title }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; color: #1d2330; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; width: 100%; }
th, td { border: 1px solid #d5d9e0; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.85em; word-break: break-all; }
.sev { font-weight: 600; padding: 0 0.4rem; border-radius: 0.3rem; }
.critical { background: #7a0010; color: #fff; } .high { background: #d92d20; color: #fff; }
.medium { background: #f79009; } .low { background: #fedf89; } .info { background: #e4e7ec; }
.failed, .mismatch, .missing { color: #b42318; font-weight: 600; }
.muted { color: #667085; } .nowrap { white-space: nowrap; }
</style>
</head>
<body>
<h1>{{ out.title }}</h1>
<p class="muted">Generated {{ when(out.generated_at) }} ·
{% if out.case_id %}case {{ out.case_id }} · {{ out.tasks | length }} task(s){% else %}{{ out.tasks | length }} selected task(s){% endif %}
</p>
<p>{{ out.summary }}</p>
<table class="counts">
<tr>{% for sev, n in out.severity_counts.items() %}<th><span class="sev {{ sev }}">{{ sev }}</span></th>{% endfor %}</tr>
<tr>{% for sev, n in out.severity_counts.items() %}<td>{{ n }}</td>{% endfor %}</tr>
</table>

<h2>Tasks</h2>
<table>
<tr><th>task</th><th>agent</th><th>status</th><th>duration</th><th>worst severity</th><th>findings</th><th>error</th></tr>
{% for t in out.tasks %}
<tr><td class="mono">{{ t.task_id }}</td><td>{{ t.agent }}</td><td class="{{ t.status }}">{{ t.status }}</td>
<td>{{ seconds(t.duration_seconds) }}</td>
<td>{% if t.worst_severity %}<span class="sev {{ t.worst_severity.value }}">{{ t.worst_severity.value }}</span>{% else %}-{% endif %}</td>
<td>{{ t.findings }}</td><td>{{ t.error or "" }}</td></tr>
{% endfor %}
</table>

<h2>Findings, most severe first</h2>
{% if out.ranked_findings %}
<table>
<tr><th>#</th><th>severity</th><th>finding</th><th>agent</th><th>location</th></tr>
{% for f in out.ranked_findings %}
<tr><td>{{ loop.index }}</td><td><span class="sev {{ f.severity.value }}">{{ f.severity.value }}</span></td>
<td><strong>{{ f.title }}</strong>{% if f.detail %}<br>{{ f.detail }}{% endif %}</td>
<td>{{ f.agent }} <span class="mono muted nowrap">{{ short(f.task_id) }}</span></td><td class="mono">{{ f.location or "" }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No findings.</p>{% endif %}

<h2>Agent summaries</h2>
{% for t in out.tasks %}
<section>
<h3>{{ t.agent }} <span class="mono muted">{{ t.task_id }}</span> · <span class="{{ t.status }}">{{ t.status }}</span></h3>
<p>{% if t.summary %}{{ t.summary }}{% elif t.status == "failed" %}<em>Failed:</em> {{ t.error or "no error recorded" }}{% else %}<em>No result.</em>{% endif %}</p>
{% if t.llm_summary %}<p><strong>Model summary</strong> ({{ t.llm_model or "model" }}): {{ t.llm_summary }}</p>
{% else %}<p class="muted"><em>No model used</em> ({{ t.llm_reason or "no result" }}).</p>{% endif %}
</section>
{% endfor %}

<h2>Evidence</h2>
{% if out.evidence_items %}
<p>Verify an object with <code>sha256sum</code> against the digest below.</p>
<table>
<tr><th>task</th><th>agent</th><th>key</th><th>sha256</th><th>bytes</th><th>check</th><th>description</th></tr>
{% for e in out.evidence_items %}
<tr><td class="mono">{{ short(e.task_id) }}</td><td>{{ e.agent }}</td><td class="mono">{{ e.key }}</td>
<td class="mono">{{ e.sha256 }}</td><td>{{ e.size }}</td><td class="{{ e.check | replace(' ', '-') }}">{{ e.check }}</td>
<td>{{ e.description }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No evidence stored.</p>{% endif %}
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENV.from_string(_HTML)


def render_html(out: ReportOutput) -> str:
    return _TEMPLATE.render(out=out, when=_when, seconds=_seconds, short=_short)


class Report:
    name = "report"
    description = "Markdown and HTML report over earlier agent tasks: findings ranked across agents, evidence hashes."
    Input = ReportInput
    Output = ReportOutput

    def run(self, params: ReportInput, context: AgentContext) -> ReportOutput:
        tasks = load_tasks(context, task_ids=params.task_ids, case_id=params.case_id)
        # (task position, order of appearance, finding): the sort keys after severity.
        ranked: list[tuple[int, int, RankedFinding]] = []
        evidence: list[EvidenceRow] = []
        for position, task in enumerate(tasks):
            row, output = task.row, task.output
            found = [_finding(raw) for raw in output.get("findings") or []]
            row.findings = len(found)
            row.worst_severity = worst_severity(f.severity for f in found)
            # A report's findings are the findings of the tasks it covered: repeating them double-counts.
            if row.agent != self.name:
                ranked += [(position, len(ranked) + i, RankedFinding(**f.model_dump(), agent=row.agent,
                                                                     task_id=row.task_id)) for i, f in enumerate(found)]
            own = self._task_finding(row, output)
            if own is not None:
                ranked.append((position, len(ranked), own))
            for raw in output.get("evidence") or []:
                if not isinstance(raw, dict) or not raw.get("key") or not raw.get("sha256"):
                    continue
                key, sha256 = str(raw["key"]), str(raw["sha256"])
                check = verify_object(context, key, sha256) if params.verify_evidence else "not checked"
                evidence.append(EvidenceRow(task_id=row.task_id, agent=row.agent, key=key, sha256=sha256,
                                            size=int(raw.get("size") or 0),
                                            media_type=str(raw.get("media_type") or "application/octet-stream"),
                                            description=str(raw.get("description") or ""), check=check))
                if check in ("mismatch", "missing"):
                    ranked.append((position, len(ranked), self._evidence_finding(row, evidence[-1])))

        ranked.sort(key=lambda item: (-SEVERITY_ORDER[item[2].severity], item[0], item[1]))
        findings = [f for _, _, f in ranked]
        counts = Counter(f.severity for f in findings)
        out = ReportOutput(
            agent=self.name, summary="", title=params.title, generated_at=datetime.now(UTC), case_id=params.case_id,
            tasks=[t.row for t in tasks], ranked_findings=findings,
            findings=[Finding(severity=f.severity, title=f.title, detail=f.detail,
                              location=f"{f.agent} {_short(f.task_id)}" + (f": {f.location}" if f.location else ""))
                      for f in findings],
            evidence_items=evidence, severity_counts={s.value: counts.get(s, 0) for s in SEVERITIES_DESC},
            failed_tasks=sum(1 for t in tasks if t.row.status == TaskStatus.failed), markdown="",
            reads=[lineage_table_name(context.engine, "agent_tasks"), lineage_table_name(context.engine, "task_results")]
            + ([e.key for e in evidence] if params.verify_evidence else []),
        )
        out.summary = self._summary(out)
        out.markdown = render_markdown(out)
        for name, text, media_type, what in (("report.md", out.markdown, "text/markdown", "Markdown"),
                                             ("report.html", render_html(out), "text/html", "HTML")):
            stored = context.put_evidence(name, text.encode("utf-8"), media_type=f"{media_type}; charset=utf-8",
                                          description=f"{what} report: {params.title}")
            out.evidence.append(stored)
            out.writes.append(stored.key)
        return out

    @staticmethod
    def _task_finding(row: TaskRow, output: dict[str, Any]) -> RankedFinding | None:
        if row.status == TaskStatus.failed:
            return RankedFinding(severity=Severity.medium, title=f"Task {_short(row.task_id)} ({row.agent}) failed",
                                 detail=row.error or "no error recorded", agent="report", task_id=row.task_id)
        if output:
            return None
        if row.status == TaskStatus.completed:
            return RankedFinding(severity=Severity.low, title=f"Task {_short(row.task_id)} ({row.agent}) has no result",
                                 detail="The task completed but no result is stored.", agent="report",
                                 task_id=row.task_id)
        return RankedFinding(severity=Severity.info, title=f"Task {_short(row.task_id)} ({row.agent}) is {row.status}",
                             detail="No result yet; run the report again when it has finished.", agent="report",
                             task_id=row.task_id)

    @staticmethod
    def _evidence_finding(row: TaskRow, item: EvidenceRow) -> RankedFinding:
        if item.check == "missing":
            return RankedFinding(severity=Severity.medium, title=f"Evidence {item.key} is missing from storage",
                                 detail=f"Recorded sha256 {item.sha256}; the object cannot be shown or verified.",
                                 location=item.key, agent="report", task_id=row.task_id)
        return RankedFinding(severity=Severity.high, title=f"Evidence {item.key} does not match its recorded sha256",
                             detail=f"Recorded {item.sha256}; the stored bytes hash differently, so the object was "
                                    "changed after the task stored it.", location=item.key, agent="report",
                             task_id=row.task_id)

    @staticmethod
    def _summary(out: ReportOutput) -> str:
        statuses = Counter(t.status for t in out.tasks)
        scope = f"case {out.case_id}" if out.case_id else "the selected tasks"
        parts = [f"{out.title}: {len(out.tasks)} task(s) from {scope} ("
                 + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) + ")."]
        counted = [f"{n} {sev}" for sev, n in out.severity_counts.items() if n]
        parts.append(f"{len(out.ranked_findings)} finding(s)" + (f": {', '.join(counted)}." if counted else "."))
        if out.ranked_findings:
            top = out.ranked_findings[0]
            parts.append(f"Most severe: {top.title} ({top.agent}).")
        if out.evidence_items:
            checks = Counter(e.check for e in out.evidence_items)
            parts.append(f"{len(out.evidence_items)} evidence object(s): "
                         + ", ".join(f"{n} {check}" for check, n in sorted(checks.items())) + ".")
        return " ".join(parts)


AGENT = Report()
