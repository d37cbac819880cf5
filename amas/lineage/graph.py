"""Answer "where did this dataset come from, and what was made from it" from recorded events.

Reads the OpenLineage run events AMAS wrote (the JSONL file of the ``local`` profile) and
builds a graph of runs and datasets: a run that completed with a dataset among its outputs
produced it; a run that read it is downstream of it. ``upstream`` and ``downstream`` walk
that graph breadth-first, so GDPR erasure can find every copy derived from a person's data.

Only COMPLETE events count as having produced or consumed data: a run that failed wrote
nothing anyone should trust, and a START alone says only what a run meant to read.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from amas.errors import AmasError

Direction = Literal["upstream", "downstream"]


class UnknownDataset(AmasError):
    pass


@dataclass(frozen=True, order=True)
class DatasetRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.name}"


@dataclass
class RunRecord:
    run_id: str
    job: str
    event_time: str
    inputs: dict[DatasetRef, str | None] = field(default_factory=dict)
    """Datasets read, with the version the event gave (the DVC md5), or None."""
    outputs: dict[DatasetRef, str | None] = field(default_factory=dict)


@dataclass
class EventLog:
    runs: list[RunRecord]
    skipped_lines: int


def read_events(path: Path) -> Iterator[dict[str, Any] | None]:
    """Each line's event, or None for a line that is not a JSON object (a torn last write)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                yield None
                continue
            yield event if isinstance(event, dict) else None


def _datasets(items: Iterable[Any]) -> dict[DatasetRef, str | None]:
    found: dict[DatasetRef, str | None] = {}
    for item in items or ():
        if not isinstance(item, dict) or "namespace" not in item or "name" not in item:
            continue
        version = ((item.get("facets") or {}).get("version") or {}).get("datasetVersion")
        found[DatasetRef(str(item["namespace"]), str(item["name"]))] = version
    return found


def load_runs(events: Iterable[dict[str, Any] | None]) -> EventLog:
    """Completed runs with what they read and wrote; inputs named only at START are kept too."""
    started: dict[str, dict[DatasetRef, str | None]] = {}
    runs: list[RunRecord] = []
    skipped = 0
    for event in events:
        run_id = ((event or {}).get("run") or {}).get("runId")
        job = (event or {}).get("job") or {}
        if event is None or not run_id or "name" not in job:
            skipped += 1
            continue
        kind = event.get("eventType")
        if kind == "START":
            started[run_id] = _datasets(event.get("inputs", ()))
        elif kind == "COMPLETE":
            inputs = {**started.pop(run_id, {}), **_datasets(event.get("inputs", ()))}
            runs.append(RunRecord(run_id=run_id, job=f"{job.get('namespace', '')}:{job['name']}",
                                  event_time=str(event.get("eventTime", "")), inputs=inputs,
                                  outputs=_datasets(event.get("outputs", ()))))
        elif kind in ("FAIL", "ABORT"):
            started.pop(run_id, None)
    return EventLog(runs=runs, skipped_lines=skipped)


@dataclass(frozen=True)
class Edge:
    """``source`` was read by ``run`` (a job) that wrote ``target``."""

    source: DatasetRef
    target: DatasetRef
    job: str
    run_id: str
    event_time: str
    target_version: str | None


@dataclass
class LineageGraph:
    edges: list[Edge]
    datasets: set[DatasetRef]
    """Every dataset a completed run read or wrote, including those made from no input (generators)."""

    @classmethod
    def from_log(cls, log: EventLog) -> LineageGraph:
        edges = [
            Edge(source=source, target=target, job=run.job, run_id=run.run_id, event_time=run.event_time,
                 target_version=version)
            for run in log.runs for target, version in run.outputs.items() for source in run.inputs
        ]
        datasets = {d for run in log.runs for d in (*run.inputs, *run.outputs)}
        return cls(edges=edges, datasets=datasets)

    def resolve(self, text: str) -> DatasetRef:
        """``namespace:name``, or a bare name when exactly one namespace has it."""
        known = self.datasets
        exact = [d for d in known if str(d) == text]
        if exact:
            return exact[0]
        by_name = sorted(d for d in known if d.name == text)
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise UnknownDataset(f"dataset name {text!r} is in several namespaces; give one of: "
                                 + ", ".join(str(d) for d in by_name))
        raise UnknownDataset(f"no recorded lineage mentions dataset {text!r}; "
                             f"the recorded events know {len(known)} dataset(s)")

    def walk(self, start: DatasetRef, direction: Direction, *, depth: int | None = None) -> list[tuple[int, Edge]]:
        """Edges reachable from ``start``, breadth-first, each with its distance (1 = direct)."""
        index: dict[DatasetRef, list[Edge]] = defaultdict(list)
        for edge in self.edges:
            index[edge.target if direction == "upstream" else edge.source].append(edge)
        seen_edges: set[Edge] = set()
        seen_nodes = {start}
        found: list[tuple[int, Edge]] = []
        queue = deque([(start, 0)])
        while queue:
            node, distance = queue.popleft()
            if depth is not None and distance >= depth:
                continue
            for edge in sorted(index[node], key=lambda e: (e.event_time, str(e.source), str(e.target))):
                if edge in seen_edges:
                    continue
                seen_edges.add(edge)
                found.append((distance + 1, edge))
                nxt = edge.source if direction == "upstream" else edge.target
                if nxt not in seen_nodes:
                    seen_nodes.add(nxt)
                    queue.append((nxt, distance + 1))
        return found


def render_text(start: DatasetRef, direction: Direction, found: list[tuple[int, Edge]]) -> str:
    if not found:
        return f"{start}: nothing recorded {direction}"
    lines = [f"{start} — {direction}:"]
    for distance, edge in found:
        other = edge.source if direction == "upstream" else edge.target
        via = f"{edge.job} run {edge.run_id} at {edge.event_time}"
        version = f" (version {edge.target_version})" if direction == "downstream" and edge.target_version else ""
        arrow = "<-" if direction == "upstream" else "->"
        lines.append(f"{'  ' * distance}{arrow} {other}{version}  via {via}")
    return "\n".join(lines)


def render_json(start: DatasetRef, direction: Direction, found: list[tuple[int, Edge]]) -> str:
    return json.dumps({
        "dataset": str(start), "direction": direction,
        "edges": [{"distance": d, "source": str(e.source), "target": str(e.target), "job": e.job,
                   "run_id": e.run_id, "event_time": e.event_time, "target_version": e.target_version}
                  for d, e in found],
    }, indent=2)


def render_dot(start: DatasetRef, direction: Direction, found: list[tuple[int, Edge]]) -> str:
    def q(text: str) -> str:
        return json.dumps(text)  # a DOT double-quoted ID escapes like a JSON string

    nodes = {start} | {e.source for _, e in found} | {e.target for _, e in found}
    lines = [f"digraph lineage {{  // {direction} of {start}", "  rankdir=LR;"]
    for node in sorted(nodes):
        style = ", style=bold" if node == start else ""
        lines.append(f"  {q(str(node))} [shape=box{style}];")
    for _, edge in found:
        lines.append(f"  {q(str(edge.source))} -> {q(str(edge.target))} [label={q(edge.job)}];")
    lines.append("}")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "dot": render_dot}
