"""A throwaway Prefect server for one stress run, with its database on SQLite or PostgreSQL.

Started the way ``amas up`` starts the stack's server (``amas.stack``), on a free 127.0.0.1
port, with its own PREFECT_HOME in a temporary directory; on PostgreSQL its database is a new
scratch database on the machine's server, dropped afterwards with the temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from amas.config import load_settings
from amas.errors import ServiceUnavailable
from amas.stack import ManagedProcess, prefect_cli, prefect_env, wait_for_api

ServerDb = Literal["sqlite", "postgresql"]
ADMIN_DSN = os.environ.get("AMAS_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ThrowawayServer:
    db: ServerDb
    api_url: str
    pid: int
    log_path: Path
    home: Path
    pg_dbname: str | None
    env: dict[str, str]


def _admin_connect() -> object:
    import psycopg

    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"PostgreSQL unreachable at {ADMIN_DSN} ({reason}): the stress run on a "
                                 "PostgreSQL-backed Prefect server needs it (set AMAS_BENCH_PG_DSN)") from None


@contextlib.contextmanager
def scratch_pg_database(prefix: str = "amas_bench_prefect_") -> Iterator[tuple[str, str]]:
    """A new empty database on ADMIN_DSN's server: (asyncpg URL for Prefect, name); dropped afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
        yield f"postgresql+asyncpg://{base}/{name}", name
    finally:
        with _admin_connect() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def throwaway_server(db: ServerDb, *, start_timeout: float = 180.0) -> Iterator[ThrowawayServer]:
    """Start ``prefect server start`` on 127.0.0.1:<free port> with its database on ``db``; stop it after."""
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"amas-bench-{db}-")))
        settings = load_settings(core={"home": home}, prefect={"port": free_port(), "host": "127.0.0.1"})
        env = prefect_env(settings)
        env["PREFECT_SERVER_UI_ENABLED"] = "false"
        pg_dbname = None
        if db == "postgresql":
            url, pg_dbname = stack.enter_context(scratch_pg_database())
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
        else:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
        argv = [*prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect.port)]
        server = ManagedProcess(f"prefect-server-{db}", argv, env, home / "logs" / "prefect-server.log").start()
        stack.callback(server.stop)
        wait_for_api(settings.prefect_api_url, timeout=start_timeout, process=server)
        assert server.popen is not None
        yield ThrowawayServer(db=db, api_url=settings.prefect_api_url, pid=server.popen.pid,
                              log_path=server.log_path, home=home, pg_dbname=pg_dbname, env=env)
