"""The audit chain: append-only events, each hashing its predecessor.

``hash = sha256(prev_hash + "\\n" + canonical JSON of the event)``. Changing, removing or
reordering any row breaks every hash after it, which ``verify_chain`` reports. The database
also refuses UPDATE/DELETE on the table (see the initial migration).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from amas.db.models import GENESIS_HASH, AuditEvent, utcnow

APPEND_ATTEMPTS = 8
AUDIT_LOCK_KEY = 0x616D6173  # 'amas'


def canonical_payload(
    *, occurred_at: datetime, actor: str, action: str, entity_type: str,
    entity_id: str | None, details: dict[str, Any],
) -> bytes:
    body = {
        "occurred_at": occurred_at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "details": details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, payload: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + payload).hexdigest()


def event_hash(event: AuditEvent) -> str:
    payload = canonical_payload(
        occurred_at=event.occurred_at, actor=event.actor, action=event.action,
        entity_type=event.entity_type, entity_id=event.entity_id, details=event.details,
    )
    return chain_hash(event.prev_hash, payload)


def last_hash(session: Session) -> str:
    return session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS_HASH


def append_event(
    session: Session, *, actor: str, action: str, entity_type: str,
    entity_id: str | None = None, details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event at the end of the chain, retrying when another writer got there first.

    On PostgreSQL appenders queue on a transaction-scoped advisory lock, so the chain's tail
    is read and extended by one transaction at a time; SQLite serialises writers anyway.
    The unique ``prev_hash`` stays as the guard if anything bypasses this function.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
    # Round-trip through JSON so the stored details hash the same when read back.
    clean_details = json.loads(json.dumps(details or {}, default=str))
    for attempt in range(APPEND_ATTEMPTS):
        event = AuditEvent(
            occurred_at=utcnow(), actor=actor, action=action,
            entity_type=entity_type, entity_id=entity_id, details=clean_details,
            prev_hash=last_hash(session),
        )
        event.hash = event_hash(event)
        try:
            with session.begin_nested():
                session.add(event)
                session.flush()
            return event
        except IntegrityError:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def verify_chain(session: Session, *, batch_size: int = 1000) -> ChainVerdict:
    """Walk the chain in id order, streaming, and report the first row that does not fit."""
    expected_prev = GENESIS_HASH
    checked = 0
    rows = session.execute(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch_size)
    ).scalars()
    for event in rows:
        if event.prev_hash != expected_prev:
            return ChainVerdict(False, checked, event.id, "prev_hash does not match the previous event's hash")
        if event_hash(event) != event.hash:
            return ChainVerdict(False, checked, event.id, "hash does not match the event's content")
        expected_prev = event.hash
        checked += 1
    return ChainVerdict(True, checked)
