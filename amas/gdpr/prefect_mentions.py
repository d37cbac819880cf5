"""Mentions of a data subject in Prefect's own metadata: flow runs, their logs, and artifacts.

Everything goes through the Prefect client API (``amas.retention.prefect_meta``), never the
server's database. What is searched, and how completely:

- flow runs: every flow run's ``parameters``, ``name``, ``tags`` and state message, page by page
  (the API cannot filter on parameters). The run doing the erasure is left out.
- logs: the server's log text search (``LogFilter.text``: a case-insensitive substring match on
  message and logger name, Prefect 3.9) for each identifier, at most ``MAX_LOG_LINES`` candidate
  lines per request; each candidate is then confirmed as a whole-token match, as in the store.
  The certificate states this bound, and says when it was reached.
- artifacts: every artifact's ``data`` (markdown text or table JSON), ``description`` and ``key``.

Only finished flow runs are deleted (as the retention policy does): the server deletes their
task runs and, shortly after, their logs. A run that has not finished, and a log line whose flow
run no longer exists or that has none, cannot be erased through the API; the plan says so.
An unreachable API is not an error: discovery records why Prefect was not searched.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amas.gdpr.discovery import Found, mentions

if TYPE_CHECKING:
    from amas.config import Settings

log = logging.getLogger(__name__)

MAX_LOG_LINES = 10_000
"""The most candidate log lines read per request (the text search's hits, before confirming)."""
QUERY_LENGTH = 200
"""Prefect's limit on a log text-search query."""
LOG_PURGE_WAIT = 10.0
"""Seconds to wait for the server to delete the logs of deleted flow runs before counting what is left."""
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

RUN_FIELDS = ("parameters", "name", "tags", "state message")
ARTIFACT_FIELDS = ("data", "description", "key")


@dataclass(frozen=True)
class PrefectRun:
    """A flow run that mentions the subject: where, and whether it can be deleted."""

    id: str
    state: str
    fields: tuple[str, ...]
    """Which of ``RUN_FIELDS`` mention the subject (empty: only its logs do)."""
    log_lines: int = 0

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class PrefectDiscovery:
    """What Prefect holds about the subject. Ids and counts; the mentions themselves are in
    ``records`` (for the Art. 15 export), which stays out of ``repr``."""

    searched: bool
    api: str | None = None
    reason: str | None = None
    """Why Prefect was not searched (when ``searched`` is False)."""
    runs: list[PrefectRun] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    log_lines: int = 0
    unattached_log_lines: int = 0
    """Mentioning log lines without a flow run (or whose run is gone): the API cannot delete them."""
    scanned: dict[str, int] = field(default_factory=dict)
    log_limit_reached: bool = False
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def deletable_runs(self) -> list[PrefectRun]:
        return [r for r in self.runs if r.finished]

    @property
    def unfinished_runs(self) -> list[PrefectRun]:
        return [r for r in self.runs if not r.finished]

    @property
    def scope(self) -> str:
        """What was searched, in one sentence (the bound the certificate and the dry run state)."""
        if not self.searched:
            return f"Prefect metadata was not searched: {self.reason}"
        text = (f"searched {self.scanned.get('flow_runs', 0)} flow runs (parameters, name, tags, state message) and "
                f"{self.scanned.get('artifacts', 0)} artifacts (data, description, key) at {self.api}; logs through "
                f"the server's text search, at most {MAX_LOG_LINES:,} candidate lines, "
                f"{self.scanned.get('log_candidates', 0)} read")
        if self.log_limit_reached:
            text += " (limit reached: older log lines were not checked; run the request again after this one)"
        return text

    def found(self) -> list[Found]:
        if not self.searched:
            return []
        by_fields = sum(1 for r in self.runs if r.fields)
        rows = [Found("prefect", "prefect flow runs", by_fields,
                      "flow runs whose parameters, name, tags or state message mention the subject's email or "
                      "external_ref", ("parameters",)),
                Found("prefect", "prefect logs", self.log_lines,
                      "log lines that mention the subject's email or external_ref", ("message",)),
                Found("prefect", "prefect artifacts", len(self.artifacts),
                      "artifacts whose data, description or key mention the subject's email or external_ref",
                      ("data", "description"))]
        return [f for f in rows if f.count]

    def as_dict(self) -> dict[str, Any]:
        """For certificates and manifests: counts and the scope, no identifiers."""
        return {"searched": self.searched, "api": self.api, "reason": self.reason, "scope": self.scope,
                "scanned": self.scanned, "log_limit": MAX_LOG_LINES, "log_limit_reached": self.log_limit_reached,
                "flow_runs": len(self.runs), "flow_runs_by_parameters": sum(1 for r in self.runs if r.fields),
                "flow_runs_by_logs": sum(1 for r in self.runs if r.log_lines),
                "flow_runs_unfinished": len(self.unfinished_runs), "log_lines": self.log_lines,
                "log_lines_unattached": self.unattached_log_lines, "artifacts": len(self.artifacts)}


def not_searched(reason: str, api: str | None = None) -> PrefectDiscovery:
    return PrefectDiscovery(searched=False, api=api, reason=reason)


# pure helpers ------------------------------------------------------------------------------------

def _quoted(term: str) -> str:
    return '"' + term.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_queries(needles: Iterable[str], limit: int = QUERY_LENGTH) -> list[str]:
    """Text-search queries (space-separated quoted phrases: any of them matches) covering every
    needle, each at most ``limit`` characters. A needle too long for one query is searched by its
    longest prefix that fits: a candidate, confirmed afterwards against the whole needle."""
    queries: list[str] = []
    current = ""
    for needle in sorted(set(needles)):
        phrase = _quoted(needle)
        while len(phrase) > limit:
            needle = needle[:-1]
            phrase = _quoted(needle)
        if current and len(current) + 1 + len(phrase) <= limit:
            current += " " + phrase
        else:
            if current:
                queries.append(current)
            current = phrase
    if current:
        queries.append(current)
    return queries


def _with_json(value: Any) -> Any:
    """``value``, and if it is JSON text (a table artifact's data), what it decodes to as well:
    JSON escapes non-ASCII characters, so the text alone could hide a mention."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return [value, json.loads(value)]
        except ValueError:
            return value
    return value


def mentioned_fields(values: Sequence[tuple[str, Any]], pattern: re.Pattern[str] | None) -> tuple[str, ...]:
    """The names of the ``(name, value)`` pairs whose value mentions the subject."""
    return tuple(name for name, value in values if mentions(_with_json(value), pattern))


def run_values(run: Any) -> list[tuple[str, Any]]:
    state = getattr(run, "state", None)
    return [("parameters", run.parameters), ("name", run.name), ("tags", list(run.tags or [])),
            ("state message", state.message if state is not None else None)]


def artifact_values(artifact: Any) -> list[tuple[str, Any]]:
    return [("data", artifact.data), ("description", artifact.description), ("key", artifact.key)]


def _state(run: Any) -> str:
    return run.state_type.value if run.state_type is not None else "UNKNOWN"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# discovery ---------------------------------------------------------------------------------------

def prefetch(settings: Settings) -> Future[tuple[list[Any], list[Any]] | None]:
    """Start reading every flow run and artifact in a thread; None when there is no API.

    Neither depends on the subject, and reading them is the Prefect server's work (about 0.6 ms
    per flow run), so the caller overlaps it with the store's discovery, which finds the
    identifiers to match them against.
    """
    # Import here first what either thread uses: two threads importing Prefect's modules at once
    # can trip Python's import-lock deadlock detection.
    import prefect.client.orchestration
    import prefect.client.schemas.filters
    import prefect.client.schemas.sorting
    import prefect.exceptions
    import prefect.runtime  # noqa: F401

    import amas.retention.prefect_meta  # noqa: F401
    import amas.stack  # noqa: F401

    executor = ThreadPoolExecutor(1, thread_name_prefix="gdpr-prefect-prefetch")
    future = executor.submit(_read_all, settings)
    executor.shutdown(wait=False)
    return future


def _read_all(settings: Settings) -> tuple[list[Any], list[Any]] | None:
    from amas.retention.prefect_meta import _artifacts, flow_runs, reachable_client

    with reachable_client(settings) as (client, _):
        if client is None:
            return None
        return list(flow_runs(client)), list(_artifacts(client))


def discover_prefect(settings: Settings, needles: Sequence[str], pattern: re.Pattern[str] | None, *,
                     exclude_runs: Iterable[str] = (),
                     prefetched: Future[tuple[list[Any], list[Any]] | None] | None = None) -> PrefectDiscovery:
    """Search Prefect for the subject; an unreachable or failing API gives ``not_searched(why)``.

    ``prefetched``: the flow runs and artifacts ``prefetch`` is reading (else they are read here).
    """
    import httpx

    from amas.retention.prefect_meta import reachable_client

    if not needles or pattern is None:
        return not_searched("no identifier long enough to search for in free text")
    with reachable_client(settings) as (client, why):
        if client is None:
            return not_searched(why or "no Prefect API")
        api = str(client.api_url).rstrip("/")
        try:
            listed = prefetched.result() if prefetched is not None else None
            found = _search(client, needles, pattern, {str(r) for r in exclude_runs if r}, listed)
        except httpx.HTTPError as exc:
            return not_searched(f"the Prefect API at {api} failed: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}", api)
        found.api = api
        return found


def _search(client: Any, needles: Sequence[str], pattern: re.Pattern[str], exclude: set[str],
            listed: tuple[list[Any], list[Any]] | None = None) -> PrefectDiscovery:
    from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch
    from prefect.exceptions import ObjectNotFound

    from amas.retention.prefect_meta import _artifacts, flow_runs, log_lines

    found = PrefectDiscovery(searched=True)
    runs: dict[str, PrefectRun] = {}
    run_records: dict[str, dict[str, Any]] = {}
    scanned_runs = 0
    for run in (listed[0] if listed is not None else flow_runs(client)):
        scanned_runs += 1
        run_id = str(run.id)
        if run_id in exclude:
            continue
        fields = mentioned_fields(run_values(run), pattern)
        if fields:
            runs[run_id] = PrefectRun(run_id, _state(run), fields)
            run_records[run_id] = _run_record(run, fields)

    log_records: list[dict[str, Any]] = []
    per_run: dict[str, int] = {}
    candidates = 0
    seen: set[str] = set()
    for query in log_queries(needles):
        for line in log_lines(client, LogFilter(text=LogFilterTextSearch(query=query)), MAX_LOG_LINES - candidates):
            candidates += 1
            line_id = str(line.id)
            if line_id in seen or not (mentions(line.message, pattern) or mentions(line.name, pattern)):
                continue
            seen.add(line_id)
            run_id = str(line.flow_run_id) if line.flow_run_id else None
            if run_id in exclude:
                continue
            log_records.append({"id": line_id, "timestamp": _iso(line.timestamp), "level": line.level,
                                "logger": line.name, "message": line.message, "flow_run_id": run_id,
                                "task_run_id": str(line.task_run_id) if line.task_run_id else None})
            if run_id is None:
                found.unattached_log_lines += 1
            else:
                per_run[run_id] = per_run.get(run_id, 0) + 1
        if candidates >= MAX_LOG_LINES:
            found.log_limit_reached = True
            break
    found.log_lines = len(log_records)
    for run_id, count in per_run.items():
        if run_id in runs:
            known = runs[run_id]
            runs[run_id] = PrefectRun(run_id, known.state, known.fields, count)
            continue
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:  # deleted already; the server removes its logs in the background
            found.unattached_log_lines += count
            continue
        runs[run_id] = PrefectRun(run_id, _state(run), (), count)
        run_records[run_id] = _run_record(run, ())

    artifacts: list[dict[str, Any]] = []
    scanned_artifacts = 0
    for artifact in (listed[1] if listed is not None else _artifacts(client)):
        scanned_artifacts += 1
        fields = mentioned_fields(artifact_values(artifact), pattern)
        if fields:
            found.artifacts.append(str(artifact.id))
            artifacts.append({"id": str(artifact.id), "key": artifact.key, "type": artifact.type,
                              "description": artifact.description, "data": artifact.data,
                              "created": _iso(artifact.created),
                              "flow_run_id": str(artifact.flow_run_id) if artifact.flow_run_id else None,
                              "mentioned_in": list(fields)})
    found.runs = sorted(runs.values(), key=lambda r: r.id)
    for record in run_records.values():
        record["log_lines_mentioning"] = per_run.get(record["id"], 0)
    found.scanned = {"flow_runs": scanned_runs, "artifacts": scanned_artifacts, "log_candidates": candidates}
    found.records = {"flow_runs": [run_records[r.id] for r in found.runs], "logs": log_records,
                     "artifacts": artifacts}
    return found


def _run_record(run: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {"id": str(run.id), "name": run.name, "flow_id": str(run.flow_id), "state": _state(run),
            "start_time": _iso(run.start_time), "parameters": run.parameters, "tags": list(run.tags or []),
            "mentioned_in": list(fields)}


def add_pending_runs(settings: Settings, found: PrefectDiscovery, ids: Iterable[str]) -> None:
    """Add the flow runs an earlier request could not delete (they had not finished), if they still
    exist: after the subject's row is anonymised, only their ids lead back to them."""
    import httpx
    from prefect.exceptions import ObjectNotFound

    from amas.retention.prefect_meta import reachable_client

    known = {r.id for r in found.runs}
    wanted = sorted(set(ids) - known)
    if not wanted or not found.searched:
        return
    with reachable_client(settings) as (client, _):
        if client is None:
            return
        for run_id in wanted:
            try:
                run = client.read_flow_run(run_id)
            except (ObjectNotFound, httpx.HTTPError):
                continue
            found.runs.append(PrefectRun(run_id, _state(run), ("earlier request",)))
    found.runs.sort(key=lambda r: r.id)


