"""`amas gdpr erase | export | requests` as a user types them, through the same flows as the UI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from amas.config import get_settings
from amas.db.migrate import upgrade
from amas.db.models import AgentTask, DataSubject, TaskResult
from amas.db.session import get_engine, session_scope
from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.integration

AMAS = str(Path(sys.executable).parent / "amas")
REF = "CRM-7007"
EMAIL = "mira.okafor@example.net"


def amas(*args: str, api: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.run([AMAS, *args], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "expected"), [
    (["erase", ""], "identifier is empty"),
    (["erase", "abc", "--by", "id"], "--by id needs a whole number"),
    (["erase", "not-an-address", "--by", "email", "--dry-run"], "--by email needs an email address"),
    (["export", "a\x01b", "--out", "x.zip"], "control character"),
])
def test_malformed_identifiers_are_refused_in_one_line_without_echoing_them(args: list[str], expected: str) -> None:
    done = amas("gdpr", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert args[1] == "" or args[1] not in lines[0]


def test_export_erase_and_the_request_list(prefect_api: str, tmp_path: Path) -> None:
    engine = get_engine(get_settings())
    upgrade(engine)
    with session_scope(engine) as session:
        subject = DataSubject(external_ref=REF, email=EMAIL, display_name="Mira Okafor")
        session.add(subject)
        session.flush()
        task = AgentTask(agent="report", parameters={"recipient": EMAIL}, subject_id=subject.id)
        session.add(task)
        session.flush()
        session.add(TaskResult(task_id=task.id, summary="report sent", output={"to": EMAIL}))
        subject_id = subject.id

    injected = amas("gdpr", "erase", "x' OR 1=1 --", "--dry-run", "--no-datasets")
    assert injected.returncode == 0, injected.stderr
    assert "no data found" in injected.stdout

    plan = amas("gdpr", "erase", REF, "--dry-run", "--no-datasets", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    planned = {step["step"]: step for step in json.loads(plan.stdout)["plan"]}
    assert planned["agent_tasks"]["action"] == "delete" and planned["data_subjects"]["action"] == "anonymise"

    out = tmp_path / "mira.zip"
    exported = amas("gdpr", "export", EMAIL, "--out", str(out), "--no-datasets", api=prefect_api)
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
        subjects = json.loads(archive.read("store/data_subjects.json"))
        assert subjects[0]["email"] == EMAIL
        assert "store/agent_tasks.csv" in archive.namelist() and "store/task_results.json" in archive.namelist()
    assert manifest["result"] == "exported"

    erased = amas("gdpr", "erase", REF, "--no-datasets", api=prefect_api)
    assert erased.returncode == 0, erased.stderr
    assert "erased; certificate" in erased.stdout
    with session_scope(engine) as session:
        row = session.get(DataSubject, subject_id)
        assert row is not None and row.email is None
        assert session.scalars(select(AgentTask)).first() is None

    listed = amas("gdpr", "requests", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["kind"], r["status"]) for r in rows] == [("erase", "completed"), ("export", "completed")]
    assert all(r["days_left"] is None and not r["overdue"] for r in rows)
    # The erasure deleted the earlier export of the same subject from storage.
    export_key = rows[1]["certificate_uri"].removeprefix(get_settings().storage_url.rstrip("/") + "/")
    assert export_key.endswith("/export.zip")
    assert not (get_settings().core.home / "storage" / export_key).exists()
    assert EMAIL not in listed.stdout and REF not in listed.stdout
    table = amas("gdpr", "requests")
    assert table.returncode == 0 and "export" in table.stdout
