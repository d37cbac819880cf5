"""pii_classifier: which columns of a CSV or Parquet dataset hold personal data, and of what kind.

The classification itself lives in ``amas.pii`` (the pipeline's ``classify`` stage uses it too);
this agent loads the dataset, samples it, classifies every column and turns the verdicts into
findings and a redacted evidence document. Nothing raw leaves the agent: examples are masked,
and the summary, findings and evidence name columns and counts, never values. Retention, GDPR
requests and lineage read ``columns`` (one stable record per column) and ``pii_columns``.
"""

from __future__ import annotations

from pydantic import Field

from agents.tabular import DatasetInput, DatasetRef, dataset_findings, load_table
from amas.pii import (
    LABELS,
    SEVERITY,
    ColumnClassification,
    GdprSummary,
    classify_column,
    gdpr_summary,
    sample_rows,
)
from amas.registry import AgentContext, AgentResult, Finding, Severity, ranked

class PiiInput(DatasetInput):
    sample_rows: int = Field(10_000, ge=1, le=1_000_000, description="Rows sampled (deterministically) per run.")
    seed: int = Field(0, ge=0, description="Seed of the row sample; the same seed picks the same rows.")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Columns at or above this confidence are "
                                                                   "reported as personal data.")



class PiiOutput(AgentResult):
    dataset: DatasetRef
    rows: int
    sampled_rows: int
    columns: list[ColumnClassification] = Field(description="One record per column, in dataset order.")
    pii_columns: list[str] = Field(description="Columns whose category is not None, in dataset order.")
    gdpr: GdprSummary


def _findings(columns: list[ColumnClassification], dataset: DatasetRef) -> list[Finding]:
    findings = []
    for column in columns:
        if column.category is not None:
            findings.append(Finding(
                severity=SEVERITY[column.category],
                title=f"Column {column.column!r} holds {LABELS[column.category]} "
                      f"(confidence {column.confidence:.2f})",
                detail=f"{column.reason}. In {dataset.path}: give it a retention policy and cover it in GDPR "
                       f"access and erasure requests.",
                location=column.column))
        elif column.name_hint is not None and column.name_hint != "free_text_with_pii":
            findings.append(Finding(
                severity=Severity.info,
                title=f"Column {column.column!r} is named like {LABELS[column.name_hint]} but its values are not",
                detail=f"{column.reason}. Check the column's meaning or its data quality.",
                location=column.column))
    return findings


def _summary(dataset: DatasetRef, rows: int, sampled: int, columns: list[ColumnClassification]) -> str:
    version = f", DVC md5 {dataset.version}" if dataset.version else ""
    head = f"{dataset.path} ({dataset.format}{version}): {rows:,} rows, {sampled:,} sampled, {len(columns)} columns."
    found = [c for c in columns if c.category is not None]
    if not found:
        return head + " No column holds personal data at the set confidence."
    listed = "; ".join(f"{c.column} ({c.category}, {c.confidence:.2f})" for c in found)
    high = [c.column for c in found if c.category and SEVERITY[c.category] == Severity.high]
    tail = f" High-risk: {', '.join(high)}." if high else ""
    return f"{head} {len(found)} hold personal data: {listed}.{tail}"


class PiiClassifier:
    name = "pii_classifier"
    description = "Which columns of a CSV/Parquet dataset hold personal data (email, phone, IDs, cards, IBAN...)."
    Input = PiiInput
    Output = PiiOutput

    def run(self, params: PiiInput, context: AgentContext) -> PiiOutput:
        table = load_table(params.path, params.format, delimiter=params.delimiter, columns=params.columns)
        sample = sample_rows(table.frame, params.sample_rows, params.seed)
        columns = [classify_column(str(name), sample[name], params.min_confidence) for name in sample.columns]
        findings = ranked(dataset_findings(table) + _findings(columns, table.ref))
        output = PiiOutput(
            agent=self.name, summary=_summary(table.ref, len(table.frame), len(sample), columns), findings=findings,
            reads=[table.ref.path], dataset=table.ref, rows=len(table.frame), sampled_rows=len(sample),
            columns=columns, pii_columns=[c.column for c in columns if c.category is not None],
            gdpr=gdpr_summary(columns))
        document = output.model_dump_json(indent=2, exclude={"evidence", "llm", "writes"})
        evidence = context.put_evidence("pii_classification.json", document.encode("utf-8"),
                                        media_type="application/json",
                                        description=f"PII classification of {table.ref.path} (values redacted)")
        output.evidence.append(evidence)
        output.writes.append(evidence.key)
        return output


AGENT = PiiClassifier()
