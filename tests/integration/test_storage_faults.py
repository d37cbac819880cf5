"""S3 storage behind real HTTP faults: transient failures are retried, a dead endpoint fails clearly.

Every client here talks to moto through ``FaultyProxy`` (``faulty_s3``); results are checked
against moto directly (``s3_client``) so the checks cannot be fooled by the proxy.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

import amas.storage.s3
from amas.storage import S3Storage, StorageUnavailable
from tests.plugins.faulty_http import FaultyProxy
from tests.plugins.s3 import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION, S3Bucket, s3_client

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB
"""S3's smallest part size, used as both threshold and part size so that 12 MiB is three parts."""


def _storage(proxy: FaultyProxy, bucket: S3Bucket) -> S3Storage:
    return S3Storage(
        bucket.name,
        endpoint_url=proxy.endpoint,
        region=REGION,
        access_key_id=FAKE_ACCESS_KEY_ID,
        secret_access_key=SecretStr(FAKE_SECRET_ACCESS_KEY),
        multipart_threshold=PART,
        multipart_chunksize=PART,
    )


def _is_part(number: int) -> Callable[[str, str], bool]:
    return lambda method, target: method == "PUT" and f"partNumber={number}" in target


def _stored(bucket: S3Bucket, key: str) -> bytes:
    return s3_client(bucket.endpoint).get_object(Bucket=bucket.name, Key=key)["Body"].read()


def _pending_uploads(bucket: S3Bucket) -> list[object]:
    return s3_client(bucket.endpoint).list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])


