"""The pipeline's stages, one engine function each, and the registry that names them.

A stage reads repo-relative files, writes repo-relative files atomically and returns what it
wrote; it never deletes an earlier output before its new one is complete and checked, so a
stage that fails (a failed validation included) leaves every output as it was. The runner
(``amas.pipeline.runner``) wraps each call in OpenLineage events; ``dvc.yaml`` lists the same
deps, outs and params (a unit test keeps the two in step).

Datasets are the ones in ``amas.datasets.generate`` (raw) and below (clean, features); each has
a Great Expectations suite of the same name in ``expectations/``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from amas.pipeline.files import md5_file, read_table, write_json, write_parquet
from amas.pipeline.params import (
    ClassifyParams,
    CleanParams,
    FeaturesParams,
    StageParams,
    ValidateParams,
    load_section,
)

if TYPE_CHECKING:
    from openlineage.client.facet_v2 import DatasetFacet

    from amas.lineage import LineageRun
    from amas.quality import QualityReport

RAW = ("people", "cases", "events", "notes")
CLEAN = ("people_clean", "cases_clean", "events_clean")
FEATURES = ("subject_activity", "daily_events")
OWNER = "data-platform"
"""Owner named in every dataset's ownership facet: the team that answers for the pipeline."""

QUALITY_REPORT = "data/quality/raw.json"
PII_COLUMNS = "data/pii/columns.json"


def raw_path(name: str) -> str:
    return f"data/raw/{name}.parquet"


def clean_path(name: str) -> str:
    return f"data/clean/{name}.parquet"


def features_path(name: str) -> str:
    return f"data/features/{name}.parquet"


@dataclass
class DatasetFile:
    """One file a stage read or wrote, as lineage and the versions table describe it."""

    path: str
    md5: str
    size: int
    rows: int | None = None
    schema: list[tuple[str, str]] | None = None
    facets: dict[str, DatasetFacet] = field(default_factory=dict)


@dataclass
class StageOutcome:
    outputs: list[DatasetFile]
    summary: str
    reports: list[QualityReport] = field(default_factory=list)


@dataclass
class StageContext:
    root: Path
    params: BaseModel
    lineage: LineageRun | None = None
    """The stage's lineage run, to attach facets to inputs as they are learned (quality, PII)."""

    def path(self, relative: str) -> Path:
        return self.root / relative

    def describe(self, relative: str, *, rows: int | None = None, schema: pa.Schema | None = None,
                 facets: Mapping[str, DatasetFacet] | None = None) -> DatasetFile:
        from amas.lineage.facets import ownership, schema_from_arrow

        path = self.path(relative)
        all_facets: dict[str, DatasetFacet] = {"ownership": ownership(OWNER)}
        all_facets.update(facets or {})
        return DatasetFile(path=relative, md5=md5_file(path), size=path.stat().st_size, rows=rows,
                           schema=schema_from_arrow(schema) if schema is not None else None, facets=all_facets)

    def annotate_input(self, item: DatasetFile) -> None:
        if self.lineage is not None:
            from amas.lineage.facets import file_dataset

            self.lineage.add_input(file_dataset(self.root, self.path(item.path), version=item.md5,
                                                schema=item.schema, facets=item.facets))


# generate ------------------------------------------------------------------------------------------

def generate(ctx: StageContext) -> StageOutcome:
    """Write the raw tables, then leave out everyone ``erasures/subjects.json`` lists (GDPR erasure:
    see ``amas.gdpr.erasure_list``; an empty list leaves the generator's bytes untouched)."""
    from amas.datasets import generate as gen
    from amas.gdpr.erasure_list import apply_erasure_list

    params = ctx.params
    assert isinstance(params, gen.GenerateParams)
    written = gen.write_datasets(ctx.path("data/raw"), params)
    erased = apply_erasure_list(ctx.root, ctx.path("data/raw"))
    sizes = {name: rows - erased.get(name, 0) for name, rows in gen.table_sizes(params.rows).items()}
    outputs = [ctx.describe(raw_path(name), rows=sizes[name], schema=gen.SCHEMAS[name]) for name in written]
    total = sum(sizes.values())
    dirty = f", {params.dirty_rows} deliberately broken row(s) per table" if params.dirty_rows else ""
    left_out = f"; {erased['people']} erased person(s) left out" if erased else ""
    return StageOutcome(outputs=outputs, summary=f"generated {total:,} rows in {len(outputs)} tables "
                                                 f"(seed {params.seed}{dirty}){left_out}")


# validate ------------------------------------------------------------------------------------------

