"""amas-health: prove the store, storage, lineage and data checks work, end to end.

Runs every few hours from prefect.yaml and on demand from the UI or ``amas health``.
A failed check fails the flow run, so a Prefect automation can alert on it.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from amas.config import get_settings
from amas.db.session import get_engine, lineage_namespace, lineage_table_name
from amas.health import (
    CheckResult,
    HealthReport,
    audit_frame,
    check_storage,
    check_store,
    new_report,
    timed,
)
from amas.lineage import LineageEmitter, dataset
from amas.quality import validate_frame
from amas.registry import AgentContext, get_agent
from amas.storage import open_storage


@task
def store_check() -> CheckResult:
    return timed("store", lambda: check_store(get_engine(), actor="flow:amas-health"))


@task
def storage_check() -> CheckResult:
    return timed("storage", lambda: check_storage(open_storage(get_settings())))


@task
def audit_quality_check() -> CheckResult:
    start = time.perf_counter()
    report = validate_frame(audit_frame(get_engine()), "audit_events")
    if report.success:
        detail = f"audit_events suite: {len(report.outcomes)} expectations pass on {report.rows} rows"
    else:
        failed = ", ".join(f"{o.expectation}({o.column})" for o in report.failed)
        detail = f"audit_events suite failed on {report.rows} rows: {failed}"
    # The table (with unexpected-value samples) goes into the artifact, pass or fail.
    return CheckResult(name="data quality", ok=report.success, detail=detail, seconds=time.perf_counter() - start,
                       data={"suite": report.suite, "rows": report.rows, "table": report.to_markdown()})


@task
def inventory() -> dict[str, object]:
    settings = get_settings()
    agent = get_agent("store_inventory")
    context = AgentContext(settings=settings, engine=get_engine(), storage=open_storage(settings))
    return agent.run(agent.Input(), context).model_dump(mode="json", include={"tables", "storage"})


@flow(name="amas-health", description="Write and read back on the store, storage and lineage; check the audit chain and its data quality.")
def health() -> HealthReport:
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine()
    emitter = LineageEmitter.from_settings(settings)
    report = new_report()
    audit = dataset(lineage_namespace(engine), lineage_table_name(engine, "audit_events"),
                    schema=[("id", "integer"), ("action", "string"), ("hash", "string"), ("prev_hash", "string")])
    with emitter.run("amas-health", run_id=flow_run.id, inputs=[audit]) as lineage_run:
        report.checks.append(store_check())
        report.checks.append(storage_check())
        report.checks.append(audit_quality_check())
        report.inventory = inventory()
        lineage_run.add_output(audit)
        lineage_ok = settings.lineage.transport == "disabled" or emitter.failed == 0
        report.checks.append(CheckResult(
            name="lineage", ok=lineage_ok,
            detail=f"{settings.lineage.transport} transport: {emitter.emitted} event(s) sent, {emitter.failed} failed",
        ))
    create_markdown_artifact(key="amas-health", markdown=report.to_markdown(),
                             description="AMAS health check: store, storage, lineage, data quality")
    for check in report.checks:
        (logger.info if check.ok else logger.error)("%s: %s", check.name, check.detail)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        raise RuntimeError(f"health check failed: {failed}")
    return report