# erasure -----------------------------------------------------------------------------------------

def delete_artifacts(settings: Settings, ids: Sequence[str], pattern: re.Pattern[str] | None) -> dict[str, int]:
    """Delete the artifacts discovery found that still mention the subject."""
    return _delete(settings, "artifacts", ids, pattern)


def delete_flow_runs(settings: Settings, ids: Sequence[str]) -> dict[str, int]:
    """Delete the finished flow runs discovery found (the server deletes task runs and logs with them)."""
    return _delete(settings, "flow_runs", ids, None)


def _delete(settings: Settings, kind: str, ids: Sequence[str], pattern: re.Pattern[str] | None) -> dict[str, int]:
    import uuid

    from amas.retention.prefect_meta import delete_each, reachable_client

    if not ids:
        return {kind: 0, "gone": 0, "failed": 0, "unreachable": 0}
    with reachable_client(settings) as (client, why):
        if client is None:
            log.warning("gdpr erase: %d Prefect %s not deleted: %s", len(ids), kind, why)
            return {kind: 0, "gone": 0, "failed": 0, "unreachable": len(ids)}
        targets = [uuid.UUID(i) for i in ids]
        if kind == "artifacts":
            present = {str(a.id): a for a in _read_artifacts(client, targets)}
            # Re-checked now: an artifact that no longer mentions the subject is left alone.
            targets = [t for t in targets if str(t) in present and
                       mentioned_fields(artifact_values(present[str(t)]), pattern)]
            gone = len(ids) - len(present)
            outcome = delete_each(client.delete_artifact, targets)
        else:
            outcome = delete_each(client.delete_flow_run, targets)
            gone = 0
    for failure in outcome["failed"]:
        log.warning("gdpr erase: could not delete Prefect %s %s", kind, failure)
    return {kind: len(outcome["deleted"]), "gone": gone + len(outcome["gone"]), "failed": len(outcome["failed"]),
            "unreachable": 0}


