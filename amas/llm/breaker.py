"""A circuit breaker per provider, so a dead endpoint costs one timeout per reset period, not one per call.

closed: requests flow; ``failures`` consecutive failed requests open it.
open: requests are refused until ``reset_seconds`` have passed since it opened.
half-open: exactly one trial request is let through; success closes the circuit, failure
re-opens it for another ``reset_seconds``.

The clock is injectable (``time.monotonic`` by default) so tests move time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half-open"


class CircuitBreaker:
    def __init__(self, *, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, consecutive_failures={self._consecutive})"

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.closed
        if self._trial_in_flight or self._clock() - self._opened_at >= self.reset_seconds:
            return BreakerState.half_open
        return BreakerState.open

    def allow(self) -> bool:
        """May a request go now? In half-open, only the first caller gets the trial."""
        with self._lock:
            state = self._state()
            if state is BreakerState.closed:
                return True
            if state is BreakerState.half_open and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._trial_in_flight or self._consecutive >= self.failures:
                self._opened_at = self._clock()
            self._trial_in_flight = False

    def seconds_until_trial(self) -> float:
        """How long an open circuit will keep refusing; 0 when it would let a request through."""
        with self._lock:
            if self._opened_at is None or self._trial_in_flight:
                return 0.0
            return max(0.0, self.reset_seconds - (self._clock() - self._opened_at))
