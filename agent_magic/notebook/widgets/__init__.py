"""Widgets in cell output: turn controls (Stop), approval prompts, session bar, browser, checkpoint slider.

Built with anywidget: the ES modules and CSS ship in ``static/`` (no CDN, no
build step). Every function here is called on the kernel's main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._approval import ApprovalWidget, preview_for, show_approval
from ._controls import TurnControls


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def turn_controls(magics: Any) -> TurnControls:
    """Show a Stop button for the turn about to run."""
    w = TurnControls()

    def on_event(content: dict[str, Any]) -> None:
        if content.get("type") == "stop" and w.running:
            w.stop_requested = True
            w.status = "Stopping…"
            magics.runner.interrupt()

    w.on_event(on_event)
    _display(w)
    return w


def approval(magics: Any, payload: dict[str, Any], reply: Any, *, timeout: float) -> ApprovalWidget:
    """Ask the person to approve a tool call (see :func:`show_approval`)."""
    w = show_approval(payload, reply, timeout=timeout, display=_display, cwd=Path.cwd())
    magics.open_prompts.append(w)
    return w


def session_bar(magics: Any, result: Any, provenance: dict[str, Any], controls: Any = None) -> Any:
    """After a turn: turn the controls into a summary line."""
    if controls is not None:
        controls.running = False
        controls.status = magics.last_view.footer.replace("`", "") if magics.last_view else ""
    return controls


def session_browser(rows: Any, *, current: str | None, scope: str | None) -> Any:
    return None


def checkpoint_slider(magics: Any, session_id: str, checkpoints: Any) -> Any:
    return None


__all__ = [
    "ApprovalWidget",
    "TurnControls",
    "approval",
    "checkpoint_slider",
    "preview_for",
    "session_bar",
    "session_browser",
    "turn_controls",
]
