"""A store worth backing up, on each dialect: rows in every table, artifact objects, a DVC index.

``backup_env`` points the settings at a migrated store (``store_url``: SQLite and PostgreSQL)
and the local storage under the test's AMAS_HOME, fills both through the engine's own models,
and hands back what a backup test needs. ``encryption_key`` turns on AES-256-GCM for a test.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from amas.config import Settings, get_settings
from amas.db.audit import append_event
from amas.db.migrate import upgrade
from amas.db.models import AgentTask, Artifact, DataSubject, TaskResult
from amas.db.session import create_store_engine, session_scope
from amas.storage import Storage, open_storage


@dataclass
class BackupEnv:
    engine: Engine
    storage: Storage
    url: str

    @property
    def settings(self) -> Settings:
        """Read now, so a fixture that sets AMAS_* after this one (``encryption_key``) is seen."""
        return get_settings()


def fill_store(engine: Engine, storage: Storage, *, subjects: int = 20, tag: str = "") -> None:
    """Subjects, tasks with results, artifacts with their objects, audit events and a DVC remote index."""
    base = get_settings().storage_url.rstrip("/")
    with session_scope(engine) as session:
        people = [DataSubject(external_ref=f"crm-{tag}{i}", email=f"user{tag}{i}@example.org",
                              display_name=f"Person {i}") for i in range(subjects)]
        session.add_all(people)
        session.flush()
        for i, person in enumerate(people):
            task = AgentTask(agent="forensics", parameters={"paths": [f"/evidence/{i}"]}, subject_id=person.id,
                             case_id=f"CASE-{i % 3}")
            session.add(task)
            session.flush()
            session.add(TaskResult(task_id=task.id, summary=f"result {i}", output={"files": i}))
            key = f"evidence/{tag}{i}/photo-{uuid.uuid4().hex[:6]}.jpg"
            info = storage.put(key, os.urandom(64) + f"photo of {i}".encode())
            session.add(Artifact(uri=f"{base}/{key}", sha256=info.sha256, size_bytes=info.size, task_id=task.id,
                                 subject_id=person.id))
        append_event(session, actor="test", action="seeded", entity_type="store", details={"subjects": subjects})
    storage.put("dvc/files/md5/ab/cdef0123456789", b"a DVC-tracked file")


@pytest.fixture
def encryption_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    key = os.urandom(32)
    monkeypatch.setenv("AMAS_ENCRYPTION_KEY", base64.b64encode(key).decode())
    get_settings.cache_clear()
    return key


@pytest.fixture
def backup_env(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackupEnv]:
    """A filled store on ``store_url`` with the settings pointing at it."""
    monkeypatch.setenv("AMAS_DATABASE_URL", store_url)
    get_settings.cache_clear()
    settings = get_settings()
    engine = create_store_engine(settings.database_url)
    upgrade(engine)
    storage = open_storage(settings)
    fill_store(engine, storage)
    yield BackupEnv(engine, storage, store_url)
    engine.dispose()
