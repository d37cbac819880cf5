"""erasures/subjects.json and the generate-stage filter: digests only, people left out, no change when empty."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from amas.datasets.generate import GenerateParams, write_datasets
from amas.db.ledger import key_id, subject_digest
from amas.errors import ConfigError
from amas.gdpr.discovery import _dvc_downstream
from amas.gdpr.erasure_list import (
    ERASED,
    ERASURE_LIST,
    ErasureList,
    apply_erasure_list,
    check_key,
    filter_raw_tables,
    read_erasure_list,
    write_erasure_list,
)

pytestmark = pytest.mark.unit

KEY = b"k" * 32
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("raw")
    write_datasets(directory, GenerateParams(rows=400, seed=7))
    return directory


def digests_of(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


def copy(raw: Path, target: Path) -> Path:
    target.mkdir()
    for path in raw.glob("*.parquet"):
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_the_committed_list_is_empty_and_well_formed() -> None:
    committed = read_erasure_list(REPO)
    assert committed == ErasureList(None, frozenset())
    text = (REPO / ERASURE_LIST).read_text(encoding="utf-8")
    assert json.loads(text)["format"] == 1


def test_written_lists_are_sorted_digests_with_the_key_id_and_rewritten_only_on_change(tmp_path: Path) -> None:
    digests = {subject_digest("b@example.org", KEY), subject_digest("a@example.org", KEY)}
    assert write_erasure_list(tmp_path, ErasureList(key_id(KEY), frozenset(digests)))
    document = json.loads((tmp_path / ERASURE_LIST).read_text(encoding="utf-8"))
    assert document["digests"] == sorted(digests) and document["key_id"] == key_id(KEY)
    assert "example.org" not in (tmp_path / ERASURE_LIST).read_text(encoding="utf-8")
    assert not write_erasure_list(tmp_path, read_erasure_list(tmp_path))
    assert read_erasure_list(tmp_path).digests == frozenset(digests)


@pytest.mark.parametrize(("text", "expected"), [
    ("{", "not readable JSON"),
    ('{"format": 2, "digests": []}', "format 1"),
    ('{"format": 1, "digests": ["nothex"], "key_id": "0123456789abcdef"}', "64-character"),
    ('{"format": 1, "digests": ["' + "a" * 64 + '"], "key_id": "short"}', "key_id must be"),
])
def test_a_malformed_list_is_refused_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "erasures").mkdir()
    (tmp_path / ERASURE_LIST).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as caught:
        read_erasure_list(tmp_path)
    assert ERASURE_LIST in str(caught.value)


def test_a_list_made_with_another_key_is_refused() -> None:
    listed = ErasureList("0" * 16, frozenset({"a" * 64}))
    with pytest.raises(ConfigError, match="AMAS_ERASURE_KEY"):
        check_key(listed, key_id(KEY))
    check_key(ErasureList(None, frozenset()), key_id(KEY))  # an empty list fits any key


def test_an_empty_or_absent_list_leaves_the_generated_bytes_alone(raw: Path, tmp_path: Path) -> None:
    work = copy(raw, tmp_path / "raw")
    before = digests_of(work)
    assert apply_erasure_list(tmp_path, work) == {}  # no erasures/ directory at all
    write_erasure_list(tmp_path, ErasureList(None, frozenset()))
    assert apply_erasure_list(tmp_path, work) == {}
    assert digests_of(work) == before


def test_listed_people_leave_with_their_cases_events_and_notes(raw: Path, tmp_path: Path) -> None:
    work = copy(raw, tmp_path / "raw")
    people = pq.read_table(work / "people.parquet").to_pylist()
    cases = pq.read_table(work / "cases.parquet").to_pylist()
    notes = pq.read_table(work / "notes.parquet").to_pylist()
    case_of = {c["case_id"]: c["subject_id"] for c in cases}
    # Someone with a note about them, erased by their email alone.
    note = next(n for n in notes if n["case_id"])
    person = next(p for p in people if p["subject_id"] == case_of[note["case_id"]])
    other = next(p for p in people if p["subject_id"] != person["subject_id"])
    before = digests_of(work)

    counts = filter_raw_tables(work, frozenset({subject_digest(person["email"].upper(), KEY)}), KEY)

    after = {name: pq.read_table(work / f"{name}.parquet") for name in ("people", "cases", "events", "notes")}
    assert counts["people"] == 1 and counts["cases"] >= 1 and counts["notes"] >= 1
    assert person["subject_id"] not in after["people"]["subject_id"].to_pylist()
    assert other["subject_id"] in after["people"]["subject_id"].to_pylist()
    assert person["subject_id"] not in after["cases"]["subject_id"].to_pylist()
    assert person["subject_id"] not in after["events"]["subject_id"].to_pylist()
    assert note["case_id"] not in after["notes"]["case_id"].to_pylist()
    bodies = " ".join(b for b in after["notes"]["body"].to_pylist() if b)
    assert person["email"] not in bodies
    assert after["people"].num_rows == len(people) - 1
    assert after["events"].schema == pq.read_table(raw / "events.parquet").schema
    assert all(digests_of(work)[name] != before[name] for name in ("people.parquet", "cases.parquet", "notes.parquet"))


def test_notes_elsewhere_that_name_an_erased_person_are_redacted(raw: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    work = copy(raw, tmp_path / "raw")
    people = pq.read_table(work / "people.parquet").to_pylist()
    notes = pq.read_table(work / "notes.parquet")
    person = people[3]
    # Put the person's name into a note of someone else's case.
    bodies = notes["body"].to_pylist()
    bodies[0] = f"Spoke to {person['full_name']} about another case."
    table = notes.set_column(notes.schema.get_field_index("body"), "body", pa.array(bodies))
    pq.write_table(table, work / "notes.parquet")
    counts = filter_raw_tables(work, frozenset({subject_digest(person["subject_id"], KEY)}), KEY)
    written = pq.read_table(work / "notes.parquet")["body"].to_pylist()
    assert counts["notes_redacted"] >= 1
    assert f"Spoke to {ERASED} about another case." in written
    assert not any(person["full_name"] in (b or "") for b in written)


def test_without_recorded_lineage_downstream_datasets_come_from_dvc_yaml() -> None:
    found = _dvc_downstream(REPO, ("data/raw/people.parquet",))
    assert {"data/clean/people_clean.parquet", "data/features/subject_activity.parquet",
            "data/pii/columns.json", "data/quality/raw.json"} <= set(found)
    assert "dvc.yaml stage clean" in found["data/clean/people_clean.parquet"]
