"""Type hints and docstrings of a kernel function as a tool's input schema, and arguments converted back.

Used by notebook functions as tools (``_functions.py``): numpydoc ``Parameters`` and Google
``Args`` sections describe each parameter; hints become JSON schema (``Optional``,
``Literal``, ``list[...]``, ``dict[str, ...]``, enums, TypedDicts, dataclasses, pydantic
models); a parameter of a type JSON cannot carry (a pandas DataFrame, a numpy array) takes
the name of a kernel variable holding one, and the call looks it up and checks its type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from .._errors import AgentMagicError
from ._kernel_tools import _safe_repr


class BadArgument(AgentMagicError):
    """An argument the model passed does not fit the function's type hints (sent back as a tool error)."""


# ---------------------------------------------------------------------------
# Docstrings
# ---------------------------------------------------------------------------

_NUMPY_PARAM_HEADERS = ("parameters", "params", "other parameters", "keyword arguments")
_GOOGLE_PARAM_HEADERS = ("args", "arguments", "parameters", "params", "keyword args", "keyword arguments", "kwargs")
_GOOGLE_HEADER_RE = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_GOOGLE_ENTRY_RE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into its text without parameter sections, and a description per parameter.

    Understands numpydoc (``Parameters`` underlined with dashes, ``name : type`` entries)
    and Google style (``Args:`` with ``name (type): text`` entries).

    Parameters
    ----------
    doc
        The docstring, as written (indentation is cleaned here).

    Returns
    -------
    tuple of (str, dict of str to str)
        The remaining text, and parameter names mapped to their one-paragraph descriptions.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    keep: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        header = line.strip().lower()
        if header in _NUMPY_PARAM_HEADERS and nxt.strip() and set(nxt.strip()) == {"-"}:
            i = _numpy_section(lines, i + 2, params)
            continue
        m = _GOOGLE_HEADER_RE.match(line)
        if m and m.group(2).strip().lower() in _GOOGLE_PARAM_HEADERS:
            i = _google_section(lines, i + 1, len(m.group(1)), params)
            continue
        keep.append(line)
        i += 1
    return "\n".join(keep).strip(), params


def _is_numpy_header(lines: list[str], i: int) -> bool:
    return i + 1 < len(lines) and bool(lines[i].strip()) and bool(lines[i + 1].strip()) and set(lines[i + 1].strip()) == {"-"}


