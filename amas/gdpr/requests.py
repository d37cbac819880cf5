"""GDPR requests in the store: one ``gdpr_requests`` row each, tracked against the 30-day deadline.

GDPR Art. 12(3) gives a controller one month to act on a request; AMAS counts 30 days from
receipt (``due_at``). A request names its subject only by the keyed digest. An erasure request
that failed or stopped half-way is picked up again by the next request for the same subject
(same digest), so resuming is simply running ``amas gdpr erase`` again.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import subject_digest
from amas.db.models import GdprRequest, RequestKind, RequestStatus, utcnow

if TYPE_CHECKING:
    from amas.gdpr.discovery import Discovery
    from amas.gdpr.identifiers import SubjectQuery

DEADLINE = timedelta(days=30)
PREFIX = {RequestKind.erase: "ER", RequestKind.export: "EX"}
OPEN = (RequestStatus.received, RequestStatus.in_progress, RequestStatus.failed)


def new_ref(kind: RequestKind, now: datetime) -> str:
    """``ER-20261126-1f2e3d4c``: kind, day received (UTC), random part. Safe in storage keys."""
    return f"{PREFIX[kind]}-{now:%Y%m%d}-{secrets.token_hex(4)}"


def open_request(session: Session, *, kind: RequestKind, subject_digest: str, key_id: str, actor: str,
                 now: datetime | None = None) -> tuple[GdprRequest, bool]:
    """The request to work on and whether it resumes an earlier one.

    An erasure resumes the oldest unfinished erasure of the same subject; an export is always new.
    """
    now = now or utcnow()
    if kind is RequestKind.erase:
        earlier = session.scalars(
            select(GdprRequest).where(GdprRequest.kind == kind, GdprRequest.subject_digest == subject_digest,
                                      GdprRequest.status.in_(OPEN))
            .order_by(GdprRequest.received_at).limit(1).with_for_update()).first()
        if earlier is not None:
            earlier.status = RequestStatus.in_progress
            earlier.error = None
            append_event(session, actor=actor, action=f"gdpr.{kind.value}.resumed", entity_type="gdpr_request",
                         entity_id=earlier.ref, details={"steps_done": sorted(earlier.summary.get("steps", {}))})
            return earlier, True
    request = GdprRequest(ref=new_ref(kind, now), kind=kind, subject_digest=subject_digest, key_id=key_id,
                          status=RequestStatus.in_progress, actor=actor, received_at=now, due_at=now + DEADLINE,
                          summary={})
    session.add(request)
    session.flush()
    append_event(session, actor=actor, action=f"gdpr.{kind.value}.received", entity_type="gdpr_request",
                 entity_id=request.ref, details={"due_at": request.due_at.isoformat(), "key_id": key_id})
    return request, False


def request_digest(query: SubjectQuery, discovery: Discovery, key: bytes) -> str:
    """The digest a request is filed under: that of the subject's external_ref when known (an
    anonymised row holds exactly that digest, so a request by id resumes one made by email, and
    an erasure finds the exports made for the same person however they were asked for), else
    that of the identifier given."""
    if discovery.subjects:
        return subject_digest(discovery.subjects[0].external_ref, key)
    if discovery.erased_refs:
        return discovery.erased_refs[0]
    return query.digest(key)


def load(session: Session, ref: str) -> GdprRequest:
    request = session.scalars(select(GdprRequest).where(GdprRequest.ref == ref)).one()
    return request


def update_summary(request: GdprRequest, **values: Any) -> None:
    """Merge ``values`` into the request's summary (a new dict, so the JSON change is saved)."""
    request.summary = {**(request.summary or {}), **values}


def record_step(request: GdprRequest, step: str, counts: dict[str, Any], now: datetime | None = None) -> None:
    steps = dict((request.summary or {}).get("steps", {}))
    steps[step] = {**counts, "at": (now or utcnow()).isoformat()}
    update_summary(request, steps=steps)


def request_rows(session: Session, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every request, newest first, with days left to its deadline (negative: overdue)."""
    now = now or utcnow()
    rows = []
    for request in session.scalars(select(GdprRequest).order_by(GdprRequest.received_at.desc(), GdprRequest.id.desc())):
        finished = request.status is RequestStatus.completed
        end = request.completed_at if finished and request.completed_at else now
        rows.append({
            "ref": request.ref, "kind": request.kind.value, "status": request.status.value,
            "subject_digest": request.subject_digest, "actor": request.actor,
            "received_at": request.received_at.isoformat(), "due_at": request.due_at.isoformat(),
            "completed_at": request.completed_at.isoformat() if request.completed_at else None,
            "days_left": None if finished else (request.due_at - now).days,
            "overdue": (end > request.due_at),
            "certificate_uri": request.certificate_uri, "error": request.error,
        })
    return rows
