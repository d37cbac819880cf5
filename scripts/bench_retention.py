"""Benchmark retention on PostgreSQL: purge rate under a concurrent reader, and report generation.

    .venv/bin/python scripts/bench_retention.py [--rows 10000000] [--batch-size 10000] [--url URL]
        [--keep] [--reader-interval 0.01] [--out PATH] [--check]

Issue 5 asks, on PostgreSQL with 10 million rows across categories, for the retention ``apply``
purge rate (target >= 100,000 rows/s deleted) with the store staying responsive (p99 of a
concurrent read query under 100 ms), and the report's generation time. Steps:

seed
    A scratch database (dropped afterwards unless ``--keep``; ``--url`` uses an empty one you
    made), migrated to head, then ``--rows`` rows across the store's categories with
    ``INSERT ... SELECT generate_series`` (task results 58%, agent tasks 30%, artifacts 5%, data
    subjects 1%, audit events 1% and the rest to task results), ages spread so about half of the
    results and tasks, a quarter of the artifacts and half of the erased subjects are past their
    limit. Task ids are md5-derived UUIDs (random order, like uuid4). The audit events form a valid
    hash chain (computed in Python, loaded with COPY) whose oldest sixth is past its limit.
    Then ``VACUUM ANALYZE``.
plan
    ``survey`` of every table category (counts over the whole tables), timed.
apply
    ``apply_retention`` with the shipped store policies plus a subject hold and a case hold, and
    ``confirm`` (half the data is due). Meanwhile a reader thread runs an indexed read (one task
    by primary key with a count of its results through ``ix_task_results_task_id``) every
    ``--reader-interval`` seconds on its own connection and records each latency. Purge rate =
    rows deleted by the delete and archive categories / the time spent in those categories
    (from the per-batch hook); anonymize and the audit archive (which deletes nothing) are
    reported separately.
again
    A second apply: must change nothing (idempotence).
report
    ``survey`` + ``build_report`` (which verifies the whole audit chain) + HTML rendering, timed.

Writes a table to the terminal and a JSON report to ``--out`` (default
``.amas/bench/retention-<time>.json``). Exit status: 1 when a step fails or the second apply
changes rows, or with ``--check`` when a target is missed; otherwise 0.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:  # run as `python scripts/bench_retention.py` without an installed package
        sys.path.insert(0, str(_path))

from _bench import Verdicts, create_database, drop_database, error_verdicts, exit_code, utc_now  # noqa: E402

PURGE_RATE_TARGET = 100_000.0
READ_P99_TARGET_MS = 100.0
SCHEMA = 1


def sizes(rows: int) -> dict[str, int]:
    subjects = max(rows // 100, 10)
    tasks = max(rows * 30 // 100, 10)
    artifacts = max(rows * 5 // 100, 5)
    audit = max(rows // 100, 10)
    results = max(rows - subjects - tasks - artifacts - audit, 10)
    return {"data_subjects": subjects, "agent_tasks": tasks, "task_results": results, "artifacts": artifacts,
            "audit_events": audit}


def _task_uuid(expr: str) -> str:
    return f"md5(({expr})::text)::uuid"


def seed(engine: Any, rows: int, now: datetime, say: Any) -> dict[str, Any]:
    """Fill the store with ``rows`` rows, set-based; return the counts and timings."""
    from sqlalchemy import text

    n = sizes(rows)
    timings: dict[str, float] = {}
    params = {"now": now, "s": n["data_subjects"], "t": n["agent_tasks"], "r": n["task_results"],
              "a": n["artifacts"]}
    statements = {
        # 10% of subjects were erased, 0-59 days ago: about half past the 30-day limit.
        "data_subjects": """
            INSERT INTO data_subjects (id, external_ref, email, display_name, created_at, updated_at, erased_at)
            SELECT i, 'crm-' || i, 'user' || i || '@example.org', 'Person ' || i,
                   :now - interval '900 days', :now - interval '900 days',
                   CASE WHEN i % 10 = 0 THEN :now - (i % 60) * interval '1 day' - interval '1 hour' END
            FROM generate_series(1::bigint, :s) AS i""",
        # Finished 0-799 days ago (limit 400: half are due); every 50th never finished.
        "agent_tasks": f"""
            INSERT INTO agent_tasks (id, agent, parameters, status, priority, subject_id, case_id, actor, attempts,
                                     created_at, started_at, finished_at)
            SELECT {_task_uuid('i')}, 'forensics', '{{}}', 'completed', 50,
                   CASE WHEN i % 5 = 0 THEN (i % :s) + 1 END, 'CASE-' || (i % 1000), 'bench', 1,
                   :now - ((i * 7919) % 800) * interval '1 day' - (i % 86400) * interval '1 second'
                        - interval '1 hour',
                   :now - ((i * 7919) % 800) * interval '1 day' - (i % 86400) * interval '1 second'
                        - interval '1 hour',
                   CASE WHEN i % 50 <> 0 THEN
                       :now - ((i * 7919) % 800) * interval '1 day' - (i % 86400) * interval '1 second' END
            FROM generate_series(1::bigint, :t) AS i""",
        # Each result belongs to task (j mod t) + 1 and is as old as that task (limit 365).
        "task_results": f"""
            INSERT INTO task_results (id, task_id, summary, findings, output, llm, created_at)
            SELECT j, {_task_uuid('(j % :t) + 1')}, 'result ' || j, '{{}}', '{{"n": 1}}', '{{}}',
                   :now - ((((j % :t) + 1) * 7919) % 800) * interval '1 day'
                        - (((j % :t) + 1) % 86400) * interval '1 second'
            FROM generate_series(1::bigint, :r) AS j""",
        # 0-999 days old (limit 730: about a quarter are due and archived).
        "artifacts": f"""
            INSERT INTO artifacts (id, uri, sha256, size_bytes, media_type, subject_id, task_id, created_at)
            SELECT k, 's3://bench/evidence/' || k, md5(k::text) || md5((k + 1)::text), 1000 + k % 5000,
                   'application/octet-stream', CASE WHEN k % 3 = 0 THEN (k % :s) + 1 END,
                   CASE WHEN k % 2 = 0 THEN {_task_uuid('(k % :t) + 1')} END,
                   :now - ((k * 104729) % 1000) * interval '1 day'
            FROM generate_series(1::bigint, :a) AS k""",
    }
    for table, statement in statements.items():
        say(f"seeding {table}: {n[table]:,} rows")
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(statement), params)
        timings[table] = round(time.perf_counter() - start, 2)
    say(f"seeding audit_events: {n['audit_events']:,} rows (hash chain in Python, COPY)")
    start = time.perf_counter()
    seed_audit(engine, n["audit_events"], now)
    timings["audit_events"] = round(time.perf_counter() - start, 2)
    with engine.begin() as conn:
        for table in ("data_subjects", "task_results", "artifacts", "audit_events"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    say("VACUUM ANALYZE")
    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    timings["vacuum_analyze"] = round(time.perf_counter() - start, 2)
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    return {"rows": n, "total_rows": sum(n.values()), "seconds": timings,
            "seconds_total": round(sum(timings.values()), 2), "database_bytes": int(size or 0)}


def seed_audit(engine: Any, count: int, now: datetime) -> None:
    """A valid chain: ages from 3,000 days down to today, so the oldest sixth is past 2,555 days."""
    from amas.db.audit import canonical_payload, chain_hash
    from amas.db.models import GENESIS_HASH

    prev = GENESIS_HASH
    buffer = io.StringIO()
    step = timedelta(days=3000) / count
    start = now - timedelta(days=3000)
    for i in range(1, count + 1):
        when = start + step * i
        details = {"n": i}
        digest = chain_hash(prev, canonical_payload(occurred_at=when, actor="bench", action="bench.event",
                                                    entity_type="bench", entity_id=str(i), details=details))
        buffer.write(f"{i}\t{when.isoformat()}\tbench\tbench.event\tbench\t{i}\t{json.dumps(details)}\t{prev}\t{digest}\n")
        prev = digest
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor, cursor.copy(
                "COPY audit_events (id, occurred_at, actor, action, entity_type, entity_id, details, prev_hash, hash) "
                "FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()


class Reader(threading.Thread):
    """An application's indexed read, over and over, on its own connection; records latencies."""

    def __init__(self, url: str, tasks: int, interval: float) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self.tasks = tasks
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(5)
        query = ("SELECT t.id, t.status, (SELECT count(*) FROM task_results r WHERE r.task_id = t.id) "
                 "FROM agent_tasks t WHERE t.id = md5(%s::text)::uuid")
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                self.conn.execute(query, (rng.randint(1, self.tasks),)).fetchall()
            except Exception:  # noqa: BLE001 - counted; the benchmark reports it
                self.errors += 1
            self.latencies_ms.append((time.perf_counter() - start) * 1000)
            self.stop.wait(self.interval)
        self.conn.close()

    def summary(self) -> dict[str, Any]:
        values = sorted(self.latencies_ms)
        if not values:
            return {"queries": 0, "errors": self.errors}
        return {"queries": len(values), "errors": self.errors, "p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
                "max_ms": round(values[-1], 2), "mean_ms": round(statistics.fmean(values), 2)}


