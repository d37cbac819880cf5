"""gdpr-erase and gdpr-export: GDPR requests as Prefect flows, thin over ``amas.gdpr``.

gdpr-erase finds everything about a subject (store, storage, DVC datasets and what lineage says
was derived from them), erases it step by step with audit events, rewrites and pushes the
datasets, purges their old versions, and publishes the certificate of erasure as a markdown
artifact. With ``dry_run`` it only publishes the plan. gdpr-export builds the Art. 15/20 ZIP.
The subject identifier is a flow parameter; everything the flows log, return or publish names
the subject only by its keyed digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from amas.errors import AmasError
from amas.gdpr.certificate import render_markdown, render_plan_markdown
from amas.gdpr.erase import erase_subject, outcome_summary
from amas.gdpr.export import export_subject
from amas.gdpr.identifiers import parse_identifier
from amas.pipeline.runner import project_root
from flows._lineage import flow_lineage
from flows._lineage import parent as lineage_parent

By = Literal["auto", "ref", "email", "id"]


def _check_subject(value: str, by: str) -> str:
    try:
        parse_identifier(value, by)
    except AmasError as exc:
        raise ValueError(str(exc)) from None
    return value


def _workspace(datasets: bool, workspace: str | None) -> Path | None:
    """The pipeline workspace to search, or None when datasets are left out."""
    if not datasets:
        return None
    return Path(workspace).resolve() if workspace else project_root()


def _has_pipeline(value: str | None) -> str | None:
    if value and not (Path(value) / "dvc.yaml").is_file():
        raise ValueError(f"workspace: no dvc.yaml in {value}")
    return value or None


class SubjectInput(BaseModel):
    # The subject is personal data: keep it out of validation errors (and so out of run states).
    model_config = ConfigDict(hide_input_in_errors=True)

    # ``by`` comes first: the subject is checked as the kind it names.
    by: By = Field("auto", description="How to read the subject: auto, ref, email or id.")
    subject: str = Field(min_length=1, max_length=320,
                         description="The data subject: external_ref, email address or numeric id.")
    datasets: bool = Field(True, description="Include the DVC datasets.")
    workspace: str | None = Field(None, description="Directory holding dvc.yaml; empty means the project.")

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str, info: ValidationInfo) -> str:
        return _check_subject(value, info.data.get("by", "auto"))

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        return _has_pipeline(value)


class ErasureInput(SubjectInput):
    dry_run: bool = Field(True, description="Only show what would be deleted, anonymised or kept, and why.")
    push: bool = Field(True, description="Push the rewritten datasets to the DVC remote.")
    purge: bool = Field(True, description="Delete the old dataset versions that held the subject from the DVC "
                                          "cache and remote.")


class ExportInput(SubjectInput):
    out: str | None = Field(None, description="Also write the ZIP to this path (on the machine running the flow).")


def _actor() -> str:
    return f"prefect:{flow_run.flow_name}:{flow_run.id}" if flow_run.id else "amas"


@flow(name="gdpr-erase", description="Erase a data subject from the store, storage and DVC datasets, with a "
                                     "certificate of erasure; dry_run shows the plan only.")
def gdpr_erase(params: ErasureInput) -> dict[str, Any]:
    log = get_run_logger()
    with flow_lineage():
        outcome = erase_subject(params.subject, by=params.by, dry_run=params.dry_run, actor=_actor(),
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
    log.info("gdpr erase %s: %s", outcome.request_ref or "(dry run)", summary["result"])
    return summary


@flow(name="gdpr-export", description="Everything about a data subject as a ZIP of JSON and CSV with a manifest "
                                      "(GDPR Art. 15/20).")
def gdpr_export(params: ExportInput) -> dict[str, Any]:
    with flow_lineage():
        outcome = export_subject(params.subject, by=params.by, out=Path(params.out) if params.out else None,
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
