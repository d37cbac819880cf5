"""A copy of the pipeline as a fresh clone has it: code, suites, dvc.yaml, dvc.lock, params,
the erasure list and the DVC config, in a new git repository, with no data, cache or remote.

The tests and ``scripts/bench_pipeline.py`` run the pipeline in such copies; one list of what
a clone needs keeps them from drifting when a stage gains a dependency.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
                  "erasures/subjects.json")
PIPELINE_TREES = ("amas", "expectations")


def copy_pipeline(work: Path, source: Path = PROJECT_DIR) -> Path:
    """Copy the pipeline from ``source`` into ``work`` (created) and ``git init`` it."""
    for name in PIPELINE_FILES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, work / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in PIPELINE_TREES:
        shutil.copytree(source / tree, work / tree, ignore=ignore)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, timeout=60)
    return work
