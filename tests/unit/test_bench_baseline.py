"""Regressions against a kept baseline: both directions, the tolerance edge, zero and missing baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amas.bench.baseline import compare, direction_of, flatten, load_baseline, save_baseline
from amas.bench.results import BenchResult, Sample, metrics, summarize
from amas.errors import AmasError

pytestmark = pytest.mark.unit

BASE = {"load": {"p95_ms": 1000.0, "p50_ms": 400.0, "throughput": 10.0, "error_rate": 0.01, "dropped": 0,
                 "rate": 10.0, "arrivals": 600}}


def with_(**changes: float) -> dict:
    return {"load": BASE["load"] | changes}


def names(regressions: list) -> list[str]:
    return [r.metric for r in regressions]


def test_same_numbers_no_regression() -> None:
    assert compare(BASE, BASE, tolerance=0.2) == []


def test_latency_higher_is_worse() -> None:
    [found] = compare(with_(p95_ms=1300.0), BASE, tolerance=0.2)
    assert (found.metric, found.baseline, found.current, found.direction) == ("load.p95_ms", 1000.0, 1300.0,
                                                                                "higher_is_worse")
    assert found.change == pytest.approx(0.3)
    assert "load.p95_ms rose from 1000 to 1300 (30% worse; tolerance 20%)" in found.message
    assert compare(with_(p95_ms=500.0), BASE, tolerance=0.2) == []  # faster is not a regression


def test_throughput_lower_is_worse() -> None:
    assert names(compare(with_(throughput=7.9), BASE, tolerance=0.2)) == ["load.throughput"]
    assert compare(with_(throughput=50.0), BASE, tolerance=0.2) == []


def test_tolerance_edge_exactly_tolerance_is_not_a_regression() -> None:
    assert compare(with_(p95_ms=1200.0), BASE, tolerance=0.2) == []
    assert names(compare(with_(p95_ms=1200.5), BASE, tolerance=0.2)) == ["load.p95_ms"]
    assert compare(with_(throughput=8.0), BASE, tolerance=0.2) == []
    assert names(compare(with_(throughput=7.99), BASE, tolerance=0.2)) == ["load.throughput"]


def test_zero_tolerance_any_worsening_beyond_the_floor() -> None:
    assert names(compare(with_(p50_ms=402.0), BASE, tolerance=0.0)) == ["load.p50_ms"]
    assert compare(with_(p50_ms=400.5), BASE, tolerance=0.0) == []  # under the 1 ms floor: noise


def test_descriptive_numbers_are_not_compared() -> None:
    assert compare(with_(rate=1.0, arrivals=1), BASE, tolerance=0.0) == []


def test_zero_baseline_uses_the_absolute_floor() -> None:
    base = with_(error_rate=0.0, dropped=0)
    assert compare(with_(error_rate=0.0005, dropped=1), base, tolerance=0.2) == []
    found = compare(with_(error_rate=0.05, dropped=3), base, tolerance=0.2)
    assert names(found) == ["load.dropped", "load.error_rate"]
    assert all(r.change is None and "from zero" in r.message for r in found)


def test_zero_throughput_baseline_cannot_regress() -> None:
    assert compare(with_(throughput=0.0), with_(throughput=0.0), tolerance=0.2) == []


def test_missing_or_none_values_are_skipped() -> None:
    base = {"load": BASE["load"] | {"p99_ms": None}}
    current = {"load": {k: v for k, v in BASE["load"].items() if k != "p95_ms"} | {"p99_ms": 5000.0}}
    assert compare(current, base, tolerance=0.2) == []
    assert compare(BASE, None, tolerance=0.2) == []
    assert compare(BASE, {}, tolerance=0.2) == []


def test_directions_override_by_leaf_full_name_or_glob() -> None:
    current = with_(rate=20.0)
    assert names(compare(current, BASE, tolerance=0.2, directions={"rate": "higher_is_worse"})) == ["load.rate"]
    assert compare(with_(p95_ms=9000.0), BASE, tolerance=0.2, directions={"load.p95_ms": "ignore"}) == []
    assert compare(with_(p95_ms=9000.0), BASE, tolerance=0.2, directions={"lo*": "ignore"}) == []


def test_stress_steps_are_judged_by_held_rate_not_step_by_step() -> None:
    base = {"stress": {"held_rate": 10.0, "phases": {"rate_20": {"p95_ms": 100.0}}}}
    current = {"stress": {"held_rate": 5.0, "phases": {"rate_20": {"p95_ms": 9000.0}}}}
    assert direction_of("stress.phases.rate_20.p95_ms") == "ignore"
    assert direction_of("component_backup.phases.pg_dump.p95_ms") == "higher_is_worse"
    assert names(compare(current, base, tolerance=0.2)) == ["stress.held_rate"]


def test_negative_tolerance_refused() -> None:
    with pytest.raises(AmasError, match="tolerance"):
        compare(BASE, BASE, tolerance=-0.1)


def test_flatten_keeps_finite_numbers_only() -> None:
    tree = {"a": {"b": 1, "c": "text", "d": True, "e": float("nan"), "f": {"g": 2.5}}}
    assert flatten(tree) == {"a.b": 1.0, "a.f.g": 2.5}


def run(p95_s: float) -> BenchResult:
    t0 = 1_700_000_000.0
    samples = [Sample(i, t0 + i, t0 + i, t0 + i, t0 + i + p95_s, True) for i in range(20)]
    return BenchResult(kind="load", machine={"cpu_count": 2}, versions={"prefect": "3"},
                       phases=[summarize(samples, rate=1, duration_s=20)])


def test_save_then_load_round_trip_and_compare(tmp_path: Path) -> None:
    path = tmp_path / "baselines" / "load.json"
    save_baseline(run(1.0), path)
    document = json.loads(path.read_text())
    assert document["machine"] == {"cpu_count": 2} and document["kind"] == "load"
    baseline = load_baseline(path)
    assert baseline == json.loads(json.dumps(metrics(run(1.0))))
    assert names(compare(metrics(run(1.5)), baseline, tolerance=0.2)) == [
        "load.exec_p50_ms", "load.exec_p95_ms", "load.exec_p99_ms", "load.max_ms", "load.mean_ms", "load.p50_ms",
        "load.p90_ms", "load.p95_ms", "load.p99_ms"]
    assert compare(metrics(run(1.1)), baseline, tolerance=0.2) == []
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_missing_baseline_is_none(tmp_path: Path) -> None:
    assert load_baseline(tmp_path / "none.json") is None


@pytest.mark.parametrize(("content", "says"), [("{not json", "is not JSON"), ('{"saved_at": 1}', "has no metrics"),
                                               ("[]", "has no metrics")])
def test_load_bad_baseline(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "load.json"
    path.write_text(content)
    with pytest.raises(AmasError, match=says):
        load_baseline(path)
