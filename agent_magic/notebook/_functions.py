"""Notebook functions as tools (``%agent tool NAME``).

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
import inspect
import io
import keyword
import re
import sys
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from IPython.core.error import UsageError

from .. import _api
from .._errors import SessionError
from ..tools import BUILTIN_TOOL_NAMES
from ..tools.base import Tool, ToolContext, ToolResult
from ._function_schema import (
    _ANY,
    BadArgument,
    _convert,
    _json_default,
    _SchemaBuilder,
    _strip_annotated,
    _variable_class,
    parse_docstring,
    type_name,
)
from ._kernel_tools import (
    MAX_OUTPUT,
    MainThreadBridge,
    Snapshots,
    _cap,
    _safe_repr,
    run_agent_code,
    snapshot_then_run,
)

#: The bridge request kind that runs a registered function on the main thread.
CALL_KIND = "function"
#: Tool names a kernel function may not take: the built-in tools, the kernel tools and the subagent tool.
RESERVED_NAMES = frozenset((*BUILTIN_TOOL_NAMES, "Python", "Variables", "Agent"))
#: The Messages API's tool names, narrowed to Python identifiers.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_DESCRIPTION = 4000
_DF_ROWS = 60
_DF_COLS = 30


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

    def __init__(self, spec: FunctionSpec, registry: KernelFunctions) -> None:
        self.name = spec.name
        self.description = spec.description
        self.input_schema = spec.input_schema
        self.registry = registry
        self.bridge = registry.bridge

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        # As the Python tool's code: file changes checkpointed, the variables it can reach snapshotted.
        def local(turn: str) -> tuple[str, bool, dict[str, Any] | None]:
            return self.registry.call_here(self.name, dict(input), turn)

        text, is_error, changed, note = await run_agent_code(self.bridge, ctx, CALL_KIND, {"name": self.name, "input": dict(input)}, local)
        last = text.strip().splitlines()[-1][:120] if text.strip() else ""
        summary = f"error: {last}" if is_error else (last[:80] or "done")
        data: dict[str, Any] = {"changed_files": changed} if changed else {}
        return ToolResult((text or "(no output)") + note, is_error=is_error, summary=summary, data=data)

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
        raise UsageError(f"{name} is {type_name(fn) if not isinstance(fn, type) else 'a class'}, not a function: give the name of a `def` function.")
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

    def __init__(
        self, bridge: MainThreadBridge, namespace: Callable[[], dict[str, Any]], snapshots: Snapshots | None = None
    ) -> None:
        self.bridge = bridge
        self.namespace = namespace
        self.snapshots = snapshots
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
                out.append(KernelFunctionTool(spec, self))
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
        self.bridge.executing.set()
        try:
            reply(self.call_here(payload["name"], payload.get("input") or {}, str(payload.get("turn") or "")))
        finally:
            self.bridge.executing.clear()

    def call_here(self, name: str, input: dict[str, Any], turn: str) -> tuple[str, bool, dict[str, Any] | None]:
        """On the main thread: snapshot what the call can change, then call the function.

        What it can change: the globals the function (and the functions it calls) use, and the
        kernel variables its arguments name (a DataFrame parameter takes a variable's name).
        """
        ns = self.namespace()
        named = [v for v in input.values() if isinstance(v, str) and v.isidentifier() and v in ns]
        return snapshot_then_run(
            self.snapshots, f"{name}()", turn, named,
            lambda: call_function(name, input, ns), f"KeyboardInterrupt: {name} was interrupted.",
        )


def missing_functions_line(names: list[str]) -> str:
    """``Kernel tools not defined yet: a, b — run the cells that define them, or `%agent tool --remove NAME`.``"""
    return f"Kernel tools not defined yet: {', '.join(names)} — run the cells that define them, or `%agent tool --remove NAME`."
