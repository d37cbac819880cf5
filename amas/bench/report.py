"""A benchmark run as a self-contained HTML page with inline SVG charts, or as Markdown for a Prefect artifact.

The charts are drawn by hand, as ``amas.retention.report.age_chart`` draws its own (no plotting
library is installed, and a page that needs none opens anywhere): latency over time (failures
marked), the exact percentiles, queueing against execution, and for a run of several rates,
throughput achieved and p95 against the target rate. The retention module's helpers are not
imported because that module pulls in the database layer; this one stays pure. Every piece of
text that reaches the page goes through ``html.escape``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amas.bench.results import BenchResult, PhaseSummary, phase_metrics

WIDTH, HEIGHT = 760, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 28, 46
BAR_HEIGHT, LABEL_WIDTH = 20, 170
BLUE, RED, GREEN, ORANGE, GREY = "#2e86c1", "#c0392b", "#1e8449", "#e67e22", "#777"
PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "max")
LATENCY_METRICS = {"p50_ms": "p50", "p90_ms": "p90", "p95_ms": "p95", "p99_ms": "p99", "max_ms": "max"}

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;"
         "text-align:left;font-size:14px}th{background:#f3f3f3}td.n{text-align:right}"
         ".bad{color:#c0392b;font-weight:bold}.ok{color:#1e8449;font-weight:bold}"
         ".verdict{font-size:1.4em}svg{display:block;margin:.5em 0 1.5em}")

e = html.escape


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"
    return str(value)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round-numbered ticks covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


@dataclass
class _Frame:
    """A plot area and its two linear scales."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def left(self) -> float:
        return MARGIN_LEFT

    @property
    def right(self) -> float:
        return self.width - MARGIN_RIGHT

    @property
    def top(self) -> float:
        return MARGIN_TOP

    @property
    def bottom(self) -> float:
        return self.height - MARGIN_BOTTOM

    def x(self, value: float) -> float:
        span = self.x_hi - self.x_lo or 1.0
        return self.left + (value - self.x_lo) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        span = self.y_hi - self.y_lo or 1.0
        return self.bottom - (value - self.y_lo) / span * (self.bottom - self.top)


def _open(label: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" aria-label="{e(label)}" font-family="system-ui,sans-serif">'
            f'<title>{e(label)}</title>')


