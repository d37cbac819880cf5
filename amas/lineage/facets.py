"""OpenLineage dataset facets for AMAS data: schema, quality, column lineage, PII tags, ownership.

Builders only: each returns an openlineage ``facet_v2`` object (with ``producer`` set to
``amas.lineage.PRODUCER``) for ``amas.lineage.dataset(..., facets=...)``, under the key the spec
requires (``facet_map`` picks it). Quality facets are *input* facets in the spec: they describe
the data a job read, so ``quality_input`` attaches them to an ``InputDataset``.

    people = file_dataset(root, root / "data/clean/people_clean.parquet", version=md5,
                          schema=table.schema, facets=facet_map(pii_tags({"email": "email"}),
                                                                ownership("data-platform")))
    checked = quality_input(people, report, frame)

No unexpected-value sample from a quality report is put into a facet: samples may be personal
data, and lineage receivers are shared more widely than the data itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from openlineage.client.event_v2 import Dataset, InputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    ownership_dataset,
    schema_dataset,
    tags_dataset,
)

from amas.lineage.emitter import PRODUCER, SchemaFields, dataset

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from amas.quality import QualityReport

PII_TAG_SOURCE = "amas.pii_classifier"

DISTINCT_COUNT_MAX_ROWS = 1_000_000
"""Above this many rows ``quality_metrics`` leaves ``distinctCount`` out: counting distinct
values hashes every value of every column, which costs more than the rest of the facet."""

TRANSFORMATION_SUBTYPES: dict[str, frozenset[str]] = {
    "DIRECT": frozenset({"IDENTITY", "TRANSFORMATION", "AGGREGATION", "MASKED"}),
    "INDIRECT": frozenset({"JOIN", "GROUP_BY", "FILTER", "SORT", "WINDOW", "CONDITIONAL"}),
}
"""The ColumnLineage 1-2-x transformation types and subtypes. ``MASKED`` is AMAS shorthand:
the spec has no such subtype but a ``masking`` flag, so it is sent as ``TRANSFORMATION`` with
``masking: true`` (a hash or a network prefix of personal data)."""

_FACET_KEYS: tuple[tuple[type[Any], str], ...] = (
    (schema_dataset.SchemaDatasetFacet, "schema"),
    (column_lineage_dataset.ColumnLineageDatasetFacet, "columnLineage"),
    (tags_dataset.TagsDatasetFacet, "tags"),
    (ownership_dataset.OwnershipDatasetFacet, "ownership"),
    (data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet, "dataQualityAssertions"),
    (data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet, "dataQualityMetrics"),
)


def schema_from_arrow(schema: pa.Schema) -> list[tuple[str, str]]:
    """``[(column, arrow type)]``, e.g. ``("created_at", "timestamp[s, tz=UTC]")``, for ``dataset(schema=...)``."""
    return [(field.name, str(field.type)) for field in schema]


def quality_assertions(report: QualityReport) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    """One assertion per expectation of the report, in suite order.

    ``assertion`` is the GX expectation type, ``column`` its column (left out for table-level and
    multi-column expectations, whose columns are in ``params``), ``params`` its kwargs, and
    ``actual`` what GX observed or how many values were unexpected.
    """
    assertions = []
    for index, outcome in enumerate(report.outcomes, start=1):
        if outcome.error is not None:
            actual: str | None = f"error: {outcome.error}"
        elif outcome.observed_value is not None:
            actual = _as_text(outcome.observed_value)
        elif outcome.unexpected_count is not None:
            actual = f"{outcome.unexpected_count} unexpected"
        else:
            actual = None
        assertions.append(
            data_quality_assertions_dataset.Assertion(
                assertion=outcome.expectation,
                success=outcome.success,
                column=outcome.column,
                name=f"{report.suite}#{index}",
                actual=actual,
                contentType="json",
                content=json.dumps({"type": outcome.expectation, "kwargs": outcome.kwargs}, sort_keys=True),
                params=dict(outcome.kwargs),
            )
        )
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER)


def quality_metrics(
    report: QualityReport,
    frame_or_stats: pd.DataFrame | Mapping[str, Mapping[str, float | int]],
    *,
    distinct_count_max_rows: int = DISTINCT_COUNT_MAX_ROWS,
) -> data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet:
    """Row count and per-column metrics of the data the report was made on.

    Pass the DataFrame that was validated (null and non-null counts, and distinct counts up to
    ``distinct_count_max_rows`` rows), or statistics already computed as
    ``{column: {"nullCount": 0, "distinctCount": 12, ...}}`` in the facet's own field names.
    Min, max and quantiles are left out of the DataFrame form: they are values of the data,
    which may be personal.
    """
    if isinstance(frame_or_stats, Mapping):
        allowed = {a.name for a in data_quality_metrics_input_dataset.ColumnMetrics.__attrs_attrs__}
        columns: dict[str, data_quality_metrics_input_dataset.ColumnMetrics] = {}
        for column, stats in frame_or_stats.items():
            unknown = set(stats) - allowed
            if unknown:
                raise ValueError(
                    f"column metrics for {column!r}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
                )
            columns[str(column)] = data_quality_metrics_input_dataset.ColumnMetrics(**stats)
    else:
        columns = _frame_metrics(frame_or_stats, distinct_count_max_rows)
    return data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        columnMetrics=columns, rowCount=report.rows, producer=PRODUCER
    )


def quality_input(
    item: Dataset,
    report: QualityReport,
    frame_or_stats: pd.DataFrame | Mapping[str, Mapping[str, float | int]] | None = None,
) -> InputDataset:
    """``item`` as an ``InputDataset`` carrying the report's assertions, and metrics when given data."""
    input_facets: dict[str, InputDatasetFacet] = dict(getattr(item, "inputFacets", None) or {})
    input_facets["dataQualityAssertions"] = quality_assertions(report)
    if frame_or_stats is not None:
        input_facets["dataQualityMetrics"] = quality_metrics(report, frame_or_stats)
    return InputDataset(
        namespace=item.namespace, name=item.name, facets=dict(item.facets or {}), inputFacets=input_facets
    )


