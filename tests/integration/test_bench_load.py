"""bench-load and bench-stress on a real Prefect server: short runs, every sample counted.

Kept short on purpose (CI's budget): together these take well under 90 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from amas.bench.spec import LoadRun, LoadSpec, StressRun, StressSpec
from amas.bench.results import BenchResult, Sample, summarize, write_results
from amas.db.models import AgentTask, TaskStatus
from amas.db.session import create_store_engine, session_scope
from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.integration

AMAS = str(Path(sys.executable).parent / "amas")
VENV_BIN = Path(sys.executable).parent


def test_a_short_load_writes_the_results_with_every_sample_counted(prefect_api: str, tmp_path: Path) -> None:
    from flows.bench_flows import bench_load

    store = f"sqlite:///{tmp_path / 'store.db'}"
    run = LoadRun(load=LoadSpec(rate=4, duration_s=3, workers=2), out=str(tmp_path / "out"), store_url=store,
                  thresholds=["error_rate < 0.01", "p95_ms < 5000"])
    outcome = bench_load(run=run)
    files = {k: Path(v) for k, v in outcome["files"].items()}
    assert {"metrics", "full", "latency_csv", "rates_csv", "html"} <= files.keys()
    assert all(p.exists() for p in files.values())
    load = json.loads(files["metrics"].read_text())["load"]
    assert load["arrivals"] == 12 and load["completed"] + load["failed"] + load["dropped"] == 12
    assert load["completed"] == 12 and load["passed"] == 1
    full = BenchResult.model_validate_json(files["full"].read_text())
    assert full.settings["rate"] == 4 and full.machine["cpu_count"] and full.versions["prefect"]
    phase = full.phases[0]
    assert phase.latency_ms["count"] == 12 and phase.queue_ms["count"] == 12
    assert phase.resources["samples"] >= 1 and phase.resources["generator_cores"]["mean"] is not None
    # Each arrival (and each of the 2 warm-up tasks) is an agent task completed in the store.
    engine = create_store_engine(store)
    with session_scope(engine) as session:
        done = session.scalar(select(func.count()).select_from(AgentTask).where(AgentTask.status == TaskStatus.completed))
    engine.dispose()
    assert done == 12 + 2


def _amas(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api, COLUMNS="200")
    return subprocess.run([AMAS, *args], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)


def test_a_slowed_agent_breaches_the_threshold_and_the_cli_exits_1_naming_it(prefect_server: str,
                                                                              tmp_path: Path) -> None:
    done = _amas(prefect_server, "bench", "load", "--rate", "4", "--duration", "1", "--delay-ms", "300",
                 "--workers", "2", "--threshold", "p95_ms < 200", "--out", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("amas: benchmark load failed: threshold p95_ms < 200 at 4/s breached"), last
    # The evidence is written before the run fails.
    assert json.loads((tmp_path / "load.json").read_text())["load"]["passed"] == 0


@pytest.mark.parametrize(("args", "expected"), [
    (["load", "--rate", "0"], "--rate: Input should be greater than 0"),
    (["load", "--agent", "nope"], "--agent/--param: unknown agent 'nope'"),
    (["load", "--threshold", "p95 < 10"], "unknown metric 'p95'"),
    (["stress", "--start", "10", "--ceiling", "5"], "ceiling 5/s is below start 10/s"),
    (["load", "--rate", "1", "--duration", "1", "--api", "http://10.1.2.3:4200/api"], "only targets 127.0.0.1"),
])
def test_mistakes_are_refused_in_one_line_with_exit_2(args: list[str], expected: str) -> None:
    api = args[args.index("--api") + 1] if "--api" in args else "http://127.0.0.1:9/api"
    args = args[: args.index("--api")] if "--api" in args else args
    done = _amas(api, "bench", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amas: ") and expected in lines[0], done.stderr


def _result(p95_seconds: float) -> BenchResult:
    samples = [Sample(index=i, scheduled=1000.0 + i, submitted=1000.0 + i, started=1000.0 + i,
                      finished=1000.0 + i + p95_seconds, ok=True) for i in range(10)]
    return BenchResult(kind="load", phases=[summarize(samples, rate=1, duration_s=10)])


def test_dvc_metrics_diff_shows_the_change_between_two_runs(tmp_path: Path) -> None:
    declared = yaml.safe_load((PROJECT_DIR / "dvc.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"metrics": declared["metrics"], "plots": declared["plots"]}))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*argv: str) -> str:
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("git", "init", "-q")
    run(str(VENV_BIN / "dvc"), "init", "-q")
    write_results(_result(0.2), tmp_path / "metrics" / "bench")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "first run")
    write_results(_result(0.5), tmp_path / "metrics" / "bench")
    diff = json.loads(run(str(VENV_BIN / "dvc"), "metrics", "diff", "--json"))
    change = diff["metrics/bench/load.json"]["load.p95_ms"]
    assert (change["old"], change["new"]) == (200.0, 500.0)
    plots = json.loads(run(str(VENV_BIN / "dvc"), "plots", "diff", "--json"))["data"]
    latency = plots["Load latency over time (ms, scheduled to finished)"][0]
    assert set(latency["revisions"]) == {"HEAD", "workspace"}


def test_a_short_stress_ramp_stops_at_the_threshold(prefect_api: str, tmp_path: Path) -> None:
    from flows.bench_flows import bench_stress

    # Two workers and 300 ms per task hold about 6 arrivals/s: the ramp breaks before its ceiling.
    spec = StressSpec(start=2, step=4, ceiling=14, step_duration_s=1.5, delay_ms=300, workers=2, drain_timeout_s=5,
                      settle_s=0)
    outcome = bench_stress(run=StressRun(stress=spec, server_db="stack", thresholds=["p95_ms < 800"],
                                         out=str(tmp_path)))
    (result,) = outcome
    assert result["name"] == "stress" and result["passed"]
    full = BenchResult.model_validate_json(Path(result["files"]["full"]).read_text())
    assert len(full.phases) < len(spec.rates())
    assert full.held_rate is not None and full.held_rate < full.phases[-1].rate
    assert full.broke["thresholds"] and "p95_ms < 800" in full.broke["thresholds"][0]
    assert full.broke["component"] == "worker", full.broke


def test_the_dask_runner_with_two_workers_completes_a_short_load(prefect_api: str, tmp_path: Path) -> None:
    from flows.bench_flows import bench_load

    run = LoadRun(load=LoadSpec(rate=4, duration_s=1, task_runner="dask", workers=2), out=str(tmp_path),
                  thresholds=["error_rate < 0.01"])
    outcome = bench_load(run=run)
    assert outcome["metrics"]["completed"] == 4 and outcome["metrics"]["failed"] == 0
    full = BenchResult.model_validate_json(Path(outcome["files"]["full"]).read_text())
    assert full.settings["task_runner"] == "dask" and full.settings["workers"] == 2


def test_stress_on_a_throwaway_postgresql_server(prefect_api: str, tmp_path: Path) -> None:
    from flows.bench_flows import bench_stress

    spec = StressSpec(start=2, step=2, ceiling=2, step_duration_s=1, workers=2, drain_timeout_s=5)
    (result,) = bench_stress(run=StressRun(stress=spec, server_db="postgresql", thresholds=["error_rate < 0.5"],
                                           out=str(tmp_path)))
    full = BenchResult.model_validate_json(Path(result["files"]["full"]).read_text())
    assert full.name == "stress_postgres" and full.settings["server_db"] == "postgresql"
    assert full.held_rate == 2 and full.phases[0].completed == 2
    assert full.versions.get("postgres")
    assert full.phases[0].resources["pg_cores"]["mean"] is not None
