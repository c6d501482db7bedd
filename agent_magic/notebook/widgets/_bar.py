"""The session bar under every ``%%agent`` output: Stop while the turn runs; then the session,
"turn N of M", tokens and cost, Fork (at this turn), and a Resume picker of the notebook's sessions.
"""

from __future__ import annotations

import html
import weakref
from typing import Any

import traitlets

from ... import _api
from ..._errors import SessionError
from .._display import context_share
from .._views import _short, plural
from ._base import ActionRefused, Widget, _module, end_of_turn, ensure_idle, home_of, session_row

_OUTCOMES = {
    "success": "",
    # The cell's error line explains an interruption; the bar only names the state.
    "interrupted": "Interrupted",
    "error_max_turns": "Stopped at the turn limit.",
    "error_max_budget_usd": "Stopped at the budget.",
    "error_during_execution": "The turn failed; see the message above.",
}


class SessionBar(Widget):
    """A Stop button while a turn runs; the turn's session bar after."""

    _esm = _module("bar.js")
    running = traitlets.Bool(True, help="The turn is running (Stop is shown).").tag(sync=True)
    status = traitlets.Unicode("Working…", help="One line about the turn (working, stopping, how it ended).").tag(sync=True)
    outcome = traitlets.Unicode("", help="How the turn ended: success, interrupted, error_... ('' while running).").tag(sync=True)
    session_id = traitlets.Unicode("", help="The turn's session.").tag(sync=True)
    turn = traitlets.Int(0, help="This turn's number in its session.").tag(sync=True)
    turns = traitlets.Int(0, help="Turns the session has now.").tag(sync=True)
    checkpoint_id = traitlets.Unicode("", help="The turn's checkpoint ('' if it was not saved).").tag(sync=True)
    forked_from = traitlets.Unicode("", help="The session this one was forked from.").tag(sync=True)
    input_tokens = traitlets.Int(None, allow_none=True, help="Input tokens of the turn (cached ones included).").tag(sync=True)
    cached_tokens = traitlets.Int(0, help="Input tokens of the turn read from the prompt cache.").tag(sync=True)
    output_tokens = traitlets.Int(None, allow_none=True, help="Output tokens of the turn.").tag(sync=True)
    cost_usd = traitlets.Float(None, allow_none=True, help="Cost of the turn in dollars (None: unknown).").tag(sync=True)
    context_tokens = traitlets.Int(
        None, allow_none=True, help="Tokens the conversation carries into its next request, after this turn (None: unknown)."
    ).tag(sync=True)
    context_window = traitlets.Int(None, allow_none=True, help="The model's context window in tokens (None: unknown).").tag(sync=True)
    saved = traitlets.Bool(True, help="The session is in the store (False for --no-persist turns).").tag(sync=True)
    current_session = traitlets.Unicode("", help="The session this notebook's next %%agent cell continues.").tag(sync=True)
    sessions = traitlets.List(traitlets.Dict(), help="This notebook's sessions, for the Resume picker.").tag(sync=True)
    notice = traitlets.Unicode("", help="What the last action did (fork, resume).").tag(sync=True)
    stop_requested = traitlets.Bool(False, help="Stop was clicked.")

    def fallback_text(self) -> str:
        if self.running or not self.session_id:
            return "agent-magic turn running (stop it with %agent stop)" if self.running else "agent-magic turn"
        sid = self.session_id[:8]
        # "of M" goes stale as the session grows; a saved notebook says only which turn this was.
        bits = [f"agent-magic session {sid}", f"turn {self.turn}"]
        if self.checkpoint_id:
            bits.append(f"checkpoint {self.checkpoint_id[:8]}")
        share = context_share(self.context_tokens, self.context_window)
        if share:
            bits.append(share)
        if self.status:
            bits.append(self.status)
        lines = [" · ".join(bits)]
        if self.checkpoint_id and self.saved:
            lines.append(f"Fork at this turn: %agent fork {sid} --turn {self.turn} · continue this session: %agent resume {sid}")
        if self.notice:
            lines.append(self.notice)
        return "\n".join(lines)

    def fallback_html(self) -> str | None:
        lines = self.fallback_text().splitlines()
        body = "<br>".join(html.escape(line) for line in lines)
        return f"<div class='am-fallback' style='font-size:85%;opacity:0.8'>{body}</div>"


# Bars shown in each kernel (per AgentMagics): later turns update "of M" and the current
# session on earlier bars, and a bar whose turn never finished stops offering Stop.
_LIVE: weakref.WeakKeyDictionary[Any, list[SessionBar]] = weakref.WeakKeyDictionary()


def _live(magics: Any) -> list[SessionBar]:
    bars = _LIVE.setdefault(magics, [])
    bars[:] = [b for b in bars if b.comm is not None]
    return bars


def new_bar(magics: Any) -> SessionBar:
    """A bar for a turn about to start, with its event handlers attached."""
    for other in _live(magics):
        if other.running:  # its turn ended without reaching the bar (an exception before the result)
            with other.hold_sync():
                other.running = False
                other.status = "The turn ended without a result."
    bar = SessionBar()
    bar.on_event(lambda content: _on_event(bar, magics, content))
    _live(magics).append(bar)
    return bar


