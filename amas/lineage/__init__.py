"""OpenLineage lineage for AMAS: which job read and wrote which dataset, and when.

Every flow and DVC stage records its runs here as START/COMPLETE/FAIL events with schema and
dataset-version facets, so ``amas lineage`` and erasure can follow data upstream and downstream.
Events go to a JSONL file locally and to an OpenLineage receiver (Marquez) in production;
sending them never fails the job they describe.

    emitter = LineageEmitter.from_settings(get_settings())
    with emitter.run("pipeline.clean", inputs=[dataset("file", "data/raw.csv")]) as run:
        ...
        run.add_output(dataset("file", "data/clean.csv", version=md5))
"""

from openlineage.client.event_v2 import Dataset, InputDataset, OutputDataset, RunState

from amas.lineage.emitter import (
    PRODUCER,
    LineageEmitter,
    LineageRun,
    ParentRun,
    as_input,
    as_output,
    dataset,
)

__all__ = [
    "PRODUCER",
    "Dataset",
    "InputDataset",
    "LineageEmitter",
    "LineageRun",
    "OutputDataset",
    "ParentRun",
    "RunState",
    "as_input",
    "as_output",
    "dataset",
]
