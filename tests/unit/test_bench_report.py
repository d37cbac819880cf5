"""The HTML page (verdict, inline SVG charts, everything escaped) and the Markdown artifact."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from amas.bench.baseline import compare
from amas.bench.report import render_html, render_markdown
from amas.bench.results import BenchResult, PhaseSummary, Sample, metrics, summarize
from amas.bench.thresholds import evaluate, parse_thresholds

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
HOSTILE = '<script>alert("x")</script> & co'


def step(rate: float, latency_s: float, *, failures: int = 0, start: float = T0) -> PhaseSummary:
    n = 20
    samples = [Sample(i, start + i / rate, start + i / rate, start + i / rate + latency_s / 3,
                      start + i / rate + latency_s * (1 + i / 100), i >= failures, HOSTILE if i < failures else None)
               for i in range(n)]
    return summarize(samples, rate=rate, duration_s=n / rate, started=start)


def load_result(**fields: object) -> BenchResult:
    phase = step(10, 0.5, failures=2)
    base = {"kind": "load", "name": "load", "machine": {"cpu_count": 2, "platform": "Linux"},
            "versions": {"prefect": "3.9.1"}, "settings": {"rate": 10}, "phases": [phase],
            "thresholds": evaluate(phase, parse_thresholds(["p95_ms < 2000"]))}
    return BenchResult.model_validate(base | fields)


def stress_result() -> BenchResult:
    phases = [step(r, 0.2 * r, start=T0 + 10 * i) for i, r in enumerate((2, 4, 8))]
    thresholds = parse_thresholds(["p95_ms < 1000"])
    return BenchResult(kind="stress", name="stress_sqlite", machine={"cpu_count": 2}, versions={},
                       phases=phases, held_rate=4, broke={"threshold": "p95_ms < 1000", "at_rate": 8},
                       thresholds=evaluate(phases[-1], thresholds))


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.S)


def test_load_page_has_verdict_tables_and_three_charts() -> None:
    page = render_html(load_result())
    assert '<span class="ok">PASS</span>' in page
    charts = svgs(page)
    labels = [ET.fromstring(svg).get("aria-label") for svg in charts]  # each is well-formed XML
    assert labels == ["Latency over time (scheduled to finished)", "Exact latency percentiles (ms)",
                      "Queueing delay against execution time (ms)"]
    assert "<circle" in charts[0] and "<path" in charts[0]  # completed points and failure crosses
    assert "p95_ms &lt; 2000" in charts[1]  # the threshold line on the percentile chart
    assert "<h2>Machine</h2>" in page and "3.9.1" in page


def test_failed_run_says_which_threshold_and_regression() -> None:
    run = load_result()
    run.thresholds = evaluate(run.phases[0], parse_thresholds(["p95_ms < 100", "error_rate < 0.5"]))
    run.regressions = compare({"load": {"p95_ms": 900.0}}, {"load": {"p95_ms": 500.0}}, tolerance=0.2)
    page = render_html(run)
    assert '<span class="bad">FAIL</span>' in page
    assert "threshold p95_ms &lt; 100 at 10/s breached" in page
    assert "regression: load.p95_ms rose from 500 to 900 (80% worse; tolerance 20%)" in page
    assert "error_rate &lt; 0.5 at 10/s breached" not in page


def test_stress_page_adds_rate_charts() -> None:
    page = render_html(stress_result())
    labels = [ET.fromstring(svg).get("aria-label") for svg in svgs(page)]
    assert "Throughput achieved against target rate" in labels and "Latency against target rate" in labels
    assert "highest rate held: 4 arrivals/s; broke first: threshold p95_ms &lt; 1000, at_rate 8" in page
    assert page.count("<polyline") == 3  # throughput, p95, p99 against rate


def test_hostile_text_is_escaped_everywhere() -> None:
    run = load_result(name=HOSTILE, settings={HOSTILE: HOSTILE}, machine={"platform": HOSTILE},
                      extra={"note": HOSTILE})
    page = render_html(run)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    for svg in svgs(page):
        ET.fromstring(svg)
    assert run.stem == "script_alert_x_script_co"


def test_no_samples_still_renders() -> None:
    empty = BenchResult(kind="load", machine={}, versions={}, phases=[summarize([], rate=1, duration_s=1)])
    page = render_html(empty)
    assert "no arrival finished" in page and "nothing measured" in page
    for svg in svgs(page):
        ET.fromstring(svg)


def test_markdown() -> None:
    run = load_result()
    run.thresholds = evaluate(run.phases[0], parse_thresholds(["p95_ms < 100"]))
    text = render_markdown(run)
    assert text.startswith("# FAIL: load benchmark load\n")
    assert "| p95_ms &lt; 100 | 10/s |" in text and "**BREACHED**" in text
    assert "2 CPUs" in text


def test_markdown_escapes_and_keeps_tables_whole() -> None:
    run = load_result(name=HOSTILE, settings={"x": HOSTILE})
    run.phases[0] = run.phases[0].model_copy(update={"name": "a|b\nc"})
    text = render_markdown(run)
    assert "<script>" not in text
    row = next(line for line in text.splitlines() if line.startswith("| a"))
    assert row.count("|") - row.count("\\|") == 18  # 17 columns: the pipe in the name is escaped


def test_markdown_pass_and_metrics_agree() -> None:
    run = load_result()
    assert render_markdown(run).startswith("# PASS")
    assert metrics(run)["load"]["passed"] == 1
