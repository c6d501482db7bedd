"""The ``%agent`` line magic and ``%%agent`` cell magic.

Parse, dispatch, render: the work itself is done by the public API
(:class:`agent_magic.AgentClient`, :func:`agent_magic.rewind`, ...).
"""

from __future__ import annotations

import argparse
import json
import keyword
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, CFloat, CInt, Dict, List, Unicode

from .. import _api
from .._errors import (
    AgentMagicError,
    AmbiguousIdError,
    BundleError,
    CheckpointError,
    ConfigurationError,
    SessionError,
)
from .._messages import ResultMessage
from .._options import EFFORTS, PERMISSION_MODES, AgentOptions
from ._display import TurnView, ipython_publisher
from ._views import plural

if TYPE_CHECKING:
    from ._answers import AnswerFormat
    from ._functions import KernelFunctions
    from ._runner import ClientHost, Runner


class AgentTurnError(AgentMagicError):
    """A ``%%agent`` turn that did not succeed; fails the cell with one readable line."""

    def __init__(self, message: str, subtype: str = "error_during_execution") -> None:
        super().__init__(message)
        self.subtype = subtype

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the person needs the message, not our stack.
        if self.subtype == "interrupted":
            # Stopped on purpose: one plain line, not an alarm (the bar shows the state).
            return [str(self)]
        return [f"\x1b[31mAgentTurnError\x1b[0m: {self}"]


@dataclass
class _Turn:
    args: argparse.Namespace
    prompt: str
    host: ClientHost
    view: TurnView
    controls: Any
    answer: AnswerFormat


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line plus usage) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "")


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%agent", add_help=False, description="Run the cell body as a prompt in this notebook's session.")
    p.add_argument("--new", action="store_true", help="start a new session (it becomes this notebook's current one)")
    p.add_argument("--resume", metavar="ID", help="continue session ID (any unique prefix of 4+ characters)")
    p.add_argument("--fork", action="store_true", help="fork the current (or --resume) session and continue the fork")
    p.add_argument("--session-id", metavar="ID", help="custom id for a new session")
    p.add_argument("--model", metavar="NAME", help="model for this turn")
    p.add_argument("--max-turns", metavar="N", type=int, help="stop after N model responses")
    p.add_argument("--max-budget-usd", metavar="X", type=float, help="stop when this turn costs X dollars")
    p.add_argument("--permission-mode", metavar="MODE", choices=PERMISSION_MODES, help="default, acceptEdits, bypassPermissions or plan")
    p.add_argument("--effort", metavar="LEVEL", choices=EFFORTS, help="how hard the model works on this turn: " + ", ".join(EFFORTS))
    p.add_argument("--allow", metavar="RULE", action="append", default=[], help="allow a tool, e.g. 'Bash(pytest *)' (repeatable)")
    p.add_argument("--deny", metavar="RULE", action="append", default=[], help="deny a tool (repeatable)")
    p.add_argument("--with", dest="with_vars", metavar="VAR", action="append", default=[], help="describe kernel variable VAR to the agent (repeatable)")
    p.add_argument("--no-persist", action="store_true", help="keep this turn in memory only")
    p.add_argument("--into", metavar="NAME", help="store the final answer in kernel variable NAME (the text, or with --schema the parsed value)")
    p.add_argument(
        "--schema", metavar="SPEC",
        help="the answer must fit this JSON schema: a kernel variable holding a schema dict or a pydantic model class, or a .json file",
    )
    p.add_argument("--quiet", action="store_true", help="show only the final answer")
    return p


