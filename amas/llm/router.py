"""Ordered failover over the configured providers, with retries, circuits and token/cost accounting.

For each call the router walks the providers in priority order. A provider whose circuit is
open is skipped without a request. Otherwise a transient failure (timeout, connection, 429,
5xx) is retried up to ``max_retries`` times with capped exponential backoff and jitter (a 429's
Retry-After is honoured when it is within the cap, and fails over when it is not); a permanent
failure fails over at once. Every failed request counts toward that provider's circuit, and a
circuit that opens mid-retry stops the retries. When every provider has failed the call
raises ``LLMUnavailable`` with one reason per provider.

Sleeping and the clock are injected so tests run at full speed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from amas.config import Settings
from amas.errors import ServiceUnavailable
from amas.llm.breaker import BreakerState, CircuitBreaker
from amas.llm.providers import PROVIDER_KINDS, ChatProvider, Failure, Message, ProviderError, Reply

logger = logging.getLogger("amas.llm")

Outcome = Literal["ok", "circuit_open"] | Failure


class LLMUnavailable(ServiceUnavailable):
    """Every configured provider failed or was skipped; ``str()`` gives one reason per provider."""

    def __init__(self, message: str, attempts: Sequence[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


@dataclass(frozen=True)
class Attempt:
    """One request to one provider (or one skip because its circuit was open)."""

    provider: str
    number: int
    """1 for the first request to this provider in this call, 2 for its first retry, ..."""
    outcome: Outcome
    reason: str
    """'ok', or the one-line failure reason."""
    status: int | None = None
    latency_seconds: float = 0.0


@dataclass(frozen=True)
class Completion:
    text: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_seconds: float
    """Wall time of the whole call, retries, backoff and failover included."""
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class ProviderUsage:
    """Running totals for one provider since the router was built."""

    calls: int = 0
    """Requests sent."""
    failures: int = 0
    """Requests that failed (a skip for an open circuit is not a request)."""
    skipped: int = 0
    """Calls that passed this provider by because its circuit was open."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class _Route:
    provider: ChatProvider
    breaker: CircuitBreaker
    usage: ProviderUsage = field(default_factory=ProviderUsage)


class _CircuitOpened(Exception):
    """The circuit refused a retry (another caller's failures opened it meanwhile)."""


