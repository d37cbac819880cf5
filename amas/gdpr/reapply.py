"""The restore hook: erase again everyone the erasure ledger lists whose data a restore brought back.

A backup taken before an erasure still holds the person, and its own ledger does not list them.
So the ledger also lives outside the store: after every erasure ``publish_ledger`` writes it
(digests only) to ``gdpr/ledger.json`` in object storage, and ``erasures/subjects.json`` in git
holds the same digests. After restoring, the restore calls ``reapply_ledger(session, key,
storage=...)``: the published entries the restored ledger lacks are merged in, then every
``data_subjects`` row not yet erased whose external_ref or email digest is listed goes through
the same store steps as ``amas gdpr erase`` (artifacts, tasks and results deleted, mentions
redacted, the row anonymised), in the caller's transaction. ``ledger_violations`` is the check
restore verification runs: it must be 0.

Cost: the ledger holds digests, so finding the people means hashing each live subject's
identifiers once (HMAC-SHA256, ~1 µs each): a streaming pass over ``data_subjects``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import key_id, subject_digest
from amas.db.models import DataSubject, ErasureLedgerEntry, utcnow
from amas.gdpr.discovery import discover
from amas.gdpr.identifiers import By, SubjectQuery

if TYPE_CHECKING:
    from amas.retention.policy import PolicySet
    from amas.storage import Storage

BATCH = 10_000
LEDGER_KEY = "gdpr/ledger.json"


def ledger_entries(session: Session) -> list[dict[str, Any]]:
    """The ledger in position order, as plain values (digests, key ids, request refs, times)."""
    return [{"position": e.id, "subject_digest": e.subject_digest, "key_id": e.key_id, "request_ref": e.request_ref,
             "requested_at": e.requested_at.isoformat(),
             "completed_at": e.completed_at.isoformat() if e.completed_at else None}
            for e in session.scalars(select(ErasureLedgerEntry).order_by(ErasureLedgerEntry.id))]


def publish_ledger(session: Session, storage: Storage) -> int:
    """Write the whole ledger to ``gdpr/ledger.json`` (one atomic put); the number of entries."""
    entries = ledger_entries(session)
    document = {"format": 1, "entries": entries,
                "about": "AMAS erasure ledger: keyed digests of erased subjects, no identifiers. A restore merges "
                         "it into the restored store and re-applies it (amas.gdpr.reapply)."}
    storage.put(LEDGER_KEY, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return len(entries)


def published_ledger(storage: Storage) -> list[dict[str, Any]]:
    if not storage.exists(LEDGER_KEY):
        return []
    document = json.loads(storage.get(LEDGER_KEY))
    return list(document.get("entries") or [])


def merge_ledger(session: Session, entries: Iterable[dict[str, Any]]) -> int:
    """Add the entries this store's ledger lacks (by digest); how many were added."""
    present = set(session.scalars(select(ErasureLedgerEntry.subject_digest)))
    added = 0
    for entry in sorted(entries, key=lambda e: e.get("position") or 0):
        if entry["subject_digest"] in present:
            continue
        completed = entry.get("completed_at")
        session.add(ErasureLedgerEntry(subject_digest=entry["subject_digest"], key_id=entry["key_id"],
                                       request_ref=entry["request_ref"],
                                       requested_at=datetime.fromisoformat(entry["requested_at"]),
                                       completed_at=datetime.fromisoformat(completed) if completed else None))
        present.add(entry["subject_digest"])
        added += 1
    session.flush()
    return added


def _ledger(session: Session, key: bytes) -> tuple[set[str], int]:
    """Digests made with ``key``, and how many entries another key made (they cannot be matched)."""
    mine: set[str] = set()
    other = 0
    for digest, entry_key in session.execute(select(ErasureLedgerEntry.subject_digest, ErasureLedgerEntry.key_id)):
        if entry_key == key_id(key):
            mine.add(digest)
        else:
            other += 1
    return mine, other


def listed_subjects(session: Session, key: bytes, digests: set[str] | None = None) -> Iterator[int]:
    """Ids of live (not erased) subjects whose external_ref or email digest the ledger lists."""
    if digests is None:
        digests, _ = _ledger(session, key)
    if not digests:
        return
    rows = session.execute(select(DataSubject.id, DataSubject.external_ref, DataSubject.email)
                           .where(DataSubject.erased_at.is_(None)).order_by(DataSubject.id)
                           .execution_options(yield_per=BATCH))
    for subject_id, ref, email in rows:
        if subject_digest(ref, key) in digests or (email and subject_digest(email, key) in digests):
            yield subject_id


def ledger_violations(session: Session, key: bytes) -> int:
    """How many subjects the ledger lists are present (not erased) in this store: 0 after a good restore."""
    return sum(1 for _ in listed_subjects(session, key))


def reapply_ledger(session: Session, key: bytes, *, storage: Storage | None = None, storage_url: str = "",
                   entries: Iterable[dict[str, Any]] | None = None, policies: PolicySet | None = None,
                   actor: str = "restore") -> dict[str, int]:
    """Erase again, in ``session``'s transaction, every listed subject whose data is present; counts.

    ``entries`` (default: the ledger published in ``storage``) are merged into this store's
    ledger first; ``storage``/``storage_url`` let artifact objects be deleted too.
    """
    from amas.gdpr.erase import STORE_STEPS, EraseContext, executable_steps
    from amas.gdpr.plan import holds_for, plan_erasure

    if policies is None:
        from amas.retention.policy import load_policies

        policies = load_policies()
    if entries is None:
        entries = published_ledger(storage) if storage is not None else []
    merged = merge_ledger(session, entries)
    digests, other_key = _ledger(session, key)
    ids = list(listed_subjects(session, key, digests))
    totals: dict[str, int] = {"subjects": 0, "ledger_entries_merged": merged, "unmatched_key_entries": other_key}
    now = utcnow()
    for subject_id in ids:
        query = SubjectQuery(By.id, str(subject_id), str(subject_id), subject_id)
        found = discover(session, query, key=key, storage_url=storage_url,
                         object_exists=storage.exists if storage is not None else None)
        holds = holds_for(policies, [s.external_ref for s in found.subjects], now.date())
        identifiers = found.identifiers()
        plan = plan_erasure(found, holds, len(identifiers))
        ctx = EraseContext(subject_ids=found.subject_ids, identifiers=identifiers, key=key,
                           request_ref="ledger-reapply", actor=actor, storage=storage, storage_url=storage_url,
                           holds=holds, exports=found.exports, mentioning_tasks=found.mentioning_tasks,
                           mentioning_results=found.mentioning_results, now=now)
        for name in executable_steps(plan):
            with session.begin_nested():
                for counter, value in STORE_STEPS[name](session, ctx).items():
                    totals[f"{name}.{counter}"] = totals.get(f"{name}.{counter}", 0) + value
        totals["subjects"] += 1
    append_event(session, actor=actor, action="gdpr.ledger.reapplied", entity_type="erasure_ledger",
                 details={"ledger_entries": len(digests), **totals})
    return totals
