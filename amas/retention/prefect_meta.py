"""Prefect's own metadata as retention categories: old flow runs and old artifacts.

The open-source Prefect server never cleans up after itself. A ``prefect_flow_runs`` policy
deletes flow runs in a final state (completed, failed, cancelled, crashed) that started before
the cutoff; the server deletes their task runs and logs with them. A ``prefect_artifacts``
policy deletes artifacts created before the cutoff (artifacts outlive their flow run).
Everything goes through the Prefect client API, never the server's database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from amas.config import Settings

from amas.retention.plan import Item, decide
from amas.retention.policy import Policy, cutoff
from amas.retention.query import CategoryCounts, empty_counts

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
PAGE = 200
"""The most items the API returns per request; an API batch is at most this long."""


@contextmanager
def reachable_client(settings: Settings) -> Iterator[tuple[Any, str | None]]:
    """``(client, None)`` for the Prefect API in use (or the stack's), or ``(None, why not)``.

    Never lets Prefect start a temporary server of its own: without an API URL it points at
    the stack's, as ``amas`` commands do.
    """
    from prefect.settings import PREFECT_API_URL

    from amas.stack import api_healthy

    api = PREFECT_API_URL.value()
    if not api:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
        os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
        api = os.environ["PREFECT_API_URL"]
    if not api_healthy(api):
        yield None, f"no Prefect API at {api} (start the stack with `amas up`)"
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client, None


def _final_old_runs(before: datetime | None) -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in FINAL_STATES]))
    if before is None:
        return FlowRunFilter(state=state)
    # before_ is inclusive in Prefect; the retention boundary is exclusive, so ask for
    # a microsecond less.
    return FlowRunFilter(state=state, start_time=FlowRunFilterStartTime(before_=before - timedelta(microseconds=1)))


def _pages(read: Callable[..., list[Any]], **query: Any) -> Iterator[Any]:
    """Everything ``read`` (a client's read_* method) returns for ``query``, a page at a time."""
    offset = 0
    while True:
        page = read(limit=PAGE, offset=offset, **query)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def _artifacts(client: Any) -> Iterator[Any]:
    """Every artifact, newest first (the API sorts by creation only that way)."""
    from prefect.client.schemas.sorting import ArtifactSort

    return _pages(client.read_artifacts, sort=ArtifactSort.CREATED_DESC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def survey(client: Any, policy: Policy, as_of: datetime, *, samples: int = 0) -> CategoryCounts:
    """Counts for a Prefect category: all items, those due, and (held) when the category is held."""
    counts = empty_counts(policy, as_of)
    limit = cutoff(policy, as_of)
    held = policy.category_held_on(as_of.astimezone(UTC).date())
    items: list[Item] = []
    if policy.kind == "prefect_flow_runs":
        from prefect.client.schemas.sorting import FlowRunSort

        counts.total = client.count_flow_runs()
        counts.due = client.count_flow_runs(flow_run_filter=_final_old_runs(limit))
        oldest = client.read_flow_runs(flow_run_filter=_final_old_runs(limit), sort=FlowRunSort.START_TIME_ASC,
                                       limit=max(samples, 1))
        counts.oldest = counts.oldest_actionable = _aware(oldest[0].start_time) if oldest else None
        items = [Item(policy.category, str(r.id), _aware(r.start_time)) for r in oldest[:samples]]
    else:
        for artifact in _artifacts(client):
            created = _aware(artifact.created)
            counts.total += 1
            if created is None:
                counts.no_age += 1
                continue
            counts.oldest = created if counts.oldest is None else min(counts.oldest, created)
            if created < limit:
                counts.due += 1
                counts.oldest_actionable = counts.oldest
                items.append(Item(policy.category, str(artifact.id), created))
        items = sorted(items, key=lambda i: i.age or limit)[:samples]
    if held:
        counts.held, counts.oldest_actionable = counts.due, None
    counts.samples = [decide(item, policy, as_of) for item in items]
    return counts


def purge_batch(client: Any, policy: Policy, as_of: datetime, limit: int) -> list[str]:
    """Delete up to ``limit`` due items; return their ids (empty when nothing is left)."""
    from prefect.exceptions import ObjectNotFound

    if policy.category_held_on(as_of.astimezone(UTC).date()):
        return []
    before = cutoff(policy, as_of)
    delete: Callable[[Any], None]
    if policy.kind == "prefect_flow_runs":
        ids = [r.id for r in client.read_flow_runs(flow_run_filter=_final_old_runs(before), limit=min(limit, PAGE))]
        delete = client.delete_flow_run
    else:
        ids = []
        for artifact in _artifacts(client):
            created = _aware(artifact.created)
            if created is not None and created < before:
                ids.append(artifact.id)
                if len(ids) >= min(limit, PAGE):
                    break
        delete = client.delete_artifact
    deleted: list[str] = []
    for item_id in ids:
        try:
            delete(item_id)
        except ObjectNotFound:  # deleted meanwhile (another run, the UI): the goal is reached
            pass
        deleted.append(str(item_id))
    return deleted


def flow_runs(client: Any) -> Iterator[Any]:
    """Every flow run, newest first by id, a page at a time (GDPR discovery reads their parameters)."""
    from prefect.client.schemas.sorting import FlowRunSort

    return _pages(client.read_flow_runs, sort=FlowRunSort.ID_DESC)


def log_lines(client: Any, log_filter: Any, limit: int) -> Iterator[Any]:
    """Log lines matching ``log_filter``, newest first, at most ``limit`` of them."""
    from prefect.client.schemas.sorting import LogSort

    offset = 0
    while offset < limit:
        page = client.read_logs(log_filter=log_filter, sort=LogSort.TIMESTAMP_DESC, limit=min(PAGE, limit - offset),
                                offset=offset)
        yield from page
        if len(page) < min(PAGE, limit - offset):
            return
        offset += len(page)


def delete_each(delete: Callable[[Any], None], ids: Iterable[Any]) -> dict[str, list[str]]:
    """Delete every id through the API, carrying on past failures.

    Returns the ids ``deleted``, those already ``gone`` (deleted meanwhile: the goal is reached)
    and those that ``failed``, each as ``"id: why"``.
    """
    import httpx
    from prefect.exceptions import ObjectNotFound

    outcome: dict[str, list[str]] = {"deleted": [], "gone": [], "failed": []}
    for item_id in ids:
        try:
            delete(item_id)
        except ObjectNotFound:
            outcome["gone"].append(str(item_id))
        except httpx.HTTPError as exc:
            outcome["failed"].append(f"{item_id}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        else:
            outcome["deleted"].append(str(item_id))
    return outcome
