"""plan(items, policies, now): the pure decision, pinned by golden files.

Regenerate the golden files after an intended change with
``RETENTION_REGENERATE_GOLDEN=1 pytest tests/unit/test_retention_plan.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from amas.retention.plan import Item, decide, plan
from amas.retention.policy import Policy

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "retention"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def policy(**fields: Any) -> Policy:
    base = {"description": "test", "legal_basis": "legitimate interests", "action": "delete"}
    return Policy.model_validate(base | fields)


POLICIES = (
    policy(category="task_results", table="task_results", age_field="created_at", max_age_days=365,
           legal_holds=[{"subject": "crm-held", "reason": "litigation 2026-117", "until": "2026-12-31"},
                        {"subject": "crm-expired", "reason": "old inquiry", "until": "2026-06-14"},
                        {"case": "CASE-7", "reason": "open investigation"}]),
    policy(category="agent_tasks", table="agent_tasks", age_field="finished_at", max_age_days=400),
    policy(category="artifacts", table="artifacts", age_field="created_at", max_age_days=730, action="archive",
           legal_holds=[{"category": "artifacts", "reason": "regulator inquiry", "until": "2026-06-15"}]),
    policy(category="audit_events", table="audit_events", age_field="occurred_at", max_age_days=2555,
           action="archive", legal_basis="legal obligation"),
    policy(category="erased_subjects", table="data_subjects", age_field="erased_at", max_age_days=30,
           action="anonymize", strategy="null_personal_fields", columns=["email", "display_name"],
           legal_basis="legal obligation"),
    policy(category="flow_runs", kind="prefect_flow_runs", max_age_days=90),
)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


ITEMS = [
    Item("task_results", "1", ago(10)),
    Item("task_results", "2", ago(365)),  # exactly at the limit: not yet due
    Item("task_results", "3", ago(365) - timedelta(microseconds=1)),  # just past it: due since 0 days
    Item("task_results", "4", ago(400), subject="crm-1"),
    Item("task_results", "5", ago(400), subject="crm-held"),
    Item("task_results", "6", ago(400), subject="crm-expired"),
    Item("task_results", "7", ago(400), case="CASE-7"),
    Item("task_results", "8", ago(100), subject="crm-held"),  # held, but not due anyway
    Item("task_results", "9", NOW + timedelta(days=2)),
    Item("agent_tasks", "a1", None),
    Item("agent_tasks", "a2", ago(500), dependents_held="task_results"),
    Item("agent_tasks", "a3", ago(401.5), subject="crm-held", case="CASE-7"),  # holds are per policy
    Item("artifacts", "10", ago(800)),  # category hold, last day today
    Item("audit_events", "11", ago(2600)),
    Item("audit_events", "12", ago(20)),
    Item("erased_subjects", "13", ago(31)),
    Item("erased_subjects", "14", ago(45), already_done=True),
    Item("erased_subjects", "15", None),
    Item("flow_runs", "0b8e…", ago(91)),
]


def check_golden(name: str, produced: dict[str, Any]) -> None:
    path = GOLDEN / name
    text = json.dumps(produced, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("RETENTION_REGENERATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with RETENTION_REGENERATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text(encoding="utf-8")) == produced, f"{name} differs; see the module docstring"


def test_the_plan_of_every_kind_of_item_matches_the_golden_file() -> None:
    check_golden("plan_store.json", plan(ITEMS, POLICIES, NOW).to_dict())


def test_a_day_later_the_category_hold_has_ended_and_more_is_due() -> None:
    check_golden("plan_store_next_day.json", plan(ITEMS, POLICIES, NOW + timedelta(days=1)).to_dict())


def test_the_plan_is_pure_same_inputs_same_output_inputs_untouched() -> None:
    items = list(ITEMS)
    first = plan(items, POLICIES, NOW).to_dict()
    assert plan(reversed(list(reversed(items))), POLICIES, NOW).to_dict() == first
    assert items == ITEMS


def test_the_boundary_is_exclusive_and_another_zone_gives_the_same_verdict() -> None:
    results = POLICIES[0]
    at_limit = Item("task_results", "x", ago(365))
    assert decide(at_limit, results, NOW).decision == "keep"
    past = Item("task_results", "x", ago(365) - timedelta(seconds=1))
    assert (decide(past, results, NOW).decision, decide(past, results, NOW).overdue_days) == ("delete", 0)
    from datetime import timezone

    elsewhere = NOW.astimezone(timezone(timedelta(hours=-7)))
    assert decide(past, results, elsewhere) == decide(past, results, NOW)


def test_counts_add_up_per_category() -> None:
    result = plan(ITEMS, POLICIES, NOW)
    for category in result.categories:
        counts = category.counts
        assert counts["items"] == sum(counts[k] for k in ("act", "held", "done", "within_limit", "no_age"))
    assert result.category("task_results").counts == {"items": 9, "act": 3, "held": 2, "done": 0,
                                                      "within_limit": 4, "no_age": 0}


def test_a_naive_now_or_an_uncovered_category_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan(ITEMS, POLICIES, datetime(2026, 6, 15))
    with pytest.raises(ValueError, match="category 'backups', which no policy covers"):
        plan([Item("backups", "1", ago(1))], POLICIES, NOW)
    with pytest.raises(ValueError, match="aware datetime"):
        plan([Item("task_results", "1", datetime(2020, 1, 1))], POLICIES, NOW)
