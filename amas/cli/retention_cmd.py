"""``amas retention plan | apply | report`` and ``amas audit verify``: thin commands over ``amas.retention``.

``apply`` runs the ``retention-apply`` flow (the one the schedule and the UI run) on the
stack's Prefect API; ``--dry-run``, ``plan`` and ``report`` only read and need no Prefect
(Prefect's own categories show as not surveyed when its API is down). Nothing here imports
``amas.cli.main`` at module level: main imports this module.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from amas.config import get_settings
from amas.errors import AmasError, ConfigError

retention_app = typer.Typer(help="Retention: what is due under retention/*.yaml, applying it, the compliance report.",
                            no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    json = "json"


class ReportFormat(StrEnum):
    html = "html"
    csv = "csv"
    json = "json"
    markdown = "markdown"


AS_OF_HELP = "Measure ages against this time: an ISO date or time (2026-06-15, 2026-06-15T08:00:00+02:00); " \
             "without a zone it is UTC. Default: now."


def parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"--as-of: expected an ISO date or time such as 2026-06-15 or 2026-06-15T08:00:00+00:00, "
                          f"got {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _ready_engine() -> Any:
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine

    engine = get_engine(get_settings())
    check_connection(engine)
    require_current_schema(engine)
    return engine


def _surveys(engine: Any, policies: Any, categories: list[str], as_of: datetime, samples: int) -> list[Any]:
    from amas.retention.apply import select_policies, survey
    from amas.retention.prefect_meta import reachable_client
    from amas.storage import open_storage

    settings = get_settings()
    chosen = select_policies(list(policies), categories)
    with reachable_client(settings) as (client, why):
        return survey(engine, chosen, as_of, every_policy=list(policies), storage=open_storage(settings),
                      prefect_client=client, prefect_unavailable=why or "no Prefect API", samples=samples)


def _n(value: int) -> str:
    return f"{value:,}"


def _counts_table(surveys: list[dict[str, Any]], title: str, changed: dict[str, Any] | None = None) -> Table:
    """One row per category from ``CategoryCounts.to_dict()``; with ``changed``, what a run did.

    ``--format json`` has every count (already done, within limit, undated) as well.
    """
    table = Table("category", "action", "items", "due", "held", "to change", "most overdue", title=title)
    table.columns[0].no_wrap = True
    if changed is not None:
        table.add_column("changed")
        table.add_column("status")
    for s in surveys:
        if s["error"]:
            row = [s["category"], s["action"], "?", "?", "?", "?", ""]
        else:
            overdue = "" if s["max_overdue_days"] is None else f"{s['max_overdue_days']:,} d"
            row = [s["category"], s["action"], *(_n(s[k]) for k in ("total", "due", "held", "act")), overdue]
        if changed is not None:
            progress = changed.get(s["category"]) or {}
            row += [_n(progress.get("applied", 0)), progress.get("status", "")]
        table.add_row(*row)
    return table


def _print_unsurveyed(surveys: list[dict[str, Any]]) -> None:
    from amas.cli.main import console

    for s in surveys:
        if s["error"]:
            console.print(f"{s['category']}: not surveyed: {s['error']}", markup=False, highlight=False)


@retention_app.command("plan")
def plan_cmd(
    category: list[str] = typer.Option([], "--category", "-c", help="Only this category (repeatable)."),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
    samples: int = typer.Option(3, min=0, max=100, help="Sample rows per category, to act on and held."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Show what retention would do now (or --as-of): counts per category and sample rows with reasons."""
    from amas.cli.main import console
    from amas.db.models import utcnow
    from amas.retention import load_policies
    from amas.retention.apply import select_policies

    when = parse_as_of(as_of) or utcnow()
    policies = load_policies()
    select_policies(list(policies), category)
    engine = _ready_engine()
    surveys = _surveys(engine, policies, category, when, samples)
    if fmt is Format.json:
        print(json.dumps({"as_of": when.isoformat(), "categories": [s.to_dict() for s in surveys]}, indent=2))
        return
    rows = [s.to_dict() for s in surveys]
    console.print(_counts_table(rows, f"Retention plan as of {when.isoformat(timespec='seconds')}"))
    _print_unsurveyed(rows)
    sample_table = Table("category", "id", "decision", "reason", title="Samples")
    sample_table.columns[3].overflow = "fold"
    for s in surveys:
        for verdict in s.samples:
            decision = verdict.decision + (f" ({verdict.strategy})" if verdict.strategy else "")
            sample_table.add_row(s.category, verdict.id, decision, verdict.reason)
    if sample_table.row_count:
        console.print(sample_table)


