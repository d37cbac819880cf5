"""DVC through its Python API: which stages changed, record a stage, push and pull data.

The flow runs each stage's engine function itself and then ``commit``s the stage, which
hashes the outputs into the cache and rewrites the stage's entry in ``dvc.lock`` exactly as
``dvc repro`` would. The remote is the configured object storage: ``AMAS_STORAGE_URL/dvc``
(a directory in the ``local`` profile, ``s3://bucket/prefix/dvc`` in ``production``), written
to ``.dvc/config.local`` (git-ignored, so credentials never reach git).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from amas.errors import AmasError, ConfigError

if TYPE_CHECKING:
    from dvc.repo import Repo

    from amas.config import Settings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

REMOTE = "amas"
"""The remote AMAS configures from settings; the committed default remote ``local`` is the
``local`` profile's directory, for ``dvc push`` by hand."""


class DvcError(AmasError):
    """A DVC operation failed; the message is DVC's own, on one line."""


@contextlib.contextmanager
def repo(root: Path) -> Iterator[Repo]:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # DVC resolves targets and some paths against the working directory, so operate from
        # the repo root. chdir is process-wide: pipeline runs are serialised (pipeline_lock), and
        # a process worker runs each flow run in its own process.
        with contextlib.chdir(root), Repo(str(root)) as handle:
            yield handle
    except DvcException as exc:
        message = " ".join(_ANSI.sub("", str(exc)).split())
        raise DvcError(f"dvc: {message}") from None


@contextlib.contextmanager
def pipeline_lock(root: Path) -> Iterator[None]:
    """One pipeline run per workspace at a time; a second one is refused at once, not queued."""
    lock_dir = root / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / "amas-pipeline.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AmasError(f"another pipeline run is using {root}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _target(root: Path, name: str) -> str:
    # DVC resolves a bare stage name against the working directory's dvc.yaml, not the repo's.
    return f"{root / 'dvc.yaml'}:{name}"


def stage_changes(root: Path, name: str) -> list[str]:
    """Why ``name`` must run (``changed deps: amas/pipeline/stages.py``...); empty when up to date."""
    with repo(root) as handle:
        status = handle.status(targets=[_target(root, name)])
    reasons: list[str] = []
    for entry in next(iter(status.values()), []):
        if isinstance(entry, str):
            reasons.append(entry)
            continue
        for kind, changes in entry.items():
            if isinstance(changes, dict):
                reasons.extend(f"{kind}: {path} {what}".strip() for path, what in changes.items())
            else:
                reasons.append(f"{kind}: {changes}")
    return reasons


def commit_stage(root: Path, name: str) -> None:
    """Record ``name``'s current deps and outs in ``dvc.lock`` and its outs in the cache."""
    with repo(root) as handle:
        handle.commit(_target(root, name), force=True)


def remote_url(settings: Settings) -> str:
    url = settings.storage_url
    if urlsplit(url).scheme == "s3":
        return url.rstrip("/") + "/dvc"
    local = Path(url[len("file://"):] if url.startswith("file://") else url)
    return str(local.resolve() / "dvc")


def configure_remote(root: Path, settings: Settings) -> str:
    """Point the ``amas`` remote at the configured object storage (in ``.dvc/config.local``)."""
    url = remote_url(settings)
    options: dict[str, Any] = {"url": url}
    if url.startswith("s3://"):
        storage = settings.storage
        if storage.s3_endpoint_url:
            options["endpointurl"] = storage.s3_endpoint_url
        options["region"] = storage.s3_region
        if storage.s3_access_key_id:
            options["access_key_id"] = storage.s3_access_key_id
        if storage.s3_secret_access_key is not None:
            options["secret_access_key"] = storage.s3_secret_access_key.get_secret_value()
    else:
        Path(url).mkdir(parents=True, exist_ok=True)
    with repo(root) as handle, handle.config.edit("local") as config:
        config["remote"][REMOTE] = options
    local = root / ".dvc" / "config.local"
    if local.exists():
        local.chmod(0o600)  # it may hold the S3 secret
    return REMOTE


def push(root: Path, remote: str = REMOTE) -> int:
    """Upload every output in ``dvc.lock`` the remote lacks; the number of files sent."""
    with repo(root) as handle:
        return int(handle.push(remote=remote) or 0)


def pull(root: Path, remote: str = REMOTE, targets: list[str] | None = None) -> None:
    """Fetch and check out the outputs in ``dvc.lock`` (or only ``targets``, repo-relative)."""
    with repo(root) as handle:
        handle.pull(targets=targets, remote=remote, force=True)


def locked_outputs(root: Path) -> list[dict[str, Any]]:
    """Every stage output recorded in ``dvc.lock``: stage, path, md5, size, in pipeline order."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return []
    try:
        document = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{lock}: not valid YAML; restore it from git") from None
    rows = []
    for stage, entry in (document.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            rows.append({"stage": stage, "path": out["path"], "md5": out.get("md5"), "size": out.get("size")})
    return rows
