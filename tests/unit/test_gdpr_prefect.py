"""Pure parts of the Prefect side of GDPR requests: log queries, mention checks, the plan's steps, sealing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from amas.errors import AmasError
from amas.gdpr.discovery import Discovery, SubjectRow, mention_pattern
from amas.gdpr.identifiers import parse_identifier
from amas.gdpr.plan import CANNOT, Holds, holds_for, plan_erasure
from amas.gdpr.prefect_mentions import (
    PrefectDiscovery,
    PrefectRun,
    artifact_values,
    log_queries,
    mentioned_fields,
    not_searched,
    run_values,
)
from amas.gdpr.requests import open_seal, seal
from amas.retention.policy import load_policies

pytestmark = pytest.mark.unit

PATTERN = mention_pattern(["ann.lee@example.org", "crm-1001"])


def test_log_queries_parse_back_to_every_needle_within_prefects_limit() -> None:
    from prefect.server.utilities.text_search_parser import parse_text_search_query

    needles = ["ann.lee@example.org", 'o"brien\\x@example.org', "crm-1001", *(f"ref-{i:04d}-" + "x" * 40
                                                                           for i in range(8))]
    queries = log_queries(needles)
    assert len(queries) > 1 and all(len(q) <= 200 for q in queries)
    parsed = [term for q in queries for term in parse_text_search_query(q).include]
    assert sorted(parsed) == sorted(needles)


def test_a_needle_longer_than_a_query_is_searched_by_its_longest_prefix() -> None:
    from prefect.server.utilities.text_search_parser import parse_text_search_query

    needle = "a" * 250 + "@example.org"
    [query] = log_queries([needle])
    assert len(query) == 200
    [term] = parse_text_search_query(query).include
    assert needle.startswith(term) and len(term) == 198


def test_mentions_are_whole_tokens_in_parameters_names_tags_and_table_json() -> None:
    run = SimpleNamespace(parameters={"params": {"subject": "Ann.Lee@example.org", "by": "auto"}}, name="quiet-fox",
                          tags=["crm-1001"], state=SimpleNamespace(message="ok"))
    assert mentioned_fields(run_values(run), PATTERN) == ("parameters", "tags")
    bystander = SimpleNamespace(parameters={"to": "joann.lee@example.org"}, name="x", tags=[], state=None)
    assert mentioned_fields(run_values(bystander), PATTERN) == ()
    # Table artifacts keep their data as JSON text, which escapes non-ASCII characters.
    needle = "zoë.brun@example.org"
    table = SimpleNamespace(data=json.dumps([{"email": needle}]), description=None, key="agent-report")
    assert mentioned_fields(artifact_values(table), mention_pattern([needle])) == ("data",)


def discovery_with(prefect: PrefectDiscovery) -> Discovery:
    return Discovery(query=parse_identifier("CRM-1001"), subjects=[SubjectRow(7, "CRM-1001", None, None)],
                     erased_subjects=0, tasks=[], task_cases={}, results_of_tasks=0, mentioning_tasks=[],
                     mentioning_results=[], artifacts=[], objects=[], exports=[], audit_mentions=0, audit_events=0,
                     ledger_entries=0, datasets=None, prefect=prefect)


def prefect_found() -> PrefectDiscovery:
    return PrefectDiscovery(searched=True, api="http://x/api", runs=[
        PrefectRun("r1", "COMPLETED", ("parameters",)), PrefectRun("r2", "FAILED", (), log_lines=3),
        PrefectRun("r3", "RUNNING", ("name",))], artifacts=["a1", "a2"], log_lines=4, unattached_log_lines=1,
        scanned={"flow_runs": 10, "artifacts": 5, "log_candidates": 6})


def test_prefect_steps_delete_finished_runs_and_artifacts_and_say_what_cannot_be_erased() -> None:
    steps = {s.name: s for s in plan_erasure(discovery_with(prefect_found()), Holds(), ledger_digests=1)}
    assert (steps["prefect_artifacts"].action, steps["prefect_artifacts"].count) == ("delete", 2)
    runs = steps["prefect_flow_runs"]
    assert (runs.action, runs.count) == ("delete", 2) and "1 in their parameters" in runs.reason
    assert "(3 mentioning line(s))" in runs.reason
    unfinished = steps["prefect_unfinished_runs"]
    assert unfinished.action == "keep" and unfinished.count == 1 and unfinished.reason.startswith(CANNOT)
    assert "running" in unfinished.reason
    assert steps["prefect_logs"].reason.startswith(CANNOT) and steps["prefect_logs"].count == 1
    found = {f.location: f.count for f in discovery_with(prefect_found()).found}
    assert found["prefect flow runs"] == 2 and found["prefect logs"] == 4 and found["prefect artifacts"] == 2


def test_prefect_not_searched_plans_nothing_and_states_why() -> None:
    prefect = not_searched("no Prefect API at http://127.0.0.1:9/api")
    discovery = discovery_with(prefect)
    assert not any(s.store == "prefect" for s in plan_erasure(discovery, Holds(), ledger_digests=1))
    assert prefect.scope == "Prefect metadata was not searched: no Prefect API at http://127.0.0.1:9/api"
    assert prefect.as_dict()["searched"] is False


def test_a_category_hold_on_prefect_runs_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "prefect.yaml").write_text("""
policies:
  - category: prefect_flow_runs
    description: runs
    kind: prefect_flow_runs
    max_age_days: 90
    action: delete
    legal_basis: legitimate interests
    legal_holds: [{category: prefect_flow_runs, reason: regulator inquiry 12}]
""", encoding="utf-8")
    holds = holds_for(load_policies(tmp_path), ["CRM-1001"], date(2026, 1, 1))
    steps = {s.name: s for s in plan_erasure(discovery_with(prefect_found()), holds, ledger_digests=1)}
    assert steps["prefect_flow_runs"].action == "keep" and "regulator inquiry 12" in steps["prefect_flow_runs"].reason
    assert steps["prefect_artifacts"].action == "delete"


def test_a_sealed_identifier_opens_only_with_its_key_and_request() -> None:
    key = b"k" * 32
    token = seal(parse_identifier("Ann.Lee@example.org", "email"), key, "ER-20260101-0000abcd")
    assert "ann.lee" not in token.lower() and "example" not in token
    query = open_seal(token, key, "ER-20260101-0000abcd")
    assert (query.by.value, query.value) == ("email", "Ann.Lee@example.org")
    with pytest.raises(AmasError, match="cannot be read"):
        open_seal(token, key, "ER-20260101-ffffffff")
    with pytest.raises(AmasError, match="cannot be read"):
        open_seal(token, b"j" * 32, "ER-20260101-0000abcd")
