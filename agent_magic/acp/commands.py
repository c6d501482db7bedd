"""Undo where ACP has none: slash commands and extension methods on our checkpoints.

Slash commands (advertised with ``available_commands_update``; a prompt
starting with one runs it instead of a model turn and answers in agent message
chunks): ``/checkpoints``, ``/rewind <turn or checkpoint> [--dry-run] [--force]
[--conversation]``, ``/fork [turn]``, ``/sessions``, ``/compact [instructions]``.

Extension methods (JSON-RPC methods whose name starts with ``_``):

``_agent-magic/rewind``
    ``{sessionId, checkpointId | turn, dryRun?, force?, conversation?}`` -> the
    :class:`~agent_magic.RewindResult` as JSON (``ok`` and ``summary`` added).
``_session/rewind``
    ``{sessionId, messageId, mode?: "files" | "conversation" | "both", dryRun?}``
    -> ``{files?: {canRewind, error?, filesChanged, insertions, deletions},
    conversation?: {rewound, messagesDropped, newSessionId?, error?}}``, the shape
    proposed for claude-agent-acp; ``messageId`` is a prompt's id (our checkpoint id).
``_session/rewind_points``
    ``{sessionId}`` -> ``{points: [{messageId, text, index, files, cells}]}``.

A conversation rewind forks the session just before the checkpoint's prompt
(the original stays as it was); the ACP session continues in the fork.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from acp import schema

from .. import _api
from .._errors import AgentMagicError, SessionNotFoundError
from ..checkpoints import CheckpointInfo, RewindResult

if TYPE_CHECKING:
    from .agent import MagicAgent, Session

COMMANDS: list[tuple[str, str, str | None]] = [
    ("checkpoints", "List this session's turns and what each changed", None),
    ("rewind", "Put files and cells back as they were before a turn", "<turn or checkpoint> [--dry-run] [--force] [--conversation]"),
    ("fork", "Copy this session (up to a turn) into a new one", "[turn]"),
    ("sessions", "List recent sessions", None),
    ("compact", "Summarise the conversation and continue from the summary", "[instructions]"),
]


def available_commands() -> list[schema.AvailableCommand]:
    """The slash commands, as ``available_commands_update`` lists them."""
    return [
        schema.AvailableCommand(
            name=name,
            description=description,
            input=schema.AvailableCommandInput(root=schema.UnstructuredCommandInput(hint=hint)) if hint else None,
        )
        for name, description, hint in COMMANDS
    ]


def parse_command(text: str) -> tuple[str, str] | None:
    """``("rewind", "1 --dry-run")`` for a prompt that is one of our commands, else None."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    name, _, rest = stripped[1:].partition(" ")
    if name not in {c[0] for c in COMMANDS}:
        return None
    return name, rest.strip()


class CommandError(AgentMagicError):
    """A slash command or extension method given wrong arguments (said to the person as is)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the process
        raise CommandError(f"{message}. Usage: {self.format_usage().strip().removeprefix('usage: ')}")


def _rewind_parser() -> _Parser:
    p = _Parser(prog="/rewind", add_help=False)
    p.add_argument("target")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--conversation", action="store_true")
    return p


_REWIND = _rewind_parser()


def _short(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _checkpoints(sid: str, home: str | None) -> list[CheckpointInfo]:
    try:
        return _api.list_checkpoints(sid, home=home)
    except SessionNotFoundError:
        return []  # a new session before its first turn: not stored yet


def resolve_checkpoint(sid: str, target: str, home: str | None) -> str:
    """A checkpoint id from a turn number, an id or an id prefix.

    Raises
    ------
    CommandError
        No such turn or checkpoint (or an ambiguous prefix).
    """
    cps = _checkpoints(sid, home)
    if not cps:
        raise CommandError("This session has no checkpoints yet: no turn has run.")
    if target.isdigit() and len(target) < 6:
        match = [c for c in cps if c.turn == int(target)]
        if not match:
            raise CommandError(f"There is no turn {target} (this session has {len(cps)}). Run /checkpoints.")
        return match[0].checkpoint_id
    matches = [c.checkpoint_id for c in cps if c.checkpoint_id == target] or [
        c.checkpoint_id for c in cps if len(target) >= 4 and c.checkpoint_id.startswith(target)
    ]
    if len(matches) != 1:
        what = "matches several checkpoints: give more characters" if matches else "is not a checkpoint of this session"
        raise CommandError(f"{target!r} {what}. Run /checkpoints.")
    return matches[0]


def rewind_json(result: RewindResult) -> dict[str, Any]:
    """A rewind's outcome as JSON: every field of :class:`RewindResult`, ``ok`` and ``summary``."""
    return dataclasses.asdict(result) | {"ok": result.ok, "summary": result.summary()}


