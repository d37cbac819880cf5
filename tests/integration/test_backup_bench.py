"""A smoke run of scripts/bench_backup.py on a tiny PostgreSQL store, to S3 and encrypted too.

It checks the report's shape, that our verifications pass and that no scratch database is
left; it never asserts on speed (the machine is shared and noisy), except through the verdict
logic on made-up figures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from tests.plugins.postgres import ADMIN_DSN

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_backup.py"
SECTIONS = ("machine", "seed", "artifact_objects", "peers", "sizes", "measurements", "ratios", "memory", "breakdown",
            "throughput_local", "s3", "databases", "verdicts")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_backup", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_backup"] = module
    spec.loader.exec_module(module)
    return module


def existing(names: list[str]) -> list[str]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))]


def test_a_tiny_run_to_s3_and_encrypted_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMAS_")} | {"AMAS_BENCH_PG_DSN": ADMIN_DSN}
    done = subprocess.run([sys.executable, str(SCRIPT), "--size-mb", "5", "--rounds", "1", "--s3", "--encrypt",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)

    report: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in report, report.get("traceback")
    assert done.returncode == report["exit_code"] == 0, done.stdout[-3000:]
    assert set(SECTIONS) <= set(report)
    assert report["machine"]["cpus"] >= 1 and report["machine"]["pg_server_version"].startswith(("1", "2"))
    sizes = report["sizes"]
    assert sizes["database_bytes"] > 0 and sizes["dump_bytes"] > 0 and sizes["dump_zst_bytes"] > 0
    assert 0 < sizes["stored_bytes"] < sizes["plain_bytes"]
    assert sizes["stored_bytes_encrypted"] > 0
    assert set(sizes["objects"]) == {"store", "artifacts", "dvc-index"}
    for name in ("baseline_dump", "ours_backup", "ours_backup_encrypted", "ours_backup_s3", "baseline_restore",
                 "baseline_restore_zst", "ours_verify", "ours_verify_encrypted", "ours_verify_s3", "component_pg_dump_devnull",
                 "component_digests", "ours_restore_digests"):
        assert report["measurements"][name]["median"] > 0 and len(report["measurements"][name]["samples"]) == 1
    for name in ("backup", "verify", "restore", "restore_digests", "backup_encrypted", "verify_encrypted", "backup_s3"):
        ratio = report["ratios"][name]
        assert isinstance(ratio["value"], float) and ratio["value"] > 0 and ratio["paired_median"] > 0, name
    breakdown = report["breakdown"]
    assert set(breakdown["ours_backup"]["objects"]) >= {"store", "artifacts"}
    for name in ("ours_verify", "ours_verify_encrypted", "ours_verify_s3"):
        assert breakdown[name]["ok"] is True, breakdown[name]["failed"]
        assert {"manifest", "objects", "fetch", "restore", "digests", "quality", "erasures", "artifacts",
                "dvc-index"} == set(breakdown[name]["checks"])
        assert breakdown[name]["restore_seconds"]["median"] > 0
    scoped = breakdown["ours_restore_digests"]
    assert scoped["ok"] is True and set(scoped["checks"]) == {"fetch", "restore", "digests"}
    assert 0 < report["memory"]["ours_backup"]["python_mb"] <= report["memory"]["peak_python_mb"]
    assert isinstance(report["memory"]["ours_verify"]["tools"], dict)  # sampled: a short pg_restore may slip by
    s3 = report["s3"]
    assert s3["enabled"] and s3["encrypted"] and s3["stored_mb_per_second"] > 0 and s3["plain_mb_per_second"] > 0
    assert report["peers"] == {}
    created = report["databases"]["created"]
    assert len(created) == 3  # the store and two pg_restore targets; verification scratch copies are found by name
    assert report["databases"]["left"] == [] and existing(created) == []
    correctness = [v for v in report["verdicts"] if v["kind"] == "correctness"]
    assert correctness and all(v["passed"] for v in correctness), correctness
    assert "backup — " in done.stdout and "PASS databases.dropped" in done.stdout


def made_up(backup: float, verify: float, rss: float, verified: bool = True) -> dict[str, Any]:
    def measured(seconds: float) -> dict[str, Any]:
        return {"median": seconds, "samples": [seconds]}

    return {"measurements": {"ours_backup": measured(backup), "baseline_dump": measured(1.0),
                             "ours_verify": measured(verify), "ours_restore_digests": measured(verify),
                             "baseline_restore": measured(1.0)},
            "ratios": {"backup": {"value": backup, "paired_median": backup, "of": "ours_backup / baseline_dump"},
                       "verify": {"value": verify, "paired_median": verify, "of": "ours_verify / baseline_restore"},
                       "restore_digests": {"value": verify, "paired_median": verify,
                                           "of": "ours_restore_digests / baseline_restore"}},
            "memory": {"ours_backup": {"python_mb": rss, "tools_mb": 10.0}, "ours_verify": {"python_mb": rss,
                                                                                          "tools_mb": 10.0}},
            "breakdown": {"ours_verify": {"checks": {}, "ok": verified, "failed": [] if verified else ["digests: x"]}},
            "databases": {"created": ["a"], "left": []}, "s3": {"enabled": False}, "peers": {}}


def test_a_missed_target_fails_only_with_check_and_a_failure_always(bench: ModuleType) -> None:
    slow = made_up(backup=1.5, verify=1.4, rss=600.0)
    slow["verdicts"] = bench.verdicts(slow)
    assert {v["name"] for v in slow["verdicts"] if v["passed"] is False} == {
        "ratio.backup", "ratio.restore_digests", "rss.ours_backup", "rss.ours_verify"}
    assert bench.exit_code(slow, check=False) == 0 and bench.exit_code(slow, check=True) == 1
    fine = made_up(backup=1.1, verify=1.3, rss=300.0)
    fine["verdicts"] = bench.verdicts(fine)
    assert bench.exit_code(fine, check=True) == 0
    unverified = made_up(backup=1.0, verify=1.0, rss=100.0, verified=False)
    unverified["verdicts"] = bench.verdicts(unverified)
    assert bench.exit_code(unverified, check=False) == 1
    crashed: dict[str, Any] = {"error": "OperationalError: no server"}
    crashed["verdicts"] = bench.verdicts(crashed)
    assert bench.exit_code(crashed, check=False) == 1


@pytest.mark.parametrize("argv", [["--size-mb", "0"], ["--rounds", "0"], ["--url", "sqlite:///x.db"],
                                  ["--peers", "barman"]])
def test_bad_arguments_are_refused(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
