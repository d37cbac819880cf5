"""The open-model generator on a fake task runner: the schedule holds whatever the tasks do."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from amas.bench.load import generate
from amas.bench.spec import BenchInputError, LoadRun, LoadSpec, require_loopback
from amas.bench.runs import output_dir, text_plot
from amas.bench.results import BenchResult, summarize

pytestmark = pytest.mark.unit


class FakeState:
    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error
        self.name, self.message = ("Failed", str(error)) if error else ("Completed", None)

    def is_final(self) -> bool:
        return True

    def is_completed(self) -> bool:
        return self.error is None

    def result(self, raise_on_failure: bool = True) -> Any:
        if self.error is not None:
            if raise_on_failure:
                raise self.error
            return self.error
        return self.value


class FakeFuture:
    """Completes after ``seconds`` on a timer thread, like a task run in a pool with room to spare."""

    def __init__(self, seconds: float, fail: bool) -> None:
        self.callbacks: list[Any] = []
        self.done = threading.Event()
        self.state: FakeState | None = None
        self.started = time.time()
        timer = threading.Timer(seconds, self._finish, args=(fail,))
        timer.daemon = True
        timer.start()

    def _finish(self, fail: bool) -> None:
        self.state = FakeState({"started": self.started, "worker": "fake:1:t"},
                               RuntimeError("agent blew up") if fail else None)
        self.done.set()
        for fn in self.callbacks:
            fn(self)

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def wait(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)


class FakeRunner:
    def __init__(self, seconds: float = 0.01, fail_every: int = 0) -> None:
        self.seconds, self.fail_every, self.calls = seconds, fail_every, 0

    def submit(self, task: Any, parameters: dict[str, Any]) -> FakeFuture:
        self.calls += 1
        fail = bool(self.fail_every) and parameters["index"] % self.fail_every == 0
        return FakeFuture(self.seconds, fail)


def test_every_arrival_is_a_sample_on_schedule() -> None:
    spec = LoadSpec(rate=50, duration_s=0.4)
    samples = generate(spec, FakeRunner(), "sqlite://")
    assert [s.index for s in samples] == list(range(20))
    gaps = [b.scheduled - a.scheduled for a, b in zip(samples, samples[1:], strict=False)]
    assert all(abs(g - 0.02) < 1e-6 for g in gaps)
    assert all(s.ok and s.submitted is not None and s.finished is not None for s in samples)
    assert all(s.submitted - s.scheduled < 0.05 for s in samples)  # type: ignore[operator]


def test_slow_tasks_do_not_slow_the_arrivals_and_the_cap_drops_the_excess() -> None:
    # Each task takes 1 s; arrivals keep coming every 20 ms (open model) and at most 5 are in flight.
    spec = LoadSpec(rate=50, duration_s=0.3, max_in_flight=5, drain_timeout_s=3)
    runner = FakeRunner(seconds=1.0)
    started = time.monotonic()
    samples = generate(spec, runner, "sqlite://")
    assert len(samples) == 15 and runner.calls == 5
    dropped = [s for s in samples if s.submitted is None]
    assert len(dropped) == 10 and all(s.error and "dropped" in s.error for s in dropped)
    assert time.monotonic() - started < 2.5
    summary = summarize(samples, rate=spec.rate, duration_s=spec.duration_s)
    assert (summary.completed, summary.dropped, summary.error_rate) == (5, 10, 10 / 15)


def test_unfinished_tasks_fail_after_the_drain_timeout() -> None:
    spec = LoadSpec(rate=20, duration_s=0.1, drain_timeout_s=0.2)
    samples = generate(spec, FakeRunner(seconds=5.0), "sqlite://")
    assert len(samples) == 2
    assert all(not s.ok and s.finished is None and "not finished" in (s.error or "") for s in samples)


def test_failed_tasks_carry_their_error() -> None:
    samples = generate(LoadSpec(rate=40, duration_s=0.1), FakeRunner(fail_every=2), "sqlite://")
    assert [s.ok for s in samples] == [False, True, False, True]
    assert samples[0].error == "RuntimeError: agent blew up"


def test_stop_ends_the_schedule_early() -> None:
    stop = threading.Event()
    stop.set()
    assert generate(LoadSpec(rate=10, duration_s=5), FakeRunner(), "sqlite://", stop=stop) == []


@pytest.mark.parametrize(("values", "expected"), [
    ({"rate": 0}, "greater than 0"),
    ({"rate": 501}, "less than or equal to 500"),
    ({"rate": 500, "duration_s": 3600}, "at most 500000"),
    ({"workers": 17}, "less than or equal to 16"),
    ({"task_runner": "ray"}, "'thread' or 'dask'"),
])
def test_the_load_is_bounded(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        LoadSpec(**values)


def test_scaling_counts_are_bounded() -> None:
    with pytest.raises(ValueError, match="worker counts must be 1 to 16"):
        LoadRun(scaling=[1, 64])


@pytest.mark.parametrize("url", ["http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api"])
def test_loopback_targets_are_accepted(url: str) -> None:
    require_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.5:4200/api", "https://api.prefect.cloud/api/accounts/x",
                                 "http://127.0.0.1.example.com/api"])
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(BenchInputError, match="only targets 127.0.0.1"):
        require_loopback(url)


def test_compared_runs_go_to_the_metrics_path_others_to_amas_home(tmp_path: Any) -> None:
    assert output_dir(None, compared=True).parts[-2:] == ("metrics", "bench")
    assert output_dir(None, compared=False).parts[-1] == "bench"
    assert output_dir(str(tmp_path), compared=True) == tmp_path


def test_text_plot_has_a_bar_per_phase() -> None:
    samples = generate(LoadSpec(rate=40, duration_s=0.1), FakeRunner(), "sqlite://")
    result = BenchResult(kind="load", phases=[summarize(samples, rate=40, duration_s=0.1)])
    plot = text_plot(result)
    assert "| 40/s |" in plot and "█" in plot
