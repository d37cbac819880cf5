"""Benchmark the data pipeline end to end: time and memory per stage, validation and lineage shares,
DVC against md5sum, and the cost of one lineage event.

    .venv/bin/python scripts/bench_pipeline.py [--rows 1000000 [--rows 10000000]] [--workdir DIR] [--keep]
        [--events 2000] [--no-http] [--only imports|lineage|pipeline ...] [--stage-timeout 3600]
        [--out PATH] [--check]

Issue 4 asks for the pipeline on 1 and 10 million generated rows, the share of time spent in
validation and lineage, ``dvc add``/``dvc status`` against ``md5sum`` of the same files, and lineage
emission under 1 ms per event. Three parts:

imports
    ``python -c "import X"`` twice each for Great Expectations, DVC, the OpenLineage client,
    pyarrow+pandas and the pipeline's own modules, against a bare interpreter: what every stage
    process pays before it reads a row.
lineage
    In a fresh process, N realistic COMPLETE events (the clean stage's: 4 inputs and 3 outputs with
    schema, version, ownership, column-lineage and PII-tag facets, and a parent run) through
    ``LineageEmitter`` and the file transport, alternating event by event with the baseline: the
    same JSON line written with ``json.dumps`` and a file append. Mean, median, p99 and max ms per
    event, and the ratio. Then the same events through the HTTP transport to a receiver in another
    local process (``--no-http`` skips it). Target (``--check``): file transport mean < 1 ms.
pipeline
    For each ``--rows`` (events; people rows/10, cases and notes rows/20): a copy of the pipeline
    (dvc.yaml, dvc.lock, params.yaml, .dvc/config, amas/, expectations/) in a new git repository
    under ``--workdir`` with ``generate.rows`` set, then every stage of dvc.yaml in order, each in its
    own process, as ``python -m amas.pipeline stage NAME`` runs it (the child calls the same
    ``amas.pipeline.__main__.main``) with lineage to a file in the workspace's AMAS_HOME. The parent
    takes wall time and CPU from ``os.wait4``; the child reports its peak RSS (``VmHWM``, which exec
    resets; ``ru_maxrss`` is kept as a cross-check) and wraps the pipeline's own functions with timers
    to split the stage's time into exclusive parts: startup (interpreter and imports, up to
    ``run_stage``), GX initialisation (importing great_expectations and its context, on first
    validation), validation (``validate_table``/``validate_frame``), ``to_pandas`` for GX (the rest of
    ``_check_and_write``), dataset-version md5s, describing inputs, lineage emission, reads, writes
    and the stage's own computing. Validation = GX init + validation + to_pandas; lineage = emission
    + md5s + describing inputs. A sampler thread records the RSS peak of each part.
    Then the DVC comparison on every output the stages produced, copied into a fresh git+DVC
    repository: ``md5sum`` twice (the second is compared, both warm in the page cache), ``dvc status``
    with nothing tracked (DVC's fixed cost), ``dvc add`` of the files (no state database yet) and
    ``dvc status`` (warm state database), once with the project's cache setting (``.dvc/config``:
    reflink, hardlink, copy) and once with DVC's default (reflink, copy; a full copy on ext4).

Nothing under the repository's ``data/`` is read or written: workspaces live in ``--workdir`` (default
a temporary directory, removed at the end) and each is deleted after its size is measured unless
``--keep``. Writes a rich table to the terminal and a JSON report (machine, load averages, every
measurement, verdicts) to --out, rewritten after each part so a long run leaves its figures behind.
Exit status: 1 when a part fails or a correctness check fails (a stage failed, lineage events missing,
a DVC digest differs from md5sum) or, with --check, when the lineage target is missed; otherwise 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

# rich is imported where the parent renders: a stage child must not pay for it.
if TYPE_CHECKING:
    from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
# scripts/ only, not the repository: a stage child imports amas from its workspace (PYTHONPATH).
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))

from _bench import Verdicts, exit_code, git_state, load_average, package_versions, utc_now  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SCHEMA = "amas-bench-pipeline/1"
PARTS = ("imports", "lineage", "pipeline")
LINEAGE_MAX_MS = 1.0
SLOW_STAGE_SECONDS = 600.0
LARGE_STAGE_MIB = 8192.0
MIB = 1 << 20
IMPORTS: dict[str, str] = {
    "interpreter": "pass",
    "great_expectations": "import great_expectations",
    "dvc": "import dvc.repo",
    "openlineage": "import openlineage.client",
    "pyarrow+pandas": "import pyarrow.parquet, pandas",
    "amas pipeline": "import amas.pipeline.runner, amas.pipeline.stages, amas.lineage.facets",
}
VALIDATION_PARTS = ("gx_init", "validate", "to_pandas")
LINEAGE_PARTS = ("emit", "md5", "describe")
PROFILE_PARTS = ("startup", *VALIDATION_PARTS, *LINEAGE_PARTS, "read", "write", "compute")
DVC_VARIANTS = {"project": "project .dvc/config (reflink,hardlink,copy)", "default": "DVC default (reflink,copy)"}


def rounded(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def share(part: float, whole: float) -> float:
    return rounded(part / whole, 4) if whole > 0 else 0.0


def ms_stats(nanoseconds: list[int]) -> dict[str, float]:
    values = [n / 1e6 for n in nanoseconds]
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) >= 2 else values[0]
    return {"mean_ms": rounded(statistics.fmean(values), 4), "median_ms": rounded(statistics.median(values), 4),
            "p99_ms": rounded(p99, 4), "max_ms": rounded(max(values), 4)}


def machine_info() -> dict[str, Any]:
    packages = ("great-expectations", "dvc", "openlineage-python", "pyarrow", "pandas", "numpy")
    info: dict[str, Any] = {"hostname": platform.node(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "python": platform.python_version(),
                            "versions": package_versions(packages)}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mib"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    info["git"] = git_state(REPO)
    return info


def base_env(pythonpath: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its AMAS, OpenLineage and DVC settings, importing ``pythonpath``'s amas."""
    dropped = ("AMAS_", "OPENLINEAGE_", "DVC_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update({"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(pythonpath),
                "AMAS_ENV_FILE": "", "DVC_NO_ANALYTICS": "1"})
    env.update(extra or {})
    return env


