"""The backup catalog as people read it: backups with verdicts, RPO and RTO, and GFS pruning.

RPO is the age of the newest *verified* backup: a backup nobody restored does not count. The
status of a source is a failure when its newest backup is unverified, or when its newest
verified backup is older than AMAS_BACKUP_MAX_AGE_HOURS. RTO is the measured restore time
(fetch, decode, restore) of the latest verifications.

``prune`` applies ``amas.backup.rotation.plan_rotation`` to the catalog: with ``dry_run`` it only
says what would go and why the rest stays; otherwise it deletes the dropped backups' objects
(manifest first) and marks their rows ``deleted``. A failed delete leaves the row as it was, so
running it again finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from amas.backup.engine import delete_backup_objects
from amas.backup.rotation import BackupRef, RotationDecision, RotationPolicy, plan_rotation
from amas.config import Settings
from amas.db.audit import append_event
from amas.db.models import Backup, BackupStatus, utcnow
from amas.db.session import session_scope
from amas.storage import Storage

LISTED = (BackupStatus.completed, BackupStatus.verified, BackupStatus.unverified)


def _aware(moment: datetime | None) -> datetime | None:
    from datetime import UTC

    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def backups(engine: Engine, *, include_deleted: bool = False) -> list[Backup]:
    """Catalog rows, newest first."""
    with session_scope(engine) as session:
        query = select(Backup).order_by(Backup.finished_at.desc().nulls_last(), Backup.id.desc())
        if not include_deleted:
            query = query.where(Backup.status.in_(LISTED))
        return list(session.scalars(query))


@dataclass
class SourceStatus:
    source: str
    ok: bool
    summary: str
    newest: str | None
    newest_status: str | None
    newest_verified: str | None
    rpo_hours: float | None
    last_rto_seconds: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ok": self.ok, "summary": self.summary, "newest": self.newest,
                "newest_status": self.newest_status, "newest_verified": self.newest_verified,
                "rpo_hours": self.rpo_hours, "last_rto_seconds": self.last_rto_seconds}


def status(rows: list[Backup], settings: Settings, now: datetime | None = None) -> list[SourceStatus]:
    """RPO/RTO per source (``store:postgresql``, ``store:sqlite``); a failure when stale or unverified."""
    now = now or utcnow()
    limit = settings.backup.max_age_hours
    by_source: dict[str, list[Backup]] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    if not by_source:
        return [SourceStatus("store", False, "no backup recorded", None, None, None, None, [])]
    result: list[SourceStatus] = []
    for source, items in sorted(by_source.items()):
        items = sorted(items, key=lambda r: _aware(r.finished_at) or now, reverse=True)
        newest = items[0]
        verified = [r for r in items if r.status is BackupStatus.verified]
        rtos = [round(r.rto_seconds, 2) for r in sorted(items, key=lambda r: _aware(r.verified_at) or now,
                                                        reverse=True) if r.rto_seconds is not None][:5]
        rpo = None
        problems: list[str] = []
        if verified:
            finished = _aware(verified[0].finished_at) or now
            rpo = round((now - finished).total_seconds() / 3600, 2)
            if rpo > limit:
                problems.append(f"stale: newest verified backup is {rpo:.1f} h old (limit {limit:g} h)")
        else:
            problems.append("no verified backup")
        if newest.status is BackupStatus.unverified:
            problems.append(f"newest backup {newest.id} failed restore verification")
        elif newest.status is BackupStatus.completed and newest is not (verified[0] if verified else None):
            problems.append(f"newest backup {newest.id} has not been verified yet")
        ok = not problems
        summary = (f"RPO {rpo:.1f} h (newest verified {verified[0].id})" if ok and verified
                   else "; ".join(problems))
        result.append(SourceStatus(source, ok, summary, newest.id, newest.status.value,
                                   verified[0].id if verified else None, rpo, rtos))
    return result


@dataclass
class PruneOutcome:
    decisions: list[RotationDecision]
    deleted: list[str]
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "deleted": self.deleted,
                "decisions": [{"id": d.id, "source": d.source, "finished_at": d.finished_at.isoformat(),
                               "keep": d.keep, "reasons": list(d.reasons)} for d in self.decisions]}


def policy_from(settings: Settings) -> RotationPolicy:
    b = settings.backup
    return RotationPolicy(last=b.keep_last, daily=b.keep_daily, weekly=b.keep_weekly, monthly=b.keep_monthly,
                          yearly=b.keep_yearly)


def prune(engine: Engine, storage: Storage, settings: Settings, *, dry_run: bool, now: datetime | None = None,
          actor: str = "backup-prune") -> PruneOutcome:
    now = now or utcnow()
    rows = [r for r in backups(engine) if r.finished_at is not None]
    refs = [BackupRef(id=r.id, finished_at=_aware(r.finished_at), verified=r.status is BackupStatus.verified,  # type: ignore[arg-type]
                      source=r.source) for r in rows]
    decisions = plan_rotation(refs, policy_from(settings), now)
    deleted: list[str] = []
    if not dry_run:
        for decision in decisions:
            if decision.keep:
                continue
            count = delete_backup_objects(storage, decision.id)
            with session_scope(engine) as session:
                row = session.get(Backup, decision.id)
                if row is not None:
                    row.status = BackupStatus.deleted
                append_event(session, actor=actor, action="backup.pruned", entity_type="backup",
                             entity_id=decision.id, details={"objects": count, "reasons": list(decision.reasons)})
            deleted.append(decision.id)
    return PruneOutcome(decisions, deleted, dry_run)
