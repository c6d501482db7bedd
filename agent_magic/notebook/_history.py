"""Which notebook cells the kernel ran, and when: for "this cell's kernel state may be stale" hints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class ExecutionTracker:
    """Records, per cell id, when the kernel last ran it (front ends send cell ids since ipykernel 6)."""

    last_run: dict[str, float] = field(default_factory=dict)

    def pre_run_cell(self, info: Any) -> None:
        cell_id = getattr(info, "cell_id", None)
        if cell_id:
            self.last_run[str(cell_id)] = time.time()


def stale_cells(shell: Any, result: Any) -> list[str]:
    """Ids of cells a rewind restored that the kernel ran after the checkpoint's turn began."""
    from . import state

    st = state(shell) if shell is not None else None
    if st is None:
        return []
    tracker: ExecutionTracker = st["tracker"]
    ts = getattr(result, "checkpoint_timestamp", None)
    if not ts:
        return []
    try:
        since = datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return []
    out = []
    current = {v["name"] for v in getattr(result, "variables", None) or []}
    bridge = getattr(st.get("magics"), "notebook_bridge", None)
    ns = getattr(shell, "user_ns", None) or {}
    for path, cell_id in result.restored_cells:
        ran = tracker.last_run.get(cell_id)
        if ran is None or ran < since:
            continue
        if current and _made_current(_cell_source(path, cell_id, bridge), current, ns):
            continue  # the rewind put back every variable this cell sets: its state matches its code again
        out.append(cell_id)
    return out


def _cell_source(path: str, cell_id: str, bridge: Any) -> str | None:
    """The cell's source as the rewind left it: the open notebook's, else the file's."""
    from pathlib import Path

    nb: Any = None
    try:
        if bridge is not None and bridge.is_open(Path(path)):
            nb = bridge.read(Path(path))
        if nb is None:
            import nbformat

            nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    except Exception:  # unreadable: keep the cell marked, which is the safe side
        return None
    for cell in nb.get("cells", []):
        if cell.get("id") == cell_id:
            src = cell.get("source")
            return "".join(src) if isinstance(src, list) else str(src or "")
    return None


def _made_current(source: str | None, restored: set[str], ns: dict[str, Any]) -> bool:
    """Whether every variable ``source`` can set (assigns, or changes through an attribute, an item
    or a method) is among ``restored``; False when it sets none or cannot be read. Calls on modules
    (``pd.read_csv``) and builtins change no variable of the person's."""
    import ast
    import builtins
    import types

    if not source:
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False  # IPython syntax (magics): we cannot tell

    def base(node: ast.AST) -> str | None:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    sets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            sets.add(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            name = base(node)
            if name:
                sets.add(name)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = base(node.func)
            if name:
                sets.add(name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            sets.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            sets.update((a.asname or a.name).split(".")[0] for a in node.names)
    def a_variable(name: str) -> bool:
        if name in ns:
            return not isinstance(ns[name], types.ModuleType)
        return not hasattr(builtins, name)

    sets = {n for n in sets if a_variable(n)}
    return bool(sets) and sets <= restored
