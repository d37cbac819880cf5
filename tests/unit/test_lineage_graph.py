"""`amas lineage show`: upstream and downstream answered from events the real emitter wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amas.cli.main import app
from amas.config import load_settings
from amas.lineage import LineageEmitter, dataset
from amas.lineage.graph import DatasetRef, LineageGraph, UnknownDataset, load_runs, read_events, render_dot

pytestmark = pytest.mark.unit

RAW = dataset("file", "data/raw/people.csv", version="md5-raw")
CLEAN = dataset("file", "data/clean/people.parquet", version="md5-clean")
FEATURES = dataset("file", "data/features/by_country.parquet", version="md5-feat")
PII = dataset("file", "data/pii/columns.json")
REJECTED = dataset("file", "data/never/written.csv")
OTHER_RAW = dataset("s3://bucket", "data/raw/people.csv")


@pytest.fixture
def events_file() -> Path:
    """A small pipeline recorded through the real emitter and file transport."""
    settings = load_settings()
    emitter = LineageEmitter.from_settings(settings)
    with emitter.run("pipeline.clean", inputs=[RAW]) as run:
        run.add_output(CLEAN)
    with emitter.run("pipeline.features", inputs=[CLEAN]) as run:
        run.add_output(FEATURES)
    with emitter.run("agent.pii_classifier", inputs=[CLEAN]) as run:
        run.add_output(PII)
    with pytest.raises(RuntimeError), emitter.run("pipeline.broken", inputs=[FEATURES]) as run:
        run.add_output(REJECTED)
        raise RuntimeError("validation failed")
    with emitter.run("import.elsewhere", inputs=[]) as run:
        run.add_output(OTHER_RAW)
    emitter.close()
    assert emitter.failed == 0
    return settings.lineage_file


def graph_of(path: Path) -> LineageGraph:
    return LineageGraph.from_log(load_runs(read_events(path)))


def names(found: list) -> list[tuple[int, str, str]]:
    return [(d, e.source.name, e.target.name) for d, e in found]


def test_downstream_finds_every_derived_dataset_but_not_what_a_failed_run_wrote(events_file: Path) -> None:
    graph = graph_of(events_file)
    found = graph.walk(DatasetRef("file", "data/raw/people.csv"), "downstream")
    assert sorted(names(found)) == [
        (1, "data/raw/people.csv", "data/clean/people.parquet"),
        (2, "data/clean/people.parquet", "data/features/by_country.parquet"),
        (2, "data/clean/people.parquet", "data/pii/columns.json"),
    ]
    assert {e.target_version for _, e in found} == {"md5-clean", "md5-feat", None}


def test_upstream_walks_back_to_the_source_with_the_jobs_that_made_each_step(events_file: Path) -> None:
    found = graph_of(events_file).walk(DatasetRef("file", "data/features/by_country.parquet"), "upstream")
    assert names(found) == [(1, "data/clean/people.parquet", "data/features/by_country.parquet"),
                            (2, "data/raw/people.csv", "data/clean/people.parquet")]
    assert [e.job for _, e in found] == ["amas:pipeline.features", "amas:pipeline.clean"]


def test_depth_limits_the_walk(events_file: Path) -> None:
    found = graph_of(events_file).walk(DatasetRef("file", "data/raw/people.csv"), "downstream", depth=1)
    assert names(found) == [(1, "data/raw/people.csv", "data/clean/people.parquet")]


def test_names_resolve_when_unique_and_ambiguity_is_explained(events_file: Path) -> None:
    graph = graph_of(events_file)
    assert graph.resolve("data/clean/people.parquet") == DatasetRef("file", "data/clean/people.parquet")
    assert graph.resolve("s3://bucket:data/raw/people.csv") == DatasetRef("s3://bucket", "data/raw/people.csv")
    with pytest.raises(UnknownDataset, match="in several namespaces; give one of: file:data/raw/people.csv, "
                                             "s3://bucket:data/raw/people.csv"):
        graph.resolve("data/raw/people.csv")
    with pytest.raises(UnknownDataset, match="no recorded lineage mentions dataset 'data/nope.csv'"):
        graph.resolve("data/nope.csv")


def test_a_torn_line_is_skipped_and_counted(events_file: Path) -> None:
    with events_file.open("a") as handle:
        handle.write('{"eventType": "COMPLETE", "run": {"runId": \n')
    log = load_runs(read_events(events_file))
    assert log.skipped_lines == 1
    assert len(log.runs) == 4  # the failed run is not there


def test_dot_output_is_a_graph_of_quoted_nodes(events_file: Path) -> None:
    start = DatasetRef("file", "data/raw/people.csv")
    dot = render_dot(start, "downstream", graph_of(events_file).walk(start, "downstream"))
    assert dot.startswith("digraph lineage {") and dot.endswith("}")
    assert '"file:data/raw/people.csv" [shape=box, style=bold];' in dot
    assert '"file:data/clean/people.parquet" -> "file:data/pii/columns.json" [label="amas:agent.pii_classifier"];' in dot


def test_the_cli_prints_both_directions_and_json(events_file: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["lineage", "show", "file:data/clean/people.parquet"])
    assert text.exit_code == 0, text.output
    assert "file:data/clean/people.parquet — upstream:" in text.output
    assert "<- file:data/raw/people.csv  via amas:pipeline.clean run" in text.output
    assert "-> file:data/features/by_country.parquet (version md5-feat)  via amas:pipeline.features" in text.output

    as_json = runner.invoke(app, ["lineage", "show", "data/features/by_country.parquet", "--upstream",
                                  "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.output)
    assert answer["direction"] == "upstream"
    assert [e["source"] for e in answer["edges"]] == ["file:data/clean/people.parquet", "file:data/raw/people.csv"]


def test_the_cli_refuses_other_transports_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from amas.config import get_settings
    from amas.errors import AmasError

    monkeypatch.setenv("AMAS_LINEAGE_TRANSPORT", "disabled")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["lineage", "show", "anything"])
    assert isinstance(result.exception, AmasError)
    assert str(result.exception).startswith("AMAS_LINEAGE_TRANSPORT is disabled: `amas lineage show` reads")
