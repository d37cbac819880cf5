"""`amas up` as a user runs it: the stack comes up, the doctor is green, a deployment run
started through the API completes on the worker, Ctrl-C stops everything, and a second
`amas up` is safe (refused while one runs, fine after it stopped)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from amas.stack import PROJECT_DIR, port_in_use
from tests.plugins.prefect_server import free_port

pytestmark = pytest.mark.e2e

AMAS = str(Path(sys.executable).parent / "amas")
UP_TIMEOUT = 300


class Up:
    """A running `amas up` whose output is read line by line in a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [AMAS, "up", *args], env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True,
            # As from a terminal: SIGINT must reach `amas up` with its default meaning.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"amas up exited ({self.process.wait()}) before {text!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMAS_", "PREFECT_"))}
    env.update(AMAS_HOME=str(tmp_path / "home"), AMAS_ENV_FILE="", AMAS_PREFECT_PORT=str(free_port()))
    return env


@pytest.fixture
def running_stack(stack_env: dict[str, str]) -> Iterator[tuple[Up, str]]:
    up = Up(stack_env)
    api = f"http://127.0.0.1:{stack_env['AMAS_PREFECT_PORT']}/api"
    try:
        up.wait_for("AMAS is up", UP_TIMEOUT)
        yield up, api
    finally:
        if up.process.poll() is None:
            # Children run in their own sessions: kill them too, or a failed test leaks a server.
            children = psutil.Process(up.process.pid).children(recursive=True)
            up.process.kill()
            up.process.wait()
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()


def _wait_for_worker(client: httpx.Client, pool: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.post(f"/work_pools/{pool}/workers/filter", json={}).json()
        online = [w for w in workers if w["status"] == "ONLINE"]
        if online:
            return online
        time.sleep(1)
    raise AssertionError(f"no worker online in {pool} within {timeout} s")


def test_up_serves_deployments_runs_them_and_stops_cleanly(running_stack: tuple[Up, str], stack_env: dict[str, str]) -> None:
    up, api = running_stack
    port = int(stack_env["AMAS_PREFECT_PORT"])
    wanted = {d["name"] for d in yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())["deployments"]}

    with httpx.Client(base_url=api, timeout=10) as client:
        deployed = {d["name"] for d in client.post("/deployments/filter", json={}).json()}
        assert wanted <= deployed
        assert _wait_for_worker(client, "amas-local", timeout=5)
        ui = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": "text/html"}, timeout=10, follow_redirects=True)
        assert ui.status_code == 200 and "<html" in ui.text.lower()

        doctor = subprocess.run([AMAS, "doctor"], env=stack_env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "all checks passed" in doctor.stdout

        # What a click on "Run" in the UI does: create a run of the deployment, the worker picks it up.
        deployment = client.get("/deployments/name/amas-health/amas-health").json()
        run = client.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).json()
        deadline = time.monotonic() + 180
        state = run["state"]
        while time.monotonic() < deadline and state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            time.sleep(1)
            state = client.get(f"/flow_runs/{run['id']}").json()["state"]
        assert state["type"] == "COMPLETED", state
        artifacts = client.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["amas-health"]}}}).json()
        assert any("AMAS health: healthy" in str(a["data"]) for a in artifacts)

    # A second `amas up` while this one runs is refused with one line naming the port.
    second = subprocess.run([AMAS, "up"], env=stack_env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert f"port {port}" in second.stderr and "Traceback" not in second.stderr

    children = psutil.Process(up.process.pid).children(recursive=True)
    assert len(children) >= 2
    up.process.send_signal(signal.SIGINT)
    assert up.finish(timeout=90) == 0, "\n".join(up.lines)
    assert "stack stopped" in "\n".join(up.lines)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    assert not port_in_use("127.0.0.1", port)

    # Again, after a stop: the pool and deployments are already there and nothing breaks.
    again = Up(stack_env, "--timeout", "2")
    assert again.finish(timeout=UP_TIMEOUT) == 0, "\n".join(again.lines)
    assert any("already there" in line for line in again.lines), again.lines
