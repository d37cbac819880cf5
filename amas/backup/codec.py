"""How a backup object's bytes are made and read back: zstd, then optional AES-256-GCM, streamed.

Writing is a chain of readers that ``Storage.put`` pulls from, so nothing is ever held whole:
``encode(source)`` compresses with zstd (a standard frame with a content checksum, multi-threaded
when ``threads`` > 0) and, given a key, encrypts the compressed stream. ``decode(stream)`` undoes
both. An unencrypted object is a plain ``.zst`` file: ``zstd -d`` reads it.

Encryption format ``amas-aead-1`` (the STREAM construction of Hoang, Reyhanitabar, Rogaway and
Vizár, as in age and Tink), so every chunk is authenticated before any of its bytes are used
and a cut, reordered or spliced stream is refused. Each object is sealed under its own key,
derived from the backup key and a random salt, so nonces never repeat across objects however
many backups one key makes:

    header     = b"AMASAEAD" | version (1 byte, = 1) | chunk size (4 bytes, big-endian)
                 | salt (16 random bytes) | nonce prefix (7 random bytes)          -> 36 bytes
    object key = HKDF-SHA256(backup key, salt = salt, info = b"amas-aead-1 object key", 32 bytes)
    chunk i    = AES-256-GCM(object key, nonce = prefix | i (4 bytes, big-endian) | last (1 byte: 1 on
                              the final chunk, else 0),
                              plaintext = the next chunk-size bytes (the final chunk may be shorter or
                              empty), associated data = header)   -> ciphertext | 16-byte tag

A stream ends with exactly one chunk whose last byte is 1; a stream cut at a chunk boundary
lacks it and fails. ``key_id`` names a key without revealing it, so a manifest can say which key
a backup needs and a wrong key is reported as such instead of as tampering.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import queue
import struct
import threading
from typing import BinaryIO

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from amas.errors import AmasError

MAGIC = b"AMASAEAD"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
HEADER = struct.Struct(">8sBI16s7s")
KDF_INFO = b"amas-aead-1 object key"
FORMAT_NAME = "amas-aead-1"
READ_SIZE = 1024 * 1024


class CorruptObject(AmasError):
    """The bytes are not what was written: truncated, altered, or sealed with another key."""


def object_key(key: bytes, salt: bytes) -> bytes:
    """The AES-256-GCM key of one object (HKDF-SHA256 of the backup key with the object's salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KDF_INFO).derive(key)


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (HMAC of a constant), stored in manifests."""
    return hmac.new(key, b"amas-backup-key-id", hashlib.sha256).hexdigest()[:16]


class _Reader(io.RawIOBase):
    """A read-only raw stream that fills ``read(n)`` from ``_produce()`` until it returns b""."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def _produce(self) -> bytes:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._buffer)]
            self._buffer.clear()
            while not self._done:
                chunk = self._produce()
                if not chunk:
                    self._done = True
                parts.append(chunk)
            return b"".join(parts)
        if not self._buffer and not self._done:
            # Fast path: hand a produced chunk over without copying it when it fits.
            chunk = self._produce()
            if not chunk:
                self._done = True
                return b""
            if len(chunk) <= size:
                return chunk
            self._buffer += chunk
        while len(self._buffer) < size and not self._done:
            chunk = self._produce()
            if chunk:
                self._buffer += chunk
            else:
                self._done = True
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Exactly ``size`` bytes, or fewer only at the end of the stream (pipes return short reads)."""
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        chunk = stream.read(wanted)
        if not chunk:
            break
        parts.append(chunk)
        wanted -= len(chunk)
    return b"".join(parts)


class EncryptingReader(_Reader):
    """Reads plaintext from ``source`` and yields the ``amas-aead-1`` stream."""

    def __init__(self, source: BinaryIO, key: bytes, *, chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        self._source = source
        salt = os.urandom(16)
        self._aead = AESGCM(object_key(key, salt))
        self._chunk_size = chunk_size
        prefix = os.urandom(7)
        self._prefix = prefix
        self._header = HEADER.pack(MAGIC, VERSION, chunk_size, salt, prefix)
        self._counter = 0
        self._pending: bytes | None = None
        self._started = False
        self._finished = False

    def _produce(self) -> bytes:
        if self._finished:
            return b""
        if not self._started:
            self._started = True
            self._pending = read_full(self._source, self._chunk_size)
            return self._header
        # One chunk of look-ahead: a chunk is final when nothing follows it.
        current = self._pending or b""
        following = read_full(self._source, self._chunk_size) if len(current) == self._chunk_size else b""
        last = not following
        sealed = self._seal(current, last)
        self._pending = following
        if last:
            self._finished = True
        return sealed

    def _seal(self, plaintext: bytes, last: bool) -> bytes:
        if self._counter >= 2**32:
            raise AmasError("backup object too large for amas-aead-1 (more than 2^32 chunks)")
        nonce = self._prefix + struct.pack(">IB", self._counter, 1 if last else 0)
        self._counter += 1
        return self._aead.encrypt(nonce, plaintext, self._header)


class DecryptingReader(_Reader):
    """Reads an ``amas-aead-1`` stream and yields plaintext, each chunk only once authenticated."""

    def __init__(self, source: BinaryIO, key: bytes, *, name: str = "object") -> None:
        super().__init__()
        self._source = source
        self._name = name
        header = read_full(source, HEADER.size)
        if len(header) < HEADER.size:
            raise CorruptObject(f"{name}: too short for an encrypted backup object ({len(header)} bytes)")
        magic, version, chunk_size, salt, prefix = HEADER.unpack(header)
        if magic != MAGIC:
            raise CorruptObject(f"{name}: not an {FORMAT_NAME} stream (bad magic)")
        if version != VERSION or not 0 < chunk_size <= 64 * 1024 * 1024:
            raise CorruptObject(f"{name}: unsupported {FORMAT_NAME} header (version {version}, chunk size {chunk_size})")
        self._aead = AESGCM(object_key(key, salt))
        self._header = header
        self._prefix = prefix
        self._sealed_size = chunk_size + TAG_SIZE
        self._counter = 0
        self._pending = read_full(source, self._sealed_size)
        self._finished = False

    def _produce(self) -> bytes:
        if self._finished:
            return b""
        current = self._pending
        following = read_full(self._source, self._sealed_size) if len(current) == self._sealed_size else b""
        last = not following
        if len(current) < TAG_SIZE:
            raise CorruptObject(f"{self._name}: truncated (chunk {self._counter} is {len(current)} bytes)")
        nonce = self._prefix + struct.pack(">IB", self._counter, 1 if last else 0)
        try:
            plaintext = self._aead.decrypt(nonce, current, self._header)
        except InvalidTag:
            if last:
                # The final chunk of an intact stream carries the last flag; one that does not
                # was followed by chunks that are now missing.
                try:
                    self._aead.decrypt(nonce[:-1] + b"\x00", current, self._header)
                except InvalidTag:
                    pass
                else:
                    raise CorruptObject(f"{self._name}: truncated after chunk {self._counter}") from None
            raise CorruptObject(f"{self._name}: chunk {self._counter} fails authentication "
                                f"(altered bytes or the wrong key)") from None
        self._counter += 1
        self._pending = following
        if last:
            self._finished = True
        return plaintext


class ZstdDecodingReader(_Reader):
    """Decompresses zstd frames; a stream that ends inside a frame, or bad bytes, raise ``CorruptObject``."""

    def __init__(self, source: BinaryIO, *, name: str = "object") -> None:
        super().__init__()
        self._source = source
        self._name = name
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False
        self._frames_started = False

    def close(self) -> None:
        # Our own readers below (a prefetching thread) stop with us; the caller's stream is theirs.
        if isinstance(self._source, _Reader):
            self._source.close()
        super().close()

    def _produce(self) -> bytes:
        while True:
            chunk = self._source.read(READ_SIZE)
            if not chunk:
                if self._in_frame:
                    raise CorruptObject(f"{self._name}: truncated (the zstd frame does not end)")
                if not self._frames_started:
                    # ``encode`` writes a frame even for empty input: no bytes at all is a cut object.
                    raise CorruptObject(f"{self._name}: truncated (empty, not even one zstd frame)")
                return b""
            self._frames_started = True
            out = []
            while chunk:
                self._in_frame = True
                try:
                    out.append(self._frame.decompress(chunk))
                except zstandard.ZstdError as exc:
                    raise CorruptObject(f"{self._name}: not a valid zstd stream ({exc})") from None
                if not self._frame.eof:
                    break
                # A frame ended: what follows it (if anything) starts the next one.
                chunk = self._frame.unused_data
                self._frame = self._decompressor.decompressobj()
                self._in_frame = False
            data = b"".join(out)
            if data:
                return data


class PlainSizeReader(_Reader):
    """Counts the bytes that pass (the plaintext size a manifest records)."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self.size = 0

    def _produce(self) -> bytes:
        chunk = self._source.read(READ_SIZE)
        self.size += len(chunk)
        return chunk


def encode(source: BinaryIO, *, level: int = 3, threads: int = 0, key: bytes | None = None) -> tuple[BinaryIO, PlainSizeReader]:
    """A stream of the stored bytes for ``source``, and the counter of plaintext bytes read."""
    counted = PlainSizeReader(source)
    params = zstandard.ZstdCompressionParameters.from_level(level, threads=threads, write_checksum=True,
                                                            write_content_size=False)
    compressed: BinaryIO = zstandard.ZstdCompressor(compression_params=params).stream_reader(
        counted, read_size=READ_SIZE, size=-1)  # type: ignore[assignment]
    if key is not None:
        compressed = EncryptingReader(compressed, key)  # type: ignore[assignment]
    return compressed, counted


class Prefetch(_Reader):
    """Reads ``source`` in a thread, a few chunks ahead of the consumer.

    Fetching, hashing and decrypting then run beside decompressing and writing: each releases
    the GIL in C, so on a large restore the two halves overlap instead of taking turns. An error
    in the thread is raised to the consumer; ``close()`` stops the thread.
    """

    _END = object()

    def __init__(self, source: BinaryIO, *, depth: int = 4) -> None:
        super().__init__()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="backup-prefetch", daemon=True)
        self._thread.start()

    def _run(self, source: BinaryIO) -> None:
        try:
            while not self._stop.is_set():
                chunk = source.read(READ_SIZE)
                self._put(chunk if chunk else self._END)
                if not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _produce(self) -> bytes:
        item = self._queue.get()
        if item is self._END:
            return b""
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


def decode(stored: BinaryIO, *, key: bytes | None = None, name: str = "object", prefetch: bool = False) -> BinaryIO:
    """The plaintext of a stored object; raises ``CorruptObject`` as soon as something is wrong.

    ``prefetch`` reads, hashes and decrypts in a thread ahead of the decompression (for large objects).
    """
    stream: BinaryIO = stored
    if key is not None:
        stream = DecryptingReader(stream, key, name=name)  # type: ignore[assignment]
    if prefetch:
        stream = Prefetch(stream)  # type: ignore[assignment]
    return ZstdDecodingReader(stream, name=name)  # type: ignore[return-value]
