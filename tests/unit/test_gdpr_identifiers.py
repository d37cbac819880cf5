"""Subject identifiers: what is refused (one line, never repeating the value) and what is a literal."""

from __future__ import annotations

import pytest

from amas.db.ledger import normalise_identifier, subject_digest
from amas.gdpr.identifiers import By, InvalidIdentifier, parse_identifier

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "by", "kind", "subject_id"), [
    ("CRM-000123", "auto", By.auto, None),
    ("  Ann.Lee@Example.org ", "auto", By.auto, None),
    ("42", "auto", By.auto, 42),
    ("42", "id", By.id, 42),
    ("42", "ref", By.ref, None),
    ("ann@example.org", "email", By.email, None),
    # An injection attempt is a strange reference: it is bound as a value and matches nobody.
    ("x' OR 1=1 --", "auto", By.auto, None),
    ("'; DROP TABLE data_subjects; --", "ref", By.ref, None),
    ("%", "auto", By.auto, None),
])
def test_identifiers_are_normalised_like_the_ledger(text: str, by: str, kind: By, subject_id: int | None) -> None:
    query = parse_identifier(text, by)
    assert query.by is kind
    assert query.subject_id == subject_id
    assert query.value == text.strip()
    assert query.normalised == normalise_identifier(text)
    assert query.digest(b"k" * 32) == subject_digest(text, b"k" * 32)


@pytest.mark.parametrize(("text", "by", "expected"), [
    ("", "auto", "is empty"),
    ("   \t ", "auto", "is empty"),
    ("a" * 321, "auto", "at most 320"),
    ("ann\n@example.org", "auto", "control character"),
    ("ann\x00", "ref", "control character"),
    ("ann\u2028x", "ref", "control character"),
    ("abc", "id", "--by id needs a whole number"),
    ("0", "id", "--by id needs a whole number"),
    ("-5", "id", "--by id needs a whole number"),
    ("99999999999", "id", "--by id needs a whole number"),
    ("４２", "id", "--by id needs a whole number"),  # full-width digits are not an id
    ("not-an-email", "email", "--by email needs an email address"),
    ("a@b@c.org", "email", "--by email needs an email address"),
    ("r" * 201, "ref", "at most 200"),
    ("x", "name", "--by must be one of auto, ref, email, id"),
])
def test_malformed_identifiers_are_refused_without_repeating_them(text: str, by: str, expected: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        parse_identifier(text, by)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    if text.strip() and len(text.strip()) > 2:
        assert text.strip() not in message
    assert caught.value.exit_code == 2


def test_non_text_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="must be text"):
        parse_identifier(42)  # type: ignore[arg-type]


def test_the_query_repr_holds_no_identifier() -> None:
    query = parse_identifier("ann.lee@example.org")
    assert "ann" not in repr(query) and "example" not in repr(query)
