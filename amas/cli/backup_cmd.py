"""``amas backup run | list | verify | prune`` and ``amas restore``: thin commands over ``amas.backup``.

``run`` and ``verify`` run the ``backup`` and ``backup-verify`` flows (the ones the schedule and
the UI run) on the stack's Prefect API, so their artifacts and states are where operators look.
``restore`` needs no Prefect and no AMAS store: it is what you run when the store is gone.
Nothing here imports ``amas.cli.main`` at module level: main imports this module.
"""

from __future__ import annotations

import getpass
import json
from enum import StrEnum
from typing import Any

import typer
from rich.table import Table

from amas.config import get_settings
from amas.errors import AmasError

backup_app = typer.Typer(help="Backups of the store, artifacts and DVC index, each restored and checked.",
                         no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    json = "json"


def _ready_engine() -> Any:
    from amas.db.migrate import require_current_schema
    from amas.db.session import check_connection, get_engine

    engine = get_engine(get_settings())
    check_connection(engine)
    require_current_schema(engine)
    return engine


def _check_settings(settings: Any) -> None:
    """Settings mistakes (the key, the backup URL) as one line before any flow starts."""
    from amas.backup.engine import backup_key, backup_storage

    backup_key(settings)
    backup_storage(settings)


def _synced_catalog() -> tuple[Any, Any, Any]:
    """Settings, the store's engine and the backup storage, with the catalog caught up with storage."""
    from amas.backup.engine import backup_storage, sync_catalog

    settings = get_settings()
    engine = _ready_engine()
    storage = backup_storage(settings)
    sync_catalog(engine, storage)
    return settings, engine, storage


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _checks_table(verification: dict[str, Any], title: str) -> Table:
    table = Table("check", "result", "seconds", "detail", title=title)
    table.columns[3].overflow = "fold"
    for check in verification["checks"]:
        table.add_row(check["name"], "ok" if check["ok"] else "[red]FAILED[/red]", f"{check['seconds']:.2f}",
                      check["detail"])
    return table


@backup_app.command("run")
def run_cmd(
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Restore the new backup into a scratch copy and "
                                "check it (default)."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Apply the GFS rotation afterwards (default)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Back up the store, artifacts and DVC index through the backup flow, then verify and rotate.

    Exit 1 when the backup fails or its restore verification fails.
    """
    from amas.cli.main import console, flow_result, use_stack_api

    settings = get_settings()
    _check_settings(settings)
    _ready_engine()
    use_stack_api(settings)
    from flows.backup_flow import UNVERIFIED, BackupInput, backup

    with console.status("backing up…"):
        state = backup(params=BackupInput(verify=verify, prune=prune, requested_by=f"cli:{getpass.getuser()}"),
                       return_state=True)
    if state.name == UNVERIFIED:
        raise AmasError(state.message or "the backup failed restore verification")
    result = flow_result(state, "backup")
    if fmt is Format.json:
        print(json.dumps(result, indent=2, default=str))
        return
    made = result["backup"]
    console.print(f"backup {made['id']}: {_size(made['stored_bytes'])} in {len(made['objects'])} objects, "
                  f"{made['seconds']:.1f} s{', encrypted' if made['encrypted'] else ''}", highlight=False)
    if "verification" in result:
        console.print(_checks_table(result["verification"], f"Restore verification of {made['id']}"))
    if result.get("pruned"):
        console.print(f"pruned by the GFS rotation: {', '.join(result['pruned'])}", highlight=False)


@backup_app.command("verify")
def verify_cmd(
    backup_id: str = typer.Argument("latest", help="Backup id, or latest (the newest complete backup)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Restore a backup into a scratch copy and check everything; exit 1 naming the failed checks."""
    from amas.cli.main import console, flow_result, use_stack_api

    settings = get_settings()
    _check_settings(settings)
    _ready_engine()
    use_stack_api(settings)
    from flows.backup_flow import UNVERIFIED, backup_verify

    with console.status(f"verifying {backup_id}…"):
        state = backup_verify(backup_id=backup_id, return_state=True)
    if state.name == UNVERIFIED:
        from amas.backup.catalog import backups

        rows = {row.id: row for row in backups(_ready_engine())}
        chosen = (state.message or "").split()[1] if state.message else ""
        if chosen in rows and rows[chosen].verification and fmt is Format.table:
            console.print(_checks_table(rows[chosen].verification, f"Restore verification of {chosen}"))
        raise AmasError(state.message or "restore verification failed")
    result = flow_result(state, "backup-verify")
    if fmt is Format.json:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(_checks_table(result, f"Restore verification of {result['backup_id']}"))
    console.print(result["summary"], highlight=False)


@backup_app.command("list")
def list_cmd(
    show_all: bool = typer.Option(False, "--all", help="Include backups removed by the rotation."),
    check: bool = typer.Option(False, "--check", help="Exit 1 when a source's newest backup is unverified or "
                               "its RPO exceeds AMAS_BACKUP_MAX_AGE_HOURS."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """The backup catalog with each verdict and restore time, and RPO/RTO per source."""
    from amas.backup.catalog import backups, status
    from amas.cli.main import console

    settings, engine, storage = _synced_catalog()
    rows = backups(engine, include_deleted=show_all)
    states = status(backups(engine), settings)
    if fmt is Format.json:
        print(json.dumps({"sources": [s.to_dict() for s in states], "backups": [
            {"id": r.id, "source": r.source, "status": r.status.value, "finished_at": r.finished_at,
             "size_bytes": r.size_bytes, "verified_at": r.verified_at, "rto_seconds": r.rto_seconds,
             "erasure_ledger_position": r.erasure_ledger_position,
             "verification": (r.verification or {}).get("summary")} for r in rows]}, indent=2, default=str))
    else:
        table = Table("id", "source", "finished (UTC)", "size", "status", "verified (UTC)", "RTO (s)", "verdict",
                      title=f"Backups in {storage.url}")
        table.columns[7].overflow = "fold"
        for r in rows:
            style = {"verified": "green", "unverified": "red", "deleted": "dim"}.get(r.status.value, "")
            table.add_row(r.id, r.source, f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "",
                          _size(r.size_bytes), f"[{style}]{r.status.value}[/{style}]" if style else r.status.value,
                          f"{r.verified_at:%Y-%m-%d %H:%M}" if r.verified_at else "",
                          "" if r.rto_seconds is None else f"{r.rto_seconds:.1f}",
                          (r.verification or {}).get("summary", ""))
        console.print(table)
        for s in states:
            mark = "[green]ok[/green]" if s.ok else "[red]FAIL[/red]"
            rto = f"; last RTOs {', '.join(f'{x:.1f}' for x in s.last_rto_seconds)} s" if s.last_rto_seconds else ""
            console.print(f"{mark} {s.source}: {s.summary}{rto}")
    if check and not all(s.ok for s in states):
        raise typer.Exit(1)


@backup_app.command("prune")
def prune_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what the rotation would remove, and why the "
                                 "rest stays."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Apply the GFS rotation (AMAS_BACKUP_KEEP_LAST/DAILY/WEEKLY/MONTHLY/YEARLY); never the newest verified backup."""
    from amas.backup.catalog import prune
    from amas.cli.main import console

    settings, engine, storage = _synced_catalog()
    outcome = prune(engine, storage, settings, dry_run=dry_run, actor=f"cli:{getpass.getuser()}")
    if fmt is Format.json:
        print(json.dumps(outcome.to_dict(), indent=2))
        return
    table = Table("id", "source", "finished (UTC)", "decision", "why",
                  title="GFS rotation" + (" --dry-run: nothing was removed" if dry_run else ""))
    for d in outcome.decisions:
        decision = "keep" if d.keep else ("would remove" if dry_run else "removed")
        table.add_row(d.id, d.source, f"{d.finished_at:%Y-%m-%d %H:%M}", decision, ", ".join(d.reasons))
    console.print(table)


def restore_cmd(
    backup_id: str = typer.Argument(..., help="Backup id, or latest (the newest complete backup)."),
    to: str = typer.Option(..., "--to", help="Database to restore into: postgresql://user@host/db or sqlite:///path."),
    artifacts_to: str | None = typer.Option(None, "--artifacts-to", help="Also restore the artifact objects into "
                                            "this storage: a directory or s3://bucket/prefix."),
    force: bool = typer.Option(False, "--force", help="Replace the contents of a target that is not empty."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json"),
) -> None:
    """Restore a backup into a target database (and artifact location), verify it and re-apply erasures.

    Refuses a non-empty target unless --force. Needs neither Prefect nor the AMAS store. Exit 1 when a check fails.
    """
    from amas.backup.engine import backup_key, backup_storage
    from amas.backup.verify import restore_backup, select_backup
    from amas.cli.main import console

    settings = get_settings()
    backup_key(settings)  # a key setting mistake is reported before anything is fetched
    storage = backup_storage(settings)
    chosen = select_backup(storage, backup_id)
    with console.status(f"restoring {chosen}…"):
        outcome = restore_backup(chosen, to, settings, artifacts_url=artifacts_to, force=force, storage=storage)
    result = outcome.to_dict()
    if fmt is Format.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(_checks_table(result, f"Restore of {chosen} into {outcome.target}"))
        console.print(f"restored in {outcome.verdict.restore_seconds or 0:.1f} s (RTO); "
                      f"{outcome.verdict.seconds:.1f} s with all checks", highlight=False)
    if not outcome.verdict.ok:
        raise AmasError(f"restore of {chosen}: {outcome.verdict.summary}")
