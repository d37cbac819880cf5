"""summarise(): a model-written note when a provider answers, the reason when none does, never an exception."""

from __future__ import annotations

import json
from collections.abc import Sequence
import httpx
import pytest

from amas.config import LLMProvider, load_settings
from amas.llm import Completion, LLMRouter
from amas.llm.enrich import SYSTEM_PROMPT, build_prompt, summarise
from amas.llm.providers import Message, OpenAIProvider
from amas.registry import AgentResult, Evidence, Finding, LLMNote, Severity
from tests.plugins.llm_replay import ReplayServer

pytestmark = pytest.mark.unit

KEY = "sk-enrich-Hq42Tt7"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def result(findings: int = 0) -> AgentResult:
    ranked = [
        Finding(severity=Severity.low, title="Long function", detail="ingest.load has 140 lines.", location="ingest.py:10"),
        Finding(severity=Severity.critical, title="AWS access key committed", detail="Revoke it.",
                location="config/settings.py:12"),
        Finding(severity=Severity.medium, title="High complexity", location="ingest.py:88"),
    ]
    ranked += [Finding(severity=Severity.info, title=f"Note {i}", detail="x" * 80) for i in range(findings)]
    return AgentResult(agent="code_analysis", summary="Scanned 14 Python files; 1 secret, 2 maintainability issues.",
                       findings=ranked,
                       evidence=[Evidence(key="evidence/t1/report.json", sha256=SHA, size=2048)])


def router_for(replay: ReplayServer, *providers: tuple[str, str, str]) -> LLMRouter:
    entries = [replay.provider(name, kind, script, api_key=KEY, input_price_per_1k=0.15, output_price_per_1k=0.6)
               for name, kind, script in providers]
    router = LLMRouter.from_settings(load_settings(llm={"providers": json.dumps(entries), "max_retries": 0}),
                                     sleep=lambda _: None)
    assert router is not None
    return router


def test_without_a_router_the_note_says_why() -> None:
    assert summarise(None, result()) == LLMNote(used=False, reason="no model configured")


def test_a_summary_from_the_first_provider(llm_replay: ReplayServer) -> None:
    with router_for(llm_replay, ("primary", "openai", "ok")) as router:
        note = summarise(router, result())
    assert note.used and note.reason == "ok"
    assert (note.provider, note.model) == ("primary", "gpt-4o-mini")
    assert note.text and note.text.startswith("The code analysis examined 14 Python files")
    assert (note.prompt_tokens, note.completion_tokens) == (412, 63)
    assert note.cost_usd == pytest.approx(0.0996)
    [sent] = llm_replay.requests("primary")
    system, user = sent.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    prompt = user["content"]
    assert "Agent: code_analysis" in prompt and "Scanned 14 Python files" in prompt
    assert prompt.index("[critical] AWS access key committed") < prompt.index("[medium]") < prompt.index("[low]")
    assert "Findings: 3 (1 critical, 1 medium, 1 low)" in prompt
    assert "Evidence objects stored: 1." in prompt and SHA not in prompt and "evidence/t1" not in prompt


def test_all_providers_failing_keeps_the_result_and_gives_the_reason(llm_replay: ReplayServer) -> None:
    agent_result = result()
    with router_for(llm_replay, ("primary", "openai", "401"), ("backup", "ollama", "500")) as router:
        note = summarise(router, agent_result)
    assert not note.used and note.text is None
    assert note.reason == ("all providers failed: primary: HTTP 401: the provider refused the key (check api_key or "
                           "api_key_env); backup: HTTP 500: llama runner process has terminated: signal: killed")
    assert KEY not in note.model_dump_json()
    agent_result.llm = note
    assert AgentResult.model_validate_json(agent_result.model_dump_json()).llm.reason == note.reason


class BrokenRouter(LLMRouter):
    """A router whose call fails with a bug rather than LLMUnavailable."""

    def complete(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> Completion:
        raise RuntimeError("bug in a provider adapter")


def test_an_unexpected_error_never_escapes(caplog: pytest.LogCaptureFixture) -> None:
    config = LLMProvider(name="primary", kind="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with httpx.Client() as client:
        provider = OpenAIProvider(config, client=client, key=None, timeout_seconds=1, temperature=0)
        note = summarise(BrokenRouter([provider]), result())
    assert note == LLMNote(used=False, reason="model summary failed: RuntimeError")
    assert "bug in a provider adapter" in caplog.text


@pytest.mark.parametrize("budget", [400, 1000, 4000])
def test_prompt_stays_within_budget_most_severe_first(budget: int) -> None:
    prompt = build_prompt(result(findings=200), budget_chars=budget)
    assert len(prompt) <= budget
    lines = prompt.splitlines()
    assert lines[3].startswith("Findings: 203 (1 critical, 1 medium, 1 low, 200 info)")
    assert lines[4].startswith("- [critical]")
    assert lines[-1].startswith("- … and ") and lines[-1].endswith("more findings not shown")
    shown = sum(1 for line in lines if line.startswith("- [")) + int(lines[-1].split()[3])
    assert shown == 203


def test_prompt_for_a_clean_result() -> None:
    clean = AgentResult(agent="pii_classifier", summary="No personal data found in 3 columns.")
    assert build_prompt(clean, budget_chars=4000) == (
        "Agent: pii_classifier\nSummary: No personal data found in 3 columns.\nFindings: none.")


def test_a_long_summary_is_clipped_to_half_the_budget() -> None:
    verbose = AgentResult(agent="report", summary="word " * 2000)
    prompt = build_prompt(verbose, budget_chars=1000)
    assert len(prompt) <= 1000 and "…" in prompt
