"""Pieces of the provider clients that need no server: Retry-After parsing and failure classes."""

from __future__ import annotations

import email.utils

import pytest

from amas.llm.providers import ProviderError, parse_retry_after

pytestmark = pytest.mark.unit

NOW = 1_741_569_952.0


@pytest.mark.parametrize(("header", "seconds"), [
    ("3", 3.0),
    (" 1.5 ", 1.5),
    ("-4", 0.0),
    (email.utils.formatdate(NOW + 20, usegmt=True), 20.0),
    (email.utils.formatdate(NOW - 20, usegmt=True), 0.0),
    ("soon", None),
    ("", None),
    (None, None),
    ("inf", None),
])
def test_retry_after_in_seconds_or_as_a_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(("failure", "transient"), [
    ("timeout", True), ("connection", True), ("rate_limited", True), ("server_error", True),
    ("rejected", False), ("malformed", False),
])
def test_which_failures_are_worth_retrying(failure: str, transient: bool) -> None:
    assert ProviderError("x", failure=failure).transient is transient  # type: ignore[arg-type]
