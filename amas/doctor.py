"""Pre-flight checks: each failure says what is wrong and the command or setting that fixes it.

Checks are cheap and read-mostly (the storage probe writes and deletes one small object);
``amas doctor`` runs them all and exits non-zero when any fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from amas.config import Settings
from amas.db.migrate import current_revision, head_revision
from amas.db.session import check_connection, get_engine
from amas.errors import AmasError
from amas.stack import PROJECT_DIR, api_healthy

MIN_FREE_BYTES = 1 << 30
MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


Check = Callable[[Settings], Finding]


def check_python(_: Settings) -> Finding:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= MIN_PYTHON
    return Finding("python", ok, f"Python {version}", "" if ok else "install Python 3.11 or newer")


def check_store(settings: Settings) -> Finding:
    engine = get_engine(settings)
    try:
        check_connection(engine)
    except AmasError as exc:
        return Finding("store", False, str(exc), "start the database, or fix AMAS_DATABASE_URL")
    current, head = current_revision(engine), head_revision()
    if current != head:
        return Finding("store", False, f"{engine.dialect.name} store at revision {current or '(empty)'}, code needs {head}",
                       "run `amas db upgrade`")
    return Finding("store", True, f"{engine.dialect.name} store reachable, at revision {current}")


def check_storage(settings: Settings) -> Finding:
    from amas.storage import open_storage

    key = f"doctor/probe-{uuid.uuid4().hex}"
    try:
        storage = open_storage(settings)
        storage.put(key, b"amas doctor probe\n")
        storage.delete(key)
    except AmasError as exc:
        return Finding("storage", False, str(exc), "fix AMAS_STORAGE_URL (and the S3 settings), or make the directory writable")
    return Finding("storage", True, f"wrote and deleted a probe at {storage.url}")


def check_prefect(settings: Settings) -> Finding:
    url = settings.prefect_api_url
    if not api_healthy(url):
        return Finding("prefect api", False, f"no healthy Prefect API at {url}",
                       "start the local stack with `amas up` (or set AMAS_PREFECT_API_URL)")
    return Finding("prefect api", True, f"healthy at {url}")


def check_deployments(settings: Settings) -> Finding:
    """Every deployment in prefect.yaml exists on the server, and a worker polls the pool."""
    url = settings.prefect_api_url.rstrip("/")
    if not api_healthy(url):
        return Finding("deployments", False, "skipped: the Prefect API is down", "start the local stack with `amas up`")
    wanted = sorted(d["name"] for d in yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())["deployments"])
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            found = {d["name"] for d in client.post("/deployments/filter", json={"limit": 200}).json()}
            pool = settings.prefect.work_pool
            response = client.post(f"/work_pools/{pool}/workers/filter", json={})
            workers = response.json() if response.status_code == 200 else []
    except httpx.HTTPError as exc:
        return Finding("deployments", False, f"Prefect API error: {exc}", "check the server log in AMAS_HOME/logs")
    missing = [name for name in wanted if name not in found]
    online = [w for w in workers if w.get("status") == "ONLINE"]
    if missing:
        return Finding("deployments", False, f"missing on the server: {', '.join(missing)}", "run `amas up` (it deploys prefect.yaml)")
    if not online:
        return Finding("deployments", False, f"{len(wanted)} deployments present, but no worker online in pool {settings.prefect.work_pool}",
                       "run `amas up`, or start a worker: prefect worker start --pool " + settings.prefect.work_pool)
    return Finding("deployments", True, f"{len(wanted)} deployments present; {len(online)} worker(s) online in {settings.prefect.work_pool}")


def _tool_version(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def check_dvc(_: Settings) -> Finding:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    version = _tool_version([dvc, "--version"]) if dvc else None
    if version is None:
        return Finding("dvc", False, "dvc is not installed in this environment", "run `make install` (uv sync --frozen)")
    if not (PROJECT_DIR / ".dvc").is_dir():
        return Finding("dvc", False, f"dvc {version}, but {PROJECT_DIR} is not a DVC repository", "run `dvc init` in the project root")
    return Finding("dvc", True, f"dvc {version}")


def check_git(_: Settings) -> Finding:
    version = _tool_version(["git", "--version"])
    if version is None:
        return Finding("git", False, "git is not installed", "install git (apt-get install git)")
    return Finding("git", True, version)


def check_disk(settings: Settings) -> Finding:
    home = settings.core.home
    probe = home if home.exists() else next(p for p in home.parents if p.exists())
    free = shutil.disk_usage(probe).free
    ok = free >= MIN_FREE_BYTES
    return Finding("disk", ok, f"{free / (1 << 30):.1f} GiB free at {probe}",
                   "" if ok else "free at least 1 GiB, or point AMAS_HOME elsewhere")


def check_retention(_: Settings) -> Finding:
    from amas.errors import ConfigError
    from amas.retention import DEFAULT_DIRECTORY, load_policies

    try:
        policies = load_policies(DEFAULT_DIRECTORY)
    except ConfigError as exc:
        return Finding("retention", False, str(exc), "correct the policy file named above")
    return Finding("retention", True, f"{len(policies)} policies in {DEFAULT_DIRECTORY.name}/ valid against the store schema")


def check_agents(_: Settings) -> Finding:
    from amas.registry import load_agents

    try:
        agents = load_agents()
    except ImportError as exc:
        return Finding("agents", False, f"an agent module does not import: {exc}", "run `make install` (uv sync --frozen)")
    return Finding("agents", True, f"{len(agents)} agents load: {', '.join(agents)}")


def check_llm(settings: Settings) -> Finding:
    """Configuration only: a request to a paid provider is not a pre-flight check."""
    providers = settings.llm.providers
    if not providers:
        return Finding("llm", True, "no model configured: agents return their deterministic results only")
    for provider in providers:
        provider.resolved_key()  # ConfigError naming the unset api_key_env variable
    names = ", ".join(f"{p.name} ({p.kind}, {p.model})" for p in providers)
    return Finding("llm", True, f"{len(providers)} provider(s) in failover order: {names}")


def check_backup(settings: Settings) -> Finding:
    """The backup key decodes, the backup storage opens, and a PostgreSQL store has client tools new enough."""
    from sqlalchemy.engine import make_url

    from amas.backup.engine import backup_key, backup_storage
    from amas.backup.store import tool_version

    key = backup_key(settings)
    storage = backup_storage(settings)
    parts = [f"to {storage.url}", "encrypted (AES-256-GCM)" if key else "not encrypted (no AMAS_ENCRYPTION_KEY)"]
    if make_url(settings.database_url).get_backend_name() == "postgresql":
        engine = get_engine(settings)
        check_connection(engine)
        with engine.connect() as conn:
            server = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one()) // 10000
        for tool in ("pg_dump", "pg_restore"):
            version = tool_version(tool)
            major = int(version.split(".")[0]) if version[:1].isdigit() else 0
            if major < server:
                return Finding("backup", False, f"{tool} {version} is older than the PostgreSQL {server} server",
                               f"install postgresql-client-{server} (pg_dump refuses newer servers)")
        parts.append(f"pg_dump/pg_restore {version} for server {server}")
    return Finding("backup", True, "; ".join(parts))


CHECKS: list[Check] = [check_python, check_store, check_storage, check_prefect, check_deployments,
                       check_dvc, check_git, check_disk, check_retention, check_agents, check_llm, check_backup]


def run_checks(settings: Settings, checks: list[Check] = CHECKS) -> list[Finding]:
    findings = []
    for check in checks:
        try:
            findings.append(check(settings))
        except AmasError as exc:
            findings.append(Finding(check.__name__.removeprefix("check_"), False, str(exc)))
    return findings
