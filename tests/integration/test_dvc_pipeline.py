"""The committed DVC pipeline reproduces the locked data and round-trips through a remote.

Real ``dvc`` and ``git`` in a copy of the repository's pipeline files: ``dvc repro`` must
produce exactly the bytes whose md5 ``dvc.lock`` records, and ``dvc push`` / ``dvc pull``
through the configured local remote must bring back the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
OUT = "data/sample/subjects.csv"
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore",
                  ".dvc/config", ".dvc/.gitignore")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _locked_stage() -> dict:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))
    return lock["stages"]["sample"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    for name in PIPELINE_FILES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, work / name)
    shutil.copytree(REPO / "amas", work / "amas",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, timeout=60)
    return work


@pytest.fixture
def env(tmp_path: Path, workspace: Path) -> dict[str, str]:
    assert (VENV_BIN / "dvc").exists(), f"dvc is not installed in {VENV_BIN}"
    isolated = tmp_path / "dvc-home"
    return {
        **os.environ,
        # The stage's `python` must be the venv's, importing this copy's `amas`.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(workspace),
        # Keep the user's and the machine's DVC config and caches out of the test.
        "DVC_GLOBAL_CONFIG_DIR": str(isolated / "global"),
        "DVC_SYSTEM_CONFIG_DIR": str(isolated / "system"),
        "DVC_SITE_CACHE_DIR": str(isolated / "site-cache"),
    }


def _dvc(work: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "dvc"), *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, (
        f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def test_lock_is_current_for_the_stage_code() -> None:
    # A stale lock would make the reproduction test below compare against old bytes.
    locked = {dep["path"]: dep["md5"] for dep in _locked_stage()["deps"]}
    for path, md5 in locked.items():
        assert _md5(REPO / path) == md5, f"dvc.lock is stale for {path}: run `dvc repro`"


def test_repro_matches_lock_and_round_trips_through_remote(
    workspace: Path, env: dict[str, str]
) -> None:
    work = workspace
    locked_out = {out["path"]: out for out in _locked_stage()["outs"]}[OUT]
    lock_before = (work / "dvc.lock").read_text(encoding="utf-8")

    assert _dvc(work, env, "config", "core.analytics").strip() == "false"
    assert _dvc(work, env, "remote", "default").strip() == "local"
    # The committed url is relative to .dvc/, so this copy pushes inside tmp_path.
    remote = work / ".amas" / "dvc-remote"

    # No cache and no remote data exist yet, so repro has to run the stage's command.
    assert not (work / ".dvc" / "cache").exists()
    _dvc(work, env, "repro")
    produced = work / OUT
    assert _md5(produced) == locked_out["md5"]
    assert produced.stat().st_size == locked_out["size"]
    assert (work / "dvc.lock").read_text(encoding="utf-8") == lock_before
    content = produced.read_bytes()

    _dvc(work, env, "push")
    md5 = locked_out["md5"]
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()

    produced.unlink()
    shutil.rmtree(work / ".dvc" / "cache")
    _dvc(work, env, "pull")
    assert produced.read_bytes() == content
    assert "up to date" in _dvc(work, env, "status")
