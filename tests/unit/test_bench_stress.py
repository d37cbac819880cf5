"""The stress ramp's steps and its verdict on what broke first, from resource samples."""

from __future__ import annotations

from typing import Any

import pytest

from amas.bench.results import PhaseSummary, Sample, summarize
from amas.bench.spec import StressRun, StressSpec
from amas.bench.stress import diagnose, indicators

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
QUIET = {"machine_cpu_pct": {"mean": 30.0}, "server_cores": {"mean": 0.2}, "api_probe_ms": {"p95": 5.0},
         "db_probe_ms": {"p95": 10.0}, "generator_cores": {"mean": 0.3}, "cpu_usable": 2}


def step(rate: float, *, queue: float = 0.005, execution: float = 0.05, resources: dict[str, Any] | None = None,
         errors: int = 0, error: str = "OperationalError: database is locked") -> PhaseSummary:
    samples = [Sample(index=i, scheduled=T0 + i / rate, submitted=T0 + i / rate, started=T0 + i / rate + queue,
                      finished=T0 + i / rate + queue + execution, ok=i >= errors, error=None if i >= errors else error)
               for i in range(20)]
    return summarize(samples, rate=rate, duration_s=20 / rate, resources={**QUIET, **(resources or {})})


def test_rates_run_from_start_by_step_to_the_ceiling() -> None:
    assert StressSpec(start=2, step=2, ceiling=9).rates() == [2, 4, 6, 8]
    assert StressSpec(start=0.5, step=0.1, ceiling=0.8).rates() == [0.5, 0.6, 0.7, 0.8]
    assert StressSpec(start=5, step=1, ceiling=5).rates() == [5]


@pytest.mark.parametrize(("values", "expected"), [
    ({"start": 10, "ceiling": 5}, "below start"),
    ({"start": 1, "step": 1, "ceiling": 100}, "at most 60"),
    ({"ceiling": 600}, "less than or equal to 500"),
])
def test_the_ramp_is_bounded(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        StressSpec(**values)


def test_both_means_a_sqlite_and_a_postgresql_server() -> None:
    assert StressRun(server_db="both").servers() == ["sqlite", "postgresql"]
    assert StressRun(server_db="stack").servers() == ["stack"]


def test_a_quiet_step_saturates_nothing() -> None:
    found = indicators(step(2))
    assert all(v["ratio"] < 1 for v in found.values()), found


def test_waiting_longer_than_running_is_the_workers() -> None:
    phases = [step(2), step(4, queue=0.9, execution=0.1)]
    broke = diagnose(phases, ["threshold p95_ms < 500 at 4/s breached (actual 1000)"])
    assert broke["component"] == "worker" and broke["at_rate"] == 4
    assert "queue p95 900 ms" in broke["evidence"]


def test_a_busy_server_process_is_the_prefect_api() -> None:
    phases = [step(2), step(4, resources={"server_cores": {"mean": 0.98}}), step(6, queue=2, execution=0.1)]
    broke = diagnose(phases, ["p95 breached"])
    assert (broke["component"], broke["at_rate"]) == ("Prefect API", 4)


def test_locked_database_is_the_database_even_when_the_cpu_is_also_busy() -> None:
    busy = {"machine_cpu_pct": {"mean": 92.0}, "server_db_locked": 40}
    broke = diagnose([step(2), step(4, resources=busy)], ["error_rate breached"])
    assert broke["component"] == "database"
    assert broke["saturated"].keys() == {"database", "CPU"}


def test_task_errors_on_the_database_count_for_the_database() -> None:
    found = indicators(step(4, errors=5))
    assert found["database"]["ratio"] > 1 and "5 tasks failed on the database" in found["database"]["evidence"]


def test_a_full_machine_is_the_cpu() -> None:
    broke = diagnose([step(2, resources={"machine_cpu_pct": {"mean": 99.0}})], ["p95 breached"])
    assert broke["component"] == "CPU"


def test_the_gil_caps_a_thread_runner_at_one_core_but_not_dask() -> None:
    hot = {"generator_cores": {"mean": 0.95}}
    assert indicators(step(2, resources=hot), task_runner_kind="thread")["worker"]["ratio"] >= 1
    assert indicators(step(2, resources=hot), task_runner_kind="dask", workers=2)["worker"]["ratio"] < 1


def test_nothing_saturated_names_the_closest_component() -> None:
    broke = diagnose([step(2), step(4)], [])
    assert broke["component"] is None and "ceiling 4/s reached" in broke["reason"] and broke["closest"]
