"""The stress ramp: raise the arrival rate in steps until a threshold breaks or the ceiling is reached.

Each step is one open-model load phase (``amas.bench.load``) at ``start + k * step`` arrivals
per second for ``step_duration_s``, with the machine and the stack sampled meanwhile
(``amas.bench.resources``). The ramp stops at the first step where a threshold breaks
(``p95_ms``, ``error_rate`` ...); the rate before it is the highest rate held. ``diagnose`` then
says what broke first from the resource samples: the CPU, the database (the Prefect server's,
or the AMAS store's), the Prefect API, or the workers.

The Prefect server's own database matters under load, so the ramp runs on this flow run's
server (``stack``) or on a throwaway server with its database on SQLite or PostgreSQL
(``amas.bench.server``); there the ramp runs in a child process (``python -m amas.bench.stress``)
whose Prefect client points at the throwaway server, while the flow run that asked for it stays
on the stack's server with its artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amas.bench.load import (
    api_url,
    bench_store,
    check_agent,
    run_phase,
    server_recorded,
    task_runner,
    warm_up,
)
from amas.bench.resources import ResourceSampler
from amas.bench.results import BenchResult, PhaseSummary, versions_info
from amas.bench.spec import StressRun, StressSpec, require_loopback
from amas.bench.thresholds import Threshold, breached, evaluate, parse_thresholds
from amas.errors import AmasError

SERVER_NAMES = {"stack": "stress", "sqlite": "stress_sqlite", "postgresql": "stress_postgres"}

# Saturation limits: at or past 1.0 a component counts as saturated (see ``indicators``).
CPU_BUSY_PCT = 90.0          # the machine's CPUs, mean over the step
CORE_BUSY = 0.9              # one process tree using this much of a core (the server is one event loop)
API_SLOW_MS = 500.0          # p95 of GET /health: the web process is not answering promptly
DB_SLOW_MS = 1000.0          # p95 of POST /task_runs/count: the server's database is slow to query
DB_ERRORS = ("database is locked", "OperationalError", "deadlock", "too many connections")


def _number(resources: dict[str, Any], name: str, stat: str) -> float | None:
    value = (resources.get(name) or {}).get(stat) if isinstance(resources.get(name), dict) else None
    return None if value is None else float(value)


def indicators(phase: PhaseSummary, *, task_runner_kind: str = "thread", workers: int = 1) -> dict[str, dict[str, Any]]:
    """How close each component came to saturation in one step: ``{component: {"ratio", "evidence"}}``.

    A ratio of 1 or more means saturated. CPU: the machine's mean CPU against 90%. Prefect API:
    the server process tree's cores against 0.9 of one (it serves from one event loop), the
    /health probe's p95 against 500 ms, failed probes. Database: 'database is locked' in the
    server's log or in task errors, the /task_runs/count probe's p95 against 1 s, PostgreSQL
    backends' cores. Worker: tasks waiting longer than twice their run time, drops at the
    in-flight cap, or the generator's processes using what they can (one core under the GIL
    with threads; one per Dask worker).
    """
    r = phase.resources or {}
    found: dict[str, dict[str, Any]] = {}

    def put(component: str, ratio: float, evidence: str) -> None:
        if ratio > found.get(component, {}).get("ratio", -1.0):
            found[component] = {"ratio": round(ratio, 3), "evidence": evidence}

    cpu = _number(r, "machine_cpu_pct", "mean")
    if cpu is not None:
        put("CPU", cpu / CPU_BUSY_PCT, f"machine CPU {cpu:.0f}% (mean)")
    server = _number(r, "server_cores", "mean")
    if server is not None:
        put("Prefect API", server / CORE_BUSY, f"Prefect server used {server:.2f} cores (mean)")
    api = _number(r, "api_probe_ms", "p95")
    if api is not None:
        put("Prefect API", api / API_SLOW_MS, f"API /health p95 {api:.0f} ms")
    if r.get("probe_errors"):
        put("Prefect API", 1.0 + r["probe_errors"] / max(r.get("samples", 1), 1), f"{r['probe_errors']} API probes failed")
    db = _number(r, "db_probe_ms", "p95")
    if db is not None:
        put("database", db / DB_SLOW_MS, f"server DB query p95 {db:.0f} ms")
    pg = _number(r, "pg_cores", "mean")
    if pg is not None:
        put("database", pg / CORE_BUSY, f"PostgreSQL backends used {pg:.2f} cores (mean)")
    locked = int(r.get("server_db_locked") or 0)
    if locked:
        put("database", 1.0 + locked / 10, f"server logged 'database is locked' {locked} times")
    db_errors = sum(n for text, n in phase.errors.items() if any(e in text for e in DB_ERRORS))
    if db_errors:
        put("database", 1.0 + db_errors / max(phase.arrivals, 1), f"{db_errors} tasks failed on the database")
    queue, execution = phase.queue_ms.get("p95"), phase.exec_ms.get("p95")
    if queue is not None and execution is not None:
        put("worker", queue / max(2 * execution, 50.0), f"queue p95 {queue:.0f} ms vs execution p95 {execution:.0f} ms")
    if phase.dropped:
        put("worker", 1.0 + phase.dropped / max(phase.arrivals, 1), f"{phase.dropped} arrivals dropped at the in-flight cap")
    generator = _number(r, "generator_cores", "mean")
    if generator is not None:
        usable = int(r.get("cpu_usable") or os.cpu_count() or 1)
        capacity = 1.0 if task_runner_kind == "thread" else float(min(workers + 1, usable))
        put("worker", generator / (CORE_BUSY * capacity),
            f"generator and workers used {generator:.2f} cores of {capacity:g} usable")
    return found


def diagnose(phases: list[PhaseSummary], breaches: list[str], *, task_runner_kind: str = "thread",
             workers: int = 1) -> dict[str, Any]:
    """What broke first: the first step where a component was saturated, the most saturated one there.

    ``breaches`` are the threshold lines of the last step (empty when the ceiling was reached).
    When no component reached saturation, ``component`` is None and the breach stands alone.
    """
    if not phases:
        return {"component": None, "reason": "no step ran"}
    per_step = [indicators(p, task_runner_kind=task_runner_kind, workers=workers) for p in phases]
    for phase, found in zip(phases, per_step, strict=True):
        saturated = {c: v for c, v in found.items() if v["ratio"] >= 1.0}
        if saturated:
            component = max(saturated, key=lambda c: saturated[c]["ratio"])
            return {"component": component, "at_rate": phase.rate, "evidence": saturated[component]["evidence"],
                    "saturated": saturated, "thresholds": breaches,
                    "reason": f"{component} saturated first, at {phase.rate:g}/s: {saturated[component]['evidence']}"}
    last = per_step[-1]
    closest = max(last, key=lambda c: last[c]["ratio"]) if last else None
    return {"component": None, "at_rate": phases[-1].rate, "closest": closest,
            "indicators": last, "thresholds": breaches,
            "reason": ("; ".join(breaches) + " with no component saturated" if breaches
                       else f"ceiling {phases[-1].rate:g}/s reached with every threshold held")
            + (f" (closest: {closest}, {last[closest]['evidence']})" if closest else "")}


def ramp(spec: StressSpec, thresholds: list[Threshold], *, server_pid: int | None = None,
         server_log: Path | None = None, pg_dbname: str | None = None, store_url: str | None = None,
         stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the steps against the current Prefect API (inside a flow run); phases, held rate, what broke."""
    from prefect.runtime import flow_run

    url = api_url()
    require_loopback(url)
    check_agent(spec.phase(spec.start))
    phases: list[PhaseSummary] = []
    held: float | None = None
    breaches: list[str] = []
    recorded: dict[str, int | None] = {}
    submitted = 0
    with bench_store(store_url) as store, task_runner(spec.task_runner, spec.workers) as runner, \
            ResourceSampler(api_url=url, server_pid=server_pid, server_log=server_log, pg_dbname=pg_dbname) as sampler:
        warm_up(runner, spec.phase(spec.start), store, spec.workers)
        for position, rate in enumerate(spec.rates()):
            if position and spec.settle_s:
                time.sleep(spec.settle_s)
            phase, _ = run_phase(spec.phase(rate), runner, store, sampler=sampler, stop=stop)
            phases.append(phase)
            submitted += phase.arrivals - phase.dropped
            recorded[f"{rate:g}"] = server_recorded(url, str(flow_run.id) if flow_run.id else None)
            broken = breached(evaluate(phase, thresholds))
            if broken:
                breaches = [t.message for t in broken]
                break
            held = rate
    broke = diagnose(phases, breaches, task_runner_kind=spec.task_runner, workers=spec.workers)
    return {"phases": [p.model_dump(mode="json") for p in phases], "held_rate": held, "broke": broke,
            "server_recorded": recorded, "submitted": submitted + spec.workers,
            "server_pid_known": sampler.server_pid is not None}


