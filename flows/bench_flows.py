"""bench-load and bench-stress: the load and stress benchmarks as Prefect flows.

Thin over ``amas.bench``: ``load`` generates the open-model arrivals (each a task run of this
flow run), ``stress`` ramps the rate on this Prefect server or on throwaway servers with their
database on SQLite and PostgreSQL, ``runs`` judges, writes and publishes. A breached threshold
or a regression past the baseline's tolerance fails the flow run (``BenchmarkFailed`` names
which) after the result files and artifacts are written. ``amas bench load|stress`` runs these.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from amas.bench.load import run_load_benchmark
from amas.bench.results import BenchmarkFailed, BenchResult, metrics
from amas.bench.runs import conclude, output_dir, publish, thresholds_for, tolerance_for
from amas.bench.spec import LoadRun, StressRun
from amas.bench.stress import run_stress_benchmark


def failed(results: list[BenchResult]) -> Any:
    """A Failed state naming every breached threshold and regression, or None when all passed.

    Returned rather than raised: the run fails with the reason as its message, and the CLI
    prints that one line, without Prefect logging a traceback for an expected verdict.
    """
    lines = [f"benchmark {r.stem} failed: " + "; ".join(r.failures) for r in results if r.failures]
    if not lines:
        return None
    message = " | ".join(lines)
    return Failed(message=message, data=BenchmarkFailed(message))


def _finish(result: BenchResult, paths: dict[str, Any]) -> Any:
    logger = get_run_logger()
    publish(result, paths)
    for line in result.failures:
        logger.warning(line)
    verdict = failed([result])
    if verdict is not None:
        return verdict
    logger.info("%s benchmark passed; results in %s", result.stem, paths["metrics"].parent)
    return {"name": result.stem, "passed": result.passed, "metrics": metrics(result)[result.stem],
            "held_rate": result.held_rate, "broke": result.broke, "files": {k: str(v) for k, v in paths.items()}}


@flow(name="bench-load", description="Constant-rate (open model) load of agent tasks through Prefect: latency "
      "percentiles, queueing, throughput, errors; thresholds and the baseline decide pass or fail.")
def bench_load(run: LoadRun) -> Any:
    thresholds = thresholds_for(run.kind, run.thresholds)  # a bad threshold refuses before any load
    tolerance = tolerance_for(run.tolerance)
    result, _ = run_load_benchmark(run)
    paths = conclude(result, thresholds, directory=output_dir(run.out, compared=run.baseline or run.save_baseline),
                     use_baseline=run.baseline, save=run.save_baseline, tolerance=tolerance)
    return _finish(result, paths)


@flow(name="bench-stress", description="Ramp the arrival rate in steps until a threshold breaks or the ceiling; "
      "the highest rate held and what broke first, on this server or on SQLite- and PostgreSQL-backed servers.")
def bench_stress(run: StressRun) -> Any:
    thresholds = thresholds_for("stress", run.thresholds)
    tolerance = tolerance_for(run.tolerance)
    directory = output_dir(run.out, compared=run.baseline or run.save_baseline)
    finished = []
    for result in run_stress_benchmark(run, thresholds):
        paths = conclude(result, thresholds, directory=directory, use_baseline=run.baseline,
                         save=run.save_baseline, tolerance=tolerance, judge_phases=False)
        publish(result, paths)
        finished.append((result, paths))
    summaries = []
    for result, paths in finished:
        for line in result.failures:
            get_run_logger().warning(line)
        summaries.append({"name": result.stem, "passed": result.passed, "held_rate": result.held_rate,
                          "broke": result.broke, "files": {k: str(v) for k, v in paths.items()}})
    return failed([r for r, _ in finished]) or summaries