def _read_artifacts(client: Any, ids: Sequence[Any]) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from amas.retention.prefect_meta import PAGE

    found: list[Any] = []
    for start in range(0, len(ids), PAGE):
        batch = list(ids[start:start + PAGE])
        found.extend(client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=batch)),
                                           limit=PAGE))
    return found


def remaining(settings: Settings, discovery: PrefectDiscovery, pattern: re.Pattern[str] | None, *,
              runs_deleted: bool, artifacts_deleted: bool) -> dict[str, int]:
    """Look again: deleted flow runs still there, their log lines still there (after giving the
    server up to ``LOG_PURGE_WAIT`` seconds), and artifacts that still mention the subject.
    -1 means Prefect could not be asked."""
    import uuid

    import httpx
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from amas.retention.prefect_meta import reachable_client

    wanted = {}
    if runs_deleted:
        wanted.update({"prefect flow runs": 0, "prefect logs": 0})
    if artifacts_deleted:
        wanted["prefect artifacts"] = 0
    if not wanted:
        return {}
    run_ids = [uuid.UUID(r.id) for r in discovery.deletable_runs]
    with reachable_client(settings) as (client, _):
        if client is None:
            return dict.fromkeys(wanted, -1)
        try:
            if runs_deleted and run_ids:
                wanted["prefect flow runs"] = client.count_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)))
                wanted["prefect logs"] = _wait_for_logs(client, LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
            if artifacts_deleted:
                ids = [uuid.UUID(a) for a in discovery.artifacts]
                wanted["prefect artifacts"] = sum(1 for a in _read_artifacts(client, ids)
                                                  if mentioned_fields(artifact_values(a), pattern))
        except httpx.HTTPError:
            log.warning("gdpr erase: could not check Prefect afterwards", exc_info=True)
            return dict.fromkeys(wanted, -1)
    return wanted


def _wait_for_logs(client: Any, log_filter: Any) -> int:
    """Log lines left for the deleted runs; the server deletes them in a background task."""
    deadline = time.monotonic() + LOG_PURGE_WAIT
    while True:
        left = len(client.read_logs(log_filter=log_filter, limit=200))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)
