"""A copy of the repository's DVC pipeline in a temporary git repository, with DVC isolated.

The copy holds what a clone has that the pipeline needs (code, suites, dvc.yaml, dvc.lock,
params.yaml, .dvc/config, the GDPR erasure list) and no data, cache or remote data. DVC's
global, system and site directories point inside the test's tmp_path so a developer's DVC
config never leaks in.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import yaml

from amas.pipeline.workspace import copy_pipeline

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked(root: Path = REPO) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))["stages"]


def locked_outs(root: Path = REPO) -> dict[str, str]:
    """Every stage output's path -> md5 in ``root``'s dvc.lock."""
    return {out["path"]: out["md5"] for entry in locked(root).values() for out in entry["outs"]}


def set_params(root: Path, section: str, **values: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def isolated_dvc_env(tmp_path: Path) -> dict[str, str]:
    isolated = tmp_path / "dvc-home"
    return {
        "DVC_GLOBAL_CONFIG_DIR": str(isolated / "global"),
        "DVC_SYSTEM_CONFIG_DIR": str(isolated / "system"),
        "DVC_SITE_CACHE_DIR": str(isolated / "site-cache"),
    }


def subprocess_env(tmp_path: Path, work: Path, home: Path) -> dict[str, str]:
    """For ``dvc`` and ``amas`` run as commands: the venv's python, importing this copy's ``amas``."""
    return {
        **os.environ,
        **isolated_dvc_env(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(work),
        "AMAS_HOME": str(home),
    }


@pytest.fixture
def pipeline_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pipeline copy for in-process DVC calls (the flow), with DVC's config isolated."""
    for name, value in isolated_dvc_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return copy_pipeline(tmp_path / "repo")
