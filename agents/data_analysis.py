"""data_analysis: statistics, outliers, trends and correlations of a CSV or Parquet dataset.

Every statistic is computed column-wise with numpy on whole arrays (no per-row Python), so a
million rows by ten columns takes a couple of seconds on two cores (``scripts/bench_data_analysis.py``
measures it). Outliers are counted two ways because they fail differently: Tukey's 1.5×IQR fences
(robust, but flag a lot on skewed data) and Iglewicz–Hoaglin's modified z-score
``|0.6745·(x − median)/MAD| > 3.5`` (undefined when more than half the values are equal, MAD = 0).
Correlations are Pearson's over the rows where both columns have a value, as ``DataFrame.corr``
computes them, but through a few matrix products instead of one pass per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from agents.tabular import DatasetInput, DatasetRef, Table, dataset_findings, load_table
from amas.registry import AgentContext, AgentInputError, AgentResult, Finding, Severity, ranked

ColumnKind = Literal["numeric", "text", "datetime", "boolean", "other"]

IQR_FACTOR = 1.5
MODIFIED_Z_CONSTANT = 0.6745
MODIFIED_Z_LIMIT = 3.5
TOP_VALUE_CHARS = 200
_TIE_SORT_LIMIT = 10_000


class DataAnalysisInput(DatasetInput):
    time_column: str = Field("", description="Datetime (or numeric) column that trends are measured against; "
                                             "empty: against row order.")
    correlation_threshold: float = Field(0.7, ge=0.0, le=1.0, description="List numeric column pairs whose "
                                                                          "Pearson |r| is at least this.")
    missing_threshold: float = Field(0.2, ge=0.0, le=1.0, description="Report columns with at least this share "
                                                                      "of missing values.")
    outlier_ratio_threshold: float = Field(0.02, ge=0.0, le=1.0, description="Report numeric columns with at least "
                                                                             "this share of values outside the "
                                                                             "1.5×IQR fences (normal data: 0.7%).")
    trend_min_r2: float = Field(0.1, ge=0.0, le=1.0, description="Below this r² a trend is called flat.")
    top_values: int = Field(5, ge=1, le=100, description="Most frequent values listed per text column.")
    outlier_samples: int = Field(5, ge=0, le=100, description="Most extreme outliers listed per method and column.")


class NumericSummary(BaseModel):
    mean: float | None
    std: float | None = Field(description="Sample standard deviation (ddof=1), as pandas computes it.")
    min: float | None
    q25: float | None
    median: float | None
    q75: float | None
    max: float | None
    mad: float | None = Field(description="Median absolute deviation from the median (unscaled).")


class TopValue(BaseModel):
    value: str
    count: int


class OutlierSample(BaseModel):
    row: int = Field(description="0-based row position in the dataset.")
    value: float


class Outliers(BaseModel):
    method: Literal["iqr", "robust_z"]
    count: int
    ratio: float = Field(description="count / non-missing values.")
    lower: float = Field(description="Values below this are outliers.")
    upper: float = Field(description="Values above this are outliers.")
    samples: list[OutlierSample] = Field(description="The most extreme outliers, farthest from the median first.")


class Trend(BaseModel):
    against: str = Field(description="'row' (row order) or the time column's name.")
    slope: float = Field(description="Least-squares slope, in column units per `unit`.")
    unit: str = Field(description="'row', 'day' (datetime time column) or the numeric time column's name.")
    r2: float | None = Field(description="Share of variance the line explains; None for a constant column.")
    change: float = Field(description="Fitted change from the first to the last x (slope × x range).")
    direction: Literal["increasing", "decreasing", "flat"]
    n: int = Field(description="Points used (rows where the column and the time column have values).")


class ColumnStats(BaseModel):
    name: str
    dtype: str = Field(description="The pandas dtype.")
    kind: ColumnKind
    count: int = Field(description="Non-missing values.")
    missing: int
    missing_ratio: float
    unique: int = Field(description="Distinct non-missing values.")
    numeric: NumericSummary | None = None
    top_values: list[TopValue] = Field(default_factory=list, description="Text and boolean columns.")
    min_time: str | None = Field(None, description="Datetime columns: earliest value, ISO 8601.")
    max_time: str | None = Field(None, description="Datetime columns: latest value, ISO 8601.")
    iqr_outliers: Outliers | None = None
    robust_z_outliers: Outliers | None = Field(None, description="None when MAD is 0.")
    trend: Trend | None = None


class CorrelatedPair(BaseModel):
    a: str
    b: str
    r: float = Field(description="Pearson's r over the rows where both have a value.")
    n: int = Field(description="Rows where both have a value.")


class DataAnalysisOutput(AgentResult):
    dataset: DatasetRef
    rows: int
    columns: int
    column_stats: list[ColumnStats]
    correlations: list[CorrelatedPair] = Field(description="Pairs with |r| >= the threshold, strongest first.")
    correlation_threshold: float
    time_column: str | None = None


def column_kind(series: pd.Series) -> ColumnKind:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype) or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
        return "other"
    if pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(series, skipna=True) == "boolean":
        return "boolean"
    return "text"


def as_float(series: pd.Series) -> np.ndarray:
    """The column as float64 with NaN for missing values (nullable and pyarrow dtypes included)."""
    return series.to_numpy(dtype="float64", na_value=np.nan)


def datetime_days(series: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (UTC for tz-aware columns) as float64, NaN for missing, at any resolution."""
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = series.to_numpy()
    unit, _ = np.datetime_data(stamps.dtype)
    return (stamps - np.datetime64(0, unit)) / np.timedelta64(1, "D")


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def sorted_values(full: np.ndarray) -> np.ndarray:
    """The non-missing values of ``full`` in ascending order (one sort serves quantiles and distinct counts)."""
    values = full[~np.isnan(full)]
    values.sort()
    return values


