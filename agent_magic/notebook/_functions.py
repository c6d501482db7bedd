"""Notebook functions as tools (``%agent tool NAME``) and answers as values (``%%agent --into``).

A function the person defines in the kernel becomes a tool of this notebook's
session: its name is the tool's name, its docstring the description (numpydoc
``Parameters`` or Google ``Args`` sections describe each parameter) and its type
hints the input schema. A call runs on the kernel's main thread (through
:class:`~._kernel_tools.MainThreadBridge`, as the ``Python`` tool's code does),
interruptibly, with printed output captured and capped, arguments checked and
converted against the hints first, and file changes checkpointed.

Parameters typed as pandas or numpy objects (or any other class JSON cannot
carry) take the *name* of a kernel variable holding one: the call looks it up in
the namespace and checks its type.

Registering a function is the person's permission to call it: the magics add an
allow rule with its name for every turn, so calls are not asked again, while deny
rules (and plan mode, which allows read-only tools only) still apply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import inspect
import io
import json
import keyword
import re
import signal
import sys
import threading
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, cast

from IPython.core.error import UsageError

from .. import _api
from .._errors import AgentMagicError, SessionError, ToolError
from .._messages import ResultMessage
from ..tools import BUILTIN_TOOL_NAMES
from ..tools.base import Tool, ToolContext, ToolResult
from ._kernel_tools import MAX_OUTPUT, MainThreadBridge, _cap, _safe_repr

#: The bridge request kind that runs a registered function on the main thread.
CALL_KIND = "function"
#: Tool names a kernel function may not take: the built-in tools, the kernel tools and the subagent tool.
RESERVED_NAMES = frozenset((*BUILTIN_TOOL_NAMES, "Python", "Variables", "Agent"))
#: The Messages API's tool names, narrowed to Python identifiers.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_DESCRIPTION = 4000
_DF_ROWS = 60
_DF_COLS = 30


class BadArgument(AgentMagicError):
    """An argument the model passed does not fit the function's type hints (sent back as a tool error)."""


class AnswerError(AgentMagicError):
    """A turn's answer cannot be stored with ``--into`` (no structured output, or the model class refused it)."""


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


def _is_pydantic(hint: Any) -> bool:
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
    if cls.__module__ in ("builtins", "collections.abc", "typing") or _is_typeddict(cls) or _is_pydantic(cls):
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
        if _is_pydantic(hint):
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


def _type_name(value: Any) -> str:
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
    if _is_pydantic(hint):
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
        raise BadArgument(f"`{where}`: the kernel variable `{value}` holds {_type_name(obj)}, not {label}.")
    return obj


# ---------------------------------------------------------------------------
# One function as a tool
# ---------------------------------------------------------------------------


@dataclass
class _Param:
    name: str
    hint: Any
    kind: inspect._ParameterKind
    default: Any


