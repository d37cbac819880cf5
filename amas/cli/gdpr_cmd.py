"""``amas gdpr``: erasure and access requests, and their deadlines.

``erase --dry-run`` and ``requests`` read the store directly; ``erase`` and ``export`` stage the
request (the identifier sealed in the store) and run the ``gdpr-erase`` / ``gdpr-export`` flows
with its reference in this process against the stack's Prefect API, the same flows the UI starts.
``stage`` only stages, for starting the flow from the UI. The identifier is checked before
anything runs, never printed back, and never a Prefect flow-run parameter.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

gdpr_app = typer.Typer(help="GDPR requests: erase a data subject, export their data, track deadlines.",
                       no_args_is_help=True)


class ByOption(StrEnum):
    auto = "auto"
    ref = "ref"
    email = "email"
    id = "id"


class Format(StrEnum):
    """Like ``amas.cli.main.OutputFormat``, which this module must not import at load time."""

    table = "table"
    json = "json"


def _print_plan(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from amas.cli.main import console

    table = Table("store", "location", "action", "count", "reason", title=f"GDPR erasure: {summary['result']}")
    table.columns[4].overflow = "fold"
    for step in summary["plan"]:
        done = step.get("done")
        count = f"{step['count']:,}" + (f" (done: {_counts(done)})" if done else "")
        table.add_row(step["store"], step["location"], step["action"], count, step["reason"])
    console.print(table)
    for note in summary.get("notes", []):
        console.print(f"note: {note}", highlight=False)


class Kind(StrEnum):
    erase = "erase"
    export = "export"


def _stage(engine: Any, kind: Kind, subject: str, by: str, actor: str) -> tuple[str, bool]:
    """Stage a request for ``subject``; return its reference and whether it is an earlier open one."""
    from amas.config import get_settings
    from amas.db.ledger import erasure_key, key_id
    from amas.db.models import RequestKind
    from amas.db.session import session_scope
    from amas.gdpr.identifiers import parse_identifier
    from amas.gdpr.requests import stage_request

    query = parse_identifier(subject, by)
    key = erasure_key(get_settings())
    with session_scope(engine) as session:
        request, earlier = stage_request(session, kind=RequestKind(kind.value), query=query, key=key,
                                         key_id=key_id(key), actor=actor)
        return request.ref, earlier


def _counts(done: Any) -> str:
    if isinstance(done, dict):
        return ", ".join(f"{k} {v}" for k, v in done.items() if not isinstance(v, list | dict))
    return str(done)


@gdpr_app.command("erase")
def erase(
    subject: str = typer.Argument(help="external_ref, email or numeric id of the data subject."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted, anonymised or kept, "
                                                          "and why; change nothing."),
    by: ByOption = typer.Option(ByOption.auto, "--by", help="How to read SUBJECT: auto, ref, email or id."),
    datasets: bool = typer.Option(True, "--datasets/--no-datasets", help="Erase from the DVC datasets too."),
    push: bool = typer.Option(True, "--push/--no-push", help="Push the rewritten datasets to the DVC remote."),
    purge: bool = typer.Option(True, "--purge/--no-purge", help="Delete the old dataset versions that held the "
                                                                "subject from the DVC cache and remote."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Erase everything about one data subject and store a certificate of erasure (GDPR Art. 17).

    Unknown subjects get a "no data found" certificate (exit 0). Run it again to resume a request
    that failed part-way.
    """
    import getpass

    from amas.cli.main import console, flow_result, use_stack_api
    from amas.config import get_settings
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine
    from amas.gdpr.identifiers import parse_identifier
    from amas.pipeline.runner import project_root

    parse_identifier(subject, by.value)
    settings = get_settings()
    engine = get_engine(settings)
    check_connection(engine)
    require_current_schema(engine)
    workspace = project_root() if datasets else None
    if dry_run:
        from amas.gdpr.erase import erase_subject, outcome_summary

        summary = outcome_summary(erase_subject(subject, by=by.value, dry_run=True, settings=settings,
                                                engine=engine, workspace=workspace,
                                                actor=f"cli:{getpass.getuser()}"))
    else:
        use_stack_api(settings)
        from flows.gdpr_flow import ErasureInput, gdpr_erase

        ref, _ = _stage(engine, Kind.erase, subject, by.value, f"cli:{getpass.getuser()}")
        params = ErasureInput(request=ref, dry_run=False, datasets=datasets, push=push, purge=purge,
                              workspace=str(workspace) if workspace else None)
        with console.status("erasing…"):
            state = gdpr_erase(params=params, return_state=True)
        summary = flow_result(state, "gdpr-erase")
    if fmt is Format.json:
        print(json.dumps(summary, indent=2, default=str))
        return
    _print_plan(summary)
    if summary["request"]:
        console.print(f"request {summary['request']}: {summary['result']}; certificate {summary['certificate_uri']}",
                      highlight=False)


