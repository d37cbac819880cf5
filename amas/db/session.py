"""One engine per database URL; sessions whose lifetime the caller (a flow, a command) owns."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from amas.config import Settings, get_settings, hide_url_password
from amas.errors import ServiceUnavailable


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the health flow read while a backup or a worker writes; foreign keys are
    # off by default in SQLite and the models rely on ON DELETE actions.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_store_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, echo=echo, pool_size=pool_size, pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": "amas"},
    )


@functools.cache
def _engine_for(url: str, pool_size: int, echo: bool) -> Engine:
    return create_store_engine(url, pool_size=pool_size, echo=echo)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process's engine for the configured store (created once per URL)."""
    settings = settings or get_settings()
    return _engine_for(settings.database_url, settings.database.pool_size, settings.database.echo)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    factory = sessionmaker(engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def check_connection(engine: Engine) -> None:
    """Raise ``ServiceUnavailable`` with the setting to fix when the store cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ServiceUnavailable(
            f"store unreachable at {hide_url_password(engine.url.render_as_string(hide_password=False))}: "
            f"{reason} (check AMAS_DATABASE_URL and that the database server is running)"
        ) from None


def lineage_namespace(engine: Engine) -> str:
    """The OpenLineage namespace of the store (``postgres://host:port`` or ``sqlite://path``)."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return f"postgres://{url.host or 'localhost'}:{url.port or 5432}"
    return f"sqlite://{Path(url.database or ':memory:').resolve()}"


def lineage_table_name(engine: Engine, table: str) -> str:
    """A table's OpenLineage dataset name: ``database.schema.table`` on PostgreSQL."""
    if engine.url.get_backend_name() == "postgresql":
        return f"{engine.url.database}.public.{table}"
    return table
