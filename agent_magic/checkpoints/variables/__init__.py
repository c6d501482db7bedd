"""Kernel variable snapshots: undo what the agent's code did to the person's variables (issue 18).

Before each execution of the agent's code in the kernel, :func:`names_touched`
says which global names the code can change (from its AST, the user functions it
calls, and other names bound to the same objects), and
:meth:`VariableSnapshots.snapshot` stores their values: one pickle (protocol 5)
for all of them, so shared references stay shared, with the large buffers
(numpy arrays, pandas blocks) written out of band, each straight to a file named
by its content, so an unchanged array is stored once however many snapshots hold
it. What cannot be stored (generators, open files, sockets, locks, values over
the size caps) is recorded as not restorable with a one-line reason. The
:class:`SnapshotRecord` is a small JSON-able dict for the checkpoint log.

Rewinding takes the records of the executions being undone, oldest first:
:meth:`VariableSnapshots.plan_restore` gives each name's earliest state (a
preview: type, size, what cannot be restored, warnings about values changed by
code that never named them) and :meth:`VariableSnapshots.restore` carries it
out in the same namespace dict, in place where the live object is the one
snapshotted, and deletes the names the undone code created.

No IPython here: everything works on a plain namespace dict (``user_ns``).
"""

from __future__ import annotations

from .names import TouchedNames, is_ignored, names_touched
from .records import (
    DiskUsage,
    PlannedVariable,
    RestorePlan,
    RestoreResult,
    SnapshotDataError,
    SnapshotKeyError,
    SnapshotRecord,
    VariableRecord,
)
from .store import VariableSnapshots
from .values import fingerprint

__all__ = [
    "DiskUsage",
    "PlannedVariable",
    "RestorePlan",
    "RestoreResult",
    "SnapshotDataError",
    "SnapshotKeyError",
    "SnapshotRecord",
    "TouchedNames",
    "VariableRecord",
    "VariableSnapshots",
    "fingerprint",
    "is_ignored",
    "names_touched",
]
