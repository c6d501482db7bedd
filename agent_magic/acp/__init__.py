"""agent-magic as an ACP agent: ``agent-magic acp`` speaks the Agent Client Protocol over stdio.

ACP clients (Jupyter AI's chat, Zed, JetBrains IDEs) drive our sessions through
it: each ACP session is one :class:`agent_magic.AgentClient` on our session
store, so a session made here resumes in a notebook with ``%agent resume <id>``
and the other way round. Checkpoints and rewind, which ACP has no method for,
come as slash commands (``/checkpoints``, ``/rewind``, ``/fork``, ``/sessions``,
``/compact``) and the extension methods ``_agent-magic/rewind`` and
``_session/rewind``.

Modules: ``agent`` (the ACP ``Agent``: sessions and turns), ``updates`` (our
messages as ``session/update`` notifications), ``commands`` (slash commands and
extension methods), ``permissions`` (``can_use_tool`` as
``session/request_permission``). The ``acp`` package (``agent-client-protocol``)
is imported only by them, never by ``agent_magic`` itself.
"""

from __future__ import annotations


def serve(*, home: str | None = None, model: str | None = None, permission_mode: str = "default") -> int:
    """Run the ACP agent on stdin/stdout until the client closes stdin; returns the exit code.

    Raises
    ------
    ConfigurationError
        The ``agent-client-protocol`` package is not installed.
    """
    from .agent import serve as run

    return run(home=home, model=model, permission_mode=permission_mode)


__all__ = ["serve"]
