"""The router against real HTTP: recorded OpenAI and Ollama responses from the loopback replay server."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from typing import Any

import pytest

from amas.config import load_settings
from amas.errors import ConfigError, ServiceUnavailable
from amas.llm import LLMRouter, LLMUnavailable
from amas.llm.breaker import BreakerState
from tests.plugins.llm_replay import ReplayServer

pytestmark = pytest.mark.unit

KEY = "sk-proj-unit-Zq81Vx9Lm2"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise: 3 findings."}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps(list[float]):
    """Records requested sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_router(providers: list[dict[str, Any]], *, clock: FakeClock | None = None, sleeps: Sleeps | None = None,
                **llm: Any) -> LLMRouter:
    settings = load_settings(llm={"providers": json.dumps(providers), "breaker_failures": 10, **llm})
    router = LLMRouter.from_settings(settings, clock=clock or FakeClock(), sleep=sleeps if sleeps is not None else Sleeps())
    assert router is not None
    return router


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released), for a real connection refusal."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_first_provider_answers_with_tokens_and_cost(llm_replay: ReplayServer) -> None:
    router = make_router([
        llm_replay.provider("primary", "openai", "ok", api_key=KEY, input_price_per_1k=0.15, output_price_per_1k=0.6),
        llm_replay.provider("secondary", "ollama", "ok"),
    ])
    with router:
        done = router.complete(MESSAGES)
    assert (done.provider, done.model) == ("primary", "gpt-4o-mini")
    assert done.text.startswith("The code analysis examined 14 Python files")
    assert (done.prompt_tokens, done.completion_tokens) == (412, 63)
    assert done.cost_usd == pytest.approx(412 * 0.15 / 1000 + 63 * 0.6 / 1000)
    assert [(a.provider, a.number, a.outcome, a.status) for a in done.attempts] == [("primary", 1, "ok", 200)]
    assert done.latency_seconds > 0
    [sent] = llm_replay.requests()
    assert sent.path == "/primary/ok/v1/chat/completions"
    assert sent.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 400, "temperature": 0.0,
                         "stream": False}
    assert sent.headers["Authorization"] == "<redacted>"
    assert sent.auth_sha256 == hashlib.sha256(KEY.encode()).hexdigest()
    usage = router.usage
    assert usage["primary"].calls == 1 and usage["primary"].failures == 0
    assert (usage["primary"].prompt_tokens, usage["primary"].completion_tokens) == (412, 63)
    assert usage["primary"].cost_usd == pytest.approx(done.cost_usd)
    assert usage["secondary"].calls == 0


@pytest.mark.parametrize(("script", "overrides", "outcomes", "slept"), [
    # Times out on every try: one retry (max_retries=1), then the healthy provider.
    ("slow:5", {"timeout_seconds": 0.2}, ["timeout", "timeout"], 1),
    # Rate limited with a Retry-After inside the cap: waited exactly that long between tries.
    ("429:1", {}, ["rate_limited", "rate_limited"], 1),
    # Rate limited for longer than backoff_max_seconds: fail over at once instead of waiting.
    ("429:120", {}, ["rate_limited"], 0),
    ("500", {}, ["server_error", "server_error"], 1),
    ("503", {}, ["server_error", "server_error"], 1),
])
def test_transient_failures_retry_then_fail_over(llm_replay: ReplayServer, script: str, overrides: dict[str, Any],
                                                 outcomes: list[str], slept: int) -> None:
    sleeps = Sleeps()
    router = make_router([llm_replay.provider("flaky", "openai", script, **overrides),
                          llm_replay.provider("healthy", "ollama", "ok")], sleeps=sleeps, max_retries=1)
    with router:
        done = router.complete(MESSAGES)
    assert done.provider == "healthy"
    assert [(a.provider, a.outcome) for a in done.attempts] == [("flaky", o) for o in outcomes] + [("healthy", "ok")]
    assert len(llm_replay.requests("flaky")) == len(outcomes)
    assert len(llm_replay.requests("healthy")) == 1
    assert len(sleeps) == slept
    if script == "429:1":
        assert sleeps == [1.0]
        assert "Retry-After 1 s" in done.attempts[0].reason
    assert router.usage["flaky"].failures == len(outcomes)


