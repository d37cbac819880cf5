"""k6-style thresholds: parsing (every kind of bad input gets one line naming it), evaluation."""

from __future__ import annotations

import pytest

from amas.bench.results import PhaseSummary, Sample, summarize
from amas.bench.thresholds import METRICS, OPERATORS, breached, evaluate, parse_threshold, parse_thresholds
from amas.errors import AmasError, ConfigError

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def phase(latencies_s: list[float], *, failures: int = 0, drops: int = 0) -> PhaseSummary:
    samples = [Sample(i, T0 + i, T0 + i, T0 + i + lat / 4, T0 + i + lat, True) for i, lat in enumerate(latencies_s)]
    n = len(samples)
    samples += [Sample(n + i, T0, T0, T0, T0 + 1, False, "boom") for i in range(failures)]
    samples += [Sample(n + failures + i, T0, None, None, None, False) for i in range(drops)]
    return summarize(samples, rate=1, duration_s=len(samples) or 1)


@pytest.mark.parametrize(("text", "metric", "op", "limit"), [
    ("p95_ms < 2000", "p95_ms", "<", 2000.0),
    ("error_rate < 0.01", "error_rate", "<", 0.01),
    ("throughput >= 5", "throughput", ">=", 5.0),
    ("p99_ms<=500", "p99_ms", "<=", 500.0),
    ("  dropped == 0 ", "dropped", "==", 0.0),
    ("queue_p95_ms > 1e3", "queue_p95_ms", ">", 1000.0),
])
def test_parse_good(text: str, metric: str, op: str, limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op, threshold.limit) == (metric, op, limit)


def test_expression_is_normalised() -> None:
    assert parse_threshold("p99_ms<=500").expression == "p99_ms <= 500"
    assert parse_threshold("error_rate < 0.01").expression == "error_rate < 0.01"


def test_every_listed_metric_and_operator_parses() -> None:
    for metric in METRICS:
        for op in OPERATORS:
            assert parse_threshold(f"{metric} {op} 1").metric == metric


@pytest.mark.parametrize(("text", "says"), [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("< 2000", "no metric"),
    ("p96_ms < 2000", "unknown metric 'p96_ms'; metrics: p50_ms, p90_ms, p95_ms, p99_ms, max_ms, mean_ms, "
                      "queue_p95_ms, exec_p95_ms, error_rate, throughput, kept_up, dropped, late"),
    ("http_req_duration < 200", "unknown metric 'http_req_duration'"),
    ("p(95) < 200", "unknown metric 'p(95)'"),
    ("P95_MS < 2000", "unknown metric 'P95_MS'"),
    ("p95_ms 2000", "no operator; operators: < <= > >= =="),
    ("p95_ms = 2000", "unknown operator '='; operators: < <= > >= =="),
    ("p95_ms => 2000", "unknown operator '=>'"),
    ("p95_ms != 2000", "unknown operator '!='"),
    ("p95_ms <", "no number after '<'"),
    ("p95_ms < fast", "'fast' is not a number"),
    ("p95_ms < 2s", "'2s' is not a number (no units"),
    ("p95_ms < 2000 ms", "'2000 ms' is not a number"),
    ("p95_ms < nan", "'nan' is not a finite number"),
    ("throughput > inf", "'inf' is not a finite number"),
])
def test_parse_bad(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_threshold(text)
    message = str(caught.value)
    assert message.startswith(f"bad benchmark threshold {text!r}: ")
    assert says in message
    assert "\n" not in message
    assert isinstance(caught.value, AmasError)


def test_parse_not_a_string() -> None:
    with pytest.raises(ConfigError, match=r"bad benchmark threshold 2000: expected a string"):
        parse_threshold(2000)  # type: ignore[arg-type]


def test_parse_thresholds_from_params() -> None:
    assert parse_thresholds(None) == []
    assert [t.expression for t in parse_thresholds("p95_ms < 10")] == ["p95_ms < 10"]
    assert [t.metric for t in parse_thresholds(["p95_ms < 10", "error_rate < 0.1"])] == ["p95_ms", "error_rate"]
    with pytest.raises(ConfigError, match="p9_ms"):
        parse_thresholds(["p95_ms < 10", "p9_ms < 10"])


def test_evaluate_passes_and_breaches() -> None:
    summary = phase([i / 100 for i in range(1, 101)], failures=1, drops=1)  # latencies 10..1000 ms, 102 arrivals
    found = evaluate(summary, parse_thresholds(["p95_ms < 2000", "p95_ms < 950", "p95_ms <= 950", "max_ms == 1000",
                                                "error_rate < 0.01", "dropped <= 1", "throughput >= 1000"]))
    assert [(r.expression, r.passed) for r in found] == [
        ("p95_ms < 2000", True), ("p95_ms < 950", False), ("p95_ms <= 950", True), ("max_ms == 1000", True),
        ("error_rate < 0.01", False), ("dropped <= 1", True), ("throughput >= 1000", False)]
    assert found[1].actual == pytest.approx(950.0)
    assert found[4].actual == pytest.approx(2 / 102)
    assert [r.expression for r in breached(found)] == ["p95_ms < 950", "error_rate < 0.01", "throughput >= 1000"]
    assert found[1].phase == "1/s"


def test_every_metric_reads_its_own_number() -> None:
    summary = phase([0.1, 0.2, 0.3, 0.4], failures=1, drops=2)
    actual = {r.metric: r.actual for r in evaluate(summary, [parse_threshold(f"{m} >= 0") for m in METRICS])}
    assert actual == pytest.approx({
        "p50_ms": 200.0, "p90_ms": 400.0, "p95_ms": 400.0, "p99_ms": 400.0, "max_ms": 400.0, "mean_ms": 250.0,
        "queue_p95_ms": 100.0, "exec_p95_ms": 300.0, "error_rate": 3 / 7, "throughput": 4 / 7, "kept_up": 4 / 7,
        "dropped": 2.0, "late": 0.0})


def test_unmeasurable_metric_fails_its_threshold() -> None:
    nothing_completed = phase([], failures=3)
    [result] = evaluate(nothing_completed, [parse_threshold("p95_ms < 2000")])
    assert (result.actual, result.passed) == (None, False)
    assert "nothing measured" in result.message
