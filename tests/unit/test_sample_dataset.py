"""The synthetic data-subjects table: deterministic, well-formed, and strict about params."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from amas.datasets import sample
from amas.datasets.sample import (
    COLUMNS,
    generate_subjects,
    iter_subject_chunks,
    load_params,
    main,
    write_subjects,
)
from amas.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EMAIL = re.compile(r"^[a-z]+\.[a-z]+[1-9][0-9]*@example\.(com|org|net)$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CALLING_CODES = {"DE": "+49 ", "FR": "+33 ", "GB": "+44 ", "ES": "+34 ", "IT": "+39 ",
                 "NL": "+31 ", "PL": "+48 ", "SE": "+46 "}


def _params(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_subjects(tmp_path / "a" / "subjects.csv", 500, 42)
    second = write_subjects(tmp_path / "b" / "subjects.csv", 500, 42)
    assert first.read_bytes() == second.read_bytes()
    pd.testing.assert_frame_equal(generate_subjects(500, 42), generate_subjects(500, 42))


def test_different_seed_gives_different_table(tmp_path: Path) -> None:
    first = write_subjects(tmp_path / "a.csv", 500, 42)
    second = write_subjects(tmp_path / "b.csv", 500, 43)
    assert first.read_bytes() != second.read_bytes()
    assert set(generate_subjects(500, 42).subject_id).isdisjoint(
        generate_subjects(500, 43).subject_id
    )


@pytest.mark.parametrize("rows", [1, 2, 999])
def test_row_count(rows: int, tmp_path: Path) -> None:
    assert len(generate_subjects(rows, 1)) == rows
    lines = write_subjects(tmp_path / "s.csv", rows, 1).read_text(encoding="utf-8").splitlines()
    assert len(lines) == rows + 1  # header


def test_chunks_join_into_one_consistent_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks exercise the boundaries that a real table only crosses at 100,000 rows.
    monkeypatch.setattr(sample, "CHUNK_ROWS", 7)
    frame = generate_subjects(20, 5)
    assert [len(c) for c in iter_subject_chunks(20, 5)] == [7, 7, 6]
    assert list(frame.index) == list(range(20))
    assert not frame.isna().any().any()
    assert frame.subject_id.is_unique and frame.email.is_unique
    serials = frame.email.str.extract(r"(\d+)@", expand=False).astype(int)
    assert list(serials) == list(range(1, 21))


def test_columns_and_dtypes() -> None:
    frame = generate_subjects(50, 3)
    assert tuple(frame.columns) == COLUMNS
    for column in ("subject_id", "full_name", "email", "phone", "country"):
        assert frame[column].dtype == "str", column
    assert frame["date_of_birth"].dtype == "datetime64[s]"
    assert str(frame["created_at"].dtype) == "datetime64[s, UTC]"


def test_values_look_real_and_fit_together() -> None:
    frame = generate_subjects(2000, 11)
    assert frame.subject_id.str.fullmatch(UUID4).all()
    assert frame.subject_id.is_unique
    assert set(frame.country) <= set(CALLING_CODES)
    for country, phone in zip(frame.country, frame.phone, strict=True):
        assert phone.startswith(CALLING_CODES[country]), (country, phone)
    age_days = (frame.created_at.dt.tz_localize(None) - frame.date_of_birth).dt.days
    assert age_days.between(18 * 365, 91 * 365).all()
    assert frame.created_at.between(
        pd.Timestamp("2019-01-01", tz="UTC"), pd.Timestamp("2026-11-01", tz="UTC")
    ).all()


def test_emails_unique_and_well_formed() -> None:
    emails = generate_subjects(5000, 20261125).email
    assert emails.is_unique
    bad = [e for e in emails if not EMAIL.match(e)]
    assert bad == []


def test_csv_has_iso_dates_and_reads_back(tmp_path: Path) -> None:
    path = write_subjects(tmp_path / "s.csv", 100, 9)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert tuple(raw.columns) == COLUMNS
    assert raw.date_of_birth.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert raw.created_at.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all()
    expected = generate_subjects(100, 9)
    assert list(raw.email) == list(expected.email)
    assert list(raw.full_name) == list(expected.full_name)


def test_failed_write_leaves_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_subjects(tmp_path / "s.csv", 10, 1)
    before = target.read_bytes()
    first_chunk = generate_subjects(3, 2)

    def broken_chunks(rows: int, seed: int):
        yield first_chunk
        raise RuntimeError("disk full")

    monkeypatch.setattr(sample, "iter_subject_chunks", broken_chunks)
    with pytest.raises(RuntimeError, match="disk full"):
        write_subjects(target, 10, 2)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_main_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = _params(tmp_path, "sample:\n  rows: 25\n  seed: 4\n")
    out = tmp_path / "data" / "sample" / "subjects.csv"
    assert main(["--out", str(out), "--params", str(params)]) == 0
    assert out.read_bytes() == write_subjects(tmp_path / "again.csv", 25, 4).read_bytes()
    assert "wrote 25 subjects" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rows",
    ["0", "-1", "10000001", "'2000'", "2000.0", "true", "null", "[1, 2]"],
)
def test_bad_rows_exit_2_with_one_line(
    rows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path, f"sample:\n  rows: {rows}\n  seed: 1\n")
    out = tmp_path / "subjects.csv"
    assert main(["--out", str(out), "--params", str(params)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "sample.rows" in lines[0]
    assert "from 1 to 10000000" in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("sample:\n  rows: 10\n  seed: -3\n", "sample.seed must be a whole number >= 0"),
        ("sample:\n  rows: 10\n", "sample.seed missing"),
        ("other:\n  rows: 10\n", "needs a 'sample:' section"),
        ("sample: [\n", "not valid YAML at line"),
    ],
)
def test_other_bad_params_are_one_clear_line(
    body: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path, body)
    assert main(["--out", str(tmp_path / "s.csv"), "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_engine_function_refuses_bad_rows_too() -> None:
    with pytest.raises(ConfigError, match=r"sample\.rows"):
        generate_subjects(0, 1)


def test_module_entry_point_exits_2_without_traceback(tmp_path: Path) -> None:
    params = _params(tmp_path, "sample:\n  rows: 0\n  seed: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "amas.datasets.sample",
         "--out", str(tmp_path / "s.csv"), "--params", str(params)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "sample.rows" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