def test_put_and_get_survive_500s(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    storage = _storage(faulty_s3, s3_bucket)
    faulty_s3.fail_next(1, match="PUT")
    faulty_s3.fail_next(1, match="GET")

    info = storage.put("backups/db.dump", b"nightly backup")
    assert storage.get("backups/db.dump") == b"nightly backup"

    assert faulty_s3.faulted == 2
    assert [(method, outcome) for method, _, outcome in faulty_s3.log] == [
        ("HEAD", "forwarded"),  # the bucket check
        ("PUT", "error"), ("PUT", "forwarded"),
        ("GET", "error"), ("GET", "forwarded"),
    ]
    assert _stored(s3_bucket, "backups/db.dump") == b"nightly backup"
    assert info.sha256 == hashlib.sha256(b"nightly backup").hexdigest()


def test_multipart_upload_survives_a_failed_part(faulty_s3: FaultyProxy, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    content = os.urandom(12 * MiB)
    source = tmp_path / "backup.bin"
    source.write_bytes(content)
    storage = _storage(faulty_s3, s3_bucket)
    faulty_s3.fail_next(1, match=_is_part(2))

    with source.open("rb") as stream:
        info = storage.put("big.bin", stream)

    assert faulty_s3.faulted == 1
    part_two = [outcome for method, target, outcome in faulty_s3.log if _is_part(2)(method, target)]
    assert part_two == ["error", "forwarded"]
    head = s3_client(s3_bucket.endpoint).head_object(Bucket=s3_bucket.name, Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "not stored as a three-part upload"
    assert hashlib.sha256(_stored(s3_bucket, "big.bin")).hexdigest() == info.sha256
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    assert _pending_uploads(s3_bucket) == []


def test_response_slower_than_the_read_timeout_is_retried(
    faulty_s3: FaultyProxy, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read when the client is built; the default (60 s) would make this test wait a minute.
    monkeypatch.setattr(amas.storage.s3, "READ_TIMEOUT_SECONDS", 0.5)
    stall = 3.0
    storage = _storage(faulty_s3, s3_bucket)
    storage.put("slow", b"eventually")
    faulty_s3.delay_next(1, stall, match="GET")

    started = time.monotonic()
    assert storage.get("slow") == b"eventually"
    elapsed = time.monotonic() - started

    assert [outcome for method, _, outcome in faulty_s3.log if method == "GET"] == ["delayed", "forwarded"]
    assert elapsed < stall, f"took {elapsed:.1f} s: the client waited out the stall instead of timing out"


@pytest.fixture
def two_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give up sooner for tests where giving up is the point: same retry path, shorter back-off.

    Read when a client is built, like the timeouts.
    """
    monkeypatch.setattr(amas.storage.s3, "MAX_ATTEMPTS", 2)


@pytest.mark.usefixtures("two_attempts")
@pytest.mark.parametrize(
    ("reset", "cause"), [(False, "ServiceUnavailable"), (True, "ConnectionClosedError")], ids=["503", "reset"]
)
def test_endpoint_that_stays_down_fails_clearly_and_stores_nothing(
    faulty_s3: FaultyProxy, s3_bucket: S3Bucket, reset: bool, cause: str
) -> None:
    storage = _storage(faulty_s3, s3_bucket)
    assert list(storage.list()) == []  # checks the bucket now, so the put's own request is what fails
    faulty_s3.down(reset=reset)

    with pytest.raises(StorageUnavailable) as caught:
        storage.put("backups/db.dump", b"never stored")

    message = str(caught.value)
    assert faulty_s3.endpoint in message and "AMAS_STORAGE_S3_ENDPOINT_URL" in message
    assert cause in message
    assert FAKE_SECRET_ACCESS_KEY not in message and "\n" not in message
    assert caught.value.__cause__ is None
    puts = [outcome for method, _, outcome in faulty_s3.log if method == "PUT"]
    assert len(puts) > 1, "the put was not retried"
    assert set(puts) == {"reset" if reset else "error"} and faulty_s3.faulted == len(puts)
    faulty_s3.up()
    assert list(storage.list()) == []
    assert _pending_uploads(s3_bucket) == []


@pytest.mark.usefixtures("two_attempts")
def test_a_request_is_tried_max_attempts_times_in_all(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    storage = _storage(faulty_s3, s3_bucket)
    faulty_s3.down()

    with pytest.raises(StorageUnavailable):
        storage.put("x", b"x")

    assert faulty_s3.log == [("HEAD", f"/{s3_bucket.name}", "error")] * amas.storage.s3.MAX_ATTEMPTS


@pytest.mark.usefixtures("two_attempts")
def test_part_that_keeps_failing_aborts_the_multipart_upload(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    storage = _storage(faulty_s3, s3_bucket)
    faulty_s3.fail_next(100, match=_is_part(2))

    with pytest.raises(StorageUnavailable, match="InternalError") as caught:
        storage.put("big.bin", os.urandom(12 * MiB))

    assert faulty_s3.endpoint in str(caught.value)
    part_two = [outcome for method, target, outcome in faulty_s3.log if _is_part(2)(method, target)]
    assert len(part_two) > 1 and set(part_two) == {"error"}, "part 2 was not retried"
    aborts = [outcome for method, target, outcome in faulty_s3.log if method == "DELETE" and "uploadId=" in target]
    assert aborts == ["forwarded"], "the multipart upload was not aborted"
    assert list(storage.list()) == []
    assert _pending_uploads(s3_bucket) == []


def test_proxy_relays_large_bodies_byte_exactly_over_keep_alive(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    content = os.urandom(16 * MiB)
    expected = hashlib.sha256(content).hexdigest()
    storage = S3Storage(
        s3_bucket.name,
        endpoint_url=faulty_s3.endpoint,
        access_key_id=FAKE_ACCESS_KEY_ID,
        secret_access_key=SecretStr(FAKE_SECRET_ACCESS_KEY),
    )  # default 64 MiB threshold: one PutObject with a 16 MiB Content-Length body

    storage.put("whole.bin", content)

    assert [method for method, _, _ in faulty_s3.log] == ["HEAD", "PUT"]
    assert hashlib.sha256(_stored(s3_bucket, "whole.bin")).hexdigest() == expected
    assert hashlib.sha256(storage.get("whole.bin")).hexdigest() == expected
    assert faulty_s3.faulted == 0
    assert faulty_s3.connections < faulty_s3.requests, "every request opened a new connection: keep-alive broken"


def test_proxy_relays_chunked_request_bodies(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    # botocore sends Content-Length over plain HTTP; chunked bodies come from other clients
    # (and from botocore over HTTPS), so they are checked with a raw request. moto does not
    # require a signature.
    pieces = [os.urandom(1), os.urandom(300_000), os.urandom(4096)]
    connection = http.client.HTTPConnection(faulty_s3.endpoint.removeprefix("http://"), timeout=10)
    try:
        connection.request("PUT", f"/{s3_bucket.name}/chunked.bin", body=iter(pieces), encode_chunked=True)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 200
    assert _stored(s3_bucket, "chunked.bin") == b"".join(pieces)


def test_proxy_connection_stays_usable_after_a_faulted_head(faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    # An answer to HEAD is headers only: an error body sent after it would be read as the
    # start of the next response. Raw and pipelined, because http.client's read-ahead can
    # swallow such stray bytes and hide the fault.
    faulty_s3.fail_next(1, match="HEAD")
    host, port = faulty_s3.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            f"HEAD /{s3_bucket.name} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            f"GET /{s3_bucket.name}?list-type=2 HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        received = b"".join(iter(lambda: client.recv(65536), b""))

    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert rest.startswith(b"HTTP/1.1 200 "), f"stray bytes after the HEAD answer: {rest[:80]!r}"
    assert b"<ListBucketResult" in rest
    assert faulty_s3.connections == 1
