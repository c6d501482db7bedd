"""Moved to :mod:`agent_magic.checkpoints`; kept until every importer uses the package."""

from __future__ import annotations

from .checkpoints import (
    MIN_PREFIX,
    CellChange,
    CheckpointInfo,
    CheckpointLog,
    Conflict,
    FileChange,
    RewindResult,
    blobs_referenced,
)

__all__ = [
    "MIN_PREFIX",
    "CellChange",
    "CheckpointInfo",
    "CheckpointLog",
    "Conflict",
    "FileChange",
    "RewindResult",
    "blobs_referenced",
]
