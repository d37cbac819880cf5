"""Agents found by name through the ``amas.agents`` entry-point group, and the contract they keep.

The engine never imports ``agents`` modules by name: each agent module declares itself in
``pyproject.toml`` under ``[project.entry-points."amas.agents"]`` and is loaded from here.

An agent is a plain object with a ``name``, a ``description``, a pydantic ``Input`` model, an
``Output`` model (a subclass of ``AgentResult`` with the agent's own typed fields) and
``run(params, context) -> Output``. It does its whole job offline and deterministically; it
must not import Prefect. It records what it read and wrote (``reads``/``writes``) for lineage
and stores what it wants kept as evidence through ``context.put_evidence``. The runner
(``amas.agent_tasks``) validates the input, persists the result and, when a model is
configured, adds an LLM-written summary in ``llm``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from amas.config import Settings
from amas.errors import AmasError
from amas.storage import Storage

ENTRY_POINT_GROUP = "amas.agents"


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}


def worst_severity(severities: Iterable[Severity]) -> Severity | None:
    """The most severe of ``severities``, or None when there are none."""
    return max(severities, key=SEVERITY_ORDER.__getitem__, default=None)


class Finding(BaseModel):
    """One thing a person should know, ranked by severity."""

    severity: Severity = Field(description="info < low < medium < high < critical.")
    title: str = Field(description="One line.")
    detail: str = Field("", description="Why it matters, what to do.")
    location: str | None = Field(None, description="Where: a file:line, a column, a header, a URL.")


def ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Findings most severe first; equal severities keep their order (the sort is stable)."""
    return sorted(findings, key=lambda f: -SEVERITY_ORDER[f.severity])


class Evidence(BaseModel):
    """An object the agent stored in object storage, with its checksum, so it can be shown later."""

    key: str = Field(description="Storage key, under evidence/<task id>/.")
    sha256: str
    size: int
    media_type: str = "application/octet-stream"
    description: str = ""


class LLMNote(BaseModel):
    """Whether a language model helped, and what it cost. ``used=False`` says why not."""

    used: bool = False
    reason: str = Field("no model configured", description="Why no model was used, or 'ok'.")
    provider: str | None = None
    model: str | None = None
    text: str | None = Field(None, description="The model-written summary.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class AgentResult(BaseModel):
    """What every agent returns; each agent's ``Output`` subclasses it with its typed fields."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(description="The agent's registry name.")
    summary: str = Field(description="One paragraph a person reads first; deterministic, no model.")
    findings: list[Finding] = Field(default_factory=list, description="Ranked findings.")
    evidence: list[Evidence] = Field(default_factory=list, description="Objects stored as evidence.")
    reads: list[str] = Field(default_factory=list, description="Datasets, files or URLs the agent read (for lineage).")
    writes: list[str] = Field(default_factory=list, description="Datasets or objects the agent wrote (for lineage).")
    llm: LLMNote = Field(default_factory=LLMNote, description="The model-written summary, when a model was configured.")

    def worst(self) -> Severity | None:
        return worst_severity(f.severity for f in self.findings)


@dataclass(frozen=True)
class AgentContext:
    """What an agent may touch: settings, the store's engine, object storage, who asked, for which task."""

    settings: Settings
    engine: Engine
    storage: Storage
    task_id: uuid.UUID | None = None
    actor: str = "amas"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Earlier results by task id, for agents that build on others (``report``)."""

    @property
    def evidence_prefix(self) -> str:
        return f"evidence/{self.task_id or 'adhoc'}"

    def put_evidence(self, name: str, data: bytes | BinaryIO, *, media_type: str = "application/octet-stream",
                     description: str = "") -> Evidence:
        """Store ``data`` under ``evidence/<task id>/<name>`` and return its ``Evidence`` record."""
        info = self.storage.put(f"{self.evidence_prefix}/{name}", data)  # put() always hashes what it stored
        return Evidence(key=info.key, sha256=info.sha256, size=info.size, media_type=media_type,
                        description=description)


class Agent(Protocol):
    name: str
    description: str
    Input: type[BaseModel]
    Output: type[AgentResult]

    def run(self, params: Any, context: AgentContext) -> AgentResult: ...


class UnknownAgent(AmasError):
    pass


class AgentInputError(AmasError):
    """The input names something the agent cannot use (a missing file, an unreadable dataset,
    an unreachable URL). Permanent: the runner does not retry it; the message names the field."""

    exit_code = 2


def _load(entry: Any) -> Agent:
    agent = entry.load()
    if agent.name != entry.name:
        raise AmasError(f"agent entry point {entry.name!r} loads an agent named {agent.name!r}; make them match")
    return agent


def agent_names() -> list[str]:
    """Registered agent names, without importing any agent (their imports are heavy)."""
    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)})


def resolve_input_path(raw: str, field: str, wanted: str) -> tuple[Path, os.stat_result]:
    """An existing path named by an agent's input field, resolved, with its ``stat``.

    ``AgentInputError`` otherwise, naming ``field`` and ``wanted`` (what the user should give).
    """
    if not raw.strip():
        raise AgentInputError(f"{field}: is empty; give {wanted}")
    given = Path(raw).expanduser()
    try:
        path = given.resolve(strict=True)
        return path, path.stat()
    except FileNotFoundError:
        raise AgentInputError(f"{field}: {given.absolute()} does not exist; give {wanted}") from None
    except OSError as exc:
        raise AgentInputError(f"{field}: cannot read {given.absolute()}: {exc.strerror or exc}") from None


@functools.cache
def load_agents() -> dict[str, Agent]:
    """Every registered agent by name (loaded once per process)."""
    return {entry.name: _load(entry) for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)}


@functools.cache
def get_agent(name: str) -> Agent:
    """One agent by name, importing only its module; ``UnknownAgent`` lists the valid names."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return _load(entry)
    raise UnknownAgent(f"unknown agent {name!r}; valid agents: {', '.join(agent_names()) or '(none registered)'}")