def distinct_sorted(values: np.ndarray) -> int:
    """Distinct values of an ascending array."""
    return int(values.size and 1 + np.count_nonzero(values[1:] != values[:-1]))


def quantile_sorted(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear method, numpy's interpolation formula) of an ascending array."""
    position = q * (values.size - 1)
    low = int(np.floor(position))
    high = min(low + 1, values.size - 1)
    fraction = position - low
    a, b = float(values[low]), float(values[high])
    with np.errstate(invalid="ignore"):
        return b - (b - a) * (1.0 - fraction) if fraction >= 0.5 else a + (b - a) * fraction


def numeric_summary(values: np.ndarray) -> NumericSummary:
    """Summary of ``values``: the non-missing values in ascending order (see ``sorted_values``)."""
    if values.size == 0:
        return NumericSummary(mean=None, std=None, min=None, q25=None, median=None, q75=None, max=None, mad=None)
    median = quantile_sorted(values, 0.5)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = values.mean()
        std = values.std(ddof=1) if values.size > 1 else np.nan
        mad = np.median(np.abs(values - median))
    return NumericSummary(mean=_finite(mean), std=_finite(std), min=_finite(values[0]),
                          q25=_finite(quantile_sorted(values, 0.25)), median=_finite(median),
                          q75=_finite(quantile_sorted(values, 0.75)), max=_finite(values[-1]), mad=_finite(mad))


def _extreme_samples(full: np.ndarray, mask: np.ndarray, center: float, limit: int) -> list[OutlierSample]:
    rows = np.flatnonzero(mask)
    if limit == 0 or rows.size == 0:
        return []
    distance = np.abs(full[rows] - center)
    if rows.size > limit:
        # Keep everything tied with the limit-th distance so the order below, not the
        # partition, decides which rows are shown.
        cutoff = np.partition(distance, rows.size - limit)[rows.size - limit]
        keep = distance >= cutoff
        rows, distance = rows[keep], distance[keep]
    order = np.lexsort((rows, -distance))[:limit]
    return [OutlierSample(row=int(rows[i]), value=float(full[rows[i]])) for i in order]


def iqr_outliers(full: np.ndarray, summary: NumericSummary, count: int, limit: int) -> Outliers | None:
    """Values outside [Q1 − 1.5·IQR, Q3 + 1.5·IQR]; ``full`` keeps NaN for missing so rows keep positions."""
    if count == 0 or summary.q25 is None or summary.q75 is None or summary.median is None:
        return None
    spread = summary.q75 - summary.q25
    lower, upper = summary.q25 - IQR_FACTOR * spread, summary.q75 + IQR_FACTOR * spread
    with np.errstate(invalid="ignore"):
        mask = (full < lower) | (full > upper)
    hits = int(mask.sum())
    return Outliers(method="iqr", count=hits, ratio=hits / count, lower=lower, upper=upper,
                    samples=_extreme_samples(full, mask, summary.median, limit))


def robust_z_outliers(full: np.ndarray, summary: NumericSummary, count: int, limit: int) -> Outliers | None:
    """Values whose modified z-score |0.6745·(x − median)/MAD| exceeds 3.5; None when MAD is 0."""
    if count == 0 or not summary.mad or summary.median is None:
        return None
    median, mad = summary.median, summary.mad
    with np.errstate(invalid="ignore"):
        mask = np.abs(MODIFIED_Z_CONSTANT * (full - median) / mad) > MODIFIED_Z_LIMIT
    hits = int(mask.sum())
    reach = MODIFIED_Z_LIMIT * mad / MODIFIED_Z_CONSTANT
    return Outliers(method="robust_z", count=hits, ratio=hits / count, lower=median - reach, upper=median + reach,
                    samples=_extreme_samples(full, mask, median, limit))


def linear_trend(x: np.ndarray, y: np.ndarray, *, against: str, unit: str, min_r2: float) -> Trend | None:
    """Least-squares line of ``y`` on ``x`` over the points where both are finite."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:  # two points always lie on a line: r² = 1 says nothing
        return None
    # Centring first keeps the sums small: day numbers near 20,000 would otherwise cancel.
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    if sxx == 0.0:
        return None
    slope = sxy / sxx
    r2 = min(1.0, sxy * sxy / (sxx * syy)) if syy > 0.0 else None
    direction: Literal["increasing", "decreasing", "flat"] = "flat"
    if r2 is not None and r2 >= min_r2 and slope != 0.0:
        direction = "increasing" if slope > 0 else "decreasing"
    return Trend(against=against, slope=slope, unit=unit, r2=r2, change=slope * float(x.max() - x.min()),
                 direction=direction, n=int(x.size))


def correlated_pairs(columns: Sequence[tuple[str, np.ndarray, float]], threshold: float,
                     min_periods: int = 3) -> list[CorrelatedPair]:
    """Pearson's r for every pair of ``(name, values with NaN for missing, mean)``, pairwise-complete.

    For a pair (i, j) the sums over rows where both have a value come from matrix products:
    with X the centred values (0 where missing) and M the presence mask, n = MᵀM, Σx = XᵀM,
    Σx² = (X∘X)ᵀM, Σxy = XᵀX. Centring first keeps the sums small, so little cancels.
    """
    if len(columns) < 2:
        return []
    names = [name for name, _, _ in columns]
    rows, width = columns[0][1].size, len(columns)
    centred = np.empty((rows, width), dtype="float64", order="F")
    for j, (_, values, mean) in enumerate(columns):
        np.subtract(values, mean, out=centred[:, j])
    present = ~np.isnan(centred)
    if present.all():
        n = np.full((width, width), float(rows))
        sums = np.zeros_like(n)
        prod = centred.T @ centred
        squares = np.broadcast_to(np.diag(prod)[:, None], n.shape)
    else:
        mask = present.astype("float64")
        del present
        np.nan_to_num(centred, copy=False, nan=0.0)
        n = mask.T @ mask
        sums = centred.T @ mask
        prod = centred.T @ centred
        np.square(centred, out=centred)
        squares = centred.T @ mask
        del mask
    del centred
    cov = n * prod - sums * sums.T
    var = n * squares - sums * sums
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var * var.T)
    pairs = []
    for i in range(width):
        for j in range(i + 1, width):
            if n[i, j] >= min_periods and np.isfinite(r[i, j]) and abs(r[i, j]) >= threshold:
                pairs.append(CorrelatedPair(a=names[i], b=names[j], r=float(np.clip(r[i, j], -1.0, 1.0)),
                                            n=int(n[i, j])))
    pairs.sort(key=lambda p: (-abs(p.r), p.a, p.b))
    return pairs


def top_values(series: pd.Series, limit: int) -> tuple[int, list[TopValue]]:
    """(distinct non-missing values, the ``limit`` most frequent with counts; ties by value)."""
    counts = series.value_counts(dropna=True, sort=True)
    if counts.empty:
        return 0, []
    cutoff = counts.iloc[min(limit, len(counts)) - 1]
    head = counts[counts >= cutoff]
    items = [(str(value), int(n)) for value, n in head.items()]
    if len(items) <= _TIE_SORT_LIMIT:
        items.sort(key=lambda item: (-item[1], item[0]))
    return len(counts), [TopValue(value=v[:TOP_VALUE_CHARS], count=n) for v, n in items[:limit]]


def _time_axis(frame: pd.DataFrame, time_column: str) -> tuple[np.ndarray, str]:
    if time_column not in frame.columns:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:30])
        raise AgentInputError(f"time_column: no column {time_column!r} in the dataset; columns are: {shown}")
    series = frame[time_column]
    kind = column_kind(series)
    if kind == "datetime":
        return datetime_days(series), "day"
    if kind == "numeric":
        return as_float(series), time_column
    raise AgentInputError(f"time_column: column {time_column!r} holds {kind} values ({series.dtype}); "
                          f"give a datetime or numeric column, or leave it empty to use row order")


def analyse_frame(frame: pd.DataFrame, params: DataAnalysisInput) -> tuple[list[ColumnStats], list[CorrelatedPair]]:
    """Per-column statistics and correlated pairs of ``frame``; the agent's computation without I/O."""
    rows = len(frame)
    time_column = params.time_column or None
    if time_column is not None:
        x_axis, unit = _time_axis(frame, time_column)
        against = time_column
    else:
        x_axis, unit, against = np.arange(rows, dtype="float64"), "row", "row"
    stats: list[ColumnStats] = []
    numeric: list[tuple[str, np.ndarray, float]] = []
    for name in frame.columns:
        series = frame[name]
        kind = column_kind(series)
        missing = int(series.isna().sum())
        count = rows - missing
        column = ColumnStats(name=str(name), dtype=str(series.dtype), kind=kind, count=count, missing=missing,
                             missing_ratio=missing / rows if rows else 0.0, unique=0)
        if kind == "numeric":
            full = as_float(series)
            values = sorted_values(full)
            column.unique = distinct_sorted(values)
            column.numeric = numeric_summary(values)
            del values
            column.iqr_outliers = iqr_outliers(full, column.numeric, count, params.outlier_samples)
            column.robust_z_outliers = robust_z_outliers(full, column.numeric, count, params.outlier_samples)
            if name != time_column:
                column.trend = linear_trend(x_axis, full, against=against, unit=unit, min_r2=params.trend_min_r2)
            if column.unique > 1 and column.numeric.mean is not None:
                numeric.append((str(name), full, column.numeric.mean))
        elif kind == "datetime":
            column.unique = int(series.nunique(dropna=True))
            if count:
                column.min_time = pd.Timestamp(series.min()).isoformat()
                column.max_time = pd.Timestamp(series.max()).isoformat()
        elif kind in ("text", "boolean"):
            column.unique, column.top_values = top_values(series, params.top_values)
        else:
            column.unique = int(series.nunique(dropna=True))
        stats.append(column)
    pairs = correlated_pairs(numeric, params.correlation_threshold)
    return stats, pairs


def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def build_findings(stats: list[ColumnStats], pairs: list[CorrelatedPair],
                   params: DataAnalysisInput) -> list[Finding]:
    findings: list[Finding] = []
    for column in stats:
        if column.count == 0 and column.missing:
            findings.append(Finding(severity=Severity.medium, title=f"Column {column.name!r} is empty",
                                    detail=f"All {column.missing:,} values are missing.", location=column.name))
            continue
        if column.missing and column.missing_ratio >= params.missing_threshold:
            findings.append(Finding(
                severity=Severity.medium if column.missing_ratio >= 0.5 else Severity.low,
                title=f"Column {column.name!r} is {column.missing_ratio:.1%} missing",
                detail=f"{column.missing:,} of {column.missing + column.count:,} values are missing "
                       f"(threshold {params.missing_threshold:.0%}); check the source or impute before modelling.",
                location=column.name))
        if column.unique == 1:
            findings.append(Finding(severity=Severity.low, title=f"Column {column.name!r} is constant",
                                    detail="Every non-missing value is the same; it carries no information.",
                                    location=column.name))
        iqr = column.iqr_outliers
        if iqr is not None and iqr.count and iqr.ratio >= params.outlier_ratio_threshold:
            robust = column.robust_z_outliers
            robust_text = (f"{robust.count:,} beyond the modified z-score limit of 3.5" if robust is not None
                           else "modified z-score undefined (MAD is 0)")
            findings.append(Finding(
                severity=Severity.low, title=f"Column {column.name!r} has {iqr.ratio:.1%} outliers",
                detail=f"{iqr.count:,} values outside the 1.5×IQR fences [{iqr.lower:.6g}, {iqr.upper:.6g}]; "
                       f"{robust_text}. Rows: {', '.join(str(s.row) for s in iqr.samples) or '-'}.",
                location=column.name))
        trend = column.trend
        if trend is not None and trend.direction != "flat" and trend.r2 is not None and trend.r2 >= 0.5:
            findings.append(Finding(
                severity=Severity.info, title=f"Column {column.name!r} is {trend.direction} (r²={trend.r2:.2f})",
                detail=f"Slope {trend.slope:.6g} per {trend.unit} against {trend.against}; fitted change "
                       f"{trend.change:.6g} over {trend.n:,} points.",
                location=column.name))
    for pair in pairs:
        redundant = abs(pair.r) >= 0.99
        findings.append(Finding(
            severity=Severity.low if redundant else Severity.info,
            title=f"Columns {pair.a!r} and {pair.b!r} are {'almost identical' if redundant else 'strongly correlated'}"
                  f" (r={pair.r:.3f})",
            detail=f"Pearson r={pair.r:.4f} over {pair.n:,} rows (threshold {params.correlation_threshold});"
                   + (" one of them is probably redundant." if redundant else " consider it before modelling."),
            location=f"{pair.a}, {pair.b}"))
    return findings


def build_summary(dataset: DatasetRef, rows: int, stats: list[ColumnStats], pairs: list[CorrelatedPair],
                  params: DataAnalysisInput) -> str:
    kinds = {kind: sum(1 for c in stats if c.kind == kind) for kind in ("numeric", "text", "datetime", "boolean",
                                                                         "other")}
    kind_text = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
    version = f", DVC md5 {dataset.version}" if dataset.version else ""
    parts = [f"{dataset.path} ({dataset.format}{version}): {rows:,} rows × {len(stats)} columns"
             + (f" ({kind_text})" if kind_text else "") + "."]
    missing = [c.name for c in stats if c.missing and c.missing_ratio >= params.missing_threshold]
    if missing:
        parts.append(f"{len(missing)} column(s) at least {params.missing_threshold:.0%} missing: {_names(missing)}.")
    outlying = [c.name for c in stats if c.iqr_outliers and c.iqr_outliers.count
                and c.iqr_outliers.ratio >= params.outlier_ratio_threshold]
    if outlying:
        parts.append(f"{len(outlying)} numeric column(s) with many outliers: {_names(outlying)}.")
    if pairs:
        strongest = pairs[0]
        parts.append(f"{len(pairs)} strongly correlated pair(s) (|r| ≥ {params.correlation_threshold}), strongest "
                     f"{strongest.a}~{strongest.b} (r={strongest.r:.3f}).")
    constant = [c.name for c in stats if c.unique == 1]
    if constant:
        parts.append(f"{len(constant)} constant column(s): {_names(constant)}.")
    trends = [(c.trend.r2, c.name, c.trend) for c in stats
              if c.trend is not None and c.trend.direction != "flat" and c.trend.r2 is not None]
    if trends:
        r2, name, trend = max(trends, key=lambda item: item[0])
        parts.append(f"Strongest trend: {name} {trend.direction} against {trend.against} (r²={r2:.2f}).")
    if len(parts) == 1:
        parts.append("No missing-value, outlier, correlation or constant-column issues at the set thresholds.")
    return " ".join(parts)


class DataAnalysis:
    name = "data_analysis"
    description = "Statistics, outliers (IQR and modified z-score), trends and correlations of a CSV/Parquet dataset."
    Input = DataAnalysisInput
    Output = DataAnalysisOutput

    def run(self, params: DataAnalysisInput, context: AgentContext) -> DataAnalysisOutput:
        table: Table = load_table(params.path, params.format, delimiter=params.delimiter, columns=params.columns)
        frame = table.frame
        stats, pairs = analyse_frame(frame, params)
        findings = ranked(dataset_findings(table) + build_findings(stats, pairs, params))
        output = DataAnalysisOutput(
            agent=self.name, summary=build_summary(table.ref, len(frame), stats, pairs, params), findings=findings,
            reads=[table.ref.path], dataset=table.ref, rows=len(frame), columns=len(frame.columns),
            column_stats=stats, correlations=pairs, correlation_threshold=params.correlation_threshold,
            time_column=params.time_column or None)
        document = output.model_dump_json(indent=2, exclude={"evidence", "llm", "writes"})
        evidence = context.put_evidence("data_analysis.json", document.encode("utf-8"), media_type="application/json",
                                        description=f"Full data analysis of {table.ref.path}")
        output.evidence.append(evidence)
        output.writes.append(evidence.key)
        return output


AGENT = DataAnalysis()