def _axes(frame: _Frame, x_ticks: Sequence[float], y_ticks: Sequence[float], x_label: str, y_label: str) -> str:
    parts = [f'<line x1="{frame.left}" x2="{frame.right}" y1="{frame.bottom}" y2="{frame.bottom}" stroke="#000"/>',
             f'<line x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{frame.bottom}" stroke="#000"/>']
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(f'<line x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                     f'{e(_fmt(float(tick), 0) if tick >= 10 else f"{tick:g}")}</text>')
    for tick in x_ticks:
        x = frame.x(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.bottom}" y2="{frame.bottom + 4}" stroke="#000"/>')
        parts.append(f'<text x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle" font-size="11">'
                     f'{e(f"{tick:g}")}</text>')
    parts.append(f'<text x="{(frame.left + frame.right) / 2:.1f}" y="{frame.height - 8}" text-anchor="middle" '
                 f'font-size="12">{e(x_label)}</text>')
    parts.append(f'<text x="14" y="{(frame.top + frame.bottom) / 2:.1f}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {(frame.top + frame.bottom) / 2:.1f})">{e(y_label)}</text>')
    return "".join(parts)


def _hline(frame: _Frame, value: float, label: str, colour: str = RED) -> str:
    y = frame.y(value)
    return (f'<line x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-dasharray="5,3"/><text x="{frame.right - 4}" y="{y - 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{colour}">{e(label)}</text>')


def _legend(items: Sequence[tuple[str, str]], frame: _Frame) -> str:
    parts, x = [], frame.left + 8
    for label, colour in items:
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="17" font-size="11">{e(label)}</text>')
        x += 24 + 7 * len(label)
    return "".join(parts)


def _empty(label: str, why: str) -> str:
    return _open(label, WIDTH, 40) + f'<text x="10" y="24" font-size="13" fill="{GREY}">{e(why)}</text></svg>'


def _latency_limits(result: BenchResult) -> list[tuple[float, str]]:
    """Latency thresholds (``p95_ms < 2000``) to draw as lines, each once."""
    seen = {}
    for t in result.thresholds:
        if t.metric in LATENCY_METRICS and t.expression not in seen:
            seen[t.expression] = (t.limit, t.expression)
    return list(seen.values())


def latency_chart(result: BenchResult) -> str:
    """Each finished arrival's latency at its scheduled time: completed in blue, failed as red crosses."""
    label = "Latency over time (scheduled to finished)"
    origin = min((p.started for p in result.phases if p.started is not None), default=0.0)
    points, bounds = [], []
    for phase in result.phases:
        shift = (phase.started - origin) if phase.started is not None else 0.0
        if len(result.phases) > 1:
            bounds.append((shift, phase.label))
        points.extend((t + shift, latency, ok) for t, latency, ok in phase.timeline)
    if not points:
        return _empty(label, "no arrival finished: nothing to plot")
    limits = _latency_limits(result)
    x_ticks = _ticks(0.0, max(p[0] for p in points))
    y_ticks = _ticks(0.0, max([p[1] for p in points] + [v for v, _ in limits]))
    frame = _Frame(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    parts = [_open(label), _axes(frame, x_ticks, y_ticks, "seconds since the run started", "latency (ms)")]
    for start, name in bounds:
        x = frame.x(start)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.bottom}" stroke="{GREY}" '
                     f'stroke-dasharray="2,3"/><text x="{x + 3:.1f}" y="{frame.top + 10}" font-size="10" '
                     f'fill="{GREY}">{e(name)}</text>')
    for t, latency, ok in points:
        x, y = frame.x(t), frame.y(latency)
        if ok:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8" fill="{BLUE}" fill-opacity="0.6"/>')
        else:
            parts.append(f'<path d="M{x - 3:.1f},{y - 3:.1f}L{x + 3:.1f},{y + 3:.1f}M{x - 3:.1f},{y + 3:.1f}'
                         f'L{x + 3:.1f},{y - 3:.1f}" stroke="{RED}" stroke-width="1.5"/>')
    parts += [_hline(frame, value, text) for value, text in limits]
    parts.append(_legend([("completed", BLUE), ("failed", RED)], frame))
    parts.append("</svg>")
    return "".join(parts)


def _bars(label: str, rows: Sequence[tuple[str, float | None, str]], unit: str,
          limits: Sequence[tuple[float, str]] = ()) -> str:
    """Horizontal bars, one per row (label, value, colour), on one shared scale; None is shown as a dash."""
    values = [v for _, v, _ in rows if v is not None]
    if not values:
        return _empty(label, "nothing measured")
    top = max(values + [v for v, _ in limits])
    ticks = _ticks(0.0, top * 1.05)
    height = MARGIN_TOP + BAR_HEIGHT * len(rows) + 30
    span = WIDTH - LABEL_WIDTH - 110
    scale = ticks[-1] or 1.0
    parts = [_open(label, WIDTH, height)]
    for i, (name, value, colour) in enumerate(rows):
        y = MARGIN_TOP + i * BAR_HEIGHT
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end" font-size="12">{e(name)}</text>')
        if value is not None:
            width = span * max(value, 0.0) / scale
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{BAR_HEIGHT - 6}" '
                         f'fill="{colour}"><title>{e(name)}: {e(_fmt(value))} {e(unit)}</title></rect>')
        parts.append(f'<text x="{LABEL_WIDTH + span + 6}" y="{y + 14}" font-size="12">'
                     f'{e(_fmt(value))} {e(unit)}</text>')
    axis_y = MARGIN_TOP + BAR_HEIGHT * len(rows) + 2
    for tick in ticks:
        x = LABEL_WIDTH + span * tick / scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" font-size="10" fill="{GREY}">'
                     f'{e(f"{tick:g}")}</text>')
    for value, text in limits:
        x = LABEL_WIDTH + span * value / scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP - 6}" y2="{axis_y}" stroke="{RED}" '
                     f'stroke-dasharray="5,3"/><text x="{x + 3:.1f}" y="{MARGIN_TOP - 10}" font-size="11" '
                     f'fill="{RED}">{e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def percentile_chart(result: BenchResult) -> str:
    """p50, p90, p95, p99 and max latency of each phase, exact from every completed arrival."""
    colours = {"p50": GREEN, "p90": BLUE, "p95": BLUE, "p99": ORANGE, "max": RED}
    rows = [(f"{phase.label} {key}" if len(result.phases) > 1 else key, phase.latency_ms.get(key), colours[key])
            for phase in result.phases for key in PERCENTILE_KEYS]
    return _bars("Exact latency percentiles (ms)", rows, "ms", _latency_limits(result))


