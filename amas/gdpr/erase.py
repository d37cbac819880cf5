"""Erase a data subject (GDPR Art. 17): discover, plan, then one audited transaction per store step.

``erase_subject`` is what the ``gdpr-erase`` flow and ``amas gdpr erase`` run. With ``dry_run`` it
stops after the plan and writes nothing. Otherwise it opens (or resumes) the subject's
``gdpr_requests`` row and runs the steps in plan order; each step re-selects its rows from the
store's current state, changes them set-based in its own transaction and appends an audit event
with counts only in that same transaction, so a step either happened and is audited or did not
happen. A failure marks the request failed; running the erasure again resumes it. Running it
again after it completed finds nothing, and the certificate says so.

Storage objects are deleted before the rows that point at them: a crash in between leaves a row
pointing at nothing (found and finished by the next run), never an object nobody can find.

Prefect's metadata is searched too (``amas.gdpr.prefect_mentions``): artifacts that mention the
subject are deleted, and finished flow runs whose parameters or logs do (with their task runs and
logs). When the Prefect API cannot be reached the other stores are still erased and the
certificate says Prefect was not searched, and why.

The identifier comes either as an argument (the library call, the CLI's dry run) or, for the
``gdpr-erase`` flow, sealed in a staged request (``amas.gdpr.requests.stage_request``) that the
flow names by its reference, so the identifier never becomes a Prefect flow-run parameter.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, delete, or_, select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import erasure_key, key_id, record_erasure, subject_digest
from amas.db.models import (
    AgentTask,
    Artifact,
    DataSubject,
    ErasureLedgerEntry,
    GdprRequest,
    RequestKind,
    RequestStatus,
    TaskResult,
    utcnow,
)
from amas.errors import AmasError
from amas.gdpr import requests
from amas.gdpr.discovery import (
    Discovery,
    discover,
    mention_pattern,
    mentions,
    redact_mentions,
    storage_key,
    text_needles,
)
from amas.gdpr.identifiers import By, SubjectQuery, parse_identifier
from amas.gdpr.plan import Holds, Step, holds_for, plan_erasure, summarise
from amas.retention.policy import REDACTED

if TYPE_CHECKING:
    from amas.config import Settings
    from amas.gdpr.prefect_mentions import PrefectDiscovery
    from amas.lineage import ParentRun
    from amas.retention.policy import PolicySet
    from amas.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class EraseContext:
    """What the store steps need; identifiers are kept out of ``repr``."""

    subject_ids: list[int]
    identifiers: set[str] = field(repr=False)
    key: bytes = field(repr=False)
    request_ref: str
    actor: str
    storage: Storage | None
    storage_url: str
    holds: Holds = field(default_factory=Holds)
    exports: list[str] = field(default_factory=list, repr=False)
    mentioning_tasks: list[uuid.UUID] = field(default_factory=list, repr=False)
    """Tasks of others whose parameters discovery found mentioning the subject (one scan per request)."""
    mentioning_results: list[int] = field(default_factory=list, repr=False)
    now: datetime = field(default_factory=utcnow)
    settings: Settings | None = field(default=None, repr=False)
    prefect: PrefectDiscovery | None = None
    """What discovery found in Prefect (ids); the Prefect steps delete exactly those, re-checked."""

    @property
    def needles(self) -> list[str]:
        return text_needles(self.identifiers)

    def task_filter(self) -> Any:
        """The subject's tasks that are not under a legal hold on their case."""
        linked = AgentTask.subject_id.in_(self.subject_ids)
        if self.holds.cases:
            linked = and_(linked, or_(AgentTask.case_id.is_(None), AgentTask.case_id.not_in(list(self.holds.cases))))
        return linked

    def artifact_filter(self) -> Any:
        """The subject's artifacts (by subject or by one of their tasks), less those of held cases."""
        linked = select(AgentTask.id).where(self.task_filter())
        where = or_(Artifact.subject_id.in_(self.subject_ids), Artifact.task_id.in_(linked))
        if self.holds.cases:
            where = and_(where, or_(Artifact.task_id.is_(None), Artifact.task_id.not_in(self.held_tasks())))
        return where

    def held_tasks(self) -> Any:
        return select(AgentTask.id).where(AgentTask.subject_id.in_(self.subject_ids),
                                          AgentTask.case_id.in_(list(self.holds.cases)))


