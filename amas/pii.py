"""Which columns of a table hold personal data, and of what kind: the engine behind the
``pii_classifier`` agent and the pipeline's ``classify`` stage.

For each column a deterministic sample of non-missing values is checked against every
category's validator and the share that matches is taken. Validators check more than the shape
where a check exists: IBANs by ISO 13616 mod-97 and per-country length, card numbers by Luhn
and issuer prefix, French INSEE numbers and Spanish DNI/NIE by their control key, US SSNs and
UK NI numbers by the ranges their issuers never assign. So a column of random digit strings is
not a column of card numbers. The column name adds a hint: it raises the confidence of a match
and lets looser shapes count (bare digits in a column called ``phone``), but a name alone never
makes a column personal data.

Nothing raw leaves here: examples are masked (``j***@e***.com``, ``**** **** **** 1234``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from amas.registry import Severity, worst_severity

PiiCategory = Literal["email", "phone", "ip_address", "person_name", "national_id", "iban", "credit_card",
                      "date_of_birth", "postal_address", "free_text_with_pii"]

PRIORITY: tuple[PiiCategory, ...] = ("iban", "credit_card", "national_id", "email", "ip_address", "phone",
                                     "date_of_birth", "person_name", "postal_address", "free_text_with_pii")
"""Tie-break between categories with the same confidence: the more specific validator first."""

SEVERITY: dict[str, Severity] = {
    "national_id": Severity.high, "credit_card": Severity.high, "iban": Severity.high,
    "email": Severity.medium, "phone": Severity.medium, "person_name": Severity.medium,
    "date_of_birth": Severity.medium, "postal_address": Severity.medium, "free_text_with_pii": Severity.medium,
    "ip_address": Severity.low,
}

LABELS: dict[str, str] = {
    "email": "email addresses", "phone": "phone numbers", "ip_address": "IP addresses",
    "person_name": "person names", "national_id": "national identification numbers",
    "iban": "bank account numbers (IBAN)", "credit_card": "payment card numbers",
    "date_of_birth": "dates of birth", "postal_address": "postal addresses",
    "free_text_with_pii": "free text mentioning personal data",
}

DIRECT = ("email", "phone", "person_name", "national_id", "iban", "credit_card", "postal_address")
INDIRECT = ("ip_address", "date_of_birth")

CAPS: dict[str, float] = {
    "email": 1.0, "iban": 1.0, "credit_card": 1.0, "national_id": 0.95, "ip_address": 0.9, "phone": 0.9,
    "person_name": 0.9, "postal_address": 0.8, "date_of_birth": 0.6,
}
"""Confidence when every sampled value matches and the name gives no hint: below 1 where a value of
another kind can take the same shape (version strings look like IPv4, event dates like birth dates)."""

HINT_FLOOR = 0.2
"""A matching name adds this; alone (no value matches) it stays well below any sensible threshold."""
MAX_EXAMPLES = 3


class ColumnClassification(BaseModel):
    """One column's verdict; the shape retention, GDPR requests and lineage rely on."""

    column: str
    category: PiiCategory | None = Field(description="The kind of personal data; None when not personal data.")
    confidence: float = Field(ge=0.0, le=1.0, description="Share of sampled values that match, adjusted by "
                                                          "the column-name hint.")
    matched: int = Field(description="Sampled values that match the best category.")
    sampled: int = Field(description="Non-missing, non-blank values sampled.")
    examples_redacted: list[str] = Field(default_factory=list, description="Masked examples; never raw values.")
    name_hint: PiiCategory | None = Field(None, description="The category the column name suggests, if any.")
    reason: str = Field(description="Why, in counts; no values.")


class GdprSummary(BaseModel):
    contains_personal_data: bool
    direct_identifiers: list[str] = Field(description="Columns that identify a person on their own.")
    indirect_identifiers: list[str] = Field(description="Columns that identify a person in combination (IP, DOB).")
    financial: list[str] = Field(description="Payment card and bank account columns.")
    national_identifiers: list[str] = Field(description="National identification numbers (GDPR Art. 87).")
    free_text: list[str] = Field(description="Free-text columns mentioning personal data.")
    highest_severity: Severity | None
    text: str


