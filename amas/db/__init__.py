"""The AMAS store: models, engine and sessions, migrations, the audit chain and erasure ledger."""

from amas.db.session import check_connection, get_engine, session_scope

__all__ = ["check_connection", "get_engine", "session_scope"]
