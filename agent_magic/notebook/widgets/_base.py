"""Shared base of agent-magic's anywidgets: bundled ES modules and CSS, errors shown in the widget,
and readable text/plain and text/html fallbacks for saved notebooks.

Every widget's ES module is ``static/common.js`` (small DOM helpers) followed
by its own file, so each module stays self-contained: no imports, no CDN, no
build step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..._errors import AgentMagicError

STATIC = Path(__file__).parent / "static"


def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _module(name: str) -> str:
    """An ES module: the shared helpers, then the widget's own code (which has the ``export``)."""
    return _asset("common.js") + "\n" + _asset(name)


def _ipython_display() -> Any:
    from IPython import display as ipd

    return ipd.display


class ActionRefused(AgentMagicError):
    """A widget action that cannot run now (a turn is running, nothing to fork, ...); shown in the widget."""


class Widget(anywidget.AnyWidget):
    """An anywidget whose front-end code ships inside the package.

    Subclasses describe themselves for places where the widget cannot be shown
    (a saved notebook reopened without its kernel, nbconvert, GitHub) in
    :meth:`fallback_text` and :meth:`fallback_html`.
    """

    _css = _asset("agent-magic.css")
    error = traitlets.Unicode("", help="The last failed action, in one line (shown in the widget).").tag(sync=True)
    stale = traitlets.Unicode(
        "", help="Why the widget no longer matches its session (deleted, ...): shown, and its actions are off."
    ).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._display_id: str | None = None

    # -- events ----------------------------------------------------------------
    def on_event(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Register ``handler(content: dict)`` for messages from the front end; errors are shown, not lost.

        ipywidgets only reports a callback's exception while it handles a comm
        message, and then only in the log; here it lands in the ``error`` trait.
        """

        def _dispatch(_widget: Any, content: Any, _buffers: Any) -> None:
            if not isinstance(content, dict):
                return
            if content.get("type") not in ("rendered", "refresh"):
                self.error = ""
            with self.reporting():
                handler(content)

        self.on_msg(_dispatch)

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Run a block; an exception in it becomes the widget's ``error`` line instead of propagating."""
        try:
            yield
        except Exception as e:  # handlers report their own errors in the widget
            self.report_error(str(e) if isinstance(e, AgentMagicError) else f"{type(e).__name__}: {e}")

    def report_error(self, text: str) -> None:
        self.error = text

    # -- displays ----------------------------------------------------------------
    def fallback_text(self) -> str:
        """What a saved notebook shows where the widget cannot be rendered."""
        return type(self).__name__

    def fallback_html(self) -> str | None:
        """An HTML version of :meth:`fallback_text` (None: text only)."""
        return None

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = (dict(bundle[0]), dict(bundle[1])) if bundle is not None else ({}, {})
        data["text/plain"] = self.fallback_text()
        # Marks the output as ours: the labextension shows the saved summary when the model is gone.
        data["application/vnd.agent-magic.widget+json"] = {"widget": type(self).__name__}
        rich = self.fallback_html()
        if rich is not None:
            data["text/html"] = rich
        return data, metadata

    def _ipython_display_(self) -> None:
        # Displayed with a display id, so refresh_display() can rewrite the fallbacks
        # a saved notebook keeps once the widget has changed.
        from ...store.home import new_uuid

        if self._display_id is None:
            self._display_id = new_uuid()
        data, metadata = self._repr_mimebundle_()
        _ipython_display()(data, metadata=metadata, raw=True, display_id=self._display_id)

    def refresh_display(self) -> None:
        """Rewrite the outputs showing this widget, so saved notebooks keep its latest fallbacks."""
        if self._display_id is None:
            return
        data, metadata = self._repr_mimebundle_()
        _ipython_display()(data, metadata=metadata, raw=True, display_id=self._display_id, update=True)


# -- helpers for actions ---------------------------------------------------------------
def home_of(magics: Any) -> str | None:
    """The session store the magics use (``AgentMagics.home``, else ``$AGENT_MAGIC_HOME``)."""
    home = getattr(magics, "home", "") if magics is not None else ""
    return str(home) if home else None


def turn_running(magics: Any) -> bool:
    runner = getattr(magics, "runner", None)
    return runner is not None and getattr(runner, "active", None) is not None


def ensure_idle(magics: Any, action: str) -> None:
    """Refuse an action that would conflict with the turn running in this kernel."""
    if turn_running(magics):
        raise ActionRefused(f"A turn is running in this notebook: wait for it to finish (or click Stop), then {action}.")


def end_of_turn(session_id: str, checkpoint_id: str, *, home: str | None) -> str | None:
    """The last message of the turn a checkpoint starts (None: the turn is the session's last)."""
    from ... import _api

    msgs = _api.get_session_messages(session_id, home=home)
    idx = next((i for i, m in enumerate(msgs) if m.uuid == checkpoint_id), None)
    if idx is None:
        raise ActionRefused(f"Checkpoint {checkpoint_id[:8]} is not in session {session_id[:8]} any more.")
    end = idx
    for j in range(idx + 1, len(msgs)):
        if msgs[j].is_prompt:
            break
        end = j
    return None if end == len(msgs) - 1 else msgs[end].uuid


def session_row(info: Any, current: str | None = None) -> dict[str, Any]:
    """A session as the widgets' front end shows it."""
    return {
        "id": info.session_id,
        # The title, a fork's "fork of … at turn N", else the first prompt: sessions tell apart.
        "title": info.summary or "",
        "titled": bool(info.title),
        "last_active": info.last_modified,
        "created": info.created_at,
        "turns": info.num_turns,
        "cost": info.total_cost_usd if info.cost_known else None,
        "parent": info.parent_session_id or "",
        "scope": info.scope,
        "model": info.model or "",
        "current": info.session_id == current,
    }