# store steps: each takes the session of its transaction and returns counts ------------------------

def erase_artifacts(session: Session, ctx: EraseContext) -> dict[str, int]:
    if not ctx.subject_ids:
        return {"rows": 0, "objects": 0}
    rows = session.execute(select(Artifact.id, Artifact.uri).where(ctx.artifact_filter())).all()
    objects = 0
    for _, uri in rows:
        key = storage_key(uri, ctx.storage_url)
        if key is not None and ctx.storage is not None and ctx.storage.exists(key):
            ctx.storage.delete(key)
            objects += 1
    ids = [row_id for row_id, _ in rows]
    if ids:
        session.execute(delete(Artifact).where(Artifact.id.in_(ids)).execution_options(synchronize_session=False))
    return {"rows": len(ids), "objects": objects}


def delete_exports(session: Session, ctx: EraseContext) -> dict[str, int]:
    deleted = 0
    for key in ctx.exports:
        if ctx.storage is not None and ctx.storage.exists(key):
            ctx.storage.delete(key)
            deleted += 1
    return {"objects": deleted}


def delete_tasks(session: Session, ctx: EraseContext) -> dict[str, int]:
    if not ctx.subject_ids:
        return {"tasks": 0, "results": 0}
    linked = select(AgentTask.id).where(ctx.task_filter())
    results = session.execute(delete(TaskResult).where(TaskResult.task_id.in_(linked))
                              .execution_options(synchronize_session=False)).rowcount
    tasks = session.execute(delete(AgentTask).where(ctx.task_filter())
                            .execution_options(synchronize_session=False)).rowcount
    return {"tasks": tasks, "results": results}


def redact_task_mentions(session: Session, ctx: EraseContext) -> dict[str, int]:
    """Redact the mentions in the parameters of the tasks discovery found (each re-checked now)."""
    pattern = mention_pattern(ctx.needles)
    changed = 0
    if ctx.mentioning_tasks:
        for task in session.scalars(select(AgentTask).where(AgentTask.id.in_(ctx.mentioning_tasks))):
            if mentions(task.parameters, pattern):
                task.parameters = redact_mentions(task.parameters, pattern, REDACTED)
                changed += 1
    session.flush()
    return {"tasks": changed}


def redact_result_mentions(session: Session, ctx: EraseContext) -> dict[str, int]:
    """Redact the mentions in the results discovery found (each re-checked now)."""
    pattern = mention_pattern(ctx.needles)
    changed = 0
    if ctx.mentioning_results:
        for result in session.scalars(select(TaskResult).where(TaskResult.id.in_(ctx.mentioning_results))):
            if mentions(result.output, pattern) or mentions(result.summary, pattern):
                result.output = redact_mentions(result.output, pattern, REDACTED)
                result.summary = redact_mentions(result.summary, pattern, REDACTED)
                changed += 1
    session.flush()
    return {"results": changed}


def anonymise_subjects(session: Session, ctx: EraseContext) -> dict[str, int]:
    """Anonymise the subject rows and list every identifier in the ledger, in one transaction."""
    rows = session.scalars(select(DataSubject).where(DataSubject.id.in_(ctx.subject_ids),
                                                     DataSubject.erased_at.is_(None))).all() if ctx.subject_ids else []
    for row in rows:
        # Strategy hash_identifier: the keyed digest keeps the row unique without naming anyone.
        row.external_ref = subject_digest(row.external_ref, ctx.key)
        row.email = None
        row.display_name = None
        row.erased_at = ctx.now
        row.updated_at = ctx.now
    entries = {record_erasure(session, identifier=value, key=ctx.key, request_ref=ctx.request_ref).id
               for value in sorted(ctx.identifiers)}
    session.flush()
    return {"subjects": len(rows), "ledger_entries": len(entries)}


def delete_prefect_artifacts(session: Session, ctx: EraseContext) -> dict[str, int]:
    """Delete the Prefect artifacts discovery found that still mention the subject (the session
    only carries the audit event)."""
    from amas.gdpr.prefect_mentions import delete_artifacts

    if ctx.prefect is None or ctx.settings is None:
        return {"artifacts": 0}
    return delete_artifacts(ctx.settings, ctx.prefect.artifacts, mention_pattern(ctx.needles))


