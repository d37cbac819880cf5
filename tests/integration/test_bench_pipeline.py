"""A smoke run of scripts/bench_pipeline.py at 2,000 rows in a temporary workdir.

It checks the report's structure and that its numbers are positive and add up; it never asserts
on speed (the machine is shared and noisy). The imports part is left out: it only times
``python -c "import X"`` and would double the run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_pipeline.py"
STAGES = ["generate", "validate", "classify", "clean", "features"]
VALIDATING = {"validate", "clean", "features"}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_pipeline"] = module
    spec.loader.exec_module(module)
    return module


def close(a: float, b: float, rel: float = 0.02, abs_: float = 0.01) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def check_consistent_exit(report: dict[str, Any], code: int, check: bool) -> None:
    failed = [v for v in report["verdicts"] if v["passed"] is False and (check or v["kind"] == "correctness")]
    assert code == report["exit_code"] == (1 if failed else 0), failed


def test_help_lists_the_options(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--rows", "--workdir", "--keep", "--events", "--no-http", "--only", "--out", "--check"):
        assert option in text


@pytest.mark.parametrize("workdir", [REPO / "data", REPO / "data" / "raw", REPO])
def test_refuses_a_workdir_in_the_repository_data(bench: ModuleType, workdir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--workdir", str(workdir)])
    assert exit_info.value.code == 2


def test_a_failed_run_fails_with_or_without_check_and_a_slow_lineage_only_with_check(bench: ModuleType) -> None:
    report: dict[str, Any] = {"pipeline": {"runs": [{"rows": 100, "error": "RuntimeError: disk full"}]}}
    report["verdicts"] = bench.verdicts(report)
    assert [(v["name"], v["kind"], v["passed"]) for v in report["verdicts"]] == [
        ("pipeline.100.error", "correctness", False)]
    assert bench.exit_code(report, check=False) == bench.exit_code(report, check=True) == 1

    stats = {"mean_ms": 1.5, "median_ms": 1.4, "p99_ms": 2.0, "max_ms": 3.0}
    slow = {"lineage": {"events": 10, "file": {"emitter": stats, "baseline": stats, "ratio_mean": 1.0,
                                               "emitted": 10, "lines": 10, "failed": 0}}}
    slow["verdicts"] = bench.verdicts(slow)
    target = next(v for v in slow["verdicts"] if v["name"] == "lineage.file.mean_ms")
    assert target["kind"] == "target" and target["passed"] is False
    assert bench.exit_code(slow, check=False) == 0 and bench.exit_code(slow, check=True) == 1


def test_pipeline_dvc_and_lineage_report(bench: ModuleType, tmp_path: Path) -> None:
    out, workdir = tmp_path / "report.json", tmp_path / "work"
    rows, events = 2000, 50
    screen = io.StringIO()
    code = bench.main(["--rows", str(rows), "--only", "pipeline", "--only", "lineage", "--events", str(events),
                       "--workdir", str(workdir), "--out", str(out), "--check"],
                      console=Console(file=screen, width=240))
    report = json.loads(out.read_text())

    assert report["schema"] == "amas-bench-pipeline/1" and report["complete"]
    assert report["parts"] == ["lineage", "pipeline"] and "imports" not in report
    check_consistent_exit(report, code, check=True)
    assert not (workdir / f"rows-{rows}").exists(), "the workspace is removed without --keep"

    (run,) = report["pipeline"]["runs"]
    assert run["rows"] == rows and run["completed"]
    assert run["table_rows"] == {"people": 200, "cases": 100, "events": 2000, "notes": 100}
    assert [r["stage"] for r in run["stages"]] == STAGES
    for r in run["stages"]:
        assert r["exit_code"] == 0 and not r["timed_out"], r.get("error")
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and 0 < r["stage_s"] < r["wall_s"]
        assert r["peak_rss_mib"] > 0 and r["ru_maxrss_mib"] > 0
        profile = r["profile_s"]
        assert set(profile) == set(bench.PROFILE_PARTS) and all(v >= 0 for v in profile.values())
        assert profile["startup"] > 0 and close(sum(profile.values()), r["wall_s"], rel=0.05, abs_=0.05)
        assert close(r["validation_s"], profile["gx_init"] + profile["validate"] + profile["to_pandas"])
        assert close(r["lineage_s"], profile["emit"] + profile["md5"] + profile["describe"])
        assert r["lineage_events"] == 2 and profile["emit"] > 0 and r["lineage_s"] > 0
        # Every stage hashes its outputs for their version facets (too fast to show at this size).
        assert any(c["part"] == "md5" for c in r["calls"])
        assert close(r["lineage_share"], r["lineage_s"] / r["wall_s"], abs_=1e-3)
        assert 0 < r["share_of_pipeline"] <= 1
        if r["stage"] in VALIDATING:
            assert profile["gx_init"] > 0 and profile["validate"] > 0 and r["validation_share"] > 0
            assert any(c["part"] == "validate" and c["rows"] for c in r["calls"])
        else:
            assert r["validation_s"] == 0
        assert r["peak_part"] in r["peak_rss_by_part_mib"]
    total = run["total"]
    assert close(total["wall_s"], sum(r["wall_s"] for r in run["stages"]))
    assert close(total["validation_s"], sum(r["validation_s"] for r in run["stages"]))
    assert close(total["lineage_s"], sum(r["lineage_s"] for r in run["stages"]))
    assert total["peak_rss_mib"] == max(r["peak_rss_mib"] for r in run["stages"])
    assert close(total["validation_share"], total["validation_s"] / total["wall_s"], abs_=1e-3)
    lineage_file = run["lineage_file"]
    assert lineage_file["ok"] and lineage_file["events"] == 2 * len(STAGES) and lineage_file["bytes"] > 0

    dvc = run["dvc"]
    assert dvc["files"] == 11 and dvc["bytes"] == sum(dvc["file_bytes"].values()) > 0
    assert set(dvc["variants"]) == {"project", "default"}
    for entry in dvc["variants"].values():
        assert entry["digests_match"] and entry["status_up_to_date"]
        assert entry["md5sum_s"] > 0 and entry["dvc_add_s"] > 0 and entry["dvc_status_s"] > 0
        assert entry["dvc_status_nothing_tracked_s"] > 0
        assert close(entry["ratio_dvc_add_vs_md5sum"], entry["dvc_add_s"] / entry["md5sum_s"], rel=0.05, abs_=0.05)
        assert close(entry["ratio_dvc_status_vs_md5sum"], entry["dvc_status_s"] / entry["md5sum_s"], rel=0.05,
                     abs_=0.05)
    # DVC's default cache (reflink, copy) never hardlinks; the project's may, depending on the filesystem.
    assert dvc["variants"]["default"]["workspace_files_linked_to_cache"] == 0

    lineage = report["lineage"]
    assert lineage["events"] == events
    file = lineage["file"]
    assert file["emitted"] == file["lines"] == events and file["failed"] == 0 and file["bytes_per_event"] > 1000
    for stats in (file["emitter"], file["baseline"], lineage["components"]["build"],
                  lineage["components"]["serialize"], lineage["http"]["emitter"]):
        assert 0 < stats["median_ms"] <= stats["p99_ms"] <= stats["max_ms"] and stats["mean_ms"] > 0
    assert close(file["ratio_mean"], file["emitter"]["mean_ms"] / file["baseline"]["mean_ms"])
    assert lineage["http"]["emitted"] == events and lineage["http"]["failed"] == 0

    names = {v["name"]: v for v in report["verdicts"]}
    assert names["lineage.file.mean_ms"]["passed"] == (file["emitter"]["mean_ms"] < 1.0)
    for name in ("lineage.file.delivered", f"pipeline.{rows}.stages", f"pipeline.{rows}.lineage_events",
                 f"pipeline.{rows}.dvc.project", f"pipeline.{rows}.dvc.default"):
        assert names[name]["passed"] is True, names[name]
    text = screen.getvalue()
    for title in ("Pipeline stages", "Where each stage's time goes", "DVC against md5sum", "Lineage emission"):
        assert title in text
