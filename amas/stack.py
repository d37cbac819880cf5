"""The local stack behind ``amas up``: Prefect server, work pool, deployments, worker.

Everything runs as child processes of ``amas up`` in their own process groups, with logs under
``AMAS_HOME/logs``. Stopping sends SIGTERM, then a second signal (Prefect's worker turns the
first SIGTERM into SIGINT and may keep going), then SIGKILL after a grace period.
Each step is idempotent, so running ``amas up`` again after a stop is safe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from amas.config import Settings
from amas.errors import AmasError, ServiceUnavailable

PROJECT_DIR = Path(__file__).resolve().parent.parent


def prefect_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Prefect process of the local stack (server, deploy, worker, runs)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PREFECT_HOME": str(settings.prefect_home),
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_SERVER_API_HOST": settings.prefect.host,
            "PREFECT_SERVER_API_PORT": str(settings.prefect.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(settings.prefect.worker_poll_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            # Flow runs started by the worker read the same AMAS home as `amas up`.
            "AMAS_HOME": str(settings.core.home),
        }
    )
    return env


def prefect_cli() -> list[str]:
    """The Prefect CLI of this interpreter, so a venv's Prefect is used even off PATH."""
    return [sys.executable, "-m", "prefect"]


def _restore_sigint() -> None:
    # A process started from a non-interactive shell may inherit SIGINT as ignored, and then
    # Prefect's SIGTERM-to-SIGINT shutdown does nothing. Give the child the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = PROJECT_DIR
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_restore_sigint,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, a second SIGTERM after a third of the grace, SIGKILL at the end."""
        if self.popen is None:
            return None
        steps: list[tuple[float, int]] = [(0, signal.SIGTERM), (grace / 3, signal.SIGTERM), (grace, signal.SIGKILL)]
        start = time.monotonic()
        for at, sig in steps:
            while self.popen.poll() is None and time.monotonic() - start < at:
                time.sleep(0.1)
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
        return self.popen.wait()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read() or b"false") is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for_api(api_url: str, *, timeout: float, process: ManagedProcess | None = None) -> float:
    """Block until the Prefect API answers its health check; return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if api_healthy(api_url):
            return time.monotonic() - start
        if process is not None and not process.running:
            raise ServiceUnavailable(
                f"Prefect server exited during start-up (log {process.log_path}):\n{process.log_tail()}"
            )
        time.sleep(0.25)
    raise ServiceUnavailable(f"Prefect API at {api_url} did not become healthy within {timeout:.0f} s")


def start_server(settings: Settings, log_dir: Path) -> ManagedProcess:
    host, port = settings.prefect.host, settings.prefect.port
    if port_in_use(host, port):
        raise AmasError(
            f"port {port} on {host} is already in use (another `amas up` or Prefect server?); "
            "stop it, or set AMAS_PREFECT_PORT to a free port"
        )
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    argv = [*prefect_cli(), "server", "start", "--host", host, "--port", str(port)]
    return ManagedProcess("prefect-server", argv, prefect_env(settings), log_dir / "prefect-server.log").start()


def run_prefect(settings: Settings, args: list[str], *, timeout: float = 300) -> str:
    """Run a Prefect CLI command against the stack's API; raise with its output on failure."""
    result = subprocess.run(
        [*prefect_cli(), "--no-prompt", *args], env=prefect_env(settings), cwd=PROJECT_DIR,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-12:]
        raise AmasError(f"`prefect {' '.join(args)}` failed:\n" + "\n".join(output))
    return result.stdout


def ensure_work_pool(settings: Settings) -> bool:
    """Create the process work pool unless it exists; return True when it was created."""
    # Ask the API, not `work-pool ls`: its table truncates names to the terminal width.
    response = httpx.get(f"{settings.prefect_api_url.rstrip('/')}/work_pools/{settings.prefect.work_pool}", timeout=10)
    if response.status_code == 200:
        return False
    run_prefect(settings, ["work-pool", "create", settings.prefect.work_pool, "--type", "process"])
    return True


def deploy_all(settings: Settings) -> str:
    """Apply every deployment in prefect.yaml (idempotent: deploying again updates them)."""
    return run_prefect(settings, ["deploy", "--all"], timeout=600)


def start_worker(settings: Settings, log_dir: Path) -> ManagedProcess:
    argv = [*prefect_cli(), "worker", "start", "--pool", settings.prefect.work_pool, "--type", "process",
            "--name", f"amas-local-{socket.gethostname()}"]
    return ManagedProcess("prefect-worker", argv, prefect_env(settings), log_dir / "prefect-worker.log").start()


def wait_for_worker(settings: Settings, *, timeout: float, process: ManagedProcess) -> float:
    """Block until a worker in the pool reports ONLINE, so a UI click right away gets picked up."""
    start = time.monotonic()
    url = f"{settings.prefect_api_url.rstrip('/')}/work_pools/{settings.prefect.work_pool}/workers/filter"
    while time.monotonic() - start < timeout:
        if not process.running:
            raise ServiceUnavailable(f"Prefect worker exited during start-up (log {process.log_path}):\n{process.log_tail()}")
        try:
            workers = httpx.post(url, json={}, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            workers = []
        if any(w.get("status") == "ONLINE" for w in workers):
            return time.monotonic() - start
        time.sleep(0.5)
    raise ServiceUnavailable(f"no worker came online in pool {settings.prefect.work_pool} within {timeout:.0f} s (log {process.log_path})")


@dataclass
class Stack:
    """The running local stack; ``stop()`` ends it in reverse order."""

    settings: Settings
    processes: list[ManagedProcess] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def first_exited(self) -> ManagedProcess | None:
        return next((p for p in self.processes if not p.running), None)


def bring_up(settings: Settings, *, step: Callable[[str], None], server_timeout: float = 120.0) -> Stack:
    """Start server, pool, deployments and worker; on any failure stop what was started."""
    log_dir = settings.core.home / "logs"
    stack = Stack(settings)
    try:
        step("starting Prefect server")
        server = start_server(settings, log_dir)
        stack.processes.append(server)
        took = wait_for_api(settings.prefect_api_url, timeout=server_timeout, process=server)
        step(f"Prefect server healthy in {took:.1f} s")
        created = ensure_work_pool(settings)
        step(f"work pool {settings.prefect.work_pool} {'created' if created else 'already there'}")
        deploy_all(settings)
        step("deployments from prefect.yaml applied")
        worker = start_worker(settings, log_dir)
        stack.processes.append(worker)
        took = wait_for_worker(settings, timeout=server_timeout, process=worker)
        step(f"worker online in {took:.1f} s, polling {settings.prefect.work_pool} every {settings.prefect.worker_poll_seconds:g} s")
    except BaseException:
        stack.stop()
        raise
    return stack