def delete_prefect_runs(session: Session, ctx: EraseContext) -> dict[str, int]:
    """Delete the finished flow runs discovery found mentioning the subject, with their logs."""
    from amas.gdpr.prefect_mentions import delete_flow_runs

    if ctx.prefect is None or ctx.settings is None:
        return {"flow_runs": 0}
    return delete_flow_runs(ctx.settings, [r.id for r in ctx.prefect.deletable_runs])


STORE_STEPS: dict[str, Callable[[Session, EraseContext], dict[str, int]]] = {
    "artifacts": erase_artifacts,
    "exports": delete_exports,
    "agent_tasks": delete_tasks,
    "task_mentions": redact_task_mentions,
    "result_mentions": redact_result_mentions,
    "data_subjects": anonymise_subjects,
    "prefect_artifacts": delete_prefect_artifacts,
    "prefect_flow_runs": delete_prefect_runs,
}
"""Plan step name -> the function that carries it out (``artifact_objects`` and ``task_results``
are done by ``artifacts`` and ``agent_tasks``; ``ledger`` by ``data_subjects``)."""
STEP_OF = {"artifact_objects": "artifacts", "task_results": "agent_tasks", "ledger": "data_subjects"}


def executable_steps(plan: list[Step]) -> list[str]:
    """The store functions to run for ``plan``, in order, each once."""
    names: list[str] = []
    for step in plan:
        if step.action == "keep" or step.store == "dataset":
            continue
        name = STEP_OF.get(step.name, step.name)
        if name in STORE_STEPS and name not in names:
            names.append(name)
    return names


# the whole request ---------------------------------------------------------------------------------

@dataclass
class ErasureOutcome:
    request_ref: str | None
    dry_run: bool
    resumed: bool
    discovery: Discovery
    plan: list[Step]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, Any] | None = None
    remaining: dict[str, int] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None
    certificate_uri: str | None = None

    @property
    def nothing_found(self) -> bool:
        return self.discovery.nothing_found


def _policies() -> PolicySet:
    from amas.retention.policy import load_policies

    return load_policies()


def search_prefect(discovery: Discovery, settings: Settings, prefetched: Any = None) -> None:
    """Attach what Prefect holds about the subject to ``discovery`` (with a note when it could not
    be searched), leaving out the flow run this request runs in. ``prefetched``: see
    ``prefect_mentions.prefetch``."""
    from prefect.runtime import flow_run

    from amas.gdpr.prefect_mentions import discover_prefect

    needles = discovery.text_needles()
    discovery.prefect = discover_prefect(settings, needles, mention_pattern(needles),
                                         exclude_runs=[flow_run.id] if flow_run.id else [], prefetched=prefetched)
    discovery.notes.append(discovery.prefect.scope)


