"""The retention-apply and compliance-report flows, and Prefect's own metadata as a category,
against the session's real Prefect server."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, Running
from sqlalchemy import Engine, func, select

from amas.config import get_settings, load_settings
from amas.db.models import RetentionRun, RunStatus, TaskResult
from amas.db.session import session_scope
from amas.retention import prefect_meta
from amas.retention.apply import apply_retention
from amas.retention.policy import Policy
from amas.storage import open_storage
from flows.retention_flow import STOPPED, RetentionApplyInput, compliance_report, retention_apply
from tests.integration.test_retention_apply import seed

pytestmark = pytest.mark.integration


@pytest.fixture
def flow_store(store_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The flows read AMAS_DATABASE_URL; point it at the migrated per-dialect store."""
    monkeypatch.setenv("AMAS_DATABASE_URL", store_engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    return store_engine


async def _artifact_markdown(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                            sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact with key {key}"
    return str(found[0].data)


def test_retention_apply_stops_then_applies_when_confirmed(prefect_api: str, flow_store: Engine) -> None:
    seed(flow_store)
    stopped = retention_apply(params=RetentionApplyInput(requested_by="test"), return_state=True)
    assert stopped.is_failed() and stopped.name == STOPPED
    assert re.match(r"category 'task_results' would delete 10 of 11 \(91%\).*--confirm$", stopped.message)
    assert "# Retention apply: STOPPED" in asyncio.run(_artifact_markdown("retention-apply"))

    state = retention_apply(params=RetentionApplyInput(confirm=True, requested_by="test"), return_state=True)
    assert state.is_completed(), state.message
    outcome = state.result()
    assert outcome["status"] == "completed"
    # The shipped policies: nothing on the results is held, so 10 go; the Prefect and storage
    # categories find nothing old on a fresh server and store.
    assert outcome["categories"]["task_results"]["applied"] == 10
    assert outcome["categories"]["prefect_flow_runs"]["status"] == "nothing due"
    with session_scope(flow_store) as session:
        assert session.scalar(select(func.count()).select_from(TaskResult)) == 1
        runs = session.scalars(select(RetentionRun).order_by(RetentionRun.started_at)).all()
        assert [r.status for r in runs] == [RunStatus.stopped, RunStatus.completed]
        assert runs[1].actor == "flow:retention-apply (test)"
    markdown = asyncio.run(_artifact_markdown("retention-apply"))
    assert "# Retention apply: completed" in markdown and "| task_results | delete | 10 | 0 | 10 |" in markdown


def test_compliance_report_is_stored_and_published(prefect_api: str, flow_store: Engine) -> None:
    seed(flow_store)
    state = compliance_report(since_days=30, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["audit_chain_ok"] is True
    assert result["overdue"]["task_results"] == 10 and result["overdue"]["prefect_flow_runs"] == 0
    storage = open_storage(get_settings())
    page = storage.get(result["stored"]["html"]["key"]).decode()
    assert "<svg" in page and "AMAS compliance report" in page
    markdown = asyncio.run(_artifact_markdown("compliance-report"))
    assert "## Inventory" in markdown and result["stored"]["html"]["key"] in markdown

    refused = compliance_report(since_days=0, return_state=True)
    assert refused.is_failed()
    with pytest.raises(Exception, match="since_days: must be between 1 and 3660"):
        refused.result()


def _finished_runs(client: Any, n: int) -> list[Any]:
    from prefect import flow

    @flow(name="retention-old-flow")
    def old_flow() -> None:
        pass

    runs = []
    for i in range(n):
        run = client.create_flow_run(flow=old_flow, name=f"old-{i}")
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Completed() if i % 2 else Failed(), force=True)
        runs.append(run)
    return runs


def prefect_policy(kind: str, **extra: Any) -> Policy:
    return Policy.model_validate({"category": kind, "description": "Prefect", "kind": kind, "max_age_days": 1,
                                  "action": "delete", "legal_basis": "legitimate interests"} | extra)


def test_old_flow_runs_and_artifacts_are_deleted_through_the_api(prefect_api: str, store_engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The server stamps start and creation times itself, so "old" means: judged two days from now.
    # Every finished run on the session server is then due; earlier tests are done with theirs.
    later = datetime.now(UTC) + timedelta(days=2)
    with get_client(sync_client=True) as client:
        finished = _finished_runs(client, 3)
        running = _finished_runs(client, 1)[0]
        client.set_flow_run_state(running.id, Running(), force=True)
        artifacts = [client.create_artifact(ArtifactCreate(key=f"retention-old-{i}", type="markdown", data="x"))
                     for i in range(2)]
        runs_policy, artifacts_policy = prefect_policy("prefect_flow_runs"), prefect_policy("prefect_artifacts")

        counts = prefect_meta.survey(client, runs_policy, later, samples=2)
        assert counts.due >= 3 and counts.total >= counts.due + 1
        assert [v.decision for v in counts.samples] == ["delete", "delete"]
        assert prefect_meta.survey(client, runs_policy, datetime.now(UTC)).due == 0

        held = prefect_policy("prefect_flow_runs", legal_holds=[{"category": "prefect_flow_runs", "reason": "audit"}])
        assert prefect_meta.purge_batch(client, held, later, 100) == []
        assert prefect_meta.survey(client, held, later).held == counts.due

        monkeypatch.setattr("amas.retention.apply.utcnow", lambda: later)
        outcome = apply_retention(store_engine, [runs_policy, artifacts_policy], as_of=later, actor="test",
                                  settings=load_settings(retention={"batch_size": 2, "max_fraction": 1.0}),
                                  prefect_client=client)
        assert outcome.categories["prefect_flow_runs"].applied == counts.due
        assert outcome.categories["prefect_flow_runs"].batches == -(-counts.due // 2)
        assert outcome.categories["prefect_artifacts"].applied >= 2
        for run in finished:
            with pytest.raises(ObjectNotFound):
                client.read_flow_run(run.id)
        assert client.read_flow_run(running.id).state_type.value == "RUNNING", "unfinished runs are never deleted"
        for artifact in artifacts:
            with pytest.raises(ObjectNotFound):
                client.delete_artifact(artifact.id)
        assert prefect_meta.survey(client, runs_policy, later).due == 0
        client.set_flow_run_state(running.id, Completed(), force=True)
