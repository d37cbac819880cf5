"""pii_classifier: categories on a realistic customer table (CSV and Parquet), checksums that keep
look-alike digits out, name hints that raise but never decide, deterministic sampling, DVC versions,
and no raw personal value anywhere in the result, its findings or its evidence."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from agents.pii_classifier import AGENT, PiiInput, PiiOutput
from amas.pii import (
    card_brand,
    dni_valid,
    iban_valid,
    insee_valid,
    is_national_id,
    is_phone,
    luhn_valid,
    name_hint,
    redact,
    sample_rows,
)
from amas.registry import AgentContext, AgentInputError, Severity

pytestmark = pytest.mark.unit

FIRST = ["Anna", "James", "Sophie", "Lukas", "Camille", "Mateo", "Giulia", "Oliver", "Fatima", "Wei"]
LAST = ["Schmidt", "Smith", "Dubois", "García", "Rossi", "Nowak", "O'Brien", "van Dijk", "Jansen", "Eriksson"]
STREETS = ["Baker Street", "Station Road", "Elm Avenue", "Hauptstraße", "Rue de la Paix"]


# Independent generators: the standard algorithms, written here rather than taken from the agent.

def make_iban(country: str, bban: str) -> str:
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def luhn_complete(partial: str) -> str:
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char) * (2 if index % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return partial + str((10 - total % 10) % 10)


def make_insee(body: str) -> str:
    numeric = body.replace("2A", "19").replace("2B", "18")
    return f"{body}{97 - int(numeric) % 97:02d}"


def make_dni(number: int) -> str:
    return f"{number:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[number % 23]}"


def customers(rows: int = 300, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def digits(count: int) -> str:
        return str(rng.integers(1, 10)) + "".join(map(str, rng.integers(0, 10, count - 1)))

    idx = np.arange(rows)
    first = [FIRST[i % 10] for i in idx]
    last = [LAST[(i * 7 // 10) % 10] for i in idx]
    emails = [f"{given.lower()}.{family.lower().replace(' ', '').replace(chr(39), '')}{i}@example.com"
              for i, (given, family) in enumerate(zip(first, last, strict=True))]
    phones = [(f"+44 20 7946 {i:04d}", f"(415) 555-{i:04d}", f"+49 151 2345{i:04d}")[i % 3] for i in idx]
    ips = [f"192.0.2.{i % 250 + 1}" if i % 4 else f"2001:db8::{i:x}" for i in idx]
    ssns = [f"{rng.integers(1, 666):03d}-{rng.integers(1, 100):02d}-{rng.integers(1, 10_000):04d}" for _ in idx]
    national = []
    for i in idx:
        kind = i % 3
        if kind == 0:
            national.append(make_insee(f"{1 + i % 2}{80 + i % 20:02d}{1 + i % 12:02d}{'2A' if i % 5 == 0 else '75'}"
                                       f"{i % 1000:03d}{(i * 7) % 1000:03d}"))
        elif kind == 1:
            national.append(make_dni(int(rng.integers(10_000_000, 99_999_999))))
        else:
            national.append(f"AB{i % 100:02d}{(i * 3) % 100:02d}{(i * 7) % 100:02d}C")
    bbans = {"DE": lambda: digits(18), "FR": lambda: digits(23), "GB": lambda: "WEST" + digits(14),
             "NL": lambda: "ABNA" + digits(10)}
    ibans = [make_iban(country, bbans[country]()) for country in (("DE", "FR", "GB", "NL")[i % 4] for i in idx)]
    broken_ibans = [iban[:2] + f"{(int(iban[2:4]) + 1) % 97:02d}" + iban[4:] for iban in ibans]
    cards = [luhn_complete("4" + digits(14)) if i % 2 else luhn_complete("5" + str(rng.integers(1, 6)) + digits(13))
             for i in idx]
    not_cards = [int(card[:-1] + str((int(card[-1]) + 1) % 10)) for card in cards]
    birth = [date(1940, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 65 * 365, rows)]
    notes = [f"Customer asked to be contacted at {emails[i]} about the refund." if i % 3 == 0
             else "Delivered on time, no issues reported." for i in idx]
    return pd.DataFrame({
        "customer_email": emails,
        "phone": phones,
        "client_ip": ips,
        "full_name": [f"{given} {family}" for given, family in zip(first, last, strict=True)],
        "contact": [f"{family}, {given}" for given, family in zip(first, last, strict=True)],
        "dob": pd.to_datetime(birth),
        "ssn": ssns,
        "tax_ref": national,
        "account_iban": ibans,
        "payout_ref": [" ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) for iban in ibans],
        "legacy_ref": broken_ibans,
        "card_number": [int(card) for card in cards],
        "order_number": not_cards,
        "notes": notes,
        "shipping_address": [f"{STREETS[i % 5]} {i + 1}" if i % 5 == 3 else f"{i + 1} {STREETS[i % 5]}"
                             for i in idx],
        "amount": np.round(rng.lognormal(3, 1, rows), 2),
        "product_code": [f"PRD-{i:05d}" for i in idx],
        "quantity": rng.integers(1, 10, rows),
        "status": [("paid", "shipped", "returned")[i % 3] for i in idx],
        "created_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, rows), unit="s"),
    })


EXPECTED = {
    "customer_email": "email", "phone": "phone", "client_ip": "ip_address", "full_name": "person_name",
    "contact": "person_name", "dob": "date_of_birth", "ssn": "national_id", "tax_ref": "national_id",
    "account_iban": "iban", "payout_ref": "iban", "legacy_ref": None, "card_number": "credit_card",
    "order_number": None, "notes": "free_text_with_pii", "shipping_address": "postal_address", "amount": None,
    "product_code": None, "quantity": None, "status": None, "created_at": None,
}


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _run(context: AgentContext, path: Path | str, **fields: object) -> PiiOutput:
    return AGENT.run(PiiInput(path=str(path), **fields), context)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return customers()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_categories_on_a_customer_table(tmp_path: Path, agent_context: AgentContext, frame: pd.DataFrame,
                                        suffix: str) -> None:
    result = _run(agent_context, _write(frame, tmp_path / f"customers{suffix}"))

    got = {c.column: c.category for c in result.columns}
    assert got == EXPECTED
    assert [c.column for c in result.columns] == list(frame.columns)
    assert result.pii_columns == [name for name, category in EXPECTED.items() if category]
    assert (result.rows, result.sampled_rows) == (300, 300)
    by_name = {c.column: c for c in result.columns}
    for name in ("customer_email", "account_iban", "payout_ref", "card_number", "ssn", "dob", "phone"):
        assert (by_name[name].matched, by_name[name].sampled, by_name[name].confidence) == (300, 300, 1.0), name
    assert by_name["notes"].matched == 100 and by_name["notes"].confidence == 1.0
    # Without a name hint a value-only match is capped below 1: other data can share the shape.
    assert by_name["tax_ref"].confidence == 0.95 and by_name["tax_ref"].name_hint is None
    assert by_name["contact"].confidence == 0.9
    assert by_name["legacy_ref"].matched == 0 and by_name["order_number"].matched == 0
    assert result.reads == [str(tmp_path / f"customers{suffix}")]


def test_examples_are_masked_and_no_raw_value_leaks(tmp_path: Path, agent_context: AgentContext,
                                                    frame: pd.DataFrame) -> None:
    result = _run(agent_context, _write(frame, tmp_path / "customers.parquet"))

    examples = {c.column: c.examples_redacted for c in result.columns}
    assert examples["customer_email"][0] == "a***@e***.com"
    assert examples["card_number"][0] == "**** **** **** " + str(frame["card_number"][0])[-4:]
    assert examples["account_iban"][0].startswith("DE** ****") and examples["phone"][0] == "+** ** **** **00"
    assert examples["client_ip"][0] == "2001:*:*:*" and examples["full_name"][0] == "A*** S***"
    assert examples["dob"][0] in ("19**-**-**", "20**-**-**") and examples["ssn"][0].startswith("***-**-**")
    assert examples["notes"][0] == "[email] a***@e***.com"
    assert all(not examples[name] for name, category in EXPECTED.items() if category is None)

    [evidence] = result.evidence
    stored = agent_context.storage.get(evidence.key)
    assert evidence.sha256 == hashlib.sha256(stored).hexdigest()
    dump = "\n".join([result.model_dump_json(), stored.decode("utf-8"), result.summary,
                      result.gdpr.text] + [f.title + f.detail for f in result.findings])
    raw: set[str] = set()
    for name, category in EXPECTED.items():
        if category is not None and name != "dob":
            raw.update(str(v) for v in frame[name])
    raw.update(d.strftime("%Y-%m-%d") for d in frame["dob"])
    raw.update(email.split("@")[0] for email in frame["customer_email"])
    leaked = sorted(value for value in raw if value in dump)
    assert leaked == []


def test_checksums_decide_and_confidence_is_the_matching_share(tmp_path: Path, agent_context: AgentContext,
                                                                frame: pd.DataFrame) -> None:
    valid, broken = list(frame["account_iban"][:40]), list(frame["legacy_ref"][40:100])
    mixed = pd.DataFrame({"ref": valid + broken, "code": [str(v) for v in frame["order_number"][:100]]})
    path = _write(mixed, tmp_path / "mixed.csv")

    strict = _run(agent_context, path)
    ref = strict.columns[0]
    assert (ref.category, ref.matched, ref.sampled, ref.confidence) == (None, 40, 100, 0.4)
    assert "below 0.50" in ref.reason and ref.examples_redacted == []
    # Random-looking 16-digit strings with a valid card prefix but a wrong Luhn digit are not cards.
    assert strict.columns[1].category is None and strict.columns[1].matched == 0

    lenient = _run(agent_context, path, min_confidence=0.3)
    assert (lenient.columns[0].category, lenient.columns[0].confidence) == ("iban", 0.4)
    assert lenient.pii_columns == ["ref"]


def test_a_name_hint_alone_gives_low_confidence(tmp_path: Path, agent_context: AgentContext) -> None:
    table = pd.DataFrame({"email": ["not provided", "refused", "unknown"] * 20,
                          "mobile": [f"0049151{i:07d}" for i in range(60)],
                          "reference": [f"0049151{i:07d}" for i in range(60)]})
    result = _run(agent_context, _write(table, tmp_path / "hints.csv"))

    email, mobile, reference = result.columns
    assert (email.category, email.confidence, email.name_hint, email.matched) == (None, 0.2, "email", 0)
    assert "the column name suggests email addresses" in email.reason
    # A hint lets bare digits count as phone numbers; without one the same values are not.
    assert (mobile.category, mobile.confidence) == ("phone", 1.0)
    assert (reference.category, reference.confidence) == (None, 0.0)
    info = [f for f in result.findings if f.severity == Severity.info]
    assert [f.title for f in info] == ["Column 'email' is named like email addresses but its values are not"]


def test_findings_severity_and_gdpr_summary(tmp_path: Path, agent_context: AgentContext, frame: pd.DataFrame) -> None:
    result = _run(agent_context, _write(frame, tmp_path / "customers.parquet"))

    severity = {f.location: f.severity for f in result.findings}
    assert severity == {
        "customer_email": Severity.medium, "phone": Severity.medium, "client_ip": Severity.low,
        "full_name": Severity.medium, "contact": Severity.medium, "dob": Severity.medium, "ssn": Severity.high,
        "tax_ref": Severity.high, "account_iban": Severity.high, "payout_ref": Severity.high,
        "card_number": Severity.high, "notes": Severity.medium, "shipping_address": Severity.medium,
    }
    assert [f.severity for f in result.findings] == sorted((f.severity for f in result.findings),
                                                           key=lambda s: -list(Severity).index(s))
    gdpr = result.gdpr
    assert gdpr.contains_personal_data and gdpr.highest_severity == Severity.high
    assert gdpr.direct_identifiers == ["customer_email", "phone", "full_name", "contact", "ssn", "tax_ref",
                                       "account_iban", "payout_ref", "card_number", "shipping_address"]
    assert gdpr.indirect_identifiers == ["client_ip", "dob"]
    assert gdpr.financial == ["account_iban", "payout_ref", "card_number"]
    assert gdpr.national_identifiers == ["ssn", "tax_ref"] and gdpr.free_text == ["notes"]
    assert "Art. 87" in gdpr.text and "erasure must scrub inside the text" in gdpr.text
    assert result.summary.startswith(f"{tmp_path / 'customers.parquet'} (parquet): 300 rows, 300 sampled, 20 columns."
                                     " 13 hold personal data: customer_email (email, 1.00);")
    assert "High-risk: ssn, tax_ref, account_iban, payout_ref, card_number." in result.summary


def test_no_personal_data(tmp_path: Path, agent_context: AgentContext, frame: pd.DataFrame) -> None:
    path = _write(frame[["amount", "product_code", "quantity", "status", "created_at"]], tmp_path / "sales.csv")
    result = _run(agent_context, path)
    assert result.pii_columns == [] and result.findings == []
    assert not result.gdpr.contains_personal_data and result.gdpr.highest_severity is None
    assert result.summary.endswith("No column holds personal data at the set confidence.")


def test_sampling_is_bounded_and_deterministic(tmp_path: Path, agent_context: AgentContext) -> None:
    rows = 25_000
    big = pd.DataFrame({"email": [f"user{i}@example.org" if i % 2 else "none" for i in range(rows)],
                        "n": np.arange(rows)})
    path = _write(big, tmp_path / "big.parquet")

    first = _run(agent_context, path, sample_rows=2_000)
    again = _run(agent_context, path, sample_rows=2_000)
    assert first.sampled_rows == 2_000 and first.rows == rows
    assert first.columns[0].sampled == 2_000 and 800 < first.columns[0].matched < 1_200
    assert first.columns == again.columns
    picked = sample_rows(big, 2_000, 0)
    assert list(picked.index) == sorted(picked.index) and picked.index.is_unique
    assert picked.index.equals(sample_rows(big, 2_000, 0).index)
    assert not picked.index.equals(sample_rows(big, 2_000, 1).index)
    assert sample_rows(big, rows, 0) is big
    assert first.columns[0].matched == int((picked["email"] != "none").sum())


def test_dvc_tracked_dataset(tmp_path: Path, agent_context: AgentContext, frame: pd.DataFrame) -> None:
    path = _write(frame[["customer_email", "amount"]], tmp_path / "subjects.csv")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    (tmp_path / "subjects.csv.dvc").write_text(f"outs:\n- md5: {md5}\n  size: 1\n  hash: md5\n  path: subjects.csv\n",
                                               encoding="utf-8")
    result = _run(agent_context, path)
    assert result.dataset.version == md5 and f"DVC md5 {md5}" in result.summary
    assert result.pii_columns == ["customer_email"]

    path.unlink()
    with pytest.raises(AgentInputError, match=r"^path: .*subjects\.csv is not in the workspace but DVC tracks it.*"
                                              r"`dvc pull"):
        _run(agent_context, path)


def test_bad_input_names_the_field(tmp_path: Path, agent_context: AgentContext) -> None:
    with pytest.raises(AgentInputError, match=r"^path: .*absent\.parquet does not exist$"):
        _run(agent_context, tmp_path / "absent.parquet")
    (tmp_path / "people.json").write_text("[]", encoding="utf-8")
    with pytest.raises(AgentInputError, match=r"^path: unsupported extension '\.json'"):
        _run(agent_context, tmp_path / "people.json")
    with pytest.raises(AgentInputError, match=r"^columns: no column 'mail'"):
        _run(agent_context, _write(pd.DataFrame({"email": ["a@b.co"]}), tmp_path / "p.csv"), columns=["mail"])
    for fields in ({"path": "p.csv", "sample_rows": 0}, {"path": "p.csv", "min_confidence": 2.0},
                   {"path": "p.csv", "seed": -1}, {"path": ""}):
        with pytest.raises(ValidationError):
            PiiInput(**fields)


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert card_brand("378282246310005") == "amex" and card_brand("9111111111111111") is None
    assert iban_valid("GB82WEST12345698765432") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82WEST12345698765431") and not iban_valid("DE8937040044053201300")  # digit, length
    assert not iban_valid("ZZ82WEST12345698765432")  # unknown country
    valid = make_insee("2690549588157")
    assert insee_valid(valid) and insee_valid(make_insee("185022A006084"))  # 2A: Corsica
    assert not insee_valid(valid[:-2] + f"{int(valid[-2:]) % 97 + 1:02d}")
    assert dni_valid("12345678Z") and not dni_valid("12345678A")
    assert dni_valid("X1234567" + "TRWAGMYFPDXBNJZSQVHLCKE"[1234567 % 23])
    assert is_national_id("078-05-1120") and is_national_id("AB 12 34 56 C")
    for bad in ("000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "BG123456C", "QQ123456C"):
        assert not is_national_id(bad), bad
    assert is_phone("+44 20 7946 0958") and is_phone("(415) 555-0123") and is_phone("030 1234567")
    assert not is_phone("12345678") and not is_phone("01.02.1985") and not is_phone("123-45-6789")
    assert is_phone("12345678", True)


def test_redaction() -> None:
    assert redact("email", "john.doe@mail.example.com") == "j***@m***.com"
    assert redact("credit_card", "4111 1111 1111 1234") == "**** **** **** 1234"
    assert redact("iban", "DE89 3704 0044 0532 0130 00") == "DE** **** **** **** **30 00"
    assert redact("phone", "+44 20 7946 0958") == "+** ** **** **58"
    assert redact("ip_address", "203.0.113.7") == "203.*.*.*"
    assert redact("national_id", "078-05-1120") == "***-**-**20"
    assert redact("date_of_birth", "1985-03-12") == "19**-**-**"
    assert redact("person_name", "Jean-Luc Picard") == "J*** P***"
    assert redact("postal_address", "221 Baker Street") == "*** B**** S*****"


def test_name_hints() -> None:
    assert name_hint("customerEmail") == "email" and name_hint("email_address") == "email"
    assert name_hint("ip_address") == "ip_address" and name_hint("billing_address") == "postal_address"
    assert name_hint("Card Holder Name") == "person_name" and name_hint("product_name") is None
    assert name_hint("DOB") == "date_of_birth" and name_hint("created_at") is None
    assert name_hint("ni_number") == "national_id" and name_hint("nino") == "national_id"
    assert name_hint("zip") is None and name_hint("notes") == "free_text_with_pii"


def test_registered_under_its_name() -> None:
    [entry] = [e for e in entry_points(group="amas.agents") if e.name == "pii_classifier"]
    assert entry.load() is AGENT and AGENT.name == "pii_classifier"
    assert all(field.description for field in PiiInput.model_fields.values())
    assert json.dumps(PiiOutput.model_json_schema())  # the typed output renders as a JSON schema
