"""forensics: hashes, true file type, entropy, embedded metadata and a chain of custody for files.

Each file is read once, in large chunks: sha256, md5 and a byte histogram (for Shannon
entropy) are fed from the same buffers, on separate threads for large files because hashlib
and numpy release the GIL. The type comes from magic bytes, never from the name, so a PNG
called ``invoice.pdf`` or an ELF binary called ``notes.txt`` is flagged. Images' EXIF
(Pillow) and PDFs' info dictionary (pypdf) are read for authorship, dates and GPS. Every file
gets a custody record (who, when, host, hashes); the whole log is stored as evidence and its
own sha256 is returned, so a later change to the log can be detected.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import queue
import socket
import stat
import threading
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from hashlib import md5 as md5_hash
from hashlib import sha256 as sha256_hash
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import BaseModel, Field

from amas.registry import AgentContext, AgentInputError, AgentResult, Finding, Severity, resolve_input_path

CHUNK_SIZE = 4 << 20
"""Bytes per read: large enough that per-chunk overhead vanishes, small enough to stay in cache-friendly slices."""
HEAD_SIZE = 8192
"""Bytes kept from the start of each file for magic-byte and text detection."""
PARALLEL_MIN_BYTES = 16 << 20
"""Files at least this large hash on several threads; below it thread start-up costs more than it saves."""
_BUFFERS = 4
_HIST_SLICE = 1 << 19
"""uint16 values per bincount call (1 MiB of bytes): keeps bincount's intermediate array in cache."""
_PAIRS_MIN_BYTES = 1 << 18
HIGH_ENTROPY = 7.5
MIN_ENTROPY_BYTES = 1024
"""Entropy of fewer bytes than this says little (n bytes can show at most log2(n) bits each)."""


class ByteHistogram:
    """Counts of each byte value over everything passed to ``update``, for Shannon entropy.

    Large buffers are counted in pairs (as uint16) because numpy's bincount over 65,536 bins of
    uint16 runs about twice as fast per byte as over uint8; the 256x256 pair table folds back into
    byte counts. Small buffers go straight to 256 bins: the pair table costs more than it saves.
    """

    def __init__(self) -> None:
        self._bytes = np.zeros(256, dtype=np.int64)
        self._pairs: np.ndarray | None = None

    def update(self, data: memoryview | bytes) -> None:
        size = len(data)
        if size < _PAIRS_MIN_BYTES:
            self._bytes += np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
            return
        if self._pairs is None:
            self._pairs = np.zeros(65536, dtype=np.int64)
        even = size - (size & 1)
        for start in range(0, even, 2 * _HIST_SLICE):
            words = np.frombuffer(data[start:min(start + 2 * _HIST_SLICE, even)], dtype=np.uint16)
            self._pairs += np.bincount(words, minlength=65536)
        if size & 1:
            self._bytes[data[size - 1]] += 1

    def counts(self) -> np.ndarray:
        if self._pairs is None:
            return self._bytes.copy()
        table = self._pairs.reshape(256, 256)
        return table.sum(axis=0) + table.sum(axis=1) + self._bytes

    def entropy(self) -> float:
        return shannon_entropy(self.counts())


