"""The open-model load generator: agent tasks arrive through Prefect at a constant rate.

Open model: arrival ``i`` is due at ``t0 + i / rate`` whether or not earlier arrivals finished,
so a system that cannot keep up shows growing latency (and, past the in-flight cap, drops)
instead of quietly slowing the generator down. Each arrival is one Prefect task run of
``bench_agent_task``: it queues an agent task in an AMAS store (``submit_task``) and runs it
with ``execute_task`` (the agent's real work, its result and audit events persisted), the same
path ``flows/agent_flows.py``'s ``agent_task`` takes, minus the global concurrency slot, the
lineage events and the LLM summary. ``delay_ms`` makes the agent deliberately slow, inside
the task run, to see thresholds fail.

Bounded by construction: at most ``MAX_ARRIVALS`` arrivals, ``MAX_IN_FLIGHT`` at once, and the
run ends ``drain_timeout_s`` after the last arrival whatever is still running; only a Prefect
API on 127.0.0.1 (or localhost) is accepted.

Task runners: ``thread`` (Prefect's ``ThreadPoolTaskRunner``, ``workers`` threads in this
process) or ``dask`` (``prefect_dask.DaskTaskRunner`` on a local cluster of ``workers``
processes of one thread each, dashboard off). The task runner is made here, inside the flow
run, so the runner and its size are parameters of one flow.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task

from amas.bench.resources import ResourceSampler
from amas.bench.results import PhaseSummary, Sample, summarize
from amas.bench.spec import BenchInputError, LoadRun, LoadSpec, require_loopback

ProgressFn = Callable[[int, int, int], None]
"""progress(arrived, finished, total) from the generator thread; the CLI draws it."""

_progress: ProgressFn | None = None


def set_progress(fn: ProgressFn | None) -> None:
    """Where the generator reports progress (the CLI's rich bar); None for nowhere."""
    global _progress
    _progress = fn


def check_agent(spec: LoadSpec) -> None:
    """Fail before any load when the agent or its parameters are wrong (one line, naming the field)."""
    from amas.agent_tasks import validate_params
    from amas.registry import get_agent

    validate_params(get_agent(spec.agent), spec.agent_params)


@functools.cache
def _store_engine(url: str) -> Any:
    from amas.db.session import create_store_engine

    return create_store_engine(url)


@task(name="bench-agent", task_run_name="{agent_name}-{index}", persist_result=False, retries=0)
def bench_agent_task(index: int, agent_name: str, agent_params: dict[str, Any], store_url: str,
                     delay_ms: int = 0) -> dict[str, Any]:
    """One arrival: queue an agent task in the store and run it; when it began and where it ran."""
    from prefect.runtime import flow_run

    from amas.agent_tasks import execute_task, submit_task
    from amas.config import get_settings
    from amas.db.session import session_scope
    from amas.storage import open_storage

    started = time.time()
    settings = get_settings()
    engine = _store_engine(store_url)
    with session_scope(engine) as session:
        task_id = submit_task(session, agent_name, agent_params, actor="bench").id
    execute_task(task_id, settings=settings, engine=engine, storage=open_storage(settings),
                 flow_run_id=str(flow_run.id) if flow_run.id else None,
                 timeout_seconds=settings.agents.timeout_seconds)
    if delay_ms:
        time.sleep(delay_ms / 1000.0)  # the slow agent: inside the task run, so Prefect sees all of it
    return {"started": started, "body_s": time.time() - started, "task_id": str(task_id),
            "worker": f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"}


@contextlib.contextmanager
def bench_store(url: str | None) -> Iterator[str]:
    """The store the agent tasks write to: ``url`` (migrated here), or a scratch SQLite file removed afterwards.

    A scratch store by default, so a benchmark never fills the real store with thousands of rows.
    """
    from amas.db.migrate import upgrade

    if url:
        upgrade(_store_engine(url))
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="amas-bench-store-") as scratch:
        scratch_url = f"sqlite:///{Path(scratch) / 'store.db'}"
        upgrade(_store_engine(scratch_url))
        try:
            yield scratch_url
        finally:
            _store_engine(scratch_url).dispose()
            _store_engine.cache_clear()


@contextlib.contextmanager
def task_runner(kind: str, workers: int) -> Iterator[Any]:
    """A started task runner of ``kind`` with ``workers`` threads or processes."""
    quiet = contextlib.nullcontext()
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        quiet = _quiet("distributed")

        # Processes of one thread each: parallel agent work despite the GIL. No dashboard port.
        runner: Any = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                                     "processes": True, "dashboard_address": None,
                                                     "host": "127.0.0.1"})
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=workers)
    with quiet, runner:
        yield runner


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Dask logs every worker's start and stop at INFO; keep its warnings only while the cluster runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def warm_up(runner: Any, spec: LoadSpec, store_url: str, count: int) -> None:
    """Run ``count`` arrivals unmeasured (Dask workers import Prefect and the agent on their first task)."""
    warm = bench_agent_task.with_options(task_run_name="warm-up")
    futures = [runner.submit(warm, parameters={
        "index": -1 - i, "agent_name": spec.agent, "agent_params": spec.agent_params, "store_url": store_url,
        "delay_ms": 0}) for i in range(count)]
    for future in futures:
        future.wait(timeout=120)


