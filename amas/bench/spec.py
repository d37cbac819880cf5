"""What a benchmark run is asked to do, checked before anything runs: the load, soak and stress specs.

Pure pydantic (no Prefect import), so the CLI refuses a bad value in one line before it pays for
importing Prefect; the flows take these models as their typed parameters, so the Prefect UI shows
them as forms. Every run is bounded: rate, duration, arrivals per phase, in-flight tasks, workers,
steps; and only a Prefect API on this machine's loopback interface is accepted.
"""

from __future__ import annotations

import math
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, model_validator

from amas.errors import AmasError

MAX_RATE = 500.0
MAX_DURATION_S = 12 * 3600.0
MAX_ARRIVALS = 500_000
MAX_IN_FLIGHT = 2000
MAX_WORKERS = 16
MAX_DELAY_MS = 60_000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_AGENT = "store_inventory"
DEFAULT_AGENT_PARAMS: dict[str, Any] = {"include_storage": False}


class Arrivals(BaseModel):
    """What every arrival of a load phase or a stress step is: which agent, how it runs, and the bounds."""

    agent: str = Field(DEFAULT_AGENT, min_length=1, description="The registered agent each arrival runs.")
    agent_params: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_AGENT_PARAMS), description="The agent's parameters (validated before the run).")
    delay_ms: int = Field(0, ge=0, le=MAX_DELAY_MS, description="Extra milliseconds each agent task takes inside its task run: a deliberately slow agent.")
    task_runner: Literal["thread", "dask"] = Field("thread", description="thread: a thread pool in this process; dask: a local Dask cluster of worker processes.")
    workers: int = Field(4, ge=1, le=MAX_WORKERS, description="Threads (thread) or worker processes of one thread each (dask).")
    max_in_flight: int = Field(200, ge=1, le=MAX_IN_FLIGHT, description="Arrivals submitted and not finished at most; more are dropped and counted.")
    drain_timeout_s: float = Field(30.0, ge=0, le=600, description="After the last arrival, wait this long for running tasks; the rest count as failed.")
    late_after_s: float = Field(0.1, gt=0, le=60, description="An arrival submitted later than this after its scheduled time counts as late.")


class LoadSpec(Arrivals):
    """One constant-rate load phase: how fast, how long, which agent, on which task runner."""

    rate: float = Field(5.0, gt=0, le=MAX_RATE, description="Arrivals per second (open model: they arrive on schedule whatever is still running).")
    duration_s: float = Field(10.0, gt=0, le=MAX_DURATION_S, description="Seconds of arrivals; the run then drains for at most drain_timeout_s.")

    @property
    def arrivals(self) -> int:
        return max(1, math.ceil(self.rate * self.duration_s - 1e-9))

    @model_validator(mode="after")
    def _bounded(self) -> LoadSpec:
        if self.arrivals > MAX_ARRIVALS:
            raise ValueError(f"rate x duration is {self.arrivals} arrivals; at most {MAX_ARRIVALS} per phase")
        return self

    def label(self) -> str:
        return f"{self.rate:g}/s"


class BenchInputError(AmasError):
    """A benchmark parameter the user can fix (an unknown agent, a non-loopback target)."""

    exit_code = 2


def require_loopback(api_url: str) -> None:
    """Refuse to generate load against anything but this machine's loopback interface."""
    host = urlparse(api_url).hostname or ""
    if host not in LOOPBACK:
        raise BenchInputError(f"the benchmark only targets 127.0.0.1; the Prefect API is {api_url}")


