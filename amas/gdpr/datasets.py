"""Erasure in the DVC datasets: new versions without the subject, pushed; old versions purged.

1. ``erasures/subjects.json`` gains the subject's digests (and any ledger digest it lacks), so the
   ``generate`` stage leaves them out (``amas.gdpr.erasure_list``).
2. Every stage ``dvc status`` calls changed runs (``amas.pipeline.runner.run_stage``) and is
   committed to ``dvc.lock`` (``amas.pipeline.dvc.commit_stage``), as the data-pipeline flow does.
   When nobody on the list is in the data (a subject only the store knew), ``generate`` would
   write the same bytes: the new list is committed to ``dvc.lock`` without re-making anything.
3. The new versions are pushed to the DVC remote on AMAS's object storage.
4. The superseded versions that held the subject are purged: exactly their md5s, read from
   ``dvc.lock`` before it was rewritten, are deleted from the DVC cache and from every place a
   copy may be kept, and only when the new ``dvc.lock`` no longer refers to them. Nothing else
   is touched; DVC's run-cache entries that point at a purged object go too (they would only
   restore it).

The places are every remote DVC's configuration names (``.dvc/config``, ``config.local``, the
user's and the system's), opened through DVC's own filesystems, and AMAS's object storage
(``dvc/`` under ``AMAS_STORAGE_URL``, where ``configure_remote`` points the ``amas`` remote). A
place reached under two names (AMAS's storage is also the ``amas`` remote) is purged and reported
once. Each object is looked for where DVC 3 keeps it (``files/md5/xx/rest``) and where DVC 2 did
(``xx/rest``). Every object entry says, per place, ``deleted``, ``absent`` or ``failed: why``
(no credentials in the reason). A place that fails does not stop the others; the objects it
still holds are kept in ``.dvc/tmp/amas-purge-pending.json`` (``pending_purges``) and handed to
``remember``, and the next erasure of this workspace tries them again.

Every step checks the workspace's current state, so running it again after a failure finishes
the job: the list already holds the digests, up-to-date stages are skipped, objects already
gone are reported as absent.

``erasures/subjects.json`` and ``dvc.lock`` are git-tracked: commit them after an erasure, or the
next checkout brings the old lock (and, on ``dvc pull``, a failed fetch of purged objects) back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amas.gdpr.erasure_list import ErasureList, check_key, read_erasure_list, write_erasure_list

if TYPE_CHECKING:
    from dvc.repo import Repo

    from amas.config import Settings
    from amas.lineage import ParentRun
    from amas.storage import Storage

STORAGE_REMOTE = "dvc"
"""The DVC remote's folder in AMAS's storage (``AMAS_STORAGE_URL/dvc``, see ``amas.pipeline.dvc``)."""
REMOTE_PREFIX = f"{STORAGE_REMOTE}/files/md5"
"""Where DVC 3 keeps file objects under the remote; DVC 2 kept them straight under it."""
STORAGE_PLACE = "AMAS storage"
"""The name of AMAS's storage in purge reports when no DVC remote points at it."""
PENDING_PURGES = Path(".dvc") / "tmp" / "amas-purge-pending.json"
"""md5 -> dataset path of superseded objects some place still holds (git-ignored, like the cache)."""
KEPT = "kept: the current dvc.lock uses it"


@dataclass
class DatasetOutcome:
    list_changed: bool
    digests: int
    ran: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    """Per dataset that held the subject: path, old md5, new md5."""
    pushed: int | None = None
    purged: list[dict[str, Any]] = field(default_factory=list)
    """Per object: path, md5, cache, remote (the summary) and remotes (place -> what happened)."""
    remotes: list[dict[str, Any]] = field(default_factory=list)
    """The places purged: name, where, and the other names it is configured under."""
    unfinished: dict[str, str] = field(default_factory=dict)
    """md5 -> path of objects some place could not delete; the next run tries again."""
    run_cache_entries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"erasure_list_changed": self.list_changed, "listed_digests": self.digests, "stages_ran": self.ran,
                "versions": self.versions, "pushed": self.pushed, "purged": self.purged,
                "remotes": self.remotes, "purge_unfinished": self.unfinished,
                "run_cache_entries_removed": self.run_cache_entries}


@dataclass
class Purge:
    """What ``purge_objects`` did: per object, the places it looked in, what is still to delete."""

    objects: list[dict[str, Any]]
    remotes: list[dict[str, Any]]
    unfinished: dict[str, str]
    run_cache_entries: int


def locked_md5s(root: Path) -> dict[str, str]:
    from amas.pipeline.dvc import locked_outputs

    return {out["path"]: out["md5"] for out in locked_outputs(root) if out.get("md5")}