@gdpr_app.command("export")
def export(
    subject: str = typer.Argument(help="external_ref, email or numeric id of the data subject."),
    out: Path = typer.Option(..., "--out", help="Where to write the ZIP (JSON and CSV per store, manifest.json)."),
    by: ByOption = typer.Option(ByOption.auto, "--by", help="How to read SUBJECT: auto, ref, email or id."),
    datasets: bool = typer.Option(True, "--datasets/--no-datasets", help="Include rows from the DVC datasets."),
) -> None:
    """Export everything about one data subject as a ZIP (GDPR Art. 15 and 20)."""
    import getpass

    from amas.cli.main import console, flow_result, use_stack_api
    from amas.config import get_settings
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine
    from amas.errors import AmasError
    from amas.gdpr.identifiers import parse_identifier
    from amas.pipeline.runner import project_root

    parse_identifier(subject, by.value)
    target = out.expanduser().resolve()
    if target.is_dir():
        raise AmasError(f"--out: {target} is a directory; give a file path such as {target / 'export.zip'}")
    if not target.parent.is_dir():
        raise AmasError(f"--out: directory {target.parent} does not exist")
    settings = get_settings()
    engine = get_engine(settings)
    check_connection(engine)
    require_current_schema(engine)
    use_stack_api(settings)
    from flows.gdpr_flow import ExportInput, gdpr_export

    ref, _ = _stage(engine, Kind.export, subject, by.value, f"cli:{getpass.getuser()}")
    params = ExportInput(request=ref, out=str(target), datasets=datasets,
                         workspace=str(project_root()) if datasets else None)
    with console.status("exporting…"):
        state = gdpr_export(params=params, return_state=True)
    result = flow_result(state, "gdpr-export")
    console.print(f"request {result['request']}: {result['result']}; {len(result['files'])} file(s) in {target} "
                  f"(sha256 {result['sha256']}); stored at {result['uri']}", highlight=False)


@gdpr_app.command("stage")
def stage(
    kind: Kind = typer.Argument(help="erase or export"),
    subject: str = typer.Argument(help="external_ref, email or numeric id of the data subject."),
    by: ByOption = typer.Option(ByOption.auto, "--by", help="How to read SUBJECT: auto, ref, email or id."),
) -> None:
    """Receive a request and print its reference, to start gdpr-erase or gdpr-export from the UI with it.

    The identifier is kept sealed in the store until the request completes; the flow run's
    parameters hold only the reference. An erasure joins the subject's unfinished one, if any.
    """
    import getpass

    from amas.cli.main import console
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine
    from amas.gdpr.identifiers import parse_identifier

    parse_identifier(subject, by.value)
    engine = get_engine()
    check_connection(engine)
    require_current_schema(engine)
    ref, earlier = _stage(engine, kind, subject, by.value, f"cli:{getpass.getuser()}")
    flow = "gdpr-erase" if kind is Kind.erase else "gdpr-export"
    console.print(f"request {ref}{' (unfinished, resumed)' if earlier else ''}: start the {flow} flow with "
                  f"request={ref}", highlight=False)


@gdpr_app.command("requests")
def list_requests(fmt: Format = typer.Option(Format.table, "--format", help="table or json")) -> None:
    """Erasure and export requests with their 30-day deadlines, newest first."""
    from rich.table import Table

    from amas.cli.main import console
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine, session_scope
    from amas.gdpr.requests import request_rows

    engine = get_engine()
    check_connection(engine)
    require_current_schema(engine)
    with session_scope(engine) as session:
        rows = request_rows(session)
    if fmt is Format.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("ref", "kind", "status", "received", "due", "days left", "completed", "subject digest")
    for row in rows:
        left = "" if row["days_left"] is None else str(row["days_left"])
        if row["overdue"]:
            left = f"[red]overdue {left}[/]" if left else "[red]late[/]"
        table.add_row(row["ref"], row["kind"], row["status"], row["received_at"][:16], row["due_at"][:10], left,
                      (row["completed_at"] or "")[:16], row["subject_digest"][:16] + "…")
    console.print(table)
    if not rows:
        console.print("no GDPR requests yet")


@gdpr_app.command("reapply")
def reapply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count the listed subjects present; change nothing."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Erase again everyone the erasure ledger lists, in the configured store (after a restore by hand).

    The ledger published in storage (gdpr/ledger.json) is merged into the store's own first. Exit 1 if a
    listed subject is still present afterwards.
    """
    from sqlalchemy.orm import Session

    from amas.cli.main import console
    from amas.config import get_settings
    from amas.db.ledger import erasure_key
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine
    from amas.errors import AmasError
    from amas.gdpr.reapply import ledger_violations, merge_ledger, published_ledger, reapply_ledger
    from amas.storage import open_storage

    settings = get_settings()
    engine = get_engine(settings)
    check_connection(engine)
    require_current_schema(engine)
    storage = open_storage(settings)
    key = erasure_key(settings)
    entries = published_ledger(storage)
    with Session(engine) as session, session.begin():
        if dry_run:
            merged = merge_ledger(session, entries)
            present = ledger_violations(session, key)
            session.rollback()
            result = {"dry_run": True, "ledger_entries_merged": merged, "listed_subjects_present": present}
        else:
            totals = reapply_ledger(session, key, storage=storage, storage_url=settings.storage_url, entries=entries,
                                    actor="cli:gdpr-reapply")
            result = {"dry_run": False, **totals}
    if not dry_run:
        with Session(engine) as session:
            result["listed_subjects_present"] = ledger_violations(session, key)
    if fmt is Format.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            console.print(f"{name}: {value}", highlight=False)
    if not dry_run and result["listed_subjects_present"]:
        raise AmasError(f"{result['listed_subjects_present']} subjects the ledger lists are still present")
