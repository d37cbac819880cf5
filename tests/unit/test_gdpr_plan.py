"""The erasure plan is a pure function of what was found and the legal holds; mentions match whole tokens."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from amas.gdpr.discovery import (
    ArtifactRow,
    DatasetDiscovery,
    Discovery,
    Found,
    SubjectRow,
    mention_pattern,
    mentions,
    redact_mentions,
    text_needles,
)
from amas.gdpr.identifiers import parse_identifier
from amas.gdpr.plan import Holds, holds_for, plan_erasure, summarise
from amas.retention.policy import load_policies

pytestmark = pytest.mark.unit


def found_everything(**changes: object) -> Discovery:
    values: dict[str, object] = {
        "query": parse_identifier("CRM-1001"),
        "subjects": [SubjectRow(7, "CRM-1001", "ann@example.org", "Ann Lee")],
        "erased_subjects": 0,
        "tasks": [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()],
        "task_cases": {"CASE-9": 1},
        "results_of_tasks": 2,
        "mentioning_tasks": [uuid.uuid4()],
        "mentioning_results": [5],
        "artifacts": [ArtifactRow(1, "evidence/a.bin"), ArtifactRow(2, "evidence/b.bin")],
        "objects": ["evidence/a.bin"],
        "exports": ["gdpr/EX-1/export.zip"],
        "audit_mentions": 0,
        "audit_events": 40,
        "ledger_entries": 0,
        "datasets": DatasetDiscovery(root=Path("/w"), found=[
            Found("dataset", "data/raw/people.parquet", 1, "subject_id or email matches", ("email",), "m1"),
            Found("dataset", "data/features/daily_events.parquet", 0, "derived; holds no per-person rows"),
        ], subject_ids=frozenset({"CRM-1001"})),
    }
    values.update(changes)
    return Discovery(**values)  # type: ignore[arg-type]


def table(steps: list) -> list[tuple[str, str, int]]:
    return [(s.name, s.action, s.count) for s in steps]


def test_everything_found_is_erased_in_dependency_order() -> None:
    steps = plan_erasure(found_everything(), Holds(), ledger_digests=3)
    assert table(steps) == [
        ("artifact_objects", "delete", 1),  # objects before the rows that find them
        ("artifacts", "delete", 2),
        ("exports", "delete", 1),
        ("agent_tasks", "delete", 3),  # after artifacts: deleting a task cuts the artifact's link
        ("task_results", "delete", 2),
        ("task_mentions", "redact", 1),
        ("result_mentions", "redact", 1),
        ("data_subjects", "anonymise", 1),  # after mentions: it loses the identifiers they are found by
        ("ledger", "record", 3),
        ("dataset:data/raw/people.parquet", "rewrite", 1),
        ("dataset:data/features/daily_events.parquet", "regenerate", 0),
        ("audit_events", "keep", 0),
    ]
    by_name = {s.name: s for s in steps}
    assert by_name["data_subjects"].strategy == ("external_ref: hash_identifier, email: null_personal_fields, "
                                                 "display_name: null_personal_fields")
    assert by_name["task_mentions"].strategy == "redact"
    assert "legal obligation" in by_name["audit_events"].reason
    assert "no event mentions the subject" in by_name["audit_events"].reason
    assert summarise(steps)["delete"] == 1 + 2 + 1 + 3 + 2


def test_a_hold_on_the_subject_row_keeps_it_out_of_the_ledger_and_the_datasets() -> None:
    steps = plan_erasure(found_everything(), Holds(tables={"data_subjects": "legal hold: litigation"}), 3)
    actions = {s.name: (s.action, s.reason) for s in steps}
    assert actions["data_subjects"][0] == "keep" and "litigation" in actions["data_subjects"][1]
    assert "ledger" not in actions
    assert actions["dataset:data/raw/people.parquet"][0] == "keep"
    assert "dataset:data/features/daily_events.parquet" not in actions
    assert actions["agent_tasks"][0] == "delete"  # other tables are not held


def test_held_tables_and_cases_are_kept_with_their_reason() -> None:
    holds = Holds(tables={"agent_tasks": "hold T", "artifacts": "hold A"}, cases={"CASE-9": "hold on case CASE-9"})
    steps = table(plan_erasure(found_everything(), holds, 3))
    assert ("case:CASE-9", "keep", 1) in steps
    assert ("agent_tasks", "keep", 3) in steps and ("task_results", "keep", 2) in steps
    assert ("artifacts", "keep", 2) in steps and not any(s[0] == "artifact_objects" for s in steps)
    assert ("task_mentions", "keep", 1) in steps
    assert ("result_mentions", "redact", 1) in steps  # task_results itself is not held


def test_audit_mentions_are_reported_not_changed() -> None:
    steps = plan_erasure(found_everything(audit_mentions=2), Holds(), 3)
    audit = steps[-1]
    assert (audit.action, audit.count) == ("keep", 2)
    assert "2 event(s) mention the subject" in audit.reason


def test_nothing_found_plans_nothing_but_the_audit_statement() -> None:
    empty = found_everything(subjects=[], tasks=[], task_cases={}, results_of_tasks=0, mentioning_tasks=[],
                             mentioning_results=[], artifacts=[], objects=[], exports=[], datasets=None)
    assert empty.nothing_found
    assert table(plan_erasure(empty, Holds(), 0)) == [("audit_events", "keep", 0)]


def test_holds_come_from_the_policies_active_today(tmp_path: Path) -> None:
    (tmp_path / "store.yaml").write_text("""
