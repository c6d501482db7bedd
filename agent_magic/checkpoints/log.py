"""The checkpoint log of one session: records changes before they happen, lists and resolves checkpoints."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .._errors import AmbiguousIdError, CheckpointError, CheckpointNotFoundError, ToolError
from .._options import DEFAULT_CHECKPOINT_IGNORE
from .._safefs import rmdir_nofollow, unlink_nofollow
from ..store.blobs import BlobMissingError, BlobStore
from ..store.home import iso_now
from ..store.jsonl import JsonlFile, TranscriptWarning, parse_lines, read_raw_lines
from ..tools.base import CellEdit
from .backups import TEMP_TAIL, Backups, hash_bytes, lstat, read_bytes
from .bash_scan import BashScan
from .cells import cell_bytes
from .records import CHANGE_KINDS, MIN_PREFIX, MISSING, CheckpointInfo, RewindResult, record_steps
from .rewind import RewindPlanner


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
    inherited
        For a fork: returns the records it inherits from its parents (read once, when first needed).
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
        inherited: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.session_id = session_id
        self._inherited = inherited
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
        self._loaded_records: list[dict[str, Any]] | None = None
        self._after_map: dict[str, str | None] | None = None
        self._after_map_len = 0
        self._last_kind: dict[str, str] = {}
        self.backups = Backups(blobs)
        self.bash = BashScan(self)
        self.planner = RewindPlanner(self)

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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TranscriptWarning)
                if self.records.path is None:
                    own = parse_lines(self.records.raw_lines(), None)
                else:
                    own = parse_lines(read_raw_lines(self.records.path), self.records.path)
            # A fork's inherited records (from its parents, by reference) come first.
            self._loaded_records = (self._inherited() if self._inherited is not None else []) + own
        return self._loaded_records

    def _last_after(self, rel: str) -> str | None:
        """Hash of what the agent (or a rewind) last left at ``rel``; ``MISSING`` when nothing is recorded."""
        records = self.read_records()
        if self._after_map is None or self._after_map_len > len(records):
            self._after_map, self._after_map_len, self._last_kind = {}, 0, {}
        for i in range(self._after_map_len, len(records)):
            r = records[i]
            if r.get("r") == "cells":
                self._after_map[r["path"]] = r.get("nb_after")
                self._last_kind[r["path"]] = "cell"
            elif r.get("r") in CHANGE_KINDS:
                for p, s in record_steps(r, i):
                    if s.kind == "cell" and not s.nb_after:
                        continue  # a rewind's cell op before its last: the notebook's hash is on the last
                    self._after_map[p] = s.nb_after if s.kind == "cell" else s.after
                    self._last_kind[p] = s.kind
        self._after_map_len = len(records)
        return self._after_map.get(rel, MISSING)

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
        old = read_bytes(path)
        before = self.blobs.put(old) if old is not None else None
        # The new content is stored too: it is what a later rewind overwrites, and the
        # next change's "before"; it lets a rewind keep what it overwrote without copying.
        after = self.blobs.put(new_content) if new_content is not None else None
        st = lstat(path)
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
        nb_before = hash_bytes(notebook_bytes)
        rec: dict[str, Any] = {
            "r": "cells",
            "path": rel,
            "op": edit.op,
            "cell_id": edit.cell_id,
            "before": self.blobs.put(cell_bytes(edit.before_cell)) if edit.before_cell is not None else None,
            "after": self.blobs.put(cell_bytes(edit.after_cell)) if edit.after_cell is not None else None,
            "index": edit.index,
            "prev": edit.prev_cell_id,
            "nb_before": nb_before,
            "nb_after": hash_bytes(new_notebook_bytes),
        }
        if self._last_after(rel) != nb_before:
            rec.update(self.backups.store_base(notebook_bytes))
        self._append(rec)
        self._turn_files.append(rel)
        self._turn_cells.append(f"{rel}#{edit.cell_id}")

    # -- ChangeRecorder: Bash --------------------------------------------------------

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
            for s in reversed(self.planner.path_steps(rel)):
                if s.kind == "cell" and s.nb_after == digest:
                    data = self.planner.replay(rel, s, inclusive=True)
                    if data is not None:
                        return data
            raise


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
                        if e.name.startswith(prefix) and TEMP_TAIL.fullmatch(e.name[len(prefix):])
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
            if names and lstat(target) is None:
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
            elif kind == "variables":
                names = (r.get("record") or {}).get("variables") or {}
                info.variables.extend(n for n in names if isinstance(n, str))
        for info in out.values():
            info.files = list(dict.fromkeys(info.files))
            info.cells = list(dict.fromkeys(info.cells))
            info.variables = list(dict.fromkeys(info.variables))
        return list(out.values())

    # -- kernel variables (see checkpoints.variables; the notebook layer snapshots and restores) ----
    def record_variables(self, key: str, record: dict[str, Any]) -> None:
        """Note that the kernel's variables were snapshotted (as ``key``) before the agent's code ran."""
        self._need_turn()
        self._append({"r": "variables", "key": key, "record": record})

    def variable_records(self, checkpoint_id: str) -> list[dict[str, Any]]:
        """The variable snapshots taken since ``checkpoint_id``'s turn began, oldest first (``record`` dicts)."""
        cp = self.resolve(checkpoint_id)
        records = self.read_records()
        start = next((i for i, r in enumerate(records) if r.get("r") == "turn" and r.get("checkpoint") == cp), None)
        if start is None:
            return []
        return [r["record"] for r in records[start:] if r.get("r") == "variables" and isinstance(r.get("record"), dict)]

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
            return self.planner.rewind(checkpoint_id, dry_run, force, bridge)
        finally:
            self.backups.clear_cache()

    # -- ChangeRecorder: Bash (see bash_scan) ----------------------------------------
    def before_command(self) -> object:
        self._need_turn()
        return self.bash.before_command()

    def after_command(self, token: object) -> list[str]:
        return self.bash.after_command(token)

    def recover(self) -> int:
        """Finish a Bash record cut off by a crash: diff its manifest against the disk now.

        Returns the number of records completed.
        """
        return self.bash.recover()