def _outcome(future: Any) -> tuple[bool, float | None, str | None, str | None, float | None]:
    """(ok, started, error, worker, seconds in the task body) of a finished Prefect future."""
    from amas.agent_tasks import one_line_error

    try:
        future.wait(timeout=1)
        state = future.state
    except Exception as exc:  # the task runner lost the task (a worker process died)
        return False, None, one_line_error(exc), None, None
    if not state.is_final():
        return False, None, "did not finish", None, None
    if state.is_completed():
        value = state.result()
        body = value.get("body_s")
        return True, float(value["started"]), None, str(value.get("worker") or ""), None if body is None else float(body)
    try:
        raised = state.result(raise_on_failure=False)
    except Exception as exc:
        raised = exc
    error = one_line_error(raised) if isinstance(raised, BaseException) else (state.message or state.name)
    return False, None, error, None, None


def generate(spec: LoadSpec, runner: Any, store_url: str, *, progress: ProgressFn | None = None,
             stop: threading.Event | None = None, bodies: dict[int, float] | None = None) -> list[Sample]:
    """Submit ``spec.arrivals`` arrivals on the open-model schedule; one ``Sample`` each.

    The schedule is kept by sleeping on the monotonic clock to each arrival's due time; a
    submission that lags (the task runner or the API is slow) is made as soon as possible after
    and counts as late. An arrival finding ``max_in_flight`` tasks unfinished is dropped.
    ``stop`` ends the schedule early (the remaining arrivals are not counted). ``bodies``, when
    given, receives each completed arrival's seconds inside the task body (the agent's own work).
    """
    total = spec.arrivals
    parameters = {"agent_name": spec.agent, "agent_params": spec.agent_params, "store_url": store_url,
                  "delay_ms": spec.delay_ms}
    lock = threading.Lock()
    all_done = threading.Event()
    finished_at: dict[int, float] = {}
    futures: dict[int, Any] = {}
    submitted_at: dict[int, float] = {}
    counts = {"in_flight": 0, "finished": 0, "submitted": 0}
    scheduled: list[float] = []

    def on_done(index: int) -> Callable[[Any], None]:
        def done(_future: Any) -> None:
            now = time.time()
            with lock:
                if index in finished_at:
                    return
                finished_at[index] = now
                counts["in_flight"] -= 1
                counts["finished"] += 1
                if counts["finished"] == counts["submitted"] and schedule_over.is_set():
                    all_done.set()
        return done

    schedule_over = threading.Event()
    wall0, mono0 = time.time(), time.monotonic()
    lead = 0.05  # the first arrival is due just after start, so it is not late by construction
    for index in range(total):
        if stop is not None and stop.is_set():
            break
        offset = lead + index / spec.rate
        scheduled.append(wall0 + offset)
        pause = mono0 + offset - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with lock:
            full = counts["in_flight"] >= spec.max_in_flight
            if not full:
                counts["in_flight"] += 1
                counts["submitted"] += 1
        if full:
            continue
        submitted_at[index] = time.time()
        try:
            future = runner.submit(bench_agent_task, parameters={"index": index, **parameters})
        except Exception:
            with lock:
                counts["in_flight"] -= 1
                counts["submitted"] -= 1
            submitted_at.pop(index)
            raise
        futures[index] = future
        future.add_done_callback(on_done(index))
        if progress is not None:
            progress(index + 1, counts["finished"], total)
    with lock:
        schedule_over.set()
        if counts["finished"] == counts["submitted"]:
            all_done.set()
    deadline = time.monotonic() + spec.drain_timeout_s
    while not all_done.wait(timeout=0.25) and time.monotonic() < deadline:
        if progress is not None:
            progress(len(scheduled), counts["finished"], total)
    if progress is not None:
        progress(len(scheduled), counts["finished"], total)

    samples = []
    for index, due in enumerate(scheduled):
        if index not in futures:
            samples.append(Sample(index=index, scheduled=due, submitted=None, started=None, finished=None, ok=False,
                                  error="dropped: max_in_flight reached"))
            continue
        finished = finished_at.get(index)
        if finished is None:
            samples.append(Sample(index=index, scheduled=due, submitted=submitted_at[index], started=None,
                                  finished=None, ok=False,
                                  error=f"not finished {spec.drain_timeout_s:g} s after the last arrival"))
            continue
        ok, started, error, worker, body = _outcome(futures[index])
        if bodies is not None and body is not None:
            bodies[index] = body
        samples.append(Sample(index=index, scheduled=due, submitted=submitted_at[index], started=started,
                              finished=finished, ok=ok, error=error, worker=worker))
    return samples


