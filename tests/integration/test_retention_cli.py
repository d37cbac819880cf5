"""`amas retention plan | apply | report` and `amas audit verify` as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from amas.config import get_settings
from amas.db.models import AuditEvent
from amas.db.session import create_store_engine, session_scope
from amas.stack import PROJECT_DIR
from tests.integration.test_retention_apply import seed

pytestmark = pytest.mark.integration

AMAS = str(Path(sys.executable).parent / "amas")
NO_API = "http://127.0.0.1:9/api"


def amas(*args: str, api: str = NO_API) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = api
    env["COLUMNS"] = "160"
    return subprocess.run([AMAS, *args], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)


def one_line_refusal(done: subprocess.CompletedProcess[str], code: int, *expected: str, flow_logs: bool = False) -> str:
    """The refusal is one line; a command that ran a flow may print Prefect's run log lines before it."""
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    if flow_logs:
        assert all(" | INFO    | Flow run " in line for line in lines[:-1]), done.stderr
    else:
        assert len(lines) == 1, done.stderr
    assert lines[-1].startswith("amas: ")
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["plan", "--category", "task_result"], 2,
     ["unknown retention category 'task_result'", "categories: prefect_flow_runs, prefect_artifacts"]),
    (["plan", "--as-of", "last tuesday"], 2, ["--as-of: expected an ISO date or time", "'last tuesday'"]),
    (["apply", "--as-of", "2999-01-01"], 2, ["--as-of 2999-01-01T00:00:00+00:00 is in the future"]),
    (["apply", "--as-of", "2026-13-01"], 2, ["--as-of: expected an ISO date or time", "'2026-13-01'"]),
    (["plan"], 1, ["schema revision (empty)", "run `amas db upgrade`"]),
])
def test_mistakes_are_refused_in_one_line(args: list[str], code: int, expected: list[str]) -> None:
    one_line_refusal(amas("retention", *args), code, *expected)


def seeded_store() -> None:
    assert amas("db", "upgrade").returncode == 0
    engine = create_store_engine(get_settings().database_url)
    seed(engine)
    engine.dispose()


def test_apply_stops_above_the_fraction_until_confirmed(prefect_server: str, tmp_path: Path) -> None:
    seeded_store()
    dry = amas("retention", "apply", "--dry-run", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["status"] == "dry-run"
    assert dry.stderr.startswith("amas: a real run would stop: category 'task_results' would delete 10 of 11")

    stopped = amas("retention", "apply", api=prefect_server)
    one_line_refusal(stopped, 1, "retention apply stopped: category 'task_results' would delete 10 of 11 (91%)",
                     "AMAS_RETENTION_MAX_FRACTION=0.5", "re-run with --confirm", flow_logs=True)

    done = amas("retention", "apply", "--confirm", api=prefect_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and "task_results" in done.stdout

    plan = json.loads(amas("retention", "plan", "--format", "json", api=prefect_server).stdout)
    results = next(c for c in plan["categories"] if c["category"] == "task_results")
    assert (results["total"], results["due"]) == (1, 0)
    runs = next(c for c in plan["categories"] if c["category"] == "prefect_flow_runs")
    assert runs["error"] is None and runs["total"] >= 2

    out = tmp_path / "report.json"
    report = amas("retention", "report", "--format", "json", "--out", str(out), "--since", "1")
    assert report.returncode == 0, report.stderr
    document = json.loads(out.read_text())
    assert [a["status"] for a in document["actions"]] == ["stopped", "completed"]
    assert document["action_totals"]["task_results"] == 10
    assert document["audit_chain"]["ok"] is True


def test_audit_verify_names_the_first_broken_link() -> None:
    assert amas("db", "upgrade").returncode == 0
    ok = amas("audit", "verify")
    assert ok.returncode == 0 and ok.stdout.strip() == "audit chain verifies: 1 event"
    engine = create_store_engine(get_settings().database_url)
    with session_scope(engine) as session:
        last = session.scalars(select(AuditEvent)).one()
        # INSERT is allowed (UPDATE and DELETE are not): a forged event with a made-up hash.
        session.add(AuditEvent(occurred_at=last.occurred_at, actor="mallory", action="x", entity_type="x",
                               details={}, prev_hash=last.hash, hash="e" * 64))
    engine.dispose()
    broken = amas("audit", "verify")
    one_line_refusal(broken, 1, "audit chain broken at event 2: hash does not match the event's content",
                     "(events verified before it: 1)")
    as_json = amas("audit", "verify", "--format", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "checked": 1, "first_bad_id": 2,
                                          "reason": "hash does not match the event's content"}
