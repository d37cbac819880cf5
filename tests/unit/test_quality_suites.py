"""The pipeline's expectation suites, judged on hand-built tables that follow the dataset contract.

Each suite must pass on contract data and fail, on the right expectations, on the breakage that
``generate.dirty_rows`` injects. Tables are built with pyarrow in the contract's types and read
back through pandas, as ``validate_table`` does with the real files.
"""

from __future__ import annotations

import json
import pickle
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amas import quality
from amas.errors import AmasError
from amas.quality import (
    EXPECTATIONS_DIR,
    MAX_SAMPLES,
    QualityReport,
    ValidationFailed,
    load_suite_definition,
    validate_frame,
    validate_table,
)

pytestmark = pytest.mark.unit

UTC_S = pa.timestamp("s", tz="UTC")
NAIVE_S = pa.timestamp("s")
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SUBJECTS = [str(uuid.UUID(int=0x1234_5678_9ABC_DEF0 * (i + 1), version=4)) for i in range(4)]
EVENT_TYPES = ["login", "login_failed", "password_reset", "file_access", "payment", "message"]

PIPELINE_SUITES = {
    "people": "data/raw/people.parquet",
    "cases": "data/raw/cases.parquet",
    "events": "data/raw/events.parquet",
    "notes": "data/raw/notes.parquet",
    "people_clean": "data/clean/people_clean.parquet",
    "cases_clean": "data/clean/cases_clean.parquet",
    "events_clean": "data/clean/events_clean.parquet",
    "subject_activity": "data/features/subject_activity.parquet",
    "daily_events": "data/features/daily_events.parquet",
}


def _utc(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def people(clean: bool = False) -> pa.Table:
    emails = ["Anna.Schmidt1@example.com", "camille.martin2@example.org", "oliver.smith3@mail.example.net",
              "emma.de.jong4@example.com"]
    return pa.table({
        "subject_id": pa.array(SUBJECTS, pa.string()),
        "full_name": ["Anna Schmidt", "Camille Martin", "Oliver O'Brien", "Emma de Jong"],
        "email": [e.lower() for e in emails] if clean else emails,
        "phone": (["+4915112345678", "+33612345678", "+447700123456", "+31612345678"] if clean
                  else ["+49 151 12345678", "+33 6 12 34 56 78", "+44 7700 123456", "+31 6 12345678"]),
        "date_of_birth": pa.array([datetime(1980, 1, 31), datetime(1975, 6, 1), datetime(2001, 12, 24),
                                   datetime(1990, 2, 28)], NAIVE_S),
        "country": ["DE", "FR", "GB", "NL"],
        "created_at": pa.array([_utc(-100 * i) for i in range(4)], UTC_S),
    })


def cases(clean: bool = False) -> pa.Table:
    opened = [_utc(0), _utc(5), _utc(10)]
    closed = [None, None, _utc(10 + 36)]
    columns: dict[str, Any] = {
        "case_id": ["C-00000001", "C-00000002", "C-00000003"],
        "subject_id": [SUBJECTS[0], SUBJECTS[1], SUBJECTS[0]],
        "category": ["fraud", "access_request", "complaint"],
        "status": ["open", "investigating", "closed"],
        "priority": pa.array([1, 3, 5], pa.int8()),
        "opened_at": pa.array(opened, UTC_S),
        "closed_at": pa.array(closed, UTC_S),
    }
    if clean:
        columns["open_days"] = pa.array([None, None, 1.5], pa.float64())
    return pa.table(columns)


def events(clean: bool = False) -> pa.Table:
    ips = ["192.0.2.17", "198.51.100.200", "203.0.113.5", "2001:db8:12::7", "192.0.2.254", "2001:db8::1"]
    networks = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8:12::/48", "192.0.2.0/24",
                "2001:db8::/48"]
    return pa.table({
        "event_id": pa.array(range(1, 7), pa.int64()),
        "subject_id": [SUBJECTS[i % 3] for i in range(6)],
        "case_id": ["C-00000001", None, None, "C-00000003", None, None],
        "occurred_at": pa.array([_utc(i) for i in range(6)], UTC_S),
        "event_type": EVENT_TYPES,
        ("ip_network" if clean else "ip_address"): networks if clean else ips,
        "bytes_sent": pa.array([0, 512, 1_048_576, 7, 0, 99], pa.int64()),
    })


