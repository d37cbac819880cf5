"""A short model-written summary of an agent's deterministic result, or the reason there is none.

The prompt carries only what the agent already wrote for people: its name, its summary and its
findings, most severe first, cut to a character budget. Evidence contents never leave the
store (only how many objects were kept). ``summarise`` never raises: a missing model or a
failed one becomes ``LLMNote(used=False, reason=...)`` and the agent's result stands as it is.
"""

from __future__ import annotations

import logging
from collections import Counter

from amas.llm.router import LLMRouter, LLMUnavailable
from amas.registry import SEVERITY_ORDER, AgentResult, LLMNote, Severity

logger = logging.getLogger("amas.llm")

SYSTEM_PROMPT = (
    "You summarise the result of an automated analysis for a busy engineer. Write at most four plain "
    "sentences: what was examined, the most serious problems, and what to do first. Use only the facts "
    "given; do not invent findings, numbers or locations. No headings, no lists."
)
_LINE_CHARS = 300


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def build_prompt(result: AgentResult, *, budget_chars: int) -> str:
    """The user message: agent, summary, severity counts and the top findings, within ``budget_chars``."""
    head = [f"Agent: {result.agent}", f"Summary: {_clip(result.summary, budget_chars // 2)}"]
    if result.evidence:
        head.append(f"Evidence objects stored: {len(result.evidence)}.")
    ranked = sorted(result.findings, key=lambda f: SEVERITY_ORDER[f.severity], reverse=True)
    if ranked:
        counts = Counter(f.severity for f in ranked)
        by_severity = ", ".join(f"{counts[s]} {s.value}" for s in reversed(Severity) if counts[s])
        head.append(f"Findings: {len(ranked)} ({by_severity}), most severe first:")
    else:
        head.append("Findings: none.")
    lines = head[:]
    used = sum(len(line) + 1 for line in lines)
    for index, finding in enumerate(ranked):
        line = f"- [{finding.severity.value}] {finding.title}"
        if finding.location:
            line += f" (at {finding.location})"
        if finding.detail:
            line += f": {finding.detail}"
        line = _clip(line, _LINE_CHARS)
        rest = len(ranked) - index
        # Keep room for the line saying how many were left out.
        if used + len(line) + 1 + 40 > budget_chars:
            lines.append(f"- … and {rest} more finding{'s' if rest > 1 else ''} not shown")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def summarise(router: LLMRouter | None, result: AgentResult, *, budget_chars: int | None = None) -> LLMNote:
    """Ask the router for a plain-language summary of ``result``; never raises."""
    if router is None:
        return LLMNote(used=False, reason="no model configured")
    try:
        prompt = build_prompt(result, budget_chars=budget_chars or router.prompt_budget_chars)
        completion = router.complete([{"role": "system", "content": SYSTEM_PROMPT},
                                      {"role": "user", "content": prompt}])
    except LLMUnavailable as exc:
        reason = str(exc).removeprefix("no language model answered: ")
        return LLMNote(used=False, reason=f"all providers failed: {reason}")
    except Exception as exc:
        # The deterministic result must survive any model-side bug; the traceback goes to the log.
        logger.exception("llm summary of agent %s failed", result.agent)
        return LLMNote(used=False, reason=f"model summary failed: {type(exc).__name__}")
    return LLMNote(used=True, reason="ok", provider=completion.provider, model=completion.model,
                   text=completion.text, prompt_tokens=completion.prompt_tokens,
                   completion_tokens=completion.completion_tokens, cost_usd=completion.cost_usd)
