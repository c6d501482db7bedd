"""Kernel variables in checkpoints: a snapshot before the agent's code runs, a restore on rewind.

Before each execution of the agent's code in the kernel (the ``Python`` tool, a kernel
function called as a tool), on the kernel's main thread, :func:`names_touched` says
which of the person's variables the code can change and
:class:`~agent_magic.checkpoints.variables.VariableSnapshots` stores them; the tool
appends the snapshot's record to the session's checkpoint log under the current turn
(``{"r": "variables"}``), and tells the model what could not be stored.

A rewind from this kernel (``%agent rewind``, the slider, ``agent_magic.rewind`` in a
cell; the sidebar calls :func:`kernel_rewind` through a silent execute request) passes the records of the turns it
undoes to :meth:`KernelState.rewind`, registered with ``_api.set_kernel_rewinder``: the
dry run lists each variable with its type and size and what cannot be restored; the
rewind restores in the same ``user_ns``, in place where the live object is the one
snapshotted, and deletes what the undone code created.

Snapshots are worth something only to the kernel process that took them: they live under
``<store>/kernel-snapshots/<kernel id>/`` (buffers shared by every session of the kernel,
stored once), are removed when the kernel exits, and a folder left by a kernel that died
is swept when the next one starts. Records from another kernel (before a restart) are
skipped with a note, never applied to the new kernel's variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import RewindResult
from ..checkpoints.variables import SnapshotRecord, VariableSnapshots, names_touched
from ..checkpoints.variables.values import why_not_restorable
from ..store.home import default_home, new_uuid

GB = 1 << 30
ROOT_NAME = "kernel-snapshots"


@dataclass
class SnapshotSettings:
    """The person's settings (``%config AgentMagics.kernel_snapshots`` and the caps)."""

    enabled: bool = True
    max_variable_bytes: int = 2 * GB
    max_turn_bytes: int = 4 * GB


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KernelState:
    """This kernel's variable snapshots: taken before the agent's code, put back on a rewind.

    Parameters
    ----------
    namespace
        Returns the person's namespace (``user_ns``).
    home
        Returns the session store folder (None: the default store).
    settings
        Returns the current :class:`SnapshotSettings`.
    """

    def __init__(
        self,
        namespace: Callable[[], dict[str, Any]],
        home: Callable[[], str | None],
        settings: Callable[[], SnapshotSettings],
    ) -> None:
        self.namespace = namespace
        self.home = home
        self.settings = settings
        self.kernel_id = new_uuid()
        self._store: VariableSnapshots | None = None
        #: Bytes stored per turn (checkpoint id), against the per-turn cap.
        self._turn_bytes: dict[str, int] = {}

    # -- the store ---------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.home() or default_home()) / ROOT_NAME / self.kernel_id

    def store(self) -> VariableSnapshots:
        """The snapshot store of this kernel (made, and dead kernels' folders swept, on first use)."""
        if self._store is None:
            root = self.root
            sweep_dead_kernels(root.parent)
            root.mkdir(parents=True, exist_ok=True)
            (root / "kernel.json").write_text(json.dumps({"pid": os.getpid()}))
            st = self.settings()
            self._store = VariableSnapshots(root, max_variable_bytes=st.max_variable_bytes, max_snapshot_bytes=st.max_turn_bytes)
        return self._store

    def close(self) -> None:
        """The kernel is going away: its snapshots are of no use to anyone."""
        self._store = None
        shutil.rmtree(self.root, ignore_errors=True)

    # -- before the agent's code -------------------------------------------------------
    def before_code(self, code: str, *, turn: str, extra_names: Iterable[str] = ()) -> dict[str, Any] | None:
        """Snapshot what ``code`` can change; on the kernel's main thread, just before it runs.

        Returns
        -------
        dict or None
            ``{"key", "record", "not_restorable"}`` for the checkpoint log and the tool's result;
            None when snapshots are off or nothing in the namespace can change.
        """
        st = self.settings()
        if not st.enabled:
            return None
        ns = self.namespace()
        touched = names_touched(code, ns)
        names = set(touched.names) | {n for n in extra_names if n.isidentifier()}
        if not names:
            return None
        store = self.store()
        used = self._turn_bytes.get(turn, 0)
        store.max_variable_bytes = st.max_variable_bytes
        store.max_snapshot_bytes = max(0, st.max_turn_bytes - used)
        key = new_uuid()
        record = store.snapshot(ns, names, key=key)
        self._turn_bytes[turn] = used + record.stored_bytes
        data = record.to_dict()
        data["kernel"] = self.kernel_id
        return {"key": key, "record": data, "not_restorable": record.not_restorable(), "names": sorted(names)}

    def after_code(self, snap: dict[str, Any]) -> None:
        """Just after the code ran: which of its names now hold values no snapshot can keep (a generator
        it made, an open file). A rewind past this code deletes or restores them as usual; the note is
        for the model and the rewind preview (``unrestorable_after`` in the record)."""
        ns = self.namespace()
        found = {}
        for name in snap.get("names", []):
            if name in ns:
                why = why_not_restorable(ns[name])
                if why is not None:
                    found[name] = why
        if found:
            snap["unrestorable_after"] = found
            snap["record"]["unrestorable_after"] = found

    # -- rewind ---------------------------------------------------------------------------
    def rewind(self, session_id: str, records: list[dict[str, Any]], result: RewindResult, dry_run: bool) -> None:
        """Plan (dry run) or carry out the variable part of a rewind; fills ``result``'s variable fields."""
        mine = [SnapshotRecord.from_dict(r) for r in records if r.get("kernel") == self.kernel_id]
        if len(mine) < len(records):
            result.kernel_note = (
                f"{len(records) - len(mine)} snapshot(s) of this rewind were taken before the kernel restarted; "
                "the variables they hold are not restored (run the cells that make them)."
            )
        if not mine:
            return
        store = self.store()
        ns = self.namespace()
        plan = store.plan_restore(ns, mine)
        result.variables = [
            {"name": v.name, "action": v.action, "type": v.type, "size": v.size, "in_place": v.in_place}
            for v in plan.variables
            # A name to delete that is gone already (an earlier rewind, the person) needs nothing.
            if v.action == "restore" or (v.action == "delete" and v.name in ns)
        ]
        result.variables_not_restored = dict(plan.not_restorable)
        for rec in records:  # values the undone code left that could not have been kept (say so, even if deleted)
            for name, why in (rec.get("unrestorable_after") or {}).items():
                planned = next((v for v in plan.variables if v.name == name), None)
                if planned is not None and planned.action == "delete":
                    why = f"{why.split(';')[0]}; it did not exist before that turn, so the rewind deletes it"
                result.variables_not_restored.setdefault(name, why)
        result.variable_warnings = list(plan.warnings)
        if dry_run:
            return
        done = store.restore(ns, plan)
        result.variables_not_restored.update(done.not_restored)
        result.variable_warnings = list(dict.fromkeys([*result.variable_warnings, *done.warnings]))
        failed = set(done.not_restored)
        result.variables = [v for v in result.variables if v["name"] not in failed]

    # -- %agent kernel-checkpoints ----------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """What this kernel's snapshots hold: their count, names and the disk they use."""
        if self._store is None:
            return {"root": str(self.root), "snapshots": [], "bytes": 0, "enabled": self.settings().enabled}
        store = self._store
        rows: list[dict[str, Any]] = []
        keys = store.keys()
        for key in keys:
            with contextlib.suppress(Exception):  # one damaged record must not hide the others
                rec = store.record(key)
                rows.append({"key": key, "created_ms": rec.created_ms, "names": sorted(rec.variables), "bytes": rec.stored_bytes})
        rows.sort(key=lambda r: int(r["created_ms"]))
        disk = store.disk_usage()
        return {"root": str(self.root), "snapshots": rows, "bytes": disk.total_bytes, "enabled": self.settings().enabled}

    def forget(self, keys: Iterable[str]) -> int:
        """Delete the snapshots ``keys`` (a deleted session's); returns the bytes freed."""
        if self._store is None:
            return 0
        keep = set(self._store.keys()) - set(keys)
        return self._store.gc(keep)