class LLMRouter:
    def __init__(self, providers: Sequence[ChatProvider], *, max_retries: int = 2, backoff_seconds: float = 0.5,
                 backoff_max_seconds: float = 8.0, breaker_failures: int = 3, breaker_reset_seconds: float = 60.0,
                 max_tokens: int = 400, prompt_budget_chars: int = 4000, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, client: httpx.Client | None = None) -> None:
        if not providers:
            raise ValueError("an LLMRouter needs at least one provider")
        self._routes = [
            _Route(p, CircuitBreaker(failures=breaker_failures, reset_seconds=breaker_reset_seconds, clock=clock))
            for p in providers
        ]
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_tokens = max_tokens
        self.prompt_budget_chars = prompt_budget_chars
        self._sleep = sleep
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> LLMRouter | None:
        """The router for ``settings.llm``, or None when no provider is configured.

        Raises ``ConfigError`` when a provider's ``api_key_env`` names an unset variable.
        """
        llm = settings.llm
        if not llm.providers:
            return None
        keys = [p.resolved_key() for p in llm.providers]
        # One client (one connection pool) for all providers; timeouts are set per request.
        client = httpx.Client(follow_redirects=False)
        providers = [
            PROVIDER_KINDS[p.kind](p, client=client, key=key, timeout_seconds=p.timeout_seconds or llm.timeout_seconds,
                                   temperature=llm.temperature)
            for p, key in zip(llm.providers, keys, strict=True)
        ]
        return cls(providers, max_retries=llm.max_retries, backoff_seconds=llm.backoff_seconds,
                   backoff_max_seconds=llm.backoff_max_seconds, breaker_failures=llm.breaker_failures,
                   breaker_reset_seconds=llm.breaker_reset_seconds, max_tokens=llm.max_tokens,
                   prompt_budget_chars=llm.prompt_budget_chars, clock=clock, sleep=sleep, client=client)

    def __repr__(self) -> str:
        return f"LLMRouter(providers={[r.provider.name for r in self._routes]!r})"

    def __enter__(self) -> LLMRouter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def providers(self) -> list[str]:
        return [r.provider.name for r in self._routes]

    @property
    def usage(self) -> dict[str, ProviderUsage]:
        """Totals per provider name, in priority order (a snapshot)."""
        with self._lock:
            return {r.provider.name: r.usage for r in self._routes}

    def circuit(self, provider: str) -> BreakerState:
        for route in self._routes:
            if route.provider.name == provider:
                return route.breaker.state
        raise KeyError(provider)

    def complete(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> Completion:
        """Ask the first provider that answers; raise ``LLMUnavailable`` when none does."""
        # Latencies are wall time (perf_counter); the injectable clock drives the circuits only.
        started = time.perf_counter()
        attempts: list[Attempt] = []
        reasons: list[str] = []
        for route in self._routes:
            name = route.provider.name
            if not route.breaker.allow():
                wait = route.breaker.seconds_until_trial()
                reason = f"circuit open (next trial in {wait:.0f} s)"
                attempts.append(Attempt(name, 0, "circuit_open", reason))
                reasons.append(f"{name}: {reason}")
                self._add_usage(route, skipped=1)
                logger.warning("llm provider=%s skipped: %s", name, reason)
                continue
            try:
                reply = self._call_with_retries(route, messages, max_tokens or self.max_tokens, attempts)
            except ProviderError as exc:
                tries = sum(1 for a in attempts if a.provider == name)
                reasons.append(f"{name}: {exc.reason}" + (f" after {tries} attempts" if tries > 1 else ""))
                continue
            except _CircuitOpened:
                reasons.append(f"{name}: circuit opened during retries")
                continue
            config = route.provider.config
            cost = (reply.prompt_tokens * config.input_price_per_1k
                    + reply.completion_tokens * config.output_price_per_1k) / 1000
            self._add_usage(route, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                            cost_usd=cost)
            return Completion(text=reply.text, provider=name, model=route.provider.model,
                              prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                              cost_usd=cost, latency_seconds=time.perf_counter() - started, attempts=tuple(attempts))
        raise LLMUnavailable("no language model answered: " + "; ".join(reasons), attempts)

    def _call_with_retries(self, route: _Route, messages: Sequence[Message], max_tokens: int,
                           attempts: list[Attempt]) -> Reply:
        provider, breaker = route.provider, route.breaker
        number = 0

        def once() -> Reply:
            nonlocal number
            number += 1
            if number > 1 and not breaker.allow():
                raise _CircuitOpened
            began = time.perf_counter()
            try:
                reply = provider.chat(messages, max_tokens=max_tokens)
            except ProviderError as exc:
                latency = time.perf_counter() - began
                breaker.record_failure()
                self._add_usage(route, calls=1, failures=1)
                attempts.append(Attempt(provider.name, number, exc.failure, exc.reason, exc.status, latency))
                logger.warning("llm provider=%s model=%s attempt=%d failed (%s, %.2f s): %s", provider.name,
                               provider.model, number, "transient" if exc.transient else "permanent", latency,
                               exc.reason)
                raise
            except BaseException:
                # Not a provider failure (a bug, KeyboardInterrupt): free the half-open trial slot.
                breaker.record_failure()
                raise
            latency = time.perf_counter() - began
            breaker.record_success()
            self._add_usage(route, calls=1)
            attempts.append(Attempt(provider.name, number, "ok", "ok", 200, latency))
            logger.info("llm provider=%s model=%s attempt=%d ok (%.2f s, %d+%d tokens)", provider.name,
                        provider.model, number, latency, reply.prompt_tokens, reply.completion_tokens)
            return reply

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1) | self._give_up(breaker),
            wait=self._wait(),
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.transient),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(once)

    def _give_up(self, breaker: CircuitBreaker) -> Callable[[RetryCallState], bool]:
        """Stop retrying when the circuit has opened or the server asks for a longer wait than the cap."""
        def stop(state: RetryCallState) -> bool:
            if breaker.state is BreakerState.open:
                return True
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return retry_after is not None and retry_after > self.backoff_max_seconds
        return stop

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_exponential_jitter(multiplier=self.backoff_seconds, max=self.backoff_max_seconds,
                                          jitter=self.backoff_seconds)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return min(retry_after, self.backoff_max_seconds)
            return backoff(state)
        return wait

    def _add_usage(self, route: _Route, **delta: float) -> None:
        with self._lock:
            usage = route.usage
            route.usage = replace(usage, **{k: getattr(usage, k) + v for k, v in delta.items()})