# Column-name hints ---------------------------------------------------------------------------------

_PERSON_ROLES = {"customer", "client", "contact", "patient", "employee", "person", "holder", "cardholder", "owner",
                 "user", "member", "recipient", "sender", "student", "applicant", "beneficiary", "account", "guest",
                 "passenger", "buyer", "seller", "subscriber", "parent", "spouse", "emergency", "legal", "maiden",
                 "middle", "given", "family", "first", "last", "full", "sur", "fore", "display", "real", "birth"}
_PERSON_NAMES = {"name", "fullname", "firstname", "lastname", "surname", "givenname", "familyname", "forename",
                 "middlename", "maidenname", "nom", "prenom", "vorname", "nachname", "nombre", "apellido",
                 "apellidos", "cognome"}
_DOB_NEGATIVE = {"created", "updated", "modified", "deleted", "order", "ordered", "event", "start", "end", "due",
                 "expiry", "expires", "expiration", "valid", "issued", "timestamp", "time", "at", "shipped", "paid",
                 "invoice", "posted", "published", "seen", "login", "signup", "registered", "joined", "closed"}


def name_tokens(column: str) -> list[str]:
    """``customerEmail_2`` -> ``['customer', 'email', '2']``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column)
    return [token for token in re.split(r"[^a-z0-9]+", spaced.lower()) if token]


def name_hint(column: str) -> PiiCategory | None:
    """The category a column's name suggests, or None."""
    tokens = name_tokens(column)
    joined = "".join(tokens)
    words = set(tokens)
    if words & {"email", "mail"} or "email" in joined:
        return "email"
    if words & {"ip", "ipv4", "ipv6", "ipaddr", "ipaddress"} or joined in {"remoteaddr", "clientaddr"}:
        return "ip_address"
    if words & {"phone", "tel", "telephone", "mobile", "cell", "cellphone", "msisdn", "fax", "telefon", "telefono",
                "handy"} or "phone" in joined:
        return "phone"
    if "iban" in words or "iban" in joined or joined in {"bankaccount", "bankaccountnumber"}:
        return "iban"
    if joined in _PERSON_NAMES or (tokens and tokens[-1] in {"name", "names"} and words & _PERSON_ROLES):
        return "person_name"
    if words & {"card", "cc", "ccn", "pan", "creditcard"} or "cardnumber" in joined or "creditcard" in joined:
        return "credit_card"
    if words & {"ssn", "nino", "insee", "nir", "dni", "nie", "nif", "passport", "sin"} or joined == "ninumber" or any(
            key in joined for key in ("socialsecurity", "nationalinsurance", "nationalid", "taxid")):
        return "national_id"
    if words & {"dob", "birth", "birthday", "birthdate", "born", "geburtsdatum", "naissance", "nacimiento"} \
            or "birth" in joined:
        return "date_of_birth"
    if words & {"address", "addr", "street", "strasse", "adresse", "direccion", "indirizzo", "postal"}:
        return "postal_address"
    if words & {"notes", "note", "comment", "comments", "description", "message", "remarks", "remark", "text",
                "body", "memo", "details", "feedback"}:
        return "free_text_with_pii"
    return None


# Validators ----------------------------------------------------------------------------------------

# Unicode letters are allowed on both sides: internationalised addresses (RFC 6531) are addresses.
EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}")
EMAIL_IN_TEXT = re.compile(r"(?<![\w.+-])[\w.%+-]+@(?:[^\W_][\w-]*\.)+[^\W\d_]{2,63}\b")

