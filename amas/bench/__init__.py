"""Benchmarks: load, stress, soak and component benchmarks measured on the real system.

- ``results``: samples -> exact per-phase summaries (``summarize``), the ``BenchResult`` of a
  run with its machine, versions and settings, its DVC metrics and the files it writes.
- ``thresholds``: k6-style pass/fail thresholds (``p95_ms < 2000``) from ``params.yaml``.
- ``baseline``: the kept baseline and the regression check against it.
- ``report``: the HTML page with inline SVG charts and the Markdown for a Prefect artifact.
"""

from amas.bench.baseline import compare, load_baseline, save_baseline
from amas.bench.results import (
    BenchmarkFailed,
    BenchResult,
    PhaseSummary,
    Regression,
    Sample,
    ThresholdResult,
    check,
    machine_info,
    metrics,
    percentiles,
    summarize,
    versions_info,
    write_results,
)
from amas.bench.thresholds import Threshold, breached, evaluate, parse_threshold, parse_thresholds

__all__ = [
    "BenchResult",
    "BenchmarkFailed",
    "PhaseSummary",
    "Regression",
    "Sample",
    "Threshold",
    "ThresholdResult",
    "breached",
    "check",
    "compare",
    "evaluate",
    "load_baseline",
    "machine_info",
    "metrics",
    "parse_threshold",
    "parse_thresholds",
    "percentiles",
    "save_baseline",
    "summarize",
    "versions_info",
    "write_results",
]
