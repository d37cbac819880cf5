"""data_analysis: statistics equal pandas/numpy's, outliers and trends on data built to have them,
correlations equal DataFrame.corr, DVC versions from .dvc files, dvc.lock and the real dvc binary,
and one-line input errors naming the field."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from agents.data_analysis import AGENT, DataAnalysisInput, DataAnalysisOutput
from amas.registry import AgentContext, AgentInputError, Severity

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return path


def _run(context: AgentContext, path: Path | str, **fields: object) -> DataAnalysisOutput:
    return AGENT.run(DataAnalysisInput(path=str(path), **fields), context)


def _stats(result: DataAnalysisOutput, name: str):  # noqa: ANN202 - a ColumnStats
    return next(c for c in result.column_stats if c.name == name)


def _mixed_frame(rows: int = 2_000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.normal(100.0, 15.0, rows)
    price[rng.random(rows) < 0.1] = np.nan
    quantity = rng.integers(0, 50, rows).astype("float64")
    quantity[::7] = np.nan
    colours = np.array(["red"] * 10 + ["green"] * 6 + ["blue"] * 3 + ["black"])
    return pd.DataFrame({
        "price": price,
        "quantity": quantity,
        "units": rng.integers(-5, 5, rows),
        "colour": colours[np.arange(rows) % len(colours)],
        "shipped": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "flag": np.arange(rows) % 3 == 0,
        "constant": np.full(rows, 4.5),
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_statistics_equal_pandas(tmp_path: Path, agent_context: AgentContext, suffix: str) -> None:
    frame = _mixed_frame()
    result = _run(agent_context, _write(frame, tmp_path / f"mixed{suffix}"))

    assert (result.rows, result.columns) == frame.shape
    assert result.dataset.format == suffix[1:]
    assert result.dataset.path == str(tmp_path / f"mixed{suffix}")
    assert result.reads == [result.dataset.path]
    for name in ("price", "quantity", "units", "constant"):
        column, expected = _stats(result, name), frame[name]
        assert column.kind == "numeric"
        assert (column.count, column.missing, column.unique) == (
            expected.count(), int(expected.isna().sum()), expected.nunique())
        assert column.missing_ratio == pytest.approx(expected.isna().mean(), abs=1e-15)
        summary = column.numeric
        assert summary is not None
        assert summary.mean == pytest.approx(expected.mean(), rel=1e-12)
        assert summary.std == pytest.approx(expected.std(), rel=1e-12, abs=1e-12)
        assert summary.min == expected.min() and summary.max == expected.max()
        for got, q in ((summary.q25, 0.25), (summary.median, 0.5), (summary.q75, 0.75)):
            assert got == pytest.approx(expected.quantile(q), rel=1e-12)
        present = expected.dropna().to_numpy()
        assert summary.mad == pytest.approx(np.median(np.abs(present - np.median(present))), rel=1e-12, abs=1e-12)

    colour = _stats(result, "colour")
    assert colour.kind == "text" and colour.unique == 4
    assert [(t.value, t.count) for t in colour.top_values] == list(frame["colour"].value_counts().items())
    shipped = _stats(result, "shipped")
    assert shipped.kind == "datetime"
    assert shipped.min_time == "2024-01-01T00:00:00" and shipped.max_time == frame["shipped"].max().isoformat()
    flag = _stats(result, "flag")
    assert flag.kind == "boolean"
    assert {(t.value, t.count) for t in flag.top_values} == {("True", 667), ("False", 1333)}


def _outlier_column() -> np.ndarray:
    values = np.arange(1.0, 101.0)
    values[[10, 50, 90]] = [1_000.0, -500.0, 2_000.0]
    return values


def test_outliers_by_iqr_and_modified_z_score(tmp_path: Path, agent_context: AgentContext) -> None:
    values = _outlier_column()
    frame = pd.DataFrame({"load": values, "steady": np.r_[np.full(80, 7.0), np.arange(20.0)]})
    result = _run(agent_context, _write(frame, tmp_path / "load.parquet"), outlier_samples=2)

    column = _stats(result, "load")
    q1, q3 = np.quantile(values, [0.25, 0.75])
    fences = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    assert column.iqr_outliers is not None and column.robust_z_outliers is not None
    assert column.iqr_outliers.count == int(((values < fences[0]) | (values > fences[1])).sum()) == 3
    assert (column.iqr_outliers.lower, column.iqr_outliers.upper) == pytest.approx(fences)
    assert column.robust_z_outliers.count == int((np.abs(0.6745 * (values - median) / mad) > 3.5).sum()) == 3
    assert column.iqr_outliers.ratio == pytest.approx(0.03)
    # Farthest from the median first, limited to outlier_samples.
    assert [(s.row, s.value) for s in column.iqr_outliers.samples] == [(90, 2_000.0), (10, 1_000.0)]
    assert [(s.row, s.value) for s in column.robust_z_outliers.samples] == [(90, 2_000.0), (10, 1_000.0)]

    steady = _stats(result, "steady")
    assert steady.numeric is not None and steady.numeric.mad == 0.0
    assert steady.robust_z_outliers is None  # MAD 0: the modified z-score is undefined
    # Q1 = Q3 = 7, so every value other than 7 is outside the fences.
    assert steady.iqr_outliers is not None and steady.iqr_outliers.count == int((frame["steady"] != 7.0).sum()) == 19

    titles = [f.title for f in result.findings]
    assert "Column 'load' has 3.0% outliers" in titles


def test_trend_against_row_order(tmp_path: Path, agent_context: AgentContext) -> None:
    rng = np.random.default_rng(3)
    x = np.arange(500.0)
    frame = pd.DataFrame({"rising": 3.0 * x + rng.normal(0, 20, 500), "falling": 900.0 - 0.5 * x,
                          "noise": rng.normal(0, 1, 500)})
    frame.loc[::10, "rising"] = np.nan
    result = _run(agent_context, _write(frame, tmp_path / "trend.csv"))

    rising = _stats(result, "rising").trend
    keep = frame["rising"].notna().to_numpy()
    slope, _ = np.polyfit(x[keep], frame["rising"].to_numpy()[keep], 1)
    assert rising is not None and rising.against == "row" and rising.unit == "row"
    assert rising.direction == "increasing" and rising.n == int(keep.sum())
    assert rising.slope == pytest.approx(slope, rel=1e-9)
    assert rising.r2 == pytest.approx(np.corrcoef(x[keep], frame["rising"].to_numpy()[keep])[0, 1] ** 2, rel=1e-9)
    falling = _stats(result, "falling").trend
    assert falling is not None and falling.direction == "decreasing"
    assert falling.slope == pytest.approx(-0.5) and falling.r2 == pytest.approx(1.0)
    assert falling.change == pytest.approx(-0.5 * 499)
    noise = _stats(result, "noise").trend
    assert noise is not None and noise.direction == "flat" and noise.r2 is not None and noise.r2 < 0.1
    assert any(f.title == "Column 'falling' is decreasing (r²=1.00)" for f in result.findings)


def test_trend_against_a_datetime_column(tmp_path: Path, agent_context: AgentContext) -> None:
    days = pd.date_range("2023-03-01", periods=60, freq="D")
    # Rows out of time order: the slope is per day of the time column, not per row.
    order = np.random.default_rng(1).permutation(60)
    frame = pd.DataFrame({"day": days[order], "stock": 1_000.0 - 2.0 * np.arange(60.0)[order]})
    result = _run(agent_context, _write(frame, tmp_path / "stock.csv"), time_column="day")

    trend = _stats(result, "stock").trend
    assert trend is not None
    assert (trend.against, trend.unit, trend.direction) == ("day", "day", "decreasing")
    assert trend.slope == pytest.approx(-2.0) and trend.r2 == pytest.approx(1.0)
    assert trend.change == pytest.approx(-118.0)
    assert result.time_column == "day" and _stats(result, "day").trend is None


def test_correlated_pairs_equal_dataframe_corr(tmp_path: Path, agent_context: AgentContext) -> None:
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, 3_000)
    frame = pd.DataFrame({
        "base": base + 1e6,  # a large offset must not cost precision
        "double": 2 * base + rng.normal(0, 0.3, 3_000),
        "mirror": -base + rng.normal(0, 0.8, 3_000),
        "weak": base + rng.normal(0, 2.0, 3_000),
        "other": rng.normal(0, 1, 3_000),
        "label": ["x"] * 3_000,
    })
    frame.loc[rng.random(3_000) < 0.15, "double"] = np.nan
    frame.loc[rng.random(3_000) < 0.05, "mirror"] = np.nan
    result = _run(agent_context, _write(frame, tmp_path / "corr.parquet"))

    expected = frame.drop(columns="label").corr()
    strong = {(a, b): expected.loc[a, b] for i, a in enumerate(expected.columns) for b in expected.columns[i + 1:]
              if abs(expected.loc[a, b]) >= 0.7}
    assert {(p.a, p.b) for p in result.correlations} == set(strong) == {("base", "double"), ("base", "mirror"),
                                                                         ("double", "mirror")}
    for pair in result.correlations:
        assert pair.r == pytest.approx(strong[(pair.a, pair.b)], abs=1e-10)
        assert pair.n == int((frame[pair.a].notna() & frame[pair.b].notna()).sum())
    assert [abs(p.r) for p in result.correlations] == sorted((abs(p.r) for p in result.correlations), reverse=True)

    lower = _run(agent_context, tmp_path / "corr.parquet", correlation_threshold=0.3)
    assert ("base", "weak") in {(p.a, p.b) for p in lower.correlations}


def test_findings_and_summary(tmp_path: Path, agent_context: AgentContext) -> None:
    rows = 400
    frame = pd.DataFrame({
        "a": np.arange(rows, dtype="float64"),
        "b": np.arange(rows, dtype="float64") * 2.0,
        "sparse": np.where(np.arange(rows) % 4 == 0, 1.0, np.nan),
        "half": np.where(np.arange(rows) % 5 < 2, np.nan, np.random.default_rng(5).normal(0, 1, rows)),
        "empty": np.full(rows, np.nan),
        "region": ["north"] * rows,
    })
    result = _run(agent_context, _write(frame, tmp_path / "f.parquet"))

    by_title = {f.title: f for f in result.findings}
    assert by_title["Column 'empty' is empty"].severity == Severity.medium
    assert by_title["Column 'sparse' is 75.0% missing"].severity == Severity.medium
    assert by_title["Column 'half' is 40.0% missing"].severity == Severity.low
    assert by_title["Column 'region' is constant"].location == "region"
    assert by_title["Column 'sparse' is constant"].severity == Severity.low
    assert by_title["Columns 'a' and 'b' are almost identical (r=1.000)"].severity == Severity.low
    severities = [f.severity for f in result.findings]
    assert severities[0] == Severity.medium and severities[-1] == Severity.info
    assert result.summary.startswith(f"{tmp_path / 'f.parquet'} (parquet): 400 rows × 6 columns (5 numeric, 1 text).")
    assert "3 column(s) at least 20% missing: sparse, half, empty." in result.summary
    assert "strongest a~b (r=1.000)" in result.summary
    assert "2 constant column(s): sparse, region." in result.summary


def test_evidence_is_the_full_result(tmp_path: Path, agent_context: AgentContext) -> None:
    result = _run(agent_context, _write(_mixed_frame(200), tmp_path / "m.csv"))

    [evidence] = result.evidence
    stored = agent_context.storage.get(evidence.key)
    assert evidence.sha256 == hashlib.sha256(stored).hexdigest() and evidence.size == len(stored)
    assert evidence.media_type == "application/json"
    assert result.writes == [evidence.key]
    assert json.loads(stored) == result.model_dump(mode="json", exclude={"evidence", "llm", "writes"})


def test_text_formats_delimiters_and_dates(tmp_path: Path, agent_context: AgentContext,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eu.csv").write_text("day;amount;note\n31.12.2023;1,5;a\n01.01.2024;2;b\n15.01.2024;3;\n",
                                     encoding="utf-8")
    result = _run(agent_context, tmp_path / "eu.csv")
    assert [c.name for c in result.column_stats] == ["day", "amount", "note"]
    day = _stats(result, "day")
    assert day.kind == "datetime" and (day.min_time, day.max_time) == ("2023-12-31T00:00:00", "2024-01-15T00:00:00")
    note = _stats(result, "note")
    assert (note.count, note.missing) == (2, 1)  # an empty field is missing, as pandas reads it

    with gzip.open(tmp_path / "t.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write("x\ty\n1\t2\n3\t4\n5\t7\n")
    gz = _run(agent_context, tmp_path / "t.tsv.gz")
    y = _stats(gz, "y").numeric
    assert gz.dataset.format == "csv" and y is not None and (y.mean, y.max) == (pytest.approx(13 / 3), 7.0)

    frame = pd.DataFrame({"k": [1, 2, 3], "v": [0.5, 1.5, 2.5]})
    frame.to_parquet(tmp_path / "frame.bin", index=False)
    forced = _run(agent_context, tmp_path / "frame.bin", format="parquet", columns=["v"])
    v = _stats(forced, "v").numeric
    assert forced.columns == 1 and v is not None and v.mean == 1.5

    monkeypatch.chdir(tmp_path)
    relative = _run(agent_context, "eu.csv")
    assert relative.dataset.path == str(tmp_path / "eu.csv")


def _dvc_file(data: Path, md5: str, *, hash_name: bool = True) -> Path:
    dvc_file = data.with_name(data.name + ".dvc")
    lines = ["outs:", f"- md5: {md5}", f"  size: {data.stat().st_size if data.exists() else 0}"]
    lines += ["  hash: md5"] if hash_name else []
    lines += [f"  path: {data.name}", ""]
    dvc_file.write_text("\n".join(lines), encoding="utf-8")
    return dvc_file


def test_dvc_file_gives_the_dataset_version(tmp_path: Path, agent_context: AgentContext) -> None:
    data = _write(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), tmp_path / "x.csv")
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    dvc_file = _dvc_file(data, md5)

    result = _run(agent_context, data)
    assert result.dataset.version == md5
    assert result.dataset.dvc is not None
    assert (result.dataset.dvc.source, result.dataset.dvc.stage) == (str(dvc_file), None)
    assert result.dataset.dvc.matches_workspace is True
    assert f"DVC md5 {md5}" in result.summary

    data.write_text("x\n1\n2\n4\n", encoding="utf-8")
    changed = _run(agent_context, data)
    assert changed.dataset.dvc is not None and changed.dataset.dvc.matches_workspace is False
    assert changed.findings[0].title == "Dataset differs from its DVC-recorded version"

    # DVC 2 records (no `hash: md5`) hashed text with CRLF read as LF.
    data.write_bytes(b"x\r\n1\r\n2\r\n")
    _dvc_file(data, hashlib.md5(b"x\n1\n2\n").hexdigest(), hash_name=False)
    legacy = _run(agent_context, data)
    assert legacy.dataset.dvc is not None and legacy.dataset.dvc.matches_workspace is True


def test_dvc_lock_stage_output_and_tracked_directory(tmp_path: Path, agent_context: AgentContext) -> None:
    (tmp_path / "dvc.yaml").write_text("stages:\n  clean:\n    cmd: python clean.py\n    wdir: pipeline\n"
                                       "    outs:\n    - ../data/clean.parquet\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    data = _write(pd.DataFrame({"v": [1.0, 2.0]}), tmp_path / "data" / "clean.parquet")
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  clean:\n    cmd: python clean.py\n    outs:\n"
        f"    - path: ../data/clean.parquet\n      hash: md5\n      md5: {md5}\n      size: 10\n", encoding="utf-8")
    result = _run(agent_context, data)
    assert result.dataset.version == md5
    assert result.dataset.dvc is not None and result.dataset.dvc.stage == "clean"
    assert result.dataset.dvc.source == str(tmp_path / "dvc.lock")

    raw = tmp_path / "raw"
    raw.mkdir()
    inner = _write(pd.DataFrame({"v": [5.0]}), raw / "part.csv")
    (tmp_path / "raw.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  nfiles: 1\n"
                                      "  hash: md5\n  path: raw\n", encoding="utf-8")
    folder = _run(agent_context, inner)
    assert folder.dataset.version == "0123456789abcdef0123456789abcdef.dir"
    assert folder.dataset.dvc is not None and folder.dataset.dvc.tracked_path == str(raw)
    assert folder.dataset.dvc.matches_workspace is None


def test_unreadable_dvc_lock_is_a_finding_not_a_failure(tmp_path: Path, agent_context: AgentContext) -> None:
    (tmp_path / "dvc.lock").write_text("stages: [unclosed\n", encoding="utf-8")
    result = _run(agent_context, _write(pd.DataFrame({"v": [1.0, 2.0, 3.0]}), tmp_path / "v.csv"))
    assert result.dataset.version is None and result.rows == 3
    [finding] = [f for f in result.findings if f.title == "DVC metadata could not be read"]
    assert finding.severity == Severity.low and finding.detail.startswith(f"{tmp_path / 'dvc.lock'}: ")


def test_missing_dvc_tracked_file_says_how_to_get_it(tmp_path: Path, agent_context: AgentContext) -> None:
    data = tmp_path / "pulled.csv"
    _dvc_file(data, "d41d8cd98f00b204e9800998ecf8427e")
    with pytest.raises(AgentInputError) as pulled:
        _run(agent_context, data)
    message = str(pulled.value)
    assert message.startswith(f"path: {data} is not in the workspace but DVC tracks it")
    assert "`dvc pull" in message and "\n" not in message

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  build:\n    cmd: make\n    outs:\n"
                                       "    - path: out/built.parquet\n      hash: md5\n"
                                       "      md5: 9e107d9d372bb6826bd81d3542a419d6\n", encoding="utf-8")
    with pytest.raises(AgentInputError, match=r"^path: .*built\.parquet is not in the workspace.*`dvc repro build`"):
        _run(agent_context, tmp_path / "out" / "built.parquet")


def test_real_dvc_add_and_repro(tmp_path: Path, agent_context: AgentContext) -> None:
    dvc = Path(sys.executable).parent / "dvc"
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    _write(pd.DataFrame({"n": np.arange(50.0)}), repo / "data" / "raw.csv")
    copy = "import shutil; shutil.copy('data/raw.csv', 'data/copy.csv')"
    (repo / "dvc.yaml").write_text(f'stages:\n  copy:\n    cmd: {sys.executable} -c "{copy}"\n'
                                   "    deps:\n    - data/raw.csv\n    outs:\n    - data/copy.csv\n",
                                   encoding="utf-8")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in (["init", "--no-scm", "-q"], ["add", "-q", "data/raw.csv"], ["repro", "-q"]):
        subprocess.run([str(dvc), *command], cwd=repo, env=env, check=True, capture_output=True, timeout=120)

    added = _run(agent_context, repo / "data" / "raw.csv")
    assert added.dataset.version == hashlib.md5((repo / "data" / "raw.csv").read_bytes()).hexdigest()
    assert added.dataset.dvc is not None and added.dataset.dvc.source == str(repo / "data" / "raw.csv.dvc")
    produced = _run(agent_context, repo / "data" / "copy.csv")
    assert produced.dataset.dvc is not None and produced.dataset.dvc.stage == "copy"
    assert produced.dataset.version == added.dataset.version and produced.dataset.dvc.matches_workspace is True


def test_bad_input_names_the_field(tmp_path: Path, agent_context: AgentContext) -> None:
    with pytest.raises(AgentInputError, match=r"^path: .*nothing\.csv does not exist$"):
        _run(agent_context, tmp_path / "nothing.csv")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(AgentInputError, match=r"^path: unsupported extension '\.xlsx'.*allowed: \.csv"):
        _run(agent_context, tmp_path / "sheet.xlsx")
    with pytest.raises(AgentInputError, match=r"^path: .* is a directory"):
        _run(agent_context, tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(AgentInputError, match=r"^path: cannot read .*broken\.parquet as PARQUET: "):
        _run(agent_context, tmp_path / "broken.parquet")
    data = _write(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), tmp_path / "ok.csv")
    with pytest.raises(AgentInputError, match=r"^columns: no column 'c' in the dataset; columns are: 'a', 'b'$"):
        _run(agent_context, data, columns=["a", "c"])
    with pytest.raises(AgentInputError, match=r"^time_column: no column 'when'"):
        _run(agent_context, data, time_column="when")
    with pytest.raises(AgentInputError, match=r"^time_column: column 'b' holds text values"):
        _run(agent_context, data, time_column="b")
    for fields in ({"path": "x.csv", "format": "excel"}, {"path": " "}, {"path": "x.csv", "top_values": 0},
                   {"path": "x.csv", "correlation_threshold": 1.5}, {"path": "x.csv", "columns": ["a", "a"]}):
        with pytest.raises(ValidationError):
            DataAnalysisInput(**fields)


def test_registered_under_its_name() -> None:
    [entry] = [e for e in entry_points(group="amas.agents") if e.name == "data_analysis"]
    assert entry.load() is AGENT and AGENT.name == "data_analysis"
    assert all(field.description for field in DataAnalysisInput.model_fields.values())


def _bench_module():  # noqa: ANN202 - the script as a module
    spec = importlib.util.spec_from_file_location("bench_data_analysis", REPO / "scripts" / "bench_data_analysis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_dataset_is_deterministic_with_the_planted_features() -> None:
    bench = _bench_module()
    first, again, other = (bench.generate_dataset(5_000, 1), bench.generate_dataset(5_000, 1),
                           bench.generate_dataset(5_000, 2))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert list(first.dtypes.map(str)).count("object") + list(first.dtypes.map(str)).count("str") == 3
    assert 0.005 < first["amount"].isna().mean() < 0.05 and first["unit_price"].max() == 5_000.0
    assert first["created_at"].is_monotonic_increasing


def test_bench_script_measures_both_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    assert bench.main(["--rows", "3000", "--dir", str(tmp_path), "--check"]) == 0
    report = json.loads(capsys.readouterr().out)
    for fmt in ("parquet", "csv"):
        run = report[fmt]
        assert run["file"] == str(tmp_path / f"sales.{fmt}")
        assert (run["rows"], run["columns"]) == (3000, 11)
        # Each run is a fresh process: its peak covers the imports and this small table, not the generator.
        assert 0 < run["seconds"] < 60 and run["rss_after_imports_mb"] <= run["peak_rss_mb"] < 1024
    assert report["within_budget"] is True
    assert len(pd.read_parquet(tmp_path / "sales.parquet")) == 3000