def validate(ctx: StageContext) -> StageOutcome:
    """Check every raw dataset against its suite; write the report only when all pass."""
    from amas.lineage.facets import file_dataset, quality_input
    from amas.pipeline.files import arrow_schema
    from amas.quality import ValidationFailed, validate_table

    params = ctx.params
    assert isinstance(params, ValidateParams)
    reports = []
    for name in RAW:
        path = ctx.path(raw_path(name))
        report = validate_table(path, name, dataset=raw_path(name), redact_samples=params.redact_samples)
        reports.append(report)
        if ctx.lineage is not None:
            item = ctx.describe(raw_path(name), rows=report.rows, schema=arrow_schema(path))
            ctx.lineage.add_input(quality_input(
                file_dataset(ctx.root, path, version=item.md5, schema=item.schema, facets=item.facets), report))
    if not all(report.success for report in reports):
        raise ValidationFailed(reports)
    write_json({report.suite: report.model_dump(mode="json") for report in reports}, ctx.path(QUALITY_REPORT))
    checked = sum(len(report.outcomes) for report in reports)
    return StageOutcome(outputs=[ctx.describe(QUALITY_REPORT)], reports=reports,
                        summary=f"{checked} expectations passed on {len(reports)} raw datasets")


# classify ------------------------------------------------------------------------------------------

def _sample(table: pa.Table, limit: int, seed: int) -> pa.Table:
    if table.num_rows <= limit:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=limit, replace=False))
    return table.take(pa.array(rows))


def classify(ctx: StageContext) -> StageOutcome:
    """Which columns of each raw dataset hold personal data (amas.pii), as ``data/pii/columns.json``."""
    from amas.lineage.facets import pii_tags
    from amas.pii import classify_column

    params = ctx.params
    assert isinstance(params, ClassifyParams)
    document: dict[str, dict[str, Any]] = {}
    found = 0
    for name in RAW:
        path = ctx.path(raw_path(name))
        table = read_table(path)
        sample = _sample(table, params.sample_rows, params.seed).to_pandas()
        verdicts = [classify_column(str(column), sample[column], params.min_confidence) for column in sample.columns]
        pii = {v.column: v.category for v in verdicts if v.category is not None}
        found += len(pii)
        document[raw_path(name)] = {
            "rows": table.num_rows,
            "sampled": len(sample),
            "columns": {v.column: {"category": v.category, "confidence": round(v.confidence, 4)} for v in verdicts},
        }
        ctx.annotate_input(ctx.describe(raw_path(name), rows=table.num_rows, schema=table.schema,
                                        facets={"tags": pii_tags(pii)}))
    write_json(document, ctx.path(PII_COLUMNS))
    return StageOutcome(outputs=[ctx.describe(PII_COLUMNS)],
                        summary=f"{found} personal-data columns in {len(RAW)} raw datasets")


def load_pii(root: Path) -> dict[str, dict[str, str]]:
    """dataset path -> {column: PII category} from the classify stage's output (empty if absent)."""
    import json

    path = root / PII_COLUMNS
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    return {dataset: {column: verdict["category"] for column, verdict in entry["columns"].items()
                      if verdict.get("category")}
            for dataset, entry in document.items()}


# column lineage --------------------------------------------------------------------------------------

IDENTITY, TRANSFORMATION, MASKED, AGGREGATION = "IDENTITY", "TRANSFORMATION", "MASKED", "AGGREGATION"
Source = tuple[str, str, str]  # (input dataset path, input column, subtype)