@dataclass
class FunctionSpec:
    """What the model sees of one kernel function, and how its calls are bound.

    Attributes
    ----------
    name
        The function's name (the tool's name).
    description
        The tool description: the docstring without its parameter section, then how calls work.
    input_schema
        A JSON schema built from the type hints.
    signature
        ``(path: str, region: str | None = None) -> DataFrame``, for listings.
    summary
        The docstring's first line ('' without one).
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    signature: str
    summary: str
    params: list[_Param] = field(default_factory=list)
    takes_kwargs: bool = False

    def bind(self, input: Mapping[str, Any], ns: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Check and convert the model's arguments into ``(args, kwargs)``.

        Raises
        ------
        BadArgument
            A missing, unknown or ill-typed argument, named.
        """
        if not isinstance(input, Mapping):
            raise BadArgument("The arguments must be a JSON object.")
        known = {p.name for p in self.params}
        unknown = [k for k in input if k not in known]
        if unknown and not self.takes_kwargs:
            names = ", ".join(p.name for p in self.params) or "no arguments"
            raise BadArgument(f"Unknown parameter `{unknown[0]}`; {self.name} takes {names}.")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = [p for p in self.params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
        last_given = max((i for i, p in enumerate(positional) if p.name in input), default=-1)
        for i, p in enumerate(self.params):
            if p.name not in input:
                if p.default is inspect.Parameter.empty:
                    raise BadArgument(f"Missing required parameter `{p.name}`.")
                if p.kind is inspect.Parameter.POSITIONAL_ONLY and i <= last_given:
                    args.append(p.default)
                continue
            value = _convert(input[p.name], p.hint, ns, p.name)
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[p.name] = value
        for k in unknown:
            kwargs[k] = input[k]
        return args, kwargs


def function_spec(name: str, fn: Callable[..., Any]) -> FunctionSpec:
    """Build the tool definition of one kernel function from its signature, hints and docstring.

    Parameters
    ----------
    name
        The name the function has in the kernel (the tool's name).
    fn
        The function.

    Returns
    -------
    FunctionSpec

    Raises
    ------
    ValueError
        When Python cannot read the function's signature.
    """
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a hint naming something undefined: use what resolves, the rest is "any"
        hints = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}
    text, docs = parse_docstring(inspect.getdoc(fn))
    builder = _SchemaBuilder()
    props: dict[str, Any] = {}
    required: list[str] = []
    params: list[_Param] = []
    variables: list[str] = []
    takes_kwargs = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            takes_kwargs = True
            continue
        hint = hints.get(p.name, _ANY)
        schema = dict(builder.schema(hint))
        base, _ = _strip_annotated(hint)
        if _variable_class(base) is not None or any(_variable_class(a) is not None for a in typing.get_args(base)):
            variables.append(p.name)
        doc = docs.get(p.name, "")
        if doc:
            schema["description"] = f"{schema['description']}. {doc}" if schema.get("description") else doc
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            ok, value = _json_default(p.default)
            if ok:
                schema["default"] = value
        props[p.name] = schema
        params.append(_Param(p.name, hint, p.kind, p.default))
    input_schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        input_schema["required"] = required
    input_schema["additionalProperties"] = takes_kwargs
    if builder.defs:
        input_schema["$defs"] = builder.defs
    shown = _signature_text(sig)
    summary = text.strip().splitlines()[0] if text.strip() else ""
    parts = [text or f"The notebook function `{name}`."]
    how = (
        f"This is `{name}{shown}`, a Python function defined in the person's notebook: a call runs it in their "
        "live kernel and returns what it printed and its return value as text (an exception comes back as an error "
        "with its traceback)."
    )
    parts.append(how)
    if variables:
        named = ", ".join(f"`{v}`" for v in variables)
        parts.append(
            f"For {named}, pass the NAME of a kernel variable (a string such as \"df\"), not the data: the call looks "
            "the variable up in the kernel. The Variables tool lists them."
        )
    description = "\n\n".join(parts)
    if len(description) > MAX_DESCRIPTION:
        description = description[: MAX_DESCRIPTION - 1] + "…"
    return FunctionSpec(name, description, input_schema, shown, summary, params, takes_kwargs)


def _signature_text(sig: inspect.Signature) -> str:
    text = str(sig)
    # Hints show as written in the kernel: drop the module paths of pandas and numpy classes.
    text = re.sub(r"\bpandas\.core\.[a-z.]+\.(DataFrame|Series)\b", r"pandas.\1", text)
    text = text.replace("numpy.ndarray", "np.ndarray")
    return text if len(text) <= 200 else text[:199] + "…"


def render_value(value: Any) -> str:
    """A return value as text for the model: tables via a capped ``to_string``, others via a capped repr."""
    if value is None:
        return "(returned None)"
    if isinstance(value, str):
        return _cap(value)
    mod = type(value).__module__ or ""
    if mod.startswith("pandas") and hasattr(value, "to_string"):
        with contextlib.suppress(Exception):
            shape: tuple[int, ...] = tuple(getattr(value, "shape", ()))
            kind = type(value).__name__
            size = f"{shape[0]} rows, {shape[-1]} columns" if len(shape) == 2 else f"{shape[0]} rows" if shape else ""
            body = value.to_string(max_rows=_DF_ROWS, max_cols=_DF_COLS) if kind == "DataFrame" else value.to_string(max_rows=_DF_ROWS)
            return _cap(f"{kind}, {size}:\n{body}" if size else body)
    return _safe_repr(value, MAX_OUTPUT)