_PHONE_SHAPE = re.compile(r"\+?[\d\s().\-/]+")
_PHONE_INTL = re.compile(r"(?:\+|00)[1-9][\d\s().\-/]{6,22}")
_PHONE_TRUNK = re.compile(r"\(?0\d{1,5}\)?[\s.\-/]\d[\d\s.\-/]{4,16}")
_PHONE_NANP = re.compile(r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}")
PHONE_IN_TEXT = re.compile(r"(?<![\w+])(?:\+[1-9]\d{0,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,5}(?:[\s.-]?\d{1,5}){1,5}"
                           r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4})(?!\w)")
_DATE_SHAPES = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")

_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_IPV6_SHAPE = re.compile(r"[0-9A-Fa-f:.]{2,45}")

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18,
    "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23,
    "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27,
    "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26,
    "UA": 29, "VG": 24, "XK": 20,
}
"""ISO 13616 IBAN length per country (SWIFT IBAN registry), for the countries most data will hold."""
_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
IBAN_IN_TEXT = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")

_CARD_SHAPE = re.compile(r"\d(?:[ -]?\d){11,18}")
CARD_IN_TEXT = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")

_SSN = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}")
_SSN_BARE = re.compile(r"(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}")
SSN_IN_TEXT = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]")
_INSEE = re.compile(r"([12])(\d{2})(0[1-9]|1[0-2]|[2-9]\d)(\d{2}|2[AB])(\d{3})(\d{3})(\d{2})")
_DNI = re.compile(r"([XYZ]?)(\d{7,8})-?([A-Z])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-]00:?00)?)?")
_DMY_DATE = re.compile(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4})")

_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?")
_PARTICLES = {"de", "da", "di", "del", "della", "der", "den", "van", "von", "le", "la", "du", "dos", "das", "bin",
              "ibn", "al", "el", "ter", "ten", "y", "zu", "af"}

_ADDRESS = (
    re.compile(r"\b\d{1,5}[a-z]?,?\s+(?:[^\W\d_]+\.?\s+){1,4}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|"
               r"boulevard|blvd|way|place|pl|court|ct|square|sq|terrace|close|crescent|highway|hwy|row|gardens)\b",
               re.IGNORECASE),
    re.compile(r"\b[^\W\d_]*(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer)\s+\d{1,4}\s?[a-z]?\b",
               re.IGNORECASE),
    re.compile(r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|chemin|place|impasse|allée|quai|route)"
               r"\s+[^\W\d_]", re.IGNORECASE),
    re.compile(r"\b(?:via|viale|piazza|corso|calle|avenida|plaza|paseo|carrer|rua|ulica|ul\.)\s+[^\W\d_]+[^\d]{0,40}"
               r"\d{1,4}", re.IGNORECASE),
)

