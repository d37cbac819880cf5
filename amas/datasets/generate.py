"""The raw datasets of the data pipeline: people, their cases, their events and case notes.

Four Parquet tables that fit together like an operator's real data (every case and event
points at an existing person, every event's case is one of that person's own cases, a note
names the subject of its case) while describing no one: people are the synthetic subjects of
``amas.datasets.sample``, emails use the RFC 2606 ``example.*`` domains and IP addresses the
documentation ranges (RFC 5737 TEST-NETs and RFC 3849's 2001:db8::/32).

Sizes follow ``generate.rows`` = R, the number of events: people R/10, cases and notes R/20
(each at least 1). Output is a pure function of ``(rows, seed, dirty_rows)``: the same params
give the same bytes. Each table is made in chunks of at most ``CHUNK_ROWS`` rows, and chunk
``i`` of a table draws from its own PCG64 stream, ``SeedSequence(seed, spawn_key=(table, 0,
i))``, so a chunk can be made without making the ones before it and memory stays bounded at
R = 10 million. People are the exception: chunk ``i`` is exactly chunk ``i`` of
``sample.iter_subject_chunks(R // 10, seed)`` (stream ``PCG64(seed).jumped(i)``), so the
pipeline's people and the sample table agree.

What stays in memory besides one chunk: every person's subject_id and created_at (44 bytes a
person), every case's subject, category and open interval (25 bytes a case) and the two
people chunks last made. Cases are given to subjects in subject order, and notes chunk ``i``
writes about cases of cases chunk ``i``, so a notes chunk needs the names of only the few
people chunks those subjects fall in.

``dirty_rows`` = d > 0 breaks exactly d rows of every table, spread evenly over it
(row ``j * size // d`` for j = 0..d-1), each in one way, taking turns (see ``DIRTY_KINDS``):

- people: subject_id null / email not an address (``not-an-email-<row>``, unique, so it trips
  only the format check) / email duplicated from the row before (a clean row);
- cases: priority 9 / status ``archived`` (with closed_at null, so the closed_at rule holds);
- events: event_type ``teleport`` / ip_address ``999.1.2.3``;
- notes: case_id null.

Nothing else is broken: cases and events never point at a person whose subject_id was
nulled (they move to the next row, which is always clean), so every reference still resolves.
``broken_rows`` lists the broken rows of a table.

The DVC stage runs ``python -m amas.pipeline stage generate``; by hand:
``python -m amas.datasets.generate --out-dir data/raw --params params.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from amas.datasets import sample
from amas.errors import AmasError, ConfigError
from amas.fsutil import atomic_write

RAW_DATASETS = ("people", "cases", "events", "notes")
MIN_ROWS = 100
MAX_ROWS = 10_000_000
CHUNK_ROWS = 100_000
PARAMS_SECTION = "generate"
PARAMS_KEYS = ("rows", "seed", "dirty_rows")

_UTC = pa.timestamp("s", tz="UTC")

# Every field is nullable: "not null" is a data-quality rule that the validate stage checks,
# and dirty_rows must be able to break it.
SCHEMAS: dict[str, pa.Schema] = {
    "people": pa.schema([
        ("subject_id", pa.string()),
        ("full_name", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("date_of_birth", pa.timestamp("s")),
        ("country", pa.string()),
        ("created_at", _UTC),
    ]),
    "cases": pa.schema([
        ("case_id", pa.string()),
        ("subject_id", pa.string()),
        ("category", pa.string()),
        ("status", pa.string()),
        ("priority", pa.int8()),
        ("opened_at", _UTC),
        ("closed_at", _UTC),
    ]),
    "events": pa.schema([
        ("event_id", pa.int64()),
        ("subject_id", pa.string()),
        ("case_id", pa.string()),
        ("occurred_at", _UTC),
        ("event_type", pa.string()),
        ("ip_address", pa.string()),
        ("bytes_sent", pa.int64()),
    ]),
    "notes": pa.schema([
        ("note_id", pa.int64()),
        ("case_id", pa.string()),
        ("author", pa.string()),
        ("written_at", _UTC),
        ("body", pa.string()),
    ]),
}

CATEGORIES = ("fraud", "data_breach", "harassment", "access_request", "complaint")
STATUSES = ("open", "investigating", "closed")
_CLOSED = STATUSES.index("closed")
EVENT_TYPES = ("login", "login_failed", "password_reset", "file_access", "payment", "message")
AUTHORS = ("Priya Raman", "Tomasz Wilk", "Hélène Marchand", "Kwame Mensah", "Ingrid Solberg",
           "Diego Herrera", "Aoife Byrne", "Yusuf Demir")

DIRTY_KINDS: dict[str, tuple[str, ...]] = {
    "people": ("null subject_id", "malformed email", "duplicate email"),
    "cases": ("priority out of range", "unknown status"),
    "events": ("unknown event_type", "invalid ip_address"),
    "notes": ("null case_id",),
}
"""What ``dirty_rows`` does to each table: the j-th broken row gets kind ``j % len(kinds)``."""

BAD_EMAIL = "not-an-email"
BAD_PRIORITY = 9
BAD_STATUS = "archived"
BAD_EVENT_TYPE = "teleport"
BAD_IP = "999.1.2.3"

_TABLE_INDEX = {name: index for index, name in enumerate(RAW_DATASETS)}
_ROWS_STREAM = 0
_ASSIGN_STREAM = 1

# Fixed bounds, never "now": the data must not drift with the day it is made on.
_FROM = int(sample.CREATED_FROM.astype(np.int64))
_UNTIL = int(sample.CREATED_UNTIL.astype(np.int64))
_DAY = 86_400

# Integer weights (percent) rather than float probabilities: integer draws and cumulative
# sums give the same numbers on every platform.
_CATEGORY_WEIGHTS = (25, 15, 10, 30, 20)
_PRIORITY_WEIGHTS = (10, 25, 35, 20, 10)
_EVENT_WEIGHTS = (34, 10, 3, 25, 12, 16)
# bytes_sent is drawn log-uniformly from [2**lo, 2**hi) per event type.
_BYTES_EXPONENTS = np.array([(8, 12), (7, 10), (9, 12), (12, 27), (9, 13), (8, 20)], dtype=np.int64)
_CASE_EVENT_PERCENT = 30
_IPV6_PERCENT = 20
_CLOSED_PERCENT_OLD = 95  # a case opened over 90 days ago is almost always closed
_CLOSED_PERCENT_RECENT = 35

_IPV4_NETS = ("192.0.2.", "198.51.100.", "203.0.113.")
_IPV4 = np.array([net + str(host) for net in _IPV4_NETS for host in range(1, 255)], dtype=object)
_HEXTET = np.array([format(value, "x") for value in range(1 << 16)], dtype=object)

# A note is a lead sentence about its case's category that names the subject, then often
# a contact sentence (email or phone) and sometimes one more (an IP address or a next step).
_LEADS: dict[str, tuple[str, ...]] = {
    "fraud": ("{name} disputed a card payment they say they never made.",
              "Flagged a run of payments from {name}'s account as likely fraud.",
              "{name} reported that someone else had taken over their account."),
    "data_breach": ("{name} was told that their records were in the exposed export.",
                    "Checked which of {name}'s records the leaked file contained.",
                    "{name} asked what the breach means for them."),
    "harassment": ("{name} reported abusive messages from another user.",
                   "Reviewed the messages {name} forwarded as evidence.",
                   "{name} asked us to block the sender and keep the evidence."),
    "access_request": ("{name} asked for a copy of all personal data we hold about them.",
                       "Confirmed the identity of {name} for their access request.",
                       "Sent {name} the export for their access request."),
    "complaint": ("{name} complained about how long support took to answer.",
                  "{name} is unhappy with how their last request was handled.",
                  "Logged a formal complaint from {name}."),
}
_LEAD_TEMPLATES = tuple(t for category in CATEGORIES for t in _LEADS[category])
_LEADS_PER_CATEGORY = 3
_EMAIL_SENTENCES = ("Replied to {email}.", "Contact address on file: {email}.")
_PHONE_SENTENCES = ("Called back on {phone}.", "Left a voicemail on {phone}.")
_IP_SENTENCES = ("The last login came from {ip}.", "The requests came from {ip}.")
_NEXT_STEPS = ("Escalated to the data protection officer.", "Next review in two weeks.",
               "Waiting for a reply.")


@dataclass(frozen=True)
class GenerateParams:
    """The ``generate`` section of ``params.yaml``, validated on construction."""

    rows: int
    seed: int
    dirty_rows: int = 0

    def __post_init__(self) -> None:
        if not sample._is_int(self.rows) or not MIN_ROWS <= self.rows <= MAX_ROWS:
            raise ConfigError(
                f"{PARAMS_SECTION}.rows must be a whole number from {MIN_ROWS} to {MAX_ROWS}, "
                f"got {sample._show(self.rows)}"
            )
        if not sample._is_int(self.seed) or self.seed < 0:
            raise ConfigError(
                f"{PARAMS_SECTION}.seed must be a whole number >= 0, got {sample._show(self.seed)}"
            )
        limit = min(table_sizes(self.rows).values())
        if not sample._is_int(self.dirty_rows) or not 0 <= self.dirty_rows <= limit:
            raise ConfigError(
                f"{PARAMS_SECTION}.dirty_rows must be a whole number from 0 to {limit} (the "
                f"smallest table's size at rows {self.rows}), got {sample._show(self.dirty_rows)}"
            )


def table_sizes(rows: int) -> dict[str, int]:
    """Rows of each raw table for ``generate.rows`` = ``rows`` (the number of events)."""
    return {
        "people": max(1, rows // 10),
        "cases": max(1, rows // 20),
        "events": rows,
        "notes": max(1, rows // 20),
    }


def chunk_count(name: str, params: GenerateParams) -> int:
    """How many chunks (Parquet row groups) table ``name`` is made of."""
    return -(-table_sizes(params.rows)[_known(name)] // CHUNK_ROWS)


def iter_chunks(name: str, params: GenerateParams) -> Iterator[pa.Table]:
    """Yield raw table ``name`` in chunks of at most ``CHUNK_ROWS`` rows, in order."""
    world = _World(params)
    for index in range(chunk_count(name, params)):
        yield world.chunk(name, index)


def make_chunk(name: str, params: GenerateParams, index: int) -> pa.Table:
    """Chunk ``index`` of table ``name`` on its own: the same rows ``iter_chunks`` yields.

    For regenerating one row group or splitting the work; a chunk of cases, events or notes
    still costs one pass over the people (every reference must resolve).
    """
    if not 0 <= index < chunk_count(name, params):
        raise IndexError(f"{name} has {chunk_count(name, params)} chunks, no chunk {index}")
    return _World(params).chunk(name, index)


def broken_rows(name: str, params: GenerateParams) -> dict[int, str]:
    """Row position -> the kind of damage (from ``DIRTY_KINDS``) for every broken row."""
    kinds = DIRTY_KINDS[_known(name)]
    rows = _dirty_positions(params.dirty_rows, table_sizes(params.rows)[name])
    return {int(row): kinds[j % len(kinds)] for j, row in enumerate(rows)}


def write_datasets(out_dir: str | os.PathLike[str], params: GenerateParams) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.parquet`` for every raw dataset; return the paths by name.

    Each file is written to a temporary file beside it, fsynced and renamed over the target,
    so a reader (or DVC) sees the old file or the complete new one. One row group per chunk.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    world = _World(params)
    written: dict[str, Path] = {}
    for name in RAW_DATASETS:
        chunks = (world.chunk(name, index) for index in range(chunk_count(name, params)))
        written[name] = _write_parquet(directory / f"{name}.parquet", SCHEMAS[name], chunks)
    return written


def _write_parquet(target: Path, schema: pa.Schema, chunks: Iterator[pa.Table]) -> Path:
    def write(sink: BinaryIO) -> None:
        with pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=True) as writer:
            for chunk in chunks:
                writer.write_table(chunk, row_group_size=chunk.num_rows)

    return atomic_write(target, write)


def _known(name: str) -> str:
    if name not in _TABLE_INDEX:
        raise ConfigError(f"unknown raw dataset {name!r}; choose one of {', '.join(RAW_DATASETS)}")
    return name


def _dirty_positions(count: int, size: int) -> np.ndarray:
    # Evenly spread. People have at least twice as many rows as the smallest table, so two
    # broken people are always at least two rows apart: the rows either side are clean.
    return np.arange(count, dtype=np.int64) * size // count if count else np.empty(0, np.int64)


def _span(index: int, size: int) -> tuple[int, int]:
    start = index * CHUNK_ROWS
    return start, min(CHUNK_ROWS, size - start)


def _weighted(rng: np.random.Generator, weights: Sequence[int], count: int) -> np.ndarray:
    bounds = np.cumsum(weights)
    return np.searchsorted(bounds, rng.integers(0, bounds[-1], size=count), side="right")


@dataclass(frozen=True)
class _Cases:
    """Per case, what other tables need: its subject, category and open interval."""

    subject: np.ndarray  # int64 person row, non-decreasing in case order
    category: np.ndarray  # int8 index into CATEGORIES
    opened: np.ndarray  # int64 epoch seconds
    until: np.ndarray  # int64: closed_at if closed, else the last second of the data's window


@dataclass(frozen=True)
class _CaseDraws:
    category: np.ndarray
    status: np.ndarray
    priority: np.ndarray
    opened: np.ndarray
    closed: np.ndarray


class _World:
    """What chunks of different tables share, made once per run and in bounded memory."""

    PEOPLE_CACHE = 2

    def __init__(self, params: GenerateParams) -> None:
        self.params = params
        self.sizes = table_sizes(params.rows)
        people = self.sizes["people"]
        self._ids = np.empty(people, dtype="S36")
        self._created = np.empty(people, dtype=np.int64)
        self._recorded = np.zeros(chunk_count("people", params), dtype=bool)
        self._people: OrderedDict[int, pa.Table] = OrderedDict()
        self._cases: _Cases | None = None
        dirty = _dirty_positions(params.dirty_rows, people)
        self._nulled_people = dirty[::len(DIRTY_KINDS["people"])]

    def chunk(self, name: str, index: int) -> pa.Table:
        make = {"people": self._people_chunk, "cases": self._cases_chunk,
                "events": self._events_chunk, "notes": self._notes_chunk}[_known(name)]
        return make(index)

    def _rng(self, name: str, stream: int, index: int) -> np.random.Generator:
        sequence = np.random.SeedSequence(
            self.params.seed, spawn_key=(_TABLE_INDEX[name], stream, index)
        )
        return np.random.Generator(np.random.PCG64(sequence))

    def _dirty_in(self, name: str, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets (from ``start``) and kinds of the broken rows in ``[start, start + count)``."""
        positions = _dirty_positions(self.params.dirty_rows, self.sizes[name])
        first, last = np.searchsorted(positions, [start, start + count])
        ordinal = np.arange(first, last)
        return positions[first:last] - start, ordinal % len(DIRTY_KINDS[name])

    # people ----------------------------------------------------------------------------------

    def _clean_people(self, index: int) -> pa.Table:
        cached = self._people.get(index)
        if cached is not None:
            self._people.move_to_end(index)
            return cached
        start, count = _span(index, self.sizes["people"])
        rng = np.random.Generator(np.random.PCG64(self.params.seed).jumped(index))
        frame = sample._chunk(rng, start, count)
        table = pa.Table.from_pandas(frame, schema=SCHEMAS["people"], preserve_index=False)
        table = table.replace_schema_metadata(None)
        if not self._recorded[index]:
            rows = slice(start, start + count)
            self._ids[rows] = frame["subject_id"].to_numpy(dtype=object).astype("S36")
            self._created[rows] = table.column("created_at").cast(pa.int64()).to_numpy()
            self._recorded[index] = True
        self._people[index] = table
        if len(self._people) > self.PEOPLE_CACHE:
            self._people.popitem(last=False)
        return table

    def _people_chunk(self, index: int) -> pa.Table:
        table = self._clean_people(index)
        start, count = _span(index, self.sizes["people"])
        offsets, kinds = self._dirty_in("people", start, count)
        if not len(offsets):
            return table
        subject_id = table.column("subject_id").to_numpy(zero_copy_only=False).astype(object)
        email = table.column("email").to_numpy(zero_copy_only=False).astype(object)
        # kind indexes DIRTY_KINDS["people"]: null id, malformed email, duplicate email.
        for offset, kind in zip(offsets.tolist(), kinds.tolist(), strict=True):
            if kind == 0:
                subject_id[offset] = None
            elif kind == 1:
                email[offset] = f"{BAD_EMAIL}-{start + offset + 1}"
            else:
                email[offset] = self._person(start + offset - 1, "email")
        table = table.set_column(0, "subject_id", pa.array(subject_id, type=pa.string()))
        return table.set_column(2, "email", pa.array(email, type=pa.string()))

    def _person(self, row: int, column: str) -> str:
        index, offset = divmod(row, CHUNK_ROWS)
        return self._clean_people(index).column(column)[offset].as_py()

    def _directory(self) -> tuple[np.ndarray, np.ndarray]:
        """Every person's subject_id and created_at (epoch seconds), by row."""
        for index in np.flatnonzero(~self._recorded).tolist():
            self._clean_people(index)
        return self._ids, self._created

    def _usable(self, people: np.ndarray) -> np.ndarray:
        # A person whose subject_id was nulled cannot be referred to; the next row is clean.
        if not len(self._nulled_people):
            return people
        return people + np.isin(people, self._nulled_people)

    def _people_columns(self, rows: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """``columns`` of people ``rows``, making each people chunk they fall in once."""
        out = {column: np.empty(len(rows), dtype=object) for column in columns}
        chunk_of = rows // CHUNK_ROWS
        for index in np.unique(chunk_of).tolist():
            selected = np.flatnonzero(chunk_of == index)
            taken = self._clean_people(index).select(list(columns)).take(
                pa.array(rows[selected] - index * CHUNK_ROWS)
            )
            for column in columns:
                out[column][selected] = taken.column(column).to_numpy(zero_copy_only=False)
        return out

    # cases -----------------------------------------------------------------------------------

    def _case_subjects(self) -> np.ndarray:
        # Sorted, so a run of consecutive cases belongs to a narrow band of people: notes on
        # them need few people chunks. Case numbers carry no meaning, so nothing is lost.
        rng = self._rng("cases", _ASSIGN_STREAM, 0)
        drawn = np.sort(rng.integers(0, self.sizes["people"], size=self.sizes["cases"]))
        return self._usable(drawn)

    def _case_draws(self, index: int, subjects: np.ndarray, created: np.ndarray) -> _CaseDraws:
        start, count = _span(index, self.sizes["cases"])
        rng = self._rng("cases", _ROWS_STREAM, index)
        category = _weighted(rng, _CATEGORY_WEIGHTS, count)
        priority = _weighted(rng, _PRIORITY_WEIGHTS, count) + 1
        since = created[subjects[start:start + count]]
        opened = rng.integers(since, _UNTIL)
        closed_percent = np.where(
            _UNTIL - opened > 90 * _DAY, _CLOSED_PERCENT_OLD, _CLOSED_PERCENT_RECENT
        )
        closed_roll = rng.integers(0, 100, size=count)
        still_open = rng.integers(0, 2, size=count)  # open or investigating
        status = np.where(closed_roll < closed_percent, _CLOSED, still_open)
        duration = rng.integers(3_600, 120 * _DAY, size=count)
        closed = np.minimum(opened + duration, _UNTIL - 1)
        return _CaseDraws(category, status, priority, opened, closed)

    def _case_index(self) -> _Cases:
        if self._cases is None:
            _, created = self._directory()
            subjects = self._case_subjects()
            parts = [self._case_draws(i, subjects, created)
                     for i in range(chunk_count("cases", self.params))]
            status = np.concatenate([p.status for p in parts])
            closed = np.concatenate([p.closed for p in parts])
            self._cases = _Cases(
                subject=subjects,
                category=np.concatenate([p.category for p in parts]).astype(np.int8),
                opened=np.concatenate([p.opened for p in parts]),
                until=np.where(status == _CLOSED, closed, _UNTIL - 1),
            )
        return self._cases

    def _cases_chunk(self, index: int) -> pa.Table:
        ids, created = self._directory()
        cases = self._case_index()
        start, count = _span(index, self.sizes["cases"])
        draws = self._case_draws(index, cases.subject, created)
        status = draws.status.copy()
        priority = draws.priority.astype(np.int8)
        offsets, kinds = self._dirty_in("cases", start, count)
        priority[offsets[kinds == 0]] = BAD_PRIORITY
        status[offsets[kinds == 1]] = len(STATUSES)
        closed = status == _CLOSED
        return pa.Table.from_arrays(
            [
                _case_ids(np.arange(start, start + count)),
                _fixed_strings(ids[cases.subject[start:start + count]]),
                _labels(CATEGORIES, draws.category),
                _labels((*STATUSES, BAD_STATUS), status),
                pa.array(priority, type=pa.int8()),
                pa.array(draws.opened, type=_UTC),
                pa.array(draws.closed, type=_UTC, mask=~closed),
            ],
            schema=SCHEMAS["cases"],
        )

    # events ----------------------------------------------------------------------------------

    def _events_chunk(self, index: int) -> pa.Table:
        ids, created = self._directory()
        cases = self._case_index()
        start, count = _span(index, self.sizes["events"])
        rng = self._rng("events", _ROWS_STREAM, index)
        # Draw every column for every row, used or not: the stream stays the same whatever
        # the mix of rows, and it is faster than drawing per subset.
        with_case = rng.integers(0, 100, size=count) < _CASE_EVENT_PERCENT
        case = rng.integers(0, self.sizes["cases"], size=count)
        loose = self._usable(rng.integers(0, self.sizes["people"], size=count))
        subject = np.where(with_case, cases.subject[case], loose)
        # An event happens while its case is open, or else after the account was created.
        low = np.where(with_case, cases.opened[case], created[subject])
        high = np.where(with_case, cases.until[case], _UNTIL - 1)
        occurred = rng.integers(low, high, endpoint=True)
        event_type = _weighted(rng, _EVENT_WEIGHTS, count)
        exponent = rng.integers(_BYTES_EXPONENTS[event_type, 0], _BYTES_EXPONENTS[event_type, 1])
        sent = rng.integers(np.left_shift(1, exponent), np.left_shift(1, exponent + 1))
        ip_address = _ip_addresses(rng, count)

        offsets, kinds = self._dirty_in("events", start, count)
        event_type[offsets[kinds == 0]] = len(EVENT_TYPES)
        ip_address[offsets[kinds == 1]] = BAD_IP
        return pa.Table.from_arrays(
            [
                pa.array(np.arange(start + 1, start + count + 1, dtype=np.int64)),
                _fixed_strings(ids[subject]),
                _case_ids(case, valid=with_case),
                pa.array(occurred, type=_UTC),
                _labels((*EVENT_TYPES, BAD_EVENT_TYPE), event_type),
                pa.array(ip_address, type=pa.string()),
                pa.array(sent, type=pa.int64()),
            ],
            schema=SCHEMAS["events"],
        )

    # notes -----------------------------------------------------------------------------------

    def _notes_chunk(self, index: int) -> pa.Table:
        cases = self._case_index()
        start, count = _span(index, self.sizes["notes"])
        rng = self._rng("notes", _ROWS_STREAM, index)
        # Notes and cases are the same size, so notes chunk i writes about the cases of
        # cases chunk i: with cases sorted by subject, that is a narrow band of people.
        case_start, case_count = _span(index, self.sizes["cases"])
        case = case_start + rng.integers(0, case_count, size=count)
        author = rng.integers(0, len(AUTHORS), size=count)
        written = rng.integers(cases.opened[case], cases.until[case], endpoint=True)
        lead = cases.category[case].astype(np.int64) * _LEADS_PER_CATEGORY + rng.integers(
            0, _LEADS_PER_CATEGORY, size=count
        )
        contact = rng.integers(0, 10, size=count)
        extra = rng.integers(0, 10, size=count)
        variant = rng.integers(0, 2, size=count)
        next_step = rng.integers(0, len(_NEXT_STEPS), size=count)
        ip_address = _IPV4[rng.integers(0, len(_IPV4), size=count)]

        who = self._people_columns(cases.subject[case], ("full_name", "email", "phone"))
        bodies = [
            _note_body(*row)
            for row in zip(
                lead.tolist(), contact.tolist(), extra.tolist(), variant.tolist(),
                next_step.tolist(), who["full_name"], who["email"], who["phone"], ip_address,
                strict=True,
            )
        ]
        offsets, _ = self._dirty_in("notes", start, count)
        has_case = np.ones(count, dtype=bool)
        has_case[offsets] = False
        return pa.Table.from_arrays(
            [
                pa.array(np.arange(start + 1, start + count + 1, dtype=np.int64)),
                _case_ids(case, valid=has_case),
                _labels(AUTHORS, author),
                pa.array(written, type=_UTC),
                pa.array(bodies, type=pa.string()),
            ],
            schema=SCHEMAS["notes"],
        )


def _note_body(lead: int, contact: int, extra: int, variant: int, next_step: int,
               name: str, email: str, phone: str, ip: str) -> str:
    sentences = [_LEAD_TEMPLATES[lead].format(name=name)]
    if contact < 4:
        sentences.append(_EMAIL_SENTENCES[variant].format(email=email))
    elif contact < 7:
        sentences.append(_PHONE_SENTENCES[variant].format(phone=phone))
    if extra < 3:
        sentences.append(_IP_SENTENCES[variant].format(ip=ip))
    elif extra < 5:
        sentences.append(_NEXT_STEPS[next_step])
    return " ".join(sentences)


def _ip_addresses(rng: np.random.Generator, count: int) -> np.ndarray:
    """About 80% IPv4 from the TEST-NETs, the rest IPv6 in 2001:db8::/32, as text."""
    v6 = rng.integers(0, 100, size=count) < _IPV6_PERCENT
    v4 = rng.integers(0, len(_IPV4), size=count)
    hextets = rng.integers(0, 1 << 16, size=(count, 2))
    # A non-zero last group keeps "2001:db8:a:b::c" in RFC 5952 canonical form.
    host = rng.integers(1, 1 << 16, size=count)
    addresses = _IPV4[v4]
    rows = np.flatnonzero(v6)
    addresses[rows] = ("2001:db8:" + _HEXTET[hextets[rows, 0]] + ":" + _HEXTET[hextets[rows, 1]]
                       + "::" + _HEXTET[host[rows]])
    return addresses


def _labels(labels: Sequence[str], codes: np.ndarray) -> pa.Array:
    return pa.array(labels, type=pa.string()).take(pa.array(codes))


_CASE_DIGITS = 8
_CASE_POWERS = 10 ** np.arange(_CASE_DIGITS - 1, -1, -1, dtype=np.int64)


def _case_ids(cases: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """``C-00000001`` for case row 0, built as a character matrix (no per-row formatting)."""
    chars = np.empty((len(cases), 2 + _CASE_DIGITS), dtype=np.uint8)
    chars[:, 0] = ord("C")
    chars[:, 1] = ord("-")
    chars[:, 2:] = (cases[:, None] + 1) // _CASE_POWERS % 10 + ord("0")
    return _fixed_strings(chars, valid)


def _fixed_strings(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A string array from equal-length ASCII values (an ``S<n>`` array or a byte matrix).

    Arrow's own buffers are filled directly; converting 100,000 Python strings would take
    longer than drawing the whole chunk.
    """
    chars = values.view(np.uint8).reshape(len(values), -1)
    width = chars.shape[1]
    if valid is None:
        offsets = np.arange(0, (len(chars) + 1) * width, width, dtype=np.int32)
        data = np.ascontiguousarray(chars)
        return pa.StringArray.from_buffers(len(chars), pa.py_buffer(offsets), pa.py_buffer(data))
    offsets = np.zeros(len(chars) + 1, dtype=np.int32)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    data = np.ascontiguousarray(chars[valid])
    bitmap = np.packbits(valid, bitorder="little")
    return pa.StringArray.from_buffers(
        len(chars), pa.py_buffer(offsets), pa.py_buffer(data), pa.py_buffer(bitmap),
        null_count=int(len(valid) - np.count_nonzero(valid)),
    )


def load_params(path: str | os.PathLike[str]) -> GenerateParams:
    """Read and validate the ``generate`` section of a params file."""
    from amas.pipeline.params import read_params_file

    where = Path(path)
    section = read_params_file(where).get(PARAMS_SECTION)
    if not isinstance(section, dict):
        raise ConfigError(
            f"{where}: needs a '{PARAMS_SECTION}:' section with rows and seed "
            f"(and optionally dirty_rows)"
        )
    unknown = [str(key) for key in section if key not in PARAMS_KEYS]
    if unknown:
        names = ", ".join(f"{PARAMS_SECTION}.{key}" for key in unknown)
        raise ConfigError(f"{where}: {names} not a known setting; valid: {', '.join(PARAMS_KEYS)}")
    missing = [key for key in ("rows", "seed") if key not in section]
    if missing:
        names = ", ".join(f"{PARAMS_SECTION}.{key}" for key in missing)
        raise ConfigError(f"{where}: {names} missing")
    try:
        return GenerateParams(**section)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amas.datasets.generate",
        description="Write the raw datasets (people, cases, events, notes) as Parquet.",
    )
    parser.add_argument("--out-dir", required=True, type=Path, help="directory for <name>.parquet")
    parser.add_argument(
        "--params", default=Path("params.yaml"), type=Path,
        help="params file with a 'generate: {rows, seed, dirty_rows}' section "
        "(default: params.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        written = write_datasets(args.out_dir, params)
    except AmasError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    sizes = table_sizes(params.rows)
    for name, path in written.items():
        print(f"{name}: {sizes[name]} rows -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
