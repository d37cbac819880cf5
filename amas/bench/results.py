"""The results model: samples in, a summary per phase, one ``BenchResult`` per run, files out.

A benchmark run is a list of phases (one for load and soak, one per rate step for stress, one
per measured operation for component benchmarks). Each phase is summarised from *every*
sample it saw: percentiles are exact nearest-rank values of the full sample, never buckets or
a histogram's estimate. Only the plotting timeline is downsampled.

Latency is measured from the time the open-model schedule said an arrival should happen, not
from when the generator managed to submit it, so a stalled generator or a slow Prefect API
cannot hide queueing (the "coordinated omission" that closed-model tools suffer from).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from amas.errors import AmasError
from amas.fsutil import atomic_write

SCHEMA_VERSION = 1
KINDS = ("load", "stress", "soak", "component")
PERCENTILES = (50, 90, 95, 99)
TIMELINE_CAP = 2000
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class BenchmarkFailed(AmasError):
    """A threshold was breached or a metric regressed past the baseline's tolerance; the message says which."""


@dataclass(frozen=True)
class Sample:
    """One arrival of the open-model schedule. Times are ``time.time()`` epoch seconds.

    ``submitted`` is None when the arrival was dropped (never handed to Prefect); ``started`` and
    ``finished`` are None when the task never began or never ended (a timeout, say: ``ok=False``).
    """

    index: int
    scheduled: float
    submitted: float | None
    started: float | None
    finished: float | None
    ok: bool
    error: str | None = None
    worker: str | None = None


