"""backup (nightly) and backup-verify (on demand): thin flows over ``amas.backup``.

``backup`` takes a backup (retried with backoff when storage or the store is unreachable),
restores it into a scratch copy and checks it, then prunes by the GFS policy. The verdict with
every check and the measured restore time is published as the ``backup`` artifact, and a
failed check fails the run (state ``Unverified``) so a Prefect automation can alert on it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State
from pydantic import BaseModel, Field

from amas.backup.catalog import backups, prune, status
from amas.backup.engine import backup_storage, run_backup
from amas.backup.verify import Verdict, select_backup, verify_backup
from amas.config import get_settings
from amas.db.migrate import require_current_schema
from amas.db.session import get_engine
from flows._lineage import flow_lineage
from flows._retries import retry_if_transient

UNVERIFIED = "Unverified"
"""State name of a run whose backup failed restore verification; its message lists the failed checks."""


@task(name="take-backup", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_if_transient,
      persist_result=False)
def take_backup(actor: str) -> dict[str, Any]:
    settings = get_settings()
    logger = get_run_logger()

    def progress(name: str, size: int) -> None:
        logger.info("%s: %.1f MiB read", name, size / 2**20)

    outcome = run_backup(get_engine(settings), settings, actor=actor, progress=progress)
    for name in outcome.removed_incomplete:
        logger.warning("removed the objects of incomplete backup %s (it had no manifest)", name)
    return outcome.to_dict()


@task(name="verify-backup", persist_result=False)
def verify(backup_id: str) -> Verdict:
    settings = get_settings()
    return verify_backup(backup_id, settings, engine=get_engine(settings))


class BackupInput(BaseModel):
    verify: bool = Field(True, description="Restore the new backup into a scratch copy and check it.")
    prune: bool = Field(True, description="Apply the GFS rotation (AMAS_BACKUP_KEEP_*) afterwards.")
    requested_by: str = Field("schedule", min_length=1, max_length=200, description="Who asked (recorded as the actor).")


def verdict_markdown(verdict: Verdict, title: str) -> str:
    lines = [f"# {title}", "", f"**{'Verified' if verdict.ok else 'UNVERIFIED'}**: {verdict.summary}", "",
             "| check | result | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {c.seconds:.2f} | {c.detail.replace('|', '/')} |"
              for c in verdict.checks]
    if verdict.restore_seconds is not None:
        lines += ["", f"Restore time (RTO evidence): {verdict.restore_seconds:.1f} s; whole verification "
                      f"{verdict.seconds:.1f} s."]
    return "\n".join(lines) + "\n"


def status_markdown() -> str:
    settings = get_settings()
    rows = status(backups(get_engine(settings)), settings)
    lines = ["", "## RPO and RTO", "", "| source | status | RPO (h) | last RTOs (s) |", "|---|---|---:|---|"]
    lines += [f"| {s.source} | {'ok' if s.ok else '**FAIL**: ' + s.summary} | "
              f"{'' if s.rpo_hours is None else s.rpo_hours} | {', '.join(map(str, s.last_rto_seconds))} |"
              for s in rows]
    return "\n".join(lines) + "\n"


@flow(name="backup", description="Back up the store, artifacts and DVC index (zstd, sha256, optional AES-256-GCM), "
      "restore the backup into a scratch copy and check it, then apply the GFS rotation.")
def backup(params: BackupInput | None = None) -> dict[str, Any] | State:
    params = params or BackupInput()
    with flow_lineage():
        settings = get_settings()
        engine = get_engine(settings)
        require_current_schema(engine)
        outcome = take_backup(f"flow:backup ({params.requested_by})")
        result: dict[str, Any] = {"backup": outcome}
        verdict = verify(outcome["id"]) if params.verify else None
        if params.prune:
            pruned = prune(engine, backup_storage(settings), settings, dry_run=False)
            result["pruned"] = pruned.deleted
        markdown = (verdict_markdown(verdict, f"Backup {outcome['id']}") if verdict is not None
                    else f"# Backup {outcome['id']}\n\nNot verified in this run.\n")
        create_markdown_artifact(key="backup", markdown=markdown + status_markdown(),
                                 description="Backup, restore verification, RPO and RTO")
        if verdict is not None:
            result["verification"] = verdict.to_dict()
            if not verdict.ok:
                return Failed(name=UNVERIFIED, message=f"backup {outcome['id']} {verdict.summary}")
        return result


@flow(name="backup-verify", description="Restore a backup (default: the newest) into a scratch copy and check it: "
      "sha256, decryption, row counts and content digests, data quality, erasures re-applied.")
def backup_verify(backup_id: str = "latest") -> dict[str, Any] | State:
    with flow_lineage():
        settings = get_settings()
        engine = get_engine(settings)
        require_current_schema(engine)
        chosen = select_backup(backup_storage(settings), backup_id)
        verdict = verify(chosen)
        create_markdown_artifact(key="backup-verify", markdown=verdict_markdown(verdict, f"Restore verification of "
                                 f"{chosen}") + status_markdown(), description="Restore verification, RPO and RTO")
        for check in verdict.checks:
            get_run_logger().info("%s: %s (%s)", check.name, "ok" if check.ok else "FAILED", check.detail)
        if not verdict.ok:
            return Failed(name=UNVERIFIED, message=f"backup {chosen} {verdict.summary}")
        return verdict.to_dict()
