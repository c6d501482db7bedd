"""In-process custom tools: the Agent SDK's ``@tool`` and ``create_sdk_mcp_server``.

Same names, signatures and behaviour as ``claude_agent_sdk``'s, so code written
for the SDK's custom tools runs unchanged apart from the import::

    from agent_magic.tools.sdk_mcp import create_sdk_mcp_server, tool

    @tool("greet", "Greet a user", {"name": str})
    async def greet_user(args):
        return {"content": [{"type": "text", "text": f"Hello, {args['name']}!"}]}

    server = create_sdk_mcp_server(name="my-tools", version="1.0.0", tools=[greet_user])
    options = AgentOptions(mcp_servers={"tools": server}, allowed_tools=["mcp__tools__greet"])

The server is a real ``mcp.server.lowlevel.Server``; :class:`~agent_magic.tools.mcp.McpServers`
connects to it in-process with ``mcp.Client(server)``, as to any other MCP server.
Arguments are validated against the tool's schema, and unknown tools, invalid
arguments and exceptions raised by a handler all come back to the model as error
results, never as protocol errors.
"""

from __future__ import annotations

import logging
import types as builtin_types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    TypedDict,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import jsonschema
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    Tool,
    ToolAnnotations,
)

__all__ = ["McpSdkServerConfig", "SdkMcpTool", "create_sdk_mcp_server", "tool"]

log = logging.getLogger("agent_magic")


T = TypeVar("T")


class McpSdkServerConfig(TypedDict):
    """An in-process MCP server, as ``AgentOptions.mcp_servers`` takes it (the SDK's shape)."""

    type: Literal["sdk"]
    name: str
    instance: Server[Any]


@dataclass
class SdkMcpTool(Generic[T]):
    """One custom tool: what :func:`tool` makes and :func:`create_sdk_mcp_server` serves.

    Parameters
    ----------
    name
        The tool's name on the server (the model sees ``mcp__<server key>__<name>``).
    description
        What the tool does, for the model.
    input_schema
        ``{"param": type}``, a TypedDict class, or a full JSON schema dict.
    handler
        ``async def handler(args: dict) -> {"content": [...], "is_error": bool}``.
    annotations
        MCP tool annotations (``readOnlyHint`` ...), advertised with the tool.
    """

    name: str
    description: str
    input_schema: type[T] | dict[str, Any]
    handler: Callable[[T], Awaitable[dict[str, Any]]]
    annotations: ToolAnnotations | None = None


def tool(
    name: str,
    description: str,
    input_schema: type | dict[str, Any],
    annotations: ToolAnnotations | None = None,
) -> Callable[[Callable[[Any], Awaitable[dict[str, Any]]]], SdkMcpTool[Any]]:
    """Define a custom tool (a decorator), as the Agent SDK's ``@tool`` does.

    Parameters
    ----------
    name
        The tool's name, unique on its server.
    description
        What the tool does; the model reads it to decide when to call the tool.
    input_schema
        The tool's parameters: a dict of names to Python types (``{"a": float}``;
        ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``, ``Optional``,
        ``Annotated[type, "description"]``), a ``TypedDict`` class, or a JSON
        schema dict (one with ``"type"`` and ``"properties"``), used as is.
    annotations
        Optional ``mcp.types.ToolAnnotations`` hints.

    Returns
    -------
    callable
        A decorator for an ``async`` function taking the arguments dict and
        returning ``{"content": [{"type": "text", "text": ...} | {"type": "image",
        "data": ..., "mimeType": ...}], "is_error": bool}``; it returns an
        :class:`SdkMcpTool` for :func:`create_sdk_mcp_server`.
    """

    def decorator(handler: Callable[[Any], Awaitable[dict[str, Any]]]) -> SdkMcpTool[Any]:
        return SdkMcpTool(
            name=name, description=description, input_schema=input_schema, handler=handler, annotations=annotations
        )

    return decorator


def _python_type_to_json_schema(py_type: Any) -> dict[str, Any]:
    """A Python type annotation as JSON schema (the SDK's mapping)."""
    origin = get_origin(py_type)
    if getattr(origin, "_name", None) in ("NotRequired", "Required", "ReadOnly"):
        return _python_type_to_json_schema(get_args(py_type)[0])
    if origin is Annotated:
        args = get_args(py_type)
        schema = _python_type_to_json_schema(args[0])
        for meta in args[1:]:
            if isinstance(meta, str):
                schema["description"] = meta
                break
        return schema
    if py_type is str:
        return {"type": "string"}
    if py_type is int:
        return {"type": "integer"}
    if py_type is float:
        return {"type": "number"}
    if py_type is bool:
        return {"type": "boolean"}
    if origin is Union or isinstance(py_type, builtin_types.UnionType):
        non_none = [a for a in get_args(py_type) if a is not type(None)]
        if len(non_none) == 1:
            return _python_type_to_json_schema(non_none[0])
        return {"anyOf": [_python_type_to_json_schema(a) for a in non_none]}
    if origin is list:
        item_args = get_args(py_type)
        if item_args:
            return {"type": "array", "items": _python_type_to_json_schema(item_args[0])}
        return {"type": "array"}
    if origin is dict or py_type is dict:
        return {"type": "object"}
    if py_type is list:
        return {"type": "array"}
    if is_typeddict(py_type):
        return _typeddict_to_json_schema(py_type)
    return {"type": "string"}


