"""A smoke run of scripts/bench_agents.py with tiny sizes against the session's real Prefect server.

It checks the report's structure and that its numbers are positive and agree with each other;
it never asserts on speed (the machine is shared and noisy).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_agents.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_agents", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_agents"] = module
    spec.loader.exec_module(module)
    return module


def close(a: float, b: float, rel: float = 0.02, abs_: float = 0.01) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def run(bench: ModuleType, args: list[str]) -> tuple[int, dict[str, Any], str]:
    screen = io.StringIO()
    code = bench.main(args, console=Console(file=screen, width=200))
    out = Path(args[args.index("--out") + 1])
    return code, json.loads(out.read_text()), screen.getvalue()


def check_consistent_exit(report: dict[str, Any], code: int) -> None:
    failed = [v for v in report["verdicts"] if v["passed"] is False]
    assert code == report["exit_code"] == (1 if failed else 0), failed


def test_help_lists_the_options(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--tasks", "--rounds", "--rows", "--hash-mib", "--only", "--api-url", "--out", "--check"):
        assert option in text


def test_a_failed_part_is_a_failing_verdict_with_or_without_check(bench: ModuleType) -> None:
    report = {"throughput": {"error": "ServiceUnavailable: no server"}}
    report["verdicts"] = bench.verdicts(report)
    assert [(v["name"], v["kind"], v["passed"]) for v in report["verdicts"]] == [
        ("throughput.error", "correctness", False)]
    assert bench.exit_code(report, check=False) == bench.exit_code(report, check=True) == 1


def test_throughput_and_hashing_report(bench: ModuleType, prefect_api: str, tmp_path: Path) -> None:
    home_before = os.environ["AMAS_HOME"]
    out = tmp_path / "bench" / "report.json"
    tasks, rounds = 2, 2
    code, report, screen = run(bench, [
        "--api-url", prefect_api, "--only", "throughput", "--only", "hash", "--tasks", str(tasks),
        "--rounds", str(rounds), "--hash-mib", "1", "--pause", "0", "--out", str(out), "--check",
    ])

    assert os.environ["AMAS_HOME"] == home_before, "main must restore the caller's environment"
    assert report["schema"] == "amas-bench-agents/1" and report["parts"] == ["throughput", "hash"]
    assert "data_analysis" not in report and report["out"] == str(out)
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["prefect"]
    assert len(report["load_average"]["start"]) == 3 and len(report["load_average"]["end"]) == 3
    check_consistent_exit(report, code)
    assert "throughput.ratio" in screen and "hashing.ratio_sha256" in screen

    t = report["throughput"]
    assert t["server"]["kind"] == "external" and t["api_url"] == prefect_api
    assert t["store"]["all_rounds_ok"] and t["store"]["audit_chain"]["ok"]
    raw = t["raw"]
    # A warm-up pair (round 0), then baseline/agent alternating.
    assert [(r["kind"], r["round"]) for r in raw] == [
        (kind, index) for index in range(rounds + 1) for kind in ("baseline", "agent")]
    for r in raw:
        assert r["tasks"] == tasks
        assert 0 < r["loop_seconds"] <= r["flow_seconds"]
        assert close(r["tasks_per_s"], r["tasks"] / r["loop_seconds"])
        assert close(r["ms_per_task"] * r["tasks_per_s"], 1000.0)
        assert r["flow_tasks_per_s"] <= r["tasks_per_s"]
        retries = r["client_http_retries"]
        assert retries is not None and retries["count"] >= 0 and retries["backoff_seconds"] >= 0
        assert sum(retries["by_status"].values()) == retries["count"]
        assert 0 <= r["ms_per_task_without_backoff"] <= r["ms_per_task"] + 0.01
        if r["kind"] == "agent":
            store = r["store"]
            assert store["ok"] and store["completed"] == store["results"] == tasks
            assert store["audit_events"] == {"agent.completed": tasks, "agent.started": tasks,
                                             "agent.submitted": tasks}
            assert store["flow_run_id_recorded"]
            assert 0 < r["submit_ms_per_task"] + r["run_ms_per_task"] <= r["ms_per_task"] + 0.01
        assert (r["round"] == rounds and r["kind"] == "agent") or "settle_after" in r

    m = t["median"]
    for kind in ("baseline", "agent"):
        measured = [r for r in raw if r["kind"] == kind and r["round"] > 0]
        assert m[kind]["rounds"] == rounds
        assert close(m[kind]["tasks_per_s"], statistics.median(r["tasks_per_s"] for r in measured))
        assert close(m[kind]["ms_per_task"], statistics.median(r["ms_per_task"] for r in measured))
    assert close(m["ratio_agent_vs_baseline"], m["agent"]["tasks_per_s"] / m["baseline"]["tasks_per_s"], abs_=1e-3)
    assert close(m["agent_overhead_ms_per_task"], m["agent"]["ms_per_task"] - m["baseline"]["ms_per_task"])
    assert len(m["ratio_per_round"]) == rounds and all(x > 0 for x in m["ratio_per_round"])
    assert close(m["ratio_agent_vs_baseline_without_backoff"],
                 m["baseline"]["ms_per_task_without_backoff"] / m["agent"]["ms_per_task_without_backoff"], abs_=1e-3)

    h = report["hashing"]
    assert h["digests_match"] and h["size_bytes"] == 1 << 20 and h["repeat"] == rounds
    assert all(v > 0 for v in h["mb_per_s"].values())
    assert close(h["ratio_sha256"], h["mb_per_s"]["agent_sha256"] / h["mb_per_s"]["sha256sum"], abs_=2e-3)

    names = {v["name"]: v for v in report["verdicts"]}
    assert names["throughput.ratio"]["passed"] is None and names["throughput.store"]["passed"] is True
    assert names["hashing.digests"]["passed"] is True
    assert names["hashing.ratio_sha256"]["passed"] == (h["ratio_sha256"] >= 0.8)


def test_data_analysis_report(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    rows = 2000
    code, report, _ = run(bench, ["--only", "data", "--rows", str(rows), "--rounds", "1", "--out", str(out)])

    check_consistent_exit(report, code)
    d = report["data_analysis"]
    assert d["rows"] == rows and d["rounds"] == 1
    assert d["budget"] == {"seconds": 5.0, "peak_rss_mib": 1024.0}
    for fmt in ("parquet", "csv"):
        (run_,) = d["raw"][fmt]
        assert run_["rows"] == rows and run_["columns"] == 11 and run_["seconds"] > 0
        assert run_["peak_rss_mb"] >= run_["rss_after_imports_mb"] > 0
        m = d["median"][fmt]
        assert m["seconds_min"] <= m["seconds"] <= m["seconds_max"] and m["peak_rss_mib_max"] > 0
        assert m["bytes"] > 0 and close(m["rows_per_s"], rows / m["seconds"], rel=0.05, abs_=1)
        verdict = next(v for v in report["verdicts"] if v["name"] == f"data_analysis.{fmt}.seconds")
        assert verdict["passed"] == (m["seconds"] <= 5.0)
    assert "throughput" not in report and "hashing" not in report
