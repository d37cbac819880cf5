"""The circuit breaker as a pure state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from amas.llm.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=FakeClock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.closed and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.open
    assert not breaker.allow()


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now = 9.9
    assert not breaker.allow() and breaker.seconds_until_trial() == pytest.approx(0.1)
    clock.now = 10.0
    assert breaker.state is BreakerState.half_open
    assert breaker.allow()
    assert not breaker.allow(), "a second caller must wait for the trial's result"
    breaker.record_success()
    assert breaker.state is BreakerState.closed and breaker.allow()


def test_a_failed_trial_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=5, reset_seconds=10, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now = 10.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.open
    clock.now = 19.9
    assert not breaker.allow()
    clock.now = 20.0
    assert breaker.allow()


def test_failures_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(failures=0, reset_seconds=1)