def test_connection_refused_fails_over(llm_replay: ReplayServer) -> None:
    dead = {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "model": "m"}
    router = make_router([dead, llm_replay.provider("healthy", "openai", "ok")], max_retries=2)
    with router:
        done = router.complete(MESSAGES)
    assert [a.outcome for a in done.attempts] == ["connection", "connection", "connection", "ok"]
    assert done.attempts[0].reason.startswith("connection failed")


def test_retries_with_backoff_then_succeeds(llm_replay: ReplayServer) -> None:
    sleeps = Sleeps()
    router = make_router([llm_replay.provider("primary", "openai", "500*2,ok"),
                          llm_replay.provider("secondary", "ollama", "ok")], sleeps=sleeps, max_retries=2,
                         backoff_seconds=0.5, backoff_max_seconds=8)
    with router:
        done = router.complete(MESSAGES)
    assert done.provider == "primary"
    assert [(a.number, a.outcome) for a in done.attempts] == [(1, "server_error"), (2, "server_error"), (3, "ok")]
    assert [r.step for r in llm_replay.requests("primary")] == ["500", "500", "ok"]
    assert llm_replay.requests("secondary") == []
    # Exponential with jitter up to backoff_seconds: 0.5 + [0, 0.5], then 1.0 + [0, 0.5].
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 1.5
    assert router.usage["primary"].calls == 3 and router.usage["primary"].failures == 2


def test_backoff_is_capped(llm_replay: ReplayServer) -> None:
    sleeps = Sleeps()
    router = make_router([llm_replay.provider("primary", "openai", "500*5,ok")], sleeps=sleeps, max_retries=5,
                         backoff_seconds=1, backoff_max_seconds=3)
    with router:
        router.complete(MESSAGES)
    assert len(sleeps) == 5 and max(sleeps) == 3


@pytest.mark.parametrize(("script", "outcome", "reason"), [
    ("401", "rejected", "HTTP 401: the provider refused the key"),
    ("400", "rejected", "HTTP 400: This model's maximum context length is 128000 tokens"),
    ("404", "rejected", "HTTP 404: The model `gpt-4o-mini` does not exist"),
    ("garbage", "malformed", "malformed response: body is not JSON"),
    ("fixture:empty_choices", "malformed", "malformed response: no choices[0].message.content"),
])
def test_permanent_failures_are_not_retried(llm_replay: ReplayServer, script: str, outcome: str, reason: str) -> None:
    sleeps = Sleeps()
    router = make_router([llm_replay.provider("primary", "openai", script, api_key=KEY),
                          llm_replay.provider("secondary", "ollama", "ok")], sleeps=sleeps, max_retries=2)
    with router:
        done = router.complete(MESSAGES)
    assert done.provider == "secondary"
    assert [(a.provider, a.outcome) for a in done.attempts] == [("primary", outcome), ("secondary", "ok")]
    assert done.attempts[0].reason.startswith(reason)
    assert len(llm_replay.requests("primary")) == 1
    assert sleeps == []


def test_a_401_body_that_echoes_the_key_is_never_quoted(llm_replay: ReplayServer) -> None:
    router = make_router([llm_replay.provider("primary", "openai", "401", api_key=KEY),
                          llm_replay.provider("secondary", "openai", "ok")])
    with router:
        done = router.complete(MESSAGES)
    # The recorded body says "Incorrect API key provided: sk-proj-****...9f2c".
    assert "9f2c" not in done.attempts[0].reason and "Incorrect API key" not in done.attempts[0].reason


def test_breaker_opens_skips_then_half_opens_after_the_reset_time(llm_replay: ReplayServer) -> None:
    clock = FakeClock()
    router = make_router([llm_replay.provider("primary", "openai", "500*4,ok"),
                          llm_replay.provider("secondary", "ollama", "ok")],
                         clock=clock, max_retries=2, breaker_failures=3, breaker_reset_seconds=60)
    with router:
        first = router.complete(MESSAGES)
        assert [a.outcome for a in first.attempts] == ["server_error"] * 3 + ["ok"]
        assert router.circuit("primary") is BreakerState.open

        skipped = router.complete(MESSAGES)
        assert [(a.provider, a.outcome) for a in skipped.attempts] == [("primary", "circuit_open"), ("secondary", "ok")]
        assert len(llm_replay.requests("primary")) == 3

        clock.advance(59)
        assert router.complete(MESSAGES).attempts[0].outcome == "circuit_open"
        assert len(llm_replay.requests("primary")) == 3

        clock.advance(1)
        assert router.circuit("primary") is BreakerState.half_open
        trial = router.complete(MESSAGES)
        # One trial request, not retried; its failure re-opens the circuit at once.
        assert [(a.provider, a.outcome) for a in trial.attempts] == [("primary", "server_error"), ("secondary", "ok")]
        assert router.circuit("primary") is BreakerState.open
        assert len(llm_replay.requests("primary")) == 4

        clock.advance(60)
        recovered = router.complete(MESSAGES)
        assert recovered.provider == "primary"
        assert router.circuit("primary") is BreakerState.closed
        assert router.complete(MESSAGES).provider == "primary"
    usage = router.usage["primary"]
    assert (usage.calls, usage.failures, usage.skipped) == (6, 4, 2)


