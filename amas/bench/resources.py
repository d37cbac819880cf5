"""What the machine and the stack were doing while a benchmark phase ran, sampled with psutil.

A background thread samples every ``interval`` seconds: the machine's CPU, the CPU cores and
memory of this process and its children (the generator, Dask workers), of the Prefect server's
process tree and of the PostgreSQL backends serving one database; and two probe latencies, the
Prefect API's ``/health`` (the web process) and ``/task_runs/count`` (a query on the server's
database). ``window(start, end)`` summarises the samples between two times for one phase; the
stress ramp reads those summaries to say what broke first (``amas.bench.stress.diagnose``).

Only 127.0.0.1 is probed (the load module refuses anything else before this starts).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

LOCKED = re.compile(rb"database is locked")


def listening_pid(api_url: str) -> int | None:
    """The pid of the process listening on the API URL's loopback port, when this user may see it."""
    port = urlparse(api_url).port
    if port is None:
        return None
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _rss_bytes(processes: list[psutil.Process]) -> int:
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def pg_backends(dbname: str) -> list[psutil.Process]:
    """PostgreSQL backend processes serving ``dbname`` (their title is ``postgres: user db host state``)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            title = " ".join(cmdline)
        except psutil.Error:
            continue
        if title.startswith("postgres:") and f" {dbname} " in f"{title} ":
            found.append(proc)
    return found


@dataclass
class Tick:
    at: float
    machine_cpu_pct: float
    generator_cores: float
    generator_rss_mib: float
    server_cores: float | None
    server_rss_mib: float | None
    pg_cores: float | None
    api_probe_ms: float | None
    db_probe_ms: float | None
    probe_errors: int
    server_locked: int


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None, "p95": None}
    ordered = sorted(values)
    return {"mean": round(math.fsum(ordered) / len(ordered), 3), "max": round(ordered[-1], 3),
            "p95": round(ordered[-(-95 * len(ordered) // 100) - 1], 3)}


@dataclass
class ResourceSampler:
    """Samples in a daemon thread from ``start()`` to ``stop()``; use as a context manager."""

    api_url: str | None = None
    server_pid: int | None = None
    server_log: Path | None = None
    pg_dbname: str | None = None
    interval: float = 0.5
    probe_timeout: float = 5.0
    ticks: list[Tick] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.server_pid is None and self.api_url:
            self.server_pid = listening_pid(self.api_url)
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.probe_timeout * 2 + self.interval)

    def _probe(self, client: httpx.Client, method: str, path: str) -> float | None:
        started = time.perf_counter()
        try:
            response = client.request(method, f"{self.api_url.rstrip('/')}{path}",  # type: ignore[union-attr]
                                      json={} if method == "POST" else None)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return (time.perf_counter() - started) * 1000.0

    def _locked_since(self, offset: int) -> tuple[int, int]:
        """'database is locked' lines the server logged after ``offset`` bytes of its log; the new offset."""
        if self.server_log is None:
            return 0, offset
        try:
            with self.server_log.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
        except OSError:
            return 0, offset
        return len(LOCKED.findall(chunk)), offset + len(chunk)

    def _run(self) -> None:
        me = psutil.Process(os.getpid())
        psutil.cpu_percent(interval=None)
        log_offset = self.server_log.stat().st_size if self.server_log and self.server_log.exists() else 0
        previous: dict[str, float] = {}
        last = time.monotonic()
        with httpx.Client(timeout=self.probe_timeout) as client:
            while not self._stop.wait(self.interval):
                now = time.monotonic()
                elapsed = max(now - last, 1e-6)
                last = now
                generator = [me, *me.children(recursive=True)]
                server = _tree(self.server_pid)
                backends = pg_backends(self.pg_dbname) if self.pg_dbname else []
                cpu = {"generator": _cpu_seconds(generator), "server": _cpu_seconds(server),
                       "pg": _cpu_seconds(backends)}
                # A process that ended between samples makes a group's total drop: count that interval as 0.
                cores = {k: max(v - previous.get(k, v), 0.0) / elapsed for k, v in cpu.items()}
                previous = cpu
                api_ms = db_ms = None
                errors = 0
                if self.api_url:
                    api_ms = self._probe(client, "GET", "/health")
                    db_ms = self._probe(client, "POST", "/task_runs/count")
                    errors = (api_ms is None) + (db_ms is None)
                locked, log_offset = self._locked_since(log_offset)
                tick = Tick(
                    at=time.time(), machine_cpu_pct=psutil.cpu_percent(interval=None),
                    generator_cores=cores["generator"], generator_rss_mib=_rss_bytes(generator) / 2**20,
                    server_cores=cores["server"] if server else None,
                    server_rss_mib=_rss_bytes(server) / 2**20 if server else None,
                    pg_cores=cores["pg"] if self.pg_dbname else None,
                    api_probe_ms=api_ms, db_probe_ms=db_ms, probe_errors=errors, server_locked=locked,
                )
                with self._lock:
                    self.ticks.append(tick)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Summary of the samples taken between epoch times ``start`` and ``end`` (one phase)."""
        with self._lock:
            ticks = [t for t in self.ticks if start <= t.at <= end]

        def values(name: str) -> list[float]:
            return [v for t in ticks if (v := getattr(t, name)) is not None]

        summary: dict[str, Any] = {"samples": len(ticks), "interval_s": self.interval,
                                   "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                   else os.cpu_count()}
        for name in ("machine_cpu_pct", "generator_cores", "generator_rss_mib", "server_cores", "server_rss_mib",
                     "pg_cores", "api_probe_ms", "db_probe_ms"):
            summary[name] = _stats(values(name))
        summary["probe_errors"] = sum(t.probe_errors for t in ticks)
        summary["server_db_locked"] = sum(t.server_locked for t in ticks)
        return summary
