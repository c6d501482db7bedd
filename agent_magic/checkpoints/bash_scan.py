"""Bash changes: stat scans of the workspace before and after a command, diffed.

Before a command, a stat manifest is taken (and written beside the records, for
crash recovery); after it, files whose size, mtime or mode changed are hashed
and backed up, and the difference recorded: files created, changed and
deleted, folders made or removed. The last scan is kept (``bash-manifest``) so
a resumed session does not hash the workspace again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.home import new_uuid
from ..store.jsonl import atomic_write_bytes, want_fsync
from .backups import hash_bytes, read_bytes

if TYPE_CHECKING:
    from .log import CheckpointLog


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    mode: int
    digest: str | None = None  # None: not backed up (too big / unreadable)


def _scan(root: Path, ignore: frozenset[str], exclude: tuple[Path, ...]) -> tuple[dict[str, os.stat_result], set[str]]:
    files: dict[str, os.stat_result] = {}
    dirs: set[str] = set()
    excl = {str(p) for p in exclude}
    stack = [(str(root), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name in ignore:
                    continue
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.path in excl:
                            continue
                        dirs.add(rel)
                        stack.append((e.path, rel))
                    elif e.is_file(follow_symlinks=False):
                        files[rel] = e.stat(follow_symlinks=False)
                except OSError:
                    continue
    return files, dirs


@dataclass
class _BashToken:
    id: str
    files: dict[str, _Entry]
    dirs: set[str]


def _manifest_bytes(files: dict[str, _Entry], dirs: set[str], taken_ns: int, ignore: frozenset[str]) -> bytes:
    m = {rel: [e.size, e.mtime_ns, e.mode, e.digest] for rel, e in files.items()}
    doc = {"files": m, "dirs": sorted(dirs), "taken_ns": taken_ns, "ignore": sorted(ignore)}
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


@dataclass
class _Manifest:
    files: dict[str, _Entry]
    dirs: set[str]
    taken_ns: int
    ignore: frozenset[str] | None  # the names the scan skipped (None: not recorded)


def _manifest_from(data: bytes) -> _Manifest:
    m = json.loads(zlib.decompress(data))
    files = {rel: _Entry(v[0], v[1], v[2], v[3]) for rel, v in m.get("files", {}).items()}
    ignore = m.get("ignore")
    return _Manifest(files, set(m.get("dirs", [])), int(m.get("taken_ns") or 0), None if ignore is None else frozenset(ignore))




class BashScan:
    """The Bash part of one session's checkpoint log."""

    def __init__(self, log: CheckpointLog) -> None:
        self.log = log
        self._manifest: dict[str, _Entry] | None = None
        self._manifest_ns = 0  # when it was taken (time.time_ns())

    def forget(self) -> None:
        """Scan afresh next time (a rewind changed files behind the manifest)."""
        self._manifest = None

    def _refresh_manifest(self, ignore: frozenset[str] | None = None) -> tuple[dict[str, _Entry], set[str]]:
        """Stat the workspace; hash (and back up) only files whose size, mtime or mode changed."""
        if self._manifest is None:
            self._manifest, self._manifest_ns = self._load_manifest()
        taken = time.time_ns()
        # A file changed in the same clock tick as the last scan can keep its size and
        # mtime ("racily clean", as git says): files that recent are hashed again.
        trusted_before = self._manifest_ns - 1_000_000_000
        files, dirs = _scan(self.log.cwd, self.log.ignore if ignore is None else ignore, self.log.exclude)
        old = self._manifest
        new: dict[str, _Entry] = {}
        for rel, st in files.items():
            prev = old.get(rel)
            if (
                prev is not None
                and prev.size == st.st_size
                and prev.mtime_ns == st.st_mtime_ns
                and prev.mtime_ns < trusted_before
            ):
                new[rel] = prev if prev.mode == st.st_mode else _Entry(prev.size, prev.mtime_ns, st.st_mode, prev.digest)
                continue
            digest = None
            if st.st_size <= self.log.max_file_bytes:
                data = read_bytes(os.path.join(self.log._cwd_str, rel))
                if data is not None:
                    digest = hash_bytes(data)
                    if not self.log._rebuildable(rel, digest):
                        self.log.blobs.put_with_hash(digest, data)
            new[rel] = _Entry(st.st_size, st.st_mtime_ns, st.st_mode, digest)
        self._manifest, self._manifest_ns = new, taken
        return new, dirs


    def _manifest_path(self) -> Path | None:
        return None if self.log.records.path is None else self.log.records.path.with_name("bash-manifest")

    def _load_manifest(self) -> tuple[dict[str, _Entry], int]:
        """The last Bash scan of this session, so a new process need not hash the workspace again."""
        path = self._manifest_path()
        try:
            if path is None:
                return {}, 0
            m = _manifest_from(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError, zlib.error):
            return {}, 0
        # Only entries whose backup is still in the store can be trusted.
        return {rel: e for rel, e in m.files.items() if e.digest is None or self.log.blobs.has(e.digest)}, m.taken_ns

    def _save_manifest(self, dirs: set[str]) -> None:
        path = self._manifest_path()
        if path is None or self._manifest is None:
            return
        with contextlib.suppress(OSError):
            atomic_write_bytes(path, _manifest_bytes(self._manifest, dirs, self._manifest_ns, self.log.ignore))

    def _sidecar(self, token_id: str) -> Path | None:
        if self.log.records.path is None:
            return None
        return self.log.records.path.with_name(f"bash-{token_id}.manifest")

    def before_command(self) -> object:
        self.log._need_turn()
        files, dirs = self._refresh_manifest()
        token = _BashToken(new_uuid(), dict(files), set(dirs))
        # The manifest is only needed if this process dies before after_command: it is
        # written next to the records (not to the shared blob store) and removed after.
        data = _manifest_bytes(files, dirs, self._manifest_ns, self.log.ignore)
        side = self._sidecar(token.id)
        if side is not None:
            atomic_write_bytes(side, data, fsync=want_fsync())
        self.log._append({"r": "bash_start", "id": token.id})
        return token

    def after_command(self, token: object) -> list[str]:
        if not isinstance(token, _BashToken):
            return []
        changes, dirs_created, dirs_deleted, untracked = self._diff_since(token.files, token.dirs)
        self.log._append(
            {"r": "bash", "id": token.id, "changes": changes, "dirs_created": dirs_created, "dirs_deleted": dirs_deleted, "untracked": untracked}
        )
        side = self._sidecar(token.id)
        if side is not None:
            with contextlib.suppress(OSError):
                side.unlink()
        self._save_manifest(set(dirs_created) | (token.dirs - set(dirs_deleted)))
        paths = [c["path"] for c in changes]
        self.log._turn_files.extend(paths)
        return paths

    def _diff_since(
        self, pre: dict[str, _Entry], pre_dirs: set[str], ignore: frozenset[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
        post, post_dirs = self._refresh_manifest(ignore)
        changes: list[dict[str, Any]] = []
        untracked: list[str] = []

        def after_fields(e: _Entry) -> dict[str, Any]:
            if e.digest is not None:
                return {"after": e.digest}
            return {"after": None, "after_sig": [e.size, e.mtime_ns]}

        for rel, e in post.items():
            p = pre.get(rel)
            if p is None:
                changes.append({"path": rel, "before": None, **after_fields(e)})
                if e.digest is None:
                    untracked.append(rel)
            elif p.size != e.size or p.mtime_ns != e.mtime_ns or p.mode != e.mode:
                if p.digest is not None and p.digest == e.digest and p.mode == e.mode:
                    continue
                changes.append({"path": rel, "before": p.digest, **after_fields(e), "mode": p.mode, "before_missing": p.digest is None})
                if p.digest is None or e.digest is None:
                    untracked.append(rel)
        for rel, p in pre.items():
            if rel not in post:
                changes.append({"path": rel, "before": p.digest, "after": None, "mode": p.mode, "before_missing": p.digest is None})
                if p.digest is None:
                    untracked.append(rel)
        created = sorted(post_dirs - pre_dirs)
        deleted = sorted(pre_dirs - post_dirs)
        return changes, created, deleted, untracked

    def recover(self) -> int:
        """Finish a Bash record cut off by a crash: diff its manifest against the disk now.

        Returns the number of records completed.
        """
        recs = self.log.read_records()
        done = {r.get("id") for r in recs if r.get("r") == "bash"}
        fixed = 0
        for r in list(recs):
            if r.get("r") != "bash_start" or r.get("id") in done:
                continue
            side = self._sidecar(str(r.get("id")))
            if side is None:
                continue
            try:
                m = _manifest_from(side.read_bytes())
            except (OSError, ValueError, KeyError, TypeError, zlib.error):
                continue
            saved = self.log.current
            self.log.current = r.get("checkpoint")
            try:
                # Scan as the session did (a rewind from the command line does not know its options).
                changes, created, deleted, untracked = self._diff_since(m.files, m.dirs, m.ignore)
                self.log._append(
                    {"r": "bash", "id": r.get("id"), "changes": changes, "dirs_created": created, "dirs_deleted": deleted,
                     "untracked": untracked, "recovered": True}
                )
            finally:
                self.log.current = saved
            if side is not None:
                with contextlib.suppress(OSError):
                    side.unlink()
            fixed += 1
        return fixed

