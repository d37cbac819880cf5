"""`amas backup run | verify | list | prune` and `amas restore` as an operator types them.

On SQLite and PostgreSQL, with the backups in the local storage and in S3 (moto's server over
HTTP): run then verify passes, a damaged backup fails verification and the listing's check, and
the latest backup restores into an empty database. Mistakes are refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amas.config import get_settings
from tests.integration.test_retention_cli import amas, one_line_refusal
from tests.plugins.backup import BackupEnv
from tests.plugins.postgres import create_scratch_database, drop_database
from tests.plugins.s3 import FAKE_SECRET_ACCESS_KEY, S3Bucket, s3_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("env", "args", "code", "expected"), [
    ({"AMAS_BACKUP_COMPRESSION_LEVEL": "30"}, ["backup", "list"], 2,
     ["AMAS_BACKUP_COMPRESSION_LEVEL", "less than or equal to 19"]),
    ({"AMAS_BACKUP_ENCRYPT": "true"}, ["restore", "latest", "--to", "sqlite:///x.db"], 2,
     ["AMAS_BACKUP_ENCRYPT is true but AMAS_ENCRYPTION_KEY is not set"]),
    ({}, ["restore", "latest", "--to", "sqlite:///x.db"], 1, ["no complete backup in"]),
    ({"AMAS_BACKUP_SCRATCH_URL": "sqlite:///x.db"}, ["backup", "list"], 2,
     ["AMAS_BACKUP_SCRATCH_URL", "must be a postgresql:// URL"]),
])
def test_mistakes_are_refused_in_one_line(env: dict[str, str], args: list[str], code: int, expected: list[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    one_line_refusal(amas(*args), code, *expected)


def test_restore_refuses_an_unsupported_target_in_one_line(backup_env: BackupEnv) -> None:
    from amas.backup.engine import run_backup

    run_backup(backup_env.engine, backup_env.settings)
    one_line_refusal(amas("restore", "latest", "--to", "mysql://root@127.0.0.1/test"), 1,
                     "--to:", "backend 'mysql' is not supported")


def _use_s3(monkeypatch: pytest.MonkeyPatch, bucket: S3Bucket) -> None:
    monkeypatch.setenv("AMAS_BACKUP_URL", f"s3://{bucket.name}/amas")
    monkeypatch.setenv("AMAS_STORAGE_S3_ENDPOINT_URL", bucket.endpoint)
    monkeypatch.setenv("AMAS_STORAGE_S3_ACCESS_KEY_ID", "amas-test-key-id")
    monkeypatch.setenv("AMAS_STORAGE_S3_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    get_settings.cache_clear()


def _damage(where: str, key: str, bucket: S3Bucket | None) -> None:
    """Flip one byte in the middle of a stored object, keeping its size."""
    if bucket is None:
        path = Path(get_settings().storage_url) / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return
    client = s3_client(bucket.endpoint)
    full = f"amas/{key}"
    data = bytearray(client.get_object(Bucket=bucket.name, Key=full)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket.name, Key=full, Body=bytes(data))


# Both dialects and both storages, crossed: the engine tests cover the other pairs.
@pytest.mark.parametrize(("store_url", "where"), [("sqlite", "local"), ("postgresql", "s3")],
                         indirect=["store_url"], ids=["sqlite-local", "postgresql-s3"])
def test_run_verify_list_restore_and_a_damaged_backup(backup_env: BackupEnv, where: str, prefect_server: str,
                                                        request: pytest.FixtureRequest,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    if bucket is not None:
        _use_s3(monkeypatch, bucket)

    done = amas("backup", "run", "--format", "json", api=prefect_server)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    backup_id = result["backup"]["id"]
    assert result["verification"]["ok"] is True
    assert result["backup"]["tables"]["data_subjects"] == 20

    verified = amas("backup", "verify", backup_id, api=prefect_server)
    assert verified.returncode == 0, verified.stderr
    assert "digests" in verified.stdout and "verified:" in verified.stdout

    listed = amas("backup", "list", "--check", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    catalog = json.loads(listed.stdout)
    assert [b["id"] for b in catalog["backups"]] == [backup_id]
    assert catalog["sources"][0]["ok"] is True and catalog["sources"][0]["rpo_hours"] < 1

    pruned = amas("backup", "prune", "--dry-run", "--format", "json")
    assert pruned.returncode == 0, pruned.stderr
    decisions = json.loads(pruned.stdout)["decisions"]
    assert decisions[0]["keep"] is True and "newest verified" in decisions[0]["reasons"]

    target = (f"sqlite:///{tmp_path / 'restored.db'}" if backup_env.engine.dialect.name == "sqlite"
              else create_scratch_database("amas_cli_restore"))
    try:
        restored = amas("restore", "latest", "--to", target, "--format", "json")
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["ok"] is True
    finally:
        if target.startswith("postgresql"):
            drop_database(target)

    store_key = result["backup"]["objects"][0]["key"]
    _damage(where, store_key, bucket)
    failed = amas("backup", "verify", backup_id, api=prefect_server)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith(f"amas: backup {backup_id} unverified: fetch:") and "sha256" in line, line
    assert FAKE_SECRET_ACCESS_KEY not in failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout
    stale = amas("backup", "list", "--check")
    assert stale.returncode == 1, stale.stdout
    assert "FAIL" in stale.stdout and f"newest backup {backup_id} failed restore verification" in stale.stdout
