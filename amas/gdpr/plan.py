"""What an erasure does in each store, and why: a pure function of what discovery found.

``plan_erasure(discovery, holds, ledger_digests)`` returns one ``Step`` per place, in the order
the steps run. Artifacts go before tasks (deleting a task would cut the link that finds its
artifacts), mentions before the subject row (anonymising it loses the identifiers the mentions
are searched by), the ledger with the subject row (one transaction: anonymised if and only if
listed), then Prefect's metadata (artifacts, then flow runs with their logs), datasets last (they
are rewritten from the ledger's digests).

Anonymisation uses the retention strategies by name (``amas.retention.policy.STRATEGIES``):
``external_ref`` gets ``hash_identifier`` (the ledger digest, so the row stays unique and other
rows can still point at it), ``email`` and ``display_name`` get ``null_personal_fields``, and
mentions in other tasks' parameters and results get ``redact``.

What is kept, and why:

- a legal hold (``legal_holds`` of a retention policy) on the subject's ``external_ref`` or on
  the whole category keeps that table's rows; a hold on the subject row itself keeps the subject
  out of the ledger and the datasets too (the ledger would erase them on the next restore);
- Prefect flow runs that have not finished, and log lines without a flow run the API could delete
  them with: ``keep`` with a reason starting ``cannot erase:`` (the certificate says so);
- a category legal hold on a ``prefect_flow_runs`` or ``prefect_artifacts`` retention policy keeps
  the mentioning runs or artifacts;
- ``audit_events``: legal obligation. The chain is append-only (the database refuses UPDATE and
  DELETE) and its details carry ids, counts and digests, not personal data; discovery checks
  that no event mentions the subject and the certificate states the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from amas.db.ledger import normalise_identifier
from amas.gdpr.discovery import Discovery
from amas.retention.policy import REDACTED, PolicySet, get_strategy

Action = Literal["delete", "anonymise", "redact", "record", "rewrite", "regenerate", "keep"]

SUBJECT_STRATEGIES: dict[str, str] = {
    "external_ref": "hash_identifier",
    "email": "null_personal_fields",
    "display_name": "null_personal_fields",
}
"""Column of ``data_subjects`` -> the retention strategy that anonymises it on erasure."""
MENTION_STRATEGY = "redact"

CANNOT = "cannot erase: "
"""How the reason of a step starts when the data stays because no API can remove it (not a hold)."""
PREFECT_KINDS = frozenset({"prefect_flow_runs", "prefect_artifacts"})

AUDIT_REASON = ("legal obligation: the audit chain is append-only (UPDATE and DELETE are refused) and "
                "records ids, counts and digests, not personal data")


@dataclass(frozen=True)
class Step:
    name: str
    store: str
    location: str
    action: Action
    count: int
    reason: str
    strategy: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "store": self.store, "location": self.location, "action": self.action,
                "count": self.count, "reason": self.reason, "strategy": self.strategy}


@dataclass(frozen=True)
class Holds:
    """Active legal holds that concern one subject: per table, and per case of their tasks."""

    tables: Mapping[str, str] = field(default_factory=dict)
    """Table -> why its rows about the subject are held (a hold on the subject or the category)."""
    cases: Mapping[str, str] = field(default_factory=dict)
    """case_id -> why the subject's tasks in that case (their results and artifacts) are held."""


TASK_TABLES = frozenset({"agent_tasks", "task_results", "artifacts"})


