"""Records of variable snapshots, restore plans and results; all JSON-able, no I/O here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..._errors import CheckpointError

VariableState = Literal["absent", "stored", "not_restorable"]
Action = Literal["restore", "delete", "skip"]


class SnapshotDataError(CheckpointError):
    """A snapshot's stored data is missing, torn or corrupt; nothing was restored."""


class SnapshotKeyError(CheckpointError):
    """A snapshot key that is not valid or not in the store."""


@dataclass(frozen=True)
class VariableRecord:
    """What one snapshot knows about one name.

    Attributes
    ----------
    state
        ``"absent"`` (the name did not exist: a rewind deletes it), ``"stored"``
        (its value is in the snapshot) or ``"not_restorable"`` (see ``reason``).
    type
        Qualified type name of the value (``None`` when absent).
    size
        Approximate bytes: what the snapshot stored for it (pickle plus buffers),
        or an estimate when it was not stored.
    id
        ``id()`` of the value when it was snapshotted; a restore writes into the
        current object in place only when it is still that object.
    fingerprint
        Sampled hash of a large value's buffers (``None`` for small or opaque
        values), to notice changes made by code that never named the variable.
    reason
        One line saying why a value is not restorable.
    alias_of
        Another stored name bound to the very same object; restored as one object.
    in_memory
        The value is a function or class defined in the notebook: kept by reference
        in this process, not on disk.
    """

    state: VariableState
    type: str | None = None
    size: int | None = None
    id: int | None = None
    fingerprint: str | None = None
    reason: str | None = None
    alias_of: str | None = None
    in_memory: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariableRecord:
        return cls(
            state=data["state"],
            type=data.get("type"),
            size=data.get("size"),
            id=data.get("id"),
            fingerprint=data.get("fingerprint"),
            reason=data.get("reason"),
            alias_of=data.get("alias_of"),
            in_memory=bool(data.get("in_memory", False)),
        )


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot: the names one code execution could change, as they were before it.

    Attributes
    ----------
    key
        The snapshot's key in the store (chosen by the caller, e.g. a tool-use id).
    created_ms
        When it was taken (ms since the epoch).
    variables
        Name to :class:`VariableRecord`.
    order
        The stored names whose values were pickled, in stream order (aliases excluded).
    stream
        ``{"digest": sha256 hex, "size": bytes}`` of the pickle stream, ``None`` if nothing was stored.
    buffers
        ``[digest, nbytes]`` of each out-of-band buffer, in the order the stream uses them.
    watched
        Large values in the namespace that the execution did not name: name to
        ``[id, fingerprint]``, for warnings when they change anyway.
    seconds
        How long the snapshot took.
    """

    key: str
    created_ms: int
    variables: dict[str, VariableRecord]
    order: list[str] = field(default_factory=list)
    stream: dict[str, Any] | None = None
    buffers: list[tuple[str, int]] = field(default_factory=list)
    watched: dict[str, tuple[int, str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def stored_bytes(self) -> int:
        """Bytes this snapshot refers to (pickle stream plus buffers, shared ones included)."""
        return int((self.stream or {}).get("size", 0)) + sum(n for _, n in self.buffers)

    def not_restorable(self) -> dict[str, str]:
        """Name to reason for every value this snapshot could not store."""
        return {n: v.reason or "" for n, v in self.variables.items() if v.state == "not_restorable"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "created_ms": self.created_ms,
            "variables": {n: v.to_dict() for n, v in self.variables.items()},
            "order": list(self.order),
            "stream": dict(self.stream) if self.stream else None,
            "buffers": [[d, n] for d, n in self.buffers],
            "watched": {n: [i, f] for n, (i, f) in self.watched.items()},
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotRecord:
        return cls(
            key=data["key"],
            created_ms=int(data.get("created_ms", 0)),
            variables={n: VariableRecord.from_dict(v) for n, v in data.get("variables", {}).items()},
            order=list(data.get("order", [])),
            stream=data.get("stream"),
            buffers=[(str(d), int(n)) for d, n in data.get("buffers", [])],
            watched={n: (int(v[0]), str(v[1])) for n, v in data.get("watched", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class PlannedVariable:
    """One name in a :class:`RestorePlan`.

    Attributes
    ----------
    name
        The variable.
    action
        ``"restore"`` (its value comes back), ``"delete"`` (it did not exist before)
        or ``"skip"`` (it cannot be restored: see ``reason``).
    type, size
        Type and approximate size of the value a restore brings back (for a preview).
    key
        The snapshot the value comes from.
    reason
        Why a ``"skip"`` cannot be restored.
    in_place
        The current object is the one snapshotted and its type can be written in place,
        so other references to it see the restored value.
    """

    name: str
    action: Action
    type: str | None = None
    size: int | None = None
    key: str | None = None
    reason: str | None = None
    in_place: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


@dataclass(frozen=True)
class RestorePlan:
    """What :meth:`VariableSnapshots.restore` will do; built by :meth:`VariableSnapshots.plan_restore`.

    Attributes
    ----------
    variables
        Every name involved, sorted by name.
    warnings
        One line each: values changed by code that never named them (through a
        module global, a closure, or outside the agent), which a restore cannot undo.
    records
        The snapshots the plan reads, oldest first.
    """

    variables: list[PlannedVariable]
    warnings: list[str]
    records: list[SnapshotRecord]

    @property
    def to_restore(self) -> list[PlannedVariable]:
        return [v for v in self.variables if v.action == "restore"]

    @property
    def to_delete(self) -> list[str]:
        return [v.name for v in self.variables if v.action == "delete"]

    @property
    def not_restorable(self) -> dict[str, str]:
        return {v.name: v.reason or "" for v in self.variables if v.action == "skip"}

    def summary(self) -> list[str]:
        """Preview lines for a person: one per variable, then the warnings."""
        lines = []
        for v in self.variables:
            if v.action == "restore":
                how = " (in place)" if v.in_place else ""
                lines.append(f"restore {v.name}: {v.type}, {human_bytes(v.size)}{how}")
            elif v.action == "delete":
                lines.append(f"delete {v.name} (created by the undone code)")
            else:
                lines.append(f"not restorable {v.name}: {v.reason}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "variables": [v.to_dict() for v in self.variables],
            "warnings": list(self.warnings),
            "keys": [r.key for r in self.records],
        }


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did.

    Attributes
    ----------
    in_place
        Names that keep their current object: written in place (its other references
        see the restored value), or already the snapshotted object (a function kept in memory).
    rebound
        Names bound again to a restored object.
    deleted
        Names removed because the undone code created them.
    not_restored
        Name to reason, for values the snapshots could not hold.
    warnings
        The plan's warnings.
    seconds
        How long the restore took.
    """

    in_place: list[str]
    rebound: list[str]
    deleted: list[str]
    not_restored: dict[str, str]
    warnings: list[str]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 4)
        return data


@dataclass(frozen=True)
class DiskUsage:
    """Disk used by a :class:`VariableSnapshots` store.

    Attributes
    ----------
    snapshots
        Number of snapshots (manifests) stored.
    buffer_files, buffer_bytes
        Content-addressed buffer files and their bytes (each stored once).
    stream_bytes
        Bytes of the snapshots' pickle streams.
    """

    snapshots: int
    buffer_files: int
    buffer_bytes: int
    stream_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.buffer_bytes + self.stream_bytes


def human_bytes(n: int | None) -> str:
    """``12.3 MB``: a size as a person reads it."""
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
