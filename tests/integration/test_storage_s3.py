"""The storage contract on the S3 backend, over HTTP against moto's server, plus S3's failure modes."""

from __future__ import annotations

import socket
import time

import pytest
from pydantic import SecretStr

from amas.config import StorageSettings
from amas.errors import ConfigError
from amas.storage import S3Storage, Storage, StorageUnavailable, storage_for_url
from tests.plugins.s3 import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION, S3Bucket, s3_client
from tests.storage_contract import StorageContract

pytestmark = pytest.mark.integration


def _settings(endpoint: str, bucket: str, prefix: str = "") -> StorageSettings:
    return StorageSettings(
        url=f"s3://{bucket}/{prefix}",
        s3_endpoint_url=endpoint,
        s3_region=REGION,
        s3_access_key_id=FAKE_ACCESS_KEY_ID,
        s3_secret_access_key=SecretStr(FAKE_SECRET_ACCESS_KEY),
        # S3's smallest part: makes the contract's 12 MiB object a real three-part upload.
        multipart_threshold_mb=5,
        multipart_chunk_mb=5,
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["", "backups/nightly"], ids=["bucket-root", "under-prefix"])
def storage_settings(request: pytest.FixtureRequest, s3_bucket: S3Bucket) -> StorageSettings:
    return _settings(s3_bucket.endpoint, s3_bucket.name, request.param)


@pytest.fixture
def storage(storage_settings: StorageSettings) -> S3Storage:
    assert storage_settings.url is not None
    opened = storage_for_url(storage_settings.url, storage_settings)
    assert isinstance(opened, S3Storage)
    return opened


class TestS3Contract(StorageContract):
    def assert_no_leftovers(self, storage: Storage) -> None:
        assert isinstance(storage, S3Storage)
        uploads = storage._client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
        assert uploads == [], "a failed multipart upload was not aborted"

    def leave_unfinished(self, storage: Storage, key: str) -> None:
        assert isinstance(storage, S3Storage)
        started = storage._client.create_multipart_upload(Bucket=storage.bucket, Key=storage.prefix + key)
        storage._client.upload_part(Bucket=storage.bucket, Key=storage.prefix + key, PartNumber=1,
                                    UploadId=started["UploadId"], Body=b"half an upload")

    def assert_stored_in_parts(self, storage: Storage, key: str, parts: int) -> None:
        assert isinstance(storage, S3Storage)
        head = storage._client.head_object(Bucket=storage.bucket, Key=storage.prefix + key)
        # A multipart object's ETag is the md5 of its parts' md5s followed by "-<part count>".
        assert head["ETag"].strip('"').endswith(f"-{parts}")
        first = storage._client.head_object(Bucket=storage.bucket, Key=storage.prefix + key, PartNumber=1)
        assert first["PartsCount"] == parts
        assert first["ContentLength"] == 5 * 1024 * 1024


def test_prefix_hides_the_rest_of_the_bucket(s3_bucket: S3Bucket) -> None:
    raw = s3_client(s3_bucket.endpoint)
    for foreign in ("outside", "backups/nightly-old/x", "backups/nightly/folder/"):
        raw.put_object(Bucket=s3_bucket.name, Key=foreign, Body=b"not ours")
    settings = _settings(s3_bucket.endpoint, s3_bucket.name, "backups/nightly")
    storage = storage_for_url(f"s3://{s3_bucket.name}/backups/nightly", settings)
    storage.put("mine", b"ours")
    assert [info.key for info in storage.list()] == ["mine"]
    assert raw.get_object(Bucket=s3_bucket.name, Key="backups/nightly/mine")["Body"].read() == b"ours"
    assert storage.url == f"s3://{s3_bucket.name}/backups/nightly"


def test_unreachable_endpoint_fails_fast_and_names_it(fake_aws_credentials: None) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    secret = "very-secret-value-123"
    settings = StorageSettings(
        url="s3://amas-backups/prod",
        s3_endpoint_url=endpoint,
        s3_access_key_id="AKIAEXAMPLEKEYID",
        s3_secret_access_key=SecretStr(secret),
    )
    storage = storage_for_url("s3://amas-backups/prod", settings)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        storage.put("x", b"data")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert elapsed < 15, f"took {elapsed:.1f} s to give up on a closed port"
    assert endpoint in message and "AMAS_STORAGE_S3_ENDPOINT_URL" in message
    assert secret not in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_bucket_is_named(moto_server: str, fake_aws_credentials: None) -> None:
    settings = _settings(moto_server, "amas-no-such-bucket")
    storage = storage_for_url("s3://amas-no-such-bucket", settings)
    for call in (lambda: storage.exists("k"), lambda: storage.put("k", b"x"), lambda: list(storage.list())):
        with pytest.raises(StorageUnavailable, match="'amas-no-such-bucket' does not exist") as caught:
            call()
        assert "AMAS_STORAGE_URL" in str(caught.value)


def test_refused_access_names_the_credential_settings_not_their_values(s3_bucket: S3Bucket) -> None:
    # moto accepts any key unless told otherwise, so the refusal comes from a bucket policy
    # that denies writes under one prefix.
    raw = s3_client(s3_bucket.endpoint)
    policy = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:PutObject",'
        f'"Resource":"arn:aws:s3:::{s3_bucket.name}/locked/*"}}]}}'
    )
    raw.put_bucket_policy(Bucket=s3_bucket.name, Policy=policy)
    storage = storage_for_url(f"s3://{s3_bucket.name}/locked", _settings(s3_bucket.endpoint, s3_bucket.name))
    with pytest.raises(StorageUnavailable, match="AMAS_STORAGE_S3_ACCESS_KEY_ID") as caught:
        storage.put("k", b"x")
    assert FAKE_SECRET_ACCESS_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [("s3://Bad_Bucket/x", "bucket name"), ("s3://ab", "bucket name"), ("s3://bucket/a//b", "prefix"),
     ("s3://bucket/x?versionId=1", "query"), ("s3://AKIA:hunter2@bucket/x", "must not carry credentials")],
)
def test_bad_s3_urls_are_config_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        storage_for_url(url, StorageSettings())
    assert "hunter2" not in str(caught.value)


def test_access_key_without_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AMAS_STORAGE_S3_SECRET_ACCESS_KEY"):
        storage_for_url("s3://bucket", StorageSettings(s3_access_key_id="AKIAEXAMPLE"))
