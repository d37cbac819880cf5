"""Tabular datasets for the agents: read a CSV or Parquet file into pandas and find its DVC version.

``data_analysis`` and ``pii_classifier`` take the same dataset input (``DatasetInput``) and read it
through ``load_table``. Reading goes through pyarrow (multi-threaded CSV parser, Parquet reader)
and hands pandas columns without a per-row Python step, so a million rows load in about a second.

A dataset may be tracked by DVC, either by a ``<file>.dvc`` file (``dvc add``) or as an ``outs``
of a stage in a ``dvc.lock``. ``find_dvc_tracking`` finds the md5 DVC recorded for it, which the
agents report as the dataset version (lineage keys datasets by it), and says whether the file on
disk still has that md5. A tracked file that is missing from the workspace is a user's mistake
with a known fix (``dvc pull`` or ``dvc repro``), and the error says so.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, Field, field_validator

from amas.registry import AgentInputError, Finding, Severity

TableFormat = Literal["csv", "parquet"]

SUFFIXES: dict[str, tuple[TableFormat, str]] = {
    ".csv": ("csv", ","),
    ".csv.gz": ("csv", ","),
    ".tsv": ("csv", "\t"),
    ".tsv.gz": ("csv", "\t"),
    ".parquet": ("parquet", ""),
    ".pq": ("parquet", ""),
}
"""Extension -> (format, default delimiter); ``format="auto"`` picks by it."""

_DELIMITERS = {",": ",", ";": ";", "|": "|", "tab": "\t"}

# Strings pyarrow leaves as text because they are not plain ISO 8601 (mixed offsets, day-first).
_ISO_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_DOTTED = re.compile(r"^\d{1,2}\.\d{1,2}\.\d{4}$")
_SLASHED = re.compile(r"^(\d{1,2})/(\d{1,2})/\d{4}$")
_DATE_PROBE = 200


class DatasetInput(BaseModel):
    """The dataset fields both tabular agents take."""

    path: str = Field(min_length=1, description="CSV (.csv, .tsv, .csv.gz) or Parquet (.parquet, .pq) file; "
                                                "relative paths resolve against the working directory. "
                                                "May be a DVC-tracked file.")
    format: Literal["auto", "csv", "parquet"] = Field("auto", description="File format; auto picks it from "
                                                                          "the extension.")
    delimiter: Literal["auto", ",", ";", "|", "tab"] = Field("auto", description="CSV field separator; auto "
                                                                                  "uses tab for .tsv, otherwise "
                                                                                  "guesses from the header line.")
    columns: list[str] = Field(default_factory=list, description="Only these columns (empty: all columns).")

    @field_validator("path")
    @classmethod
    def _strip_path(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("path: give a CSV or Parquet file path")
        return value

    @field_validator("columns")
    @classmethod
    def _distinct_columns(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in value:
            if name in seen:
                raise ValueError(f"columns: {name!r} is listed twice")
            seen.add(name)
        return value


class DvcTracking(BaseModel):
    """Where DVC records a dataset and with which md5."""

    md5: str = Field(description="The md5 DVC recorded (a directory output's ends in '.dir').")
    tracked_path: str = Field(description="Absolute path of the DVC output: the file, or the directory holding it.")
    source: str = Field(description="The .dvc file or dvc.lock that records it.")
    stage: str | None = Field(None, description="The dvc.lock stage whose output it is; None for a .dvc file.")
    hash_name: str | None = Field(None, description="'md5' for DVC 3 records (md5 of the bytes); None for DVC 2 "
                                                    "records, which hashed text files with CRLF read as LF.")
    matches_workspace: bool | None = Field(
        None, description="Whether the file on disk has the recorded md5; None when it cannot be told "
                          "(directory outputs, DVC 2 text hashing, file missing).")


class DatasetRef(BaseModel):
    """The dataset an agent read: what lineage and later agents need to name it."""

    path: str = Field(description="Absolute path of the file read.")
    format: TableFormat
    size_bytes: int
    version: str | None = Field(None, description="The DVC md5 when DVC tracks the file, else None.")
    dvc: DvcTracking | None = None


@dataclass
class Table:
    """A loaded dataset: the frame, what it is, and problems that did not stop the read."""

    frame: pd.DataFrame
    ref: DatasetRef
    notes: list[str] = field(default_factory=list)


def resolve_path(path: str) -> Path:
    """Absolute path without following symlinks: DVC's symlink/hardlink caches must keep their workspace name."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def detect_format(path: Path, fmt: str, *, field_name: str = "path") -> tuple[TableFormat, str]:
    """The table format and default delimiter of ``path`` (``fmt`` overrides the extension)."""
    name = path.name.lower()
    by_suffix = next((SUFFIXES[s] for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)
    if fmt == "csv":
        return "csv", by_suffix[1] if by_suffix and by_suffix[0] == "csv" else ","
    if fmt == "parquet":
        return "parquet", ""
    if by_suffix is None:
        suffix = "".join(path.suffixes[-2:]) or "(none)"
        raise AgentInputError(f"{field_name}: unsupported extension {suffix!r} of {path}; allowed: "
                              f"{', '.join(SUFFIXES)} (or set format to csv or parquet)")
    return by_suffix


def load_table(path: str, fmt: str = "auto", *, delimiter: str = "auto", columns: list[str] | None = None,
               field_name: str = "path") -> Table:
    """Read a CSV or Parquet dataset; raise ``AgentInputError`` naming ``field_name`` on a user mistake.

    Text columns that hold dates pyarrow did not parse (mixed UTC offsets, ``31.12.2024``, ``12/31/2024``)
    become datetime columns when every value parses.
    """
    target = resolve_path(path)
    tracking, notes = find_dvc_tracking(target)
    if not target.exists():
        if tracking is not None:
            raise AgentInputError(f"{field_name}: {target} is not in the workspace but DVC tracks it "
                                  f"(md5 {tracking.md5} in {tracking.source}); {_dvc_fix(tracking)}")
        raise AgentInputError(f"{field_name}: {target} does not exist")
    if target.is_dir():
        raise AgentInputError(f"{field_name}: {target} is a directory; give a CSV or Parquet file")
    table_format, default_delimiter = detect_format(target, fmt, field_name=field_name)
    wanted = list(columns or [])
    try:
        if table_format == "csv":
            sep = _DELIMITERS.get(delimiter) or default_delimiter
            if delimiter == "auto" and default_delimiter == ",":
                sep = _sniff_delimiter(target)
            arrow = _read_csv(target, sep, wanted)
        else:
            arrow = _read_parquet(target, wanted)
    except AgentInputError:
        raise
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AgentInputError(f"{field_name}: cannot read {target} as {table_format.upper()}: {reason}") from None
    frame = _to_pandas(arrow)
    _parse_text_dates(frame)
    if tracking is not None:
        tracking.matches_workspace = _matches_workspace(target, tracking)
    ref = DatasetRef(path=str(target), format=table_format, size_bytes=target.stat().st_size,
                     version=tracking.md5 if tracking else None, dvc=tracking)
    return Table(frame=frame, ref=ref, notes=notes)


def dataset_findings(table: Table) -> list[Finding]:
    """Findings about the dataset itself (DVC drift, unreadable DVC metadata), shared by both agents."""
    findings: list[Finding] = []
    dvc = table.ref.dvc
    if dvc is not None and dvc.matches_workspace is False:
        findings.append(Finding(
            severity=Severity.medium, title="Dataset differs from its DVC-recorded version",
            detail=f"{table.ref.path} no longer has md5 {dvc.md5} recorded in {dvc.source}, so results describe "
                   f"uncommitted data; run `dvc status`, then `dvc commit` (keep the change) or `dvc checkout` "
                   f"(discard it).",
            location=table.ref.path))
    for note in table.notes:
        findings.append(Finding(severity=Severity.low, title="DVC metadata could not be read", detail=note,
                                location=table.ref.path))
    return findings


def file_md5(path: Path, *, dos2unix: bool = False) -> str:
    """The md5 DVC 3 records for a file; ``dos2unix`` gives DVC 2's for a text file (CRLF read as LF)."""
    digest = hashlib.md5(usedforsecurity=False)
    carry = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if dos2unix:
                chunk = carry + chunk
                # A CR at the end of a chunk may start a CRLF that the next chunk finishes.
                carry = b"\r" if chunk.endswith(b"\r") else b""
                chunk = (chunk[:-1] if carry else chunk).replace(b"\r\n", b"\n")
            digest.update(chunk)
    digest.update(carry)
    return digest.hexdigest()


def find_dvc_tracking(path: Path) -> tuple[DvcTracking | None, list[str]]:
    """The DVC record for ``path`` (absolute), looking from its directory up to the DVC repository root.

    At each level, a ``<entry>.dvc`` beside the entry on the way to ``path`` (the file itself, or a
    tracked parent directory) and the ``dvc.lock`` stages' ``outs`` are checked; the closest record wins.
    Returns the record (or None) and notes about DVC files that could not be parsed.
    """
    notes: list[str] = []
    entry = path
    directory = path.parent
    while True:
        found = _from_dvc_file(directory, entry, path, notes) or _from_dvc_lock(directory, path, notes)
        if found is not None:
            return found, notes
        if (directory / ".dvc").is_dir() or directory.parent == directory:
            return None, notes
        entry, directory = directory, directory.parent


def _dvc_fix(tracking: DvcTracking) -> str:
    if tracking.stage:
        return (f"run `dvc pull {tracking.stage}` to fetch it from the remote or `dvc repro {tracking.stage}` "
                f"to rebuild it")
    return f"run `dvc pull {tracking.source}` to fetch it from the remote"


def _load_yaml(path: Path, notes: list[str]) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        notes.append(f"{path}: {str(exc).splitlines()[0]}")
        return None


def _out_md5(out: Any) -> str | None:
    if isinstance(out, dict) and isinstance(out.get("md5"), str) and out.get("path"):
        return out["md5"]
    return None


def _covers(out_path: Path, target: Path) -> bool:
    return target == out_path or out_path in target.parents


def _from_dvc_file(directory: Path, entry: Path, target: Path, notes: list[str]) -> DvcTracking | None:
    dvc_file = directory / f"{entry.name}.dvc"
    if not dvc_file.is_file():
        return None
    data = _load_yaml(dvc_file, notes)
    outs = data.get("outs") if isinstance(data, dict) else None
    for out in outs if isinstance(outs, list) else []:
        md5 = _out_md5(out)
        if md5 is None:
            continue
        out_path = Path(os.path.normpath(directory / str(out["path"])))
        if _covers(out_path, target):
            return DvcTracking(md5=md5, tracked_path=str(out_path), source=str(dvc_file),
                               hash_name=_hash_name(out))
    return None


def _from_dvc_lock(directory: Path, target: Path, notes: list[str]) -> DvcTracking | None:
    lock = directory / "dvc.lock"
    if not lock.is_file():
        return None
    data = _load_yaml(lock, notes)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return None
    wdirs = _stage_wdirs(directory, notes)
    for stage, body in stages.items():
        outs = body.get("outs") if isinstance(body, dict) else None
        base = directory / wdirs.get(str(stage), ".")
        for out in outs if isinstance(outs, list) else []:
            md5 = _out_md5(out)
            if md5 is None:
                continue
            out_path = Path(os.path.normpath(base / str(out["path"])))
            if _covers(out_path, target):
                return DvcTracking(md5=md5, tracked_path=str(out_path), source=str(lock), stage=str(stage),
                                   hash_name=_hash_name(out))
    return None


def _hash_name(out: dict[str, Any]) -> str | None:
    name = out.get("hash")
    return name if isinstance(name, str) else None


def _stage_wdirs(directory: Path, notes: list[str]) -> dict[str, str]:
    dvc_yaml = directory / "dvc.yaml"
    if not dvc_yaml.is_file():
        return {}
    data = _load_yaml(dvc_yaml, notes)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return {}
    return {str(name): str(body["wdir"]) for name, body in stages.items()
            if isinstance(body, dict) and isinstance(body.get("wdir"), str)}


def _matches_workspace(target: Path, tracking: DvcTracking) -> bool | None:
    if tracking.md5.endswith(".dir") or Path(tracking.tracked_path) != target:
        return None
    if file_md5(target) == tracking.md5:
        return True
    if tracking.hash_name is None:
        # DVC 2 hashed text files as if every CRLF were LF.
        return file_md5(target, dos2unix=True) == tracking.md5
    return False


def _sniff_delimiter(path: Path) -> str:
    opener = _open_text(path)
    with opener as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: (counts[sep], sep == ","))
    return best if counts[best] else ","


