"""The kernel's end of the JupyterLab extension: live edits of open notebooks over a comm.

When a notebook is open in JupyterLab, the agent's ``Read`` sees the open
(maybe unsaved) content and ``NotebookEdit`` changes the open notebook's model,
cell by cell, instead of writing the file under the person. The edit is not
saved: the notebook is marked unsaved, and the person (or Lab's autosave)
saves it, so their own unsaved edits are never written behind their back.
While it is unsaved, the file on disk is older than what the agent read and
edited; both tools use the open notebook as long as it is open, so they agree.

Protocol
--------
One comm target, ``agent_magic``; every message is ``{"v": 1, "type": ...}``.

Kernel to front end:

``announce``
    Sent on a comm the kernel opens (and closes at once) when the extension
    loads: front ends that know the target then open their own comm.
``welcome``
    The answer to ``hello``: ``{"version": ...}``.
``request``
    ``{"id", "method", "path", ...}``: ``read`` (answer: the notebook as
    nbformat JSON), ``apply`` with ``edit`` (a :class:`~agent_magic.tools.CellEdit`
    as JSON; answer: true), ``replace_all`` with ``notebook`` (answer: true).
    ``path`` is the front end's own (server-relative) path of the notebook.
``error``
    A message the kernel could not use (unknown version or type).

Front end to kernel:

``hello``
    The data of the comm the front end opens: ``{"client", "root", "open"}``,
    its id, the server's root folder and the notebooks open in it (relative paths).
``open``
    ``{"root", "open"}`` again whenever the set of open notebooks changes.
``reply``
    ``{"id", "ok", "result" | "error"}``, the answer to a request.

Each front end (browser tab, kernel connection) opens its own comm. A request
goes to every front end that has the notebook open; the first good answer
wins. A front end that does not answer within ``timeout`` seconds is taken to
be gone: its notebooks count as closed until it says otherwise, and the tools
use the file. With no front end at all (classic Notebook, VS Code, nbclient),
nothing is open and nothing waits.

The kernel keeps one comm of its own registered (never sent to anyone) so that a
front end loading later (a page reload) can ask ``comm_info`` whether
agent_magic is loaded, without opening a comm to a target that might not exist.

Threads
-------
The tools call the bridge from the agent's thread and wait on an event that the
comm handler sets. The handler runs where the kernel dispatches the front end's
messages: on the main thread (an ``%%agent`` cell awaits, so ipykernel >= 7.4
dispatches comms meanwhile; older kernels are polled by the waiting cell), or
on a kernel subshell's thread. JupyterLab 4.6 sends comm messages on a subshell
when the kernel has them (ipykernel 7); the front end opens its comm there and
the kernel handles its answers there, so even a synchronous cell on the main
thread (``%agent rewind``) can wait for them. A synchronous cell only asks
front ends linked that way (or, on ipykernel 6, polls the kernel while it
waits); with none, it uses the file at once rather than wait for an answer
that cannot arrive before the cell ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tools.base import CellEdit

__all__ = ["PROTOCOL_VERSION", "TARGET", "CommBridge", "FrontEndLink", "register"]

#: The comm target name, registered by the kernel and by the JupyterLab extension.
TARGET = "agent_magic"
#: Version of the message format; messages with another ``v`` are refused.
PROTOCOL_VERSION = 1
#: Seconds to wait for a front end to answer a request before using the file instead.
REQUEST_TIMEOUT = 10.0

Waiter = Callable[[threading.Event, float], None]


@dataclass
class _Client:
    """One front end (a kernel connection in a browser tab)."""

    comm: Any
    client_id: str
    #: Resolved absolute path -> the front end's (server-relative) path.
    open: dict[str, str] = field(default_factory=dict)
    #: Its messages come on a kernel subshell: they are handled even while the main thread is busy.
    concurrent: bool = False


@dataclass
class _Pending:
    event: threading.Event
    asked: int
    replies: int = 0
    ok: bool = False
    result: Any = None
    error: str | None = None


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def _open_map(root: Any, paths: Any) -> dict[str, str]:
    if not isinstance(root, str) or not root or not isinstance(paths, list):
        return {}
    out = {}
    for rel in paths:
        if isinstance(rel, str) and rel.endswith(".ipynb"):
            with contextlib.suppress(OSError, ValueError):
                out[_key(Path(root) / rel)] = rel
    return out


class CommBridge:
    """A :class:`~agent_magic.tools.base.NotebookBridge` over the ``agent_magic`` comm.

    The tools call it from the agent's thread; the comm's messages arrive on
    the kernel's main thread (or a subshell thread), where they set the event
    the caller waits on. A caller on the main thread itself (``%agent rewind``)
    only asks front ends whose answers come on a subshell, or waits with
    ``wait_on_main`` (see the module's docstring, "Threads").

    Parameters
    ----------
    timeout
        Seconds a request waits for an answer.
    wait_on_main
        How the main thread waits for an event (``event, timeout``); the kernel
        passes one that processes incoming messages meanwhile.
    """

    def __init__(self, *, timeout: float = REQUEST_TIMEOUT, wait_on_main: Waiter | None = None) -> None:
        self.timeout = timeout
        self._wait_on_main = wait_on_main
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._pending: dict[str, _Pending] = {}

    # -- NotebookBridge ----------------------------------------------------
    def is_open(self, path: Path) -> bool:
        """Whether a front end has said the notebook is open; answered without asking it."""
        key = _key(path)
        with self._lock:
            return any(key in c.open for c in self._clients.values())

    def read(self, path: Path) -> dict[str, Any] | None:
        """The open notebook's current content (nbformat JSON), or None (not open, no answer)."""
        ok, result = self._request(path, "read")
        if ok and isinstance(result, dict) and isinstance(result.get("cells"), list):
            return result
        return None

    def apply(self, path: Path, edit: CellEdit) -> bool:
        """Apply one cell edit to the open notebook; False when no front end did."""
        ok, result = self._request(path, "apply", edit=dataclasses.asdict(edit))
        return ok and result is True

    def replace_all(self, path: Path, nb: dict[str, Any]) -> bool:
        """Replace every cell of the open notebook (a rewind that cannot go cell by cell)."""
        ok, result = self._request(path, "replace_all", notebook=nb)
        return ok and result is True

    @property
    def clients(self) -> list[str]:
        """Ids of the connected front ends."""
        with self._lock:
            return [c.client_id for c in self._clients.values()]

    # -- requests ------------------------------------------------------------
    def _request(self, path: Path, method: str, **payload: Any) -> tuple[bool, Any]:
        key = _key(path)
        rid = uuid.uuid4().hex
        blocked = threading.current_thread() is threading.main_thread() and self._wait_on_main is None
        with self._lock:
            targets = [(cid, c) for cid, c in self._clients.items() if key in c.open]
            if blocked:
                # A synchronous cell holds the main thread: only answers that arrive on a
                # subshell can be read before it ends.
                targets = [(cid, c) for cid, c in targets if c.concurrent]
            if not targets:
                return False, None
            pending = _Pending(threading.Event(), asked=len(targets))
            self._pending[rid] = pending
        try:
            for _cid, client in targets:
                msg = {"v": PROTOCOL_VERSION, "type": "request", "id": rid, "method": method,
                       "path": client.open[key], **payload}
                try:
                    client.comm.send(msg)
                except Exception:
                    # The comm is gone (kernel shutting down); count it as a refusal.
                    self._count_reply(rid, ok=False, result=None, error="send failed")
            self._wait(pending.event)
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if pending.replies == 0:
            # Nobody answered: those front ends are gone (a closed tab); stop asking them.
            with self._lock:
                for cid, _client in targets:
                    gone = self._clients.get(cid)
                    if gone is not None:
                        gone.open.clear()
            return False, None
        return pending.ok, pending.result

    def _wait(self, event: threading.Event) -> None:
        if threading.current_thread() is threading.main_thread() and self._wait_on_main is not None:
            self._wait_on_main(event, self.timeout)
        else:
            event.wait(self.timeout)

    def _count_reply(self, rid: str, *, ok: bool, result: Any, error: str | None) -> None:
        with self._lock:
            pending = self._pending.get(rid)
            if pending is None or pending.ok:
                return  # late, or another front end answered first
            pending.replies += 1
            if ok:
                pending.ok, pending.result = True, result
            elif error:
                pending.error = error
            if ok or pending.replies >= pending.asked:
                pending.event.set()

    # -- the comm (kernel main thread or a subshell thread) ----------------------------
    def attach(self, comm: Any, open_msg: dict[str, Any]) -> None:
        """Comm target handler: a front end opened a comm (its data is a ``hello``)."""
        data = (open_msg.get("content") or {}).get("data") or {}
        if data.get("v") != PROTOCOL_VERSION or data.get("type") != "hello":
            with contextlib.suppress(Exception):
                comm.send({"v": PROTOCOL_VERSION, "type": "error",
                           "error": f"unsupported message (v={data.get('v')!r}, type={data.get('type')!r})"})
            with contextlib.suppress(Exception):
                comm.close()
            return
        comm_id = str(comm.comm_id)
        concurrent = bool((open_msg.get("header") or {}).get("subshell_id"))
        if concurrent:
            _answer_on_own_subshell(comm)
        client = _Client(comm, str(data.get("client") or comm_id), _open_map(data.get("root"), data.get("open")), concurrent)
        with self._lock:
            self._clients[comm_id] = client
        comm.on_msg(lambda msg: self._on_msg(comm_id, msg))
        comm.on_close(lambda msg: self._drop(comm_id))
        from .._version import __version__

        comm.send({"v": PROTOCOL_VERSION, "type": "welcome", "version": __version__})

    def _on_msg(self, comm_id: str, msg: dict[str, Any]) -> None:
        data = (msg.get("content") or {}).get("data") or {}
        kind = data.get("type")
        if data.get("v") != PROTOCOL_VERSION:
            self._send_error(comm_id, f"unsupported protocol version {data.get('v')!r}")
        elif kind == "reply":
            self._count_reply(str(data.get("id")), ok=bool(data.get("ok")), result=data.get("result"),
                              error=str(data.get("error") or "") or None)
        elif kind == "open":
            with self._lock:
                client = self._clients.get(comm_id)
                if client is not None:
                    client.open = _open_map(data.get("root"), data.get("open"))
        else:
            self._send_error(comm_id, f"unknown message type {kind!r}")

    def _send_error(self, comm_id: str, error: str) -> None:
        with self._lock:
            client = self._clients.get(comm_id)
        if client is not None:
            with contextlib.suppress(Exception):
                client.comm.send({"v": PROTOCOL_VERSION, "type": "error", "error": error})

    def _drop(self, comm_id: str) -> None:
        with self._lock:
            self._clients.pop(comm_id, None)

    def close(self) -> None:
        """Close every front end's comm and wake waiting requests."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            pending = list(self._pending.values())
        for p in pending:
            p.event.set()
        for c in clients:
            with contextlib.suppress(Exception):
                c.comm.close()


def _answer_on_own_subshell(comm: Any) -> None:
    """Let the front end's messages on ``comm`` be handled on the subshell it sends them on.

    ipykernel 7.4 routes a comm's incoming messages to the subshell that last
    *sent* on it (``Comm._reply_subshell_for``), which for our requests is the
    main shell: a reply would then wait for a synchronous ``%agent rewind`` cell
    to end, which is waiting for it. Our replies carry no state of the main
    thread, so they are handled where they arrive.
    """
    if hasattr(comm, "_reply_subshell_for"):
        comm._reply_subshell_for = lambda data, default: default


class FrontEndLink:
    """What :func:`register` returns: the bridge, and how to take it all down again."""

    def __init__(self, bridge: CommBridge | None, undo: list[Callable[[], None]]) -> None:
        self.bridge = bridge
        self._undo = undo

    def close(self) -> None:
        """Unregister the comm target and close the front ends' comms (``%unload_ext``)."""
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            with contextlib.suppress(Exception):
                fn()


def _wait_processing_messages(event: threading.Event, timeout: float) -> None:
    """On the kernel's main thread (ipykernel < 7): wait for ``event`` while the kernel handles messages.

    A cell that runs synchronously (``%agent rewind``) blocks the main shell, so the
    front end's answer would only be read after the cell: jupyter-ui-poll processes
    it meanwhile (execution requests are kept for after the cell, as usual).
    """
    deadline = time.monotonic() + timeout
    try:
        from jupyter_ui_poll import ui_events

        with ui_events() as poll:
            while not event.is_set() and time.monotonic() < deadline:
                poll(10)
                event.wait(0.005)
    except Exception:
        # Nested polling: the answer may still come on a subshell thread.
        event.wait(max(0.0, deadline - time.monotonic()))


def register(ipython: Any, magics: Any) -> FrontEndLink:
    """Register the ``agent_magic`` comm target in this kernel and tell front ends about it.

    Outside a kernel (a terminal IPython) there is no front end: the link has no
    bridge and the notebook tools use files.
    """
    kernel = getattr(ipython, "kernel", None)
    manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        return FrontEndLink(None, [])
    import comm as comm_lib

    # ipykernel 7 has no do_one_iteration to pump messages with; there, answers that
    # must reach a busy main thread come on subshells (see CommBridge).
    pump = _wait_processing_messages if hasattr(kernel, "do_one_iteration") else None
    bridge = CommBridge(wait_on_main=pump)
    undo: list[Callable[[], None]] = []
    manager.register_target(TARGET, bridge.attach)
    undo.append(lambda: manager.unregister_target(TARGET, bridge.attach))
    undo.append(bridge.close)
    # Registered, never opened: comm_info shows front ends loading later that we are here.
    presence = comm_lib.create_comm(target_name=TARGET, primary=False, comm_id=f"agent-magic-presence-{uuid.uuid4().hex}")
    manager.register_comm(presence)

    def drop_presence() -> None:
        manager.comms.pop(presence.comm_id, None)
        presence._closed = True  # nobody to tell: it was never opened

    undo.append(drop_presence)
    announce = comm_lib.create_comm(target_name=TARGET, data={"v": PROTOCOL_VERSION, "type": "announce"})
    announce.close()
    return FrontEndLink(bridge, undo)
