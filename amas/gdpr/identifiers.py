"""Subject identifiers as a request gives them: checked, normalised, and never repeated in errors.

An identifier is a ``data_subjects.external_ref``, an email address or a numeric
``data_subjects.id``. It is normalised exactly as the erasure ledger normalises it
(``amas.db.ledger.normalise_identifier``) and only ever reaches SQL as a bound parameter, so
``x' OR 1=1 --`` is a (strange) reference that matches nobody. Error messages describe what is
wrong without quoting the value: the value may itself be personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from amas.db.ledger import normalise_identifier, subject_digest
from amas.errors import AmasError

MAX_LENGTH = 320
"""The longest identifier accepted: the longest email address (RFC 5321 path limit is 256; the
store's email column holds 320)."""
REF_LENGTH = 200
"""``data_subjects.external_ref`` holds at most this many characters."""
MAX_ID = 2**31 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidIdentifier(AmasError):
    """The identifier cannot name a subject; the message says why without repeating it."""

    exit_code = 2


class By(StrEnum):
    auto = "auto"
    ref = "ref"
    email = "email"
    id = "id"


@dataclass(frozen=True)
class SubjectQuery:
    """A checked identifier. ``repr`` shows only the kind: the value is personal data."""

    by: By
    value: str = field(repr=False)
    """The identifier, stripped (case kept: a stored external_ref may be mixed case)."""
    normalised: str = field(repr=False)
    subject_id: int | None = None
    """The numeric id to look up (``by`` id, or ``auto`` with a number)."""

    @property
    def searches_ref(self) -> bool:
        return self.by in (By.ref, By.auto)

    @property
    def searches_email(self) -> bool:
        return self.by is By.email or (self.by is By.auto and "@" in self.value)

    def digest(self, key: bytes) -> str:
        """The keyed digest a request and the ledger record instead of the identifier."""
        return subject_digest(self.value, key)


def parse_identifier(text: object, by: By | str = By.auto) -> SubjectQuery:
    """Check ``text`` as an identifier of kind ``by``; ``InvalidIdentifier`` names the problem."""
    try:
        kind = By(by)
    except ValueError:
        raise InvalidIdentifier(f"--by must be one of {', '.join(b.value for b in By)}") from None
    if not isinstance(text, str):
        raise InvalidIdentifier(f"the subject identifier must be text, not {type(text).__name__}")
    value = text.strip()
    if not value:
        raise InvalidIdentifier("the subject identifier is empty; give an external_ref, an email or a numeric id")
    if len(value) > MAX_LENGTH:
        raise InvalidIdentifier(f"the subject identifier is {len(value)} characters long; at most {MAX_LENGTH} "
                                "are allowed")
    if _CONTROL.search(value):
        raise InvalidIdentifier("the subject identifier contains a control character (a newline, NUL or similar)")

    numeric = value.isascii() and value.isdigit()
    if kind is By.id:
        if not numeric or not 1 <= int(value) <= MAX_ID:
            raise InvalidIdentifier(f"--by id needs a whole number from 1 to {MAX_ID}")
        return SubjectQuery(By.id, value, normalise_identifier(value), int(value))
    if kind is By.email and not _EMAIL.match(value):
        raise InvalidIdentifier("--by email needs an email address (name@domain.tld)")
    if kind is By.ref and len(value) > REF_LENGTH:
        raise InvalidIdentifier(f"--by ref: an external_ref has at most {REF_LENGTH} characters")
    subject_id = int(value) if kind is By.auto and numeric and 1 <= int(value) <= MAX_ID else None
    return SubjectQuery(kind, value, normalise_identifier(value), subject_id)
