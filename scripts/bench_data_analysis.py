"""Benchmark the data_analysis agent on a generated dataset, as CSV and as Parquet.

    python scripts/bench_data_analysis.py [--rows 1000000] [--seed 20261125] [--dir DIR] [--check]

Generates a deterministic dataset (numeric, text and date columns with missing values, outliers,
a trend and a correlated pair), writes it as Parquet and CSV, then runs the agent on each file in
a fresh child process so that the peak RSS covers the agent alone, not the generator. The child
reads its peak from ``VmHWM`` in ``/proc/self/status``, which starts afresh at ``exec``; Linux
carries ``getrusage(RUSAGE_SELF).ru_maxrss`` over from the parent through fork and exec, so it
is only the fallback where ``/proc`` is missing. Prints one JSON document; with ``--check`` exits 1
when a run is over the budget (5 s, 1 GiB for a million rows by eleven columns on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 5.0
BUDGET_RSS_MB = 1024.0
CATEGORIES = ("books", "garden", "toys", "music", "kitchen", "sports", "beauty", "tools", "grocery", "office",
              "pets", "auto")
COUNTRIES = ("DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE")
STATUSES = ("paid", "shipped", "returned", "cancelled")


def generate_dataset(rows: int, seed: int) -> pd.DataFrame:
    """A sales-like table: the same ``(rows, seed)`` gives the same frame."""
    rng = np.random.default_rng(seed)
    created = np.datetime64("2024-01-01T00:00:00", "s") + np.sort(rng.integers(0, 365 * 86_400, rows))
    amount = rng.lognormal(mean=3.5, sigma=0.6, size=rows)
    amount[rng.random(rows) < 0.001] *= 100.0  # refunds booked in cents by mistake
    amount[rng.random(rows) < 0.02] = np.nan
    unit_price = rng.normal(50.0, 10.0, rows)
    unit_price[rng.random(rows) < 0.0005] = 5_000.0
    temperature = 10.0 + 15.0 * np.arange(rows) / max(rows - 1, 1) + rng.normal(0.0, 3.0, rows)
    temperature[rng.random(rows) < 0.05] = np.nan
    weights = 1.0 / np.arange(1, len(CATEGORIES) + 1)
    country = np.array(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), rows)]
    country[rng.random(rows) < 0.01] = None
    return pd.DataFrame({
        "order_id": np.arange(1, rows + 1, dtype="int64"),
        "created_at": created,
        "ship_date": (created + rng.integers(1, 10, rows).astype("timedelta64[D]")).astype("datetime64[D]"),
        "amount": amount,
        "discount": np.nan_to_num(amount, nan=30.0) * 0.1 + rng.normal(0.0, 0.5, rows),
        "quantity": rng.poisson(3.0, rows).astype("int64"),
        "unit_price": unit_price,
        "temperature": temperature,
        "category": np.array(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), rows, p=weights / weights.sum())],
        "country": country,
        "status": np.array(STATUSES, dtype=object)[rng.integers(0, len(STATUSES), rows)],
    })


def write_dataset(directory: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """Write the generated table as ``sales.parquet`` and ``sales.csv`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(generate_dataset(rows, seed), preserve_index=False)
    parquet, csv = directory / "sales.parquet", directory / "sales.csv"
    pq.write_table(table, parquet)
    pa_csv.write_csv(table, csv)
    return parquet, csv


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_agent(path: Path) -> dict[str, object]:
    """Run the agent on ``path`` in this process and measure it (call in a fresh process)."""
    sys.path.insert(0, str(REPO))
    from agents.data_analysis import AGENT, DataAnalysisInput
    from amas.config import load_settings
    from amas.db.session import create_store_engine
    from amas.registry import AgentContext
    from amas.storage.local import LocalStorage

    with tempfile.TemporaryDirectory(prefix="amas-bench-") as scratch:
        engine = create_store_engine(f"sqlite:///{Path(scratch) / 'store.db'}")
        context = AgentContext(settings=load_settings(), engine=engine, storage=LocalStorage(Path(scratch) / "s"),
                               task_id=uuid.uuid4(), actor="bench")
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        result = AGENT.run(DataAnalysisInput(path=str(path)), context)
        seconds = time.perf_counter() - started
        engine.dispose()
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "rows": result.rows,
        "columns": result.columns,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_imports_mb": round(rss_before, 1),
        "findings": len(result.findings),
    }


def measure(path: Path) -> dict[str, object]:
    """Run the agent on ``path`` in a child process and return its measurements."""
    child = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True, capture_output=True,
                           text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(child.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--dir", type=Path, default=None, help="Keep the generated files here (default: a temp dir).")
    parser.add_argument("--check", action="store_true", help="Exit 1 when a run is over 5 s or 1 GiB peak RSS.")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_agent(args.child)))
        return 0
    with tempfile.TemporaryDirectory(prefix="amas-bench-data-") as scratch:
        directory = args.dir or Path(scratch)
        started = time.perf_counter()
        parquet, csv = write_dataset(directory, args.rows, args.seed)
        generated = time.perf_counter() - started
        report: dict[str, object] = {"rows": args.rows, "seed": args.seed, "generate_seconds": round(generated, 3),
                                     "cpus": os.cpu_count(), "budget": {"seconds": BUDGET_SECONDS,
                                                                        "peak_rss_mb": BUDGET_RSS_MB},
                                     "parquet": measure(parquet), "csv": measure(csv)}
    runs = [report["parquet"], report["csv"]]
    report["within_budget"] = all(float(r["seconds"]) <= BUDGET_SECONDS  # type: ignore[index]
                                  and float(r["peak_rss_mb"]) <= BUDGET_RSS_MB for r in runs)  # type: ignore[index]
    print(json.dumps(report, indent=2))
    return 1 if args.check and not report["within_budget"] else 0


if __name__ == "__main__":
    sys.exit(main())
