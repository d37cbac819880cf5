"""What retention would do to each item, and why: a pure function of (items, policies, now).

No store, no clock, no storage: the same inputs always give the same plan, which golden tests
pin (``tests/fixtures/retention/``). The SQL side (``amas.retention.query``) asks the same
questions of whole tables at once, and turns sample rows into ``Item``s so the reasons shown
by ``amas retention plan`` come from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from amas.retention.policy import Policy, cutoff

Decision = Literal["keep", "delete", "anonymize", "archive"]
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class Item:
    """One row (or flow run, artifact, object) of a category, with what its holds may refer to."""

    category: str
    id: str
    age: datetime | None
    """The value of the policy's age field; None never becomes due."""
    subject: str | None = None
    """The external_ref of the data subject the row is about, if any."""
    case: str | None = None
    """The case id the row belongs to, if any."""
    dependents_held: str | None = None
    """A category whose held rows depend on this one (deleting it would delete or unlink them)."""
    already_done: bool = False
    """The action was already applied (an anonymized row)."""


@dataclass(frozen=True)
class Verdict:
    category: str
    id: str
    decision: Decision
    reason: str
    strategy: str | None = None
    held: bool = False
    overdue_days: int | None = None
    """Whole days since the row passed its limit (None when it has not)."""

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "id": self.id, "decision": self.decision, "strategy": self.strategy,
                "held": self.held, "overdue_days": self.overdue_days, "reason": self.reason}


@dataclass(frozen=True)
class CategoryPlan:
    category: str
    kind: str
    action: str
    strategy: str | None
    max_age_days: int
    cutoff: datetime
    counts: Mapping[str, int] = field(default_factory=dict)
    """items, act (due and not held), held (due but held), done (due, already applied), within_limit, no_age."""

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "kind": self.kind, "action": self.action, "strategy": self.strategy,
                "max_age_days": self.max_age_days, "cutoff": self.cutoff.isoformat(), "counts": dict(self.counts)}


@dataclass(frozen=True)
class RetentionPlan:
    as_of: datetime
    categories: tuple[CategoryPlan, ...]
    verdicts: tuple[Verdict, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "categories": [c.to_dict() for c in self.categories],
                "items": [v.to_dict() for v in self.verdicts]}

    def category(self, name: str) -> CategoryPlan:
        return next(c for c in self.categories if c.category == name)


COUNT_KEYS = ("items", "act", "held", "done", "within_limit", "no_age")


def _days(seconds: float) -> int:
    return math.floor(seconds / DAY_SECONDS)


def days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _keep(item: Item, reason: str, *, held: bool = False, overdue_days: int | None = None) -> Verdict:
    return Verdict(category=item.category, id=item.id, decision="keep", reason=reason, held=held,
                   overdue_days=overdue_days)


def decide(item: Item, policy: Policy, now: datetime) -> Verdict:
    """The verdict for one item under its category's policy at ``now`` (aware)."""
    day = now.astimezone(UTC).date()
    limit = cutoff(policy, now)
    if item.age is None:
        return _keep(item, f"{policy.age_field or 'age'} is empty: never due")
    if item.age.tzinfo is None:
        raise ValueError(f"item {item.category}/{item.id}: age must be an aware datetime")
    if item.age >= limit:
        age_days = _days((now - item.age).total_seconds())
        due_in = math.ceil((item.age - limit).total_seconds() / DAY_SECONDS)
        if age_days < 0:
            return _keep(item, f"within limit: dated after the as-of time, due in {days(due_in)}")
        return _keep(item, f"within limit: {age_days} of {days(policy.max_age_days)}, due in {days(due_in)}")
    overdue = _days((limit - item.age).total_seconds())
    due = f"due since {days(overdue)} (limit {days(policy.max_age_days)})"
    hold = policy.category_hold_on(day)
    if hold is None and item.subject is not None:
        hold = next((h for h in policy.active_holds(day) if h.subject == item.subject), None)
    if hold is None and item.case is not None:
        hold = next((h for h in policy.active_holds(day) if h.case == item.case), None)
    if hold is not None:
        return _keep(item, f"held by {hold.describe()}; {due}", held=True, overdue_days=overdue)
    if item.dependents_held is not None:
        return _keep(item, f"held: rows of {item.dependents_held} that depend on it are under a legal hold; {due}",
                     held=True, overdue_days=overdue)
    if item.already_done:
        return _keep(item, f"already {policy.action}d; {due}", overdue_days=overdue)
    return Verdict(category=item.category, id=item.id, decision=policy.action, reason=due,
                   strategy=policy.strategy, overdue_days=overdue)


def _count_key(verdict: Verdict, item: Item) -> str:
    if item.age is None:
        return "no_age"
    if verdict.overdue_days is None:
        return "within_limit"
    if verdict.held:
        return "held"
    return "done" if verdict.decision == "keep" else "act"


def plan(items: Iterable[Item], policies: Iterable[Policy], now: datetime) -> RetentionPlan:
    """Decide every item: keep, or the policy's action, with the reason; count per category.

    ``now`` must be aware. An item whose category has no policy is a caller's bug (``ValueError``).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("plan needs an aware 'now'; the store keeps UTC")
    by_category = {p.category: p for p in policies}
    counts: dict[str, dict[str, int]] = {name: dict.fromkeys(COUNT_KEYS, 0) for name in by_category}
    verdicts: list[Verdict] = []
    for item in items:
        policy = by_category.get(item.category)
        if policy is None:
            raise ValueError(f"item {item.id!r} has category {item.category!r}, which no policy covers")
        verdict = decide(item, policy, now)
        verdicts.append(verdict)
        counts[item.category]["items"] += 1
        counts[item.category][_count_key(verdict, item)] += 1
    categories = tuple(
        CategoryPlan(category=p.category, kind=p.kind, action=p.action, strategy=p.strategy,
                     max_age_days=p.max_age_days, cutoff=cutoff(p, now), counts=counts[p.category])
        for p in by_category.values()
    )
    return RetentionPlan(as_of=now.astimezone(UTC), categories=categories, verdicts=tuple(verdicts))