def superseded(root: Path, contained: Iterable[str]) -> dict[str, str]:
    """md5 -> dataset path of the current versions (dvc.lock and workspace) that hold the subject."""
    from amas.pipeline.files import md5_file

    locked = locked_md5s(root)
    found: dict[str, str] = {}
    for path in contained:
        if path in locked:
            found[locked[path]] = path
        if (root / path).exists():
            found.setdefault(md5_file(root / path), path)
    return found


def update_erasure_list(root: Path, digests: Iterable[str], key_id: str) -> tuple[ErasureList, bool]:
    current = read_erasure_list(root)
    check_key(current, key_id)
    updated = ErasureList(key_id, current.digests | frozenset(digests))
    return updated, write_erasure_list(root, updated)


def rerun_changed_stages(root: Path, settings: Settings, *, parent: ParentRun | None = None) -> list[dict[str, Any]]:
    """Run and commit every stage DVC calls changed, in pipeline order (the data-pipeline flow's loop)."""
    from amas.lineage import LineageEmitter
    from amas.pipeline import dvc
    from amas.pipeline.runner import check_params, run_stage
    from amas.pipeline.stages import STAGES

    check_params(root)
    ran = []
    emitter = LineageEmitter.from_settings(settings)
    try:
        with dvc.pipeline_lock(root):
            for name in STAGES:
                reasons = dvc.stage_changes(root, name)
                if not reasons:
                    continue
                outcome = run_stage(name, root, emitter=emitter, parent=parent)
                dvc.commit_stage(root, name)
                ran.append({"stage": name, "summary": outcome.summary})
    finally:
        emitter.close()
    return ran


def purge_objects(root: Path, pending: dict[str, str], storage: Storage | None) -> Purge:
    """Delete the objects of ``pending`` (md5 -> path) from the cache and every remote, unless still locked.

    Records what a place could not delete in ``pending_purges(root)`` (and forgets what is done).
    Holds the pipeline lock: a pipeline run would write the cache being purged.
    """
    from amas.pipeline import dvc

    with dvc.pipeline_lock(root):
        return _purge(root, pending, storage)


def _purge(root: Path, pending: dict[str, str], storage: Storage | None) -> Purge:
    from amas.pipeline import dvc

    still_used = set(locked_md5s(root).values())
    with dvc.repo(root) as handle:
        cache_paths = {md5: _cache_paths(handle, md5) for md5 in pending}
        places = _places(handle, storage)
        results: list[dict[str, Any]] = []
        purged: set[str] = set()
        unfinished: dict[str, str] = {}
        for md5, path in sorted(pending.items(), key=lambda item: (item[1], item[0])):
            if md5 in still_used:
                results.append({"path": path, "md5": md5, "cache": KEPT, "remote": KEPT, "remotes": {}})
                continue
            remotes = {place.name: place.purge(md5) for place in places}
            failed = sorted(name for name, status in remotes.items() if status.startswith("failed"))
            if failed:
                unfinished[md5] = path
            results.append({"path": path, "md5": md5, "cache": _unlink_all(cache_paths[md5]),
                            "remote": _summary(remotes, failed), "remotes": remotes})
            purged.add(md5)
    left = {md5: path for md5, path in pending_purges(root).items() if md5 not in pending}
    _save_pending_purges(root, left | unfinished)
    return Purge(objects=results, remotes=[place.describe() for place in places], unfinished=unfinished,
                 run_cache_entries=_drop_run_cache(root, purged))


