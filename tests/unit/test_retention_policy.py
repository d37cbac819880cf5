"""Retention policies: the shipped files load, and every kind of mistake is refused in one line."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from amas import retention
from amas.config import load_settings
from amas.doctor import CHECKS, check_retention
from amas.errors import ConfigError
from amas.retention import STRATEGIES, cutoff, get_strategy, load_policies, policy_problems
from amas.retention.policy import PROJECT_DIR, Policy

pytestmark = pytest.mark.unit


def subjects_policy(**changes: Any) -> dict[str, Any]:
    policy = {
        "category": "erased_subjects",
        "description": "Erased data subjects.",
        "table": "data_subjects",
        "age_field": "erased_at",
        "max_age_days": 30,
        "action": "anonymize",
        "strategy": "null_personal_fields",
        "columns": ["email", "display_name"],
        "legal_basis": "legal obligation",
        "legal_holds": [],
    }
    policy.update(changes)
    return {k: v for k, v in policy.items() if v is not None}


def results_policy(**changes: Any) -> dict[str, Any]:
    policy = {
        "category": "task_results",
        "description": "Agent findings.",
        "table": "task_results",
        "age_field": "created_at",
        "max_age_days": 365,
        "action": "delete",
        "legal_basis": "legitimate interests",
    }
    policy.update(changes)
    return {k: v for k, v in policy.items() if v is not None}


def write(directory: Path, name: str, content: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def refusal(directory: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_policies(directory)
    message = str(caught.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_the_shipped_policies_load_against_the_real_schema() -> None:
    policies = load_policies()
    assert policies.categories == ["prefect_flow_runs", "prefect_artifacts", "quality_reports", "compliance_reports",
                                   "task_results", "agent_tasks", "artifacts", "audit_events", "erased_subjects"]
    assert all(policy_problems(p) == [] for p in policies)
    audit = policies.get("audit_events")
    assert (audit.table, audit.age_field, audit.max_age_days, audit.action) == ("audit_events", "occurred_at", 2555, "archive")
    assert audit.legal_basis == "legal obligation"
    erased = policies.get("erased_subjects")
    assert (erased.action, erased.strategy, erased.columns) == ("anonymize", "null_personal_fields", ("email", "display_name"))
    assert policies.sources["task_results"] == PROJECT_DIR / "retention" / "store.yaml"
    runs = policies.get("prefect_flow_runs")
    assert (runs.kind, runs.table, runs.age_field, runs.action, runs.personal_data) == (
        "prefect_flow_runs", None, None, "delete", True)
    assert policies.get("quality_reports").prefix == "quality/"


def test_asking_for_an_unknown_category_lists_the_categories() -> None:
    with pytest.raises(ConfigError, match=r"no retention policy for category 'backups'; categories: prefect_flow_runs, "):
        load_policies().get("backups")


def test_cutoff_is_now_minus_max_age_days_in_utc() -> None:
    policy = Policy.model_validate(results_policy(max_age_days=30))
    assert cutoff(policy, datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) == datetime(2026, 1, 30, 12, 0, tzinfo=UTC)
    # Days, not years: 365 days before 1 March of a leap year is 2 March of the year before.
    year = Policy.model_validate(results_policy(max_age_days=365))
    assert cutoff(year, datetime(2024, 3, 1, tzinfo=UTC)) == datetime(2023, 3, 2, tzinfo=UTC)
    # Another zone gives the same instant, expressed in UTC as the store keeps it.
    cest = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert cutoff(policy, cest) == datetime(2026, 1, 30, 12, 0, tzinfo=UTC)
    assert cutoff(policy, cest).tzinfo is UTC


def test_cutoff_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        cutoff(Policy.model_validate(results_policy()), datetime(2026, 3, 1))


def test_legal_holds_parse_and_apply_until_their_last_day(tmp_path: Path) -> None:
    holds = [
        {"subject": "crm-10042", "reason": "litigation hold, case 2025-117", "until": "2026-06-30"},
        {"subject": "crm-20001", "reason": "open access request"},
        {"category": "erased_subjects", "reason": "regulator inquiry", "until": date(2026, 1, 31)},
    ]
    write(tmp_path, "store.yaml", {"policies": [subjects_policy(legal_holds=holds)]})
    policy = load_policies(tmp_path).get("erased_subjects")
    assert [(h.subject, h.category, h.until) for h in policy.legal_holds] == [
        ("crm-10042", None, date(2026, 6, 30)),
        ("crm-20001", None, None),
        (None, "erased_subjects", date(2026, 1, 31)),
    ]
    assert policy.category_held_on(date(2026, 1, 31)) is True
    assert policy.category_held_on(date(2026, 2, 1)) is False
    assert policy.held_subjects_on(date(2026, 6, 30)) == {"crm-10042", "crm-20001"}
    assert policy.held_subjects_on(date(2026, 7, 1)) == {"crm-20001"}


def test_policies_from_several_files_are_merged_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, "a_results.yaml", {"policies": [results_policy()]})
    write(tmp_path, "b_subjects.yaml", {"policies": [subjects_policy()]})
    policies = load_policies(tmp_path)
    assert policies.categories == ["task_results", "erased_subjects"]
    assert policies.sources["erased_subjects"] == tmp_path / "b_subjects.yaml"


# Each broken policy, the identifiers its one-line refusal must name, and what it must list.
BROKEN = {
    "unknown table": (
        results_policy(table="task_resultz"),
        ["policy 'task_results'", "table 'task_resultz' is not in the store", "valid tables: agent_tasks, artifacts"],
    ),
    "unknown age_field": (
        results_policy(age_field="created"),
        ["policy 'task_results'", "age_field 'created' is not a column of table 'task_results'",
         "its columns: id, task_id, summary, findings, output, llm_model, llm, created_at"],
    ),
    "age_field not a timestamp": (
        results_policy(age_field="summary"),
        ["policy 'task_results'", "age_field 'summary'", "not a timestamp", "its timestamp columns: created_at"],
    ),
    "anonymize without strategy": (
        subjects_policy(strategy=None),
        ["policy 'erased_subjects'", "needs a strategy", "valid strategies: hash_identifier, null_personal_fields, redact"],
    ),
    "unknown strategy": (
        subjects_policy(strategy="scramble"),
        ["policy 'erased_subjects'", "strategy 'scramble' is not registered",
         "valid strategies: hash_identifier, null_personal_fields, redact"],
    ),
    "anonymize without columns": (
        subjects_policy(columns=[]),
        ["policy 'erased_subjects'", "needs the columns"],
    ),
    "unknown column": (
        subjects_policy(columns=["email", "phone"]),
        ["policy 'erased_subjects'", "column 'phone' is not a column of table 'data_subjects'",
         "its columns: id, external_ref, email, display_name"],
    ),
    "nulling a NOT NULL column": (
        subjects_policy(columns=["external_ref"]),
        ["policy 'erased_subjects'", "column 'external_ref'", "NOT NULL", "'null_personal_fields' needs nullable"],
    ),
    "redacting a timestamp": (
        subjects_policy(strategy="redact", columns=["created_at"]),
        ["policy 'erased_subjects'", "column 'created_at'", "'redact' needs text columns"],
    ),
    "redacting an enum": (
        results_policy(category="agent_tasks", table="agent_tasks", action="anonymize", strategy="redact",
                       columns=["status"]),
        ["policy 'agent_tasks'", "column 'status'", "'redact' needs text columns"],
    ),
    "hash longer than the column": (
        results_policy(category="ledger", table="erasure_ledger", age_field="requested_at", action="anonymize",
                       strategy="hash_identifier", columns=["key_id"]),
        ["policy 'ledger'", "column 'key_id'", "holds 16 characters", "writes 64"],
    ),
    "anonymizing the primary key": (
        subjects_policy(strategy="hash_identifier", columns=["id"]),
        ["policy 'erased_subjects'", "column 'id' is the primary key"],
    ),
    "anonymizing the age field": (
        subjects_policy(columns=["erased_at"]),
        ["policy 'erased_subjects'", "column 'erased_at' is the age_field"],
    ),
    "a column listed twice": (
        subjects_policy(columns=["email", "email"]),
        ["policy 'erased_subjects'", "column 'email' is listed twice"],
    ),
    "strategy on a delete policy": (
        results_policy(strategy="redact", columns=["summary"]),
        ["policy 'task_results'", "anonymize only", "action is delete"],
    ),
    "category hold under another policy": (
        results_policy(legal_holds=[{"category": "audit_events", "reason": "inquiry"}]),
        ["policy 'task_results'", "legal hold on category 'audit_events'", "list it under policy 'audit_events'"],
    ),
    "misspelt field": (
        subjects_policy(colums=["email"]),
        ["policy 'erased_subjects'", "unknown field 'colums'", "valid fields: category, description, table"],
    ),
    "unknown action": (
        results_policy(action="purge"),
        ["policy 'task_results'", "action:", "'delete', 'anonymize' or 'archive'", "(got 'purge')"],
    ),
    "unknown legal basis": (
        results_policy(legal_basis="because"),
        ["policy 'task_results'", "legal_basis:", "'legal obligation'", "(got 'because')"],
    ),
    "missing legal basis": (
        results_policy(legal_basis=None),
        ["policy 'task_results'", "missing required field 'legal_basis'"],
    ),
    "non-positive age": (
        results_policy(max_age_days=0),
        ["policy 'task_results'", "max_age_days:", "greater than 0", "(got 0)"],
    ),
    "hold naming both a subject and a category": (
        subjects_policy(legal_holds=[{"subject": "crm-1", "category": "erased_subjects", "reason": "x"}]),
        ["policy 'erased_subjects'", "legal_holds[0]", "exactly one of 'subject'"],
    ),
    "hold without a reason": (
        subjects_policy(legal_holds=[{"subject": "crm-1"}]),
        ["policy 'erased_subjects'", "missing required field 'legal_holds[0].reason'"],
    ),
    "hold until a non-date": (
        subjects_policy(legal_holds=[{"subject": "crm-1", "reason": "x", "until": "soon"}]),
        ["policy 'erased_subjects'", "legal_holds[0].until", "(got 'soon')"],
    ),
    "policy without a category": (
        results_policy(category=None),
        ["policy #1", "missing required field 'category'"],
    ),
    "table policy without a table": (
        results_policy(table=None, age_field=None),
        ["policy 'task_results'", "kind table needs 'table' and 'age_field'"],
    ),
    "unknown kind": (
        results_policy(kind="bucket"),
        ["policy 'task_results'", "kind:", "'prefect_flow_runs'", "(got 'bucket')"],
    ),
    "prefect kind with a table": (
        results_policy(kind="prefect_flow_runs"),
        ["policy 'task_results'", "kind prefect_flow_runs takes no 'table', 'age_field'", "Prefect timestamps"],
    ),
    "prefect kind archiving": (
        results_policy(kind="prefect_artifacts", table=None, age_field=None, action="archive"),
        ["policy 'task_results'", "kind prefect_artifacts supports action delete only (got 'archive')"],
    ),
    "prefect kind held by subject": (
        results_policy(kind="prefect_flow_runs", table=None, age_field=None,
                       legal_holds=[{"subject": "crm-1", "reason": "x"}]),
        ["policy 'task_results'", "kind prefect_flow_runs has no data subjects or cases", "hold it by 'category'"],
    ),
    "storage kind without a prefix": (
        results_policy(kind="storage", table=None, age_field=None),
        ["policy 'task_results'", "kind storage needs a 'prefix'"],
    ),
    "storage prefix climbing out": (
        results_policy(kind="storage", table=None, age_field=None, prefix="../etc/"),
        ["policy 'task_results'", "prefix:", "'..' segment"],
    ),
    "storage prefix not a folder": (
        results_policy(kind="storage", table=None, age_field=None, prefix="quality"),
        ["policy 'task_results'", "prefix 'quality' must end with '/'"],
    ),
    "prefix on a table policy": (
        results_policy(prefix="quality/"),
        ["policy 'task_results'", "'prefix' is for kind storage only"],
    ),
    "deleting the append-only audit log": (
        results_policy(category="audit_events", table="audit_events", age_field="occurred_at"),
        ["policy 'audit_events'", "table 'audit_events' is append-only", "use action archive"],
    ),
    "subject hold on a table without subjects": (
        results_policy(category="audit_events", table="audit_events", age_field="occurred_at", action="archive",
                       legal_holds=[{"subject": "crm-1", "reason": "x"}]),
        ["policy 'audit_events'", "legal hold on subject 'crm-1'", "name no data subject", "hold the category"],
    ),
    "case hold on a table without cases": (
        subjects_policy(legal_holds=[{"case": "C-1", "reason": "x"}]),
        ["policy 'erased_subjects'", "legal hold on case 'C-1'", "rows of table 'data_subjects' name no case"],
    ),
    "hold naming a subject and a case": (
        results_policy(legal_holds=[{"subject": "crm-1", "case": "C-1", "reason": "x"}]),
        ["policy 'task_results'", "exactly one of 'subject'", "'case' (a case_id)"],
    ),
}


@pytest.mark.parametrize("policy, expected", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_policy_is_refused_naming_file_policy_and_identifier(
    tmp_path: Path, policy: dict[str, Any], expected: list[str]
) -> None:
    path = write(tmp_path, "store.yaml", {"policies": [policy]})
    message = refusal(tmp_path)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_duplicate_category_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"policies": [results_policy()]})
    second = write(tmp_path, "b.yaml", {"policies": [results_policy(max_age_days=10)]})
    message = refusal(tmp_path)
    assert message == (f"{second}: policy 'task_results': category 'task_results' is already defined in "
                       f"{tmp_path / 'a.yaml'}")


def test_a_duplicate_category_within_one_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "store.yaml", {"policies": [results_policy(), results_policy()]})
    assert refusal(tmp_path) == f"{path}: policy 'task_results': category 'task_results' is already defined in {path}"


def test_a_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "store.yaml", "policies:\n  - category: task_results\n    table: [task_results\n")
    message = refusal(tmp_path)
    assert message.startswith(f"{path}: line 4: not valid YAML: "), message


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = (
        "policies:\n"
        "  - category: task_results\n"
        "    description: Agent findings.\n"
        "    table: task_results\n"
        "    age_field: created_at\n"
        "    max_age_days: 365\n"
        "    action: delete\n"
        "    legal_basis: legitimate interests\n"
        "    max_age_days: 3650\n"
    )
    path = write(tmp_path, "store.yaml", text)
    assert refusal(tmp_path) == f"{path}: line 9: not valid YAML: key 'max_age_days' is given twice"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "expected a mapping with a 'policies' list, got NoneType"),
        ("- category: x\n", "expected a mapping with a 'policies' list, got list"),
        ("policies: []\n", "lists no policies; add one under 'policies:' or remove the file"),
        ("rules: []\n", "unknown field 'rules'; valid fields: policies"),
    ],
    ids=["empty", "a list", "no policies", "wrong top-level key"],
)
def test_a_file_of_the_wrong_shape_is_refused(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, "store.yaml", content)
    assert refusal(tmp_path) == f"{path}: {expected}"


def test_a_directory_without_policy_files_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path) == f"{tmp_path}: no retention policy files (*.yaml)"
    assert refusal(tmp_path / "absent") == f"{tmp_path / 'absent'}: retention policy directory not found"


def test_a_yml_file_is_not_silently_ignored(tmp_path: Path) -> None:
    write(tmp_path, "store.yaml", {"policies": [results_policy()]})
    stray = write(tmp_path, "extra.yml", {"policies": [subjects_policy()]})
    assert refusal(tmp_path) == f"{stray}: only *.yaml files are read; rename it to extra.yaml"


def test_strategies_are_found_by_name_and_a_bad_name_lists_them() -> None:
    assert get_strategy("redact") is STRATEGIES["redact"]
    with pytest.raises(ConfigError, match=r"unknown anonymisation strategy 'mask'; valid strategies: hash_identifier, "):
        get_strategy("mask")


def test_doctor_reports_the_shipped_policies_as_valid() -> None:
    assert check_retention in CHECKS
    finding = check_retention(load_settings())
    assert (finding.name, finding.ok) == ("retention", True)
    assert finding.detail == "9 policies in retention/ valid against the store schema"


def test_doctor_names_the_broken_file_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "store.yaml", {"policies": [results_policy(table="task_resultz")]})
    monkeypatch.setattr(retention, "DEFAULT_DIRECTORY", tmp_path)
    finding = check_retention(load_settings())
    assert not finding.ok
    assert finding.detail.startswith(f"{path}: policy 'task_results': table 'task_resultz' is not in the store")
    assert finding.fix == "correct the policy file named above"


def test_subject_and_case_holds_reach_rows_through_one_foreign_key(tmp_path: Path) -> None:
    # task_results has no subject or case column: both are found through task_id -> agent_tasks.
    holds = [{"subject": "crm-1", "reason": "litigation"}, {"case": "C-9", "reason": "investigation", "until": "2026-02-01"}]
    write(tmp_path, "store.yaml", {"policies": [results_policy(legal_holds=holds)]})
    policy = load_policies(tmp_path).get("task_results")
    assert policy.held_subjects_on(date(2026, 3, 1)) == {"crm-1"}
    assert policy.held_cases_on(date(2026, 2, 1)) == {"C-9"}
    assert policy.held_cases_on(date(2026, 2, 2)) == frozenset()
    assert [h.describe() for h in policy.legal_holds] == ["subject crm-1 until removed (litigation)",
                                                          "case C-9 until 2026-02-01 (investigation)"]


def test_links_come_from_the_schema_foreign_keys() -> None:
    from amas.db.models import Base
    from amas.retention.links import case_links, subject_links

    tables = Base.metadata.tables
    assert [(link.column.name, link.target) for link in subject_links(tables["agent_tasks"])] == [("subject_id", None)]
    # artifacts name a subject directly and through their task.
    assert [(link.column.name, link.target is not None and link.target.name)
            for link in subject_links(tables["artifacts"])] == [("subject_id", False), ("task_id", "subject_id")]
    assert [link.column.name for link in case_links(tables["task_results"])] == ["task_id"]
    assert subject_links(tables["audit_events"]) == () and case_links(tables["data_subjects"]) == ()
