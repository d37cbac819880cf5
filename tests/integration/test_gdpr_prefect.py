"""GDPR requests reach Prefect's own metadata, on the session's real Prefect server.

Each test names its own subject (the server is shared by the session): a finished flow run whose
parameters name them (as a gdpr-erase run used to), a finished run whose log names them, a
markdown and a table artifact about them; and a bystander's run, log line and artifact, which
must survive. The erasure goes through the gdpr-erase flow with a staged request, so the test
also reads that flow run's own parameters back.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, LogCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId, LogFilter, LogFilterFlowRunId
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Running
from sqlalchemy import Engine

from amas.config import get_settings
from amas.db.ledger import erasure_key, key_id
from amas.db.migrate import upgrade
from amas.db.models import DataSubject, GdprRequest, RequestKind
from amas.db.session import get_engine, session_scope
from amas.gdpr.erase import erase_subject
from amas.gdpr.export import export_subject
from amas.gdpr.identifiers import parse_identifier
from amas.gdpr.requests import SEALED, stage_request
from amas.retention.policy import PolicySet
from amas.storage import open_storage

pytestmark = pytest.mark.integration


@flow(name="gdpr-prefect-seed")
def seed_flow(params: dict[str, Any]) -> None:
    """Never run: its flow runs are created through the API with the parameters a test needs."""


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = get_engine(get_settings())
    upgrade(engine)
    yield engine


@pytest.fixture
def no_holds(tmp_path: Path) -> PolicySet:
    return PolicySet(directory=tmp_path, policies=())


@pytest.fixture
def client(prefect_api: str) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


def person() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"CRM-{tag}", f"ann.{tag}@example.org"


def finished_run(client: SyncPrefectClient, parameters: dict[str, Any], *, log: str | None = None,
                 finish: bool = True) -> Any:
    run = client.create_flow_run(flow=seed_flow, parameters=parameters)
    client.set_flow_run_state(run.id, Running(), force=True)
    if finish:
        client.set_flow_run_state(run.id, Completed(), force=True)
    if log is not None:
        client.create_logs([LogCreate(name="prefect.flow_runs", level=20, message=log,
                                      timestamp=datetime.now(UTC), flow_run_id=run.id)])
    return run


def seed(engine: Engine, client: SyncPrefectClient, ref: str, email: str) -> dict[str, Any]:
    bystander = f"jo{email}"  # joann.…@example.org: contains the subject's email, is not theirs
    with session_scope(engine) as session:
        session.add(DataSubject(external_ref=ref, email=email, display_name="Ann"))
    artifact = client.create_artifact
    return {
        # What a gdpr-erase run held before the flow took a request reference.
        "params_run": finished_run(client, {"params": {"subject": email.upper(), "by": "auto", "dry_run": False}}),
        "log_run": finished_run(client, {"path": "data/raw/people.parquet"}, log=f"profiled subject {ref} (3 rows)"),
        "other_run": finished_run(client, {"recipient": bystander}, log=f"report sent to {bystander}"),
        "markdown": artifact(ArtifactCreate(key=f"agent-report-{ref.lower()}", type="markdown",
                                            data=f"# Report\n\nSent to {email}.", description="agent report")),
        "table": artifact(ArtifactCreate(type="table", data=json.dumps([{"subject": ref, "rows": 3}]),
                                         description="pii classifier")),
        "other_artifact": artifact(ArtifactCreate(type="markdown", data=f"# Report\n\nSent to {bystander}.",
                                                  description=f"for {bystander}")),
    }


def run_exists(client: SyncPrefectClient, run: Any) -> bool:
    try:
        client.read_flow_run(run.id)
    except ObjectNotFound:
        return False
    return True


def artifact_exists(client: SyncPrefectClient, artifact: Any) -> bool:
    return bool(client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact.id]))))


def logs_of(client: SyncPrefectClient, run: Any) -> list[str]:
    return [line.message for line in
            client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]


def stage(engine: Engine, subject: str, kind: RequestKind = RequestKind.erase) -> str:
    key = erasure_key(get_settings())
    with session_scope(engine) as session:
        request, _ = stage_request(session, kind=kind, query=parse_identifier(subject), key=key, key_id=key_id(key),
                                   actor="test")
        return request.ref


def test_prefect_mentions_are_planned_exported_and_erased_through_the_flow(
        engine: Engine, client: SyncPrefectClient, no_holds: PolicySet, tmp_path: Path) -> None:
    from flows.gdpr_flow import ErasureInput, gdpr_erase

    ref, email = person()
    seeded = seed(engine, client, ref, email)

    plan = erase_subject(ref, dry_run=True, engine=engine, policies=no_holds)
    steps = {s.name: s for s in plan.plan}
    assert (steps["prefect_flow_runs"].action, steps["prefect_flow_runs"].count) == ("delete", 2)
    assert "1 in their parameters" in steps["prefect_flow_runs"].reason
    assert "1 only in their logs" in steps["prefect_flow_runs"].reason
    assert (steps["prefect_artifacts"].action, steps["prefect_artifacts"].count) == ("delete", 2)
    found = {f.location: f.count for f in plan.discovery.found}
    assert (found["prefect flow runs"], found["prefect logs"], found["prefect artifacts"]) == (1, 1, 2)
    assert any(n.startswith("searched ") and "at most 10,000 candidate lines" in n for n in plan.discovery.notes)
    assert run_exists(client, seeded["params_run"]) and artifact_exists(client, seeded["table"]), "a dry run deleted"

    exported = export_subject(email, engine=engine, out=tmp_path / "ann.zip")
    with zipfile.ZipFile(tmp_path / "ann.zip") as archive:
        runs = json.loads(archive.read("prefect/flow_runs.json"))
        assert {r["id"] for r in runs} == {str(seeded["params_run"].id), str(seeded["log_run"].id)}
        assert [line["message"] for line in json.loads(archive.read("prefect/logs.json"))] == \
            [f"profiled subject {ref} (3 rows)"]
        assert len(json.loads(archive.read("prefect/artifacts.json"))) == 2
        assert "prefect/artifacts.csv" in archive.namelist()
    assert exported.manifest["prefect"]["searched"] is True and exported.manifest["prefect"]["log_lines"] == 1

    # The flow takes the reference of a staged request; the raw identifier never reaches Prefect.
    request = stage(engine, email)
    state = gdpr_erase(params=ErasureInput(request=request, dry_run=False, datasets=False), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["result"] == "erased" and summary["request"] == request
    flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert email not in json.dumps(flow_run.parameters).lower() and ref.lower() not in json.dumps(
        flow_run.parameters).lower()
    assert flow_run.parameters["params"]["request"] == request

    assert not run_exists(client, seeded["params_run"]) and not run_exists(client, seeded["log_run"])
    assert logs_of(client, seeded["log_run"]) == []
    assert not artifact_exists(client, seeded["markdown"]) and not artifact_exists(client, seeded["table"])
    assert run_exists(client, seeded["other_run"]) and artifact_exists(client, seeded["other_artifact"])
    assert logs_of(client, seeded["other_run"]) == [f"report sent to jo{email}"]
    assert summary["done"]["prefect_flow_runs"]["flow_runs"] == 2
    assert summary["done"]["prefect_artifacts"]["artifacts"] == 2
    assert {k: v for k, v in summary["remaining"].items() if k.startswith("prefect")} == \
        {"prefect artifacts": 0, "prefect flow runs": 0, "prefect logs": 0}

    storage = open_storage(get_settings())
    certificate = json.loads(storage.get(f"gdpr/{request}/certificate.json"))
    prefect = certificate["prefect"]
    assert prefect["searched"] is True and prefect["deleted"] == {"flow_runs": 2, "artifacts": 2}
    assert prefect["flow_runs_by_logs"] == 1 and prefect["log_lines"] == 1 and prefect["cannot_erase"] == []
    page = storage.get(f"gdpr/{request}/certificate.html").decode()
    assert "<h2>Prefect metadata</h2>" in page and "at most 10,000 candidate lines" in page
    for text in (json.dumps(certificate), page):
        assert email not in text.lower() and ref.lower() not in text.lower()
    with session_scope(engine) as session:
        row = session.query(GdprRequest).filter_by(ref=request).one()
        assert SEALED not in row.summary, "the sealed identifier outlived the request"

    # Again: nothing left to find, nothing else touched.
    again = erase_subject(ref, engine=engine, policies=no_holds)
    assert again.nothing_found and again.certificate["result"] == "no data found"  # type: ignore[index]
    assert not any(name.startswith("prefect") for name in again.done)
    assert again.certificate["prefect"]["searched"] is True  # type: ignore[index]
    assert run_exists(client, seeded["other_run"]) and artifact_exists(client, seeded["other_artifact"])


def test_an_unfinished_run_cannot_be_erased_until_it_finishes(engine: Engine, client: SyncPrefectClient,
                                                              no_holds: PolicySet) -> None:
    ref, email = person()
    with session_scope(engine) as session:
        session.add(DataSubject(external_ref=ref, email=email))
    running = finished_run(client, {"url": f"https://crm.example.org/people/{ref}"}, finish=False)

    first = erase_subject(email, engine=engine, policies=no_holds)
    assert first.certificate["result"] == "erased, except what cannot be erased"  # type: ignore[index]
    [cannot] = first.certificate["prefect"]["cannot_erase"]  # type: ignore[index]
    assert cannot["count"] == 1 and cannot["reason"].startswith("cannot erase: the flow run(s) have not finished")
    assert run_exists(client, running)

    client.set_flow_run_state(running.id, Completed(), force=True)
    # The store row is anonymised now: by email the request still finds the run in Prefect.
    second = erase_subject(email, engine=engine, policies=no_holds)
    assert second.done["prefect_flow_runs"]["flow_runs"] == 1 and second.certificate["result"] == "erased"  # type: ignore[index]
    assert not run_exists(client, running)


def test_an_unreachable_prefect_api_leaves_the_erasure_complete_and_says_why(
        engine: Engine, no_holds: PolicySet, prefect_server: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.plugins.prefect_server import free_port

    ref, email = person()
    with session_scope(engine) as session:
        subject = DataSubject(external_ref=ref, email=email)
        session.add(subject)
        session.flush()
        subject_id = subject.id
    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: closed}):
        plan = erase_subject(ref, dry_run=True, engine=engine, policies=no_holds)
        outcome = erase_subject(ref, engine=engine, policies=no_holds)
    why = f"Prefect metadata was not searched: no Prefect API at {closed}"
    assert any(note.startswith(why) for note in plan.discovery.notes)
    certificate = outcome.certificate
    assert certificate is not None and certificate["result"] == "erased"
    assert certificate["prefect"]["searched"] is False and closed in certificate["prefect"]["reason"]
    assert any(note.startswith(why) for note in certificate["notes"])
    page = open_storage(get_settings()).get(f"gdpr/{outcome.request_ref}/certificate.html").decode()
    assert "<strong>Not searched:</strong> no Prefect API at" in page
    with session_scope(engine) as session:
        row = session.get(DataSubject, subject_id)
        assert row is not None and row.erased_at is not None and row.email is None
