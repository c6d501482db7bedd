"""Widgets in cell output: the session bar (Stop while a turn runs), approval prompts,
the session browser and the checkpoint slider.

Built with anywidget: the ES modules and CSS ship in ``static/`` (no CDN, no
build step). Every function here is called on the kernel's main thread, by
:class:`~agent_magic.notebook._magics.AgentMagics` (``magics``). Actions call
the public API (:mod:`agent_magic`), and show their errors in the widget.

Widgets follow their session: after every turn, bars update "turn N of M" and
the current session, sliders reload their checkpoints (and recompute a shown
preview), session tables reload; a widget whose session is gone, or whose
kernel restarted, says it is stale and turns its actions off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...checkpoints import CheckpointInfo
from ...store.transcript import SessionInfo
from ._approval import ApprovalWidget, preview_for, show_approval
from ._bar import SessionBar, finish_bar, new_bar
from ._base import ActionRefused, Widget
from ._browser import SessionBrowser, new_browser
from ._slider import CheckpointSlider, new_slider

#: The bar was called TurnControls while it only had a Stop button.
TurnControls = SessionBar


def _display(obj: Any) -> None:
    from ._base import _ipython_display

    _ipython_display()(obj)


def turn_controls(magics: Any) -> SessionBar:
    """Show the bar of the turn about to run (a Stop button until :func:`session_bar` fills it in)."""
    bar = new_bar(magics)
    _display(bar)
    return bar


def session_bar(magics: Any, result: Any, provenance: dict[str, Any], controls: Any = None) -> SessionBar:
    """After a turn: turn its controls into the session bar (session, turn N of M, Fork, Resume, cost)."""
    bar = controls if isinstance(controls, SessionBar) else None
    if bar is None:
        bar = new_bar(magics)
        _display(bar)
    finish_bar(bar, magics, result, provenance)
    # Widgets follow their session: sliders and session tables shown earlier catch up with this turn.
    from . import _browser, _slider

    _slider.follow_all(magics)
    _browser.follow_all(magics)
    return bar


def approval(magics: Any, payload: dict[str, Any], reply: Any, *, timeout: float) -> ApprovalWidget:
    """Ask the person to approve a tool call (see :func:`show_approval`)."""
    w = show_approval(payload, reply, timeout=timeout, display=_display, cwd=Path.cwd())
    magics.open_prompts.append(w)
    return w


def session_browser(
    rows: list[SessionInfo], *, current: str | None, scope: str | None, magics: Any = None
) -> SessionBrowser | None:
    """The sortable session table of ``%agent sessions``, forks as a tree; None outside a kernel."""
    magics = magics if magics is not None else _magics_of_shell()
    if magics is None:
        return None
    return new_browser(magics, rows, current=current, scope=scope)


def checkpoint_slider(magics: Any, session_id: str, checkpoints: list[CheckpointInfo]) -> CheckpointSlider | None:
    """The rewind slider of ``%agent checkpoints``; None without checkpoints (the table says why)."""
    if magics is None or not checkpoints:
        return None
    return new_slider(magics, session_id, checkpoints)


def _magics_of_shell() -> Any:
    from IPython.core.getipython import get_ipython

    from .. import state

    st = state(get_ipython())
    return st["magics"] if st is not None else None


__all__ = [
    "ActionRefused",
    "ApprovalWidget",
    "CheckpointSlider",
    "SessionBar",
    "SessionBrowser",
    "TurnControls",
    "Widget",
    "approval",
    "checkpoint_slider",
    "preview_for",
    "session_bar",
    "session_browser",
    "turn_controls",
]