FIRST_NAMES = frozenset(name.lower() for name in """
James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony Mark
Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason Jeffrey Ryan Jacob Gary
Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Frank Patrick Raymond
Jack Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Noah Ethan Jeremy Walter Christian
Keith Roger Terry Austin Sean Gerald Carl Harold Dylan Arthur Lawrence Jordan Jesse Bryan Billy Bruce Gabriel Joe
Logan Albert Willie Alan Eugene Russell Vincent Philip Bobby Johnny Bradley Roy Ralph Louis Randy Wayne Liam Oliver
Elijah Lucas Mason Harry Charlie Oscar Leo Archie Freddie Alfie Theo Isaac Mary Patricia Jennifer Linda Elizabeth
Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Sandra Margaret Ashley Kimberly Emily Donna Michelle Carol Amanda
Melissa Deborah Stephanie Dorothy Rebecca Sharon Laura Cynthia Amy Kathleen Angela Shirley Brenda Emma Anna Pamela
Nicole Samantha Katherine Christine Helen Debra Rachel Carolyn Janet Maria Catherine Heather Diane Olivia Julie
Joyce Victoria Ruth Virginia Lauren Kelly Christina Joan Evelyn Judith Andrea Hannah Megan Cheryl Jacqueline Martha
Madison Teresa Gloria Sara Janice Ann Kathryn Abigail Sophia Frances Jean Alice Judy Isabella Julia Grace Amber
Denise Danielle Marilyn Beverly Charlotte Natalie Theresa Diana Brittany Doris Kayla Alexis Lori Marie Amelia Isla
Ava Mia Ella Poppy Lily Freya Ivy Florence Evie Rosie Lukas Jonas Felix Maximilian Paul Leon Finn Elias Ben Luis
Niklas Moritz Tim Jan Tobias Florian Sebastian Stefan Michael Thomas Andreas Markus Jürgen Klaus Wolfgang Dieter
Uwe Frank Sven Marie Sophie Lena Lea Leonie Laura Katrin Sabine Petra Monika Ursula Claudia Andrea Stefanie Julia
Johanna Greta Klara Mila Lina Louis Hugo Gabriel Arthur Jules Raphaël Théo Tom Nathan Lucas Mathis Enzo Antoine
Pierre Nicolas Julien Maxime Alexandre Guillaume Camille Léa Chloé Manon Inès Zoé Jade Louise Alice Lola Juliette
Céline Nathalie Isabelle Sylvie Valérie Sandrine Mateo Alejandro Pablo Álvaro Javier Carlos Miguel Manuel Antonio
Francisco Juan Diego Sergio Jorge Alberto Lucía Martina Sofía Paula Valeria Daniela Carmen Laura Elena Isabel
Pilar Rosa Teresa Leonardo Francesco Alessandro Lorenzo Mattia Andrea Gabriele Riccardo Tommaso Edoardo Marco
Giuseppe Giovanni Luca Matteo Davide Simone Federico Niccolò Giulia Aurora Ginevra Beatrice Chiara Francesca Alessia
Sara Martina Giorgia Elisa Valentina Federica Daan Sem Levi Milan Bram Lars Thijs Ruben Tess Fenna Noor Sanne Lotte
Anouk Femke Eva Jan Antoni Aleksander Franciszek Wojciech Łukasz Piotr Krzysztof Tomasz Paweł Marcin Michał Zofia
Zuzanna Hanna Maja Oliwia Agnieszka Katarzyna Małgorzata Joanna Magdalena William Oscar Erik Karl Nils Björn Magnus
Anders Johan Astrid Elsa Ebba Saga Ingrid Åsa Karin Kerstin Linnea Emil Mohammed Muhammad Ahmed Ali Omar Yusuf
Fatima Aisha Mariam Layla Wei Jing Li Ming Hiroshi Yuki Haruto Sakura Raj Rahul Amit Priya Ananya Deepak Arjun
Kwame Ama Chinedu Ngozi Tunde Ade Olga Ivan Dmitri Sergei Natalia Irina Svetlana Anastasia Ewa Henrik Mikkel
""".split())
"""Common given names across the locales the platform serves; a name-shaped value (``Anna Berg``) counts
without a name hint only when one of its words is a known given name, so ``Blue Widget`` does not."""