def shannon_entropy(counts: np.ndarray) -> float:
    """Bits per symbol of a histogram: 0 for one repeated value, 8 for uniformly random bytes."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return max(0.0, float(-(p * np.log2(p)).sum()))


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    md5: str | None
    entropy: float | None
    head: bytes


def hash_file(path: str | Path, *, md5: bool = True, entropy: bool = True, chunk_size: int = CHUNK_SIZE) -> FileDigest:
    """sha256 (and md5, and byte entropy) of a file in one streaming pass; the first bytes come back in ``head``."""
    sha = sha256_hash()
    second = md5_hash() if md5 else None
    histogram = ByteHistogram() if entropy else None
    size = 0

    def take(data: memoryview | bytes) -> None:
        nonlocal size
        sha.update(data)
        size += len(data)

    consumers: list[Callable[[memoryview | bytes], object]] = [take]
    if second is not None:
        consumers.append(second.update)
    if histogram is not None:
        consumers.append(histogram.update)
    with open(path, "rb", buffering=0) as stream:
        head = stream.read(HEAD_SIZE) or b""
        for consume in consumers:
            consume(head)
        if len(head) == HEAD_SIZE:  # else the file ended inside the head
            expected = os.fstat(stream.fileno()).st_size
            if len(consumers) > 1 and expected >= PARALLEL_MIN_BYTES:
                fan_out(stream, consumers, chunk_size)
            else:
                fan_out(stream, [lambda data: [consume(data) for consume in consumers]],
                        min(chunk_size, max(expected, 1 << 16)))
    return FileDigest(size=size, sha256=sha.hexdigest(), md5=second.hexdigest() if second else None,
                      entropy=histogram.entropy() if histogram else None, head=head)


def fan_out(stream: BinaryIO, consumers: Sequence[Callable[[memoryview], object]], chunk_size: int) -> None:
    """Read ``stream`` to its end once and give every chunk to every consumer.

    The first consumer runs on this thread, each other on a thread of its own, so consumers that
    release the GIL (hashlib on large buffers, numpy) use separate cores while the next chunk is
    read. A small pool of buffers bounds memory; a buffer is refilled only after every consumer
    is done with it. The first consumer error stops the read and is raised here.
    """
    if len(consumers) == 1:
        buffer = bytearray(chunk_size)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):
            consumers[0](view[:count])
        return
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(_BUFFERS):
        free.put(bytearray(chunk_size))
    users: dict[int, int] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def release(buffer: bytearray) -> None:
        with lock:
            users[id(buffer)] -= 1
            done = users[id(buffer)] == 0
        if done:
            free.put(buffer)

    def work(consume: Callable[[memoryview], object], inbox: queue.Queue[tuple[bytearray, int] | None]) -> None:
        while (item := inbox.get()) is not None:
            buffer, count = item
            try:
                if not failures:
                    consume(memoryview(buffer)[:count])
            except BaseException as exc:  # handed to the reading thread, which raises it
                failures.append(exc)
            finally:
                release(buffer)

    inboxes: list[queue.Queue[tuple[bytearray, int] | None]] = [queue.Queue() for _ in consumers[1:]]
    workers = [threading.Thread(target=work, args=(consume, inbox), daemon=True, name="amas-forensics-hash")
               for consume, inbox in zip(consumers[1:], inboxes, strict=True)]
    for worker in workers:
        worker.start()
    try:
        while not failures:
            buffer = free.get()
            count = stream.readinto(buffer)
            if not count:
                break
            with lock:
                users[id(buffer)] = len(consumers)
            for inbox in inboxes:
                inbox.put((buffer, count))
            try:
                consumers[0](memoryview(buffer)[:count])
            finally:
                release(buffer)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]


@dataclass(frozen=True)
class FileType:
    mime: str
    label: str
    kind: str
    """image, document, archive, executable, audio, video, text, database, data or empty."""
    extensions: tuple[str, ...] = ()


PNG = FileType("image/png", "PNG image", "image", ("png",))
JPEG = FileType("image/jpeg", "JPEG image", "image", ("jpg", "jpeg", "jpe", "jfif"))
GIF = FileType("image/gif", "GIF image", "image", ("gif",))
PDF = FileType("application/pdf", "PDF document", "document", ("pdf",))
ZIP = FileType("application/zip", "ZIP archive", "archive",
               ("zip", "jar", "apk", "whl", "egg", "xpi", "nupkg", "ipa", "kmz", "cbz", "crx"))
GZIP = FileType("application/gzip", "gzip compressed data", "archive", ("gz", "tgz"))
BZIP2 = FileType("application/x-bzip2", "bzip2 compressed data", "archive", ("bz2", "tbz", "tbz2"))
XZ = FileType("application/x-xz", "xz compressed data", "archive", ("xz", "txz"))
ZSTD = FileType("application/zstd", "Zstandard compressed data", "archive", ("zst", "zstd"))
SEVEN_Z = FileType("application/x-7z-compressed", "7-Zip archive", "archive", ("7z",))
RAR = FileType("application/vnd.rar", "RAR archive", "archive", ("rar",))
TAR = FileType("application/x-tar", "tar archive", "archive", ("tar",))
ELF = FileType("application/x-elf", "ELF executable", "executable", ("so", "o", "elf", "ko", "axf", "out"))
PE = FileType("application/vnd.microsoft.portable-executable", "PE executable (Windows)", "executable",
              ("exe", "dll", "sys", "scr", "ocx", "cpl", "drv", "efi", "mui"))
MZ = FileType("application/x-dosexec", "DOS MZ executable", "executable", ("exe", "com"))
MACHO = FileType("application/x-mach-binary", "Mach-O executable", "executable", ("dylib", "bundle", "o"))
JAVA_CLASS = FileType("application/java-vm", "Java class file", "executable", ("class",))
WASM = FileType("application/wasm", "WebAssembly module", "executable", ("wasm",))
SQLITE = FileType("application/vnd.sqlite3", "SQLite 3 database", "database", ("sqlite", "sqlite3", "db3"))
TIFF = FileType("image/tiff", "TIFF image", "image", ("tif", "tiff", "dng", "cr2", "nef", "arw"))
BMP = FileType("image/bmp", "BMP image", "image", ("bmp", "dib"))
WEBP = FileType("image/webp", "WebP image", "image", ("webp",))
WAV = FileType("audio/wav", "WAVE audio", "audio", ("wav",))
AVI = FileType("video/x-msvideo", "AVI video", "video", ("avi",))
MP3 = FileType("audio/mpeg", "MP3 audio", "audio", ("mp3",))
FLAC = FileType("audio/flac", "FLAC audio", "audio", ("flac",))
OGG = FileType("audio/ogg", "Ogg container", "audio", ("ogg", "oga", "ogv", "opus", "spx"))
MP4 = FileType("video/mp4", "MP4 (ISO base media)", "video", ("mp4", "m4v", "m4a", "m4b", "f4v", "mov"))
QUICKTIME = FileType("video/quicktime", "QuickTime movie", "video", ("mov", "qt"))
M4A = FileType("audio/mp4", "MPEG-4 audio", "audio", ("m4a", "m4b", "mp4"))
HEIC = FileType("image/heic", "HEIF image", "image", ("heic", "heif"))
AVIF = FileType("image/avif", "AVIF image", "image", ("avif",))
THREE_GP = FileType("video/3gpp", "3GPP video", "video", ("3gp", "3g2"))
OLE2 = FileType("application/x-ole-storage", "OLE2 compound document (legacy Office, MSI)", "document",
                ("doc", "xls", "ppt", "msi", "msg", "dot", "xlt", "pot", "vsd", "pub"))
# .dot (Graphviz) and .pot (gettext) are also common text formats: TEXT lists them too.
DOCX = FileType("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "Word document (OOXML)",
                "document", ("docx",))
DOCM = FileType("application/vnd.ms-word.document.macroEnabled.12", "Word document with macros (OOXML)",
                "document", ("docm",))
XLSX = FileType("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "Excel workbook (OOXML)",
                "document", ("xlsx",))
XLSM = FileType("application/vnd.ms-excel.sheet.macroEnabled.12", "Excel workbook with macros (OOXML)",
                "document", ("xlsm",))
PPTX = FileType("application/vnd.openxmlformats-officedocument.presentationml.presentation",
                "PowerPoint presentation (OOXML)", "document", ("pptx",))
PPTM = FileType("application/vnd.ms-powerpoint.presentation.macroEnabled.12",
                "PowerPoint presentation with macros (OOXML)", "document", ("pptm",))
OOXML = FileType("application/x-ooxml", "Office Open XML package", "document", ())
JAR = FileType("application/java-archive", "Java archive", "archive", ("jar", "war", "ear"))
APK = FileType("application/vnd.android.package-archive", "Android package", "archive", ("apk",))
ODT = FileType("application/vnd.oasis.opendocument.text", "OpenDocument text", "document", ("odt",))
ODS = FileType("application/vnd.oasis.opendocument.spreadsheet", "OpenDocument spreadsheet", "document", ("ods",))
ODP = FileType("application/vnd.oasis.opendocument.presentation", "OpenDocument presentation", "document", ("odp",))
EPUB = FileType("application/epub+zip", "EPUB e-book", "document", ("epub",))
TEXT = FileType("text/plain", "text", "text", (
    "txt", "text", "log", "md", "markdown", "rst", "csv", "tsv", "json", "jsonl", "ndjson", "xml", "html", "htm",
    "xhtml", "css", "svg", "js", "mjs", "cjs", "ts", "tsx", "jsx", "py", "pyi", "rb", "php", "pl", "sh", "bash", "zsh",
    "bat", "cmd", "ps1", "c", "h", "cc", "cpp", "hpp", "cs", "java", "kt", "go", "rs", "swift", "sql", "yaml", "yml",
    "toml", "ini", "cfg", "conf", "properties", "env", "tex", "rtf", "eml", "vcf", "ics", "srt", "vtt", "pem", "crt",
    "asc", "diff", "patch", "po", "pot", "dot",
))
UNKNOWN = FileType("application/octet-stream", "data (no known signature)", "data", ())
EMPTY = FileType("application/x-empty", "empty file", "empty", ())

_ZIP_MIMETYPES = {t.mime: t for t in (ODT, ODS, ODP, EPUB)}
_OOXML_MAIN_PARTS = (
    ("wordprocessingml.document.main+xml", DOCX), ("ms-word.document.macroEnabled.main+xml", DOCM),
    ("spreadsheetml.sheet.main+xml", XLSX), ("ms-excel.sheet.macroEnabled.main+xml", XLSM),
    ("presentationml.presentation.main+xml", PPTX), ("ms-powerpoint.presentation.macroEnabled.main+xml", PPTM),
)
_FTYP_BRANDS = {b"qt  ": QUICKTIME, b"M4A ": M4A, b"M4B ": M4A, b"heic": HEIC, b"heix": HEIC, b"mif1": HEIC,
                b"msf1": HEIC, b"avif": AVIF, b"avis": AVIF, b"3gp4": THREE_GP, b"3gp5": THREE_GP,
                b"3gp6": THREE_GP, b"3g2a": THREE_GP}


def _at(offset: int, magic: bytes) -> Callable[[bytes], bool]:
    return lambda head: head[offset:offset + len(magic)] == magic


def _is_pe(head: bytes) -> bool:
    if head[:2] != b"MZ" or len(head) < 0x40:
        return False
    offset = int.from_bytes(head[0x3C:0x40], "little")
    return head[offset:offset + 4] == b"PE\x00\x00"


def _cafebabe_count(head: bytes) -> int | None:
    """The big-endian word after 0xCAFEBABE: a Mach-O universal binary's architecture count, or a
    Java class's minor/major version (major >= 45, so the word is >= 45)."""
    if head[:4] != b"\xca\xfe\xba\xbe" or len(head) < 8:
        return None
    return int.from_bytes(head[4:8], "big")


