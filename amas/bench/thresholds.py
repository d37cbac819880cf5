"""Pass/fail thresholds in the k6 style, as written in ``params.yaml``: ``METRIC OP NUMBER``.

``"p95_ms < 2000"``, ``"error_rate < 0.01"``, ``"throughput >= 5"``, ``"p99_ms<=500"``. The
metrics a threshold may name are in ``METRICS``, the operators in ``OPERATORS``; anything else
is refused with one line naming the expression and what is allowed. A metric that could not be
measured (no arrival completed, so there is no p95) fails its threshold rather than passing it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel

from amas.bench.results import PhaseSummary, ThresholdResult
from amas.errors import ConfigError

__all__ = ["METRICS", "OPERATORS", "Threshold", "ThresholdResult", "breached", "evaluate", "parse_threshold",
           "parse_thresholds"]

METRICS: dict[str, tuple[str, Callable[[PhaseSummary], float | int | None]]] = {
    "p50_ms": ("median latency, scheduled -> finished", lambda p: p.latency_ms["p50"]),
    "p90_ms": ("90th percentile latency", lambda p: p.latency_ms["p90"]),
    "p95_ms": ("95th percentile latency", lambda p: p.latency_ms["p95"]),
    "p99_ms": ("99th percentile latency", lambda p: p.latency_ms["p99"]),
    "max_ms": ("slowest completed arrival", lambda p: p.latency_ms["max"]),
    "mean_ms": ("mean latency", lambda p: p.latency_ms["mean"]),
    "queue_p95_ms": ("95th percentile queueing delay, scheduled -> started", lambda p: p.queue_ms["p95"]),
    "exec_p95_ms": ("95th percentile execution time, started -> finished", lambda p: p.exec_ms["p95"]),
    "error_rate": ("(failed + dropped) / arrivals", lambda p: p.error_rate),
    "throughput": ("completed arrivals per second", lambda p: p.throughput),
    "kept_up": ("throughput / offered rate (1.0: every arrival done within the phase)",
                lambda p: p.throughput / p.rate if p.rate else None),
    "dropped": ("arrivals never submitted", lambda p: p.dropped),
    "late": ("arrivals submitted later than late_after_s", lambda p: p.late),
}

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
}

_SHAPE = re.compile(r"^\s*(?P<metric>[^\s<>=!]*)\s*(?P<op>[<>=!]*)\s*(?P<value>.*?)\s*$")
_HINT = "write METRIC OP NUMBER, e.g. 'p95_ms < 2000'"


class Threshold(BaseModel):
    """A parsed threshold; ``expression`` is its normalised text (``p95_ms < 2000``)."""

    metric: str
    op: str
    limit: float

    @property
    def expression(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"

    def holds(self, actual: float | None) -> bool:
        return actual is not None and OPERATORS[self.op](actual, self.limit)


def _bad(text: object, why: str) -> ConfigError:
    return ConfigError(f"bad benchmark threshold {text!r}: {why}")


def parse_threshold(text: str) -> Threshold:
    """``"p95_ms < 2000"`` -> ``Threshold``; anything else raises ``ConfigError`` with one line saying why."""
    if not isinstance(text, str):
        raise _bad(text, f"expected a string; {_HINT}")
    if not text.strip():
        raise _bad(text, f"it is empty; {_HINT}")
    shape = _SHAPE.match(text)
    if shape is None or not shape["metric"]:
        raise _bad(text, f"no metric; {_HINT}")
    metric, op, value = shape["metric"], shape["op"], shape["value"]
    if metric not in METRICS:
        raise _bad(text, f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    if not op:
        raise _bad(text, f"no operator; operators: {' '.join(OPERATORS)}")
    if op not in OPERATORS:
        raise _bad(text, f"unknown operator {op!r}; operators: {' '.join(OPERATORS)}")
    if not value:
        raise _bad(text, f"no number after {op!r}; {_HINT}")
    try:
        limit = float(value)
    except ValueError:
        raise _bad(text, f"{value!r} is not a number (no units: latencies are in ms, rates per second)") from None
    if not math.isfinite(limit):
        raise _bad(text, f"{value!r} is not a finite number")
    return Threshold(metric=metric, op=op, limit=limit)


def parse_thresholds(texts: Iterable[str] | str | None) -> list[Threshold]:
    """A ``params.yaml`` list of thresholds (or one string, or nothing) -> parsed thresholds."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    return [parse_threshold(t) for t in texts]


def evaluate(summary: PhaseSummary, thresholds: Sequence[Threshold]) -> list[ThresholdResult]:
    """Check each threshold against one phase."""
    found = []
    for threshold in thresholds:
        actual = METRICS[threshold.metric][1](summary)
        value = None if actual is None else float(actual)
        found.append(ThresholdResult(expression=threshold.expression, metric=threshold.metric, op=threshold.op,
                                     limit=threshold.limit, actual=value, passed=threshold.holds(value),
                                     phase=summary.label))
    return found


def breached(results: Iterable[ThresholdResult]) -> list[ThresholdResult]:
    """The thresholds that did not hold."""
    return [r for r in results if not r.passed]