def dvc_env(home: Path) -> dict[str, str]:
    """Keep the user's and the machine's DVC config and caches out of the measurement."""
    return {"DVC_GLOBAL_CONFIG_DIR": str(home / "global"), "DVC_SYSTEM_CONFIG_DIR": str(home / "system"),
            "DVC_SITE_CACHE_DIR": str(home / "site-cache")}


def timed_run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 3600) -> tuple[float, str]:
    """Run a command to completion; its wall seconds and stdout. Raises on a non-zero exit."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({result.returncode}):\n{tail}")
    return seconds, result.stdout


def run_measured(argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> dict[str, Any]:
    """Run a child with its output in ``log``; wall seconds and its own rusage from ``os.wait4``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    started = time.perf_counter()
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": proc.returncode, "wall_s": wall, "timed_out": killed.is_set(),
            "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime, "ru_maxrss_mib": usage.ru_maxrss / 1024}


class Progress:
    """One line per step on the console (a long run under nohup leaves a readable log)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[{elapsed:7.1f} s] {text}", markup=False, highlight=False)


def measure_imports(workdir: Path, repeat: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Wall seconds of ``python -c "import X"``, first run and best of the rest, against a bare interpreter."""
    env = base_env(REPO)
    results: dict[str, Any] = {}
    for label, code in IMPORTS.items():
        runs = [timed_run([sys.executable, "-c", code], workdir, env, timeout=300)[0] for _ in range(repeat)]
        results[label] = {"code": code, "runs_s": [rounded(r) for r in runs], "first_s": rounded(runs[0]),
                          "warm_s": rounded(min(runs[1:] or runs))}
        say(f"import {label}: first {runs[0]:.2f} s, warm {results[label]['warm_s']:.2f} s")
    bare = results["interpreter"]["warm_s"]
    for entry in results.values():
        entry["warm_minus_interpreter_s"] = rounded(max(entry["warm_s"] - bare, 0.0))
    return {"repeat": repeat, "modules": results}


def measure_lineage(events: int, http: bool, workdir: Path, keep: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The lineage micro-benchmark in a fresh child process (see ``child_lineage``)."""
    directory = workdir / "lineage"
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "report.json"
    argv = [sys.executable, __file__, "--child-lineage", "--child-report", str(report), "--events", str(events)]
    if not http:
        argv.append("--no-http")
    say(f"lineage: {events} events through the file transport{' and HTTP' if http else ''}")
    try:
        timed_run(argv, directory, base_env(REPO), timeout=1800)
        result = json.loads(report.read_text())
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    file = result["file"]
    say(f"lineage file transport: mean {file['emitter']['mean_ms']:.3f} ms/event, "
        f"p99 {file['emitter']['p99_ms']:.3f} ms; baseline {file['baseline']['mean_ms']:.3f} ms")
    return result


def prepare_workspace(work: Path, rows: int) -> Path:
    """A copy of the pipeline (what a clone has, no data) in a new git repository, ``generate.rows`` set."""
    from amas.pipeline.workspace import copy_pipeline

    copy_pipeline(work, REPO)
    params_file = work / "params.yaml"
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    params["generate"]["rows"] = rows
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return work


def pipeline_stages(work: Path) -> dict[str, list[str]]:
    """Stage name -> its outputs, in dvc.yaml's order (the pipeline's order)."""
    document = yaml.safe_load((work / "dvc.yaml").read_text(encoding="utf-8"))
    return {name: [str(out) for out in entry.get("outs") or []] for name, entry in document["stages"].items()}


def summarise_stage(name: str, measured: dict[str, Any], child: dict[str, Any] | None) -> dict[str, Any]:
    wall = measured["wall_s"]
    record: dict[str, Any] = {
        "stage": name, "exit_code": measured["exit_code"], "timed_out": measured["timed_out"],
        "wall_s": rounded(wall), "cpu_s": rounded(measured["cpu_user_s"] + measured["cpu_sys_s"]),
        "cpu_user_s": rounded(measured["cpu_user_s"]), "cpu_sys_s": rounded(measured["cpu_sys_s"]),
        "ru_maxrss_mib": rounded(measured["ru_maxrss_mib"], 1),
    }
    if child is None:
        record["peak_rss_mib"] = record["ru_maxrss_mib"]
        return record
    profile = {part: child["seconds"].get(part, 0.0) for part in PROFILE_PARTS if part != "startup"}
    # Interpreter start, imports, settings and teardown: everything outside run_stage.
    profile["startup"] = max(wall - child["stage_s"], 0.0)
    validation = sum(profile[p] for p in VALIDATION_PARTS)
    lineage = sum(profile[p] for p in LINEAGE_PARTS)
    calls = child["calls"]
    heaviest = max(calls, key=lambda c: c["rss_after_mib"], default=None)
    peaks = child["peak_rss_mib"]
    record.update({
        "peak_rss_mib": rounded(child["vm_hwm_mib"] or measured["ru_maxrss_mib"], 1),
        "stage_s": rounded(child["stage_s"]),
        "profile_s": {part: rounded(profile[part]) for part in PROFILE_PARTS},
        "validation_s": rounded(validation), "lineage_s": rounded(lineage),
        "validation_share": share(validation, wall), "lineage_share": share(lineage, wall),
        "lineage_events": child["lineage_events"],
        "lineage_ms_per_event": rounded(1000 * profile["emit"] / child["lineage_events"], 3)
        if child["lineage_events"] else None,
        "peak_rss_by_part_mib": {part: rounded(value, 1) for part, value in sorted(peaks.items())},
        "peak_part": max(peaks, key=peaks.get) if peaks else None,
        "heaviest_call": heaviest,
        "calls": calls,
        "rss_timeline": child["timeline"],
    })
    return record


def run_stages(work: Path, stages: dict[str, list[str]], timeout: float,
               say: Callable[[str], None]) -> list[dict[str, Any]]:
    env = base_env(work, {"AMAS_HOME": str(work / ".amas"), "AMAS_LINEAGE_TRANSPORT": "file",
                          **dvc_env(work.parent / "dvc-home")})
    records = []
    for name in stages:
        report = work.parent / "child" / f"{name}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.unlink(missing_ok=True)
        report.with_suffix(".rss.jsonl").unlink(missing_ok=True)
        argv = [sys.executable, __file__, "--child-stage", name, "--child-report", str(report)]
        say(f"stage {name} ...")
        log = work.parent / "logs" / f"{name}.log"
        measured = run_measured(argv, work, env, log, timeout)
        child = json.loads(report.read_text()) if report.exists() else None
        record = summarise_stage(name, measured, child)
        trace = report.with_suffix(".rss.jsonl")
        if child is None and trace.exists():
            # Killed before it could report: the sampler's trace shows where the memory went.
            points = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
            record["rss_timeline"] = points
            record["peak_part"] = max(points, key=lambda p: p[1])[2] if points else None
        record["log_tail"] = log.read_text(errors="replace").strip().splitlines()[-3:]
        records.append(record)
        say(f"stage {name}: exit {record['exit_code']}, {record['wall_s']:.2f} s, "
            f"peak RSS {record['peak_rss_mib']:,.0f} MiB")
        if record["exit_code"] != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-25:]
            record["error"] = (f"timed out after {timeout:g} s\n" if measured["timed_out"] else "") + "\n".join(tail)
            break
    return records


def lineage_file_check(work: Path, ran: list[str]) -> dict[str, Any]:
    """What the stages wrote to the workspace's lineage file: START and COMPLETE per stage, in order."""
    path = work / ".amas" / "lineage" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    runs, sizes = [], Counter()
    largest: dict[str, Any] = {"bytes": 0}
    for line in lines:
        event = json.loads(line)
        key = (event["job"]["name"], event["eventType"])
        runs.append(key)
        sizes[key[0]] += len(line) + 1
        if len(line) + 1 > largest["bytes"]:
            largest = {"bytes": len(line) + 1, "job": key[0], "event_type": key[1]}
    expected = [(f"pipeline.{stage}", kind) for stage in ran for kind in ("START", "COMPLETE")]
    return {"events": len(runs), "ok": runs == expected, "bytes": sum(sizes.values()),
            "bytes_by_job": dict(sizes), "largest_event": largest}


