"""A real Prefect server for the session, started the way `amas up` starts it.

It runs on a free loopback port with its own PREFECT_HOME (SQLite), so it never touches a
developer's running stack. Tests that run flows in-process use the ``prefect_api`` fixture,
which points Prefect's settings at this server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from amas.config import load_settings
from amas.stack import start_server, wait_for_api


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1:<free port>; yield its API URL."""
    home = tmp_path_factory.mktemp("prefect-stack")
    settings = load_settings(core={"home": home}, prefect={"port": free_port()})
    server = start_server(settings, Path(home) / "logs")
    try:
        wait_for_api(settings.prefect_api_url, timeout=180, process=server)
        yield settings.prefect_api_url
    finally:
        # Send buffered run logs while the server still listens, or Prefect reports
        # "Error logging to API" at interpreter exit.
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all()
        server.stop()


@pytest.fixture
def prefect_api(prefect_server: str) -> Iterator[str]:
    """Point this test's Prefect client at the session server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server