LINEAGE: dict[str, dict[str, list[Source]]] = {
    "people_clean": {
        "subject_id": [(raw_path("people"), "subject_id", IDENTITY)],
        "full_name": [(raw_path("people"), "full_name", TRANSFORMATION)],
        "email": [(raw_path("people"), "email", TRANSFORMATION)],
        "phone": [(raw_path("people"), "phone", TRANSFORMATION)],
        "date_of_birth": [(raw_path("people"), "date_of_birth", IDENTITY)],
        "country": [(raw_path("people"), "country", IDENTITY)],
        "created_at": [(raw_path("people"), "created_at", IDENTITY)],
    },
    "cases_clean": {
        **{column: [(raw_path("cases"), column, IDENTITY)]
           for column in ("case_id", "subject_id", "category", "status", "priority", "opened_at", "closed_at")},
        "open_days": [(raw_path("cases"), "opened_at", TRANSFORMATION), (raw_path("cases"), "closed_at", TRANSFORMATION)],
    },
    "events_clean": {
        **{column: [(raw_path("events"), column, IDENTITY)]
           for column in ("event_id", "subject_id", "case_id", "occurred_at", "event_type", "bytes_sent")},
        "ip_network": [(raw_path("events"), "ip_address", MASKED)],
    },
    "subject_activity": {
        "subject_id": [(clean_path("people_clean"), "subject_id", IDENTITY)],
        "cases": [(clean_path("cases_clean"), "case_id", AGGREGATION)],
        "events": [(clean_path("events_clean"), "event_id", AGGREGATION)],
        "failed_logins": [(clean_path("events_clean"), "event_type", AGGREGATION)],
        "distinct_networks": [(clean_path("events_clean"), "ip_network", AGGREGATION)],
        "first_event_at": [(clean_path("events_clean"), "occurred_at", AGGREGATION)],
        "last_event_at": [(clean_path("events_clean"), "occurred_at", AGGREGATION)],
    },
    "daily_events": {
        "day": [(clean_path("events_clean"), "occurred_at", TRANSFORMATION)],
        "event_type": [(clean_path("events_clean"), "event_type", IDENTITY)],
        "events": [(clean_path("events_clean"), "event_id", AGGREGATION)],
        "distinct_subjects": [(clean_path("events_clean"), "subject_id", AGGREGATION)],
    },
}
"""Output column -> the input columns it is made from. Personal-data tags follow the
non-aggregating edges: a cleaned email is still an email; a count of events is not."""


