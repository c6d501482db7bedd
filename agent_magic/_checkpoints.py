"""Checkpoints and rewind: every change the agent makes, undoable, files and notebook cells.

A checkpoint is the uuid of the prompt that starts a turn. Before any tool
changes anything, a record is appended to ``checkpoints.jsonl`` (write-ahead:
the backup blob is stored and the record written before the file is touched):

``turn``
    a turn began (checkpoint id, turn number, prompt preview).
``file``
    Write/Edit: ``before`` and ``after`` content hashes (``None`` = no file),
    the directories the write creates, the file mode.
``cells``
    NotebookEdit, per cell: the op, the cell's JSON before/after (as blobs),
    its position; on the first edit of a notebook in a session, ``base``, the
    whole notebook (the fallback for notebooks whose cell ids change).
``bash_start``/``bash``
    Bash: a stat manifest before; after the command, the files it created,
    changed and deleted and the folders it made or removed.
``rewind``
    a rewind happened; what it overwrote is kept as blobs, so nothing is lost.

Rewinding to checkpoint C undoes the records of C's turn and every later
turn, newest first, on an in-memory copy of each path. A file is only touched
if what is on disk is what the agent left there; anything else is a conflict,
reported and left alone unless ``force``. Notebook cells are checked and
restored one by one, so a person's edits to other cells survive.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import stat as stat_mod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import AmbiguousIdError, CheckpointError, CheckpointNotFoundError
from ._store import (
    BlobMissingError,
    BlobStore,
    JsonlFile,
    iso_now,
    new_uuid,
    parse_lines,
    read_raw_lines,
)
from .tools.base import CellEdit

MIN_PREFIX = 4


# ---------------------------------------------------------------------------
# Public result types
# ---------------------------------------------------------------------------


@dataclass
class CheckpointInfo:
    """One checkpoint of a session (one turn)."""

    checkpoint_id: str
    turn: int
    timestamp: str
    prompt: str
    files: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)


@dataclass
class CellChange:
    """What a rewind does (or would do) to one notebook cell."""

    cell_id: str
    action: str  # "restore" | "remove" | "reinsert"
    diff: str = ""


@dataclass
class FileChange:
    """What a rewind does (or would do) to one path."""

    path: str
    action: str  # "restore" | "delete" | "create" | "cells" | "whole-notebook"
    diff: str = ""
    cells: list[CellChange] = field(default_factory=list)
    note: str | None = None


@dataclass
class Conflict:
    """A path or cell changed by someone else after the agent; left alone unless ``force``."""

    path: str
    reason: str
    cell_id: str | None = None


@dataclass
class RewindResult:
    """The outcome of :func:`agent_magic.rewind_files` (or its dry run)."""

    checkpoint_id: str
    dry_run: bool
    changes: list[FileChange] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    dirs_removed: list[str] = field(default_factory=list)
    dirs_created: list[str] = field(default_factory=list)
    unrestorable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    new_session_id: str | None = None
    #: When the checkpoint's turn began (ISO 8601, UTC).
    checkpoint_timestamp: str | None = None

    @property
    def restored_cells(self) -> list[tuple[str, str]]:
        """``(notebook path, cell id)`` of every cell put back (for stale-kernel hints)."""
        return [(c.path, cc.cell_id) for c in self.changes for cc in c.cells if cc.action in ("restore", "reinsert")]

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.unrestorable

    def summary(self) -> str:
        verb = "Would change" if self.dry_run else "Changed"
        parts = [f"{verb} {len(self.changes)} path(s)"]
        ncells = sum(len(c.cells) for c in self.changes)
        if ncells:
            parts.append(f"{ncells} cell(s)")
        if self.dirs_removed:
            parts.append(f"removed {len(self.dirs_removed)} folder(s)")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflict(s) left alone")
        if self.unrestorable:
            parts.append(f"{len(self.unrestorable)} not restorable")
        return ", ".join(parts) + "."


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _cell_bytes(cell: dict[str, Any]) -> bytes:
    return json.dumps(cell, sort_keys=True, ensure_ascii=False).encode("utf-8", "backslashreplace")


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _cell_key(cell: dict[str, Any] | None) -> tuple[str, str] | None:
    """What counts as a person's edit of a cell: its type and source (not outputs)."""
    if cell is None:
        return None
    return (str(cell.get("cell_type")), _source(cell))


