"""plan_rotation(backups, policy, now): GFS rotation, pinned by golden files.

Each golden file in ``tests/fixtures/backup_rotation/`` holds one scenario: the policy, ``now``
and one line per backup (input: source, id, finished_at, verified; decision: keep, reasons).
Regenerate them after an intended change with
``BACKUP_ROTATION_REGENERATE_GOLDEN=1 pytest tests/unit/test_backup_rotation.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from amas.backup.rotation import BackupRef, RotationDecision, RotationPolicy, plan_rotation, summarize

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "backup_rotation"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)  # a Monday, ISO week 2026-W25


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def ref(moment: datetime, verified: bool = True, source: str = "store") -> BackupRef:
    return BackupRef(id=f"{moment:%Y%m%dT%H%M}", finished_at=moment, verified=verified, source=source)


def only(**rules: int) -> RotationPolicy:
    """A policy keeping only what ``rules`` name (the defaults keep something under every rule)."""
    return RotationPolicy.model_validate(dict.fromkeys(("last", "daily", "weekly", "monthly", "yearly"), 0) | rules)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    policy: RotationPolicy
    backups: tuple[BackupRef, ...]


def nightly_year() -> Scenario:
    missed = {date(2026, 3, 31), *days(date(2026, 6, 8), date(2026, 6, 10))}
    unverified = {date(2025, 12, 31), date(2026, 2, 28), date(2026, 5, 31), date(2026, 6, 15),
                  *days(date(2026, 6, 1), date(2026, 6, 7))}
    nightly = [ref(at(day, 2, 30), verified=day not in unverified)
               for day in days(date(2025, 6, 16), date(2026, 6, 15)) if day not in missed]
    return Scenario(
        "nightly_year.json",
        "A year of nightly backups at 02:30 under the default policy. Missed nights: 2026-03-31 and "
        "2026-06-08..10. Unverified: last night, the whole ISO week 2026-W23, and the last night of "
        "2025, of February and of May. 2026-06-12 also has a manual backup at 14:05, never verified.",
        RotationPolicy(),
        (*nightly, ref(at(date(2026, 6, 12), 14, 5), verified=False)),
    )


def two_sources() -> Scenario:
    store = [ref(at(day, hour), verified=at(day, hour) < at(date(2026, 6, 15), 0), source="store")
             for day in days(date(2026, 6, 6), date(2026, 6, 15)) for hour in (0, 6, 12, 18)
             if at(day, hour) <= at(date(2026, 6, 15), 6)]
    skewed = ref(at(date(2026, 6, 15), 14), source="store")
    objects = [ref(at(day, 3), verified=day.isoweekday() == 7, source="objects")
               for day in days(date(2026, 5, 2), date(2026, 6, 15))]
    return Scenario(
        "two_sources.json",
        "Two sources, rotated independently; the input interleaves them. store: every 6 hours, its two "
        "backups of 2026-06-15 unverified, and one stamped 14:00 today by a skewed clock (after now). "
        "objects: nightly at 03:00, restore-verified on Sundays only.",
        only(last=2, daily=3, weekly=2, monthly=2),
        tuple(sorted([*store, skewed, *objects], key=lambda b: b.finished_at)),
    )


def only_unverified() -> Scenario:
    return Scenario(
        "only_unverified.json",
        "Three weeks of nightly backups of which none passed restore verification: every bucket is "
        "represented by its newest backup, and nothing is the newest verified.",
        only(last=2, daily=5, weekly=3, monthly=2, yearly=1),
        tuple(ref(at(day, 2, 30), verified=False) for day in days(date(2026, 5, 26), date(2026, 6, 15))),
    )


def last_one() -> Scenario:
    unverified = {date(2026, 6, 11), date(2026, 6, 14), date(2026, 6, 15)}
    return Scenario(
        "last_one_newest_verified_older.json",
        "Policy last=1 only, and the two newest backups failed verification: the newest is kept as the "
        "last, 2026-06-13 as the newest verified, every other backup is dropped.",
        only(last=1),
        tuple(ref(at(day, 2, 30), verified=day not in unverified)
              for day in days(date(2026, 6, 10), date(2026, 6, 15))),
    )


SCENARIOS: tuple[Callable[[], Scenario], ...] = (nightly_year, two_sources, only_unverified, last_one)


def document(scenario: Scenario) -> dict[str, Any]:
    decisions = plan_rotation(scenario.backups, scenario.policy, NOW)
    verified = {(b.source, b.id): b.verified for b in scenario.backups}
    return {
        "scenario": scenario.description,
        "now": NOW.isoformat(),
        "policy": scenario.policy.model_dump(),
        "summary": summarize(decisions),
        "decisions": [{"source": d.source, "id": d.id, "finished_at": d.finished_at.isoformat(),
                       "verified": verified[(d.source, d.id)], "keep": d.keep, "reasons": list(d.reasons)}
                      for d in decisions],
    }


def render(produced: dict[str, Any]) -> str:
    """JSON with one line per decision, so a review diff names exactly the backups that changed."""
    head = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
            for key, value in produced.items() if key != "decisions"]
    rows = ",\n".join(f"    {json.dumps(row, ensure_ascii=False)}" for row in produced["decisions"])
    return "{\n" + ",\n".join([*head, f'  "decisions": [\n{rows}\n  ]']) + "\n}\n"


def check_golden(name: str, produced: dict[str, Any]) -> None:
    path = GOLDEN / name
    if os.environ.get("BACKUP_ROTATION_REGENERATE_GOLDEN") == "1":
        path.write_text(render(produced), encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with BACKUP_ROTATION_REGENERATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text(encoding="utf-8")) == produced, f"{name} differs; see the module docstring"


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda build: build.__name__)
def test_each_scenario_matches_its_golden_file(build: Callable[[], Scenario]) -> None:
    scenario = build()
    check_golden(scenario.name, document(scenario))


def reasons_by_id(decisions: list[RotationDecision], source: str = "store") -> dict[str, tuple[str, ...]]:
    return {d.id: d.reasons for d in decisions if d.source == source}


def test_a_backup_chosen_by_every_rule_lists_every_reason_in_order() -> None:
    backups = [ref(at(date(2026, 6, 13), 2, 30), verified=False), ref(at(date(2026, 6, 14), 2, 30)),
               ref(at(date(2026, 6, 15), 2, 30))]
    decisions = plan_rotation(backups, RotationPolicy(), NOW)
    assert [(d.id, d.keep, d.reasons) for d in decisions] == [
        ("20260615T0230", True, ("last 1 of 3", "daily 2026-06-15", "weekly 2026-W25", "monthly 2026-06",
                                 "yearly 2026", "newest verified")),
        ("20260614T0230", True, ("last 2 of 3", "daily 2026-06-14", "weekly 2026-W24")),
        ("20260613T0230", True, ("last 3 of 3", "daily 2026-06-13")),
    ]


def test_the_newest_verified_backup_is_kept_when_no_rule_selects_it() -> None:
    backups = [ref(at(date(2026, 6, 15), 2, 30), verified=False), ref(at(date(2026, 6, 14), 2, 30)),
               ref(at(date(2026, 6, 13), 2, 30))]
    decisions = plan_rotation(backups, only(last=1), NOW)
    assert [(d.id, d.keep, d.reasons) for d in decisions] == [
        ("20260615T0230", True, ("last 1 of 1",)),
        ("20260614T0230", True, ("newest verified",)),
        ("20260613T0230", False, ("not selected by any rule",)),
    ]


def test_a_bucket_is_represented_by_its_newest_verified_backup() -> None:
    week = [ref(at(day, 2, 30), verified=day == date(2026, 6, 9)) for day in days(date(2026, 6, 8), date(2026, 6, 14))]
    decisions = plan_rotation(week, only(weekly=1), NOW)
    assert [d.id for d in decisions if d.keep] == ["20260609T0230"]
    assert reasons_by_id(decisions)["20260609T0230"] == ("weekly 2026-W24", "newest verified")


RANDOM_POLICIES = (RotationPolicy(), only(last=1), only(daily=2, monthly=1), only(weekly=3, yearly=1), only(yearly=2))


def random_backups(seed: int) -> list[BackupRef]:
    rng = random.Random(seed)
    return [BackupRef(f"b{n:03d}", NOW - timedelta(hours=rng.uniform(-12, 24 * 500)), rng.random() < 0.3,
                      rng.choice(("store", "objects")))
            for n in range(rng.randint(1, 80))]


ORACLE_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}


@pytest.mark.parametrize("policy", RANDOM_POLICIES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p if v))
@pytest.mark.parametrize("seed", range(12))
def test_random_backups_get_every_reason_a_brute_force_oracle_expects(seed: int, policy: RotationPolicy) -> None:
    backups = random_backups(seed)
    decisions = plan_rotation(backups, policy, NOW)
    assert sorted(d.id for d in decisions) == sorted(b.id for b in backups)
    for source in {b.source for b in backups}:
        mine = [b for b in backups if b.source == source]
        past = sorted((b for b in mine if b.finished_at <= NOW), key=lambda b: (b.finished_at, b.id), reverse=True)
        expected: dict[str, list[str]] = {b.id: ["newer than now"] for b in mine if b.finished_at > NOW}
        for position, backup in enumerate(past[:policy.last], start=1):
            expected.setdefault(backup.id, []).append(f"last {position} of {policy.last}")
        for rule, bucket_of in ORACLE_BUCKETS.items():
            for bucket in sorted({bucket_of(b.finished_at) for b in past}, reverse=True)[:getattr(policy, rule)]:
                members = [b for b in past if bucket_of(b.finished_at) == bucket]
                chosen = max([b for b in members if b.verified] or members, key=lambda b: (b.finished_at, b.id))
                expected.setdefault(chosen.id, []).append(f"{rule} {bucket}")
        verified = [b for b in past if b.verified]
        if verified:
            expected.setdefault(verified[0].id, []).append("newest verified")
        got = reasons_by_id(decisions, source)
        assert {i: r for i, r in got.items() if r != ("not selected by any rule",)} == \
            {i: tuple(r) for i, r in expected.items()}
        assert all(d.keep == (d.reasons != ("not selected by any rule",)) for d in decisions)


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_input_gives_the_same_plan_and_the_input_is_untouched(seed: int) -> None:
    backups = [*nightly_year().backups, *two_sources().backups]
    expected = plan_rotation(backups, RotationPolicy(), NOW)
    shuffled = list(backups)
    random.Random(seed).shuffle(shuffled)
    before = list(shuffled)
    assert plan_rotation(shuffled, RotationPolicy(), NOW) == expected
    assert plan_rotation(iter(shuffled), RotationPolicy(), NOW) == expected
    assert shuffled == before


def test_ties_in_time_are_broken_by_id() -> None:
    moment = at(date(2026, 6, 15), 2, 30)
    backups = [BackupRef("a", moment, True), BackupRef("b", moment, True)]
    for given in (backups, backups[::-1]):
        decisions = plan_rotation(given, only(last=1), NOW)
        assert [(d.id, d.reasons) for d in decisions] == [("b", ("last 1 of 1", "newest verified")),
                                                         ("a", ("not selected by any rule",))]


def test_backups_after_now_are_kept_and_take_no_slot() -> None:
    backups = [ref(NOW + timedelta(hours=2)), ref(NOW, verified=False), ref(NOW - timedelta(hours=6))]
    decisions = plan_rotation(backups, only(last=1, daily=1), NOW)
    assert [(d.id, d.reasons) for d in decisions] == [
        ("20260615T1400", ("newer than now",)),
        ("20260615T1200", ("last 1 of 1",)),  # finished exactly at now: not after it
        ("20260615T0600", ("daily 2026-06-15", "newest verified")),
    ]


def test_buckets_are_utc_whatever_the_zone_of_the_datetimes() -> None:
    plus_two = timezone(timedelta(hours=2))
    late = BackupRef("late", datetime(2026, 6, 15, 1, 0, tzinfo=plus_two), True)  # 2026-06-14 23:00 UTC
    decisions = plan_rotation([late], only(daily=1), NOW.astimezone(timezone(timedelta(hours=-7))))
    assert decisions == [RotationDecision("late", "store", datetime(2026, 6, 14, 23, 0, tzinfo=UTC), True,
                                          ("daily 2026-06-14", "newest verified"))]
    assert decisions[0].finished_at.utcoffset() == timedelta(0)


def test_weekly_buckets_are_iso_weeks_across_year_ends() -> None:
    backups = [ref(at(day, 12)) for day in (date(2021, 1, 3), date(2024, 12, 30), date(2026, 1, 1))]
    decisions = plan_rotation(backups, only(weekly=3), NOW)
    assert [d.reasons[0] for d in decisions] == ["weekly 2026-W01", "weekly 2025-W01", "weekly 2020-W53"]


def test_an_id_given_twice_in_one_source_is_refused_but_not_across_sources() -> None:
    moment = at(date(2026, 6, 14), 2, 30)
    with pytest.raises(ValueError, match="source 'store': backup id 'x' is given more than once"):
        plan_rotation([BackupRef("x", moment, True), BackupRef("x", moment + timedelta(days=1), True)],
                      RotationPolicy(), NOW)
    decisions = plan_rotation([BackupRef("x", moment, True), BackupRef("x", moment, True, "objects")],
                              RotationPolicy(), NOW)
    assert [(d.source, d.keep) for d in decisions] == [("objects", True), ("store", True)]


def test_summary_counts_keep_and_drop_per_source_by_name() -> None:
    backups = two_sources().backups
    decisions = plan_rotation(backups, two_sources().policy, NOW)
    summary = summarize(decisions)
    assert list(summary) == ["objects", "store"]
    for source, counts in summary.items():
        assert counts == {"keep": sum(d.keep for d in decisions if d.source == source),
                          "drop": sum(not d.keep for d in decisions if d.source == source)}
        assert counts["keep"] + counts["drop"] == sum(b.source == source for b in backups)
    assert summarize(reversed(decisions)) == summary
    assert summarize([]) == {}
    assert plan_rotation([], RotationPolicy(), NOW) == []


def test_the_policy_defaults_and_validation() -> None:
    assert RotationPolicy().model_dump() == {"last": 3, "daily": 7, "weekly": 4, "monthly": 12, "yearly": 3}
    with pytest.raises(ValueError, match="must keep something, but last, daily, weekly, monthly, yearly are all 0"):
        only()
    with pytest.raises(ValidationError, match="daily\n  Input should be greater than or equal to 0"):
        RotationPolicy(daily=-1)
    with pytest.raises(ValidationError, match="hourly\n  Extra inputs are not permitted"):
        RotationPolicy.model_validate({"hourly": 24})
    with pytest.raises(ValidationError, match="frozen"):
        RotationPolicy().last = 0  # type: ignore[misc]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="backup store/x: finished_at must be a timezone-aware datetime"):
        BackupRef("x", datetime(2026, 6, 15, 2, 30), True)
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        plan_rotation([ref(at(date(2026, 6, 15), 2, 30))], RotationPolicy(), datetime(2026, 6, 15, 12))