def finish_bar(bar: SessionBar, magics: Any, result: Any, provenance: dict[str, Any]) -> None:
    """Fill the bar in when its turn has ended."""
    home = home_of(magics)
    sid = str(provenance.get("session_id") or (getattr(result, "session_id", None) or ""))
    turn = int(provenance.get("turn") or 0)
    turns = turn
    saved = False
    if sid:
        try:
            turns = _api.get_session_info(sid, home=home).num_turns
            saved = True
        except SessionError:
            saved = False
    outcome = str(getattr(result, "subtype", "") or "success") if result is not None else "error_during_execution"
    status = _OUTCOMES.get(outcome, outcome.replace("_", " ") + ".")
    if bar.stop_requested and outcome == "interrupted":
        status = "Stopped"
    current = _api.current_session(magics.current_scope(), home=home) or ""
    with bar.hold_sync():
        bar.running = False
        bar.outcome = outcome
        bar.status = status
        bar.session_id = sid
        bar.turn = turn
        bar.turns = turns
        bar.saved = saved
        bar.checkpoint_id = str(provenance.get("checkpoint_id") or "") if saved else ""
        bar.forked_from = str(provenance.get("forked_from") or "")
        bar.input_tokens = provenance.get("input_tokens")
        bar.cached_tokens = int(provenance.get("cached_tokens") or 0)
        bar.output_tokens = provenance.get("output_tokens")
        bar.cost_usd = provenance.get("cost_usd")
        bar.context_tokens = provenance.get("context_tokens")
        bar.context_window = provenance.get("context_window")
        pending = int(provenance.get("sync_pending") or 0)
        if pending:
            bar.status = f"{status} · not synced: {pending:,} entr{'ies' if pending != 1 else 'y'}"
        bar.current_session = current
    for other in _live(magics):
        if other is not bar:
            with other.hold_sync():
                if other.session_id == sid:
                    other.turns = turns
                other.current_session = current
    bar.refresh_display()


def _on_event(bar: SessionBar, magics: Any, content: dict[str, Any]) -> None:
    kind = content.get("type")
    if kind == "stop":
        _stop(bar, magics)
    elif kind == "fork":
        fork_here(bar, magics)
    elif kind == "resume":
        resume(bar, magics, str(content.get("session_id") or ""))
    elif kind == "refresh":
        refresh(bar, magics)


def _stop(bar: SessionBar, magics: Any) -> None:
    if not bar.running:
        return
    if getattr(magics.runner, "active", None) is None:
        with bar.hold_sync():
            bar.running = False
            bar.status = "The turn is not running any more."
        return
    with bar.hold_sync():
        bar.stop_requested = True
        bar.status = "Stopping…"
    magics.runner.interrupt()


def refresh(bar: SessionBar, magics: Any) -> None:
    """Reload the Resume picker's sessions, the session's turn count and the current session."""
    home = home_of(magics)
    scope = magics.current_scope()
    current = _api.current_session(scope, home=home) or ""
    rows = [session_row(i, current) for i in _api.list_sessions(scope=scope, home=home)]
    turns = next((r["turns"] for r in rows if r["id"] == bar.session_id), None)
    gone = bool(bar.session_id) and bar.saved and turns is None and not _exists(bar.session_id, home)
    with bar.hold_sync():
        bar.sessions = rows
        bar.current_session = current
        bar.stale = f"Session {bar.session_id[:8]} was deleted: Fork is off." if gone else ""
        if turns is not None:
            bar.turns = max(int(turns), bar.turn)


def _exists(session_id: str, home: str | None) -> bool:
    try:
        _api.get_session_info(session_id, home=home)
    except SessionError:
        return False
    return True


def _announce_current(magics: Any, session_id: str) -> None:
    for other in _live(magics):
        other.current_session = session_id


def fork_here(bar: SessionBar, magics: Any) -> str:
    """Fork the bar's session, keeping the conversation up to the end of this turn; the fork becomes current."""
    ensure_idle(magics, "fork")
    if bar.running:
        raise ActionRefused("This turn is still running: wait for it to finish, then fork.")
    if not bar.session_id or not bar.checkpoint_id or not bar.saved:
        raise ActionRefused("This turn was not saved (--no-persist), so there is nothing to fork.")
    home = home_of(magics)
    scope = magics.current_scope()
    sid = bar.session_id
    up_to = end_of_turn(sid, bar.checkpoint_id, home=home)
    new_id = _api.fork_session(sid, up_to_message_id=up_to, scope=scope, home=home)
    _api.set_current_session(scope, new_id, home=home)
    with bar.hold_sync():
        bar.notice = (
            f"Forked {sid[:8]} at turn {bar.turn} into {new_id[:8]}: the next %%agent cell continues the fork; "
            f"{sid[:8]} is unchanged."
        )
        bar.current_session = new_id
    _announce_current(magics, new_id)
    bar.refresh_display()
    return new_id


def resume(bar: SessionBar, magics: Any, session_id: str) -> None:
    """Make ``session_id`` the one this notebook's next ``%%agent`` cell continues."""
    if not session_id:
        raise ActionRefused("Choose a session to resume.")
    home = home_of(magics)
    info = _api.get_session_info(session_id, home=home)
    _api.set_current_session(magics.current_scope(), info.session_id, home=home)
    name = _short(info.summary or "", 60)
    with bar.hold_sync():
        bar.notice = (
            f"Resumed {info.session_id[:8]}" + (f" ({name})" if name else "")
            + f", {plural(info.num_turns, 'turn')}: the next %%agent cell continues it."
        )
        bar.current_session = info.session_id
    _announce_current(magics, info.session_id)
    bar.refresh_display()

