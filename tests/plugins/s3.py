"""S3 over real HTTP: moto's server on a loopback port for the session, a fresh bucket per test.

Nothing here can reach AWS: the server listens on 127.0.0.1, every client is given its
endpoint, and the AWS_* variables are replaced by fake ones so a developer's own profile or
keys are never read.
"""

from __future__ import annotations

import functools
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import pytest
from moto.server import ThreadedMotoServer

FAKE_ACCESS_KEY_ID = "amas-test-key-id"
FAKE_SECRET_ACCESS_KEY = "amas-test-secret-not-real"
REGION = "us-east-1"


class S3Bucket(NamedTuple):
    endpoint: str
    name: str


@functools.cache
def s3_client(endpoint: str) -> Any:
    """A plain boto3 client on the test server, for setting up and inspecting buckets.

    Cached: building a client loads botocore's service model, which costs more than a
    test's requests to moto.
    """
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )


def _wait_until_answering(endpoint: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"moto server at {endpoint} did not answer within {timeout:.0f} s: {exc}", pytrace=False)
            time.sleep(0.05)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1, shared by the session.

    Port 0 lets the kernel choose a free port at bind time, so parallel runs cannot race
    for one the way "find a free port, then bind it" can.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        _wait_until_answering(endpoint)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake keys in the environment and no AWS config files, so the default chain finds only these."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_bucket(moto_server: str, fake_aws_credentials: None) -> Iterator[S3Bucket]:
    """A new, empty bucket for one test, emptied and removed afterwards to keep the server small."""
    name = f"amas-test-{uuid.uuid4().hex[:16]}"
    client = s3_client(moto_server)
    client.create_bucket(Bucket=name)
    yield S3Bucket(moto_server, name)
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)