def sweep_dead_kernels(parent: Path) -> int:
    """Remove the snapshot folders of kernels that are no longer running; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            pid = int(json.loads(Path(entry.path, "kernel.json").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being made right now, or not ours: leave it
        if not _alive(pid):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def kernel_rewind(session_id: str, checkpoint_id: str, dry_run: bool) -> str:
    """The variable part of a rewind in this kernel, for the JupyterLab sidebar.

    The sidebar rewinds files and cells through the Jupyter server, where no kernel is; then it
    evaluates this call in the notebook's kernel (a silent execute request's ``user_expressions``,
    so it runs on the main thread, after any running cell) to preview or restore the variables
    with the rewinder the extension registered, exactly as ``%agent rewind`` does.

    Parameters
    ----------
    session_id, checkpoint_id
        The session and the checkpoint to rewind to before (ids or unique prefixes).
    dry_run
        Only say what a rewind would do.

    Returns
    -------
    str
        JSON (ASCII only): ``{"loaded", "dry_run", "variables", "variables_not_restored",
        "variable_warnings", "kernel_note"}`` as in :class:`~agent_magic.checkpoints.RewindResult`.
        ``loaded`` is false, with a note, when agent_magic is not loaded in this kernel; a session
        or checkpoint that is not found is a note too.
    """
    from IPython.core.getipython import get_ipython

    from .. import _api
    from .._errors import AgentMagicError
    from . import state

    result = RewindResult(checkpoint_id, dry_run)
    st = state(get_ipython())  # type: ignore[no-untyped-call]  # IPython leaves it unannotated
    loaded = st is not None and _api._kernel_rewinder is not None
    if st is None or not loaded:
        result.kernel_note = "agent_magic is not loaded in this kernel (run `%load_ext agent_magic`)."
    else:
        try:
            _api._rewind_kernel(session_id, result, dry_run=dry_run, kernel=True, home=st["magics"]._home())
        except AgentMagicError as e:  # no such session or checkpoint here: the sidebar shows why
            result.kernel_note = str(e)
    return json.dumps({
        "loaded": loaded,
        "dry_run": dry_run,
        "variables": result.variables,
        "variables_not_restored": result.variables_not_restored,
        "variable_warnings": result.variable_warnings,
        "kernel_note": result.kernel_note,
    })
