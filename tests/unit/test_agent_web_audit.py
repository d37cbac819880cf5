"""web_audit against real HTTP/HTTPS servers on 127.0.0.1 with certificates made at test time."""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from pydantic import ValidationError

from agents.web_audit import (
    AGENT,
    HSTS_MIN_MAX_AGE,
    WebAuditInput,
    WebAuditOutput,
    csp_issues,
    evaluate_headers,
    grade_for,
    hostname_matches,
    parse_set_cookie,
)
from amas.registry import SEVERITY_ORDER, AgentContext, AgentInputError
from tests.plugins.web_servers import CA_NAME, EXPIRED_DAYS_AGO, LEAF_DAYS, MISMATCH_DAYS, Route, WebPKI, WebServer

pytestmark = pytest.mark.unit


def audit(context: AgentContext, url: str, **kwargs: object) -> WebAuditOutput:
    return AGENT.run(WebAuditInput(url=url, **kwargs), context)


def verdicts(out: WebAuditOutput) -> dict[str, str]:
    return {c.check: c.verdict for c in out.headers}


def titles(out: WebAuditOutput) -> list[str]:
    return [f.title for f in out.findings]


def test_hardened_https_page_grades_a_with_tls_details(agent_context: AgentContext, https_server: WebServer,
                                                       web_pki: WebPKI) -> None:
    url = https_server.url("/hardened")
    out = audit(agent_context, url, ca_file=str(web_pki.ca_path))

    assert (out.status_code, out.final_url, out.redirects, out.http_version) == (200, url, [], "HTTP/1.1")
    assert set(verdicts(out).values()) == {"pass"}
    assert (out.score, out.grade, out.grade_caps) == (100, "A", [])
    assert out.findings == []
    assert out.reads == [url]
    assert out.redirects_to_https is None
    assert 0 < out.response_time_ms <= out.total_time_ms

    tls = out.tls
    assert tls is not None
    cert = web_pki.leaf.cert
    assert tls.protocol == "TLSv1.3"
    assert tls.cipher_bits >= 128
    assert (tls.subject_cn, tls.issuer_cn) == ("localhost", CA_NAME)
    assert tls.issuer == cert.issuer.rfc4514_string()
    assert tls.sans == ["DNS:localhost", "IP:127.0.0.1"]
    assert tls.not_after == cert.not_valid_after_utc
    assert tls.not_before == cert.not_valid_before_utc
    expected_days = math.floor((cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() / 86400)
    assert tls.days_to_expiry == expected_days == LEAF_DAYS
    assert (tls.self_signed, tls.hostname_match, tls.trusted, tls.trust_error) == (False, True, True, None)
    assert (tls.key_type, tls.key_size, tls.signature_hash) == ("RSA", 2048, "sha256")
    assert tls.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert tls.serial_number == format(cert.serial_number, "x")

    cookies = {c.name: c for c in out.cookies}
    assert set(cookies) == {"__Host-session", "prefs"}
    session = cookies["__Host-session"]
    assert (session.secure, session.http_only, session.same_site, session.path) == (True, True, "Strict", "/")
    assert (session.session_like, session.persistent, session.issues) == (True, False, [])
    assert (cookies["prefs"].same_site, cookies["prefs"].persistent, cookies["prefs"].session_like) == ("Lax", True, False)
    assert "Grade A" in out.summary and "TLSv1.3" in out.summary and f"{LEAF_DAYS} days to expiry" in out.summary


def test_result_json_is_stored_as_evidence_without_cookie_values(agent_context: AgentContext,
                                                                   https_server: WebServer, web_pki: WebPKI) -> None:
    out = audit(agent_context, https_server.url("/hardened"), ca_file=str(web_pki.ca_path))

    [evidence] = out.evidence
    assert evidence.key == f"evidence/{agent_context.task_id}/web_audit.json"
    assert out.writes == [evidence.key]
    stored = agent_context.storage.get(evidence.key)
    assert evidence.sha256 == hashlib.sha256(stored).hexdigest()
    assert evidence.size == len(stored)
    data = json.loads(stored)
    assert data["grade"] == "A"
    assert data["tls"]["issuer_cn"] == CA_NAME
    assert data["summary"] == out.summary
    # The session token the server set must not leak into evidence.
    assert b"3f9a7c" not in stored
    assert ["Set-Cookie", "__Host-session=<redacted>; Path=/; Secure; HttpOnly; SameSite=Strict"] in data[
        "response_headers"]


def test_bare_http_page_fails_with_every_header_missing(agent_context: AgentContext, http_server: WebServer) -> None:
    url = http_server.url("/bare")
    out = audit(agent_context, url)

    assert verdicts(out) == {
        "Content-Security-Policy": "missing",
        "Strict-Transport-Security": "missing",
        "X-Frame-Options / frame-ancestors": "missing",
        "X-Content-Type-Options": "missing",
        "Referrer-Policy": "missing",
        "Permissions-Policy": "missing",
        "Server": "weak",
        "X-Powered-By": "weak",
    }
    checks = {c.check: c for c in out.headers}
    assert "plain HTTP" in checks["Strict-Transport-Security"].reason
    assert checks["Server"].reason == "reveals the software version (Apache/2.4.1 (Unix))"
    assert checks["X-Powered-By"].value == "PHP/8.1.2"
    assert (out.score, out.grade) == (5, "F")
    assert out.server == "Apache/2.4.1 (Unix)"
    assert out.tls is None
    assert out.redirects_to_https is False

    by_title = {f.title: f for f in out.findings}
    assert by_title["HTTP does not redirect to HTTPS"].severity == "high"
    assert by_title["Session cookie sessionid is set over plain HTTP"].severity == "high"
    assert by_title["Session cookie sessionid lacks HttpOnly"].severity == "medium"
    assert by_title["Session cookie sessionid lacks SameSite"].severity == "low"
    assert by_title["Cookie theme lacks HttpOnly"].severity == "low"
    assert by_title["Missing Content-Security-Policy"].severity == "medium"
    assert by_title["Server header reveals the software version"].severity == "low"
    # Over plain HTTP, HSTS is covered by the redirect finding, not reported twice.
    assert "Missing Strict-Transport-Security" not in by_title
    ranks = [SEVERITY_ORDER[f.severity] for f in out.findings]
    assert ranks == sorted(ranks, reverse=True)

    cookies = {c.name: c for c in out.cookies}
    assert (cookies["sessionid"].secure, cookies["sessionid"].http_only, cookies["sessionid"].same_site) == (
        False, False, None)
    assert cookies["sessionid"].session_like is True
    assert cookies["theme"].persistent is True  # Expires with a comma in the date
    assert cookies["theme"].session_like is False


def test_hardened_page_over_plain_http_is_capped_at_c(agent_context: AgentContext, http_server: WebServer) -> None:
    out = audit(agent_context, http_server.url("/hardened"))

    assert out.score == 80  # everything passes except HSTS, which plain HTTP cannot use
    assert out.grade == "C"
    assert out.grade_caps == ["page served over plain HTTP"]
    hsts = next(c for c in out.headers if c.check == "Strict-Transport-Security")
    assert hsts.verdict == "missing" and "ignored" in hsts.reason


def test_weak_https_page_scores_half_points_for_weak_headers(agent_context: AgentContext, https_server: WebServer,
                                                             web_pki: WebPKI) -> None:
    out = audit(agent_context, https_server.url("/weak"), ca_file=str(web_pki.ca_path))

    checks = {c.check: c for c in out.headers}
    assert verdicts(out) == {
        "Content-Security-Policy": "weak",
        "Strict-Transport-Security": "weak",
        "X-Frame-Options / frame-ancestors": "weak",
        "X-Content-Type-Options": "pass",
        "Referrer-Policy": "weak",
        "Permissions-Policy": "weak",
        "Server": "pass",
        "X-Powered-By": "pass",
    }
    assert checks["Content-Security-Policy"].reason == (
        "script-src allows 'unsafe-inline'; script-src allows 'unsafe-eval'; script-src allows any https: source; "
        "default-src allows any origin (*)")
    assert checks["Strict-Transport-Security"].reason == (
        f"max-age=3600 is below {HSTS_MIN_MAX_AGE} (180 days); no includeSubDomains")
    assert "ALLOW-FROM is obsolete" in checks["X-Frame-Options / frame-ancestors"].reason
    assert checks["Referrer-Policy"].reason.startswith("unsafe-url sends the full URL")
    assert checks["Permissions-Policy"].reason == "grants to every origin: camera=*"
    # 25/2 + 20/2 + 15/2 + 10 + 10/2 + 10/2 + 5 + 5
    assert sum(c.points for c in out.headers) == 60.0
    assert (out.score, out.grade, out.grade_caps) == (60, "D", [])

    by_title = {f.title: f for f in out.findings}
    assert by_title["Session cookie auth_token lacks Secure"].severity == "high"
    assert by_title["Session cookie auth_token has SameSite=None without Secure"].severity == "medium"
    assert by_title["Weak Content-Security-Policy"].severity == "medium"
    assert by_title["Weak Strict-Transport-Security"].severity == "low"
    assert out.findings[0].severity == "high"


def test_redirect_chain_is_followed_and_recorded(agent_context: AgentContext, http_server: WebServer) -> None:
    out = audit(agent_context, http_server.url("/redirect"))

    assert [(h.url, h.status, h.location) for h in out.redirects] == [
        (http_server.url("/redirect"), 302, http_server.url("/hop")),
        (http_server.url("/hop"), 301, http_server.url("/hardened")),
    ]
    assert (out.final_url, out.status_code) == (http_server.url("/hardened"), 200)
    # Cookies set by a redirect response are audited too, with the URL that set them.
    assert [(c.name, c.set_by) for c in out.cookies] == [
        ("visit", http_server.url("/redirect")),
        ("__Host-session", http_server.url("/hardened")),
        ("prefs", http_server.url("/hardened")),
    ]
    assert "after 2 redirect(s)" in out.summary


def test_redirects_not_followed_when_disabled(agent_context: AgentContext, http_server: WebServer) -> None:
    out = audit(agent_context, http_server.url("/redirect"), follow_redirects=False)

    assert (out.status_code, out.final_url, out.redirects) == (302, http_server.url("/redirect"), [])
    assert out.redirects_to_https is False  # the Location is another http:// page


def test_redirect_loop_stops_after_five_hops(agent_context: AgentContext, http_server: WebServer) -> None:
    out = audit(agent_context, http_server.url("/loop"))

    assert len(out.redirects) == 5
    assert out.status_code == 302
    stop = next(f for f in out.findings if f.title == "Redirect chain not followed to the end")
    assert stop.severity == "medium" and "more than 5 redirects" in stop.detail


def test_http_redirect_to_https_is_followed_across_servers(agent_context: AgentContext, http_server: WebServer,
                                                           https_server: WebServer, web_pki: WebPKI) -> None:
    http_server.routes["/secure"] = Route(301, [("Location", https_server.url("/hardened"))], b"")
    out = audit(agent_context, http_server.url("/secure"), ca_file=str(web_pki.ca_path))

    assert out.redirects_to_https is True
    assert out.final_url == https_server.url("/hardened")
    assert out.tls is not None and out.tls.url == https_server.url("/hardened")
    assert "HTTP does not redirect to HTTPS" not in titles(out)
    assert out.grade == "A"


def test_expired_self_signed_certificate_reported_when_verification_is_off(
        agent_context: AgentContext, https_expired_server: WebServer, web_pki: WebPKI) -> None:
    out = audit(agent_context, https_expired_server.url("/hardened"), verify_tls=False)

    tls = out.tls
    assert tls is not None
    cert = web_pki.expired_self_signed.cert
    assert tls.self_signed is True
    assert tls.trusted is False and tls.trust_error
    assert tls.subject_cn == tls.issuer_cn == "expired.test"
    assert tls.sans == ["IP:127.0.0.1"]
    assert tls.hostname_match is True
    assert tls.not_after == cert.not_valid_after_utc
    assert tls.days_to_expiry == -EXPIRED_DAYS_AGO
    assert tls.verification_enabled is False

    by_title = {f.title: f.severity for f in out.findings}
    assert by_title[f"Certificate expired {EXPIRED_DAYS_AGO} days ago"] == "critical"
    assert by_title["Self-signed certificate"] == "high"
    assert by_title["TLS verification was disabled for this audit"] == "info"
    assert out.findings[0].severity == "critical"
    assert out.score == 100  # the headers are fine ...
    assert out.grade == "F"  # ... but browsers refuse the certificate
    assert out.grade_caps == ["certificate expired", "self-signed certificate"]
    assert f"expired {EXPIRED_DAYS_AGO} days ago" in out.summary


def test_untrusted_certificate_is_refused_when_verification_is_on(
        agent_context: AgentContext, https_expired_server: WebServer) -> None:
    url = https_expired_server.url("/hardened")
    with pytest.raises(AgentInputError) as caught:
        audit(agent_context, url)

    message = str(caught.value)
    assert message.startswith(f"url: cannot audit {url}: TLS certificate did not verify (")
    assert "verify_tls=false" in message and "ca_file" in message
    assert "\n" not in message


def test_hostname_mismatch_and_near_expiry(agent_context: AgentContext, https_mismatch_server: WebServer,
                                           web_pki: WebPKI) -> None:
    url = https_mismatch_server.url("/hardened")
    out = audit(agent_context, url, ca_file=str(web_pki.ca_path), verify_tls=False)

    tls = out.tls
    assert tls is not None
    assert (tls.trusted, tls.hostname_match, tls.self_signed) == (True, False, False)
    assert tls.sans == ["DNS:other.example"]
    assert tls.days_to_expiry == MISMATCH_DAYS
    by_title = {f.title: f.severity for f in out.findings}
    assert by_title["Certificate does not match the host name"] == "high"
    assert by_title[f"Certificate expires in {MISMATCH_DAYS} days"] == "high"
    assert (out.grade, out.grade_caps) == ("F", ["host name mismatch"])

    with pytest.raises(AgentInputError, match=r"^url: .*TLS certificate did not verify \(.*mismatch"):
        audit(agent_context, url, ca_file=str(web_pki.ca_path))


def test_refused_port_is_a_one_line_input_error(agent_context: AgentContext, refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/"
    with pytest.raises(AgentInputError) as caught:
        audit(agent_context, url)
    assert str(caught.value) == f"url: cannot audit {url}: connection refused (nothing listens on that port)"
    assert caught.value.__suppress_context__  # raised "from None": no chained traceback


def test_unknown_host_is_an_input_error(agent_context: AgentContext) -> None:
    with pytest.raises(AgentInputError, match=r"^url: cannot audit http://no-such-host\.invalid/: host name not found"):
        audit(agent_context, "http://no-such-host.invalid/")


def test_silent_server_times_out(agent_context: AgentContext, silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/"
    started = time.monotonic()
    with pytest.raises(AgentInputError) as caught:
        audit(agent_context, url, timeout_seconds=0.3)
    assert str(caught.value) == f"url: cannot audit {url}: no response within 0.3 s (timeout)"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("url", "message"), [
    ("example.com", "'example.com' has no scheme; give a full URL such as https://example.com/"),
    ("localhost:8080", "has no scheme"),
    ("ftp://example.com/file", "scheme 'ftp' is not supported; use http:// or https://"),
    ("http://", "has no host name"),
    ("https://user:secret@example.com/", "credentials in the URL are not supported"),
    ("http://example.com:99999/", "has an invalid port"),
])
def test_bad_urls_are_refused_by_the_input_model(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebAuditInput(url=url)
    [error] = caught.value.errors()
    assert error["loc"] == ("url",)
    assert message in error["msg"]


def test_url_is_normalised() -> None:
    assert WebAuditInput(url="  HTTPS://example.com#top ").url == "https://example.com/"
    assert WebAuditInput(url="http://example.com/a?b=1").url == "http://example.com/a?b=1"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError) as caught:
        WebAuditInput(url="https://example.com/", timeout_seconds=0)
    assert caught.value.errors()[0]["loc"] == ("timeout_seconds",)


def test_ca_file_errors_name_the_field(agent_context: AgentContext, http_server: WebServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(AgentInputError, match=r"^ca_file: .*nope\.pem does not exist"):
        audit(agent_context, http_server.url("/bare"), ca_file=str(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(AgentInputError, match=r"^ca_file: .*garbage\.pem is not a PEM bundle of CA certificates"):
        audit(agent_context, http_server.url("/bare"), ca_file=str(garbage))


def test_csp_rules() -> None:
    # A nonce makes CSP2+ browsers ignore 'unsafe-inline' (kept for old browsers only).
    assert csp_issues("script-src 'nonce-r4nd0m' 'unsafe-inline' 'strict-dynamic'; object-src 'none'") == []
    assert csp_issues("img-src *") == ["no script-src or default-src, so scripts may load from anywhere",
                                       "img-src allows any origin (*)"]
    assert csp_issues("default-src 'self' 'unsafe-inline' data:") == [
        "default-src allows 'unsafe-inline'", "default-src allows any data: source"]
    # Two enforced policies: the strict one decides.
    checks = evaluate_headers({"content-security-policy": ["default-src *", "default-src 'self'"]}, https=True)
    assert checks[0].verdict == "pass"
    report_only = evaluate_headers({"content-security-policy-report-only": ["default-src 'self'"]}, https=True)
    assert report_only[0].verdict == "weak" and "blocks nothing" in report_only[0].reason


def test_header_edge_cases() -> None:
    def verdict(headers: dict[str, list[str]], check: str, https: bool = True) -> tuple[str, str]:
        result = next(c for c in evaluate_headers(headers, https=https) if c.check == check)
        return result.verdict, result.reason

    assert verdict({"referrer-policy": ["no-referrer, unsafe-url"]}, "Referrer-Policy")[0] == "weak"
    assert verdict({"referrer-policy": ["unsafe-url, strict-origin-when-cross-origin"]}, "Referrer-Policy") == (
        "pass", "strict-origin-when-cross-origin")
    assert verdict({"strict-transport-security": ['max-age="31536000"; includeSubDomains']},
                   "Strict-Transport-Security") == ("pass", "max-age=31536000 with includeSubDomains")
    assert verdict({"strict-transport-security": ["includeSubDomains"]},
                   "Strict-Transport-Security") == ("weak", "no valid max-age")
    assert verdict({"content-security-policy": ["frame-ancestors *"]},
                   "X-Frame-Options / frame-ancestors") == ("weak", "frame-ancestors allows any origin (*)")
    assert verdict({"x-frame-options": ["sameorigin"]}, "X-Frame-Options / frame-ancestors") == (
        "pass", "X-Frame-Options SAMEORIGIN")
    assert verdict({"x-content-type-options": ["sniff-please"]}, "X-Content-Type-Options")[0] == "weak"
    assert verdict({"feature-policy": ["camera 'none'"]}, "Permissions-Policy")[0] == "weak"
    assert verdict({"server": ["nginx"]}, "Server") == ("pass", "names the software without a version")


def test_grade_thresholds_and_caps() -> None:
    assert [grade_for(s, []) for s in (100, 90, 89, 80, 79, 65, 64, 50, 49, 35, 34, 0)] == [
        "A", "A", "B", "B", "C", "C", "D", "D", "E", "E", "F", "F"]
    assert grade_for(100, [("C", "plain HTTP")]) == "C"
    assert grade_for(40, [("C", "plain HTTP")]) == "E"  # a cap never raises a grade
    assert grade_for(100, [("C", "plain HTTP"), ("F", "expired")]) == "F"


def test_hostname_matching() -> None:
    assert hostname_matches("www.example.com", ["DNS:*.example.com"])
    assert not hostname_matches("a.b.example.com", ["DNS:*.example.com"])
    assert not hostname_matches("example.com", ["DNS:*.example.com"])
    assert hostname_matches("EXAMPLE.com.", ["DNS:example.com"])
    assert hostname_matches("::1", ["IP:0:0:0:0:0:0:0:1"])
    assert not hostname_matches("127.0.0.1", ["DNS:127.0.0.1"])  # an IP must match an IP SAN


def test_cookie_parsing_keeps_no_values() -> None:
    cookie = parse_set_cookie("__Secure-id=s3cr3t; Domain=example.com; SameSite=lax; Max-Age=60",
                              "https://example.com/")
    assert (cookie.name, cookie.domain, cookie.same_site, cookie.persistent) == (
        "__Secure-id", "example.com", "Lax", True)
    assert cookie.issues == ["cookie __Secure-id lacks Secure", "cookie __Secure-id lacks HttpOnly",
                             "cookie __Secure-id breaks the __Secure- prefix rule"]
    assert "s3cr3t" not in cookie.model_dump_json()
    csrf = parse_set_cookie("csrftoken=abc; Secure; SameSite=Strict", "https://example.com/")
    assert csrf.session_like is False  # anti-CSRF cookies are meant to be read by scripts
