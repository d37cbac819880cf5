"""Purging superseded dataset versions from every DVC remote, not only AMAS's.

The erasure's purge step deletes exactly the superseded md5s from each place DVC's configuration
names (a local directory, S3 over HTTP on the moto server) and from AMAS's storage, counting a
place configured twice once. A place that cannot be reached is reported per object and does not
stop the others; what it still holds stays pending, and the next run finishes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from amas.config import get_settings, load_settings
from amas.db.ledger import erasure_key, key_id, normalise_identifier, subject_digest
from amas.gdpr.certificate import render_html
from amas.gdpr.datasets import (
    PENDING_PURGES,
    STORAGE_PLACE,
    erase_datasets,
    pending_purges,
    purge_objects,
    rerun_changed_stages,
)
from amas.gdpr.discovery import discover_datasets
from amas.pipeline import dvc
from amas.storage import open_storage
from amas.storage.s3 import S3Storage
from tests.plugins.faulty_http import FaultyProxy
from tests.plugins.pipeline import locked_outs, set_params
from tests.plugins.s3 import REGION, S3Bucket, s3_client

pytestmark = pytest.mark.integration


def add_remote(root: Path, name: str, level: str = "repo", **options: Any) -> None:
    with dvc.repo(root) as handle, handle.config.edit(level) as config:
        config["remote"][name] = options


def s3_keys(bucket: S3Bucket, prefix: str) -> set[str]:
    pages = s3_client(bucket.endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def object_path(md5: str) -> str:
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def first_person(work: Path) -> dict[str, Any]:
    return pq.read_table(work / "data/raw/people.parquet", columns=["subject_id", "email"]).to_pylist()[0]


def test_the_purge_reaches_every_remote_and_a_dead_one_is_finished_by_the_next_run(
        pipeline_workspace: Path, s3_bucket: S3Bucket, faulty_s3: FaultyProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One attempt per request: the dead remote should fail in about a second, not after retries.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    work = pipeline_workspace
    set_params(work, "generate", rows=500)  # the smallest data that still has every kind of row
    settings = get_settings()
    storage = open_storage(settings)
    rerun_changed_stages(work, settings)
    mirror = tmp_path / "mirror"
    add_remote(work, "mirror", url=str(mirror))
    add_remote(work, "offsite", url=f"s3://{s3_bucket.name}/offsite", endpointurl=s3_bucket.endpoint, region=REGION)
    add_remote(work, "flaky", url=f"s3://{s3_bucket.name}/flaky", endpointurl=faulty_s3.endpoint, region=REGION)
    for remote in (dvc.configure_remote(work, settings), "mirror", "offsite", "flaky"):
        dvc.push(work, remote)
    before = locked_outs(work)
    amas_remote = settings.core.home / "storage" / "dvc"

    person = first_person(work)
    identifiers = {normalise_identifier(person["subject_id"]), normalise_identifier(person["email"])}
    contained = sorted(discover_datasets(work, identifiers).contained)
    assert "data/raw/people.parquet" in contained
    key = erasure_key(settings)
    remembered: list[dict[str, str]] = []

    def erase(contained: list[str]) -> Any:
        return erase_datasets(work, digests={subject_digest(v, key) for v in identifiers}, key_id=key_id(key),
                              contained=contained, settings=settings, storage=storage, remember=remembered.append,
                              key=key)

    faulty_s3.down(reset=True)
    first = erase(contained)
    faulty_s3.up()

    after = locked_outs(work)
    old = {before[path]: path for path in contained}
    assert all(after[path] != before[path] for path in contained)
    entries = {p["md5"]: p for p in first.purged}
    assert set(entries) == set(old)
    for md5, entry in entries.items():
        places = entry["remotes"]
        # AMAS's storage is the `amas` remote: one place, reported once; the committed `local`
        # remote (under the workspace) never received anything.
        assert set(places) == {"local", "amas", "mirror", "offsite", "flaky"}
        assert (places["amas"], places["mirror"], places["offsite"], places["local"]) == (
            "deleted", "deleted", "deleted", "absent")
        assert places["flaky"].startswith("failed: ") and entry["remote"] == "failed: flaky"
        assert "amas-test-secret-not-real" not in places["flaky"]
        assert entry["cache"] == "deleted"
        assert not (amas_remote / object_path(md5)).exists() and not (mirror / object_path(md5)).exists()
    assert not {f"offsite/{object_path(md5)}" for md5 in old} & s3_keys(s3_bucket, "offsite/")
    assert {f"flaky/{object_path(md5)}" for md5 in old} <= s3_keys(s3_bucket, "flaky/"), "the dead remote kept them"
    amas = next(r for r in first.remotes if r["name"] == "amas")
    assert amas["same_as"] == [STORAGE_PLACE]
    # What is left is remembered in the workspace and handed to the request.
    assert first.unfinished == old == pending_purges(work)
    assert remembered[-1] == old and set(old) <= set(remembered[0])

    # Exactly those objects: versions that never held the person stay everywhere (an aggregate's
    # old version too), and the new versions were pushed.
    others = {md5 for path, md5 in before.items() if path not in contained}
    assert before["data/features/daily_events.parquet"] in others
    for md5 in others:
        assert (mirror / object_path(md5)).is_file() and (amas_remote / object_path(md5)).is_file()
        assert f"offsite/{object_path(md5)}" in s3_keys(s3_bucket, "offsite/")
    for path in contained:
        assert (amas_remote / object_path(after[path])).is_file(), f"new {path} was not pushed"

    # The certificate shows each place's answer per object.
    page = render_html({"certificate": "GDPR Art. 17 erasure", "request": {"ref": "ER-TEST"},
                        "subject": {"digest": "d", "key_id": "k"}, "result": "erased", "found": [],
                        "actions": [], "datasets": json.loads(json.dumps(first.as_dict())), "audit": [],
                        "notes": [], "ledger": {}})
    assert "mirror: deleted;" in page and "flaky: failed: " in page
    assert "could not be deleted from every remote" in page

    # The remote is back: running the step again (the person is in no dataset now) deletes what
    # it held and nothing else.
    assert discover_datasets(work, identifiers).contained == {}
    again = erase([])
    assert again.ran == [] and locked_outs(work) == after
    retried = {p["md5"]: p["remotes"] for p in again.purged}
    assert set(retried) == set(old)
    assert all(places["flaky"] == "deleted" and places["mirror"] == "absent" for places in retried.values())
    assert again.unfinished == {} and pending_purges(work) == {} and not (work / PENDING_PURGES).exists()
    assert not {f"flaky/{object_path(md5)}" for md5 in old} & s3_keys(s3_bucket, "flaky/")
    assert {f"flaky/{object_path(md5)}" for md5 in others} <= s3_keys(s3_bucket, "flaky/")


def write_object(base: Path, relative: str, data: bytes) -> None:
    (base / relative).parent.mkdir(parents=True, exist_ok=True)
    (base / relative).write_bytes(data)


def test_legacy_layout_locked_objects_and_one_bucket_under_two_names(
        tmp_path: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    from dvc.repo import Repo

    from tests.plugins.pipeline import isolated_dvc_env

    for name, value in isolated_dvc_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "repo"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    old, current = b"old version, with the person\n", b"current version\n"
    old_md5, current_md5 = hashlib.md5(old).hexdigest(), hashlib.md5(current).hexdigest()
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  make:\n    cmd: make\n    outs:\n    - path: data/out.txt\n"
        f"      hash: md5\n      md5: {current_md5}\n      size: {len(current)}\n", encoding="utf-8")
    legacy = tmp_path / "legacy-remote"
    for md5, data in ((old_md5, old), (current_md5, current)):
        write_object(root / ".dvc" / "cache", object_path(md5), data)
        write_object(legacy, f"{md5[:2]}/{md5[2:]}", data)  # DVC 2.x's layout
        s3_client(s3_bucket.endpoint).put_object(Bucket=s3_bucket.name, Key=f"amas/dvc/{object_path(md5)}",
                                                 Body=data)
    add_remote(root, "legacy", url=str(legacy))
    # AMAS's storage on S3 is the same place as this remote: the endpoint given with a trailing
    # slash, the credentials in config.local as configure_remote writes them.
    add_remote(root, "store", level="local", url=f"s3://{s3_bucket.name}/amas/dvc",
               endpointurl=s3_bucket.endpoint + "/", region=REGION)
    # A remote DVC cannot even open here (no dvc-gs installed): reported, and the others go on.
    add_remote(root, "archive", level="local", url="gs://amas-archive/dvc", credentialpath="/etc/amas/gcs.json")
    settings = load_settings(storage={"s3_endpoint_url": s3_bucket.endpoint, "s3_region": REGION})
    storage = S3Storage.from_url(f"s3://{s3_bucket.name}/amas", settings.storage)

    done = purge_objects(root, {old_md5: "data/out.txt", current_md5: "data/out.txt"}, storage)

    entries = {p["md5"]: p for p in done.objects}
    assert entries[current_md5]["remote"] == "kept: the current dvc.lock uses it"
    places = entries[old_md5]["remotes"]
    assert (places["legacy"], places["store"]) == ("deleted", "deleted") and set(places) == {"legacy", "store",
                                                                                            "archive"}
    assert places["archive"].startswith("failed: ") and "gs" in places["archive"], places["archive"]
    assert entries[old_md5]["cache"] == "deleted"
    assert done.unfinished == {old_md5: "data/out.txt"} == pending_purges(root)
    assert [(r["name"], r.get("same_as")) for r in done.remotes] == [
        ("legacy", None), ("store", [STORAGE_PLACE]), ("archive", None)]
    assert not (legacy / old_md5[:2] / old_md5[2:]).exists()
    assert (legacy / current_md5[:2] / current_md5[2:]).is_file()
    assert s3_keys(s3_bucket, "amas/") == {f"amas/dvc/{object_path(current_md5)}"}
    assert (root / ".dvc" / "cache" / object_path(current_md5)).is_file()
    assert not (root / ".dvc" / "cache" / object_path(old_md5)).exists()

    # The operator drops that remote; the next run finds the rest already gone and is done.
    with dvc.repo(root) as handle, handle.config.edit("local") as config:
        del config["remote"]["archive"]
    again = purge_objects(root, pending_purges(root), storage)
    assert again.objects[0]["remotes"] == {"legacy": "absent", "store": "absent"}
    assert again.objects[0]["cache"] == "absent" and again.objects[0]["remote"] == "absent"
    assert again.unfinished == {} == pending_purges(root)


def test_a_failure_reason_never_carries_credentials() -> None:
    from amas.gdpr.datasets import _reason

    error = PermissionError("denied for key s3cr3t-value at https://ops:hunter2@minio.example:9000/bucket")
    reason = _reason(error, ["s3cr3t-value"])
    assert reason == "PermissionError: denied for key *** at https://ops:***@minio.example:9000/bucket"



def test_a_pending_purge_sends_the_next_erasure_back_to_the_datasets(store_engine: Any, tmp_path: Path) -> None:
    """A plain re-run of ``amas gdpr erase`` must retry what an unreachable remote still holds."""
    from amas.db.models import RequestKind
    from amas.db.session import session_scope
    from amas.gdpr import requests
    from amas.gdpr.erase import _datasets_pending

    key = erasure_key(get_settings())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert not _datasets_pending(store_engine, tmp_path, key)

    pending = tmp_path / PENDING_PURGES
    pending.parent.mkdir(parents=True)
    pending.write_text(json.dumps({"objects": {"ab" * 16: "data/raw/people.parquet"}}))
    assert _datasets_pending(store_engine, tmp_path, key), "the workspace's pending purges must be retried"

    pending.unlink()
    with session_scope(store_engine) as session:
        request, _ = requests.open_request(session, kind=RequestKind.erase, subject_digest="d" * 64,
                                           key_id=key_id(key), actor="test")
        requests.update_summary(request, purge_pending={"cd" * 16: "data/raw/people.parquet"})
    assert _datasets_pending(store_engine, tmp_path, key), "a request's promised purge must be retried"
