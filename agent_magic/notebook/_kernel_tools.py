"""Tools that work in the live kernel: ``Python`` (run code in the user's namespace) and ``Variables``.

The agent's loop runs in a background thread; user code must run in the
kernel's main thread (that is where the namespace, matplotlib and the
kernel's interrupt live). :class:`MainThreadBridge` carries a request from the
loop to the cell that is waiting on the agent, which runs it between UI polls.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._errors import ToolError
from ..tools.base import Tool, ToolContext, ToolResult, require_str

MAX_OUTPUT = 20_000
INTERRUPTED = "KeyboardInterrupt: the code was interrupted."
#: Request kinds that run the agent's or the person's code on the main thread: cancelling the
#: request (Stop, an interrupted turn) interrupts that code too.
INTERRUPTIBLE = frozenset({"exec", "function"})
_HIDDEN = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def _cap(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return text[:head] + f"\n[... {len(text) - limit} characters cut ...]\n" + text[-tail:]


def _safe_repr(value: Any, limit: int = 2000) -> str:
    try:
        r = repr(value)
    except Exception as e:
        r = f"<{type(value).__name__}: repr failed: {type(e).__name__}>"
    return r if len(r) <= limit else r[:limit] + "…"


def describe_value(name: str, value: Any, *, rows: int = 5) -> str:
    """A compact description of one variable: type, shape/len, dtypes and a head for tables."""
    t = type(value)
    tname = f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins",) else t.__qualname__
    parts = [f"{name}: {tname}"]
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        parts.append(f"shape={shape}")
    elif hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        with contextlib.suppress(Exception):
            parts.append(f"len={len(value)}")
    head = ""
    mod = t.__module__ or ""
    if mod.startswith("pandas") and hasattr(value, "head"):
        with contextlib.suppress(Exception):
            if hasattr(value, "dtypes") and hasattr(value.dtypes, "items"):
                parts.append("dtypes: " + ", ".join(f"{c}={d}" for c, d in list(value.dtypes.items())[:30]))
            head = value.head(rows).to_string(max_cols=30, max_colwidth=40)
    elif mod.startswith("numpy") and hasattr(value, "dtype"):
        parts.append(f"dtype={value.dtype}")
        with contextlib.suppress(Exception):
            head = _safe_repr(value, 600)
    elif callable(value) and not isinstance(value, type):
        with contextlib.suppress(Exception):
            import inspect

            parts.append(f"signature={inspect.signature(value)}")
    else:
        head = _safe_repr(value, 600)
    text = ", ".join(parts)
    return f"{text}\n{head}" if head else text


def user_variables(ns: dict[str, Any]) -> list[tuple[str, Any]]:
    """The person's variables: no modules, no private names, no IPython plumbing."""
    import types

    out = []
    for k, v in ns.items():
        if k.startswith("_") or k in _HIDDEN:
            continue
        if isinstance(v, types.ModuleType):
            continue
        if isinstance(v, type) and getattr(v, "__module__", "") != "__main__":
            continue
        if callable(v) and getattr(v, "__module__", "__main__") not in ("__main__", None) and not hasattr(v, "shape"):
            continue
        out.append((k, v))
    return out


def run_code(code: str, ns: dict[str, Any]) -> tuple[str, bool]:
    """Run ``code`` in ``ns``; return (stdout + stderr + repr of the last expression or traceback, is_error).

    KeyboardInterrupt (the kernel's interrupt button) is reported, not raised.
    """
    out = io.StringIO()
    try:
        tree = ast.parse(code, "<agent>", "exec")
    except SyntaxError as e:
        return f"SyntaxError: {e.msg} (line {e.lineno})", True
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = tree.body.pop()
        assert isinstance(expr, ast.Expr)
        last = ast.Expression(expr.value)
    is_error = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            exec(compile(tree, "<agent>", "exec"), ns)
            if last is not None:
                value = eval(compile(last, "<agent>", "eval"), ns)
                if value is not None:
                    ns["_"] = value
                    print(_safe_repr(value, MAX_OUTPUT))
        except KeyboardInterrupt:
            print("KeyboardInterrupt: the code was interrupted.")
            is_error = True
        except BaseException:
            etype, evalue, tb = sys.exc_info()
            # Drop our own frames: the person only wants to see the agent's code.
            while tb is not None and tb.tb_frame.f_code.co_filename != "<agent>":
                tb = tb.tb_next
            print("".join(traceback.format_exception(etype, evalue, tb)), end="")
            is_error = True
    return _cap(out.getvalue()), is_error


@dataclass
class _Request:
    kind: str
    payload: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass
