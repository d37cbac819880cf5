"""web_audit: a security audit of one URL: transport, TLS certificate, security headers, cookies.

The agent fetches the URL with httpx (GET, redirects followed by hand so each hop is recorded),
then, when the page is served over HTTPS, opens its own TLS connection with ``ssl`` to read the
negotiated protocol and cipher and the peer certificate (DER, parsed with ``cryptography``).
Cookie values are never kept: only names and attributes reach the result and the evidence.

Scoring (the grade is about what a browser is told to enforce, and what the transport allows):

=======================================  ======  ==============================================
check                                    weight  pass / weak / missing
=======================================  ======  ==============================================
Content-Security-Policy                      25  no unsafe-inline / unsafe-eval / wildcard sources
Strict-Transport-Security (HTTPS only)       20  max-age >= 15552000 (180 days) and includeSubDomains
X-Frame-Options or CSP frame-ancestors       15  DENY / SAMEORIGIN, or frame-ancestors without ``*``
X-Content-Type-Options                       10  ``nosniff``
Referrer-Policy                              10  no-referrer, same-origin, strict-origin(-when-cross-origin)
Permissions-Policy                           10  present, no powerful feature granted to ``*``
Server (no version)                           5  absent or without a version number
X-Powered-By (absent)                         5  absent
=======================================  ======  ==============================================

A check scores its full weight on ``pass``, half on ``weak`` and nothing on ``missing``; the
score is the rounded sum (0-100). Grades: A >= 90, B >= 80, C >= 65, D >= 50, E >= 35, else F.
Caps: a final page served over plain HTTP cannot grade above C; a certificate a browser refuses
(expired, not yet valid, untrusted or self-signed, wrong host name) or TLS older than 1.2 gives F.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import certifi
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, Field, field_validator

from amas.registry import SEVERITY_ORDER, AgentContext, AgentInputError, AgentResult, Finding, Severity

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HSTS_MIN_MAX_AGE = 15_552_000  # 180 days, the floor most audit guides (and the HSTS preload list's spirit) use
EXPIRY_HIGH_DAYS = 14
EXPIRY_MEDIUM_DAYS = 30
USER_AGENT = "amas-web-audit/1.0"

Verdict = Literal["pass", "weak", "missing"]
Grade = Literal["A", "B", "C", "D", "E", "F"]

VERDICT_FACTOR: dict[str, float] = {"pass": 1.0, "weak": 0.5, "missing": 0.0}
GRADE_FLOORS: list[tuple[int, Grade]] = [(90, "A"), (80, "B"), (65, "C"), (50, "D"), (35, "E")]
GRADE_ORDER = "ABCDEF"

_SESSION_NAME = re.compile(r"sess|sid|auth|token|jwt|login|remember", re.IGNORECASE)
_ANTI_CSRF_NAME = re.compile(r"csrf|xsrf", re.IGNORECASE)
_VERSION = re.compile(r"\d")
_GOOD_REFERRER = frozenset({"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"})
_WEAK_REFERRER = {
    "unsafe-url": "sends the full URL (path and query) to every origin, even over plain HTTP",
    "no-referrer-when-downgrade": "sends the full URL to every HTTPS origin",
    "origin": "sends the origin to every site, even over plain HTTP",
    "origin-when-cross-origin": "sends the origin cross-origin even when downgrading to HTTP",
}
_POWERFUL_FEATURES = frozenset({"camera", "microphone", "geolocation", "payment", "usb", "serial", "bluetooth",
                                "hid", "display-capture", "screen-wake-lock", "clipboard-read"})
_SCRIPT_SCHEMES = frozenset({"http:", "https:", "data:", "blob:", "filesystem:"})


class WebAuditInput(BaseModel):
    url: str = Field(description="The http:// or https:// URL to audit, e.g. https://example.com/login.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Give up on a connection or response after this many seconds.")
    follow_redirects: bool = Field(True, description=f"Follow up to {MAX_REDIRECTS} redirects and audit the final page.")
    verify_tls: bool = Field(True, description="Refuse certificates that do not verify. When off, the certificate is still read, reported and its problems flagged.")
    ca_file: str | None = Field(None, description="PEM bundle of CA certificates to trust instead of the built-in list (a private CA). Relative to the working directory.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if "://" not in value:
            raise ValueError(f"{value!r} has no scheme; give a full URL such as https://{value or 'example.com'}/")
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"scheme {parts.scheme!r} is not supported; use http:// or https://")
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host name")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are not supported (they would be kept in the audit record)")
        try:
            parts.port  # noqa: B018 (urlsplit validates the port lazily)
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port; use a number from 1 to 65535") from None
        # The fragment never reaches the server.
        return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


class RedirectHop(BaseModel):
    url: str = Field(description="The URL that answered with a redirect.")
    status: int
    location: str = Field(description="Where it sent the client (resolved against the URL).")


class TLSInfo(BaseModel):
    url: str = Field(description="The HTTPS URL whose server was examined.")
    protocol: str = Field(description="Negotiated protocol, e.g. TLSv1.3.")
    cipher: str
    cipher_bits: int
    subject: str = Field(description="Certificate subject (RFC 4514).")
    subject_cn: str | None
    issuer: str
    issuer_cn: str | None
    sans: list[str] = Field(description="subjectAltName entries, as DNS:name and IP:address.")
    serial_number: str = Field(description="Hexadecimal.")
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    days_to_expiry: int = Field(description="Whole days from the audit to notAfter (negative once expired).")
    self_signed: bool
    hostname_match: bool = Field(description="The URL's host matches a subjectAltName (browsers ignore the CN).")
    trusted: bool = Field(description="The chain verifies against ca_file or the built-in CA list (host name aside).")
    trust_error: str | None = Field(None, description="Why the chain did not verify.")
    key_type: str = Field(description="RSA, EC, Ed25519, Ed448 or DSA.")
    key_size: int
    key_curve: str | None = None
    signature_hash: str | None = Field(None, description="Hash of the certificate signature, e.g. sha256.")
    verification_enabled: bool = Field(description="Whether verify_tls was on for the audit.")


class HeaderCheck(BaseModel):
    check: str = Field(description="What was checked, named after the header.")
    value: str | None = Field(description="The header value(s) seen, if any.")
    verdict: Verdict
    reason: str
    weight: int
    points: float


class CookieCheck(BaseModel):
    name: str
    set_by: str = Field(description="The URL whose response set the cookie.")
    secure: bool
    http_only: bool
    same_site: str | None
    domain: str | None
    path: str | None
    persistent: bool = Field(description="Has Expires or Max-Age (survives the browser session).")
    session_like: bool = Field(description="The name looks like a session or authentication cookie.")
    issues: list[str]


class WebAuditOutput(AgentResult):
    url: str = Field(description="The URL audited, as requested.")
    final_url: str
    redirects: list[RedirectHop] = Field(description="Each redirect followed, in order.")
    redirects_to_https: bool | None = Field(description="For an http:// URL: whether it sends the client to HTTPS.")
    status_code: int
    http_version: str
    response_time_ms: float = Field(description="Request sent to response headers received, final hop.")
    total_time_ms: float = Field(description="All hops, including redirects.")
    server: str | None = Field(description="The Server header of the final response.")
    response_headers: list[list[str]] = Field(description="Final response headers as [name, value]; cookie values redacted.")
    tls: TLSInfo | None = Field(description="Certificate and handshake, when the page (or the last HTTPS hop) used HTTPS.")
    headers: list[HeaderCheck] = Field(description="Security header checks with verdicts and points.")
    cookies: list[CookieCheck] = Field(description="Every Set-Cookie seen along the redirect chain.")
    score: int = Field(description="Header score, 0-100 (see the module docstring).")
    grade: Grade
    grade_caps: list[str] = Field(description="Why the grade is lower than the score alone gives.")


class _Check:
    def __init__(self, check: str, weight: int, missing: Severity, weak: Severity, weak_title: str = "") -> None:
        self.check, self.weight, self.missing, self.weak = check, weight, missing, weak
        self.missing_title = f"Missing {check}"
        self.weak_title = weak_title or f"Weak {check}"

    def result(self, value: str | None, verdict: Verdict, reason: str) -> HeaderCheck:
        return HeaderCheck(check=self.check, value=value, verdict=verdict, reason=reason, weight=self.weight,
                           points=self.weight * VERDICT_FACTOR[verdict])


CSP = _Check("Content-Security-Policy", 25, Severity.medium, Severity.medium)
HSTS = _Check("Strict-Transport-Security", 20, Severity.medium, Severity.low)
FRAMING = _Check("X-Frame-Options / frame-ancestors", 15, Severity.medium, Severity.low)
NOSNIFF = _Check("X-Content-Type-Options", 10, Severity.low, Severity.low)
REFERRER = _Check("Referrer-Policy", 10, Severity.low, Severity.low)
PERMISSIONS = _Check("Permissions-Policy", 10, Severity.low, Severity.low)
SERVER = _Check("Server", 5, Severity.low, Severity.low, "Server header reveals the software version")
POWERED_BY = _Check("X-Powered-By", 5, Severity.low, Severity.low, "X-Powered-By header reveals the framework")
CHECKS = (CSP, HSTS, FRAMING, NOSNIFF, REFERRER, PERMISSIONS, SERVER, POWERED_BY)


def csp_directives(policy: str) -> dict[str, list[str]]:
    """Directive name -> source list; the first occurrence of a directive wins, as browsers do."""
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        tokens = part.split()
        if tokens and tokens[0].lower() not in directives:
            directives[tokens[0].lower()] = tokens[1:]
    return directives


def csp_issues(policy: str) -> list[str]:
    """What weakens one enforced policy: unsafe script sources and wildcards."""
    directives = csp_directives(policy)
    issues: list[str] = []
    script_directive = "script-src" if "script-src" in directives else "default-src"
    script = [s.lower() for s in directives.get(script_directive, [])]
    if script_directive not in directives:
        issues.append("no script-src or default-src, so scripts may load from anywhere")
    # With a nonce, a hash or strict-dynamic, CSP2+ browsers ignore 'unsafe-inline'.
    guarded = any(s.startswith(("'nonce-", "'sha256-", "'sha384-", "'sha512-")) or s == "'strict-dynamic'"
                  for s in script)
    if "'unsafe-inline'" in script and not guarded:
        issues.append(f"{script_directive} allows 'unsafe-inline'")
    if "'unsafe-eval'" in script:
        issues.append(f"{script_directive} allows 'unsafe-eval'")
    for scheme in sorted(_SCRIPT_SCHEMES.intersection(script)):
        issues.append(f"{script_directive} allows any {scheme} source")
    for name, sources in directives.items():
        if "*" in sources:
            issues.append(f"{name} allows any origin (*)")
    return issues


def _check_csp(policies: list[str], report_only: list[str]) -> HeaderCheck:
    if not policies:
        if report_only:
            return CSP.result("; ".join(report_only), "weak",
                              "only Content-Security-Policy-Report-Only, which reports but blocks nothing")
        return CSP.result(None, "missing", "not sent: nothing limits where scripts and other content load from")
    # Every enforced policy applies, so the strictest one decides what a script can do.
    issues = min((csp_issues(p) for p in policies), key=len)
    value = " , ".join(policies)
    if issues:
        return CSP.result(value, "weak", "; ".join(issues))
    return CSP.result(value, "pass", "enforced, without unsafe-inline, unsafe-eval or wildcard sources")


def hsts_fields(value: str) -> tuple[int | None, bool, bool]:
    """(max-age or None, includeSubDomains, preload) of a Strict-Transport-Security value."""
    max_age: int | None = None
    include_subdomains = preload = False
    for part in value.split(";"):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name == "max-age" and max_age is None:
            arg = arg.strip().strip('"')
            max_age = int(arg) if arg.isdigit() else None
        elif name == "includesubdomains":
            include_subdomains = True
        elif name == "preload":
            preload = True
    return max_age, include_subdomains, preload


def _check_hsts(values: list[str], https: bool) -> HeaderCheck:
    value = values[0] if values else None
    if not https:
        note = " (the header is sent but ignored)" if value else ""
        return HSTS.result(value, "missing", f"page served over plain HTTP, where browsers ignore HSTS{note}")
    if value is None:
        return HSTS.result(None, "missing", "not sent: a network attacker can downgrade the first visit to HTTP")
    max_age, include_subdomains, preload = hsts_fields(value)
    problems = []
    if max_age is None:
        problems.append("no valid max-age")
    elif max_age < HSTS_MIN_MAX_AGE:
        problems.append(f"max-age={max_age} is below {HSTS_MIN_MAX_AGE} (180 days)")
    if not include_subdomains:
        problems.append("no includeSubDomains")
    if problems:
        return HSTS.result(value, "weak", "; ".join(problems))
    return HSTS.result(value, "pass", f"max-age={max_age} with includeSubDomains" + (", preload" if preload else ""))


def _check_framing(xfo_values: list[str], policies: list[str]) -> HeaderCheck:
    parsed = [csp_directives(p) for p in policies]
    ancestors = next((d["frame-ancestors"] for d in parsed if "frame-ancestors" in d), None)
    xfo = xfo_values[0].strip() if xfo_values else None
    seen = "; ".join(v for v in (f"X-Frame-Options: {xfo}" if xfo else "",
                                 f"frame-ancestors {' '.join(ancestors)}" if ancestors is not None else "") if v)
    if ancestors is not None and "*" not in ancestors:
        return FRAMING.result(seen, "pass", "CSP frame-ancestors restricts who may frame the page")
    if xfo and xfo.upper() in ("DENY", "SAMEORIGIN"):
        return FRAMING.result(seen, "pass", f"X-Frame-Options {xfo.upper()}")
    if ancestors is not None:
        return FRAMING.result(seen, "weak", "frame-ancestors allows any origin (*)")
    if xfo and xfo.upper().startswith("ALLOW-FROM"):
        return FRAMING.result(seen, "weak", "X-Frame-Options ALLOW-FROM is obsolete and ignored by current browsers")
    if xfo:
        return FRAMING.result(seen, "weak", f"X-Frame-Options value {xfo!r} is not DENY or SAMEORIGIN")
    return FRAMING.result(None, "missing", "neither X-Frame-Options nor frame-ancestors: the page can be framed "
                                           "(clickjacking)")


def _check_nosniff(values: list[str]) -> HeaderCheck:
    if not values:
        return NOSNIFF.result(None, "missing", "not sent: browsers may guess content types (MIME sniffing)")
    if values[0].strip().lower() == "nosniff":
        return NOSNIFF.result(values[0], "pass", "nosniff")
    return NOSNIFF.result(values[0], "weak", "the only valid value is nosniff")


def _check_referrer(values: list[str]) -> HeaderCheck:
    if not values:
        return REFERRER.result(None, "missing", "not sent: the browser default applies")
    value = ", ".join(values)
    # A comma-separated list is a fallback chain: the last token the browser knows wins.
    known = [t for t in (t.strip().lower() for t in value.split(",")) if t in _GOOD_REFERRER or t in _WEAK_REFERRER]
    if not known:
        return REFERRER.result(value, "weak", "no recognised policy token")
    policy = known[-1]
    if policy in _GOOD_REFERRER:
        return REFERRER.result(value, "pass", policy)
    return REFERRER.result(value, "weak", f"{policy} {_WEAK_REFERRER[policy]}")


def _check_permissions(values: list[str], feature_policy: list[str]) -> HeaderCheck:
    if not values:
        if feature_policy:
            return PERMISSIONS.result(feature_policy[0], "weak",
                                      "only the legacy Feature-Policy; current browsers read Permissions-Policy")
        return PERMISSIONS.result(None, "missing", "not sent: embedded content may ask for camera, microphone, "
                                                   "location")
    value = ", ".join(values)
    features: dict[str, str] = {}
    for item in value.split(","):
        name, sep, allow = item.strip().partition("=")
        if sep and name.strip():
            features[name.strip().lower()] = allow.strip()
    if not features:
        return PERMISSIONS.result(value, "weak", "no feature=allowlist entries could be read")
    open_features = sorted(f for f, allow in features.items() if f in _POWERFUL_FEATURES and allow == "*")
    if open_features:
        return PERMISSIONS.result(value, "weak", "grants to every origin: " + ", ".join(f"{f}=*" for f in open_features))
    return PERMISSIONS.result(value, "pass", f"restricts {len(features)} feature(s)")


def _check_server(values: list[str]) -> HeaderCheck:
    if not values:
        return SERVER.result(None, "pass", "not sent")
    if _VERSION.search(values[0]):
        return SERVER.result(values[0], "weak", f"reveals the software version ({values[0]})")
    return SERVER.result(values[0], "pass", "names the software without a version")


def _check_powered_by(values: list[str]) -> HeaderCheck:
    if not values:
        return POWERED_BY.result(None, "pass", "not sent")
    return POWERED_BY.result(", ".join(values), "weak", f"reveals the framework ({', '.join(values)})")


def evaluate_headers(headers: Mapping[str, list[str]], *, https: bool) -> list[HeaderCheck]:
    """Grade the security headers; ``headers`` maps lower-case names to every value sent."""

    def get(name: str) -> list[str]:
        return [v for v in headers.get(name, []) if v.strip()]

    policies = get("content-security-policy")
    return [
        _check_csp(policies, get("content-security-policy-report-only")),
        _check_hsts(get("strict-transport-security"), https),
        _check_framing(get("x-frame-options"), policies),
        _check_nosniff(get("x-content-type-options")),
        _check_referrer(get("referrer-policy")),
        _check_permissions(get("permissions-policy"), get("feature-policy")),
        _check_server(get("server")),
        _check_powered_by(get("x-powered-by")),
    ]


def grade_for(score: int, caps: list[tuple[Grade, str]]) -> Grade:
    """The letter for ``score``, lowered to the worst cap."""
    grade: Grade = next((g for floor, g in GRADE_FLOORS if score >= floor), "F")
    for cap, _ in caps:
        if GRADE_ORDER.index(cap) > GRADE_ORDER.index(grade):
            grade = cap
    return grade


def parse_set_cookie(header: str, set_by: str) -> CookieCheck:
    """Name and attributes of one Set-Cookie header; the value is dropped on purpose."""
    first, *attributes = header.split(";")
    name = first.partition("=")[0].strip() if "=" in first else ""
    attrs: dict[str, str] = {}
    for attribute in attributes:
        key, _, value = attribute.strip().partition("=")
        attrs.setdefault(key.strip().lower(), value.strip())
    same_site = attrs.get("samesite")
    session_like = bool(_SESSION_NAME.search(name)) and not _ANTI_CSRF_NAME.search(name)
    https = set_by.startswith("https://")
    cookie = CookieCheck(
        name=name, set_by=set_by, secure="secure" in attrs, http_only="httponly" in attrs,
        same_site=same_site.capitalize() if same_site else None, domain=attrs.get("domain") or None,
        path=attrs.get("path") or None, persistent="expires" in attrs or "max-age" in attrs,
        session_like=session_like, issues=[],
    )
    cookie.issues = [title for _, title, _ in _cookie_problems(cookie, https)]
    return cookie


def _cookie_problems(cookie: CookieCheck, https: bool) -> list[tuple[Severity, str, str]]:
    kind = "session cookie" if cookie.session_like else "cookie"
    problems: list[tuple[Severity, str, str]] = []
    if not https and cookie.session_like:
        problems.append((Severity.high, f"{kind} {cookie.name} is set over plain HTTP",
                         "Anyone on the network can read and replay it; serve the site over HTTPS only."))
    elif https and not cookie.secure:
        problems.append((Severity.high if cookie.session_like else Severity.low, f"{kind} {cookie.name} lacks Secure",
                         "Without Secure the browser also sends it over plain HTTP, where it can be read."))
    if not cookie.http_only:
        problems.append((Severity.medium if cookie.session_like else Severity.low,
                         f"{kind} {cookie.name} lacks HttpOnly",
                         "Scripts (including injected ones) can read it; add HttpOnly unless scripts need it."))
    if cookie.same_site is None:
        problems.append((Severity.low if cookie.session_like else Severity.info, f"{kind} {cookie.name} lacks SameSite",
                         "Browsers differ in their default; set SameSite=Lax or Strict to limit cross-site requests."))
    elif cookie.same_site == "None" and not cookie.secure:
        problems.append((Severity.medium, f"{kind} {cookie.name} has SameSite=None without Secure",
                         "Browsers reject SameSite=None cookies that are not Secure."))
    if cookie.name.startswith("__Host-") and (not cookie.secure or cookie.domain or cookie.path != "/"):
        problems.append((Severity.medium, f"{kind} {cookie.name} breaks the __Host- prefix rules",
                         "__Host- cookies need Secure, Path=/ and no Domain, or browsers reject them."))
    elif cookie.name.startswith("__Secure-") and not cookie.secure:
        problems.append((Severity.medium, f"{kind} {cookie.name} breaks the __Secure- prefix rule",
                         "__Secure- cookies need Secure, or browsers reject them."))
    return problems


def _cn(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def certificate_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)]
            + [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)])


def hostname_matches(host: str, sans: list[str]) -> bool:
    """RFC 6125 matching against subjectAltName only: exact names, IPs, and ``*.`` for one left label."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return any(s.startswith("IP:") and ipaddress.ip_address(s[3:]) == address for s in sans)
    host = host.lower().rstrip(".")
    for san in sans:
        if not san.startswith("DNS:"):
            continue
        pattern = san[4:].lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_details(cert: x509.Certificate) -> tuple[str, int, str | None]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, 0, None


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> tuple[str, tuple[str, str, int], bytes]:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None:
                raise ssl.SSLError("the server sent no certificate")
            return tls.version() or "unknown", tls.cipher() or ("unknown", "unknown", 0), der


