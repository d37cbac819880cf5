"""Great Expectations checks: suites as JSON in ``expectations/``, run in an ephemeral context.

Importing GX takes seconds, so it happens on the first validation only, never at start-up.
A suite file is ``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}], "meta": {...}}``
(GX 1.x expectation configurations), reviewed like code; ``meta.dataset`` names the dataset
the suite describes.

    report = validate_table(Path("data/raw/people.parquet"), "people")
    print(report.summary_line())
    if not report.success:
        raise ValidationFailed([report])

Unexpected-value samples are data: they may be personal data. Pass ``redact_samples=True``
wherever a report leaves the machine that holds the data (artifacts, lineage, tickets).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from amas.errors import AmasError

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"

MAX_SAMPLES = 20
"""Unexpected values kept per expectation: enough to recognise the problem, few enough to share."""

_INDEX = "amas_index"
_MARKDOWN_SAMPLES = 5
_MARKDOWN_KWARGS = 80
_SUMMARY_FAILURES = 3


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None = None
    success: bool
    kwargs: dict[str, Any] = Field(default_factory=dict, description="The expectation's kwargs as the suite file gives them.")
    unexpected_count: int | None = None
    unexpected_percent: float | None = Field(
        None, description="Unexpected values as a percentage of the non-null values GX looked at."
    )
    unexpected_sample: list[Any] = Field(default_factory=list, max_length=MAX_SAMPLES)
    observed_value: Any = Field(None, description="What GX measured, for aggregate expectations (row count, column set...).")
    details: dict[str, Any] = Field(
        default_factory=dict, description="GX's result details, e.g. the missing and unexpected columns of a column-set check."
    )
    error: str | None = Field(None, description="Why GX could not evaluate the expectation (e.g. a missing column).")

    @property
    def columns(self) -> list[str]:
        """Every column the expectation reads (one, a pair, or a compound key)."""
        names = [self.kwargs.get(key) for key in ("column", "column_A", "column_B")]
        names += list(self.kwargs.get("column_list") or [])
        return [str(name) for name in names if name]


class QualityReport(BaseModel):
    suite: str
    dataset: str | None = None
    rows: int
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def passed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.success]

    def summary_line(self) -> str:
        """One line for logs and flow results, naming the first failures and an example value."""
        name = self.suite
        if self.success:
            return f"{name}: all {len(self.outcomes)} expectations passed on {self.rows:,} rows"
        failed = self.failed
        parts = [_describe_failure(o) for o in failed[:_SUMMARY_FAILURES]]
        if len(failed) > _SUMMARY_FAILURES:
            parts.append(f"and {len(failed) - _SUMMARY_FAILURES} more")
        return (
            f"{name}: {len(failed)} of {len(self.outcomes)} expectations failed on {self.rows:,} rows "
            f"({'; '.join(parts)})"
        )

    def to_markdown(self) -> str:
        """A heading with the verdict, then the failed expectations with samples, then the passed ones."""
        verdict = "PASS" if self.success else "FAIL"
        on = f" on {_code(self.dataset)}" if self.dataset else ""
        lines = [
            f"### Data quality: {self.suite}: {verdict}",
            "",
            f"Suite `{self.suite}`{on}: {self.rows:,} rows, "
            f"{len(self.failed)} of {len(self.outcomes)} expectations failed.",
        ]
        if self.failed:
            lines += [
                "",
                "**Failed**",
                "",
                "| expectation | column | expects | unexpected | observed | sample of unexpected values |",
                "|---|---|---|---|---|---|",
            ]
            for o in self.failed:
                lines.append(
                    f"| {o.expectation} | {_cell(', '.join(o.columns))} | {_kwargs_cell(o.kwargs)} "
                    f"| {_unexpected_cell(o)} | {_observed_cell(o)} | {_sample_cell(o)} |"
                )
        if self.passed:
            lines += [
                "",
                "**Passed**",
                "",
                "| expectation | column | expects | observed |",
                "|---|---|---|---|",
            ]
            for o in self.passed:
                lines.append(
                    f"| {o.expectation} | {_cell(', '.join(o.columns))} | {_kwargs_cell(o.kwargs)} | {_observed_cell(o)} |"
                )
        return "\n".join(lines)


class ValidationFailed(AmasError):
    """One or more suites failed; ``reports`` holds every report that was checked, passed or not."""

    exit_code = 1

    def __init__(self, reports: Sequence[QualityReport]) -> None:
        self.reports: list[QualityReport] = list(reports)
        failed = [r for r in self.reports if not r.success]
        named = ", ".join(
            f"{r.suite} ({len(r.failed)} of {len(r.outcomes)} expectations on {r.rows:,} rows)" for r in failed
        )
        super().__init__(f"data quality check failed: {named or 'no failed suite given'}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect and multiprocessing pickle exceptions; the default would call __init__(message).
        return (type(self), (self.reports,))


def suite_path(name: str, directory: Path = EXPECTATIONS_DIR) -> Path:
    path = directory / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.json"))
        raise AmasError(f"no expectation suite {name!r} in {directory}; known suites: {', '.join(known) or '(none)'}")
    return path


def load_suite_definition(name: str, directory: Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    path = suite_path(name, directory)
    try:
        definition = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AmasError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(definition.get("expectations"), list) or definition.get("name") != name:
        raise AmasError(f"{path}: needs \"name\": {name!r} and an \"expectations\" list")
    return definition


def validate_frame(
    frame: pd.DataFrame,
    suite: str,
    directory: Path = EXPECTATIONS_DIR,
    *,
    dataset: str | None = None,
    redact_samples: bool = False,
) -> QualityReport:
    """Run one suite over a DataFrame and return what passed and what did not.

    ``dataset`` names the data in the report; it defaults to the suite's ``meta.dataset``.
    ``redact_samples`` masks unexpected values (and column aggregates) to their first character.
    """
    definition = load_suite_definition(suite, directory)
    items: list[dict[str, Any]] = definition["expectations"]
    runtime = _runtime()
    gx_suite = runtime.build_suite(suite, definition)
    with runtime.lock:
        result = runtime.validate(frame, gx_suite)
    by_index = {r.expectation_config.meta[_INDEX]: r for r in result.results}
    outcomes = [_outcome(item, by_index[index], redact_samples) for index, item in enumerate(items)]
    return QualityReport(
        suite=suite,
        dataset=dataset if dataset is not None else (definition.get("meta") or {}).get("dataset"),
        rows=len(frame),
        success=all(o.success for o in outcomes),
        outcomes=outcomes,
    )


def validate_table(
    path: Path,
    suite: str,
    directory: Path = EXPECTATIONS_DIR,
    *,
    dataset: str | None = None,
    redact_samples: bool = False,
) -> QualityReport:
    """Read a Parquet file and run one suite over it; ``dataset`` defaults to ``path`` as given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Fail on a missing suite before paying for reading a large file.
    suite_path(suite, directory)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise AmasError(f"cannot validate {path}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise AmasError(f"cannot validate {path}: not a readable Parquet file ({exc})") from None
    frame = table.to_pandas()
    del table
    return validate_frame(
        frame,
        suite,
        directory,
        dataset=dataset if dataset is not None else Path(path).as_posix(),
        redact_samples=redact_samples,
    )


def redact(value: Any) -> Any:
    """A value's masked form: its first character and ``***``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return f"{str(value)[:1]}***"


@dataclass
class _Runtime:
    """One ephemeral GX context per process, with one pandas data source and DataFrame asset.

    Every validation reuses the same batch definition with its own DataFrame as a batch
    parameter, so nothing is created per call and there is nothing to clean up by name. GX's
    execution engine keys loaded data by batch id, which is the same for every DataFrame of an
    asset: validations in one process therefore take ``lock`` in turn.
    """

    gx: Any
    configuration: Any
    batch_definition: BatchDefinition[Any]
    lock: threading.Lock

    def build_suite(self, name: str, definition: Mapping[str, Any]) -> Any:
        """The suite file as a GX suite; each expectation's ``meta`` carries its line number.

        GX groups results by metric rather than in suite order, so the index ties each result
        back to its line in the file. ``add_expectation`` compares whole expectations (the older
        ``add_expectation_configuration`` treats two regexes on one column as the same one and
        silently keeps only the last).
        """
        # The suite is never added to the context: nothing accumulates there across calls.
        gx_suite = self.gx.ExpectationSuite(name=name, meta=definition.get("meta") or {})
        for index, item in enumerate(definition["expectations"]):
            if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
                raise AmasError(f"suite {name!r}: expectation {index + 1} needs a \"type\" and \"kwargs\"; got {item!r}")
            try:
                expectation = self.configuration(
                    type=item["type"], kwargs=dict(item.get("kwargs") or {}), meta={_INDEX: index}
                ).to_domain_obj()
            except Exception as exc:  # GX raises several types for an unknown expectation or bad kwargs
                raise AmasError(f"suite {name!r}: expectation {item.get('type')!r} is invalid: {exc}") from None
            gx_suite.add_expectation(expectation)
            if len(gx_suite.expectations) != index + 1:
                raise AmasError(f"suite {name!r}: expectation {index + 1} ({item['type']}) repeats an earlier one")
        return gx_suite

    def validate(self, frame: pd.DataFrame, gx_suite: Any) -> Any:
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        try:
            with warnings.catch_warnings():
                # GX 1.24's column-pair checks call Series.values on tz-aware columns, which pandas 3.1
                # deprecates; the warning is about GX's code, says nothing about the data, and
                # would otherwise land in every flow run's log.
                warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning),
                                        module="pandas")
                return batch.validate(
                    gx_suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_SAMPLES}
                )
        finally:
            # The engine would otherwise hold the last DataFrame (possibly gigabytes) until the
            # next validation or the end of the process.
            engine = self.batch_definition.data_asset.datasource.execution_engine
            if engine is not None:
                engine.batch_manager.batch_data_cache.pop(batch.id, None)
                engine.batch_manager.reset_batch_cache()


_runtime_lock = threading.Lock()
_runtime_instance: _Runtime | None = None


def _runtime() -> _Runtime:
    global _runtime_instance
    with _runtime_lock:
        if _runtime_instance is None:
            # GX logs its import-time registrations and its ephemeral docs-site directory at INFO:
            # noise in every flow run's log.
            logging.getLogger("great_expectations").setLevel(logging.WARNING)
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.expectations.expectation_configuration import (
                ExpectationConfiguration,
            )

            # GX hashes every frame under 1 GB to fingerprint the batch, which AMAS never reads:
            # 2.6 s of 7.6 s on 1 M people rows (scripts/bench_pipeline.py). A unit test pins the
            # module value, so a GX upgrade that renames it is noticed.
            from great_expectations.execution_engine import pandas_execution_engine

            pandas_execution_engine.HASH_THRESHOLD = 0
            # This module sets its own logger to INFO at import, whatever its parent says.
            logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            batch_definition = (
                context.data_sources.add_pandas("amas")
                .add_dataframe_asset("frame")
                .add_batch_definition_whole_dataframe("whole")
            )
            _runtime_instance = _Runtime(
                gx=gx, configuration=ExpectationConfiguration, batch_definition=batch_definition, lock=threading.Lock()
            )
        return _runtime_instance


def warm_up() -> None:
    """Import GX and build its context now (seconds), e.g. in a thread while other work runs."""
    _runtime()


def _outcome(item: Mapping[str, Any], result: Any, redact_samples: bool) -> ExpectationOutcome:
    kwargs = _json_safe(dict(item.get("kwargs") or {}))
    details = dict(result.result or {})
    sample = _unique([_json_safe(v) for v in details.get("partial_unexpected_list") or []])[:MAX_SAMPLES]
    observed = _json_safe(details.get("observed_value"))
    extra = _json_safe(details.get("details") or {})
    if redact_samples:
        sample = [redact(v) for v in sample]
        # A column's min, max or value counts are as personal as the values themselves;
        # table-level observations (row count, column names) are not.
        if any(k in kwargs for k in ("column", "column_A", "column_list")):
            observed = redact(observed)
            extra = {}
    percent = details.get("unexpected_percent")
    return ExpectationOutcome(
        expectation=str(item["type"]),
        column=kwargs.get("column"),
        success=bool(result.success),
        kwargs=kwargs,
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=None if percent is None else float(percent),
        unexpected_sample=sample,
        observed_value=observed,
        details=extra if isinstance(extra, dict) else {"details": extra},
        error=_error_message(result.exception_info),
    )


def _error_message(info: Any) -> str | None:
    """GX reports an exception either flat or keyed by metric; take the first message."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "an exception without a message")
    for nested in info.values():
        if isinstance(nested, Mapping) and nested.get("raised_exception"):
            return str(nested.get("exception_message") or "an exception without a message")
    return None


def _unique(values: list[Any]) -> list[Any]:
    """Drop repeated samples (a duplicated key shows up once per duplicate), keeping the order."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _json_safe(value: Any) -> Any:
    """Samples, kwargs and observations go into JSON artifacts and lineage: plain values only."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.datetime64 | np.timedelta64):
        return _json_safe(pd.Timestamp(value) if isinstance(value, np.datetime64) else pd.Timedelta(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return str(value)


def _describe_failure(o: ExpectationOutcome) -> str:
    on = f" on {', '.join(o.columns)}" if o.columns else ""
    if o.error:
        return f"{o.expectation}{on}: could not run: {o.error}"
    if o.unexpected_count is not None:
        examples = [v for v in o.unexpected_sample if v is not None]
        example = f", e.g. {examples[0]!r}" if examples else ""
        return f"{o.expectation}{on}: {o.unexpected_count:,} unexpected{example}"
    mismatch = _column_mismatch(o)
    if mismatch:
        return f"{o.expectation}{on}: {mismatch}"
    if o.observed_value is not None:
        return f"{o.expectation}{on}: observed {_short(o.observed_value)}"
    return f"{o.expectation}{on}"


def _column_mismatch(o: ExpectationOutcome) -> str:
    """For a column-set check, which columns are missing and which are not in the contract."""
    mismatched = o.details.get("mismatched")
    if not isinstance(mismatched, Mapping):
        return ""
    parts = [f"{kind} {', '.join(map(str, columns))}" for kind, columns in sorted(mismatched.items()) if columns]
    return "; ".join(parts)


def _short(value: Any, limit: int = _MARKDOWN_KWARGS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(value: Any) -> str:
    """Plain table cells: one line, and a literal pipe must not end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: str) -> str:
    """A code span: regexes and data values shown as they are, never as Markdown or HTML."""
    text = _cell(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _kwargs_cell(kwargs: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in ("column", "column_A", "column_B", "column_list")}
    return ", ".join(f"{k}={_code(_short(v))}" for k, v in shown.items())


def _unexpected_cell(o: ExpectationOutcome) -> str:
    if o.error:
        return f"error: {_code(_short(o.error))}"
    if o.unexpected_count is None:
        return ""
    percent = f" ({o.unexpected_percent:.2f}%)" if o.unexpected_percent is not None else ""
    return f"{o.unexpected_count:,}{percent}"


def _observed_cell(o: ExpectationOutcome) -> str:
    if not o.success and _column_mismatch(o):
        return _cell(_column_mismatch(o))
    return "" if o.observed_value is None else _code(_short(o.observed_value))


def _sample_cell(o: ExpectationOutcome) -> str:
    shown = ", ".join("null" if v is None else _code(repr(v)) for v in o.unexpected_sample[:_MARKDOWN_SAMPLES])
    more = len(o.unexpected_sample) - _MARKDOWN_SAMPLES
    return shown + (f" (+{more} more)" if more > 0 else "")