def _cell_ids(nb: dict[str, Any]) -> list[str]:
    out = []
    for i, c in enumerate(nb.get("cells", [])):
        cid = c.get("id")
        out.append(str(cid) if cid else f"cell-{i}")
    return out


def _find_cell(nb: dict[str, Any], cell_id: str) -> int | None:
    for i, cid in enumerate(_cell_ids(nb)):
        if cid == cell_id:
            return i
    return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _text_diff(a: bytes | None, b: bytes | None, name: str) -> str:
    def lines(x: bytes | None) -> list[str] | None:
        if x is None:
            return []
        if b"\x00" in x[:8192]:
            return None
        try:
            return x.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            return None

    la, lb = lines(a), lines(b)
    if la is None or lb is None:
        return f"Binary file {name} differs\n"
    diff = "".join(difflib.unified_diff(la, lb, f"a/{name} (now)", f"b/{name} (checkpoint)", n=2))
    if len(diff) > 20_000:
        diff = diff[:20_000] + "\n[... diff cut ...]\n"
    return diff


def _write_atomic(path: Path, data: bytes, mode: int | None) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".rewind")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(tmp, stat_mod.S_IMODE(mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _dump_notebook(nb: dict[str, Any]) -> bytes:
    """Serialise like nbformat.write (sorted keys, indent 1, trailing newline)."""
    import nbformat

    nbf: Any = nbformat  # nbformat is only partly typed
    text: str = nbf.writes(nbf.from_dict(nb), version=nbf.NO_CONVERT)
    return (text + "\n").encode("utf-8")


def _load_notebook(data: bytes) -> dict[str, Any]:
    return json.loads(data.decode("utf-8"))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# Workspace scanning for Bash
# ---------------------------------------------------------------------------


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
        except (PermissionError, FileNotFoundError, NotADirectoryError):
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


# ---------------------------------------------------------------------------
# The checkpoint log of one session
# ---------------------------------------------------------------------------


class CheckpointLog:
    """Records backups for one session and rewinds them.

    Parameters
    ----------
    session_id
        The session.
    cwd
        The session's working directory (paths inside it are stored relative).
    records
        The session's ``checkpoints.jsonl`` (or an in-memory file).
    blobs
        The content-addressed backup store.
    ignore
        Names skipped when scanning for Bash changes.
    max_file_bytes
        Larger files are not backed up when Bash changes them.
    exclude
        Folders never scanned (the session store itself).
    """

    def __init__(
        self,
        *,
        session_id: str,
        cwd: Path,
        records: JsonlFile,
        blobs: BlobStore,
        ignore: Iterable[str] = (),
        max_file_bytes: int = 50 * 1024 * 1024,
        exclude: Iterable[Path] = (),
    ) -> None:
        self.session_id = session_id
        self.cwd = cwd
        self.records = records
        self.blobs = blobs
        self.ignore = frozenset(ignore)
        self.max_file_bytes = max_file_bytes
        self.exclude = tuple(exclude)
        self.current: str | None = None
        self._turn_files: list[str] = []
        self._turn_cells: list[str] = []
        self._based: set[str] = set()
        self._manifest: dict[str, _Entry] | None = None
        self._loaded_records: list[dict[str, Any]] | None = None

    # -- paths ------------------------------------------------------------
    def rel(self, path: Path) -> str:
        """Stored form of a path: relative (posix) inside cwd, else absolute."""
        try:
            return path.relative_to(self.cwd).as_posix()
        except ValueError:
            return str(path)

    def abs(self, stored: str, cwd: Path | None = None) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else (cwd or self.cwd) / p

    # -- records ----------------------------------------------------------
    def _append(self, rec: dict[str, Any]) -> None:
        rec.setdefault("checkpoint", self.current)
        rec.setdefault("ts", iso_now())
        self.records.append(rec)
        if self._loaded_records is not None:
            self._loaded_records.append(rec)

    def read_records(self) -> list[dict[str, Any]]:
        if self._loaded_records is None:
            import warnings

            from ._store import TranscriptWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TranscriptWarning)
                if self.records.path is None:
                    self._loaded_records = parse_lines(self.records.raw_lines(), None)
                else:
                    self._loaded_records = parse_lines(read_raw_lines(self.records.path), self.records.path)
        return self._loaded_records

    # -- turn boundaries ----------------------------------------------------
    def begin_turn(self, checkpoint_id: str, turn: int, prompt: str) -> None:
        self.current = checkpoint_id
        self._turn_files = []
        self._turn_cells = []
        preview = " ".join(prompt.split())[:160]
        self._append({"r": "turn", "checkpoint": checkpoint_id, "turn": turn, "prompt": preview})

    def end_turn(self) -> dict[str, Any]:
        files = list(dict.fromkeys(self._turn_files))
        cells = list(dict.fromkeys(self._turn_cells))
        self.current = None
        return {"files": files, "cells": cells}

    def _need_turn(self) -> str:
        if self.current is None:
            raise CheckpointError("A change was made outside a turn; it cannot be checkpointed.")
        return self.current

    # -- ChangeRecorder: Write / Edit ------------------------------------------
    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        self._need_turn()
        old = _read_bytes(path)
        before = self.blobs.put(old) if old is not None else None
        mode = None
        with contextlib.suppress(OSError):
            mode = path.stat().st_mode
        created_dirs = []
        parent = path.parent
        while not parent.exists():
            created_dirs.append(self.rel(parent))
            if parent.parent == parent:
                break
            parent = parent.parent
        after = BlobStore.hash(new_content) if new_content is not None else None
        self._append(
            {"r": "file", "path": self.rel(path), "before": before, "after": after, "tool": tool, "mode": mode, "dirs": created_dirs}
        )
        self._turn_files.append(self.rel(path))

    # -- ChangeRecorder: NotebookEdit ------------------------------------------
    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        self._need_turn()
        rel = self.rel(path)
        rec: dict[str, Any] = {
            "r": "cells",
            "path": rel,
            "op": edit.op,
            "cell_id": edit.cell_id,
            "before": self.blobs.put(_cell_bytes(edit.before_cell)) if edit.before_cell is not None else None,
            "after": self.blobs.put(_cell_bytes(edit.after_cell)) if edit.after_cell is not None else None,
            "index": edit.index,
            "prev": edit.prev_cell_id,
            "nb_after": BlobStore.hash(new_notebook_bytes),
        }
        if rel not in self._based and not self._has_base(rel):
            rec["base"] = self.blobs.put(notebook_bytes)
        self._based.add(rel)
        self._append(rec)
        self._turn_files.append(rel)
        self._turn_cells.append(f"{rel}#{edit.cell_id}")

    def _has_base(self, rel: str) -> bool:
        return any(r.get("r") == "cells" and r.get("path") == rel and r.get("base") for r in self.read_records())

    # -- ChangeRecorder: Bash --------------------------------------------------------
    def _refresh_manifest(self) -> tuple[dict[str, _Entry], set[str]]:
        files, dirs = _scan(self.cwd, self.ignore, self.exclude)
        old = self._manifest or {}
        new: dict[str, _Entry] = {}
        for rel, st in files.items():
            prev = old.get(rel)
            if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                new[rel] = prev
                continue
            digest = None
            if st.st_size <= self.max_file_bytes:
                data = _read_bytes(self.cwd / rel)
                if data is not None:
                    digest = self.blobs.put(data)
            new[rel] = _Entry(st.st_size, st.st_mtime_ns, st.st_mode, digest)
        self._manifest = new
        return new, dirs

    def before_command(self) -> object:
        self._need_turn()
        files, dirs = self._refresh_manifest()
        token = _BashToken(new_uuid(), dict(files), set(dirs))
        manifest = {rel: [e.size, e.mtime_ns, e.mode, e.digest] for rel, e in files.items()}
        mblob = self.blobs.put(json.dumps({"files": manifest, "dirs": sorted(dirs)}, sort_keys=True).encode())
        self._append({"r": "bash_start", "id": token.id, "manifest": mblob})
        return token

    def after_command(self, token: object) -> list[str]:
        if not isinstance(token, _BashToken):
            return []
        changes, dirs_created, dirs_deleted, untracked = self._diff_since(token.files, token.dirs)
        self._append(
            {"r": "bash", "id": token.id, "changes": changes, "dirs_created": dirs_created, "dirs_deleted": dirs_deleted, "untracked": untracked}
        )
        paths = [c["path"] for c in changes]
        self._turn_files.extend(paths)
        return paths

    def _diff_since(
        self, pre: dict[str, _Entry], pre_dirs: set[str]
    ) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
        post, post_dirs = self._refresh_manifest()
        changes: list[dict[str, Any]] = []
        untracked: list[str] = []
        for rel, e in post.items():
            p = pre.get(rel)
            if p is None:
                changes.append({"path": rel, "before": None, "after": e.digest, "mode": e.mode})
                if e.digest is None:
                    untracked.append(rel)
            elif p.size != e.size or p.mtime_ns != e.mtime_ns:
                if p.digest is not None and p.digest == e.digest:
                    continue
                changes.append({"path": rel, "before": p.digest, "after": e.digest, "mode": p.mode, "before_missing": p.digest is None})
                if p.digest is None:
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
        recs = self.read_records()
        done = {r.get("id") for r in recs if r.get("r") == "bash"}
        fixed = 0
        for r in recs:
            if r.get("r") != "bash_start" or r.get("id") in done:
                continue
            try:
                m = json.loads(self.blobs.get(r["manifest"]))
            except (BlobMissingError, ValueError, KeyError):
                continue
            pre = {rel: _Entry(v[0], v[1], v[2], v[3]) for rel, v in m.get("files", {}).items()}
            saved = self.current
            self.current = r.get("checkpoint")
            changes, created, deleted, untracked = self._diff_since(pre, set(m.get("dirs", [])))
            self._append(
                {"r": "bash", "id": r.get("id"), "changes": changes, "dirs_created": created, "dirs_deleted": deleted,
                 "untracked": untracked, "recovered": True}
            )
            self.current = saved
            fixed += 1
        return fixed

    # -- listing ----------------------------------------------------------------
    def checkpoints(self) -> list[CheckpointInfo]:
        out: dict[str, CheckpointInfo] = {}
        for r in self.read_records():
            cp = r.get("checkpoint")
            if not cp:
                continue
            if r.get("r") == "turn":
                out[cp] = CheckpointInfo(cp, int(r.get("turn") or len(out) + 1), str(r.get("ts") or ""), str(r.get("prompt") or ""))
                continue
            info = out.get(cp)
            if info is None:
                continue
            kind = r.get("r")
            if kind == "file":
                info.files.append(r["path"])
            elif kind == "cells":
                info.files.append(r["path"])
                info.cells.append(f"{r['path']}#{r['cell_id']}")
            elif kind == "bash":
                info.files.extend(c["path"] for c in r.get("changes", []))
                info.files.extend(r.get("dirs_created", []))
        for info in out.values():
            info.files = list(dict.fromkeys(info.files))
            info.cells = list(dict.fromkeys(info.cells))
        return list(out.values())

    def resolve(self, checkpoint_id: str) -> str:
        """Full checkpoint id for an id or unique prefix (4+ characters)."""
        ids = [c.checkpoint_id for c in self.checkpoints()]
        if checkpoint_id in ids:
            return checkpoint_id
        if len(checkpoint_id) >= MIN_PREFIX:
            matches = [i for i in ids if i.startswith(checkpoint_id)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousIdError(checkpoint_id, matches, "checkpoint")
        if not ids:
            raise CheckpointNotFoundError(
                f"Session {self.session_id[:8]} has no checkpoints (file checkpointing was off, or no turn ran yet)."
            )
        raise CheckpointNotFoundError(
            f"No checkpoint {checkpoint_id!r} in session {self.session_id[:8]}. "
            f"List them with `agent-magic checkpoints {self.session_id[:8]}`."
        )

    # -- rewind ---------------------------------------------------------------------
    def rewind(self, checkpoint_id: str, *, dry_run: bool = False, force: bool = False, bridge: Any = None) -> RewindResult:
        """Put every path the agent changed since ``checkpoint_id`` back as it was just before it.

        Parameters
        ----------
        checkpoint_id
            Id (or unique prefix) of the prompt that started the turn to go back before.
        dry_run
            Compute and return what would change, touching nothing.
        force
            Overwrite paths and cells changed by someone else since the agent.
        bridge
            A NotebookBridge: notebooks open in a front end are rewound there, live.
        """
        cp = self.resolve(checkpoint_id)
        records = self.read_records()
        order = [r["checkpoint"] for r in records if r.get("r") == "turn"]
        k = order.index(cp)
        later = set(order[k:])
        changes = [r for r in records if r.get("checkpoint") in later and r.get("r") in ("file", "cells", "bash")]
        result = RewindResult(cp, dry_run)
        result.checkpoint_timestamp = next((r.get("ts") for r in records if r.get("r") == "turn" and r.get("checkpoint") == cp), None)

        # Flatten into per-path ordered steps.
        steps: dict[str, list[dict[str, Any]]] = {}
        dirs_created: list[str] = []
        dirs_deleted: list[str] = []
        for r in changes:
            kind = r["r"]
            if kind == "file":
                steps.setdefault(r["path"], []).append({"kind": "file", "before": r["before"], "after": r["after"], "mode": r.get("mode"), "prewrite": True})
                dirs_created.extend(r.get("dirs", []))
            elif kind == "cells":
                steps.setdefault(r["path"], []).append({"kind": "cells", **r})
            elif kind == "bash":
                for c in r.get("changes", []):
                    steps.setdefault(c["path"], []).append(
                        {"kind": "file", "before": c.get("before"), "after": c.get("after"), "mode": c.get("mode"),
                         "prewrite": False, "before_missing": c.get("before_missing", False)}
                    )
                dirs_created.extend(r.get("dirs_created", []))
                dirs_deleted.extend(r.get("dirs_deleted", []))

        plans: list[tuple[Path, bytes | None, int | None, FileChange, Any]] = []
        for rel, path_steps in steps.items():
            path = self.abs(rel)
            plan = self._plan_path(rel, path, path_steps, records, force, result, bridge)
            if plan is not None:
                plans.append(plan)

        # Folders: recreate deleted ones, remove created ones (if empty afterwards).
        for d in dict.fromkeys(dirs_deleted):
            if not self.abs(d).is_dir():
                result.dirs_created.append(d)
        created_dirs = sorted(set(dirs_created) - set(dirs_deleted), key=lambda s: s.count("/"), reverse=True)

        if dry_run:
            result.dirs_removed = [d for d in created_dirs if self._would_be_empty(d, plans)]
            return result

        # Keep what the rewind overwrites, so nothing is ever lost.
        saved = []
        for path, *_ in plans:
            cur = _read_bytes(path)
            if cur is not None:
                saved.append({"path": self.rel(path), "blob": self.blobs.put(cur)})
        for d in result.dirs_created:
            self.abs(d).mkdir(parents=True, exist_ok=True)
        for path, target, mode, _change, live in plans:
            if live is not None:
                continue
            if target is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                _write_atomic(path, target, mode)
        for *_, live in plans:
            if live is not None:
                live()
        for d in created_dirs:
            p = self.abs(d)
            try:
                p.rmdir()
                result.dirs_removed.append(d)
            except OSError:
                pass
        self._append({"r": "rewind", "checkpoint": None, "to": cp, "saved": saved, "force": force})
        self._manifest = None
        return result

    def _would_be_empty(self, d: str, plans: list[tuple[Path, bytes | None, int | None, FileChange, Any]]) -> bool:
        p = self.abs(d)
        if not p.is_dir():
            return False
        deleting = {path for path, target, *_ in plans if target is None}
        try:
            for root, _dirs, files in os.walk(p):
                for f in files:
                    if Path(root) / f not in deleting:
                        return False
        except OSError:
            return False
        return True

    def _plan_path(
        self,
        rel: str,
        path: Path,
        path_steps: list[dict[str, Any]],
        records: list[dict[str, Any]],
        force: bool,
        result: RewindResult,
        bridge: Any,
    ) -> tuple[Path, bytes | None, int | None, FileChange, Any] | None:
        live_nb = None
        if bridge is not None and rel.endswith(".ipynb"):
            with contextlib.suppress(Exception):
                if bridge.is_open(path):
                    live_nb = bridge.read(path)
        current = _dump_notebook(live_nb) if live_nb is not None else _read_bytes(path)
        if path.is_dir():
            result.conflicts.append(Conflict(rel, "is now a folder"))
            return None
        state: bytes | None = current
        nb: dict[str, Any] | None = None  # parsed state, while cell ops are being undone
        on_disk = True  # state still equals what is on disk (checks apply)
        checked_cells: set[str] = set()
        skip_cells: set[str] = set()
        cell_changes: list[CellChange] = []
        mode: int | None = None
        whole_note: str | None = None
        cell_conflicts: list[Conflict] = []
        all_cells = all(s["kind"] == "cells" for s in path_steps)

        for step in reversed(path_steps):
            if step["kind"] == "file":
                if nb is not None:
                    state = _dump_notebook(nb)
                    nb = None
                if on_disk and not force:
                    cur = BlobStore.hash(state) if state is not None else None
                    allowed = {step["after"]}
                    if step.get("prewrite"):
                        allowed.add(step["before"])
                    if cur not in allowed:
                        result.conflicts.append(Conflict(rel, "changed by someone else after the agent's last change"))
                        return None
                on_disk = False
                if step.get("before_missing"):
                    result.unrestorable.append(rel)
                    return None
                if step["before"] is None:
                    state = None
                else:
                    try:
                        state = self.blobs.get(step["before"])
                    except BlobMissingError:
                        result.unrestorable.append(rel)
                        return None
                if step.get("mode") is not None:
                    mode = step["mode"]
                continue
            # A cell op.
            if nb is None:
                if state is None:
                    result.conflicts.append(Conflict(rel, "the notebook no longer exists"))
                    return None
                try:
                    nb = _load_notebook(state)
                except (ValueError, UnicodeDecodeError):
                    nb = None
                if nb is None or not isinstance(nb.get("cells"), list) or (on_disk and not force and not self._reconcilable(nb, path_steps)):
                    fallback = self._whole_notebook(rel, records, result.checkpoint_id) if all_cells else None
                    if fallback is None:
                        result.conflicts.append(Conflict(rel, "the notebook's cells can no longer be matched to the agent's edits"))
                        return None
                    target, agent_last = fallback
                    if not force and on_disk and not _same_sources(state, agent_last):
                        result.conflicts.append(
                            Conflict(rel, "its cell ids changed and its content differs from the agent's last version; use force to restore the whole notebook")
                        )
                        return None
                    whole_note = "cell ids changed since the agent's edits: restored the whole notebook from the checkpoint"
                    result.notes.append(f"{rel}: {whole_note}")
                    state = target
                    nb = None
                    on_disk = False
                    break
            cid = str(step["cell_id"])
            if cid in skip_cells:
                continue
            before = self._cell_blob(step.get("before"))
            after = self._cell_blob(step.get("after"))
            idx = _find_cell(nb, cid)
            check = on_disk and not force and cid not in checked_cells
            checked_cells.add(cid)
            op = step["op"]
            if op in ("replace", "insert"):
                if idx is None:
                    if check:
                        cell_conflicts.append(Conflict(rel, "the cell was deleted by someone else", cid))
                        skip_cells.add(cid)
                    continue
                if check and _cell_key(nb["cells"][idx]) != _cell_key(after):
                    cell_conflicts.append(Conflict(rel, "the cell was edited by someone else after the agent", cid))
                    skip_cells.add(cid)
                    continue
                if op == "replace" and before is not None:
                    old_src = _source(nb["cells"][idx])
                    nb["cells"][idx] = copy.deepcopy(before)
                    cell_changes.append(CellChange(cid, "restore", _src_diff(old_src, _source(before), cid)))
                else:
                    old_src = _source(nb["cells"][idx])
                    del nb["cells"][idx]
                    cell_changes.append(CellChange(cid, "remove", _src_diff(old_src, "", cid)))
            elif op == "delete":
                if idx is not None:
                    if check:
                        cell_conflicts.append(Conflict(rel, "a cell with this id exists again", cid))
                        skip_cells.add(cid)
                    continue
                if before is None:
                    continue
                prev = step.get("prev")
                pos = None
                if prev:
                    pi = _find_cell(nb, str(prev))
                    if pi is not None:
                        pos = pi + 1
                if pos is None:
                    pos = 0 if prev is None else min(int(step.get("index") or 0), len(nb["cells"]))
                nb["cells"].insert(pos, copy.deepcopy(before))
                cell_changes.append(CellChange(cid, "reinsert", _src_diff("", _source(before), cid)))
        if nb is not None:
            state = _dump_notebook(nb)
        result.conflicts.extend(cell_conflicts)
        if state == current and whole_note is None:
            return None
        if not cell_changes and whole_note is None and all_cells:
            return None
        if current is None:
            action = "create"
        elif state is None:
            action = "delete"
        elif whole_note:
            action = "whole-notebook"
        elif cell_changes and all_cells:
            action = "cells"
        else:
            action = "restore"
        diff = "" if cell_changes and all_cells else _text_diff(current, state, rel)
        change = FileChange(rel, action, diff, cell_changes if all_cells else [], whole_note)
        result.changes.append(change)
        live = None
        if live_nb is not None and state is not None:
            target_nb = _load_notebook(state)

            def live() -> None:
                if not bridge.replace_all(path, target_nb):
                    _write_atomic(path, state, mode)

        if mode is None and current is not None:
            with contextlib.suppress(OSError):
                mode = path.stat().st_mode
        return path, state, mode, change, live

    def _cell_blob(self, digest: str | None) -> dict[str, Any] | None:
        if not digest:
            return None
        return json.loads(self.blobs.get(digest))  # type: ignore[no-any-return]

    def _reconcilable(self, nb: dict[str, Any], path_steps: list[dict[str, Any]]) -> bool:
        """False when none of the cells the agent touched can be found (ids regenerated)."""
        ids = set(_cell_ids(nb))
        touched = {str(s["cell_id"]) for s in path_steps if s["kind"] == "cells"}
        present_ops = [s for s in path_steps if s["kind"] == "cells" and s["op"] in ("replace", "insert")]
        if not present_ops:
            return True
        return bool(ids & touched)

    def _whole_notebook(self, rel: str, records: list[dict[str, Any]], cp: str) -> tuple[bytes, bytes] | None:
        """(notebook just before ``cp``, notebook as the agent last left it), replayed from the base copy."""
        import nbformat  # noqa: F401  (used by _dump_notebook)

        ops = [r for r in records if r.get("r") == "cells" and r.get("path") == rel]
        if not ops or not ops[0].get("base"):
            return None
        if any(r.get("r") in ("file",) and r.get("path") == rel for r in records):
            return None
        try:
            nb = _load_notebook(self.blobs.get(ops[0]["base"]))
        except (BlobMissingError, ValueError):
            return None
        target: bytes | None = None
        for r in ops:
            if r.get("checkpoint") == cp and target is None:
                target = _dump_notebook(nb)
            _forward(nb, r, self._cell_blob)
        if target is None:
            # cp is after the last cell op: nothing to undo for this notebook.
            target = _dump_notebook(nb)
        return target, _dump_notebook(nb)


def _forward(nb: dict[str, Any], r: dict[str, Any], load: Any) -> None:
    """Re-apply one recorded cell op to ``nb`` (for the whole-notebook fallback)."""
    cid = str(r["cell_id"])
    idx = _find_cell(nb, cid)
    after = load(r.get("after"))
    if r["op"] == "replace" and idx is not None and after is not None:
        nb["cells"][idx] = after
    elif r["op"] == "delete" and idx is not None:
        del nb["cells"][idx]
    elif r["op"] == "insert" and after is not None:
        pos = int(r.get("index") or 0)
        nb["cells"].insert(min(pos, len(nb["cells"])), after)


def _same_sources(a: bytes | None, b: bytes | None) -> bool:
    try:
        na = _load_notebook(a or b"")
        nb = _load_notebook(b or b"")
    except (ValueError, UnicodeDecodeError):
        return False
    return [_cell_key(c) for c in na.get("cells", [])] == [_cell_key(c) for c in nb.get("cells", [])]


def _src_diff(old: str, new: str, cid: str) -> str:
    d = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"cell {cid} (now)", f"cell {cid} (checkpoint)", n=2
        )
    )
    return d[:10_000]
