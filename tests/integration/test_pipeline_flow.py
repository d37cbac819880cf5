"""The data-pipeline flow on a real Prefect server, real DVC and git, local and S3 remotes.

Asserts on what a user would check: which stages ran, the bytes against dvc.lock, the data in
the remote, the Prefect artifacts, the lineage events (schema-valid, parented to the flow run),
and that a broken dataset stops the run at validation with nothing downstream rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amas.config import get_settings
from amas.lineage.graph import LineageGraph, load_runs, read_events
from amas.pipeline.stages import STAGES
from tests.lineage_schema import validate_event
from tests.plugins.pipeline import copy_pipeline, locked_outs, md5, set_params, subprocess_env
from tests.plugins.s3 import S3Bucket, s3_client

pytestmark = pytest.mark.integration


def read_artifacts(key: str, flow_run_id: object | None = None) -> list:
    """Artifacts under ``key``, newest first; only one flow run's when given (the server is shared)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC)
    return [a for a in found if flow_run_id is None or a.flow_run_id == flow_run_id]


def lineage_events() -> list[dict]:
    path = get_settings().lineage_file
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def outputs_of(root: Path, *stages: str) -> dict[str, str]:
    return {path: md5(root / path) for stage in stages for path in STAGES[stage].outs}


def test_flow_runs_what_changed_pushes_and_records_lineage(prefect_api: str, pipeline_workspace: Path) -> None:
    from flows.pipeline_flow import PipelineInput, data_pipeline

    work = pipeline_workspace
    first = data_pipeline(params=PipelineInput(workspace=str(work)))

    assert [r["stage"] for r in first["ran"]] == list(STAGES) and first["skipped"] == []
    # The flow writes what `dvc repro` wrote when the lock was committed, byte for byte.
    assert {p: md5(work / p) for p in locked_outs()} == locked_outs()
    assert locked_outs(work) == locked_outs()
    remote = get_settings().core.home / "storage" / "dvc" / "files" / "md5"
    for path, digest in locked_outs().items():
        assert (remote / digest[:2] / digest[2:]).is_file(), f"{path} was not pushed"
    assert first["pushed"] == len(locked_outs())
    versions = {row["dataset"]: row for row in first["versions"]}
    assert versions["data/clean/events_clean.parquet"]["md5"] == locked_outs()["data/clean/events_clean.parquet"]
    table = read_artifacts("dataset-versions")
    assert table and "data/features/subject_activity.parquet" in str(table[0].data)
    quality = read_artifacts("quality-validate")
    assert quality and "passed" in quality[0].data

    second = data_pipeline(params=PipelineInput(workspace=str(work)))
    assert second["ran"] == [] and second["skipped"] == list(STAGES) and second["pushed"] == 0

    set_params(work, "clean", ipv4_prefix=16)
    third = data_pipeline(params=PipelineInput(workspace=str(work)))
    assert [r["stage"] for r in third["ran"]] == ["clean", "features"]
    changed = {row["dataset"] for row in third["versions"] if row["changed in this run"]}
    assert changed == set(STAGES["clean"].outs) | set(STAGES["features"].outs)

    events = lineage_events()
    for event in events:
        validate_event(event)
    flows = [e for e in events if e["job"]["name"] == "data-pipeline"]
    assert [e["eventType"] for e in flows] == ["START", "COMPLETE"] * 3
    stage_events = [e for e in events if e["job"]["name"].startswith("pipeline.")]
    assert len(stage_events) == 2 * (len(STAGES) + 2)
    flow_runs = {e["run"]["runId"] for e in flows}
    assert {e["run"]["facets"]["parent"]["run"]["runId"] for e in stage_events} <= flow_runs
    validate_complete = next(e for e in stage_events if e["job"]["name"] == "pipeline.validate"
                             and e["eventType"] == "COMPLETE")
    people = next(i for i in validate_complete["inputs"] if i["name"] == "data/raw/people.parquet")
    assertions = people["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert assertions and all(a["success"] for a in assertions)
    assert people["facets"]["version"]["datasetVersion"] == locked_outs()["data/raw/people.parquet"]
    clean_done = [e for e in stage_events if e["job"]["name"] == "pipeline.clean" and e["eventType"] == "COMPLETE"]
    people_clean = next(o for o in clean_done[-1]["outputs"] if o["name"] == "data/clean/people_clean.parquet")
    tags = {t["field"]: t["value"] for t in people_clean["facets"]["tags"]["tags"] if t["key"] == "pii"}
    assert tags["email"] == "email" and tags["full_name"] == "person_name"
    assert people_clean["facets"]["ownership"]["owners"][0]["name"].endswith("data-platform")

    # lineage show: what was made from the people table, and where subject_activity came from.
    graph = LineageGraph.from_log(load_runs(read_events(get_settings().lineage_file)))
    downstream = {e.target.name for _, e in graph.walk(graph.resolve("data/raw/people.parquet"), "downstream")}
    assert {"data/clean/people_clean.parquet", "data/clean/events_clean.parquet", "data/pii/columns.json",
            "data/features/subject_activity.parquet", "data/features/daily_events.parquet"} <= downstream
    assert "data/raw/cases.parquet" not in downstream
    upstream = {e.source.name for _, e in graph.walk(graph.resolve("data/features/subject_activity.parquet"),
                                                      "upstream")}
    assert {"data/clean/people_clean.parquet", "data/raw/people.parquet", "data/raw/events.parquet"} <= upstream
    assert "data/raw/notes.parquet" in upstream  # through classify's columns.json, which clean reads

    # The same answer from the command a person types.
    env = {**os.environ, "AMAS_HOME": str(get_settings().core.home)}
    shown = subprocess.run([sys.executable, "-m", "amas.cli.main", "lineage", "show", "data/clean/events_clean.parquet",
                            "--format", "json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    up, down = (json.loads(part) for part in shown.stdout.replace("}\n{", "}\0{").split("\0"))
    assert {e["source"] for e in up["edges"] if e["distance"] == 1} == {
        "file:data/raw/events.parquet", "file:data/raw/people.parquet", "file:data/raw/cases.parquet",
        "file:data/quality/raw.json", "file:data/pii/columns.json"}
    assert {e["target"] for e in down["edges"]} == {"file:data/features/subject_activity.parquet",
                                                    "file:data/features/daily_events.parquet"}
    assert {e["job"] for e in down["edges"]} == {"amas:pipeline.features"}


def test_a_broken_dataset_stops_the_flow_at_validate_and_keeps_downstream(
    prefect_api: str, pipeline_workspace: Path
) -> None:
    from flows.pipeline_flow import PipelineInput, data_pipeline

    work = pipeline_workspace
    data_pipeline(params=PipelineInput(workspace=str(work), push=False))
    downstream_before = outputs_of(work, "validate", "classify", "clean", "features")
    lock_before = (work / "dvc.lock").read_text()

    set_params(work, "generate", dirty_rows=4)
    state = data_pipeline(params=PipelineInput(workspace=str(work)), return_state=True)

    assert state.is_failed() and state.name == "ValidationFailed"
    assert state.message.startswith("stage validate: data quality check failed: people")
    assert outputs_of(work, "validate", "classify", "clean", "features") == downstream_before
    # Only the generate stage was recorded anew; validate and later keep their lock entries.
    assert (work / "dvc.lock").read_text() != lock_before
    assert locked_outs(work)["data/clean/events_clean.parquet"] == downstream_before["data/clean/events_clean.parquet"]

    report = read_artifacts("quality-validate", state.state_details.flow_run_id)[0].data
    assert "FAILED" in report and "expect_column_values_to_be_in_set" in report and "teleport" not in report
    stored = list((get_settings().core.home / "storage" / "quality").glob("*/validate.json"))
    assert len(stored) == 1
    assert any(not r["success"] for r in json.loads(stored[0].read_text()))

    events = lineage_events()
    for event in events:
        validate_event(event)
    failed = [e for e in events if e["eventType"] == "FAIL"]
    assert [e["job"]["name"] for e in failed] == ["pipeline.validate", "data-pipeline"]
    people = next(i for i in failed[0]["inputs"] if i["name"] == "data/raw/people.parquet")
    assert not all(a["success"] for a in people["inputFacets"]["dataQualityAssertions"]["assertions"])


def test_s3_remote_push_and_pull_reproduce_the_data_in_a_fresh_clone(
    prefect_api: str, pipeline_workspace: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from amas.pipeline import dvc
    from flows.pipeline_flow import PipelineInput, data_pipeline

    monkeypatch.setenv("AMAS_STORAGE_URL", f"s3://{s3_bucket.name}/amas")
    monkeypatch.setenv("AMAS_STORAGE_S3_ENDPOINT_URL", s3_bucket.endpoint)
    monkeypatch.setenv("AMAS_STORAGE_S3_ACCESS_KEY_ID", os.environ["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AMAS_STORAGE_S3_SECRET_ACCESS_KEY", os.environ["AWS_SECRET_ACCESS_KEY"])
    get_settings.cache_clear()
    work = pipeline_workspace
    outcome = data_pipeline(params=PipelineInput(workspace=str(work), until="validate"))
    assert outcome["pushed"] == 5

    keys = {o["Key"] for o in s3_client(s3_bucket.endpoint).list_objects_v2(Bucket=s3_bucket.name)["Contents"]}
    expected = {p: d for p, d in locked_outs(work).items() if p in set(STAGES["generate"].outs) | {"data/quality/raw.json"}}
    assert {f"amas/dvc/files/md5/{d[:2]}/{d[2:]}" for d in expected.values()} <= keys
    assert "amas-test-secret-not-real" not in (work / ".dvc" / "config").read_text()

    clone = copy_pipeline(tmp_path / "clone")
    shutil.copy2(work / "dvc.lock", clone / "dvc.lock")
    dvc.pull(clone, dvc.configure_remote(clone, get_settings()), targets=sorted(expected))
    for path in expected:
        assert (clone / path).read_bytes() == (work / path).read_bytes()


def test_cli_dry_run_and_a_bad_param_give_one_clear_line(tmp_path: Path) -> None:
    work = copy_pipeline(tmp_path / "repo")
    env = {**subprocess_env(tmp_path, work, tmp_path / "home"), "AMAS_PIPELINE_ROOT": str(work)}
    amas = [sys.executable, "-m", "amas.cli.main"]
    dry = subprocess.run([*amas, "pipeline", "run", "--dry-run", "--format", "json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert dry.returncode == 0, dry.stderr
    plan = {row["stage"]: row for row in json.loads(dry.stdout)}
    assert list(plan) == list(STAGES) and all(row["runs"] is True for row in plan.values())
    assert "changed outs: data/raw/people.parquet not in cache" in plan["generate"]["why"]
    assert not (work / "data").exists(), "a dry run wrote data"

    set_params(work, "clean", ipv4_prefix=99)
    bad = subprocess.run([*amas, "pipeline", "run"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"amas: {work / 'params.yaml'}: clean.ipv4_prefix: Input should be less than or equal to 30 (got 99)"]
