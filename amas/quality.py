"""Great Expectations checks: suites as JSON in ``expectations/``, run in an ephemeral context.

Importing GX takes seconds, so it happens inside ``validate_frame`` only, never at start-up.
A suite file is ``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}], "meta": {...}}``
(GX 1.x expectation configurations), reviewed like code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from amas.errors import AmasError

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None = None
    success: bool
    unexpected_count: int | None = None
    unexpected_sample: list[Any] = Field(default_factory=list)


class QualityReport(BaseModel):
    suite: str
    rows: int
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def to_markdown(self) -> str:
        lines = ["| expectation | column | result | unexpected | sample |", "|---|---|---|---|---|"]
        for o in self.outcomes:
            sample = ", ".join(repr(v) for v in o.unexpected_sample[:5])
            lines.append(f"| {o.expectation} | {o.column or ''} | {'pass' if o.success else 'FAIL'} "
                         f"| {o.unexpected_count if o.unexpected_count is not None else ''} | {sample} |")
        return "\n".join(lines)


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


def validate_frame(frame: pd.DataFrame, suite: str, directory: Path = EXPECTATIONS_DIR) -> QualityReport:
    """Run one suite over a DataFrame and return what passed and what did not."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    definition = load_suite_definition(suite, directory)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    gx_suite = gx.ExpectationSuite(name=suite, meta=definition.get("meta", {}))
    for item in definition["expectations"]:
        try:
            gx_suite.add_expectation_configuration(ExpectationConfiguration(type=item["type"], kwargs=item.get("kwargs", {})))
        except Exception as exc:  # GX raises several types for an unknown expectation or bad kwargs
            raise AmasError(f"suite {suite!r}: expectation {item.get('type')!r} is invalid: {exc}") from None
    gx_suite = context.suites.add(gx_suite)
    batch_definition = (
        context.data_sources.add_pandas("amas")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
    )
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(gx_suite)
    outcomes = [
        ExpectationOutcome(
            expectation=r.expectation_config.type,
            column=r.expectation_config.kwargs.get("column"),
            success=bool(r.success),
            unexpected_count=r.result.get("unexpected_count"),
            unexpected_sample=[_plain(v) for v in (r.result.get("partial_unexpected_list") or [])[:20]],
        )
        for r in result.results
    ]
    return QualityReport(suite=suite, rows=len(frame), success=bool(result.success), outcomes=outcomes)


def _plain(value: Any) -> Any:
    """Samples go into JSON artifacts: turn NaN and numpy scalars into plain values."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
