"""The compliance report: what is kept, what is overdue, what was done, and whether the evidence holds.

``build_report`` gathers it (read-only) from the store, the policies, Prefect and storage;
``render`` turns it into JSON, CSV (long form: section, name, field, value), Markdown (the
Prefect artifact) or a self-contained HTML page with an SVG chart of data age per category.
Everything shown in HTML goes through ``html.escape``.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from amas.db.audit import verify_chain
from amas.db.models import Backup, BackupStatus, Base, GdprRequest, RequestStatus, RetentionRun
from amas.db.session import session_scope
from amas.retention.links import subject_links
from amas.retention.plan import days
from amas.retention.policy import APPEND_ONLY_TABLES, Policy
from amas.retention.query import CategoryCounts
from amas.storage.base import Storage

FORMATS = ("html", "csv", "json", "markdown")


@dataclass
class InventoryRow:
    category: str
    kind: str
    location: str
    action: str
    legal_basis: str
    personal_data: bool
    max_age_days: int
    items: int | None
    oldest: str | None
    oldest_age_days: int | None
    overdue: int | None
    held: int | None
    max_overdue_days: int | None
    note: str = ""


@dataclass
class ComplianceReport:
    generated_at: str
    as_of: str
    since: str
    period_days: int
    inventory: list[InventoryRow]
    actions: list[dict[str, Any]]
    action_totals: dict[str, int]
    holds: list[dict[str, Any]]
    gdpr_requests: list[dict[str, Any]]
    backups: dict[str, Any]
    audit_chain: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def personal_data(policy: Policy) -> bool:
    """The policy says; otherwise a table holds personal data when its rows link to a data subject."""
    if policy.personal_data is not None:
        return policy.personal_data
    if policy.kind == "table" and policy.table:
        return bool(subject_links(Base.metadata.tables[policy.table]))
    return False


def _location(policy: Policy) -> str:
    if policy.kind == "table":
        return f"table {policy.table} ({policy.age_field})"
    if policy.kind == "storage":
        return f"storage {policy.prefix}"
    return {"prefect_flow_runs": "Prefect flow runs (start time)", "prefect_artifacts": "Prefect artifacts (created)"}[
        policy.kind]


def _inventory(policies: Sequence[Policy], surveys: Sequence[CategoryCounts], as_of: datetime) -> list[InventoryRow]:
    found = []
    for policy, counts in zip(policies, surveys, strict=True):
        unknown = counts.error is not None
        note = f"not surveyed: {counts.error}" if unknown else ""
        if policy.table in APPEND_ONLY_TABLES and policy.action == "archive":
            note = "append-only: archiving exports segments of the chain and deletes nothing"
        found.append(InventoryRow(
            category=policy.category, kind=policy.kind, location=_location(policy), action=policy.action
            + (f" ({policy.strategy})" if policy.strategy else ""), legal_basis=policy.legal_basis,
            personal_data=personal_data(policy), max_age_days=policy.max_age_days,
            items=None if unknown else counts.total, oldest=_iso(counts.oldest),
            oldest_age_days=None if counts.oldest is None else int((as_of - counts.oldest).total_seconds() // 86400),
            overdue=None if unknown else counts.act, held=None if unknown else counts.held,
            max_overdue_days=counts.max_overdue_days, note=note,
        ))
    return found


def _actions(engine: Engine, since: datetime) -> tuple[list[dict[str, Any]], dict[str, int]]:
    runs, totals = [], {}
    with session_scope(engine) as session:
        for run in session.scalars(select(RetentionRun).where(RetentionRun.started_at >= since)
                                   .order_by(RetentionRun.started_at)):
            categories = (run.progress or {}).get("categories", {})
            applied = {name: int(p.get("applied", 0)) for name, p in categories.items()}
            for name, n in applied.items():
                totals[name] = totals.get(name, 0) + n
            runs.append({"run_id": str(run.id), "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
                         "status": run.status.value, "actor": run.actor, "as_of": _iso(run.as_of),
                         "applied": applied, "error": run.error})
    return runs, totals


def _holds(policies: Sequence[Policy], as_of: datetime) -> list[dict[str, Any]]:
    day = as_of.date()
    return [{"category": p.category, "scope": h.scope, "held": h.subject or h.case or p.category, "reason": h.reason,
             "until": h.until.isoformat() if h.until else None, "active": h.active_on(day)}
            for p in policies for h in p.legal_holds]


def _gdpr(engine: Engine, since: datetime, as_of: datetime) -> list[dict[str, Any]]:
    open_states = (RequestStatus.received, RequestStatus.in_progress)
    with session_scope(engine) as session:
        requests = session.scalars(select(GdprRequest).where(
            (GdprRequest.status.in_(open_states)) | (GdprRequest.received_at >= since)
            | (GdprRequest.completed_at >= since)).order_by(GdprRequest.due_at))
        found = []
        for r in requests:
            is_open = r.status in open_states
            left = (r.due_at - as_of).total_seconds() / 86400
            found.append({"ref": r.ref, "kind": r.kind.value, "status": r.status.value,
                          "received_at": _iso(r.received_at), "due_at": _iso(r.due_at),
                          "completed_at": _iso(r.completed_at),
                          "days_left": int(left // 1) if is_open else None,
                          "overdue": (is_open and left < 0) or bool(r.completed_at and r.completed_at > r.due_at),
                          "certificate": r.certificate_uri})
    return found


def _backups(engine: Engine, as_of: datetime) -> dict[str, Any]:
    """Backup freshness: RPO is the age of the newest *verified* backup (one never restored does not count)."""
    good = (BackupStatus.completed, BackupStatus.verified, BackupStatus.unverified)
    with session_scope(engine) as session:
        latest = session.scalars(select(Backup).where(Backup.status.in_(good), Backup.finished_at.is_not(None))
                                 .order_by(Backup.finished_at.desc()).limit(1)).first()
        verified = session.scalars(select(Backup).where(Backup.status == BackupStatus.verified,
                                                        Backup.finished_at.is_not(None))
                                   .order_by(Backup.finished_at.desc()).limit(1)).first()
        verifications = session.scalars(select(Backup).where(Backup.verified_at.is_not(None))
                                        .order_by(Backup.verified_at.desc()).limit(10)).all()
        total = int(session.scalar(select(func.count()).select_from(Backup)) or 0)
        history = [{"backup": b.id, "verified_at": _iso(b.verified_at), "status": b.status.value,
                    "rto_seconds": b.rto_seconds,
                    "verdict": (b.verification or {}).get("summary") or (b.verification or {}).get("ok")}
                   for b in verifications]
    if latest is None or latest.finished_at is None:
        return {"recorded": total, "latest": None, "latest_verified": None, "rpo_hours": None,
                "verifications": history,
                "summary": "no backups recorded" if total == 0 else "no completed backup recorded"}
    shown = {"id": latest.id, "finished_at": _iso(latest.finished_at), "status": latest.status.value,
             "source": latest.source}
    if verified is None or verified.finished_at is None:
        return {"recorded": total, "latest": shown, "latest_verified": None, "rpo_hours": None,
                "verifications": history,
                "summary": f"no verified backup: the latest, {latest.id}, is {latest.status.value}"}
    age = (as_of - verified.finished_at).total_seconds() / 3600
    summary = f"newest verified backup {verified.id} finished {age:.1f} hours before the report"
    if latest.id != verified.id:
        summary += f"; the latest, {latest.id}, is {latest.status.value}"
    return {"recorded": total, "latest": shown, "latest_verified": verified.id, "rpo_hours": round(age, 1),
            "verifications": history, "summary": summary}


def _chain(engine: Engine) -> dict[str, Any]:
    with session_scope(engine) as session:
        verdict = verify_chain(session)
    return {"ok": verdict.ok, "checked": verdict.checked, "first_bad_id": verdict.first_bad_id,
            "reason": verdict.reason}


def build_report(engine: Engine, policies: Sequence[Policy], surveys: Sequence[CategoryCounts], *, as_of: datetime,
                 since_days: int) -> ComplianceReport:
    """Gather the report; ``surveys`` are ``amas.retention.apply.survey`` results for ``policies`` at ``as_of``."""
    since = as_of - timedelta(days=since_days)
    actions, totals = _actions(engine, since)
    backups = _backups(engine, as_of)
    chain = _chain(engine)
    notes = []
    if not chain["ok"]:
        notes.append(f"the audit chain is broken at event {chain['first_bad_id']}: {chain['reason']}")
    return ComplianceReport(
        generated_at=_iso(datetime.now(UTC)) or "", as_of=_iso(as_of) or "", since=_iso(since) or "",
        period_days=since_days, inventory=_inventory(policies, surveys, as_of), actions=actions,
        action_totals=totals, holds=_holds(policies, as_of), gdpr_requests=_gdpr(engine, since, as_of),
        backups=backups, audit_chain=chain, notes=notes,
    )


def render(report: ComplianceReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}; formats: {', '.join(FORMATS)}")


def _flat(section: str, name: str, record: dict[str, Any]) -> list[list[str]]:
    return [[section, name, key, "" if value is None else json.dumps(value) if isinstance(value, dict | list)
             else str(value)] for key, value in record.items()]


def render_csv(report: ComplianceReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "field", "value"])
    for key in ("generated_at", "as_of", "since", "period_days"):
        writer.writerow(["report", "", key, getattr(report, key)])
    for row in report.inventory:
        writer.writerows(_flat("inventory", row.category, asdict(row)))
    for run in report.actions:
        writer.writerows(_flat("retention_run", run["run_id"], run))
    for name, total in report.action_totals.items():
        writer.writerow(["action_total", name, "applied", total])
    for i, hold in enumerate(report.holds):
        writer.writerows(_flat("legal_hold", f"{hold['category']}#{i + 1}", hold))
    for request in report.gdpr_requests:
        writer.writerows(_flat("gdpr_request", request["ref"], request))
    writer.writerows(_flat("backups", "", {k: v for k, v in report.backups.items() if k != "verifications"}))
    for v in report.backups["verifications"]:
        writer.writerows(_flat("restore_verification", v["backup"], v))
    writer.writerows(_flat("audit_chain", "", report.audit_chain))
    return out.getvalue()


def _events(n: int) -> str:
    return "1 event" if n == 1 else f"{n:,} events"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _overdue_text(row: InventoryRow) -> str:
    if row.overdue is None:
        return "?"
    if not row.overdue:
        return "none"
    return f"{row.overdue:,} (up to {days(row.max_overdue_days or 0)} late)"


def render_markdown(report: ComplianceReport) -> str:
    chain = report.audit_chain
    lines = [
        f"# Compliance report, {report.as_of[:10]}",
        "",
        f"Period: the last {days(report.period_days)} (since {report.since[:16].replace('T', ' ')} UTC). "
        f"Audit chain: **{'verifies' if chain['ok'] else 'BROKEN'}** ({_events(chain['checked'])} checked"
        + ("" if chain["ok"] else f"; first bad event {chain['first_bad_id']}: {chain['reason']}") + ").",
        "",
        "## Inventory",
        "",
        "| category | where | items | oldest (days) | limit (days) | personal data | overdue | held | action |",
        "|---|---|---:|---:|---:|---|---|---:|---|",
    ]
    for row in report.inventory:
        lines.append(f"| {row.category} | {row.location} | {_n(row.items)} | {_n(row.oldest_age_days)} | "
                     f"{row.max_age_days:,} | {_yes(row.personal_data)} | {_overdue_text(row)} | {_n(row.held)} | "
                     f"{row.action} |")
    notes = [f"- {row.category}: {row.note}" for row in report.inventory if row.note]
    if notes:
        lines += ["", *notes]
    lines += ["", "## Actions in the period", ""]
    if report.actions:
        lines += ["| run | started | status | actor | rows changed |", "|---|---|---|---|---|"]
        for run in report.actions:
            changed = ", ".join(f"{k} {v:,}" for k, v in run["applied"].items() if v) or "none"
            lines.append(f"| {run['run_id'][:8]} | {run['started_at'][:16]} | {run['status']} | {run['actor']} | "
                         f"{changed} |")
        totals = ", ".join(f"{k} {v:,}" for k, v in report.action_totals.items() if v) or "nothing"
        lines += ["", f"Total: {totals}."]
    else:
        lines.append("No retention runs in the period.")
    lines += ["", "## Legal holds", ""]
    if report.holds:
        lines += ["| category | on | reason | until | active |", "|---|---|---|---|---|"]
        lines += [f"| {h['category']} | {h['scope']} {h['held']} | {h['reason']} | {h['until'] or 'removed'} | "
                  f"{_yes(h['active'])} |" for h in report.holds]
    else:
        lines.append("No legal holds.")
    lines += ["", "## GDPR requests", ""]
    if report.gdpr_requests:
        lines += ["| request | kind | status | received | due | days left | overdue |", "|---|---|---|---|---|---:|---|"]
        lines += [f"| {r['ref']} | {r['kind']} | {r['status']} | {r['received_at'][:10]} | {r['due_at'][:10]} | "
                  f"{'' if r['days_left'] is None else r['days_left']} | {_yes(r['overdue'])} |"
                  for r in report.gdpr_requests]
    else:
        lines.append("No open requests and none received or completed in the period.")
    backups = report.backups
    lines += ["", "## Backups", "", backups["summary"] + "."]
    if backups["verifications"]:
        lines += ["", "| backup | verified | status | RTO (s) |", "|---|---|---|---:|"]
        lines += [f"| {v['backup']} | {v['verified_at'][:16]} | {v['status']} | "
                  f"{'' if v['rto_seconds'] is None else round(v['rto_seconds'], 1)} |" for v in backups["verifications"]]
    elif backups["recorded"]:
        lines += ["", "No restore verification recorded."]
    return "\n".join(lines) + "\n"


CHART_WIDTH, BAR_HEIGHT, LABEL_WIDTH = 720, 22, 170


def age_chart(rows: Sequence[InventoryRow]) -> str:
    """Horizontal bars: each category's oldest item as a share of its limit (the dashed line), red past it.

    Limits differ by years between categories (30 days to 7 years), so one day-scale would
    flatten most bars; each bar is drawn against its own limit and labelled in days.
    """
    ratios = [r.oldest_age_days / r.max_age_days for r in rows if r.oldest_age_days is not None]
    scale = min(max([1.25, *(x * 1.05 for x in ratios)]), 3.0)
    span = CHART_WIDTH - LABEL_WIDTH - 150
    limit_x = LABEL_WIDTH + span / scale
    height = BAR_HEIGHT * (len(rows) + 1) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{CHART_WIDTH}" height="{height}" '
             f'viewBox="0 0 {CHART_WIDTH} {height}" aria-label="Age of the oldest item per category, against its limit">']
    for i, row in enumerate(rows):
        y = 8 + i * BAR_HEIGHT
        label = html.escape(row.category)
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end" font-size="12">{label}</text>')
        if row.oldest_age_days is not None:
            age = max(row.oldest_age_days, 0)
            ratio = age / row.max_age_days
            width = span * min(ratio, scale) / scale
            colour = "#c0392b" if age > row.max_age_days else "#2e86c1"
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{BAR_HEIGHT - 8}" '
                         f'fill="{colour}"><title>{label}: oldest {age:,} days, limit {row.max_age_days:,}</title></rect>')
            text = f"{age:,} of {row.max_age_days:,} d" + (" (beyond the scale)" if ratio > scale else "")
        else:
            text = "empty" if row.items == 0 else "not surveyed"
        parts.append(f'<text x="{CHART_WIDTH - 145}" y="{y + 14}" font-size="12">{html.escape(text)}</text>')
    parts.append(f'<line x1="{limit_x:.1f}" x2="{limit_x:.1f}" y1="4" y2="{height - 18}" stroke="#000" '
                 'stroke-width="1.5" stroke-dasharray="4,3"/>')
    parts.append(f'<text x="{LABEL_WIDTH}" y="{height - 4}" font-size="11" fill="#555">bar: age of the oldest item '
                 'against its category\'s limit (dashed line); red: past the limit</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
                   for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;"
         "text-align:left;font-size:14px}th{background:#f3f3f3}.bad{color:#c0392b;font-weight:bold}"
         ".ok{color:#1e8449;font-weight:bold}")


def render_html(report: ComplianceReport) -> str:
    e = html.escape
    chain = report.audit_chain
    verdict = (f'<span class="ok">verifies</span> ({_events(chain["checked"])} checked)' if chain["ok"] else
               f'<span class="bad">BROKEN</span> at event {e(str(chain["first_bad_id"]))}: {e(chain["reason"])}')
    inventory = _table(
        ["category", "where", "items", "oldest (days)", "limit (days)", "personal data", "legal basis", "overdue",
         "held", "action", "note"],
        [[r.category, r.location, _n(r.items), _n(r.oldest_age_days), f"{r.max_age_days:,}", _yes(r.personal_data),
          r.legal_basis, _overdue_text(r), _n(r.held), r.action, r.note] for r in report.inventory])
    actions = (_table(["run", "started", "finished", "status", "actor", "rows changed", "error"],
                      [[a["run_id"], a["started_at"], a["finished_at"], a["status"], a["actor"],
                        ", ".join(f"{k} {v:,}" for k, v in a["applied"].items() if v) or "none", a["error"]]
                       for a in report.actions])
               if report.actions else "<p>No retention runs in the period.</p>")
    holds = (_table(["category", "scope", "held", "reason", "until", "active"],
                    [[h["category"], h["scope"], h["held"], h["reason"], h["until"] or "until removed", _yes(h["active"])]
                     for h in report.holds]) if report.holds else "<p>No legal holds.</p>")
    gdpr = (_table(["request", "kind", "status", "received", "due", "days left", "overdue", "certificate"],
                   [[r["ref"], r["kind"], r["status"], r["received_at"], r["due_at"], r["days_left"],
                     _yes(r["overdue"]), r["certificate"]] for r in report.gdpr_requests])
            if report.gdpr_requests else "<p>No open requests and none received or completed in the period.</p>")
    backups = report.backups
    verifications = (_table(["backup", "verified at", "status", "RTO (s)", "verdict"],
                            [[v["backup"], v["verified_at"], v["status"], v["rto_seconds"], v["verdict"]]
                             for v in backups["verifications"]])
                     if backups["verifications"] else "<p>No restore verification recorded.</p>")
    notes = "".join(f'<p class="bad">{e(n)}</p>' for n in report.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>AMAS compliance report {e(report.as_of[:10])}</title>
<style>{STYLE}</style></head><body>
<h1>AMAS compliance report</h1>
<p>As of {e(report.as_of)}; actions over the last {e(days(report.period_days))} (since {e(report.since)}).
Generated {e(report.generated_at)}.</p>
<p>Audit chain: {verdict}.</p>{notes}
<h2>Data age per category</h2>
{age_chart(report.inventory)}
<h2>Inventory</h2>
{inventory}
<h2>Retention actions in the period</h2>
{actions}
<h2>Legal holds</h2>
{holds}
<h2>GDPR requests</h2>
{gdpr}
<h2>Backups</h2>
<p>{e(backups["summary"])}{'' if backups["rpo_hours"] is None else f' (RPO now {backups["rpo_hours"]} h)'}.</p>
{verifications}
</body></html>
"""


