"""Exceptions raised by agent-magic.

Every error agent-magic raises on purpose derives from :class:`AgentMagicError`,
so ``except AgentMagicError`` catches all of them and nothing else::

    AgentMagicError
    ├── ConfigurationError          bad option value, missing API key, unknown provider
    │   └── MissingAPIKeyError
    ├── SessionError
    │   ├── SessionNotFoundError    no session with that id (or prefix)
    │   ├── SessionExistsError      a custom session id that is already taken
    │   ├── AmbiguousIdError        an id prefix that matches more than one session/checkpoint
    │   ├── SessionLockedError      another process is running a turn in this session
    │   └── TranscriptError         a transcript that cannot be read at all
    ├── CheckpointError
    │   └── CheckpointNotFoundError
    ├── ProviderError               the model API failed (status, one-line advice)
    ├── CompactionError             the conversation could not be compacted
    ├── ToolError                   a tool could not do what it was asked (sent back to the model)
    └── BundleError                 an export bundle that cannot be imported safely

The ``str()`` of each error is one line written for a person: what failed and
what to do next.
"""

from __future__ import annotations


class AgentMagicError(Exception):
    """Base class of every error agent-magic raises on purpose."""


class ConfigurationError(AgentMagicError):
    """An option, environment variable or provider setting is missing or invalid."""


class MissingAPIKeyError(ConfigurationError):
    """The provider needs an API key and none was found."""


class SessionError(AgentMagicError):
    """A problem with a stored session."""


class SessionNotFoundError(SessionError):
    """No session with the given id exists in the store."""

    def __init__(self, session_id: str, message: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(
            message
            or f"No session {session_id!r} in the session store. "
            "List sessions with `agent-magic sessions --all`."
        )


class SessionExistsError(SessionError):
    """A custom session id is already in use."""


class AmbiguousIdError(SessionError):
    """An id prefix matches more than one session or checkpoint."""

    def __init__(self, prefix: str, matches: list[str], what: str = "session") -> None:
        self.prefix = prefix
        self.matches = matches
        shown = ", ".join(m[:12] for m in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        super().__init__(
            f"{what.capitalize()} id prefix {prefix!r} is ambiguous: it matches {shown}{more}. "
            "Give more characters."
        )


class SessionLockedError(SessionError):
    """Another process holds the session's lock (it is running a turn)."""


class TranscriptError(SessionError):
    """A transcript exists but cannot be read."""


class CheckpointError(AgentMagicError):
    """A problem with checkpoints or a rewind."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint with the given id in the session."""


class ProviderError(AgentMagicError):
    """The model API failed.

    Parameters
    ----------
    message
        One line for a person: what failed and what to do next.
    status
        HTTP status code when the API answered, else ``None``.
    kind
        A short machine-readable category: ``auth``, ``rate_limit``,
        ``overloaded``, ``server``, ``connection``, ``timeout``, ``bad_request``,
        ``stream``, ``too_long`` (the conversation passed the model's context window).
    limit
        For ``too_long``: the context window the API named, when it did.
    """

    def __init__(self, message: str, *, status: int | None = None, kind: str = "server", limit: int | None = None) -> None:
        self.status = status
        self.kind = kind
        self.limit = limit
        super().__init__(message)


class CompactionError(AgentMagicError):
    """The conversation could not be compacted (nothing to compact, or the summary failed)."""


class ToolError(AgentMagicError):
    """A tool could not do what the model asked; the message goes back to the model."""


class BundleError(AgentMagicError):
    """An export bundle is malformed or unsafe to import."""