policies:
  - category: agent_tasks
    description: tasks
    table: agent_tasks
    age_field: finished_at
    max_age_days: 400
    action: delete
    legal_basis: legitimate interests
    legal_holds:
      - {subject: crm-1001, reason: litigation 2026-17}
      - {subject: CRM-2002, reason: expired, until: 2020-01-01}
  - category: artifacts
    description: artifacts
    table: artifacts
    age_field: created_at
    max_age_days: 700
    action: delete
    legal_basis: legitimate interests
    legal_holds:
      - {category: artifacts, reason: regulator inquiry, until: 2099-12-31}
""", encoding="utf-8")
    policies = load_policies(tmp_path)
    holds = holds_for(policies, ["CRM-1001"], date(2026, 11, 26))
    assert set(holds.tables) == {"agent_tasks", "artifacts"}
    assert "litigation 2026-17" in holds.tables["agent_tasks"] and "subject" in holds.tables["agent_tasks"]
    assert "until 2099-12-31" in holds.tables["artifacts"]
    assert holds_for(policies, ["CRM-2002"], date(2026, 11, 26)).tables.keys() == {"artifacts"}


def test_the_committed_policies_load_for_planning() -> None:
    holds = holds_for(load_policies(), ["nobody-in-particular"], date(2026, 11, 26))
    assert isinstance(holds.tables, dict)


@pytest.mark.parametrize(("text", "hit"), [
    ("sent to ann@example.org.", True),
    ("ANN@EXAMPLE.ORG", True),
    ("joann@example.org", False),
    ("ann@example.org.uk", False),
    ("ann@example.organisation", False),
    ("<ann@example.org>", True),
    ("ref CRM-1001, closed", True),
    ("ref CRM-10011", False),
])
def test_mentions_match_whole_tokens_case_insensitively(text: str, hit: bool) -> None:
    pattern = mention_pattern(text_needles(["ann@example.org", "CRM-1001"]))
    assert mentions({"deep": [{"note": text}]}, pattern) is hit


def test_redaction_reaches_nested_values_and_keys_and_nothing_else() -> None:
    pattern = mention_pattern(text_needles(["ann@example.org"]))
    value = {"to": ["ann@example.org", "bo@example.org"], "ann@example.org": 3, "n": 5, "ok": True}
    assert redact_mentions(value, pattern, "[redacted]") == {
        "to": ["[redacted]", "bo@example.org"], "[redacted]": 3, "n": 5, "ok": True}


def test_short_identifiers_are_not_searched_in_free_text() -> None:
    assert text_needles(["42", "ab@c", "  CRM-1 "]) == []
    assert mention_pattern([]) is None and not mentions("42", None)
