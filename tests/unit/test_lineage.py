"""The lineage emitter, judged by the events it actually sends and by the OpenLineage schemas."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError
from openlineage.client.transport.transport import Transport

from amas.config import load_settings
from amas.errors import ConfigError
from amas.lineage import PRODUCER, LineageEmitter, OutputDataset, ParentRun, dataset
from tests.lineage_schema import InMemoryTransport, to_wire, validate_event

pytestmark = pytest.mark.unit

FLOW_RUN_ID = "0191e6a4-7c1d-7a3e-9f55-3c2b1d0e4f10"
RAW = dataset("file", "data/raw/events.csv", schema=[("id", "INTEGER"), ("email", "VARCHAR")], version="md5:1f2e")
CLEAN = dataset("file", "data/processed/events.parquet", schema=[("id", "INTEGER")], version="md5:9a8b")


class BrokenTransport(Transport):
    """A receiver that is always down."""

    kind = "broken"

    def emit(self, event: Any) -> None:
        raise ConnectionError("receiver unreachable")


@pytest.fixture
def memory() -> InMemoryTransport:
    return InMemoryTransport()


@pytest.fixture
def emitter(memory: InMemoryTransport) -> LineageEmitter:
    return LineageEmitter(memory, namespace="amas-test")


def sent(memory: InMemoryTransport) -> list[dict[str, Any]]:
    """What a receiver would get, each event checked against the spec on the way."""
    events = memory.as_dicts()
    for event in events:
        validate_event(event)
    return events


def facet_names(items: list[dict[str, Any]]) -> dict[str, set[str]]:
    return {item["name"]: set(item["facets"]) for item in items}


def test_run_emits_start_then_complete_with_datasets_and_facets(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with emitter.run("pipeline.clean", inputs=[RAW]) as run:
        run.add_output(CLEAN)

    start, complete = sent(memory)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"] == run.run_id
    uuid.UUID(run.run_id)
    assert complete["job"] == {"namespace": "amas-test", "name": "pipeline.clean", "facets": {}}
    assert start["producer"] == complete["producer"] == PRODUCER
    assert [i["name"] for i in complete["inputs"]] == ["data/raw/events.csv"]
    assert start["outputs"] == []
    assert [o["name"] for o in complete["outputs"]] == ["data/processed/events.parquet"]
    assert facet_names(complete["inputs"]) == {"data/raw/events.csv": {"schema", "version"}}
    raw_facets = complete["inputs"][0]["facets"]
    assert raw_facets["schema"]["fields"] == [
        {"name": "id", "type": "INTEGER", "fields": []},
        {"name": "email", "type": "VARCHAR", "fields": []},
    ]
    assert raw_facets["version"]["datasetVersion"] == "md5:1f2e"
    assert complete["outputs"][0]["facets"]["version"]["datasetVersion"] == "md5:9a8b"
    assert emitter.emitted == 2
    assert emitter.failed == 0


def test_declared_outputs_are_sent_as_outputs_and_a_repeated_output_replaces_the_first(
    memory: InMemoryTransport, emitter: LineageEmitter
) -> None:
    with emitter.run("report.build", outputs=[dataset("file", "reports/r.html")]) as run:
        run.add_output(dataset("file", "reports/r.html", version="v2"))

    start, complete = sent(memory)
    assert [o["name"] for o in start["outputs"]] == ["reports/r.html"]
    assert "outputFacets" in start["outputs"][0]
    assert [o["facets"].get("version", {}).get("datasetVersion") for o in complete["outputs"]] == ["v2"]
    assert isinstance(memory.events[1].outputs[0], OutputDataset)


def test_exception_sends_fail_with_error_message_and_is_reraised(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with pytest.raises(ValueError, match="column email is missing"):
        with emitter.run("pipeline.clean", inputs=[RAW]):
            raise ValueError("column email is missing")

    start, fail = sent(memory)
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    assert fail["run"]["runId"] == start["run"]["runId"]
    error = fail["run"]["facets"]["errorMessage"]
    assert error["message"] == "ValueError: column email is missing"
    assert error["programmingLanguage"] == "PYTHON"
    assert "errorMessage" not in start["run"]["facets"]


def test_interruption_sends_abort_and_is_reraised(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with pytest.raises(KeyboardInterrupt):
        with emitter.run("backup.nightly"):
            raise KeyboardInterrupt

    assert [e["eventType"] for e in sent(memory)] == ["START", "ABORT"]


def test_error_message_does_not_carry_url_passwords(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with pytest.raises(RuntimeError):
        with emitter.run("backup.nightly"):
            raise RuntimeError("cannot reach postgresql://amas:hunter2@db:5432/amas")

    message = sent(memory)[1]["run"]["facets"]["errorMessage"]["message"]
    assert "hunter2" not in message
    assert "postgresql://amas:***@db:5432/amas" in message


def test_parent_becomes_a_parent_run_facet(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with emitter.run("agents.data_analysis.profile", parent=ParentRun(FLOW_RUN_ID, "agents.data_analysis")):
        pass

    for event in sent(memory):
        assert event["run"]["facets"]["parent"]["run"]["runId"] == FLOW_RUN_ID
        assert event["run"]["facets"]["parent"]["job"] == {
            "namespace": "amas-test",
            "name": "agents.data_analysis",
            "facets": {},
        }


def test_run_id_can_be_given_to_join_a_prefect_run(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    with emitter.run("pipeline.clean", run_id=uuid.UUID(FLOW_RUN_ID)):
        pass

    assert {e["run"]["runId"] for e in sent(memory)} == {FLOW_RUN_ID}


def test_emit_sends_one_event_of_the_given_type(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    assert emitter.emit("OTHER", "dvc.stage.prepare", FLOW_RUN_ID, inputs=[RAW], outputs=[CLEAN]) is True

    (event,) = sent(memory)
    assert event["eventType"] == "OTHER"
    assert [i["name"] for i in event["inputs"]] == ["data/raw/events.csv"]
    assert [o["name"] for o in event["outputs"]] == ["data/processed/events.parquet"]


def test_an_event_that_cannot_be_built_is_counted_not_raised(
    memory: InMemoryTransport, emitter: LineageEmitter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="amas.lineage.emitter"):
        assert emitter.emit("START", "pipeline.clean", "not-a-uuid") is False

    assert memory.events == []
    assert (emitter.emitted, emitter.failed) == (0, 1)
    assert len(caplog.records) == 1


def test_disabled_emits_nothing(isolated_settings: Path) -> None:
    settings = load_settings(lineage={"transport": "disabled"})
    emitter = LineageEmitter.from_settings(settings)

    with emitter.run("pipeline.clean", inputs=[RAW]) as run:
        run.add_output(CLEAN)

    assert emitter.enabled is False
    assert emitter.emit("START", "pipeline.clean", FLOW_RUN_ID) is False
    assert (emitter.emitted, emitter.failed) == (0, 0)
    assert not settings.lineage_file.exists()


def test_openlineage_disabled_environment_variable_is_honoured(
    memory: InMemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    emitter = LineageEmitter(memory)

    with emitter.run("pipeline.clean"):
        pass

    assert memory.events == []
    assert (emitter.enabled, emitter.emitted, emitter.failed) == (False, 0, 0)


def test_a_failing_transport_is_counted_and_the_caller_continues(caplog: pytest.LogCaptureFixture) -> None:
    emitter = LineageEmitter(BrokenTransport())
    work_done = []

    with caplog.at_level(logging.WARNING, logger="amas.lineage.emitter"):
        with emitter.run("backup.nightly", inputs=[RAW]) as run:
            work_done.append(run.run_id)
        returned = emitter.emit("OTHER", "backup.nightly", run.run_id)

    assert work_done == [run.run_id]
    assert returned is False
    assert (emitter.emitted, emitter.failed) == (0, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "START event for job backup.nightly" in warnings[0].getMessage()
    assert "ConnectionError: receiver unreachable" in warnings[0].getMessage()


def test_a_failing_transport_does_not_hide_the_callers_exception() -> None:
    emitter = LineageEmitter(BrokenTransport())

    with pytest.raises(ZeroDivisionError):
        with emitter.run("backup.nightly"):
            _ = 1 / 0

    assert emitter.failed == 2


def test_file_transport_appends_every_event_to_one_jsonl_file(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "lineage" / "events.jsonl"
    settings = load_settings(lineage={"transport": "file", "file": target})
    emitter = LineageEmitter.from_settings(settings)

    with emitter.run("pipeline.clean", inputs=[RAW]) as run:
        run.add_output(CLEAN)

    assert [p.name for p in target.parent.iterdir()] == ["events.jsonl"]
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    events = [json.loads(line) for line in lines]
    for event in events:
        validate_event(event)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert (emitter.emitted, emitter.failed) == (2, 0)


def test_file_transport_defaults_to_the_home_lineage_file(isolated_settings: Path) -> None:
    settings = load_settings(lineage={"transport": "file"})
    emitter = LineageEmitter.from_settings(settings)

    assert emitter.emit("START", "pipeline.clean", FLOW_RUN_ID) is True
    assert emitter.emit("COMPLETE", "pipeline.clean", FLOW_RUN_ID) is True

    assert settings.lineage_file == isolated_settings / "lineage" / "events.jsonl"
    assert len(settings.lineage_file.read_text(encoding="utf-8").splitlines()) == 2


def test_an_unwritable_lineage_file_is_counted_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x", encoding="utf-8")
    emitter = LineageEmitter.from_settings(load_settings(lineage={"transport": "file", "file": blocker / "events.jsonl"}))

    with caplog.at_level(logging.WARNING, logger="amas.lineage.emitter"):
        assert emitter.emit("START", "pipeline.clean", FLOW_RUN_ID) is False

    assert emitter.failed == 1


def test_http_transport_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="AMAS_LINEAGE_URL"):
        LineageEmitter.from_settings(load_settings(lineage={"transport": "http"}))


def test_console_transport_is_built_from_settings(caplog: pytest.LogCaptureFixture) -> None:
    emitter = LineageEmitter.from_settings(load_settings(lineage={"transport": "console"}))

    with caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"):
        assert emitter.emit("START", "pipeline.clean", FLOW_RUN_ID) is True

    (record,) = [r for r in caplog.records if r.name == "openlineage.client.transport.console"]
    validate_event(json.loads(record.getMessage()))


def test_validator_rejects_events_that_break_the_spec(memory: InMemoryTransport, emitter: LineageEmitter) -> None:
    """The schema check is only worth something if it can fail."""
    emitter.emit("START", "pipeline.clean", FLOW_RUN_ID, inputs=[RAW])
    good = to_wire(memory.events[0])
    validate_event(good)

    bad_run_id = json.loads(json.dumps(good))
    bad_run_id["run"]["runId"] = "run-1"
    bad_time = {**good, "eventTime": "yesterday"}
    bad_facet = json.loads(json.dumps(good))
    del bad_facet["inputs"][0]["facets"]["version"]["datasetVersion"]
    misnamed_facet = json.loads(json.dumps(good))
    misnamed_facet["inputs"][0]["facets"]["dvc"] = misnamed_facet["inputs"][0]["facets"].pop("version")

    for broken in (bad_run_id, bad_time, bad_facet, misnamed_facet):
        with pytest.raises(ValidationError):
            validate_event(broken)
