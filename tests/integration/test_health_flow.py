"""The amas-health flow against a real Prefect server, on each store dialect."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import Engine, func, select

from amas.config import get_settings
from amas.db.models import AuditEvent
from amas.db.session import session_scope
from flows.health_flow import health
from tests.lineage_schema import validate_event

pytestmark = pytest.mark.integration


@pytest.fixture
def health_store(store_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The flow reads AMAS_DATABASE_URL; point it at the migrated per-dialect store."""
    monkeypatch.setenv("AMAS_DATABASE_URL", store_engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    return store_engine


async def _artifact_markdown(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no artifact with key {key}"
    return str(artifacts[0].data)


def test_health_flow_checks_everything_and_publishes_a_report(prefect_api: str, health_store: Engine) -> None:
    state = health(return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert [c.name for c in report.checks] == ["store", "storage", "data quality", "lineage"]
    assert all(c.ok for c in report.checks), report.checks
    assert report.inventory["tables"]["audit_events"] >= 1

    with session_scope(health_store) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "health.probe")) == 1

    import asyncio

    markdown = asyncio.run(_artifact_markdown("amas-health"))
    assert "# AMAS health: healthy" in markdown
    assert "| audit_events |" in markdown

    events = [json.loads(line) for line in get_settings().lineage_file.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] == str(state.state_details.flow_run_id)
    assert events[1]["outputs"][0]["name"].endswith("audit_events")
    for event in events:
        validate_event(event)


def test_health_flow_fails_when_storage_is_broken(prefect_api: str, health_store: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage directory should be")
    monkeypatch.setenv("AMAS_STORAGE_URL", str(blocker))
    get_settings.cache_clear()
    state = health(return_state=True)
    assert state.is_failed()
    assert "storage" in state.message
    events = [json.loads(line) for line in get_settings().lineage_file.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
