"""An ``AgentContext`` on a migrated SQLite store and local storage, for agent unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from amas.config import load_settings
from amas.db.migrate import upgrade
from amas.db.session import create_store_engine
from amas.registry import AgentContext
from amas.storage.local import LocalStorage


@pytest.fixture
def agent_context(tmp_path: Path) -> Iterator[AgentContext]:
    """A context whose storage is ``tmp_path/storage`` and whose store is ``tmp_path/store.db``."""
    settings = load_settings()
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    yield AgentContext(settings=settings, engine=engine, storage=LocalStorage(tmp_path / "storage"),
                       task_id=uuid.uuid4(), actor="test")
    engine.dispose()