def holds_for(policies: PolicySet, external_refs: Iterable[str], today: date) -> Holds:
    """The legal holds of ``policies`` active ``today`` that keep some of this subject's data."""
    refs = {normalise_identifier(r) for r in external_refs if r}
    tables: dict[str, str] = {}
    cases: dict[str, str] = {}
    for policy in policies:
        kind = getattr(policy, "kind", "table")
        table = getattr(policy, "table", None) or (kind if kind in PREFECT_KINDS else None)
        if not table:
            continue  # a policy on storage prefixes holds nothing a subject's erasure touches
        for hold in policy.legal_holds:
            if not hold.active_on(today):
                continue
            until = f" until {hold.until.isoformat()}" if hold.until else ""
            case = getattr(hold, "case", None)
            if hold.subject is not None and normalise_identifier(hold.subject) in refs:
                tables.setdefault(table, f"legal hold on the subject (category {policy.category}){until}: "
                                         f"{hold.reason}")
            elif hold.category is not None:
                tables.setdefault(table, f"legal hold on category {policy.category}{until}: {hold.reason}")
            elif case is not None and table in TASK_TABLES:
                cases.setdefault(case, f"legal hold on case {case} (category {policy.category}){until}: "
                                       f"{hold.reason}")
    return Holds(tables=tables, cases=cases)


def plan_erasure(discovery: Discovery, holds: Holds, ledger_digests: int) -> list[Step]:
    """The steps of erasing what ``discovery`` found, with each one's action, count and reason."""
    for name in {*SUBJECT_STRATEGIES.values(), MENTION_STRATEGY}:
        get_strategy(name)  # a renamed strategy fails here, not half-way through an erasure
    steps: list[Step] = []
    held_cases = {case: count for case, count in discovery.task_cases.items() if case in holds.cases}
    for case, count in sorted(held_cases.items()):
        steps.append(Step(f"case:{case}", "store", "agent_tasks", "keep", count,
                          holds.cases[case] + "; with their results and artifacts"))
    held_case_tasks = sum(held_cases.values())
    held_tables = holds.tables
    subject_held = held_tables.get("data_subjects")

    if discovery.artifacts:
        if "artifacts" in held_tables:
            steps.append(Step("artifacts", "store", "artifacts", "keep", len(discovery.artifacts),
                              held_tables["artifacts"]))
        else:
            steps.append(Step("artifact_objects", "storage", "artifact objects", "delete", len(discovery.objects),
                              "evidence files about the subject"))
            steps.append(Step("artifacts", "store", "artifacts", "delete", len(discovery.artifacts),
                              "catalog rows of the subject's evidence"))
    if discovery.exports:
        steps.append(Step("exports", "storage", "gdpr exports", "delete", len(discovery.exports),
                          "copies of the subject's data made for earlier access requests"))

    if discovery.tasks:
        held = held_tables.get("agent_tasks") or held_tables.get("task_results")
        if held:
            steps.append(Step("agent_tasks", "store", "agent_tasks", "keep", len(discovery.tasks), held))
            if discovery.results_of_tasks:
                steps.append(Step("task_results", "store", "task_results", "keep", discovery.results_of_tasks,
                                  held if "task_results" in held_tables else "their tasks are kept: " + held))
        else:
            steps.append(Step("agent_tasks", "store", "agent_tasks", "delete",
                              len(discovery.tasks) - held_case_tasks, "agent work about the subject (subject_id)"))
            if discovery.results_of_tasks:
                steps.append(Step("task_results", "store", "task_results", "delete", discovery.results_of_tasks,
                                  "results of the subject's tasks, deleted with them"))
    if discovery.mentioning_tasks:
        held = held_tables.get("agent_tasks")
        steps.append(Step("task_mentions", "store", "agent_tasks.parameters", "keep" if held else "redact",
                          len(discovery.mentioning_tasks),
                          held or f"other tasks' parameters name the subject; each mention becomes {REDACTED!r}",
                          None if held else MENTION_STRATEGY))
    if discovery.mentioning_results:
        held = held_tables.get("task_results")
        steps.append(Step("result_mentions", "store", "task_results.output", "keep" if held else "redact",
                          len(discovery.mentioning_results),
                          held or f"other tasks' results name the subject; each mention becomes {REDACTED!r}",
                          None if held else MENTION_STRATEGY))

    if discovery.subjects:
        if subject_held:
            steps.append(Step("data_subjects", "store", "data_subjects", "keep", len(discovery.subjects),
                              subject_held + "; the subject stays out of the erasure ledger and the datasets"))
        else:
            strategies = ", ".join(f"{column}: {name}" for column, name in SUBJECT_STRATEGIES.items())
            steps.append(Step("data_subjects", "store", "data_subjects", "anonymise", len(discovery.subjects),
                              "the row stays (other records point at it) without personal data; erased_at is set",
                              strategies))
    if not subject_held and not discovery.nothing_found and ledger_digests:
        steps.append(Step("ledger", "store", "erasure_ledger", "record", ledger_digests,
                          "keyed digests of the subject's identifiers, so restores and the pipeline re-apply "
                          "the erasure"))

    steps.extend(_prefect_steps(discovery, held_tables))

    if discovery.datasets is not None:
        for found in discovery.datasets.found:
            if subject_held and found.count:
                steps.append(Step(f"dataset:{found.location}", "dataset", found.location, "keep", found.count,
                                  subject_held))
            elif found.count:
                steps.append(Step(f"dataset:{found.location}", "dataset", found.location, "rewrite", found.count,
                                  "new DVC version without the subject; the old version's objects are purged"))
            elif discovery.datasets.people and not subject_held:
                steps.append(Step(f"dataset:{found.location}", "dataset", found.location, "regenerate", 0,
                                  "re-made from the rewritten datasets; " + found.why))

    mentions = discovery.audit_mentions
    reason = AUDIT_REASON + (f"; {mentions} event(s) mention the subject and cannot be changed without breaking "
                             "the chain: review them" if mentions else "; no event mentions the subject")
    steps.append(Step("audit_events", "store", "audit_events", "keep", mentions, reason))
    return steps


