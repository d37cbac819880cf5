"""Agent tasks in the store on both dialects: queued in priority order, persisted, idempotent, failures kept."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, select

from amas.agent_tasks import InvalidParameters, execute_task, queue_order, submit_task
from amas.config import load_settings
from amas.db.audit import verify_chain
from amas.db.models import AgentTask, Artifact, AuditEvent, Priority, TaskResult, TaskStatus
from amas.db.session import session_scope
from amas.lineage import LineageEmitter, ParentRun
from amas.registry import AgentInputError
from amas.storage.local import LocalStorage
from tests.lineage_schema import InMemoryTransport, validate_event

pytestmark = pytest.mark.integration


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "measurements.csv"
    frame = pd.DataFrame({"reading": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 500.0],
                          "site": list("abababcdcd")})
    frame.to_csv(path, index=False)
    return path


def run(engine: Engine, storage: LocalStorage, task_id: uuid.UUID):  # noqa: ANN201
    return execute_task(task_id, settings=load_settings(), engine=engine, storage=storage, flow_run_id="flow-1")


def test_a_task_runs_and_everything_it_found_is_in_the_store(store_engine: Engine, tmp_path: Path,
                                                              dataset: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    with session_scope(store_engine) as session:
        task_id = submit_task(session, "data_analysis", {"path": str(dataset)}, actor="tester").id

    result = run(store_engine, storage, task_id)

    assert result.agent == "data_analysis" and str(dataset) in " ".join(result.reads)
    assert result.llm.used is False and result.llm.reason == "no model configured"
    with session_scope(store_engine) as session:
        task = session.get(AgentTask, task_id)
        assert (task.status, task.attempts, task.flow_run_id, task.actor) == (TaskStatus.completed, 1, "flow-1", "tester")
        assert task.started_at <= task.finished_at
        [stored] = session.scalars(select(TaskResult).where(TaskResult.task_id == task_id)).all()
        assert stored.output == result.model_dump(mode="json")
        assert stored.findings["total"] == len(result.findings)
        artifacts = session.scalars(select(Artifact).where(Artifact.task_id == task_id)).all()
        assert {a.uri for a in artifacts} == {f"{storage.url}/{e.key}" for e in result.evidence} != set()
        for artifact, evidence in zip(sorted(artifacts, key=lambda a: a.uri),
                                      sorted(result.evidence, key=lambda e: e.key), strict=True):
            assert artifact.sha256 == evidence.sha256 == hashlib.sha256(storage.get(evidence.key)).hexdigest()
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(task_id))
                                  .order_by(AuditEvent.id)).all()
        assert actions == ["agent.submitted", "agent.started", "agent.completed"]
        assert verify_chain(session).ok


def test_running_a_completed_task_again_returns_the_stored_result(store_engine: Engine, tmp_path: Path,
                                                                   dataset: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    with session_scope(store_engine) as session:
        task_id = submit_task(session, "data_analysis", {"path": str(dataset)}).id
    first = run(store_engine, storage, task_id)
    again = run(store_engine, storage, task_id)
    assert again == first
    with session_scope(store_engine) as session:
        assert session.get(AgentTask, task_id).attempts == 1
        assert len(session.scalars(select(TaskResult).where(TaskResult.task_id == task_id)).all()) == 1


def test_bad_input_fails_the_task_with_one_line_and_nothing_half_written(store_engine: Engine, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    missing = tmp_path / "gone.csv"
    with session_scope(store_engine) as session:
        task_id = submit_task(session, "data_analysis", {"path": str(missing)}).id
    with pytest.raises(AgentInputError, match="path"):
        run(store_engine, storage, task_id)
    with session_scope(store_engine) as session:
        task = session.get(AgentTask, task_id)
        assert task.status == TaskStatus.failed and "path" in task.error and "\n" not in task.error
        assert session.scalars(select(TaskResult).where(TaskResult.task_id == task_id)).all() == []
        failed = session.scalars(select(AuditEvent).where(AuditEvent.action == "agent.failed")).one()
        assert failed.details["transient"] is False


def test_invalid_parameters_queue_nothing(store_engine: Engine) -> None:
    with pytest.raises(InvalidParameters, match="agent forensics: paths"):
        with session_scope(store_engine) as session:
            submit_task(session, "forensics", {"paths": "not-a-list", "max_files": -1})
    with session_scope(store_engine) as session:
        assert session.scalars(select(AgentTask)).all() == []


def test_the_queue_puts_higher_priority_first_then_older(store_engine: Engine, dataset: Path) -> None:
    with session_scope(store_engine) as session:
        made = [
            submit_task(session, "data_analysis", {"path": str(dataset)}, priority=p, case_id="case-q").id
            for p in (Priority.low, Priority.critical, Priority.normal, Priority.critical)
        ]
        submit_task(session, "data_analysis", {"path": str(dataset)}, priority=Priority.critical, case_id="other")
    with session_scope(store_engine) as session:
        order = [t.id for t in queue_order(session, case_id="case-q")]
    assert order == [made[1], made[3], made[2], made[0]]


def test_an_agent_run_emits_schema_valid_lineage_with_what_it_read_and_wrote(store_engine: Engine, tmp_path: Path,
                                                                             dataset: Path) -> None:
    memory = InMemoryTransport()
    emitter = LineageEmitter(memory, namespace="amas-test")
    storage = LocalStorage(tmp_path / "storage")
    parent = ParentRun(run_id=uuid.uuid4(), job_name="run-agent")
    with session_scope(store_engine) as session:
        task_id = submit_task(session, "data_analysis", {"path": str(dataset)}).id

    result = execute_task(task_id, settings=load_settings(), engine=store_engine, storage=storage,
                          emitter=emitter, parent=parent)

    events = memory.as_dicts()
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        validate_event(event)
    complete = events[-1]
    assert complete["job"]["name"] == "agent.data_analysis"
    assert complete["run"]["facets"]["parent"]["run"]["runId"] == str(parent.run_id)
    assert {(d["namespace"], d["name"]) for d in complete["inputs"]} == {("file", str(dataset))}
    assert {d["name"] for d in complete["outputs"]} >= {e.key for e in result.evidence}


def test_a_failed_agent_run_emits_fail(store_engine: Engine, tmp_path: Path) -> None:
    memory = InMemoryTransport()
    with session_scope(store_engine) as session:
        task_id = submit_task(session, "data_analysis", {"path": str(tmp_path / "none.csv")}).id
    with pytest.raises(AgentInputError):
        execute_task(task_id, settings=load_settings(), engine=store_engine, storage=LocalStorage(tmp_path / "s"),
                     emitter=LineageEmitter(memory, namespace="amas-test"))
    events = memory.as_dicts()
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    validate_event(events[-1])
    assert "path" in events[-1]["run"]["facets"]["errorMessage"]["message"]
