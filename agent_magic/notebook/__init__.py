"""The notebook layer: the ``%agent``/``%%agent`` magic, displays, widgets and kernel tools.

This is the only part of agent-magic that imports IPython.
"""

from __future__ import annotations

import atexit
import re
from typing import Any

_STATE_ATTR = "_agent_magic_state"
_CELL_RE = re.compile(r"^%%agent(?=\s|$)")


def uses_async_cells(ipython: Any) -> bool:
    """True in kernels that dispatch comm messages while an async cell awaits (ipykernel >= 7.4).

    There, ``%%agent`` cells run as async cells so Stop/Approve clicks work while
    the agent is busy. Older kernels use jupyter-ui-poll from a blocking cell.
    """
    if getattr(ipython, "kernel", None) is None:
        return False
    try:
        import ipykernel
    except ImportError:
        return False
    version: tuple[int, ...] = getattr(ipykernel, "version_info", (0,))
    return tuple(version[:2]) >= (7, 4)


def _to_async_cell(lines: list[str]) -> list[str]:
    """Input transformer: ``%%agent ARGS`` + body -> an awaited call (the cell becomes async)."""
    if not lines or not _CELL_RE.match(lines[0]):
        return lines
    args = lines[0].rstrip("\n")[len("%%agent") :].strip()
    body = "".join(lines[1:])
    return [f"await __import__('agent_magic.notebook', fromlist=['run_cell']).run_cell(get_ipython(), {args!r}, {body!r})\n"]


async def run_cell(ipython: Any, line: str, body: str) -> None:
    """What an ``%%agent`` cell runs in async mode (see :func:`uses_async_cells`)."""
    st = state(ipython)
    if st is None:
        from IPython.core.error import UsageError

        raise UsageError("agent_magic is not loaded; run `%load_ext agent_magic` first.")
    await st["magics"].acell(line, body)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magic, execution tracking and the front-end comm target (once per shell)."""
    if getattr(ipython, _STATE_ATTR, None) is not None:
        return  # %reload_ext calls unload first; a second %load_ext is a no-op
    from . import _history
    from ._magics import AgentMagics

    magics = AgentMagics(shell=ipython)
    ipython.register_magics(magics)
    tracker = _history.ExecutionTracker()
    ipython.events.register("pre_run_cell", tracker.pre_run_cell)
    from . import _comm

    comm = _comm.register(ipython, magics)
    magics.notebook_bridge = comm.bridge
    transformer = None
    if uses_async_cells(ipython):
        transformer = _to_async_cell
        ipython.input_transformers_cleanup.append(transformer)
    setattr(ipython, _STATE_ATTR, {"magics": magics, "tracker": tracker, "comm": comm, "transformer": transformer})
    # A rewind from this kernel (%agent rewind, the slider, agent_magic.rewind in a cell) puts its
    # variables back too; its snapshots go when the kernel does.
    from .. import _api

    _api.set_kernel_rewinder(magics.kernel_state.rewind)
    atexit.register(magics.kernel_state.close)
    _warm_up()


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magic, the event callback and the comm target; stop the agent thread."""
    state = getattr(ipython, _STATE_ATTR, None)
    if state is None:
        return
    setattr(ipython, _STATE_ATTR, None)
    magics = state["magics"]
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        if getattr(table.get("agent"), "__self__", None) is magics:
            del table["agent"]
    ipython.magics_manager.registry.pop(type(magics).__name__, None)
    try:
        ipython.events.unregister("pre_run_cell", state["tracker"].pre_run_cell)
    except ValueError:
        pass
    if state["transformer"] is not None and state["transformer"] in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(state["transformer"])
    if state["comm"] is not None:
        state["comm"].close()
        magics.notebook_bridge = None
    from .. import _api

    if _api._kernel_rewinder == magics.kernel_state.rewind:
        _api.set_kernel_rewinder(None)
    atexit.unregister(magics.kernel_state.close)
    magics.kernel_state.close()
    magics.close()


def _warm_up() -> None:
    """Import the API client in the background: the first %%agent cell should not pay for it."""
    import gc
    import threading

    def work() -> None:
        try:
            from ..providers.anthropic import warm_up
            from ..store.jsonl import preload

            preload()
            warm_up()  # imports anthropic and its HTTP stack, reads the CA bundle, builds its models
            import nbformat.v4  # noqa: F401  (slow: jsonschema); the first notebook edit needs it

            # The imports leave ~150k new objects that the first full collection scans once
            # (~120 ms here); let that happen now rather than in the middle of the first turn.
            gc.collect()
        except Exception:
            pass

    threading.Thread(target=work, name="agent-magic-warmup", daemon=True).start()


def state(ipython: Any) -> dict[str, Any] | None:
    """The extension's state on a shell (magics, tracker, comm), or None if not loaded."""
    return getattr(ipython, _STATE_ATTR, None)
