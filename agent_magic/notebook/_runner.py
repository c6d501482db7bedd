"""Running agent turns from a kernel: a background event loop, and a cell that stays responsive.

The agent loop runs in one background thread with its own asyncio loop, where
each session's :class:`AgentClient` lives in a host task for as long as the
kernel does (so its HTTP connection stays warm). The cell that started a
turn waits on the main thread inside ``jupyter_ui_poll.ui_events`` so that
button clicks (Stop, Approve/Deny) are processed while it is busy, serves
requests the loop needs on the main thread (the ``Python`` tool, approval
prompts), and feeds messages to the display. Ctrl-C / the kernel's interrupt
button becomes a clean ``client.interrupt()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .._client import AgentClient
from .._messages import Message, ResultMessage, SystemMessage
from .._options import AgentOptions
from ._kernel_tools import MainThreadBridge

INTERRUPT_GRACE = 5.0


class LoopThread:
    """A daemon thread running an asyncio event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="agent-magic-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


@dataclass
class ClientHost:
    """One AgentClient kept open in the loop thread."""

    client: AgentClient
    ready: Future[Any]
    stop: asyncio.Event | None = None
    task: Future[Any] | None = None
    last_size: int = -1
    #: What the client was opened with that a later cell may change (``%config``): when it
    #: differs, the next turn opens a new client on the same session.
    settings: tuple[Any, ...] = ()


@dataclass
class TurnOutcome:
    result: ResultMessage | None
    interrupted_by_kernel: bool
    messages: int


