"""Agents found by name through the ``amas.agents`` entry-point group.

The engine never imports ``agents`` modules by name: each agent module declares itself in
``pyproject.toml`` under ``[project.entry-points."amas.agents"]`` and is loaded from here.
An agent is a plain object with a ``name``, a ``description``, a pydantic ``Input`` model and
``run(params, context) -> AgentResult``; it must not import Prefect.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Engine

from amas.config import Settings
from amas.errors import AmasError
from amas.storage import Storage

ENTRY_POINT_GROUP = "amas.agents"


@dataclass(frozen=True)
class AgentContext:
    """What an agent may touch: settings, the store's engine, object storage."""

    settings: Settings
    engine: Engine
    storage: Storage


class AgentResult(BaseModel):
    summary: str = Field(description="One paragraph a person reads first.")
    findings: dict[str, Any] = Field(default_factory=dict, description="Structured results.")
    reads: list[str] = Field(default_factory=list, description="Datasets or objects the agent read (for lineage).")
    writes: list[str] = Field(default_factory=list, description="Datasets or objects the agent wrote (for lineage).")
    llm_model: str | None = Field(None, description="The model that helped, or None when none was used.")


class Agent(Protocol):
    name: str
    description: str
    Input: type[BaseModel]

    def run(self, params: BaseModel, context: AgentContext) -> AgentResult: ...


class UnknownAgent(AmasError):
    pass


@functools.cache
def load_agents() -> dict[str, Agent]:
    """Every registered agent by name (loaded once per process)."""
    agents: dict[str, Agent] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        agent = entry.load()
        if agent.name != entry.name:
            raise AmasError(f"agent entry point {entry.name!r} loads an agent named {agent.name!r}; make them match")
        agents[agent.name] = agent
    return dict(sorted(agents.items()))


def get_agent(name: str) -> Agent:
    agents = load_agents()
    try:
        return agents[name]
    except KeyError:
        raise UnknownAgent(f"unknown agent {name!r}; valid agents: {', '.join(agents) or '(none registered)'}") from None