@retention_app.command("apply")
def apply_cmd(
    category: list[str] = typer.Option([], "--category", "-c", help="Only this category (repeatable)."),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + " Never later than now."),
    confirm: bool = typer.Option(False, "--confirm", help="Go on although a policy removes more than "
                                 "AMAS_RETENTION_MAX_FRACTION of its category."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would happen; change nothing."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Apply the policies through the retention-apply flow: delete, anonymize or archive what is due, in batches.

    Held rows are never touched. A policy that would remove more than AMAS_RETENTION_MAX_FRACTION of its
    category stops the run (exit 1) until it is re-run with --confirm.
    """
    from amas.cli.main import console, err_console, flow_result, use_stack_api
    from amas.db.models import utcnow
    from amas.retention import load_policies
    from amas.retention.apply import apply_retention, check_as_of, select_policies

    settings = get_settings()
    when = parse_as_of(as_of)
    if when is not None:
        check_as_of(when)
    policies = load_policies()
    select_policies(list(policies), category)
    engine = _ready_engine()
    if dry_run:
        from amas.retention.prefect_meta import reachable_client
        from amas.storage import open_storage

        with reachable_client(settings) as (client, _):
            outcome = apply_retention(engine, policies, as_of=when or utcnow(), actor=f"cli:{getpass.getuser()}",
                                      settings=settings, storage=open_storage(settings), categories=category or None,
                                      confirm=confirm, dry_run=True, prefect_client=client)
        if fmt is Format.json:
            print(json.dumps(outcome.to_dict(), indent=2))
        else:
            rows = [c.to_dict() for c in outcome.surveys]
            console.print(_counts_table(rows, "Retention apply --dry-run: nothing was changed"))
            _print_unsurveyed(rows)
        if outcome.message and not confirm:
            err_console.print(f"amas: a real run would stop: {outcome.message}", markup=False, highlight=False,
                              soft_wrap=True)
        return
    use_stack_api(settings)
    from flows.retention_flow import STOPPED, RetentionApplyInput, retention_apply

    params = RetentionApplyInput(categories=category, as_of=when, confirm=confirm,
                                 requested_by=f"cli:{getpass.getuser()}")
    with console.status("applying retention…"):
        state = retention_apply(params=params, return_state=True)
    if state.name == STOPPED:
        raise AmasError(f"retention apply stopped: {state.message}")
    result = flow_result(state, "retention-apply")
    if fmt is Format.json:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(_counts_table(result["surveys"], f"Retention run {result['run_id']} {result['status']}",
                                changed=result["categories"]))


@retention_app.command("report")
def report_cmd(
    fmt: ReportFormat = typer.Option(ReportFormat.html, "--format", help="html, csv, json or markdown"),
    out: Path | None = typer.Option(None, "--out", help="Write the report here instead of standard output."),
    since: int = typer.Option(7, "--since", min=1, max=3660, help="Report actions of this many past days."),
) -> None:
    """The compliance report: inventory, overdue data, actions, holds, GDPR deadlines, backups, audit chain."""
    from amas.cli.main import err_console
    from amas.db.models import utcnow
    from amas.retention import load_policies
    from amas.retention.report import build_report, render

    policies = load_policies()
    engine = _ready_engine()
    as_of = utcnow()
    surveys = _surveys(engine, policies, [], as_of, 0)
    report = build_report(engine, list(policies), surveys, as_of=as_of, since_days=since)
    text = render(report, fmt.value)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AmasError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {out} ({fmt.value}, {len(text.encode()):,} bytes)", markup=False, highlight=False)


@audit_app.command("verify")
def audit_verify(fmt: Format = typer.Option(Format.table, "--format", help="table or json")) -> None:
    """Recompute the audit log's hash chain; name the first broken link and exit 1 if there is one."""
    from amas.cli.main import console, err_console
    from amas.db.audit import verify_chain
    from amas.db.session import session_scope

    engine = _ready_engine()
    with session_scope(engine) as session:
        verdict = verify_chain(session)
    if fmt is Format.json:
        print(json.dumps({"ok": verdict.ok, "checked": verdict.checked, "first_bad_id": verdict.first_bad_id,
                          "reason": verdict.reason}, indent=2))
    elif verdict.ok:
        console.print(f"audit chain verifies: {'1 event' if verdict.checked == 1 else f'{verdict.checked:,} events'}")
    if not verdict.ok:
        err_console.print(f"amas: audit chain broken at event {verdict.first_bad_id}: {verdict.reason} "
                          f"(events verified before it: {verdict.checked:,})", markup=False, highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1)