def rewind_text(result: RewindResult) -> str:
    """A rewind's outcome in Markdown, one line per path, cell and conflict."""
    lines = []
    for ch in result.changes:
        lines.append(f"- {ch.action} `{ch.path}`" + (f" ({ch.note})" if ch.note else ""))
        lines += [f"  - cell `{cc.cell_id}`: {cc.action}" for cc in ch.cells]
    lines += [f"- remove folder `{d}`" for d in result.dirs_removed]
    lines += [f"- create folder `{d}`" for d in result.dirs_created]
    for c in result.conflicts:
        where = f"`{c.path}`" + (f" cell `{c.cell_id}`" if c.cell_id else "")
        lines.append(f"- **conflict** {where}: {c.reason}")
    lines += [f"- **not restorable** `{u}` (no backup)" for u in result.unrestorable]
    text = "\n".join([*lines, "", result.summary()])
    if result.conflicts:
        text += " Conflicting paths were left alone; add `--force` to overwrite them."
    return text


async def rewind(
    agent: MagicAgent, sess: Session, checkpoint_id: str, *, dry_run: bool, force: bool, conversation: bool
) -> RewindResult:
    """Rewind files (and with ``conversation`` the conversation, continuing the ACP session in the fork)."""
    if sess.client.running:
        raise CommandError("A turn is running: cancel it or wait for it before rewinding.")
    sid = sess.store_id
    result = await anyio.to_thread.run_sync(
        lambda: _api.rewind(sid, checkpoint_id, conversation=conversation, dry_run=dry_run, force=force, home=agent.home)
    )
    if result.new_session_id:
        await agent.switch(sess, result.new_session_id)
    return result


async def run_command(agent: MagicAgent, sess: Session, name: str, rest: str) -> str:
    """Run one slash command; returns its answer (Markdown).

    Raises
    ------
    CommandError, AgentMagicError
        Said to the person as the command's answer.
    """
    home = agent.home
    sid = sess.store_id
    if name == "checkpoints":
        cps = _checkpoints(sid, home)
        if not cps:
            return "No checkpoints yet: each turn makes one."
        rows = []
        for c in cps:
            changed = ", ".join(f"`{f}`" for f in c.files[:8]) + (f" and {len(c.files) - 8} more" if len(c.files) > 8 else "")
            cells = f"; {len(c.cells)} cell{'s' * (len(c.cells) != 1)}" if c.cells else ""
            rows.append(f"- **turn {c.turn}** `{c.checkpoint_id[:8]}` {_when(c.timestamp)}: {_short(c.prompt)} — "
                        f"{changed or 'no files changed'}{cells}")
        return "\n".join(rows) + "\n\nUndo a turn with `/rewind <turn>` (add `--dry-run` to see what it would do)."
    if name == "rewind":
        try:
            args = _REWIND.parse_args(shlex.split(rest))
        except ValueError as e:
            raise CommandError(f"Cannot read the arguments ({e}).") from None
        cp = resolve_checkpoint(sid, args.target, home)
        result = await rewind(agent, sess, cp, dry_run=args.dry_run, force=args.force, conversation=args.conversation)
        text = rewind_text(result)
        if result.new_session_id:
            text += (f"\n\nConversation rewound: this chat continues in session `{result.new_session_id[:8]}` "
                     f"(the original `{sid[:8]}` is unchanged; `%agent resume {result.new_session_id[:8]}` in a notebook).")
        return text
    if name == "fork":
        up_to = _fork_point(sid, rest, home)
        new_id = await anyio.to_thread.run_sync(lambda: _api.fork_session(sid, up_to_message_id=up_to, home=home))
        at = f" up to turn {rest}" if rest else ""
        return (f"Forked `{sid[:8]}`{at} into session `{new_id}`; this chat goes on in `{sid[:8]}`. "
                f"Open the fork with session/load, or `%agent resume {new_id[:8]}` in a notebook.")
    if name == "sessions":
        sessions = _api.list_sessions(limit=20, home=home)
        if not sessions:
            return "No sessions yet."
        return "\n".join(
            f"- `{r.session_id[:8]}` {_when(r.last_modified)} · {r.num_turns} turn{'s' * (r.num_turns != 1)} · "
            f"{_short(r.summary, 50)}" + (" ← this chat" if r.session_id == sid else "")
            for r in sessions
        )
    if name == "compact":
        from ..notebook._display import compaction_line

        msg = await sess.client.compact(rest or None)
        return compaction_line(msg.data)
    raise CommandError(f"Unknown command /{name}.")


def _fork_point(sid: str, turn: str, home: str | None) -> str | None:
    """The last message of ``turn`` (None: the whole session)."""
    if not turn:
        return None
    if not turn.isdigit():
        raise CommandError("Usage: /fork [turn], e.g. /fork 2 copies turns 1 and 2.")
    cps = _checkpoints(sid, home)
    n = int(turn)
    if not any(c.turn == n for c in cps):
        raise CommandError(f"There is no turn {n} (this session has {len(cps)}). Run /checkpoints.")
    following = [c for c in cps if c.turn == n + 1]
    if not following:
        return None
    ids = [m.uuid for m in _api.get_session_messages(sid, home=home)]
    idx = ids.index(following[0].checkpoint_id) if following[0].checkpoint_id in ids else 0
    return ids[idx - 1] if idx > 0 else None