def propagate_pii(dataset: str, pii: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The PII categories of ``dataset``'s columns, carried along ``LINEAGE`` from its inputs."""
    tags: dict[str, str] = {}
    for column, sources in LINEAGE[dataset].items():
        for source, source_column, subtype in sources:
            category = pii.get(source, {}).get(source_column)
            if category and subtype != AGGREGATION:
                tags[column] = category
    return tags


def _lineage_facets(ctx: StageContext, dataset: str, pii: Mapping[str, Mapping[str, str]]) -> dict[str, DatasetFacet]:
    from amas.lineage.facets import column_lineage, pii_tags

    mapping = {column: [("file", source, source_column) for source, source_column, _ in sources]
               for column, sources in LINEAGE[dataset].items()}
    # In OpenLineage 1-2 an aggregation is a DIRECT transformation (the value is computed from
    # the input column); MASKED is sent as TRANSFORMATION with masking set.
    kinds = {column: ("DIRECT", sources[0][2]) for column, sources in LINEAGE[dataset].items()}
    return {"columnLineage": column_lineage(mapping, namespace="file", transformations=kinds),
            "tags": pii_tags(propagate_pii(dataset, pii))}


def _check_and_write(ctx: StageContext, tables: Mapping[str, pa.Table], path_of: Callable[[str], str],
                     pii: Mapping[str, Mapping[str, str]]) -> tuple[list[DatasetFile], list[QualityReport]]:
    """Validate every table first; write them only when all pass, so nothing is half-replaced."""
    from amas.quality import ValidationFailed, validate_frame

    reports = [validate_frame(table.to_pandas(), name, dataset=path_of(name), redact_samples=True)
               for name, table in tables.items()]
    if not all(report.success for report in reports):
        raise ValidationFailed(reports)
    outputs = []
    for name, table in tables.items():
        write_parquet(table, ctx.path(path_of(name)))
        outputs.append(ctx.describe(path_of(name), rows=table.num_rows, schema=table.schema,
                                    facets=_lineage_facets(ctx, name, pii)))
    return outputs, reports


# clean -----------------------------------------------------------------------------------------------

def _ip_networks(addresses: pa.ChunkedArray, v4_prefix: int, v6_prefix: int) -> pa.Array:
    """Each address as its network (``203.0.113.0/24``): where the request came from, not who."""
    values = addresses.combine_chunks() if isinstance(addresses, pa.ChunkedArray) else addresses
    is_v4 = pc.match_substring_regex(values, r"^\d{1,3}(\.\d{1,3}){3}$")
    out = np.empty(len(values), dtype=object)
    mask = np.asarray(is_v4.fill_null(False))
    if v4_prefix == 24 and mask.any():
        # The common case, vectorised: keep the first three octets.
        v4 = pc.replace_substring_regex(pc.filter(values, is_v4), r"^(\d+\.\d+\.\d+)\.\d+$", r"\1.0/24")
        out[mask] = np.asarray(v4.to_pylist(), dtype=object)
    elif mask.any():
        out[mask] = [str(ipaddress.ip_network(f"{ip}/{v4_prefix}", strict=False)) for ip in
                     pc.filter(values, is_v4).to_pylist()]
    rest = np.flatnonzero(~mask)
    if len(rest):
        out[rest] = [v6_network(ip, v6_prefix) if ip else None for ip in values.take(pa.array(rest)).to_pylist()]
    return pa.array(out, type=pa.string())


def v6_network(address: str, prefix: int) -> str:
    """``str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))``, fourteen times faster.

    The C library's parser and RFC 5952 formatter instead of ipaddress's pure-Python ones: at
    10 M events this was 18 s of the clean stage (scripts/bench_pipeline.py). Anything it does
    not take (a zone id, an IPv4 address) goes to ipaddress, which gives the same text or the
    same error; a unit test compares the two on random and edge-case addresses.
    """
    try:
        packed = bytearray(socket.inet_pton(socket.AF_INET6, address))
    except (OSError, ValueError):
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    whole, bits = divmod(prefix, 8)
    if bits:
        packed[whole] &= (0xFF << (8 - bits)) & 0xFF
        whole += 1
    packed[whole:] = bytes(16 - whole)
    text = socket.inet_ntop(socket.AF_INET6, bytes(packed))
    if "." in text:  # glibc writes ::ffff:0:0/96-style prefixes in dotted form; ipaddress never does
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return f"{text}/{prefix}"


def clean(ctx: StageContext) -> StageOutcome:
    params = ctx.params
    assert isinstance(params, CleanParams)
    people, cases, events = (read_raw(ctx, name) for name in ("people", "cases", "events"))

    name = pc.utf8_trim_whitespace(pc.replace_substring_regex(people["full_name"], r"\s+", " "))
    people_clean = people.set_column(people.schema.get_field_index("full_name"), "full_name",
                                     pc.utf8_normalize(name, "NFC"))
    people_clean = people_clean.set_column(people_clean.schema.get_field_index("email"), "email",
                                           pc.utf8_lower(pc.utf8_trim_whitespace(people["email"])))
    people_clean = people_clean.set_column(people_clean.schema.get_field_index("phone"), "phone",
                                           pc.replace_substring_regex(people["phone"], r"[^\d+]", ""))
    people_clean = _first_per_key(people_clean, "subject_id")

    seconds = pc.divide(pc.cast(pc.subtract(pc.cast(cases["closed_at"], pa.int64()),
                                            pc.cast(cases["opened_at"], pa.int64())), pa.float64()), 86400.0)
    cases_clean = cases.append_column("open_days", seconds)

    known = pc.is_in(events["subject_id"], value_set=people_clean["subject_id"].combine_chunks())
    kept = events.filter(known)
    networks = _ip_networks(kept["ip_address"], params.ipv4_prefix, params.ipv6_prefix)
    position = kept.schema.get_field_index("ip_address")
    events_clean = kept.remove_column(position).add_column(position, "ip_network", networks)
    dropped = events.num_rows - kept.num_rows

    outputs, reports = _check_and_write(ctx, {"people_clean": people_clean, "cases_clean": cases_clean,
                                              "events_clean": events_clean}, clean_path, load_pii(ctx.root))
    return StageOutcome(outputs=outputs, reports=reports,
                        summary=f"cleaned {people_clean.num_rows:,} people, {cases_clean.num_rows:,} cases, "
                                f"{events_clean.num_rows:,} events ({dropped:,} orphan events dropped; IPs kept "
                                f"as /{params.ipv4_prefix} and /{params.ipv6_prefix} networks)")


def read_raw(ctx: StageContext, name: str) -> pa.Table:
    """A raw table in the generator's schema: Parquet has no seconds unit, so timestamps come
    back as milliseconds; every value is a whole second, so the cast loses nothing."""
    from amas.datasets.generate import SCHEMAS

    return read_table(ctx.path(raw_path(name))).cast(SCHEMAS[name])


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """The first row of each ``key`` value, in table order."""
    index = pa.array(np.arange(table.num_rows))
    firsts = (pa.table({key: table[key], "_row": index}).group_by(key, use_threads=False)
              .aggregate([("_row", "min")])["_row_min"])
    return table.take(pa.array(np.sort(firsts.to_numpy())))


# features --------------------------------------------------------------------------------------------

def features(ctx: StageContext) -> StageOutcome:
    params = ctx.params
    assert isinstance(params, FeaturesParams)
    people = read_table(ctx.path(clean_path("people_clean")), columns=["subject_id"])
    cases = read_table(ctx.path(clean_path("cases_clean")), columns=["subject_id", "case_id"])
    events = read_table(ctx.path(clean_path("events_clean")),
                        columns=["event_id", "subject_id", "occurred_at", "event_type", "ip_network"])

    failed = pc.is_in(events["event_type"], value_set=pa.array(params.failed_login_types, type=pa.string()))
    per_subject = (events.append_column("failed", pc.cast(failed, pa.int64()))
                   .group_by("subject_id", use_threads=False)
                   .aggregate([("event_id", "count"), ("failed", "sum"), ("ip_network", "count_distinct"),
                               ("occurred_at", "min"), ("occurred_at", "max")]))
    per_case = cases.group_by("subject_id", use_threads=False).aggregate([("case_id", "count")])
    activity = (people.join(per_case, "subject_id", join_type="left outer", use_threads=False)
                .join(per_subject, "subject_id", join_type="left outer", use_threads=False))
    # Joins do not keep row order: sort by subject so the same data gives the same bytes.
    activity = activity.sort_by("subject_id")
    zero = pa.scalar(0, pa.int64())
    subject_activity = pa.table({
        "subject_id": activity["subject_id"],
        "cases": pc.fill_null(pc.cast(activity["case_id_count"], pa.int64()), zero),
        "events": pc.fill_null(pc.cast(activity["event_id_count"], pa.int64()), zero),
        "failed_logins": pc.fill_null(pc.cast(activity["failed_sum"], pa.int64()), zero),
        "distinct_networks": pc.fill_null(pc.cast(activity["ip_network_count_distinct"], pa.int64()), zero),
        "first_event_at": activity["occurred_at_min"],
        "last_event_at": activity["occurred_at_max"],
    })

    day = pc.cast(pc.floor_temporal(events["occurred_at"], unit="day"), pa.timestamp("s"))
    daily = (pa.table({"day": day, "event_type": events["event_type"], "event_id": events["event_id"],
                       "subject_id": events["subject_id"]})
             .group_by(["day", "event_type"], use_threads=False)
             .aggregate([("event_id", "count"), ("subject_id", "count_distinct")])
             .sort_by([("day", "ascending"), ("event_type", "ascending")]))
    daily_events = pa.table({
        "day": daily["day"],
        "event_type": daily["event_type"],
        "events": pc.cast(daily["event_id_count"], pa.int64()),
        "distinct_subjects": pc.cast(daily["subject_id_count_distinct"], pa.int64()),
    })
    outputs, reports = _check_and_write(ctx, {"subject_activity": subject_activity, "daily_events": daily_events},
                                        features_path, load_pii(ctx.root))
    return StageOutcome(outputs=outputs, reports=reports,
                        summary=f"{subject_activity.num_rows:,} subject profiles, {daily_events.num_rows:,} "
                                f"day x event-type counts")


# registry --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    run: Callable[[StageContext], StageOutcome]
    deps: tuple[str, ...]
    """Data files read (code and params deps are in dvc.yaml)."""
    outs: tuple[str, ...]
    load_params: Callable[[Path], Any]


def _section(name: str, model: type[StageParams]) -> Callable[[Path], StageParams]:
    return lambda path: load_section(path, name, model)


def _generate_params(path: Path) -> Any:
    from amas.datasets.generate import load_params

    return load_params(path)


STAGES: dict[str, Stage] = {
    "generate": Stage("generate", "synthetic people, cases, events and notes (deterministic by seed)",
                      generate, (), tuple(raw_path(n) for n in RAW), _generate_params),
    "validate": Stage("validate", "Great Expectations suites on every raw dataset; stops the pipeline on failure",
                      validate, tuple(raw_path(n) for n in RAW), (QUALITY_REPORT,), _section("validate", ValidateParams)),
    "classify": Stage("classify", "which raw columns hold personal data",
                      classify, tuple(raw_path(n) for n in RAW) + (QUALITY_REPORT,), (PII_COLUMNS,),
                      _section("classify", ClassifyParams)),
    "clean": Stage("clean", "normalised people, cases and events; IP addresses reduced to networks",
                   clean, tuple(raw_path(n) for n in ("people", "cases", "events")) + (QUALITY_REPORT, PII_COLUMNS),
                   tuple(clean_path(n) for n in CLEAN), _section("clean", CleanParams)),
    "features": Stage("features", "per-subject activity and daily event counts",
                      features, tuple(clean_path(n) for n in CLEAN) + (PII_COLUMNS,),
                      tuple(features_path(n) for n in FEATURES), _section("features", FeaturesParams)),
}
"""In pipeline order: every stage's deps are outputs of stages before it."""


def stages_until(last: str | None = None) -> list[str]:
    """Stage names in pipeline order, up to and including ``last`` (all when it is None)."""
    names = list(STAGES)
    return names if last is None else names[: names.index(last) + 1]
