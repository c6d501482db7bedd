"""The notebook layer: the ``%agent``/``%%agent`` magic, displays, widgets and kernel tools.

This is the only part of agent-magic that imports IPython.
"""

from __future__ import annotations

from typing import Any

_STATE_ATTR = "_agent_magic_state"


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
    comm = None
    setattr(ipython, _STATE_ATTR, {"magics": magics, "tracker": tracker, "comm": comm})
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
    if state["comm"] is not None:
        state["comm"].close()
    magics.close()


def _warm_up() -> None:
    """Import the API client in the background: the first %%agent cell should not pay for it."""
    import threading

    def work() -> None:
        try:
            import anthropic  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="agent-magic-warmup", daemon=True).start()


def state(ipython: Any) -> dict[str, Any] | None:
    """The extension's state on a shell (magics, tracker, comm), or None if not loaded."""
    return getattr(ipython, _STATE_ATTR, None)