def server_recorded(api_url: str, flow_run_id: str | None) -> int | None:
    """How many task runs of this flow run the Prefect server has recorded so far (it lags under load)."""
    import httpx

    if not flow_run_id:
        return None
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    try:
        response = httpx.post(f"{api_url.rstrip('/')}/task_runs/count", json=body, timeout=10)
        response.raise_for_status()
        return int(response.json())
    except (httpx.HTTPError, ValueError):
        return None


def run_phase(spec: LoadSpec, runner: Any, store_url: str, *, sampler: ResourceSampler | None = None,
              name: str = "", stop: threading.Event | None = None) -> tuple[PhaseSummary, list[Sample]]:
    """One phase at ``spec.rate``: generate, then summarise every sample with the resources seen meanwhile."""
    started = time.time()
    bodies: dict[int, float] = {}
    samples = generate(spec, runner, store_url, progress=_progress, stop=stop, bodies=bodies)
    ended = time.time()
    resources = sampler.window(started, ended) if sampler is not None else {}
    resources["prefect_overhead_ms"] = prefect_overhead(samples, bodies)
    workers = sorted({s.worker.rsplit(":", 1)[0] for s in samples if s.worker})
    resources["worker_processes_seen"] = len(workers)
    summary = summarize(samples, rate=spec.rate, duration_s=spec.duration_s, late_after_s=spec.late_after_s,
                        resources=resources, name=name, started=started)
    return summary, samples


def prefect_overhead(samples: list[Sample], bodies: dict[int, float]) -> dict[str, float | None]:
    """What Prefect adds per task: submitted -> finished minus the task body's own time (p50, p95, mean).

    That covers the task run's creation, its state changes, the thread or Dask hand-off and the
    future's resolution, and excludes the agent's work and any wait for the schedule.
    """
    from amas.bench.results import percentiles

    extra = [(s.finished - s.submitted - bodies[s.index]) * 1000.0 for s in samples
             if s.ok and s.submitted is not None and s.finished is not None and s.index in bodies]
    found = percentiles(extra)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in found.items() if k in ("p50", "p95", "mean", "count")}


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise BenchInputError("no Prefect API configured (PREFECT_API_URL); start the stack with `amas up`")
    return str(url)