def percentiles(values: Sequence[float]) -> dict[str, int | float | None]:
    """Exact p50, p90, p95, p99, max, mean, min and count of ``values`` (all of them, no buckets).

    Method: nearest rank on the sorted full sample. The p-th percentile of n values is the
    value at 1-based rank ceil(p * n / 100): the smallest observed value with at least p% of the
    sample at or below it. It is always a value that was observed, never an interpolation, so
    p99 of 10 samples is the maximum and p50 of 2 samples is the smaller one. An empty sample
    gives None for every statistic and a count of 0.
    """
    ordered = sorted(float(v) for v in values)
    if any(math.isnan(v) for v in ordered):
        raise ValueError("percentiles of a sample containing NaN")
    n = len(ordered)
    if n == 0:
        return {**{f"p{p}": None for p in PERCENTILES}, "max": None, "mean": None, "min": None, "count": 0}
    # Integer arithmetic: ceil(0.95 * 20) in floating point is not reliably 19.
    found: dict[str, int | float | None] = {f"p{p}": ordered[-(-p * n // 100) - 1] for p in PERCENTILES}
    found.update(max=ordered[-1], mean=math.fsum(ordered) / n, min=ordered[0], count=n)
    return found


class PhaseSummary(BaseModel):
    """One phase at one target rate, summarised from every sample.

    Populations: ``arrivals`` every scheduled arrival; ``dropped`` never submitted; ``completed``
    submitted, finished and ok; ``failed`` submitted but not completed. ``error_rate`` is
    (failed + dropped) / arrivals: an arrival the system could not take is an error for its user.
    ``late`` counts arrivals submitted more than ``late_after_s`` after their scheduled time (the
    generator or the Prefect API fell behind). ``latency_ms`` (scheduled -> finished),
    ``queue_ms`` (scheduled -> started) and ``exec_ms`` (started -> finished) are over the
    completed arrivals, so the three describe the same population; failures are counted in
    ``error_rate`` and marked on the timeline. ``submit_lag_ms`` (scheduled -> submitted) is over
    every submitted arrival. ``throughput`` is completed per second of the phase's wall time,
    which runs from its start to the later of its nominal end and its last finish (the drain).
    """

    name: str = Field("", description="what the phase measured (a component's operation); empty for a rate step")
    rate: float = Field(description="target arrivals per second")
    duration_s: float = Field(description="nominal length of the arrival schedule, seconds")
    started: float | None = Field(None, description="phase start, epoch seconds")
    wall_s: float = Field(0.0, description="start to the later of nominal end and last finish, seconds")
    late_after_s: float = 0.1
    arrivals: int
    completed: int
    failed: int
    dropped: int
    late: int
    throughput: float = Field(description="completed arrivals per second of wall time")
    error_rate: float = Field(description="(failed + dropped) / arrivals")
    latency_ms: dict[str, int | float | None]
    queue_ms: dict[str, int | float | None]
    exec_ms: dict[str, int | float | None]
    submit_lag_ms: dict[str, int | float | None]
    errors: dict[str, int] = Field(default_factory=dict, description="failures by error text (first 200 characters)")
    resources: dict[str, Any] = Field(default_factory=dict, description="CPU, memory per process (filled by the generator)")
    timeline: list[tuple[float, float, bool]] = Field(
        default_factory=list,
        description="(seconds after phase start, latency ms, ok) per finished arrival, downsampled for plots only")

    @property
    def label(self) -> str:
        return self.name or f"{self.rate:g}/s"


def _ms(later: float, earlier: float) -> float:
    # Rounded to the microsecond: an epoch time.time() float resolves about 0.24 us, so the digits
    # beyond are subtraction noise (950 ms would print as 949.9999998).
    return round((later - earlier) * 1000.0, 3)


def _completed(sample: Sample) -> bool:
    return sample.ok and sample.started is not None and sample.finished is not None


def _downsample(points: list[tuple[float, float, bool]], cap: int) -> list[tuple[float, float, bool]]:
    """Every k-th point in time order, plus every failure and the slowest point while they fit in ``cap``."""
    points.sort(key=lambda p: p[0])
    if len(points) <= cap:
        return points
    slowest = max(range(len(points)), key=lambda i: points[i][1])
    failures = [i for i, p in enumerate(points) if not p[2]][: cap // 4]
    budget = max(cap - len(failures) - 1, 1)
    stride = math.ceil(len(points) / budget)
    keep = set(range(0, len(points), stride)) | set(failures) | {slowest}
    return [points[i] for i in sorted(keep)]


def summarize(samples: Sequence[Sample], *, rate: float, duration_s: float, late_after_s: float = 0.1,
              resources: dict[str, Any] | None = None, name: str = "", started: float | None = None,
              timeline_cap: int = TIMELINE_CAP) -> PhaseSummary:
    """Summarise one phase. ``started`` defaults to the earliest scheduled time."""
    start = started if started is not None else min((s.scheduled for s in samples), default=None)
    dropped = [s for s in samples if s.submitted is None]
    submitted = [s for s in samples if s.submitted is not None]
    completed = [s for s in submitted if _completed(s)]
    failed = len(submitted) - len(completed)
    late = sum(1 for s in submitted if s.submitted - s.scheduled > late_after_s)  # type: ignore[operator]
    ends = [t for s in samples for t in (s.finished, s.submitted) if t is not None]
    wall = max(duration_s, (max(ends) - start) if ends and start is not None else 0.0)
    errors: dict[str, int] = {}
    for s in submitted:
        if not _completed(s):
            key = (s.error or ("did not finish" if s.finished is None else "failed"))[:200]
            errors[key] = errors.get(key, 0) + 1
    points = [(s.scheduled - start, _ms(s.finished, s.scheduled), _completed(s))
              for s in submitted if s.finished is not None and start is not None]
    return PhaseSummary(
        name=name, rate=rate, duration_s=duration_s, started=start, wall_s=wall, late_after_s=late_after_s,
        arrivals=len(samples), completed=len(completed), failed=failed, dropped=len(dropped), late=late,
        throughput=len(completed) / wall if wall > 0 else 0.0,
        error_rate=(failed + len(dropped)) / len(samples) if samples else 0.0,
        latency_ms=percentiles([_ms(s.finished, s.scheduled) for s in completed]),  # type: ignore[arg-type]
        queue_ms=percentiles([_ms(s.started, s.scheduled) for s in completed]),  # type: ignore[arg-type]
        exec_ms=percentiles([_ms(s.finished, s.started) for s in completed]),  # type: ignore[arg-type]
        submit_lag_ms=percentiles([_ms(s.submitted, s.scheduled) for s in submitted]),  # type: ignore[arg-type]
        errors=errors, resources=dict(resources or {}), timeline=_downsample(points, timeline_cap),
    )


class ThresholdResult(BaseModel):
    """One threshold checked against one phase. An unmeasurable metric (no completed arrival) fails."""

    expression: str
    metric: str
    op: str
    limit: float
    actual: float | None
    passed: bool
    phase: str = ""

    @property
    def message(self) -> str:
        where = f" at {self.phase}" if self.phase else ""
        actual = "nothing measured" if self.actual is None else f"actual {self.actual:g}"
        return f"threshold {self.expression}{where} {'held' if self.passed else 'breached'} ({actual})"


class Regression(BaseModel):
    """A metric worse than the baseline by more than the tolerance (``change`` is the fraction worse)."""

    metric: str
    baseline: float
    current: float
    change: float | None = Field(description="fraction worse than the baseline; None when the baseline is 0")
    tolerance: float
    direction: Literal["higher_is_worse", "lower_is_worse"]

    @property
    def message(self) -> str:
        how = "rose" if self.direction == "higher_is_worse" else "fell"
        by = "from zero" if self.change is None else f"{self.change:.0%} worse"
        return (f"regression: {self.metric} {how} from {self.baseline:g} to {self.current:g} "
                f"({by}; tolerance {self.tolerance:.0%})")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPUs (all, and those this process may use), memory, OS, Python."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpu_usable": usable, "cpu_model": _cpu_model(),
            "memory_bytes": _memory_bytes(), "platform": platform.platform(), "machine": platform.machine(),
            "hostname": platform.node(), "python": platform.python_version(),
            "python_implementation": platform.python_implementation()}


def versions_info(*, postgres: str | None = None, **more: str | None) -> dict[str, str | None]:
    """Versions of what was measured: this checkout's git revision, AMAS, Prefect, SQLAlchemy and friends."""
    found: dict[str, str | None] = {"amas_git": _git_rev(), "amas": _version("amas-ops"), "prefect": _version("prefect"),
                                    "sqlalchemy": _version("sqlalchemy"), "pydantic": _version("pydantic"),
                                    "psycopg": _version("psycopg"), "python": sys.version.split()[0]}
    if postgres is not None:
        found["postgres"] = postgres
    found.update(more)
    return found


def _now() -> datetime:
    return datetime.now(UTC)


class BenchResult(BaseModel):
    """Everything one benchmark run measured, with the machine, versions and settings beside the numbers.

    ``name`` tells runs of one kind apart (``stress_sqlite`` and ``stress_postgres``) and names the
    files (``stem``); it defaults to the kind.
    """

    schema_version: int = SCHEMA_VERSION
    kind: Literal["load", "stress", "soak", "component"]
    name: str = ""
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    machine: dict[str, Any] = Field(default_factory=machine_info)
    versions: dict[str, Any] = Field(default_factory=versions_info)
    settings: dict[str, Any] = Field(default_factory=dict)
    phases: list[PhaseSummary] = Field(default_factory=list)
    held_rate: float | None = Field(None, description="stress: the highest rate at which every threshold held")
    broke: dict[str, Any] | None = Field(None, description="stress: the threshold breached or resource saturated first")
    thresholds: list[ThresholdResult] = Field(default_factory=list)
    regressions: list[Regression] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict, description="a component benchmark's own numbers")

    @property
    def stem(self) -> str:
        """The file name stem: the name (or kind) reduced to ``[a-z0-9_-]``."""
        return re.sub(r"[^a-z0-9_-]+", "_", (self.name or self.kind).lower()).strip("_") or self.kind

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failures(self) -> list[str]:
        """One line per breached threshold and per regression; empty when the run passed."""
        return ([t.message for t in self.thresholds if not t.passed] + [r.message for r in self.regressions])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return not self.failures


def check(result: BenchResult) -> None:
    """Raise ``BenchmarkFailed`` naming every breached threshold and regression (call after writing the files)."""
    if result.failures:
        raise BenchmarkFailed(f"benchmark {result.stem} failed: " + "; ".join(result.failures))


def phase_metrics(phase: PhaseSummary) -> dict[str, float | int | None]:
    """One phase's headline numbers, flat (the names thresholds use)."""
    lat, queue, execution = phase.latency_ms, phase.queue_ms, phase.exec_ms
    return {"rate": phase.rate, "throughput": phase.throughput, "error_rate": phase.error_rate,
            "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p95_ms": lat["p95"], "p99_ms": lat["p99"],
            "max_ms": lat["max"], "mean_ms": lat["mean"],
            "queue_p50_ms": queue["p50"], "queue_p95_ms": queue["p95"], "queue_p99_ms": queue["p99"],
            "exec_p50_ms": execution["p50"], "exec_p95_ms": execution["p95"], "exec_p99_ms": execution["p99"],
            "arrivals": phase.arrivals, "completed": phase.completed, "failed": phase.failed,
            "dropped": phase.dropped, "late": phase.late}


def _numbers(tree: Any) -> Any:
    """The numeric leaves of ``tree`` (DVC metrics show numbers only)."""
    if isinstance(tree, dict):
        kept = {str(k): _numbers(v) for k, v in tree.items()}
        return {k: v for k, v in kept.items() if v is not None and v != {}}
    if isinstance(tree, bool) or not isinstance(tree, int | float) or (isinstance(tree, float) and not math.isfinite(tree)):
        return None
    return tree


def _phase_key(phase: PhaseSummary, seen: set[str]) -> str:
    key = re.sub(r"[^a-z0-9_]+", "_", phase.name.lower()).strip("_") if phase.name else f"rate_{phase.rate:g}"
    key = key.replace(".", "_")
    base, n = key, 2
    while key in seen:
        key, n = f"{base}_{n}", n + 1
    seen.add(key)
    return key


def metrics(result: BenchResult) -> dict[str, Any]:
    """The numbers DVC compares, under the result's stem: ``{"load": {"throughput": .., "p95_ms": .., ...}}``.

    One phase: its numbers at the top. Several (stress steps, component operations): one entry
    per phase under ``phases`` (keyed ``rate_<r>`` or by the phase's name), and for stress
    ``held_rate`` and ``max_throughput``. Numeric ``extra`` values go under ``extra``.
    """
    body: dict[str, Any] = {}
    if len(result.phases) == 1:
        body.update(phase_metrics(result.phases[0]))
    elif result.phases:
        seen: set[str] = set()
        body["phases"] = {_phase_key(p, seen): phase_metrics(p) for p in result.phases}
        body["max_throughput"] = max(p.throughput for p in result.phases)
    if result.kind == "stress":
        body["held_rate"] = result.held_rate if result.held_rate is not None else 0.0
    body["passed"] = int(result.passed)
    if result.extra:
        body["extra"] = result.extra
    return {result.stem: _numbers(body)}


LATENCY_COLUMNS = ("phase", "rate", "t_s", "latency_ms", "ok")
RATE_COLUMNS = ("phase", "rate", "throughput", "error_rate", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                "queue_p95_ms", "exec_p95_ms", "arrivals", "completed", "failed", "dropped", "late")


def latency_csv(result: BenchResult) -> str:
    """DVC plots data, one row per timeline point: phase label, its target rate, ``t_s`` (seconds since the
    run's first phase started), ``latency_ms`` (scheduled -> finished), ``ok`` (1 completed, 0 failed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LATENCY_COLUMNS)
    origin = min((p.started for p in result.phases if p.started is not None), default=None)
    for phase in result.phases:
        shift = (phase.started - origin) if phase.started is not None and origin is not None else 0.0
        for t, latency, ok in phase.timeline:
            writer.writerow([phase.label, f"{phase.rate:g}", f"{t + shift:.3f}", f"{latency:.3f}", int(ok)])
    return out.getvalue()


def rates_csv(result: BenchResult) -> str:
    """DVC plots data, one row per phase: target ``rate`` (arrivals/s), achieved ``throughput`` (completed/s),
    ``error_rate``, exact latency percentiles in ms (scheduled -> finished), queue and execution p95, counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RATE_COLUMNS)
    for phase in result.phases:
        numbers = phase_metrics(phase)
        writer.writerow([phase.label] + ["" if numbers[c] is None else f"{numbers[c]:.6g}" if isinstance(numbers[c], float)
                                         else numbers[c] for c in RATE_COLUMNS[1:]])
    return out.getvalue()


def _put(target: Path, text: str) -> Path:
    return atomic_write(target, lambda sink: sink.write(text.encode()))


def write_results(result: BenchResult, directory: Path) -> dict[str, Path]:
    """Write the run's files under ``directory``, each atomically (a reader never sees half a file).

    ``<stem>.json`` the metrics DVC reads (``metrics(result)``), ``<stem>_full.json`` the whole
    result, ``<stem>_latency.csv`` and ``<stem>_rates.csv`` DVC plots data (columns in
    ``latency_csv`` and ``rates_csv``), ``<stem>.html`` the report. The metrics file is written
    last, so it never describes a run whose other files are missing.
    """
    from amas.bench.report import render_html

    directory = Path(directory)
    stem = result.stem
    paths = {"full": directory / f"{stem}_full.json", "latency_csv": directory / f"{stem}_latency.csv",
             "rates_csv": directory / f"{stem}_rates.csv", "html": directory / f"{stem}.html",
             "metrics": directory / f"{stem}.json"}
    _put(paths["full"], result.model_dump_json(indent=2) + "\n")
    _put(paths["latency_csv"], latency_csv(result))
    _put(paths["rates_csv"], rates_csv(result))
    _put(paths["html"], render_html(result))
    _put(paths["metrics"], json.dumps(metrics(result), indent=2, sort_keys=True) + "\n")
    return paths


def load_result(path: Path) -> BenchResult:
    """Read a ``<stem>_full.json`` back."""
    try:
        return BenchResult.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise AmasError(f"cannot read benchmark result {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AmasError(f"{path} is not a benchmark result: {str(exc).splitlines()[0]}") from None
