"""What every benchmark run does after measuring: judge, write, compare, publish.

- ``bench_params()``: the ``bench:`` section of ``params.yaml`` (thresholds, tolerance, defaults).
- ``output_dir()``: where a run's files go: ``metrics/bench`` (git- and DVC-tracked, declared as
  metrics and plots in ``dvc.yaml``) for runs meant to be compared, ``AMAS_HOME/bench`` otherwise.
- ``conclude()``: thresholds checked on every phase, the baseline comparison, the files written,
  the baseline saved when asked. Raising on failure is left to the caller (``results.check``),
  after the files and artifacts exist, so a failed run still leaves its evidence.
- ``publish()``: the report, a phase table and the charts as Prefect artifacts.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import yaml

from amas.bench.baseline import compare, load_baseline, save_baseline
from amas.bench.results import BenchResult, metrics, phase_metrics, write_results
from amas.bench.thresholds import Threshold, evaluate, parse_thresholds
from amas.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parents[2]
METRICS_DIR = PROJECT_DIR / "metrics" / "bench"


@functools.cache
def _read_params(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    section = document.get("bench") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: the bench section must be a mapping")
    return section


def bench_params(path: Path | None = None) -> dict[str, Any]:
    """The ``bench:`` section of ``params.yaml`` (empty when there is none)."""
    return _read_params(Path(path or PROJECT_DIR / "params.yaml"))


def thresholds_for(kind: str, given: list[str] | None) -> list[Threshold]:
    """``given``, or ``params.yaml``'s ``bench.<kind>.thresholds``; parsed (a bad one raises, naming it)."""
    if given is None:
        given = (bench_params().get(kind) or {}).get("thresholds") or []
    return parse_thresholds(given)


def tolerance_for(given: float | None) -> float:
    value = given if given is not None else bench_params().get("tolerance", 0.2)
    try:
        tolerance = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bench.tolerance must be a fraction (0.2 = 20%), not {value!r}") from None
    if tolerance < 0:
        raise ConfigError(f"bench.tolerance must be 0 or more (0.2 = 20%), not {tolerance}")
    return tolerance


def output_dir(out: str | None, *, compared: bool) -> Path:
    """``out``; else ``metrics/bench`` for compared runs (baseline) and ``AMAS_HOME/bench`` for the rest."""
    if out:
        return Path(out).expanduser().resolve()
    if compared:
        return METRICS_DIR
    from amas.config import get_settings

    return get_settings().core.home / "bench"


def baseline_path(directory: Path, result: BenchResult) -> Path:
    return directory / "baseline" / f"{result.stem}.json"


def conclude(result: BenchResult, thresholds: list[Threshold], *, directory: Path, use_baseline: bool,
             save: bool, tolerance: float, judge_phases: bool = True) -> dict[str, Path]:
    """Check thresholds and the baseline, write the files, keep the baseline if asked; the files' paths.

    ``judge_phases=False`` (stress) keeps thresholds out of the verdict: there they mark where the
    ramp stopped, and the run is judged by its baseline only. A run that failed is not saved as
    the baseline.
    """
    if judge_phases:
        result.thresholds = [t for phase in result.phases for t in evaluate(phase, thresholds)]
    baseline = baseline_path(directory, result)
    if use_baseline:
        result.regressions = compare(metrics(result), load_baseline(baseline), tolerance=tolerance)
        result.settings["baseline"] = {"path": str(baseline), "tolerance": tolerance,
                                       "found": baseline.exists()}
    paths = write_results(result, directory)
    if save and result.passed:
        paths["baseline"] = save_baseline(result, baseline)
    return paths


def _svg_image(svg: str, title: str) -> str:
    data = base64.b64encode(svg.encode()).decode()
    return f"![{title}](data:image/svg+xml;base64,{data})"


def _bar(value: float | None, top: float, width: int = 30) -> str:
    if value is None or top <= 0:
        return ""
    return "█" * max(1, round(width * value / top))


def text_plot(result: BenchResult) -> str:
    """p95 latency and throughput per phase as Markdown bars (shown wherever the SVG charts are not)."""
    rows = [phase_metrics(p) | {"label": p.label} for p in result.phases]
    top_latency = max((r["p95_ms"] or 0 for r in rows), default=0)
    top_throughput = max((r["throughput"] or 0 for r in rows), default=0)
    lines = ["| phase | p95 latency (ms) | | throughput (/s) | |", "|---|---:|---|---:|---|"]
    for r in rows:
        p95 = r["p95_ms"]
        lines.append(f"| {r['label']} | {'-' if p95 is None else f'{p95:.0f}'} | {_bar(p95, top_latency)} "
                     f"| {r['throughput']:.2f} | {_bar(r['throughput'], top_throughput)} |")
    return "\n".join(lines)


def publish(result: BenchResult, paths: dict[str, Path]) -> None:
    """The report, the phase table and the charts as artifacts of the current flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from amas.bench.report import charts, render_markdown

    key = "bench-" + result.stem.replace("_", "-")
    files = "\n".join(f"- {name}: `{path}`" for name, path in paths.items())
    create_markdown_artifact(key=key, markdown=render_markdown(result) + "\n## Files\n\n" + files + "\n",
                             description=f"{result.kind} benchmark: {'PASS' if result.passed else 'FAIL'}")
    create_table_artifact(key=f"{key}-phases", table=[phase_metrics(p) | {"phase": p.label} for p in result.phases],
                          description=f"{result.stem}: one row per phase (latency in ms, scheduled -> finished)")
    plots = [f"# {result.stem}: plots", "", text_plot(result), ""]
    plots += [f"## {title}\n\n{_svg_image(svg, title)}\n" for title, svg in charts(result)]
    create_markdown_artifact(key=f"{key}-plots", markdown="\n".join(plots),
                             description=f"{result.stem}: latency, percentiles, queueing and throughput charts")
