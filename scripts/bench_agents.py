"""Benchmark agent tasks through Prefect, data_analysis on a big table, and forensics hashing.

    .venv/bin/python scripts/bench_agents.py [--tasks 200] [--rounds 3] [--rows 1000000] [--hash-mib 512]
        [--only throughput|data|hash ...] [--api-url URL] [--out PATH] [--check]

Three parts. The machine is shared and noisy (two cores), so speed is judged as a ratio against
a baseline run side by side in the same invocation wherever there is one, and the load average
is recorded with every measurement:

throughput
    In this one process, against a Prefect server: a flow that calls an empty ``@task`` N times
    (the bare Prefect overhead) and a flow that queues N ``store_inventory`` tasks
    (``include_storage=false``) with ``submit_task`` and runs each through the real
    ``agent_task`` of ``flows/agent_flows.py`` (global concurrency slot, ``execute_task``,
    persisted result, audit events, lineage), alternating baseline/agent rounds after one
    warm-up of each. The task loop inside each flow and the whole flow call are timed; the
    report gives tasks/s, ms per task, the median of each over the rounds and the ratio
    agent/baseline (agent tasks/s ÷ empty tasks/s). No hard target. It also counts the Prefect
    client's silent HTTP retries: the SQLite server answers 503 when its database is locked and
    the client sleeps about 2 s before retrying. Between rounds it waits for the server to go
    quiet (it records task runs for a while after a flow ends).
data
    ``scripts/bench_data_analysis.py``'s dataset and child-process measurement, Parquet and CSV
    alternately, --rounds times each. The issue's targets are absolute (no baseline): median
    under 5 s, every run's peak RSS under 1 GiB.
hash
    ``scripts/bench_forensics.py`` (best of --rounds runs each): the agent's sha256 against
    ``sha256sum`` on the same cached file. Target: at least 0.8 of sha256sum's MB/s.

Without --api-url a throwaway Prefect server is started on a free 127.0.0.1 port with its own
PREFECT_HOME and AMAS_HOME in a temporary directory (as the tests' ``prefect_server`` fixture
does) and stopped at the end. The AMAS store is always a fresh, migrated SQLite file in that
temporary AMAS_HOME, with default settings (the caller's AMAS_* variables and .env are ignored).
Data and hashing run first, before the server exists, so its background work does not share
the two cores with them.

Writes a rich table to the terminal and a JSON report (machine, load averages, every round's raw
numbers, medians, verdicts) to --out. A part that raises is recorded as an error and the others
still run. Exit status: 1 when a part fails or a correctness check fails (an agent task not
completed, a digest mismatch) or, with --check, when a target is missed; otherwise 0.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
for _path in (REPO, SCRIPTS):
    if str(_path) not in sys.path:  # run as `python scripts/bench_agents.py` without an installed package
        sys.path.insert(0, str(_path))

from _bench import Verdicts, exit_code, git_state, load_average, package_versions, utc_now  # noqa: E402

SCHEMA = "amas-bench-agents/1"
PARTS = ("throughput", "data", "hash")
AGENT = "store_inventory"
AGENT_PARAMS = {"include_storage": False}
HASH_MIN_RATIO = 0.8
WARMUP_TASKS = 10
QUIET_SERVER_CORES = 0.15
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------------------------
# Progress


class Reporter:
    """Where the parts report progress; this one shows nothing (tests, imports)."""

    def begin(self, label: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def end(self) -> None:
        pass


class RichReporter(Reporter):
    """An overall bar of steps and, under it, a bar (or spinner) for the current step."""

    def __init__(self, progress: Progress, steps: int) -> None:
        self.progress = progress
        self.overall = progress.add_task("[bold]benchmark", total=steps)
        self.current: Any = None

    def begin(self, label: str, total: int | None = None) -> None:
        self.end()
        self.current = self.progress.add_task(f"  {label}", total=total)

    def advance(self, steps: int = 1) -> None:
        if self.current is not None:
            self.progress.advance(self.current, steps)

    def end(self) -> None:
        if self.current is not None:
            self.progress.update(self.current, visible=False)
            self.progress.remove_task(self.current)
            self.current = None
            self.progress.advance(self.overall)


# --------------------------------------------------------------------------------------------
# Small helpers


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def load_script(name: str) -> ModuleType:
    """A sibling script in scripts/ as a module (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_group_cpu_seconds(pgid: int) -> float | None:
    """User+system CPU seconds of every live process in a process group (Linux /proc)."""
    total, found = 0.0, False
    try:
        entries = os.scandir("/proc")
    except OSError:
        return None
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:
                found = True
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total if found else None


def settler(pause: float, server_pgid: int | None, timeout: float) -> Callable[[], dict[str, Any]]:
    """A callable that pauses between rounds: at least ``pause`` s, then until the server is quiet.

    "Quiet" is the server's process group using under 0.15 of a core over one second; it is only
    known for a server this script started. An external server gets the plain pause.
    """

    def settle() -> dict[str, Any]:
        start = time.monotonic()
        time.sleep(pause)
        rate: float | None = None
        timed_out = False
        if server_pgid is not None:
            while True:
                before = process_group_cpu_seconds(server_pgid)
                time.sleep(1.0)
                after = process_group_cpu_seconds(server_pgid)
                if before is None or after is None:
                    break
                rate = after - before
                if rate < QUIET_SERVER_CORES:
                    break
                if time.monotonic() - start > timeout:
                    timed_out = True
                    break
        return {"seconds": rounded(time.monotonic() - start, 2),
                "server_cpu_cores": None if rate is None else rounded(rate, 2), "timed_out": timed_out}

    return settle


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "versions": package_versions(("prefect", "sqlalchemy", "pandas", "numpy", "pyarrow", "rich")),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mib"] = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    info["git"] = git_state(REPO)
    return info


# --------------------------------------------------------------------------------------------
# Throughput: empty Prefect tasks against agent tasks, in this process

_tick: Callable[[int], None] = lambda _steps: None  # noqa: E731 - set while a round runs


@functools.cache
def bench_flows() -> tuple[Any, Any]:
    """The baseline and agent flows, built on first use so Prefect is imported after the env is set."""
    from prefect import flow, task
    from prefect.runtime import flow_run

    from amas.agent_tasks import submit_task
    from amas.config import get_settings
    from amas.db.session import get_engine, session_scope
    from flows.agent_flows import ensure_agent_limits, run_in_slot

    @task(name="bench-empty", persist_result=False)
    def empty_task() -> None:
        return None

    @flow(name="bench-empty-tasks", description="N empty tasks in a row: the bare Prefect overhead.")
    def baseline_flow(tasks: int) -> dict[str, Any]:
        started = time.perf_counter()
        for _ in range(tasks):
            empty_task()
            _tick(1)
        return {"loop_seconds": time.perf_counter() - started, "flow_run_id": str(flow_run.id)}

    @flow(name="bench-agent-tasks", description="N store_inventory agent tasks, queued and run one by one.")
    def agent_flow(tasks: int) -> dict[str, Any]:
        settings = get_settings()
        engine = get_engine(settings)
        ensure_agent_limits([AGENT], settings.agents.concurrency)
        task_ids: list[str] = []
        submit_seconds = run_seconds = 0.0
        started = time.perf_counter()
        for _ in range(tasks):
            t0 = time.perf_counter()
            with session_scope(engine) as session:
                task_id = submit_task(session, AGENT, AGENT_PARAMS, actor="bench").id
            t1 = time.perf_counter()
            result = run_in_slot(task_id, AGENT)
            t2 = time.perf_counter()
            if result.agent != AGENT:
                raise RuntimeError(f"agent task {task_id} returned a {result.agent} result")
            submit_seconds += t1 - t0
            run_seconds += t2 - t1
            task_ids.append(str(task_id))
            _tick(1)
        return {"loop_seconds": time.perf_counter() - started, "submit_seconds": submit_seconds,
                "run_seconds": run_seconds, "task_ids": task_ids, "flow_run_id": str(flow_run.id)}

    return baseline_flow, agent_flow


def verify_agent_round(task_ids: list[str], flow_run_id: str) -> dict[str, Any]:
    """What the store holds for one round's tasks: all completed once, a result and three events each."""
    from sqlalchemy import func, select

    from amas.db.models import AgentTask, AuditEvent, TaskResult, TaskStatus
    from amas.db.session import get_engine, session_scope

    ids = [uuid.UUID(t) for t in task_ids]
    with session_scope(get_engine()) as session:
        statuses = Counter(session.scalars(select(AgentTask.status).where(AgentTask.id.in_(ids))))
        attempts = Counter(session.scalars(select(AgentTask.attempts).where(AgentTask.id.in_(ids))))
        run_ids = set(session.scalars(select(AgentTask.flow_run_id).where(AgentTask.id.in_(ids))))
        results = session.scalar(select(func.count()).select_from(TaskResult).where(TaskResult.task_id.in_(ids)))
        events = dict(session.execute(
            select(AuditEvent.action, func.count()).where(AuditEvent.entity_id.in_(task_ids))
            .group_by(AuditEvent.action)).all())
    completed = statuses.get(TaskStatus.completed, 0)
    expected_events = {"agent.submitted": len(ids), "agent.started": len(ids), "agent.completed": len(ids)}
    return {
        "tasks": len(ids),
        "completed": completed,
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "results": results,
        "audit_events": dict(sorted(events.items())),
        "flow_run_id_recorded": run_ids == {flow_run_id},
        "ok": (completed == len(ids) and results == len(ids) and events == expected_events
               and run_ids == {flow_run_id}),
    }


def verify_audit_chain() -> dict[str, Any]:
    from amas.db.audit import verify_chain
    from amas.db.session import get_engine, session_scope

    with session_scope(get_engine()) as session:
        verdict = verify_chain(session)
    return {"ok": verdict.ok, "checked": verdict.checked, "reason": verdict.reason}


class WarningCounter(logging.Handler):
    """Counts WARNING and worse records (Prefect's client logs them) while the rounds run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.locked = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the benchmark
            message = str(record.msg)
        if "database is locked" in message:
            self.locked += 1
        if len(self.samples) < 5:
            self.samples.append(f"{record.levelname} {record.name}: {message[:300]}")


class HttpRetryCounter:
    """Counts the Prefect client's HTTP retries and the back-off it sleeps before each.

    The client retries some answers silently (logging at DEBUG): a 503, which the server sends
    when SQLite says "database is locked", costs about 2 s of sleep. This wraps the private
    hook ``prefect.client.base._record_if_maintenance_backoff``, which both the sync and the async
    client call right before that sleep, and calls through to it unchanged. If a Prefect release
    drops the hook, ``available`` is False and the counts are reported as null.
    """

    def __init__(self) -> None:
        self.available = False
        self.count = 0
        self.backoff_seconds = 0.0
        self.by_status: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._module: Any = None
        self._original: Any = None

    def __enter__(self) -> HttpRetryCounter:
        try:
            import prefect.client.base as module

            original = module._record_if_maintenance_backoff
        except (ImportError, AttributeError):
            return self

        def counting(response: Any, exc_info: Any, retry_seconds: float, *args: Any, **kwargs: Any) -> Any:
            if response is not None:
                key = str(getattr(response, "status_code", "?"))
            elif exc_info and exc_info[0] is not None:
                key = exc_info[0].__name__
            else:
                key = "?"
            with self._lock:
                self.count += 1
                self.backoff_seconds += float(retry_seconds or 0)
                self.by_status[key] += 1
            return original(response, exc_info, retry_seconds, *args, **kwargs)

        module._record_if_maintenance_backoff = counting
        self._module, self._original, self.available = module, original, True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._module is not None:
            self._module._record_if_maintenance_backoff = self._original
            self._module = None

    def snapshot(self) -> tuple[int, float, Counter[str]]:
        with self._lock:
            return self.count, self.backoff_seconds, Counter(self.by_status)

    def since(self, before: tuple[int, float, Counter[str]]) -> dict[str, Any] | None:
        if not self.available:
            return None
        count, seconds, statuses = self.snapshot()
        return {"count": count - before[0], "backoff_seconds": rounded(seconds - before[1], 2),
                "by_status": dict(sorted((statuses - before[2]).items()))}


def one_round(kind: str, index: int, tasks: int, reporter: Reporter,
              retries: HttpRetryCounter | None = None) -> dict[str, Any]:
    global _tick
    baseline_flow, agent_flow = bench_flows()
    retries = retries or HttpRetryCounter()
    label = "warm-up" if index == 0 else f"round {index}"
    reporter.begin(f"throughput {label}: {'empty tasks' if kind == 'baseline' else AGENT + ' agent tasks'}", tasks)
    _tick = reporter.advance
    load_before = load_average()
    retries_before = retries.snapshot()
    try:
        started = time.perf_counter()
        inner = (baseline_flow if kind == "baseline" else agent_flow)(tasks)
        flow_seconds = time.perf_counter() - started
    finally:
        _tick = lambda _steps: None  # noqa: E731
        reporter.end()
    loop = inner["loop_seconds"]
    record: dict[str, Any] = {
        "kind": kind, "round": index, "tasks": tasks,
        "loop_seconds": rounded(loop, 4), "flow_seconds": rounded(flow_seconds, 4),
        "tasks_per_s": rounded(tasks / loop, 2), "flow_tasks_per_s": rounded(tasks / flow_seconds, 2),
        "ms_per_task": rounded(1000 * loop / tasks), "flow_ms_per_task": rounded(1000 * flow_seconds / tasks),
        "flow_run_id": inner["flow_run_id"], "load_average_before": load_before,
        "client_http_retries": retries.since(retries_before),
    }
    if record["client_http_retries"] is not None:
        # The loop is sequential, so the client's back-off sleeps are wholly inside it.
        backoff = record["client_http_retries"]["backoff_seconds"]
        record["ms_per_task_without_backoff"] = rounded(1000 * max(loop - backoff, 0.0) / tasks)
    if kind == "agent":
        record["submit_ms_per_task"] = rounded(1000 * inner["submit_seconds"] / tasks)
        record["run_ms_per_task"] = rounded(1000 * inner["run_seconds"] / tasks)
        record["store"] = verify_agent_round(inner["task_ids"], inner["flow_run_id"])
    return record


def summarise_throughput(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [r for r in rounds if r["round"] > 0]
    summary: dict[str, Any] = {}
    for kind in ("baseline", "agent"):
        mine = [r for r in measured if r["kind"] == kind]
        keys = ["tasks_per_s", "flow_tasks_per_s", "ms_per_task", "flow_ms_per_task"]
        if kind == "agent":
            keys += ["submit_ms_per_task", "run_ms_per_task"]
        summary[kind] = {k: rounded(median([r[k] for r in mine])) for k in keys}
        summary[kind]["rounds"] = len(mine)
        counted = [r["client_http_retries"] for r in mine if r["client_http_retries"] is not None]
        if counted and len(counted) == len(mine):
            summary[kind]["http_retries_per_round"] = rounded(median([c["count"] for c in counted]), 1)
            summary[kind]["backoff_ms_per_task"] = rounded(
                median([1000 * c["backoff_seconds"] / r["tasks"] for c, r in zip(counted, mine, strict=True)]))
            summary[kind]["ms_per_task_without_backoff"] = rounded(
                median([r["ms_per_task_without_backoff"] for r in mine]))
    base, agent = summary["baseline"], summary["agent"]
    pairs = [(b, a) for b in measured for a in measured
             if b["kind"] == "baseline" and a["kind"] == "agent" and a["round"] == b["round"]]
    summary["ratio_agent_vs_baseline"] = rounded(agent["tasks_per_s"] / base["tasks_per_s"], 4)
    summary["flow_ratio_agent_vs_baseline"] = rounded(agent["flow_tasks_per_s"] / base["flow_tasks_per_s"], 4)
    summary["ratio_per_round"] = [rounded(a["tasks_per_s"] / b["tasks_per_s"], 4) for b, a in pairs]
    summary["agent_overhead_ms_per_task"] = rounded(agent["ms_per_task"] - base["ms_per_task"])
    summary["agent_flow_overhead_ms_per_task"] = rounded(agent["flow_ms_per_task"] - base["flow_ms_per_task"])
    if "ms_per_task_without_backoff" in agent and "ms_per_task_without_backoff" in base:
        summary["agent_overhead_ms_per_task_without_backoff"] = rounded(
            agent["ms_per_task_without_backoff"] - base["ms_per_task_without_backoff"])
        # What the ratio would be if the client never had to sleep before a retry (an estimate).
        summary["ratio_agent_vs_baseline_without_backoff"] = rounded(
            base["ms_per_task_without_backoff"] / agent["ms_per_task_without_backoff"], 4)
    return summary


def measure_throughput(tasks: int, rounds: int, *, settle: Callable[[], dict[str, Any]] | None = None,
                       reporter: Reporter | None = None, warmup: int = WARMUP_TASKS) -> dict[str, Any]:
    """Warm-up, then ``rounds`` × (baseline, agent) against the configured Prefect API and AMAS store.

    The caller points Prefect at a server and AMAS_HOME (or AMAS_DATABASE_URL) at a store;
    the store is migrated here.
    """
    from prefect.settings import PREFECT_API_URL

    from amas.db.migrate import upgrade
    from amas.db.session import get_engine

    if tasks < 1 or rounds < 1:
        raise ValueError("tasks and rounds must be at least 1")
    reporter = reporter or Reporter()
    settle = settle or settler(1.0, None, 0)
    engine = get_engine()
    before, after = upgrade(engine)
    counter = WarningCounter()
    logging.getLogger().addHandler(counter)
    records: list[dict[str, Any]] = []
    plan = [("baseline", 0, min(warmup, tasks)), ("agent", 0, min(warmup, tasks))] if warmup else []
    for index in range(1, rounds + 1):
        plan += [("baseline", index, tasks), ("agent", index, tasks)]
    try:
        with HttpRetryCounter() as retries:
            for position, (kind, index, size) in enumerate(plan):
                record = one_round(kind, index, size, reporter, retries)
                if position + 1 < len(plan):
                    reporter.begin("waiting for the Prefect server to go quiet")
                    record["settle_after"] = settle()
                    reporter.end()
                records.append(record)
    finally:
        logging.getLogger().removeHandler(counter)
    store_ok = all(r["store"]["ok"] for r in records if r["kind"] == "agent")
    return {
        "tasks": tasks,
        "rounds": rounds,
        "warmup_tasks": min(warmup, tasks) if warmup else 0,
        "agent": AGENT,
        "agent_params": AGENT_PARAMS,
        "api_url": PREFECT_API_URL.value(),
        "store": {"url": engine.url.render_as_string(hide_password=True), "migrated_from": before,
                  "migrated_to": after, "all_rounds_ok": store_ok, "audit_chain": verify_audit_chain()},
        "client_warnings": {"count": counter.count, "database_locked": counter.locked, "samples": counter.samples},
        "raw": records,
        "median": summarise_throughput(records),
    }


# --------------------------------------------------------------------------------------------
# data_analysis and hashing: the colleagues' scripts


def measure_data(rows: int, rounds: int, workdir: Path, *, seed: int = 20261125,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    """Generate the dataset once, run the agent on Parquet and CSV alternately ``rounds`` times each."""
    bench = load_script("bench_data_analysis")
    reporter = reporter or Reporter()
    reporter.begin(f"data_analysis: generating {rows:,} rows")
    started = time.perf_counter()
    parquet, csv = bench.write_dataset(workdir / "data", rows, seed)
    generate_seconds = time.perf_counter() - started
    reporter.end()
    runs: dict[str, list[dict[str, Any]]] = {"parquet": [], "csv": []}
    try:
        for index in range(1, rounds + 1):
            for fmt, path in (("parquet", parquet), ("csv", csv)):
                reporter.begin(f"data_analysis round {index}: {fmt}")
                load_before = load_average()
                try:
                    run = bench.measure(path)
                except subprocess.CalledProcessError as exc:
                    tail = "\n".join((exc.stderr or "").strip().splitlines()[-15:])
                    raise RuntimeError(f"data_analysis on {path.name} failed:\n{tail}") from None
                reporter.end()
                run.update({"round": index, "load_average_before": load_before})
                runs[fmt].append(run)
    finally:
        parquet.unlink(missing_ok=True)
        csv.unlink(missing_ok=True)
    summary = {}
    for fmt, mine in runs.items():
        seconds = [float(r["seconds"]) for r in mine]
        peaks = [float(r["peak_rss_mb"]) for r in mine]
        summary[fmt] = {"bytes": mine[0]["bytes"], "seconds": rounded(median(seconds)),
                        "seconds_min": min(seconds), "seconds_max": max(seconds),
                        "peak_rss_mib": rounded(median(peaks), 1), "peak_rss_mib_max": max(peaks),
                        "rows_per_s": rounded(rows / median(seconds), 0)}
    return {"rows": rows, "seed": seed, "rounds": rounds, "generate_seconds": rounded(generate_seconds),
            "budget": {"seconds": bench.BUDGET_SECONDS, "peak_rss_mib": bench.BUDGET_RSS_MB},
            "raw": runs, "median": summary}


def measure_hashing(size_mib: int, repeat: int, workdir: Path, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run scripts/bench_forensics.py (best of ``repeat`` per tool) and keep its JSON report."""
    reporter = reporter or Reporter()
    reporter.begin(f"hashing {size_mib} MiB: agent vs sha256sum, best of {repeat}")
    load_before = load_average()
    argv = [sys.executable, str(SCRIPTS / "bench_forensics.py"), "--size-mib", str(size_mib),
            "--repeat", str(repeat), "--dir", str(workdir)]
    child = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    reporter.end()
    try:
        report = json.loads(child.stdout)
    except ValueError:
        tail = "\n".join((child.stdout + child.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"bench_forensics.py failed (exit {child.returncode}):\n{tail}") from None
    report.update({"exit_code": child.returncode, "stderr": child.stderr.strip()[-2000:],
                   "load_average_before": load_before, "min_ratio": HASH_MIN_RATIO})
    return report


# --------------------------------------------------------------------------------------------
# Verdicts, table, report


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per target (see ``_bench.Verdicts``)."""
    found = Verdicts()
    add = found.add
    for key in ("data_analysis", "hashing", "throughput"):
        if "error" in report.get(key, {}):
            add(f"{key}.error", "correctness", False, report[key]["error"][:500])

    data = report.get("data_analysis")
    if data and "error" not in data:
        budget = data["budget"]
        for fmt, m in data["median"].items():
            add(f"data_analysis.{fmt}.seconds", "target", m["seconds"] <= budget["seconds"],
                f"median {m['seconds']:.2f} s over {data['rounds']} run(s) on {data['rows']:,} rows "
                f"(target ≤ {budget['seconds']:g} s)")
            add(f"data_analysis.{fmt}.peak_rss", "target", m["peak_rss_mib_max"] <= budget["peak_rss_mib"],
                f"peak RSS {m['peak_rss_mib_max']:.0f} MiB, worst run (target ≤ {budget['peak_rss_mib']:.0f} MiB)")
    hashing = report.get("hashing")
    if hashing and "error" not in hashing:
        rate = hashing["mb_per_s"]
        add("hashing.ratio_sha256", "target", hashing["ratio_sha256"] >= HASH_MIN_RATIO,
            f"agent sha256 {rate['agent_sha256']:.0f} MB/s vs sha256sum {rate['sha256sum']:.0f} MB/s = "
            f"{hashing['ratio_sha256']:.2f} (target ≥ {HASH_MIN_RATIO}); the agent's full pass "
            f"(sha256+md5+entropy) {rate['agent_full_pass']:.0f} MB/s = {hashing['ratio_full_pass']:.2f}")
        add("hashing.digests", "correctness", bool(hashing["digests_match"]),
            "agent digests equal sha256sum/md5sum" if hashing["digests_match"] else "digest mismatch")
    throughput = report.get("throughput")
    if throughput and "error" not in throughput:
        m = throughput["median"]
        backoff = ""
        if "backoff_ms_per_task" in m["agent"]:
            backoff = (f", of which {m['agent']['backoff_ms_per_task']:.1f} ms is the Prefect client's retry back-off "
                       f"({m['agent']['http_retries_per_round']:g} retries per round)")
        add("throughput.ratio", "info", None,
            f"agent {m['agent']['tasks_per_s']:.2f} tasks/s vs empty task {m['baseline']['tasks_per_s']:.1f} tasks/s "
            f"= {m['ratio_agent_vs_baseline']:.4f}; +{m['agent_overhead_ms_per_task']:.1f} ms per agent task{backoff} "
            "(no target)")
        store = throughput["store"]
        add("throughput.store", "correctness", store["all_rounds_ok"] and store["audit_chain"]["ok"],
            "every agent task completed once with a result and 3 audit events; audit chain intact"
            if store["all_rounds_ok"] and store["audit_chain"]["ok"] else "store check failed: see throughput.raw[].store")
    return found.lines


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"AMAS agent benchmark — {report['machine']['cpu_count']} CPUs, "
                        f"load {report['load_average']['start']} → {report['load_average']['end']}")
    table.add_column("part")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target / note")
    throughput = report.get("throughput")
    if throughput and "error" not in throughput:
        m = throughput["median"]
        n = f"median of {throughput['rounds']}, {throughput['tasks']} tasks"
        for kind, label in (("baseline", "empty @task"), ("agent", f"{AGENT} agent task")):
            table.add_row("throughput" if kind == "baseline" else "", f"{label}: tasks/s (loop)",
                          f"{m[kind]['tasks_per_s']:.2f}", n)
            table.add_row("", f"{label}: tasks/s (whole flow)", f"{m[kind]['flow_tasks_per_s']:.2f}", "")
            table.add_row("", f"{label}: ms/task", f"{m[kind]['ms_per_task']:.2f}", "")
        table.add_row("", "  of which submit_task / agent_task", f"{m['agent']['submit_ms_per_task']:.2f} / "
                      f"{m['agent']['run_ms_per_task']:.2f}", "ms per agent task")
        table.add_row("", "ratio agent / baseline (tasks/s)", f"{m['ratio_agent_vs_baseline']:.4f}",
                      "per round: " + ", ".join(f"{r:.4f}" for r in m["ratio_per_round"]))
        table.add_row("", "overhead per agent task", f"{m['agent_overhead_ms_per_task']:.2f} ms",
                      "agent ms/task − empty ms/task; no target")
        if "http_retries_per_round" in m["agent"]:
            table.add_row("", "client HTTP retries per round", f"{m['baseline']['http_retries_per_round']:g} / "
                          f"{m['agent']['http_retries_per_round']:g}", "empty / agent (503 = server SQLite busy)")
            table.add_row("", "  back-off sleep per agent task", f"{m['agent']['backoff_ms_per_task']:.2f} ms",
                          f"without it: +{m['agent_overhead_ms_per_task_without_backoff']:.2f} ms, "
                          f"ratio {m['ratio_agent_vs_baseline_without_backoff']:.4f}")
        table.add_section()
    data = report.get("data_analysis")
    if data and "error" not in data:
        for fmt, m in data["median"].items():
            table.add_row("data_analysis" if fmt == "parquet" else "", f"{fmt} {data['rows']:,} rows: seconds",
                          f"{m['seconds']:.2f}", f"≤ {data['budget']['seconds']:g} s (median of {data['rounds']}; "
                          f"{m['seconds_min']:.2f}–{m['seconds_max']:.2f})")
            table.add_row("", f"{fmt}: peak RSS", f"{m['peak_rss_mib_max']:.0f} MiB",
                          f"≤ {data['budget']['peak_rss_mib']:.0f} MiB (worst run)")
        table.add_section()
    hashing = report.get("hashing")
    if hashing and "error" not in hashing:
        rate = hashing["mb_per_s"]
        size = hashing["size_bytes"] >> 20
        table.add_row("hashing", f"sha256sum ({size} MiB, cached)", f"{rate['sha256sum']:.0f} MB/s",
                      f"best of {hashing['repeat']}")
        table.add_row("", "agent sha256", f"{rate['agent_sha256']:.0f} MB/s",
                      f"ratio {hashing['ratio_sha256']:.2f} (target ≥ {HASH_MIN_RATIO})")
        table.add_row("", "agent sha256+md5", f"{rate['agent_sha256_md5']:.0f} MB/s",
                      f"ratio {hashing['ratio_sha256_md5']:.2f}")
        table.add_row("", "agent full pass (+entropy)", f"{rate['agent_full_pass']:.0f} MB/s",
                      f"ratio {hashing['ratio_full_pass']:.2f}")
    console.print(table)
    for verdict in report["verdicts"]:
        style = {True: "green", False: "bold red", None: "cyan"}[verdict["passed"]]
        console.print(verdict["line"], style=style, markup=False, highlight=False)
    console.print(f"report: {report['out']}", markup=False, highlight=False)


# --------------------------------------------------------------------------------------------
# Environment and server


@contextmanager
def bench_environment(home: Path) -> Iterator[None]:
    """Default AMAS settings on a fresh home (the caller's AMAS_* and .env ignored); restored after."""
    from amas.config import get_settings

    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("AMAS_"):
            del os.environ[name]
    os.environ.update({"AMAS_HOME": str(home), "AMAS_ENV_FILE": ""})
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@contextmanager
def throwaway_server(home: Path, reporter: Reporter) -> Iterator[tuple[str, Any, float]]:
    """`prefect server start` on a free loopback port with PREFECT_HOME and AMAS_HOME under ``home``."""
    from amas.config import load_settings
    from amas.stack import start_server, wait_for_api

    settings = load_settings(core={"home": home}, prefect={"port": free_port()})
    reporter.begin(f"starting a throwaway Prefect server on port {settings.prefect.port}")
    server = start_server(settings, home / "logs")
    try:
        took = wait_for_api(settings.prefect_api_url, timeout=180, process=server)
        reporter.end()
        # This process's own Prefect files go there too; set before Prefect is first imported.
        os.environ["PREFECT_HOME"] = str(settings.prefect_home)
        yield settings.prefect_api_url, server, took
    finally:
        try:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            # Send buffered run logs and events while the server still listens.
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)
        except Exception:  # noqa: BLE001 - shutting down; the figures are already taken
            pass
        server.stop()


def server_log_summary(server: Any) -> dict[str, Any]:
    """What the throwaway server's log says (it is deleted with the temporary directory)."""
    try:
        text = Path(server.log_path).read_text(errors="replace")
    except OSError:
        return {}
    lines = text.splitlines()
    return {"database_locked": text.count("database is locked"),
            "error_lines": sum(1 for line in lines if "| ERROR" in line),
            "warning_lines": sum(1 for line in lines if "| WARNING" in line)}


def run_throughput(args: argparse.Namespace, home: Path, reporter: Reporter) -> dict[str, Any]:
    from amas.config import get_settings

    server_cm = nullcontext((args.api_url, None, None)) if args.api_url else throwaway_server(home, reporter)
    with server_cm as (api_url, server, took):
        # Prefect's run logs still go to the API; only its console copy is quieted (set before import).
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        get_settings.cache_clear()
        settle = settler(args.pause, server.popen.pid if server is not None else None, args.settle_timeout)
        if server is not None:
            reporter.begin("letting the new server settle")
            first = settle()
            reporter.end()
        else:
            first = None
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            result = measure_throughput(args.tasks, args.rounds, settle=settle, reporter=reporter)
        result["server"] = {"kind": "throwaway" if server is not None else "external",
                            "healthy_after_seconds": None if took is None else rounded(took, 2),
                            "settle_before": first}
    if server is not None:
        result["server"].update(server_log_summary(server))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Agent task throughput through Prefect vs empty tasks, data_analysis on a big table, "
                    "forensics hashing vs sha256sum; a table on the terminal and a JSON report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="agent tasks (and empty tasks) per throughput round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds (baseline and agent alternate; medians reported); "
                             "also data_analysis runs per format and hashing best-of")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the data_analysis dataset")
    parser.add_argument("--hash-mib", type=int, default=512, help="size of the hashing test file in MiB")
    parser.add_argument("--only", action="append", choices=PARTS, default=None,
                        help="run only this part (repeatable); default: all")
    parser.add_argument("--api-url", default=None,
                        help="Prefect API of an existing server (default: start a throwaway one)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report path (default: .amas/bench/agents-<UTC timestamp>.json)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed (data_analysis > 5 s or > 1 GiB, hashing ratio < 0.8)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="minimum pause between throughput rounds, seconds")
    parser.add_argument("--settle-timeout", type=float, default=60.0,
                        help="longest wait for a throwaway server to go quiet between rounds, seconds")
    args = parser.parse_args(argv)
    for name in ("tasks", "rounds", "rows", "hash_mib"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pause < 0 or args.settle_timeout < 0:
        parser.error("--pause and --settle-timeout must not be negative")
    return args


def main(argv: list[str] | None = None, *, console: Console | None = None) -> int:
    args = parse_args(argv)
    parts = [p for p in PARTS if p in set(args.only or PARTS)]
    console = console or Console()
    started_at = utc_now()
    out = args.out or Path(".amas") / "bench" / f"agents-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {
        "schema": SCHEMA, "started_at": started_at.isoformat(timespec="seconds"), "parts": parts,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(), "load_average": {"start": load_average()},
    }
    steps = (("data" in parts) * (1 + 2 * args.rounds) + ("hash" in parts)
             + ("throughput" in parts) * ((0 if args.api_url else 2) + 4 * (args.rounds + 1) - 1))
    with tempfile.TemporaryDirectory(prefix="amas-bench-agents-") as scratch:
        home = Path(scratch) / "home"
        with bench_environment(home), Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        ) as progress:
            reporter = RichReporter(progress, steps)

            def run_part(key: str, measure: Callable[[], dict[str, Any]]) -> None:
                try:
                    report[key] = measure()
                except Exception as exc:  # noqa: BLE001 - recorded; the other parts still run
                    reporter.end()
                    progress.console.print(f"{key} failed:", style="bold red")
                    progress.console.print_exception(max_frames=8)
                    report[key] = {"error": f"{type(exc).__name__}: {exc}"}

            # Data and hashing first: no Prefect server exists yet to share the cores with them.
            if "data" in parts:
                run_part("data_analysis", lambda: measure_data(args.rows, args.rounds, Path(scratch), reporter=reporter))
            if "hash" in parts:
                run_part("hashing", lambda: measure_hashing(args.hash_mib, args.rounds, Path(scratch), reporter=reporter))
            if "throughput" in parts:
                run_part("throughput", lambda: run_throughput(args, home, reporter))
    report["load_average"]["end"] = load_average()
    report["finished_at"] = utc_now().isoformat(timespec="seconds")
    report["duration_seconds"] = rounded((utc_now() - started_at).total_seconds(), 1)
    report["verdicts"] = verdicts(report)
    report["out"] = str(out)
    report["exit_code"] = exit_code(report, args.check)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render(report, console)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
