"""Objects under a storage prefix as a retention category, aged by their modification time.

Listing is the storage backend's own (``Storage.list``), so the same policy works on a local
directory and on S3. Only category holds apply: objects name no data subject.
"""

from __future__ import annotations

from datetime import UTC, datetime

from amas.retention.plan import Item, decide
from amas.retention.policy import Policy, cutoff
from amas.retention.query import CategoryCounts, empty_counts
from amas.storage.base import Storage


def survey(storage: Storage, policy: Policy, as_of: datetime, *, samples: int = 0) -> CategoryCounts:
    counts = empty_counts(policy, as_of)
    limit = cutoff(policy, as_of)
    due: list[Item] = []
    for info in storage.list(policy.prefix or ""):
        counts.total += 1
        if info.modified is None:
            counts.no_age += 1
            continue
        counts.oldest = info.modified if counts.oldest is None else min(counts.oldest, info.modified)
        if info.modified < limit:
            counts.due += 1
            due.append(Item(policy.category, info.key, info.modified))
    if due:
        counts.oldest_actionable = min(i.age for i in due if i.age is not None)
    if policy.category_held_on(as_of.astimezone(UTC).date()):
        counts.held, counts.oldest_actionable = counts.due, None
    due.sort(key=lambda i: (i.age, i.id))
    counts.samples = [decide(item, policy, as_of) for item in due[:samples]]
    return counts


def purge_batch(storage: Storage, policy: Policy, as_of: datetime, limit: int) -> list[str]:
    """Delete up to ``limit`` objects past the limit; return their keys (empty when none is left)."""
    if policy.category_held_on(as_of.astimezone(UTC).date()):
        return []
    before = cutoff(policy, as_of)
    keys = []
    for info in storage.list(policy.prefix or ""):
        if info.modified is not None and info.modified < before:
            keys.append(info.key)
            if len(keys) >= limit:
                break
    for key in keys:
        storage.delete(key)
    return keys