def call_function(name: str, input: Mapping[str, Any], ns: dict[str, Any]) -> tuple[str, bool]:
    """Run the kernel function ``name`` with the model's arguments; return (text, is_error).

    Must run on the kernel's main thread. The function is looked up now, so the
    latest definition runs. A KeyboardInterrupt (the kernel's interrupt) is reported,
    not raised.
    """
    fn = ns.get(name)
    if fn is None or not callable(fn):
        return f"`{name}` is not defined in the kernel now: ask the person to run the cell that defines it.", True
    try:
        spec = function_spec(name, fn)
        args, kwargs = spec.bind(input, ns)
    except BadArgument as e:
        return f"Bad argument: {e}", True
    except ValueError as e:
        return f"`{name}` cannot be called as a tool: {e}", True
    out = io.StringIO()
    is_error = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            value = fn(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"KeyboardInterrupt: {name} was interrupted.")
            is_error = True
        except BaseException:
            etype, evalue, tb = sys.exc_info()
            # Only the function's frames: ours say nothing to the model.
            while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next
            print("".join(traceback.format_exception(etype, evalue, tb)), end="")
            is_error = True
    printed = out.getvalue()
    if is_error:
        return _cap(printed), True
    shown = render_value(value)
    if printed.strip():
        return _cap(f"Printed:\n{printed.rstrip()}\n\nReturned:\n{shown}"), False
    return shown, False


class KernelFunctionTool(Tool):
    """A function defined in the kernel, offered as a tool (its name, docstring and hints from :class:`FunctionSpec`)."""

    # Registering the function is the person's permission; the magics add an allow rule with its
    # name each turn. "execute" (not "read") keeps plan mode from running functions that may change things.
    kind = "execute"

    def __init__(self, spec: FunctionSpec, bridge: MainThreadBridge, namespace: Callable[[], dict[str, Any]]) -> None:
        self.name = spec.name
        self.description = spec.description
        self.input_schema = spec.input_schema
        self.bridge = bridge
        self.namespace = namespace

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        import asyncio

        # Files the function writes are checkpointed as the Python tool's are: a scan before and after.
        token = ctx.recorder.before_command()
        changed: list[str] = []
        try:
            if threading.current_thread() is self.bridge.main_thread:
                text, is_error = call_function(self.name, input, self.namespace())
            else:
                try:
                    answer = await self.bridge.call(CALL_KIND, name=self.name, input=dict(input))
                except asyncio.CancelledError:
                    # The bridge interrupts the kernel only for "exec": stop a running function too.
                    if self.bridge.executing.is_set():
                        import _thread

                        _thread.interrupt_main()
                    raise
                if isinstance(answer, Exception):
                    raise ToolError(str(answer))
                text, is_error = answer
        finally:
            changed = ctx.recorder.after_command(token)
        last = text.strip().splitlines()[-1][:120] if text.strip() else ""
        summary = f"error: {last}" if is_error else (last[:80] or "done")
        data: dict[str, Any] = {"changed_files": changed} if changed else {}
        return ToolResult(text or "(no output)", is_error=is_error, summary=summary, data=data)

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Path]:
        # Arguments are the function's business (a `path` parameter is not a file this tool opens).
        return []

    def rule_content(self, input: dict[str, Any]) -> str | None:
        return None

    def describe(self, input: dict[str, Any]) -> str:
        args = ", ".join(f"{k}={_safe_repr(v, 30)}" for k, v in input.items())
        return f"{self.name}({args})"[:100]


# ---------------------------------------------------------------------------
# The registry of one kernel
# ---------------------------------------------------------------------------


@dataclass
class FunctionRow:
    """One line of ``%agent tools``."""

    name: str
    signature: str
    summary: str
    status: str  # "registered" or "missing"


def check_name(name: str, ns: Mapping[str, Any]) -> Callable[..., Any]:
    """The function ``name`` in the kernel, if it can be a tool.

    Raises
    ------
    UsageError
        One line saying what to do: not an identifier, a built-in tool's name, undefined,
        not callable, async, or no readable signature.
    """
    if not _NAME_RE.match(name) or keyword.iskeyword(name):
        raise UsageError(f"{name!r} is not a function name (ASCII letters, digits and _, at most 64): `%agent tool NAME`.")
    if name in RESERVED_NAMES or name.startswith("mcp__"):
        raise UsageError(f"{name} is the name of a built-in tool; define the function under another name (e.g. my_{name.lower()}), then `%agent tool my_{name.lower()}`.")
    if name not in ns:
        raise UsageError(f"{name} is not defined in this kernel: run the cell that defines it, then `%agent tool {name}`.")
    fn = ns[name]
    if isinstance(fn, type) or not callable(fn):
        raise UsageError(f"{name} is {_type_name(fn) if not isinstance(fn, type) else 'a class'}, not a function: give the name of a `def` function.")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise UsageError(f"{name} is an async function; wrap it in a plain `def` (e.g. calling asyncio.run) and register that.")
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        raise UsageError(f"Python cannot read the signature of {name}; wrap it in a `def` with named parameters and register that.") from None
    return cast("Callable[..., Any]", fn)


