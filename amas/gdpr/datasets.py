"""Erasure in the DVC datasets: new versions without the subject, pushed; old versions purged.

1. ``erasures/subjects.json`` gains the subject's digests (and any ledger digest it lacks), so the
   ``generate`` stage leaves them out (``amas.gdpr.erasure_list``).
2. Every stage ``dvc status`` calls changed runs (``amas.pipeline.runner.run_stage``) and is
   committed to ``dvc.lock`` (``amas.pipeline.dvc.commit_stage``), as the data-pipeline flow does.
   When nobody on the list is in the data (a subject only the store knew), ``generate`` would
   write the same bytes: the new list is committed to ``dvc.lock`` without re-making anything.
3. The new versions are pushed to the DVC remote on AMAS's object storage.
4. The superseded versions that held the subject are purged: exactly their md5s, read from
   ``dvc.lock`` before it was rewritten, are deleted from the DVC cache and the remote, and only
   when the new ``dvc.lock`` no longer refers to them. Nothing else is touched; DVC's run-cache
   entries that point at a purged object go too (they would only restore it).

Every step checks the workspace's current state, so running it again after a failure finishes
the job: the list already holds the digests, up-to-date stages are skipped, objects already
gone are reported as absent.

``erasures/subjects.json`` and ``dvc.lock`` are git-tracked: commit them after an erasure, or the
next checkout brings the old lock (and, on ``dvc pull``, a failed fetch of purged objects) back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amas.gdpr.erasure_list import ErasureList, check_key, read_erasure_list, write_erasure_list

if TYPE_CHECKING:
    from amas.config import Settings
    from amas.lineage import ParentRun
    from amas.storage import Storage

REMOTE_PREFIX = "dvc/files/md5"
"""Where DVC 3 keeps file objects under the remote (``AMAS_STORAGE_URL/dvc``)."""


@dataclass
class DatasetOutcome:
    list_changed: bool
    digests: int
    ran: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    """Per dataset that held the subject: path, old md5, new md5."""
    pushed: int | None = None
    purged: list[dict[str, Any]] = field(default_factory=list)
    run_cache_entries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"erasure_list_changed": self.list_changed, "listed_digests": self.digests, "stages_ran": self.ran,
                "versions": self.versions, "pushed": self.pushed, "purged": self.purged,
                "run_cache_entries_removed": self.run_cache_entries}


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


def purge_objects(root: Path, pending: dict[str, str], storage: Storage | None) -> tuple[list[dict[str, Any]], int]:
    """Delete the objects of ``pending`` (md5 -> path) from the cache and remote, unless still locked."""
    from amas.pipeline import dvc

    still_used = set(locked_md5s(root).values())
    with dvc.repo(root) as handle:
        cache = handle.cache.local
        cache_paths = {md5: Path(cache.oid_to_path(md5)) for md5 in pending}
    results = []
    purged: set[str] = set()
    for md5, path in sorted(pending.items(), key=lambda item: item[1]):
        if md5 in still_used:
            results.append({"path": path, "md5": md5, "cache": "kept: the current dvc.lock uses it",
                            "remote": "kept: the current dvc.lock uses it"})
            continue
        entry = {"path": path, "md5": md5, "cache": _unlink(cache_paths[md5]), "remote": "no storage"}
        if storage is not None:
            key = f"{REMOTE_PREFIX}/{md5[:2]}/{md5[2:]}"
            entry["remote"] = "deleted" if storage.exists(key) else "absent"
            storage.delete(key)
        purged.add(md5)
        results.append(entry)
    return results, _drop_run_cache(root, purged)


def _unlink(path: Path) -> str:
    try:
        path.chmod(0o600)  # DVC makes cache files read-only
        path.unlink()
    except FileNotFoundError:
        return "absent"
    return "deleted"


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

    ``pending`` are md5s an earlier, interrupted run meant to purge; ``remember(pending)`` is
    called with the full set before anything is rewritten, so a crash after the rewrite still
    knows what to purge (the caller keeps it with the request). With the erasure ``key``, a list
    change that concerns nobody in the data is recorded without re-making the datasets.
    """
    from amas.pipeline import dvc

    root = root.resolve()
    to_purge = dict(pending or {})
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
        outcome.purged, outcome.run_cache_entries = purge_objects(root, to_purge, storage)
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
