"""OpenLineage START/COMPLETE/FAIL for the flow run itself.

Tasks and stages name the datasets they read and write, with this flow run as their parent
(``ParentRun(flow_run.id, flow_run.flow_name)``); this gives that parent events of its own, so
a lineage consumer (Marquez) sees every flow run, its outcome and its children. Prefect has no
OpenLineage integration to do it (FIELD-NOTES: the ``openlineage-prefect`` beta crashes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from openlineage.client.facet_v2 import job_type_job
from prefect.runtime import flow_run

from amas.config import get_settings
from amas.lineage import PRODUCER, LineageEmitter, LineageRun, ParentRun

FLOW_JOB = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="PREFECT", jobType="FLOW",
                                        producer=PRODUCER)


def parent() -> ParentRun | None:
    """The current flow run as a parent for task and stage events; None outside a flow run."""
    return ParentRun(run_id=flow_run.id, job_name=flow_run.flow_name) if flow_run.id else None


@contextmanager
def flow_lineage() -> Iterator[LineageRun | None]:
    """Record the current flow run (run id = Prefect's flow-run id, job = the flow's name)."""
    emitter = LineageEmitter.from_settings(get_settings())
    try:
        with emitter.run(flow_run.flow_name or "flow", run_id=flow_run.id or None,
                         job_facets={"jobType": FLOW_JOB}) as run:
            yield run
    finally:
        emitter.close()
