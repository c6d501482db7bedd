"""Jupyter notebooks for the agent: how ``Read`` shows them, and ``NotebookEdit``.

Notebooks are parsed with nbformat without validating (``nbformat.reads``
validates in place and repairs duplicate or missing cell ids, which would
change ids the agent and the checkpoints refer to). Edits are computed on a
deep copy by the pure function :func:`apply_cell_edit`, checked with
``nbformat.validate`` on another copy, and written atomically; cell ids are
never regenerated.

Cells are addressed by their nbformat 4.5 id. Notebooks older than 4.5 have
no ids; their cells are shown and addressed as ``cell-0``, ``cell-1``, … by
position, and new cells inserted into them get no id either.
"""

from __future__ import annotations

import base64
import binascii
import copy
import html
import json
import os
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import ToolError
from .._lazy import lazy_import
from .base import CellEdit, Tool, ToolContext, ToolResult, require_str
from .files import (
    MAX_LINE_CHARS,
    atomic_write,
    image_info,
    require_unchanged_since_read,
    unified_diff,
)

# nbformat pulls in jsonschema (over a second to import where Jupyter is installed);
# load it on the first notebook the agent touches, not when the tool list is built.
nbformat: Any = lazy_import("nbformat", ("reader", "v4", "v4.nbjson"))

__all__ = [
    "NotebookEditTool",
    "NotebookFormatError",
    "apply_cell_edit",
    "cell_display_id",
    "cell_index_by_id",
    "edit_provenance",
    "notebook_validation_error",
    "parse_notebook",
    "render_notebook",
    "serialize_notebook",
]

#: Characters of rendered notebook one Read returns before it stops at a cell boundary.
MAX_RENDER_CHARS = 100_000
#: Characters shown of one output's text (head and tail are kept).
MAX_OUTPUT_CHARS = 3000
#: Characters shown of one cell's source.
MAX_SOURCE_CHARS = 50_000
#: Traceback lines shown for an error output.
MAX_TRACEBACK_LINES = 15

