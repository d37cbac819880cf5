"""The HTTP transport against a real receiver on 127.0.0.1, and against nothing at all."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from amas.config import load_settings
from amas.lineage import LineageEmitter, dataset
from tests.lineage_schema import validate_event

pytestmark = pytest.mark.integration

API_KEY = "ol-test-token-5f0c2b7e9d"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    busy_answers: int = 0
    """How many of the next POSTs get 503 Service Unavailable before the receiver recovers."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OpenLineage receiver that records every POST and answers 201, like Marquez."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            if state.busy_answers > 0:
                state.busy_answers -= 1
                self.send_response(503)
            else:
                self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        state.url = f"http://{host}:{port}"
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def http_emitter(url: str) -> LineageEmitter:
    settings = load_settings(
        lineage={"transport": "http", "url": url, "api_key": API_KEY, "timeout_seconds": 2.0}
    )
    return LineageEmitter.from_settings(settings)


def test_http_transport_delivers_start_and_complete_with_the_bearer_token(receiver: Receiver) -> None:
    emitter = http_emitter(receiver.url)

    with emitter.run("pipeline.clean", inputs=[dataset("file", "data/raw.csv", version="md5:1")]) as run:
        run.add_output(dataset("file", "data/clean.csv", schema=[("id", "INTEGER")]))
    emitter.close()

    assert (emitter.emitted, emitter.failed) == (2, 0)
    assert [r.body["eventType"] for r in receiver.requests] == ["START", "COMPLETE"]
    for request in receiver.requests:
        assert request.path == "/api/v1/lineage"
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["Content-Type"] == "application/json"
        assert API_KEY not in json.dumps(request.body)
        validate_event(request.body)
    assert {r.body["run"]["runId"] for r in receiver.requests} == {run.run_id}
    assert [o["name"] for o in receiver.requests[1].body["outputs"]] == ["data/clean.csv"]


def test_a_busy_receiver_is_retried_quietly(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.busy_answers = 1
    emitter = http_emitter(receiver.url)

    with caplog.at_level(logging.WARNING):
        assert emitter.emit("START", "pipeline.clean", "0191e6a4-7c1d-7a3e-9f55-3c2b1d0e4f10") is True
    emitter.close()

    assert [r.body["eventType"] for r in receiver.requests] == ["START", "START"]
    assert (emitter.emitted, emitter.failed) == (1, 0)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_unreachable_receiver_is_counted_and_logged_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    emitter = http_emitter(f"http://127.0.0.1:{closed_port()}")
    work_done = False

    with caplog.at_level(logging.DEBUG):
        returned = emitter.emit("START", "backup.nightly", "0191e6a4-7c1d-7a3e-9f55-3c2b1d0e4f10")
        with emitter.run("backup.nightly"):
            work_done = True
    emitter.close()

    assert returned is False
    assert work_done
    assert (emitter.emitted, emitter.failed) == (0, 3)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["amas.lineage.emitter"] * 3
    assert "START event for job backup.nightly" in warnings[0].getMessage()
    assert "ConnectionError" in warnings[0].getMessage()
    assert API_KEY not in caplog.text
    assert "Authorization" not in caplog.text
