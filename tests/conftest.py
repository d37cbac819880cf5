"""Shared fixtures live in tests/plugins/, one module per service.

A skipped test proves nothing, so a skip fails the run (like restic's
RESTIC_TEST_DISALLOW_SKIP); set AMAS_TEST_ALLOW_SKIP=1 locally to see skips as skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = [
    "tests.plugins.settings",
    "tests.plugins.postgres",
    "tests.plugins.store",
    "tests.plugins.s3",
    "tests.plugins.faulty_http",
    "tests.plugins.prefect_server",
    "tests.plugins.agents",
    "tests.plugins.llm_replay",
    "tests.plugins.web_servers",
    "tests.plugins.stack",
    "tests.plugins.pipeline",
    "tests.plugins.backup",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("AMAS_TEST_ALLOW_SKIP") != "1":
        report.outcome = "failed"
        report.longrepr = f"skipped tests are not allowed (set AMAS_TEST_ALLOW_SKIP=1 to allow): {report.longrepr}"
