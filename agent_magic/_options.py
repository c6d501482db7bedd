"""AgentOptions: every setting of a query or client, with the Agent SDK's field names."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._hooks import HookMatcher
    from ._permissions import PermissionResult, ToolPermissionContext
    from .providers.base import Provider
    from .tools.base import Tool

PermissionMode = Literal["default", "acceptEdits", "bypassPermissions", "plan"]
PERMISSION_MODES: tuple[str, ...] = ("default", "acceptEdits", "bypassPermissions", "plan")

CanUseTool = Callable[[str, dict[str, Any], "ToolPermissionContext"], Awaitable["PermissionResult"]]

DEFAULT_MODEL = "claude-sonnet-5-5"

#: Folders never scanned for Bash changes (names matched at any depth).
DEFAULT_CHECKPOINT_IGNORE: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".env",
    "env",
    "node_modules",
    "__pycache__",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
)

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def validate_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is a valid custom id, else raise ConfigurationError."""
    if not isinstance(session_id, str) or not _SESSION_ID_RE.match(session_id) or session_id in (".", ".."):
        raise ConfigurationError(
            f"Invalid session id {session_id!r}: use 1-128 characters of letters, digits, '.', '_' and '-'."
        )
    return session_id


#: The API's effort levels (``output_config.effort``), lowest first.
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def validate_thinking(thinking: Any) -> None:
    """Raise ConfigurationError unless ``thinking`` has one of the API's shapes."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind in ("adaptive", "disabled"):
        return
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1024:
            return
        raise ConfigurationError("thinking={'type': 'enabled'} needs budget_tokens, at least 1024.")
    raise ConfigurationError(
        "thinking must be {'type': 'adaptive'}, {'type': 'enabled', 'budget_tokens': N} or {'type': 'disabled'}."
    )


SETTING_SOURCES: tuple[str, ...] = ("user", "project", "local")


def validate_output_format(output_format: Any) -> None:
    """Raise ConfigurationError unless ``output_format`` is ``{"type": "json_schema", "schema": <a JSON schema>}``."""
    if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
        raise ConfigurationError('output_format must be {"type": "json_schema", "schema": {...}}.')
    schema = output_format.get("schema")
    if not isinstance(schema, dict):
        raise ConfigurationError("output_format['schema'] must be a JSON schema (a dict).")
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConfigurationError(f"output_format['schema'] is not a valid JSON schema: {e.message}") from None


@dataclass
class AgentDefinition:
    """A subagent the model can call with the ``Agent`` tool (the Agent SDK's fields).

    Parameters
    ----------
    description
        When to use it; the model reads this to choose a subagent.
    prompt
        The subagent's system prompt.
    tools
        Tool names it may use (default: the parent's tools, without ``Agent``).
    disallowedTools
        Tool names it may not use.
    model
        ``"inherit"`` (default), or a model name; ``"sonnet"``, ``"opus"`` and ``"haiku"`` name the
        newest model of that family the parent's provider knows.
    maxTurns
        Maximum model responses of one subagent run.
    permissionMode
        Its permission mode (default: the parent's).
    """

    description: str
    prompt: str
    tools: list[str] | None = None
    disallowedTools: list[str] | None = None
    model: str | None = None
    skills: list[str] | None = None
    memory: str | None = None
    mcpServers: list[str | dict[str, Any]] | None = None
    initialPrompt: str | None = None
    maxTurns: int | None = None
    background: bool | None = None
    effort: str | None = None
    permissionMode: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description.strip():
            raise ConfigurationError("AgentDefinition needs a description: when should the model use it?")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigurationError("AgentDefinition needs a prompt (the subagent's system prompt).")
        unsupported = [n for n in ("skills", "memory", "initialPrompt", "background") if getattr(self, n)]
        if unsupported:
            raise ConfigurationError(f"AgentDefinition: {', '.join(unsupported)} is not supported by agent-magic yet; leave it unset.")
        if any(not isinstance(m, str) for m in self.mcpServers or []):
            raise ConfigurationError("AgentDefinition.mcpServers: name servers of the parent's mcp_servers (inline configs are not supported yet).")
        if self.permissionMode is not None and self.permissionMode not in PERMISSION_MODES:
            raise ConfigurationError(f"AgentDefinition.permissionMode {self.permissionMode!r} is not one of {', '.join(PERMISSION_MODES)}.")
        if self.effort is not None and self.effort not in EFFORTS:
            raise ConfigurationError(f"AgentDefinition.effort {self.effort!r} is not one of {', '.join(EFFORTS)}.")
        if self.maxTurns is not None and self.maxTurns < 1:
            raise ConfigurationError("AgentDefinition.maxTurns must be at least 1.")


@dataclass
class AgentOptions:
    """Settings for :func:`agent_magic.query` and :class:`agent_magic.AgentClient`.

    Parameters
    ----------
    cwd
        Working directory of the agent's tools. Defaults to the current directory.
        A session remembers its cwd; resuming uses it unless ``cwd`` is given.
    model
        Model name. Defaults to ``$AGENT_MAGIC_MODEL``, else ``claude-sonnet-5-5``.
    system_prompt
        Replaces the built-in system prompt when given.
    append_system_prompt
        Text added to the end of the system prompt.
    resume
        Id of a session to continue (any unique prefix of 4+ characters).
    continue_conversation
        Continue the most recent session of this ``scope``.
    fork_session
        With ``resume`` or ``continue_conversation``: copy the history into a new
        session instead of appending to the original.
    session_id
        Custom id for a new session (1-128 of ``[A-Za-z0-9._-]``).
    persist_session
        ``False`` keeps the session and its checkpoints in memory only.
    max_turns
        Maximum model responses in one query (``error_max_turns`` when hit).
    max_budget_usd
        Maximum cost of one query (``error_max_budget_usd`` when hit).
    allowed_tools, disallowed_tools
        Permission rules such as ``"Edit"``, ``"Bash(git status)"``, ``"Bash(pytest *)"``.
        Deny wins.
    permission_mode
        ``default``, ``acceptEdits``, ``bypassPermissions`` or ``plan``.
    can_use_tool
        Async callback asked when a rule says "ask".
    hooks
        ``{"PreToolUse": [HookMatcher(...)], ...}``.
    env
        Extra environment variables for Bash and other subprocesses.
    add_dirs
        Extra directories the agent may edit in ``acceptEdits`` mode.
    enable_file_checkpointing
        Back up files and notebook cells before every change (default True).
    include_partial_messages
        Yield :class:`StreamEvent` partials (text deltas) while the model streams.
    scope
        What the session belongs to: a notebook path, else the project directory.
        Defaults to ``cwd``.
    home
        Session store directory. Defaults to ``$AGENT_MAGIC_HOME`` or a per-user data dir.
    provider
        Provider name (``anthropic``, ``openai``, ``claude-code``) or instance.
        Defaults to ``$AGENT_MAGIC_PROVIDER``, else ``anthropic``.
    max_tokens
        Maximum output tokens per model response.
    prices
        Price overrides in USD per million tokens:
        ``{"model-prefix": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}``.
    tools
        Names of built-in tools to offer (default: all).
    extra_tools
        Additional :class:`agent_magic.tools.Tool` objects (the notebook layer adds
        the kernel tools here).
    checkpoint_ignore
        Folder or file names skipped when tracking Bash changes.
    checkpoint_max_file_bytes
        Files larger than this are not backed up when Bash changes them.
    lock_timeout
        Seconds to wait for a session another process is using before
        raising :class:`SessionLockedError`.
    pass_secrets_to_subprocesses
        Let Bash see ``*_API_KEY``/``*_TOKEN`` variables (removed by default).
    context_window
        The model's context window in tokens. Defaults to ``$AGENT_MAGIC_CONTEXT_WINDOW``,
        else the model table's (``models.json``); a window the API reports wins.
    compaction
        How a conversation nearing the window is shortened (after old tool results
        are cleared): ``"auto"`` (default; ``$AGENT_MAGIC_COMPACTION``) lets the API
        compact server-side where the model and API offer it, else summarises with
        the same provider; ``"server"``, ``"client"`` force one; ``"off"`` never
        compacts (a turn past the window then fails).
    compact_threshold
        The share of the window at which old tool results are cleared and, if that is
        not enough, the conversation compacted (default 0.8).
    thinking
        ``{"type": "adaptive"}``, ``{"type": "enabled", "budget_tokens": N}`` or
        ``{"type": "disabled"}``. Defaults to adaptive for models that have it.
    effort
        ``"low"``, ``"medium"``, ``"high"``, ``"xhigh"`` or ``"max"`` (the API's default when
        unset; ``$AGENT_MAGIC_EFFORT``).
    mcp_servers
        MCP servers whose tools the agent may use, by name: ``{"name": config}`` with the
        SDK's shapes (``{"type": "stdio", "command", "args", "env"}``, ``{"type": "http", "url",
        "headers"}``, ``{"type": "sse", ...}``, or :func:`create_sdk_mcp_server`'s result), or
        the path of a JSON file holding ``{"mcpServers": {...}}``. The model sees their tools as
        ``mcp__<name>__<tool>``; permission rules and ``can_use_tool`` use those names
        (``"mcp__name"`` covers all of a server's tools). Servers start at the first turn.
    agents
        Subagents the model can hand work to with the ``Agent`` tool:
        ``{"name": AgentDefinition(description, prompt, tools=None, model=None)}``.
    setting_sources
        Where project memory is loaded from: ``"project"`` (``AGENTS.md`` / ``CLAUDE.md`` in
        ``cwd`` and its parents, and the project's ``.mcp.json``), ``"user"`` (the same files in
        the user's config folder), ``"local"`` (``CLAUDE.local.md``). None or ``[]``: nothing
        (the SDK's default; the notebook magics turn ``project`` and ``user`` on).
    output_format
        ``{"type": "json_schema", "schema": {...}}``: the final answer must be JSON matching the
        schema; the parsed value is :attr:`ResultMessage.structured_output` (the model is asked
        again, at most twice, when its answer does not validate).
    session_store
        A shared store every write also reaches (after the local one): a URL
        (``s3://bucket/prefix``, ``postgresql://...``, ``redis://...``, ``file:///path``) or a
        store object (agent-magic's, or any with the Agent SDK's ``SessionStore`` methods, for
        transcripts). Defaults to ``$AGENT_MAGIC_STORE``; none: local only.
    """

    cwd: str | os.PathLike[str] | None = None
    model: str | None = None
    system_prompt: str | None = None
    append_system_prompt: str | None = None
    resume: str | None = None
    continue_conversation: bool = False
    fork_session: bool = False
    session_id: str | None = None
    persist_session: bool = True
    max_turns: int | None = None
    max_budget_usd: float | None = None
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    permission_mode: PermissionMode = "default"
    can_use_tool: CanUseTool | None = None
    hooks: dict[str, list[HookMatcher]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    add_dirs: list[str | os.PathLike[str]] = field(default_factory=list)
    enable_file_checkpointing: bool = True
    include_partial_messages: bool = False
    scope: str | None = None
    home: str | os.PathLike[str] | None = None
    provider: str | Provider | None = None
    max_tokens: int = 16000
    prices: dict[str, dict[str, float]] | None = None
    tools: list[str] | None = None
    extra_tools: list[Tool] = field(default_factory=list)
    checkpoint_ignore: tuple[str, ...] = DEFAULT_CHECKPOINT_IGNORE
    checkpoint_max_file_bytes: int = 50 * 1024 * 1024
    lock_timeout: float = 10.0
    pass_secrets_to_subprocesses: bool = False
    context_window: int | None = None
    compaction: str | None = None
    compact_threshold: float = 0.8
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    session_store: Any = None
    mcp_servers: dict[str, Any] | str | os.PathLike[str] | None = None
    agents: dict[str, AgentDefinition] | None = None
    setting_sources: list[str] | None = None
    output_format: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for source in self.setting_sources or []:
            if source not in SETTING_SOURCES:
                raise ConfigurationError(f"setting_sources: unknown source {source!r}; use {', '.join(SETTING_SOURCES)}.")
        if self.output_format is not None:
            validate_output_format(self.output_format)
        for name, definition in (self.agents or {}).items():
            if not isinstance(definition, AgentDefinition):
                raise ConfigurationError(f"agents[{name!r}] must be an AgentDefinition(description=..., prompt=...).")
            if not name or not isinstance(name, str):
                raise ConfigurationError("Subagent names must be non-empty strings.")
        if self.context_window is not None and self.context_window < 1000:
            raise ConfigurationError("context_window must be at least 1000 tokens.")
        if self.compaction is not None and self.compaction not in ("auto", "server", "client", "off"):
            raise ConfigurationError(f"compaction={self.compaction!r} is not one of auto, server, client, off.")
        if not 0.2 <= self.compact_threshold <= 0.95:
            raise ConfigurationError("compact_threshold must be between 0.2 and 0.95 of the context window.")
        if self.thinking is not None:
            validate_thinking(self.thinking)
        if self.effort is not None and self.effort not in EFFORTS:
            raise ConfigurationError(f"effort={self.effort!r} is not one of {', '.join(EFFORTS)}.")
        if self.permission_mode not in PERMISSION_MODES:
            raise ConfigurationError(
                f"Unknown permission_mode {self.permission_mode!r}; use one of {', '.join(PERMISSION_MODES)}."
            )
        if self.max_turns is not None and self.max_turns < 1:
            raise ConfigurationError("max_turns must be at least 1.")
        if self.max_budget_usd is not None and self.max_budget_usd <= 0:
            raise ConfigurationError("max_budget_usd must be greater than 0.")
        if self.session_id is not None:
            validate_session_id(self.session_id)
        if self.session_id is not None and (self.resume or self.continue_conversation) and not self.fork_session:
            raise ConfigurationError("session_id names a new session; it cannot be combined with resume unless fork_session=True.")
        if self.fork_session and not (self.resume or self.continue_conversation):
            raise ConfigurationError("fork_session needs resume=<session id> or continue_conversation=True.")

    # -- resolved values -------------------------------------------------
    def resolved_cwd(self) -> Path:
        return Path(self.cwd if self.cwd is not None else os.getcwd()).resolve()

    def resolved_model(self) -> str:
        return self.model or os.environ.get("AGENT_MAGIC_MODEL") or DEFAULT_MODEL

    def resolved_effort(self) -> str | None:
        effort = self.effort or os.environ.get("AGENT_MAGIC_EFFORT", "").strip().lower() or None
        if effort is not None and effort not in EFFORTS:
            raise ConfigurationError(f"AGENT_MAGIC_EFFORT={effort!r} is not one of {', '.join(EFFORTS)}.")
        return effort

    def resolved_scope(self) -> str:
        return self.scope or str(self.resolved_cwd())

    def copy(self, **changes: Any) -> AgentOptions:
        """Return a copy with some fields changed."""
        return replace(self, **changes)