class MainThreadBridge:
    """A queue of work the agent's thread hands to the kernel's main thread.

    The waiting cell calls :meth:`service` between UI polls; handlers are
    registered per request kind (``exec``, ``approval``, ...).
    """

    requests: queue.Queue[_Request] = field(default_factory=queue.Queue)
    wake: threading.Event = field(default_factory=threading.Event)
    handlers: dict[str, Callable[[dict[str, Any], Callable[[Any], None]], None]] = field(default_factory=dict)
    main_thread: threading.Thread = field(default_factory=threading.main_thread)
    #: True while the main thread runs agent code (so an interrupt may be aimed at it).
    executing: threading.Event = field(default_factory=threading.Event)
    #: Set by an async cell that waits on the agent: wakes it when a request arrives.
    async_notify: Callable[[], None] | None = None

    async def call(self, kind: str, **payload: Any) -> Any:
        """From the agent's loop: run ``kind`` on the main thread and wait for its answer."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.requests.put(_Request(kind, payload, loop, fut))
        self.wake.set()
        notify = self.async_notify
        if notify is not None:
            notify()
        try:
            return await fut
        except asyncio.CancelledError:
            if kind in INTERRUPTIBLE and self.executing.is_set():
                # The turn was interrupted while the person's kernel runs our code: stop that code too.
                import _thread

                _thread.interrupt_main()
            raise

    def service(self) -> int:
        """On the main thread: run every pending request; returns how many ran."""
        n = 0
        while True:
            try:
                req = self.requests.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if req.future.cancelled():
                continue
            handler = self.handlers.get(req.kind)

            def reply(value: Any, req: _Request = req) -> None:
                def _set() -> None:
                    if not req.future.done():
                        req.future.set_result(value)

                req.loop.call_soon_threadsafe(_set)

            if handler is None:
                reply(ToolError(f"No handler for {req.kind!r} in this kernel."))
                continue
            try:
                handler(req.payload, reply)
            except Exception as e:
                reply(ToolError(f"{type(e).__name__}: {e}"))

    def cancel_pending(self) -> None:
        while True:
            try:
                req = self.requests.get_nowait()
            except queue.Empty:
                return
            req.loop.call_soon_threadsafe(req.future.cancel)


class Snapshots(Protocol):
    """Snapshots of the variables the agent's code can change (``_kernel_state.KernelState``)."""

    def before_code(self, code: str, *, turn: str, extra_names: Iterable[str] = ()) -> dict[str, Any] | None:
        """Just before the code runs: ``{"key", "record", "not_restorable", ...}``, or None (nothing to keep)."""

    def after_code(self, snap: dict[str, Any]) -> None:
        """Just after: note in ``snap`` the values it left that no later snapshot could store."""


def run_interruptibly(work: Callable[[], tuple[str, bool]], interrupted: str) -> tuple[str, bool]:
    """On the main thread: run ``work`` so that the kernel's interrupt button stops it.

    An async cell's SIGINT handler only cancels the cell; while the agent's code (or a
    registered function) runs in the person's kernel, the interrupt must stop that code,
    as it would in a normal cell. KeyboardInterrupt is reported as ``(interrupted, True)``.
    """
    main = threading.current_thread() is threading.main_thread()
    old = signal.getsignal(signal.SIGINT) if main else None
    if main:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return work()
    except KeyboardInterrupt:
        return interrupted, True
    finally:
        if main and old is not None:
            signal.signal(signal.SIGINT, old)


def snapshot_then_run(
    snapshots: Snapshots | None, code: str, turn: str, extra: Iterable[str], work: Callable[[], tuple[str, bool]], interrupted: str
) -> tuple[str, bool, dict[str, Any] | None]:
    """On the main thread: snapshot the variables ``code`` can change, then run ``work`` interruptibly.

    A snapshot that fails (a full disk) never stops the code: its error goes back with the result.
    """
    snap: dict[str, Any] | None = None
    if snapshots is not None:
        try:
            snap = snapshots.before_code(code, turn=turn, extra_names=extra)
        except Exception as e:
            snap = {"error": f"{type(e).__name__}: {e}"}
    text, is_error = run_interruptibly(work, interrupted)
    if snapshots is not None and snap is not None and "error" not in snap:
        with contextlib.suppress(Exception):  # only a note for the model: never fails the call
            snapshots.after_code(snap)
    return text, is_error, snap


async def run_agent_code(
    bridge: MainThreadBridge,
    ctx: ToolContext,
    kind: str,
    payload: dict[str, Any],
    local: Callable[[str], tuple[str, bool, dict[str, Any] | None]],
) -> tuple[str, bool, list[str], str]:
    """Run code in the person's kernel for a tool: on the main thread (through the bridge when
    called from the agent's thread), its file changes and variable snapshot checkpointed.

    ``local(turn)`` does the same work when already on the main thread. Returns the output,
    whether it failed, the changed files, and a note for the model of what a rewind could not
    restore (empty when everything could be).
    """
    turn = str(getattr(ctx.turn, "checkpoint_id", "") or "")
    token = ctx.recorder.before_command()  # files the code writes: a scan before and after, as for Bash
    changed: list[str] = []
    try:
        if threading.current_thread() is bridge.main_thread:
            text, is_error, snap = local(turn)
        else:
            answer = await bridge.call(kind, turn=turn, **payload)
            if isinstance(answer, Exception):
                raise ToolError(str(answer))
            text, is_error, snap = answer
    finally:
        # Also after an error or an interrupt: a synchronous call, so cancellation cannot cut it short.
        changed = ctx.recorder.after_command(token)
    return text, is_error, changed, _snapshot_note(ctx, snap)


