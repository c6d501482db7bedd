"""Notebook cells: nbformat's own form without importing it, and undoing cell edits one by one.

A notebook is compared and written exactly as ``nbformat.write`` writes it
(``dump_nb``), so a rewind restores it byte for byte. ``CellUndo`` undoes a run
of recorded cell ops on a parsed notebook, checking only each cell's newest op
against what is there, so the person's edits to other cells survive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .diffs import src_diff
from .records import CellChange, Conflict, Step

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


def canon_cell(cell: dict[str, Any]) -> dict[str, Any]:
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


def dump_nb(nb: dict[str, Any]) -> bytes:
    """Serialise a notebook byte for byte as ``nbformat.write`` (and the NotebookEdit tool) do."""
    out = {k: v for k, v in nb.items() if k != "cells"}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in ("orig_nbformat", "orig_nbformat_minor", "signature")}
    out["cells"] = [canon_cell(c) if isinstance(c, dict) else c for c in nb.get("cells", [])]
    text = json.dumps(out, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
    return (text + "\n").encode("utf-8", "surrogateescape")


def load_nb(data: bytes | None) -> dict[str, Any] | None:
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


def cell_bytes(cell: dict[str, Any]) -> bytes:
    return json.dumps(canon_cell(cell), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogateescape"
    )


def cell_source(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def cell_key(cell: dict[str, Any] | None) -> tuple[str, str] | None:
    """What counts as a person's edit of a cell: its type and source (not outputs: running it is no edit)."""
    if cell is None:
        return None
    return (str(cell.get("cell_type")), cell_source(cell))


def cell_ids(nb: dict[str, Any]) -> list[str]:
    """The ids the NotebookEdit tool uses: the cell's id, or ``cell-<index>`` when it has none."""
    out = []
    for i, c in enumerate(nb.get("cells", [])):
        cid = c.get("id")
        out.append(cid if isinstance(cid, str) and cid else f"cell-{i}")
    return out


def same_sources(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return False
    return [cell_key(c) for c in a.get("cells", [])] == [cell_key(c) for c in b.get("cells", [])]




class CellUndo:
    """Undo a run of cell ops on a parsed notebook, cell by cell."""

    def __init__(
        self, cell: Callable[[str | None], dict[str, Any] | None], rel: str, nb: dict[str, Any], check: bool, want_diffs: bool
    ) -> None:
        self.cell = cell  # a cell backup by digest
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
            self._id_list = cell_ids(self.nb)
            self._id_index = {cid: i for i, cid in reversed(list(enumerate(self._id_list)))}
        return self._id_list

    def _find(self, cid: str) -> int | None:
        self._ids()
        return self._id_index.get(cid)

    def _prev_of(self, idx: int) -> str | None:
        return self._ids()[idx - 1] if idx > 0 else None

    def _diff(self, old: str, new: str, cid: str) -> str:
        return src_diff(old, new, cid) if self.want_diffs else ""

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

    def _reinsert(self, step: Step, cid: str, cell: dict[str, Any]) -> None:
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
            self.changes.append(CellChange(cid, action, self._diff(cell_source(now), cell_source(end), cid)))

    def run(self, run: list[Step]) -> None:
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
                before = self.cell(run[f].before)
            else:
                before = self.cell(step.before)
            after = self.cell(step.after) if check else None
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
                if check and cell_key(cur) != cell_key(after):
                    own_before = self.cell(step.before) if step.op == "replace" else None
                    if own_before is None or cell_key(cur) != cell_key(own_before):
                        self.conflicts.append(Conflict(self.rel, "the cell was edited by someone else after the agent", cid))
                        skip.add(cid)
                        continue
                    # Still as it was before this op: its write never happened (the process died
                    # between the record and the write) or the person put it back. Nothing to undo
                    # for this op; older ops of the cell are undone as usual.
                if step.op == "replace" and before is not None:
                    if cell_bytes(cur) != cell_bytes(before):
                        self._replace(idx, cid, before)
                else:
                    self._remove(idx, cid)
            elif step.op == "delete":
                if before is None:
                    continue
                if idx is not None and self._cells()[idx].get("id") != cid:
                    idx = None  # a position (cell-N, no ids): the cells after it moved up
                if idx is not None:
                    if check and cell_key(self._cells()[idx]) == cell_key(before):
                        continue  # the delete never reached the notebook (a crash before the write)
                    if check:
                        self.conflicts.append(Conflict(self.rel, "a cell with this id exists again", cid))
                        skip.add(cid)
                    elif cell_bytes(self._cells()[idx]) != cell_bytes(before):
                        self._replace(idx, cid, before)
                    continue
                self._reinsert(step, cid, before)
        self._summarise()


def reconcilable(nb: dict[str, Any], run: list[Step]) -> bool:
    """False when the cells the agent touched, and their neighbours, are all gone (ids regenerated)."""
    ids = set(cell_ids(nb))
    newest: dict[str, str] = {}
    for s in run:
        newest[s.cell_id] = s.op
    expected = {c for c, op in newest.items() if op in ("replace", "insert")}
    anchors = {s.prev for s in run if s.prev} - set(newest)
    if not expected and not anchors:
        return True
    return bool(ids & (expected | anchors))


def forward_op(nb: dict[str, Any], s: Step, cell: Callable[[str | None], dict[str, Any] | None]) -> bool:
    """Re-apply one recorded cell op to ``nb``; False when it does not fit."""
    cells: list[dict[str, Any]] = nb["cells"]
    ids = cell_ids(nb)
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


