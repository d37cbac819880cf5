"""What the benchmark scripts share: verdict lines and the exit status, scratch databases, the clock.

Not a benchmark itself: ``scripts/bench_*.py`` import it after putting scripts/ on ``sys.path``.
It imports only the standard library (psycopg when a database is made), so bench_pipeline's
stage children, whose start-up is measured, pay next to nothing for it.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The server scratch databases are made on (and dropped from).
ADMIN_DSN = os.environ.get("AMAS_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Each distribution's installed version; None for one that is not installed."""
    import importlib.metadata

    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state(repo: Path) -> dict[str, Any] | None:
    """The commit checked out in ``repo`` and whether its tree has uncommitted changes; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


class Verdicts:
    """A report's checks, one line each, in the order added.

    ``kind`` is target (fails the run only with --check), correctness (always fails it) or info;
    ``passed`` is None for info. ``lines`` is what a report stores under "verdicts".
    """

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def add(self, name: str, kind: str, passed: bool | None, text: str) -> None:
        status = "info" if passed is None else ("pass" if passed else "FAIL")
        self.lines.append({"name": name, "kind": kind, "passed": passed, "line": f"{status.upper():4} {name}: {text}"})


def error_verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts of a run that raised (``report["error"]``): one failed correctness check."""
    verdicts = Verdicts()
    verdicts.add("error", "correctness", False, report["error"][:800])
    return verdicts.lines


def exit_code(report: dict[str, Any], check: bool) -> int:
    """1 when a correctness verdict failed, or a target verdict with ``check``; otherwise 0."""
    for verdict in report["verdicts"]:
        if verdict["passed"] is False and (verdict["kind"] == "correctness" or check):
            return 1
    return 0


def create_database(prefix: str) -> tuple[str, str]:
    """A new empty database on ADMIN_DSN's server, ``prefix`` and 12 random hex digits: its URL and its name."""
    import uuid

    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}", name


def drop_database(name: str) -> None:
    """Drop a database made by ``create_database``, sessions still connected to it or not; no error if gone."""
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