def notes() -> pa.Table:
    return pa.table({
        "note_id": pa.array([1, 2, 3], pa.int64()),
        "case_id": ["C-00000001", "C-00000001", "C-00000003"],
        "author": ["Analyst Berg", "Analyst Moreau", "Analyst Berg"],
        "written_at": pa.array([_utc(1), _utc(2), _utc(11)], UTC_S),
        "body": ["Called Anna Schmidt about the login from 192.0.2.17.",
                 "Anna Schmidt confirmed anna.schmidt1@example.com is hers.",
                 "Case closed after Anna Schmidt withdrew the complaint."],
    })


def subject_activity() -> pa.Table:
    return pa.table({
        "subject_id": SUBJECTS,
        "cases": pa.array([2, 1, 0, 0], pa.int64()),
        "events": pa.array([2, 2, 2, 0], pa.int64()),
        "failed_logins": pa.array([1, 0, 0, 0], pa.int64()),
        "distinct_networks": pa.array([2, 1, 2, 0], pa.int64()),
        "first_event_at": pa.array([_utc(0), _utc(1), _utc(2), None], UTC_S),
        "last_event_at": pa.array([_utc(3), _utc(4), _utc(5), None], UTC_S),
    })


def daily_events() -> pa.Table:
    day = datetime(2026, 3, 2)
    return pa.table({
        "day": pa.array([day, day, day + timedelta(days=1)], NAIVE_S),
        "event_type": ["login", "payment", "login"],
        "events": pa.array([5, 1, 3], pa.int64()),
        "distinct_subjects": pa.array([3, 1, 3], pa.int64()),
    })


CONTRACT_TABLES: dict[str, Callable[[], pa.Table]] = {
    "people": people,
    "cases": cases,
    "events": events,
    "notes": notes,
    "people_clean": lambda: people(clean=True),
    "cases_clean": lambda: cases(clean=True),
    "events_clean": lambda: events(clean=True),
    "subject_activity": subject_activity,
    "daily_events": daily_events,
}


def frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def failed(report: QualityReport) -> set[tuple[str, str | None]]:
    return {(o.expectation, o.column) for o in report.failed}


def outcome(report: QualityReport, expectation: str, column: str) -> quality.ExpectationOutcome:
    (match,) = [o for o in report.outcomes if o.expectation == expectation and o.column == column]
    return match


@pytest.fixture(scope="module", autouse=True)
def gx_runtime() -> quality._Runtime:
    """Import GX and build the context once for the whole module (the import alone takes seconds)."""
    return quality._runtime()


@pytest.fixture(scope="module")
def dirty_people() -> QualityReport:
    """The generator's breakage: a null id, a malformed e-mail, an e-mail used twice."""
    df = frame(people())
    df.loc[0, "subject_id"] = None
    df.loc[1, "email"] = "not-an-email"
    df.loc[3, "email"] = df.loc[2, "email"]
    return validate_frame(df, "people")


def test_every_pipeline_dataset_has_a_suite_naming_it() -> None:
    for name, dataset in PIPELINE_SUITES.items():
        definition = load_suite_definition(name)
        assert definition["meta"]["dataset"] == dataset
        assert definition["meta"]["owner"] == "data-platform"
        assert definition["meta"]["purpose"]
        types = [e["type"] for e in definition["expectations"]]
        assert "expect_table_columns_to_match_set" in types
        assert "expect_table_row_count_to_be_between" in types


@pytest.mark.parametrize("suite", sorted(CONTRACT_TABLES))
def test_suite_passes_on_contract_data(suite: str) -> None:
    report = validate_frame(frame(CONTRACT_TABLES[suite]()), suite)

    assert report.success, report.to_markdown()
    assert report.dataset == PIPELINE_SUITES[suite]
    assert len(report.outcomes) == len(load_suite_definition(suite)["expectations"])


def test_suite_columns_match_the_contract_tables_exactly() -> None:
    for suite, build in CONTRACT_TABLES.items():
        (column_set,) = [e["kwargs"]["column_set"] for e in load_suite_definition(suite)["expectations"]
                         if e["type"] == "expect_table_columns_to_match_set"]
        assert sorted(column_set) == sorted(build().column_names), suite