class LoadRun(BaseModel):
    """A load (or soak) benchmark run: the phase, what judges it, where its files go."""

    load: LoadSpec = Field(default_factory=LoadSpec, description="The constant-rate phase.")
    kind: Literal["load", "soak"] = Field("load", description="soak: the same profile for long, reported in windows to show drift.")
    window_s: float | None = Field(None, gt=0, description="soak: seconds per reported window (default: a tenth of the duration, at least 10 s).")
    scaling: list[int] = Field(default_factory=list, description="Run the phase once per worker count (e.g. [1, 2]) and report throughput per count.")
    warmup: int | None = Field(None, ge=0, le=1000, description="Unmeasured arrivals first (default: one per worker).")
    thresholds: list[str] | None = Field(None, description="k6-style thresholds, e.g. 'p95_ms < 2000'; default params.yaml bench.load.thresholds.")
    tolerance: float | None = Field(None, ge=0, description="Regression tolerance against the baseline (0.2 = 20%); default params.yaml bench.tolerance.")
    baseline: bool = Field(False, description="Compare with the kept baseline; a regression beyond the tolerance fails the run.")
    save_baseline: bool = Field(False, description="Keep this run's metrics as the new baseline (only when it passed).")
    out: str | None = Field(None, description="Directory for the results; default metrics/bench when compared with a baseline, else AMAS_HOME/bench.")
    store_url: str | None = Field(None, description="AMAS store the agent tasks write to; default a scratch SQLite store.")
    name: str | None = Field(None, description="Result name (file stem); default the kind.")

    @model_validator(mode="after")
    def _scaling_bounded(self) -> LoadRun:
        bad = [n for n in self.scaling if not 1 <= n <= MAX_WORKERS]
        if bad:
            raise ValueError(f"scaling: worker counts must be 1 to {MAX_WORKERS}, got {bad}")
        return self



MAX_STEPS = 60


class StressSpec(Arrivals):
    """The ramp: from ``start`` by ``step`` up to ``ceiling`` arrivals per second, ``step_duration_s`` each."""

    start: float = Field(2.0, gt=0, le=MAX_RATE, description="First step's arrivals per second.")
    step: float = Field(2.0, gt=0, le=MAX_RATE, description="Added to the rate at every step.")
    ceiling: float = Field(40.0, gt=0, le=MAX_RATE, description="Highest rate tried; reaching it with every threshold held ends the ramp.")
    step_duration_s: float = Field(10.0, gt=0, le=600, description="Seconds of arrivals per step.")
    drain_timeout_s: float = Field(15.0, ge=0, le=600, description="Wait after a step's last arrival for its tasks.")
    settle_s: float = Field(1.0, ge=0, le=120, description="Pause between steps.")

    @model_validator(mode="after")
    def _bounded(self) -> StressSpec:
        if self.ceiling < self.start:
            raise ValueError(f"ceiling {self.ceiling:g}/s is below start {self.start:g}/s")
        if len(self.rates()) > MAX_STEPS:
            raise ValueError(f"{len(self.rates())} steps from {self.start:g} to {self.ceiling:g} by {self.step:g}; "
                             f"at most {MAX_STEPS}: raise --step")
        for rate in (self.start, self.ceiling):
            LoadSpec(rate=rate, duration_s=self.step_duration_s)  # the per-phase arrival bound
        return self

    def rates(self) -> list[float]:
        count = math.floor((self.ceiling - self.start) / self.step + 1e-9) + 1
        return [round(self.start + k * self.step, 6) for k in range(count)]

    def phase(self, rate: float) -> LoadSpec:
        return LoadSpec(rate=rate, duration_s=self.step_duration_s,
                        **self.model_dump(include=set(Arrivals.model_fields)))


class StressRun(BaseModel):
    """A stress benchmark: the ramp, on which Prefect server(s), what judges it, where its files go."""

    stress: StressSpec = Field(default_factory=StressSpec, description="The ramp.")
    server_db: Literal["stack", "sqlite", "postgresql", "both"] | None = Field(
        None, description="stack: this flow run's server; sqlite/postgresql: a throwaway server on that database; "
                          "both: one of each. Default params.yaml bench.stress.server_db.")
    thresholds: list[str] | None = Field(None, description="Where the ramp stops, e.g. 'p95_ms < 2000'; default params.yaml bench.stress.thresholds.")
    tolerance: float | None = Field(None, ge=0, description="Regression tolerance against the baseline; default params.yaml bench.tolerance.")
    baseline: bool = Field(False, description="Compare held rate and best throughput with the kept baseline.")
    save_baseline: bool = Field(False, description="Keep this run's metrics as the new baseline.")
    out: str | None = Field(None, description="Directory for the results; default metrics/bench when compared, else AMAS_HOME/bench.")
    store_url: str | None = Field(None, description="AMAS store the agent tasks write to; default a scratch SQLite store.")

    def servers(self) -> list[str]:
        from amas.bench.runs import bench_params

        chosen = self.server_db or (bench_params().get("stress") or {}).get("server_db") or "stack"
        if chosen not in ("stack", "sqlite", "postgresql", "both"):
            raise AmasError(f"bench.stress.server_db must be stack, sqlite, postgresql or both, not {chosen!r}")
        return ["sqlite", "postgresql"] if chosen == "both" else [chosen]


