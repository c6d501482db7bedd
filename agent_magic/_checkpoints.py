"""Checkpoints and rewind: every change the agent makes, undoable, files and notebook cells.

A checkpoint is the uuid of the prompt that starts a turn. Before any tool
changes anything, a record is appended to ``checkpoints.jsonl`` (write-ahead:
the backup blob is stored and the record written before the file is touched).
Blobs are content-addressed and compressed (:class:`~agent_magic._store.BlobStore`),
so the same content is stored once whatever file, session or fork it came from.

``turn``
    a turn began (checkpoint id, turn number, prompt preview).
``file``
    Write/Edit: ``before`` and ``after`` content (blobs; ``None`` = no file),
    the folders the write creates, the file's mode before.
``cells``
    NotebookEdit, one cell: the op, the cell's JSON before/after (blobs), its
    position and the id of the cell before it, and hashes of the whole
    notebook before and after. When the notebook before the edit is not what
    the agent last left (first edit in the session, or someone changed it
    since), ``base`` keeps a copy of it for the whole-notebook fallback: a
    *skeleton* (the notebook without its cells, plus one blob per cell), so a
    second copy of a notebook only stores the cells that differ.
``bash_start``/``bash``
    Bash: before the command, a stat manifest is written next to the records
    (crash recovery); after it, the files it created, changed and deleted
    (hashing only files whose size, mtime or mode changed) and the folders it
    made or removed. Files over ``max_file_bytes`` are not backed up; they are
    recognised by size and mtime. A notebook as the agent's last cell edit
    left it is not copied again: it is rebuilt from the cell backups. The last
    scan is kept (``bash-manifest``) so a resumed session does not hash the
    workspace again.
``rewind``
    a rewind happened, recorded as the changes it made (what it overwrote is
    kept as blobs), so a later rewind can undo it like any other change.

Rewinding to checkpoint C undoes, newest first, every change recorded after
C's ``turn`` record, rewinds included, on an in-memory copy of each path.
Only the newest change of a path (or of a notebook cell) is checked against
the disk: a path or cell is only touched if it is what the change left there;
anything else is a conflict, reported and left alone unless ``force``.
Notebook cells are checked and restored one by one, so a person's edits to
other cells survive; when the notebook's cells can no longer be matched by id
(ids regenerated), the whole notebook is restored from the base instead, and
the result says so.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import json
import os
import re
import stat as stat_mod
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import AmbiguousIdError, CheckpointError, CheckpointNotFoundError, ToolError
from ._options import DEFAULT_CHECKPOINT_IGNORE
from ._safefs import make_dirs_nofollow, rmdir_nofollow, unlink_nofollow
from ._store import (
    BlobMissingError,
    BlobStore,
    JsonlFile,
    atomic_write_bytes,
    iso_now,
    new_uuid,
    parse_lines,
    read_raw_lines,
    want_fsync,
)
from .tools.base import CellEdit

#: The tail of an atomic write's temp file name, ``.<name>.<8 hex>.tmp`` (see _safefs).
_TEMP_TAIL = re.compile(r"[0-9a-f]{8}\.tmp")

MIN_PREFIX = 4

_CHANGE_KINDS = frozenset({"file", "cells", "bash", "rewind"})
_MISSING = "\x00missing"  # no record of a path yet (distinct from None: "no file")


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
    #: Unified diff of the cell's source (dry runs only).
    diff: str = ""


@dataclass
class FileChange:
    """What a rewind does (or would do) to one path."""

    path: str
    action: str  # "restore" | "delete" | "create" | "cells" | "whole-notebook"
    #: Unified diff, now -> checkpoint (dry runs only; notebooks changed cell by cell diff per cell).
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
        if not self.changes and not self.dirs_removed and not self.dirs_created:
            parts = ["Nothing to change" if self.dry_run else "Nothing changed"]
        else:
            parts = [f"{verb} {_plural(len(self.changes), 'path')}"]
        ncells = sum(len(c.cells) for c in self.changes)
        if ncells:
            parts.append(_plural(ncells, "cell"))
        if self.dirs_removed:
            parts.append(f"removed {_plural(len(self.dirs_removed), 'folder')}")
        if self.dirs_created:
            parts.append(f"recreated {_plural(len(self.dirs_created), 'folder')}")
        if self.conflicts:
            parts.append(f"{_plural(len(self.conflicts), 'conflict')} left alone")
        if self.unrestorable:
            parts.append(f"{len(self.unrestorable)} not restorable")
        return ", ".join(parts) + "."


def _plural(n: int, word: str) -> str:
    """``1 cell``, ``2 cells``: counts as a person writes them."""
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------
# Bytes and files
# ---------------------------------------------------------------------------


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: str | Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
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
    return _udiff(la, lb, f"a/{name} (now)", f"b/{name} (checkpoint)", 20_000)


def _udiff(a: list[str], b: list[str], fa: str, fb: str, limit: int) -> str:
    out = []
    size = 0
    for line in difflib.unified_diff(a, b, fa, fb, n=2):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
        size += len(line)
        if size > limit:
            out.append("[... diff cut ...]\n")
            break
    return "".join(out)


def _src_diff(old: str, new: str, cid: str) -> str:
    return _udiff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"cell {cid} (now)", f"cell {cid} (checkpoint)", 10_000)


def _write_atomic(path: Path, data: bytes, mode: int | None) -> None:
    """Replace ``path`` by ``data`` via a temp file, never through a folder swapped for a symlink.

    A new file without ``mode`` gets the umask's default. Raises OSError (with the
    reason) when the path cannot be written safely.
    """
    from ._safefs import atomic_write

    try:
        atomic_write(path, data, mode=stat_mod.S_IMODE(mode) if mode is not None else None, create_parents=True, fsync=False)
    except ToolError as e:
        raise OSError(errno.EPERM, str(e)) from None


# ---------------------------------------------------------------------------
# Notebooks, read and written exactly as nbformat does (without importing it:
# nbformat is slow to import and its reader is ~20x slower than json.loads)
# ---------------------------------------------------------------------------

_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _joined(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "".join(value)
    return value


def _canon_bundle(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if not _is_json_mime(key):
            value = _joined(value)
        if isinstance(value, str) and (key.startswith("text/") or key in _SPLIT_MIMES):
            value = value.splitlines(True)
        out[key] = value
    return out


def _canon_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """The cell as nbformat writes it: multi-line text split into lines, transient fields dropped.

    Mirrors nbformat.v4's ``rejoin_lines`` + ``split_lines`` + ``strip_transient``.
    """
    c = dict(cell)
    if "source" in c:
        src = _joined(c["source"])
        c["source"] = src.splitlines(True) if isinstance(src, str) else src
    att = c.get("attachments")
    if isinstance(att, dict):
        c["attachments"] = {k: _canon_bundle(v) for k, v in att.items()}
    meta = c.get("metadata")
    if isinstance(meta, dict) and "trusted" in meta:
        c["metadata"] = {k: v for k, v in meta.items() if k != "trusted"}
    if c.get("cell_type") == "code" and isinstance(c.get("outputs"), list):
        outs = []
        for o in c["outputs"]:
            if isinstance(o, dict):
                o = dict(o)
                kind = o.get("output_type", "")
                if kind in ("execute_result", "display_data"):
                    if "data" in o:
                        o["data"] = _canon_bundle(o["data"])
                elif kind and isinstance(o.get("text", ""), list):
                    o["text"] = _joined(o["text"])
                if kind == "stream" and isinstance(o.get("text"), str):
                    o["text"] = o["text"].splitlines(True)
            outs.append(o)
        c["outputs"] = outs
    return c


def _dump_nb(nb: dict[str, Any]) -> bytes:
    """Serialise a notebook byte for byte as ``nbformat.write`` (and the NotebookEdit tool) do."""
    out = {k: v for k, v in nb.items() if k != "cells"}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in ("orig_nbformat", "orig_nbformat_minor", "signature")}
    out["cells"] = [_canon_cell(c) if isinstance(c, dict) else c for c in nb.get("cells", [])]
    text = json.dumps(out, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
    return (text + "\n").encode("utf-8", "surrogateescape")


def _load_nb(data: bytes | None) -> dict[str, Any] | None:
    """A v4 notebook's JSON, or None when ``data`` is not one."""
    if data is None:
        return None
    try:
        nb = json.loads(data.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4:
        return None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return None
    return nb


def _cell_bytes(cell: dict[str, Any]) -> bytes:
    return json.dumps(_canon_cell(cell), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogateescape"
    )


def _source(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _cell_key(cell: dict[str, Any] | None) -> tuple[str, str] | None:
    """What counts as a person's edit of a cell: its type and source (not outputs: running it is no edit)."""
    if cell is None:
        return None
    return (str(cell.get("cell_type")), _source(cell))


def _cell_ids(nb: dict[str, Any]) -> list[str]:
    """The ids the NotebookEdit tool uses: the cell's id, or ``cell-<index>`` when it has none."""
    out = []
    for i, c in enumerate(nb.get("cells", [])):
        cid = c.get("id")
        out.append(cid if isinstance(cid, str) and cid else f"cell-{i}")
    return out


def _same_sources(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return False
    return [_cell_key(c) for c in a.get("cells", [])] == [_cell_key(c) for c in b.get("cells", [])]


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


# ---------------------------------------------------------------------------
# Rewind internals
# ---------------------------------------------------------------------------


@dataclass
class _Step:
    """One recorded change to one path, in the form a rewind undoes it."""

    kind: str  # "file" | "cell"
    rec: int  # index of its record in the log
    sub: int = 0  # position among the steps of that record
    before: str | None = None
    after: str | None = None
    # file steps
    mode: int | None = None
    prewrite: bool = False  # recorded before the write, which may not have happened
    before_missing: bool = False  # the content before was not backed up (too big)
    after_sig: list[int] | None = None  # [size, mtime_ns] of an after that was not backed up
    # cell steps
    op: str = ""
    cell_id: str = ""
    index: int = 0
    prev: str | None = None
    base: str | None = None
    base_kind: str = "bytes"
    base_canon: str | None = None
    nb_before: str | None = None
    nb_after: str | None = None


def _cell_step(r: dict[str, Any], i: int) -> _Step:
    return _Step(
        "cell",
        i,
        before=r.get("before"),
        after=r.get("after"),
        op=str(r.get("op")),
        cell_id=str(r.get("cell_id")),
        index=int(r.get("index") or 0),
        prev=r.get("prev"),
        base=r.get("base"),
        base_kind=str(r.get("base_kind") or "bytes"),
        base_canon=r.get("base_canon"),
        nb_before=r.get("nb_before"),
        nb_after=r.get("nb_after"),
    )


def _file_step(r: dict[str, Any], i: int, prewrite: bool) -> _Step:
    return _Step(
        "file",
        i,
        before=r.get("before"),
        after=r.get("after"),
        mode=r.get("mode"),
        prewrite=prewrite,
        before_missing=bool(r.get("before_missing")),
        after_sig=r.get("after_sig"),
    )


def _record_steps(r: dict[str, Any], i: int) -> Iterable[tuple[str, _Step]]:
    for sub, (path, s) in enumerate(_record_steps_of(r, i)):
        s.sub = sub
        yield path, s


def _record_steps_of(r: dict[str, Any], i: int) -> Iterable[tuple[str, _Step]]:
    kind = r.get("r")
    if kind == "file":
        yield r["path"], _file_step(r, i, True)
    elif kind == "cells":
        yield r["path"], _cell_step(r, i)
    elif kind == "bash":
        for c in r.get("changes", []):
            yield c["path"], _file_step(c, i, False)
    elif kind == "rewind":
        for s in r.get("steps", []):
            if s.get("kind") == "cell":
                yield s["path"], _cell_step(s, i)
            else:
                yield s["path"], _file_step(s, i, False)


def _record_dirs(r: dict[str, Any]) -> Iterable[tuple[str, str]]:
    kind = r.get("r")
    if kind == "file":
        for d in reversed(r.get("dirs") or []):  # outermost first
            yield d, "created"
    elif kind in ("bash", "rewind"):
        for d in r.get("dirs_created") or []:
            yield d, "created"
        for d in r.get("dirs_deleted") or []:
            yield d, "deleted"


@dataclass
class _Plan:
    path: str
    rel: str
    current: bytes | None
    target: bytes | None
    mode: int | None
    change: FileChange
    steps: list[dict[str, Any]]  # what the rewind does, as records of the rewind
    live: Callable[[], None] | None = None


class _CellUndo:
    """Undo a run of cell ops on a parsed notebook, cell by cell."""

    def __init__(self, log: CheckpointLog, rel: str, nb: dict[str, Any], check: bool, want_diffs: bool) -> None:
        self.log = log
        self.rel = rel
        self.nb = nb
        self.check = check  # check the newest op of each cell against the notebook (it is the disk's)
        self.want_diffs = want_diffs
        self.changes: list[CellChange] = []
        self.conflicts: list[Conflict] = []
        self.forward: list[dict[str, Any]] = []  # the rewind's own ops, as cell records
        self._id_list: list[str] | None = None  # ids by position, rebuilt after an insert or removal
        self._first: dict[str, dict[str, Any] | None] = {}  # cell id -> the cell before the rewind (None: absent)
        self._id_index: dict[str, int] = {}

    def _cells(self) -> list[dict[str, Any]]:
        cells: list[dict[str, Any]] = self.nb["cells"]
        return cells

    def _ids(self) -> list[str]:
        if self._id_list is None:
            self._id_list = _cell_ids(self.nb)
            self._id_index = {cid: i for i, cid in reversed(list(enumerate(self._id_list)))}
        return self._id_list

    def _find(self, cid: str) -> int | None:
        self._ids()
        return self._id_index.get(cid)

    def _prev_of(self, idx: int) -> str | None:
        return self._ids()[idx - 1] if idx > 0 else None

    def _diff(self, old: str, new: str, cid: str) -> str:
        return _src_diff(old, new, cid) if self.want_diffs else ""

    def _fwd(self, op: str, cid: str, before: dict[str, Any] | None, after: dict[str, Any] | None, idx: int, prev: str | None) -> None:
        self.forward.append(
            {"kind": "cell", "op": op, "cell_id": cid, "index": idx, "prev": prev, "_before": before, "_after": after}
        )

    def _touch(self, cid: str, now: dict[str, Any] | None) -> None:
        """Note how a cell was before the rewind changed it (the first time only)."""
        if cid not in self._first:
            self._first[cid] = now

    def _replace(self, idx: int, cid: str, cell: dict[str, Any]) -> None:
        cells = self._cells()
        old = cells[idx]
        self._touch(cid, old)
        cells[idx] = cell
        self._fwd("replace", cid, old, cell, idx, self._prev_of(idx))

    def _remove(self, idx: int, cid: str) -> None:
        cells = self._cells()
        old = cells.pop(idx)
        self._touch(cid, old)
        self._id_list = None
        self._fwd("delete", cid, old, None, idx, self._prev_of(idx))

    def _reinsert(self, step: _Step, cid: str, cell: dict[str, Any]) -> None:
        pos = None
        if step.prev:
            pi = self._find(step.prev)
            if pi is not None:
                pos = pi + 1
        if pos is None:
            pos = 0 if step.prev is None else min(step.index, len(self._cells()))
        self._touch(cid, None)
        self._cells().insert(pos, cell)
        self._id_list = None
        self._fwd("insert", cid, None, cell, pos, self._prev_of(pos))

    def _summarise(self) -> None:
        """One CellChange per cell: from how it was to how the rewind leaves it."""
        for cid, now in self._first.items():
            idx = self._find(cid)
            end = self._cells()[idx] if idx is not None else None
            if now is None and end is None:
                continue
            action = "reinsert" if now is None else ("remove" if end is None else "restore")
            self.changes.append(CellChange(cid, action, self._diff(_source(now), _source(end), cid)))

    def run(self, run: list[_Step]) -> None:
        checked: set[str] = set()
        skip: set[str] = set()
        inserted = {s.cell_id for s in run if s.op == "insert"}
        # Replaces of one cell with no insert or delete between them undo to the first
        # one's "before": restore that at once (one backup read, not one per edit).
        oldest: dict[int, int] = {}
        chain: dict[str, int] = {}
        for n, s in enumerate(run):
            if s.op != "replace":
                chain.clear()
                continue
            oldest[n] = chain.setdefault(s.cell_id, n)
        covered: set[int] = set()
        for n in range(len(run) - 1, -1, -1):
            step = run[n]
            if n in covered:
                continue
            cid = step.cell_id
            if cid in skip:
                continue
            newest = cid not in checked
            checked.add(cid)
            check = self.check and newest
            idx = self._find(cid)
            if step.op == "replace" and oldest.get(n, n) != n:
                f = oldest[n]
                covered.update(k for k in range(f, n) if run[k].cell_id == cid)
                before = self.log._cell(run[f].before)
            else:
                before = self.log._cell(step.before)
            after = self.log._cell(step.after) if check else None
            if step.op in ("replace", "insert"):
                if idx is None:
                    if cid in inserted:
                        skip.add(cid)  # a cell the agent added, deleted since: already as before
                    elif check:
                        self.conflicts.append(Conflict(self.rel, "the cell was deleted by someone else", cid))
                        skip.add(cid)
                    elif before is not None:
                        self._reinsert(step, cid, before)
                    continue
                cur = self._cells()[idx]
                if check and _cell_key(cur) != _cell_key(after):
                    own_before = self.log._cell(step.before) if step.op == "replace" else None
                    if own_before is None or _cell_key(cur) != _cell_key(own_before):
                        self.conflicts.append(Conflict(self.rel, "the cell was edited by someone else after the agent", cid))
                        skip.add(cid)
                        continue
                    # Still as it was before this op: its write never happened (the process died
                    # between the record and the write) or the person put it back. Nothing to undo
                    # for this op; older ops of the cell are undone as usual.
                if step.op == "replace" and before is not None:
                    if _cell_bytes(cur) != _cell_bytes(before):
                        self._replace(idx, cid, before)
                else:
                    self._remove(idx, cid)
            elif step.op == "delete":
                if before is None:
                    continue
                if idx is not None and self._cells()[idx].get("id") != cid:
                    idx = None  # a position (cell-N, no ids): the cells after it moved up
                if idx is not None:
                    if check and _cell_key(self._cells()[idx]) == _cell_key(before):
                        continue  # the delete never reached the notebook (a crash before the write)
                    if check:
                        self.conflicts.append(Conflict(self.rel, "a cell with this id exists again", cid))
                        skip.add(cid)
                    elif _cell_bytes(self._cells()[idx]) != _cell_bytes(before):
                        self._replace(idx, cid, before)
                    continue
                self._reinsert(step, cid, before)
        self._summarise()


def _reconcilable(nb: dict[str, Any], run: list[_Step]) -> bool:
    """False when the cells the agent touched, and their neighbours, are all gone (ids regenerated)."""
    ids = set(_cell_ids(nb))
    newest: dict[str, str] = {}
    for s in run:
        newest[s.cell_id] = s.op
    expected = {c for c, op in newest.items() if op in ("replace", "insert")}
    anchors = {s.prev for s in run if s.prev} - set(newest)
    if not expected and not anchors:
        return True
    return bool(ids & (expected | anchors))


def _forward_op(nb: dict[str, Any], s: _Step, cell: Callable[[str | None], dict[str, Any] | None]) -> bool:
    """Re-apply one recorded cell op to ``nb``; False when it does not fit."""
    cells: list[dict[str, Any]] = nb["cells"]
    ids = _cell_ids(nb)
    idx = ids.index(s.cell_id) if s.cell_id in ids else None
    after = cell(s.after)
    if s.op == "replace":
        if idx is None or after is None:
            return False
        cells[idx] = after
    elif s.op == "delete":
        if idx is None:
            return False
        del cells[idx]
    elif s.op == "insert":
        if after is None:
            return False
        cells.insert(min(s.index, len(cells)), after)
    return True


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
        Names skipped when scanning for Bash changes (default: ``AgentOptions``' default).
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
        ignore: Iterable[str] | None = None,
        max_file_bytes: int = 50 * 1024 * 1024,
        exclude: Iterable[Path] = (),
    ) -> None:
        self.session_id = session_id
        self.cwd = cwd.resolve()  # symlinks in the project path itself are fine; none may appear inside it
        self._cwd_str = str(cwd)
        self.records = records
        self.blobs = blobs
        self.ignore = frozenset(DEFAULT_CHECKPOINT_IGNORE if ignore is None else ignore)
        self.max_file_bytes = max_file_bytes
        self.exclude = tuple(exclude)
        self.current: str | None = None
        self._turn_files: list[str] = []
        self._turn_cells: list[str] = []
        self._manifest: dict[str, _Entry] | None = None
        self._manifest_ns = 0  # when it was taken (time.time_ns())
        self._loaded_records: list[dict[str, Any]] | None = None
        self._after_map: dict[str, str | None] | None = None
        self._after_map_len = 0
        self._last_kind: dict[str, str] = {}
        self._cell_cache: dict[str, dict[str, Any]] = {}
        self._cell_digest: dict[int, str] = {}  # id() of a cached cell -> its blob

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

    def _abs_str(self, stored: str) -> str:
        return os.path.join(self._cwd_str, stored)  # an absolute ``stored`` stays as it is

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

    def _last_after(self, rel: str) -> str | None:
        """Hash of what the agent (or a rewind) last left at ``rel``; ``_MISSING`` when nothing is recorded."""
        records = self.read_records()
        if self._after_map is None or self._after_map_len > len(records):
            self._after_map, self._after_map_len, self._last_kind = {}, 0, {}
        for i in range(self._after_map_len, len(records)):
            r = records[i]
            if r.get("r") == "cells":
                self._after_map[r["path"]] = r.get("nb_after")
                self._last_kind[r["path"]] = "cell"
            elif r.get("r") in _CHANGE_KINDS:
                for p, s in _record_steps(r, i):
                    if s.kind == "cell" and not s.nb_after:
                        continue  # a rewind's cell op before its last: the notebook's hash is on the last
                    self._after_map[p] = s.nb_after if s.kind == "cell" else s.after
                    self._last_kind[p] = s.kind
        self._after_map_len = len(records)
        return self._after_map.get(rel, _MISSING)

    def _cell(self, digest: str | None) -> dict[str, Any] | None:
        if not digest:
            return None
        cell = self._cell_cache.get(digest)
        if cell is None:
            cell = json.loads(self.blobs.get(digest))
            self._cell_cache[digest] = cell
            self._cell_digest[id(cell)] = digest
        return cell  # shared: cells are never changed in place (see _canon_cell)

    def _put_cell(self, cell: dict[str, Any]) -> str:
        known = self._cell_digest.get(id(cell))
        return known if known is not None else self.blobs.put(_cell_bytes(cell))

    # -- turn boundaries ----------------------------------------------------
    def begin_turn(self, checkpoint_id: str, turn: int, prompt: str) -> None:
        self.current = checkpoint_id
        self._turn_files = []
        self._turn_cells = []
        preview = " ".join(prompt.split())[:100]
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
        rel = self.rel(path)
        old = _read_bytes(path)
        before = self.blobs.put(old) if old is not None else None
        # The new content is stored too: it is what a later rewind overwrites, and the
        # next change's "before"; it lets a rewind keep what it overwrote without copying.
        after = self.blobs.put(new_content) if new_content is not None else None
        st = _lstat(path)
        mode = st.st_mode if st is not None else None
        created_dirs = []
        parent = path.parent
        while not parent.exists():
            created_dirs.append(self.rel(parent))
            if parent.parent == parent:
                break
            parent = parent.parent
        rec: dict[str, Any] = {"r": "file", "path": rel, "before": before, "after": after, "tool": tool}
        if mode is not None:
            rec["mode"] = mode
        if created_dirs:
            rec["dirs"] = created_dirs
        self._append(rec)
        self._turn_files.append(rel)

    # -- ChangeRecorder: NotebookEdit ------------------------------------------
    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        self._need_turn()
        rel = self.rel(path)
        nb_before = _hash(notebook_bytes)
        rec: dict[str, Any] = {
            "r": "cells",
            "path": rel,
            "op": edit.op,
            "cell_id": edit.cell_id,
            "before": self.blobs.put(_cell_bytes(edit.before_cell)) if edit.before_cell is not None else None,
            "after": self.blobs.put(_cell_bytes(edit.after_cell)) if edit.after_cell is not None else None,
            "index": edit.index,
            "prev": edit.prev_cell_id,
            "nb_before": nb_before,
            "nb_after": _hash(new_notebook_bytes),
        }
        if self._last_after(rel) != nb_before:
            rec.update(self._store_base(notebook_bytes))
        self._append(rec)
        self._turn_files.append(rel)
        self._turn_cells.append(f"{rel}#{edit.cell_id}")

    def _store_base(self, data: bytes) -> dict[str, str]:
        """Keep a notebook for the whole-notebook fallback; returns the record's ``base*`` fields.

        A notebook written as nbformat writes it is kept as a skeleton (the notebook
        without its cells) plus one blob per cell: a later copy of the same notebook
        only stores the cells that differ. Any other notebook is kept whole, with the
        hash of its nbformat form (to recognise it when a rewind rebuilt it cell by cell).
        """
        nb = _load_nb(data)
        canon = _dump_nb(nb) if nb is not None else None
        if canon == data and nb is not None:
            cells = [self.blobs.put(_cell_bytes(c)) for c in nb["cells"]]
            rest = {k: v for k, v in nb.items() if k != "cells"}
            skeleton = json.dumps({"nb": rest, "cells": cells}, sort_keys=True, separators=(",", ":")).encode()
            return {"base": self.blobs.put(skeleton), "base_kind": "cells"}
        out = {"base": self.blobs.put(data), "base_kind": "bytes"}
        if canon is not None:
            out["base_canon"] = _hash(canon)
        return out

    def _load_base(self, digest: str, kind: str) -> bytes:
        if kind != "cells":
            return self.blobs.get(digest)
        sk = json.loads(self.blobs.get(digest))
        nb = dict(sk["nb"])
        nb["cells"] = [self._cell(d) for d in sk["cells"]]
        return _dump_nb(nb)

    # -- ChangeRecorder: Bash --------------------------------------------------------
    def _refresh_manifest(self, ignore: frozenset[str] | None = None) -> tuple[dict[str, _Entry], set[str]]:
        """Stat the workspace; hash (and back up) only files whose size, mtime or mode changed."""
        if self._manifest is None:
            self._manifest, self._manifest_ns = self._load_manifest()
        taken = time.time_ns()
        # A file changed in the same clock tick as the last scan can keep its size and
        # mtime ("racily clean", as git says): files that recent are hashed again.
        trusted_before = self._manifest_ns - 1_000_000_000
        files, dirs = _scan(self.cwd, self.ignore if ignore is None else ignore, self.exclude)
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
            if st.st_size <= self.max_file_bytes:
                data = _read_bytes(os.path.join(self._cwd_str, rel))
                if data is not None:
                    digest = _hash(data)
                    if not self._rebuildable(rel, digest):
                        self.blobs.put_with_hash(digest, data)
            new[rel] = _Entry(st.st_size, st.st_mtime_ns, st.st_mode, digest)
        self._manifest, self._manifest_ns = new, taken
        return new, dirs

    def _rebuildable(self, rel: str, digest: str) -> bool:
        """Whether ``rel`` holding ``digest`` is a notebook as the agent's last cell edit left it.

        Such a notebook can be rebuilt from the cell backups, so a Bash scan need not
        keep another whole copy of it after every NotebookEdit.
        """
        return rel.endswith(".ipynb") and self._last_after(rel) == digest and self._last_kind.get(rel) == "cell"

    def _content(self, rel: str, digest: str) -> bytes:
        """A backup by hash: from the blob store, or a notebook rebuilt from its cell backups.

        Raises
        ------
        BlobMissingError
        """
        try:
            return self.blobs.get(digest)
        except BlobMissingError:
            for s in reversed(self._path_steps(rel)):
                if s.kind == "cell" and s.nb_after == digest:
                    data = self._replay(rel, s, inclusive=True)
                    if data is not None:
                        return data
            raise

    def _manifest_path(self) -> Path | None:
        return None if self.records.path is None else self.records.path.with_name("bash-manifest")

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
        return {rel: e for rel, e in m.files.items() if e.digest is None or self.blobs.has(e.digest)}, m.taken_ns

    def _save_manifest(self, dirs: set[str]) -> None:
        path = self._manifest_path()
        if path is None or self._manifest is None:
            return
        with contextlib.suppress(OSError):
            atomic_write_bytes(path, _manifest_bytes(self._manifest, dirs, self._manifest_ns, self.ignore))

    def _sidecar(self, token_id: str) -> Path | None:
        if self.records.path is None:
            return None
        return self.records.path.with_name(f"bash-{token_id}.manifest")

    def before_command(self) -> object:
        self._need_turn()
        files, dirs = self._refresh_manifest()
        token = _BashToken(new_uuid(), dict(files), set(dirs))
        # The manifest is only needed if this process dies before after_command: it is
        # written next to the records (not to the shared blob store) and removed after.
        data = _manifest_bytes(files, dirs, self._manifest_ns, self.ignore)
        side = self._sidecar(token.id)
        if side is not None:
            atomic_write_bytes(side, data, fsync=want_fsync())
        self._append({"r": "bash_start", "id": token.id})
        return token

    def after_command(self, token: object) -> list[str]:
        if not isinstance(token, _BashToken):
            return []
        changes, dirs_created, dirs_deleted, untracked = self._diff_since(token.files, token.dirs)
        self._append(
            {"r": "bash", "id": token.id, "changes": changes, "dirs_created": dirs_created, "dirs_deleted": dirs_deleted, "untracked": untracked}
        )
        side = self._sidecar(token.id)
        if side is not None:
            with contextlib.suppress(OSError):
                side.unlink()
        self._save_manifest(set(dirs_created) | (token.dirs - set(dirs_deleted)))
        paths = [c["path"] for c in changes]
        self._turn_files.extend(paths)
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
        recs = self.read_records()
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
            saved = self.current
            self.current = r.get("checkpoint")
            try:
                # Scan as the session did (a rewind from the command line does not know its options).
                changes, created, deleted, untracked = self._diff_since(m.files, m.dirs, m.ignore)
                self._append(
                    {"r": "bash", "id": r.get("id"), "changes": changes, "dirs_created": created, "dirs_deleted": deleted,
                     "untracked": untracked, "recovered": True}
                )
            finally:
                self.current = saved
            if side is not None:
                with contextlib.suppress(OSError):
                    side.unlink()
            fixed += 1
        return fixed

    def sweep_temp_files(self) -> int:
        """Delete temp files that killed atomic writes of the last turn left beside their targets.

        A write goes to ``.<name>.<8 hex>.tmp`` and is renamed over ``<name>``; a process
        killed between the two leaves the temp file, and the folders the write created for
        it. Those folders are removed too when the sweep leaves them empty and the target
        was never written. Call with the session's lock held (no other writer of this
        session is running). Returns how many temp files were removed.
        """
        recs = self.read_records()
        last = next((r.get("checkpoint") for r in reversed(recs) if r.get("r") == "turn"), None)
        if last is None:
            return 0
        created: dict[str, list[str]] = {}
        for r in recs:
            if r.get("checkpoint") == last and isinstance(r.get("path"), str):
                created.setdefault(r["path"], []).extend(d for d in r.get("dirs") or [] if isinstance(d, str))
        removed = 0
        for rel, dirs in created.items():
            target = self.abs(rel)
            prefix = f".{target.name[:100]}."
            try:
                with os.scandir(target.parent) as it:
                    names = [
                        e.name for e in it
                        if e.name.startswith(prefix) and _TEMP_TAIL.fullmatch(e.name[len(prefix):])
                        and e.is_file(follow_symlinks=False)
                    ]
            except OSError:
                continue
            for name in names:
                try:
                    unlink_nofollow(target.parent / name)
                except (OSError, ToolError):
                    continue
                removed += 1
            if names and _lstat(target) is None:
                for d in dirs:  # innermost first; stops at the first folder that is not empty
                    try:
                        rmdir_nofollow(self.abs(d))
                    except (OSError, ToolError):
                        break
        return removed

    # -- listing ----------------------------------------------------------------
    def checkpoints(self) -> list[CheckpointInfo]:
        """The session's checkpoints, oldest first, with the paths and cells each turn changed."""
        out: dict[str, CheckpointInfo] = {}
        for r in self.read_records():
            cp = r.get("checkpoint")
            if not cp:
                continue
            kind = r.get("r")
            if kind == "turn":
                out[cp] = CheckpointInfo(cp, int(r.get("turn") or len(out) + 1), str(r.get("ts") or ""), str(r.get("prompt") or ""))
                continue
            info = out.get(cp)
            if info is None:
                continue
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
        """Full checkpoint id for an id or unique prefix (4+ characters).

        Raises
        ------
        CheckpointNotFoundError
            No such checkpoint (or the session has none: checkpointing was off).
        AmbiguousIdError
            The prefix matches several checkpoints.
        """
        ids = list(dict.fromkeys(str(r["checkpoint"]) for r in self.read_records() if r.get("r") == "turn" and r.get("checkpoint")))
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
        short = f" (give at least {MIN_PREFIX} characters)" if len(checkpoint_id) < MIN_PREFIX else ""
        raise CheckpointNotFoundError(
            f"No checkpoint {checkpoint_id!r} in session {self.session_id[:8]}{short}. "
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
            Compute and return what would change (with diffs), touching nothing.
        force
            Overwrite paths and cells changed by someone else since the agent.
        bridge
            A NotebookBridge: notebooks open in a front end are rewound there, live,
            with the same cell edits (see ``_live_rewind``); the file is written only
            when the front end takes none.

        Raises
        ------
        CheckpointNotFoundError, AmbiguousIdError
        """
        try:
            return self._rewind(checkpoint_id, dry_run, force, bridge)
        finally:
            self._cell_cache.clear()
            self._cell_digest.clear()

    def _rewind(self, checkpoint_id: str, dry_run: bool, force: bool, bridge: Any) -> RewindResult:
        cp = self.resolve(checkpoint_id)
        records = self.read_records()
        start = next(i for i, r in enumerate(records) if r.get("r") == "turn" and r.get("checkpoint") == cp)
        result = RewindResult(cp, dry_run)
        result.checkpoint_timestamp = records[start].get("ts")

        steps: dict[str, list[_Step]] = {}
        dir_first: dict[str, str] = {}  # folder -> its oldest event since the checkpoint
        for i in range(start + 1, len(records)):
            r = records[i]
            if r.get("r") not in _CHANGE_KINDS:
                continue
            for rel, s in _record_steps(r, i):
                steps.setdefault(rel, []).append(s)
            for d, event in _record_dirs(r):
                dir_first.setdefault(d, event)

        plans: list[_Plan] = []
        for rel, path_steps in steps.items():
            plan = self._plan_path(rel, path_steps, force, dry_run, result, bridge)
            if plan is not None:
                plans.append(plan)

        recreate = sorted((d for d, ev in dir_first.items() if ev == "deleted" and not self.abs(d).exists()), key=_depth)
        remove = sorted((d for d, ev in dir_first.items() if ev == "created"), key=_depth, reverse=True)
        result.dirs_created = recreate
        if dry_run:
            result.dirs_removed = self._would_remove(remove, plans)
            return result

        # Write-ahead: what the rewind overwrites is stored, and the rewind recorded as
        # changes (so it can be undone too), before any file is touched.
        rec_steps: list[dict[str, Any]] = []
        for plan in plans:
            rec_steps.extend(self._store_plan(plan))
        last_cp = next((r.get("checkpoint") for r in reversed(records) if r.get("r") == "turn"), cp)
        dirs_deleted = [d for d in remove if self.abs(d).is_dir()]
        if not rec_steps and not recreate and not dirs_deleted:
            return result
        self._append(
            {"r": "rewind", "checkpoint": last_cp, "to": cp, "force": force, "steps": rec_steps,
             "dirs_created": recreate, "dirs_deleted": dirs_deleted}
        )
        for d in recreate:
            try:
                make_dirs_nofollow(self.abs(d))
            except ToolError as e:
                result.notes.append(f"{d}: folder not recreated ({e})")
        for plan in plans:
            try:
                if plan.live is not None:
                    plan.live()
                elif plan.target is None:
                    try:
                        unlink_nofollow(Path(plan.path))
                    except ToolError as e:
                        raise OSError(errno.EPERM, str(e)) from None
                else:
                    _write_atomic(Path(plan.path), plan.target, plan.mode)
            except OSError as e:
                # Keep going: one unwritable path must not leave the others half rewound.
                result.changes.remove(plan.change)
                result.unrestorable.append(plan.rel)
                result.notes.append(f"{plan.rel}: could not be written ({e.strerror or e})")
        for d in remove:
            p = self.abs(d)
            if not p.is_dir():
                continue
            try:
                rmdir_nofollow(p)
                result.dirs_removed.append(d)
            except (OSError, ToolError):
                result.notes.append(f"{d}: folder kept, it is not empty")
        self._manifest = None
        return result

    def _store_plan(self, plan: _Plan) -> list[dict[str, Any]]:
        """Blobs for what ``plan`` overwrites, and the plan as steps of the rewind record."""
        out = []
        for s in plan.steps:
            s = dict(s)
            if s.get("kind") == "cell":
                b, a = s.pop("_before"), s.pop("_after")
                s["before"] = self._put_cell(b) if b is not None else None
                s["after"] = self._put_cell(a) if a is not None else None
            out.append({"path": plan.rel, **s})
        cells = [s for s in out if s.get("kind") == "cell"]
        if cells:
            cur = plan.current or b""
            cells[0]["nb_before"] = _hash(cur)
            cells[-1]["nb_after"] = _hash(plan.target or b"")
            if self._last_after(plan.rel) != cells[0]["nb_before"]:
                cells[0].update(self._store_base(cur))
        return out

    def _would_remove(self, remove: list[str], plans: list[_Plan]) -> list[str]:
        """The created folders a rewind would remove: those left empty by it (dry runs)."""
        deleting = {p.path for p in plans if p.target is None}
        creating = [p.path for p in plans if p.target is not None and p.current is None]
        removed: set[str] = set()
        out = []
        for d in remove:  # deepest first
            p = self.abs(d)
            if not p.is_dir():
                continue
            prefix = str(p) + os.sep
            if any(c.startswith(prefix) for c in creating):
                continue
            try:
                with os.scandir(p) as it:
                    empty = all(e.path in removed or e.path in deleting for e in it)
            except OSError:
                empty = False
            if empty:
                removed.add(str(p))
                out.append(d)
        return out

    def _plan_path(
        self, rel: str, steps: list[_Step], force: bool, dry_run: bool, result: RewindResult, bridge: Any
    ) -> _Plan | None:
        apath = self._abs_str(rel)
        live_nb = None
        if bridge is not None and rel.endswith(".ipynb"):
            path = Path(apath)
            with contextlib.suppress(Exception):
                if bridge.is_open(path):
                    live_nb = bridge.read(path)
        st = _lstat(apath)
        if live_nb is None and st is not None and stat_mod.S_ISDIR(st.st_mode):
            result.conflicts.append(Conflict(rel, "is now a folder"))
            return None
        newest = steps[-1]
        if live_nb is not None:
            current: bytes | None = _dump_nb(live_nb)
        elif st is not None and st.st_size > self.max_file_bytes and newest.kind == "file" and newest.after_sig:
            current = None  # too big to have been backed up: recognised by size and mtime
        else:
            current = _read_bytes(apath)
        cur_hash = _hash(current) if current is not None else None
        state = current
        mode: int | None = None
        on_disk = True  # state is still what is on disk: the newest change is checked against it
        file_level = False  # some step replaced the whole content (not cell by cell)
        whole_note: str | None = None
        undo: _CellUndo | None = None
        pending: str | None = None  # the backup "state" is, not read yet
        i = len(steps) - 1
        while i >= 0:
            step = steps[i]
            if step.kind == "file":
                if on_disk and not force and not _is_after(step, cur_hash, st):
                    result.conflicts.append(Conflict(rel, "changed by someone else after the agent's last change"))
                    return None
                if step.before_missing:
                    result.unrestorable.append(rel)
                    return None
                # Read lazily: of consecutive whole-file changes only the oldest "before" matters.
                pending = step.before
                state = None
                if step.mode is not None:
                    mode = step.mode
                on_disk = False
                file_level = True
                i -= 1
                continue
            # A run of cell ops.
            j = i
            while j > 0 and steps[j - 1].kind == "cell":
                j -= 1
            run = steps[j : i + 1]
            if not on_disk:
                # Behind a whole-file change: the notebook as the log knew it before the run is
                # exact (and the cells of what is on disk need not match the agent's edits).
                target = self._state_before(rel, run[0])
                if target is not None:
                    state, pending = target, None
                    i = j - 1
                    continue
            if pending is not None:
                try:
                    state = self._content(rel, pending)
                except BlobMissingError:
                    result.unrestorable.append(rel)
                    return None
                pending = None
            if state is None and on_disk and not force:
                result.conflicts.append(Conflict(rel, "the notebook was deleted by someone else after the agent's last change"))
                return None
            nb = _load_nb(state)
            if nb is not None and _reconcilable(nb, run):
                u = _CellUndo(self, rel, nb, check=on_disk and not force, want_diffs=dry_run)
                u.run(run)
                result.conflicts.extend(u.conflicts)
                if u.changes:
                    state = _dump_nb(u.nb)
                if on_disk:
                    undo = u
                else:
                    file_level = True
            else:
                # The cells can no longer be matched by id (regenerated): restore the whole notebook.
                target = self._state_before(rel, run[0]) if on_disk else None
                if target is None:
                    result.conflicts.append(Conflict(
                        rel, "the notebook's cells can no longer be matched to the agent's edits, "
                        "and no full copy from before the checkpoint is kept"))
                    return None
                if not force and state is not None:
                    agent_last = self._state_after(rel, run[-1])
                    if not _same_sources(nb, _load_nb(agent_last)):
                        result.conflicts.append(Conflict(
                            rel, "its cell ids changed and its cells differ from the agent's last version; "
                            "use force to restore the whole notebook"))
                        return None
                whole_note = (
                    "the notebook had been deleted: restored it whole" if state is None
                    else "cells could not be matched by id (ids changed?): restored the whole notebook"
                )
                result.notes.append(f"{rel}: {whole_note}")
                state = target
                file_level = True
            on_disk = False
            i = j - 1
        if pending is not None:
            try:
                state = self._content(rel, pending)
            except BlobMissingError:
                result.unrestorable.append(rel)
                return None

        first = steps[0]
        if state is not None and first.kind == "cell" and first.nb_before and _hash(state) != first.nb_before:
            # Restored cell by cell but not byte-identical to the notebook before: if only the
            # formatting differs (a notebook not written by nbformat), restore its exact bytes.
            exact = self._exact_before(rel, first, state)
            if exact is not None:
                state = exact

        exists = st is not None or live_nb is not None
        cur_mode = st.st_mode if st is not None else None
        if mode is None:
            mode = cur_mode
        same_mode = stat_mod.S_IMODE(mode or 0) == stat_mod.S_IMODE(cur_mode or 0)
        if state == current and (state is not None) == exists and (state is None or same_mode):
            return None
        cell_level = undo is not None and not file_level
        if not exists:
            action = "create"
        elif state is None:
            action = "delete"
        elif whole_note:
            action = "whole-notebook"
        elif cell_level:
            action = "cells"
        else:
            action = "restore"
        diff = _text_diff(current, state, rel) if dry_run and not cell_level else ""
        cells = undo.changes if cell_level and undo is not None else []
        change = FileChange(rel, action, diff, cells, whole_note)
        result.changes.append(change)

        if cell_level and undo is not None:
            rec_steps = undo.forward
        else:
            fs: dict[str, Any] = {"kind": "file", "mode": cur_mode}
            if current is None and exists:
                fs.update(before=None, before_missing=True)  # too big: not kept
            else:
                if current is None:
                    fs["before"] = None
                elif dry_run or (cur_hash == newest.after and newest.kind == "file"):
                    fs["before"] = cur_hash  # the agent's own last version: stored when it was written
                else:
                    fs["before"] = self._put(current, cur_hash)
            fs["after"] = None if state is None else (_hash(state) if dry_run else self.blobs.put(state))
            rec_steps = [fs]
        plan = _Plan(apath, rel, current, state, mode, change, rec_steps)
        if live_nb is not None and state is not None:
            plan.live = _live_rewind(bridge, path, state, mode, rec_steps if cell_level else None)
        return plan

    def _put(self, data: bytes, digest: str | None) -> str:
        if digest is None:
            return self.blobs.put(data)
        self.blobs.put_with_hash(digest, data)
        return digest

    # -- whole-notebook fallback ---------------------------------------------------
    def _path_steps(self, rel: str) -> list[_Step]:
        return [s for i, r in enumerate(self.read_records()) if r.get("r") in _CHANGE_KINDS for p, s in _record_steps(r, i) if p == rel]

    def _exact_before(self, rel: str, first: _Step, state: bytes) -> bytes | None:
        """The bytes of the notebook before cell step ``first`` if ``state`` is the same notebook, formatted by nbformat."""
        try:
            if first.base:
                if first.base_kind == "cells":
                    return None  # that notebook was in nbformat's form: ``state`` differs in content
                if first.base_canon:
                    return self.blobs.get(first.base) if _hash(state) == first.base_canon else None
                exact: bytes | None = self.blobs.get(first.base)
            else:
                all_steps = self._path_steps(rel)
                k = next((n for n, s in enumerate(all_steps) if s.rec == first.rec and s.sub == first.sub), 0)
                prev = all_steps[k - 1] if k > 0 else None
                if prev is None or prev.kind != "file" or not prev.after:
                    return None  # after a cell edit the notebook was in nbformat's form already
                exact = self.blobs.get(prev.after)
        except BlobMissingError:
            return None
        if exact is not None and _dump_nb(_load_nb(exact) or {}) == state:
            return exact
        return None

    def _state_before(self, rel: str, stop: _Step) -> bytes | None:
        """The notebook just before cell step ``stop``: from the nearest full copy, re-applying the agent's ops."""
        return self._replay(rel, stop, inclusive=False)

    def _state_after(self, rel: str, stop: _Step) -> bytes | None:
        return self._replay(rel, stop, inclusive=True)

    def _replay(self, rel: str, stop: _Step, inclusive: bool) -> bytes | None:
        all_steps = self._path_steps(rel)
        k = next((n for n, s in enumerate(all_steps) if s.rec == stop.rec and s.sub == stop.sub), None)
        if k is None:
            return None
        end = k + 1 if inclusive else k
        # The nearest anchor at or before ``stop``: a full copy of the notebook before a cell
        # op (``base``), or the content a whole-file change left.
        for a in range(k, -1, -1):
            s = all_steps[a]
            try:
                if s.kind == "cell" and s.base:
                    data: bytes | None = self._load_base(s.base, s.base_kind)
                    begin = a
                    break
                if s.kind == "file" and a < k:
                    if s.after is None and s.after_sig:
                        return None
                    data = self.blobs.get(s.after) if s.after else None
                    begin = a + 1
                    break
            except BlobMissingError:
                return None
        else:
            return None
        if begin >= end:
            return data
        nb = _load_nb(data)
        if nb is None:
            return None
        for s in all_steps[begin:end]:
            if not _forward_op(nb, s, self._cell):
                return None
        out = _dump_nb(nb)
        want = stop.nb_after if inclusive else stop.nb_before
        if want and _hash(out) != want:
            return None
        return out


def _live_rewind(
    bridge: Any, path: Path, data: bytes, mode: int | None, cell_steps: list[dict[str, Any]] | None
) -> Callable[[], None]:
    """How to rewind a notebook open in a front end (``bridge``) instead of writing its file.

    A cell-by-cell plan is applied as the same cell edits, so the person's unsaved
    edits to other cells survive. When that is not possible (a whole-notebook
    restore, or the front end refused an edit), every cell is replaced if the
    bridge can (``replace_all(path, nb) -> bool``); the file is written only when
    the front end takes nothing.
    """
    edits = None
    if cell_steps is not None:
        edits = [CellEdit(s["op"], s["cell_id"], s["_before"], s["_after"], s["index"], s["prev"]) for s in cell_steps]
    target_nb = _load_nb(data)

    def live() -> None:
        if edits is not None and all(bridge.apply(path, e) for e in edits):
            return
        replace_all = getattr(bridge, "replace_all", None)
        if target_nb is not None and replace_all is not None and replace_all(path, target_nb):
            return
        _write_atomic(path, data, mode)

    return live


def _is_after(step: _Step, cur_hash: str | None, st: os.stat_result | None) -> bool:
    """Whether what is on disk (its hash, its stat) is what ``step`` left there."""
    if step.after is None and step.after_sig:
        return st is not None and [st.st_size, st.st_mtime_ns] == list(step.after_sig)
    return cur_hash == step.after or (step.prewrite and cur_hash == step.before)


def blobs_referenced(records: list[dict[str, Any]], blobs: BlobStore) -> set[str]:
    """Every backup blob the checkpoint ``records`` need for a rewind (to export a session with them).

    Includes the cell blobs of notebook skeletons (``base_kind == "cells"``), which the
    records name only through the skeleton. Blobs missing from ``blobs`` are left out.
    """
    out: set[str] = set()

    def add(v: Any) -> None:
        if isinstance(v, str) and len(v) == 64 and blobs.has(v):
            out.add(v)

    def add_step(s: dict[str, Any]) -> None:
        add(s.get("before"))
        add(s.get("after"))
        base = s.get("base")
        add(base)
        if s.get("base_kind") == "cells" and isinstance(base, str) and base in out:
            with contextlib.suppress(BlobMissingError, ValueError, KeyError, TypeError):
                for d in json.loads(blobs.get(base))["cells"]:
                    add(d)

    for r in records:
        kind = r.get("r")
        if kind in ("file", "cells"):
            add_step(r)
        elif kind == "bash":
            for c in r.get("changes") or []:
                add_step(c)
        elif kind == "rewind":
            for s in r.get("steps") or []:
                add_step(s)
            for s in r.get("saved") or []:  # records written before rewinds kept steps
                add(s.get("blob"))
    return out


def _depth(d: str) -> int:
    return d.rstrip("/").count("/")
