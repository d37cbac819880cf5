"""retention-apply (daily) and compliance-report (weekly): thin flows over ``amas.retention``.

``retention-apply`` applies every policy in ``retention/*.yaml`` (or the chosen categories)
and publishes what it did as a markdown artifact; a run that would remove more than
AMAS_RETENTION_MAX_FRACTION of a category stops, fails the flow run with the reason, and
waits for a run with ``confirm``. ``compliance-report`` stores the report (HTML, JSON, CSV)
in object storage and publishes it as a markdown artifact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import BaseModel, Field, field_validator

from amas.config import get_settings
from amas.db.migrate import require_current_schema
from amas.db.models import utcnow
from amas.db.session import get_engine
from amas.errors import ConfigError
from amas.retention import load_policies
from amas.retention.apply import apply_retention, select_policies, survey
from amas.retention.prefect_meta import reachable_client
from amas.retention.report import build_report, outcome_markdown, render_markdown, store
from amas.storage import open_storage
from flows._lineage import flow_lineage


STOPPED = "Stopped"
"""State name of a retention-apply run that refused to remove more than AMAS_RETENTION_MAX_FRACTION
of a category; its message says which and how to go on (``confirm``)."""


class RetentionApplyInput(BaseModel):
    categories: list[str] = Field([], description="Only these categories (empty: every policy).")
    as_of: datetime | None = Field(None, description="Measure ages against this time (empty: now); never later than now.")
    confirm: bool = Field(False, description="Go on although a policy removes more than AMAS_RETENTION_MAX_FRACTION "
                          "of its category.")
    requested_by: str = Field("schedule", min_length=1, max_length=200, description="Who asked (recorded as the actor).")

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("as_of needs a time zone, e.g. 2026-06-15T00:00:00+00:00")
        return value


@flow(name="retention-apply", description="Apply the retention policies: delete, anonymize or archive what is due, "
      "never what is held; stop above AMAS_RETENTION_MAX_FRACTION unless confirmed.")
def retention_apply(params: RetentionApplyInput | None = None) -> dict[str, Any] | State:
    params = params or RetentionApplyInput()
    with flow_lineage():
        settings = get_settings()
        engine = get_engine(settings)
        require_current_schema(engine)
        policies = load_policies()
        with reachable_client(settings) as (client, _):
            outcome = apply_retention(
                engine, policies, as_of=params.as_of or utcnow(), actor=f"flow:retention-apply ({params.requested_by})",
                settings=settings, storage=open_storage(settings), categories=params.categories or None,
                confirm=params.confirm, prefect_client=client)
        create_markdown_artifact(key="retention-apply", markdown=outcome_markdown(outcome),
                                 description="What retention apply did per category")
        if outcome.status == "stopped":
            # A refusal by design, not a crash: a Failed state named for it, without a traceback.
            return Failed(name=STOPPED, message=outcome.message)
        for name, progress in outcome.categories.items():
            get_run_logger().info("%s: %s, %d changed in %d batches", name, progress.status, progress.applied,
                                  progress.batches)
        return outcome.to_dict()


@flow(name="compliance-report", description="Inventory, overdue data, actions, holds, GDPR deadlines, backups and "
      "the audit chain verdict; stored as HTML, JSON and CSV and published as an artifact.")
def compliance_report(since_days: int = 7) -> dict[str, Any]:
    if not 1 <= since_days <= 3660:
        raise ConfigError(f"since_days: must be between 1 and 3660 (days of actions to report), got {since_days}")
    with flow_lineage():
        settings = get_settings()
        engine = get_engine(settings)
        require_current_schema(engine)
        policies = list(load_policies())
        storage = open_storage(settings)
        as_of = utcnow()
        with reachable_client(settings) as (client, why):
            surveys = survey(engine, select_policies(policies, None), as_of, storage=storage, prefect_client=client,
                             prefect_unavailable=why or "no Prefect API")
        report = build_report(engine, policies, surveys, as_of=as_of, since_days=since_days)
        stored = store(storage, report, name=f"{as_of:%Y-%m-%d}-{flow_run.id or 'adhoc'}")
        links = "\n".join(f"- {fmt}: `{item['key']}` (sha256 `{item['sha256']}`)" for fmt, item in stored.items())
        create_markdown_artifact(key="compliance-report", markdown=render_markdown(report) + "\nStored:\n" + links + "\n",
                                 description="Weekly compliance report")
        return {"stored": stored, "audit_chain_ok": report.audit_chain["ok"],
                "overdue": {row.category: row.overdue for row in report.inventory}}
