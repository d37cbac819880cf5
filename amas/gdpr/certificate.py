"""Certificates of erasure: what was found where, what was done, counts, timestamps, hashes.

One per request, as JSON (for machines and auditors) and HTML (for people), stored under
``gdpr/<ref>/certificate.json`` and ``certificate.html`` in AMAS's object storage. The JSON lists
the HTML's sha256; the JSON's own sha256 goes into the request row and the ``gdpr.erase.completed``
audit event, whose hash chain then vouches for both. The subject appears only as the keyed
digest; an unknown subject gets a "no data found" certificate, not an error.

The ``prefect`` section says whether Prefect's metadata was searched (and if not, why), what the
search covered (its bound on log lines), and the counts found, deleted and left because the API
cannot delete them.
"""

from __future__ import annotations

import hashlib
import html
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import ledger_position
from amas.db.models import AuditEvent, ErasureLedgerEntry, GdprRequest, RequestStatus, utcnow
from amas.gdpr import requests

if TYPE_CHECKING:
    from amas.gdpr.erase import ErasureOutcome
    from amas.storage import Storage

FORMAT = 1


def certificate_keys(ref: str) -> tuple[str, str]:
    return f"gdpr/{ref}/certificate.json", f"gdpr/{ref}/certificate.html"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def build_erasure_certificate(session: Session, request: GdprRequest, outcome: ErasureOutcome, *,
                              key_id: str, completed_at: Any) -> dict[str, Any]:
    discovery = outcome.discovery
    from amas.gdpr.plan import CANNOT

    kept = [s for s in outcome.plan if s.action == "keep" and s.count and s.location != "audit_events"]
    cannot = [s for s in kept if s.reason.startswith(CANNOT)]
    held = [s for s in kept if not s.reason.startswith(CANNOT)]
    earlier_steps = (request.summary or {}).get("steps", {})
    if outcome.nothing_found and not earlier_steps and not outcome.done:
        result = "no data found"
    elif held and cannot:
        result = "erased, except what legal holds keep and what cannot be erased"
    elif held:
        result = "erased, except what legal holds keep"
    elif cannot:
        result = "erased, except what cannot be erased"
    else:
        result = "erased"
    if (outcome.datasets or {}).get("purge_unfinished") and result != "no data found":
        result += "; old dataset versions are still to be purged from a DVC remote that could not be reached"
    previously = discovery.ledger_entries
    notes = list(discovery.notes)
    if outcome.nothing_found and previously:
        notes.append("the erasure ledger already lists this subject: an earlier request erased them")
    if outcome.nothing_found and discovery.erased_subjects:
        notes.append(f"{discovery.erased_subjects} subject row(s) with this id were anonymised earlier")
    from amas.gdpr.erase import STEP_OF

    done = outcome.done
    actions = []
    for step in outcome.plan:
        entry = step.as_dict()
        if step.action != "keep":
            entry["done"] = done.get(STEP_OF.get(step.name, step.name),
                                     done.get("datasets") if step.store == "dataset" else None)
        actions.append(entry)
    events = session.execute(select(AuditEvent.id, AuditEvent.action, AuditEvent.hash).where(
        AuditEvent.entity_type == "gdpr_request", AuditEvent.entity_id == request.ref).order_by(AuditEvent.id)).all()
    entries = session.scalar(select(func.count()).select_from(ErasureLedgerEntry)
                             .where(ErasureLedgerEntry.request_ref == request.ref)) or 0
    return {
        "format": FORMAT,
        "certificate": "GDPR Art. 17 erasure",
        "request": {"ref": request.ref, "kind": request.kind.value, "actor": request.actor,
                    "received_at": _iso(request.received_at), "due_at": _iso(request.due_at),
                    "completed_at": _iso(completed_at), "on_time": completed_at <= request.due_at,
                    "resumed": outcome.resumed},
        "subject": {"digest": request.subject_digest, "key_id": key_id,
                    "about": "HMAC-SHA256 of the normalised identifier under the erasure key; the identifier "
                             "itself is not recorded anywhere by AMAS"},
        "result": result,
        "found": [f.as_dict() for f in discovery.found],
        "actions": actions,
        "datasets": outcome.datasets,
        "steps": (request.summary or {}).get("steps", {}),
        "verified_remaining": outcome.remaining,
        "prefect": prefect_section(outcome),
        "ledger": {"entries_for_request": entries, "position": ledger_position(session),
                   "previously_listed": previously, "published": done.get("ledger_published")},
        "audit": [{"id": i, "action": a, "hash": h} for i, a, h in events],
        "notes": notes,
    }


