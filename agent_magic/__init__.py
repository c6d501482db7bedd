"""agent-magic: AI-agent sessions native to Jupyter.

In a notebook::

    %load_ext agent_magic
    %%agent
    Load sales.csv, fix the date column and add a cell that plots monthly revenue.

As a library (no IPython needed), shaped like the Claude Agent SDK::

    from agent_magic import AgentOptions, query
    async for message in query("Summarise data.csv", options=AgentOptions(cwd=".")):
        print(message)

Heavy modules (the API client, nbformat, IPython) are imported only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AgentMagicError,
    AmbiguousIdError,
    BundleError,
    CheckpointError,
    CheckpointNotFoundError,
    CompactionError,
    ConfigurationError,
    MissingAPIKeyError,
    ProviderError,
    SessionError,
    SessionExistsError,
    SessionLockedError,
    SessionNotFoundError,
    ToolError,
    TranscriptError,
)
from ._messages import (
    AssistantMessage,
    ContentBlock,
    Message,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from ._options import AgentDefinition, AgentOptions, PermissionMode
from ._version import __version__

if TYPE_CHECKING:
    from ._api import (
        checkpoint_log,
        current_session,
        delete_session,
        fork_session,
        get_session_info,
        get_session_messages,
        get_subagent_messages,
        list_checkpoints,
        list_sessions,
        list_subagents,
        rename_session,
        rewind,
        rewind_files,
        set_current_session,
        tag_session,
    )
    from ._bundle import export_session, import_session
    from ._client import AgentClient, query
    from ._hooks import HookMatcher
    from ._permissions import (
        PermissionResult,
        PermissionResultAllow,
        PermissionResultDeny,
        PermissionUpdate,
        ToolPermissionContext,
    )
    from .checkpoints import CellChange, CheckpointInfo, Conflict, FileChange, RewindResult
    from .store import LeaseHeldError, SessionStoreBackend, StoreError, open_session_store
    from .store.transcript import SessionInfo, SessionMessage
    from .tools.sdk_mcp import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server, tool

_LAZY = {
    "AgentClient": "._client",
    "query": "._client",
    "list_sessions": "._api",
    "get_session_info": "._api",
    "get_session_messages": "._api",
    "fork_session": "._api",
    "rename_session": "._api",
    "tag_session": "._api",
    "delete_session": "._api",
    "current_session": "._api",
    "set_current_session": "._api",
    "checkpoint_log": "._api",
    "list_checkpoints": "._api",
    "rewind_files": "._api",
    "rewind": "._api",
    "export_session": "._bundle",
    "import_session": "._bundle",
    "CheckpointInfo": ".checkpoints",
    "RewindResult": ".checkpoints",
    "FileChange": ".checkpoints",
    "CellChange": ".checkpoints",
    "Conflict": ".checkpoints",
    "HookMatcher": "._hooks",
    "PermissionResult": "._permissions",
    "PermissionResultAllow": "._permissions",
    "PermissionResultDeny": "._permissions",
    "PermissionUpdate": "._permissions",
    "ToolPermissionContext": "._permissions",
    "SessionInfo": ".store.transcript",
    "SessionMessage": ".store.transcript",
    "open_session_store": ".store",
    "SessionStoreBackend": ".store",
    "StoreError": ".store",
    "LeaseHeldError": ".store",
    "list_subagents": "._api",
    "get_subagent_messages": "._api",
    "tool": ".tools.sdk_mcp",
    "create_sdk_mcp_server": ".tools.sdk_mcp",
    "SdkMcpTool": ".tools.sdk_mcp",
    "McpSdkServerConfig": ".tools.sdk_mcp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_magic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext agent_magic``: registers the ``%agent``/``%%agent`` magic."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext agent_magic``: removes the magic and its event callbacks."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension serving the sessions sidebar (``agent_magic._server_ext``)."""
    return [{"module": "agent_magic._server_ext"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where Jupyter finds the prebuilt JupyterLab extension shipped in the wheel."""
    return [{"src": "labextension", "dest": "agent-magic-labextension"}]


__all__ = [
    "AgentClient",
    "AgentDefinition",
    "AgentMagicError",
    "AgentOptions",
    "AmbiguousIdError",
    "AssistantMessage",
    "BundleError",
    "CellChange",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CompactionError",
    "ConfigurationError",
    "Conflict",
    "ContentBlock",
    "FileChange",
    "HookMatcher",
    "LeaseHeldError",
    "McpSdkServerConfig",
    "Message",
    "MissingAPIKeyError",
    "PermissionMode",
    "PermissionResult",
    "PermissionResultAllow",
    "PermissionResultDeny",
    "PermissionUpdate",
    "ProviderError",
    "ResultMessage",
    "RewindResult",
    "SdkMcpTool",
    "SessionError",
    "SessionExistsError",
    "SessionInfo",
    "SessionLockedError",
    "SessionMessage",
    "SessionNotFoundError",
    "SessionStoreBackend",
    "StoreError",
    "StreamEvent",
    "SystemMessage",
    "TextBlock",
    "ThinkingBlock",
    "ToolError",
    "ToolPermissionContext",
    "ToolResultBlock",
    "ToolUseBlock",
    "TranscriptError",
    "UserMessage",
    "__version__",
    "checkpoint_log",
    "create_sdk_mcp_server",
    "current_session",
    "delete_session",
    "export_session",
    "fork_session",
    "get_session_info",
    "get_session_messages",
    "get_subagent_messages",
    "import_session",
    "list_checkpoints",
    "list_sessions",
    "list_subagents",
    "load_ipython_extension",
    "open_session_store",
    "query",
    "rename_session",
    "rewind",
    "rewind_files",
    "set_current_session",
    "tag_session",
    "tool",
    "unload_ipython_extension",
]