def erase_subject(identifier: str | None = None, *, by: By | str = By.auto, dry_run: bool = False,
                  actor: str = "amas", settings: Settings | None = None, engine: Engine | None = None,
                  storage: Storage | None = None, workspace: Path | None = None, push: bool = True,
                  purge: bool = True, policies: PolicySet | None = None, now: datetime | None = None,
                  lineage_parent: ParentRun | None = None, request_ref: str | None = None,
                  prefect: bool = True) -> ErasureOutcome:
    """Erase (or with ``dry_run`` only plan erasing) everything about one subject; see the module doc.

    Give either ``identifier`` (with ``by``) or ``request_ref``, a request staged with
    ``amas.gdpr.requests.stage_request`` that holds the identifier sealed. ``prefect=False``
    leaves Prefect's metadata out (the certificate says so).
    """
    from amas.config import get_settings
    from amas.db.session import get_engine, session_scope
    from amas.storage import open_storage

    settings = settings or get_settings()
    engine = engine or get_engine(settings)
    storage = storage if storage is not None else open_storage(settings)
    key = erasure_key(settings)
    now = now or utcnow()
    policies = policies if policies is not None else _policies()
    query = _query(engine, identifier, by, request_ref, key, RequestKind.erase)

    def look() -> Discovery:
        with session_scope(engine) as session:
            return discover(session, query, key=key, storage_url=settings.storage_url, object_exists=storage.exists,
                            workspace=workspace, lineage_file=settings.lineage_file)

    if prefect:
        from amas.gdpr.prefect_mentions import prefetch

        prefetched = prefetch(settings)  # read while the store is searched
    discovery = look()
    if prefect:
        search_prefect(discovery, settings, prefetched)
        from amas.gdpr.prefect_mentions import add_pending_runs

        with session_scope(engine) as session:
            pending = requests.prefect_pending(session, sorted({requests.request_digest(query, discovery, key),
                                                                query.digest(key), *discovery.digests(key)}))
        assert discovery.prefect is not None
        add_pending_runs(settings, discovery.prefect, pending)
    else:
        discovery.notes.append("Prefect metadata was not searched: left out by the caller")
    holds = holds_for(policies, [s.external_ref for s in discovery.subjects], now.date())
    identifiers = discovery.identifiers() if not discovery.nothing_found else set()
    plan = plan_erasure(discovery, holds, len({subject_digest(v, key) for v in identifiers}))
    log.info("gdpr erase: %s", summarise(plan))
    outcome = ErasureOutcome(request_ref=None, dry_run=dry_run, resumed=False, discovery=discovery, plan=plan)
    if dry_run:
        return outcome

    digest = requests.request_digest(query, discovery, key)
    with session_scope(engine) as session:
        request, outcome.resumed = requests.open_request(session, kind=RequestKind.erase, subject_digest=digest,
                                                         key_id=key_id(key), actor=actor, now=now, ref=request_ref)
        ref = request.ref
        append_event(session, actor=actor, action="gdpr.erase.planned", entity_type="gdpr_request", entity_id=ref,
                     details={"found": {f.location: f.count for f in discovery.found},
                              "actions": summarise(plan)})
    outcome.request_ref = ref
    ctx = EraseContext(subject_ids=discovery.subject_ids, identifiers=identifiers, key=key, request_ref=ref,
                       actor=actor, storage=storage, storage_url=settings.storage_url, holds=holds,
                       exports=discovery.exports, mentioning_tasks=discovery.mentioning_tasks,
                       mentioning_results=discovery.mentioning_results, now=now, settings=settings,
                       prefect=discovery.prefect)
    try:
        for name in executable_steps(plan):
            with session_scope(engine) as session:
                counts = STORE_STEPS[name](session, ctx)
                _note_step(session, ref, name, counts, actor)
            outcome.done[name] = counts
        if "data_subjects" in outcome.done:
            from amas.gdpr.reapply import LEDGER_KEY, publish_ledger

            with session_scope(engine) as session:
                outcome.done["ledger_published"] = {"key": LEDGER_KEY,
                                                    "entries": publish_ledger(session, storage)}
        if _datasets_planned(plan, discovery) or _datasets_pending(engine, workspace, key):
            outcome.datasets = _erase_datasets(engine, ref, discovery, key, settings, storage, push=push,
                                               purge=purge, actor=actor, parent=lineage_parent)
            outcome.done["datasets"] = {"stages": len(outcome.datasets["stages_ran"]),
                                        "purged": len(outcome.datasets["purged"])}
        if discovery.prefect is not None and discovery.prefect.searched:
            with session_scope(engine) as session:
                requests.set_prefect_pending(session, requests.load(session, ref),
                                             [r.id for r in discovery.prefect.unfinished_runs])
        outcome.remaining = _remaining(engine, ctx, discovery, plan, workspace)
        from amas.gdpr.certificate import issue_erasure_certificate

        with session_scope(engine) as session:
            request = requests.load(session, ref)
            outcome.certificate, outcome.certificate_uri = issue_erasure_certificate(
                session, request, outcome, storage=storage, storage_url=settings.storage_url, actor=actor,
                key_id=key_id(key))
    except Exception as exc:
        _fail(engine, ref, exc, actor)
        raise
    return outcome


def _query(engine: Engine, identifier: str | None, by: By | str, request_ref: str | None, key: bytes,
           kind: RequestKind) -> SubjectQuery:
    """The checked identifier: given, or unsealed from the staged request ``request_ref``."""
    if request_ref is None:
        if identifier is None:
            raise AmasError("give a subject identifier or a request reference")
        return parse_identifier(identifier, by)
    from amas.db.session import session_scope

    with session_scope(engine) as session:
        return requests.unseal(session, request_ref, key, kind=kind)


def _datasets_planned(plan: list[Step], discovery: Discovery) -> bool:
    if discovery.datasets is None or not (discovery.datasets.root / "dvc.yaml").exists():
        return False
    return any(s.store == "dataset" and s.action == "rewrite" for s in plan) or any(
        s.name == "ledger" for s in plan)