def _ramp_flow() -> Any:
    from prefect import flow

    @flow(name="bench-stress-ramp", description="One stress ramp on a throwaway Prefect server (run by bench-stress).")
    def bench_stress_ramp(spec: StressSpec, thresholds: list[str], server_pid: int | None, server_log: str | None,
                          pg_dbname: str | None, store_url: str | None) -> dict[str, Any]:
        return ramp(spec, parse_thresholds(thresholds), server_pid=server_pid,
                    server_log=Path(server_log) if server_log else None, pg_dbname=pg_dbname, store_url=store_url)

    return bench_stress_ramp


def ramp_on_throwaway_server(db: str, spec: StressSpec, thresholds: list[Threshold], *,
                             store_url: str | None) -> dict[str, Any]:
    """Start a server on ``db``, run the ramp in a child process pointed at it, stop the server."""
    from amas.bench.server import throwaway_server

    with throwaway_server(db) as server:  # type: ignore[arg-type]
        request = {"spec": spec.model_dump(mode="json"), "thresholds": [t.expression for t in thresholds],
                   "server_pid": server.pid, "server_log": str(server.log_path), "pg_dbname": server.pg_dbname,
                   "store_url": store_url}
        request_path, answer_path = server.home / "request.json", server.home / "answer.json"
        request_path.write_text(json.dumps(request))
        env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(server.home / "client")}
        for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_API_PORT"):
            env.pop(name, None)
        steps = len(spec.rates())
        budget = 180 + steps * (spec.step_duration_s + spec.drain_timeout_s + spec.settle_s + 5)
        log_path = server.home / "logs" / "ramp.log"
        with log_path.open("wb") as log:
            try:
                done = subprocess.run([sys.executable, "-m", "amas.bench.stress", str(request_path), str(answer_path)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=budget, cwd=Path(__file__).resolve().parents[2])
            except subprocess.TimeoutExpired:
                raise AmasError(f"the stress ramp on the {db} server ran past its {budget:.0f} s budget") from None
        if done.returncode != 0 or not answer_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-8:])
            raise AmasError(f"the stress ramp on the {db} server failed (exit {done.returncode}):\n{tail}")
        answer = json.loads(answer_path.read_text())
        answer["server_log_db_locked"] = server.log_path.read_bytes().count(b"database is locked")
        return answer


