"""gdpr-erase and gdpr-export: GDPR requests as Prefect flows, thin over ``amas.gdpr``.

gdpr-erase finds everything about a subject (store, storage, DVC datasets and what lineage says
was derived from them), erases it step by step with audit events, rewrites and pushes the
datasets, purges their old versions, and publishes the certificate of erasure as a markdown
artifact. With ``dry_run`` it only publishes the plan. gdpr-export builds the Art. 15/20 ZIP.
Both also search Prefect's own metadata (flow-run parameters, logs, artifacts).

The flows take a request *reference*, never the identifier: Prefect keeps flow-run parameters
for as long as the run exists, so an identifier there would outlive its own erasure. The
identifier is staged in the store first (``amas gdpr stage erase|export SUBJECT``, or the
``erase``/``export`` commands, which stage and run in one go), sealed until the request
completes. Everything the flows log, return or publish names the subject only by its keyed digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator

from amas.gdpr.certificate import render_markdown, render_plan_markdown
from amas.gdpr.erase import erase_subject, outcome_summary
from amas.gdpr.export import export_subject
from amas.pipeline.runner import project_root
from flows._lineage import flow_lineage
from flows._lineage import parent as lineage_parent


def _workspace(datasets: bool, workspace: str | None) -> Path | None:
    """The pipeline workspace to search, or None when datasets are left out."""
    if not datasets:
        return None
    return Path(workspace).resolve() if workspace else project_root()


def _has_pipeline(value: str | None) -> str | None:
    if value and not (Path(value) / "dvc.yaml").is_file():
        raise ValueError(f"workspace: no dvc.yaml in {value}")
    return value or None


class RequestInput(BaseModel):
    # Someone may type the identifier itself into the form: keep input out of errors and run states.
    model_config = ConfigDict(hide_input_in_errors=True)

    datasets: bool = Field(True, description="Include the DVC datasets.")
    workspace: str | None = Field(None, description="Directory holding dvc.yaml; empty means the project.")

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        return _has_pipeline(value)


class ErasureInput(RequestInput):
    request: str = Field(pattern=r"^ER-[0-9]{8}-[0-9a-f]{8}$",
                         description="The erasure request, ER-YYYYMMDD-xxxxxxxx, from `amas gdpr stage erase SUBJECT` "
                                     "(the identifier itself is never a flow parameter).")
    dry_run: bool = Field(True, description="Only show what would be deleted, anonymised or kept, and why.")
    push: bool = Field(True, description="Push the rewritten datasets to the DVC remote.")
    purge: bool = Field(True, description="Delete the old dataset versions that held the subject from the DVC "
                                          "cache and remote.")


class ExportInput(RequestInput):
    request: str = Field(pattern=r"^EX-[0-9]{8}-[0-9a-f]{8}$",
                         description="The access request, EX-YYYYMMDD-xxxxxxxx, from `amas gdpr stage export SUBJECT` "
                                     "(the identifier itself is never a flow parameter).")
    out: str | None = Field(None, description="Also write the ZIP to this path (on the machine running the flow).")


def _actor() -> str:
    return f"prefect:{flow_run.flow_name}:{flow_run.id}" if flow_run.id else "amas"


@flow(name="gdpr-erase", description="Erase a data subject from the store, storage and DVC datasets, with a "
                                     "certificate of erasure; dry_run shows the plan only.")
def gdpr_erase(params: ErasureInput) -> dict[str, Any]:
    log = get_run_logger()
    with flow_lineage():
        outcome = erase_subject(request_ref=params.request, dry_run=params.dry_run, actor=_actor(),
                                workspace=_workspace(params.datasets, params.workspace), push=params.push,
                                purge=params.purge, lineage_parent=lineage_parent())
    summary = outcome_summary(outcome)
    if outcome.dry_run:
        create_markdown_artifact(key="gdpr-erase-plan", markdown=render_plan_markdown(summary),
                                 description="GDPR erasure plan (dry run)")
    else:
        assert outcome.certificate is not None and outcome.request_ref is not None
        create_markdown_artifact(key=f"gdpr-certificate-{outcome.request_ref.lower()}",
                                 markdown=render_markdown(outcome.certificate, outcome.certificate_uri),
                                 description=f"certificate of erasure {outcome.request_ref}: "
                                             f"{outcome.certificate['result']}")
    log.info("gdpr erase %s%s: %s", params.request, " (dry run)" if outcome.dry_run else "", summary["result"])
    return summary


@flow(name="gdpr-export", description="Everything about a data subject as a ZIP of JSON and CSV with a manifest "
                                      "(GDPR Art. 15/20).")
def gdpr_export(params: ExportInput) -> dict[str, Any]:
    with flow_lineage():
        outcome = export_subject(request_ref=params.request, out=Path(params.out) if params.out else None,
                                 actor=_actor(), workspace=_workspace(params.datasets, params.workspace))
    files = outcome.manifest["files"]
    lines = [f"# GDPR export `{outcome.request_ref}`", "", f"**{outcome.manifest['result']}** — "
             f"{len(files)} file(s), sha256 `{outcome.sha256}`, stored at `{outcome.uri}`", "",
             "| file | rows | bytes |", "|---|---:|---:|"]
    lines += [f"| {f['path']} | {f.get('rows', '')} | {f['size']} |" for f in files]
    create_markdown_artifact(key=f"gdpr-export-{outcome.request_ref.lower()}", markdown="\n".join(lines) + "\n",
                             description=f"GDPR export {outcome.request_ref}")
    return {"request": outcome.request_ref, "result": outcome.manifest["result"], "uri": outcome.uri,
            "out": str(outcome.out) if outcome.out else None, "sha256": outcome.sha256, "files": files}