def probe_tls(url: str, *, timeout: float, ca_file: str | None, verification_enabled: bool,
              now: datetime | None = None) -> TLSInfo:
    """Handshake with the server of an https ``url`` and describe the connection and its certificate.

    The first handshake checks the chain (not the host name, which is checked separately so the
    two problems are reported apart); when the chain does not verify, a second, unverified
    handshake reads the certificate anyway.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    verifying = _verifying_context(ca_file, False)
    trust_error = None
    try:
        try:
            protocol, cipher, der = _handshake(host, port, verifying, timeout)
        except ssl.SSLCertVerificationError as exc:
            trust_error = exc.verify_message or exc.reason or str(exc)
            protocol, cipher, der = _handshake(host, port, _unverified_context(), timeout)
    except (OSError, ssl.SSLError) as exc:
        raise AgentInputError(f"url: TLS handshake with {host}:{port} failed ({_one_line(exc)})") from None
    cert = x509.load_der_x509_certificate(der)
    now = now or datetime.now(UTC)
    sans = certificate_sans(cert)
    key_type, key_size, curve = _key_details(cert)
    not_after = cert.not_valid_after_utc
    return TLSInfo(
        url=url, protocol=protocol, cipher=cipher[0], cipher_bits=int(cipher[2] or 0),
        subject=cert.subject.rfc4514_string(), subject_cn=_cn(cert.subject),
        issuer=cert.issuer.rfc4514_string(), issuer_cn=_cn(cert.issuer), sans=sans,
        serial_number=format(cert.serial_number, "x"), fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc, not_after=not_after,
        days_to_expiry=math.floor((not_after - now).total_seconds() / 86400),
        self_signed=_is_self_signed(cert), hostname_match=hostname_matches(host, sans),
        trusted=trust_error is None, trust_error=trust_error, key_type=key_type, key_size=key_size, key_curve=curve,
        signature_hash=cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else None,
        verification_enabled=verification_enabled,
    )


def tls_findings(tls: TLSInfo, now: datetime) -> tuple[list[Finding], list[str]]:
    """Findings about the connection and certificate, and the reasons (if any) that force grade F."""
    where = tls.url
    findings: list[Finding] = []
    refused: list[str] = []
    if tls.not_after < now:
        findings.append(Finding(severity=Severity.critical, title=f"Certificate expired {-tls.days_to_expiry} days ago",
                                detail=f"notAfter {tls.not_after.isoformat()}; browsers refuse the site.",
                                location=where))
        refused.append("certificate expired")
    elif tls.not_before > now:
        findings.append(Finding(severity=Severity.high, title="Certificate is not valid yet",
                                detail=f"notBefore {tls.not_before.isoformat()}.", location=where))
        refused.append("certificate not valid yet")
    elif tls.days_to_expiry <= EXPIRY_HIGH_DAYS:
        findings.append(Finding(severity=Severity.high, title=f"Certificate expires in {tls.days_to_expiry} days",
                                detail=f"notAfter {tls.not_after.isoformat()}; renew it now.", location=where))
    elif tls.days_to_expiry <= EXPIRY_MEDIUM_DAYS:
        findings.append(Finding(severity=Severity.medium, title=f"Certificate expires in {tls.days_to_expiry} days",
                                detail=f"notAfter {tls.not_after.isoformat()}; plan the renewal.", location=where))
    if tls.self_signed:
        findings.append(Finding(severity=Severity.high, title="Self-signed certificate",
                                detail="No CA vouches for it; browsers refuse it unless told to trust it.",
                                location=where))
        refused.append("self-signed certificate")
    elif not tls.trusted:
        findings.append(Finding(severity=Severity.high, title="Certificate chain does not verify",
                                detail=f"{tls.trust_error}.", location=where))
        refused.append("untrusted certificate")
    if not tls.hostname_match:
        findings.append(Finding(severity=Severity.high, title="Certificate does not match the host name",
                                detail=f"subjectAltName: {', '.join(tls.sans) or '(none)'}.", location=where))
        refused.append("host name mismatch")
    if tls.protocol in ("SSLv3", "TLSv1", "TLSv1.1"):
        findings.append(Finding(severity=Severity.high, title=f"Obsolete protocol {tls.protocol}",
                                detail="Use TLS 1.2 or 1.3 only.", location=where))
        refused.append(f"obsolete {tls.protocol}")
    weak_key = (tls.key_type in ("RSA", "DSA") and tls.key_size < 2048) or (tls.key_type == "EC" and tls.key_size < 256)
    if weak_key:
        findings.append(Finding(severity=Severity.high, title=f"Weak {tls.key_type} key ({tls.key_size} bits)",
                                detail="Use RSA 2048+ or EC P-256+.", location=where))
    if tls.signature_hash in ("md5", "sha1"):
        findings.append(Finding(severity=Severity.medium, title=f"Certificate signed with {tls.signature_hash}",
                                detail="Collisions are practical; reissue with SHA-256.", location=where))
    if tls.cipher_bits and tls.cipher_bits < 128:
        findings.append(Finding(severity=Severity.medium, title=f"Weak cipher {tls.cipher} ({tls.cipher_bits} bits)",
                                detail="Disable ciphers under 128 bits.", location=where))
    if not tls.verification_enabled:
        findings.append(Finding(severity=Severity.info, title="TLS verification was disabled for this audit",
                                detail="verify_tls=false: the page was fetched whatever the certificate said.",
                                location=where))
    return findings, refused


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@functools.lru_cache(maxsize=16)
def _verifying_context(ca_file: str | None, check_hostname: bool) -> ssl.SSLContext:
    """A context trusting ``ca_file`` (or certifi's bundle); cached because loading the bundle takes ~25 ms."""
    context = ssl.create_default_context(cafile=ca_file or certifi.where())
    context.check_hostname = check_hostname
    return context


def describe_failure(exc: BaseException, timeout: float) -> str:
    """One line saying why a request failed, from the root cause httpx wraps."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no response within {timeout:g} s (timeout)"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (f"TLS certificate did not verify ({seen.verify_message or seen.reason}); pass ca_file to trust "
                    "its CA, or verify_tls=false to audit it anyway")
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (nothing listens on that port)"
        if isinstance(seen, socket.gaierror):
            return f"host name not found ({seen.strerror})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or _one_line(seen)})"
        if isinstance(seen, TimeoutError):
            return f"no response within {timeout:g} s (timeout)"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server did not answer with valid HTTP ({_one_line(exc)})"
    return _one_line(exc)


def _multi(headers: httpx.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        out.setdefault(name.lower(), []).append(value)
    return out


def _redacted_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    rows = []
    for name, value in headers:
        if name.lower() == "set-cookie":
            first, sep, rest = value.partition(";")
            value = f"{first.partition('=')[0].strip()}=<redacted>{sep}{rest}"
        rows.append([name, value])
    return rows


def _resolve_ca_file(ca_file: str | None) -> str | None:
    if ca_file is None or not ca_file.strip():
        return None
    path = Path(ca_file).expanduser().resolve()
    if not path.is_file():
        raise AgentInputError(f"ca_file: {path} does not exist or is not a file; give a PEM bundle of CA certificates")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise AgentInputError(f"ca_file: {path} is not a PEM bundle of CA certificates ({_one_line(exc)})") from None
    return str(path)


class _Fetch(BaseModel):
    url: str
    status: int
    http_version: str
    elapsed_ms: float
    headers: list[tuple[str, str]]


def fetch_chain(url: str, *, timeout: float, follow: bool, verify: ssl.SSLContext
                ) -> tuple[list[RedirectHop], list[_Fetch], str | None]:
    """GET ``url``, following redirects by hand; returns the hops, every response, and why it stopped early."""
    hops: list[RedirectHop] = []
    responses: list[_Fetch] = []
    stopped: str | None = None
    # trust_env=False: audit the target itself, not whatever proxy the environment names.
    with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False, trust_env=False,
                      headers={"User-Agent": USER_AGENT}) as client:
        current = url
        while True:
            started = time.perf_counter()
            try:
                response = client.send(client.build_request("GET", current), stream=True)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                after = f" (redirected from {url})" if current != url else ""
                raise AgentInputError(f"url: cannot audit {current}{after}: {describe_failure(exc, timeout)}") from None
            elapsed = (time.perf_counter() - started) * 1000
            response.close()  # headers are what is audited; the body is not needed
            responses.append(_Fetch(url=str(response.url), status=response.status_code,
                                    http_version=response.http_version, elapsed_ms=round(elapsed, 2),
                                    headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                             for k, v in response.headers.raw]))
            location = response.headers.get("location")
            if not (follow and response.status_code in REDIRECT_STATUSES and location):
                break
            target = urljoin(str(response.url), location)
            if urlsplit(target).scheme not in ("http", "https"):
                stopped = f"redirect to unsupported URL {target!r} not followed"
                break
            if len(hops) == MAX_REDIRECTS:
                stopped = f"more than {MAX_REDIRECTS} redirects; stopped at {current}"
                break
            hops.append(RedirectHop(url=str(response.url), status=response.status_code, location=target))
            current = target
    return hops, responses, stopped


class WebAudit:
    name = "web_audit"
    description = "Security audit of a URL: redirects, TLS certificate, security headers graded A-F, cookie flags."
    Input = WebAuditInput
    Output = WebAuditOutput

    def run(self, params: WebAuditInput, context: AgentContext) -> WebAuditOutput:
        ca_file = _resolve_ca_file(params.ca_file)
        verify = _verifying_context(ca_file, True) if params.verify_tls else _unverified_context()
        hops, responses, stopped = fetch_chain(params.url, timeout=params.timeout_seconds,
                                               follow=params.follow_redirects, verify=verify)
        final = responses[-1]
        final_headers = httpx.Headers(final.headers)
        https = final.url.startswith("https://")
        now = datetime.now(UTC)
        findings: list[Finding] = []
        caps: list[tuple[Grade, str]] = []

        tls = None
        last_https = next((r.url for r in reversed(responses) if r.url.startswith("https://")), None)
        if last_https:
            tls = probe_tls(last_https, timeout=params.timeout_seconds, ca_file=ca_file,
                            verification_enabled=params.verify_tls, now=now)
            tls_found, refused = tls_findings(tls, now)
            findings += tls_found
            caps += [("F", reason) for reason in refused]

        redirects_to_https = self._transport_findings(params.url, final, hops, findings)
        if not https:
            caps.append(("C", "page served over plain HTTP"))
        if stopped:
            findings.append(Finding(severity=Severity.medium, title="Redirect chain not followed to the end",
                                    detail=stopped, location=final.url))

        checks = evaluate_headers(_multi(final_headers), https=https)
        for check in checks:
            if check.verdict == "pass" or (check.check == HSTS.check and not https):
                continue
            spec = next(c for c in CHECKS if c.check == check.check)
            missing = check.verdict == "missing"
            findings.append(Finding(severity=spec.missing if missing else spec.weak,
                                    title=spec.missing_title if missing else spec.weak_title,
                                    detail=check.reason, location=final.url))

        cookies: list[CookieCheck] = []
        for response in responses:
            for value in httpx.Headers(response.headers).get_list("set-cookie"):
                cookie = parse_set_cookie(value, response.url)
                cookies.append(cookie)
                for severity, title, detail in _cookie_problems(cookie, response.url.startswith("https://")):
                    findings.append(Finding(severity=severity, title=title[0].upper() + title[1:], detail=detail,
                                            location=f"Set-Cookie {cookie.name} ({response.url})"))

        score = round(sum(c.points for c in checks))
        grade = grade_for(score, caps)
        findings.sort(key=lambda f: -SEVERITY_ORDER[f.severity])
        output = WebAuditOutput(
            agent=self.name, summary="", findings=findings, reads=[params.url],
            url=params.url, final_url=final.url, redirects=hops, redirects_to_https=redirects_to_https,
            status_code=final.status, http_version=final.http_version, response_time_ms=final.elapsed_ms,
            total_time_ms=round(sum(r.elapsed_ms for r in responses), 2), server=final_headers.get("server"),
            response_headers=_redacted_headers(final.headers), tls=tls, headers=checks, cookies=cookies,
            score=score, grade=grade, grade_caps=[reason for _, reason in caps],
        )
        output.summary = self._summary(output)
        evidence = context.put_evidence(
            "web_audit.json", json.dumps(output.model_dump(mode="json"), indent=2, sort_keys=True).encode(),
            media_type="application/json", description=f"Full web audit result of {params.url}",
        )
        output.evidence.append(evidence)
        output.writes.append(evidence.key)
        return output

    @staticmethod
    def _transport_findings(url: str, final: _Fetch, hops: list[RedirectHop], findings: list[Finding]) -> bool | None:
        if url.startswith("https://"):
            downgrade = next((h for h in hops if h.location.startswith("http://")), None)
            if downgrade:
                findings.append(Finding(severity=Severity.high, title="Redirect downgrades HTTPS to plain HTTP",
                                        detail=f"{downgrade.url} sends the client to {downgrade.location}.",
                                        location=downgrade.url))
            return None
        location = httpx.Headers(final.headers).get("location")
        redirects = final.url.startswith("https://") or (
            final.status in REDIRECT_STATUSES and bool(location) and urljoin(final.url, location).startswith("https://"))
        if not redirects:
            findings.append(Finding(severity=Severity.high, title="HTTP does not redirect to HTTPS",
                                    detail="Visitors who type the address or follow an http:// link stay on an "
                                           "unencrypted connection; redirect every http:// request to https://.",
                                    location=url))
        return redirects

    @staticmethod
    def _summary(out: WebAuditOutput) -> str:
        verdicts = [c.verdict for c in out.headers]
        parts = [
            f"{out.url} answered HTTP {out.status_code}"
            + (f" at {out.final_url} after {len(out.redirects)} redirect(s)" if out.redirects else "") + ".",
            f"Grade {out.grade} (header score {out.score}/100"
            + (f"; capped: {', '.join(out.grade_caps)}" if out.grade_caps else "") + ").",
            f"Security headers: {verdicts.count('pass')} pass, {verdicts.count('weak')} weak, "
            f"{verdicts.count('missing')} missing.",
        ]
        if out.tls:
            t = out.tls
            parts.append(
                f"TLS {t.protocol} ({t.cipher}); certificate for {t.subject_cn or t.subject} issued by "
                f"{t.issuer_cn or t.issuer}, {t.key_type} {t.key_size}, "
                + (f"expired {-t.days_to_expiry} days ago" if t.days_to_expiry < 0 else
                   f"{t.days_to_expiry} days to expiry")
                + ("" if t.trusted else ", not trusted") + ("" if t.hostname_match else ", wrong host name") + "."
            )
        if out.cookies:
            flagged = sum(1 for c in out.cookies if c.issues)
            parts.append(f"{len(out.cookies)} cookie(s), {flagged} with missing flags.")
        worst = out.worst()
        parts.append(f"{len(out.findings)} finding(s)" + (f", worst {worst.value}." if worst else "."))
        return " ".join(parts)


AGENT = WebAudit()
