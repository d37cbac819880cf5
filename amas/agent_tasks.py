"""Agent tasks: validate, queue, run and persist one agent's work. Plain Python, no Prefect.

The Prefect flows in ``flows/agent_flows.py`` and the CLI call these functions; so do tests.
A task's whole life is in the store: it is submitted ``pending`` with its validated
parameters, marked ``running`` (``attempts`` counts retries), and ends ``completed`` with a
``TaskResult`` holding the agent's typed output, or ``failed`` with a one-line error. Running
a task that already completed returns the stored result instead of doing the work twice, so a
retried or resumed flow never duplicates results or evidence rows.
"""

from __future__ import annotations

import json
import logging
import threading
import typing
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from amas.config import Settings
from amas.db.audit import append_event
from amas.db.models import AgentTask, Artifact, Priority, TaskResult, TaskStatus, utcnow
from amas.db.session import session_scope
from amas.errors import AmasError, ServiceUnavailable
from amas.lineage import LineageEmitter, ParentRun, dataset
from amas.registry import Agent, AgentInputError, AgentResult, Severity, get_agent, ranked
from amas.storage import Storage

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 2000


class InvalidParameters(AmasError):
    """Parameters an agent's ``Input`` model refuses; the message names each bad field."""

    exit_code = 2


class TaskNotFound(AmasError):
    pass


class AgentTimeout(TimeoutError):
    """The agent did not finish in time. Transient: a retry may be faster (a slow server, a busy disk)."""


def call_with_deadline(fn: Callable[[], T], seconds: float | None, *, what: str) -> T:
    """``fn()``, or ``AgentTimeout`` once ``seconds`` have passed.

    The call runs in its own daemon thread and the caller stops waiting at the deadline. The
    thread cannot be killed, so it may finish later in the background, but its result is
    thrown away and it never touches the store: the runner persists only what a call returned
    in time. (Injecting an exception into a thread, as Prefect's task timeout does, can land in
    the middle of a database commit and leave the store locked.)
    """
    if seconds is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"amas-{what}", daemon=True).start()
    if not done.wait(seconds):
        raise AgentTimeout(f"{what} did not finish within {seconds:g} s (AMAS_AGENTS_TIMEOUT_SECONDS)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def describe_validation_error(agent_name: str, exc: ValidationError) -> str:
    """``agent forensics: paths: Field required; max_files: ...`` — one line, every field named."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(parameters)"
        reason = error["msg"]
        if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            given = repr(error["input"])
            reason += f" (got {given[:60]}{'…' if len(given) > 60 else ''})"
        parts.append(f"{field}: {reason}")
    return f"agent {agent_name}: " + "; ".join(parts)


def validate_params(agent: Agent, raw: Mapping[str, Any] | BaseModel) -> BaseModel:
    """The agent's ``Input`` built from ``raw``; ``InvalidParameters`` naming the field otherwise."""
    data = raw.model_dump() if isinstance(raw, BaseModel) else dict(raw)
    unknown = sorted(set(data) - set(agent.Input.model_fields))
    if unknown:
        raise InvalidParameters(
            f"agent {agent.name}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(agent.Input.model_fields)}"
        )
    try:
        return agent.Input.model_validate(data)
    except ValidationError as exc:
        raise InvalidParameters(describe_validation_error(agent.name, exc)) from None


def _is_list_field(annotation: Any) -> bool:
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) in (list, tuple, set):
            return True
    return False


