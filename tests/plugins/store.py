"""A migrated AMAS store on each dialect: the same tests run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from amas.db.migrate import upgrade
from amas.db.session import create_store_engine
from tests.plugins.postgres import create_scratch_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = create_scratch_database()
    yield url
    drop_database(url)


@pytest.fixture
def store_engine(store_url: str) -> Iterator[Engine]:
    """An engine on a store migrated to head."""
    engine = create_store_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()
