"""Which global names a piece of code can change: from its AST (symtable) and the functions it calls."""

from __future__ import annotations

import builtins
import dis
import re
import symtable
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import Any

# IPython's own names (history, output cache, helpers): never the person's variables.
_IGNORED = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii", "_ih", "_oh", "_dh"})
_IGNORED_RE = re.compile(r"^(_i?\d+|__\w*__)$")
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"})
_STORE_OPS = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_NAME", "DELETE_NAME"})
# Values whose identity never matters: sharing them is not aliasing.
_ATOMIC = (type(None), bool, int, float, complex, str, bytes, range, tuple, frozenset, ModuleType)


def is_ignored(name: str) -> bool:
    """True for IPython's history and output-cache names and dunders, which are never snapshotted."""
    return name in _IGNORED or bool(_IGNORED_RE.match(name))


@dataclass(frozen=True)
class TouchedNames:
    """The names one code execution can change (see :func:`names_touched`).

    Attributes
    ----------
    direct
        Global names the code itself references, assigns or deletes.
    via_functions
        Globals reached through user-defined functions the code references.
    aliases
        Other names bound to the same objects as the names above (or to an
        object held directly inside one of them), so that aliasing survives a restore.
    absent
        Names among these that do not exist yet (a rewind deletes them).
    truncated
        ``limit`` was reached: some names reached through functions were left out.
    syntax_error
        The code does not parse (it cannot run, so it changes nothing).
    """

    direct: frozenset[str] = frozenset()
    via_functions: frozenset[str] = frozenset()
    aliases: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()
    truncated: bool = False
    syntax_error: str | None = None

    @property
    def names(self) -> frozenset[str]:
        """Every name to snapshot: direct, through functions, aliases (absent ones included)."""
        return self.direct | self.via_functions | self.aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)


def names_touched(code: str, namespace: Mapping[str, Any], *, depth: int = 3, limit: int = 200) -> TouchedNames:
    """The global names ``code`` can change when run in ``namespace``.

    Parameters
    ----------
    code
        Python source as it will be executed (for IPython cells, after
        ``transform_cell``: magics are not Python).
    namespace
        The namespace it will run in (the kernel's ``user_ns``).
    depth
        How many levels of user-defined function calls to follow.
    limit
        At most this many names in all; past it ``truncated`` is set.

    Returns
    -------
    TouchedNames
        Names it references, assigns (augmented assignment, ``del``, imports,
        ``for``/``with`` targets, walrus, ``global`` in functions it defines) or
        deletes; comprehension variables are local and excluded. Globals read or
        written by user functions (``__module__`` ``"__main__"`` or ``None``)
        it references, through their bytecode's global loads and stores and their
        nested code objects, up to ``depth``. Builtins it only reads are left out;
        names not in ``namespace`` are listed in ``absent``.
    """
    try:
        table = symtable.symtable(code, "<agent>", "exec")
    except (SyntaxError, ValueError) as e:
        return TouchedNames(syntax_error=f"{type(e).__name__}: {e}")
    assigned: set[str] = set()
    direct: set[str] = set()
    _collect_scope(table, direct, assigned, top=True)
    direct = {n for n in direct if _keep(n, namespace, n in assigned)}

    via: set[str] = set()
    truncated = False
    seen_code: set[int] = set()
    frontier = [namespace[n] for n in sorted(direct) if n in namespace]
    for _level in range(depth):
        next_frontier: list[Any] = []
        for value in frontier:
            for code_obj in _user_code(value):
                for name, stores in _code_globals(code_obj, seen_code):
                    if name in direct or name in via or not _keep(name, namespace, stores):
                        continue
                    if len(direct) + len(via) >= limit:
                        truncated = True
                        break
                    via.add(name)
                    if name in namespace:
                        next_frontier.append(namespace[name])
        frontier = next_frontier
        if not frontier or truncated:
            break

    touched = direct | via
    aliases = _aliases(touched, namespace, limit - len(touched))
    all_names = touched | aliases
    absent = frozenset(n for n in all_names if n not in namespace)
    return TouchedNames(frozenset(direct), frozenset(via), frozenset(aliases), absent, truncated)


def _collect_scope(table: symtable.SymbolTable, names: set[str], assigned: set[str], *, top: bool) -> None:
    for sym in table.get_symbols():
        name = sym.get_name()
        if top or sym.is_global():
            names.add(name)
            if sym.is_assigned() or sym.is_imported() or (top and sym.is_namespace()):
                assigned.add(name)
    for child in table.get_children():
        _collect_scope(child, names, assigned, top=False)


def _keep(name: str, namespace: Mapping[str, Any], stores: bool) -> bool:
    if is_ignored(name):
        return False
    if name in namespace or stores:
        return True
    # Read but not defined: a builtin (or a NameError when it runs).
    return not hasattr(builtins, name)


def _is_user(obj: Any) -> bool:
    return getattr(obj, "__module__", None) in ("__main__", None)


def _user_code(value: Any) -> Iterator[CodeType]:
    if isinstance(value, MethodType):
        value = value.__func__
    if isinstance(value, FunctionType):
        if _is_user(value):
            yield value.__code__
        return
    cls = value if isinstance(value, type) else type(value)
    if not _is_user(cls):
        return
    for attr in vars(cls).values():
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        elif isinstance(attr, property):
            attr = attr.fget
        if isinstance(attr, FunctionType):
            yield attr.__code__


def _code_globals(code: CodeType, seen: set[int]) -> Iterator[tuple[str, bool]]:
    """(name, is_store) for each global a code object (and the code nested in it) loads, stores or deletes."""
    stack = [code]
    while stack:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        for ins in dis.get_instructions(c):
            if ins.opname in _GLOBAL_OPS and isinstance(ins.argval, str):
                yield ins.argval, ins.opname in _STORE_OPS
        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))


def _aliases(touched: set[str], namespace: Mapping[str, Any], room: int) -> set[str]:
    """Other names bound to a touched object, or to an object held directly in a touched container."""
    wanted: set[int] = set()
    for name in touched:
        value = namespace.get(name)
        if name not in namespace or isinstance(value, _ATOMIC) or (callable(value) and not hasattr(value, "shape")):
            continue
        wanted.add(id(value))
        inner: Any = ()
        if isinstance(value, dict) and len(value) <= 1000:
            inner = value.values()
        elif isinstance(value, (list, set)) and len(value) <= 1000:
            inner = value
        wanted.update(id(v) for v in inner if not isinstance(v, _ATOMIC))
    if not wanted:
        return set()
    found: set[str] = set()
    for name, value in namespace.items():
        if id(value) in wanted and name not in touched and not is_ignored(name):
            if len(found) >= max(room, 0):
                break
            found.add(name)
    return found
