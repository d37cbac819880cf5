"""Synthetic data subjects: the people that the platform's personal data is about.

The table is the seed of the DVC pipeline and the test bed for retention, erasure and
PII classification, so it looks real (names, emails, phones and birth dates that fit
together per country) while describing no one: names come from the small lists below,
emails use the reserved ``example.*`` domains (RFC 2606), and everything else is drawn from
numpy's PCG64 generator.

Output is a pure function of ``(rows, seed)``: the same pair gives the same bytes on every
run with the locked numpy and pandas. Rows are generated in fixed-size chunks, chunk ``i``
from ``PCG64(seed).jumped(i)``, so memory stays bounded for large tables and the bytes do
not depend on how the caller consumes the chunks.

The pipeline's ``generate`` stage builds its people table from these chunks
(``amas.datasets.generate``). ``python -m amas.datasets.sample --out PATH --params FILE`` writes
the table alone as CSV from a params file with a ``sample: {rows, seed}`` section.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from amas.errors import AmasError, ConfigError
from amas.fsutil import atomic_write

COLUMNS = (
    "subject_id",
    "full_name",
    "email",
    "phone",
    "date_of_birth",
    "country",
    "created_at",
)
MIN_ROWS = 1
MAX_ROWS = 10_000_000
CHUNK_ROWS = 100_000
PARAMS_SECTION = "sample"

# RFC 2606 reserves these domains, so a synthetic address can never reach a real mailbox.
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# Accounts are created in this window; birth dates put the subject at 18 to 90 years old
# on the day the account was created. Fixed dates, never "today": output must not drift.
CREATED_FROM = np.datetime64("2019-01-01T00:00:00", "s")
CREATED_UNTIL = np.datetime64("2026-11-01T00:00:00", "s")
MIN_AGE_DAYS = 18 * 366
MAX_AGE_DAYS = 90 * 365


@dataclass(frozen=True)
class _Locale:
    phone: str  # "#" is replaced by a random digit
    first: tuple[str, ...]
    last: tuple[str, ...]


# Every locale has the same number of first and last names, so one numpy lookup on a
# (country, index) grid picks a name for every row at once.
_LOCALES: dict[str, _Locale] = {
    "DE": _Locale(
        "+49 15# ########",
        ("Anna", "Lukas", "Marie", "Jonas", "Sophie", "Felix", "Lena", "Maximilian",
         "Hannah", "Paul", "Jürgen", "Katrin"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner",
         "Becker", "Schulz", "Hoffmann", "Koch", "Groß"),
    ),
    "FR": _Locale(
        "+33 6 ## ## ## ##",
        ("Camille", "Louis", "Léa", "Hugo", "Chloé", "Gabriel", "Manon", "Arthur",
         "Inès", "Jules", "Zoé", "Théo"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit",
         "Durand", "Leroy", "Moreau", "Lefèvre", "Girard"),
    ),
    "GB": _Locale(
        "+44 7### ######",
        ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Olivia",
         "Charlie", "Emily", "Thomas", "Grace"),
        ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson",
         "Davies", "Evans", "Walker", "O'Brien", "Robinson"),
    ),
    "ES": _Locale(
        "+34 6## ### ###",
        ("Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Daniel", "Paula", "Alejandro",
         "Valeria", "Pablo", "Julia", "Álvaro"),
        ("García", "Rodríguez", "González", "Fernández", "López", "Martínez",
         "Sánchez", "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz"),
    ),
    "IT": _Locale(
        "+39 3## ### ####",
        ("Giulia", "Leonardo", "Sofia", "Francesco", "Aurora", "Alessandro",
         "Ginevra", "Lorenzo", "Beatrice", "Mattia", "Chiara", "Niccolò"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo",
         "Ricci", "Marino", "Greco", "Bruno", "Gallo"),
    ),
    "NL": _Locale(
        "+31 6 ########",
        ("Emma", "Daan", "Julia", "Sem", "Tess", "Lucas", "Sara", "Levi", "Fenna",
         "Finn", "Noor", "Milan"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker",
         "Janssen", "Visser", "Smit", "Meijer", "de Boer", "Mulder"),
    ),
    "PL": _Locale(
        "+48 5## ### ###",
        ("Zofia", "Antoni", "Zuzanna", "Jan", "Hanna", "Aleksander", "Maja",
         "Franciszek", "Julia", "Łukasz", "Oliwia", "Wojciech"),
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński",
         "Lewandowski", "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Król"),
    ),
    "SE": _Locale(
        "+46 70 ### ## ##",
        ("Alice", "William", "Maja", "Hugo", "Elsa", "Liam", "Astrid", "Oscar",
         "Ebba", "Lucas", "Åsa", "Björn"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson",
         "Olsson", "Persson", "Svensson", "Gustafsson", "Lindström", "Öberg"),
    ),
}
_COUNTRY_CODES = tuple(_LOCALES)
_PHONE_DIGITS = max(locale.phone.count("#") for locale in _LOCALES.values())
_FIRST = np.array([locale.first for locale in _LOCALES.values()], dtype=object)
_LAST = np.array([locale.last for locale in _LOCALES.values()], dtype=object)

# NFKD leaves these letters alone (they are not a base letter plus an accent).
_ASCII_FOLD = str.maketrans({"ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae"})


def _email_part(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD))
    return "".join(ch for ch in folded.lower() if ch.isascii() and ch.isalnum())


_FIRST_EMAIL = np.vectorize(_email_part, otypes=[object])(_FIRST)
_LAST_EMAIL = np.vectorize(_email_part, otypes=[object])(_LAST)


@dataclass(frozen=True)
class SampleParams:
    """The ``sample`` section of ``params.yaml``, validated on construction."""

    rows: int
    seed: int

    def __post_init__(self) -> None:
        if not _is_int(self.rows) or not MIN_ROWS <= self.rows <= MAX_ROWS:
            raise ConfigError(
                f"{PARAMS_SECTION}.rows must be a whole number from {MIN_ROWS} to "
                f"{MAX_ROWS}, got {_show(self.rows)}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(
                f"{PARAMS_SECTION}.seed must be a whole number >= 0, got {_show(self.seed)}"
            )


def _is_int(value: object) -> bool:
    # bool is an int subclass, and YAML turns "yes"/"true" into one: refuse it.
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def iter_subject_chunks(rows: int, seed: int) -> Iterator[pd.DataFrame]:
    """Yield the subjects table in chunks of at most ``CHUNK_ROWS`` rows, in order."""
    params = SampleParams(rows, seed)
    bit_generator = np.random.PCG64(params.seed)
    for index, start in enumerate(range(0, params.rows, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, params.rows - start)
        rng = np.random.Generator(bit_generator.jumped(index))
        yield _chunk(rng, start, count)


def generate_subjects(rows: int, seed: int) -> pd.DataFrame:
    """The whole subjects table as one DataFrame (see ``iter_subject_chunks``)."""
    return pd.concat(iter_subject_chunks(rows, seed), ignore_index=True)


def _chunk(rng: np.random.Generator, start: int, count: int) -> pd.DataFrame:
    country = rng.integers(0, len(_COUNTRY_CODES), size=count)
    first = rng.integers(0, _FIRST.shape[1], size=count)
    last = rng.integers(0, _LAST.shape[1], size=count)
    domain = rng.integers(0, len(EMAIL_DOMAINS), size=count)
    id_bytes = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    span = int((CREATED_UNTIL - CREATED_FROM) / np.timedelta64(1, "s"))
    created = CREATED_FROM + rng.integers(0, span, size=count).astype("timedelta64[s]")
    age_days = rng.integers(MIN_AGE_DAYS, MAX_AGE_DAYS + 1, size=count)
    born = created.astype("datetime64[D]") - age_days.astype("timedelta64[D]")
    digits = rng.integers(0, 10, size=(count, _PHONE_DIGITS), dtype=np.uint8)

    first_names = _FIRST[country, first]
    last_names = _LAST[country, last]
    # The serial (row number, 1-based) ends the local part; names never end in a digit,
    # so two rows can never share an address.
    serials = range(start + 1, start + count + 1)
    emails = [
        f"{f}.{la}{n}@{EMAIL_DOMAINS[d]}"
        for f, la, n, d in zip(
            _FIRST_EMAIL[country, first], _LAST_EMAIL[country, last], serials, domain,
            strict=True,
        )
    ]

    return pd.DataFrame(
        {
            "subject_id": pd.array(_uuid4_strings(id_bytes), dtype="str"),
            "full_name": pd.array(
                [f"{f} {la}" for f, la in zip(first_names, last_names, strict=True)],
                dtype="str",
            ),
            "email": pd.array(emails, dtype="str"),
            "phone": pd.array(_phones(country, digits), dtype="str"),
            "date_of_birth": pd.Series(born.astype("datetime64[s]")),
            "country": pd.array([_COUNTRY_CODES[c] for c in country], dtype="str"),
            "created_at": pd.Series(created).dt.tz_localize("UTC"),
        }
    )


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DASHES = (8, 12, 16, 20)


def _uuid4_strings(raw: np.ndarray) -> np.ndarray:
    """Random version-4 UUIDs in canonical text form, one per row of 16 random bytes.

    Built as a character matrix rather than with ``uuid.UUID`` per row: same text,
    about twenty times faster on large tables.
    """
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    nibbles = np.stack([raw >> 4, raw & 0x0F], axis=-1).reshape(len(raw), 32)
    chars = np.insert(_HEX[nibbles], _UUID_DASHES, ord("-"), axis=1)
    return np.ascontiguousarray(chars).view("S36").ravel().astype(str)


def _phones(country: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """Fill each row's country template: every ``#`` takes the row's next random digit."""
    phones = np.empty(len(country), dtype=object)
    for code_index, code in enumerate(_COUNTRY_CODES):
        rows = np.flatnonzero(country == code_index)
        template = np.frombuffer(_LOCALES[code].phone.encode("ascii"), dtype=np.uint8)
        slots = template == ord("#")
        chars = np.tile(template, (len(rows), 1))
        chars[:, slots] = digits[rows, : slots.sum()] + ord("0")
        phones[rows] = chars.view(f"S{len(template)}").ravel().astype(str)
    return phones


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO 8601 text: a date for birth dates, UTC with ``Z`` for timestamps."""
    return frame.assign(
        date_of_birth=frame["date_of_birth"].dt.strftime("%Y-%m-%d"),
        created_at=frame["created_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def write_subjects(path: str | os.PathLike[str], rows: int, seed: int) -> Path:
    """Write the subjects table as CSV to ``path``, atomically; return the path.

    The rows go to a temporary file in the target's directory, which is fsynced and then
    renamed over the target: a reader (or DVC) sees the old file or the complete new one,
    never a partial write.
    """
    params = SampleParams(rows, seed)

    def write(sink: BinaryIO) -> None:
        # newline="" and "\n" terminators: the same bytes on every platform.
        out = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        for index, chunk in enumerate(iter_subject_chunks(params.rows, params.seed)):
            _csv_frame(chunk).to_csv(out, index=False, header=index == 0, lineterminator="\n")
        out.flush()
        out.detach()  # atomic_write fsyncs and closes the file itself

    return atomic_write(Path(path), write)


def load_params(path: str | os.PathLike[str]) -> SampleParams:
    """Read and validate the ``sample`` section of a params file."""
    from amas.pipeline.params import read_params_file

    where = Path(path)
    section = read_params_file(where).get(PARAMS_SECTION)
    if not isinstance(section, dict):
        raise ConfigError(
            f"{where}: needs a '{PARAMS_SECTION}:' section with rows and seed"
        )
    missing = [key for key in ("rows", "seed") if key not in section]
    if missing:
        names = ", ".join(f"{PARAMS_SECTION}.{key}" for key in missing)
        raise ConfigError(f"{where}: {names} missing")
    try:
        return SampleParams(rows=section["rows"], seed=section["seed"])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amas.datasets.sample",
        description="Write the synthetic data-subjects table as CSV.",
    )
    parser.add_argument("--out", required=True, type=Path, help="CSV file to write")
    parser.add_argument(
        "--params", default=Path("params.yaml"), type=Path,
        help="params file with a 'sample: {rows, seed}' section (default: params.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        written = write_subjects(args.out, params.rows, params.seed)
    except AmasError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {params.rows} subjects (seed {params.seed}) to {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