def bench_policies() -> list[Any]:
    """The shipped store policies, with a subject hold and a case hold to exercise them at scale."""
    from amas.retention import load_policies
    from amas.retention.policy import Policy

    chosen = []
    for policy in load_policies():
        if policy.kind != "table":
            continue
        holds = {"task_results": [{"subject": "crm-1", "reason": "bench hold"}],
                 "agent_tasks": [{"case": "CASE-7", "reason": "bench hold"}]}.get(policy.category, [])
        chosen.append(Policy.model_validate(policy.model_dump() | {"legal_holds": holds}) if holds else policy)
    return chosen


def run_apply(engine: Any, policies: list[Any], settings: Any, storage: Any, as_of: datetime) -> dict[str, Any]:
    from amas.retention.apply import apply_retention

    start = time.perf_counter()
    outcome = apply_retention(engine, policies, as_of=as_of, actor="bench", settings=settings, storage=storage,
                              confirm=True)
    total = time.perf_counter() - start
    per_category = {
        name: {"action": p.action, "rows": p.applied, "batches": p.batches, "seconds": p.seconds or 0.0,
               "vacuum_seconds": p.vacuum_seconds,
               "rows_per_second": round(p.applied / p.seconds) if p.seconds else None}
        for name, p in outcome.categories.items()
    }
    return {"status": outcome.status, "run_id": str(outcome.run_id), "seconds": round(total, 2),
            "survey_seconds": round(total - sum(c["seconds"] for c in per_category.values()), 2),
            "categories": per_category}