def pending_purges(root: Path) -> dict[str, str]:
    """md5 -> dataset path of superseded objects an earlier purge could not delete everywhere."""
    try:
        document = json.loads((root / PENDING_PURGES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none, or unreadable: the request rows still list what their erasure meant to purge
    objects = document.get("objects") if isinstance(document, dict) else None
    return {str(k): str(v) for k, v in objects.items()} if isinstance(objects, dict) else {}


def _save_pending_purges(root: Path, objects: dict[str, str]) -> None:
    from amas.fsutil import atomic_write

    target = root / PENDING_PURGES
    if not objects:
        target.unlink(missing_ok=True)
        return
    data = json.dumps({"objects": dict(sorted(objects.items()))}, indent=2).encode("utf-8") + b"\n"
    atomic_write(target, lambda sink: sink.write(data))


def _summary(remotes: dict[str, str], failed: list[str]) -> str:
    if failed:
        return "failed: " + ", ".join(failed)
    if not remotes:
        return "no remote"
    return "deleted" if "deleted" in remotes.values() else "absent"


def _cache_paths(handle: Repo, md5: str) -> list[Path]:
    """Where the workspace's cache may hold ``md5``: DVC 3's ``files/md5/`` and DVC 2's layout."""
    paths = [Path(handle.cache.local.oid_to_path(md5))]
    legacy = getattr(handle.cache, "legacy", None)
    if legacy is not None:
        paths.append(Path(legacy.oid_to_path(md5)))
    return paths


def _unlink_all(paths: list[Path]) -> str:
    return "deleted" if "deleted" in [_unlink(path) for path in paths] else "absent"


def _unlink(path: Path) -> str:
    try:
        path.chmod(0o600)  # DVC makes cache files read-only
        path.unlink()
    except FileNotFoundError:
        return "absent"
    return "deleted"


@dataclass
class _Place:
    """One place a superseded object may be kept: a DVC remote, or AMAS's storage.

    ``locations(md5)`` are the object's candidate paths there; ``exists``/``delete`` act on one.
    After the first failure the place is taken as unreachable and its other objects are not
    tried (a dead endpoint costs its retries once, not once per object).
    """

    name: str
    where: str
    identity: tuple[str, ...]
    locations: Callable[[str], list[str]] = field(repr=False)
    exists: Callable[[str], bool] = field(repr=False)
    delete: Callable[[str], None] = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    error: str | None = None
    aliases: list[str] = field(default_factory=list)

    def purge(self, md5: str) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        deleted = False
        try:
            for location in self.locations(md5):
                if self.exists(location):
                    try:
                        self.delete(location)
                    except FileNotFoundError:
                        continue  # gone in between: what we wanted
                    deleted = True
        except Exception as exc:  # any backend's error: report it, keep the object pending
            self.error = _reason(exc, self.secrets)
            return f"failed: {self.error}"
        return "deleted" if deleted else "absent"

    def describe(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "where": self.where}
        if self.aliases:
            entry["same_as"] = self.aliases
        return entry


_SECRET_OPTION = re.compile(r"secret|password|token|passphrase|key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*):[^/\s@]*@")


def _reason(exc: BaseException, secrets: Iterable[str]) -> str:
    """One line naming the error, without any configured credential or URL password."""
    text = " ".join(str(exc).split()) or "no message"
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return f"{type(exc).__name__}: {text}"[:300]


def _places(handle: Repo, storage: Storage | None) -> list[_Place]:
    """Every DVC remote configured for the workspace, then AMAS's storage, each place once."""
    places: list[_Place] = []
    for name in handle.config.get("remote", {}):
        place = _remote_place(handle, str(name))
        _add_place(places, place)
    if storage is not None:
        _add_place(places, _storage_place(storage))
    return places


def _add_place(places: list[_Place], place: _Place) -> None:
    for known in places:
        if known.identity == place.identity:
            known.aliases.append(place.name)
            return
    places.append(place)


def _remote_place(handle: Repo, name: str) -> _Place:
    from amas.config import hide_url_password

    config = dict(handle.config["remote"].get(name) or {})
    url = str(config.get("url", ""))
    secrets = tuple(str(v) for k, v in config.items() if _SECRET_OPTION.search(str(k)) and v and k != "url")
    where = hide_url_password(url)
    try:
        remote = handle.cloud.get_remote(name)
        fs = remote.fs
        if getattr(fs, "version_aware", False) or remote.worktree:
            raise ValueError("a cloud-versioned remote keeps files by path, not by md5; delete the old object "
                             "versions with the provider's tools")
    except Exception as exc:
        return _Place(name=name, where=where, identity=("unopened", name), locations=lambda _md5: [],
                      exists=lambda _path: False, delete=lambda _path: None, secrets=secrets,
                      error=_reason(exc, secrets))
    base = remote.path

    def locations(md5: str) -> list[str]:
        return [fs.join(base, "files", "md5", md5[:2], md5[2:]), fs.join(base, md5[:2], md5[2:])]

    return _Place(name=name, where=where, identity=_identity(fs.protocol, config, base), locations=locations,
                  exists=fs.exists, delete=fs.rm, secrets=secrets)


def _identity(protocol: Any, config: dict[str, Any], path: str) -> tuple[str, ...]:
    """What makes two configurations the same place: the scheme, the endpoint or host, the path."""
    scheme = protocol[0] if isinstance(protocol, tuple | list) else str(protocol)
    if scheme in ("local", "file"):
        return ("local", str(Path(path).resolve()))
    endpoint = config.get("endpointurl") or config.get("host") or ""
    if scheme in ("s3", "s3a"):
        scheme, endpoint = "s3", config.get("endpointurl") or "aws"
    port = str(config.get("port") or "")
    return (scheme, str(endpoint).rstrip("/").lower(), port, re.sub("/+", "/", path).strip("/"))


def _storage_place(storage: Storage) -> _Place:
    """AMAS's storage under ``dvc/``: the same place as the ``amas`` remote ``configure_remote`` writes."""
    from amas.storage import LocalStorage, S3Storage

    prefix = STORAGE_REMOTE
    if isinstance(storage, LocalStorage):
        identity: tuple[str, ...] = ("local", str((storage.root / prefix).resolve()))
    elif isinstance(storage, S3Storage):
        # ``endpoint`` is the URL given (password hidden), or "AWS S3 (region)" without one.
        endpoint = "aws" if storage.endpoint.startswith("AWS S3") else storage.endpoint.rstrip("/").lower()
        path = f"{storage.bucket}/{storage.prefix}{prefix}"
        identity = ("s3", endpoint, "", re.sub("/+", "/", path).strip("/"))
    else:
        identity = ("storage", str(getattr(storage, "url", id(storage))))

    def locations(md5: str) -> list[str]:
        return [f"{REMOTE_PREFIX}/{md5[:2]}/{md5[2:]}", f"{prefix}/{md5[:2]}/{md5[2:]}"]

    where = f"{str(getattr(storage, 'url', '')).rstrip('/')}/{prefix}"
    return _Place(name=STORAGE_PLACE, where=where, identity=identity, locations=locations, exists=storage.exists,
                  delete=storage.delete)


def _drop_run_cache(root: Path, md5s: set[str]) -> int:
    """Remove DVC run-cache entries whose outputs include a purged object (they could only restore it)."""
    if not md5s:
        return 0
    runs = root / ".dvc" / "cache" / "runs"
    removed = 0
    for entry in runs.glob("*/*/*") if runs.is_dir() else ():
        try:
            text = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if any(md5 in text for md5 in md5s):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def erase_datasets(root: Path, *, digests: Iterable[str], key_id: str, contained: Iterable[str],
                   settings: Settings, storage: Storage | None, push: bool = True, purge: bool = True,
                   pending: dict[str, str] | None = None,
                   remember: Callable[[dict[str, str]], None] | None = None,
                   parent: ParentRun | None = None, key: bytes | None = None) -> DatasetOutcome:
    """Rewrite the datasets without the listed subjects, push, purge the superseded versions.

    ``pending`` are md5s an earlier, interrupted run meant to purge (those a place could not delete
    last time, ``pending_purges``, are added); ``remember(pending)`` is called with the full set
    before anything is rewritten, so a crash after the rewrite still knows what to purge (the
    caller keeps it with the request), and again after the purge with what is still pending
    (objects some place failed to delete). With the erasure ``key``, a list change that concerns
    nobody in the data is recorded without re-making the datasets.
    """
    from amas.pipeline import dvc

    root = root.resolve()
    to_purge = dict(pending or {})
    to_purge.update(pending_purges(root))
    to_purge.update(superseded(root, contained))
    if remember is not None:
        remember(to_purge)
    before = locked_md5s(root)
    erasures, changed = update_erasure_list(root, digests, key_id)
    outcome = DatasetOutcome(list_changed=changed, digests=len(erasures.digests))
    if not to_purge and key is not None and listed_people_present(root, key) == 0:
        # Nobody listed is in the data (a store-only subject): the generate stage would write the
        # same bytes, so record the new list in dvc.lock instead of re-making every dataset.
        with dvc.pipeline_lock(root):
            if dvc.stage_changes(root, "generate"):
                dvc.commit_stage(root, "generate")
                outcome.ran = [{"stage": "generate", "summary": "erasure list recorded; no listed person is in the "
                                                                "data, so the outputs are unchanged (not re-run)"}]
    outcome.ran += rerun_changed_stages(root, settings, parent=parent)
    after = locked_md5s(root)
    outcome.versions = [{"path": path, "old_md5": before.get(path), "new_md5": after.get(path)}
                        for path in sorted(set(to_purge.values()))]
    if push:
        outcome.pushed = dvc.push(root, dvc.configure_remote(root, settings))
    if purge and to_purge:
        done = purge_objects(root, to_purge, storage)
        outcome.purged, outcome.remotes = done.objects, done.remotes
        outcome.unfinished, outcome.run_cache_entries = done.unfinished, done.run_cache_entries
        if remember is not None:
            remember(done.unfinished)
    return outcome


def listed_people_present(root: Path, key: bytes) -> int:
    """People in ``data/raw/people.parquet`` whose id or email digest is on the erasure list (should be 0)."""
    import pyarrow.parquet as pq

    from amas.db.ledger import subject_digest

    erasures = read_erasure_list(root)
    people = root / "data" / "raw" / "people.parquet"
    if not erasures or not people.exists():
        return 0
    table = pq.read_table(people, columns=["subject_id", "email"])
    return sum(1 for sid, email in zip(table["subject_id"].to_pylist(), table["email"].to_pylist(), strict=True)
               if (sid and subject_digest(sid, key) in erasures.digests)
               or (email and subject_digest(email, key) in erasures.digests))
