"""Planning a rewind of variables, and carrying it out in the live namespace."""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping, MutableMapping
from typing import Any

from .pickling import Lost
from .records import PlannedVariable, RestorePlan, RestoreResult, SnapshotRecord, VariableRecord
from .values import (
    _is_ndarray,
    _pandas_kind,
    _plain_instance,
    can_restore_in_place,
    fingerprint,
    restore_in_place,
    type_name,
)

_MISSING: Any = object()


def plan_restore(
    namespace: Mapping[str, Any],
    records: list[SnapshotRecord],
    *,
    kept_keys: Container[str],
    missing_files: Callable[[SnapshotRecord], str | None],
) -> RestorePlan:
    """Plan rewinding to before the first of ``records``; see :meth:`VariableSnapshots.plan_restore`."""
    first: dict[str, tuple[SnapshotRecord, VariableRecord]] = {}
    watched_first: dict[str, tuple[SnapshotRecord, int, str]] = {}
    warnings: list[str] = []
    for rec in records:
        for name, vr in rec.variables.items():
            if name in first:
                continue
            first[name] = (rec, vr)
            w = watched_first.get(name)
            if w is None:
                continue
            if vr.state == "absent":
                warnings.append(
                    f"{name} was deleted after snapshot {w[0].key} by code that did not name it "
                    f"(through a function's module global or a closure, or outside the agent); it is not brought back."
                )
            elif vr.fingerprint is not None and vr.fingerprint != w[2]:
                warnings.append(
                    f"{name} changed after snapshot {w[0].key} by code that did not name it "
                    f"(through a function's module global or a closure, or outside the agent); "
                    f"it is restored as it was at snapshot {rec.key}, not before that change."
                )
        for name, (ident, fp) in rec.watched.items():
            if name not in first and name not in watched_first:
                watched_first[name] = (rec, ident, fp)
    for name, (rec, _ident, fp) in sorted(watched_first.items()):
        if name in first:
            continue
        cur = namespace.get(name, _MISSING)
        if cur is _MISSING:
            warnings.append(f"{name} was deleted after snapshot {rec.key} although no undone execution named it; it cannot be brought back.")
        elif fingerprint(cur, min_bytes=0) != fp:
            warnings.append(
                f"{name} changed after snapshot {rec.key} although no undone execution named it "
                "(through a function's module global or a closure, or outside the agent); that change is not undone."
            )

    planned: list[PlannedVariable] = []
    for name, (rec, vr) in sorted(first.items()):
        if vr.state == "absent":
            planned.append(PlannedVariable(name, "delete", key=rec.key))
        elif vr.state == "not_restorable":
            planned.append(PlannedVariable(name, "skip", vr.type, vr.size, rec.key, vr.reason))
        elif vr.in_memory and rec.key not in kept_keys:
            reason = "a function or class defined in the notebook, kept in memory by an earlier kernel session"
            planned.append(PlannedVariable(name, "skip", vr.type, vr.size, rec.key, reason))
        else:
            cur = namespace.get(name, _MISSING)
            in_place = cur is not _MISSING and id(cur) == vr.id and type_name(cur) == vr.type and _in_place_kind(cur)
            planned.append(PlannedVariable(name, "restore", vr.type, vr.size, rec.key, in_place=in_place))
    used = {p.key for p in planned if p.action == "restore"}
    for rec in records:
        if rec.key in used:
            missing = missing_files(rec)
            if missing:
                warnings.append(f"snapshot {rec.key}: {missing}; restoring it will fail.")
    return RestorePlan(planned, warnings, list(records))

def apply_restore(
    namespace: MutableMapping[str, Any],
    plan: RestorePlan,
    load: Callable[[SnapshotRecord], dict[str, Any]],
    started: float,
) -> RestoreResult:
    """Carry out ``plan``; see :meth:`VariableSnapshots.restore`."""
    records = {r.key: r for r in plan.records}
    needed = {v.key for v in plan.to_restore}
    loaded = {key: load(records[key]) for key in sorted(k for k in needed if k is not None)}

    targets: list[tuple[str, Any, VariableRecord]] = []
    not_restored = dict(plan.not_restorable)
    for v in plan.to_restore:
        assert v.key is not None
        vr = records[v.key].variables[v.name]
        value = loaded[v.key].get(vr.alias_of or v.name, _MISSING)
        if value is _MISSING or isinstance(value, Lost):
            not_restored[v.name] = "its snapshot does not hold it"
            continue
        targets.append((v.name, value, vr))

    replaced: dict[int, Any] = {}
    in_place: list[str] = []
    for name, value, vr in targets:
        if id(value) in replaced:
            continue
        cur = namespace.get(name, _MISSING)
        if cur is not _MISSING and id(cur) == vr.id and can_restore_in_place(cur, value):
            restore_in_place(cur, value)
            replaced[id(value)] = cur
    rebound: list[str] = []
    for name, value, _vr in targets:
        final = replaced.get(id(value), value)
        if namespace.get(name, _MISSING) is final:
            in_place.append(name)
        else:
            namespace[name] = final
            rebound.append(name)
    if replaced:
        done: set[int] = set()
        for _name, value, _vr in targets:
            final = replaced.get(id(value), value)
            if id(final) not in done:
                done.add(id(final))
                _swap_references(final, replaced)
    deleted = []
    for name in plan.to_delete:
        if name in namespace:
            del namespace[name]
            deleted.append(name)
    return RestoreResult(sorted(in_place), sorted(rebound), sorted(deleted), dict(sorted(not_restored.items())), list(plan.warnings), time.perf_counter() - started)


def _in_place_kind(value: Any) -> bool:
    if type(value) in (list, dict, set, bytearray):
        return True
    if _is_ndarray(value):
        return bool(value.flags.writeable)
    return _pandas_kind(value) in ("frame", "series") or _plain_instance(value)


def _swap_references(container: Any, replaced: dict[int, Any]) -> None:
    """One level deep: a restored container holding a restored copy of an object restored in place gets the live object."""
    if type(container) is list:
        for i, x in enumerate(container):
            if id(x) in replaced:
                container[i] = replaced[id(x)]
        return
    target = container if type(container) is dict else getattr(container, "__dict__", None)
    if type(target) is dict:
        for k, x in list(target.items()):
            if id(x) in replaced:
                target[k] = replaced[id(x)]
