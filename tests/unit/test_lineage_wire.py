"""AMAS's one-pass event serialiser writes exactly what the OpenLineage client's Serde writes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run, job_type_job
from openlineage.client.serde import Serde

from amas.lineage import PRODUCER, LineageEmitter, ParentRun, as_input, as_output
from amas.lineage.emitter import _file_transport
from amas.lineage.facets import column_lineage, file_dataset, ownership, pii_tags, schema_from_arrow
from amas.lineage.wire import plain, to_json
from tests.lineage_schema import validate_event

pytestmark = pytest.mark.unit


def rich_event() -> RunEvent:
    root = Path("/srv/amas")
    schema = pa.schema([("email", pa.string()), ("seen_at", pa.timestamp("s", tz="UTC")), ("n", pa.int64())])
    source = file_dataset(root, root / "data/raw/people.parquet", version="0" * 32, schema=schema_from_arrow(schema),
                          facets={"ownership": ownership("data-platform"), "tags": pii_tags({"email": "email"})})
    lineage = column_lineage({"email": [("file", "data/raw/people.parquet", "email")],
                              "n": [("", "data/raw/people.parquet", "seen_at")]},
                             namespace="file", transformations={"email": ("DIRECT", "MASKED"),
                                                                "n": ("DIRECT", "AGGREGATION")})
    target = file_dataset(root, root / "data/clean/people.parquet", version="1" * 32, facets={"columnLineage": lineage,
                                                                                            "tags": pii_tags({})})
    return RunEvent(
        eventType=RunState.FAIL, eventTime="2026-11-26T05:00:00+00:00",
        run=Run(runId=str(uuid.uuid4()), facets={
            "errorMessage": error_message_run.ErrorMessageRunFacet(message="ValueError: ünïcode", producer=PRODUCER,
                                                                   programmingLanguage="PYTHON")}),
        job=Job(namespace="amas", name="pipeline.clean", facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DVC", jobType="STAGE",
                                                    producer=PRODUCER)}),
        inputs=[as_input(source)], outputs=[as_output(target)], producer=PRODUCER)


def test_the_bytes_equal_the_clients() -> None:
    event = rich_event()
    assert to_json(event) == Serde.to_json(event)
    assert plain(event) == Serde.to_dict(event)


def test_nested_empties_and_enums_follow_the_clients_rules() -> None:
    data = {"a": None, "b": [None, {}, {"c": None}, RunState.START], "d": {}, "e": (1, 2)}
    assert plain(data) == Serde.remove_nulls_and_enums(data) | {"e": [1, 2]}


def test_the_file_transport_appends_schema_valid_lines(tmp_path: Path) -> None:
    path = tmp_path / "lineage" / "events.jsonl"
    emitter = LineageEmitter(_file_transport(path))
    with emitter.run("pipeline.clean", inputs=[rich_event().inputs[0]], parent=ParentRun(uuid.uuid4(), "flow")) as run:
        run.add_output(rich_event().outputs[0])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["eventType"] for line in lines] == ["START", "COMPLETE"]
    for line in lines:
        validate_event(json.loads(line))
    assert emitter.emitted == 2 and emitter.failed == 0
