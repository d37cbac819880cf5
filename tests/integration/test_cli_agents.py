"""`amas agents list | run` as a user types them: one line and a non-zero exit for every mistake,
the same run-agent flow as the UI on success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.integration

AMAS = str(Path(sys.executable).parent / "amas")


def amas(*args: str, api: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.run([AMAS, *args], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_list_shows_every_agent_with_its_parameters() -> None:
    done = amas("agents", "list")
    assert done.returncode == 0, done.stderr
    for name in ("data_analysis", "forensics", "code_analysis", "pii_classifier", "web_audit", "report"):
        assert name in done.stdout
    assert "path (required)" in done.stdout


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["forensic"], 1, ["unknown agent 'forensic'", "valid agents: code_analysis, data_analysis"]),
    (["forensics", "--param", "paths=x", "--param", "max_files=lots"], 2,
     ["agent forensics: max_files: Input should be a valid integer", "'lots'"]),
    (["data_analysis", "--param", "path=a.csv", "--param", "colour=red"], 2,
     ["unknown parameter 'colour'", "valid: path, format"]),
    (["data_analysis"], 2, ["agent data_analysis: path: Field required"]),
    (["web_audit", "--param", "url=ftp://example.org"], 2, ["agent web_audit: url:"]),
    (["data_analysis", "--param", "path=a.csv", "--priority", "5000"], 1, ["--priority: must be between 0 and 1000"]),
])
def test_bad_parameters_are_refused_before_anything_runs(args: list[str], code: int, expected: list[str]) -> None:
    assert_one_line_refusal(amas("agents", "run", *args), code, *expected)


def test_an_unmigrated_store_names_the_fix() -> None:
    done = amas("agents", "run", "store_inventory")
    assert_one_line_refusal(done, 1, "schema revision (empty)", "run `amas db upgrade`")


def test_no_prefect_api_names_the_fix() -> None:
    assert amas("db", "upgrade").returncode == 0
    done = amas("agents", "run", "store_inventory", api="http://127.0.0.1:9/api")
    assert_one_line_refusal(done, 1, "no Prefect API at http://127.0.0.1:9/api", "amas up")


def test_run_prints_the_result_and_fail_on_sets_the_exit_code(prefect_server: str, tmp_path: Path) -> None:
    data = tmp_path / "people.csv"
    pd.DataFrame({"email": [f"user{i}@example.org" for i in range(50)], "score": range(50)}).to_csv(data, index=False)
    assert amas("db", "upgrade").returncode == 0

    done = amas("agents", "run", "pii_classifier", "--param", f"path={data}", "--format", "json", api=prefect_server)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["agent"] == "pii_classifier" and outcome["findings"]["worst"] == "medium"
    assert outcome["llm"] == {"used": False, "reason": "no model configured", "provider": None, "model": None,
                              "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    assert "user1@example.org" not in done.stdout

    failing = amas("agents", "run", "pii_classifier", "--param", f"path={data}", "--fail-on", "medium",
                   api=prefect_server)
    assert failing.returncode == 1
    assert "pii_classifier found medium findings (--fail-on medium)" in failing.stderr
    assert "task " in failing.stdout and "email" in failing.stdout