def _when(stamp: str | int) -> str:
    try:
        if isinstance(stamp, int):
            return datetime.fromtimestamp(stamp / 1000).strftime("%Y-%m-%d %H:%M")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    except (ValueError, OSError):
        return str(stamp)


# -- extension methods ------------------------------------------------------------------
async def ext_method(agent: MagicAgent, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Handle ``_agent-magic/rewind``, ``_session/rewind`` and ``_session/rewind_points``.

    Raises
    ------
    KeyError
        An unknown method (the agent answers "method not found").
    CommandError
        Missing or wrong parameters.
    """
    if method not in ("agent-magic/rewind", "session/rewind", "session/rewind_points"):
        raise KeyError(method)
    acp_id = params.get("sessionId")
    if not isinstance(acp_id, str):
        raise CommandError("sessionId is required.")
    sess = await agent.session_for(acp_id)
    sid = sess.store_id
    if method == "session/rewind_points":
        return {"points": [
            {"messageId": c.checkpoint_id, "text": c.prompt, "index": c.turn - 1, "files": c.files, "cells": c.cells}
            for c in _checkpoints(sid, agent.home)
        ]}
    dry_run = bool(params.get("dryRun", False))
    if method == "agent-magic/rewind":
        target = params.get("checkpointId", params.get("turn"))
        if not isinstance(target, (str, int)) or isinstance(target, bool):
            raise CommandError("Give checkpointId (a checkpoint id or prefix) or turn (a number).")
        cp = resolve_checkpoint(sid, str(target), agent.home)
        result = await rewind(agent, sess, cp, dry_run=dry_run, force=bool(params.get("force", False)),
                              conversation=bool(params.get("conversation", False)))
        return rewind_json(result)
    message_id = params.get("messageId")
    mode = params.get("mode", "files")
    if not isinstance(message_id, str) or mode not in ("files", "conversation", "both"):
        raise CommandError('Give messageId (a prompt\'s id) and mode "files", "conversation" or "both".')
    out: dict[str, Any] = {}
    try:
        cp = resolve_checkpoint(sid, message_id, agent.home)
    except CommandError as e:
        if mode != "conversation":
            out["files"] = {"canRewind": False, "error": str(e)}
        if mode != "files":
            out["conversation"] = {"rewound": False, "messagesDropped": 0, "error": str(e)}
        return out
    dropped = _messages_from(sid, cp, agent.home)
    if mode == "conversation":
        return {"conversation": await _rewind_conversation(agent, sess, cp, dropped, dry_run=dry_run)}
    try:
        result = await rewind(agent, sess, cp, dry_run=dry_run, force=bool(params.get("force", False)),
                              conversation=mode == "both" and not dry_run)
    except AgentMagicError as e:
        return {"files": {"canRewind": False, "error": str(e)}}
    if mode != "conversation":
        files: dict[str, Any] = {
            "canRewind": result.ok, "filesChanged": [c.path for c in result.changes],
            "insertions": 0, "deletions": 0,
        }
        if not result.ok:
            files["error"] = "; ".join([f"{c.path}: {c.reason}" for c in result.conflicts] +
                                       [f"{u}: no backup" for u in result.unrestorable])
        out["files"] = files
    if mode != "files":
        out["conversation"] = {"rewound": result.new_session_id is not None, "messagesDropped": dropped,
                               "newSessionId": result.new_session_id}
    return out


async def _rewind_conversation(agent: MagicAgent, sess: Session, cp: str, dropped: int, *, dry_run: bool) -> dict[str, Any]:
    """Only the conversation: fork just before the checkpoint's prompt and continue there."""
    sid = sess.store_id
    ids = [m.uuid for m in _api.get_session_messages(sid, home=agent.home)]
    idx = ids.index(cp) if cp in ids else -1
    if idx <= 0:
        return {"rewound": False, "messagesDropped": 0, "error": "Nothing comes before the first prompt to go back to."}
    if dry_run:
        return {"rewound": False, "messagesDropped": dropped}
    if sess.client.running:
        return {"rewound": False, "messagesDropped": 0, "error": "A turn is running."}
    before = ids[idx - 1]
    new_id = await anyio.to_thread.run_sync(lambda: _api.fork_session(sid, up_to_message_id=before, home=agent.home))
    await agent.switch(sess, new_id)
    return {"rewound": True, "messagesDropped": dropped, "newSessionId": new_id}


def _messages_from(sid: str, checkpoint_id: str, home: str | None) -> int:
    """How many messages a conversation rewind to ``checkpoint_id`` leaves out."""
    ids = [m.uuid for m in _api.get_session_messages(sid, home=home)]
    return len(ids) - ids.index(checkpoint_id) if checkpoint_id in ids else 0
