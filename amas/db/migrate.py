"""Migrations driven from code (no alembic.ini): ``amas db upgrade`` and the doctor use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from amas.errors import AmasError

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Bring the store to ``revision``; return (before, after). Safe to run again."""
    before = current_revision(engine)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return before, current_revision(engine) or ""


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a migration against an up-to-date store (a developer's tool)."""
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)


class SchemaOutOfDate(AmasError):
    """The store's schema is older (or newer) than this code expects."""


def require_current_schema(engine: Engine) -> None:
    """Raise ``SchemaOutOfDate`` naming the fix unless the store is at the newest revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the store is at schema revision {current or '(empty)'} but this AMAS needs {head}: "
            "run `amas db upgrade` (or `amas up`, which upgrades it)"
        )
