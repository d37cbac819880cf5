"""Samples -> exact percentiles and phase summaries; a result -> metrics and files on disk."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

import pytest

import amas.fsutil
from amas.bench.results import (
    BenchmarkFailed,
    BenchResult,
    Sample,
    ThresholdResult,
    check,
    machine_info,
    metrics,
    percentiles,
    summarize,
    write_results,
)
from amas.errors import AmasError

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def brute_force(values: list[float], p: int) -> float:
    """The definition itself: the smallest observed value with at least p% of the sample at or below it."""
    return min(v for v in values if sum(1 for w in values if w <= v) * 100 >= p * len(values))


def done(index: int, *, queue: float, execution: float, lag: float = 0.0, ok: bool = True,
         error: str | None = None) -> Sample:
    scheduled = T0 + index * 0.1
    return Sample(index=index, scheduled=scheduled, submitted=scheduled + lag, started=scheduled + queue,
                  finished=scheduled + queue + execution, ok=ok, error=error)


def dropped(index: int) -> Sample:
    return Sample(index=index, scheduled=T0 + index * 0.1, submitted=None, started=None, finished=None, ok=False,
                  error="submit refused")


def result(**fields: object) -> BenchResult:
    return BenchResult.model_validate({"kind": "load", "machine": {"cpu_count": 2}, "versions": {"prefect": "3"}}
                                      | fields)


class TestPercentiles:
    def test_one_sample_is_every_percentile(self) -> None:
        assert percentiles([7.5]) == {"p50": 7.5, "p90": 7.5, "p95": 7.5, "p99": 7.5, "max": 7.5, "mean": 7.5,
                                      "min": 7.5, "count": 1}

    def test_two_samples_median_is_the_lower_nearest_rank(self) -> None:
        found = percentiles([20.0, 10.0])
        assert (found["p50"], found["p90"], found["p99"], found["max"], found["min"]) == (10.0, 20.0, 20.0, 20.0, 10.0)
        assert found["mean"] == 15.0

    def test_one_to_hundred(self) -> None:
        found = percentiles([float(v) for v in range(100, 0, -1)])
        assert (found["p50"], found["p90"], found["p95"], found["p99"], found["max"]) == (50, 90, 95, 99, 100)
        assert found["count"] == 100

    def test_twenty_samples_p95_is_the_nineteenth(self) -> None:
        # ceil(0.95 * 20) in floating point is where an off-by-one would hide.
        assert percentiles([float(v) for v in range(1, 21)])["p95"] == 19.0

    def test_ten_samples_p99_and_p90(self) -> None:
        found = percentiles([float(v) for v in range(1, 11)])
        assert (found["p90"], found["p95"], found["p99"]) == (9.0, 10.0, 10.0)

    def test_ties(self) -> None:
        found = percentiles([5.0, 5.0, 5.0, 1.0, 9.0])
        assert (found["p50"], found["p90"], found["min"], found["max"]) == (5.0, 9.0, 1.0, 9.0)

    def test_matches_the_definition_on_random_samples(self) -> None:
        rng = random.Random(6)
        for n in (1, 2, 3, 7, 19, 20, 21, 99, 101, 1000):
            values = [round(rng.lognormvariate(5, 1), 1) for _ in range(n)]
            found = percentiles(values)
            for p in (50, 90, 95, 99):
                assert found[f"p{p}"] == brute_force(values, p), (n, p)
            assert found["max"] == max(values)
            assert math.isclose(found["mean"], sum(values) / n)

    def test_every_percentile_is_an_observed_value(self) -> None:
        values = [1.0, 2.0, 4.0, 8.0]
        assert {v for k, v in percentiles(values).items() if k.startswith("p")} <= set(values)

    def test_empty(self) -> None:
        assert percentiles([]) == {"p50": None, "p90": None, "p95": None, "p99": None, "max": None, "mean": None,
                                   "min": None, "count": 0}

    def test_nan_is_refused(self) -> None:
        with pytest.raises(ValueError, match="NaN"):
            percentiles([1.0, float("nan")])


class TestSummarize:
    def test_counts_latency_queue_and_exec(self) -> None:
        samples = [done(i, queue=0.1, execution=0.2 + i * 0.01) for i in range(10)]
        phase = summarize(samples, rate=10, duration_s=1.0)
        assert (phase.arrivals, phase.completed, phase.failed, phase.dropped, phase.late) == (10, 10, 0, 0, 0)
        assert phase.error_rate == 0.0
        assert phase.queue_ms["p50"] == pytest.approx(100.0)
        assert phase.exec_ms["max"] == pytest.approx(290.0)
        assert phase.latency_ms["p90"] == pytest.approx(100.0 + 280.0)
        assert phase.latency_ms["count"] == 10

    def test_dropped_and_failed_count_as_errors_and_not_in_latency(self) -> None:
        samples = ([done(i, queue=0.01, execution=0.05) for i in range(6)]
                   + [done(6, queue=0.01, execution=9.0, ok=False, error="Crashed"),
                      Sample(index=7, scheduled=T0, submitted=T0, started=T0, finished=None, ok=False, error=None),
                      dropped(8), dropped(9)])
        phase = summarize(samples, rate=10, duration_s=1.0)
        assert (phase.completed, phase.failed, phase.dropped) == (6, 2, 2)
        assert phase.error_rate == pytest.approx(0.4)
        assert phase.latency_ms["count"] == 6
        assert phase.latency_ms["max"] == pytest.approx(60.0)  # the 9 s failure is not a latency
        assert phase.errors == {"Crashed": 1, "did not finish": 1}
        assert [ok for _, _, ok in phase.timeline].count(False) == 1  # the failure that finished is on the timeline

    def test_late_is_strictly_more_than_late_after(self) -> None:
        samples = [done(0, queue=1, execution=1, lag=0.05), done(1, queue=1, execution=1, lag=0.15),
                   done(2, queue=1, execution=1, lag=0.3), dropped(3)]
        phase = summarize(samples, rate=10, duration_s=0.4, late_after_s=0.1)
        assert phase.late == 2
        assert summarize(samples, rate=10, duration_s=0.4, late_after_s=0.2).late == 1
        assert phase.submit_lag_ms["count"] == 3  # the dropped arrival has no lag

    def test_submitted_exactly_late_after_is_on_time(self) -> None:
        # Whole and half seconds are exact in binary floating point, so the edge is really the edge.
        edge = Sample(index=0, scheduled=T0, submitted=T0 + 0.5, started=T0 + 1, finished=T0 + 2, ok=True)
        assert summarize([edge], rate=1, duration_s=1, late_after_s=0.5).late == 0
        assert summarize([edge], rate=1, duration_s=1, late_after_s=0.25).late == 1

    def test_ok_without_a_finish_is_not_completed(self) -> None:
        sample = Sample(index=0, scheduled=T0, submitted=T0, started=T0, finished=None, ok=True)
        phase = summarize([sample], rate=1, duration_s=1)
        assert (phase.completed, phase.failed, phase.error_rate) == (0, 1, 1.0)

    def test_throughput_over_wall_time_including_the_drain(self) -> None:
        # 10 arrivals over 1 s; the last one finishes 3 s after the first was scheduled.
        samples = [done(i, queue=0.0, execution=0.1) for i in range(9)] + [done(9, queue=0.0, execution=2.1)]
        phase = summarize(samples, rate=10, duration_s=1.0)
        assert phase.wall_s == pytest.approx(3.0)
        assert phase.throughput == pytest.approx(10 / 3.0)

    def test_throughput_never_over_less_than_the_nominal_duration(self) -> None:
        samples = [done(i, queue=0.0, execution=0.01) for i in range(5)]
        phase = summarize(samples, rate=1, duration_s=10.0)
        assert phase.throughput == pytest.approx(0.5)

    def test_timeline_is_capped_but_percentiles_use_every_sample(self) -> None:
        samples = [done(i, queue=0.0, execution=0.001 * i, ok=i != 500) for i in range(5000)]
        phase = summarize(samples, rate=10, duration_s=500, timeline_cap=300)
        assert len(phase.timeline) <= 300
        assert phase.latency_ms["count"] == 4999
        assert phase.latency_ms["max"] == pytest.approx(4999.0)
        assert max(latency for _, latency, _ in phase.timeline) == pytest.approx(4999.0)
        assert (pytest.approx(50.0), pytest.approx(500.0), False) in phase.timeline
        assert [t for t, _, _ in phase.timeline] == sorted(t for t, _, _ in phase.timeline)

    def test_nothing_arrived(self) -> None:
        phase = summarize([], rate=5, duration_s=2)
        assert (phase.arrivals, phase.throughput, phase.error_rate, phase.latency_ms["p95"]) == (0, 0.0, 0.0, None)


class TestResult:
    def test_machine_info_has_the_numbers_a_comparison_needs(self) -> None:
        info = machine_info()
        assert info["cpu_count"] >= 1 and info["memory_bytes"] > 0
        assert info["python"].count(".") == 2 and info["platform"]

    def test_machine_and_versions_recorded_by_default(self) -> None:
        fresh = BenchResult(kind="load")
        assert fresh.machine["cpu_count"] >= 1
        assert fresh.versions["prefect"] and fresh.versions["sqlalchemy"]

    def test_metrics_one_phase_flat_under_the_stem(self) -> None:
        phase = summarize([done(i, queue=0.1, execution=0.2) for i in range(4)], rate=4, duration_s=1)
        found = metrics(result(name="load", phases=[phase]))
        assert set(found) == {"load"}
        assert found["load"]["p95_ms"] == pytest.approx(300.0)
        assert found["load"]["error_rate"] == 0.0 and found["load"]["passed"] == 1
        assert "p95_ms" in found["load"] and "phases" not in found["load"]

    def test_metrics_stress_steps_and_held_rate(self) -> None:
        phases = [summarize([done(i, queue=0, execution=0.1) for i in range(n)], rate=r, duration_s=1)
                  for n, r in ((2, 2), (4, 4.5))]
        found = metrics(result(kind="stress", name="stress_postgres", phases=phases, held_rate=4.5,
                               extra={"note": "text is dropped", "ratio": 1.5}))
        body = found["stress_postgres"]
        assert set(body["phases"]) == {"rate_2", "rate_4_5"}
        assert body["held_rate"] == 4.5 and body["max_throughput"] == pytest.approx(4.0)
        assert body["extra"] == {"ratio": 1.5}

    def test_stem_is_safe_for_a_file_name(self) -> None:
        assert result(name="../Stress SQLite").stem == "stress_sqlite"
        assert result(name="").stem == "load"

    def test_check_names_every_failure(self) -> None:
        breach = ThresholdResult(expression="p95_ms < 2000", metric="p95_ms", op="<", limit=2000, actual=2500,
                                 passed=False, phase="5/s")
        failed = result(thresholds=[breach])
        assert not failed.passed
        with pytest.raises(BenchmarkFailed, match=r"p95_ms < 2000 at 5/s breached \(actual 2500\)") as caught:
            check(failed)
        assert isinstance(caught.value, AmasError) and "\n" not in str(caught.value)
        check(result(thresholds=[breach.model_copy(update={"passed": True, "actual": 10.0})]))


class TestWriteResults:
    def phases(self) -> list:
        samples = [done(i, queue=0.05, execution=0.1, ok=i % 7 != 0, error="boom") for i in range(30)]
        return [summarize(samples, rate=10, duration_s=3, started=T0)]

    def test_writes_valid_json_and_csv(self, tmp_path: Path) -> None:
        run = result(name="load", phases=self.phases())
        paths = write_results(run, tmp_path / "bench")
        assert {p.name for p in paths.values()} == {"load.json", "load_full.json", "load_latency.csv",
                                                    "load_rates.csv", "load.html"}
        assert json.loads(paths["metrics"].read_text()) == json.loads(json.dumps(metrics(run)))
        again = BenchResult.model_validate_json(paths["full"].read_text())
        assert again.phases[0].latency_ms == run.phases[0].latency_ms
        assert again.phases[0].timeline == run.phases[0].timeline
        latency = list(csv.DictReader(io.StringIO(paths["latency_csv"].read_text())))
        assert len(latency) == 30 and {r["ok"] for r in latency} == {"0", "1"}
        assert float(latency[1]["t_s"]) == pytest.approx(0.1)
        rates = list(csv.DictReader(io.StringIO(paths["rates_csv"].read_text())))
        assert [r["rate"] for r in rates] == ["10"] and float(rates[0]["p95_ms"]) == pytest.approx(150.0)
        assert "<svg" in paths["html"].read_text()
        assert not [p for p in (tmp_path / "bench").iterdir() if p.name.endswith(".tmp")]

    def test_every_file_goes_through_the_atomic_writer(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        written = []
        real = amas.fsutil.atomic_write

        def spy(target: Path, write):  # type: ignore[no-untyped-def]
            written.append(target.name)
            return real(target, write)

        monkeypatch.setattr("amas.bench.results.atomic_write", spy)
        paths = write_results(result(phases=self.phases()), tmp_path)
        assert sorted(written) == sorted(p.name for p in paths.values())
        assert written[-1] == "load.json"  # the metrics file last: it never describes missing files

    def test_a_failure_part_way_leaves_the_old_metrics(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "load.json").write_text('{"old": 1}')

        def broken(run: BenchResult) -> str:
            raise RuntimeError("disk full")

        monkeypatch.setattr("amas.bench.report.render_html", broken)
        with pytest.raises(RuntimeError):
            write_results(result(phases=self.phases()), tmp_path)
        assert json.loads((tmp_path / "load.json").read_text()) == {"old": 1}
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
