"""A smoke run of scripts/bench_retention.py at 2,000 rows on a scratch PostgreSQL database.

It checks the report's structure and that the numbers add up; it never asserts on speed (the
machine is shared and noisy), except through the verdict logic on made-up figures.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_retention.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_retention", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_retention"] = module
    spec.loader.exec_module(module)
    return module


def test_a_small_run_reports_every_measurement(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    console = Console(file=io.StringIO(), width=160)
    code = bench.main(["--rows", "2000", "--out", str(out), "--reader-interval", "0.005"], console=console)
    report: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in report, report.get("traceback")
    assert report["seed"]["rows"] == {"data_subjects": 20, "agent_tasks": 600, "task_results": 1260,
                                      "artifacts": 100, "audit_events": 20}
    assert report["seed"]["total_rows"] == 2000
    plan = report["plan"]["categories"]
    assert plan["task_results"]["total"] == 1260 and 0 < plan["task_results"]["due"] < 1260
    applied = report["apply"]["categories"]
    assert report["apply"]["status"] == "completed"
    for name in ("task_results", "agent_tasks", "artifacts"):
        assert applied[name]["rows"] == plan[name]["act"], name
    assert report["purge"]["rows"] == sum(applied[n]["rows"] for n in ("task_results", "agent_tasks", "artifacts"))
    assert report["purge"]["rows_per_second"] > 0
    assert report["reader"]["during_apply"]["queries"] > 0 and report["reader"]["errors"] == 0
    assert report["again"]["rows"] == 0
    assert report["report"]["audit_chain_ok"] is True and report["report"]["audit_events_verified"] > 20
    names = [v["name"] for v in report["verdicts"]]
    assert names == ["purge.rows_per_second", "reader.p99_ms", "reader.errors", "apply.completed",
                     "again.idempotent", "report.audit_chain", "report.seconds"]
    correctness = [v for v in report["verdicts"] if v["kind"] == "correctness"]
    assert all(v["passed"] for v in correctness), correctness
    assert code == report["exit_code"] == 0
    assert "retention apply — 2,000 rows seeded" in console.file.getvalue()


def test_a_missed_target_fails_only_with_check_and_a_failure_always(bench: ModuleType) -> None:
    slow = {"purge": {"rows": 1000, "seconds": 1.0, "rows_per_second": 1000, "categories": ["task_results"]},
            "reader": {"during_apply": {"queries": 10, "p50_ms": 1.0, "p99_ms": 150.0}, "idle": {"p99_ms": 1.0},
                       "errors": 0},
            "apply": {"status": "completed"}, "again": {"rows": 0, "seconds": 0.1},
            "report": {"audit_chain_ok": True, "audit_events_verified": 5, "seconds": 1.0, "survey_seconds": 0.5,
                       "build_seconds": 0.4, "render_seconds": 0.1}}
    slow["verdicts"] = bench.verdicts(slow)
    failed = {v["name"] for v in slow["verdicts"] if v["passed"] is False}
    assert failed == {"purge.rows_per_second", "reader.p99_ms"}
    assert bench.exit_code(slow, check=False) == 0 and bench.exit_code(slow, check=True) == 1
    broken = {**slow, "again": {"rows": 3, "seconds": 0.1}}
    broken["verdicts"] = bench.verdicts(broken)
    assert bench.exit_code(broken, check=False) == 1
    crashed: dict[str, Any] = {"error": "OperationalError: no server"}
    crashed["verdicts"] = bench.verdicts(crashed)
    assert bench.exit_code(crashed, check=False) == 1


@pytest.mark.parametrize("argv", [["--rows", "10"], ["--url", "sqlite:///x.db"]])
def test_bad_arguments_are_refused(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
