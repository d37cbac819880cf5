"""The raw datasets: the fixed contract, references that resolve, determinism, dirty rows."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amas.datasets import generate, sample
from amas.datasets.generate import (
    AUTHORS,
    CATEGORIES,
    EVENT_TYPES,
    RAW_DATASETS,
    SCHEMAS,
    STATUSES,
    GenerateParams,
    broken_rows,
    chunk_count,
    iter_chunks,
    load_params,
    main,
    make_chunk,
    table_sizes,
    write_datasets,
)
from amas.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
UTC_S = pa.timestamp("s", tz="UTC")
# The brief's contract, written out again so that an edit to SCHEMAS has to be deliberate.
CONTRACT = {
    "people": [("subject_id", pa.string()), ("full_name", pa.string()), ("email", pa.string()),
               ("phone", pa.string()), ("date_of_birth", pa.timestamp("s")),
               ("country", pa.string()), ("created_at", UTC_S)],
    "cases": [("case_id", pa.string()), ("subject_id", pa.string()), ("category", pa.string()),
              ("status", pa.string()), ("priority", pa.int8()), ("opened_at", UTC_S),
              ("closed_at", UTC_S)],
    "events": [("event_id", pa.int64()), ("subject_id", pa.string()), ("case_id", pa.string()),
               ("occurred_at", UTC_S), ("event_type", pa.string()), ("ip_address", pa.string()),
               ("bytes_sent", pa.int64())],
    "notes": [("note_id", pa.int64()), ("case_id", pa.string()), ("author", pa.string()),
              ("written_at", UTC_S), ("body", pa.string())],
}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EMAIL = re.compile(r"^[a-z]+\.[a-z]+[1-9][0-9]*@example\.(com|org|net)$")
PHONE = re.compile(r"^\+\d{2} [\d ]{8,14}\d$")
CASE_ID = re.compile(r"^C-\d{8}$")
DOC_NETWORKS = [ipaddress.ip_network(n) for n in
                ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
WINDOW = (datetime(2019, 1, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
ROWS_RANGE = "generate.rows must be a whole number from 100 to 10000000"
DIRTY_RANGE = "generate.dirty_rows must be a whole number from 0 to 50"  # at rows 1000
COUNTRIES = {"DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE"}


def _tables(params: GenerateParams) -> dict[str, list[dict[str, Any]]]:
    return {name: pa.concat_tables(iter_chunks(name, params)).to_pylist() for name in RAW_DATASETS}


def _params_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _is_doc_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in DOC_NETWORKS if network.version == address.version)


def _violations(tables: dict[str, list[dict[str, Any]]]) -> dict[str, dict[int, str]]:
    """Every row a data-quality suite would reject, named as in ``DIRTY_KINDS``."""
    found: dict[str, dict[int, str]] = {name: {} for name in RAW_DATASETS}
    seen: set[str] = set()
    for row, person in enumerate(tables["people"]):
        if person["subject_id"] is None:
            found["people"][row] = "null subject_id"
        elif not EMAIL.match(person["email"]):
            found["people"][row] = "malformed email"
        elif person["email"] in seen:
            found["people"][row] = "duplicate email"
        seen.add(person["email"])
    for row, case in enumerate(tables["cases"]):
        if not 1 <= case["priority"] <= 5:
            found["cases"][row] = "priority out of range"
        elif case["status"] not in STATUSES:
            found["cases"][row] = "unknown status"
    for row, event in enumerate(tables["events"]):
        if event["event_type"] not in EVENT_TYPES:
            found["events"][row] = "unknown event_type"
        elif not _is_doc_ip(event["ip_address"]):
            found["events"][row] = "invalid ip_address"
    for row, note in enumerate(tables["notes"]):
        if note["case_id"] is None:
            found["notes"][row] = "null case_id"
    return found


def _check_references(tables: dict[str, list[dict[str, Any]]]) -> None:
    people = {p["subject_id"]: p for p in tables["people"] if p["subject_id"] is not None}
    cases = {c["case_id"]: c for c in tables["cases"]}
    for case in tables["cases"]:
        subject = people[case["subject_id"]]
        assert case["opened_at"] >= subject["created_at"], case
    for event in tables["events"]:
        subject = people[event["subject_id"]]
        assert event["occurred_at"] >= subject["created_at"], event
        if event["case_id"] is not None:
            case = cases[event["case_id"]]
            assert case["subject_id"] == event["subject_id"], event
            assert event["occurred_at"] >= case["opened_at"], event
            if case["closed_at"] is not None:
                assert event["occurred_at"] <= case["closed_at"], event
    for note in tables["notes"]:
        if note["case_id"] is None:
            continue
        case = cases[note["case_id"]]
        assert people[case["subject_id"]]["full_name"] in note["body"], note
        assert note["written_at"] >= case["opened_at"], note
        if case["closed_at"] is not None:
            assert note["written_at"] <= case["closed_at"], note


@pytest.fixture(scope="module")
def clean_tables() -> dict[str, list[dict[str, Any]]]:
    return _tables(GenerateParams(rows=4000, seed=20261125))


def test_schemas_are_the_contract() -> None:
    assert tuple(SCHEMAS) == RAW_DATASETS
    for name, fields in CONTRACT.items():
        assert SCHEMAS[name] == pa.schema(fields), name
        assert SCHEMAS[name].metadata is None
    assert [f.name for f in SCHEMAS["people"]] == list(sample.COLUMNS)


def test_chunks_and_files_have_the_contract_schema(tmp_path: Path) -> None:
    params = GenerateParams(rows=300, seed=1, dirty_rows=3)
    written = write_datasets(tmp_path, params)
    assert list(written) == list(RAW_DATASETS)
    for name in RAW_DATASETS:
        chunk = next(iter_chunks(name, params))
        assert chunk.schema.equals(SCHEMAS[name], check_metadata=True), name
        # Parquet has no seconds unit: timestamps are stored as milliseconds and read back so.
        # Casting back to the contract is exact (every value is a whole second).
        stored = pq.read_table(written[name])
        assert b"pandas" not in (stored.schema.metadata or {})
        assert stored.cast(SCHEMAS[name]).equals(pa.concat_tables(iter_chunks(name, params)))
        assert [f.name for f in stored.schema] == [f.name for f in SCHEMAS[name]]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (100, {"people": 10, "cases": 5, "events": 100, "notes": 5}),
        (4999, {"people": 499, "cases": 249, "events": 4999, "notes": 249}),
        (10_000_000,
         {"people": 1_000_000, "cases": 500_000, "events": 10_000_000, "notes": 500_000}),
    ],
)
def test_table_sizes(rows: int, expected: dict[str, int]) -> None:
    assert table_sizes(rows) == expected


def test_files_have_the_sizes_and_one_row_group_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 40)
    params = GenerateParams(rows=1010, seed=3)
    written = write_datasets(tmp_path, params)
    for name, size in table_sizes(1010).items():
        meta = pq.ParquetFile(written[name]).metadata
        assert meta.num_rows == size, name
        assert meta.num_row_groups == chunk_count(name, params) == -(-size // 40), name
        assert meta.row_group(0).column(0).compression == "ZSTD"
    assert generate.CHUNK_ROWS <= 100_000


def test_same_params_give_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    params = GenerateParams(rows=2000, seed=42, dirty_rows=4)
    first = write_datasets(tmp_path / "a", params)
    second = write_datasets(tmp_path / "b", params)
    other = write_datasets(tmp_path / "c", GenerateParams(rows=2000, seed=43, dirty_rows=4))
    for name in RAW_DATASETS:
        assert first[name].read_bytes() == second[name].read_bytes(), name
        assert first[name].read_bytes() != other[name].read_bytes(), name


def test_people_are_the_sample_subjects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 64)
    monkeypatch.setattr(sample, "CHUNK_ROWS", 64)
    people = pa.concat_tables(iter_chunks("people", GenerateParams(rows=2000, seed=8)))
    subjects = pa.Table.from_pandas(sample.generate_subjects(200, 8), preserve_index=False)
    assert people.equals(subjects.cast(SCHEMAS["people"]).replace_schema_metadata(None))


@pytest.mark.parametrize("name", RAW_DATASETS)
def test_any_chunk_can_be_made_on_its_own(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks make every table cross chunk boundaries (references, dirty rows included).
    monkeypatch.setattr(generate, "CHUNK_ROWS", 64)
    params = GenerateParams(rows=3000, seed=5, dirty_rows=40)
    chunks = list(iter_chunks(name, params))
    size = table_sizes(3000)[name]
    assert [c.num_rows for c in chunks] == [64] * (size // 64) + ([size % 64] if size % 64 else [])
    for index in (len(chunks) - 1, len(chunks) // 2, 1):
        assert make_chunk(name, params, index).equals(chunks[index]), index
    with pytest.raises(IndexError):
        make_chunk(name, params, len(chunks))


def test_references_hold_across_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 50)
    tables = _tables(GenerateParams(rows=3000, seed=6))
    _check_references(tables)
    # Notes chunk i writes about cases of cases chunk i.
    for position, note in enumerate(tables["notes"]):
        assert (int(note["case_id"][2:]) - 1) // 50 == position // 50


def test_references_resolve_and_times_fit(clean_tables: dict[str, list[dict[str, Any]]]) -> None:
    _check_references(clean_tables)
    events = clean_tables["events"]
    with_case = sum(e["case_id"] is not None for e in events) / len(events)
    assert 0.25 < with_case < 0.35
    assert len({c["subject_id"] for c in clean_tables["cases"]}) > 100  # spread over many people
    bodies = [n["body"] for n in clean_tables["notes"]]
    emails = {p["email"] for p in clean_tables["people"]}
    phones = {p["phone"] for p in clean_tables["people"]}
    with_email = sum(any(w.rstrip(".") in emails for w in b.split()) for b in bodies)
    with_phone = sum(any(p in b for p in phones) for b in bodies)
    assert with_email + with_phone > len(bodies) / 2
    assert with_email > 0 and with_phone > 0
    assert any(_is_doc_ip(w.rstrip(".")) for b in bodies for w in b.split())


def test_values_are_in_their_domains(clean_tables: dict[str, list[dict[str, Any]]]) -> None:
    people, cases = clean_tables["people"], clean_tables["cases"]
    events, notes = clean_tables["events"], clean_tables["notes"]
    assert all(UUID4.match(p["subject_id"]) for p in people)
    assert len({p["subject_id"] for p in people}) == len(people)
    assert all(EMAIL.match(p["email"]) for p in people)
    assert len({p["email"] for p in people}) == len(people)
    assert all(PHONE.match(p["phone"]) for p in people)
    assert {p["country"] for p in people} == COUNTRIES
    assert all(p["date_of_birth"].time() == datetime.min.time() for p in people)
    assert all(WINDOW[0] <= p["created_at"] < WINDOW[1] for p in people)

    assert [c["case_id"] for c in cases] == [f"C-{i:08d}" for i in range(1, len(cases) + 1)]
    assert {c["category"] for c in cases} == set(CATEGORIES)
    assert {c["status"] for c in cases} == set(STATUSES)
    assert {c["priority"] for c in cases} == {1, 2, 3, 4, 5}
    for case in cases:
        assert (case["closed_at"] is None) == (case["status"] != "closed"), case
        assert WINDOW[0] <= case["opened_at"] < WINDOW[1]
        if case["closed_at"] is not None:
            assert case["opened_at"] <= case["closed_at"] < WINDOW[1]
            assert case["closed_at"] - case["opened_at"] <= timedelta(days=120)

    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    assert {e["event_type"] for e in events} == set(EVENT_TYPES)
    assert all(_is_doc_ip(e["ip_address"]) for e in events)
    assert all(ipaddress.ip_address(e["ip_address"]).compressed == e["ip_address"] for e in events)
    v6 = sum(":" in e["ip_address"] for e in events) / len(events)
    assert 0.15 < v6 < 0.25
    assert all(WINDOW[0] <= e["occurred_at"] < WINDOW[1] for e in events)
    assert all(e["bytes_sent"] >= 0 for e in events)
    assert all(e["case_id"] is None or CASE_ID.match(e["case_id"]) for e in events)

    assert [n["note_id"] for n in notes] == list(range(1, len(notes) + 1))
    assert {n["author"] for n in notes} <= set(AUTHORS)
    assert all(WINDOW[0] <= n["written_at"] < WINDOW[1] for n in notes)
    sentences = Counter(n["body"].count(". ") + 1 for n in notes)
    assert set(sentences) == {1, 2, 3}


def test_clean_data_breaks_nothing(clean_tables: dict[str, list[dict[str, Any]]]) -> None:
    assert _violations(clean_tables) == {name: {} for name in RAW_DATASETS}
    assert all(broken_rows(name, GenerateParams(4000, 1)) == {} for name in RAW_DATASETS)


@pytest.mark.parametrize(("rows", "dirty"), [(2000, 9), (100, 5), (3000, 1)])
def test_dirty_rows_break_exactly_what_is_documented(
    rows: int, dirty: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 37)  # broken rows fall at chunk edges too
    params = GenerateParams(rows=rows, seed=11, dirty_rows=dirty)
    tables = _tables(params)
    found = _violations(tables)
    for name in RAW_DATASETS:
        expected = broken_rows(name, params)
        assert len(expected) == dirty, name
        assert found[name] == expected, name
    # Everything else still holds: every reference resolves to a person whose id survived.
    _check_references(tables)
    bad = [p for p in tables["people"] if p["email"].startswith(generate.BAD_EMAIL)]
    assert len({p["email"] for p in bad}) == len(bad)
    for case in tables["cases"]:
        assert case["closed_at"] is None or case["status"] == "closed"


def test_dirty_rows_are_spread_over_the_table() -> None:
    rows = broken_rows("events", GenerateParams(rows=10_000, seed=1, dirty_rows=4))
    assert sorted(rows) == [0, 2500, 5000, 7500]
    assert list(rows.values()) == ["unknown event_type", "invalid ip_address"] * 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0, "seed": 1}, f"{ROWS_RANGE}, got 0"),
        ({"rows": 99, "seed": 1}, "generate.rows"),
        ({"rows": 10_000_001, "seed": 1}, "generate.rows"),
        ({"rows": True, "seed": 1}, f"{ROWS_RANGE}, got True"),
        ({"rows": "x", "seed": 1}, f"{ROWS_RANGE}, got 'x'"),
        ({"rows": 1000.0, "seed": 1}, "generate.rows"),
        ({"rows": 1000, "seed": -1}, "generate.seed must be a whole number >= 0, got -1"),
        ({"rows": 1000, "seed": False}, "generate.seed"),
        ({"rows": 1000, "seed": 1, "dirty_rows": -1}, DIRTY_RANGE),
        ({"rows": 1000, "seed": 1, "dirty_rows": 51}, f"{DIRTY_RANGE} (the smallest table's size"),
        ({"rows": 1000, "seed": 1, "dirty_rows": True}, "generate.dirty_rows"),
    ],
)
def test_params_are_refused_with_the_field_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GenerateParams(**kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_params_reads_the_generate_section(tmp_path: Path) -> None:
    path = _params_file(tmp_path, "sample: {rows: 5, seed: 1}\ngenerate:\n  rows: 500\n  seed: 9\n")
    assert load_params(path) == GenerateParams(rows=500, seed=9, dirty_rows=0)
    path = _params_file(tmp_path, "generate: {rows: 500, seed: 9, dirty_rows: 3}\n")
    assert load_params(path).dirty_rows == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("generate:\n  rows: 0\n  seed: 1\n", ROWS_RANGE),
        ("generate:\n  rows: true\n  seed: 1\n", "generate.rows"),
        ("generate:\n  rows: x\n  seed: 1\n", "generate.rows"),
        ("generate:\n  rows: 1000\n", "generate.seed missing"),
        ("generate: {rows: 1000, seed: 1, dirty_row: 3}\n",
         "generate.dirty_row not a known setting; valid: rows, seed, dirty_rows"),
        ("sample:\n  rows: 10\n  seed: 1\n", "needs a 'generate:' section"),
        ("generate: [\n", "not valid YAML at line"),
        ("", "needs a 'generate:' section"),
    ],
)
def test_bad_params_files_are_one_clear_line(
    body: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _params_file(tmp_path, body)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_params(path)
    out = tmp_path / "raw"
    assert main(["--out-dir", str(out), "--params", str(path)]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and expected in captured.err, captured.err
    assert captured.err.startswith("error: ") and captured.out == ""
    assert not out.exists()


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_unknown_dataset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="people, cases, events, notes"):
        next(iter_chunks("subjects", GenerateParams(rows=100, seed=1)))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 100)
    written = write_datasets(tmp_path, GenerateParams(rows=500, seed=1))
    before = written["events"].read_bytes()
    real_chunk = generate._World.chunk

    def failing_chunk(self: Any, name: str, index: int) -> pa.Table:
        if name == "events" and index == 2:  # two row groups already written to the temp file
            raise RuntimeError("disk full")
        return real_chunk(self, name, index)

    monkeypatch.setattr(generate._World, "chunk", failing_chunk)
    with pytest.raises(RuntimeError, match="disk full"):
        write_datasets(tmp_path, GenerateParams(rows=500, seed=2))
    assert written["events"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())


def test_main_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _params_file(tmp_path, "generate:\n  rows: 400\n  seed: 4\n  dirty_rows: 2\n")
    out = tmp_path / "data" / "raw"
    assert main(["--out-dir", str(out), "--params", str(path)]) == 0
    again = write_datasets(tmp_path / "again", GenerateParams(rows=400, seed=4, dirty_rows=2))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{name}: {table_sizes(400)[name]} rows -> {out / f'{name}.parquet'}"
                     for name in RAW_DATASETS]
    for name in RAW_DATASETS:
        assert (out / f"{name}.parquet").read_bytes() == again[name].read_bytes()


def test_module_entry_point(tmp_path: Path) -> None:
    good = _params_file(tmp_path, "generate:\n  rows: 200\n  seed: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "amas.datasets.generate", "--out-dir", str(tmp_path / "raw"),
         "--params", str(good)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(RAW_DATASETS)
    names = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert names == sorted(f"{n}.parquet" for n in RAW_DATASETS)

    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  rows: 0\n  seed: 1\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "amas.datasets.generate", "--out-dir", str(tmp_path / "never"),
         "--params", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "generate.rows" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "never").exists()
