"""Which backups to keep: grandfather-father-son rotation as a pure function.

``plan_rotation(backups, policy, now)`` decides, for every backup, keep or drop and every
reason why. It reads no store and no clock, so the same inputs always give the same plan,
which golden files pin (``tests/fixtures/backup_rotation/``); deleting what it drops happens
elsewhere.

The rules are restic's ``forget --keep-last/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly``:

- ``last`` N keeps the N newest backups, verified or not ("last 1 of 3").
- ``daily``, ``weekly``, ``monthly`` and ``yearly`` N each keep one backup from each of the N
  most recent buckets that hold a backup. Buckets are taken in UTC: the date ("daily
  2026-06-15"), the ISO week ("weekly 2026-W25"), the month ("monthly 2026-06"), the year
  ("yearly 2026"). A bucket without backups (missed nights) takes no slot, so after a gap a
  rule reaches further back, as in restic.
- Rules overlap freely: a backup chosen by several rules is kept once and lists every reason.
  A backup no rule chose is dropped, "not selected by any rule".

Our additions:

- A bucket is represented by its newest *verified* backup (restore verification passed); only
  a bucket with no verified backup is represented by its newest backup. restic takes the
  newest whatever its state; we would rather keep a Tuesday that restores than a Sunday that
  did not. ``last`` is the exception: it keeps the newest backups as they are.
- The newest verified backup of each source is always kept ("newest verified"), whatever the
  policy: whatever else happens, each source keeps one backup known to restore.
- A backup finished after ``now`` (a skewed clock) is kept, "newer than now", and takes no
  part in the rules: it uses no slot and cannot be the newest verified, since its time cannot
  be trusted; the newest verified backup before ``now`` is kept beside it.
- Each source (``BackupRef.source``) is rotated on its own.

Decisions come sources by name, and within a source newest first. Two backups finished at the
same instant are ordered by id: the greater id counts as the newer. Every datetime must be
timezone-aware (``ValueError`` otherwise); decisions carry ``finished_at`` in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby, islice

from pydantic import BaseModel, ConfigDict, Field, model_validator

RULES = ("last", "daily", "weekly", "monthly", "yearly")
NEWER_THAN_NOW = "newer than now"
NEWEST_VERIFIED = "newest verified"
NOT_SELECTED = "not selected by any rule"


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (rotation buckets are UTC), "
                         f"got the naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BackupRef:
    """One finished backup, as rotation sees it."""

    id: str
    finished_at: datetime
    """Timezone-aware; its buckets are taken in UTC."""
    verified: bool
    """Restore verification passed."""
    source: str = "store"
    """What was backed up; each source is rotated on its own."""

    def __post_init__(self) -> None:
        _utc(self.finished_at, f"backup {self.source}/{self.id}: finished_at")


class RotationPolicy(BaseModel):
    """How many backups each rule keeps, per source (restic's ``forget --keep-*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last: int = Field(3, ge=0, description="Keep the N newest backups, verified or not.")
    daily: int = Field(7, ge=0, description="Keep one backup of each of the N most recent UTC days with backups.")
    weekly: int = Field(4, ge=0, description="Keep one backup of each of the N most recent ISO weeks with backups.")
    monthly: int = Field(12, ge=0, description="Keep one backup of each of the N most recent months with backups.")
    yearly: int = Field(3, ge=0, description="Keep one backup of each of the N most recent years with backups.")

    @model_validator(mode="after")
    def _keeps_something(self) -> RotationPolicy:
        if not any(getattr(self, rule) for rule in RULES):
            raise ValueError(f"a rotation policy must keep something, but {', '.join(RULES)} are all 0; "
                             "set at least one of them above 0")
        return self


@dataclass(frozen=True, slots=True)
class RotationDecision:
    id: str
    source: str
    finished_at: datetime
    """In UTC."""
    keep: bool
    reasons: tuple[str, ...]
    """Why it is kept: "newer than now" alone, or the rules' reasons (last, daily, weekly, monthly, yearly,
    "newest verified", in that order); ("not selected by any rule",) when it is dropped."""


def _iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", lambda moment: moment.date().isoformat()),
    ("weekly", _iso_week),
    ("monthly", lambda moment: f"{moment.year:04d}-{moment.month:02d}"),
    ("yearly", lambda moment: f"{moment.year:04d}"),
)
"""Each calendar rule and the UTC bucket of a moment, as its reasons name it."""


def plan_rotation(backups: Iterable[BackupRef], policy: RotationPolicy, now: datetime) -> list[RotationDecision]:
    """Keep or drop every backup, with its reasons; see the module docstring for the rules.

    A backup id given twice within one source is refused (``ValueError``), as is a naive ``now``.
    """
    now = _utc(now, "now")
    by_source: dict[str, list[BackupRef]] = {}
    for backup in backups:
        by_source.setdefault(backup.source, []).append(backup)
    return [decision for source in sorted(by_source)
            for decision in _rotate(source, by_source[source], policy, now)]


def _rotate(source: str, backups: Sequence[BackupRef], policy: RotationPolicy,
            now: datetime) -> list[RotationDecision]:
    newest_first = sorted(backups, key=lambda b: (b.finished_at, b.id), reverse=True)
    reasons: dict[str, list[str]] = {}
    for backup in newest_first:
        if backup.id in reasons:
            raise ValueError(f"source {source!r}: backup id {backup.id!r} is given more than once")
        reasons[backup.id] = [NEWER_THAN_NOW] if backup.finished_at > now else []
    past = [b for b in newest_first if b.finished_at <= now]
    for position, backup in enumerate(past[:policy.last], start=1):
        reasons[backup.id].append(f"last {position} of {policy.last}")
    for rule, bucket_of in BUCKETS:
        # Sorted by time, each bucket's backups are adjacent, newest bucket first.
        buckets = groupby(past, key=lambda b: bucket_of(b.finished_at.astimezone(UTC)))
        for bucket, members in islice(buckets, getattr(policy, rule)):
            in_bucket = list(members)
            representative = next((b for b in in_bucket if b.verified), in_bucket[0])
            reasons[representative.id].append(f"{rule} {bucket}")
    newest_verified = next((b for b in past if b.verified), None)
    if newest_verified is not None:
        reasons[newest_verified.id].append(NEWEST_VERIFIED)
    return [RotationDecision(id=b.id, source=source, finished_at=b.finished_at.astimezone(UTC),
                             keep=bool(reasons[b.id]), reasons=tuple(reasons[b.id]) or (NOT_SELECTED,))
            for b in newest_first]


def summarize(decisions: Iterable[RotationDecision]) -> dict[str, dict[str, int]]:
    """How many backups each source keeps and drops: ``{"store": {"keep": 24, "drop": 339}}``, sources by name."""
    counts: dict[str, dict[str, int]] = {}
    for decision in decisions:
        tally = counts.setdefault(decision.source, {"keep": 0, "drop": 0})
        tally["keep" if decision.keep else "drop"] += 1
    return dict(sorted(counts.items()))
