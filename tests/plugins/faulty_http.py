"""S3 that fails on purpose: a fault-injecting HTTP reverse proxy in front of the moto server.

Retry and error handling in ``amas.storage.s3`` live in botocore and s3transfer, below any
function a test could patch, so the faults here are real HTTP: S3-style 5xx answers, answers
that arrive too late, connections reset mid-request. The client under test sees nothing but a
slow or broken S3 endpoint, exactly as it would in production.

The proxy forwards everything else to moto unchanged (request target, headers, Host included,
and bodies byte for byte), so SigV4 signatures computed for the proxy's address still match
what moto receives; moto does not verify them anyway.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, NamedTuple
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import pytest

Match = Callable[[str, str], bool] | str | None
"""Which requests a fault applies to: ``None`` (all), a method such as ``"PUT"``, or
``callable(method, target) -> bool`` where ``target`` is the request's path and query,
e.g. ``/bucket/key?partNumber=2&uploadId=...``."""

BUFFER_SIZE = 256 * 1024
UPSTREAM_TIMEOUT_SECONDS = 30.0
STOP_JOIN_SECONDS = 5.0

ERROR_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
"""S3's error code for a status, used when a fault names none."""

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1): never
# forwarded. Content-Length and Transfer-Encoding are set by the side that sends the body.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "upgrade", "expect", "transfer-encoding", "content-length",
})


class LogEntry(NamedTuple):
    method: str
    target: str
    outcome: Literal["forwarded", "error", "delayed", "reset"]


@dataclass
class _Fault:
    kind: Literal["error", "delay"]
    remaining: int
    matches: Callable[[str, str], bool]
    status: int = 500
    code: str = "InternalError"
    seconds: float = 0.0


class _Decision(NamedTuple):
    outcome: Literal["forwarded", "error", "delayed", "reset"]
    status: int = 0
    code: str = ""
    seconds: float = 0.0


class FaultyProxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 that forwards to ``upstream`` until told to fail.

    Faults, checked in this order for every request:

    * ``down(status)`` / ``down(reset=True)``: every request gets an S3 error with ``status``,
      or its connection is reset (TCP RST), until ``up()``.
    * ``fail_next(n, status, match)``: the next ``n`` matching requests get an S3 error
      (``<Error><Code>InternalError</Code>...``) and are not forwarded.
    * ``delay_next(n, seconds, match)``: the next ``n`` matching requests wait ``seconds``
      before they are forwarded, long enough for a client's read timeout to fire.

    Several ``fail_next``/``delay_next`` rules may be pending; the oldest rule that matches a
    request is used. What happened is counted: ``requests`` (every request seen),
    ``faulted`` (those that got an error, a delay or a reset), ``connections`` (TCP
    connections accepted; fewer than ``requests`` shows keep-alive at work) and ``log``, a
    list of ``(method, target, outcome)`` in arrival order.

    A client that sends ``Expect: 100-continue`` (botocore does for every file-like upload
    body) gets ``100 Continue`` only once the request is going to be forwarded; a faulted
    request is answered at once and its body never read, as S3 does, and the connection is
    then closed because the client may still send that body. If the upstream itself fails,
    the client gets ``502 BadGateway`` (logged as ``forwarded``: no fault was injected).
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = upstream
        self._upstream_address = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._down: _Decision | None = None
        self._stopping = threading.Event()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint: str | None = None
        self.requests = 0
        self.faulted = 0
        self.connections = 0
        self.log: list[LogEntry] = []

    @property
    def endpoint(self) -> str:
        """The URL clients use instead of the upstream's."""
        if self._endpoint is None:
            raise RuntimeError("FaultyProxy has not been started")
        return self._endpoint

    def start(self) -> FaultyProxy:
        handler = type("BoundHandler", (_ProxyHandler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections (ending stalls early) and wait for handler threads."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_SECONDS)
        with self._lock:
            open_connections = list(self._open.items())
        for connection, _ in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in open_connections:
            thread.join(STOP_JOIN_SECONDS)
        self._server = None

    def fail_next(self, n: int, status: int = 500, match: Match = None, *, code: str | None = None) -> None:
        """Answer the next ``n`` matching requests with an S3 XML error instead of forwarding them."""
        self._add(_Fault("error", n, _matcher(match), status=status, code=code or ERROR_CODES.get(status, "InternalError")))

    def delay_next(self, n: int, seconds: float, match: Match = None) -> None:
        """Hold the next ``n`` matching requests for ``seconds``, then forward them."""
        self._add(_Fault("delay", n, _matcher(match), seconds=seconds))

    def down(self, status: int = 503, *, reset: bool = False, code: str | None = None) -> None:
        """Fail every request until ``up()``: with an S3 error of ``status``, or by resetting the connection."""
        decision = (
            _Decision("reset") if reset
            else _Decision("error", status, code or ERROR_CODES.get(status, "InternalError"))
        )
        with self._lock:
            self._down = decision

    def up(self) -> None:
        """Forward requests again (pending ``fail_next``/``delay_next`` rules still apply)."""
        with self._lock:
            self._down = None

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError(f"n must be at least 1, not {fault.remaining}")
        with self._lock:
            self._faults.append(fault)

    def _decide(self, method: str, target: str) -> _Decision:
        with self._lock:
            self.requests += 1
            decision = self._down or self._next_fault(method, target)
            if decision.outcome != "forwarded":
                self.faulted += 1
            self.log.append(LogEntry(method, target, decision.outcome))
            return decision

    def _next_fault(self, method: str, target: str) -> _Decision:
        for fault in self._faults:
            if fault.matches(method, target):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                if fault.kind == "error":
                    return _Decision("error", fault.status, fault.code)
                return _Decision("delayed", seconds=fault.seconds)
        return _Decision("forwarded")

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open[connection] = threading.current_thread()

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.pop(connection, None)


class _ProxyHandler(BaseHTTPRequestHandler):
    """One client connection: each request on it is faulted or forwarded on a fresh upstream connection.

    A fresh upstream connection per request costs little on loopback and means a request is
    never sent on a connection the upstream has already given up on.
    """

    proxy: FaultyProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.proxy._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.proxy._closed(self.connection)

    def handle_expect_100(self) -> bool:
        # Deferred: whether to invite the body depends on the fault chosen for the request.
        return True

    def log_message(self, *args: object) -> None:
        # Quiet: the proxy's own ``log`` records every request for tests to assert on.
        pass

    def handle_request(self) -> None:
        decision = self.proxy._decide(self.command, self.path)
        try:
            if decision.outcome == "reset":
                self._reset()
            elif decision.outcome == "error":
                self._send_error(decision.status, decision.code)
            elif decision.outcome == "delayed" and self.proxy._stopping.wait(decision.seconds):
                self.close_connection = True
            else:
                self._forward()
        except (OSError, http.client.HTTPException):
            # The client gave up (its read timeout fired during a delay), the upstream broke off
            # mid-response, or the proxy is stopping: this connection is done either way.
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = handle_request

    def _forward(self) -> None:
        upstream = http.client.HTTPConnection(*self.proxy._upstream_address, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                if self._is_chunked():
                    upstream.putheader("Transfer-Encoding", "chunked")
                elif "Content-Length" in self.headers:
                    upstream.putheader("Content-Length", str(self._content_length()))
                upstream.endheaders()
                if self._expects_continue():
                    self.send_response_only(100)
                    self.end_headers()
                self._copy_request_body(upstream.send)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                # The request body may be half read: this connection cannot carry another request.
                self.close_connection = True
                self._send_error(502, "BadGateway", f"upstream {self.proxy.upstream} failed: {exc!r}")
                return
            self._relay_response(response)
        finally:
            upstream.close()

    def _relay_response(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD" or response.status in (204, 304):
            # No body follows; a HEAD's Content-Length describes the object it would have returned.
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        if response.length is not None:
            self.send_header("Content-Length", str(response.length))
            self.end_headers()
            while chunk := response.read(BUFFER_SIZE):
                self.wfile.write(chunk)
        elif response.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(BUFFER_SIZE):
                self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            # Delimited by the upstream closing: buffer it to give the client a length and keep-alive.
            body = response.read()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _send_error(self, status: int, code: str, message: str = "fault injected by FaultyProxy") -> None:
        if self._has_body() and not self.close_connection:
            if self._expects_continue():
                # The client waits for 100 Continue or an answer and may send the body after
                # all: close rather than read it as the next request.
                self.close_connection = True
            else:
                self._copy_request_body(lambda _chunk: None)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<Resource>{escape(self.path)}</Resource><RequestId>faulty-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", "faulty-proxy")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client
        # sees "connection reset by peer", as when a load balancer drops a dead backend.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _copy_request_body(self, send: Callable[[bytes], object]) -> None:
        if self._is_chunked():
            for piece in self._raw_chunks():
                send(piece)
            return
        remaining = self._content_length()
        while remaining > 0:
            chunk = self.rfile.read(min(BUFFER_SIZE, remaining))
            if not chunk:
                raise ConnectionError(f"client closed the connection with {remaining} body bytes unsent")
            send(chunk)
            remaining -= len(chunk)

    def _raw_chunks(self) -> Iterator[bytes]:
        """The chunked body as it arrived (sizes, extensions, data, trailers), piece by piece."""
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line.endswith(b"\n"):
                raise ConnectionError("chunked request body ended inside a chunk-size line")
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            remaining = size + 2  # the data and its CRLF
            while remaining > 0:
                data = self.rfile.read(min(BUFFER_SIZE, remaining))
                if not data:
                    raise ConnectionError("chunked request body ended inside a chunk")
                yield data
                remaining -= len(data)
        while True:
            trailer = self.rfile.readline(65537)
            if not trailer.endswith(b"\n"):
                raise ConnectionError("chunked request body ended inside its trailers")
            yield trailer
            if trailer in (b"\r\n", b"\n"):
                return

    def _is_chunked(self) -> bool:
        codings = [coding.strip().lower() for coding in self.headers.get("Transfer-Encoding", "").split(",")]
        return codings[-1] == "chunked"

    def _content_length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def _has_body(self) -> bool:
        return self._is_chunked() or self._content_length() > 0

    def _expects_continue(self) -> bool:
        return self.headers.get("Expect", "").lower() == "100-continue"


def _matcher(match: Match) -> Callable[[str, str], bool]:
    if match is None:
        return lambda _method, _target: True
    if isinstance(match, str):
        wanted = match.upper()
        return lambda method, _target: method == wanted
    if callable(match):
        return match
    raise TypeError(f"match must be None, a method name or callable(method, target), not {type(match).__name__}")


@pytest.fixture
def faulty_s3(moto_server: str) -> Iterator[FaultyProxy]:
    """A started ``FaultyProxy`` in front of the session's moto server, with no faults set.

    Give clients ``faulty_s3.endpoint``; set up buckets and inspect results through moto
    directly (``s3_bucket``, ``s3_client``) so that checks do not pass through the faults.
    One proxy per test (it starts in milliseconds), so faults and counters never leak
    between tests; stopping it cuts any stalled request short.
    """
    proxy = FaultyProxy(moto_server).start()
    try:
        yield proxy
    finally:
        proxy.stop()
