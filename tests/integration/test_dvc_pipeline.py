"""The committed DVC pipeline, run by real ``dvc`` and ``git`` in a copy of the repository.

``dvc repro`` must produce exactly the bytes ``dvc.lock`` records for every stage, emit
schema-valid lineage for every stage, and ``dvc push`` / ``dvc pull`` through the local remote
(and S3 on moto's server) must bring the same bytes back into a fresh clone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lineage_schema import validate_event
from tests.plugins.pipeline import REPO, VENV_BIN, copy_pipeline, locked, md5, set_params, subprocess_env

pytestmark = pytest.mark.integration


def run_dvc(work: Path, env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    if ok:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_lock_is_current_for_the_committed_code_and_params() -> None:
    # A stale lock would make the reproduction below compare against old bytes, and `dvc status`
    # on a fresh clone would call every stage changed.
    for stage, entry in locked().items():
        for dep in entry["deps"]:
            path = REPO / dep["path"]
            if not dep["path"].startswith("data/"):
                assert md5(path) == dep["md5"], f"dvc.lock is stale for {dep['path']} ({stage}): run `dvc repro`"
        params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        for section, values in entry.get("params", {}).get("params.yaml", {}).items():
            assert params[section] == values, f"dvc.lock has other {section} params: run `dvc repro`"


def test_repro_matches_the_lock_emits_lineage_and_round_trips(tmp_path: Path) -> None:
    work = copy_pipeline(tmp_path / "repo")
    home = tmp_path / "amas-home"
    env = subprocess_env(tmp_path, work, home)
    lock_before = (work / "dvc.lock").read_text(encoding="utf-8")
    assert run_dvc(work, env, "remote", "default").stdout.strip() == "local"

    run_dvc(work, env, "repro")

    outs = {out["path"]: out for entry in locked().values() for out in entry["outs"]}
    assert len(outs) == 11
    for path, out in outs.items():
        assert md5(work / path) == out["md5"], f"{path} differs from dvc.lock"
    assert (work / "dvc.lock").read_text(encoding="utf-8") == lock_before

    # Every stage ran once, START then COMPLETE, and every event is valid OpenLineage.
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    for event in events:
        validate_event(event)
    runs = [(e["job"]["name"], e["eventType"]) for e in events]
    assert runs == [(f"pipeline.{stage}", kind) for stage in locked() for kind in ("START", "COMPLETE")]
    clean = next(e for e in events if e["job"]["name"] == "pipeline.clean" and e["eventType"] == "COMPLETE")
    events_clean = next(o for o in clean["outputs"] if o["name"] == "data/clean/events_clean.parquet")
    assert events_clean["facets"]["version"]["datasetVersion"] == outs["data/clean/events_clean.parquet"]["md5"]
    sources = events_clean["facets"]["columnLineage"]["fields"]["ip_network"]["inputFields"]
    assert [(s["name"], s["field"]) for s in sources] == [("data/raw/events.parquet", "ip_address")]

    # Push to the committed local remote, lose the workspace data and cache, pull it back.
    run_dvc(work, env, "push")
    contents = {path: (work / path).read_bytes() for path in outs}
    for path in outs:
        (work / path).unlink()
    shutil.rmtree(work / ".dvc" / "cache")
    run_dvc(work, env, "pull")
    assert {path: (work / path).read_bytes() for path in outs} == contents
    assert "up to date" in run_dvc(work, env, "status").stdout


def test_a_broken_dataset_stops_repro_at_validate_with_a_report(tmp_path: Path) -> None:
    work = copy_pipeline(tmp_path / "repo")
    env = subprocess_env(tmp_path, work, tmp_path / "amas-home")
    set_params(work, "generate", dirty_rows=4)

    result = run_dvc(work, env, "repro", ok=False)

    assert result.returncode != 0
    assert "error: stage validate:" in result.stderr
    assert "Data quality: people: FAIL" in result.stderr
    assert "| expect_column_values_to_match_regex | email |" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (work / "data" / "clean").exists(), "a stage after validate ran"
    assert not (work / "data" / "quality" / "raw.json").exists()