def test_dirty_people_fail_on_null_id_bad_and_duplicate_email(dirty_people: QualityReport) -> None:
    assert not dirty_people.success
    assert failed(dirty_people) == {
        ("expect_column_values_to_not_be_null", "subject_id"),
        ("expect_column_values_to_match_regex", "email"),  # the shape check and the example-domain check
        ("expect_column_values_to_be_unique", "email"),
    }
    shape, domain = [o for o in dirty_people.failed if o.expectation == "expect_column_values_to_match_regex"]
    assert shape.unexpected_sample == domain.unexpected_sample == ["not-an-email"]
    assert shape.kwargs == {"column": "email", "regex": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"}
    duplicate = outcome(dirty_people, "expect_column_values_to_be_unique", "email")
    # Both rows are unexpected; the sample names the value once.
    assert (duplicate.unexpected_count, duplicate.unexpected_sample) == (2, ["oliver.smith3@mail.example.net"])
    null_id = outcome(dirty_people, "expect_column_values_to_not_be_null", "subject_id")
    assert (null_id.unexpected_count, null_id.unexpected_percent) == (1, 25.0)


def test_dirty_cases_fail_on_priority_status_and_null_subject() -> None:
    df = frame(cases())
    df.loc[0, "priority"] = 9
    df.loc[1, "status"] = "escalated"
    df.loc[2, "subject_id"] = None

    report = validate_frame(df, "cases")

    assert failed(report) == {
        ("expect_column_values_to_be_between", "priority"),
        ("expect_column_values_to_be_in_set", "status"),
        ("expect_column_values_to_not_be_null", "subject_id"),
    }
    assert outcome(report, "expect_column_values_to_be_between", "priority").unexpected_sample == [9]
    assert outcome(report, "expect_column_values_to_be_in_set", "status").unexpected_sample == ["escalated"]


def test_closed_at_must_be_set_exactly_when_closed_and_not_before_opening() -> None:
    df = frame(cases())
    df.loc[0, "closed_at"] = df.loc[0, "opened_at"]  # an open case with a closing time
    df.loc[2, "closed_at"] = df.loc[2, "opened_at"] - pd.Timedelta(days=1)  # closed before it opened

    report = validate_frame(df, "cases")

    assert failed(report) == {
        ("expect_column_values_to_be_null", "closed_at"),
        ("expect_column_pair_values_a_to_be_greater_than_b", None),
    }
    pair = outcome(report, "expect_column_pair_values_a_to_be_greater_than_b", None)
    assert pair.columns == ["closed_at", "opened_at"]
    assert pair.unexpected_count == 1


def test_dirty_events_fail_on_unknown_type_and_bad_ip() -> None:
    df = frame(events())
    df.loc[0, "event_type"] = "teleport"
    df.loc[1, "ip_address"] = "999.1.2.3"
    df.loc[2, "subject_id"] = None

    report = validate_frame(df, "events")

    assert failed(report) == {
        ("expect_column_values_to_be_in_set", "event_type"),
        ("expect_column_values_to_match_regex", "ip_address"),
        ("expect_column_values_to_not_be_null", "subject_id"),
    }
    assert outcome(report, "expect_column_values_to_be_in_set", "event_type").unexpected_sample == ["teleport"]
    ip_checks = [o for o in report.failed if o.column == "ip_address"]
    assert [o.unexpected_sample for o in ip_checks] == [["999.1.2.3"], ["999.1.2.3"]]


def test_ip_address_shape_accepts_real_addresses_and_rejects_lookalikes() -> None:
    (regex,) = [e["kwargs"]["regex"] for e in load_suite_definition("events")["expectations"]
                if e["type"] == "expect_column_values_to_match_regex" and e["kwargs"]["column"] == "ip_address"
                and "25[0-5]" in e["kwargs"]["regex"]]
    good = ["192.0.2.0", "203.0.113.255", "2001:db8::", "2001:db8:0:0:0:0:0:1", "2001:DB8:12::7", "::1"]
    bad = ["999.1.2.3", "256.0.0.1", "192.0.2", "192.0.2.1.5", "01.2.3.4", "2001:db8:::1", "2001::db8::1",
           "12345::1", "1:2:3:4:5:6:7:8:9", "192.0.2.1 ", "192.0.2.0/24", ""]
    matched = pd.Series(good + bad, dtype="str").str.contains(regex)
    assert matched.tolist() == [True] * len(good) + [False] * len(bad)


def test_clean_events_must_not_carry_the_raw_ip_address() -> None:
    df = frame(events(clean=True))
    df["ip_address"] = "192.0.2.17"

    report = validate_frame(df, "events_clean")

    assert failed(report) == {("expect_table_columns_to_match_set", None)}
    (columns,) = report.failed
    assert columns.details == {"mismatched": {"unexpected": ["ip_address"]}}
    assert "ip_address" in columns.observed_value


def test_dirty_notes_fail_on_null_case_id() -> None:
    df = frame(notes())
    df.loc[1, "case_id"] = None

    report = validate_frame(df, "notes")

    assert failed(report) == {("expect_column_values_to_not_be_null", "case_id")}


def test_clean_people_need_e164_phones_and_normalised_text() -> None:
    df = frame(people(clean=True))
    df.loc[0, "phone"] = "+49 151 12345678"
    df.loc[1, "email"] = "Camille.Martin2@example.org"
    df.loc[2, "full_name"] = "Oliver  O'Brien"

    report = validate_frame(df, "people_clean")

    assert failed(report) == {
        ("expect_column_values_to_match_regex", "phone"),
        ("expect_column_values_to_not_match_regex", "email"),
        ("expect_column_values_to_not_match_regex", "full_name"),
    }


def test_features_fail_on_impossible_counts_and_duplicate_days() -> None:
    activity = frame(subject_activity())
    activity.loc[0, "failed_logins"] = 5  # more failed logins than events
    activity.loc[1, "first_event_at"] = None  # events without a first event time
    daily = frame(daily_events())
    daily.loc[1, "event_type"] = "login"  # (day, event_type) twice

    assert failed(validate_frame(activity, "subject_activity")) == {
        ("expect_column_pair_values_a_to_be_greater_than_b", None),
        ("expect_column_values_to_not_be_null", "first_event_at"),
    }
    assert failed(validate_frame(daily, "daily_events")) == {("expect_compound_columns_to_be_unique", None)}


def test_outcomes_follow_the_suite_file_order_with_kwargs_and_observed_values(dirty_people: QualityReport) -> None:
    definition = load_suite_definition("people")
    assert [(o.expectation, o.kwargs) for o in dirty_people.outcomes] == [
        (e["type"], e["kwargs"]) for e in definition["expectations"]
    ]
    rows = dirty_people.outcomes[1]
    assert (rows.expectation, rows.observed_value) == ("expect_table_row_count_to_be_between", 4)
    assert sorted(dirty_people.outcomes[0].observed_value) == sorted(people().column_names)
    json.dumps(dirty_people.model_dump(mode="json"))


def test_samples_are_capped_at_twenty() -> None:
    df = pd.concat([frame(people())] * 15, ignore_index=True)
    df["email"] = [f"broken-{i}" for i in range(len(df))]

    report = validate_frame(df, "people")

    shape = next(o for o in report.failed if o.expectation == "expect_column_values_to_match_regex")
    assert shape.unexpected_count == 60
    assert len(shape.unexpected_sample) == MAX_SAMPLES


def test_redacted_samples_keep_only_the_first_character() -> None:
    df = frame(people())
    df.loc[1, "email"] = "not-an-email"
    df.loc[3, "date_of_birth"] = pd.Timestamp("1850-07-04")

    plain = validate_frame(df, "people")
    report = validate_frame(df, "people", redact_samples=True)

    assert [v for o in plain.failed for v in o.unexpected_sample] == [
        "not-an-email", "not-an-email", "1850-07-04T00:00:00"
    ]

    samples = [v for o in report.failed for v in o.unexpected_sample]
    assert samples == ["n***", "n***", "1***"]
    assert "not-an-email" not in report.to_markdown() + report.summary_line()
    assert "1850" not in report.model_dump_json()
    # The column set and row count are not personal data and stay readable.
    assert report.outcomes[1].observed_value == 4


def test_summary_line_names_suite_counts_and_an_example(dirty_people: QualityReport) -> None:
    assert dirty_people.summary_line() == (
        "people: 4 of 17 expectations failed on 4 rows ("
        "expect_column_values_to_not_be_null on subject_id: 1 unexpected; "
        "expect_column_values_to_be_unique on email: 2 unexpected, e.g. 'oliver.smith3@mail.example.net'; "
        "expect_column_values_to_match_regex on email: 1 unexpected, e.g. 'not-an-email'; and 1 more)"
    )
    clean = validate_frame(frame(people()), "people")
    assert clean.summary_line() == "people: all 17 expectations passed on 4 rows"


def test_markdown_puts_failures_first_with_samples(dirty_people: QualityReport) -> None:
    text = dirty_people.to_markdown()

    assert text.splitlines()[0] == "### Data quality: people: FAIL"
    assert "Suite `people` on `data/raw/people.parquet`: 4 rows, 4 of 17 expectations failed." in text
    assert text.index("**Failed**") < text.index("**Passed**")
    failed_rows = text[text.index("**Failed**"):text.index("**Passed**")]
    passed_rows = text[text.index("**Passed**"):]
    assert (
        "| expect_column_values_to_match_regex | email | regex=`^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$` "
        "| 1 (25.00%) |  | `'not-an-email'` |"
    ) in failed_rows
    assert "| expect_column_values_to_be_unique | email |  | 2 (50.00%) |  | `'oliver.smith3@mail.example.net'` |" in failed_rows
    assert "| expect_column_values_to_not_be_null | subject_id |  | 1 (25.00%) |  | null |" in failed_rows
    assert "| expect_table_row_count_to_be_between |  | min_value=`1` | `4` |" in passed_rows
    assert len(failed_rows.splitlines()) == 4 + 4 + 1  # heading, blank, header, rule; 4 failures; blank
    # A pipe in a regex is escaped so that it does not end the table cell.
    assert "example\\.(?:com\\|net\\|org)\\|" in failed_rows


def test_a_missing_column_is_reported_not_raised() -> None:
    df = frame(people()).drop(columns=["phone"])

    report = validate_frame(df, "people")

    assert failed(report) == {
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_not_be_null", "phone"),
        ("expect_column_values_to_match_regex", "phone"),
    }
    assert report.failed[0].details == {"mismatched": {"missing": ["phone"]}}
    assert all('column "phone"' in (o.error or "") for o in report.failed[1:])
    assert report.summary_line().startswith(
        "people: 3 of 17 expectations failed on 4 rows (expect_table_columns_to_match_set: missing phone; "
        "expect_column_values_to_not_be_null on phone: could not run: "
    )
    assert "| missing phone |" in report.to_markdown()


def test_validate_table_reads_parquet_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    table = events()
    pq.write_table(table.set_column(4, "event_type", pa.array(["teleport"] + EVENT_TYPES[1:])), path)

    report = validate_table(path, "events")

    assert report.dataset == path.as_posix()
    assert report.rows == 6
    assert failed(report) == {("expect_column_values_to_be_in_set", "event_type")}
    assert validate_table(path, "events", dataset="data/raw/events.parquet").dataset == "data/raw/events.parquet"


def test_validate_table_refuses_missing_files_and_unknown_suites(tmp_path: Path) -> None:
    with pytest.raises(AmasError, match="no such file"):
        validate_table(tmp_path / "absent.parquet", "events")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(AmasError, match="not a readable Parquet file"):
        validate_table(tmp_path / "junk.parquet", "events")
    with pytest.raises(AmasError, match="known suites: .*people"):
        validate_table(tmp_path / "absent.parquet", "peopel")


def test_an_unknown_expectation_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "typo.json").write_text(json.dumps(
        {"name": "typo", "expectations": [{"type": "expect_column_values_to_be_nul", "kwargs": {"column": "a"}}]}
    ))
    with pytest.raises(AmasError, match="suite 'typo': expectation 'expect_column_values_to_be_nul' is invalid"):
        validate_frame(pd.DataFrame({"a": [1]}), "typo", tmp_path)


