"""Language-model router: OpenAI-compatible and Ollama providers in priority order.

``providers`` holds one HTTP client per API kind and classifies every failure as transient
(retry, then fail over) or permanent (fail over at once); ``breaker`` keeps a circuit per
provider; ``router`` composes retries, circuits, failover and token/cost accounting in one
place; ``enrich`` turns an agent's deterministic result into a short model-written note and
never lets a model failure reach the agent's result.
"""

from __future__ import annotations

import hashlib
import threading

from amas.config import Settings
from amas.llm.router import Attempt, Completion, LLMRouter, LLMUnavailable, ProviderUsage

__all__ = ["Attempt", "Completion", "LLMRouter", "LLMUnavailable", "ProviderUsage", "router_for"]

_routers: dict[str, LLMRouter | None] = {}
_routers_lock = threading.Lock()


def router_for(settings: Settings) -> LLMRouter | None:
    """The process's router for these LLM settings, built once and shared.

    Circuit-breaker state lives in the router, so every task of a flow run (and every flow
    run a worker process runs) must share one to remember which providers are down.
    """
    # SecretStr dumps as asterisks: add a digest of the keys so a changed key builds a new router.
    secrets = "".join(p.api_key.get_secret_value() if p.api_key else "" for p in settings.llm.providers)
    key = settings.llm.model_dump_json() + hashlib.sha256(secrets.encode()).hexdigest()
    with _routers_lock:
        if key not in _routers:
            _routers[key] = LLMRouter.from_settings(settings)
        return _routers[key]
