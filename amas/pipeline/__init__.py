"""The data pipeline: generate → validate → classify → clean → features, under DVC.

Each stage is one engine function (``amas.pipeline.stages``). ``dvc repro`` runs it through
``python -m amas.pipeline stage NAME`` (the command in ``dvc.yaml``); the ``data-pipeline``
Prefect flow calls the same function in-process and then ``dvc commit``s the stage, so both
paths write the same bytes and the same ``dvc.lock``. Every stage run emits OpenLineage
START/COMPLETE/FAIL events with schema, version (DVC md5), quality, column-lineage and PII
facets (``amas.pipeline.runner.run_stage``).
"""