def test_context_is_created_once_and_holds_no_data_between_calls(gx_runtime: quality._Runtime) -> None:
    dirty = frame(events())
    dirty.loc[0, "event_type"] = "teleport"
    clean = frame(events())
    clean_ref = weakref.ref(clean)

    # Same suite, same shape, same batch id: a result cached from the first frame would pass it.
    assert not validate_frame(dirty, "events").success
    assert validate_frame(clean, "events").success
    assert quality._runtime() is gx_runtime
    del clean
    assert clean_ref() is None, "GX still holds the last validated DataFrame"


def test_validation_failed_names_failed_suites_and_survives_pickling(dirty_people: QualityReport) -> None:
    passed = validate_frame(frame(notes()), "notes")

    error = ValidationFailed([dirty_people, passed])

    assert isinstance(error, AmasError)
    assert error.exit_code == 1
    assert str(error) == "data quality check failed: people (4 of 17 expectations on 4 rows)"
    assert error.reports == [dirty_people, passed]
    restored = pickle.loads(pickle.dumps(error))
    assert (str(restored), restored.reports) == (str(error), error.reports)


def test_existing_store_suites_still_load() -> None:
    for path in sorted(EXPECTATIONS_DIR.glob("*.json")):
        definition = load_suite_definition(path.stem)
        quality._runtime().build_suite(path.stem, definition)


def test_gx_batch_fingerprinting_is_off() -> None:
    # quality._runtime turns off GX's whole-frame hashing through this private module value;
    # if GX renames or drops it, this fails and the speed-up needs another way.
    from great_expectations.execution_engine import pandas_execution_engine

    from amas.quality import _runtime

    _runtime()
    assert pandas_execution_engine.HASH_THRESHOLD == 0
