"""The checkpoint slider (``%agent checkpoints``): pick a turn, see what a rewind to just before it
would change (the dry run, with diffs and conflicts), and rewind after one confirmation.
"""

from __future__ import annotations

import html
import weakref
from typing import Any

import traitlets

from ... import _api
from ...checkpoints import CheckpointInfo, RewindResult
from .._views import RewindView, checkpoints_table
from ._base import ActionRefused, Widget, _module, ensure_idle, home_of


class CheckpointSlider(Widget):
    """A slider over a session's turns with the rewind preview of the chosen one."""

    _esm = _module("slider.js")
    session_id = traitlets.Unicode("", help="The session whose checkpoints these are.").tag(sync=True)
    checkpoints = traitlets.List(
        traitlets.Dict(), help="One per turn, oldest first: id, turn, time, prompt, files, cells."
    ).tag(sync=True)
    position = traitlets.Int(0, help="Index into checkpoints; len(checkpoints) means now (nothing to rewind).").tag(sync=True)
    preview = traitlets.Dict(help="The dry run of rewinding to the selected checkpoint ({} at 'now').").tag(sync=True)
    conversation = traitlets.Bool(False, help="Also rewind the conversation (fork at that turn; the fork becomes current).").tag(sync=True)
    force = traitlets.Bool(False, help="Also overwrite paths and cells someone else changed since the agent.").tag(sync=True)
    confirming = traitlets.Bool(False, help="Rewind was clicked; waiting for Confirm or Cancel.").tag(sync=True)
    busy = traitlets.Bool(False, help="A preview or rewind is being computed.").tag(sync=True)
    result = traitlets.Dict(help="What the last rewind did, with cells whose kernel state may be stale.").tag(sync=True)
    notice = traitlets.Unicode("", help="One line about the last rewind.").tag(sync=True)

    def __init__(self, infos: list[CheckpointInfo] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infos: list[CheckpointInfo] = list(infos or [])
        self._last: RewindView | None = None

    @property
    def selected(self) -> dict[str, Any] | None:
        """The checkpoint the slider is on (None at 'now')."""
        if 0 <= self.position < len(self.checkpoints):
            return dict(self.checkpoints[self.position])
        return None

    def fallback_text(self) -> str:
        table = checkpoints_table(self.session_id, self._infos)
        table.note = (
            f"Rewind with `%agent rewind --turn N --session {self.session_id[:8]}` (--dry-run to preview, "
            "--conversation to fork the conversation too, --force over conflicts)." if self._infos else table.note
        )
        out = repr(table)
        if self._last is not None:
            out += "\n\nLast rewind:\n" + repr(self._last)
        return out

    def fallback_html(self) -> str | None:
        table = checkpoints_table(self.session_id, self._infos)
        out = table._repr_html_()
        if self._last is not None:
            lines = "".join(f"<li>{html.escape(line)}</li>" for line in self._last._lines())
            out += f"<p><b>Last rewind</b></p><ul>{lines}</ul>"
        return out


def checkpoint_rows(cps: list[CheckpointInfo]) -> list[dict[str, Any]]:
    return [
        {"id": c.checkpoint_id, "turn": c.turn, "time": c.timestamp, "prompt": c.prompt, "files": list(c.files), "cells": list(c.cells)}
        for c in cps
    ]


# Sliders shown in each kernel (per AgentMagics): each follows its session after every turn.
_LIVE: weakref.WeakKeyDictionary[Any, list[CheckpointSlider]] = weakref.WeakKeyDictionary()


def live_sliders(magics: Any) -> list[CheckpointSlider]:
    sliders = _LIVE.setdefault(magics, [])
    sliders[:] = [w for w in sliders if w.comm is not None]
    return sliders


def new_slider(magics: Any, session_id: str, cps: list[CheckpointInfo]) -> CheckpointSlider:
    w = CheckpointSlider(cps, session_id=session_id, checkpoints=checkpoint_rows(cps), position=len(cps))
    w.on_event(lambda content: _on_event(w, magics, content))
    live_sliders(magics).append(w)

    def force_changed(_change: Any) -> None:
        with w.reporting():
            w.confirming = False
            show_preview(w, magics)

    w.observe(force_changed, names="force")
    return w


def follow(w: CheckpointSlider, magics: Any, *, preview: bool = True) -> bool:
    """Bring the slider up to date with its session (new turns, a rewind elsewhere); False if it is gone.

    The selected checkpoint stays selected while it exists; its preview is
    recomputed, since the files and cells it compares with may have changed.
    """
    from ..._errors import SessionError

    try:
        cps = _api.list_checkpoints(w.session_id, home=home_of(magics))
    except SessionError:
        with w.hold_sync():
            w.stale = f"No session {w.session_id[:8]} any more (it was deleted): there is nothing left to rewind."
            w.confirming = False
            w.preview = {}
        return False
    rows = checkpoint_rows(cps)
    selected = w.selected
    if rows != w.checkpoints:
        ids = [r["id"] for r in rows]
        position = ids.index(selected["id"]) if selected is not None and selected["id"] in ids else len(rows)
        w._infos = list(cps)
        with w.hold_sync():
            w.stale = ""
            w.checkpoints = rows
            w.position = position
            w.confirming = False
    if preview and w.selected is not None and w.preview:
        show_preview(w, magics)
    elif w.selected is None:
        w.preview = {}
    return True


def follow_all(magics: Any, session_id: str | None = None) -> None:
    """After a turn: every live slider (of ``session_id``, or all) follows its session."""
    for w in live_sliders(magics):
        if session_id is None or w.session_id == session_id:
            with w.reporting():
                follow(w, magics)


def _on_event(w: CheckpointSlider, magics: Any, content: dict[str, Any]) -> None:
    kind = content.get("type")
    if kind in ("select", "rewind", "confirm") and not follow(w, magics, preview=kind == "rewind"):
        raise ActionRefused(w.stale)
    if kind == "select":
        select(w, magics, int(content.get("position", len(w.checkpoints))))
    elif kind == "rewind":
        ask_confirmation(w, magics)
    elif kind == "confirm":
        rewind(w, magics)
    elif kind == "cancel":
        w.confirming = False


def select(w: CheckpointSlider, magics: Any, position: int) -> None:
    """Move the slider: show what rewinding to just before that turn would change."""
    position = max(0, min(position, len(w.checkpoints)))
    with w.hold_sync():
        w.position = position
        w.confirming = False
    show_preview(w, magics)


def _conflict_keys(r: RewindResult) -> set[tuple[str, str | None]]:
    return {(c.path, c.cell_id) for c in r.conflicts}


def show_preview(w: CheckpointSlider, magics: Any) -> None:
    cp = w.selected
    if cp is None:
        w.preview = {}
        return
    home = home_of(magics)
    bridge = getattr(magics, "notebook_bridge", None)
    w.busy = True
    try:
        base = _api.rewind(w.session_id, cp["id"], dry_run=True, home=home, bridge=bridge)
        full = _api.rewind(w.session_id, cp["id"], dry_run=True, force=True, home=home, bridge=bridge) if w.force and base.conflicts else base
    except Exception:
        w.preview = {}
        raise
    finally:
        w.busy = False
    w.preview = preview_dict(base, full, cp, forced=w.force)


def preview_dict(base: RewindResult, full: RewindResult, cp: dict[str, Any], *, forced: bool) -> dict[str, Any]:
    """The dry run as the front end shows it; with ``forced``, changes over conflicts are marked."""
    keys = _conflict_keys(base) if forced else set()
    changes = []
    for ch in full.changes:
        changes.append({
            "path": ch.path,
            "action": ch.action,
            "note": ch.note or "",
            "diff": ch.diff,
            "forced": (ch.path, None) in keys,
            "cells": [
                {"cell_id": cc.cell_id, "action": cc.action, "diff": cc.diff, "forced": (ch.path, cc.cell_id) in keys}
                for cc in ch.cells
            ],
        })
    return {
        "checkpoint_id": cp["id"],
        "turn": cp["turn"],
        "summary": full.summary(),
        "changes": changes,
        "conflicts": [{"path": c.path, "cell_id": c.cell_id or "", "reason": c.reason} for c in base.conflicts],
        "forced": forced,
        "dirs_removed": list(full.dirs_removed),
        "dirs_created": list(full.dirs_created),
        "unrestorable": list(full.unrestorable),
        "notes": list(full.notes),
        **variables_dict(full),
    }


def variables_dict(r: RewindResult) -> dict[str, Any]:
    """The kernel-variable part of a rewind (or its preview), for the front end."""
    return {
        "variables": [dict(v) for v in r.variables],
        "variables_not_restored": [{"name": n, "reason": why} for n, why in sorted(r.variables_not_restored.items())],
        "variable_warnings": list(r.variable_warnings),
        "kernel_note": r.kernel_note or "",
    }


def ask_confirmation(w: CheckpointSlider, magics: Any) -> None:
    """The first step of a rewind: the widget asks "Confirm rewind to turn N?"."""
    ensure_idle(magics, "rewind")
    if w.selected is None:
        raise ActionRefused("Move the slider to the turn to rewind to first.")
    w.confirming = True


def rewind(w: CheckpointSlider, magics: Any) -> RewindResult:
    """The second step: rewind files and cells (and the conversation, if asked) to just before the turn."""
    ensure_idle(magics, "rewind")
    cp = w.selected
    if not w.confirming or cp is None:
        raise ActionRefused("Click Rewind first, then confirm.")
    home = home_of(magics)
    w.busy = True
    try:
        result = _api.rewind(
            w.session_id, cp["id"], conversation=w.conversation, force=w.force,
            home=home, bridge=getattr(magics, "notebook_bridge", None),
        )
    finally:
        with w.hold_sync():
            w.busy = False
            w.confirming = False
    if result.new_session_id:
        _api.set_current_session(magics.current_scope(), result.new_session_id, home=home)
    stale = list(magics.stale_cells(result))
    paths = dict((cid, path) for path, cid in result.restored_cells)
    links = magics.stale_links(result, stale) if stale else []
    w._last = RewindView(result, stale, links)
    notice = f"Rewound to before turn {cp['turn']}: {result.summary()}"
    if result.new_session_id:
        notice += f" The conversation was forked too: the next %%agent cell continues {result.new_session_id[:8]}."
    with w.hold_sync():
        w.result = {
            "checkpoint_id": cp["id"],
            "turn": cp["turn"],
            "summary": result.summary(),
            "changes": [
                {"path": c.path, "action": c.action, "note": c.note or "", "cells": [{"cell_id": cc.cell_id, "action": cc.action} for cc in c.cells]}
                for c in result.changes
            ],
            "conflicts": [{"path": c.path, "cell_id": c.cell_id or "", "reason": c.reason} for c in result.conflicts],
            "unrestorable": list(result.unrestorable),
            "dirs_removed": list(result.dirs_removed),
            "dirs_created": list(result.dirs_created),
            "new_session_id": result.new_session_id or "",
            **variables_dict(result),
            "stale": [{"cell_id": cid, "path": paths.get(cid, "")} for cid in stale],
            # The same cells with what the front end needs to link and mark them.
            "stale_cells": links,
        }
        w.notice = notice
        w.preview = {}
    from ._bar import _announce_current

    if result.new_session_id:
        _announce_current(magics, result.new_session_id)
    w.refresh_display()
    return result
