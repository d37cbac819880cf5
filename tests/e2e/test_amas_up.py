"""`amas up` as a user runs it: the stack comes up, the doctor is green, a deployment run
started through the API completes on the worker, Ctrl-C stops everything, and a second
`amas up` is safe (refused while one runs, fine after it stopped)."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import psutil
import pytest
import yaml

from amas.stack import PROJECT_DIR, port_in_use
from tests.plugins.stack import AMAS, UP_TIMEOUT, Up

pytestmark = pytest.mark.e2e

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