def prefect_section(outcome: ErasureOutcome) -> dict[str, Any]:
    """What happened in Prefect's metadata: searched or why not, the scope, found, done, left."""
    prefect = outcome.discovery.prefect
    if prefect is None:
        return {"searched": False, "reason": "not searched by this request", "scope": None}
    section = prefect.as_dict()
    section["deleted"] = {"flow_runs": (outcome.done.get("prefect_flow_runs") or {}).get("flow_runs", 0),
                          "artifacts": (outcome.done.get("prefect_artifacts") or {}).get("artifacts", 0)}
    section["cannot_erase"] = [{"location": s.location, "count": s.count, "reason": s.reason}
                               for s in outcome.plan if s.store == "prefect" and s.action == "keep"
                               and s.reason.startswith("cannot erase")]
    return section


def render_html(document: dict[str, Any]) -> str:
    e = html.escape
    request = document["request"]

    def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
        if not rows:
            return "<p>(none)</p>"
        head = "".join(f"<th>{e(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{e(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    datasets = document.get("datasets") or {}
    remaining = [{"location": k, "remaining": v} for k, v in (document.get("verified_remaining") or {}).items()]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{e(document['certificate'])} — {e(request['ref'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
        "margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}"
        "th{background:#eee}code{font-size:.9em}</style></head><body>",
        f"<h1>Certificate of erasure {e(request['ref'])}</h1>",
        f"<p><strong>Result: {e(document['result'])}</strong></p>",
        "<table>",
        *(f"<tr><th>{e(k)}</th><td>{e(_cell(v))}</td></tr>" for k, v in request.items()),
        f"<tr><th>subject digest</th><td><code>{e(document['subject']['digest'])}</code> "
        f"(key {e(document['subject']['key_id'])})</td></tr>",
        "</table>",
        "<h2>Found</h2>", table(document["found"], ["store", "location", "count", "why", "pii_columns", "version"]),
        "<h2>Done</h2>", table(document["actions"], ["store", "location", "action", "count", "strategy", "reason",
                                                    "done"]),
        "<h2>Datasets</h2>",
        table(datasets.get("versions", []), ["path", "old_md5", "new_md5"]),
        table(_purged_rows(datasets), ["path", "md5", "cache", "remotes"]),
        table(datasets.get("remotes", []), ["name", "where", "same_as"]),
        *_unfinished_purge(datasets, e),
        "<h2>Steps carried out (all attempts)</h2>",
        table([{"step": k, **v} for k, v in (document.get("steps") or {}).items()], ["step", "at"] + sorted(
            {c for v in (document.get("steps") or {}).values() for c in v if c != "at"})),
        "<h2>Prefect metadata</h2>", _prefect_html(document.get("prefect") or {}),
        "<h2>Checked afterwards</h2>", table(remaining, ["location", "remaining"]),
        "<h2>Audit events</h2>", table(document["audit"], ["id", "action", "hash"]),
        "<h2>Notes</h2><ul>", *(f"<li>{e(n)}</li>" for n in document["notes"]), "</ul>",
        f"<p>Erasure ledger: {e(_cell(document['ledger']))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _prefect_html(section: dict[str, Any]) -> str:
    e = html.escape
    if not section.get("searched"):
        return f"<p><strong>Not searched:</strong> {e(str(section.get('reason') or 'unknown'))}</p>"
    rows = [("scope", section.get("scope")), ("flow runs found", section.get("flow_runs")),
            ("of which by parameters", section.get("flow_runs_by_parameters")),
            ("of which by logs", section.get("flow_runs_by_logs")), ("log lines found", section.get("log_lines")),
            ("artifacts found", section.get("artifacts")), ("deleted", section.get("deleted")),
            ("cannot erase", section.get("cannot_erase"))]
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(_cell(v))}</td></tr>" for k, v in rows) + "</table>"


def _purged_rows(datasets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per purged object, its places as ``name: what happened`` (older entries had one ``remote``)."""
    rows = []
    for entry in datasets.get("purged", []):
        places = entry.get("remotes")
        shown = "; ".join(f"{name}: {status}" for name, status in places.items()) if places else entry.get("remote")
        rows.append({**entry, "remotes": shown})
    return rows


def _unfinished_purge(datasets: dict[str, Any], e: Any) -> list[str]:
    unfinished = datasets.get("purge_unfinished") or {}
    if not unfinished:
        return []
    return [f"<p><strong>{len(unfinished)} superseded object(s) could not be deleted from every remote</strong> "
            "(see the failed places above); they stay pending and the next erasure of this workspace tries "
            f"again: {e(', '.join(sorted(unfinished)))}</p>"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def render_markdown(document: dict[str, Any], uri: str | None = None) -> str:
    """The certificate as a Prefect markdown artifact."""
    request = document["request"]
    lines = [f"# Certificate of erasure `{request['ref']}`", "",
             f"**Result: {document['result']}** — received {request['received_at']}, due {request['due_at']}, "
             f"completed {request['completed_at']}", "",
             f"Subject digest `{document['subject']['digest']}` (key `{document['subject']['key_id']}`)", "",
             "| store | location | action | count | reason |", "|---|---|---|---:|---|"]
    for action in document["actions"]:
        reason = str(action["reason"]).replace("|", "\\|")
        lines.append(f"| {action['store']} | {action['location']} | {action['action']} | {action['count']} | "
                     f"{reason} |")
    prefect = document.get("prefect") or {}
    lines += ["", f"Prefect metadata: {prefect.get('scope') or prefect.get('reason')}"]
    remaining = document.get("verified_remaining") or {}
    if remaining:
        lines += ["", "Checked afterwards (rows or objects left): "
                  + ", ".join(f"{k}: {v}" for k, v in remaining.items())]
    unfinished = (document.get("datasets") or {}).get("purge_unfinished") or {}
    if unfinished:
        lines += ["", f"**{len(unfinished)} superseded dataset object(s) could not be deleted from every DVC "
                      "remote**; they stay pending and the next erasure of the workspace tries again."]
    for note in document["notes"]:
        lines.append(f"- {note}")
    if uri:
        lines += ["", f"Stored: `{uri}` (JSON) and the HTML beside it; sha256 in the JSON and the audit chain."]
    return "\n".join(lines) + "\n"


def store_certificate(storage: Storage, ref: str, document: dict[str, Any]) -> dict[str, Any]:
    """Write HTML then JSON (which lists the HTML's sha256); return both keys and sha256s."""
    json_key, html_key = certificate_keys(ref)
    html_bytes = render_html(document).encode("utf-8")
    html_info = storage.put(html_key, html_bytes)
    document["files"] = {"certificate.html": {"key": html_key, "sha256": html_info.sha256 or
                                              hashlib.sha256(html_bytes).hexdigest(), "size": len(html_bytes)}}
    json_bytes = (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    json_info = storage.put(json_key, json_bytes)
    return {"json_key": json_key, "json_sha256": json_info.sha256 or hashlib.sha256(json_bytes).hexdigest(),
            "html_key": html_key, "html_sha256": document["files"]["certificate.html"]["sha256"]}


def issue_erasure_certificate(session: Session, request: GdprRequest, outcome: ErasureOutcome, *,
                              storage: Storage, storage_url: str, actor: str,
                              key_id: str) -> tuple[dict[str, Any], str]:
    """Build, store and record the certificate; the request is completed in the same transaction."""
    completed_at = utcnow()
    document = build_erasure_certificate(session, request, outcome, key_id=key_id, completed_at=completed_at)
    stored = store_certificate(storage, request.ref, document)
    uri = f"{storage_url.rstrip('/')}/{stored['json_key']}"
    request.status = RequestStatus.completed
    request.completed_at = completed_at
    request.certificate_uri = uri
    request.error = None
    requests.forget_subject(request)
    requests.update_summary(request, result=document["result"], certificate_sha256=stored["json_sha256"],
                            html_sha256=stored["html_sha256"],
                            found={f["location"]: f["count"] for f in document["found"]},
                            remaining=outcome.remaining)
    append_event(session, actor=actor, action="gdpr.erase.completed", entity_type="gdpr_request",
                 entity_id=request.ref, details={"result": document["result"],
                                                 "certificate_sha256": stored["json_sha256"],
                                                 "html_sha256": stored["html_sha256"]})
    return document, uri


def render_plan_markdown(summary: dict[str, Any]) -> str:
    """A dry run's plan (``amas.gdpr.erase.outcome_summary``) as a Prefect markdown artifact."""
    lines = ["# GDPR erasure plan (dry run)", "", f"**{summary['result']}** — nothing was changed.", "",
             "| store | location | action | count | reason |", "|---|---|---|---:|---|"]
    for step in summary["plan"]:
        reason = str(step["reason"]).replace("|", "\\|")
        lines.append(f"| {step['store']} | {step['location']} | {step['action']} | {step['count']} | {reason} |")
    lines += [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines) + "\n"
