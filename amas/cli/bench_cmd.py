"""``amas bench load | soak | stress``: thin commands over the bench-load and bench-stress flows.

Every value is checked before any load starts: a bad one exits 2 in one line naming the option.
The flows run in this process against the stack's Prefect API (127.0.0.1 only), so the arrivals
are task runs of a flow run the UI shows with its artifacts. A breached threshold or a
regression exits 1 naming it, after the result files are written.
Nothing here imports ``amas.cli.main`` at module level: main imports this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from amas.config import get_settings
from amas.errors import AmasError

bench_app = typer.Typer(help="Load, soak and stress benchmarks of agent tasks through Prefect.", no_args_is_help=True)

OPTION_NAMES = {"rate": "--rate", "duration_s": "--duration", "agent": "--agent", "agent_params": "--param",
                "delay_ms": "--delay-ms", "task_runner": "--task-runner", "workers": "--workers",
                "max_in_flight": "--max-in-flight", "drain_timeout_s": "--drain-timeout", "start": "--start",
                "step": "--step", "ceiling": "--ceiling", "step_duration_s": "--step-duration",
                "settle_s": "--settle", "window_s": "--window", "tolerance": "--tolerance", "scaling": "--scaling",
                "thresholds": "--threshold", "server_db": "--server-db"}


class Runner(StrEnum):
    thread = "thread"
    dask = "dask"


class ServerDb(StrEnum):
    stack = "stack"
    sqlite = "sqlite"
    postgresql = "postgresql"
    both = "both"


class Format(StrEnum):
    table = "table"
    json = "json"


def _build(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """``model`` from ``data``; a validation error as one line naming the CLI option (exit 2)."""
    from amas.bench.spec import BenchInputError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        field = loc[-1] if loc else ""
        where = OPTION_NAMES.get(field, field)
        message = err["msg"].removeprefix("Value error, ")
        raise BenchInputError(f"{where}: {message}" if where else message) from None


def _defaults(kind: str) -> dict[str, Any]:
    from amas.bench.runs import bench_params

    section = bench_params().get(kind) or {}
    return {k: v for k, v in section.items() if k not in ("thresholds", "server_db")}


def _agent_params(agent: str, pairs: list[str]) -> dict[str, Any] | None:
    """``--param k=v`` pairs validated against the agent (unknown agent or bad value: exit 2)."""
    from amas.agent_tasks import parse_param_pairs, validate_params
    from amas.bench.spec import BenchInputError
    from amas.registry import get_agent

    try:
        found = get_agent(agent)
        if not pairs:
            return None
        return validate_params(found, parse_param_pairs(found, pairs)).model_dump(mode="json")
    except AmasError as exc:
        raise BenchInputError(f"--agent/--param: {exc}") from None


def _checked_thresholds(kind: str, given: list[str]) -> list[str] | None:
    from amas.bench.runs import thresholds_for

    thresholds_for(kind, given or None)  # ConfigError (exit 2) names a bad one, from --threshold or params.yaml
    return given or None


def _prepare_api() -> None:
    from amas.bench.spec import require_loopback
    from amas.cli.main import use_stack_api

    if os.environ.get("PREFECT_API_URL"):
        require_loopback(os.environ["PREFECT_API_URL"])
    use_stack_api(get_settings())
    require_loopback(os.environ["PREFECT_API_URL"])


@contextmanager
def _progress(label: str) -> Iterator[None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from amas.bench.load import set_progress
    from amas.cli.main import err_console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[done]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        bar = progress.add_task(label, total=None, done="")

        def report(arrived: int, finished: int, total: int) -> None:
            progress.update(bar, completed=arrived, total=total, done=f"{finished} finished")

        set_progress(report)
        try:
            yield
        finally:
            set_progress(None)


def _fmt(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_load(outcome: dict[str, Any] | list[dict[str, Any]], fmt: Format) -> None:
    from amas.cli.main import console

    if fmt is Format.json:
        print(json.dumps(outcome, indent=2, default=str))
        return
    for one in outcome if isinstance(outcome, list) else [outcome]:
        files = one["files"]
        full = json.loads(Path(files["full"]).read_text())
        table = Table("phase", "arrivals", "done", "failed", "dropped", "late", "throughput/s", "p50", "p90", "p95",
                      "p99", "max", "queue p95", "exec p95", title=f"{one['name']} (latency in ms, scheduled -> finished)")
        for phase in full["phases"]:
            lat, queue, execution = phase["latency_ms"], phase["queue_ms"], phase["exec_ms"]
            table.add_row(phase["name"] or f"{phase['rate']:g}/s", str(phase["arrivals"]), str(phase["completed"]),
                          str(phase["failed"]), str(phase["dropped"]), str(phase["late"]), _fmt(phase["throughput"], 2),
                          _fmt(lat["p50"]), _fmt(lat["p90"]), _fmt(lat["p95"]), _fmt(lat["p99"]), _fmt(lat["max"]),
                          _fmt(queue["p95"]), _fmt(execution["p95"]))
        console.print(table)
        if full.get("held_rate") is not None and full["kind"] == "stress":
            broke = full.get("broke") or {}
            console.print(f"highest rate held: {full['held_rate']:g}/s; {broke.get('reason', '')}", highlight=False)
        for key, value in (full.get("extra") or {}).items():
            if key in ("scaling", "drift"):
                console.print(f"{key}: {json.dumps(value)}", highlight=False)
        console.print(f"results: {files['metrics']} (report {files['html']})", highlight=False)


def _run_flow(flow: Any, run: BaseModel, label: str) -> Any:
    from amas.cli.main import flow_result

    with _progress(label):
        state = flow(run=run, return_state=True)
    return flow_result(state, flow.name)


def _load_like(kind: str, *, rate: float | None, duration: float | None, agent: str | None, param: list[str],
               delay_ms: int, task_runner: Runner | None, workers: int | None, max_in_flight: int | None,
               threshold: list[str], baseline: bool, save_baseline: bool, tolerance: float | None, out: Path | None,
               scaling: bool, window: float | None, fmt: Format) -> None:
    from amas.bench.spec import LoadRun, LoadSpec

    given = {"rate": rate, "duration_s": duration, "agent": agent, "delay_ms": delay_ms or None,
             "task_runner": task_runner.value if task_runner else None, "workers": workers,
             "max_in_flight": max_in_flight}
    data = {**_defaults("load"), **{k: v for k, v in given.items() if v is not None}}
    spec = _build(LoadSpec, data)  # cheap checks first: the agent check imports the agents
    thresholds = _checked_thresholds(kind, threshold)
    params = _agent_params(spec.agent, param)
    if params is not None:
        spec = _build(LoadSpec, {**data, "agent_params": params})
    run = _build(LoadRun, {"load": spec, "kind": kind, "window_s": window,
                           "scaling": sorted({1, spec.workers}) if scaling else [],
                           "thresholds": thresholds, "tolerance": tolerance,
                           "baseline": baseline, "save_baseline": save_baseline, "out": str(out) if out else None})
    from amas.bench.runs import tolerance_for

    tolerance_for(run.tolerance)
    _prepare_api()
    from flows.bench_flows import bench_load

    outcome = _run_flow(bench_load, run, f"{kind} {spec.rate:g}/s for {spec.duration_s:g} s")
    _print_load(outcome, fmt)


RATE = typer.Option(None, "--rate", help="Arrivals per second (default params.yaml bench.load.rate).")
DURATION = typer.Option(None, "--duration", help="Seconds of arrivals (default params.yaml bench.load.duration_s).")
AGENT = typer.Option(None, "--agent", help="Agent each arrival runs (default params.yaml bench.load.agent).")
PARAM = typer.Option([], "--param", "-p", help="Agent parameter key=value, repeatable (default include_storage=false).")
DELAY = typer.Option(0, "--delay-ms", help="Make each agent task this much slower, inside its task run.")
RUNNER = typer.Option(None, "--task-runner", help="thread (this process) or dask (a local Dask cluster).")
WORKERS = typer.Option(None, "--workers", help="Threads, or Dask worker processes.")
IN_FLIGHT = typer.Option(None, "--max-in-flight", help="Unfinished arrivals at most; more are dropped and counted.")
THRESHOLD = typer.Option([], "--threshold", "-t", help="k6-style threshold, repeatable, replacing params.yaml's, "
                         "e.g. 'p95_ms < 2000'.")
BASELINE = typer.Option(False, "--baseline", help="Compare with the kept baseline (results default to metrics/bench).")
SAVE_BASELINE = typer.Option(False, "--save-baseline", help="Keep this run as the baseline when it passes.")
TOLERANCE = typer.Option(None, "--tolerance", help="Regression tolerance, a fraction (default params.yaml bench.tolerance).")
OUT = typer.Option(None, "--out", help="Results directory (default metrics/bench with --baseline/--save-baseline, "
                   "else AMAS_HOME/bench).")
FORMAT = typer.Option(Format.table, "--format", help="table or json")


@bench_app.command("load")
def load_cmd(rate: float | None = RATE, duration: float | None = DURATION, agent: str | None = AGENT,
             param: list[str] = PARAM, delay_ms: int = DELAY, task_runner: Runner | None = RUNNER,
             workers: int | None = WORKERS, max_in_flight: int | None = IN_FLIGHT, threshold: list[str] = THRESHOLD,
             baseline: bool = BASELINE, save_baseline: bool = SAVE_BASELINE, tolerance: float | None = TOLERANCE,
             out: Path | None = OUT,
             scaling: bool = typer.Option(False, "--scaling", help="Run once with 1 worker and once with --workers; "
                                          "report the throughput of each and the speed-up."),
             fmt: Format = FORMAT) -> None:
    """Constant-rate load of agent tasks through Prefect: exact latency percentiles, queueing, throughput, errors.

    Exit 1 when a threshold is breached or a metric regressed past the baseline's tolerance.
    """
    _load_like("load", rate=rate, duration=duration, agent=agent, param=param, delay_ms=delay_ms,
               task_runner=task_runner, workers=workers, max_in_flight=max_in_flight, threshold=threshold,
               baseline=baseline, save_baseline=save_baseline, tolerance=tolerance, out=out, scaling=scaling,
               window=None, fmt=fmt)


@bench_app.command("soak")
def soak_cmd(rate: float | None = RATE, duration: float = typer.Option(600.0, "--duration", help="Seconds of arrivals."),
             window: float | None = typer.Option(None, "--window", help="Seconds per reported window (default a tenth)."),
             agent: str | None = AGENT, param: list[str] = PARAM, delay_ms: int = DELAY,
             task_runner: Runner | None = RUNNER, workers: int | None = WORKERS,
             max_in_flight: int | None = IN_FLIGHT, threshold: list[str] = THRESHOLD, baseline: bool = BASELINE,
             save_baseline: bool = SAVE_BASELINE, tolerance: float | None = TOLERANCE, out: Path | None = OUT,
             fmt: Format = FORMAT) -> None:
    """The load profile for a long time, reported per window: latency and memory drift."""
    _load_like("soak", rate=rate, duration=duration, agent=agent, param=param, delay_ms=delay_ms,
               task_runner=task_runner, workers=workers, max_in_flight=max_in_flight, threshold=threshold,
               baseline=baseline, save_baseline=save_baseline, tolerance=tolerance, out=out, scaling=False,
               window=window, fmt=fmt)


@bench_app.command("stress")
def stress_cmd(
    start: float | None = typer.Option(None, "--start", help="First step's rate (default params.yaml bench.stress.start)."),
    step: float | None = typer.Option(None, "--step", help="Rate added per step."),
    ceiling: float | None = typer.Option(None, "--ceiling", help="Highest rate tried."),
    step_duration: float | None = typer.Option(None, "--step-duration", help="Seconds of arrivals per step."),
    server_db: ServerDb | None = typer.Option(None, "--server-db", help="stack (the running server), sqlite or "
                                              "postgresql (a throwaway server on it), both (default params.yaml)."),
    agent: str | None = AGENT, param: list[str] = PARAM, delay_ms: int = DELAY, task_runner: Runner | None = RUNNER,
    workers: int | None = WORKERS, max_in_flight: int | None = IN_FLIGHT, threshold: list[str] = THRESHOLD,
    baseline: bool = BASELINE, save_baseline: bool = SAVE_BASELINE, tolerance: float | None = TOLERANCE,
    out: Path | None = OUT, fmt: Format = FORMAT,
) -> None:
    """Ramp the rate until a threshold breaks or the ceiling: the highest rate held and what broke first.

    Exit 1 when the held rate or best throughput regressed past the baseline's tolerance.
    """
    from amas.bench.spec import StressRun, StressSpec

    given = {"start": start, "step": step, "ceiling": ceiling, "step_duration_s": step_duration, "agent": agent,
             "delay_ms": delay_ms or None, "task_runner": task_runner.value if task_runner else None,
             "workers": workers, "max_in_flight": max_in_flight}
    data = {**_defaults("stress"), **{k: v for k, v in given.items() if v is not None}}
    spec = _build(StressSpec, data)
    thresholds = _checked_thresholds("stress", threshold)
    params = _agent_params(spec.agent, param)
    if params is not None:
        spec = _build(StressSpec, {**data, "agent_params": params})
    run = _build(StressRun, {"stress": spec, "server_db": server_db.value if server_db else None,
                             "thresholds": thresholds, "tolerance": tolerance,
                             "baseline": baseline, "save_baseline": save_baseline,
                             "out": str(out) if out else None})
    from amas.bench.runs import tolerance_for

    tolerance_for(run.tolerance)
    servers = run.servers()
    _prepare_api()
    from flows.bench_flows import bench_stress

    outcome = _run_flow(bench_stress, run, f"stress {spec.start:g}..{spec.ceiling:g}/s on {', '.join(servers)}")
    _print_load(outcome, fmt)