_PSEUDO_ID = re.compile(r"cell-(\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


# nbformat has no type hints; calls through Any keep mypy --strict quiet without ignores.
_nbf: Any = nbformat


class NotebookFormatError(ToolError):
    """The data is not a notebook nbformat can read."""


# --------------------------------------------------------------------------- parsing and writing


def parse_notebook(data: bytes | str) -> Any:
    """Parse notebook JSON into an nbformat v4 ``NotebookNode`` without validating or repairing it.

    Older major versions are converted to v4.

    Raises
    ------
    NotebookFormatError
        The data is not JSON, or not a notebook nbformat can read.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise NotebookFormatError(f"The notebook is not valid UTF-8 ({e.reason}).") from None
    try:
        with warnings.catch_warnings():
            # Upgrading old notebooks warns about missing ids; the caller decides what to do.
            warnings.simplefilter("ignore")
            nb = _nbf.reader.reads(data)
            if nb.get("nbformat") != 4:
                nb = _nbf.convert(nb, 4)
                # The upgrade makes a v4.5 notebook with new random cell ids, different at every
                # read: the agent could never address a cell. Keep it v4.4, cells addressed by position.
                nb["nbformat_minor"] = min(nb.get("nbformat_minor", 4), 4)
                for cell in nb.get("cells") or []:
                    if isinstance(cell, dict):
                        cell.pop("id", None)
    except (
        Exception
    ) as e:  # nbformat raises ValueError, KeyError, AttributeError, ... on malformed input
        message = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise NotebookFormatError(f"The file is not a valid Jupyter notebook: {message}") from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise NotebookFormatError(
            "The file is not a valid Jupyter notebook: `cells` is not a list of cells."
        )
    return nb


def serialize_notebook(nb: Mapping[str, Any]) -> bytes:
    """The notebook as Jupyter writes it (sorted keys, one-space indent, trailing newline), without validating."""
    try:
        text: str = _nbf.v4.nbjson.writes(_nbf.from_dict(copy.deepcopy(dict(nb))))
    except Exception as e:  # malformed cells make nbformat's transient-field stripping fail
        raise ToolError(f"The notebook cannot be written: {e}") from None
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def notebook_validation_error(nb: Mapping[str, Any]) -> str | None:
    """Why ``nb`` is not a valid notebook (one line), or None when it is.

    Validates a deep copy: ``nbformat.validate`` repairs some problems in
    place, and duplicate ids are reported instead of repaired.
    """
    seen: set[str] = set()
    for cell in nb.get("cells") or []:
        cell_id = cell.get("id") if isinstance(cell, dict) else None
        if isinstance(cell_id, str):
            if cell_id in seen:
                return f"duplicate cell id {cell_id!r}"
            seen.add(cell_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _nbf.validate(copy.deepcopy(dict(nb)))
    except _nbf.ValidationError as e:
        return str(getattr(e, "message", e)).splitlines()[0][:300]
    except Exception as e:  # shapes the validator does not expect at all
        return f"{type(e).__name__}: {e}"[:300]
    return None


# --------------------------------------------------------------------------- cell ids


def _has_real_id(cell: Mapping[str, Any]) -> bool:
    cell_id = cell.get("id")
    return isinstance(cell_id, str) and cell_id != ""


def cell_display_id(cell: Mapping[str, Any], index: int) -> str:
    """The id the agent sees for a cell: its nbformat id, or ``cell-<index>`` when it has none."""
    cell_id = cell.get("id")
    return cell_id if isinstance(cell_id, str) and cell_id else f"cell-{index}"


def cell_index_by_id(nb: Mapping[str, Any], cell_id: str) -> int | None:
    """Index of the cell with this id, or None.

    ``cell-<n>`` addresses the cell at position n when that cell has no id of
    its own (notebooks older than nbformat 4.5).
    """
    cells = nb.get("cells") or []
    for i, cell in enumerate(cells):
        if cell.get("id") == cell_id:
            return i
    m = _PSEUDO_ID.fullmatch(cell_id)
    if m:
        i = int(m[1])
        if i < len(cells) and not _has_real_id(cells[i]):
            return i
    return None


def _uses_ids(nb: Mapping[str, Any]) -> bool:
    minor = nb.get("nbformat_minor", 0)
    return nb.get("nbformat") == 4 and isinstance(minor, int) and minor >= 5


def _plain(cell: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(cell))
    return result


# --------------------------------------------------------------------------- the edit itself

_EDIT_MODES = ("replace", "insert", "delete")
_CELL_TYPES = ("code", "markdown")


def _replaced_cell(old: Mapping[str, Any], source: str, cell_type: str | None) -> Any:
    new = _nbf.from_dict(copy.deepcopy(dict(old)))
    new_type = cell_type or old.get("cell_type") or "code"
    new["cell_type"] = new_type
    new["source"] = source
    if new_type == "code":
        new["outputs"] = []
        new["execution_count"] = None
        new.pop("attachments", None)  # code cells cannot have attachments
    else:
        new.pop("outputs", None)
        new.pop("execution_count", None)
        attachments = new.get("attachments")
        if new_type == "markdown" and isinstance(attachments, dict):
            # As JupyterLab does when it saves a markdown cell: attachments its source no
            # longer names are dropped, so the file on disk and the open notebook agree.
            kept = {k: v for k, v in attachments.items() if k in source}
            if kept:
                new["attachments"] = kept
            else:
                del new["attachments"]
    if not isinstance(new.get("metadata"), dict):
        new["metadata"] = _nbf.NotebookNode()
    return new


def _new_cell(nb: Mapping[str, Any], cell_type: str, source: str) -> Any:
    factory = _nbf.v4.new_code_cell if cell_type == "code" else _nbf.v4.new_markdown_cell
    cell = factory(source=source)
    if not _uses_ids(nb):
        del cell["id"]  # not allowed before nbformat 4.5; keep position addressing
        return cell
    taken = {c.get("id") for c in nb.get("cells") or []}
    while cell["id"] in taken:
        cell["id"] = factory()["id"]
    return cell


def _mark(cell: Any, provenance: Mapping[str, Any] | None, op: str) -> None:
    if provenance is not None:
        # The cell's metadata is its own copy here (_replaced_cell and _new_cell make new nodes).
        cell["metadata"] = _nbf.from_dict({**dict(cell.get("metadata") or {}), "agent_magic": {**provenance, "op": op}})


def edit_provenance(ctx: ToolContext) -> dict[str, Any] | None:
    """Who makes an edit in this context: session, turn and checkpoint; None outside a checkpointed turn.

    The checkpoint is the recorder's current turn (a :class:`~agent_magic._checkpoints.CheckpointLog`);
    a recorder that keeps no checkpoints records no provenance.
    """
    checkpoint_id = getattr(ctx.recorder, "current", None)
    if not isinstance(checkpoint_id, str) or not checkpoint_id or not ctx.session_id:
        return None
    turn = None
    listing = getattr(ctx.recorder, "checkpoints", None)
    if callable(listing):
        turn = next((c.turn for c in listing() if c.checkpoint_id == checkpoint_id), None)
    return {"session_id": ctx.session_id, "turn": turn, "checkpoint_id": checkpoint_id}


def apply_cell_edit(
    nb: Mapping[str, Any],
    edit_mode: str,
    cell_id: str | None,
    new_source: str,
    cell_type: str | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[Any, CellEdit]:
    """Compute one NotebookEdit on a copy of ``nb``; return the edited notebook and the edit.

    ``nb`` is not modified. ``replace`` changes the source of the cell
    ``cell_id`` (clearing a code cell's outputs and execution count, and
    converting the cell when ``cell_type`` differs); ``insert`` adds a new cell
    of ``cell_type`` after ``cell_id`` (at the start when ``cell_id`` is None);
    ``delete`` removes the cell. Untouched cells are left exactly as they were.

    With ``provenance`` (``session_id``, ``turn``, ``checkpoint_id``), an inserted
    or replaced cell records who made it in ``metadata["agent_magic"]``, with the
    ``op``: the JupyterLab extension shows it as a badge, and it is saved with
    the notebook.

    Returns
    -------
    (new_nb, edit)
        ``new_nb`` is an nbformat ``NotebookNode``; ``edit`` describes the change
        with plain-dict copies of the cell before and after.

    Raises
    ------
    ToolError
        Unknown mode, cell type or cell id, or a missing ``cell_type`` for an insert.
    """
    if edit_mode not in _EDIT_MODES:
        raise ToolError(f"edit_mode must be one of {', '.join(_EDIT_MODES)}; got {edit_mode!r}.")
    if cell_type is not None and cell_type not in _CELL_TYPES:
        raise ToolError(f"cell_type must be 'code' or 'markdown'; got {cell_type!r}.")
    if not isinstance(new_source, str):
        raise ToolError("new_source must be a string.")
    new_nb = _nbf.from_dict(copy.deepcopy(dict(nb)))
    cells = new_nb.get("cells")
    if not isinstance(cells, list):
        raise ToolError("The notebook has no list of cells.")

    def prev_id(index: int) -> str | None:
        return cell_display_id(cells[index - 1], index - 1) if index > 0 else None

    def find(cid: str | None) -> int:
        if cid is None:
            raise ToolError(f"cell_id is required when edit_mode is {edit_mode}.")
        index = cell_index_by_id(new_nb, cid)
        if index is None:
            raise ToolError(
                f"Cell {cid!r} was not found in the notebook. Read the notebook to see its cell ids."
            )
        return index

    if edit_mode == "insert":
        if cell_type is None:
            raise ToolError(
                "cell_type ('code' or 'markdown') is required when edit_mode is insert."
            )
        index = 0 if cell_id is None else find(cell_id) + 1
        cell = _new_cell(new_nb, cell_type, new_source)
        _mark(cell, provenance, "insert")
        cells.insert(index, cell)
        edit = CellEdit(
            "insert", cell_display_id(cell, index), None, _plain(cell), index, prev_id(index)
        )
        return new_nb, edit

    index = find(cell_id)
    old = cells[index]
    shown_id = cell_display_id(old, index)
    if edit_mode == "delete":
        del cells[index]
        return new_nb, CellEdit("delete", shown_id, _plain(old), None, index, prev_id(index))
    cells[index] = _replaced_cell(old, new_source, cell_type)
    _mark(cells[index], provenance, "replace")
    edit = CellEdit("replace", shown_id, _plain(old), _plain(cells[index]), index, prev_id(index))
    return new_nb, edit


# --------------------------------------------------------------------------- rendering


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def _cap(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    lines = [
        line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "… [line truncated]"
        for line in text.split("\n")
    ]
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n… [{len(text) - head - tail} characters cut] …\n{text[-tail:]}"


def _strip_ansi(text: str) -> str:
    """Text without ANSI escape sequences (colors, cursor moves)."""
    return _ANSI.sub("", text)


def _collapse_carriage_returns(text: str) -> str:
    """What a terminal would show of progress bars: each line's text after its last carriage return."""
    if "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)


def _b64_image_info(mime: str, value: Any) -> tuple[int | None, int | None]:
    encoded = _text(value)
    # JPEG size markers may sit after EXIF data anywhere in the header; PNG/GIF/WebP sizes are near the start.
    chunk = re.sub(r"\s+", "", encoded if mime == "image/jpeg" else encoded[:256])
    try:
        raw = base64.b64decode(chunk[: len(chunk) // 4 * 4])
    except (binascii.Error, ValueError):
        return None, None
    info = image_info(raw)
    return (info[1], info[2]) if info is not None else (None, None)


def _render_bundle(data: Mapping[str, Any]) -> list[str]:
    parts: list[str] = []
    if "text/plain" in data:
        parts.append(_cap(_strip_ansi(_text(data["text/plain"]))))
    elif "text/markdown" in data:
        parts.append(_cap(_text(data["text/markdown"])))
    for mime, value in data.items():
        if mime == "text/plain" or (mime == "text/markdown" and "text/plain" not in data):
            continue
        if mime in _IMAGE_MIMES:
            w, h = _b64_image_info(mime, value)
            parts.append(f"[{mime} {w}x{h}]" if w is not None else f"[{mime}]")
        elif isinstance(value, (str, list)):
            parts.append(f"[{mime}, {len(_text(value))} chars]")
        else:
            parts.append(f"[{mime}, {len(json.dumps(value, default=str))} chars]")
    return parts


def _merged_outputs(outputs: list[Any]) -> list[Mapping[str, Any]]:
    merged: list[Mapping[str, Any]] = []
    for out in outputs:
        if not isinstance(out, dict):
            continue
        prev = merged[-1] if merged else None
        if (
            out.get("output_type") == "stream"
            and prev is not None
            and prev.get("output_type") == "stream"
            and prev.get("name") == out.get("name")
        ):
            merged[-1] = {**prev, "text": _text(prev.get("text")) + _text(out.get("text"))}
        else:
            merged.append(out)
    return merged


def _render_output(out: Mapping[str, Any]) -> str:
    kind = out.get("output_type")
    attr = html.escape(str(kind), quote=True)
    if kind == "stream":
        name = html.escape(str(out.get("name", "stdout")), quote=True)
        text = _collapse_carriage_returns(_strip_ansi(_text(out.get("text"))))
        return f'<output type="stream" name="{name}">\n{_cap(text.rstrip(chr(10)))}\n</output>'
    if kind == "error":
        head = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
        tb_lines = _strip_ansi(
            "\n".join(t for t in out.get("traceback") or [] if isinstance(t, str))
        ).split("\n")
        tb_lines = [line for line in tb_lines if line.strip()]
        if len(tb_lines) > MAX_TRACEBACK_LINES:
            cut = len(tb_lines) - MAX_TRACEBACK_LINES
            tb_lines = [f"… ({cut} earlier traceback lines cut)", *tb_lines[-MAX_TRACEBACK_LINES:]]
        body = head + ("\n" + _cap("\n".join(tb_lines), 2000) if tb_lines else "")
        return f'<output type="error">\n{body}\n</output>'
    if kind in ("execute_result", "display_data"):
        data = out.get("data")
        parts = _render_bundle(data) if isinstance(data, dict) else []
        return f'<output type="{attr}">\n' + "\n".join(parts or ["(empty)"]) + "\n</output>"
    return f'<output type="{attr}"/>'


def _render_cell(cell: Mapping[str, Any], index: int) -> str:
    cell_type = cell.get("cell_type", "code")
    attrs = f'id="{html.escape(cell_display_id(cell, index), quote=True)}" cell_type="{html.escape(str(cell_type), quote=True)}"'
    if cell_type == "code" and isinstance(cell.get("execution_count"), int):
        attrs += f' execution_count="{cell["execution_count"]}"'
    lines = [f"<cell {attrs}>"]
    source = _text(cell.get("source"))
    if source:
        lines.append(_cap(source, limit=MAX_SOURCE_CHARS))
    attachments = cell.get("attachments")
    if isinstance(attachments, dict) and attachments:
        described = []
        for name, bundle in attachments.items():
            mimes = ", ".join(bundle) if isinstance(bundle, dict) else "?"
            described.append(f"{name} ({mimes})")
        lines.append(f"[attachments: {'; '.join(described)}]")
    outputs = cell.get("outputs")
    if isinstance(outputs, list):
        lines.extend(_render_output(out) for out in _merged_outputs(outputs))
    lines.append("</cell>")
    return "\n".join(lines)


def render_notebook(
    nb: Mapping[str, Any], offset: int | None = None, limit: int | None = None
) -> str:
    """Render a notebook for the model, cell by cell.

    Each cell is shown as ``<cell id="..." cell_type="..." execution_count="...">``
    followed by its source and a compact view of its outputs: stream and
    ``text/plain`` text (capped), errors as ``ename: evalue`` and the end of the
    traceback without ANSI codes, images as ``[image/png 640x480]``, other data as
    ``[mime/type, N chars]``.

    Parameters
    ----------
    nb
        An nbformat v4 notebook dict (not modified).
    offset
        1-based number of the first cell to show.
    limit
        How many cells to show at most (the output also stops at
        ``MAX_RENDER_CHARS`` characters, at a cell boundary).
    """
    cells = nb.get("cells") or []
    total = len(cells)
    meta = _mapping(nb.get("metadata"))
    kernelspec = _mapping(meta.get("kernelspec"))
    kernel = kernelspec.get("display_name") or kernelspec.get("name")
    language = _mapping(meta.get("language_info")).get("name") or kernelspec.get("language")
    header = f"Jupyter notebook: {total} cell{'' if total == 1 else 's'}, nbformat {nb.get('nbformat')}.{nb.get('nbformat_minor')}"
    if kernel:
        header += f", kernel {kernel}"
    if language:
        header += f", language {language}"
    header += "."
    if cells and not any(_has_real_id(c) for c in cells):
        header += " Cells have no ids (nbformat < 4.5); they are addressed by position as cell-0, cell-1, …"
    if total == 0:
        return header + "\n(The notebook has no cells.)"
    start = max(offset or 1, 1) - 1
    if start >= total:
        return f"{header}\n<The notebook has {total} cells; offset {start + 1} is past its end.>"
    end = total if limit is None else min(total, start + limit)
    parts = [header]
    used = len(header)
    shown_end = start
    for i in range(start, end):
        rendered = _render_cell(cells[i], i)
        if i > start and used + len(rendered) > MAX_RENDER_CHARS:
            break
        parts.append(rendered)
        used += len(rendered) + 1
        shown_end = i + 1
    if shown_end < total:
        parts.append(f"… {total - shown_end} more cells; use offset={shown_end + 1} to read on.")
    return "\n".join(parts)


# --------------------------------------------------------------------------- the tool


class NotebookEditTool(Tool):
    """Replace, insert or delete one cell of a Jupyter notebook."""

    name = "NotebookEdit"
    kind = "edit"
    description = (
        "Completely replaces the contents of a specific cell in a Jupyter notebook (.ipynb file) with new source. "
        "Jupyter notebooks are interactive documents that combine code, text, and visualizations, commonly used "
        "for data analysis and scientific computing. The notebook_path parameter must be an absolute path, not a "
        'relative path. The cell_id is the id shown by Read in <cell id="..."> (cells of notebooks without ids '
        "are addressed as cell-0, cell-1, … by position). Use edit_mode=insert to add a new cell after the cell "
        "with cell_id (or at the beginning of the notebook when cell_id is omitted); cell_type is required for "
        "inserts. Use edit_mode=delete to delete the cell with cell_id. Replacing a code cell clears its outputs. "
        "You must Read the notebook before editing it. If the notebook is open in JupyterLab, the edit is applied "
        "to the open notebook."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "notebook_path": {
                "type": "string",
                "description": "The absolute path to the Jupyter notebook file to edit (must be absolute, not relative)",
            },
            "cell_id": {
                "type": "string",
                "description": "The ID of the cell to edit. When inserting a new cell, the new cell will be inserted "
                "after the cell with this ID, or at the beginning if not specified.",
            },
            "new_source": {"type": "string", "description": "The new source for the cell"},
            "cell_type": {
                "type": "string",
                "enum": ["code", "markdown"],
                "description": "The type of the cell (code or markdown). If not specified, it defaults to the "
                "current cell type. If using edit_mode=insert, this is required.",
            },
            "edit_mode": {
                "type": "string",
                "enum": ["replace", "insert", "delete"],
                "description": "The type of edit to make (replace, insert, delete). Defaults to replace.",
            },
        },
        "required": ["notebook_path", "new_source"],
        "additionalProperties": False,
    }

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path = ctx.resolve(require_str(input, "notebook_path"))
        if path.suffix.lower() != ".ipynb":
            raise ToolError(
                f"{path} is not a Jupyter notebook (.ipynb). Use Edit or Write for other files."
            )
        edit_mode = input.get("edit_mode") or "replace"
        if edit_mode not in _EDIT_MODES:
            raise ToolError(f"edit_mode must be one of replace, insert, delete; got {edit_mode!r}.")
        cell_id = input.get("cell_id")
        if cell_id == "":
            cell_id = None
        if cell_id is not None and not isinstance(cell_id, str):
            raise ToolError("cell_id must be a string.")
        cell_type = input.get("cell_type")
        if cell_type is not None and cell_type not in _CELL_TYPES:
            raise ToolError(f"cell_type must be 'code' or 'markdown'; got {cell_type!r}.")
        if edit_mode == "delete" and input.get("new_source") is None:
            new_source = ""
        else:
            new_source = require_str(input, "new_source", allow_empty=True)
        provenance = edit_provenance(ctx)

        bridge = ctx.notebook_bridge
        if bridge is not None and bridge.is_open(path):
            if str(path) not in ctx.read_files:
                raise ToolError(
                    f"Notebook has not been read yet. Read it first before editing it: {path}"
                )
            open_nb = bridge.read(path)
            if open_nb is not None:
                try:
                    nb = parse_notebook(json.dumps(open_nb))
                except (TypeError, ValueError):
                    raise ToolError(
                        "The open notebook could not be read from the editor."
                    ) from None
                new_nb, edit, note = _compute(nb, edit_mode, cell_id, new_source, cell_type, provenance)
                ctx.recorder.before_cell_edit(
                    path, serialize_notebook(nb), edit, serialize_notebook(new_nb)
                )
                if bridge.apply(path, edit):
                    return _result(path, edit, new_nb, note, applied_to="editor")
            # The editor could not take the edit: change the file instead.

        st = _stat_regular(path)
        require_unchanged_since_read(ctx, path, st)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
        nb = parse_notebook(raw)
        new_nb, edit, note = _compute(nb, edit_mode, cell_id, new_source, cell_type, provenance)
        new_bytes = serialize_notebook(new_nb)
        ctx.recorder.before_cell_edit(path, raw, edit, new_bytes)
        new_st = atomic_write(path, new_bytes, mode=stat.S_IMODE(st.st_mode))
        ctx.read_files[str(path)] = new_st.st_mtime_ns
        return _result(path, edit, new_nb, note, applied_to="file")


def _stat_regular(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ToolError(
            f"Notebook does not exist: {os.fspath(path)}. Create it with Write first."
        ) from None
    except OSError as e:
        raise ToolError(f"Cannot access {os.fspath(path)}: {e.strerror or e}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{os.fspath(path)} is not a regular file.")
    return st


def _compute(
    nb: Any,
    edit_mode: str,
    cell_id: str | None,
    new_source: str,
    cell_type: str | None,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[Any, CellEdit, str | None]:
    new_nb, edit = apply_cell_edit(nb, edit_mode, cell_id, new_source, cell_type, provenance=provenance)
    problem = notebook_validation_error(new_nb)
    note = None
    if problem is not None:
        before = notebook_validation_error(nb)
        if before is None:
            raise ToolError(
                f"The edit would make the notebook invalid ({problem}); nothing was changed."
            )
        # Already invalid before: refusing would leave the agent unable to fix it.
        note = f"Note: the notebook was already not valid nbformat before this edit ({before})."
    return new_nb, edit, note


def _result(
    path: os.PathLike[str], edit: CellEdit, new_nb: Any, note: str | None, *, applied_to: str
) -> ToolResult:
    # A live edit is not saved: the person saves (or autosave does), so the file lags behind.
    where = (
        "the open notebook in the editor (not saved to disk yet)"
        if applied_to == "editor"
        else os.fspath(path)
    )
    cell = edit.after_cell if edit.after_cell is not None else edit.before_cell
    cell_type = str((cell or {}).get("cell_type", "code"))
    before_src = _text((edit.before_cell or {}).get("source"))
    after_src = _text((edit.after_cell or {}).get("source"))
    diff = unified_diff(
        before_src, after_src, f"{os.fspath(path)}#{edit.cell_id}", new_file=edit.op == "insert"
    )
    short = edit.cell_id[:12]
    positional = not _uses_ids(new_nb) or not _has_real_id(cell or {})
    if edit.op == "replace":
        message = f"Updated cell {edit.cell_id} ({cell_type}) in {where}."
        if cell_type == "code":
            message += " Its outputs were cleared; run the cell to produce new ones."
        summary = f"replaced cell {short}"
    elif edit.op == "insert":
        after = f"after cell {edit.prev_cell_id}" if edit.prev_cell_id else "at the start"
        message = f"Inserted a new {cell_type} cell {edit.cell_id} {after} in {where}."
        summary = f"inserted {cell_type} cell {short}"
    else:
        message = f"Deleted cell {edit.cell_id} from {where}."
        summary = f"deleted cell {short}"
    if positional and edit.op != "replace":
        message += (
            " Cells here are addressed by position, so the cell-N ids of later cells have shifted."
        )
    if note:
        message += "\n" + note
    return ToolResult(
        message,
        summary=summary,
        data={
            "cell_id": edit.cell_id,
            "edit_mode": edit.op,
            "cell_type": cell_type,
            "index": edit.index,
            "diff": diff,
            "applied_to": applied_to,
        },
    )
