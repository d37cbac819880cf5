"""The replay server itself: its scripts, and the standalone process other test tiers start."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import httpx
import pytest

from amas.stack import PROJECT_DIR
from tests.plugins.llm_replay import ReplayServer, expand_script

pytestmark = pytest.mark.unit


def test_scripts_expand_and_the_last_step_repeats(llm_replay: ReplayServer) -> None:
    assert expand_script("500*2,ok") == ["500", "500", "ok"]
    assert expand_script("429:3,slow:0.5,fixture:no_usage") == ["429:3", "slow:0.5", "fixture:no_usage"]
    url = llm_replay.base_url("openai", "503,ok", label="x") + "/chat/completions"
    statuses = [httpx.post(url, json={"model": "m"}).status_code for _ in range(3)]
    assert statuses == [503, 200, 200]


@pytest.mark.parametrize("script", ["teapot", "ok*0", "ok*x", "", "fixture:", "slow:soon"])
def test_bad_scripts_are_refused(llm_replay: ReplayServer, script: str) -> None:
    with pytest.raises(ValueError, match="replay"):
        llm_replay.base_url("openai", script)


def test_429_carries_the_scripted_retry_after(llm_replay: ReplayServer) -> None:
    response = httpx.post(llm_replay.base_url("ollama", "429:7") + "/api/chat", json={})
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"


def test_standalone_server_serves_and_reports_its_log() -> None:
    process = subprocess.Popen([sys.executable, "-m", "tests.plugins.llm_replay", "--port", "0"], cwd=PROJECT_DIR,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("llm replay server listening on http://127.0.0.1:")
        url = line.split()[-1]
        reply = httpx.post(f"{url}/cli/ok/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
                           headers={"Authorization": "Bearer sk-standalone-1"})
        assert reply.json()["usage"]["total_tokens"] == 475
        [logged] = httpx.get(f"{url}/_requests").json()
        assert logged["label"] == "cli" and logged["headers"]["Authorization"] == "<redacted>"
        assert logged["auth_sha256"] == hashlib.sha256(b"sk-standalone-1").hexdigest()
        assert "sk-standalone-1" not in httpx.get(f"{url}/_requests").text
        httpx.post(f"{url}/_reset")
        assert httpx.get(f"{url}/_requests").json() == []
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