def _snapshot_note(ctx: ToolContext, snap: dict[str, Any] | None) -> str:
    """Record the snapshot in the checkpoint log; the line the model reads about what it could not keep."""
    if not snap:
        return ""
    if "error" in snap:
        return f"\n\n[agent-magic: the variables could not be snapshotted ({snap['error']}); a rewind will not restore them.]"
    record = getattr(ctx.recorder, "record_variables", None)
    if record is not None:
        record(snap["key"], snap["record"])
    lost = snap.get("not_restorable") or {}
    later = {n: why for n, why in (snap.get("unrestorable_after") or {}).items() if n not in lost}
    note = ""
    if lost:
        listed = "; ".join(f"{name} ({why})" for name, why in sorted(lost.items()))
        note += f"\n\n[agent-magic: a rewind cannot restore these variables as they were before this code: {listed}.]"
    if later:
        listed = "; ".join(f"{name} ({why})" for name, why in sorted(later.items()))
        note += f"\n\n[agent-magic: these variables now hold values no snapshot can keep, so later changes to them cannot be undone: {listed}.]"
    return note


class PythonTool(Tool):
    """Run Python in the person's live kernel."""

    name = "Python"
    kind = "execute"
    description = (
        "Run Python code in the person's live Jupyter kernel, in their namespace: the variables, "
        "DataFrames and imports of their notebook are available, and variables you define stay there. "
        "Returns printed output, the repr of the last expression, or the traceback. Use it to inspect "
        "data before changing code (e.g. `df.head()`, `df.dtypes`, `df.isna().sum()`). Keep code short "
        "and side-effect free unless the person asked for changes; long-running code blocks the notebook."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python code to run in the kernel's user namespace."},
            "description": {"type": "string", "description": "What the code does, in a few words."},
        },
        "required": ["code"],
        "additionalProperties": False,
    }

    def __init__(
        self, bridge: MainThreadBridge, namespace: Callable[[], dict[str, Any]], snapshots: Snapshots | None = None
    ) -> None:
        self.bridge = bridge
        self.namespace = namespace
        self.snapshots = snapshots

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        code = require_str(input, "code")
        if "\x00" in code:
            raise ToolError("The code contains a NUL byte.")

        def local(turn: str) -> tuple[str, bool, dict[str, Any] | None]:
            return snapshot_then_run(self.snapshots, code, turn, (), lambda: run_code(code, self.namespace()), INTERRUPTED)

        text, is_error, changed, note = await run_agent_code(self.bridge, ctx, "exec", {"code": code}, local)
        lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        summary = ("error: " + text.strip().splitlines()[-1][:120]) if is_error and text.strip() else f"{lines} lines of output"
        data: dict[str, Any] = {"changed_files": changed} if changed else {}
        return ToolResult((text or "(no output)") + note, is_error=is_error, summary=summary, data=data)

    def rule_content(self, input: dict[str, Any]) -> str | None:
        code = input.get("code")
        return code if isinstance(code, str) else None


class VariablesTool(Tool):
    """List the person's kernel variables."""

    name = "Variables"
    kind = "read"
    description = (
        "List the variables in the person's live Jupyter kernel with their type and shape or length; "
        "DataFrames also show dtypes and their first rows. Pass `names` to describe only those."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "names": {"type": "array", "items": {"type": "string"}, "description": "Only these variables."},
        },
        "additionalProperties": False,
    }

    def __init__(self, bridge: MainThreadBridge, namespace: Callable[[], dict[str, Any]]) -> None:
        self.bridge = bridge
        self.namespace = namespace

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        names = input.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ToolError("`names` must be a list of variable names.")
        if threading.current_thread() is self.bridge.main_thread:
            text = list_variables(self.namespace(), names)
        else:
            answer = await self.bridge.call("variables", names=names)
            if isinstance(answer, Exception):
                raise ToolError(str(answer))
            text = answer
        count = text.count("\n\n") + 1 if text.strip() else 0
        return ToolResult(text or "(no variables)", summary=f"{count} variable" + ("" if count == 1 else "s"))

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Any]:
        return []


def list_variables(ns: dict[str, Any], names: list[str] | None = None) -> str:
    items = user_variables(ns)
    if names:
        missing = [n for n in names if n not in ns]
        items = [(n, ns[n]) for n in names if n in ns]
        text = "\n\n".join(describe_value(n, v) for n, v in items)
        if missing:
            text += ("\n\n" if text else "") + "Not defined: " + ", ".join(missing)
        return _cap(text)
    return _cap("\n\n".join(describe_value(n, v, rows=3) for n, v in items[:100]))