def _line_parser() -> _Parser:
    p = _Parser(prog="%agent", add_help=False, description="Sessions and checkpoints of this notebook.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("sessions", add_help=False, help="this notebook's sessions (--all: every scope)")
    s.add_argument("--all", action="store_true")
    s = sub.add_parser("resume", add_help=False, help="make session ID this notebook's current one")
    s.add_argument("id")
    sub.add_parser("continue", add_help=False, help="continue this notebook's most recent session")
    sub.add_parser("new", add_help=False, help="start a new session with the next %%agent cell")
    s = sub.add_parser("fork", add_help=False, help="fork the current session (or ID), optionally after a checkpoint's turn")
    s.add_argument("id", nargs="?")
    s.add_argument("--at", metavar="CHECKPOINT", help="keep the conversation up to the end of this checkpoint's turn")
    s.add_argument("--turn", metavar="N", type=int, help="keep the conversation up to the end of turn N")
    s = sub.add_parser("history", add_help=False, help="the conversation of the current session (or ID)")
    s.add_argument("id", nargs="?")
    s = sub.add_parser("info", add_help=False, help="details of the current session (or ID)")
    s.add_argument("id", nargs="?")
    s = sub.add_parser("checkpoints", add_help=False, help="checkpoints of the current session (or ID)")
    s.add_argument("id", nargs="?")
    s = sub.add_parser("rewind", add_help=False, help="put files, cells and kernel variables back as before CHECKPOINT (or --turn N)")
    s.add_argument("checkpoint", nargs="?")
    s.add_argument("--turn", metavar="N", type=int, help="the checkpoint of turn N instead of an id")
    s.add_argument("--dry-run", action="store_true", help="show what would change")
    s.add_argument("--force", action="store_true", help="also overwrite what someone else changed since")
    s.add_argument("--conversation", action="store_true", help="also rewind the conversation (forks the session)")
    s.add_argument("--no-kernel", action="store_true", help="leave the kernel's variables as they are")
    s.add_argument("--session", metavar="ID", help="a session other than the current one")
    s = sub.add_parser("model", add_help=False, help="show or set this notebook's model")
    s.add_argument("name", nargs="?")
    s = sub.add_parser("permissions", add_help=False, help="show or set the permission mode")
    s.add_argument("mode", nargs="?", choices=PERMISSION_MODES)
    s = sub.add_parser("export", add_help=False, help="write session ID with its checkpoints to PATH")
    s.add_argument("id")
    s.add_argument("path")
    s = sub.add_parser("import", add_help=False, help="import a session file into this notebook")
    s.add_argument("path")
    s.add_argument("--as", dest="as_id", metavar="ID")
    s = sub.add_parser("rename", add_help=False, help="give the current session (or --session ID) a title")
    s.add_argument("title", nargs="+")
    s.add_argument("--session", metavar="ID")
    s = sub.add_parser("delete", add_help=False, help="delete session ID")
    s.add_argument("id")
    s = sub.add_parser("tool", add_help=False, help="offer kernel functions NAME... to the agent as tools (--remove NAME takes one away)")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--remove", metavar="NAME", action="append", default=[], help="stop offering this function")
    sub.add_parser("tools", add_help=False, help="the kernel functions offered as tools")
    sub.add_parser("mcp", add_help=False, help="the session's MCP servers and their state")
    sub.add_parser("memory", add_help=False, help="the project memory files in the system prompt")
    sub.add_parser("kernel-checkpoints", add_help=False, help="the snapshots of kernel variables this kernel holds, and their disk use")
    # For the help only: _line takes the instructions literally, before shell-style splitting.
    s = sub.add_parser("compact", add_help=False, help="summarise the current session's conversation now to free context; the rest of the line says what to keep")
    s.add_argument("instructions", nargs=argparse.REMAINDER, metavar="INSTRUCTIONS")
    sub.add_parser("stop", add_help=False, help="stop the running turn")
    sub.add_parser("help", add_help=False, help="this help")
    return p


CELL_PARSER = _cell_parser()
LINE_PARSER = _line_parser()

HELP = f"""Agent sessions in this notebook.

Cell magic -- the body is the prompt, sent literally (no $var or {{var}} expansion):

{CELL_PARSER.format_help()}
Line magic -- sessions and checkpoints:

{LINE_PARSER.format_help()}
Session and checkpoint ids may be given by any unique prefix of 4+ characters.
`%agent compact [INSTRUCTIONS]` takes the rest of the line literally, e.g.
`%agent compact keep the file names and the plotting code`.

Kernel functions as tools: `%agent tool load_sales plot_kpis` lets the agent call them (without
asking; deny rules still apply). The docstring describes them, type hints give the arguments; a
pd.DataFrame / np.ndarray parameter takes the name of a kernel variable. They are remembered with
the session: after a restart, run the cells that define them and they are offered again.

Answers as values: `%%agent --into summary` stores the answer's text in `summary`;
`%%agent --into rows --schema RowsSchema` stores the answer parsed against a JSON-schema dict,
a pydantic model class (an instance of it) or a .json file.

Configure defaults with %config AgentMagics.model = "...", permission_mode, max_turns,
max_budget_usd, allowed_tools, effort, thinking, mcp_servers ({{"name": {{"command": ...}}}}),
setting_sources (["project", "user"]: AGENTS.md / CLAUDE.md and .mcp.json; [] turns them off);
or AGENT_MAGIC_MODEL / AGENT_MAGIC_PROVIDER / AGENT_MAGIC_HOME / AGENT_MAGIC_EFFORT /
AGENT_MAGIC_CONTEXT_WINDOW / AGENT_MAGIC_COMPACTION.
"""


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError as e:
        raise UsageError(f"Cannot parse the arguments ({e}); check the quotes.") from None


def thinking_option(value: str) -> dict[str, Any] | None:
    """``AgentMagics.thinking`` as ``AgentOptions.thinking``: '' (the model's default), 'adaptive',
    'disabled' or a token budget of at least 1024, such as '8000'.

    Raises
    ------
    UsageError
        For anything else.
    """
    v = value.strip().lower()
    if not v:
        return None
    if v in ("adaptive", "disabled"):
        return {"type": v}
    if v.isdigit() and int(v) >= 1024:  # the API's smallest budget
        return {"type": "enabled", "budget_tokens": int(v)}
    raise UsageError(
        f"AgentMagics.thinking is {value!r}; use 'adaptive', 'disabled', a token budget of at least 1024 "
        "such as '8000', or '' (`%config AgentMagics.thinking = \"adaptive\"`)."
    )


def _unquote(text: str) -> str:
    """``text`` without one pair of quotes around all of it (``"..."`` or ``'...'``)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def notebook_scope(user_ns: dict[str, Any]) -> str:
    """The notebook this kernel belongs to, from what Jupyter tells the kernel; else the cwd."""
    for value in (user_ns.get("__vsc_ipynb_file__"), user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(value, str) and value.endswith(".ipynb"):
            p = Path(value).expanduser()
            if not p.is_absolute():
                # A relative API path: the kernel starts in the notebook's folder.
                p = Path.cwd() / p.name
            return str(p.resolve())
    return str(Path.cwd().resolve())


@magics_class
class AgentMagics(Magics):
    """``%agent`` and ``%%agent``. Defaults are configurable: ``%config AgentMagics.model = "..."``."""

    model = Unicode("", help="Model for %%agent turns (default: $AGENT_MAGIC_MODEL or the provider's default).").tag(config=True)
    permission_mode = Unicode("default", help="default, acceptEdits, bypassPermissions or plan.").tag(config=True)
    max_turns = CInt(0, help="Stop a turn after this many model responses (0: no limit).").tag(config=True)
    max_budget_usd = CFloat(0.0, help="Stop a turn when it costs this many dollars (0: no limit).").tag(config=True)
    allowed_tools = List(Unicode(), help="Permission rules always allowed, e.g. ['Bash(pytest *)'].").tag(config=True)
    disallowed_tools = List(Unicode(), help="Permission rules always denied.").tag(config=True)
    provider = Unicode("", help="Provider name (default: $AGENT_MAGIC_PROVIDER or anthropic).").tag(config=True)
    home = Unicode("", help="Session store (default: $AGENT_MAGIC_HOME or the per-user data directory).").tag(config=True)
    store = Unicode(
        "", help="Shared store every session also reaches: s3://bucket/prefix, postgresql://..., redis://..., file:///... "
        "(default: $AGENT_MAGIC_STORE; '' : local only)."
    ).tag(config=True)
    scope = Unicode("", help="Override the notebook path sessions belong to.").tag(config=True)
    quiet = Bool(False, help="Show only final answers.").tag(config=True)
    kernel_tools = Bool(True, help="Offer the Python and Variables tools that work in this kernel.").tag(config=True)
    effort = Unicode("", help="Effort for %%agent turns: low, medium, high, xhigh or max ('' : the provider's default).").tag(config=True)
    thinking = Unicode(
        "", help="Extended thinking: 'adaptive', 'disabled', a token budget such as '8000', or '' for the model's default."
    ).tag(config=True)
    approval_timeout = CFloat(5.0, help="Seconds to wait for an approval prompt to appear before treating the run as headless.").tag(config=True)
    min_update_interval = CFloat(0.05, help="Seconds between display updates while streaming (grows with the answer).").tag(config=True)
    mcp_servers = Dict(
        help="MCP servers for the sessions: {name: {'command': ..., 'args': [...], 'env': {...}}} (stdio) or "
        "{name: {'type': 'http', 'url': ...}}; a project's .mcp.json adds more when setting_sources has 'project'."
    ).tag(config=True)
    kernel_snapshots = Bool(
        True, help="Snapshot the variables the agent's code can change before it runs, so a rewind puts them back."
    ).tag(config=True)
    kernel_snapshot_max_variable_mb = CInt(2048, help="Variables larger than this (MB) are not snapshotted (a rewind says so).").tag(config=True)
    kernel_snapshot_max_turn_mb = CInt(4096, help="At most this much (MB) is snapshotted per turn; beyond it variables are not restorable.").tag(config=True)
    setting_sources = List(
        Unicode(), default_value=["project", "user"],
        help="Where project memory (AGENTS.md / CLAUDE.md) and .mcp.json are read from: 'project', 'user', 'local'; [] : nowhere.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        from ._runner import Runner

        self.runner: Runner = Runner()
        self._widgets: Any = None
        self.notebook_bridge: Any = None
        self.last_result: ResultMessage | None = None
        self.last_view: TurnView | None = None
        self.open_prompts: list[Any] = []
        self.runner.bridge.handlers["exec"] = self._handle_exec
        self.runner.bridge.handlers["variables"] = self._handle_variables
        self.runner.bridge.handlers["approval"] = self._handle_approval
        from ._functions import CALL_KIND, KernelFunctions
        from ._kernel_state import KernelState

        self.kernel_state = KernelState(lambda: self.user_ns, self._home, self._snapshot_settings)
        self.functions: KernelFunctions = KernelFunctions(self.runner.bridge, lambda: self.user_ns, self.kernel_state)
        self.runner.bridge.handlers[CALL_KIND] = self.functions.handle_call

    # -- environment -------------------------------------------------------
    @property
    def in_kernel(self) -> bool:
        return getattr(self.shell, "kernel", None) is not None

    def current_scope(self) -> str:
        return self.scope or notebook_scope(self.user_ns)

    def _home(self) -> str | None:
        return self.home or None

    def _resolve_session(self, sid: str) -> str:
        try:
            return _api.get_session_info(sid, home=self._home()).session_id
        except AmbiguousIdError as e:
            raise UsageError(str(e)) from None
        except SessionError:
            raise UsageError(f"No session {sid!r}. Run `%agent sessions --all` to see every session.") from None

    def _current(self, required: bool = True) -> str | None:
        sid = _api.current_session(self.current_scope(), home=self._home())
        if sid is None and required:
            raise UsageError("This notebook has no session yet. Run a `%%agent` cell first, or `%agent resume ID`.")
        return sid

    # -- the magic -------------------------------------------------------------
    @no_var_expand
    @line_cell_magic
    def agent(self, line: str = "", cell: str | None = None) -> Any:
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except (UsageError, AgentTurnError, KeyboardInterrupt):
            raise
        except (SessionError, CheckpointError, ConfigurationError, BundleError) as e:
            raise UsageError(str(e)) from None

    agent.__doc__ = HELP

    # -- %agent subcommands ----------------------------------------------------------
    def _line(self, line: str) -> Any:
        head, _, rest = line.strip().partition(" ")
        if head == "compact":
            if rest.strip() in ("-h", "--help"):
                print(HELP)
                return None
            # Instructions are prose ("keep the user's plots"): taken literally, not shell-split.
            return self._compact(_unquote(rest.strip()) or None)
        argv = _split(line)
        if not argv or argv[0] in ("help", "-h", "--help"):
            print(HELP)
            return None
        args = LINE_PARSER.parse_args(argv)
        handler = getattr(self, f"_cmd_{args.command.replace('-', '_')}", None)
        if handler is None:  # pragma: no cover - argparse rejects unknown commands first
            raise UsageError(f"Unknown subcommand {args.command!r}. Run `%agent help`.")
        return handler(args)

    def _show(self, obj: Any) -> None:
        from IPython import display as ipd

        show: Any = ipd.display
        show(obj)

    @property
    def user_ns(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _cmd_sessions(self, args: argparse.Namespace) -> None:
        from ._views import sessions_view

        scope = None if args.all else self.current_scope()
        rows = _api.list_sessions(scope=scope, home=self._home()) if scope else _api.list_sessions(home=self._home())
        current = self._current(required=False)
        self._show(sessions_view(rows, current=current, scope=scope, widgets=self._widget_factory()))

    def _cmd_resume(self, args: argparse.Namespace) -> None:
        sid = self._resolve_session(args.id)
        _api.set_current_session(self.current_scope(), sid, home=self._home())
        info = _api.get_session_info(sid, home=self._home())
        print(f"Resumed session {sid[:8]} ({plural(info.num_turns, 'turn')}): the next %%agent cell continues it.")

    def _cmd_continue(self, args: argparse.Namespace) -> None:
        rows = _api.list_sessions(scope=self.current_scope(), limit=1, home=self._home())
        if not rows:
            raise UsageError("This notebook has no session to continue. Run a `%%agent` cell to start one.")
        _api.set_current_session(self.current_scope(), rows[0].session_id, home=self._home())
        print(f"Continuing session {rows[0].session_id[:8]} ({plural(rows[0].num_turns, 'turn')}).")

    def _cmd_new(self, args: argparse.Namespace) -> None:
        _api.set_current_session(self.current_scope(), None, home=self._home())
        print("The next %%agent cell starts a new session.")

    def _cmd_fork(self, args: argparse.Namespace) -> None:
        sid = self._resolve_session(args.id) if args.id else self._current()
        assert sid is not None
        up_to = None
        at = self._checkpoint_arg(sid, args.at, args.turn, required=False)
        if at:
            up_to = self._end_of_turn(sid, at)
        new_id = _api.fork_session(sid, up_to_message_id=up_to, scope=self.current_scope(), home=self._home())
        _api.set_current_session(self.current_scope(), new_id, home=self._home())
        where = f" after checkpoint {at[:8]}" if at else ""
        print(f"Forked {sid[:8]}{where} into {new_id[:8]}: the next %%agent cell continues the fork; {sid[:8]} is unchanged.")

    def _checkpoint_arg(self, sid: str, checkpoint: str | None, turn: int | None, *, required: bool) -> str | None:
        """A checkpoint given as an id (prefix) or as a turn number."""
        if checkpoint and turn is not None:
            raise UsageError("Give a checkpoint id or --turn N, not both.")
        if turn is None:
            if required and not checkpoint:
                raise UsageError("Which checkpoint? Give its id (see `%agent checkpoints`) or --turn N.")
            return self._resolve_checkpoint(sid, checkpoint) if checkpoint else None
        cps = _api.list_checkpoints(sid, home=self._home())
        match = [c for c in cps if c.turn == turn]
        if not match:
            raise UsageError(f"Session {sid[:8]} has no turn {turn} (it has {len(cps)}). Run `%agent checkpoints`.")
        return match[0].checkpoint_id

    def _resolve_checkpoint(self, sid: str, checkpoint: str) -> str:
        """A checkpoint id from a prefix; a mistake points to `%agent checkpoints`, not the terminal command."""
        ids = [c.checkpoint_id for c in _api.list_checkpoints(sid, home=self._home())]
        more = f"Run `%agent checkpoints{'' if sid == self._current(required=False) else ' ' + sid[:8]}` to list them."
        if not ids:
            raise UsageError(f"Session {sid[:8]} has no checkpoints (file checkpointing was off, or no turn ran yet).")
        matches = [i for i in ids if i == checkpoint] or [i for i in ids if len(checkpoint) >= 4 and i.startswith(checkpoint)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"Checkpoint {checkpoint!r} matches {len(matches)} checkpoints of session {sid[:8]}: give more characters. {more}")
        raise UsageError(f"No checkpoint {checkpoint!r} in session {sid[:8]}. {more}")

    def _end_of_turn(self, sid: str, checkpoint: str) -> str:
        log = _api.checkpoint_log(sid, home=self._home())
        try:
            cp = log.resolve(checkpoint)
        finally:
            log.records.close()
        msgs = _api.get_session_messages(sid, home=self._home())
        idx = next(i for i, m in enumerate(msgs) if m.uuid == cp)
        end = idx
        for j in range(idx + 1, len(msgs)):
            if msgs[j].is_prompt:
                break
            end = j
        return msgs[end].uuid

    def _cmd_history(self, args: argparse.Namespace) -> None:
        from ._views import history_view

        sid = self._resolve_session(args.id) if args.id else self._current()
        assert sid is not None
        self._show(history_view(_api.get_session_messages(sid, home=self._home()), sid))

    def _cmd_info(self, args: argparse.Namespace) -> None:
        from ._views import info_view

        sid = self._resolve_session(args.id) if args.id else self._current()
        assert sid is not None
        self._show(info_view(_api.get_session_info(sid, home=self._home()), _api.list_checkpoints(sid, home=self._home())))

    def _cmd_checkpoints(self, args: argparse.Namespace) -> None:
        from ._views import checkpoints_view

        sid = self._resolve_session(args.id) if args.id else self._current()
        assert sid is not None
        cps = _api.list_checkpoints(sid, home=self._home())
        self._show(checkpoints_view(sid, cps, widgets=self._widget_factory(), magics=self))

    def _cmd_rewind(self, args: argparse.Namespace) -> Any:
        from ._views import rewind_view

        sid = self._resolve_session(args.session) if args.session else self._current()
        assert sid is not None
        checkpoint = self._checkpoint_arg(sid, args.checkpoint, args.turn, required=True)
        assert checkpoint is not None
        result = _api.rewind(
            sid, checkpoint, conversation=args.conversation, dry_run=args.dry_run, force=args.force,
            kernel=not args.no_kernel, home=self._home(), bridge=self.notebook_bridge,
        )
        if result.new_session_id:
            _api.set_current_session(self.current_scope(), result.new_session_id, home=self._home())
        stale = self.stale_cells(result)
        self._show(rewind_view(result, stale=stale, links=self.stale_links(result, stale)))
        return None

    def stale_links(self, result: Any, stale: list[str]) -> list[dict[str, Any]]:
        """:func:`~._views.stale_cell_links` for this kernel: links from this notebook, since this run."""
        from ._views import stale_cell_links

        since = int(getattr(self.shell, "execution_count", 0) or 0)
        return stale_cell_links(result, stale, here=self.current_scope(), since=since)

    def stale_cells(self, result: Any) -> list[str]:
        """Cells a rewind restored that the kernel ran after that turn: their state may be stale."""
        from . import _history

        return _history.stale_cells(self.shell, result)

    def _cmd_model(self, args: argparse.Namespace) -> None:
        if args.name:
            self.model = args.name
            print(f"Model for this notebook: {args.name}")
        else:
            print(f"Model: {self.model or os.environ.get('AGENT_MAGIC_MODEL') or AgentOptions().resolved_model()}")

    def _cmd_permissions(self, args: argparse.Namespace) -> None:
        if args.mode:
            self.permission_mode = args.mode
        allowed = ", ".join(self.allowed_tools) or "none"
        print(f"Permission mode: {self.permission_mode}; always allowed: {allowed}")

    def _cmd_export(self, args: argparse.Namespace) -> None:
        from .. import export_session

        sid = self._resolve_session(args.id)
        out = export_session(sid, args.path, home=self._home())
        print(f"Exported session {sid[:8]} to {out} ({out.stat().st_size:,} bytes).")

    def _cmd_import(self, args: argparse.Namespace) -> None:
        from .. import import_session

        sid = import_session(args.path, home=self._home(), new_session_id=args.as_id, scope=self.current_scope())
        _api.set_current_session(self.current_scope(), sid, home=self._home())
        print(f"Imported session {sid[:8]}; it is this notebook's current session now.")

    def _cmd_rename(self, args: argparse.Namespace) -> None:
        sid = self._resolve_session(args.session) if args.session else self._current()
        assert sid is not None
        _api.rename_session(sid, " ".join(args.title), home=self._home())
        print(f"Renamed {sid[:8]}.")

    def _cmd_delete(self, args: argparse.Namespace) -> None:
        sid = self._resolve_session(args.id)
        for host in [h for k, h in self.runner.hosts.items() if k == sid]:
            self.runner.close_client(host)
        keys = _api.variable_snapshot_keys(sid, home=self._home())
        _api.delete_session(sid, home=self._home())
        freed = self.kernel_state.forget(keys)
        print(f"Deleted session {sid[:8]}." + (f" Its kernel variable snapshots are gone too ({freed:,} bytes)." if freed else ""))

    def _cmd_tool(self, args: argparse.Namespace) -> None:
        if not args.names and not args.remove:
            raise UsageError("Name the function to offer: `%agent tool NAME [NAME...]` (or `--remove NAME`); `%agent tools` lists them.")
        sid = self._current(required=False)
        self.functions.restore(sid, home=self._home())
        for name in args.remove:
            self.functions.unregister(name)
        specs = self.functions.register(args.names)
        self.functions.save(sid, home=self._home())
        for spec in specs:
            print(f"{spec.name}{spec.signature} is a tool of this notebook's session: the agent calls it without asking.")
        for name in args.remove:
            print(f"{name} is no longer offered to the agent.")
        missing = self.functions.missing_line()
        if missing:
            print(missing)

    def _cmd_tools(self, args: argparse.Namespace) -> None:
        from ._views import kernel_tools_table

        self.functions.restore(self._current(required=False), home=self._home())
        line = self.functions.missing_line()
        missing = self.functions.missing()
        if line is None and missing:
            from ._functions import missing_functions_line

            line = missing_functions_line(missing)
        self._show(kernel_tools_table(self.functions.rows(), missing_line=line))

    def _cmd_mcp(self, args: argparse.Namespace) -> None:
        from ._views import mcp_table

        sid = self._current(required=False)
        host = self._host_for(sid, scope=self.current_scope(), home=self._home())
        try:
            servers = host.client.mcp_status()
        finally:
            if sid is None:  # a client opened only to ask: no session to keep it for
                self.runner.close_client(host)
        self._show(mcp_table(servers))

    def _cmd_kernel_checkpoints(self, args: argparse.Namespace) -> None:
        from ._views import kernel_checkpoints_view

        self._show(kernel_checkpoints_view(self.kernel_state.usage()))

    def _cmd_memory(self, args: argparse.Namespace) -> None:
        from .._memory import find_memory_files
        from ._views import memory_table

        sources = list(self.setting_sources)
        files = find_memory_files(Path.cwd(), sources) if sources else []
        self._show(memory_table(files, sources=sources))

    def _compact(self, instructions: str | None) -> None:
        """``%agent compact``: summarise the current session's conversation now; one line says how much it freed."""
        from ._display import compaction_line, context_share

        sid = self._current()
        assert sid is not None
        if self.runner.active is not None:
            raise UsageError("A turn is running: wait for it to finish (or run `%agent stop`), then `%agent compact`.")
        host = self._host_for(sid, scope=self.current_scope(), home=self._home())
        try:
            boundary = self.runner.compact(host, instructions)
        except AgentMagicError as e:  # nothing to compact, no summary, the API failed: each says what to do
            raise UsageError(str(e)) from None
        window = _api.get_session_info(sid, home=self._home()).context_window
        share = context_share(boundary.data.get("post_tokens"), window)
        print(compaction_line(boundary.data, trigger=False, share=share) + " Earlier turns stay rewindable.")

    def _cmd_stop(self, args: argparse.Namespace) -> None:
        self.runner.interrupt()

    def _cmd_help(self, args: argparse.Namespace) -> None:
        print(HELP)

    # -- %%agent --------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> None:
        """The blocking path: terminals, ipykernel < 7.4, and direct ``run_cell_magic`` calls."""
        from ._runner import kernel_stays_busy

        with kernel_stays_busy(self.shell):  # polled UI events publish "idle" too
            self._run_cell(line, cell)

    def _run_cell(self, line: str, cell: str) -> None:
        turn = self._prepare(line, cell)
        try:
            outcome = self.runner.run_turn(turn.host, turn.prompt, turn.view.on_message, turn.view.flush, in_kernel=self.in_kernel)
        except BaseException:
            self._cleanup(turn)
            raise
        self._complete(turn, outcome, kernel_interrupt=KeyboardInterrupt)

    async def acell(self, line: str, cell: str) -> None:
        """The async path (ipykernel >= 7.4): the cell awaits, so the kernel keeps
        dispatching widget messages (Stop, Approve) while the agent works."""
        from ._runner import kernel_stays_busy

        with kernel_stays_busy(self.shell):
            await self._arun_cell(line, cell)

    async def _arun_cell(self, line: str, cell: str) -> None:
        try:
            turn = self._prepare(line, cell)
            try:
                outcome = await self.runner.arun_turn(turn.host, turn.prompt, turn.view.on_message, turn.view.flush)
            except BaseException:
                self._cleanup(turn)
                raise
            self._complete(turn, outcome, kernel_interrupt=None)
        except (SessionError, CheckpointError, ConfigurationError, BundleError) as e:
            raise UsageError(str(e)) from None

    def _prepare(self, line: str, cell: str) -> _Turn:
        args = CELL_PARSER.parse_args(_split(line))
        prompt = cell.strip("\n")
        if not prompt.strip():
            raise UsageError("The %%agent cell is empty: write your prompt below the %%agent line.")
        if args.with_vars:
            prompt = self._attach_variables(prompt, args.with_vars)
        if args.session_id and (args.resume and not args.fork):
            raise UsageError("--session-id names a new session; drop --resume, or add --fork to name the fork.")
        if args.new and (args.resume or args.fork):
            raise UsageError("--new starts a fresh session; it cannot be combined with --resume or --fork.")
        if args.into is not None and (not args.into.isidentifier() or keyword.iskeyword(args.into)):
            raise UsageError(f"--into {args.into}: not a Python variable name; use e.g. `--into answer`.")
        if args.schema is not None and args.into is None:
            raise UsageError("--schema needs --into NAME to store the parsed answer, e.g. `%%agent --into result --schema SPEC`.")
        from ._answers import answer_format

        answer = answer_format(args.schema, self.user_ns, Path.cwd())
        scope = self.current_scope()
        home = self._home()
        sid: str | None
        if args.resume:
            sid = self._resolve_session(args.resume)
        elif args.new or (args.session_id and not args.fork):
            sid = None
        else:
            sid = self._current(required=False)
        if args.fork and sid is None:
            raise UsageError("There is no session to fork yet: run a `%%agent` cell first (or add --resume ID).")
        self.functions.restore(sid, home=home)
        missing = self.functions.missing_line()
        if missing:
            print(missing)
        reasoning = self._reasoning(args)
        host = self._host_for(
            sid, scope=scope, home=home, fork=bool(args.fork), no_persist=bool(args.no_persist),
            model=args.model, session_id=args.session_id, **reasoning,
        )
        opts = host.client.options
        host.client.set_extra_tools(self._kernel_tools())
        changes: dict[str, Any] = {
            **reasoning,
            "model": args.model or self.model or None,
            "permission_mode": args.permission_mode or self.permission_mode,
            "max_turns": args.max_turns or (self.max_turns or None),
            "max_budget_usd": args.max_budget_usd or (self.max_budget_usd or None),
            # Registering a kernel function is the person's permission to call it.
            "allowed_tools": list(self.allowed_tools) + list(args.allow) + [t.name for t in self.functions.tools()],
            "disallowed_tools": list(self.disallowed_tools) + list(args.deny),
            "output_format": answer.output_format,
        }
        if changes["permission_mode"] not in PERMISSION_MODES:
            raise UsageError(f"Unknown permission mode {changes['permission_mode']!r}; use one of {', '.join(PERMISSION_MODES)}.")
        try:
            host.client.update_options(**{k: v for k, v in changes.items() if getattr(opts, k) != v})
        except ConfigurationError as e:
            raise UsageError(str(e)) from None
        view = TurnView(rich=self.in_kernel, quiet=args.quiet or self.quiet,
                        publish=ipython_publisher() if self.in_kernel else None, min_interval=self.min_update_interval)
        self.last_view = view
        factory = self._widget_factory()
        view.flush(force=True)
        controls = factory.turn_controls(self) if factory is not None else None
        return _Turn(args, prompt, host, view, controls, answer)

    def _cleanup(self, turn: _Turn) -> None:
        turn.view.flush(force=True)
        if turn.controls is not None and getattr(turn.controls, "running", False):
            turn.controls.running = False
        self._expire_prompts()
        if turn.args.no_persist:
            self.runner.close_client(turn.host)

    def _complete(self, turn: _Turn, outcome: Any, *, kernel_interrupt: type[BaseException] | None) -> None:
        self._cleanup(turn)
        result = outcome.result
        self.last_result = result
        new_id = turn.host.client.session_id
        if new_id is not None and not turn.args.no_persist:
            self.runner.hosts[new_id] = turn.host
            # Functions registered before the notebook had a session are remembered with it now.
            self.functions.save(new_id, home=self._home())
        factory = self._widget_factory()
        if factory is not None:
            factory.session_bar(self, result, turn.view.provenance, turn.controls)
        if outcome.interrupted_by_kernel and kernel_interrupt is not None:
            raise kernel_interrupt
        if result is None:
            raise AgentTurnError("The turn ended without a result; see the messages above.")
        if result.is_error:
            if result.subtype == "interrupted":
                raise AgentTurnError("Interrupted: the session is intact; run another %%agent cell to continue.", "interrupted")
            raise AgentTurnError(result.result or result.subtype, result.subtype)
        if turn.args.into is not None:
            self._store_answer(turn, result)

    def _store_answer(self, turn: _Turn, result: ResultMessage) -> None:
        """``--into NAME``: the answer's text, or its structured output, in the kernel variable."""
        from ._answers import AnswerError, answer_value

        name = turn.args.into
        try:
            value = answer_value(turn.answer, result)
        except AnswerError as e:
            raise AgentTurnError(f"{e}; `{name}` is unchanged.", "error_during_execution") from None
        self.user_ns[name] = value
        if not (turn.args.quiet or self.quiet):
            print(f"Stored the answer in `{name}` ({type(value).__name__}).")

    def _reasoning(self, args: argparse.Namespace) -> dict[str, Any]:
        """``effort`` and ``thinking`` for this turn: the cell's ``--effort``, else the traitlets."""
        effort = args.effort or self.effort or None
        if effort is not None and effort not in EFFORTS:
            raise UsageError(f"Unknown effort {effort!r}; use one of {', '.join(EFFORTS)} (`%config AgentMagics.effort = \"high\"`).")
        return {"effort": effort, "thinking": thinking_option(self.thinking)}

    def _host_for(
        self, sid: str | None, *, scope: str, home: str | None, fork: bool = False, no_persist: bool = False,
        model: str | None = None, session_id: str | None = None, **reasoning: Any,
    ) -> ClientHost:
        """The open client of session ``sid`` (opened now if needed; a new session for None)."""
        runner = self.runner
        settings = (
            bool(self.kernel_tools), self.provider or None, self.store or None,
            json.dumps(self.mcp_servers, sort_keys=True, default=str), tuple(self.setting_sources),
        )
        if sid is not None and not fork and not no_persist:
            host = runner.hosts.get(sid)
            if host is not None and host.settings == settings:
                return host
            if host is not None:
                runner.close_client(host)  # %config changed the tools or provider: reopen with them
        options = AgentOptions(
            cwd=os.getcwd(),
            scope=scope,
            home=home,
            provider=self.provider or None,
            session_store=self.store or None,
            model=model or self.model or None,
            resume=sid,
            fork_session=fork,
            session_id=session_id,
            persist_session=not no_persist,
            include_partial_messages=True,
            can_use_tool=self._can_use_tool,
            extra_tools=self._kernel_tools(),
            mcp_servers=dict(self.mcp_servers) or None,
            setting_sources=list(self.setting_sources),
            # Only what is set: options the provider's default covers stay unset.
            **{k: v for k, v in reasoning.items() if v is not None},
        )
        host = runner.open_client(options, bridge=self.notebook_bridge)
        host.settings = settings
        if host.client.session_id is not None and not no_persist:
            runner.hosts[host.client.session_id] = host
        return host

    def _kernel_tools(self) -> list[Any]:
        """Python and Variables (unless turned off), then the kernel functions registered with `%agent tool`."""
        if self.shell is None:
            return []
        from ._kernel_tools import PythonTool, VariablesTool

        ns = lambda: self.user_ns  # noqa: E731
        builtin = [PythonTool(self.runner.bridge, ns, self.kernel_state), VariablesTool(self.runner.bridge, ns)] if self.kernel_tools else []
        return [*builtin, *self.functions.tools()]

    def _attach_variables(self, prompt: str, names: list[str]) -> str:
        from ._kernel_tools import describe_value

        ns = self.user_ns
        missing = [n for n in names if n not in ns]
        if missing:
            raise UsageError(f"--with {missing[0]}: no such variable in this kernel.")
        described = "\n\n".join(describe_value(n, ns[n]) for n in names)
        return f"{prompt}\n\n<kernel_variables>\n{described}\n</kernel_variables>"

    # -- main-thread handlers (called between UI polls) --------------------------------
    def _handle_exec(self, payload: dict[str, Any], reply: Any) -> None:
        from ._kernel_tools import INTERRUPTED, run_code, snapshot_then_run

        bridge = self.runner.bridge
        bridge.executing.set()
        try:
            code = payload["code"]
            reply(snapshot_then_run(self.kernel_state, code, str(payload.get("turn") or ""), (), lambda: run_code(code, self.user_ns), INTERRUPTED))
        finally:
            bridge.executing.clear()

    def _snapshot_settings(self) -> Any:
        from ._kernel_state import SnapshotSettings

        mb = 1 << 20
        return SnapshotSettings(
            enabled=bool(self.kernel_snapshots),
            max_variable_bytes=max(0, int(self.kernel_snapshot_max_variable_mb)) * mb,
            max_turn_bytes=max(0, int(self.kernel_snapshot_max_turn_mb)) * mb,
        )

    def _handle_variables(self, payload: dict[str, Any], reply: Any) -> None:
        from ._kernel_tools import list_variables

        reply(list_variables(self.user_ns, payload.get("names")))

    async def _can_use_tool(self, tool_name: str, tool_input: dict[str, Any], context: Any) -> Any:
        return await self.runner.bridge.call("approval", tool_name=tool_name, tool_input=tool_input, context=context)

    def _handle_approval(self, payload: dict[str, Any], reply: Any) -> None:
        from .._permissions import PermissionResultDeny

        factory = self._widget_factory()
        if factory is None or not self.in_kernel:
            reply(
                PermissionResultDeny(
                    message=(
                        f"{payload['tool_name']} needs approval, and nobody can approve it here (no notebook front end). "
                        "Allow it with `%%agent --permission-mode acceptEdits` (edits) or `--allow \"Bash(...)\"`, "
                        "or `--permission-mode bypassPermissions`."
                    )
                )
            )
            return
        factory.approval(self, payload, reply, timeout=self.approval_timeout)

    def _expire_prompts(self) -> None:
        """Approval prompts still open when a turn ends can no longer be answered."""
        for w in self.open_prompts:
            expire = getattr(w, "expire", None)
            if expire is not None:
                expire()
        self.open_prompts.clear()

    def _widget_factory(self) -> Any:
        if self._widgets is None and self.in_kernel:
            try:
                from . import widgets

                self._widgets = widgets
            except ImportError:
                self._widgets = False
        return self._widgets or None

    def close(self) -> None:
        self.runner.close_all()