def dvc_repository(directory: Path, env: dict[str, str], variant: str) -> None:
    directory.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=directory, check=True, timeout=60)
    timed_run([str(VENV_BIN / "dvc"), "init", "-q"], directory, env, timeout=300)
    if variant == "project":
        shutil.copy2(REPO / ".dvc" / "config", directory / ".dvc" / "config")
    else:
        (directory / ".dvc" / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")


def measure_dvc(work: Path, files: list[str], dest: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """``dvc add`` and ``dvc status`` on copies of ``files`` against ``md5sum`` of the same copies."""
    env = base_env(REPO, dvc_env(dest / "dvc-home"))
    dvc = str(VENV_BIN / "dvc")
    sizes = {rel: (work / rel).stat().st_size for rel in files}
    total = sum(sizes.values())
    result: dict[str, Any] = {"files": len(files), "bytes": total, "file_bytes": sizes, "variants": {}}
    for variant, label in DVC_VARIANTS.items():
        repo = dest / f"dvc-{variant}"
        dvc_repository(repo, env, variant)
        for rel in files:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / rel, repo / rel)
        md5sum = [timed_run(["md5sum", *files], repo, env) for _ in range(2)]
        digests = dict(reversed(line.split(None, 1)) for line in md5sum[1][1].splitlines())
        empty_status, _ = timed_run([dvc, "status", "-q"], repo, env)
        say(f"dvc ({variant} cache): md5sum {md5sum[1][0]:.2f} s on {total / MIB:,.0f} MiB; dvc add ...")
        add, _ = timed_run([dvc, "add", "-q", *files], repo, env)
        status, status_out = timed_run([dvc, "status"], repo, env)
        recorded = {}
        for rel in files:
            document = yaml.safe_load((repo / f"{rel}.dvc").read_text(encoding="utf-8"))
            recorded[rel] = document["outs"][0]["md5"]
        links = sum(1 for rel in files if (repo / rel).stat().st_nlink > 1)
        second = md5sum[1][0]
        entry = {
            "cache": label,
            "md5sum_first_s": rounded(md5sum[0][0], 5), "md5sum_s": rounded(second, 5),
            "md5sum_mb_per_s": rounded(total / 1e6 / second, 1),
            "dvc_status_nothing_tracked_s": rounded(empty_status),
            "dvc_add_s": rounded(add), "dvc_add_mb_per_s": rounded(total / 1e6 / add, 1),
            "dvc_status_s": rounded(status),
            "ratio_dvc_add_vs_md5sum": rounded(add / second, 2),
            "ratio_dvc_status_vs_md5sum": rounded(status / second, 2),
            # DVC's own start-up (imports, repo discovery) is a fixed cost that md5sum does not pay.
            "ratio_dvc_add_minus_fixed_cost_vs_md5sum": rounded(max(add - empty_status, 0.0) / second, 2),
            "status_up_to_date": "up to date" in status_out,
            "digests_match": recorded == {rel: digests.get(rel) for rel in files},
            "workspace_files_linked_to_cache": links,
        }
        result["variants"][variant] = entry
        say(f"dvc ({variant} cache): dvc add {add:.2f} s (x{entry['ratio_dvc_add_vs_md5sum']:.2f} md5sum), "
            f"dvc status {status:.2f} s (x{entry['ratio_dvc_status_vs_md5sum']:.2f})")
        shutil.rmtree(repo)
    return result


def measure_pipeline(rows: int, workdir: Path, timeout: float, keep: bool,
                     say: Callable[[str], None]) -> dict[str, Any]:
    base = workdir / f"rows-{rows}"
    if base.exists():
        if not (base / ".bench-pipeline").exists():
            raise RuntimeError(f"{base} exists and was not made by this benchmark; choose another --workdir")
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / ".bench-pipeline").write_text("made by scripts/bench_pipeline.py; safe to delete\n")
    say(f"{rows:,} rows: workspace {base}")
    try:
        work = prepare_workspace(base / "repo", rows)
        stages = pipeline_stages(work)
        started = time.perf_counter()
        records = run_stages(work, stages, timeout, say)
        elapsed = time.perf_counter() - started
        ran = [r["stage"] for r in records if r["exit_code"] == 0]
        total_wall = sum(r["wall_s"] for r in records)
        for record in records:
            record["share_of_pipeline"] = share(record["wall_s"], total_wall)
        validation = sum(r.get("validation_s", 0.0) for r in records)
        lineage = sum(r.get("lineage_s", 0.0) for r in records)
        startup = sum(r.get("profile_s", {}).get("startup", 0.0) for r in records)
        result: dict[str, Any] = {
            "rows": rows,
            "table_rows": {"people": max(1, rows // 10), "cases": max(1, rows // 20), "events": rows,
                           "notes": max(1, rows // 20)},
            "workspace": str(work),
            "stages": records,
            "completed": ran == list(stages),
            "total": {
                "wall_s": rounded(total_wall), "elapsed_s": rounded(elapsed),
                "cpu_s": rounded(sum(r["cpu_s"] for r in records)),
                "peak_rss_mib": max((r["peak_rss_mib"] for r in records), default=0.0),
                "startup_s": rounded(startup), "validation_s": rounded(validation), "lineage_s": rounded(lineage),
                "startup_share": share(startup, total_wall), "validation_share": share(validation, total_wall),
                "lineage_share": share(lineage, total_wall),
            },
            "lineage_file": lineage_file_check(work, ran),
        }
        for record in records:
            if "validation_s" in record:
                record["validation_share_of_pipeline"] = share(record["validation_s"], total_wall)
                record["lineage_share_of_pipeline"] = share(record["lineage_s"], total_wall)
        produced = [out for name in ran for out in stages[name] if (work / out).is_file()]
        if produced:
            try:
                result["dvc"] = measure_dvc(work, produced, base, say)
            except Exception as exc:  # noqa: BLE001 - recorded; the stage figures still stand
                result["dvc"] = {"error": f"{type(exc).__name__}: {exc}"}
        return result
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per check (see ``_bench.Verdicts``)."""
    found = Verdicts()
    add = found.add
    for key in PARTS:
        if isinstance(report.get(key), dict) and "error" in report[key]:
            add(f"{key}.error", "correctness", False, report[key]["error"][:800])
    lineage = report.get("lineage")
    if lineage and "error" not in lineage:
        file = lineage["file"]
        mean = file["emitter"]["mean_ms"]
        add("lineage.file.mean_ms", "target", mean < LINEAGE_MAX_MS,
            f"{mean:.3f} ms per event (p99 {file['emitter']['p99_ms']:.3f} ms) through LineageEmitter + file transport "
            f"over {lineage['events']} events; json.dumps + append {file['baseline']['mean_ms']:.3f} ms = "
            f"x{file['ratio_mean']:.1f} (target < {LINEAGE_MAX_MS:g} ms)")
        add("lineage.file.delivered", "correctness", file["failed"] == 0 and file["lines"] == file["emitted"],
            f"{file['emitted']} events emitted, {file['lines']} lines written, {file['failed']} failed")
        if "http" in lineage:
            http = lineage["http"]
            add("lineage.http.mean_ms", "info", None,
                f"{http['emitter']['mean_ms']:.3f} ms per event (p99 {http['emitter']['p99_ms']:.3f} ms) to a local "
                f"receiver process; {http['failed']} failed")
    for run in report.get("pipeline", {}).get("runs", []):
        label = f"pipeline.{run['rows']}"
        if "error" in run:
            add(f"{label}.error", "correctness", False, run["error"][:800])
            continue
        failed = [r for r in run["stages"] if r["exit_code"] != 0]
        add(f"{label}.stages", "correctness", run["completed"],
            f"all {len(run['stages'])} stages exited 0 in {run['total']['wall_s']:.1f} s" if run["completed"]
            else f"stage {failed[0]['stage'] if failed else '?'} failed: "
                 f"{(failed[0].get('error') or '').splitlines()[-1:] if failed else ''}")
        add(f"{label}.lineage_events", "correctness", run["lineage_file"]["ok"],
            f"{run['lineage_file']['events']} events in the workspace's lineage file, START and COMPLETE per stage"
            if run["lineage_file"]["ok"] else "the lineage file does not hold START and COMPLETE for every stage")
        for r in run["stages"]:
            if r["wall_s"] > SLOW_STAGE_SECONDS or r["peak_rss_mib"] > LARGE_STAGE_MIB:
                add(f"{label}.{r['stage']}.size", "info", None,
                    f"{r['wall_s']:.0f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB (over {SLOW_STAGE_SECONDS:g} s or "
                    f"{LARGE_STAGE_MIB:,.0f} MiB); peak while in {r.get('peak_part')}")
        dvc = run.get("dvc")
        if dvc and "error" in dvc:
            add(f"{label}.dvc.error", "correctness", False, dvc["error"][:800])
        elif dvc:
            for variant, entry in dvc["variants"].items():
                ok = entry["digests_match"] and entry["status_up_to_date"]
                add(f"{label}.dvc.{variant}", "correctness", ok,
                    f"dvc add = x{entry['ratio_dvc_add_vs_md5sum']:.2f} md5sum, dvc status = "
                    f"x{entry['ratio_dvc_status_vs_md5sum']:.2f}; " + ("md5s equal md5sum's, status up to date" if ok
                                                                       else "md5 mismatch or status not up to date"))
    return found.lines


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def render(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    for run in report.get("pipeline", {}).get("runs", []):
        if "error" in run:
            continue
        sizes = run["table_rows"]
        table = Table(title=f"Pipeline stages — {run['rows']:,} rows (events; people {sizes['people']:,}, "
                            f"cases and notes {sizes['cases']:,} each)")
        for column, justify in (("stage", "left"), ("wall s", "right"), ("startup s", "right"), ("CPU s", "right"),
                                ("peak RSS MiB", "right"), ("validation s", "right"), ("lineage s", "right"),
                                ("validation % stage", "right"), ("lineage % stage", "right"),
                                ("% pipeline", "right"), ("validation % pipeline", "right"),
                                ("lineage % pipeline", "right"), ("events, ms/event", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for r in run["stages"]:
            table.add_row(r["stage"] + ("" if r["exit_code"] == 0 else " (FAILED)"), seconds(r["wall_s"]),
                          seconds(r.get("profile_s", {}).get("startup")), seconds(r["cpu_s"]),
                          f"{r['peak_rss_mib']:,.0f}", seconds(r.get("validation_s")), seconds(r.get("lineage_s")),
                          percent(r.get("validation_share")), percent(r.get("lineage_share")),
                          percent(r["share_of_pipeline"]), percent(r.get("validation_share_of_pipeline")),
                          percent(r.get("lineage_share_of_pipeline")),
                          f"{r['lineage_events']}, {r['lineage_ms_per_event'] or 0:.2f}" if "lineage_events" in r else "")
        t = run["total"]
        table.add_section()
        table.add_row("pipeline", seconds(t["wall_s"]), seconds(t["startup_s"]), seconds(t["cpu_s"]),
                      f"{t['peak_rss_mib']:,.0f} (max)", seconds(t["validation_s"]), seconds(t["lineage_s"]),
                      "", "", "100.0%", percent(t["validation_share"]), percent(t["lineage_share"]),
                      f"{run['lineage_file']['events']}, {run['lineage_file']['bytes'] / 1024:,.0f} KiB")
        console.print(table)
        if not any("profile_s" in r for r in run["stages"]):
            continue
        profile = Table(title=f"Where each stage's time goes — {run['rows']:,} rows (exclusive seconds; "
                              "validation = gx_init + validate + to_pandas, lineage = emit + md5 + describe)")
        profile.add_column("stage")
        for part in PROFILE_PARTS:
            profile.add_column(part, justify="right")
        profile.add_column("peak RSS in (MiB)")
        for r in run["stages"]:
            if "profile_s" not in r:
                continue
            peak = r["peak_part"]
            profile.add_row(r["stage"], *(seconds(r["profile_s"][p]) for p in PROFILE_PARTS),
                            f"{peak} ({r['peak_rss_by_part_mib'].get(peak, 0):,.0f})")
        console.print(profile)

    runs = [run for run in report.get("pipeline", {}).get("runs", []) if isinstance(run.get("dvc"), dict)
            and "error" not in run["dvc"]]
    if runs:
        table = Table(title="DVC against md5sum on every output file (warm page cache; md5sum = second of two runs)")
        table.add_column("measure")
        for run in runs:
            table.add_column(f"{run['rows']:,} rows", justify="right")
        table.add_row("files, MiB", *(f"{run['dvc']['files']}, {run['dvc']['bytes'] / MIB:,.1f}" for run in runs))
        for variant, label in DVC_VARIANTS.items():
            entries = [run["dvc"]["variants"][variant] for run in runs]
            table.add_section()
            table.add_row(f"[bold]cache: {label}[/bold]", *("" for _ in runs))
            table.add_row("md5sum s (first run)", *(f"{e['md5sum_s']:.3f} ({e['md5sum_first_s']:.3f})" for e in entries))
            table.add_row("dvc status, nothing tracked s (fixed cost)",
                          *(seconds(e["dvc_status_nothing_tracked_s"]) for e in entries))
            table.add_row("dvc add s (no state db)", *(seconds(e["dvc_add_s"]) for e in entries))
            table.add_row("  ratio dvc add / md5sum", *(f"{e['ratio_dvc_add_vs_md5sum']:.2f}" for e in entries))
            table.add_row("  ratio (dvc add − fixed cost) / md5sum",
                          *(f"{e['ratio_dvc_add_minus_fixed_cost_vs_md5sum']:.2f}" for e in entries))
            table.add_row("dvc status s (warm)", *(seconds(e["dvc_status_s"]) for e in entries))
            table.add_row("  ratio dvc status / md5sum", *(f"{e['ratio_dvc_status_vs_md5sum']:.2f}" for e in entries))
            table.add_row("MB/s md5sum / dvc add", *(f"{e['md5sum_mb_per_s']:,.0f} / {e['dvc_add_mb_per_s']:,.0f}"
                                                    for e in entries))
        console.print(table)

    imports = report.get("imports")
    if imports and "error" not in imports:
        table = Table(title=f"Import cost in a fresh interpreter (python -c, {imports['repeat']} runs)")
        for column in ("import", "first s", "warm s", "warm − interpreter s"):
            table.add_column(column, justify="left" if column == "import" else "right")
        for label, entry in imports["modules"].items():
            table.add_row(label, seconds(entry["first_s"]), seconds(entry["warm_s"]),
                          seconds(entry["warm_minus_interpreter_s"]))
        console.print(table)

    lineage = report.get("lineage")
    if lineage and "error" not in lineage:
        table = Table(title=f"Lineage emission — {lineage['events']} COMPLETE events, {lineage['shape']}")
        for column in ("path", "mean ms", "median ms", "p99 ms", "max ms", "bytes/event", "ratio (mean)"):
            table.add_column(column, justify="left" if column == "path" else "right")
        file = lineage["file"]
        rows = [("LineageEmitter → file transport", file["emitter"], file["bytes_per_event"], f"{file['ratio_mean']:.2f}"),
                ("json.dumps + append (baseline)", file["baseline"], file["bytes_per_event"], "1.00"),
                ("  of emit: build RunEvent", lineage["components"]["build"], None, ""),
                ("  of emit: amas.lineage.wire.to_json", lineage["components"]["serialize"], None, ""),
                ("  (the client's Serde.to_json, replaced)", lineage["components"]["client_serialize"], None, "")]
        if "http" in lineage:
            rows.append(("LineageEmitter → HTTP (local receiver)", lineage["http"]["emitter"], file["bytes_per_event"],
                         f"{lineage['http']['emitter']['mean_ms'] / file['baseline']['mean_ms']:.2f}"))
        for label, stats, size, ratio in rows:
            table.add_row(label, f"{stats['mean_ms']:.3f}", f"{stats['median_ms']:.3f}", f"{stats['p99_ms']:.3f}",
                          f"{stats['max_ms']:.3f}", "" if size is None else f"{size:,.0f}", ratio)
        console.print(table)

    for verdict in report["verdicts"]:
        style = {True: "green", False: "bold red", None: "cyan"}[verdict["passed"]]
        console.print(verdict["line"], style=style, markup=False, highlight=False)
    console.print(f"report: {report['out']}", markup=False, highlight=False)


class Probe:
    """In a stage child: exclusive seconds and peak RSS per part of the work.

    Wrappers around the pipeline's own functions push a part on a stack and pop it on return, so
    a nested call (``validate_table`` -> ``validate_frame`` -> ``_runtime``) is charged to the
    innermost part only and the parts add up to the whole. A sampler thread charges the RSS it
    reads to the part on top of the stack, which catches peaks between wrapper boundaries.
    """

    def __init__(self, trace: Path | None = None, interval: float = 0.02) -> None:
        self.stack = ["startup"]
        self.trace = trace
        self.mark = time.perf_counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.peak: defaultdict[str, float] = defaultdict(float)
        self.calls: list[dict[str, Any]] = []
        self.timeline: list[tuple[float, float, str]] = []
        self.started = self.mark
        self._interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def rss_mib(self) -> float:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * self._page / MIB

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._switch(None)

    def _sample(self) -> None:
        # The trace file outlives a child the kernel kills for memory, when no report is written.
        sink = self.trace.open("a", encoding="utf-8") if self.trace is not None else None
        last = 0.0
        try:
            while not self._stop.wait(self._interval):
                rss = self.rss_mib()
                now = time.perf_counter() - self.started
                with self._lock:
                    top = self.stack[-1]
                    self.peak[top] = max(self.peak[top], rss)
                    if now - last >= 0.5:
                        point = (round(now, 2), round(rss, 1), top)
                        self.timeline.append(point)
                        last = now
                        if sink is not None:
                            sink.write(json.dumps(point) + "\n")
                            sink.flush()
        finally:
            if sink is not None:
                sink.close()

    def _switch(self, push: str | None) -> tuple[float, float]:
        rss = self.rss_mib()
        with self._lock:
            now = time.perf_counter()
            top = self.stack[-1]
            self.seconds[top] += now - self.mark
            self.peak[top] = max(self.peak[top], rss)
            self.mark = now
            if push is not None:
                self.stack.append(push)
                self.peak[push] = max(self.peak[push], rss)
            elif len(self.stack) > 1:
                self.stack.pop()
        return now, rss

    def wrap(self, owner: Any, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, before = self._switch(part)
            result = None
            try:
                result = original(*args, **kwargs)
                return result
            finally:
                end, after = self._switch(None)
                self.calls.append({"part": part, "function": attribute, "label": _call_label(attribute, args),
                                   "seconds": round(end - start, 4), "rss_before_mib": round(before, 1),
                                   "rss_after_mib": round(after, 1), "rows": getattr(result, "rows", None)})

        setattr(owner, attribute, timed)


def _call_label(function: str, args: tuple[Any, ...]) -> str:
    if function == "emit" and len(args) >= 3:
        kind = args[1]
        return f"{getattr(kind, 'value', kind)} {args[2]}"
    if function in ("validate_table", "validate_frame") and len(args) >= 2:
        return str(args[1])
    if function == "_check_and_write" and len(args) >= 2:
        return ", ".join(args[1])
    if args and isinstance(args[0], str | os.PathLike):
        return Path(args[0]).name if function != "run_stage" else str(args[0])
    if len(args) >= 2 and isinstance(args[1], str | os.PathLike):
        return str(args[1])
    return ""


def vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child_stage(name: str, report: Path) -> int:
    """Run one stage as ``python -m amas.pipeline stage NAME`` does, with the probe's wrappers."""
    probe = Probe(trace=report.with_suffix(".rss.jsonl"))
    probe.start()
    code = 1
    try:
        import amas.pipeline.__main__ as entry
        import amas.pipeline.runner as runner
        import amas.pipeline.stages as stages
        import amas.quality as quality
        from amas.lineage.emitter import LineageEmitter

        # The stages look these names up in their modules at call time, so patching the
        # module attributes is enough; nothing else changes in how the stage runs.
        probe.wrap(runner, "run_stage", "compute")
        probe.wrap(runner, "md5_file", "md5")
        probe.wrap(runner, "describe_file", "describe")
        probe.wrap(stages, "md5_file", "md5")
        probe.wrap(stages, "read_table", "read")
        probe.wrap(stages, "write_parquet", "write")
        probe.wrap(stages, "write_json", "write")
        probe.wrap(stages, "_check_and_write", "to_pandas")
        probe.wrap(quality, "validate_table", "validate")
        probe.wrap(quality, "validate_frame", "validate")
        probe.wrap(quality, "_runtime", "gx_init")
        probe.wrap(LineageEmitter, "emit", "emit")
        code = entry.main(["stage", name])
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        probe.stop()
        stage_s = sum(c["seconds"] for c in probe.calls if c["function"] == "run_stage")
        report.write_text(json.dumps({
            "stage": name, "exit_code": code, "stage_s": stage_s, "seconds": dict(probe.seconds),
            "peak_rss_mib": dict(probe.peak), "vm_hwm_mib": vm_hwm_mib(),
            "lineage_events": sum(1 for c in probe.calls if c["function"] == "emit"),
            "calls": [c for c in probe.calls if c["function"] != "run_stage"], "timeline": probe.timeline,
        }))
    return code


def child_receiver() -> int:
    """An OpenLineage receiver that accepts every POST: stands in for Marquez in another process."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Marquez behind a proxy would

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


def child_lineage(events: int, http: bool, report: Path) -> int:
    """Time LineageEmitter.emit of the clean stage's COMPLETE event against json.dumps + append."""
    import hashlib
    import uuid

    import pyarrow as pa
    from openlineage.client.event_v2 import Job, Run, RunEvent
    from openlineage.client.serde import Serde
    from openlineage.client.transport.http import HttpConfig, HttpTransport, TokenProvider

    from amas.datasets.generate import SCHEMAS
    from amas.lineage import PRODUCER, LineageEmitter, ParentRun, RunState, as_input, as_output
    from amas.lineage.emitter import HTTP_RETRY, _file_transport
    from amas.lineage.wire import to_json
    from amas.lineage.facets import column_lineage, file_dataset, ownership, pii_tags, schema_from_arrow
    from amas.pipeline.stages import LINEAGE, OWNER, RAW, clean_path, propagate_pii, raw_path

    root = Path("/srv/amas")  # dataset names only; nothing there is read
    pii = {raw_path("people"): {"full_name": "person_name", "email": "email", "phone": "phone",
                                "date_of_birth": "date_of_birth"},
           raw_path("cases"): {}, raw_path("events"): {"ip_address": "ip_address"},
           raw_path("notes"): {"body": "free_text_with_pii"}}
    inputs = [file_dataset(root, root / raw_path(name), version=hashlib.md5(name.encode()).hexdigest(),
                           schema=schema_from_arrow(SCHEMAS[name]),
                           facets={"ownership": ownership(OWNER), "tags": pii_tags(pii[raw_path(name)])})
              for name in RAW]
    raw_types = {field.name: str(field.type) for name in RAW for field in SCHEMAS[name]}
    new_types = {"open_days": str(pa.float64()), "ip_network": str(pa.string())}
    outputs = []
    for name in ("people_clean", "cases_clean", "events_clean"):
        columns = LINEAGE[name]
        mapping = {column: [("file", source, field) for source, field, _ in sources] for column, sources in columns.items()}
        kinds = {column: ("DIRECT", sources[0][2]) for column, sources in columns.items()}
        facets = {"ownership": ownership(OWNER),
                  "columnLineage": column_lineage(mapping, namespace="file", transformations=kinds),
                  "tags": pii_tags(propagate_pii(name, pii))}
        outputs.append(file_dataset(root, root / clean_path(name), version=hashlib.md5(name.encode()).hexdigest(),
                                    schema=[(column, raw_types.get(column) or new_types[column]) for column in columns],
                                    facets=facets))
    parent = ParentRun(run_id=uuid.uuid4(), job_name="data-pipeline")
    directory = report.parent
    event_file, baseline_file = directory / "events.jsonl", directory / "baseline.jsonl"
    event_file.unlink(missing_ok=True)
    baseline_file.unlink(missing_ok=True)
    # The transport AMAS builds for AMAS_LINEAGE_TRANSPORT=file, not the client's own.
    emitter = LineageEmitter(_file_transport(event_file))

    def emit(target: LineageEmitter) -> int:
        started = time.perf_counter_ns()
        target.emit(RunState.COMPLETE, "pipeline.clean", uuid.uuid4(), inputs=inputs, outputs=outputs, parent=parent)
        return time.perf_counter_ns() - started

    emit(emitter)
    document = json.loads(event_file.read_text(encoding="utf-8").splitlines()[0])

    def baseline() -> int:
        started = time.perf_counter_ns()
        line = json.dumps(document) + "\n"
        with open(baseline_file, "a") as sink:
            sink.write(line)
        return time.perf_counter_ns() - started

    warmup = min(50, events)
    for _ in range(warmup):
        emit(emitter)
        baseline()
    emitted, base = [], []
    # Alternate event by event so both see the same machine load.
    for _ in range(events):
        emitted.append(emit(emitter))
        base.append(baseline())
    lines = len(event_file.read_text(encoding="utf-8").splitlines()) - 1 - warmup
    event = RunEvent(eventType=RunState.COMPLETE, eventTime=utc_now().isoformat(), run=Run(runId=str(uuid.uuid4())),
                     job=Job(namespace="amas", name="pipeline.clean"), inputs=[as_input(i) for i in inputs],
                     outputs=[as_output(o) for o in outputs], producer=PRODUCER)
    build, serialize, client_serialize = [], [], []
    for _ in range(events):
        started = time.perf_counter_ns()
        RunEvent(eventType=RunState.COMPLETE, eventTime=utc_now().isoformat(), run=Run(runId=str(uuid.uuid4())),
                 job=Job(namespace="amas", name="pipeline.clean"), inputs=[as_input(i) for i in inputs],
                 outputs=[as_output(o) for o in outputs], producer=PRODUCER)
        build.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        to_json(event)
        serialize.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        Serde.to_json(event)  # the client's serialiser, which AMAS's file transport replaces
        client_serialize.append(time.perf_counter_ns() - started)
    file_stats, base_stats = ms_stats(emitted), ms_stats(base)
    result: dict[str, Any] = {
        "events": events, "warmup": warmup,
        "shape": f"{len(inputs)} inputs, {len(outputs)} outputs; schema, version, ownership, tags, columnLineage facets",
        "file": {"emitter": file_stats, "baseline": base_stats,
                 "ratio_mean": rounded(file_stats["mean_ms"] / base_stats["mean_ms"], 2),
                 "bytes_per_event": event_file.stat().st_size / (events + warmup + 1),
                 "emitted": emitter.emitted - 1 - warmup, "failed": emitter.failed, "lines": lines},
        "components": {"build": ms_stats(build), "serialize": ms_stats(serialize),
                       "client_serialize": ms_stats(client_serialize)},
    }
    if http:
        receiver = subprocess.Popen([sys.executable, __file__, "--child-receiver"], stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout is not None
            port = int(receiver.stdout.readline())
            transport = HttpTransport(HttpConfig(url=f"http://127.0.0.1:{port}", timeout=5.0, auth=TokenProvider({}),
                                                 retry=dict(HTTP_RETRY)))
            remote = LineageEmitter(transport)
            for _ in range(warmup):
                emit(remote)
            timings = [emit(remote) for _ in range(events)]
            result["http"] = {"emitter": ms_stats(timings), "emitted": remote.emitted - warmup,
                              "failed": remote.failed}
            remote.close()
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
    report.write_text(json.dumps(result))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The data pipeline end to end per size (time, peak RSS, validation and lineage shares), "
                    "DVC vs md5sum, lineage emission overhead; a table on the terminal and a JSON report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", default=None,
                        help="generate.rows (events) for one pipeline run; repeatable (default: 1000000)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where workspaces go (default: a temporary directory, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep each size's workspace and data")
    parser.add_argument("--events", type=int, default=2000, help="lineage events per transport")
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip the lineage HTTP transport measurement")
    parser.add_argument("--imports-repeat", type=int, default=2, help="runs per import measurement")
    parser.add_argument("--only", action="append", choices=PARTS, default=None,
                        help="run only this part (repeatable); default: all")
    parser.add_argument("--stage-timeout", type=float, default=3600.0, help="kill a stage after this many seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report path (default: .amas/bench/pipeline-<UTC timestamp>.json)")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when lineage emission (file transport) averages {LINEAGE_MAX_MS:g} ms or more")
    parser.add_argument("--child-stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-lineage", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-report", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rows = args.rows or [1_000_000]
    if min(args.rows) < 1 or args.events < 2 or args.imports_repeat < 1 or args.stage_timeout <= 0:
        parser.error("--rows, --imports-repeat and --stage-timeout must be positive and --events at least 2")
    if args.workdir is not None:
        workdir = args.workdir.resolve()
        data = (REPO / "data").resolve()
        if workdir == data or data in workdir.parents or workdir == REPO or workdir in data.parents:
            parser.error(f"--workdir {args.workdir}: not the repository or its data/; use a scratch directory")
    return args


def main(argv: list[str] | None = None, *, console: Console | None = None) -> int:
    args = parse_args(argv)
    if args.child_stage is not None:
        return child_stage(args.child_stage, args.child_report)
    if args.child_lineage:
        return child_lineage(args.events, args.http, args.child_report)
    if args.child_receiver:
        return child_receiver()

    from rich.console import Console

    console = console or (Console() if sys.stdout.isatty() else Console(width=220))
    say = Progress(console)
    parts = [p for p in PARTS if p in set(args.only or PARTS)]
    started_at = utc_now()
    out = (args.out or Path(".amas") / "bench" / f"pipeline-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json").resolve()
    report: dict[str, Any] = {
        "schema": SCHEMA, "started_at": started_at.isoformat(timespec="seconds"), "parts": parts, "complete": False,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("child")},
        "machine": machine_info(), "load_average": {"start": load_average()},
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    def run_part(key: str, measure: Callable[[], Any]) -> Any:
        try:
            return measure()
        except Exception as exc:  # noqa: BLE001 - recorded; the other parts still run
            say(f"{key} failed: {type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        finally:
            save()

    scratch = None if args.workdir else tempfile.mkdtemp(prefix="amas-bench-pipeline-")
    workdir = args.workdir.resolve() if args.workdir else Path(scratch or ".")
    workdir.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(workdir)
    try:
        if "imports" in parts:
            report["imports"] = run_part("imports", lambda: measure_imports(workdir, args.imports_repeat, say))
        if "lineage" in parts:
            report["lineage"] = run_part("lineage", lambda: measure_lineage(args.events, args.http, workdir, args.keep, say))
        if "pipeline" in parts:
            report["pipeline"] = {"runs": []}
            for rows in args.rows:
                load_before = load_average()
                run = run_part(f"pipeline {rows:,}",
                               lambda rows=rows: measure_pipeline(rows, workdir, args.stage_timeout, args.keep, say))
                run.setdefault("rows", rows)
                run["load_average_before"] = load_before
                report["pipeline"]["runs"].append(run)
                save()
    finally:
        if scratch is not None and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    report["load_average"]["end"] = load_average()
    report["finished_at"] = utc_now().isoformat(timespec="seconds")
    report["duration_seconds"] = rounded((utc_now() - started_at).total_seconds(), 1)
    report["verdicts"] = verdicts(report)
    report["out"] = str(out)
    report["exit_code"] = exit_code(report, args.check)
    report["complete"] = True
    save()
    render(report, console)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
