"""Benchmark GDPR erasure of one subject end to end on PostgreSQL with a large store.

    .venv/bin/python scripts/bench_gdpr.py [--rows 1000000] [--erasures 5] [--url URL] [--out PATH]
        [--keep] [--check]

A scratch database (on the server at ``AMAS_BENCH_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``) is migrated and seeded set-based with
``INSERT ... SELECT generate_series``: of --rows rows, 10% data subjects, 30% agent tasks (each
with free-text parameters that mention another subject's email), 30% task results, 10%
artifacts and 20% audit events. Then --erasures subjects, spread over the table and each given an
evidence object in a local storage directory, are erased one after the other with
``amas.gdpr.erase.erase_subject`` exactly as the ``gdpr-erase`` flow calls it, without the
dataset rewrite (``workspace=None``: the issue's target excludes it): discovery (indexed lookups
plus one sequential free-text scan each of agent_tasks, task_results and audit_events), the plan,
every store step in its own transaction with its audit event, the ledger, the published ledger,
the check afterwards (a second discovery) and the certificate. A dry run (discovery and plan
only) of another subject is timed before each erasure.

Target (``--check``): median erasure under 2 s. Correctness (always): every erased subject's
tasks, results and artifacts are gone, its row is anonymised and the certificate says
"erased". Writes a table and, with --out, a JSON report. Exit status 1 when a correctness
check fails or, with --check, the target is missed. The scratch database is dropped at the end
unless --keep (or --url, which uses an existing, already seeded database as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:  # run as `python scripts/bench_gdpr.py` without an installed package
        sys.path.insert(0, str(_path))

from _bench import create_database, drop_database, exit_code, utc_now  # noqa: E402

SCHEMA = "amas-bench-gdpr/1"
TARGET_SECONDS = 2.0

SEED = [
    # Subjects: BENCH-000000042 / person42@example.org.
    """INSERT INTO data_subjects (id, external_ref, email, display_name, created_at, updated_at)
       SELECT g, 'BENCH-' || lpad(g::text, 9, '0'), 'person' || g || '@example.org', 'Person ' || g, now(), now()
       FROM generate_series(1, :subjects) g""",
    "SELECT setval(pg_get_serial_sequence('data_subjects', 'id'), :subjects)",
    # Tasks: three per subject; the parameters mention another subject's email in free text.
    """INSERT INTO agent_tasks (id, agent, parameters, status, priority, subject_id, actor, attempts, created_at)
       SELECT md5('task' || g)::uuid, 'data_analysis',
              jsonb_build_object('path', '/data/file' || g || '.csv',
                                 'note', 'compare with person' || ((g * 7) % :subjects + 1) || '@example.org'),
              'completed', 50, g % :subjects + 1, 'bench', 1, now()
       FROM generate_series(1, :tasks) g""",
    """INSERT INTO task_results (task_id, summary, findings, output, llm, created_at)
       SELECT md5('task' || g)::uuid, 'analysed ' || g || ' rows',
              '{"total": 0}'::jsonb,
              jsonb_build_object('rows', g, 'columns', jsonb_build_array('a', 'b', 'c'), 'missing', 0),
              '{}'::jsonb, now()
       FROM generate_series(1, :tasks) g""",
    """INSERT INTO artifacts (uri, sha256, size_bytes, media_type, subject_id, created_at)
       SELECT :base || '/evidence/' || g || '.bin', encode(sha256(g::text::bytea), 'hex'), 100,
              'application/octet-stream', g % :subjects + 1, now()
       FROM generate_series(1, :artifacts) g""",
    """INSERT INTO audit_events (id, occurred_at, actor, action, entity_type, entity_id, details, prev_hash, hash)
       SELECT g, now(), 'bench', 'agent.completed', 'agent_task', md5('task' || g)::uuid::text,
              jsonb_build_object('agent', 'data_analysis', 'attempt', 1),
              md5('prev' || g) || md5('p' || g), md5('hash' || g) || md5('h' || g)
       FROM generate_series(1, :audit) g""",
    "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), :audit)",
]


def sizes(rows: int) -> dict[str, int]:
    return {"subjects": rows // 10, "tasks": rows * 3 // 10, "artifacts": rows // 10, "audit": rows * 2 // 10}


def seed(engine: Any, rows: int, base: str) -> dict[str, Any]:
    from sqlalchemy import text

    counts = sizes(rows)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement), {**counts, "base": base})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    total = counts["subjects"] + 2 * counts["tasks"] + counts["artifacts"] + counts["audit"]
    return {"rows": total, "tables": {"data_subjects": counts["subjects"], "agent_tasks": counts["tasks"],
                                      "task_results": counts["tasks"], "artifacts": counts["artifacts"],
                                      "audit_events": counts["audit"]},
            "seconds": round(time.perf_counter() - started, 2)}


def subject_checks(engine: Any, subject_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from amas.db.models import AgentTask, Artifact, DataSubject
    from amas.db.session import session_scope

    with session_scope(engine) as session:
        row = session.get(DataSubject, subject_id)
        return {"tasks": session.scalar(select(func.count()).select_from(AgentTask)
                                        .where(AgentTask.subject_id == subject_id)) or 0,
                "artifacts": session.scalar(select(func.count()).select_from(Artifact)
                                            .where(Artifact.subject_id == subject_id)) or 0,
                "not_anonymised": int(row is None or row.erased_at is None or row.email is not None)}


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from amas.config import load_settings
    from amas.db.migrate import upgrade
    from amas.db.session import create_store_engine
    from amas.gdpr.erase import erase_subject
    from amas.retention.policy import load_policies
    from amas.storage.local import LocalStorage

    report: dict[str, Any] = {"schema": SCHEMA, "started_at": utc_now().isoformat(),
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "load": list(os.getloadavg())},
                              "target_seconds": TARGET_SECONDS}
    url, scratch = (args.url, None) if args.url is not None else create_database("amas_bench_gdpr_")
    home = Path(tempfile.mkdtemp(prefix="amas-bench-gdpr-"))
    engine = create_store_engine(url, pool_size=2)
    try:
        settings = load_settings(core={"home": home, "profile": "local"}, database={"url": url},
                                 storage={"url": str(home / "storage")})
        storage = LocalStorage(home / "storage")
        policies = load_policies()
        if scratch is not None:
            upgrade(engine)
            with console.status(f"seeding {args.rows:,} rows…"):
                report["seed"] = seed(engine, args.rows, settings.storage_url.rstrip("/"))
            console.print(f"seeded {report['seed']['rows']:,} rows in {report['seed']['seconds']} s")
        subjects = sizes(args.rows)["subjects"]
        step = max(1, subjects // (2 * args.erasures + 1))
        targets = [step * (2 * i + 1) for i in range(args.erasures)]
        dry_subjects = [step * (2 * i + 2) for i in range(args.erasures)]
        runs = []
        for target, dry in zip(targets, dry_subjects, strict=True):
            # Artifact g belongs to subject g % subjects + 1: give the target's artifacts their objects.
            for g in range(target - 1 or subjects, sizes(args.rows)["artifacts"] + 1, subjects):
                storage.put(f"evidence/{g}.bin", b"evidence bytes")
            ref_dry = f"BENCH-{dry:09d}"
            started = time.perf_counter()
            erase_subject(ref_dry, dry_run=True, settings=settings, engine=engine, storage=storage,
                          policies=policies, actor="bench")
            dry_seconds = time.perf_counter() - started
            started = time.perf_counter()
            outcome = erase_subject(f"BENCH-{target:09d}", settings=settings, engine=engine, storage=storage,
                                    policies=policies, actor="bench")
            seconds = time.perf_counter() - started
            checks = subject_checks(engine, target)
            runs.append({"subject_id": target, "seconds": round(seconds, 4), "dry_run_seconds": round(dry_seconds, 4),
                         "result": outcome.certificate["result"] if outcome.certificate else None,
                         "done": outcome.done, "remaining": outcome.remaining, "checks": checks})
            console.print(f"subject {target}: erased in {seconds:.3f} s (dry run {dry_seconds:.3f} s)")
        report["runs"] = runs
        seconds = [r["seconds"] for r in runs]
        report["median_seconds"] = statistics.median(seconds)
        report["max_seconds"] = max(seconds)
        report["median_dry_run_seconds"] = statistics.median(r["dry_run_seconds"] for r in runs)
    finally:
        engine.dispose()
        if scratch is not None and not args.keep:
            drop_database(scratch)
        elif scratch is not None:
            report["database_url"] = url
    report["verdicts"] = verdicts(report)
    return report


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    runs = report.get("runs", [])
    correct = all(r["result"] == "erased" and not any(r["checks"].values()) and not any(r["remaining"].values())
                  for r in runs) and bool(runs)
    return [
        {"name": "every erased subject is gone", "kind": "correctness", "passed": correct},
        {"name": f"median erasure under {TARGET_SECONDS} s", "kind": "target",
         "passed": bool(runs) and report["median_seconds"] < TARGET_SECONDS,
         "value": report.get("median_seconds")},
    ]


def render(report: dict[str, Any], console: Console) -> None:
    table = Table("subject", "erase s", "dry run s", "tasks", "results", "artifacts/objects", "result",
                  title=f"GDPR erasure on PostgreSQL, {report.get('seed', {}).get('rows', '?'):,} rows"
                  if isinstance(report.get("seed", {}).get("rows"), int) else "GDPR erasure on PostgreSQL")
    for r in report.get("runs", []):
        done = r["done"]
        table.add_row(str(r["subject_id"]), f"{r['seconds']:.3f}", f"{r['dry_run_seconds']:.3f}",
                      str(done.get("agent_tasks", {}).get("tasks", 0)), str(done.get("agent_tasks", {}).get("results", 0)),
                      f"{done.get('artifacts', {}).get('rows', 0)}/{done.get('artifacts', {}).get('objects', 0)}",
                      str(r["result"]))
    console.print(table)
    if report.get("runs"):
        console.print(f"median {report['median_seconds']:.3f} s, max {report['max_seconds']:.3f} s, "
                      f"dry run median {report['median_dry_run_seconds']:.3f} s (target < {TARGET_SECONDS} s)")
    for verdict in report["verdicts"]:
        mark = "[green]ok[/]" if verdict["passed"] else "[red]FAIL[/]"
        console.print(f"{mark} {verdict['name']} ({verdict['kind']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_gdpr.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to seed across the store's tables")
    parser.add_argument("--erasures", type=int, default=5, help="subjects to erase (the median is reported)")
    parser.add_argument("--url", default=None, help="an existing, seeded PostgreSQL store instead of a scratch one")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is reported)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless the median is under {TARGET_SECONDS} s")
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.erasures < 1:
        parser.error("--rows must be at least 1000 and --erasures at least 1")
    return args


def main(argv: list[str] | None = None, *, console: Console | None = None) -> int:
    args = parse_args(argv)
    console = console or Console()
    report = run(args, console)
    report["exit_code"] = exit_code(report, args.check)
    render(report, console)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
