"""run-agent and investigate: the AMAS agents as Prefect flows.

``run-agent`` has one deployment per agent, each with that agent's pydantic ``Input`` as its
``params`` parameter, so the Prefect UI shows a typed form with the agent's defaults. The flow
functions below are all named ``run-agent``; they differ only in that annotation.

``investigate`` fans a case out to several agents at once (at most ``parallelism`` at a time,
higher priority first, straight from the store's queue) and ends with the ``report`` agent.

Every agent task is persisted in the AMAS store (task, status, result, evidence), published as
Prefect artifacts, retried when the failure is transient, bounded by a timeout, and holds a
slot of its agent's global concurrency limit (``agent-<name>``) while it runs (see ``run_in_slot``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import uuid
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from agents.code_analysis import CodeAnalysisInput
from agents.data_analysis import DataAnalysisInput
from agents.forensics import ForensicsInput
from agents.inventory import InventoryInput
from agents.pii_classifier import PiiInput
from agents.report import ReportInput
from agents.web_audit import WebAuditInput
from amas.agent_tasks import (
    execute_task,
    findings_table,
    one_line_error,
    queue_order,
    result_markdown,
    severity_counts,
    submit_task,
)
from amas.config import get_settings
from amas.db.migrate import require_current_schema
from amas.db.models import AgentTask, Priority, TaskStatus
from amas.db.session import get_engine, session_scope
from amas.lineage import LineageEmitter
from flows._lineage import flow_lineage
from flows._lineage import parent as lineage_parent
from flows._retries import retry_if_transient
from amas.llm import router_for
from amas.registry import AgentResult
from amas.storage import open_storage

MAX_PARALLELISM = 16


def limit_name(agent: str) -> str:
    return f"agent-{agent}"


def artifact_key(agent: str) -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only.
    return "agent-" + agent.replace("_", "-")


def ensure_agent_limits(agents: list[str], limit: int) -> None:
    """Create each agent's global concurrency limit when missing; an operator's edits are kept."""
    with get_client(sync_client=True) as client:
        existing = {gcl.name for gcl in client.read_global_concurrency_limits(limit=200)}
        for agent in agents:
            if limit_name(agent) not in existing:
                # Another flow starting at the same moment may create it first; either is fine.
                with contextlib.suppress(ObjectAlreadyExists):
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=limit_name(agent), limit=limit, active=True)
                    )


@task(name="agent", task_run_name="{agent_name}", retry_condition_fn=retry_if_transient, persist_result=False)
def agent_task(task_id: uuid.UUID, agent_name: str) -> AgentResult:
    """Run one queued agent task (call it through ``run_in_slot``)."""
    settings = get_settings()
    emitter = LineageEmitter.from_settings(settings)
    parent = lineage_parent()
    try:
        return execute_task(
            task_id, settings=settings, engine=get_engine(settings), storage=open_storage(settings),
            flow_run_id=str(flow_run.id) if flow_run.id else None, router=router_for(settings),
            emitter=emitter, parent=parent, timeout_seconds=settings.agents.timeout_seconds,
        )
    finally:
        emitter.close()


def run_in_slot(task_id: uuid.UUID, agent_name: str) -> AgentResult:
    """``agent_task`` with the configured retries, holding a slot of the agent's concurrency limit.

    The slot is taken here, around the task run, not inside it: on the local SQLite Prefect
    server a slot request made inside a task run collides with the server recording that run's
    own start, gets a 503 and the client backs off 2 s: scripts/bench_agents.py measured 1.9 s
    per agent task with the slot inside against 0.19 s outside. Retries happen while the slot is held.
    """
    agents = get_settings().agents
    # The timeout is enforced by execute_task, not Prefect's task timeout: see call_with_deadline.
    configured = agent_task.with_options(retries=agents.retries, retry_delay_seconds=agents.retry_delay_seconds)
    with concurrency(limit_name(agent_name), occupy=1, strict=True):
        return configured(task_id, agent_name)


def _publish(task_id: uuid.UUID, result: AgentResult) -> None:
    key = artifact_key(result.agent)
    # The report agent writes its own document; every other agent gets the generic rendering.
    markdown = getattr(result, "markdown", None)
    if not isinstance(markdown, str):
        with session_scope(get_engine()) as session:
            markdown = result_markdown(session.get(AgentTask, task_id), result)
    create_markdown_artifact(key=key, markdown=markdown, description=f"{result.agent}: {result.summary[:200]}")
    table = findings_table(result)
    if table:
        create_table_artifact(key=f"{key}-findings", table=table, description=f"{result.agent} findings, worst first")


def run_one(agent_name: str, params: BaseModel, priority: int, requested_by: str) -> dict[str, Any]:
    """Queue one agent task, run it, publish its artifacts; the body of every run-agent flow."""
    logger = get_run_logger()
    settings = get_settings()
    require_current_schema(get_engine(settings))
    ensure_agent_limits([agent_name], settings.agents.concurrency)
    with session_scope(get_engine(settings)) as session:
        row = submit_task(session, agent_name, params, priority=priority, actor=requested_by)
        task_id = row.id
    logger.info("agent task %s queued (%s, priority %d)", task_id, agent_name, priority)
    result = run_in_slot(task_id, agent_name)
    _publish(task_id, result)
    logger.info("%s: %s", agent_name, result.summary)
    return {"task_id": str(task_id), "agent": agent_name, "summary": result.summary,
            "findings": severity_counts(result), "evidence": [e.key for e in result.evidence],
            "llm": result.llm.model_dump(mode="json", exclude={"text"})}


PRIORITY_HELP = "Higher runs first where tasks queue (low 10, normal 50, high 80, critical 100)."
REQUESTER_HELP = "Who asked for this run; recorded in the audit log and the evidence's chain of custody."


@flow(name="run-agent", description="Statistics, missing values, outliers, trends and correlations of a dataset.")
def data_analysis(params: DataAnalysisInput, priority: int = int(Priority.normal),
                  requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("data_analysis", params, priority, requested_by)


@flow(name="run-agent", description="Hashes, file types, metadata, duplicates and chain of custody of files.")
def forensics(params: ForensicsInput, priority: int = int(Priority.normal),
              requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("forensics", params, priority, requested_by)


@flow(name="run-agent", description="Line counts, Python complexity and secret scanning of a source tree.")
def code_analysis(params: CodeAnalysisInput, priority: int = int(Priority.normal),
                  requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("code_analysis", params, priority, requested_by)


@flow(name="run-agent", description="Which columns of a dataset hold personal data, with confidence.")
def pii_classifier(params: PiiInput, priority: int = int(Priority.normal),
                   requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("pii_classifier", params, priority, requested_by)


@flow(name="run-agent", description="Status, TLS, graded security headers and cookie flags of a URL.")
def web_audit(params: WebAuditInput, priority: int = int(Priority.normal),
              requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("web_audit", params, priority, requested_by)


@flow(name="run-agent", description="A Markdown and HTML report of earlier agent tasks.")
def report(params: ReportInput, priority: int = int(Priority.normal),
           requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("report", params, priority, requested_by)


@flow(name="run-agent", description="Rows per store table and objects per storage prefix.")
def store_inventory(params: InventoryInput, priority: int = int(Priority.normal),
                    requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return run_one("store_inventory", params, priority, requested_by)


AGENT_FLOWS = {
    "data_analysis": data_analysis,
    "forensics": forensics,
    "code_analysis": code_analysis,
    "pii_classifier": pii_classifier,
    "web_audit": web_audit,
    "report": report,
    "store_inventory": store_inventory,
}
"""The run-agent flow of each agent, by registry name (the CLI and tests use it)."""


DEFAULT_PRIORITIES = {
    # Personal data and evidence integrity first: they decide what compliance must act on.
    "pii_classifier": int(Priority.high),
    "forensics": int(Priority.high),
    "web_audit": int(Priority.normal),
    "code_analysis": int(Priority.normal),
    "data_analysis": int(Priority.normal),
}


class InvestigationInput(BaseModel):
    """What to investigate: each target given starts the agents that apply to it."""

    title: str = Field("Investigation", min_length=1, max_length=200, description="The report's title.")
    dataset_path: str | None = Field(None, description="A CSV/Parquet dataset: runs data_analysis and pii_classifier.")
    files: list[str] = Field(default_factory=list, description="Files or folders: runs forensics.")
    source_tree: str | None = Field(None, description="A source tree: runs code_analysis.")
    url: str | None = Field(None, description="An http(s) URL: runs web_audit.")
    parallelism: int = Field(3, ge=1, le=MAX_PARALLELISM, description="Agent tasks running at once.")
    priorities: dict[str, int] = Field(
        default_factory=dict, description=f"Per-agent priority overrides; defaults: {DEFAULT_PRIORITIES}.",
    )

    @model_validator(mode="after")
    def _some_target(self) -> InvestigationInput:
        if not (self.dataset_path or self.files or self.source_tree or self.url):
            raise ValueError("give at least one of dataset_path, files, source_tree, url")
        unknown = sorted(set(self.priorities) - set(DEFAULT_PRIORITIES))
        if unknown:
            raise ValueError(f"priorities: unknown agent(s) {', '.join(unknown)}; valid: {', '.join(DEFAULT_PRIORITIES)}")
        return self

    def requests(self) -> list[tuple[str, dict[str, Any], int]]:
        """(agent, parameters, priority) for every agent this case needs."""
        wanted: list[tuple[str, dict[str, Any]]] = []
        if self.dataset_path:
            wanted += [("data_analysis", {"path": self.dataset_path}), ("pii_classifier", {"path": self.dataset_path})]
        if self.files:
            wanted.append(("forensics", {"paths": self.files, "case_ref": self.title}))
        if self.source_tree:
            wanted.append(("code_analysis", {"path": self.source_tree}))
        if self.url:
            wanted.append(("web_audit", {"url": self.url}))
        return [(agent, params, self.priorities.get(agent, DEFAULT_PRIORITIES[agent])) for agent, params in wanted]


@flow(name="investigate", description="Run several agents on a case at once, then write one report.")
def investigate(case: InvestigationInput, requested_by: str = "prefect-ui") -> dict[str, Any]:
    with flow_lineage():
        return _investigate(case, requested_by)


def _investigate(case: InvestigationInput, requested_by: str) -> dict[str, Any]:
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine(settings)
    require_current_schema(engine)
    case_id = f"case-{uuid.uuid4().hex[:12]}"
    requests = case.requests()
    ensure_agent_limits(sorted({agent for agent, _, _ in requests} | {"report"}), settings.agents.concurrency)
    # All tasks are validated and queued in one transaction: one bad parameter queues none.
    with session_scope(engine) as session:
        for agent, params, priority in requests:
            submit_task(session, agent, params, priority=priority, actor=requested_by, case_id=case_id)
    logger.info("%s: %d agent task(s) queued", case_id, len(requests))

    in_flight: dict[concurrent.futures.Future[Any], uuid.UUID] = {}
    started: set[uuid.UUID] = set()
    # Plain threads (each with a copy of the flow run's context) rather than Prefect's task
    # runner, so that each takes its concurrency slot outside its task run (see run_in_slot).
    with concurrent.futures.ThreadPoolExecutor(max_workers=case.parallelism, thread_name_prefix=case_id) as pool:
        while True:
            # The store's queue decides what starts next, so priority holds whenever tasks wait.
            with session_scope(engine) as session:
                waiting = [t for t in queue_order(session, case_id=case_id) if t.id not in started]
                next_up = [(t.id, t.agent) for t in waiting[: case.parallelism - len(in_flight)]]
            for task_id, agent in next_up:
                future = pool.submit(contextvars.copy_context().run, run_in_slot, task_id, agent)
                started.add(task_id)
                in_flight[future] = task_id
            if not in_flight:
                break
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            for finished in done:
                task_id = in_flight.pop(finished)
                if finished.exception() is not None:
                    logger.warning("agent task %s failed: %s", task_id, one_line_error(finished.exception()))

    with session_scope(engine) as session:
        rows = session.scalars(select(AgentTask).where(AgentTask.case_id == case_id)
                               .order_by(AgentTask.started_at)).all()
        outcome = [{"task_id": str(r.id), "agent": r.agent, "priority": r.priority, "status": r.status.value,
                    "attempts": r.attempts, "error": r.error or ""} for r in rows]
    failed = [o for o in outcome if o["status"] != TaskStatus.completed.value]

    summary = run_one("report", ReportInput(case_id=case_id, title=case.title), int(Priority.normal), requested_by)
    create_table_artifact(key="investigation-tasks", table=outcome,
                          description=f"{case_id}: agent tasks in the order they started")
    if failed:
        raise RuntimeError(
            f"{case_id}: {len(failed)} of {len(outcome)} agent task(s) failed "
            f"({', '.join(o['agent'] + ': ' + o['error'] for o in failed)}); the report lists them"
        )
    return {"case_id": case_id, "tasks": outcome, "report": summary}