def column_lineage(
    mapping: Mapping[str, Sequence[tuple[str, str, str]]],
    *,
    namespace: str,
    transformations: Mapping[str, tuple[str, str]] | None = None,
    dataset_dependencies: Sequence[tuple[str, str, str, str]] = (),
) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """Which input columns each output column is made from, and how.

    ``mapping`` is ``{output column: [(input namespace, input dataset, input column), ...]}``; an
    empty input namespace means ``namespace``. ``transformations`` gives an output column's
    ``(type, subtype)`` (default ``("DIRECT", "IDENTITY")``; see ``TRANSFORMATION_SUBTYPES``).
    ``dataset_dependencies`` are input columns that shape the whole output rather than one
    column, as ``(namespace, dataset, column, INDIRECT subtype)``, e.g. a GROUP_BY key.
    """
    transformations = dict(transformations or {})
    strays = sorted(set(transformations) - set(mapping))
    if strays:
        raise ValueError(f"column lineage: transformations name columns not in the mapping: {', '.join(strays)}")
    fields = {}
    for output, inputs in mapping.items():
        kind, subtype = transformations.get(output, ("DIRECT", "IDENTITY"))
        transformation = _transformation(kind, subtype, where=f"output column {output!r}")
        fields[output] = column_lineage_dataset.Fields(
            inputFields=[
                column_lineage_dataset.InputField(
                    namespace=source_namespace or namespace, name=name, field=column, transformations=[transformation]
                )
                for source_namespace, name, column in inputs
            ]
        )
    whole = [
        column_lineage_dataset.InputField(
            namespace=source_namespace or namespace,
            name=name,
            field=column,
            transformations=[_transformation("INDIRECT", subtype, where=f"dataset dependency on {column!r}")],
        )
        for source_namespace, name, column, subtype in dataset_dependencies
    ]
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields, dataset=whole, producer=PRODUCER)


def pii_tags(columns: Mapping[str, str]) -> tags_dataset.TagsDatasetFacet:
    """A ``pii`` tag per personal-data column (value: its category), and ``contains_pii`` for the dataset."""
    tags = []
    for column, category in columns.items():
        if not category:
            raise ValueError(f"PII tag for column {column!r}: the category is empty; give e.g. 'email' or 'phone'")
        tags.append(tags_dataset.TagsDatasetFacetFields(key="pii", value=category, source=PII_TAG_SOURCE, field=column))
    tags.append(
        tags_dataset.TagsDatasetFacetFields(
            key="contains_pii", value="true" if columns else "false", source=PII_TAG_SOURCE
        )
    )
    return tags_dataset.TagsDatasetFacet(tags=tags, producer=PRODUCER)


