"""The forensics agent on real files made here: magic bytes, hashes, entropy, EXIF, PDF info, custody."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib.util
import io
import json
import lzma
import os
import sqlite3
import struct
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from pypdf import PdfWriter

from agents import forensics
from agents.forensics import AGENT, ByteHistogram, ForensicsInput, detect_type, fan_out, hash_file
from amas.registry import AgentInputError, Severity

pytestmark = pytest.mark.unit

ELF_HEADER = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + bytes(40)


def pe_image() -> bytes:
    """A DOS stub whose e_lfanew points at a PE signature, as every Windows executable has."""
    dos = bytearray(0x80)
    dos[:2] = b"MZ"
    dos[0x3C:0x40] = struct.pack("<I", 0x80)
    return bytes(dos) + b"PE\x00\x00" + b"\x64\x86" + bytes(200)


def jpeg_with_exif(path: Path, *, gps: bool = True) -> None:
    exif = Image.Exif()
    exif[0x010F] = "FakeCam"
    exif[0x0110] = "Model X"
    exif[0x0131] = "EditorPro 1.0"
    exif[0x0132] = "2024:01:02 03:04:05"
    exif[0x8769] = {0x9003: "2023:12:31 23:59:58"}
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "W", 4: (4.0, 53.0, 24.0)}
    Image.new("RGB", (32, 24), (200, 10, 10)).save(path, format="JPEG", exif=exif)


def pdf_with_metadata(path: Path, *, password: str | None = None, pages: int = 2) -> None:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Author": "Alice Examiner", "/Creator": "TestWriter 3", "/Producer": "pypdf",
                         "/Title": "Quarterly", "/CreationDate": "D:20240102030405+00'00'"})
    if password is not None:
        writer.encrypt(password, algorithm="AES-256")
    with open(path, "wb") as out:
        writer.write(out)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder for the files under examination (the context keeps its store and storage in tmp_path)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


def by_name(result: forensics.ForensicsOutput) -> dict[str, forensics.FileReport]:
    return {Path(r.path).name: r for r in result.files}


def run(context, **params) -> forensics.ForensicsOutput:
    return AGENT.run(ForensicsInput(**params), context)


def test_hashes_match_hashlib_for_small_odd_and_threaded_files(tmp_path: Path) -> None:
    sizes = {"empty": 0, "tiny": 7, "head": forensics.HEAD_SIZE, "odd": 3 * forensics.HEAD_SIZE + 1,
             "large": forensics.PARALLEL_MIN_BYTES + 12_345}
    for name, size in sizes.items():
        data = os.urandom(size)
        path = tmp_path / name
        path.write_bytes(data)
        digest = hash_file(path)
        assert digest.size == size
        assert digest.sha256 == hashlib.sha256(data).hexdigest(), name
        assert digest.md5 == hashlib.md5(data).hexdigest(), name
        assert digest.head == data[:forensics.HEAD_SIZE]
        expected = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
        assert digest.entropy == pytest.approx(forensics.shannon_entropy(expected), abs=1e-12), name
    without_md5 = hash_file(tmp_path / "large", md5=False, entropy=False)
    assert without_md5.md5 is None and without_md5.entropy is None
    assert without_md5.sha256 == hashlib.sha256((tmp_path / "large").read_bytes()).hexdigest()


def test_fan_out_gives_every_consumer_every_byte_in_order() -> None:
    data = os.urandom(1_000_003)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    pieces: list[bytes] = []
    fan_out(io.BytesIO(data), [sha.update, md5.update, lambda view: pieces.append(bytes(view))], chunk_size=4096)
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert b"".join(pieces) == data


def test_fan_out_raises_a_consumer_error() -> None:
    def broken(view: memoryview) -> None:
        raise ValueError("consumer broke")

    with pytest.raises(ValueError, match="consumer broke"):
        fan_out(io.BytesIO(os.urandom(100_000)), [hashlib.sha256().update, broken], chunk_size=4096)


def test_entropy_is_zero_for_constant_bytes_and_near_eight_for_random() -> None:
    zeros = ByteHistogram()
    zeros.update(bytes(100_001))
    assert zeros.entropy() == 0.0
    noise = ByteHistogram()
    noise.update(os.urandom(1 << 20))
    assert 7.99 < noise.entropy() <= 8.0
    two = ByteHistogram()
    two.update(b"ab" * 500 + b"a")
    assert two.entropy() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("make", "mime"), [
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG"), "image/png"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="JPEG"), "image/jpeg"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="GIF"), "image/gif"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="TIFF"), "image/tiff"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="BMP"), "image/bmp"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="WEBP"), "image/webp"),
    (lambda p: pdf_with_metadata(p), "application/pdf"),
    (lambda p: zipfile.ZipFile(p, "w").close(), "application/zip"),
    (lambda p: p.write_bytes(gzip.compress(b"hello")), "application/gzip"),
    (lambda p: p.write_bytes(bz2.compress(b"hello")), "application/x-bzip2"),
    (lambda p: p.write_bytes(lzma.compress(b"hello")), "application/x-xz"),
    (lambda p: p.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64)), "application/zstd"),
    (lambda p: p.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + os.urandom(64)), "application/x-7z-compressed"),
    (lambda p: p.write_bytes(ELF_HEADER), "application/x-elf"),
    (lambda p: p.write_bytes(pe_image()), "application/vnd.microsoft.portable-executable"),
    (lambda p: p.write_bytes(b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + bytes(64)), "application/x-mach-binary"),
    (lambda p: p.write_bytes(b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(64)), "application/x-mach-binary"),
    (lambda p: p.write_bytes(b"\xca\xfe\xba\xbe\x00\x00\x00\x41" + bytes(64)), "application/java-vm"),
    (lambda p: sqlite3.connect(p).execute("create table t (x)").connection.commit(), "application/vnd.sqlite3"),
    (lambda p: p.write_bytes(b"ID3\x04\x00\x00" + bytes(100)), "audio/mpeg"),
    (lambda p: p.write_bytes(b"\xff\xfb\x90\x64" + bytes(100)), "audio/mpeg"),
    (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00" + bytes(64)), "video/mp4"),
    (lambda p: p.write_bytes(b"\x00\x00\x00\x14ftypqt  " + bytes(64)), "video/quicktime"),
    (lambda p: p.write_bytes(b"OggS\x00\x02" + bytes(64)), "audio/ogg"),
    (lambda p: p.write_bytes(b"\x00asm\x01\x00\x00\x00"), "application/wasm"),
    (lambda p: p.write_text("plain words\nand a line\n"), "text/plain"),
    (lambda p: p.write_text("naïve café — ünïcödé\n" * 800, encoding="utf-8"), "text/plain"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), "application/octet-stream"),
    (lambda p: p.write_bytes(b""), "application/x-empty"),
])
def test_type_comes_from_magic_bytes(tmp_path: Path, make, mime: str) -> None:
    path = tmp_path / "sample.noext"
    make(path)
    head = path.read_bytes()[:forensics.HEAD_SIZE]
    assert detect_type(head, path, complete=path.stat().st_size <= len(head)).mime == mime


def test_office_documents_are_told_apart_inside_zip(inputs: Path, agent_context) -> None:
    def ooxml(path: Path, main: str) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("[Content_Types].xml", f'<Types><Override PartName="/x" ContentType="{main}"/></Types>')
            archive.writestr("word/document.xml", "<w:document/>")

    ooxml(inputs / "report.docx",
          "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml")
    ooxml(inputs / "macro.docx", "application/vnd.ms-word.document.macroEnabled.main+xml")
    with zipfile.ZipFile(inputs / "sheet.xlsx", "w") as archive:
        archive.writestr("[Content_Types].xml",
                         '<Types ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>')
    with zipfile.ZipFile(inputs / "plain.docx", "w") as archive:
        archive.writestr("readme.txt", "not a document")
    with zipfile.ZipFile(inputs / "book.epub", "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    files = by_name(run(agent_context, paths=[str(inputs)]))
    assert files["report.docx"].type_label == "Word document (OOXML)"
    assert not files["report.docx"].extension_mismatch
    assert files["sheet.xlsx"].mime == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert files["book.epub"].mime == "application/epub+zip" and not files["book.epub"].extension_mismatch
    # A macro-enabled document renamed .docx, and a bare zip renamed .docx, both disagree with their name.
    assert files["macro.docx"].mime == "application/vnd.ms-word.document.macroEnabled.12"
    assert files["macro.docx"].extension_mismatch
    assert files["plain.docx"].mime == "application/zip" and files["plain.docx"].extension_mismatch


def test_disguised_files_duplicates_entropy_and_custody(inputs: Path, agent_context) -> None:
    case = inputs / "case"
    (case / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(case / "invoice.pdf", format="PNG")
    (case / "notes.txt").write_bytes(ELF_HEADER)
    (case / "invoice.pdf.exe").write_bytes(pe_image())
    (case / "tool.exe").write_bytes(pe_image() + b"x")
    (case / "zeros.bin").write_bytes(bytes(64 * 1024))
    noise = os.urandom(256 * 1024)
    (case / "blob.dat").write_bytes(noise)
    (case / "sub" / "copy-of-blob.dat").write_bytes(noise)
    (case / "empty-a.txt").write_bytes(b"")
    (case / "sub" / "empty-b.txt").write_bytes(b"")
    (case / "readme.md").write_text("# Case notes\nNothing to see.\n")

    result = run(agent_context, paths=[str(case)], case_ref="CASE-42")
    files = by_name(result)
    assert len(result.files) == 10 and result.total_bytes == sum(r.size for r in result.files)

    assert files["invoice.pdf"].mime == "image/png" and files["invoice.pdf"].extension_mismatch
    assert files["invoice.pdf"].expected_types == ["application/pdf"]
    assert files["notes.txt"].mime == "application/x-elf" and files["notes.txt"].disguised_executable
    assert files["invoice.pdf.exe"].disguised_executable and not files["invoice.pdf.exe"].extension_mismatch
    assert not files["tool.exe"].extension_mismatch and not files["tool.exe"].disguised_executable
    assert not files["readme.md"].extension_mismatch and files["readme.md"].kind == "text"
    assert files["zeros.bin"].entropy == 0.0
    assert files["blob.dat"].entropy > 7.99 and files["blob.dat"].high_entropy

    for name, report in files.items():
        data = (case / ("sub" if name.startswith(("copy", "empty-b")) else "") / name).read_bytes()
        assert report.sha256 == hashlib.sha256(data).hexdigest()
        assert report.md5 == hashlib.md5(data).hexdigest()

    assert [(g.sha256, g.size, [Path(p).name for p in g.paths]) for g in result.duplicates] == [
        (hashlib.sha256(noise).hexdigest(), len(noise), ["blob.dat", "copy-of-blob.dat"])]

    by_title = {(f.severity, f.location and Path(f.location).name): f for f in result.findings}
    assert (Severity.medium, "invoice.pdf") in by_title
    assert (Severity.high, "notes.txt") in by_title
    assert (Severity.high, "invoice.pdf.exe") in by_title
    assert (Severity.medium, "notes.txt") not in by_title  # the disguise finding replaces the plain mismatch
    assert (Severity.low, "blob.dat") in by_title and "entropy" in by_title[(Severity.low, "blob.dat")].title
    assert any(f.severity is Severity.info and "identical" in f.title for f in result.findings)
    assert "10 files" in result.summary and "2 extension mismatches; 2 executables disguised" in result.summary

    custody_ev, report_ev = result.evidence
    stored = agent_context.storage.get(custody_ev.key)
    assert hashlib.sha256(stored).hexdigest() == result.custody_sha256 == custody_ev.sha256
    assert result.custody_key == custody_ev.key
    log = json.loads(stored)
    assert log["case_ref"] == "CASE-42" and log["task_id"] == str(agent_context.task_id)
    assert len(log["records"]) == 10
    for record in log["records"]:
        assert record["who"] == "test" and record["action"] == "acquired" and record["host"]
        assert datetime.fromisoformat(record["when"]).utcoffset().total_seconds() == 0
        assert record["sha256"] == hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest()
        assert record["md5"] == hashlib.md5(Path(record["path"]).read_bytes()).hexdigest()
    report = json.loads(agent_context.storage.get(report_ev.key))
    assert report["custody_sha256"] == result.custody_sha256
    assert {f["sha256"] for f in report["files"]} == {r.sha256 for r in result.files}
    assert result.reads == [str(case.resolve())]


def test_exif_camera_dates_and_gps_are_read(inputs: Path, agent_context) -> None:
    jpeg_with_exif(inputs / "holiday.jpg")
    jpeg_with_exif(inputs / "studio.jpg", gps=False)
    files = by_name(run(agent_context, paths=[str(inputs / "holiday.jpg"), str(inputs / "studio.jpg")]))
    exif = files["holiday.jpg"].exif
    assert exif is not None
    assert (exif.make, exif.model, exif.software) == ("FakeCam", "Model X", "EditorPro 1.0")
    assert exif.datetime == "2024:01:02 03:04:05" and exif.datetime_original == "2023:12:31 23:59:58"
    assert (exif.width, exif.height, exif.format) == (32, 24, "JPEG")
    assert exif.gps_present
    assert exif.gps_latitude == pytest.approx(52 + 22 / 60 + 12 / 3600)
    assert exif.gps_longitude == pytest.approx(-(4 + 53 / 60 + 24 / 3600))
    assert files["studio.jpg"].exif.gps_present is False
    result = run(agent_context, paths=[str(inputs)])
    gps = [f for f in result.findings if "GPS" in f.title]
    assert [(f.severity, Path(f.location).name) for f in gps] == [(Severity.medium, "holiday.jpg")]


def test_pdf_info_and_encryption(inputs: Path, agent_context) -> None:
    pdf_with_metadata(inputs / "plain.pdf", pages=3)
    pdf_with_metadata(inputs / "locked.pdf", password="user-" + "pw-42")
    pdf_with_metadata(inputs / "restricted.pdf", password="")
    result = run(agent_context, paths=[str(inputs)])
    files = by_name(result)
    plain = files["plain.pdf"].pdf
    assert plain is not None and not plain.encrypted and plain.pages == 3
    assert (plain.author, plain.creator, plain.producer, plain.title) == (
        "Alice Examiner", "TestWriter 3", "pypdf", "Quarterly")
    assert plain.creation_date == "2024-01-02T03:04:05+00:00"
    locked = files["locked.pdf"].pdf
    assert locked.encrypted and locked.pages is None and locked.author is None
    restricted = files["restricted.pdf"].pdf
    assert restricted.encrypted and restricted.pages == 2 and restricted.author == "Alice Examiner"
    encrypted = sorted(Path(f.location).name for f in result.findings if f.title.startswith("Encrypted PDF"))
    assert encrypted == ["locked.pdf", "restricted.pdf"]
    assert all(f.severity is Severity.low for f in result.findings if f.title.startswith("Encrypted PDF"))


def test_broken_metadata_is_reported_not_raised(inputs: Path, agent_context) -> None:
    (inputs / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(50))
    files = by_name(run(agent_context, paths=[str(inputs)]))
    assert files["broken.pdf"].mime == "application/pdf" and files["broken.pdf"].metadata_error
    assert files["broken.jpg"].mime == "image/jpeg" and files["broken.jpg"].metadata_error


def test_walk_skips_links_and_fifos_and_stops_at_max_files(inputs: Path, agent_context) -> None:
    for index in range(5):
        (inputs / f"f{index}.txt").write_text(f"file {index}\n")
    (inputs / "link.txt").symlink_to(inputs / "f0.txt")
    os.mkfifo(inputs / "pipe")
    result = run(agent_context, paths=[str(inputs)], md5=False)
    assert [Path(r.path).name for r in result.files] == [f"f{i}.txt" for i in range(5)]
    assert all(r.md5 is None for r in result.files)
    assert {Path(s.path).name: s.reason for s in result.skipped} == {
        "link.txt": "symbolic link (not followed)", "pipe": "not a regular file"}
    limited = run(agent_context, paths=[str(inputs)], max_files=2)
    assert len(limited.files) == 2 and limited.truncated and "max_files=2" in limited.summary
    # A file named twice, or inside a directory also named, is acquired once.
    once = run(agent_context, paths=[str(inputs / "f1.txt"), str(inputs), str(inputs / "f1.txt")])
    assert len(once.files) == 5
    # An explicitly named link is resolved to its target.
    linked = run(agent_context, paths=[str(inputs / "link.txt")])
    assert [Path(r.path).name for r in linked.files] == ["f0.txt"]


def test_summary_is_deterministic(inputs: Path, agent_context) -> None:
    (inputs / "a.txt").write_text("alpha\n")
    Image.new("RGB", (4, 4)).save(inputs / "b.png")
    first = run(agent_context, paths=[str(inputs)], case_ref="C-1")
    second = run(agent_context, paths=[str(inputs)], case_ref="C-1")
    assert first.summary == second.summary
    assert first.summary.startswith("Case C-1: acquired 2 files")


def test_missing_path_names_the_field(tmp_path: Path, agent_context) -> None:
    with pytest.raises(AgentInputError, match=r"^paths: .*nope.* does not exist"):
        run(agent_context, paths=[str(tmp_path / "nope")])
    with pytest.raises(AgentInputError, match=r"^paths: .*neither a regular file nor a directory"):
        run(agent_context, paths=["/dev/null"])
    with pytest.raises(ValidationError, match="paths"):
        ForensicsInput(paths=[])
    with pytest.raises(ValidationError, match="max_files"):
        ForensicsInput(paths=["x"], max_files=0)


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path, agent_context,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here.txt").write_text("relative\n")
    monkeypatch.chdir(tmp_path)
    result = run(agent_context, paths=["here.txt"])
    assert result.files[0].path == str(tmp_path.resolve() / "here.txt")


def test_benchmark_script_agrees_with_coreutils(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_forensics.py"
    spec = importlib.util.spec_from_file_location("bench_forensics", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--size-mib", "2", "--repeat", "1", "--dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["digests_match"] is True and report["size_bytes"] == 2 << 20
    assert set(report["mb_per_s"]) == {"sha256sum", "md5sum", "agent_sha256", "agent_sha256_md5", "agent_full_pass"}
    assert list(tmp_path.iterdir()) == []  # the test file is removed