class KernelFunctions:
    """The kernel functions registered as tools of this notebook's sessions.

    Names are kept in registration order and remembered with each session the
    notebook works in (``agent_magic.set_kernel_tools``), so a restarted kernel
    offers them again once the cells that define them have run.

    Parameters
    ----------
    bridge
        The runner's bridge; :meth:`handle_call` serves its ``function`` requests.
    namespace
        Returns the kernel's user namespace.
    """

    def __init__(self, bridge: MainThreadBridge, namespace: Callable[[], dict[str, Any]]) -> None:
        self.bridge = bridge
        self.namespace = namespace
        self.names: list[str] = []
        self._saved: dict[str, tuple[str, ...]] = {}
        self._restored: set[str] = set()
        self._warned: tuple[str, ...] = ()

    # -- registering -------------------------------------------------------------
    def register(self, names: Sequence[str]) -> list[FunctionSpec]:
        """Register functions by name (all are checked before any is added); returns their specs.

        Raises
        ------
        UsageError
            For the first name that cannot be a tool.
        """
        ns = self.namespace()
        specs = []
        for name in names:
            fn = check_name(name, ns)
            try:
                specs.append(function_spec(name, fn))
            except (TypeError, ValueError) as e:
                raise UsageError(f"{name} cannot be a tool ({e}); wrap it in a plain `def` and register that.") from None
        for spec in specs:
            if spec.name not in self.names:
                self.names.append(spec.name)
        return specs

    def unregister(self, name: str) -> None:
        """Forget ``name``.

        Raises
        ------
        UsageError
            When it is not registered.
        """
        if name not in self.names:
            known = ", ".join(self.names) or "none"
            raise UsageError(f"{name} is not a kernel tool here (registered: {known}); `%agent tools` lists them.")
        self.names.remove(name)
        self._warned = tuple(n for n in self._warned if n != name)

    def _spec(self, name: str, ns: Mapping[str, Any]) -> FunctionSpec | None:
        fn = ns.get(name)
        if fn is None or isinstance(fn, type) or not callable(fn) or inspect.iscoroutinefunction(fn):
            return None
        try:
            return function_spec(name, fn)
        except (TypeError, ValueError):
            return None

    def tools(self) -> list[Tool]:
        """A tool per registered function that is defined now (the latest definition)."""
        ns = self.namespace()
        out: list[Tool] = []
        for name in self.names:
            spec = self._spec(name, ns)
            if spec is not None:
                out.append(KernelFunctionTool(spec, self.bridge, self.namespace))
        return out

    def missing(self) -> list[str]:
        """Registered names that are not defined as functions in the kernel now."""
        ns = self.namespace()
        return [n for n in self.names if self._spec(n, ns) is None]

    def rows(self) -> list[FunctionRow]:
        """What ``%agent tools`` lists."""
        ns = self.namespace()
        out = []
        for name in self.names:
            spec = self._spec(name, ns)
            if spec is None:
                out.append(FunctionRow(name, "", "", "missing"))
            else:
                out.append(FunctionRow(name, spec.signature, spec.summary, "registered"))
        return out

    # -- remembered with sessions ---------------------------------------------------
    def restore(self, session_id: str | None, *, home: str | None) -> None:
        """Add the names remembered with ``session_id`` (read once per session and kernel)."""
        if session_id is None or session_id in self._restored:
            return
        self._restored.add(session_id)
        try:
            remembered = _api.get_kernel_tools(session_id, home=home)
        except SessionError:
            remembered = []
        self._saved[session_id] = tuple(remembered)
        for name in remembered:
            if name not in self.names:
                self.names.append(name)

    def missing_line(self) -> str | None:
        """One line naming the missing functions, once per distinct set; None when none is missing or it was said."""
        missing = tuple(self.missing())
        if not missing or set(missing) <= set(self._warned):
            self._warned = missing if missing else ()
            return None
        self._warned = missing
        return missing_functions_line(list(missing))

    def save(self, session_id: str | None, *, home: str | None) -> None:
        """Remember the registered names with ``session_id`` (written only when they changed)."""
        if session_id is None:
            return
        names = tuple(self.names)
        if self._saved.get(session_id, ()) == names:
            return
        _api.set_kernel_tools(session_id, list(names), home=home)
        self._saved[session_id] = names
        self._restored.add(session_id)

    # -- calls (main thread) ------------------------------------------------------
    def handle_call(self, payload: dict[str, Any], reply: Callable[[Any], None]) -> None:
        """The bridge's ``function`` handler: run one call on the main thread, interruptibly."""
        bridge = self.bridge
        bridge.executing.set()
        # An async cell's SIGINT handler only cancels the cell; while a registered function runs,
        # the kernel's interrupt button must stop it, as it would in a normal cell.
        main = threading.current_thread() is threading.main_thread()
        old = signal.getsignal(signal.SIGINT) if main else None
        if main:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            reply(call_function(payload["name"], payload.get("input") or {}, self.namespace()))
        except KeyboardInterrupt:
            reply((f"KeyboardInterrupt: {payload['name']} was interrupted.", True))
        finally:
            if main and old is not None:
                signal.signal(signal.SIGINT, old)
            bridge.executing.clear()