def _is_macho(head: bytes) -> bool:
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
                    b"\xca\xfe\xba\xbf"):
        return True
    count = _cafebabe_count(head)
    return count is not None and 0 < count < 45


def _is_java_class(head: bytes) -> bool:
    count = _cafebabe_count(head)
    return count is not None and count >= 45


def _is_bmp(head: bytes) -> bool:
    return head[:2] == b"BM" and len(head) >= 18 and \
        int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_mp3(head: bytes) -> bool:
    if head[:3] == b"ID3":
        return True
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def _ftyp(head: bytes) -> FileType | None:
    if head[4:8] != b"ftyp":
        return None
    return _FTYP_BRANDS.get(head[8:12], MP4)


SIGNATURES: tuple[tuple[Callable[[bytes], bool], FileType], ...] = (
    (_at(0, b"\x89PNG\r\n\x1a\n"), PNG),
    (_at(0, b"\xff\xd8\xff"), JPEG),
    (lambda h: h[:6] in (b"GIF87a", b"GIF89a"), GIF),
    # The PDF header may follow a little junk; readers accept it within the first 1024 bytes.
    (lambda h: b"%PDF-" in h[:1024], PDF),
    (lambda h: h[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"), ZIP),
    (_at(0, b"\x1f\x8b"), GZIP),
    (lambda h: h[:3] == b"BZh" and h[3:4].isdigit(), BZIP2),
    (_at(0, b"\xfd7zXZ\x00"), XZ),
    (_at(0, b"\x28\xb5\x2f\xfd"), ZSTD),
    (_at(0, b"7z\xbc\xaf\x27\x1c"), SEVEN_Z),
    (_at(0, b"Rar!\x1a\x07"), RAR),
    (_at(0, b"\x7fELF"), ELF),
    (_is_pe, PE),
    (_at(0, b"MZ"), MZ),
    (_is_macho, MACHO),
    (_is_java_class, JAVA_CLASS),
    (_at(0, b"\x00asm"), WASM),
    (_at(0, b"SQLite format 3\x00"), SQLITE),
    (lambda h: h[:4] in (b"II*\x00", b"MM\x00*"), TIFF),
    (_is_bmp, BMP),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", WEBP),
    (lambda h: h[:4] in (b"RIFF", b"RIFX", b"RF64") and h[8:12] == b"WAVE", WAV),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"AVI ", AVI),
    (_at(0, b"fLaC"), FLAC),
    (_at(0, b"OggS"), OGG),
    (_at(0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"), OLE2),
    (_at(257, b"ustar"), TAR),
    (_is_mp3, MP3),
)

_ALL_TYPES = (PNG, JPEG, GIF, PDF, ZIP, GZIP, BZIP2, XZ, ZSTD, SEVEN_Z, RAR, TAR, ELF, PE, MZ, MACHO, JAVA_CLASS,
              WASM, SQLITE, TIFF, BMP, WEBP, WAV, AVI, MP3, FLAC, OGG, MP4, QUICKTIME, M4A, HEIC, AVIF, THREE_GP,
              OLE2, DOCX, DOCM, XLSX, XLSM, PPTX, PPTM, JAR, APK, ODT, ODS, ODP, EPUB, TEXT)


def _expected_by_extension() -> dict[str, frozenset[str]]:
    expected: dict[str, set[str]] = defaultdict(set)
    for file_type in _ALL_TYPES:
        for extension in file_type.extensions:
            expected[extension].add(file_type.mime)
    return {extension: frozenset(mimes) for extension, mimes in expected.items()}


EXPECTED_BY_EXTENSION = _expected_by_extension()
"""For each extension this module knows, the detected types that agree with it."""
_EXECUTABLE_MIMES = frozenset(t.mime for t in _ALL_TYPES if t.kind == "executable")
_DOCUMENT_LIKE_EXTENSIONS = frozenset(
    ext for t in _ALL_TYPES if t.kind in ("document", "image", "text", "audio", "video") for ext in t.extensions
)
# Compressed and media formats are high-entropy by construction; entropy only says something elsewhere.
_DENSE_KINDS = frozenset({"archive", "audio", "video"})
_DENSE_MIMES = frozenset(t.mime for t in (PNG, JPEG, GIF, WEBP, HEIC, AVIF, PDF, DOCX, DOCM, XLSX, XLSM, PPTX, PPTM,
                                          ODT, ODS, ODP, EPUB, OOXML))
_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\t\n\r\f\b\x1b\x0b") + b"\x7f"
"""Bytes that text does not contain; translate(None, these) keeps the rest, so the length difference counts them."""
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _text_label(head: bytes, complete: bool) -> str | None:
    """What kind of text ``head`` is, or None when it looks binary. ``complete``: head is the whole file."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "UTF-8 text (with BOM)"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (with BOM)"
    if b"\x00" in head:
        return None
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    if controls > len(head) // 100:
        return None
    if head.isascii():
        return "ASCII text"
    try:
        # Not final unless complete: a multi-byte character may be cut at the end of the head.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
        return "UTF-8 text"
    except UnicodeDecodeError:
        pass
    high = len(head) - len(head.translate(None, _HIGH_BYTES))
    return "8-bit text (not UTF-8)" if high <= len(head) // 4 else None


def _zip_type(path: Path) -> FileType:
    """Refine a ZIP by its members: OOXML by [Content_Types].xml, ODF/EPUB by ``mimetype``, JAR/APK."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "[Content_Types].xml" in names and archive.getinfo("[Content_Types].xml").file_size < (1 << 20):
                content_types = archive.read("[Content_Types].xml").decode("utf-8", "replace")
                for marker, file_type in _OOXML_MAIN_PARTS:
                    if marker in content_types:
                        return file_type
                return OOXML
            if "mimetype" in names and archive.getinfo("mimetype").file_size < 200:
                declared = archive.read("mimetype").decode("ascii", "replace").strip()
                if declared in _ZIP_MIMETYPES:
                    return _ZIP_MIMETYPES[declared]
            if "AndroidManifest.xml" in names and "classes.dex" in names:
                return APK
            if "META-INF/MANIFEST.MF" in names:
                return JAR
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, KeyError, ValueError, NotImplementedError):
        pass
    return ZIP


def detect_type(head: bytes, path: Path | None = None, *, complete: bool = False) -> FileType:
    """The file's type from its first bytes (``HEAD_SIZE`` is enough); ``path`` lets ZIPs be refined.

    ``complete`` says ``head`` is the whole file (matters only for the UTF-8 check at its end).
    """
    if not head:
        return EMPTY
    ftyp = _ftyp(head)
    if ftyp is not None:
        return ftyp
    for test, file_type in SIGNATURES:
        if test(head):
            return _zip_type(path) if file_type is ZIP and path is not None else file_type
    label = _text_label(head, complete)
    return replace(TEXT, label=label) if label else UNKNOWN


def extension_of(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def expected_types(extension: str) -> list[str]:
    return sorted(EXPECTED_BY_EXTENSION.get(extension, ()))


def is_mismatch(extension: str, file_type: FileType) -> bool:
    """True when the extension is one this module knows and the content is none of its types."""
    expected = EXPECTED_BY_EXTENSION.get(extension)
    return expected is not None and file_type.kind != "empty" and file_type.mime not in expected


def is_disguised_executable(path: Path, kind: str) -> bool:
    """An executable named like a document, image, text or media file, directly or as ``x.pdf.exe``."""
    if kind != "executable":
        return False
    extension = extension_of(path)
    expected = EXPECTED_BY_EXTENSION.get(extension)
    if expected is not None and not expected & _EXECUTABLE_MIMES:
        return True
    inner = Path(path.stem).suffix.lower().lstrip(".")
    return bool(inner) and inner in _DOCUMENT_LIKE_EXTENSIONS and extension not in _DOCUMENT_LIKE_EXTENSIONS


class ForensicsInput(BaseModel):
    paths: list[str] = Field(min_length=1, description="Files or directories (walked recursively) to examine. "
                                                       "Relative paths resolve against the working directory.")
    case_ref: str = Field("", max_length=200, description="Case label recorded in the chain of custody.")
    max_files: int = Field(10_000, ge=1, le=1_000_000, description="Stop after examining this many files.")
    md5: bool = Field(True, description="Also compute md5 (in the same read, on another thread).")


class ExifInfo(BaseModel):
    format: str | None = None
    width: int | None = None
    height: int | None = None
    make: str | None = Field(None, description="Camera make.")
    model: str | None = Field(None, description="Camera model.")
    software: str | None = None
    datetime: str | None = Field(None, description="EXIF DateTime (last change), as written in the file.")
    datetime_original: str | None = Field(None, description="EXIF DateTimeOriginal (capture time).")
    gps_present: bool = False
    gps_latitude: float | None = None
    gps_longitude: float | None = None


class PdfInfo(BaseModel):
    encrypted: bool
    pages: int | None = Field(None, description="None when the document is encrypted with a password.")
    title: str | None = None
    author: str | None = None
    creator: str | None = None
    producer: str | None = None
    creation_date: str | None = None
    modification_date: str | None = None


class FileReport(BaseModel):
    path: str
    size: int
    sha256: str
    md5: str | None
    mime: str = Field(description="Type detected from the content's magic bytes.")
    type_label: str
    kind: str
    extension: str
    expected_types: list[str] = Field(description="Types the extension promises; empty for unknown extensions.")
    extension_mismatch: bool
    disguised_executable: bool = Field(description="Executable content named like a document, image or text file.")
    entropy: float = Field(description="Shannon entropy of the whole content, bits per byte (0 to 8).")
    high_entropy: bool
    acquired_at: str = Field(description="UTC time the file was hashed.")
    exif: ExifInfo | None = None
    pdf: PdfInfo | None = None
    metadata_error: str | None = Field(None, description="Why embedded metadata could not be read.")


class DuplicateGroup(BaseModel):
    sha256: str
    size: int
    paths: list[str]


class SkippedFile(BaseModel):
    path: str
    reason: str


class ForensicsOutput(AgentResult):
    case_ref: str
    files: list[FileReport]
    duplicates: list[DuplicateGroup] = Field(description="Groups of non-empty files with the same sha256.")
    skipped: list[SkippedFile]
    truncated: bool = Field(description="True when max_files stopped the walk.")
    total_bytes: int
    custody_key: str = Field(description="Storage key of the chain-of-custody log.")
    custody_sha256: str = Field(description="sha256 of the stored custody log, to detect tampering.")


@dataclass
class _Collected:
    roots: list[Path]
    """The named paths, resolved: what lineage records as read (not every file under a directory)."""
    files: list[Path]
    explicit: set[Path]
    skipped: list[SkippedFile]
    truncated: bool


def collect_files(paths: Sequence[str], max_files: int) -> _Collected:
    """The regular files named or found under ``paths``, sorted per directory, each once.

    Symbolic links met while walking are not followed (they could loop or leave the evidence
    set); a link named explicitly is resolved. Non-regular files (FIFOs, devices) are skipped
    because reading them could block or never end.
    """
    roots: list[Path] = []
    files: list[Path] = []
    seen: set[Path] = set()
    explicit: set[Path] = set()
    skipped: list[SkippedFile] = []

    def add(path: Path) -> bool:
        if path not in seen:
            if len(files) >= max_files:
                return False
            seen.add(path)
            files.append(path)
        return True

    for raw in paths:
        path, info = resolve_input_path(raw, "paths", "existing files or directories")
        mode = info.st_mode
        if path not in roots:
            roots.append(path)
        if stat.S_ISDIR(mode):
            for found in _walk(path, skipped):
                if not add(found):
                    return _Collected(roots, files, explicit, skipped, truncated=True)
        elif stat.S_ISREG(mode):
            explicit.add(path)
            if not add(path):
                return _Collected(roots, files, explicit, skipped, truncated=True)
        else:
            raise AgentInputError(f"paths: {path} is neither a regular file nor a directory")
    return _Collected(roots, files, explicit, skipped, truncated=False)


def _walk(top: Path, skipped: list[SkippedFile]) -> Iterator[Path]:
    def on_error(exc: OSError) -> None:
        skipped.append(SkippedFile(path=str(exc.filename), reason=f"cannot list directory: {exc.strerror}"))

    for directory, subdirs, names in os.walk(top, onerror=on_error):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory, name)
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                skipped.append(SkippedFile(path=str(path), reason=f"cannot stat: {exc.strerror}"))
                continue
            if stat.S_ISLNK(mode):
                skipped.append(SkippedFile(path=str(path), reason="symbolic link (not followed)"))
            elif not stat.S_ISREG(mode):
                skipped.append(SkippedFile(path=str(path), reason="not a regular file"))
            else:
                yield path


_EXIF_MAKE, _EXIF_MODEL, _EXIF_SOFTWARE, _EXIF_DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
_EXIF_IFD, _GPS_IFD, _EXIF_DATETIME_ORIGINAL = 0x8769, 0x8825, 0x9003
_EXIF_MIMES = frozenset({PNG.mime, JPEG.mime, TIFF.mime, WEBP.mime})


def _clean(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip("\x00 \t\r\n")
    return text or None


def _gps_degrees(value: object, ref: object) -> float | None:
    try:
        degrees, minutes, seconds = (float(part) for part in value)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = degrees + minutes / 60 + seconds / 3600
    if not math.isfinite(result):
        return None
    if _clean(ref) in ("S", "W"):
        result = -result
    return round(result, 7)


def read_exif(path: Path) -> ExifInfo:
    """Camera, software, dates and GPS from an image's EXIF (Pillow reads headers, not pixels)."""
    from PIL import Image

    with Image.open(path) as image:
        exif = image.getexif()
        info = ExifInfo(format=image.format, width=image.width, height=image.height)
        sub = exif.get_ifd(_EXIF_IFD)
        gps = exif.get_ifd(_GPS_IFD)
    info.make, info.model = _clean(exif.get(_EXIF_MAKE)), _clean(exif.get(_EXIF_MODEL))
    info.software, info.datetime = _clean(exif.get(_EXIF_SOFTWARE)), _clean(exif.get(_EXIF_DATETIME))
    info.datetime_original = _clean(sub.get(_EXIF_DATETIME_ORIGINAL))
    info.gps_present = bool(gps)
    if gps:
        info.gps_latitude = _gps_degrees(gps.get(2), gps.get(1))
        info.gps_longitude = _gps_degrees(gps.get(4), gps.get(3))
    return info


def _pdf_date(metadata: object, name: str) -> str | None:
    try:
        parsed = getattr(metadata, name)
    except (ValueError, TypeError):
        parsed = None
    if parsed is not None:
        return parsed.isoformat()
    return _clean(getattr(metadata, f"{name}_raw", None))


def read_pdf_info(path: Path) -> PdfInfo:
    """The info dictionary, page count and encryption of a PDF (pypdf, streamed from the open file)."""
    from pypdf import PdfReader

    with open(path, "rb") as stream:
        reader = PdfReader(stream)
        encrypted = reader.is_encrypted
        if encrypted:
            try:
                # Many "encrypted" PDFs only restrict printing/copying and open with an empty password.
                readable = bool(reader.decrypt(""))
            except Exception:  # pypdf raises several types for unsupported or broken encryption
                readable = False
            if not readable:
                return PdfInfo(encrypted=True)
        metadata = reader.metadata
        info = PdfInfo(encrypted=encrypted, pages=len(reader.pages))
        if metadata is not None:
            info.title, info.author = _clean(metadata.title), _clean(metadata.author)
            info.creator, info.producer = _clean(metadata.creator), _clean(metadata.producer)
            info.creation_date = _pdf_date(metadata, "creation_date")
            info.modification_date = _pdf_date(metadata, "modification_date")
        return info


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Forensics:
    name = "forensics"
    description = "Hashes, true file type, entropy, EXIF/PDF metadata, duplicates and a chain of custody for files."
    Input = ForensicsInput
    Output = ForensicsOutput

    def run(self, params: ForensicsInput, context: AgentContext) -> ForensicsOutput:
        collected = collect_files(params.paths, params.max_files)
        host = socket.gethostname()
        started = _utc_now()
        reports: list[FileReport] = []
        custody: list[dict[str, object]] = []
        skipped = list(collected.skipped)
        for path in collected.files:
            try:
                digest = hash_file(path, md5=params.md5)
            except OSError as exc:
                if path in collected.explicit:
                    raise AgentInputError(f"paths: cannot read {path}: {exc.strerror or exc}") from None
                skipped.append(SkippedFile(path=str(path), reason=f"cannot read: {exc.strerror or exc}"))
                continue
            acquired = _utc_now()
            reports.append(self._report(path, digest, acquired))
            custody.append({"who": context.actor, "when": acquired, "host": host, "path": str(path),
                            "size": digest.size, "sha256": digest.sha256, "md5": digest.md5, "action": "acquired"})

        log = {"case_ref": params.case_ref, "task_id": str(context.task_id) if context.task_id else None,
               "tool": f"amas {self.name}", "actor": context.actor, "host": host, "started": started,
               "finished": _utc_now(), "records": custody}
        custody_evidence = context.put_evidence(
            "custody.json", json.dumps(log, indent=2, sort_keys=True).encode(), media_type="application/json",
            description=f"Chain of custody: {len(custody)} files acquired" +
                        (f" for case {params.case_ref}" if params.case_ref else ""),
        )
        duplicates = self._duplicates(reports)
        output = ForensicsOutput(
            agent=self.name, summary=self._summary(params, reports, duplicates, skipped, collected.truncated),
            findings=self._findings(reports, duplicates, skipped, collected.truncated, params.max_files),
            evidence=[custody_evidence], reads=[str(root) for root in collected.roots], case_ref=params.case_ref,
            files=reports, duplicates=duplicates, skipped=skipped, truncated=collected.truncated,
            total_bytes=sum(r.size for r in reports), custody_key=custody_evidence.key,
            custody_sha256=custody_evidence.sha256,
        )
        report = output.model_dump(mode="json", exclude={"evidence", "llm"})
        output.evidence.append(context.put_evidence(
            "forensics.json", json.dumps(report, indent=2, sort_keys=True).encode(), media_type="application/json",
            description="Per-file forensic report (hashes, types, metadata, findings)"))
        return output

    def _report(self, path: Path, digest: FileDigest, acquired: str) -> FileReport:
        file_type = detect_type(digest.head, path, complete=digest.size <= len(digest.head))
        extension = extension_of(path)
        entropy = digest.entropy or 0.0
        report = FileReport(
            path=str(path), size=digest.size, sha256=digest.sha256, md5=digest.md5, mime=file_type.mime,
            type_label=file_type.label, kind=file_type.kind, extension=extension,
            expected_types=expected_types(extension), extension_mismatch=is_mismatch(extension, file_type),
            disguised_executable=is_disguised_executable(path, file_type.kind),
            entropy=entropy, high_entropy=entropy > HIGH_ENTROPY and digest.size >= MIN_ENTROPY_BYTES,
            acquired_at=acquired,
        )
        try:
            if file_type.mime in _EXIF_MIMES:
                report.exif = read_exif(path)
            elif file_type is PDF:
                report.pdf = read_pdf_info(path)
        except Exception as exc:  # a malformed file is a finding about the file, not a failed run
            report.metadata_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return report

    @staticmethod
    def _duplicates(reports: list[FileReport]) -> list[DuplicateGroup]:
        by_hash: dict[str, list[FileReport]] = defaultdict(list)
        for report in reports:
            if report.size:
                by_hash[report.sha256].append(report)
        groups = [DuplicateGroup(sha256=digest, size=same[0].size, paths=sorted(r.path for r in same))
                  for digest, same in by_hash.items() if len(same) > 1]
        return sorted(groups, key=lambda g: (-g.size, g.paths[0]))

    @staticmethod
    def _findings(reports: list[FileReport], duplicates: list[DuplicateGroup], skipped: list[SkippedFile],
                  truncated: bool, max_files: int) -> list[Finding]:
        findings: list[Finding] = []
        for r in reports:
            path = Path(r.path)
            promised = ", ".join(r.expected_types) or "no known type"
            if r.disguised_executable:
                findings.append(Finding(
                    severity=Severity.high, title=f"Executable disguised as a document: {path.name}",
                    detail=f"Content is {r.type_label} ({r.mime}) but the name suggests a document or media file "
                           f"(.{r.extension} promises {promised}). Do not open it; treat it as a possible dropper.",
                    location=r.path))
            elif r.extension_mismatch:
                findings.append(Finding(
                    severity=Severity.medium, title=f"Extension does not match content: {path.name}",
                    detail=f"Content is {r.type_label} ({r.mime}); .{r.extension} promises {promised}.",
                    location=r.path))
            if r.high_entropy and r.kind not in _DENSE_KINDS and r.mime not in _DENSE_MIMES:
                packed = r.kind in ("data", "executable")
                findings.append(Finding(
                    severity=Severity.low if packed else Severity.info,
                    title=f"High entropy ({r.entropy:.2f} bits/byte): {path.name}",
                    detail=("Near-random content in a " + r.type_label +
                            ": possibly encrypted, packed or compressed data without a known header."),
                    location=r.path))
            if r.exif is not None and r.exif.gps_present:
                where = (f" ({r.exif.gps_latitude:.5f}, {r.exif.gps_longitude:.5f})"
                         if r.exif.gps_latitude is not None and r.exif.gps_longitude is not None else "")
                findings.append(Finding(
                    severity=Severity.medium, title=f"GPS position in image EXIF: {path.name}",
                    detail=f"The image records where it was taken{where}. Privacy: strip EXIF before sharing.",
                    location=r.path))
            if r.pdf is not None and r.pdf.encrypted:
                findings.append(Finding(
                    severity=Severity.low, title=f"Encrypted PDF: {path.name}",
                    detail="The PDF is encrypted" + ("" if r.pdf.pages is not None else
                                                     " with a user password; its content and metadata are unread")
                           + ".", location=r.path))
            if r.metadata_error:
                findings.append(Finding(severity=Severity.info, title=f"Metadata unreadable: {path.name}",
                                        detail=r.metadata_error, location=r.path))
        for group in duplicates:
            findings.append(Finding(
                severity=Severity.info, title=f"{len(group.paths)} identical files ({group.size} bytes)",
                detail=f"sha256 {group.sha256}: " + ", ".join(group.paths), location=group.paths[0]))
        if skipped:
            findings.append(Finding(
                severity=Severity.info, title=f"{len(skipped)} entries skipped",
                detail="; ".join(f"{s.path}: {s.reason}" for s in skipped[:20]) +
                       (f"; and {len(skipped) - 20} more" if len(skipped) > 20 else "")))
        if truncated:
            findings.append(Finding(severity=Severity.info, title=f"Stopped after max_files={max_files} files",
                                    detail="Raise max_files to examine the rest."))
        return findings

    @staticmethod
    def _summary(params: ForensicsInput, reports: list[FileReport], duplicates: list[DuplicateGroup],
                 skipped: list[SkippedFile], truncated: bool) -> str:
        case = f"Case {params.case_ref}: " if params.case_ref else ""
        if not reports:
            return f"{case}no files acquired ({len(skipped)} entries skipped)."
        kinds = defaultdict(int)
        for r in reports:
            kinds[r.kind] += 1
        mismatches = sum(r.extension_mismatch for r in reports)
        disguised = sum(r.disguised_executable for r in reports)
        parts = [
            f"{case}acquired {len(reports)} files ({sum(r.size for r in reports):,} bytes) with sha256"
            + (" and md5" if params.md5 else "") + "; custody log stored as evidence",
            "types: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            f"{mismatches} extension mismatches",
            f"{disguised} executables disguised as documents",
            f"{len(duplicates)} duplicate groups",
            f"{sum(r.high_entropy for r in reports)} high-entropy files",
            f"{sum(bool(r.exif and r.exif.gps_present) for r in reports)} images with GPS",
            f"{sum(bool(r.pdf and r.pdf.encrypted) for r in reports)} encrypted PDFs",
        ]
        if skipped:
            parts.append(f"{len(skipped)} entries skipped")
        if truncated:
            parts.append(f"stopped at max_files={params.max_files}")
        return "; ".join(parts) + "."


AGENT = Forensics()