def test_all_providers_failing_raises_one_line_without_the_key(llm_replay: ReplayServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    router = make_router([llm_replay.provider("primary", "openai", "401", api_key=KEY),
                          llm_replay.provider("secondary", "ollama", "500")], max_retries=1)
    with router, pytest.raises(LLMUnavailable) as info:
        router.complete(MESSAGES)
    message = str(info.value)
    assert isinstance(info.value, ServiceUnavailable) and info.value.exit_code == 3
    assert message == ("no language model answered: primary: HTTP 401: the provider refused the key (check api_key "
                       "or api_key_env); secondary: HTTP 500: llama runner process has terminated: signal: killed "
                       "after 2 attempts")
    assert [a.outcome for a in info.value.attempts] == ["rejected", "server_error", "server_error"]
    for text in (message, repr(info.value), caplog.text, repr(router)):
        assert KEY not in text
    assert "llm provider=secondary model=llama3.2 attempt=2 failed (transient" in caplog.text


def test_ollama_provider(llm_replay: ReplayServer) -> None:
    router = make_router([llm_replay.provider("local", "ollama", "ok", output_price_per_1k=1.0)])
    with router:
        done = router.complete(MESSAGES, max_tokens=120)
    assert done.text.startswith("The data analysis of orders.csv")
    assert (done.prompt_tokens, done.completion_tokens, done.model) == (398, 71, "llama3.2")
    assert done.cost_usd == pytest.approx(0.071)
    [sent] = llm_replay.requests("local")
    assert sent.path == "/local/ok/api/chat"
    assert sent.body == {"model": "llama3.2", "messages": MESSAGES, "stream": False,
                         "options": {"num_predict": 120, "temperature": 0.0}}
    assert "Authorization" not in sent.headers and sent.auth_sha256 is None


def test_ollama_model_not_pulled_is_permanent_with_its_reason(llm_replay: ReplayServer) -> None:
    router = make_router([llm_replay.provider("local", "ollama", "404")], max_retries=2)
    with router, pytest.raises(LLMUnavailable, match='model "llama3.2" not found, try pulling it first'):
        router.complete(MESSAGES)
    assert len(llm_replay.requests("local")) == 1


def test_a_server_that_omits_usage_counts_zero_tokens(llm_replay: ReplayServer) -> None:
    router = make_router([llm_replay.provider("llamacpp", "openai", "fixture:no_usage", input_price_per_1k=1.0)])
    with router:
        done = router.complete(MESSAGES)
    assert (done.text, done.prompt_tokens, done.completion_tokens, done.cost_usd) == (
        "No problems were found in the dataset.", 0, 0, 0.0)


def test_no_provider_means_no_router() -> None:
    assert LLMRouter.from_settings(load_settings()) is None


def test_key_from_a_named_environment_variable(llm_replay: ReplayServer, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = llm_replay.provider("primary", "openai", "ok", api_key_env="AMAS_TEST_OPENAI_KEY")
    settings = load_settings(llm={"providers": json.dumps([provider])})
    with pytest.raises(ConfigError, match=r"^AMAS_LLM_PROVIDERS: provider 'primary' reads its key from "
                                          r"AMAS_TEST_OPENAI_KEY, which is not set$"):
        LLMRouter.from_settings(settings)
    monkeypatch.setenv("AMAS_TEST_OPENAI_KEY", KEY)
    router = LLMRouter.from_settings(settings)
    assert router is not None
    with router:
        router.complete(MESSAGES)
    assert llm_replay.requests("primary")[0].auth_sha256 == hashlib.sha256(KEY.encode()).hexdigest()
    assert KEY not in repr(router) and KEY not in repr(router._routes[0].provider)
