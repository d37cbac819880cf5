"""How backup objects are encoded (zstd, then amas-aead-1) and what decoding refuses; the signed manifest.

The encrypted-format tests mostly seal with a tiny chunk size (the header carries it), so every
byte offset of a multi-chunk stream can be cut or flipped in a few milliseconds; a few run at the
real ``CHUNK_SIZE`` to pin the defaults.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from amas.backup.codec import (
    CHUNK_SIZE,
    HEADER,
    MAGIC,
    TAG_SIZE,
    VERSION,
    CorruptObject,
    DecryptingReader,
    EncryptingReader,
    decode,
    encode,
    key_id,
    object_key,
)
from amas.backup.manifest import Encryption, Manifest, ObjectEntry, TableDigest, parse_manifest

pytestmark = pytest.mark.unit

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SMALL = 64
"""Chunk size of the hand-cut streams: small enough to try every byte offset."""


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible_bytes(size: int) -> bytes:
    line = b"2024-05-01T12:00:00Z subject=crm-42 action=erase status=ok rows=17\n"
    return (line * (size // len(line) + 1))[:size]


def encode_all(data: bytes, **kwargs: Any) -> tuple[bytes, int]:
    stream, counted = encode(io.BytesIO(data), **kwargs)
    stored = stream.read()
    return stored, counted.size


def decode_all(stored: bytes, key: bytes | None = None) -> bytes:
    return decode(io.BytesIO(stored), key=key).read()


def seal(data: bytes, key: bytes = KEY, chunk_size: int = SMALL) -> bytes:
    return EncryptingReader(io.BytesIO(data), key, chunk_size=chunk_size).read()


def unseal(stored: bytes, key: bytes = KEY) -> bytes:
    return DecryptingReader(io.BytesIO(stored), key).read()


def split_sealed(stored: bytes, chunk_size: int = SMALL) -> tuple[bytes, list[bytes]]:
    header, body = stored[:HEADER.size], stored[HEADER.size:]
    step = chunk_size + TAG_SIZE
    return header, [body[i:i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_round_trip_at_chunk_boundaries(size: int, key: bytes | None, threads: int) -> None:
    data = random_bytes(size, seed=size)
    stored, plain_size = encode_all(data, key=key, threads=threads)
    assert plain_size == len(data)
    assert stored.startswith(MAGIC) == (key is not None)
    assert decode_all(stored, key) == data


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("kind", ["random", "compressible"])
def test_round_trip_of_a_few_megabytes(kind: str, key: bytes | None, threads: int) -> None:
    size = 5 * CHUNK_SIZE + 12345
    data = random_bytes(size, seed=7) if kind == "random" else compressible_bytes(size)
    stored, plain_size = encode_all(data, key=key, threads=threads)
    assert plain_size == size
    assert decode_all(stored, key) == data
    if kind == "compressible":
        assert len(stored) < size // 10


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 3 * SMALL + 5])
def test_sealing_layout_follows_the_documented_format(size: int) -> None:
    """Decrypt every chunk by hand from the docstring's description, not with DecryptingReader."""
    data = random_bytes(size, seed=size)
    stored = seal(data)
    magic, version, chunk_size, salt, prefix = HEADER.unpack(stored[:HEADER.size])
    assert (magic, version, chunk_size) == (b"AMASAEAD", 1, SMALL)
    assert HEADER.size == 36 and len(salt) == 16 and len(prefix) == 7
    assert stored[8] == VERSION and stored[9:13] == struct.pack(">I", SMALL)
    header, chunks = split_sealed(stored)
    # An exact multiple of the chunk size ends with a full final chunk, not an extra empty one.
    assert len(chunks) == max(1, -(-size // SMALL))
    assert len(stored) == HEADER.size + size + TAG_SIZE * len(chunks)
    # The object key, derived by hand as the docstring says: HKDF-SHA256(key, salt, info).
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"amas-aead-1 object key").derive(KEY)
    assert derived != KEY
    aead = AESGCM(derived)
    plain = b""
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        plain += aead.decrypt(prefix + struct.pack(">IB", i, int(last)), chunk, header)
    assert plain == data
    assert unseal(stored) == data


def test_real_chunk_size_in_the_header_and_chunks() -> None:
    data = random_bytes(2 * CHUNK_SIZE + 10, seed=3)
    stored = EncryptingReader(io.BytesIO(data), KEY).read()
    assert stored[:8] == MAGIC and stored[8] == 1
    assert struct.unpack(">I", stored[9:13])[0] == CHUNK_SIZE
    assert len(stored) == HEADER.size + len(data) + 3 * TAG_SIZE
    assert unseal(stored) == data


def test_the_same_data_never_gets_the_same_nonces() -> None:
    data = compressible_bytes(3 * SMALL)
    outputs = [seal(data) for _ in range(50)]
    salts = {out[13:29] for out in outputs}
    prefixes = {out[29:36] for out in outputs}
    assert len(salts) == 50 and len(prefixes) == 50
    assert len({out for out in outputs}) == 50
    first, second = encode_all(data, key=KEY)[0], encode_all(data, key=KEY)[0]
    assert first != second
    assert decode_all(first, KEY) == decode_all(second, KEY) == data


def test_unencrypted_output_is_a_standard_zstd_frame_with_a_checksum() -> None:
    zstd = shutil.which("zstd") or "/usr/bin/zstd"
    if not shutil.which(zstd):
        pytest.fail("the zstd command-line tool is missing (apt-get install zstd); it proves backups open without AMAS")
    data = random_bytes(CHUNK_SIZE + 999, seed=11) + compressible_bytes(CHUNK_SIZE)
    for threads in (0, 2):
        stored, _ = encode_all(data, threads=threads)
        assert stored[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic number
        assert stored[4] & 0x04, "Content_Checksum_flag is not set in the frame header descriptor"
        assert zstandard.get_frame_parameters(stored).has_checksum
        result = subprocess.run([zstd, "-d", "-c", "-q"], input=stored, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout == data
    # The checksum is what catches a flipped byte in a stored (uncompressed) block.
    damaged = bytearray(stored)
    damaged[len(damaged) // 4] ^= 0x01
    assert subprocess.run([zstd, "-d", "-c", "-q"], input=bytes(damaged), capture_output=True, timeout=60,
                          check=False).returncode != 0
    with pytest.raises(CorruptObject, match="checksum"):
        decode_all(bytes(damaged))


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_a_flipped_byte_in_the_compressed_payload_is_detected(where: float) -> None:
    stored, _ = encode_all(random_bytes(300_000, seed=5))
    damaged = bytearray(stored)
    damaged[int(len(damaged) * where)] ^= 0x40
    with pytest.raises(CorruptObject):
        decode_all(bytes(damaged))


def test_concatenated_frames_decode_like_zstd_does() -> None:
    first, second = encode_all(b"first part ")[0], encode_all(b"second part")[0]
    assert decode_all(first + second) == b"first part second part"


@pytest.mark.parametrize("stored", [b"", b"\x28\xb5\x2f"], ids=["empty", "cut-magic"])
def test_an_empty_or_cut_plain_object_is_refused(stored: bytes) -> None:
    with pytest.raises(CorruptObject, match="truncated"):
        decode_all(stored)


def test_a_plain_object_cut_anywhere_is_refused() -> None:
    stored, _ = encode_all(random_bytes(200_000, seed=8))
    for cut in (0, 1, 5, len(stored) // 2, len(stored) - 4, len(stored) - 1):
        with pytest.raises(CorruptObject):
            decode_all(stored[:cut])


def test_trailing_garbage_after_the_frame_is_refused() -> None:
    stored, _ = encode_all(b"payload")
    with pytest.raises(CorruptObject):
        decode_all(stored + b"\x00junk")


def test_sealed_stream_cut_at_every_offset_is_refused() -> None:
    data = random_bytes(4 * SMALL + 10, seed=9)
    stored = seal(data)
    boundaries = {HEADER.size + i * (SMALL + TAG_SIZE) for i in range(5)}
    for cut in range(len(stored)):
        with pytest.raises(CorruptObject) as caught:
            unseal(stored[:cut])
        message = str(caught.value)
        remainder = (cut - HEADER.size) % (SMALL + TAG_SIZE)
        if cut < HEADER.size:
            assert "too short" in message
        elif cut in boundaries or remainder < TAG_SIZE:
            assert "truncated" in message, (cut, message)
    assert unseal(stored) == data


@pytest.mark.parametrize("cut_chunk", [1, 2, 3])
def test_a_stream_ending_at_a_chunk_boundary_without_its_final_chunk_is_truncated(cut_chunk: int) -> None:
    data = random_bytes(4 * SMALL, seed=10)
    header, chunks = split_sealed(seal(data))
    assert len(chunks) == 4
    with pytest.raises(CorruptObject, match=f"truncated after chunk {cut_chunk - 1}"):
        unseal(header + b"".join(chunks[:cut_chunk]))


def test_dropping_the_last_chunk_at_the_real_chunk_size_is_truncated() -> None:
    data = random_bytes(3 * CHUNK_SIZE + 100, seed=12)
    stored, _ = encode_all(data, key=KEY)
    header, chunks = split_sealed(stored, CHUNK_SIZE)
    assert len(chunks) == 4
    with pytest.raises(CorruptObject, match="truncated after chunk 2"):
        decode_all(header + b"".join(chunks[:-1]), KEY)
    for boundary in (1, 2):
        with pytest.raises(CorruptObject, match="truncated"):
            decode_all(header + b"".join(chunks[:boundary]), KEY)


def test_a_flipped_bit_anywhere_is_refused() -> None:
    stored = seal(random_bytes(3 * SMALL + 20, seed=13))
    for offset in range(len(stored)):
        damaged = bytearray(stored)
        damaged[offset] ^= 0x01
        with pytest.raises(CorruptObject):
            unseal(bytes(damaged))


def test_a_flipped_header_byte_is_refused_at_the_real_chunk_size() -> None:
    stored, _ = encode_all(random_bytes(CHUNK_SIZE + 10, seed=14), key=KEY)
    for offset in range(HEADER.size):
        damaged = bytearray(stored)
        damaged[offset] ^= 0x80
        with pytest.raises(CorruptObject):
            decode_all(bytes(damaged), KEY)


def test_reordered_chunks_are_refused() -> None:
    header, chunks = split_sealed(seal(random_bytes(3 * SMALL + 7, seed=15)))
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        swapped = list(chunks)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        with pytest.raises(CorruptObject, match=f"chunk {i} fails authentication"):
            unseal(header + b"".join(swapped))


@pytest.mark.parametrize("size", [3 * SMALL, 3 * SMALL + 7], ids=["full-last-chunk", "short-last-chunk"])
def test_appended_chunks_are_refused(size: int) -> None:
    data = random_bytes(size, seed=16)
    stored = seal(data)
    header, chunks = split_sealed(stored)
    salt, prefix = header[13:29], header[29:36]
    # A chunk sealed as a genuine final chunk number n, under the right key and header.
    forged_final = AESGCM(object_key(KEY, salt)).encrypt(prefix + struct.pack(">IB", len(chunks), 1), b"more",
                                                         header)
    for extra in (chunks[-1], chunks[0], forged_final, b"x"):
        with pytest.raises(CorruptObject):
            unseal(stored + extra)


def test_another_sealed_streams_chunk_is_refused() -> None:
    data = random_bytes(3 * SMALL, seed=17)
    header_a, chunks_a = split_sealed(seal(data))
    _, chunks_b = split_sealed(seal(data))
    with pytest.raises(CorruptObject, match="chunk 1 fails authentication"):
        unseal(header_a + chunks_a[0] + chunks_b[1] + chunks_a[2])


def test_the_wrong_key_is_refused() -> None:
    stored, _ = encode_all(b"secret rows", key=KEY)
    with pytest.raises(CorruptObject, match="wrong key"):
        decode_all(stored, OTHER_KEY)
    with pytest.raises(CorruptObject, match="bad magic"):
        decode_all(encode_all(b"a plain object, not sealed")[0], KEY)


def read_until_error(stream: io.RawIOBase | Any, size: int) -> tuple[bytes, BaseException | None]:
    got = b""
    try:
        while chunk := stream.read(size):
            got += chunk
    except CorruptObject as exc:
        return got, exc
    return got, None


@pytest.mark.parametrize("read_size", [1, 7, SMALL, 1000])
@pytest.mark.parametrize("bad_chunk", [0, 2, 4])
def test_no_plaintext_of_a_failed_chunk_is_returned(bad_chunk: int, read_size: int) -> None:
    data = random_bytes(5 * SMALL, seed=18)
    header, chunks = split_sealed(seal(data))
    damaged = bytearray(chunks[bad_chunk])
    damaged[3] ^= 0x01
    chunks[bad_chunk] = bytes(damaged)
    got, error = read_until_error(DecryptingReader(io.BytesIO(header + b"".join(chunks)), KEY), read_size)
    assert isinstance(error, CorruptObject) and f"chunk {bad_chunk}" in str(error)
    assert got == data[:len(got)]
    assert len(got) <= bad_chunk * SMALL
    if read_size == SMALL:
        assert got == data[:bad_chunk * SMALL]


def test_decode_returns_only_bytes_of_authenticated_chunks() -> None:
    data = random_bytes(4 * CHUNK_SIZE, seed=19)
    stored, _ = encode_all(data, key=KEY)
    header, chunks = split_sealed(stored, CHUNK_SIZE)
    damaged = bytearray(chunks[2])
    damaged[CHUNK_SIZE // 2] ^= 0x01
    chunks[2] = bytes(damaged)
    got, error = read_until_error(decode(io.BytesIO(header + b"".join(chunks)), key=KEY), 65536)
    assert isinstance(error, CorruptObject) and "chunk 2 fails authentication" in str(error)
    assert got == data[:len(got)]
    # Random data does not compress: two sealed chunks hold less than two chunks of plaintext.
    assert 0 < len(got) < 2 * CHUNK_SIZE


def test_key_id() -> None:
    first = key_id(KEY)
    assert first == key_id(bytes(KEY))
    assert len(first) == 16 and all(c in "0123456789abcdef" for c in first)
    assert first != key_id(OTHER_KEY)
    for form in (KEY.hex(), KEY.hex()[:16], KEY.hex()[-16:]):
        assert form not in first
    assert key_id(b"\x00" * 32) != key_id(b"\x00" * 31 + b"\x01")


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_odd_read_sizes_return_the_same_bytes(key: bytes | None) -> None:
    data = random_bytes(2 * CHUNK_SIZE, seed=20) + compressible_bytes(2 * CHUNK_SIZE + 333)
    stored_stream, counted = encode(io.BytesIO(data), key=key)
    stored = b""
    sizes = [1, 7, 3_000_000, 1, 1, 7, 65536]
    i = 0
    while chunk := stored_stream.read(sizes[i % len(sizes)]):
        assert len(chunk) <= sizes[i % len(sizes)]
        stored += chunk
        i += 1
    assert stored_stream.read(1) == b"" and stored_stream.read() == b""
    assert counted.size == len(data)

    plain = decode(io.BytesIO(stored), key=key)
    got = plain.read(1) + plain.read(7)
    for _ in range(5000):
        got += plain.read(1)
    got += plain.read(7) + plain.read(3_000_000)
    assert len(got) == 1 + 7 + 5000 + 7 + 3_000_000  # read(n) fills n bytes until the end
    got += plain.read()
    assert got == data
    assert plain.read(7) == b"" and plain.read() == b""


def test_readinto_through_a_buffered_reader() -> None:
    data = compressible_bytes(CHUNK_SIZE + 5)
    stored, _ = encode_all(data, key=KEY)
    buffered = io.BufferedReader(decode(io.BytesIO(stored), key=KEY), buffer_size=4096)  # type: ignore[arg-type]
    assert buffered.read(10) == data[:10]
    assert buffered.read() == data[10:]


def make_manifest() -> Manifest:
    started = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    return Manifest(
        id="20240501T120000Z-abcd",
        started_at=started,
        finished_at=datetime(2024, 5, 1, 12, 3, 4, tzinfo=UTC),
        source={"store": {"dialect": "postgresql", "server_version": "16.3"}, "storage": "file:///srv/amas"},
        tools={"amas": "0.1.0", "zstandard": "0.25.0"},
        compression={"algorithm": "zstd", "level": 3, "checksum": True},
        encryption=Encryption(chunk_size=CHUNK_SIZE, key_id=key_id(KEY)),
        objects=[
            ObjectEntry(name="store", key="backups/x/store.dump.zst.aead", format="pg_dump-custom", size=1000,
                        sha256="a" * 64, plain_size=4000),
            ObjectEntry(name="artifacts", key="backups/x/artifacts.tar.zst.aead", format="tar", size=2000,
                        sha256="b" * 64, plain_size=9000,
                        details={"objects": 3, "bytes": 8000, "index_sha256": "c" * 64}),
        ],
        digest_method="pg-row-md5-sum/1",
        tables={"data_subjects": TableDigest(rows=20, digest="d1"), "audit_events": TableDigest(rows=5, digest="d2")},
        schema_revision="0007_backups",
        erasure_ledger_position=42,
    )


def test_manifest_round_trips_through_its_bytes() -> None:
    manifest = make_manifest().sign(KEY)
    data = manifest.to_bytes()
    parsed = parse_manifest(data, "manifest.json")
    assert parsed == manifest
    assert parsed.to_bytes() == data
    assert json.loads(data)["encryption"] == {"algorithm": "AES-256-GCM", "format": "amas-aead-1",
                                              "chunk_size": CHUNK_SIZE, "key_id": key_id(KEY)}
    assert KEY.hex() not in data.decode()
    parsed.check_signature(KEY)
    assert parsed.stored_bytes == 3000
    assert parsed.object("artifacts") is not None and parsed.object("dvc-index") is None


EDITS: list[tuple[str, Any]] = [
    ("id", lambda d: d.update(id="20240501T120000Z-ffff")),
    ("started_at", lambda d: d.update(started_at="2024-05-01T12:00:01Z")),
    ("finished_at", lambda d: d.update(finished_at="2024-05-02T12:03:04Z")),
    ("source", lambda d: d["source"]["store"].update(server_version="15.0")),
    ("tools", lambda d: d["tools"].update(amas="0.0.9")),
    ("compression", lambda d: d["compression"].update(level=19)),
    ("encryption.key_id", lambda d: d["encryption"].update(key_id="0" * 16)),
    ("encryption.chunk_size", lambda d: d["encryption"].update(chunk_size=65536)),
    ("encryption removed", lambda d: d.update(encryption=None)),
    ("object sha256", lambda d: d["objects"][0].update(sha256="e" * 64)),
    ("object size", lambda d: d["objects"][1].update(size=2001)),
    ("object plain_size", lambda d: d["objects"][0].update(plain_size=1)),
    ("object key", lambda d: d["objects"][0].update(key="backups/y/store.dump.zst.aead")),
    ("object details", lambda d: d["objects"][1]["details"].update(index_sha256="f" * 64)),
    ("object removed", lambda d: d["objects"].pop()),
    ("objects reordered", lambda d: d["objects"].reverse()),
    ("table digest", lambda d: d["tables"]["data_subjects"].update(digest="d9")),
    ("table rows", lambda d: d["tables"]["audit_events"].update(rows=4)),
    ("table removed", lambda d: d["tables"].pop("audit_events")),
    ("digest_method", lambda d: d.update(digest_method="sqlite-row-sha256/1")),
    ("schema_revision", lambda d: d.update(schema_revision=None)),
    ("erasure_ledger_position", lambda d: d.update(erasure_ledger_position=41)),
    ("hmac", lambda d: d.update(hmac="0" * 64)),
    ("hmac upper case", lambda d: d.update(hmac=d["hmac"].upper())),
    ("hmac non-ascii", lambda d: d.update(hmac="é" * 64)),
]


@pytest.mark.parametrize(("field", "edit"), EDITS, ids=[field for field, _ in EDITS])
def test_any_edit_of_a_signed_manifest_fails_its_hmac(field: str, edit: Any) -> None:
    original = make_manifest().sign(KEY).to_bytes()
    document = json.loads(original)
    edit(document)
    edited = json.dumps(document).encode()
    assert edited != json.dumps(json.loads(original)).encode(), "the edit changed nothing"
    manifest = parse_manifest(edited, "manifest.json")
    with pytest.raises(CorruptObject, match="fails its HMAC"):
        manifest.check_signature(KEY)


def test_manifest_signature_needs_the_right_key_and_a_signature() -> None:
    manifest = make_manifest().sign(KEY)
    manifest.check_signature(KEY)
    with pytest.raises(CorruptObject, match="fails its HMAC"):
        manifest.check_signature(OTHER_KEY)
    document = json.loads(manifest.to_bytes())
    document["hmac"] = None
    with pytest.raises(CorruptObject, match="no hmac"):
        parse_manifest(json.dumps(document).encode(), "m").check_signature(KEY)
    del document["hmac"]
    with pytest.raises(CorruptObject, match="no hmac"):
        parse_manifest(json.dumps(document).encode(), "m").check_signature(KEY)


@pytest.mark.parametrize(("mutate", "named"), [
    (lambda d: d.pop("erasure_ledger_position"), "erasure_ledger_position"),
    (lambda d: d.pop("tables"), "tables"),
    (lambda d: d["objects"][0].pop("sha256"), "objects.0.sha256"),
    (lambda d: d["objects"][1].update(sha256="not-hex"), "objects.1.sha256"),
    (lambda d: d["objects"][0].update(name="photos"), "objects.0.name"),
    (lambda d: d["tables"]["data_subjects"].update(rows=-1), "tables.data_subjects.rows"),
    (lambda d: d.update(format="amas-backup/2"), "format"),
    (lambda d: d.update(surprise=1), "surprise"),
], ids=["missing-top", "missing-tables", "missing-nested", "bad-sha", "bad-name", "negative-rows", "format",
        "extra-field"])
def test_parse_manifest_names_the_bad_field(mutate: Any, named: str) -> None:
    document = json.loads(make_manifest().to_bytes())
    mutate(document)
    with pytest.raises(CorruptObject, match=rf"backups/x/manifest\.json: not a valid backup manifest \({named}:"):
        parse_manifest(json.dumps(document).encode(), "backups/x/manifest.json")


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"[]", b"\xff\xfe{}", make_manifest().to_bytes()[:-20]],
                         ids=["empty", "open-brace", "text", "list", "not-utf8", "cut"])
def test_parse_manifest_refuses_bad_json(data: bytes) -> None:
    with pytest.raises(CorruptObject, match="not a valid backup manifest"):
        parse_manifest(data, "manifest.json")


# --- prefetching: reading, hashing and decrypting in a thread beside the decompression ---------------


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("size", [0, 1, 3 * CHUNK_SIZE + 5])
def test_prefetch_decodes_the_same_bytes(key: bytes | None, size: int) -> None:
    data = random_bytes(size // 2, seed=31) + compressible_bytes(size - size // 2)
    stored, _ = encode_all(data, key=key)
    with decode(io.BytesIO(stored), key=key, prefetch=True) as stream:
        assert stream.read() == data


class Exploding(io.RawIOBase):
    """Serves ``good`` bytes, then raises: a storage connection that drops."""

    def __init__(self, good: bytes) -> None:
        super().__init__()
        self._good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._good.read(size)
        if not chunk:
            raise ConnectionResetError("storage went away")
        return chunk


def test_prefetch_hands_the_threads_error_to_the_reader() -> None:
    stored, _ = encode_all(random_bytes(3 * CHUNK_SIZE, seed=32), key=KEY)
    stream = decode(Exploding(stored[: len(stored) // 2]), key=KEY, prefetch=True)
    with pytest.raises(ConnectionResetError, match="storage went away"):
        stream.read()
    stream.close()


@pytest.mark.timeout(30)
def test_closing_early_stops_the_prefetching_thread() -> None:
    import threading

    stored, _ = encode_all(random_bytes(8 * CHUNK_SIZE, seed=33))
    stream = decode(io.BytesIO(stored), prefetch=True)
    assert stream.read(10)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "backup-prefetch"]
