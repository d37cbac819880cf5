"""run-agent and investigate on a real Prefect server: store rows, Prefect artifacts, retries,
timeouts, per-agent concurrency limits, priority order and the LLM summary through the router."""

from __future__ import annotations

import contextvars
import http.server
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, or_, select

from amas.config import get_settings
from amas.db.migrate import upgrade
from amas.db.models import AgentTask, TaskResult, TaskStatus
from amas.db.session import get_engine, session_scope
from tests.plugins.llm_replay import ReplayServer

pytestmark = pytest.mark.integration


@pytest.fixture
def store(prefect_api: str) -> Engine:
    engine = get_engine()
    upgrade(engine)
    return engine


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "readings.csv"
    pd.DataFrame({
        "reading": [float(i) for i in range(1, 40)] + [900.0],
        "email": [f"person{i}@example.org" for i in range(40)],
    }).to_csv(path, index=False)
    return path


def read_artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_run_agent_persists_the_task_and_publishes_artifacts(store: Engine, dataset: Path) -> None:
    from agents.data_analysis import DataAnalysisInput
    from flows.agent_flows import data_analysis

    outcome = data_analysis(params=DataAnalysisInput(path=str(dataset)), priority=80, requested_by="tester")

    assert outcome["agent"] == "data_analysis" and outcome["llm"]["used"] is False
    with session_scope(store) as session:
        task = session.get(AgentTask, uuid.UUID(outcome["task_id"]))
        assert (task.status, task.priority, task.actor, task.attempts) == (TaskStatus.completed, 80, "tester", 1)
        assert task.flow_run_id
        assert session.scalars(select(TaskResult).where(TaskResult.task_id == task.id)).one().summary == outcome["summary"]
    markdown = [a for a in read_artifacts("agent-data-analysis") if outcome["task_id"] in str(a.data)]
    assert markdown and "No model used: no model configured" in markdown[0].data
    assert read_artifacts("agent-data-analysis-findings"), "the findings table artifact is missing"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("agent-data_analysis")
    assert limit.limit == get_settings().agents.concurrency and limit.active

    # The flow run has lineage events of its own, and the agent's run names it as parent.
    from tests.lineage_schema import validate_event

    events = [json.loads(line) for line in get_settings().lineage_file.read_text().splitlines()]
    for event in events:
        validate_event(event)
    flow_events = [e for e in events if e["job"]["name"] == "run-agent"]
    assert [e["eventType"] for e in flow_events] == ["START", "COMPLETE"]
    assert flow_events[0]["job"]["facets"]["jobType"]["integration"] == "PREFECT"
    agent_run = next(e for e in events if e["job"]["name"] == "agent.data_analysis" and e["eventType"] == "COMPLETE")
    assert agent_run["run"]["facets"]["parent"]["run"]["runId"] == flow_events[0]["run"]["runId"] == str(task.flow_run_id)


def test_bad_parameters_are_refused_before_anything_runs(store: Engine) -> None:
    from flows.agent_flows import forensics

    state = forensics(params={"paths": ["x"], "max_files": 0}, return_state=True)
    assert state.is_failed()
    assert "max_files" in state.message
    with session_scope(store) as session:
        assert session.scalars(select(AgentTask)).all() == []


def test_bad_input_fails_the_run_once_without_retries(store: Engine, tmp_path: Path) -> None:
    from flows.agent_flows import data_analysis

    state = data_analysis(params={"path": str(tmp_path / "absent.csv")}, return_state=True)
    assert state.is_failed() and "path" in state.message
    with session_scope(store) as session:
        task = session.scalars(select(AgentTask)).one()
        assert task.status == TaskStatus.failed and task.attempts == 1, "bad input must not be retried"


