"""Pushing a running turn to the shared store step by step, off the turn's path.

The agent loop calls :meth:`StepPusher.kick` after each step (the prompt, each model
response with its tool results). One background task pushes what the shared store
lacks; kicks that arrive while a push runs are batched into the next push. A failing
store is retried with a growing pause (1, 2, 4 … 30 s) and never holds up the turn:
at the turn's end :meth:`StepPusher.drain` stops the task, and the client's final
push (awaited before the result is shown) sends the rest or counts it as pending.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from .sync import SessionSync

#: Seconds one push may take before it is abandoned (the next one sends the same lines again).
PUSH_TIMEOUT_S = 30.0
MAX_PAUSE_S = 30.0


class StepPusher:
    """Background pushes of one session during one turn (see the module docstring)."""

    def __init__(self, sync: SessionSync, session_id: str, on_error: Callable[[str | None], None]) -> None:
        self.sync = sync
        self.session_id = session_id
        self.on_error = on_error
        self.pushes = 0
        self.failures = 0
        self._kicked = anyio.Event()
        self._stopping = anyio.Event()
        self._done = anyio.Event()

    def kick(self) -> None:
        """A step was written: push it soon (never blocks)."""
        self._kicked.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._kicked.wait()
                if self._stopping.is_set():
                    break
                self._kicked = anyio.Event()
                try:
                    with anyio.fail_after(PUSH_TIMEOUT_S):
                        await self.sync.push(self.session_id)
                    self.pushes += 1
                    self.failures = 0
                    self.on_error(None)
                except Exception as e:  # the network: pause, then try again with what has piled up
                    self.failures += 1
                    self.on_error(f"{type(e).__name__}: {e}")
                    with anyio.move_on_after(min(MAX_PAUSE_S, 2.0 ** (self.failures - 1))):
                        await self._stopping.wait()
        finally:
            self._done.set()

    async def drain(self) -> None:
        """Stop after the push under way (if any); the caller pushes the rest itself."""
        self._stopping.set()
        self._kicked.set()
        await self._done.wait()