def _numpy_section(lines: list[str], i: int, params: dict[str, str]) -> int:
    names: list[str] = []
    text: list[str] = []

    def flush() -> None:
        for n in names:
            params[n] = " ".join(text).strip()

    while i < len(lines) and not _is_numpy_header(lines, i):
        line = lines[i]
        if line.strip() and not line[0].isspace():
            flush()
            head = line.split(" : ", 1)[0] if " : " in line else line.rstrip(":")
            names = [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
            text = []
        elif line.strip():
            text.append(line.strip())
        i += 1
    flush()
    return i


def _google_section(lines: list[str], i: int, indent: int, params: dict[str, str]) -> int:
    name: str | None = None
    text: list[str] = []
    entry_indent: int | None = None

    def flush() -> None:
        if name is not None:
            params[name] = " ".join(text).strip()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        here = len(line) - len(line.lstrip())
        if here <= indent:
            break
        if entry_indent is None:
            entry_indent = here
        m = _GOOGLE_ENTRY_RE.match(line.strip())
        if here == entry_indent and m:
            flush()
            name, text = m.group(1), [m.group(3)]
        else:
            text.append(line.strip())
        i += 1
    flush()
    return i


# ---------------------------------------------------------------------------
# Type hints: JSON schema and argument conversion
# ---------------------------------------------------------------------------

_ANY = object()


def _strip_annotated(hint: Any) -> tuple[Any, str]:
    """``Annotated[X, "text", ...]`` → (X, "text"): a string in the metadata describes the parameter."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        return base, " ".join(m for m in meta if isinstance(m, str))
    return hint, ""


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


def is_pydantic(hint: Any) -> bool:
    return isinstance(hint, type) and callable(getattr(hint, "model_json_schema", None)) and callable(getattr(hint, "model_validate", None))


def _class_label(cls: type) -> str:
    """How a class is named to the model: ``a pandas DataFrame``, ``a numpy array``, ``a mymodule.Thing``."""
    mod = getattr(cls, "__module__", "") or ""
    name = cls.__qualname__
    top = mod.split(".")[0]
    if top == "pandas":
        return f"a pandas {name}"
    if top == "numpy" and name == "ndarray":
        return "a numpy array"
    if top in ("numpy", "polars", "xarray", "torch"):
        return f"a {top} {name}"
    if mod in ("__main__", "builtins", ""):
        return f"a {name}"
    return f"a {mod}.{name}"


def _variable_class(hint: Any) -> type | None:
    """The class a parameter holds when the model passes a kernel variable's name; None for JSON types."""
    origin = typing.get_origin(hint)
    cls = origin if isinstance(origin, type) and origin not in (list, tuple, dict, set, frozenset, type) else hint
    if not isinstance(cls, type) or cls in _SIMPLE or _numeric(cls) is not None or issubclass(cls, (enum.Enum, PurePath, dt.date)):
        return None
    if cls.__module__ in ("builtins", "collections.abc", "typing") or _is_typeddict(cls) or is_pydantic(cls):
        return None
    if dataclasses.is_dataclass(cls):
        return None
    return cls


_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _numeric(hint: Any) -> type | None:
    """``int`` or ``float`` for other number classes (``np.int64``, ``np.float32``, ``fractions.Fraction``...)."""
    import numbers

    if not isinstance(hint, type) or hint in _SIMPLE or issubclass(hint, enum.Enum):
        return None
    if issubclass(hint, numbers.Integral):
        return int
    if issubclass(hint, numbers.Real):
        return float
    return None


def _json_default(value: Any) -> tuple[bool, Any]:
    if isinstance(value, enum.Enum):
        value = value.value
    elif isinstance(value, PurePath):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    return True, value


class _SchemaBuilder:
    """JSON schemas for type hints; pydantic's ``$defs`` are gathered for the root."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def schema(self, hint: Any, depth: int = 0) -> dict[str, Any]:
        hint, note = _strip_annotated(hint)
        out = self._schema(hint, depth)
        if note:
            out = {**out, "description": (note + " " + out.get("description", "")).strip()}
        return out

    def _schema(self, hint: Any, depth: int) -> dict[str, Any]:
        if depth > 8 or hint is _ANY or hint is Any or hint is object or hint is inspect.Parameter.empty or isinstance(hint, str):
            return {}
        if hint is None:
            return {"type": "null"}
        if hint in _SIMPLE:
            return {"type": _SIMPLE[hint]}
        numeric = _numeric(hint)
        if numeric is not None:
            return {"type": _SIMPLE[numeric]}
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Literal:
            values = list(args)
            kinds = {type(v) for v in values}
            out: dict[str, Any] = {"enum": values}
            if len(kinds) == 1 and next(iter(kinds)) in _SIMPLE:
                out["type"] = _SIMPLE[next(iter(kinds))]
            return out
        if origin is typing.Union or origin is types.UnionType:
            return {"anyOf": [self.schema(a, depth + 1) for a in args]}
        var = _variable_class(hint)
        if var is not None:
            return {"type": "string", "description": f"name of a kernel variable holding {_class_label(var)}"}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            values = [m.value for m in hint]
            out = {"enum": values}
            kinds = {type(v) for v in values}
            if len(kinds) == 1 and next(iter(kinds)) in _SIMPLE:
                out["type"] = _SIMPLE[next(iter(kinds))]
            return out
        if hint is dt.datetime:
            return {"type": "string", "format": "date-time"}
        if hint is dt.date:
            return {"type": "string", "format": "date"}
        if isinstance(hint, type) and issubclass(hint, PurePath):
            return {"type": "string", "description": "a file path"}
        if _is_typeddict(hint):
            hints = typing.get_type_hints(hint, include_extras=True)
            props = {k: self.schema(h, depth + 1) for k, h in hints.items()}
            required = [k for k in hints if k in hint.__required_keys__]
            return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint, include_extras=True)
            props, required = {}, []
            for f in dataclasses.fields(hint):
                if not f.init:
                    continue
                props[f.name] = self.schema(hints.get(f.name, Any), depth + 1)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        if is_pydantic(hint):
            schema = dict(hint.model_json_schema())
            self.defs.update(schema.pop("$defs", {}))
            return schema
        if origin in (tuple,) or hint is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0], depth + 1)}
            if not args:
                return {"type": "array"}
            items = [self.schema(a, depth + 1) for a in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        container = origin if origin is not None else hint
        if container in (dict,) or (isinstance(container, type) and issubclass(container, Mapping)):
            value = self.schema(args[1], depth + 1) if len(args) == 2 else {}
            return {"type": "object", "additionalProperties": value or True}
        if container in (list, set, frozenset) or (isinstance(container, type) and issubclass(container, (Sequence, Iterable))):
            out = {"type": "array"}
            if args:
                out["items"] = self.schema(args[0], depth + 1)
            if container in (set, frozenset):
                out["uniqueItems"] = True
            return out
        return {}


def type_name(value: Any) -> str:
    return type(value).__name__


def _convert(value: Any, hint: Any, ns: Mapping[str, Any], where: str, *, strict: bool = False) -> Any:
    """``value`` (as JSON gave it) as the hint asks for; raises BadArgument naming ``where``."""
    hint, _ = _strip_annotated(hint)
    if hint is _ANY or hint is Any or hint is object or hint is inspect.Parameter.empty or isinstance(hint, str):
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise BadArgument(f"`{where}` must be null, not {value!r}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise BadArgument(f"`{where}` must be one of {', '.join(json.dumps(a) for a in args)}, not {_safe_repr(value, 80)}.")
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        errors: list[str] = []
        for lenient in (False, True):
            if lenient and strict:
                break
            for a in members:
                try:
                    return _convert(value, a, ns, where, strict=not lenient)
                except BadArgument as e:
                    errors.append(str(e))
        if len(members) == 1 or not errors:
            raise BadArgument(errors[-1] if errors else f"`{where}` must be null, not {_safe_repr(value, 80)}.")
        raise BadArgument(f"`{where}`: {_safe_repr(value, 80)} fits none of its types ({errors[0]})")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if not strict and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise BadArgument(f"`{where}` must be true or false, not {_safe_repr(value, 80)}.")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not strict and isinstance(value, float) and value.is_integer():
            return int(value)
        if not strict and isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise BadArgument(f"`{where}` must be an integer, not {_safe_repr(value, 80)}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if not strict and isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        raise BadArgument(f"`{where}` must be a number, not {_safe_repr(value, 80)}.")
    if hint is str:
        if isinstance(value, str):
            return value
        raise BadArgument(f"`{where}` must be a string, not {_safe_repr(value, 80)}.")
    numeric = _numeric(hint)
    if numeric is not None:
        return hint(_convert(value, numeric, ns, where, strict=strict))
    var = _variable_class(hint)
    if var is not None:
        return _lookup(value, var, ns, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        for m in hint:
            if m.value == value and type(m.value) is type(value):
                return m
        if isinstance(value, str) and value in hint.__members__:
            return hint[value]
        raise BadArgument(f"`{where}` must be one of {', '.join(json.dumps(m.value) for m in hint)}, not {_safe_repr(value, 80)}.")
    if hint in (dt.datetime, dt.date):
        if isinstance(value, str):
            try:
                return hint.fromisoformat(value)
            except ValueError:
                pass
        raise BadArgument(f"`{where}` must be an ISO {'date-time' if hint is dt.datetime else 'date'} string, not {_safe_repr(value, 80)}.")
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if isinstance(value, str):
            return hint(value)
        raise BadArgument(f"`{where}` must be a path (a string), not {_safe_repr(value, 80)}.")
    if _is_typeddict(hint) or (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return _convert_record(value, hint, ns, where, strict)
    if is_pydantic(hint):
        try:
            return hint.model_validate(value)
        except Exception as e:  # pydantic's ValidationError: its first lines say which field
            first = " ".join(str(e).splitlines()[:3])
            raise BadArgument(f"`{where}` does not fit {hint.__name__}: {first}") from None
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise BadArgument(f"`{where}` must be an array, not {_safe_repr(value, 80)}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], ns, f"{where}[{i}]", strict=strict) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise BadArgument(f"`{where}` must have {len(args)} items, not {len(value)}.")
        return tuple(_convert(v, args[i] if args else _ANY, ns, f"{where}[{i}]", strict=strict) for i, v in enumerate(value))
    container = origin if origin is not None else hint
    if container is dict or (isinstance(container, type) and issubclass(container, Mapping)):
        if not isinstance(value, dict):
            raise BadArgument(f"`{where}` must be an object, not {_safe_repr(value, 80)}.")
        key_hint, value_hint = args if len(args) == 2 else (_ANY, _ANY)
        return {
            _convert(k, key_hint, ns, f"{where} key", strict=False): _convert(v, value_hint, ns, f"{where}[{k!r}]", strict=strict)
            for k, v in value.items()
        }
    if container in (list, set, frozenset) or (isinstance(container, type) and issubclass(container, (Sequence, Iterable))):
        if not isinstance(value, (list, tuple)):
            raise BadArgument(f"`{where}` must be an array, not {_safe_repr(value, 80)}.")
        items = [_convert(v, args[0] if args else _ANY, ns, f"{where}[{i}]", strict=strict) for i, v in enumerate(value)]
        if container in (set, frozenset):
            return container(items)
        return items
    return value


def _convert_record(value: Any, hint: type, ns: Mapping[str, Any], where: str, strict: bool) -> Any:
    if not isinstance(value, dict):
        raise BadArgument(f"`{where}` must be an object, not {_safe_repr(value, 80)}.")
    hints = typing.get_type_hints(hint, include_extras=True)
    if dataclasses.is_dataclass(hint):
        fields = {f.name: f for f in dataclasses.fields(hint) if f.init}
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        known = set(fields)
    else:
        required = set(getattr(hint, "__required_keys__", ()))
        known = set(hints)
    unknown = [k for k in value if k not in known]
    if unknown:
        raise BadArgument(f"`{where}` has no field `{unknown[0]}`; its fields are {', '.join(sorted(known))}.")
    missing = [k for k in sorted(required) if k not in value]
    if missing:
        raise BadArgument(f"`{where}` needs the field `{missing[0]}`.")
    data = {k: _convert(v, hints.get(k, _ANY), ns, f"{where}.{k}", strict=strict) for k, v in value.items()}
    return hint(**data)


def _lookup(value: Any, cls: type, ns: Mapping[str, Any], where: str) -> Any:
    label = _class_label(cls)
    if not isinstance(value, str) or not value.isidentifier():
        raise BadArgument(f"`{where}` takes the name of a kernel variable holding {label}, not {_safe_repr(value, 80)}.")
    if value not in ns:
        raise BadArgument(f"`{where}`: there is no kernel variable `{value}`; pass the name of one holding {label}.")
    obj = ns[value]
    if not isinstance(obj, cls):
        raise BadArgument(f"`{where}`: the kernel variable `{value}` holds {type_name(obj)}, not {label}.")
    return obj