def _prefect_steps(discovery: Discovery, held_tables: Mapping[str, str]) -> list[Step]:
    prefect = discovery.prefect
    if prefect is None or not prefect.searched:
        return []
    steps: list[Step] = []
    if prefect.artifacts:
        held = held_tables.get("prefect_artifacts")
        steps.append(Step("prefect_artifacts", "prefect", "prefect artifacts", "keep" if held else "delete",
                          len(prefect.artifacts),
                          held or "Prefect artifacts (agent reports, summaries) whose data or description name the "
                                  "subject"))
    deletable = prefect.deletable_runs
    if deletable:
        held = held_tables.get("prefect_flow_runs")
        by_fields = sum(1 for r in deletable if r.fields)
        lines = sum(r.log_lines for r in deletable)
        steps.append(Step("prefect_flow_runs", "prefect", "prefect flow runs", "keep" if held else "delete",
                          len(deletable),
                          held or f"finished flow runs that name the subject ({by_fields} in their parameters, name, "
                                  f"tags or state message; {len(deletable) - by_fields} only in their logs); the "
                                  f"server deletes their task runs and logs ({lines} mentioning line(s)) with them"))
    unfinished = prefect.unfinished_runs
    if unfinished:
        states = ", ".join(sorted({r.state.lower() for r in unfinished}))
        steps.append(Step("prefect_unfinished_runs", "prefect", "prefect flow runs", "keep", len(unfinished),
                          f"{CANNOT}the flow run(s) have not finished ({states}); deleting a live run would break "
                          "it: run the erasure again once they have finished"))
    if prefect.unattached_log_lines:
        steps.append(Step("prefect_logs", "prefect", "prefect logs", "keep", prefect.unattached_log_lines,
                          f"{CANNOT}the log lines belong to no flow run that still exists, and the Prefect API "
                          "deletes log lines only with their flow run (a deleted run's lines go shortly after it)"))
    return steps


def summarise(steps: Iterable[Step]) -> dict[str, int]:
    """Rows or objects per action, for logs and audit events (counts only)."""
    totals: dict[str, int] = {}
    for step in steps:
        totals[step.action] = totals.get(step.action, 0) + step.count
    return totals