def missing_functions_line(names: list[str]) -> str:
    """``Kernel tools not defined yet: a, b — run the cells that define them, or `%agent tool --remove NAME`.``"""
    return f"Kernel tools not defined yet: {', '.join(names)} — run the cells that define them, or `%agent tool --remove NAME`."


# ---------------------------------------------------------------------------
# Answers as values (%%agent --into NAME [--schema SPEC])
# ---------------------------------------------------------------------------


@dataclass
class AnswerFormat:
    """How a ``%%agent --into`` turn's answer becomes a value.

    Attributes
    ----------
    schema
        The JSON schema the answer must fit (None: the answer's text is the value).
    model
        A pydantic model class that validates the structured output into an instance, or None.
    """

    schema: dict[str, Any] | None = None
    model: Any = None

    @property
    def output_format(self) -> dict[str, Any] | None:
        """``AgentOptions.output_format`` for the turn."""
        return None if self.schema is None else {"type": "json_schema", "schema": self.schema}


def answer_format(spec: str | None, ns: Mapping[str, Any], cwd: Path) -> AnswerFormat:
    """Resolve ``--schema SPEC``: a kernel variable holding a JSON-schema dict or a pydantic model
    class, or the path of a JSON file holding a schema.

    Raises
    ------
    UsageError
        When SPEC is none of these, or the file is not a JSON object.
    """
    if spec is None:
        return AnswerFormat()
    if spec.isidentifier() and spec in ns:
        value = ns[spec]
        if isinstance(value, dict):
            return AnswerFormat(dict(value))
        if _is_pydantic(value):
            return AnswerFormat(dict(value.model_json_schema()), value)
        raise UsageError(f"--schema {spec}: the variable holds {_type_name(value)}; give a JSON-schema dict, a pydantic model class, or a .json file.")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if not path.is_file():
        raise UsageError(f"--schema {spec}: no kernel variable or JSON file by that name; define a schema dict (or pydantic model) first.")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"--schema {spec}: cannot read it as JSON ({e}); fix the file or give a schema dict.") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {spec}: the file holds a JSON {type(schema).__name__}, not a schema object.")
    return AnswerFormat(schema)


def answer_value(fmt: AnswerFormat, result: ResultMessage) -> Any:
    """The value ``--into`` stores for a successful turn's result.

    Raises
    ------
    AnswerError
        With a schema: no structured output, or the pydantic model refused it.
    """
    if fmt.schema is None:
        return result.result or ""
    data = getattr(result, "structured_output", None)
    if data is None:
        raise AnswerError("The answer has no structured output fitting the schema")
    if fmt.model is not None:
        try:
            return fmt.model.model_validate(data)
        except Exception as e:  # pydantic's ValidationError
            raise AnswerError(f"{fmt.model.__name__} refused the answer: {' '.join(str(e).splitlines()[:3])}") from None
    return data
