"""Content fingerprints: keys that are the same in every process, on every machine and after a copy.

Every cache key, cell input record and resume check of taskeval is built here, from

* :func:`canonical_json`: JSON with sorted keys that refuses anything without a stable text form
  (sets, paths, functions, arbitrary objects: their ``repr`` holds memory addresses or depends on the
  process's hash seed), so a key can never silently depend on the process;
* :func:`file_digest`: the SHA-256 of a file's bytes. File names, absolute paths and modification times
  never enter a fingerprint (``tar``, ``rsync`` without ``-t``, backups and cluster file systems do not
  keep times; a run folder moved elsewhere keeps its keys). Reading every image of a large dataset
  again in each command would cost minutes, so digests are memoised in a small SQLite table
  (``$TASKEVAL_CACHE_DIR``, default ``~/.cache/taskeval/file-digests.sqlite3``) keyed by the file's
  real path, device, inode, size and modification time: the time only decides whether the stored
  digest may be reused, it is never part of a key. The memo is an optimisation: when it cannot be
  opened (read-only home, NFS locking) digests are computed every time.
* :func:`dataset_manifest`: the digest of every file of a split (images, labels) plus the card settings
  that change what is read (class lists, ignore index, palette, size and box policies), by id. Its
  :func:`digest` is the dataset's fingerprint; :func:`describe_manifest_changes` names the files that
  differ between two manifests, so a refusal to resume says which images changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _reject(obj):
    raise TypeError(f"{type(obj).__name__} value {obj!r:.80} has no process-independent text form and cannot "
                    "enter a key; convert it to str/int/float/list/dict first")


def canonical_json(obj) -> str:
    """Sorted-key, compact JSON; TypeError for values without a stable form (sets, Paths, objects)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_reject, allow_nan=True)


def digest(obj, length: int = 16) -> str:
    """Hex SHA-256 prefix of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------------------- file digests
def _memo_path() -> Path:
    root = os.environ.get("TASKEVAL_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "taskeval"


class _DigestMemo:
    """(real path, device, inode, size, mtime_ns) -> sha256 in SQLite; every failure degrades to no memo."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._where: Path | None = None
        self._broken = False

    def _connect(self) -> sqlite3.Connection | None:
        where = _memo_path() / "file-digests.sqlite3"
        if self._conn is not None and self._where == where:
            return self._conn
        if self._broken and self._where == where:
            return None
        self._where = where
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(where), timeout=10, check_same_thread=False)
            conn.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, "
                         "size INTEGER, mtime_ns INTEGER, sha256 TEXT)")
            conn.commit()
        except (OSError, sqlite3.Error) as exc:
            log.debug("file digest memo unavailable (%s): digests are computed every time", exc)
            self._broken, self._conn = True, None
            return None
        self._broken, self._conn = False, conn
        return conn

    def get(self, key: tuple) -> str | None:
        with self._lock:
            conn = self._connect()
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT dev, ino, size, mtime_ns, sha256 FROM digests WHERE path = ?",
                                   (key[0],)).fetchone()
            except sqlite3.Error:
                return None
        return row[4] if row is not None and tuple(row[:4]) == key[1:] else None

    def put_many(self, items: Iterable[tuple[tuple, str]]) -> None:
        items = list(items)
        if not items:
            return
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)",
                                 [(*k, d) for k, d in items])
                conn.commit()
            except sqlite3.Error as exc:
                log.debug("file digest memo not updated: %s", exc)


_MEMO = _DigestMemo()


def _stat_key(path: Path) -> tuple:
    real = os.path.realpath(path)
    st = os.stat(real)
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: Iterable[str | os.PathLike]) -> dict[Path, str]:
    """Full hex SHA-256 of each file's bytes (memoised; see the module docstring), in the given order."""
    out: dict[Path, str] = {}
    fresh = []
    for p in map(Path, paths):
        if p in out:
            continue
        key = _stat_key(p)
        known = _MEMO.get(key)
        if known is None:
            known = _sha256_file(p)
            fresh.append((key, known))
        out[p] = known
    _MEMO.put_many(fresh)
    return out


def file_digest(path: str | os.PathLike, length: int = 64) -> str:
    """Hex SHA-256 (prefix of ``length``) of one file's bytes."""
    return file_digests([path])[Path(path)][:length]


# ---------------------------------------------------------------------------------------- datasets
_ROLES = ("ir", "vis", "det", "seg")


def files_manifest(files: Mapping[str, Mapping[str, str | os.PathLike | None]], dataset: str, split: str,
                   settings: Mapping | None = None) -> dict:
    """``{"dataset", "split", "settings", "files": {id: {role: sha256[:16]}}}`` of ``files`` (id -> role ->
    path; None roles left out), in the given id order. JSON-able and free of paths and times."""
    paths = [p for roles in files.values() for p in roles.values() if p is not None]
    digests = file_digests(paths)
    out = {i: {role: digests[Path(p)][:16] for role, p in roles.items() if p is not None} for i, roles in files.items()}
    return {"dataset": dataset, "split": split, "settings": dict(settings or {}), "files": out}