def _typeddict_to_json_schema(td_class: type) -> dict[str, Any]:
    hints = get_type_hints(td_class, include_extras=True)
    properties = {field: _python_type_to_json_schema(t) for field, t in hints.items()}
    required = getattr(td_class, "__required_keys__", set(properties))
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(required)
    return schema


def _build_input_schema(tool_def: SdkMcpTool[Any]) -> dict[str, Any]:
    """The JSON schema sent for a tool's declared ``input_schema`` (the SDK's rules)."""
    declared = tool_def.input_schema
    if isinstance(declared, dict):
        if "type" in declared and "properties" in declared and isinstance(declared["type"], str):
            return declared
        properties = {param: _python_type_to_json_schema(t) for param, t in declared.items()}
        return {"type": "object", "properties": properties, "required": list(properties)}
    if is_typeddict(declared):
        return _typeddict_to_json_schema(declared)
    return {"type": "object", "properties": {}}


def _error_result(message: str) -> CallToolResult:
    return CallToolResult.model_validate({"content": [{"type": "text", "text": message}], "isError": True})


def _convert_content(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A handler's content items as MCP content blocks (text and images; resources as text)."""
    content: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "text":
            content.append({"type": "text", "text": item["text"]})
        elif kind == "image":
            content.append({"type": "image", "data": item["data"], "mimeType": item.get("mimeType") or item["mime_type"]})
        elif kind == "resource_link":
            parts = [str(p) for p in (item.get("name"), item.get("uri"), item.get("description")) if p]
            content.append({"type": "text", "text": "\n".join(parts) if parts else "Resource link"})
        elif kind == "resource":
            resource = item.get("resource") or {}
            if "text" in resource:
                content.append({"type": "text", "text": resource["text"]})
            else:
                log.warning("A custom tool returned a binary resource, which cannot be shown as text; skipped.")
        else:
            log.warning("A custom tool returned content of type %r, which is not supported; skipped.", kind)
    return content


def create_sdk_mcp_server(
    name: str, version: str = "1.0.0", tools: list[SdkMcpTool[Any]] | None = None
) -> McpSdkServerConfig:
    """Serve custom tools from an in-process MCP server, as the Agent SDK's function does.

    Parameters
    ----------
    name
        The server's name (informational; the key in ``mcp_servers`` names its tools).
    version
        The server's version string.
    tools
        Tools made with :func:`tool`.

    Returns
    -------
    McpSdkServerConfig
        ``{"type": "sdk", "name": name, "instance": server}`` where ``server`` is an
        ``mcp.server.lowlevel.Server``, ready for ``AgentOptions(mcp_servers={key: ...})``.
    """
    tools = tools or []
    by_name = {t.name: t for t in tools}
    schemas = {t.name: _build_input_schema(t) for t in tools}
    wire_tools = []
    for t in tools:
        spec: dict[str, Any] = {"name": t.name, "description": t.description, "inputSchema": schemas[t.name]}
        if t.annotations is not None:
            spec["annotations"] = t.annotations
        max_size = getattr(t.annotations, "maxResultSizeChars", None)
        if max_size is not None:
            spec["_meta"] = {"anthropic/maxResultSizeChars": max_size}
        wire_tools.append(Tool.model_validate(spec))

    async def run_tool(tool_name: str, arguments: dict[str, Any]) -> CallToolResult:
        tool_def = by_name.get(tool_name)
        if tool_def is None:
            return _error_result(f"Tool '{tool_name}' not found")
        try:
            try:
                jsonschema.validate(instance=arguments, schema=schemas[tool_name])
            except jsonschema.ValidationError as e:
                return _error_result(f"Input validation error: {e.message}")
            result = await tool_def.handler(arguments)
            return CallToolResult.model_validate(
                {
                    "content": _convert_content(result.get("content", [])),
                    "isError": bool(result.get("is_error", result.get("isError", False))),
                }
            )
        except Exception as e:
            return _error_result(str(e) or type(e).__name__)

    async def on_list_tools(ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=wire_tools)

    async def on_call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        return await run_tool(params.name, params.arguments or {})

    server: Server[Any] = Server(name, version=version, on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    return McpSdkServerConfig(type="sdk", name=name, instance=server)