def run_stress_benchmark(run: StressRun, thresholds: list[Threshold]) -> list[BenchResult]:
    """One ``BenchResult`` per server: ``stress`` (this server), ``stress_sqlite``, ``stress_postgres``."""
    results = []
    for db in run.servers():
        started_at = datetime.now(UTC)
        if db == "stack":
            answer = ramp(run.stress, thresholds, store_url=run.store_url)
            versions = versions_info()
        else:
            answer = ramp_on_throwaway_server(db, run.stress, thresholds, store_url=run.store_url)
            versions = versions_info(postgres=_pg_version() if db == "postgresql" else None)
        phases = [PhaseSummary.model_validate(p) for p in answer["phases"]]
        result = BenchResult(
            kind="stress", name=SERVER_NAMES[db], started_at=started_at, finished_at=datetime.now(UTC),
            versions=versions, phases=phases, held_rate=answer["held_rate"] or 0.0, broke=answer["broke"],
            settings={**run.stress.model_dump(mode="json"), "server_db": db,
                      "thresholds": [t.expression for t in thresholds], "rates": run.stress.rates(),
                      "store": "configured" if run.store_url else "scratch sqlite"},
            extra={"server_recorded_task_runs": answer.get("server_recorded"),
                   "submitted_task_runs": answer.get("submitted"),
                   "server_log_db_locked": answer.get("server_log_db_locked")},
        )
        results.append(result)
    return results


def _pg_version() -> str | None:
    try:
        import psycopg

        from amas.bench.server import ADMIN_DSN

        with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return None if row is None else str(row[0])
    except Exception:  # the version is a nicety; the run itself already talked to the server
        return None


def _child(request_path: str, answer_path: str) -> int:
    """The child's side of ``ramp_on_throwaway_server``: run the ramp flow, write its answer."""
    request = json.loads(Path(request_path).read_text())
    spec = StressSpec.model_validate(request["spec"])
    answer = _ramp_flow()(spec=spec, thresholds=request["thresholds"], server_pid=request["server_pid"],
                          server_log=request["server_log"], pg_dbname=request["pg_dbname"],
                          store_url=request["store_url"])
    with tempfile.NamedTemporaryFile("w", dir=Path(answer_path).parent, delete=False) as sink:
        json.dump(answer, sink)
    os.replace(sink.name, answer_path)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