def dataset_manifest(ds, labels: bool = True) -> dict:
    """What the numbers computed from a split depend on, file by file (:func:`files_manifest`).

    Args:
        ds: a :class:`taskeval.data.PairedDataset`.
        labels: include the label files and the card's label settings (class lists, ignore index,
            palette, box policy); False for what fusion alone reads (the two images and the size policy).
    """
    roles = _ROLES if labels else _ROLES[:2]
    files = {r.id: {role: getattr(r, role) for role in roles} for r in ds.records}
    card = ds.card
    settings = {"size_policy": ds.size_policy}
    if labels:
        settings.update({"det_classes": list(card.det_classes), "seg_classes": list(card.seg_classes),
                         "ignore_index": card.ignore_index, "palette": [list(c) for c in card.palette],
                         "box_policy": getattr(ds, "box_policy", None)})
    return files_manifest(files, card.name, ds.split, settings)


MANIFEST_PREFIX = "files:"


def manifest_fingerprint(manifest: Mapping, save_to: str | os.PathLike | None = None) -> str:
    """``files:<16 hex>``, the digest of a manifest; with ``save_to`` the manifest is also stored there as
    ``<16 hex>.json`` so that a later refusal can name the files that changed."""
    fp = digest(manifest)
    if save_to is not None:
        path = Path(save_to) / f"{fp}.json"
        if not path.is_file():
            from taskeval.rundir import atomic_write_text

            atomic_write_text(path, canonical_json(manifest) + "\n")
    return MANIFEST_PREFIX + fp


def dataset_fingerprint(ds, labels: bool = True, save_to: str | os.PathLike | None = None) -> str:
    """:func:`manifest_fingerprint` of :func:`dataset_manifest`."""
    return manifest_fingerprint(dataset_manifest(ds, labels), save_to)


def expand_manifests(record, folders: Iterable[str | os.PathLike]):
    """``record`` with every ``files:<hex>`` string replaced by its stored manifest where one of ``folders``
    holds it (others stay as they are)."""
    folders = [Path(f) for f in folders]

    def walk(v):
        if isinstance(v, str) and v.startswith(MANIFEST_PREFIX):
            for f in folders:
                path = f / f"{v[len(MANIFEST_PREFIX):]}.json"
                if path.is_file():
                    try:
                        return json.loads(path.read_text())
                    except (OSError, ValueError):
                        break
            return v
        if isinstance(v, Mapping):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(record)


def explain(old, new, manifest_folders: Iterable[str | os.PathLike] = ()) -> str:
    """What differs between two key records, one ``; ``-separated clause per difference, with the files
    that changed where both dataset manifests are stored in ``manifest_folders``."""
    folders = list(manifest_folders)
    lines = describe_changes(expand_manifests(old, folders), expand_manifests(new, folders))
    return "; ".join(lines) if lines else "no recorded difference"


def describe_manifest_changes(old: Mapping, new: Mapping, limit: int = 10) -> list[str]:
    """Human-readable differences between two :func:`dataset_manifest` results (empty when equal)."""
    out = []
    where = f"{new.get('dataset')}/{new.get('split')}"
    for key in sorted(set(old.get("settings", {})) | set(new.get("settings", {}))):
        a, b = old.get("settings", {}).get(key), new.get("settings", {}).get(key)
        if a != b:
            out.append(f"{where} setting {key}: {a!r} -> {b!r}")
    fa, fb = old.get("files", {}), new.get("files", {})
    removed = [i for i in fa if i not in fb]
    added = [i for i in fb if i not in fa]
    changed = [f"{i} ({', '.join(r for r in sorted(set(fa[i]) | set(fb[i])) if fa[i].get(r) != fb[i].get(r))})"
               for i in fa if i in fb and fa[i] != fb[i]]
    for what, items in (("changed", changed), ("no longer present", removed), ("new", added)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            out.append(f"{where}: {len(items)} pair(s) {what}: {', '.join(items[:limit])}{more}")
    if not out and list(fa) != list(fb):
        out.append(f"{where}: the same pairs in another order")
    return out


def describe_changes(old, new, path: str = "") -> list[str]:
    """Where two JSON-like records differ, as ``a.b.c: old -> new`` lines (dataset manifests by file)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if "files" in old and "files" in new and "split" in new:
            return describe_manifest_changes(old, new)
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub}: (absent) -> {_short(new[k])}")
            elif k not in new:
                out.append(f"{sub}: {_short(old[k])} -> (absent)")
            elif old[k] != new[k]:
                out.extend(describe_changes(old[k], new[k], sub))
        return out
    return [] if old == new else [f"{path or 'value'}: {_short(old)} -> {_short(new)}"]


def _short(v) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
