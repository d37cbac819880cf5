"""Run a pipeline stage with its lineage: START, then COMPLETE with what it wrote, or FAIL.

``run_stage`` is what both ``dvc repro`` (through ``python -m amas.pipeline stage NAME``) and
the ``data-pipeline`` flow's task call. Inputs are described before the stage starts (path,
DVC md5, schema); the stage adds what it learns about them (quality assertions, PII tags) and
about its outputs (schema, version, column lineage, PII tags, ownership).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from openlineage.client.facet_v2 import job_type_job

from amas.errors import ConfigError
from amas.lineage import PRODUCER
from amas.pipeline.files import arrow_schema, md5_file
from amas.pipeline.stages import STAGES, StageContext, StageOutcome

if TYPE_CHECKING:
    from amas.lineage import Dataset, LineageEmitter, ParentRun

PARAMS_FILE = "params.yaml"
STAGE_JOB = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DVC", jobType="STAGE", producer=PRODUCER)


def project_root() -> Path:
    """The workspace with ``dvc.yaml``: ``AMAS_PIPELINE_ROOT``, else the nearest one above the
    working directory, else the checkout this package is in."""
    configured = os.environ.get("AMAS_PIPELINE_ROOT")
    if configured:
        root = Path(configured).resolve()
        if not (root / "dvc.yaml").is_file():
            raise ConfigError(f"AMAS_PIPELINE_ROOT={configured}: no dvc.yaml there")
        return root
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() and (candidate / ".dvc").is_dir():
            return candidate
    return Path(__file__).resolve().parents[2]


def describe_file(root: Path, relative: str) -> Dataset:
    """A dataset for lineage: repo-relative name, DVC md5 as its version, schema if Parquet."""
    from amas.lineage.facets import file_dataset, schema_from_arrow

    path = root / relative
    schema = schema_from_arrow(arrow_schema(path)) if path.suffix == ".parquet" else None
    return file_dataset(root, path, version=md5_file(path), schema=schema)


def load_stage_params(root: Path, name: str):  # noqa: ANN201 - the stage's own params model
    stage = STAGES.get(name)
    if stage is None:
        raise ConfigError(f"stage {name!r} is not a pipeline stage; stages: {', '.join(STAGES)}")
    return stage.load_params(root / PARAMS_FILE)


def run_stage(name: str, root: Path, *, emitter: LineageEmitter | None = None,
              parent: ParentRun | None = None) -> StageOutcome:
    """Run one stage in ``root``; raises what the stage raises (``ValidationFailed`` included)."""
    from amas.lineage.facets import file_dataset

    params = load_stage_params(root, name)
    stage = STAGES[name]
    missing = [dep for dep in stage.deps if not (root / dep).exists()]
    if missing:
        raise ConfigError(f"stage {name}: input {missing[0]} does not exist; run the stages before it "
                          f"(`dvc repro {name}` or `amas pipeline run`)")
    inputs = [describe_file(root, dep) for dep in stage.deps]
    lineage = (emitter.run(f"pipeline.{name}", inputs=inputs, parent=parent, job_facets={"jobType": STAGE_JOB})
               if emitter is not None else nullcontext(None))
    with lineage as run:
        outcome = stage.run(StageContext(root=root, params=params, lineage=run))
        if run is not None:
            for item in outcome.outputs:
                run.add_output(file_dataset(root, root / item.path, version=item.md5, schema=item.schema,
                                            facets=item.facets))
    return outcome


def check_params(root: Path) -> None:
    """Load every stage's params section; the first bad one raises ``ConfigError`` naming it.

    Called before the first stage runs, so a typo in a late section does not surface only
    after the expensive early stages have rewritten their outputs.
    """
    for name in STAGES:
        load_stage_params(root, name)