def ownership(owner: str, kind: str = "team") -> ownership_dataset.OwnershipDatasetFacet:
    """The dataset's owner as the URN the spec recommends, e.g. ``team:data-platform``."""
    if not owner or not kind:
        raise ValueError(f"ownership needs an owner and a kind (team, user, application); got {kind!r}:{owner!r}")
    return ownership_dataset.OwnershipDatasetFacet(owners=[ownership_dataset.Owner(name=f"{kind}:{owner}")], producer=PRODUCER)


def facet_map(*facets: DatasetFacet) -> dict[str, DatasetFacet]:
    """The facets keyed by the names the spec requires (``schema``, ``columnLineage``, ``tags``...)."""
    keyed: dict[str, DatasetFacet] = {}
    for facet in facets:
        key = next((key for kind, key in _FACET_KEYS if isinstance(facet, kind)), None)
        if key is None:
            raise ValueError(f"no known facet key for {type(facet).__name__}; pass it in a dict under its spec name")
        keyed[key] = facet
    return keyed


def file_dataset(
    root: Path,
    path: Path,
    *,
    namespace: str = "file",
    version: str | None = None,
    schema: SchemaFields | pa.Schema | None = None,
    facets: Mapping[str, DatasetFacet] | None = None,
) -> Dataset:
    """A file in the repository, named by its repo-relative POSIX path (``data/raw/people.parquet``).

    ``path`` may be absolute (it must lie under ``root``) or relative to ``root``. ``schema`` is
    ``[(column, type)]`` or a ``pyarrow.Schema``; ``version`` is e.g. the DVC md5.
    """
    return dataset(
        namespace,
        _relative_name(root, path),
        schema=_schema_fields(schema),
        version=version,
        facets=facets,
    )


def _relative_name(root: Path, path: Path) -> str:
    # The file itself is never resolved: DVC may link it into its cache, and the dataset is
    # the path in the workspace, not the cache object behind it.
    if path.is_absolute():
        candidates = [
            (Path(os.path.normpath(root)), Path(os.path.normpath(path))),
            (root.resolve(), path.parent.resolve() / path.name),
        ]
    else:
        candidates = [(PurePath(), PurePath(os.path.normpath(path)))]
    for base, target in candidates:
        try:
            relative = target.relative_to(base)
        except ValueError:
            continue
        if relative.parts and relative.parts[0] != "..":
            return relative.as_posix()
    raise ValueError(f"dataset path {path} is not inside the repository {root}")


def _schema_fields(schema: SchemaFields | pa.Schema | None) -> SchemaFields | None:
    if schema is None:
        return None
    if hasattr(schema, "names") and hasattr(schema, "types"):  # a pyarrow.Schema, without importing pyarrow
        return schema_from_arrow(schema)
    return schema


def _transformation(kind: str, subtype: str, *, where: str) -> column_lineage_dataset.Transformation:
    allowed = TRANSFORMATION_SUBTYPES.get(kind)
    if allowed is None:
        raise ValueError(f"column lineage, {where}: transformation type {kind!r} is not one of DIRECT, INDIRECT")
    if subtype not in allowed:
        raise ValueError(
            f"column lineage, {where}: {kind} subtype {subtype!r} is not one of {', '.join(sorted(allowed))}"
        )
    if subtype == "MASKED":
        return column_lineage_dataset.Transformation(type=kind, subtype="TRANSFORMATION", masking=True)
    return column_lineage_dataset.Transformation(type=kind, subtype=subtype, masking=False)


def _frame_metrics(
    frame: pd.DataFrame, distinct_count_max_rows: int
) -> dict[str, data_quality_metrics_input_dataset.ColumnMetrics]:
    rows = len(frame)
    nulls = frame.isna().sum()
    metrics = {}
    for column in frame.columns:
        series = frame[column]
        null_count = int(nulls[column])
        values: dict[str, Any] = {"nullCount": null_count, "count": float(rows - null_count)}
        if rows <= distinct_count_max_rows:
            values["distinctCount"] = int(series.nunique(dropna=True))
        metrics[str(column)] = data_quality_metrics_input_dataset.ColumnMetrics(**values)
    return metrics


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
