"""GDPR requests in the store: one ``gdpr_requests`` row each, tracked against the 30-day deadline.

GDPR Art. 12(3) gives a controller one month to act on a request; AMAS counts 30 days from
receipt (``due_at``). A request names its subject only by the keyed digest. An erasure request
that failed or stopped half-way is picked up again by the next request for the same subject
(same digest), so resuming is simply running ``amas gdpr erase`` again.

A request can be *staged* before the flow that handles it runs (``stage_request``): the row is
received, and the identifier is kept in its summary sealed (AES-256-GCM under a key derived from
the erasure key, bound to the request's reference) until the request completes, when it is
forgotten. The ``gdpr-erase`` and ``gdpr-export`` flows take only that reference, so the
identifier never becomes a Prefect flow-run parameter, where it would outlive the erasure.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from amas.db.audit import append_event
from amas.db.ledger import subject_digest
from amas.db.models import GdprRequest, RequestKind, RequestStatus, utcnow
from amas.errors import AmasError

if TYPE_CHECKING:
    from amas.gdpr.discovery import Discovery
    from amas.gdpr.identifiers import SubjectQuery

DEADLINE = timedelta(days=30)
PREFIX = {RequestKind.erase: "ER", RequestKind.export: "EX"}
OPEN = (RequestStatus.received, RequestStatus.in_progress, RequestStatus.failed)
SEALED = "sealed_subject"
"""Summary entry of a staged request holding its sealed identifier until the request completes."""
REF_PATTERN = r"^(ER|EX)-[0-9]{8}-[0-9a-f]{8}$"


class UnknownRequest(AmasError):
    exit_code = 2


def new_ref(kind: RequestKind, now: datetime) -> str:
    """``ER-20261126-1f2e3d4c``: kind, day received (UTC), random part. Safe in storage keys."""
    return f"{PREFIX[kind]}-{now:%Y%m%d}-{secrets.token_hex(4)}"


def open_request(session: Session, *, kind: RequestKind, subject_digest: str, key_id: str, actor: str,
                 now: datetime | None = None, ref: str | None = None) -> tuple[GdprRequest, bool]:
    """The request to work on and whether it resumes an earlier one.

    ``ref`` names a staged request to work on. Otherwise an erasure resumes the oldest unfinished
    erasure of the same subject, and an export is always new.
    """
    now = now or utcnow()
    if ref is not None:
        request = _open_staged(session, ref, kind)
        resumed = request.status is RequestStatus.failed or bool((request.summary or {}).get("steps"))
        request.status = RequestStatus.in_progress
        request.error = None
        if resumed:
            append_event(session, actor=actor, action=f"gdpr.{kind.value}.resumed", entity_type="gdpr_request",
                         entity_id=request.ref, details={"steps_done": sorted(request.summary.get("steps", {}))})
        return request, resumed
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
    return _new_request(session, kind=kind, subject_digest=subject_digest, key_id=key_id, actor=actor, now=now,
                        status=RequestStatus.in_progress), False


def _new_request(session: Session, *, kind: RequestKind, subject_digest: str, key_id: str, actor: str,
                 now: datetime, status: RequestStatus) -> GdprRequest:
    request = GdprRequest(ref=new_ref(kind, now), kind=kind, subject_digest=subject_digest, key_id=key_id,
                          status=status, actor=actor, received_at=now, due_at=now + DEADLINE, summary={})
    session.add(request)
    session.flush()
    append_event(session, actor=actor, action=f"gdpr.{kind.value}.received", entity_type="gdpr_request",
                 entity_id=request.ref, details={"due_at": request.due_at.isoformat(), "key_id": key_id})
    return request


def _open_staged(session: Session, ref: str, kind: RequestKind) -> GdprRequest:
    request = session.scalars(select(GdprRequest).where(GdprRequest.ref == ref).with_for_update()).first()
    if request is None or request.kind is not kind:
        raise UnknownRequest(f"no {kind.value} request {ref}; stage one with `amas gdpr stage {kind.value} SUBJECT`")
    if request.status not in OPEN:
        raise UnknownRequest(f"request {ref} is {request.status.value} already; its identifier was forgotten then. "
                             f"Stage a new request with `amas gdpr stage {kind.value} SUBJECT`")
    return request


def _sealing_key(key: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"amas-gdpr-staged-subject").derive(key)


def seal(query: SubjectQuery, key: bytes, ref: str) -> str:
    """The identifier and its kind, encrypted and bound to request ``ref`` (base64 text)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    plain = json.dumps({"by": query.by.value, "value": query.value}).encode()
    return base64.b64encode(nonce + AESGCM(_sealing_key(key)).encrypt(nonce, plain, ref.encode())).decode()


