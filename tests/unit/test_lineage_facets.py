"""Dataset facets, judged by the events an emitter actually sends and by the OpenLineage schemas."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from jsonschema import ValidationError

from amas.lineage import PRODUCER, LineageEmitter, dataset
from amas.lineage.facets import (
    column_lineage,
    facet_map,
    file_dataset,
    ownership,
    pii_tags,
    quality_assertions,
    quality_input,
    quality_metrics,
    schema_from_arrow,
)
from amas.quality import ExpectationOutcome, QualityReport
from tests.lineage_schema import InMemoryTransport, validate_event

pytestmark = pytest.mark.unit

RUN_ID = "0191e6a4-7c1d-7a3e-9f55-3c2b1d0e4f10"
RAW_EVENTS = "data/raw/events.parquet"
CLEAN_EVENTS = "data/clean/events_clean.parquet"
SCHEMA = pa.schema([
    ("event_id", pa.int64()),
    ("subject_id", pa.string()),
    ("occurred_at", pa.timestamp("s", tz="UTC")),
    ("ip_network", pa.string()),
    ("priority", pa.int8()),
])

# A report as validate_frame builds it, made by hand so these tests need no GX.
REPORT = QualityReport(
    suite="events",
    dataset=RAW_EVENTS,
    rows=3,
    success=False,
    outcomes=[
        ExpectationOutcome(expectation="expect_table_row_count_to_be_between", success=True,
                           kwargs={"min_value": 1}, observed_value=3),
        ExpectationOutcome(expectation="expect_column_values_to_not_be_null", column="subject_id", success=True,
                           kwargs={"column": "subject_id"}, unexpected_count=0, unexpected_percent=0.0),
        ExpectationOutcome(expectation="expect_column_values_to_be_in_set", column="event_type", success=False,
                           kwargs={"column": "event_type", "value_set": ["login", "payment"]},
                           unexpected_count=1, unexpected_percent=33.3, unexpected_sample=["teleport"]),
        ExpectationOutcome(expectation="expect_compound_columns_to_be_unique", success=True,
                           kwargs={"column_list": ["day", "event_type"]}, unexpected_count=0),
    ],
)
FRAME = pd.DataFrame({
    "event_id": [1, 2, 3],
    "subject_id": ["a", None, "a"],
    "event_type": ["login", "payment", "teleport"],
})


@pytest.fixture
def memory() -> InMemoryTransport:
    return InMemoryTransport()


@pytest.fixture
def emitter(memory: InMemoryTransport) -> LineageEmitter:
    return LineageEmitter(memory, namespace="amas-test")


def sent(memory: InMemoryTransport) -> list[dict[str, Any]]:
    events = memory.as_dicts()
    for event in events:
        validate_event(event)
    return events


def test_a_stage_event_with_every_facet_validates_and_carries_the_values(
    tmp_path: Path, memory: InMemoryTransport, emitter: LineageEmitter
) -> None:
    raw = quality_input(file_dataset(tmp_path, tmp_path / RAW_EVENTS, version="md5:1f2e"), REPORT, FRAME)
    clean = file_dataset(
        tmp_path,
        Path(CLEAN_EVENTS),
        version="md5:9a8b",
        schema=SCHEMA,
        facets=facet_map(
            column_lineage(
                {
                    "event_id": [("", RAW_EVENTS, "event_id")],
                    "ip_network": [("", RAW_EVENTS, "ip_address")],
                },
                namespace="file",
                transformations={"ip_network": ("DIRECT", "MASKED")},
                dataset_dependencies=[("", RAW_EVENTS, "event_type", "FILTER")],
            ),
            pii_tags({"subject_id": "pseudonymous_id", "ip_network": "ip_address"}),
            ownership("data-platform"),
        ),
    )

    with emitter.run("pipeline.clean", inputs=[raw]) as run:
        run.add_output(clean)

    start, complete = sent(memory)
    (source,) = complete["inputs"]
    (target,) = complete["outputs"]
    assert (source["namespace"], source["name"]) == ("file", RAW_EVENTS)
    assert (target["namespace"], target["name"]) == ("file", CLEAN_EVENTS)
    assert set(source["facets"]) == {"version"}
    assert set(source["inputFacets"]) == {"dataQualityAssertions", "dataQualityMetrics"}
    assert set(target["facets"]) == {"schema", "version", "columnLineage", "tags", "ownership"}
    assert start["inputs"][0]["inputFacets"] == source["inputFacets"]

    facets = [*source["facets"].values(), *source["inputFacets"].values(), *target["facets"].values()]
    assert {f["_producer"] for f in facets} == {PRODUCER}

    assertions = source["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a.get("column"), a["success"]) for a in assertions] == [
        ("expect_table_row_count_to_be_between", None, True),
        ("expect_column_values_to_not_be_null", "subject_id", True),
        ("expect_column_values_to_be_in_set", "event_type", False),
        ("expect_compound_columns_to_be_unique", None, True),
    ]
    assert assertions[2]["params"] == {"column": "event_type", "value_set": ["login", "payment"]}
    assert [a["actual"] for a in assertions] == ["3", "0 unexpected", "1 unexpected", "0 unexpected"]
    assert [a["name"] for a in assertions] == ["events#1", "events#2", "events#3", "events#4"]

    metrics = source["inputFacets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 3
    assert {c: (m["nullCount"], m["distinctCount"], m["count"]) for c, m in metrics["columnMetrics"].items()} == {
        "event_id": (0, 3, 3),
        "subject_id": (1, 1, 2),
        "event_type": (0, 3, 3),
    }

    assert target["facets"]["schema"]["fields"] == [
        {"name": "event_id", "type": "int64", "fields": []},
        {"name": "subject_id", "type": "string", "fields": []},
        {"name": "occurred_at", "type": "timestamp[s, tz=UTC]", "fields": []},
        {"name": "ip_network", "type": "string", "fields": []},
        {"name": "priority", "type": "int8", "fields": []},
    ]

    lineage = target["facets"]["columnLineage"]
    assert lineage["fields"]["event_id"]["inputFields"] == [{
        "namespace": "file", "name": RAW_EVENTS, "field": "event_id",
        "transformations": [{"type": "DIRECT", "subtype": "IDENTITY", "masking": False}],
    }]
    assert lineage["fields"]["ip_network"]["inputFields"][0]["transformations"] == [
        {"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": True}
    ]
    assert lineage["dataset"] == [{
        "namespace": "file", "name": RAW_EVENTS, "field": "event_type",
        "transformations": [{"type": "INDIRECT", "subtype": "FILTER", "masking": False}],
    }]

    assert target["facets"]["tags"]["tags"] == [
        {"key": "pii", "value": "pseudonymous_id", "source": "amas.pii_classifier", "field": "subject_id"},
        {"key": "pii", "value": "ip_address", "source": "amas.pii_classifier", "field": "ip_network"},
        {"key": "contains_pii", "value": "true", "source": "amas.pii_classifier"},
    ]
    assert target["facets"]["ownership"]["owners"] == [{"name": "team:data-platform"}]


def test_quality_facets_never_carry_unexpected_samples() -> None:
    event_text = str(quality_assertions(REPORT)) + str(quality_metrics(REPORT, FRAME))

    assert "teleport" not in event_text


def test_aggregation_with_group_by_for_a_feature_table(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    daily = dataset(
        "file",
        "data/features/daily_events.parquet",
        facets=facet_map(column_lineage(
            {
                "day": [("file", CLEAN_EVENTS, "occurred_at")],
                "event_type": [("file", CLEAN_EVENTS, "event_type")],
                "events": [("file", CLEAN_EVENTS, "event_id")],
                "distinct_subjects": [("file", CLEAN_EVENTS, "subject_id")],
            },
            namespace="file",
            transformations={
                "day": ("DIRECT", "TRANSFORMATION"),
                "events": ("DIRECT", "AGGREGATION"),
                "distinct_subjects": ("DIRECT", "AGGREGATION"),
            },
            dataset_dependencies=[("file", CLEAN_EVENTS, "occurred_at", "GROUP_BY"),
                                  ("file", CLEAN_EVENTS, "event_type", "GROUP_BY")],
        )),
    )

    emitter.emit("COMPLETE", "pipeline.features", RUN_ID, outputs=[daily])

    (event,) = sent(memory)
    fields = event["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert {c: f["inputFields"][0]["transformations"][0]["subtype"] for c, f in fields.items()} == {
        "day": "TRANSFORMATION", "event_type": "IDENTITY", "events": "AGGREGATION", "distinct_subjects": "AGGREGATION",
    }


def test_a_dataset_without_personal_data_says_so(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    emitter.emit("COMPLETE", "pipeline.features", RUN_ID,
                 outputs=[dataset("file", "data/features/daily_events.parquet", facets=facet_map(pii_tags({})))])

    (event,) = sent(memory)
    assert event["outputs"][0]["facets"]["tags"]["tags"] == [
        {"key": "contains_pii", "value": "false", "source": "amas.pii_classifier"}
    ]


def test_precomputed_statistics_and_large_frames(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    given = quality_metrics(REPORT, {"event_id": {"nullCount": 0, "distinctCount": 3}})
    big = quality_metrics(REPORT, FRAME, distinct_count_max_rows=2)
    emitter.emit("COMPLETE", "pipeline.validate", RUN_ID, inputs=[
        quality_input(dataset("file", RAW_EVENTS), REPORT, {"event_id": {"nullCount": 0, "distinctCount": 3}}),
    ])

    validate_event(memory.events[0])
    assert (given.columnMetrics["event_id"].nullCount, given.columnMetrics["event_id"].distinctCount) == (0, 3)
    assert {m.distinctCount for m in big.columnMetrics.values()} == {None}
    assert big.columnMetrics["subject_id"].nullCount == 1
    with pytest.raises(ValueError, match="unknown field.*'nulls'"):
        quality_metrics(REPORT, {"event_id": {"nulls": 0}})


def test_quality_input_keeps_the_facets_it_was_given() -> None:
    first = quality_input(dataset("file", RAW_EVENTS, version="v1"), REPORT)
    again = quality_input(first, REPORT, FRAME)

    assert set(first.inputFacets or {}) == {"dataQualityAssertions"}
    assert set(again.inputFacets or {}) == {"dataQualityAssertions", "dataQualityMetrics"}
    assert set(again.facets or {}) == {"version"}


def test_schema_from_arrow_gives_name_and_type_pairs() -> None:
    assert schema_from_arrow(SCHEMA) == [
        ("event_id", "int64"),
        ("subject_id", "string"),
        ("occurred_at", "timestamp[s, tz=UTC]"),
        ("ip_network", "string"),
        ("priority", "int8"),
    ]


def test_file_dataset_is_named_by_its_repo_relative_posix_path(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    cache = tmp_path / "cache" / "ab12"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PAR1")
    link = root / "data" / "raw" / "people.parquet"
    link.parent.mkdir(parents=True)
    os.symlink(cache, link)

    assert file_dataset(root, link).name == "data/raw/people.parquet"  # a DVC cache link keeps its workspace name
    assert file_dataset(root, Path("data/raw/people.parquet")).name == "data/raw/people.parquet"
    assert file_dataset(root, root / "data" / ".." / "data" / "raw" / "people.parquet").name == "data/raw/people.parquet"
    item = file_dataset(root, link, namespace="s3://amas-data", version="md5:00ff", schema=[("subject_id", "string")])
    assert item.namespace == "s3://amas-data"
    assert set(item.facets or {}) == {"schema", "version"}
    for outside in (tmp_path / "elsewhere.parquet", Path("../elsewhere.parquet"), Path(".")):
        with pytest.raises(ValueError, match="not inside the repository"):
            file_dataset(root, outside)


def test_bad_transformations_and_tags_are_refused() -> None:
    source = {"ip_network": [("file", RAW_EVENTS, "ip_address")]}
    with pytest.raises(ValueError, match="transformation type 'COPY' is not one of DIRECT, INDIRECT"):
        column_lineage(source, namespace="file", transformations={"ip_network": ("COPY", "IDENTITY")})
    with pytest.raises(ValueError, match="DIRECT subtype 'GROUP_BY' is not one of"):
        column_lineage(source, namespace="file", transformations={"ip_network": ("DIRECT", "GROUP_BY")})
    with pytest.raises(ValueError, match="not in the mapping: ip_address"):
        column_lineage(source, namespace="file", transformations={"ip_address": ("DIRECT", "MASKED")})
    with pytest.raises(ValueError, match="INDIRECT subtype 'IDENTITY'"):
        column_lineage(source, namespace="file", dataset_dependencies=[("file", RAW_EVENTS, "event_id", "IDENTITY")])
    with pytest.raises(ValueError, match="category is empty"):
        pii_tags({"email": ""})
    with pytest.raises(ValueError, match="needs an owner"):
        ownership("")
    with pytest.raises(ValueError, match="no known facet key for str"):
        facet_map("schema")  # type: ignore[arg-type]


def test_validator_catches_a_quality_facet_under_the_wrong_key(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    """The schema check on these facets is only worth something if it can fail."""
    item = quality_input(dataset("file", RAW_EVENTS), REPORT, FRAME)
    assert item.inputFacets is not None
    item.inputFacets["quality"] = item.inputFacets.pop("dataQualityMetrics")
    emitter.emit("COMPLETE", "pipeline.validate", RUN_ID, inputs=[item])

    with pytest.raises(ValidationError, match="must be named one of"):
        validate_event(memory.events[0])
