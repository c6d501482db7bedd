"""Checkpoint records: the public result types, and each record read as the steps a rewind undoes.

The record kinds (``turn``, ``file``, ``cells``, ``bash_start``/``bash``, ``rewind``)
are described in :mod:`agent_magic.checkpoints`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..store.blobs import BlobMissingError, BlobStore

MIN_PREFIX = 4

CHANGE_KINDS = frozenset({"file", "cells", "bash", "rewind"})
MISSING = "\x00missing"  # no record of a path yet (distinct from None: "no file")


@dataclass
class CheckpointInfo:
    """One checkpoint of a session (one turn)."""

    checkpoint_id: str
    turn: int
    timestamp: str
    prompt: str
    files: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    #: Kernel variables the agent's code could change in this turn (snapshotted before it ran).
    variables: list[str] = field(default_factory=list)


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
    #: Kernel variables put back (or, in a dry run, to be): ``{"name", "action" ("restore" |
    #: "delete"), "type", "size", "in_place"}`` each; empty when the rewind did not touch the kernel.
    variables: list[dict[str, Any]] = field(default_factory=list)
    #: Variables the agent's code changed that cannot be put back, with the reason.
    variables_not_restored: dict[str, str] = field(default_factory=dict)
    #: Values changed by code that never named them (a module global, a closure): not undone.
    variable_warnings: list[str] = field(default_factory=list)
    #: Why the kernel's variables were not part of this rewind (no live kernel, ``kernel=False``), if so.
    kernel_note: str | None = None

    @property
    def restored_cells(self) -> list[tuple[str, str]]:
        """``(notebook path, cell id)`` of every cell put back (for stale-kernel hints)."""
        return [(c.path, cc.cell_id) for c in self.changes for cc in c.cells if cc.action in ("restore", "reinsert")]

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.unrestorable

    def summary(self) -> str:
        verb = "Would change" if self.dry_run else "Changed"
        if not self.changes and not self.dirs_removed and not self.dirs_created and not self.variables:
            parts = ["Nothing to change" if self.dry_run else "Nothing changed"]
        elif self.changes or self.dirs_removed or self.dirs_created:
            parts = [f"{verb} {_plural(len(self.changes), 'path')}"]
        else:
            parts = []
        ncells = sum(len(c.cells) for c in self.changes)
        if ncells:
            parts.append(_plural(ncells, "cell"))
        if self.dirs_removed:
            parts.append(f"removed {_plural(len(self.dirs_removed), 'folder')}")
        if self.dirs_created:
            parts.append(f"recreated {_plural(len(self.dirs_created), 'folder')}")
        if self.variables:
            what = f"{'would put back' if self.dry_run else 'put back'} {_plural(len(self.variables), 'kernel variable')}"
            parts.append(what if parts else what[0].upper() + what[1:])
        if self.conflicts:
            parts.append(f"{_plural(len(self.conflicts), 'conflict')} left alone")
        if self.unrestorable or self.variables_not_restored:
            parts.append(f"{len(self.unrestorable) + len(self.variables_not_restored)} not restorable")
        return ", ".join(parts) + "."


def _plural(n: int, word: str) -> str:
    """``1 cell``, ``2 cells``: counts as a person writes them."""
    return f"{n} {word}" + ("" if n == 1 else "s")




@dataclass
class Step:
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


def _cell_step(r: dict[str, Any], i: int) -> Step:
    return Step(
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


def _file_step(r: dict[str, Any], i: int, prewrite: bool) -> Step:
    return Step(
        "file",
        i,
        before=r.get("before"),
        after=r.get("after"),
        mode=r.get("mode"),
        prewrite=prewrite,
        before_missing=bool(r.get("before_missing")),
        after_sig=r.get("after_sig"),
    )


def record_steps(r: dict[str, Any], i: int) -> Iterable[tuple[str, Step]]:
    for sub, (path, s) in enumerate(_record_steps_of(r, i)):
        s.sub = sub
        yield path, s


def _record_steps_of(r: dict[str, Any], i: int) -> Iterable[tuple[str, Step]]:
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


def record_dirs(r: dict[str, Any]) -> Iterable[tuple[str, str]]:
    kind = r.get("r")
    if kind == "file":
        for d in reversed(r.get("dirs") or []):  # outermost first
            yield d, "created"
    elif kind in ("bash", "rewind"):
        for d in r.get("dirs_created") or []:
            yield d, "created"
        for d in r.get("dirs_deleted") or []:
            yield d, "deleted"




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