class SlowThenFine(http.server.BaseHTTPRequestHandler):
    """The first ``slow_calls`` requests take longer than the agent timeout; later ones answer at once."""

    calls = 0
    slow_calls = 1
    delay = 6.0
    hold_until: Callable[[], bool] | None = None
    """When set, a slow call waits until it returns True (at most 8 s, under the agents' 10 s timeout) instead of ``delay``."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).calls += 1
        if type(self).calls <= self.slow_calls:
            if self.hold_until is None:
                time.sleep(self.delay)
            else:
                deadline = time.monotonic() + 8
                while not type(self).hold_until() and time.monotonic() < deadline:  # type: ignore[misc]
                    time.sleep(0.05)
        body = b"<html>ok</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_then_fine() -> Iterator[str]:
    SlowThenFine.calls = 0
    SlowThenFine.delay = 6.0
    SlowThenFine.hold_until = None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowThenFine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_task_that_times_out_is_retried_and_completes(store: Engine, slow_then_fine: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_AGENTS_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("AMAS_AGENTS_RETRIES", "1")
    monkeypatch.setenv("AMAS_AGENTS_RETRY_DELAY_SECONDS", "0")
    get_settings.cache_clear()
    from flows.agent_flows import web_audit

    outcome = web_audit(params={"url": slow_then_fine, "timeout_seconds": 30})

    with session_scope(store) as session:
        task = session.scalars(select(AgentTask)).one()
        assert str(task.id) == outcome["task_id"]
        assert (task.status, task.attempts) == (TaskStatus.completed, 2)
    assert SlowThenFine.calls == 2


def test_a_task_that_always_times_out_fails_after_its_retries(store: Engine, slow_then_fine: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SlowThenFine, "slow_calls", 100)
    monkeypatch.setenv("AMAS_AGENTS_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("AMAS_AGENTS_RETRIES", "1")
    monkeypatch.setenv("AMAS_AGENTS_RETRY_DELAY_SECONDS", "0")
    get_settings.cache_clear()
    from flows.agent_flows import web_audit

    state = web_audit(params={"url": slow_then_fine, "timeout_seconds": 30}, return_state=True)
    assert state.is_failed()
    with session_scope(store) as session:
        task = session.scalars(select(AgentTask)).one()
        assert task.status == TaskStatus.failed and task.attempts == 2
        assert task.error == "AgentTimeout: agent web_audit did not finish within 1 s (AMAS_AGENTS_TIMEOUT_SECONDS)"


def test_investigate_runs_higher_priority_first_and_ends_with_a_report(store: Engine, dataset: Path,
                                                                        tmp_path: Path) -> None:
    from flows.agent_flows import InvestigationInput, investigate

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "a.txt").write_text("chain of custody")
    (evidence / "b.txt").write_text("chain of custody")
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "app.py").write_text("def f(x):\n    return x if x else 0\n")
    case = InvestigationInput(
        title="Priority check", dataset_path=str(dataset), files=[str(evidence)], source_tree=str(tree),
        parallelism=1, priorities={"code_analysis": 90, "forensics": 20, "data_analysis": 60, "pii_classifier": 40},
    )

    outcome = investigate(case=case, requested_by="tester")

    started = [t["agent"] for t in outcome["tasks"]]
    assert started == ["code_analysis", "data_analysis", "pii_classifier", "forensics"]
    with session_scope(store) as session:
        tasks = session.scalars(select(AgentTask).where(AgentTask.case_id == outcome["case_id"])
                                .order_by(AgentTask.started_at)).all()
        assert [t.agent for t in tasks] == started
        for earlier, later in zip(tasks, tasks[1:], strict=False):
            assert earlier.finished_at <= later.started_at, "parallelism 1 must not overlap tasks"
        report = session.scalars(select(AgentTask).where(AgentTask.agent == "report")).one()
        assert report.status == TaskStatus.completed
    reports = [a for a in read_artifacts("agent-report") if "Priority check" in str(a.data)]
    assert reports, "the report artifact is missing"
    assert all(task["task_id"] in reports[0].data for task in outcome["tasks"])


def test_investigate_with_parallelism_runs_agents_at_once(store: Engine, dataset: Path, tmp_path: Path,
                                                          slow_then_fine: str) -> None:
    from flows.agent_flows import InvestigationInput, investigate

    def another_agent_overlaps() -> bool:
        """Another agent has started and had not finished when web_audit (still waiting) started."""
        with session_scope(store) as session:
            waiting = session.execute(select(AgentTask.case_id, AgentTask.started_at).where(
                AgentTask.agent == "web_audit", AgentTask.case_id.is_not(None), AgentTask.started_at.is_not(None),
                AgentTask.finished_at.is_(None))).first()
            if waiting is None:
                return False
            return session.scalars(select(AgentTask.id).where(
                AgentTask.case_id == waiting.case_id, AgentTask.agent != "web_audit",
                AgentTask.started_at.is_not(None),
                or_(AgentTask.finished_at.is_(None), AgentTask.finished_at > waiting.started_at))).first() is not None

    # web_audit's first request is held (at most 8 s) until another agent overlaps it: with
    # parallelism 3 one must run meanwhile. Fixed delays were too short on a loaded 2-core machine,
    # "another is running" never came true when the fast agents finished before web_audit sent its
    # request (stop 12), and "another has started" came true from agents that had finished before
    # web_audit began (this session's CI run).
    SlowThenFine.hold_until = another_agent_overlaps
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a.py").write_text("x = 1\n")
    # (Both queries stay within this case: the store holds earlier tests' tasks.)
    # web_audit first (highest priority): the others then start while it waits, however fast or
    # slow the machine; with default priorities it could start last, after the others finished.
    # Taking a concurrency slot on the local SQLite Prefect server can back off 2 s (see
    # run_in_slot), so now and then web_audit starts only after the fast agents have finished and
    # nothing is left to overlap. Such a run shows nothing either way; up to three runs are made,
    # and all three showing no overlap fails the test (with parallelism 1 none ever overlaps).
    attempts = []
    for _ in range(3):
        SlowThenFine.calls = 0
        outcome = investigate(case=InvestigationInput(dataset_path=str(dataset), source_tree=str(tree),
                                                      url=slow_then_fine, parallelism=3,
                                                      priorities={"web_audit": 100}))
        assert {t["agent"] for t in outcome["tasks"]} == {"data_analysis", "pii_classifier", "code_analysis",
                                                          "web_audit"}
        assert all(t["status"] == "completed" for t in outcome["tasks"])
        with session_scope(store) as session:
            tasks = {t.agent: t for t in session.scalars(select(AgentTask).where(
                AgentTask.case_id == outcome["case_id"]))}
        slow = tasks["web_audit"]
        overlapping = [a for a, t in tasks.items() if a != "web_audit"
                       and t.started_at < slow.finished_at and slow.started_at < t.finished_at]
        attempts.append({a: (t.started_at.time(), t.finished_at.time()) for a, t in tasks.items()})
        if overlapping:
            break
    assert overlapping, f"with parallelism 3 other agents must run while web_audit waits: {attempts}"


def test_the_concurrency_limit_keeps_one_agent_to_its_slots(store: Engine, dataset: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.agent_flows import data_analysis, ensure_agent_limits

    ensure_agent_limits(["data_analysis"], 2)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            "agent-data_analysis", GlobalConcurrencyLimitUpdate(limit=1))
    try:
        # Each thread gets a copy of this context, which holds the test's Prefect API setting.
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(data_analysis,),
                                    kwargs={"params": {"path": str(dataset)}}) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        with session_scope(store) as session:
            tasks = session.scalars(select(AgentTask).order_by(AgentTask.started_at)).all()
        assert len(tasks) == 3 and all(t.status == TaskStatus.completed for t in tasks)
        for earlier, later in zip(tasks, tasks[1:], strict=False):
            assert earlier.finished_at <= later.started_at, "limit 1 must run one data_analysis at a time"
    finally:
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(
                "agent-data_analysis", GlobalConcurrencyLimitUpdate(limit=2))


def test_a_configured_model_adds_its_summary_after_failing_over(store: Engine, dataset: Path,
                                                                llm_replay: ReplayServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    providers = [llm_replay.provider("primary", "openai", "500"), llm_replay.provider("backup", "openai", "ok")]
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", json.dumps(providers))
    monkeypatch.setenv("AMAS_LLM_MAX_RETRIES", "0")
    get_settings.cache_clear()
    from flows.agent_flows import data_analysis

    outcome = data_analysis(params={"path": str(dataset)})

    assert outcome["llm"]["used"] is True and outcome["llm"]["provider"] == "backup"
    assert outcome["llm"]["completion_tokens"] > 0
    with session_scope(store) as session:
        result = session.scalars(select(TaskResult)).one()
        assert result.llm_model == outcome["llm"]["model"] and result.output["llm"]["text"]
    assert [r.label for r in llm_replay.requests()] == ["primary", "backup"]
    assert os.environ["AMAS_LLM_PROVIDERS"]  # the flow read it from the environment, as a worker does