def purge_rate(apply: dict[str, Any], policies: list[Any]) -> dict[str, Any]:
    removes = {p.category for p in policies if p.action == "delete" or (p.action == "archive" and p.destructive)}
    rows = sum(c["rows"] for name, c in apply["categories"].items() if name in removes)
    seconds = sum(c["seconds"] for name, c in apply["categories"].items() if name in removes)
    return {"categories": sorted(removes), "rows": rows, "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds) if seconds else None}


def measure(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    from amas.config import load_settings
    from amas.db.migrate import upgrade
    from amas.db.session import create_store_engine
    from amas.retention.apply import survey
    from amas.retention.report import build_report, render
    from amas.storage.local import LocalStorage

    result: dict[str, Any] = {}
    url, scratch = args.url, None
    if url is None:
        url, scratch = create_database("amas_bench_")
    engine = create_store_engine(url, pool_size=4)
    objects = tempfile.mkdtemp(prefix="amas-bench-retention-")
    try:
        upgrade(engine)
        now = utc_now().replace(microsecond=0)
        as_of = now + timedelta(minutes=1)
        result["seed"] = seed(engine, args.rows, now, say)
        policies = bench_policies()
        settings = load_settings(retention={"batch_size": args.batch_size},
                                 core={"home": Path(objects) / "home"})
        storage = LocalStorage(Path(objects) / "storage")

        say("plan: survey every table category")
        start = time.perf_counter()
        surveys = survey(engine, policies, as_of)
        result["plan"] = {"seconds": round(time.perf_counter() - start, 2),
                          "categories": {s.category: {"total": s.total, "due": s.due, "held": s.held, "act": s.act}
                                         for s in surveys}}

        say(f"apply (batches of {args.batch_size:,}) with a concurrent reader")
        reader = Reader(url, result["seed"]["rows"]["agent_tasks"], args.reader_interval)
        reader.start()
        baseline_until = time.perf_counter() + 2.0
        while time.perf_counter() < baseline_until:
            time.sleep(0.05)
        idle = list(reader.latencies_ms)
        try:
            result["apply"] = run_apply(engine, policies, settings, storage, as_of)
        finally:
            reader.stop.set()
            reader.join(timeout=10)
        during = reader.latencies_ms[len(idle):]
        result["reader"] = {"idle": _latency(idle), "during_apply": _latency(during),
                            "interval_seconds": args.reader_interval, "errors": reader.errors,
                            "query": "one agent_tasks row by primary key with a count of its task_results "
                                     "(ix_task_results_task_id)"}
        result["purge"] = purge_rate(result["apply"], policies)

        say("apply again: nothing may change")
        again = run_apply(engine, policies, settings, storage, as_of)
        result["again"] = {"seconds": again["seconds"],
                           "rows": sum(c["rows"] for c in again["categories"].values())}

        say("report: survey + build_report (verifies the audit chain) + HTML")
        start = time.perf_counter()
        surveys = survey(engine, policies, as_of)
        surveyed = time.perf_counter()
        report = build_report(engine, policies, surveys, as_of=as_of, since_days=7)
        built = time.perf_counter()
        page = render(report, "html")
        done = time.perf_counter()
        result["report"] = {"seconds": round(done - start, 2), "survey_seconds": round(surveyed - start, 2),
                            "build_seconds": round(built - surveyed, 2), "render_seconds": round(done - built, 3),
                            "html_bytes": len(page.encode()), "audit_events_verified": report.audit_chain["checked"],
                            "audit_chain_ok": report.audit_chain["ok"]}
    finally:
        engine.dispose()
        import shutil

        shutil.rmtree(objects, ignore_errors=True)
        if scratch is not None and not args.keep:
            drop_database(scratch)
        elif scratch is not None:
            result["kept_database"] = url
    return result


def _latency(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"queries": 0}
    ordered = sorted(values)
    return {"queries": len(ordered), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max_ms": round(ordered[-1], 2)}


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per check (see ``_bench.Verdicts``)."""
    if "error" in report:
        return error_verdicts(report)
    found = Verdicts()
    add = found.add
    purge = report["purge"]
    rate = purge["rows_per_second"] or 0
    add("purge.rows_per_second", "target", rate >= PURGE_RATE_TARGET,
        f"{rate:,} rows/s ({purge['rows']:,} rows deleted in {purge['seconds']} s by "
        f"{', '.join(purge['categories'])}; target >= {PURGE_RATE_TARGET:,.0f})")
    during = report["reader"]["during_apply"]
    p99 = during.get("p99_ms")
    add("reader.p99_ms", "target", p99 is not None and p99 < READ_P99_TARGET_MS,
        f"p99 {p99} ms, p50 {during.get('p50_ms')} ms over {during['queries']:,} reads during apply "
        f"(idle p99 {report['reader']['idle'].get('p99_ms')} ms; target < {READ_P99_TARGET_MS:g} ms)")
    add("reader.errors", "correctness", report["reader"]["errors"] == 0, f"{report['reader']['errors']} failed reads")
    add("apply.completed", "correctness", report["apply"]["status"] == "completed", report["apply"]["status"])
    add("again.idempotent", "correctness", report["again"]["rows"] == 0,
        f"a second apply changed {report['again']['rows']:,} rows in {report['again']['seconds']} s")
    add("report.audit_chain", "correctness", report["report"]["audit_chain_ok"],
        f"{report['report']['audit_events_verified']:,} events verified")
    add("report.seconds", "info", None, f"{report['report']['seconds']} s (survey {report['report']['survey_seconds']}"
        f" s, build incl. chain {report['report']['build_seconds']} s, HTML {report['report']['render_seconds']} s)")
    return found.lines


def render_console(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    if "apply" in report:
        table = Table(title=f"retention apply — {report['seed']['total_rows']:,} rows seeded "
                            f"(batches of {report['args']['batch_size']:,})")
        for column in ("category", "action", "rows", "batches", "seconds", "of which vacuum", "rows/s"):
            table.add_column(column, justify="left" if column in ("category", "action") else "right")
        for name, c in report["apply"]["categories"].items():
            vacuum = "" if c.get("vacuum_seconds") is None else f"{c['vacuum_seconds']:.2f}"
            table.add_row(name, c["action"], f"{c['rows']:,}", str(c["batches"]), f"{c['seconds']:.2f}", vacuum,
                          "" if c["rows_per_second"] is None else f"{c['rows_per_second']:,}")
        console.print(table)
    for verdict in report.get("verdicts", []):
        console.print(verdict["line"], markup=False, highlight=False)
    console.print(f"report: {report.get('out')}", markup=False, highlight=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows to seed across the categories")
    parser.add_argument("--batch-size", type=int, default=10_000, help="AMAS_RETENTION_BATCH_SIZE for the run")
    parser.add_argument("--url", default=None, help="an empty PostgreSQL database to use instead of a scratch one")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reader-interval", type=float, default=0.01, help="seconds between the reader's queries")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows: at least 100")
    if args.url is not None and not args.url.startswith(("postgresql", "postgres://")):
        parser.error("--url: a PostgreSQL URL (the benchmark measures PostgreSQL)")
    return args


def main(argv: list[str] | None = None, *, console: Any = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    started = utc_now()

    def say(message: str) -> None:
        console.print(f"[{(utc_now() - started).total_seconds():7.1f}s] {message}", markup=False, highlight=False)

    out = (args.out or REPO / ".amas" / "bench" / f"retention-{started:%Y%m%dT%H%M%SZ}.json").resolve()
    report: dict[str, Any] = {"schema": SCHEMA, "started_at": started.isoformat(timespec="seconds"),
                              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "platform": platform.platform()},
                              "load_average_start": os.getloadavg()}
    try:
        report.update(measure(args, say))
    except Exception as exc:  # noqa: BLE001 - reported, with the traceback, in the JSON
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    report["load_average_end"] = os.getloadavg()
    report["duration_seconds"] = round((utc_now() - started).total_seconds(), 1)
    report["verdicts"] = verdicts(report)
    report["exit_code"] = exit_code(report, args.check)
    report["out"] = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    render_console(report, console)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
