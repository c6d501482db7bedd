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
    for _path, cell_id in result.restored_cells:
        ran = tracker.last_run.get(cell_id)
        if ran is not None and ran >= since:
            out.append(cell_id)
    return out