def digits_of(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> str | None:
    """The card scheme whose issuer prefix and length ``number`` (digits only) has, or None."""
    n = len(number)
    two, four = int(number[:2]), int(number[:4])
    if number[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (number.startswith("6011") or number.startswith("65") or 644 <= int(number[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(number[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if two == 62 and 16 <= n <= 19:
        return "unionpay"
    if (two == 50 or 56 <= two <= 69) and 12 <= n <= 19:
        return "maestro"
    return None


def is_card(value: str, hinted: bool = False) -> bool:
    if not _CARD_SHAPE.fullmatch(value):
        return False
    number = digits_of(value)
    return card_brand(number) is not None and luhn_valid(number)


def iban_valid(compact: str) -> bool:
    """ISO 13616: known country, its length, and (rearranged, letters as 10..35) mod 97 == 1."""
    if not _IBAN_SHAPE.fullmatch(compact) or IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def is_iban(value: str, hinted: bool = False) -> bool:
    return iban_valid(value.replace(" ", "").upper())


def is_email(value: str, hinted: bool = False) -> bool:
    return "@" in value and EMAIL.fullmatch(value) is not None


def is_ip(value: str, hinted: bool = False) -> bool:
    if _IPV4.fullmatch(value):
        return True
    if value.count(":") >= 2 and _IPV6_SHAPE.fullmatch(value):
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            return False
        return True
    return False


def is_phone(value: str, hinted: bool = False) -> bool:
    if not _PHONE_SHAPE.fullmatch(value) or _SSN.fullmatch(value) or _DATE_SHAPES.fullmatch(value):
        return False
    count = len(digits_of(value))
    if not 7 <= count <= 15:
        return False
    if hinted:
        return True
    has_separator = any(ch in value for ch in " ().-/")
    if _PHONE_INTL.fullmatch(value) and count >= 8 and (value.startswith("+") or has_separator):
        return True
    if _PHONE_TRUNK.fullmatch(value) and count >= 9:
        return True
    return _PHONE_NANP.fullmatch(value) is not None


def insee_valid(value: str) -> bool:
    """French NIR (INSEE number): 13 characters and a key 97 − (number mod 97); Corsica's 2A/2B count as 19/18."""
    match = _INSEE.fullmatch(value.replace(" ", "").upper())
    if match is None:
        return False
    body = "".join(match.groups()[:6]).replace("2A", "19").replace("2B", "18")
    return 97 - int(body) % 97 == int(match.group(7))


def dni_valid(value: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): the letter is number mod 23."""
    match = _DNI.fullmatch(value.replace(" ", "").upper())
    if match is None:
        return False
    prefix, number, letter = match.groups()
    if (prefix and len(number) != 7) or (not prefix and len(number) != 8):
        return False
    return _DNI_LETTERS[int(str("XYZ".index(prefix)) + number if prefix else number) % 23] == letter


def is_national_id(value: str, hinted: bool = False) -> bool:
    upper = value.upper()
    return bool(_SSN.fullmatch(value) or (hinted and _SSN_BARE.fullmatch(value)) or _NINO.fullmatch(upper)
                or insee_valid(value) or dni_valid(value))


def is_person_name(value: str, hinted: bool = False) -> bool:
    if len(value) > 80:
        return False
    if "," in value:
        last, _, first = value.partition(",")
        tokens = first.split() + last.split()
    else:
        tokens = value.split()
    if not 1 <= len(tokens) <= 6 or (len(tokens) == 1 and not hinted):
        return False
    for index, token in enumerate(tokens):
        if not _NAME_TOKEN.fullmatch(token):
            return False
        edge = index in (0, len(tokens) - 1)
        if token.lower() in _PARTICLES and not edge:
            continue
        letters = token.rstrip(".")
        if not letters[0].isupper() or (len(letters) > 1 and letters.isupper()):
            return False
    if hinted:
        return True
    return any(token.lower() in FIRST_NAMES for token in tokens)


def is_address(value: str, hinted: bool = False) -> bool:
    if len(value) > 200 or not any(ch.isdigit() for ch in value):
        return False
    return any(pattern.search(value) for pattern in _ADDRESS)


def parse_date(value: str) -> date | None:
    """A calendar date written as a date only (``1985-03-12``, ``12.03.1985``, ``03/12/1985``), or None."""
    match = _ISO_DATE.fullmatch(value)
    candidates: list[tuple[int, int, int]] = []
    if match:
        candidates.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    else:
        match = _DMY_DATE.fullmatch(value)
        if match:
            first, second, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
            candidates += [(year, second, first), (year, first, second)]
    for year, month, day in candidates:
        try:
            return date(year, month, day)
        except ValueError:
            continue
    return None


Validator = Callable[[str, bool], bool]
VALIDATORS: dict[str, Validator] = {
    "email": is_email, "phone": is_phone, "ip_address": is_ip, "person_name": is_person_name,
    "national_id": is_national_id, "iban": is_iban, "credit_card": is_card, "postal_address": is_address,
}
_DIGIT_CATEGORIES = ("phone", "national_id", "credit_card")
"""What an integer column can hold: the others need letters, dots or separators."""


def embedded_pii(text: str) -> list[tuple[str, str, tuple[int, int]]]:
    """Personal data inside free text: (category, raw match, span) for each validated hit."""
    found: list[tuple[str, str, tuple[int, int]]] = []
    for match in EMAIL_IN_TEXT.finditer(text):
        found.append(("email", match.group(), match.span()))
    for match in IBAN_IN_TEXT.finditer(text):
        if is_iban(match.group()):
            found.append(("iban", match.group(), match.span()))
    for match in CARD_IN_TEXT.finditer(text):
        if is_card(match.group()):
            found.append(("credit_card", match.group(), match.span()))
    for match in SSN_IN_TEXT.finditer(text):
        found.append(("national_id", match.group(), match.span()))
    for match in PHONE_IN_TEXT.finditer(text):
        span = match.span()
        taken = any(s < span[1] and span[0] < e for _, _, (s, e) in found)
        if not taken and 8 <= len(digits_of(match.group())) <= 15:
            found.append(("phone", match.group(), span))
    return found


_WORD = re.compile(r"[^\W\d_]{2,}[.,;:!?)]*")


def _is_free_text_hit(text: str) -> list[tuple[str, str]]:
    """The personal data mentioned in ``text``, if it is prose (two words besides the mentions) that mentions any."""
    if " " not in text:
        return []
    hits = embedded_pii(text)
    if not hits:
        return []
    rest = list(text)
    for _, _, (start, end) in hits:
        rest[start:end] = [" "] * (end - start)
    words = [token for token in "".join(rest).split() if _WORD.fullmatch(token.lstrip("(\"'"))]
    return [(category, raw) for category, raw, _ in hits] if len(words) >= 2 else []


# Redaction -----------------------------------------------------------------------------------------

def _mask_keep_last(value: str, keep: int) -> str:
    total = sum(ch.isalnum() for ch in value)
    seen = 0
    out = []
    for ch in value:
        if ch.isalnum():
            seen += 1
            out.append(ch if seen > total - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def redact(category: str, value: str) -> str:
    """A masked form of ``value`` that shows its shape and never the value."""
    if category == "email":
        local, _, domain = value.partition("@")
        labels = domain.split(".")
        return f"{local[:1]}***@{labels[0][:1]}***.{labels[-1]}"
    if category == "credit_card":
        return "**** **** **** " + digits_of(value)[-4:]
    if category == "iban":
        compact = value.replace(" ", "").upper()
        masked = compact[:2] + "*" * (len(compact) - 6) + compact[-4:]
        return " ".join(masked[i:i + 4] for i in range(0, len(masked), 4))
    if category == "phone":
        return _mask_keep_last(value, 2)
    if category == "national_id":
        return _mask_keep_last(value, 2)
    if category == "ip_address":
        if "." in value and ":" not in value:
            return value.split(".")[0] + ".*.*.*"
        return value.split(":")[0] + ":*:*:*"
    if category == "date_of_birth":
        parsed = parse_date(value)
        return f"{parsed.year // 100}**-**-**" if parsed else "****-**-**"
    if category == "person_name":
        return " ".join(token[:1] + "***" for token in value.replace(",", " ").split())
    return re.sub(r"\d", "*", re.sub(r"(?<=[^\W\d_])[^\W\d_]+", lambda m: "*" * len(m.group()), value))


# Classification ------------------------------------------------------------------------------------

@dataclass
class _Score:
    category: str
    matched: int
    confidence: float
    examples: list[str] = field(default_factory=list)


def _confidence(category: str, matched: int, sampled: int, hinted: bool) -> float:
    if sampled == 0:
        return HINT_FLOOR if hinted else 0.0
    share = matched / sampled
    if category == "free_text_with_pii":
        if matched == 0:
            return 0.1 if hinted else 0.0
        # A single mention makes a notes column personal data; more mentions only make it surer.
        return min(1.0, 0.6 + 2.0 * share + (0.1 if hinted else 0.0))
    if hinted:
        return min(1.0, HINT_FLOOR + share)
    return share * CAPS[category]


def _examples(category: str, raws: Iterable[str]) -> list[str]:
    shown: list[str] = []
    for raw in raws:
        masked = redact(category, raw)
        if masked not in shown:
            shown.append(masked)
        if len(shown) == MAX_EXAMPLES:
            break
    return shown


def _score_texts(values: list[str], hint: str | None, categories: Iterable[str]) -> list[_Score]:
    scores = []
    for category in categories:
        validator = VALIDATORS[category]
        hinted = hint == category
        matched = [value for value in values if validator(value, hinted)]
        scores.append(_Score(category, len(matched), _confidence(category, len(matched), len(values), hinted),
                             _examples(category, matched[:50])))
    return scores


def _score_dates(dates: list[date | None], hint: str | None, negative: bool) -> _Score:
    """Birth-date score of parsed values (None: not a date). Without a name hint the column must also
    look like birth dates as a whole, and must not be named like an event (``created_at``)."""
    hinted = hint == "date_of_birth"
    plausible = [d for d in dates if d is not None and 1900 <= d.year <= 2100]
    matched = len(plausible)
    confidence = _confidence("date_of_birth", matched, len(dates), hinted)
    if not hinted and matched:
        years = np.array([d.year for d in plausible])
        # Birth dates spread over decades and end well before the newest date in the column;
        # order or sign-up dates cluster in the last few years.
        looks_like_births = (np.median(years) <= years.max() - 16
                             and np.percentile(years, 90) - np.percentile(years, 10) >= 15)
        if negative or not looks_like_births:
            confidence = 0.0
    examples = _examples("date_of_birth", (d.isoformat() for d in plausible[:50]))
    return _Score("date_of_birth", matched, confidence, examples)


def _free_text_score(values: list[str], hint: str | None) -> _Score:
    matched = 0
    shown: list[str] = []
    for value in values:
        hits = _is_free_text_hit(value)
        if not hits:
            continue
        matched += 1
        category, raw = hits[0]
        example = f"[{category}] {redact(category, raw)}"
        if len(shown) < MAX_EXAMPLES and example not in shown:
            shown.append(example)
    hinted = hint == "free_text_with_pii"
    return _Score("free_text_with_pii", matched, _confidence("free_text_with_pii", matched, len(values), hinted),
                  shown)


def _column_values(series: pd.Series) -> tuple[Literal["text", "digits", "dates", "none"], list]:
    """How to check a column, and its sampled non-missing values in the form those checks take.

    ``text``: stripped non-blank strings; ``digits``: integers as decimal strings (card numbers and
    phone numbers stored as numbers); ``dates``: a ``date`` per value, None where it has a time of
    day (a timestamp is not a birth date); ``none``: nothing personal can be held (booleans, fractions).
    """
    present = series.dropna()
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "none", []
    if pd.api.types.is_datetime64_any_dtype(dtype):
        whole_days = (present.dt.normalize() == present).to_numpy()
        return "dates", [stamp.date() if whole else None for stamp, whole in zip(present, whole_days, strict=True)]
    if pd.api.types.is_integer_dtype(dtype):
        return "digits", [str(int(v)) for v in present]
    if pd.api.types.is_float_dtype(dtype):
        numbers = present.to_numpy(dtype="float64")
        numbers = numbers[np.isfinite(numbers)]
        if numbers.size and bool((numbers == np.floor(numbers)).all()) and bool((np.abs(numbers) < 1e15).all()):
            return "digits", [str(int(v)) for v in numbers]
        return "none", []
    if not (pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)):
        return "none", []
    texts = [str(v).strip() for v in present]
    return "text", [t for t in texts if t]


def classify_column(column: str, series: pd.Series, min_confidence: float) -> ColumnClassification:
    """The verdict for one column from its sampled values (``series`` is already the sample)."""
    hint = name_hint(column)
    event_named = bool(set(name_tokens(column)) & _DOB_NEGATIVE)
    kind, values = _column_values(series)
    scores: list[_Score] = []
    if kind == "text":
        scores = _score_texts(values, hint, VALIDATORS)
        parsed = [parse_date(text) for text in values]
        if any(parsed):
            scores.append(_score_dates(parsed, hint, event_named))
        scores.append(_free_text_score(values, hint))
    elif kind == "digits":
        scores = _score_texts(values, hint, _DIGIT_CATEGORIES)
    elif kind == "dates":
        scores = [_score_dates(values, hint, event_named)]
    sampled = len(values)
    best = max(scores, key=lambda s: (round(s.confidence, 9), -PRIORITY.index(s.category)), default=None)
    if best is None or (best.confidence == 0.0 and hint is None):
        reason = (f"{sampled} sampled values; none matches a personal-data category" if sampled
                  else "no non-missing values in the sample")
        return ColumnClassification(column=column, category=None, confidence=0.0, matched=0, sampled=sampled,
                                    name_hint=hint, reason=reason)
    if best.confidence == 0.0 and hint is not None:
        best = _Score(hint, 0, _confidence(hint, 0, sampled, True))
    confidence = round(min(1.0, best.confidence), 3)
    is_pii = confidence >= min_confidence and best.matched > 0
    reason = f"{best.matched} of {sampled} sampled values match {LABELS[best.category]}"
    if best.category in ("iban", "credit_card", "national_id"):
        reason += " (checksum or issuer rules validated)"
    if hint is not None:
        reason += f"; the column name suggests {LABELS[hint]}"
    if not is_pii:
        reason += f"; confidence {confidence:.2f} is below {min_confidence:.2f}, so not reported as personal data"
    return ColumnClassification(
        column=column, category=best.category if is_pii else None, confidence=confidence,
        matched=best.matched, sampled=sampled, examples_redacted=best.examples if is_pii else [], name_hint=hint,
        reason=reason)


def sample_rows(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` rows, the same ones for the same ``(frame length, limit, seed)``, in dataset order."""
    if len(frame) <= limit:
        return frame
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=limit, replace=False))
    return frame.iloc[rows]


def gdpr_summary(columns: list[ColumnClassification]) -> GdprSummary:
    found = [c for c in columns if c.category is not None]

    def having(*categories: str) -> list[str]:
        return [c.column for c in found if c.category in categories]

    direct, indirect = having(*DIRECT), having(*INDIRECT)
    financial, national, free = having("iban", "credit_card"), having("national_id"), having("free_text_with_pii")
    worst = worst_severity(SEVERITY[c.category] for c in found if c.category)
    if not found:
        text = ("No column holds personal data at the set confidence; the dataset needs no GDPR retention or "
                "erasure handling on the strength of this sample.")
    else:
        parts = [f"Personal data in {len(found)} of {len(columns)} columns (GDPR Art. 4(1))."]
        if direct:
            parts.append(f"Direct identifiers: {', '.join(direct)}.")
        if indirect:
            parts.append(f"Indirect identifiers (identify in combination): {', '.join(indirect)}.")
        if financial:
            parts.append(f"Financial data: {', '.join(financial)}; restrict access, and card numbers fall under "
                         f"PCI DSS (store masked or tokenised).")
        if national:
            parts.append(f"National identification numbers (Art. 87): {', '.join(national)}; pseudonymise "
                         f"where possible.")
        if free:
            parts.append(f"Free text mentioning personal data: {', '.join(free)}; erasure must scrub inside the "
                         f"text, not only drop rows.")
        parts.append("Each listed column needs a retention period (Art. 5(1)(e)) and must be covered by access "
                     "(Art. 15) and erasure (Art. 17) requests, including datasets derived from this one.")
        text = " ".join(parts)
    return GdprSummary(contains_personal_data=bool(found), direct_identifiers=direct, indirect_identifiers=indirect,
                       financial=financial, national_identifiers=national, free_text=free, highest_severity=worst,
                       text=text)
