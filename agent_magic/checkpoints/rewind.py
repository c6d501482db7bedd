"""Rewind planning: what to write back for each path, checked against what is there now.

Rewinding to checkpoint C undoes, newest first, every change recorded after C's
``turn`` record, rewinds included, on an in-memory copy of each path. Only the
newest change of a path (or of a notebook cell) is checked against the disk: a
path or cell is only touched if it is what the change left there; anything else
is a conflict, reported and left alone unless ``force``. When a notebook's cells
can no longer be matched by id, the whole notebook is rebuilt from the nearest
full copy by replaying the agent's ops (the whole-notebook fallback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ToolError
from .._safefs import make_dirs_nofollow, rmdir_nofollow, unlink_nofollow
from ..store.blobs import BlobMissingError
from ..tools.base import CellEdit
from .backups import hash_bytes, lstat, read_bytes, write_atomic
from .cells import CellUndo, dump_nb, forward_op, load_nb, reconcilable, same_sources
from .diffs import text_diff
from .records import (
    CHANGE_KINDS,
    Conflict,
    FileChange,
    RewindResult,
    Step,
    record_dirs,
    record_steps,
)

if TYPE_CHECKING:
    from .log import CheckpointLog


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



class RewindPlanner:
    """Plans and applies one session's rewinds."""

    def __init__(self, log: CheckpointLog) -> None:
        self.log = log

    def rewind(self, checkpoint_id: str, dry_run: bool, force: bool, bridge: Any) -> RewindResult:
        cp = self.log.resolve(checkpoint_id)
        records = self.log.read_records()
        start = next(i for i, r in enumerate(records) if r.get("r") == "turn" and r.get("checkpoint") == cp)
        result = RewindResult(cp, dry_run)
        result.checkpoint_timestamp = records[start].get("ts")

        steps: dict[str, list[Step]] = {}
        dir_first: dict[str, str] = {}  # folder -> its oldest event since the checkpoint
        for i in range(start + 1, len(records)):
            r = records[i]
            if r.get("r") not in CHANGE_KINDS:
                continue
            for rel, s in record_steps(r, i):
                steps.setdefault(rel, []).append(s)
            for d, event in record_dirs(r):
                dir_first.setdefault(d, event)

        plans: list[_Plan] = []
        for rel, path_steps in steps.items():
            plan = self._plan_path(rel, path_steps, force, dry_run, result, bridge)
            if plan is not None:
                plans.append(plan)

        recreate = sorted((d for d, ev in dir_first.items() if ev == "deleted" and not self.log.abs(d).exists()), key=_depth)
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
        dirs_deleted = [d for d in remove if self.log.abs(d).is_dir()]
        if not rec_steps and not recreate and not dirs_deleted:
            return result
        self.log._append(
            {"r": "rewind", "checkpoint": last_cp, "to": cp, "force": force, "steps": rec_steps,
             "dirs_created": recreate, "dirs_deleted": dirs_deleted}
        )
        for d in recreate:
            try:
                make_dirs_nofollow(self.log.abs(d))
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
                    write_atomic(Path(plan.path), plan.target, plan.mode)
            except OSError as e:
                # Keep going: one unwritable path must not leave the others half rewound.
                result.changes.remove(plan.change)
                result.unrestorable.append(plan.rel)
                result.notes.append(f"{plan.rel}: could not be written ({e.strerror or e})")
        for d in remove:
            p = self.log.abs(d)
            if not p.is_dir():
                continue
            try:
                rmdir_nofollow(p)
                result.dirs_removed.append(d)
            except (OSError, ToolError):
                result.notes.append(f"{d}: folder kept, it is not empty")
        self.log.bash.forget()
        return result

    def _store_plan(self, plan: _Plan) -> list[dict[str, Any]]:
        """Blobs for what ``plan`` overwrites, and the plan as steps of the rewind record."""
        out = []
        for s in plan.steps:
            s = dict(s)
            if s.get("kind") == "cell":
                b, a = s.pop("_before"), s.pop("_after")
                s["before"] = self.log.backups.put_cell(b) if b is not None else None
                s["after"] = self.log.backups.put_cell(a) if a is not None else None
            out.append({"path": plan.rel, **s})
        cells = [s for s in out if s.get("kind") == "cell"]
        if cells:
            cur = plan.current or b""
            cells[0]["nb_before"] = hash_bytes(cur)
            cells[-1]["nb_after"] = hash_bytes(plan.target or b"")
            if self.log._last_after(plan.rel) != cells[0]["nb_before"]:
                cells[0].update(self.log.backups.store_base(cur))
        return out

    def _would_remove(self, remove: list[str], plans: list[_Plan]) -> list[str]:
        """The created folders a rewind would remove: those left empty by it (dry runs)."""
        deleting = {p.path for p in plans if p.target is None}
        creating = [p.path for p in plans if p.target is not None and p.current is None]
        removed: set[str] = set()
        out = []
        for d in remove:  # deepest first
            p = self.log.abs(d)
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
        self, rel: str, steps: list[Step], force: bool, dry_run: bool, result: RewindResult, bridge: Any
    ) -> _Plan | None:
        apath = self.log._abs_str(rel)
        live_nb = None
        if bridge is not None and rel.endswith(".ipynb"):
            path = Path(apath)
            with contextlib.suppress(Exception):
                if bridge.is_open(path):
                    live_nb = bridge.read(path)
        st = lstat(apath)
        if live_nb is None and st is not None and stat_mod.S_ISDIR(st.st_mode):
            result.conflicts.append(Conflict(rel, "is now a folder"))
            return None
        newest = steps[-1]
        if live_nb is not None:
            current: bytes | None = dump_nb(live_nb)
        elif st is not None and st.st_size > self.log.max_file_bytes and newest.kind == "file" and newest.after_sig:
            current = None  # too big to have been backed up: recognised by size and mtime
        else:
            current = read_bytes(apath)
        cur_hash = hash_bytes(current) if current is not None else None
        state = current
        mode: int | None = None
        on_disk = True  # state is still what is on disk: the newest change is checked against it
        file_level = False  # some step replaced the whole content (not cell by cell)
        whole_note: str | None = None
        undo: CellUndo | None = None
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
                    state = self.log._content(rel, pending)
                except BlobMissingError:
                    result.unrestorable.append(rel)
                    return None
                pending = None
            if state is None and on_disk and not force:
                result.conflicts.append(Conflict(rel, "the notebook was deleted by someone else after the agent's last change"))
                return None
            nb = load_nb(state)
            if nb is not None and reconcilable(nb, run):
                u = CellUndo(self.log.backups.cell, rel, nb, check=on_disk and not force, want_diffs=dry_run)
                u.run(run)
                result.conflicts.extend(u.conflicts)
                if u.changes:
                    state = dump_nb(u.nb)
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
                    if not same_sources(nb, load_nb(agent_last)):
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
                state = self.log._content(rel, pending)
            except BlobMissingError:
                result.unrestorable.append(rel)
                return None

        first = steps[0]
        if state is not None and first.kind == "cell" and first.nb_before and hash_bytes(state) != first.nb_before:
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
        diff = text_diff(current, state, rel) if dry_run and not cell_level else ""
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
                    fs["before"] = self.log.backups.put(current, cur_hash)
            fs["after"] = None if state is None else (hash_bytes(state) if dry_run else self.log.blobs.put(state))
            rec_steps = [fs]
        plan = _Plan(apath, rel, current, state, mode, change, rec_steps)
        if live_nb is not None and state is not None:
            plan.live = _live_rewind(bridge, path, state, mode, rec_steps if cell_level else None)
        return plan


    # -- whole-notebook fallback ---------------------------------------------------
    def path_steps(self, rel: str) -> list[Step]:
        return [s for i, r in enumerate(self.log.read_records()) if r.get("r") in CHANGE_KINDS for p, s in record_steps(r, i) if p == rel]

    def _exact_before(self, rel: str, first: Step, state: bytes) -> bytes | None:
        """The bytes of the notebook before cell step ``first`` if ``state`` is the same notebook, formatted by nbformat."""
        try:
            if first.base:
                if first.base_kind == "cells":
                    return None  # that notebook was in nbformat's form: ``state`` differs in content
                if first.base_canon:
                    return self.log.blobs.get(first.base) if hash_bytes(state) == first.base_canon else None
                exact: bytes | None = self.log.blobs.get(first.base)
            else:
                all_steps = self.path_steps(rel)
                k = next((n for n, s in enumerate(all_steps) if s.rec == first.rec and s.sub == first.sub), 0)
                prev = all_steps[k - 1] if k > 0 else None
                if prev is None or prev.kind != "file" or not prev.after:
                    return None  # after a cell edit the notebook was in nbformat's form already
                exact = self.log.blobs.get(prev.after)
        except BlobMissingError:
            return None
        if exact is not None and dump_nb(load_nb(exact) or {}) == state:
            return exact
        return None

    def _state_before(self, rel: str, stop: Step) -> bytes | None:
        """The notebook just before cell step ``stop``: from the nearest full copy, re-applying the agent's ops."""
        return self.replay(rel, stop, inclusive=False)

    def _state_after(self, rel: str, stop: Step) -> bytes | None:
        return self.replay(rel, stop, inclusive=True)

    def replay(self, rel: str, stop: Step, inclusive: bool) -> bytes | None:
        all_steps = self.path_steps(rel)
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
                    data: bytes | None = self.log.backups.load_base(s.base, s.base_kind)
                    begin = a
                    break
                if s.kind == "file" and a < k:
                    if s.after is None and s.after_sig:
                        return None
                    data = self.log.blobs.get(s.after) if s.after else None
                    begin = a + 1
                    break
            except BlobMissingError:
                return None
        else:
            return None
        if begin >= end:
            return data
        nb = load_nb(data)
        if nb is None:
            return None
        for s in all_steps[begin:end]:
            if not forward_op(nb, s, self.log.backups.cell):
                return None
        out = dump_nb(nb)
        want = stop.nb_after if inclusive else stop.nb_before
        if want and hash_bytes(out) != want:
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
    target_nb = load_nb(data)

    def live() -> None:
        if edits is not None and all(bridge.apply(path, e) for e in edits):
            return
        replace_all = getattr(bridge, "replace_all", None)
        if target_nb is not None and replace_all is not None and replace_all(path, target_nb):
            return
        write_atomic(path, data, mode)

    return live


def _is_after(step: Step, cur_hash: str | None, st: os.stat_result | None) -> bool:
    """Whether what is on disk (its hash, its stat) is what ``step`` left there."""
    if step.after is None and step.after_sig:
        return st is not None and [st.st_size, st.st_mtime_ns] == list(step.after_sig)
    return cur_hash == step.after or (step.prewrite and cur_hash == step.before)



def _depth(d: str) -> int:
    return d.rstrip("/").count("/")

