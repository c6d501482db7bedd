"""The session browser (``%agent sessions``): a sortable table with forks as a tree,
and Resume / Fork on every row.
"""

from __future__ import annotations

import weakref
from typing import Any

import traitlets

from ... import _api
from ...store.transcript import SessionInfo
from .._views import _short, sessions_table
from ._base import Widget, _module, ensure_idle, home_of, session_row

SORT_KEYS = ("last_active", "turns", "cost", "title")


class SessionBrowser(Widget):
    """This notebook's sessions (or every session), forks indented under their parents."""

    _esm = _module("browser.js")
    rows = traitlets.List(traitlets.Dict(), help="The sessions: id, title, last_active, turns, cost, parent, current.").tag(sync=True)
    current = traitlets.Unicode("", help="The session this notebook's next %%agent cell continues.").tag(sync=True)
    scope = traitlets.Unicode("", help="The notebook whose sessions these are ('' for every scope).").tag(sync=True)
    sort_key = traitlets.Unicode("last_active", help="Column the rows are sorted by: last_active, turns, cost or title.").tag(sync=True)
    sort_desc = traitlets.Bool(True, help="Sort descending.").tag(sync=True)
    notice = traitlets.Unicode("", help="What the last action did.").tag(sync=True)

    def __init__(self, infos: list[SessionInfo] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infos: list[SessionInfo] = list(infos or [])

    @traitlets.validate("sort_key")
    def _valid_sort_key(self, proposal: Any) -> str:
        value = str(proposal["value"])
        return value if value in SORT_KEYS else "last_active"

    def fallback_text(self) -> str:
        out = repr(sessions_table(self._infos, current=self.current or None, scope=self.scope or None))
        return out + (f"\n{self.notice}" if self.notice else "")

    def fallback_html(self) -> str | None:
        return sessions_table(self._infos, current=self.current or None, scope=self.scope or None)._repr_html_()


# Browsers shown in each kernel (per AgentMagics): each reloads its rows after every turn.
_LIVE: weakref.WeakKeyDictionary[Any, list[SessionBrowser]] = weakref.WeakKeyDictionary()


def live_browsers(magics: Any) -> list[SessionBrowser]:
    browsers = _LIVE.setdefault(magics, [])
    browsers[:] = [w for w in browsers if w.comm is not None]
    return browsers


def new_browser(magics: Any, infos: list[SessionInfo], *, current: str | None, scope: str | None) -> SessionBrowser:
    w = SessionBrowser(infos, rows=[session_row(i, current) for i in infos], current=current or "", scope=scope or "")
    w.on_event(lambda content: _on_event(w, magics, content))
    live_browsers(magics).append(w)
    return w


def follow_all(magics: Any) -> None:
    """After a turn: every live session browser shows the sessions as they are now."""
    for w in live_browsers(magics):
        with w.reporting():
            reload(w, magics)


def _on_event(w: SessionBrowser, magics: Any, content: dict[str, Any]) -> None:
    kind = content.get("type")
    sid = str(content.get("session_id") or "")
    if kind in ("resume", "fork"):
        reload(w, magics)  # act on the sessions as they are now, not as they were shown
    if kind == "resume":
        resume(w, magics, sid)
    elif kind == "fork":
        fork(w, magics, sid)
    elif kind == "refresh":
        reload(w, magics)


def reload(w: SessionBrowser, magics: Any) -> None:
    home = home_of(magics)
    infos = _api.list_sessions(scope=w.scope, home=home) if w.scope else _api.list_sessions(home=home)
    current = _api.current_session(magics.current_scope(), home=home) or ""
    w._infos = infos
    with w.hold_sync():
        w.current = current
        w.rows = [session_row(i, current) for i in infos]


def resume(w: SessionBrowser, magics: Any, session_id: str) -> None:
    """Make a session the one this notebook's next ``%%agent`` cell continues."""
    home = home_of(magics)
    info = _api.get_session_info(session_id, home=home)
    _api.set_current_session(magics.current_scope(), info.session_id, home=home)
    reload(w, magics)
    name = _short(info.summary or "", 60)
    w.notice = f"Resumed {info.session_id[:8]}" + (f" ({name})" if name else "") + ": the next %%agent cell continues it."
    _announce(magics, info.session_id)
    w.refresh_display()


def fork(w: SessionBrowser, magics: Any, session_id: str) -> str:
    """Fork a whole session into this notebook; the fork becomes current."""
    ensure_idle(magics, "fork")
    home = home_of(magics)
    sid = _api.get_session_info(session_id, home=home).session_id
    scope = magics.current_scope()
    new_id = _api.fork_session(sid, scope=scope, home=home)
    _api.set_current_session(scope, new_id, home=home)
    reload(w, magics)
    w.notice = f"Forked {sid[:8]} into {new_id[:8]}: the next %%agent cell continues the fork; {sid[:8]} is unchanged."
    _announce(magics, new_id)
    w.refresh_display()
    return new_id


def _announce(magics: Any, session_id: str) -> None:
    from ._bar import _announce_current

    _announce_current(magics, session_id)