def _open_text(path: Path) -> Any:
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def _header(path: Path, sep: str) -> list[str]:
    with _open_text(path) as handle:
        return next(csv.reader(handle, delimiter=sep), [])


def _check_columns(wanted: list[str], available: list[str]) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        shown = ", ".join(repr(c) for c in available[:30]) + (" ..." if len(available) > 30 else "")
        raise AgentInputError(f"columns: no column {missing[0]!r} in the dataset; columns are: {shown or '(none)'}")


def _read_csv(path: Path, sep: str, wanted: list[str]) -> pa.Table:
    if wanted:
        _check_columns(wanted, _header(path, sep))
    return pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(use_threads=True, block_size=8 << 20),
        parse_options=pa_csv.ParseOptions(delimiter=sep),
        # Empty strings and "NA"/"null" in text columns are missing values, as pandas reads them.
        convert_options=pa_csv.ConvertOptions(include_columns=wanted or None, strings_can_be_null=True),
    )


def _read_parquet(path: Path, wanted: list[str]) -> pa.Table:
    if wanted:
        _check_columns(wanted, pq.read_schema(path).names)
    return pq.read_table(path, columns=wanted or None)


def _to_pandas(arrow: pa.Table) -> pd.DataFrame:
    names = arrow.column_names
    if len(set(names)) != len(names):
        seen: dict[str, int] = {}
        unique = []
        for name in names:
            count = seen.get(name, 0)
            unique.append(name if count == 0 else f"{name}.{count}")
            seen[name] = count + 1
        arrow = arrow.rename_columns(unique)
    frame = arrow.to_pandas(date_as_object=False, split_blocks=True, self_destruct=True)
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    return frame


def _parse_text_dates(frame: pd.DataFrame) -> None:
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)):
            continue
        probe = column.dropna().head(_DATE_PROBE)
        if probe.empty or not all(isinstance(v, str) for v in probe):
            continue
        fmt = _date_format(list(probe))
        if fmt is None:
            continue
        try:
            if fmt == "ISO8601":
                parsed = pd.to_datetime(column, format="ISO8601", utc=True, errors="coerce")
            else:
                parsed = pd.to_datetime(column, format=fmt, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            continue
        if int(parsed.notna().sum()) == int(column.notna().sum()):
            frame[name] = parsed


def _date_format(values: list[str]) -> str | None:
    if all(_ISO_LIKE.match(v) for v in values):
        return "ISO8601"
    if all(_DOTTED.match(v) for v in values):
        return "%d.%m.%Y"
    parts = [_SLASHED.match(v) for v in values]
    if all(parts):
        if any(int(m.group(1)) > 12 for m in parts if m):
            return "%d/%m/%Y"
        return "%m/%d/%Y"
    return None
