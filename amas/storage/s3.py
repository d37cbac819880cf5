"""Objects in an S3 bucket under an optional prefix: AWS, MinIO, moto, any S3 endpoint.

Atomicity comes from S3 itself: a PutObject or a multipart upload becomes visible only
when it is complete, and an unfinished multipart upload is invisible to listing. When the
caller's stream fails, s3transfer aborts the multipart upload, so no parts linger.

Timeouts and retries are short on purpose: a wrong endpoint must fail while the operator
is still watching, not after botocore's default minutes of back-off.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import SecretStr

from amas.config import StorageSettings, hide_url_password
from amas.errors import ConfigError
from amas.storage.base import (
    CHUNK_SIZE,
    HashingReader,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
    exists_by_stat,
    validate_key,
    validate_prefix,
)

MiB = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3
"""Total attempts per request, the first included; with standard back-off a dead endpoint
fails in well under ten seconds."""

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


class S3Storage:
    """A ``Storage`` in an S3 bucket; see ``amas.storage.base.Storage`` for the contract.

    The bucket is checked once, on first use, so that a missing bucket is reported as such
    instead of as a missing key (HEAD on a key answers a bare 404 either way).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: SecretStr | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
    ) -> None:
        if not _BUCKET_NAME.fullmatch(bucket):
            raise ConfigError(
                f"AMAS_STORAGE_URL: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
            )
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)
        self.url = f"s3://{bucket}/{self.prefix.rstrip('/')}" if self.prefix else f"s3://{bucket}"
        self.endpoint = hide_url_password(endpoint_url) if endpoint_url else f"AWS S3 ({region})"
        if access_key_id and secret_access_key is None:
            raise ConfigError("AMAS_STORAGE_S3_SECRET_ACCESS_KEY is required when AMAS_STORAGE_S3_ACCESS_KEY_ID is set")
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            # Self-hosted S3 (MinIO, moto) rarely has wildcard DNS for bucket subdomains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        try:
            self._client: Any = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key.get_secret_value() if secret_access_key is not None else None,
                config=config,
            )
        except ValueError:
            raise ConfigError(
                f"AMAS_STORAGE_S3_ENDPOINT_URL {self.endpoint!r} is not a valid URL; use e.g. http://127.0.0.1:9000"
            ) from None
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize)
        self._bucket_checked = False

    @classmethod
    def from_url(cls, url: str, settings: StorageSettings) -> S3Storage:
        """Open ``s3://bucket/prefix`` with the endpoint, region, credentials and part sizes of ``settings``."""
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Checked first: every other message below quotes the URL.
            raise ConfigError(
                "AMAS_STORAGE_URL must not carry credentials; "
                "set AMAS_STORAGE_S3_ACCESS_KEY_ID and AMAS_STORAGE_S3_SECRET_ACCESS_KEY instead"
            )
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"AMAS_STORAGE_URL {url!r} is not an S3 URL; use s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ConfigError(f"AMAS_STORAGE_URL {url!r}: an S3 URL has no query or fragment; use s3://bucket/prefix")
        return cls(
            parts.netloc,
            parts.path.lstrip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            multipart_threshold=settings.multipart_threshold_mb * MiB,
            multipart_chunksize=settings.multipart_chunk_mb * MiB,
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint!r})"

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        name = self._name(key)
        source = HashingReader(data)
        self._check_bucket()
        with self._errors(key):
            self._client.upload_fileobj(source, self.bucket, name, Config=self._transfer)
        return ObjectInfo(key=key, size=source.size, sha256=source.sha256)

    def open(self, key: str) -> io.BufferedReader:
        name = self._name(key)
        self._check_bucket()
        with self._errors(key):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        return io.BufferedReader(_BodyReader(response["Body"], self), buffer_size=CHUNK_SIZE)

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def exists(self, key: str) -> bool:
        return exists_by_stat(self, key)

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        self._check_bucket()
        with self._errors(key):
            head = self._client.head_object(Bucket=self.bucket, Key=name)
        return ObjectInfo(key=key, size=head["ContentLength"], modified=head.get("LastModified"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        self._check_bucket()
        return self._list(prefix)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._check_bucket()
        with self._errors(None):
            self._client.delete_object(Bucket=self.bucket, Key=name)

    def discard_unfinished(self, prefix: str) -> int:
        validate_prefix(prefix)
        self._check_bucket()
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._errors(None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for upload in page.get("Uploads", []):
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                        UploadId=upload["UploadId"])
                    removed += 1
        return removed

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Page by page (S3 already returns keys in order); foreign keys that are not valid
        keys here, such as console "folder" markers ending in ``/``, are skipped."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix))
        while True:
            with self._errors(None):
                page = next(pages, None)
            if page is None:
                return
            for item in page.get("Contents", ()):
                key = item["Key"][len(self.prefix):]
                try:
                    validate_key(key)
                except InvalidKey:
                    continue
                yield ObjectInfo(key=key, size=item["Size"], modified=item.get("LastModified"))

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _check_bucket(self) -> None:
        if self._bucket_checked:
            return
        with self._errors(None):
            self._client.head_bucket(Bucket=self.bucket)
        self._bucket_checked = True

    @contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Translate botocore's errors for a request about ``key`` (``None``: about the bucket)."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            translated = self._translate(exc, key)
            if translated is exc:
                raise
            raise translated from None

    def _translate(self, exc: ClientError | BotoCoreError, key: str | None) -> Exception:
        """One line a person can act on, or ``exc`` itself when it is a bug on our side.

        The original is dropped from the chain because botocore's text can carry request
        details (signatures, string-to-sign) that do not belong in logs. A bare 404 on a
        request without a key can only be the bucket's HEAD.
        """
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            if code in _MISSING_KEY:
                return ObjectNotFound(key, self.url) if key is not None else self._missing_bucket()
            if code == "NoSuchBucket":
                return self._missing_bucket()
            if code in _REFUSED:
                return StorageUnavailable(
                    f"S3 at {self.endpoint} refused access to {self.url} ({code}); check "
                    "AMAS_STORAGE_S3_ACCESS_KEY_ID and AMAS_STORAGE_S3_SECRET_ACCESS_KEY (or the AWS credential chain)"
                )
            return StorageUnavailable(
                f"S3 at {self.endpoint} failed a request for {self.url} ({code or 'unknown error'}); "
                "check AMAS_STORAGE_URL and AMAS_STORAGE_S3_ENDPOINT_URL"
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ConfigError(
                f"no S3 credentials for {self.url}; set AMAS_STORAGE_S3_ACCESS_KEY_ID and "
                "AMAS_STORAGE_S3_SECRET_ACCESS_KEY, or configure the AWS credential chain"
            )
        if isinstance(exc, _UNREACHABLE):
            return StorageUnavailable(
                f"S3 endpoint {self.endpoint} is unreachable for {self.url} ({type(exc).__name__}); "
                "check AMAS_STORAGE_S3_ENDPOINT_URL and that the service is running"
            )
        return exc

    def _missing_bucket(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}; create it or fix AMAS_STORAGE_URL"
        )


class _BodyReader(io.RawIOBase):
    """A response body as a raw stream whose network failures become ``StorageUnavailable``."""

    def __init__(self, body: Any, storage: S3Storage) -> None:
        super().__init__()
        self._body = body
        self._storage = storage

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._storage._errors(None):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    try:
        validate_key(prefix)
    except InvalidKey as exc:
        raise ConfigError(f"AMAS_STORAGE_URL: the prefix is not usable: {exc}") from None
    return prefix + "/"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
