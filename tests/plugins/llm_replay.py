"""A real HTTP server on 127.0.0.1 that answers like an OpenAI-compatible API or Ollama, from recordings.

Each provider under test gets its own base URL whose path carries a label and a script:

    http://127.0.0.1:PORT/<label>/<script>/v1     kind openai (the client POSTs .../v1/chat/completions)
    http://127.0.0.1:PORT/<label>/<script>        kind ollama (the client POSTs .../api/chat)

The script is a comma-separated list of steps, one per request to that label; the last step
repeats. The response format follows the endpoint (``/chat/completions`` is OpenAI,
``/api/chat`` is Ollama), and bodies come from ``tests/fixtures/llm/<kind>_<name>.json``
(``{"status", "headers", "body"}``).

    ok            the recorded success (``<kind>_ok.json``)
    fixture:NAME  the recording ``<kind>_NAME.json`` (e.g. fixture:no_usage, fixture:empty_choices)
    500, 401, ... that status with its recorded error body (a generic one if none is recorded)
    429:N         429 with ``Retry-After: N`` instead of the recorded value
    slow, slow:N  wait N seconds (default 5) before answering ok; set the client timeout lower
    garbage       200 with a body cut off mid-JSON
    STEP*N        STEP repeated N times: ``500*2,ok`` is "500 twice, then ok"

Every request is recorded (label, step, path, headers with the Authorization value replaced,
the SHA-256 of the bearer token, the JSON body). In-process: the ``llm_replay`` fixture or
``running_replay_server()``. Another process: ``python -m tests.plugins.llm_replay --port N``
prints the URL and serves until killed; ``GET /_requests`` returns the log as JSON and
``POST /_reset`` clears it and the script positions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "llm"
SLOW_DEFAULT_SECONDS = 5.0
ENDPOINTS = {"/v1/chat/completions": "openai", "/chat/completions": "openai", "/api/chat": "ollama"}


@dataclass(frozen=True)
class RecordedRequest:
    label: str
    script: str
    step: str
    method: str
    path: str
    headers: dict[str, str]
    """Request headers; an Authorization value is replaced by '<redacted>'."""
    auth_sha256: str | None
    """SHA-256 of the bearer token, so a test can check which key was sent without keeping it."""
    body: Any


def expand_script(script: str) -> list[str]:
    """``"500*2,ok"`` -> ``["500", "500", "ok"]``; raises ValueError on an unknown step."""
    steps: list[str] = []
    for part in script.split(","):
        step, _, times = part.strip().partition("*")
        name, _, arg = step.partition(":")
        if not (name in ("ok", "slow", "garbage") or (name == "fixture" and arg) or (name.isdigit() and len(name) == 3)):
            raise ValueError(f"unknown replay step {step!r}; use ok, fixture:NAME, slow[:N], garbage or a status like 500")
        if name in ("slow", "429") and arg and not arg.replace(".", "", 1).isdigit():
            raise ValueError(f"replay step {step!r} needs a number of seconds after the colon")
        if times and not (times.isdigit() and int(times) >= 1):
            raise ValueError(f"replay repeat count must be a whole number of at least 1 in {part!r}")
        steps.extend([step] * int(times or 1))
    return steps


def load_recording(kind: str, name: str) -> dict[str, Any] | None:
    path = FIXTURES / f"{kind}_{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _generic_error(kind: str, status: int) -> dict[str, Any]:
    message = f"replay: HTTP {status}"
    body: Any = {"error": message} if kind == "ollama" else {"error": {"message": message, "type": "server_error"}}
    return {"status": status, "headers": {"Content-Type": "application/json"}, "body": body}


class ReplayServer:
    """The server and its scripts' state; start() and stop(), or use ``running_replay_server()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._positions: dict[tuple[str, str], int] = {}
        self._log: list[RecordedRequest] = []
        self._labels = 0
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="llm-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def base_url(self, kind: str, script: str, *, label: str | None = None) -> str:
        """A provider base URL for ``kind`` ('openai' or 'ollama') that follows ``script``."""
        expand_script(script)
        if kind not in ("openai", "ollama"):
            raise ValueError(f"kind must be openai or ollama, not {kind!r}")
        if label is None:
            with self._lock:
                self._labels += 1
                label = f"p{self._labels}"
        root = f"{self.url}/{quote(label, safe='')}/{quote(script, safe=',:*')}"
        return f"{root}/v1" if kind == "openai" else root

    def provider(self, name: str, kind: str, script: str, **extra: Any) -> dict[str, Any]:
        """One entry for AMAS_LLM_PROVIDERS, labelled by the provider's name."""
        return {"name": name, "kind": kind, "base_url": self.base_url(kind, script, label=name),
                "model": "llama3.2" if kind == "ollama" else "gpt-4o-mini", **extra}

    def requests(self, label: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._log if label is None or r.label == label]

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._positions.clear()

    def _next_step(self, label: str, script: str) -> str:
        steps = expand_script(script)
        with self._lock:
            position = self._positions.get((label, script), 0)
            self._positions[(label, script)] = position + 1
        return steps[min(position, len(steps) - 1)]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:
                if self.path == "/_requests":
                    self._send_json(200, [asdict(r) for r in server.requests()])
                elif self.path == "/_health":
                    self._send_json(200, {"status": "ok"})
                else:
                    self._send_json(404, {"error": f"replay: no GET {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path == "/_reset":
                    server.reset()
                    self._send_json(200, {"status": "reset"})
                    return
                parts = self.path.split("/", 3)
                tail = "/" + parts[3] if len(parts) == 4 else ""
                kind = ENDPOINTS.get(tail) or ENDPOINTS.get(tail.removeprefix("/v1"))
                if len(parts) != 4 or kind is None:
                    self._send_json(404, {"error": f"replay: POST /<label>/<script>/v1/chat/completions or "
                                                   f"/<label>/<script>/api/chat, not {self.path}"})
                    return
                label, script = unquote(parts[1]), unquote(parts[2])
                try:
                    step = server._next_step(label, script)
                except ValueError as exc:
                    self._send_json(400, {"error": f"replay: {exc}"})
                    return
                server._record(self._recorded(label, script, step, raw))
                self._play(kind, step)

            def _recorded(self, label: str, script: str, step: str, raw: bytes) -> RecordedRequest:
                headers = dict(self.headers.items())
                digest = None
                for name in list(headers):
                    if name.lower() == "authorization":
                        token = headers[name].removeprefix("Bearer ").strip()
                        digest = hashlib.sha256(token.encode()).hexdigest()
                        headers[name] = "<redacted>"
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                return RecordedRequest(label, script, step, self.command, self.path, headers, digest, body)

            def _play(self, kind: str, step: str) -> None:
                name, _, arg = step.partition(":")
                if name == "slow":
                    # Interruptible, so stopping the server does not wait for a sleeping handler.
                    if server._stopping.wait(float(arg) if arg else SLOW_DEFAULT_SECONDS):
                        return
                    name = "ok"
                if name == "garbage":
                    text = json.dumps(load_recording(kind, "ok")["body"])  # type: ignore[index]
                    self._send(200, {"Content-Type": "application/json"}, text[: len(text) // 3].encode())
                    return
                recording_name = arg if name == "fixture" else name
                recording = load_recording(kind, recording_name)
                if recording is None:
                    if not name.isdigit():
                        self._send_json(500, {"error": f"replay: no recording {kind}_{recording_name}.json"})
                        return
                    recording = _generic_error(kind, int(name))
                headers = dict(recording.get("headers", {}))
                if name == "429" and arg:
                    headers["Retry-After"] = arg
                body = recording["body"]
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self._send(int(recording["status"]), headers, payload)

            def _send_json(self, status: int, body: Any) -> None:
                self._send(status, {"Content-Type": "application/json"}, json.dumps(body).encode())

            def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        if key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to tell it

        return Handler


@contextmanager
def running_replay_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[ReplayServer]:
    server = ReplayServer(host, port).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="llm_replay")
def llm_replay_fixture() -> Iterator[ReplayServer]:
    """A fresh replay server on a free loopback port for one test."""
    with running_replay_server() as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.plugins.llm_replay",
                                     description="Serve recorded OpenAI/Ollama responses until killed.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    args = parser.parse_args(argv)
    server = ReplayServer(args.host, args.port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    print(f"llm replay server listening on {server.url}", flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
