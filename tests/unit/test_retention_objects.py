"""Objects under a storage prefix as a retention category (local storage, mtimes set by hand)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from amas.retention import objects
from amas.retention.policy import Policy
from amas.storage.local import LocalStorage

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)


def policy(**extra: object) -> Policy:
    return Policy.model_validate({"category": "quality_reports", "description": "reports", "kind": "storage",
                                  "prefix": "quality/", "max_age_days": 30, "action": "delete",
                                  "legal_basis": "legitimate interests"} | extra)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "objects")
    for key, days in (("quality/run-1/a.json", 40), ("quality/run-1/b.json", 31), ("quality/run-2/c.json", 29),
                      ("quality/run-3/d.json", 1), ("reports/old.html", 400), ("qualityx/e.json", 400)):
        store.put(key, b"{}")
        stamp = (NOW - timedelta(days=days)).timestamp()
        os.utime(store.root / key, (stamp, stamp))
    return store


def test_survey_counts_only_the_prefix_and_samples_the_oldest(storage: LocalStorage) -> None:
    counts = objects.survey(storage, policy(), NOW, samples=1)
    assert (counts.total, counts.due, counts.held, counts.act) == (4, 2, 0, 2)
    assert counts.max_overdue_days == 10
    assert [(v.id, v.decision) for v in counts.samples] == [("quality/run-1/a.json", "delete")]
    assert counts.samples[0].reason == "due since 10 days (limit 30 days)"


def test_purge_deletes_due_objects_in_batches_and_nothing_else(storage: LocalStorage) -> None:
    assert objects.purge_batch(storage, policy(), NOW, 1) == ["quality/run-1/a.json"]
    assert objects.purge_batch(storage, policy(), NOW, 10) == ["quality/run-1/b.json"]
    assert objects.purge_batch(storage, policy(), NOW, 10) == []
    assert sorted(i.key for i in storage.list()) == ["quality/run-2/c.json", "quality/run-3/d.json",
                                                     "qualityx/e.json", "reports/old.html"]


def test_a_category_hold_keeps_every_object(storage: LocalStorage) -> None:
    held = policy(legal_holds=[{"category": "quality_reports", "reason": "incident review"}])
    assert objects.purge_batch(storage, held, NOW, 10) == []
    counts = objects.survey(storage, held, NOW)
    assert (counts.due, counts.held, counts.act, counts.oldest_actionable) == (2, 2, 0, None)
    assert len(list(storage.list("quality/"))) == 4
