"""Where sessions live: the local store on this host, and shared stores beyond it.

The package, by idea:

- ``local`` — :class:`~agent_magic.store.local.SessionStore`, sessions under ``$AGENT_MAGIC_HOME``;
  ``transcript`` (what its lines mean), ``index`` (the SQLite listing cache),
  ``forks`` (forks by reference), ``jsonl`` (append-only files, crash points),
  ``blobs`` (content-addressed backups), ``home`` (the folder, ids, timestamps);
- ``base`` — the shared-store interface (the Agent SDK's ``SessionStore`` methods, blobs,
  the writer lease), with the backends ``files``, ``s3``, ``postgres`` and ``redis``;
- ``sync`` — copying sessions between the local store and a shared one.

``open_session_store(url)`` gives a store with the Claude Agent SDK's
``SessionStore`` methods (and agent-magic's blobs and writer lease):

- ``file:///path`` — a folder, e.g. on a shared file system (:mod:`.files`);
- ``s3://bucket/prefix?endpoint_url=...`` — S3 and S3-compatible object storage (:mod:`.s3`, extra ``s3``);
- ``postgresql://...`` — PostgreSQL (:mod:`.postgres`, extra ``postgres``);
- ``redis://...`` — Redis (:mod:`.redis`, extra ``redis``).
"""

from __future__ import annotations

import importlib
import urllib.parse

from .._errors import ConfigurationError
from .._redact import redact_url
from .base import (
    Lease,
    LeaseHeldError,
    SessionKey,
    SessionListEntry,
    SessionStoreBackend,
    StoreError,
)

#: scheme -> (module, class, extra)
_BACKENDS = {
    "file": ("agent_magic.store.files", "FileSessionStore", None),
    "s3": ("agent_magic.store.s3", "S3SessionStore", "s3"),
    "postgresql": ("agent_magic.store.postgres", "PostgresSessionStore", "postgres"),
    "postgres": ("agent_magic.store.postgres", "PostgresSessionStore", "postgres"),
    "redis": ("agent_magic.store.redis", "RedisSessionStore", "redis"),
    "rediss": ("agent_magic.store.redis", "RedisSessionStore", "redis"),
}


def open_session_store(url: str) -> SessionStoreBackend:
    """A shared store for ``url`` (see the module docstring). Nothing connects until it is used.

    Raises
    ------
    ConfigurationError
        An unknown scheme, or the backend's extra is not installed.
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in _BACKENDS:
        raise ConfigurationError(
            f"Unknown session store {redact_url(url)!r}: use file:///path, s3://bucket/prefix, postgresql://... or redis://..."
        )
    module_name, cls_name, extra = _BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(
            f"The {scheme} session store needs an extra package ({e.name}): `pip install agent-magic[{extra}]`."
        ) from None
    cls: type[SessionStoreBackend] = getattr(module, cls_name)
    return cls.from_url(url)  # type: ignore[attr-defined,no-any-return]


__all__ = [
    "Lease",
    "LeaseHeldError",
    "SessionKey",
    "SessionListEntry",
    "SessionStoreBackend",
    "StoreError",
    "open_session_store",
]
