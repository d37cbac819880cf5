"""Real HTTP and HTTPS servers on 127.0.0.1 for the web_audit tests, and the certificates they use.

``web_pki`` makes, at test time with ``cryptography``, a test CA and the certificates the HTTPS
servers present: a CA-signed leaf for localhost/127.0.0.1 (RSA 2048, valid 90 days), a CA-signed
leaf for another name only (valid 10 days) and a self-signed certificate that expired 10 days
ago. Each server runs in a thread on port 0 and answers from a table of routes (path -> status,
headers, body) that a test may extend before it makes a request.

Fixtures are declared with ``name=`` (functions ``<name>_fixture``) so a test module can import
them explicitly without its test parameters shadowing the import (ruff F811):
``from tests.plugins.web_servers import http_server_fixture  # noqa: F401`` gives ``http_server``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "AMAS Test CA"
LEAF_DAYS = 90
MISMATCH_DAYS = 10
EXPIRED_DAYS_AGO = 10

HARDENED_HEADERS: list[tuple[str, str]] = [
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains; preload"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
    ("Set-Cookie", "__Host-session=3f9a7c; Path=/; Secure; HttpOnly; SameSite=Strict"),
    ("Set-Cookie", "prefs=compact; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600"),
]

BARE_HEADERS: list[tuple[str, str]] = [
    ("Server", "Apache/2.4.1 (Unix)"),
    ("X-Powered-By", "PHP/8.1.2"),
    ("Set-Cookie", "sessionid=abc123; Path=/"),
    ("Set-Cookie", "theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT"),
]

WEAK_HEADERS: list[tuple[str, str]] = [
    ("Content-Security-Policy", "default-src *; script-src 'self' 'unsafe-inline' 'unsafe-eval' https:"),
    ("Strict-Transport-Security", "max-age=3600"),
    ("X-Frame-Options", "ALLOW-FROM https://example.com/"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "unsafe-url"),
    ("Permissions-Policy", "camera=*, geolocation=(self)"),
    ("Set-Cookie", "auth_token=zz9; Path=/; HttpOnly; SameSite=None"),
]


@dataclass
class Route:
    """What the server answers on one path."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"<!doctype html><title>amas test page</title><p>hello</p>"


def default_routes() -> dict[str, Route]:
    """The pages every test server serves: hardened, bare, weak, a two-hop redirect and a loop."""
    return {
        "/hardened": Route(headers=list(HARDENED_HEADERS)),
        "/bare": Route(headers=list(BARE_HEADERS)),
        "/weak": Route(headers=list(WEAK_HEADERS)),
        "/redirect": Route(302, [("Location", "/hop"), ("Set-Cookie", "visit=1; Path=/")], b""),
        "/hop": Route(301, [("Location", "/hardened")], b""),
        "/loop": Route(302, [("Location", "/loop")], b""),
    }


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key as PEM files, and the parsed certificate."""

    cert_path: Path
    key_path: Path
    cert: x509.Certificate


@dataclass(frozen=True)
class WebPKI:
    ca_cert: x509.Certificate
    ca_path: Path
    """PEM of the test CA: pass it as ``ca_file`` to trust the CA-signed servers."""
    leaf: CertFiles
    """Signed by the CA for DNS:localhost and IP:127.0.0.1, RSA 2048, valid for LEAF_DAYS more days."""
    mismatch: CertFiles
    """Signed by the CA for DNS:other.example only, valid for MISMATCH_DAYS more days."""
    expired_self_signed: CertFiles
    """Self-signed for IP:127.0.0.1, expired EXPIRED_DAYS_AGO days ago."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AMAS Tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Any) -> CertFiles:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return CertFiles(cert_path, key_path, cert)


def _leaf(subject: str, sans: list[x509.GeneralName], not_before: datetime, not_after: datetime,
          issuer: x509.Name | None, issuer_key: Any) -> tuple[x509.Certificate, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def make_pki(directory: Path) -> WebPKI:
    """Generate the test CA and the three server certificates under ``directory``."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca = _write(directory, "ca", ca_cert, ca_key)
    localhost = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    # One extra hour so that whole days to expiry come out exact however long the suite runs.
    leaf = _write(directory, "leaf", *_leaf("localhost", localhost, now - timedelta(hours=1),
                                            now + timedelta(days=LEAF_DAYS, hours=1), ca_cert.subject, ca_key))
    mismatch = _write(directory, "mismatch", *_leaf(
        "other.example", [x509.DNSName("other.example")], now - timedelta(hours=1),
        now + timedelta(days=MISMATCH_DAYS, hours=1), ca_cert.subject, ca_key))
    expired = _write(directory, "expired", *_leaf(
        "expired.test", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], now - timedelta(days=400),
        now - timedelta(days=EXPIRED_DAYS_AGO) + timedelta(hours=1), None, None))
    return WebPKI(ca_cert=ca_cert, ca_path=ca.cert_path, leaf=leaf, mismatch=mismatch, expired_self_signed=expired)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: _RouteServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        route = self.server.routes.get(urlsplit(self.path).path, Route(404, [], b"not found"))
        # send_response_only: no automatic Server header, so each route decides what it reveals.
        self.send_response_only(route.status)
        self.send_header("Date", self.date_time_string())
        for name, value in route.headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-type" for name, _ in route.headers):
            self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        return  # keep test output clean; the tests assert on what the client saw


class _RouteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        # The handshake runs in the request's thread (finish_request), not in the accept loop,
        # so a client that gives up mid-handshake cannot stall the server.
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request.do_handshake()
            except OSError:  # the client refused our certificate: that is what some tests want
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client closing a keep-alive connection is not an error worth printing


class WebServer:
    """A route-table server on 127.0.0.1 in a thread; ``url(path)`` gives a full URL to it."""

    def __init__(self, *, tls: CertFiles | None = None, routes: dict[str, Route] | None = None) -> None:
        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_path, tls.key_path)
        self.routes = routes if routes is not None else default_routes()
        self._server = _RouteServer(self.routes, context)
        self.scheme = "https" if tls else "http"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"web-server-{self.port}", daemon=True)

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session", name="web_pki")
def web_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> WebPKI:
    """The test CA and server certificates, made once per session."""
    return make_pki(tmp_path_factory.mktemp("web-pki"))


@pytest.fixture(name="http_server")
def http_server_fixture() -> Iterator[WebServer]:
    with WebServer() as server:
        yield server


@pytest.fixture(name="https_server")
def https_server_fixture(web_pki: WebPKI) -> Iterator[WebServer]:
    """HTTPS with the CA-signed localhost/127.0.0.1 certificate (trust it with ``ca_file=web_pki.ca_path``)."""
    with WebServer(tls=web_pki.leaf) as server:
        yield server


@pytest.fixture(name="https_mismatch_server")
def https_mismatch_server_fixture(web_pki: WebPKI) -> Iterator[WebServer]:
    """HTTPS with a CA-signed certificate for other.example only."""
    with WebServer(tls=web_pki.mismatch) as server:
        yield server


@pytest.fixture(name="https_expired_server")
def https_expired_server_fixture(web_pki: WebPKI) -> Iterator[WebServer]:
    """HTTPS with a self-signed certificate that expired EXPIRED_DAYS_AGO days ago."""
    with WebServer(tls=web_pki.expired_self_signed) as server:
        yield server


@pytest.fixture(name="refused_port")
def refused_port_fixture() -> int:
    """A port on 127.0.0.1 that was just free: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="silent_port")
def silent_port_fixture() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