def settings_record(spec: LoadSpec, **more: Any) -> dict[str, Any]:
    """What a result records about how it was produced (no secrets: agent parameters and sizes only)."""
    return {**spec.model_dump(mode="json"), "arrivals": spec.arrivals, **more}


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _windows(samples: list[Sample], started: float, duration_s: float, window_s: float) -> list[tuple[float, float, list[Sample]]]:
    """Samples split by scheduled time into consecutive windows: (start, length, samples)."""
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    found = []
    for i in range(count):
        lo = started + i * window_s
        length = min(window_s, duration_s - i * window_s)
        found.append((lo, length, [s for s in samples if lo <= s.scheduled < lo + length or
                                   (i == count - 1 and s.scheduled >= lo + length)]))
    return found


def run_load_benchmark(run: LoadRun) -> tuple[Any, dict[str, Any]]:
    """Measure ``run`` against the current Prefect API; the ``BenchResult`` (not yet judged) and the extra facts.

    Must be called inside a flow run (the tasks are its task runs).
    """
    from prefect.runtime import flow_run

    from amas.bench.results import BenchResult, versions_info

    url = api_url()
    require_loopback(url)
    check_agent(run.load)
    started_at = time.time()
    result = BenchResult(kind=run.kind, name=run.name or run.kind, versions=versions_info(),
                         settings=settings_record(run.load, kind=run.kind, scaling=run.scaling, window_s=run.window_s,
                                                  api_url=url, store="configured" if run.store_url else "scratch sqlite"))
    counts = run.scaling or [run.load.workers]
    extra: dict[str, Any] = {}
    with bench_store(run.store_url) as store_url, ResourceSampler(api_url=url) as sampler:
        for workers in counts:
            spec = run.load.model_copy(update={"workers": workers})
            with task_runner(spec.task_runner, workers) as runner:
                warm_up(runner, spec, store_url, workers if run.warmup is None else run.warmup)
                phase_started = time.time()
                if run.kind == "soak":
                    samples = generate(spec, runner, store_url, progress=_progress)
                    window = run.window_s or max(10.0, spec.duration_s / 10)
                    for lo, length, chunk in _windows(samples, min(s.scheduled for s in samples), spec.duration_s, window):
                        ends = [s.finished for s in chunk if s.finished] or [lo + length]
                        result.phases.append(summarize(chunk, rate=spec.rate, duration_s=length,
                                                       late_after_s=spec.late_after_s, started=lo,
                                                       name=f"t+{lo - phase_started:.0f}s",
                                                       resources=sampler.window(lo, max(ends))))
                else:
                    name = f"{spec.task_runner} x{workers}" if run.scaling else ""
                    phase, samples = run_phase(spec, runner, store_url, sampler=sampler, name=name)
                    result.phases.append(phase)
            recorded = server_recorded(url, str(flow_run.id) if flow_run.id else None)
            extra.setdefault("server_recorded_task_runs", {})[str(workers)] = recorded
    if run.kind == "load":
        # Per task, what Prefect adds around the agent's work (see prefect_overhead): the closing figure.
        for phase, workers in zip(result.phases, counts, strict=True):
            key = "prefect_overhead_p50_ms" + (f"_workers_{workers}" if run.scaling else "")
            extra[key] = phase.resources.get("prefect_overhead_ms", {}).get("p50")
    if run.scaling:
        by_count = {n: p.throughput for n, p in zip(counts, result.phases, strict=True)}
        extra["scaling"] = {f"workers_{n}": round(t, 3) for n, t in by_count.items()}
        if len(counts) > 1 and by_count[counts[0]] > 0:
            extra["scaling"]["speedup"] = round(by_count[counts[-1]] / by_count[counts[0]], 3)
    if run.kind == "soak" and len(result.phases) > 1:
        first, last = result.phases[0], result.phases[-1]
        p95_first, p95_last = first.latency_ms["p95"], last.latency_ms["p95"]
        rss = [p.resources.get("generator_rss_mib", {}).get("max") for p in (first, last)]
        extra["drift"] = {"p95_ms_first": p95_first, "p95_ms_last": p95_last,
                          "p95_ratio": round(p95_last / p95_first, 3) if p95_first and p95_last else None,
                          "rss_mib_first": rss[0], "rss_mib_last": rss[1],
                          "rss_mib_change": round(rss[1] - rss[0], 1) if None not in rss else None}
    result.extra = extra
    result.settings["wall_s"] = round(time.time() - started_at, 2)
    result.finished_at = datetime.now(UTC)
    return result, extra