def open_seal(token: str, key: bytes, ref: str) -> SubjectQuery:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from amas.gdpr.identifiers import parse_identifier

    raw = base64.b64decode(token)
    try:
        plain = AESGCM(_sealing_key(key)).decrypt(raw[:12], raw[12:], ref.encode())
    except InvalidTag:
        raise AmasError(f"request {ref}: the staged identifier cannot be read with this erasure key") from None
    fields = json.loads(plain)
    return parse_identifier(fields["value"], fields["by"])


def stage_request(session: Session, *, kind: RequestKind, query: SubjectQuery, key: bytes, key_id: str,
                  actor: str, now: datetime | None = None) -> tuple[GdprRequest, bool]:
    """Receive a request whose flow runs later: ``(request, whether it is an earlier open one)``.

    An erasure joins the subject's unfinished erasure, if there is one (filed under the same digest
    as ``request_digest`` would give), as running it directly would.
    """
    from amas.gdpr.discovery import find_subjects

    rows = find_subjects(session, query)
    active = [r for r in rows if r.erased_at is None]
    if active:
        digest = subject_digest(active[0].external_ref, key)
    elif rows:
        digest = rows[0].external_ref
    else:
        digest = query.digest(key)
    request = None
    if kind is RequestKind.erase:
        request = session.scalars(
            select(GdprRequest).where(GdprRequest.kind == kind, GdprRequest.subject_digest == digest,
                                      GdprRequest.status.in_(OPEN))
            .order_by(GdprRequest.received_at).limit(1).with_for_update()).first()
    earlier = request is not None
    if request is None:
        request = _new_request(session, kind=kind, subject_digest=digest, key_id=key_id, actor=actor,
                               now=now or utcnow(), status=RequestStatus.received)
    update_summary(request, **{SEALED: seal(query, key, request.ref)})
    session.flush()
    return request, earlier


def unseal(session: Session, ref: str, key: bytes, *, kind: RequestKind) -> SubjectQuery:
    """The identifier a staged request holds; refuses unknown, finished or unstaged requests."""
    request = _open_staged(session, ref, kind)
    token = (request.summary or {}).get(SEALED)
    if not token:
        raise UnknownRequest(f"request {ref} holds no staged identifier; stage one with "
                             f"`amas gdpr stage {kind.value} SUBJECT`")
    return open_seal(token, key, ref)


def prefect_pending(session: Session, digests: list[str]) -> list[str]:
    """Flow runs earlier erasures of this subject could not delete yet (ids only). The requests are
    found by any digest of the subject: filed under it, or listed with it in the erasure ledger
    (once the row is anonymised, a request by email is filed under the email's digest)."""
    from amas.db.models import ErasureLedgerEntry

    listed = select(ErasureLedgerEntry.request_ref).where(ErasureLedgerEntry.subject_digest.in_(digests))
    pending: set[str] = set()
    for summary in session.scalars(select(GdprRequest.summary).where(
            GdprRequest.kind == RequestKind.erase,
            GdprRequest.subject_digest.in_(digests) | GdprRequest.ref.in_(listed))):
        pending.update((summary or {}).get("prefect_pending", []))
    return sorted(pending)


def set_prefect_pending(session: Session, request: GdprRequest, ids: list[str]) -> None:
    """``ids`` are what is left to delete now, for this request; earlier ones hand theirs over."""
    for earlier in session.scalars(select(GdprRequest).where(GdprRequest.kind == RequestKind.erase,
                                                             GdprRequest.subject_digest == request.subject_digest,
                                                             GdprRequest.id != request.id)):
        if (earlier.summary or {}).get("prefect_pending"):
            update_summary(earlier, prefect_pending=[])
    update_summary(request, prefect_pending=ids)


def forget_subject(request: GdprRequest) -> None:
    """Drop the sealed identifier: done when the request completes."""
    if SEALED in (request.summary or {}):
        request.summary = {k: v for k, v in request.summary.items() if k != SEALED}


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
