"""data-pipeline: the DVC pipeline as a Prefect flow, with validation, lineage and a push.

Each stage whose inputs, code or params changed (``dvc status``) runs as one task calling the
same engine function as ``dvc repro``, then is committed to ``dvc.lock``; unchanged stages
are skipped. A failed validation fails the run at that stage, publishes the failed
expectations with samples as a markdown artifact and stores the report; later stages do not
run, so their outputs stay as they were. A successful run pushes the data to the remote on
the configured object storage and publishes a table of dataset versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import BaseModel, Field, field_validator

from amas.config import get_settings
from amas.errors import AmasError
from amas.lineage import LineageEmitter
from amas.pipeline import dvc
from amas.pipeline.runner import check_params, project_root, run_stage
from amas.pipeline.stages import stages_until
from amas.quality import QualityReport, ValidationFailed
from amas.storage import open_storage
from flows._lineage import flow_lineage
from flows._lineage import parent as lineage_parent

STOPPED = "ValidationFailed"
"""State name of a stage task and a flow run stopped by failed expectations: a data problem,
reported without a traceback (the report is in storage and in the ``quality-<stage>`` artifact)."""


class PipelineStopped(AmasError):
    pass


StageName = Literal["generate", "validate", "classify", "clean", "features"]


class PipelineInput(BaseModel):
    force: bool = Field(False, description="Run every stage, even those whose inputs did not change.")
    push: bool = Field(True, description="Push the data to the DVC remote on the object storage afterwards.")
    until: StageName | None = Field(None, description="Stop after this stage (empty: run the whole pipeline).")
    workspace: str | None = Field(None, description="Directory holding dvc.yaml; empty means the project.")

    @field_validator("workspace")
    @classmethod
    def _has_pipeline(cls, value: str | None) -> str | None:
        if value and not (Path(value) / "dvc.yaml").is_file():
            raise ValueError(f"workspace: no dvc.yaml in {value}")
        return value or None


def quality_markdown(stage: str, reports: list[QualityReport]) -> str:
    failed = [r for r in reports if not r.success]
    head = (f"# Data quality: stage `{stage}` FAILED\n\n{len(failed)} of {len(reports)} datasets failed their "
            f"suites; the pipeline stopped here and later stages kept their previous outputs.\n"
            if failed else f"# Data quality: stage `{stage}` passed\n")
    return head + "\n" + "\n\n".join(r.to_markdown() for r in failed + [r for r in reports if r.success])


def _store_reports(stage: str, reports: list[QualityReport]) -> str:
    """Keep the full reports (redacted samples) in object storage; return the key."""
    key = f"quality/{flow_run.id or 'adhoc'}/{stage}.json"
    document = json.dumps([r.model_dump(mode="json") for r in reports], indent=2).encode("utf-8")
    open_storage(get_settings()).put(key, document)
    return key


@task(name="pipeline-stage", task_run_name="{name}", persist_result=False)
def stage_task(name: str, workspace: str) -> dict[str, Any] | State:
    """Run one stage (lineage included) and record it in dvc.lock."""
    root = Path(workspace)
    emitter = LineageEmitter.from_settings(get_settings())
    parent = lineage_parent()
    try:
        outcome = run_stage(name, root, emitter=emitter, parent=parent)
    except ValidationFailed as failed:
        key = _store_reports(name, failed.reports)
        create_markdown_artifact(key=f"quality-{name}", markdown=quality_markdown(name, failed.reports),
                                 description=f"data quality at stage {name}: FAILED ({key})")
        get_run_logger().error("stage %s: %s", name, "; ".join(r.summary_line() for r in failed.reports
                                                                 if not r.success))
        return Failed(name=STOPPED, message=f"stage {name}: {failed} (full report: {key})")
    finally:
        emitter.close()
    dvc.commit_stage(root, name)
    if outcome.reports:
        create_markdown_artifact(key=f"quality-{name}", markdown=quality_markdown(name, outcome.reports),
                                 description=f"data quality at stage {name}: passed")
    return {"stage": name, "summary": outcome.summary,
            "outputs": [{"path": o.path, "md5": o.md5, "rows": o.rows} for o in outcome.outputs]}


@flow(name="data-pipeline", description="Run the DVC pipeline stages whose inputs changed, validate, push and "
                                         "publish dataset versions.")
def data_pipeline(params: PipelineInput = PipelineInput()) -> dict[str, Any] | State:  # noqa: B008 - a frozen default
    log = get_run_logger()
    settings = get_settings()
    root = Path(params.workspace).resolve() if params.workspace else project_root()
    names = stages_until(params.until)
    check_params(root)
    ran: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        # The flow's own events carry no datasets: each stage run names what it read and wrote,
        # with this run as its parent, so lineage walks go stage by stage.
        with dvc.pipeline_lock(root), flow_lineage():
            for name in names:
                reasons = ["forced"] if params.force else dvc.stage_changes(root, name)
                if not reasons:
                    skipped.append(name)
                    log.info("stage %s is up to date", name)
                    continue
                log.info("stage %s runs: %s", name, "; ".join(reasons[:5]))
                state = stage_task(name, str(root), return_state=True)
                if state.name == STOPPED:
                    raise PipelineStopped(state.message)  # inside the lineage run: the flow's FAIL event
                ran.append(state.result())  # re-raises any other failure with its traceback
            pushed = dvc.push(root, dvc.configure_remote(root, settings)) if params.push else None
            versions = dataset_versions(root, {o["path"] for r in ran for o in r["outputs"]})
    except PipelineStopped as stopped:
        return Failed(name=STOPPED, message=f"{stopped}; later stages kept their outputs")
    create_table_artifact(key="dataset-versions", table=versions,
                          description=f"data-pipeline: ran {', '.join(r['stage'] for r in ran) or 'nothing'}; "
                                      f"up to date: {', '.join(skipped) or 'none'}")
    return {"ran": ran, "skipped": skipped, "pushed": pushed, "versions": versions}


def dataset_versions(root: Path, changed: set[str]) -> list[dict[str, Any]]:
    rows = []
    for out in dvc.locked_outputs(root):
        rows.append({"dataset": out["path"], "stage": out["stage"], "md5": out["md5"], "bytes": out["size"],
                     "changed in this run": out["path"] in changed})
    return rows

