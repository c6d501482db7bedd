"""Checkpoints and rewind: every change the agent makes, undoable, files and notebook cells.

The package, by idea: ``records`` (the record kinds and result types), ``backups``
(content-addressed copies), ``cells`` (notebook cells in nbformat's form, undone one
by one), ``bash_scan`` (what a Bash command changed), ``rewind`` (planning and
applying a rewind), ``diffs`` (previews) and ``log`` (one session's log, tying them
together).

A checkpoint is the uuid of the prompt that starts a turn. Before any tool
changes anything, a record is appended to ``checkpoints.jsonl`` (write-ahead:
the backup blob is stored and the record written before the file is touched).
Blobs are content-addressed and compressed (:class:`~agent_magic.store.blobs.BlobStore`),
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

from .log import CheckpointLog
from .records import (
    MIN_PREFIX,
    CellChange,
    CheckpointInfo,
    Conflict,
    FileChange,
    RewindResult,
    blobs_referenced,
)

__all__ = [
    "MIN_PREFIX",
    "CellChange",
    "CheckpointInfo",
    "CheckpointLog",
    "Conflict",
    "FileChange",
    "RewindResult",
    "blobs_referenced",
]