def _datasets_pending(engine: Engine, workspace: Path | None, key: bytes) -> bool:
    """Whether an earlier erasure stopped before the datasets were done: the ledger lists digests
    the pipeline's erasure list lacks, or the list changed since ``dvc.lock`` last recorded the
    ``generate`` stage. Then this request finishes the job, whatever it found itself."""
    from amas.db.session import session_scope
    from amas.gdpr.erasure_list import ERASURE_LIST, read_erasure_list
    from amas.pipeline.files import md5_file

    from amas.gdpr.datasets import pending_purges

    if workspace is None or not (workspace / "dvc.yaml").exists():
        return False
    if pending_purges(workspace):
        return True  # old versions an unreachable remote still holds: try it again
    with session_scope(engine) as session:
        ledger = set(session.scalars(select(ErasureLedgerEntry.subject_digest)
                                     .where(ErasureLedgerEntry.key_id == key_id(key))))
        promised = any((r.summary or {}).get("purge_pending") for r in session.scalars(
            select(GdprRequest).where(GdprRequest.kind == RequestKind.erase)))
    if promised or ledger - read_erasure_list(workspace).digests:
        return True
    listed = workspace / ERASURE_LIST
    if not listed.exists():
        return False
    import yaml

    lock = workspace / "dvc.lock"
    document = yaml.safe_load(lock.read_text(encoding="utf-8")) if lock.exists() else {}
    deps = ((document or {}).get("stages") or {}).get("generate", {}).get("deps") or []
    recorded = next((d.get("md5") for d in deps if d.get("path") == ERASURE_LIST), None)
    return recorded != md5_file(listed)


def _note_step(session: Session, ref: str, name: str, counts: dict[str, Any], actor: str) -> None:
    request = requests.load(session, ref)
    requests.record_step(request, name, counts)
    append_event(session, actor=actor, action=f"gdpr.erase.{name}", entity_type="gdpr_request", entity_id=ref,
                 details=counts)


def _erase_datasets(engine: Engine, ref: str, discovery: Discovery, key: bytes, settings: Settings,
                    storage: Storage | None, *, push: bool, purge: bool, actor: str,
                    parent: ParentRun | None) -> dict[str, Any]:
    from amas.db.session import session_scope
    from amas.gdpr.datasets import erase_datasets, listed_people_present

    assert discovery.datasets is not None
    root = discovery.datasets.root
    with session_scope(engine) as session:
        # Every digest the ledger holds under this key: a resumed or earlier erasure that never
        # reached the datasets is finished here too.
        digests = set(session.scalars(select(ErasureLedgerEntry.subject_digest)
                                      .where(ErasureLedgerEntry.key_id == key_id(key))))
        # Purges an interrupted request promised, whichever request it was.
        pending: dict[str, str] = {}
        for earlier in session.scalars(select(GdprRequest).where(GdprRequest.kind == RequestKind.erase)):
            pending.update((earlier.summary or {}).get("purge_pending", {}))

    def remember(to_purge: dict[str, str]) -> None:
        with session_scope(engine) as session:
            requests.update_summary(requests.load(session, ref), purge_pending=to_purge)

    result = erase_datasets(root, digests=digests, key_id=key_id(key), contained=discovery.datasets.contained,
                            settings=settings, storage=storage, push=push, purge=purge, pending=pending,
                            remember=remember, parent=parent, key=key)
    details = result.as_dict()
    details["listed_people_present"] = listed_people_present(root, key)
    with session_scope(engine) as session:
        counts = {"stages": [r["stage"] for r in result.ran], "pushed": result.pushed,
                  "purged_objects": sum(1 for p in result.purged if p["cache"] == "deleted" or p["remote"] == "deleted"),
                  "listed_digests": result.digests}
        _note_step(session, ref, "datasets", counts, actor)
        if purge:
            # What is still pending (an unreachable remote) now belongs to this request alone.
            for earlier in session.scalars(select(GdprRequest).where(GdprRequest.kind == RequestKind.erase,
                                                                    GdprRequest.ref != ref)):
                if (earlier.summary or {}).get("purge_pending"):
                    requests.update_summary(earlier, purge_pending={})
            requests.update_summary(requests.load(session, ref), purge_pending=dict(result.unfinished))
    return details