def _is_text_field(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return annotation is str or (str in args) or any(typing.get_args(a) == (str,) for a in args)


def parse_param_pairs(agent: Agent, pairs: Sequence[str]) -> dict[str, Any]:
    """``["path=data.csv", "threshold=0.8", "paths=a", "paths=b"]`` into a dict for ``validate_params``.

    Text fields keep the value as typed; other fields read it as JSON when it parses (numbers,
    booleans, lists), so ``--param include_storage=false`` means False. Repeating a list field's
    name appends; a JSON list (``paths='["a","b"]'``) works too.
    """
    fields = agent.Input.model_fields
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidParameters(f"agent {agent.name}: --param {pair!r} is not key=value")
        if key not in fields:
            raise InvalidParameters(
                f"agent {agent.name}: unknown parameter {key!r}; valid: {', '.join(fields)}"
            )
        annotation = fields[key].annotation
        if _is_list_field(annotation):
            value: Any = _json_or_text(text)
            items = value if isinstance(value, list) else [text]
            values.setdefault(key, []).extend(items)
        elif _is_text_field(annotation):
            values[key] = text
        else:
            values[key] = _json_or_text(text)
    return values


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def submit_task(
    session: Session,
    agent_name: str,
    params: Mapping[str, Any] | BaseModel,
    *,
    priority: int = int(Priority.normal),
    actor: str = "amas",
    case_id: str | None = None,
    subject_id: int | None = None,
) -> AgentTask:
    """Validate and queue one task; nothing runs and nothing is stored if the parameters are bad."""
    agent = get_agent(agent_name)
    valid = validate_params(agent, params)
    if not 0 <= priority <= 1000:
        raise InvalidParameters(f"priority: must be between 0 and 1000 (higher runs first), got {priority}")
    task = AgentTask(
        id=uuid.uuid4(), agent=agent.name, parameters=valid.model_dump(mode="json"), priority=priority,
        actor=actor, case_id=case_id, subject_id=subject_id, status=TaskStatus.pending,
    )
    session.add(task)
    session.flush()
    append_event(session, actor=actor, action="agent.submitted", entity_type="agent_task",
                 entity_id=str(task.id), details={"agent": agent.name, "priority": priority, "case_id": case_id})
    return task


def queue_order(session: Session, *, case_id: str | None = None) -> list[AgentTask]:
    """Pending tasks in the order they run: higher priority first, then oldest first."""
    query = select(AgentTask).where(AgentTask.status == TaskStatus.pending)
    if case_id is not None:
        query = query.where(AgentTask.case_id == case_id)
    return list(session.scalars(query.order_by(AgentTask.priority.desc(), AgentTask.created_at, AgentTask.id)))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same task may succeed: unreachable services, not bad input or bugs."""
    if isinstance(exc, (AgentInputError, InvalidParameters, ValidationError)):
        return False
    if isinstance(exc, (ServiceUnavailable, OperationalError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return type(exc).__module__.startswith("httpx") and type(exc).__name__ in {
        "ConnectError", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "PoolTimeout",
    }


def one_line_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    line = text if isinstance(exc, AmasError) else f"{type(exc).__name__}: {text}"
    return line[:MAX_ERROR_CHARS]


def stored_output(session: Session, task_id: uuid.UUID) -> dict[str, Any] | None:
    result = session.scalars(
        select(TaskResult).where(TaskResult.task_id == task_id).order_by(TaskResult.id.desc()).limit(1)
    ).first()
    return None if result is None else result.output


def load_task(session: Session, task_id: uuid.UUID | str) -> AgentTask:
    try:
        key = task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
    except ValueError:
        raise TaskNotFound(f"task id {task_id!r} is not a UUID") from None
    task = session.get(AgentTask, key)
    if task is None:
        raise TaskNotFound(f"no agent task {task_id} in the store")
    return task


def execute_task(
    task_id: uuid.UUID,
    *,
    settings: Settings,
    engine: Engine,
    storage: Storage,
    flow_run_id: str | None = None,
    router: Any = None,
    emitter: LineageEmitter | None = None,
    parent: ParentRun | None = None,
    timeout_seconds: float | None = None,
) -> AgentResult:
    """Run a queued task's agent and persist what it found; return the typed result.

    ``router`` is an ``amas.llm`` router or None: with one, a model-written summary is added;
    without, the result says no model was used. ``timeout_seconds`` bounds the agent's own
    work (``AgentTimeout``). Errors mark the task failed and propagate.
    """
    from amas.llm.enrich import summarise
    from amas.registry import AgentContext

    with session_scope(engine) as session:
        task = load_task(session, task_id)
        agent = get_agent(task.agent)
        if task.status == TaskStatus.completed:
            output = stored_output(session, task.id)
            if output is not None:
                log.info("task %s already completed; returning its stored result", task.id)
                return agent.Output.model_validate(output)
        task.status = TaskStatus.running
        task.started_at = utcnow()
        task.finished_at = None
        task.error = None
        task.attempts += 1
        task.flow_run_id = flow_run_id or task.flow_run_id
        params_raw, actor, case_id = dict(task.parameters), task.actor, task.case_id
        attempt = task.attempts
        append_event(session, actor=actor, action="agent.started", entity_type="agent_task",
                     entity_id=str(task.id), details={"agent": agent.name, "attempt": attempt,
                                                      "flow_run_id": flow_run_id})

    results = _case_results(engine, case_id, exclude=task_id) if case_id else {}
    context = AgentContext(settings=settings, engine=engine, storage=storage, task_id=task_id, actor=actor,
                           results=results)
    lineage = emitter.run(f"agent.{agent.name}", parent=parent) if emitter is not None else nullcontext(None)
    try:
        with lineage as run_handle:
            params = validate_params(agent, params_raw)
            result = call_with_deadline(lambda: agent.run(params, context), timeout_seconds,
                                        what=f"agent {agent.name}")
            result.llm = summarise(router, result)
            if run_handle is not None:
                for ref in result.reads:
                    run_handle.add_input(reference_dataset(ref, storage.url))
                for ref in [*result.writes, *(e.key for e in result.evidence)]:
                    run_handle.add_output(reference_dataset(ref, storage.url))
    except BaseException as exc:
        _mark_failed(engine, task_id, exc, actor=actor, attempt=attempt)
        raise
    _persist(engine, task_id, result, storage_url=storage.url, actor=actor)
    return result


def _case_results(engine: Engine, case_id: str, *, exclude: uuid.UUID) -> dict[str, dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(TaskResult.task_id, TaskResult.output).join(AgentTask, AgentTask.id == TaskResult.task_id)
            .where(AgentTask.case_id == case_id, AgentTask.id != exclude).order_by(TaskResult.id)
        ).all()
    return {str(task_id): output for task_id, output in rows}


def _mark_failed(engine: Engine, task_id: uuid.UUID, exc: BaseException, *, actor: str, attempt: int) -> None:
    try:
        with session_scope(engine) as session:
            task = load_task(session, task_id)
            task.status = TaskStatus.failed
            task.finished_at = utcnow()
            task.error = one_line_error(exc)
            append_event(session, actor=actor, action="agent.failed", entity_type="agent_task",
                         entity_id=str(task_id), details={"agent": task.agent, "attempt": attempt,
                                                          "error": task.error, "transient": is_transient(exc)})
    except Exception:
        # The store may be the thing that failed; the original error is what matters.
        log.exception("could not record the failure of task %s", task_id)


def severity_counts(result: AgentResult) -> dict[str, Any]:
    counts = Counter(f.severity.value for f in result.findings)
    worst = result.worst()
    return {"by_severity": {s.value: counts.get(s.value, 0) for s in Severity},
            "total": len(result.findings), "worst": worst.value if worst else None}


def _persist(engine: Engine, task_id: uuid.UUID, result: AgentResult, *, storage_url: str, actor: str) -> None:
    with session_scope(engine) as session:
        task = load_task(session, task_id)
        session.execute(delete(TaskResult).where(TaskResult.task_id == task_id))
        session.add(TaskResult(
            task_id=task_id, summary=result.summary, findings=severity_counts(result),
            output=result.model_dump(mode="json"), llm_model=result.llm.model if result.llm.used else None,
            llm=result.llm.model_dump(mode="json", exclude={"text"}),
        ))
        for item in result.evidence:
            uri = f"{storage_url.rstrip('/')}/{item.key}"
            artifact = session.scalars(select(Artifact).where(Artifact.uri == uri)).first() or Artifact(uri=uri)
            artifact.sha256, artifact.size_bytes = item.sha256, item.size
            artifact.media_type, artifact.description = item.media_type, item.description
            artifact.task_id, artifact.subject_id = task_id, task.subject_id
            session.add(artifact)
        task.status = TaskStatus.completed
        task.finished_at = utcnow()
        append_event(session, actor=actor, action="agent.completed", entity_type="agent_task",
                     entity_id=str(task_id), details={
                         "agent": task.agent, "attempt": task.attempts, **severity_counts(result),
                         "evidence": [{"key": e.key, "sha256": e.sha256} for e in result.evidence],
                         "llm": {"used": result.llm.used, "model": result.llm.model},
                     })


def reference_dataset(ref: str, storage_url: str) -> Any:
    """An OpenLineage dataset for something an agent read or wrote (a path, a URL, a storage key)."""
    parts = urlsplit(ref)
    if parts.scheme in ("http", "https", "s3", "postgres", "postgresql"):
        return dataset(f"{parts.scheme}://{parts.netloc}", parts.path or "/")
    if parts.scheme == "file":
        return dataset("file", parts.path)
    if ref.startswith("/"):
        return dataset("file", ref)
    return dataset(storage_url.rstrip("/"), ref)


def result_markdown(task: AgentTask | None, result: AgentResult, *, limit: int = 50) -> str:
    """The result as Markdown for a Prefect artifact: summary, model note, ranked findings, evidence."""
    lines = [f"# {result.agent}", ""]
    if task is not None:
        lines += [f"Task `{task.id}` · priority {task.priority} · requested by {_cell(task.actor)} · "
                  f"attempt {task.attempts}", ""]
    lines += [result.summary, ""]
    if result.llm.used:
        lines += [f"**Model summary** ({result.llm.provider}/{result.llm.model}, "
                  f"{result.llm.prompt_tokens}+{result.llm.completion_tokens} tokens, ${result.llm.cost_usd:.4f}):",
                  "", result.llm.text or "", ""]
    else:
        lines += [f"_No model used: {result.llm.reason}._", ""]
    findings = ranked(result.findings)
    lines += [f"## Findings ({len(findings)})", ""]
    if findings:
        lines += ["| severity | finding | where | detail |", "|---|---|---|---|"]
        for f in findings[:limit]:
            lines.append(f"| {f.severity.value} | {_cell(f.title)} | {_cell(f.location or '')} | {_cell(f.detail)} |")
        if len(findings) > limit:
            lines.append(f"\n…and {len(findings) - limit} more in the stored result.")
    else:
        lines.append("No findings.")
    if result.evidence:
        lines += ["", "## Evidence", "", "| object | sha256 | bytes |", "|---|---|---|"]
        lines += [f"| `{e.key}` | `{e.sha256}` | {e.size} |" for e in result.evidence]
    return "\n".join(lines) + "\n"


def findings_table(result: AgentResult) -> list[dict[str, str]]:
    return [{"severity": f.severity.value, "title": f.title, "location": f.location or "", "detail": f.detail}
            for f in ranked(result.findings)]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:300]
