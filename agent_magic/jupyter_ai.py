"""agent-magic in Jupyter AI's chat: a persona that runs ``agent-magic acp``.

Jupyter AI 3 finds personas through the ``jupyter_ai.personas`` entry point
group; this package declares ``agent-magic = "agent_magic.jupyter_ai:AgentMagicPersona"``
there (install with ``pip install "agent-magic[jupyter-ai]"``). The persona is
Jupyter AI's own ACP client (:class:`jupyter_ai_acp_client.BaseAcpPersona`)
pointed at our ACP agent, so the chat gets our sessions, permission prompts,
slash commands (``/checkpoints``, ``/rewind``, ``/fork``, ``/sessions``,
``/compact``) and session modes. The agent subprocess is started with this
server's Python (``python -m agent_magic.cli acp``), not whatever
``agent-magic`` is first on ``PATH``, so it is the version this module belongs to.

Only this module imports Jupyter AI; ``import agent_magic`` never does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

from jupyter_ai_acp_client.base_acp_persona import BaseAcpPersona
from jupyter_ai_persona_manager import PersonaDefaults

__all__ = ["AVATAR_PATH", "AgentMagicPersona", "agent_command"]

#: The persona's picture in the chat (Jupyter AI serves it from this path).
AVATAR_PATH = Path(__file__).with_name("avatar.svg")


def agent_command() -> list[str]:
    """The command the persona starts: ``agent-magic acp`` on this Python.

    Returns
    -------
    list of str
        ``[sys.executable, "-m", "agent_magic.cli", "acp"]``.
    """
    return [sys.executable, "-m", "agent_magic.cli", "acp"]


class AgentMagicPersona(BaseAcpPersona):  # type: ignore[misc]  # jupyter_ai_acp_client has no types
    """Jupyter AI persona "agent-magic": our ACP agent in the chat.

    Jupyter AI creates one per chat; all of them share one ``agent-magic acp``
    process, and each chat is one agent-magic session (its id kept in the
    chat's metadata, reloaded with ``session/load`` when the server restarts).
    """

    # Jupyter AI puts this before a chat's first prompt, pointing the agent to
    # Jupyter's notebook MCP tools. Our agent has its own notebook tool, and the
    # note would hide a slash command sent as the first message, so say nothing.
    NOTEBOOK_EDITING_GUIDANCE: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, executable=agent_command(), **kwargs)

    @property
    def defaults(self) -> Any:
        """Name, description and avatar Jupyter AI lists the persona with."""
        return PersonaDefaults(
            name="agent-magic",
            description=(
                "agent-magic sessions with checkpoints: /rewind puts files and notebook cells back; "
                "sessions resume in notebooks with %agent resume."
            ),
            avatar_path=str(AVATAR_PATH),
            # ACP personas send no system prompt: the agent has its own.
            system_prompt="unused",
        )