def queue_exec_chart(result: BenchResult) -> str:
    """Queueing delay (scheduled to started) beside execution time (started to finished), p50 and p95."""
    rows = []
    for phase in result.phases:
        prefix = f"{phase.label} " if len(result.phases) > 1 else ""
        for key in ("p50", "p95"):
            rows.append((f"{prefix}queue {key}", phase.queue_ms.get(key), ORANGE))
            rows.append((f"{prefix}exec {key}", phase.exec_ms.get(key), BLUE))
    return _bars("Queueing delay against execution time (ms)", rows, "ms")


def _line_chart(label: str, x_label: str, y_label: str, series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
                limits: Sequence[tuple[float, str]] = (), diagonal: bool = False, mark_x: tuple[float, str] | None = None
                ) -> str:
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts]
    if not xs:
        return _empty(label, "nothing measured")
    x_ticks = _ticks(0.0, max(xs))
    y_ticks = _ticks(0.0, max(ys + [v for v, _ in limits] + (xs if diagonal else [])))
    frame = _Frame(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    parts = [_open(label), _axes(frame, x_ticks, y_ticks, x_label, y_label)]
    if diagonal:
        end = min(frame.x_hi, frame.y_hi)
        parts.append(f'<line x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" x2="{frame.x(end):.1f}" y2="{frame.y(end):.1f}" '
                     f'stroke="{GREY}" stroke-dasharray="4,4"><title>achieved = target</title></line>')
    if mark_x is not None:
        x = frame.x(mark_x[0])
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.bottom}" stroke="{GREEN}" '
                     f'stroke-dasharray="5,3"/><text x="{x + 4:.1f}" y="{frame.top + 12}" font-size="11" '
                     f'fill="{GREEN}">{e(mark_x[1])}</text>')
    for name, colour, pts in series:
        ordered = sorted(pts)
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in ordered)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" fill="{colour}">'
                  f'<title>{e(name)} at {e(f"{x:g}")}/s: {e(_fmt(y))}</title></circle>' for x, y in ordered]
    parts += [_hline(frame, value, text) for value, text in limits]
    parts.append(_legend([(name, colour) for name, colour, _ in series], frame))
    parts.append("</svg>")
    return "".join(parts)


def _held(result: BenchResult) -> tuple[float, str] | None:
    return None if result.held_rate is None else (result.held_rate, f"held {result.held_rate:g}/s")


def throughput_chart(result: BenchResult) -> str:
    """Achieved throughput against the target rate of each step; the dashed diagonal is keeping up exactly."""
    points = [(p.rate, p.throughput) for p in result.phases]
    return _line_chart("Throughput achieved against target rate", "target rate (arrivals/s)", "completed per second",
                       [("throughput", BLUE, points)], diagonal=True, mark_x=_held(result))


