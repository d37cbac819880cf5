"""The gdpr-erase flow end to end: store, storage, a DVC dataset and everything derived from it.

The pipeline runs in a copied workspace (lineage recorded, data pushed to the local remote); a
generated person is also a store subject with a task, a result and an evidence object. The flow
erases them; the test then reads every dataset file, the DVC cache, the remote and the store,
checks the certificate lists each place, and restores a backup taken before the erasure to show
the person does not come back (issue 5's "done when", with issue 8's backups).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from amas.backup.engine import run_backup
from amas.backup.verify import restore_backup, verify_backup
from amas.config import get_settings
from amas.db.ledger import erasure_key, subject_digest
from amas.db.migrate import upgrade
from amas.db.models import AgentTask, Artifact, DataSubject, TaskResult
from amas.db.session import create_store_engine, get_engine, session_scope
from amas.gdpr.reapply import ledger_violations
from amas.gdpr.datasets import rerun_changed_stages
from amas.gdpr.erasure_list import ERASURE_LIST
from amas.pipeline import dvc
from amas.pipeline.stages import STAGES
from amas.storage import open_storage
from tests.integration.test_pipeline_flow import read_artifacts
from tests.plugins.pipeline import locked_outs

pytestmark = pytest.mark.integration


def pick_person(work: Path) -> dict[str, Any]:
    """A person with cases, events and notes, whose full name nobody else has."""
    people = pq.read_table(work / "data/raw/people.parquet").to_pylist()
    cases = pq.read_table(work / "data/raw/cases.parquet").to_pylist()
    events = pq.read_table(work / "data/raw/events.parquet", columns=["subject_id"])["subject_id"].to_pylist()
    notes = pq.read_table(work / "data/raw/notes.parquet", columns=["case_id"])["case_id"].to_pylist()
    names = [p["full_name"] for p in people]
    for person in people:
        own = {c["case_id"] for c in cases if c["subject_id"] == person["subject_id"]}
        if names.count(person["full_name"]) == 1 and own & set(notes) and person["subject_id"] in events:
            return person
    raise AssertionError("no suitable person in the generated data")


def dataset_mentions(work: Path, person: dict[str, Any]) -> list[str]:
    """Every dataset file (and row) in the workspace that still names the person."""
    needles = [person["subject_id"], person["email"], person["full_name"]]
    found = []
    for path in sorted((work / "data").rglob("*")):
        if path.suffix == ".parquet":
            for row in pq.read_table(path).to_pylist():
                if any(isinstance(v, str) and any(n in v for n in needles) for v in row.values()):
                    found.append(str(path.relative_to(work)))
                    break
        elif path.is_file() and any(n in path.read_text(encoding="utf-8", errors="replace") for n in needles):
            found.append(str(path.relative_to(work)))
    return found


def stage(engine: Any, subject: str) -> str:
    """Stage an erasure request (the flow takes its reference, never the identifier)."""
    from amas.db.ledger import key_id
    from amas.db.models import RequestKind
    from amas.gdpr.identifiers import parse_identifier
    from amas.gdpr.requests import stage_request

    key = erasure_key(get_settings())
    with session_scope(engine) as session:
        request, _ = stage_request(session, kind=RequestKind.erase, query=parse_identifier(subject), key=key,
                                   key_id=key_id(key), actor="test")
        return request.ref


def cache_object(work: Path, md5: str) -> Path:
    return work / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_the_flow_erases_a_person_from_store_storage_datasets_and_old_versions(
        prefect_api: str, pipeline_workspace: Path, tmp_path: Path) -> None:
    from flows.gdpr_flow import ErasureInput, gdpr_erase

    work = pipeline_workspace
    settings = get_settings()
    engine = get_engine(settings)
    upgrade(engine)
    storage = open_storage(settings)
    rerun_changed_stages(work, settings)
    # With the erasure machinery in place and an empty list, the pipeline makes today's bytes.
    assert locked_outs(work) == locked_outs()
    dvc.push(work, dvc.configure_remote(work, settings))
    before = locked_outs(work)
    remote = settings.core.home / "storage" / "dvc" / "files" / "md5"

    person = pick_person(work)
    assert dataset_mentions(work, person)
    base = settings.storage_url.rstrip("/")
    with session_scope(engine) as session:
        subject = DataSubject(external_ref=person["subject_id"], email=person["email"],
                              display_name=person["full_name"])
        session.add(subject)
        session.flush()
        task = AgentTask(agent="data_analysis", parameters={"path": "data/raw/people.parquet"}, subject_id=subject.id)
        session.add(task)
        session.flush()
        session.add(TaskResult(task_id=task.id, summary="profile", output={"email": person["email"]}))
        info = storage.put("evidence/person/statement.txt", f"statement by {person['full_name']}".encode())
        session.add(Artifact(uri=f"{base}/evidence/person/statement.txt", sha256=info.sha256,
                             size_bytes=info.size, task_id=task.id))
        subject_id = subject.id

    # A backup taken before the erasure holds the person in the store, the artifacts and the DVC index.
    older = run_backup(engine, settings)

    summary = gdpr_erase(params=ErasureInput(request=stage(engine, person["email"].upper()), dry_run=False,
                                             workspace=str(work)))

    # Store and storage.
    with session_scope(engine) as session:
        row = session.get(DataSubject, subject_id)
        assert row is not None and row.erased_at is not None and row.email is None
        assert session.scalars(select(AgentTask).where(AgentTask.subject_id == subject_id)).first() is None
        assert session.scalars(select(Artifact)).first() is None
    assert not storage.exists("evidence/person/statement.txt")

    # Every dataset file in the workspace, the raw tables and everything derived from them.
    assert dataset_mentions(work, person) == []
    after = locked_outs(work)
    contained = {"data/raw/people.parquet", "data/raw/cases.parquet", "data/raw/events.parquet",
                 "data/raw/notes.parquet", "data/clean/people_clean.parquet", "data/clean/cases_clean.parquet",
                 "data/clean/events_clean.parquet", "data/features/subject_activity.parquet"}
    for path in contained:
        assert after[path] != before[path], f"{path} was not rewritten"
        assert not cache_object(work, before[path]).exists(), f"old {path} is still in the DVC cache"
        assert not (remote / before[path][:2] / before[path][2:]).exists(), f"old {path} is still in the remote"
        assert (remote / after[path][:2] / after[path][2:]).is_file(), f"new {path} was not pushed"
    # Exactly those objects: an old version that held no row about the person stays.
    aggregate = "data/features/daily_events.parquet"
    assert cache_object(work, before[aggregate]).exists()
    assert all(not dvc.stage_changes(work, name) for name in STAGES), "dvc.lock does not match the workspace"

    key = erasure_key(settings)
    listed = json.loads((work / ERASURE_LIST).read_text(encoding="utf-8"))
    assert {subject_digest(person["subject_id"], key), subject_digest(person["email"], key)} <= set(listed["digests"])
    assert person["email"] not in json.dumps(listed) and person["subject_id"] not in json.dumps(listed)

    # The certificate lists each place, what was done, and the purged versions.
    assert summary["result"] == "erased"
    certificate = json.loads(storage.get(f"gdpr/{summary['request']}/certificate.json"))
    found = {f["location"]: f for f in certificate["found"]}
    for path in contained:
        assert found[path]["count"] > 0 and found[path]["version"] == before[path]
    assert {"data_subjects", "agent_tasks", "task_results", "artifacts", "artifact objects"} <= set(found)
    assert "email" in found["data/raw/people.parquet"]["pii_columns"]
    purged = {p["path"]: p for p in certificate["datasets"]["purged"]}
    assert set(purged) == contained
    assert all(p["cache"] == "deleted" and p["remote"] == "deleted" for p in purged.values())
    assert certificate["datasets"]["listed_people_present"] == 0
    assert set(certificate["verified_remaining"].values()) == {0}
    assert any("from lineage" in note for note in certificate["notes"])
    text = json.dumps(certificate)
    assert person["email"] not in text and person["subject_id"] not in text and person["full_name"] not in text
    artifact = read_artifacts(f"gdpr-certificate-{summary['request'].lower()}")
    assert artifact and "Certificate of erasure" in artifact[0].data

    # The older backup, restored, does not bring the person back: verification re-applies the
    # ledger in its scratch copy, and a restore does it in the target store and artifact location.
    verdict = verify_backup(older.id, settings, engine=engine)
    assert verdict.ok, verdict.summary
    assert "1 restored subjects erased again; 0 listed subjects present" in \
        next(c.detail for c in verdict.checks if c.name == "erasures")
    restored_db, restored_objects = tmp_path / "restored.db", tmp_path / "restored-storage"
    restored = restore_backup(older.id, f"sqlite:///{restored_db}", settings, artifacts_url=str(restored_objects))
    assert restored.verdict.ok, restored.verdict.summary
    assert restored.erasures["subjects"] == 1
    old_engine = create_store_engine(f"sqlite:///{restored_db}")
    try:
        with session_scope(old_engine) as session:
            row = session.get(DataSubject, subject_id)
            assert row is not None and row.erased_at is not None and row.email is None
            assert session.scalars(select(AgentTask).where(AgentTask.subject_id == subject_id)).first() is None
            assert ledger_violations(session, key) == 0
    finally:
        old_engine.dispose()
    assert not (restored_objects / "evidence/person/statement.txt").exists()
    written = next(c.detail for c in restored.verdict.checks if c.name == "artifacts")
    assert written.startswith("1 objects") and "written to" in written  # restored, then erased again
    index = storage.get(older.manifest.object("dvc-index").key)  # type: ignore[union-attr]
    assert person["email"].encode() not in index and person["subject_id"].encode() not in index

    # Idempotent: a second request finds nothing and rewrites nothing.
    again = gdpr_erase(params=ErasureInput(request=stage(engine, person["email"]), dry_run=False,
                                           workspace=str(work)))
    assert again["result"] == "no data found"
    assert again["datasets"] is None and locked_outs(work) == after


def test_an_erasure_stopped_before_the_datasets_is_finished_by_the_next_request(
        pipeline_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from amas.gdpr import datasets as gdpr_datasets
    from amas.gdpr.erase import erase_subject

    work = pipeline_workspace
    settings = get_settings()
    engine = get_engine(settings)
    upgrade(engine)
    storage = open_storage(settings)
    rerun_changed_stages(work, settings)
    dvc.push(work, dvc.configure_remote(work, settings))
    before = locked_outs(work)
    person = pick_person(work)
    with session_scope(engine) as session:
        subject = DataSubject(external_ref=person["subject_id"], email=person["email"])
        session.add(subject)
        session.flush()
        subject_id = subject.id

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("worker lost")

    monkeypatch.setattr(gdpr_datasets, "rerun_changed_stages", crash)
    with pytest.raises(RuntimeError, match="worker lost"):
        erase_subject(person["subject_id"], workspace=work, engine=engine, storage=storage)
    monkeypatch.undo()
    assert dataset_mentions(work, person), "the datasets were rewritten although the step failed"

    # By id: the store row is anonymised already, so only the ledger knows who this was.
    outcome = erase_subject(str(subject_id), by="id", workspace=work, engine=engine, storage=storage)

    assert outcome.resumed and outcome.certificate is not None
    assert outcome.certificate["result"] == "erased"
    assert dataset_mentions(work, person) == []
    purged = {p["path"] for p in outcome.datasets["purged"]}  # type: ignore[index]
    assert "data/raw/people.parquet" in purged and "data/features/subject_activity.parquet" in purged
    for path in purged:
        assert not cache_object(work, before[path]).exists(), f"old {path} is still in the DVC cache"
    assert all(not dvc.stage_changes(work, name) for name in STAGES)

    # Someone only the store knows: the list gains their digests, dvc.lock records it, and no
    # dataset is re-made (the generator would write the same bytes).
    with session_scope(engine) as session:
        session.add(DataSubject(external_ref="CRM-STORE-ONLY", email="store.only@example.com"))
    settled = locked_outs(work)
    store_only = erase_subject("CRM-STORE-ONLY", workspace=work, engine=engine, storage=storage)
    assert [r["stage"] for r in store_only.datasets["stages_ran"]] == ["generate"]  # type: ignore[index]
    assert "not re-run" in store_only.datasets["stages_ran"][0]["summary"]  # type: ignore[index]
    assert locked_outs(work) == settled and store_only.datasets["purged"] == []  # type: ignore[index]
    assert all(not dvc.stage_changes(work, name) for name in STAGES)
