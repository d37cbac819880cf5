"""A smoke run of scripts/bench_gdpr.py at 20,000 rows on PostgreSQL: the report's shape and its
correctness verdict; never its speed (the machine is shared and noisy)."""

from __future__ import annotations

import importlib.util
import io
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from rich.console import Console

from tests.plugins.postgres import ADMIN_DSN

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gdpr.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gdpr", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gdpr"] = module
    spec.loader.exec_module(module)
    return module


def scratch_databases() -> set[str]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'amas_bench_gdpr_%'")}


def test_a_small_run_erases_every_subject_and_reports(bench: ModuleType, tmp_path: Path) -> None:
    before = scratch_databases()
    out = tmp_path / "report.json"
    console = Console(file=io.StringIO(), width=120)

    code = bench.main(["--rows", "20000", "--erasures", "2", "--out", str(out)], console=console)

    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == report["exit_code"] == 0
    assert report["schema"] == "amas-bench-gdpr/1"
    assert report["seed"]["rows"] == 20000
    assert report["seed"]["tables"] == {"data_subjects": 2000, "agent_tasks": 6000, "task_results": 6000,
                                        "artifacts": 2000, "audit_events": 4000}
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["result"] == "erased" and run["seconds"] > 0 and run["dry_run_seconds"] > 0
        assert run["done"]["agent_tasks"] == {"tasks": 3, "results": 3}
        assert run["done"]["artifacts"] == {"rows": 1, "objects": 1}
        assert run["done"]["task_mentions"]["tasks"] >= 1  # another subject's task mentions this one
        assert not any(run["checks"].values()) and not any(run["remaining"].values())
    assert report["median_seconds"] == pytest.approx(statistics.median(r["seconds"] for r in report["runs"]))
    verdicts = {v["name"]: v for v in report["verdicts"]}
    assert verdicts["every erased subject is gone"]["passed"] is True
    assert "median erasure" in console.file.getvalue()  # type: ignore[attr-defined]
    assert scratch_databases() == before, "the scratch database was not dropped"


def test_bad_arguments_are_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--rows", "10"])
    assert exit_info.value.code == 2