def rate_latency_chart(result: BenchResult) -> str:
    """p95 and p99 latency at each target rate, with the latency thresholds."""
    series = [(key, colour, [(p.rate, p.latency_ms[key]) for p in result.phases if p.latency_ms.get(key) is not None])
              for key, colour in (("p95", BLUE), ("p99", ORANGE))]
    return _line_chart("Latency against target rate", "target rate (arrivals/s)", "latency (ms)",
                       [s for s in series if s[2]], _latency_limits(result), mark_x=_held(result))


def charts(result: BenchResult) -> list[tuple[str, str]]:
    """(heading, SVG) for every chart that fits the run; rate charts when the phases differ in rate."""
    found = [("Latency over time", latency_chart(result)), ("Percentiles", percentile_chart(result)),
             ("Queueing and execution", queue_exec_chart(result))]
    if len({p.rate for p in result.phases}) > 1:
        found += [("Throughput against rate", throughput_chart(result)),
                  ("Latency against rate", rate_latency_chart(result))]
    return found


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return _fmt(value)


def _table(headers: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(
        f'<td class="n">{e(_cell(c))}</td>' if isinstance(c, int | float) and not isinstance(c, bool)
        else f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _pairs(mapping: dict[str, Any]) -> str:
    return _table(["", "value"], [[k, v] for k, v in mapping.items()]) if mapping else "<p>None recorded.</p>"


PHASE_HEADERS = ("phase", "rate/s", "arrivals", "completed", "failed", "dropped", "late", "throughput/s",
                 "error rate", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "queue p95 ms", "exec p95 ms",
                 "submit lag p95 ms")


def _phase_row(phase: PhaseSummary) -> list[Any]:
    m = phase_metrics(phase)
    return [phase.label, phase.rate, phase.arrivals, phase.completed, phase.failed, phase.dropped, phase.late,
            phase.throughput, f"{phase.error_rate:.2%}", m["p50_ms"], m["p90_ms"], m["p95_ms"], m["p99_ms"],
            m["max_ms"], m["queue_p95_ms"], m["exec_p95_ms"], phase.submit_lag_ms.get("p95")]


def headline(result: BenchResult) -> str:
    """One line: PASS or FAIL and why."""
    title = result.name or result.kind
    if result.passed:
        held = "" if result.held_rate is None else f"; held {result.held_rate:g}/s"
        return f"PASS: {result.kind} benchmark {title}{held}"
    return f"FAIL: {result.kind} benchmark {title}: " + "; ".join(result.failures)


def _stress_line(result: BenchResult) -> str | None:
    if result.kind != "stress" and result.held_rate is None and not result.broke:
        return None
    held = "no rate held" if result.held_rate is None else f"highest rate held: {result.held_rate:g} arrivals/s"
    broke = "nothing broke before the ceiling" if not result.broke else "broke first: " + ", ".join(
        f"{k} {_cell(v)}" for k, v in result.broke.items())
    return f"{held}; {broke}"


def render_html(result: BenchResult) -> str:
    """The run as one HTML page: verdict, charts, phases, thresholds, regressions, machine, versions, settings."""
    verdict = headline(result)
    verdict_html = ('<p class="verdict"><span class="ok">PASS</span></p>' if result.passed else
                    '<p class="verdict"><span class="bad">FAIL</span></p><ul>'
                    + "".join(f'<li class="bad">{e(f)}</li>' for f in result.failures) + "</ul>")
    stress = _stress_line(result)
    thresholds = (_table(["threshold", "phase", "actual", "verdict"],
                         [[t.expression, t.phase, t.actual, "held" if t.passed else "BREACHED"]
                          for t in result.thresholds]) if result.thresholds else "<p>No thresholds set.</p>")
    regressions = (_table(["metric", "baseline", "current", "worse by", "tolerance"],
                          [[r.metric, r.baseline, r.current, "from zero" if r.change is None else f"{r.change:.0%}",
                            f"{r.tolerance:.0%}"] for r in result.regressions])
                   if result.regressions else "<p>None against the baseline.</p>")
    errors = [[p.label, text, n] for p in result.phases for text, n in p.errors.items()]
    resources = [[p.label, k, v] for p in result.phases for k, v in p.resources.items()]
    chart_html = "\n".join(f"<h3>{e(heading)}</h3>\n{svg}" for heading, svg in charts(result))
    finished = result.finished_at.isoformat() if result.finished_at else "not recorded"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(verdict)}</title>
<style>{STYLE}</style></head><body>
<h1>AMAS {e(result.kind)} benchmark: {e(result.name or result.kind)}</h1>
{verdict_html}
<p>{e(verdict)}</p>
{f"<p>{e(stress)}</p>" if stress else ""}
<p>Started {e(result.started_at.isoformat())}, finished {e(finished)}. Percentiles are exact (nearest rank over
every completed arrival); latency runs from the scheduled arrival time, so generator lag counts against it.</p>
<h2>Phases</h2>
{_table(PHASE_HEADERS, [_phase_row(p) for p in result.phases]) if result.phases else "<p>No phases recorded.</p>"}
<h2>Thresholds</h2>
{thresholds}
<h2>Regressions</h2>
{regressions}
<h2>Charts</h2>
{chart_html}
<h2>Errors</h2>
{_table(["phase", "error", "count"], errors) if errors else "<p>No failed arrivals.</p>"}
<h2>Resources</h2>
{_table(["phase", "measure", "value"], resources) if resources else "<p>None recorded.</p>"}
{"<h2>Component numbers</h2>" + _pairs(result.extra) if result.extra else ""}
<h2>Machine</h2>
{_pairs(result.machine)}
<h2>Versions</h2>
{_pairs(result.versions)}
<h2>Settings</h2>
{_pairs(result.settings)}
</body></html>
"""


def _md(value: Any) -> str:
    """Text for Markdown: HTML escaped (the artifact renders inline HTML), pipes and newlines kept out of tables."""
    return e(_cell(value)).replace("|", "\\|").replace("\n", " ")


def render_markdown(result: BenchResult) -> str:
    """The run as the Markdown of a Prefect artifact: verdict, phases, thresholds, regressions, machine."""
    lines = [f"# {'PASS' if result.passed else 'FAIL'}: {result.kind} benchmark {_md(result.name or result.kind)}", ""]
    lines += [f"- **{_md(f)}**" for f in result.failures]
    stress = _stress_line(result)
    if stress:
        lines += ["", _md(stress)]
    lines += ["", "## Phases", "", "| " + " | ".join(PHASE_HEADERS) + " |",
              "|---|" + "---:|" * (len(PHASE_HEADERS) - 1)]
    lines += ["| " + " | ".join(_md(c) for c in _phase_row(p)) + " |" for p in result.phases]
    if result.thresholds:
        lines += ["", "## Thresholds", "", "| threshold | phase | actual | verdict |", "|---|---|---:|---|"]
        lines += [f"| {_md(t.expression)} | {_md(t.phase)} | {_md(t.actual)} | {'held' if t.passed else '**BREACHED**'} |"
                  for t in result.thresholds]
    if result.regressions:
        lines += ["", "## Regressions", "", "| metric | baseline | current | worse by |", "|---|---:|---:|---:|"]
        lines += [f"| {_md(r.metric)} | {_md(r.baseline)} | {_md(r.current)} | "
                  f"{'from zero' if r.change is None else f'{r.change:.0%}'} |" for r in result.regressions]
    machine = result.machine
    memory = machine.get("memory_bytes")
    lines += ["", "## Machine and versions", "",
              f"{_md(machine.get('cpu_count'))} CPUs ({_md(machine.get('cpu_model'))}), "
              f"{'?' if not memory else f'{memory / 2**30:.1f} GiB'} memory, {_md(machine.get('platform'))}; "
              + ", ".join(f"{k} {v}" for k, v in result.versions.items() if v) + ".",
              "", "Settings: " + _md(result.settings)]
    return "\n".join(lines) + "\n"