def _remaining(engine: Engine, ctx: EraseContext, discovery: Discovery, plan: list[Step],
               workspace: Path | None) -> dict[str, int]:
    """Look again at every place the plan changed: rows, objects and dataset rows still there.

    Targeted, not a second discovery: the subject's rows by id and by every identifier found
    (indexes), the mentioning rows discovery found (re-checked), the objects (``exists``), and
    the datasets searched again for every identifier.
    """
    from sqlalchemy import func

    from amas.db.session import session_scope
    from amas.gdpr.discovery import discover_datasets

    changed = {s.location for s in plan if s.action not in ("keep", "record", "regenerate")}
    if not changed:
        return {}
    pattern = mention_pattern(ctx.needles)
    refs = [s.external_ref for s in discovery.subjects] + [s.email for s in discovery.subjects if s.email]
    counts: dict[str, int] = {}

    def count(statement: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)

    with session_scope(engine) as session:
        counts["data_subjects"] = count(select(DataSubject.id).where(
            DataSubject.erased_at.is_(None),
            or_(DataSubject.id.in_(ctx.subject_ids), DataSubject.external_ref.in_(refs),
                DataSubject.email.in_(refs))))
        counts["agent_tasks"] = count(select(AgentTask.id).where(ctx.task_filter())) if ctx.subject_ids else 0
        results = select(TaskResult.id).where(TaskResult.task_id.in_(discovery.tasks))
        if ctx.holds.cases:
            results = results.where(TaskResult.task_id.not_in(ctx.held_tasks()))
        counts["task_results"] = count(results)
        counts["artifacts"] = count(select(Artifact.id).where(ctx.artifact_filter())) if ctx.subject_ids else 0
        counts["agent_tasks.parameters"] = sum(
            1 for params in session.scalars(select(AgentTask.parameters).where(AgentTask.id.in_(ctx.mentioning_tasks)))
            if mentions(params, pattern))
        counts["task_results.output"] = sum(
            1 for summary, output in session.execute(select(TaskResult.summary, TaskResult.output)
                                                     .where(TaskResult.id.in_(ctx.mentioning_results)))
            if mentions(summary, pattern) or mentions(output, pattern))
    exists = ctx.storage.exists if ctx.storage is not None else (lambda _key: False)
    counts["artifact objects"] = sum(1 for key in discovery.objects if exists(key))
    counts["gdpr exports"] = sum(1 for key in ctx.exports if exists(key))
    if workspace is not None and discovery.datasets is not None:
        again = discover_datasets(workspace, ctx.identifiers)
        counts.update({f.location: f.count for f in again.found})
    left = {location: counts.get(location, 0) for location in sorted(changed)}
    if discovery.prefect is not None and ctx.settings is not None:
        from amas.gdpr.prefect_mentions import remaining

        deletes = {s.name for s in plan if s.action == "delete"}
        left.update(remaining(ctx.settings, discovery.prefect, pattern,
                              runs_deleted="prefect_flow_runs" in deletes,
                              artifacts_deleted="prefect_artifacts" in deletes))
    return left


def _fail(engine: Engine, ref: str, exc: BaseException, actor: str) -> None:
    from amas.db.session import session_scope

    message = " ".join(str(exc).split())[:500] or type(exc).__name__
    try:
        with session_scope(engine) as session:
            request = requests.load(session, ref)
            request.status = RequestStatus.failed
            request.error = f"{type(exc).__name__}: {message}" if not isinstance(exc, AmasError) else message
            append_event(session, actor=actor, action="gdpr.erase.failed", entity_type="gdpr_request", entity_id=ref,
                         details={"error_type": type(exc).__name__})
    except Exception:  # the store may be what failed; the original error is what matters
        log.exception("gdpr erase: could not record the failure of request %s", ref)


def outcome_summary(outcome: ErasureOutcome) -> dict[str, Any]:
    """What a flow returns and the CLI prints: counts, actions, references; no identifiers."""
    if outcome.certificate is not None:
        result = outcome.certificate["result"]
    else:
        result = "no data found" if outcome.nothing_found else "planned (dry run)"
    return {"request": outcome.request_ref, "dry_run": outcome.dry_run, "resumed": outcome.resumed, "result": result,
            "found": [f.as_dict() for f in outcome.discovery.found], "plan": [s.as_dict() for s in outcome.plan],
            "done": outcome.done, "datasets": outcome.datasets, "remaining": outcome.remaining,
            "certificate_uri": outcome.certificate_uri, "notes": outcome.discovery.notes}