@dataclass
class Runner:
    """Owns the loop thread and the open clients of one kernel."""

    bridge: MainThreadBridge = field(default_factory=MainThreadBridge)
    _loop: LoopThread | None = None
    hosts: dict[str, ClientHost] = field(default_factory=dict)
    active: AgentClient | None = None

    @property
    def loop(self) -> LoopThread:
        if self._loop is None or not self._loop.alive:
            self._loop = LoopThread()
        return self._loop

    # -- client lifecycle ----------------------------------------------------
    def open_client(self, options: AgentOptions, bridge: Any = None) -> ClientHost:
        """Start a client host in the loop thread and wait until it is connected.

        Raises whatever connecting raises (unknown session, missing key, ...).
        """
        client = AgentClient(options, notebook_bridge=bridge)
        ready: Future[Any] = Future()
        host = ClientHost(client, ready)

        async def run_host() -> None:
            host.stop = asyncio.Event()
            try:
                async with client:
                    ready.set_result(True)
                    await host.stop.wait()
            except BaseException as e:
                if not ready.done():
                    ready.set_exception(e)
                else:
                    raise

        host.task = self.loop.submit(run_host())
        ready.result(timeout=60)
        return host

    def close_client(self, host: ClientHost) -> None:
        if host.stop is not None:
            stop = host.stop
            self.loop.call(stop.set)
        if host.task is not None:
            with contextlib.suppress(Exception):
                host.task.result(timeout=10)
        for k, v in list(self.hosts.items()):
            if v is host:
                del self.hosts[k]

    def close_all(self) -> None:
        for host in list(self.hosts.values()):
            self.close_client(host)
        self.hosts.clear()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    # -- turns ---------------------------------------------------------------
    def _start(self, host: ClientHost, prompt: str | list[dict[str, Any]], notify: Callable[[], None]) -> tuple[Future[Any], queue.Queue[Message]]:
        client = host.client
        inbox: queue.Queue[Message] = queue.Queue()

        async def drive() -> None:
            await client.query(prompt)
            async for m in client.receive_response():
                inbox.put(m)
                notify()

        fut = self.loop.submit(drive())
        fut.add_done_callback(lambda _f: notify())
        self.active = client
        return fut, inbox

    def _pump(self, inbox: queue.Queue[Message], on_message: Callable[[Message], None], on_idle: Callable[[], None]) -> tuple[int, ResultMessage | None]:
        """Serve main-thread requests and hand queued messages to the display."""
        self.bridge.service()
        n = 0
        result = None
        while True:
            try:
                m = inbox.get_nowait()
            except queue.Empty:
                break
            n += 1
            if isinstance(m, ResultMessage):
                result = m
            on_message(m)
        on_idle()
        return n, result

    def run_turn(
        self,
        host: ClientHost,
        prompt: str | list[dict[str, Any]],
        on_message: Callable[[Message], None],
        on_idle: Callable[[], None],
        *,
        in_kernel: bool,
    ) -> TurnOutcome:
        """Run one turn, blocking this thread; UI events are polled (ipykernel < 7.4 and terminals)."""
        wake = self.bridge.wake
        fut, inbox = self._start(host, prompt, wake.set)
        interrupted = False
        deadline: float | None = None
        n = 0
        result: ResultMessage | None = None
        try:
            with _polling(in_kernel) as poll:
                while True:
                    try:
                        poll()
                        k, r = self._pump(inbox, on_message, on_idle)
                        n += k
                        result = r or result
                        if fut.done() and inbox.empty():
                            break
                        if deadline is not None and time.monotonic() > deadline:
                            break
                        wake.wait(0.05)
                        wake.clear()
                    except KeyboardInterrupt:
                        if not interrupted:
                            interrupted = True
                            deadline = time.monotonic() + INTERRUPT_GRACE
                            self.interrupt()
        finally:
            self.active = None
            self.bridge.cancel_pending()
        return self._outcome(fut, result, interrupted, n)

    async def arun_turn(
        self,
        host: ClientHost,
        prompt: str | list[dict[str, Any]],
        on_message: Callable[[Message], None],
        on_idle: Callable[[], None],
    ) -> TurnOutcome:
        """Run one turn from an async cell: while it awaits, the kernel keeps dispatching
        comm messages (ipykernel >= 7.4), so widget clicks work; the kernel's interrupt
        arrives as a cancellation and stops the turn cleanly."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def notify() -> None:
            self.bridge.wake.set()
            loop.call_soon_threadsafe(event.set)

        fut, inbox = self._start(host, prompt, notify)
        old_wake = self.bridge.async_notify
        def wake_async() -> None:
            loop.call_soon_threadsafe(event.set)

        self.bridge.async_notify = wake_async
        interrupted = False
        deadline: float | None = None
        n = 0
        result: ResultMessage | None = None
        try:
            while True:
                try:
                    k, r = self._pump(inbox, on_message, on_idle)
                    n += k
                    result = r or result
                    if fut.done() and inbox.empty():
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), 0.05)
                    event.clear()
                except asyncio.CancelledError:
                    # Python 3.11+: clear the cancellation so later awaits in this turn work normally.
                    uncancel = getattr(asyncio.current_task(), "uncancel", None)
                    if uncancel is not None:
                        uncancel()
                    if not interrupted:
                        interrupted = True
                        deadline = time.monotonic() + INTERRUPT_GRACE
                        self.interrupt()
        finally:
            self.bridge.async_notify = old_wake
            self.active = None
            self.bridge.cancel_pending()
        return self._outcome(fut, result, interrupted, n)

    def _outcome(self, fut: Future[Any], result: ResultMessage | None, interrupted: bool, n: int) -> TurnOutcome:
        if fut.done():
            exc = fut.exception()
            if exc is not None:
                raise exc
        return TurnOutcome(result, interrupted, n)

    def compact(self, host: ClientHost, instructions: str | None = None) -> SystemMessage:
        """Compact ``host``'s conversation now (``client.compact``), blocking this thread.

        Returns the ``compact_boundary`` message. Ctrl-C (the kernel's interrupt) cancels
        the compaction and is raised again.
        """
        fut = self.loop.submit(host.client.compact(instructions))
        try:
            boundary: SystemMessage = fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        return boundary

    def interrupt(self) -> None:
        """Ask the running turn to stop (thread-safe)."""
        client = self.active
        if client is None:
            return

        async def _interrupt() -> None:
            await client.interrupt()

        self.loop.submit(_interrupt())


@contextlib.contextmanager
def kernel_stays_busy(shell: Any) -> Iterator[None]:
    """Keep the kernel's published state "busy" for as long as this cell runs.

    While an ``%%agent`` cell waits for the agent, the kernel keeps serving
    comm messages (widget clicks; JupyterLab sends them over a subshell since
    4.4) and control requests (``create_subshell_request``), and publishes an
    ``idle`` status on IOPub after each. JupyterLab shows the last status of
    any request as the kernel's state, so its status bar said "Idle" while the
    agent worked. Here each such ``idle`` is followed by ``busy`` for this cell.
    The kernel's method is shadowed on the instance and restored on exit.
    """
    kernel = getattr(shell, "kernel", None)
    publish = getattr(kernel, "_publish_status", None)
    get_parent = getattr(kernel, "get_parent", None)
    if kernel is None or publish is None or get_parent is None:
        yield
        return
    cell = get_parent("shell")  # this cell's execute_request
    cell_id = (cell or {}).get("header", {}).get("msg_id")
    if not cell_id:
        yield
        return

    def _publish_status(status: str, channel: str, parent: Any = None) -> None:
        publish(status, channel, parent)
        if status != "idle":
            return
        other = parent if parent is not None else get_parent(channel)
        if (other or {}).get("header", {}).get("msg_id") != cell_id:
            publish("busy", "shell", cell)

    kernel._publish_status = _publish_status
    try:
        yield
    finally:
        if kernel.__dict__.get("_publish_status") is _publish_status:
            del kernel._publish_status


@contextlib.contextmanager
def _polling(in_kernel: bool) -> Iterator[Callable[[], None]]:
    """A function to call often: processes pending kernel UI events (comm messages) when in a kernel."""
    if not in_kernel:
        yield lambda: None
        return
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:  # pragma: no cover - a declared dependency
        yield lambda: None
        return
    with ui_events() as poll:
        yield lambda: poll(20)
