"""`amas up` as a user starts it, for the e2e tests: a running stack on a free port with its own home."""

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

import psutil
import pytest

from amas.stack import PROJECT_DIR
from tests.plugins.prefect_server import free_port

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


def stack_environment(home: Path) -> dict[str, str]:
    """The caller's environment without AMAS_/PREFECT_ settings, with its own home and a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMAS_", "PREFECT_"))}
    env.update(AMAS_HOME=str(home), AMAS_ENV_FILE="", AMAS_PREFECT_PORT=str(free_port()))
    return env


@contextlib.contextmanager
def started_stack(env: dict[str, str]) -> Iterator[tuple[Up, str]]:
    """`amas up` until "AMAS is up"; on the way out, kill it and its children if still running."""
    up = Up(env)
    api = f"http://127.0.0.1:{env['AMAS_PREFECT_PORT']}/api"
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


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    return stack_environment(tmp_path / "home")


@pytest.fixture
def running_stack(stack_env: dict[str, str]) -> Iterator[tuple[Up, str]]:
    with started_stack(stack_env) as stack:
        yield stack