def store(storage: Storage, report: ComplianceReport, *, name: str) -> dict[str, dict[str, Any]]:
    """Keep the report in every format under ``reports/compliance/<name>.<ext>``; return keys and sha256."""
    stored = {}
    for fmt, ext in (("html", "html"), ("json", "json"), ("csv", "csv")):
        key = f"reports/compliance/{name}.{ext}"
        info = storage.put(key, render(report, fmt).encode())
        stored[fmt] = {"key": key, "sha256": info.sha256, "bytes": info.size}
    return stored


def outcome_markdown(outcome: Any) -> str:
    """A retention apply's result (``RunOutcome``) as the Markdown of its Prefect artifact."""
    title = {"completed": "completed", "stopped": "STOPPED", "dry-run": "dry run (nothing changed)"}.get(
        outcome.status, outcome.status)
    lines = [f"# Retention apply: {title}", "",
             f"As of {outcome.as_of.isoformat()}" + (f"; run `{outcome.run_id}`" if outcome.run_id else "") + ".", ""]
    if outcome.message:
        lines += [f"**{outcome.message}**", ""]
    lines += ["| category | action | due | held | changed | batches | status |", "|---|---|---:|---:|---:|---:|---|"]
    for counts in outcome.surveys:
        progress = outcome.categories.get(counts.category)
        lines.append(f"| {counts.category} | {counts.action} | {counts.due:,} | {counts.held:,} | "
                     f"{progress.applied if progress else 0:,} | {progress.batches if progress else 0} | "
                     f"{progress.status if progress else ''} |")
    manifests = [(name, p.manifest) for name, p in outcome.categories.items() if p.manifest]
    if manifests:
        lines += ["", "Archives:"] + [f"- {name}: `{m['key']}` (sha256 `{m['sha256']}`)" for name, m in manifests]
    return "\n".join(lines) + "\n"
