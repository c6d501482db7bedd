"""Static displays for ``%agent`` subcommands: HTML for notebooks, plain text for terminals.

Interactive versions (sortable tables, sliders) come from the widgets module
when a front end can show widgets; these stay readable in saved notebooks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..checkpoints import CheckpointInfo, RewindResult
from ..checkpoints.variables.records import human_bytes
from ..store.transcript import SessionInfo, SessionMessage, prompt_text
from ._display import compaction_line


def _when(v: int | str | None) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return v
    return datetime.fromtimestamp(v / 1000).strftime("%Y-%m-%d %H:%M")


def _cost(v: float | None) -> str:
    return "unknown" if v is None else f"${v:.4f}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 turn``, ``2 turns``: counts as a person writes them."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _short(s: str, n: int = 70) -> str:
    one = " ".join(str(s).split())
    return one if len(one) <= n else one[: n - 1] + "…"


@dataclass
class Table:
    """A small table that renders as HTML and as aligned text."""

    headers: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""
    highlight: int | None = None

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in self.headers)
        body = []
        for i, r in enumerate(self.rows):
            style = " style='font-weight:bold'" if i == self.highlight else ""
            body.append(f"<tr{style}>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>")
        title = f"<p><b>{html.escape(self.title)}</b></p>" if self.title else ""
        note = f"<p><small>{html.escape(self.note)}</small></p>" if self.note else ""
        return f"{title}<table class='agent-magic-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"

    def __repr__(self) -> str:
        widths = [max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(self.headers)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)))
        for i, r in enumerate(self.rows):
            mark = "*" if i == self.highlight else " "
            lines.append(mark + " ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def sessions_table(rows: list[SessionInfo], *, current: str | None, scope: str | None) -> Table:
    table_rows = []
    highlight = None
    for i, r in enumerate(rows):
        if r.session_id == current:
            highlight = i
        table_rows.append(
            [r.session_id[:8], _short(r.summary, 60), _when(r.last_modified), str(r.num_turns), _cost(r.total_cost_usd),
             (r.parent_session_id or "")[:8], _short(r.scope, 50) if scope is None else ""]
        )
    headers = ["id", "session", "last active", "turns", "cost", "fork of", "scope" if scope is None else ""]
    if scope is not None:
        headers = headers[:-1]
        table_rows = [r[:-1] for r in table_rows]
    title = "Sessions of this notebook" if scope is not None else "All sessions"
    note = "Bold: this notebook's current session. `%agent resume ID` switches; `%agent sessions --all` lists every scope."
    if not rows:
        note = "No sessions yet: run a %%agent cell to start one." if scope else "No sessions yet."
    return Table(headers, table_rows, title, note, highlight)


def sessions_view(rows: list[SessionInfo], *, current: str | None, scope: str | None, widgets: Any = None) -> Any:
    if widgets is not None:
        view = widgets.session_browser(rows, current=current, scope=scope)
        if view is not None:
            return view
    return sessions_table(rows, current=current, scope=scope)


def checkpoints_table(session_id: str, cps: list[CheckpointInfo]) -> Table:
    rows = [
        [str(c.turn), c.checkpoint_id[:8], _when(c.timestamp), _short(c.prompt, 50), _short(", ".join(c.files), 60) or "-", str(len(c.cells)),
         _short(", ".join(c.variables), 40) or "-"]
        for c in cps
    ]
    note = "Rewind with `%agent rewind CHECKPOINT` (add --dry-run to preview)." if cps else "No checkpoints yet."
    headers = ["turn", "checkpoint", "time", "prompt", "files changed", "cells", "variables"]
    return Table(headers, rows, f"Checkpoints of {session_id[:8]}", note)


def checkpoints_view(session_id: str, cps: list[CheckpointInfo], *, widgets: Any = None, magics: Any = None) -> Any:
    if widgets is not None:
        view = widgets.checkpoint_slider(magics, session_id, cps)
        if view is not None:
            return view
    return checkpoints_table(session_id, cps)


def context_use(tokens: int | None, window: int | None) -> str:
    """``"9,120 of 200,000 tokens (5% of context)"``: what the next request carries, against the model's window."""
    from ._display import context_share

    if tokens is None:
        return "-"
    share = context_share(tokens, window)
    if share is None:
        return f"{tokens:,} tokens"
    assert window is not None
    return f"{tokens:,} of {window:,} tokens ({share})"


def info_view(info: SessionInfo, cps: list[CheckpointInfo]) -> Table:
    rows = [
        ["session", info.session_id],
        ["title", info.title or "-"],
        ["first prompt", _short(info.first_prompt or "-", 100)],
        ["turns", str(info.num_turns)],
        ["checkpoints", str(len(cps))],
        ["created", _when(info.created_at)],
        ["last active", _when(info.last_modified)],
        ["cost", _cost(info.total_cost_usd)],
        ["context", context_use(info.context_tokens, info.context_window)],
        ["model", info.model or "-"],
        ["cwd", info.cwd],
        ["scope", info.scope],
        ["fork of", info.parent_session_id or "-"],
        ["tag", info.tag or "-"],
    ]
    return Table(["", ""], rows, f"Session {info.session_id[:8]}")


@dataclass
class History:
    session_id: str
    messages: list[SessionMessage]

    def _items(self) -> list[tuple[str, str, str]]:
        out = []
        for m in self.messages:
            content = m.message.get("content")
            if m.is_compact_boundary:
                out.append(("compacted", m.uuid, compaction_line(m.message)))
            elif m.type == "user" and m.is_prompt:
                out.append(("you", m.uuid, prompt_text(m.message)))
            elif m.type == "assistant" and isinstance(content, list):
                for b in content:
                    if b.get("type") == "text" and b.get("text", "").strip():
                        out.append(("agent", m.uuid, b["text"]))
                    elif b.get("type") == "tool_use":
                        inp = b.get("input") or {}
                        target = next((str(inp[k]) for k in ("file_path", "notebook_path", "command", "pattern", "code") if k in inp), "")
                        out.append(("tool", m.uuid, f"{b.get('name')} {_short(target, 80)}"))
        return out

    def _repr_markdown_(self) -> str:
        parts = [f"**Conversation of session `{self.session_id[:8]}`**"]
        for who, uid, text in self._items():
            if who == "you":
                parts.append(f"---\n**you** <sub>`{uid[:8]}`</sub>\n\n{text}")
            elif who == "agent":
                parts.append(text)
            elif who == "compacted":
                parts.append(f"---\n<sub>{text} The model continued from a summary; everything above stays here.</sub>")
            else:
                parts.append(f"> *tool* `{text}`")
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return "\n".join(f"[{uid[:8]}] {who}: {text}" for who, uid, text in self._items())


def history_view(messages: list[SessionMessage], session_id: str) -> History:
    return History(session_id, messages)


def stale_cell_links(result: RewindResult, stale: list[str], *, here: str, since: int) -> list[dict[str, Any]]:
    """The cells to re-run after a rewind, as the front end marks and links them.

    Each has ``cell_id``, ``path`` (as the rewind names it), ``href`` (the notebook
    relative to ``here``, the notebook this kernel belongs to, with JupyterLab's
    ``#cell-id=`` fragment), ``index`` (the cell's position, -1 if unknown), ``label``
    ("cell 3") and ``since``: the kernel's execution count at the rewind; a run of the
    cell with a count at least this clears its marker.
    """
    import os
    from pathlib import Path

    import nbformat

    paths = {cid: path for path, cid in result.restored_cells}
    base = Path(here) if Path(here).is_dir() else Path(here).parent
    ids_of: dict[str, list[str]] = {}
    out = []
    for cid in stale:
        path = paths.get(cid, "")
        full = Path(path) if Path(path).is_absolute() else Path.cwd() / path
        if path and str(full) not in ids_of:
            try:
                nb = nbformat.read(full, as_version=4)  # type: ignore[no-untyped-call]
                ids_of[str(full)] = [str(c.get("id", "")) for c in nb.cells]
            except (OSError, ValueError):  # unreadable, or not JSON (NotJSONError is a ValueError)
                ids_of[str(full)] = []
        ids = ids_of.get(str(full), [])
        index = ids.index(cid) if cid in ids else -1
        rel = os.path.relpath(full, base) if path else ""
        out.append({
            "cell_id": cid,
            "path": path,
            "href": f"{rel}#cell-id={cid}" if rel else f"#cell-id={cid}",
            "index": index,
            "label": f"cell {index + 1}" if index >= 0 else f"cell {cid[:8]}",
            "since": since,
        })
    return out


@dataclass
class RewindView:
    result: RewindResult
    stale: list[str]
    links: list[dict[str, Any]] = field(default_factory=list)

    def _lines(self) -> list[str]:
        r = self.result
        lines = [("Preview: " if r.dry_run else "") + r.summary()]
        for ch in r.changes:
            lines.append(f"{ch.action}: {ch.path}" + (f" ({ch.note})" if ch.note else ""))
            for cc in ch.cells:
                lines.append(f"    cell {cc.cell_id}: {cc.action}")
        for d in r.dirs_removed:
            lines.append(f"remove folder: {d}")
        for d in r.dirs_created:
            lines.append(f"create folder: {d}")
        for c in r.conflicts:
            lines.append(f"CONFLICT {c.path}" + (f" cell {c.cell_id}" if c.cell_id else "") + f": {c.reason}")
        for u in r.unrestorable:
            lines.append(f"not restorable (no backup): {u}")
        lines.extend(variable_lines(r))
        if r.conflicts and not r.dry_run:
            lines.append("Conflicting files and cells were left alone; add --force to overwrite them.")
        if r.new_session_id:
            lines.append(f"Conversation rewound: the next %%agent cell continues the new session {r.new_session_id[:8]}.")
        if self.stale:
            named = [f"{link['label']} ({link['cell_id']})" for link in self.links] or self.stale
            lines.append("Re-run these cells: the kernel ran them after that turn, so its state may be stale: " + ", ".join(named))
        return lines

    def _stale_markdown(self) -> str:
        """The re-run hint with a link per cell: JupyterLab jumps to it (``#cell-id=``); with the
        labextension it selects the cell and marks it on the notebook until it runs again."""
        links = []
        for link in self.links:
            attrs = " ".join(
                f'{k}="{html.escape(str(v))}"'
                for k, v in [
                    ("href", link["href"]), ("class", "am-stale-cell"), ("data-am-stale-cell", link["cell_id"]),
                    # JupyterLab rewrites href (to the file's download URL); the extension reads this one.
                    ("data-am-stale-href", link["href"]),
                    ("data-am-stale-since", link["since"]), ("data-am-stale-path", link["path"]),
                    ("data-am-stale-index", link["index"]), ("title", f"Go to {link['label']} ({link['cell_id']})"),
                ]
            )
            links.append(f"<a {attrs}>{html.escape(link['label'])}</a>")
        n = len(self.links)
        return (
            f"- **Re-run {n} cell{'' if n == 1 else 's'}:** the kernel ran {'it' if n == 1 else 'them'} after that turn, "
            f"so its variables may not match the restored code: {', '.join(links)}"
        )

    def _repr_markdown_(self) -> str:
        out = []
        for line in self._lines():
            if line.startswith("Re-run these cells") and self.links:
                out.append(self._stale_markdown())
                continue
            out.append(f"- {html.escape(line)}" if not line.startswith(("Preview", "Changed", "Would", "Nothing", "Put back")) else f"**{html.escape(line)}**")
        diffs = []
        if self.result.dry_run:
            for ch in self.result.changes:
                for d in [ch.diff] + [cc.diff for cc in ch.cells]:
                    if d:
                        diffs.append(f"```diff\n{d}\n```")
        return "\n".join(out) + ("\n\n" + "\n\n".join(diffs) if diffs else "")

    def __repr__(self) -> str:
        return "\n".join(self._lines())


def variable_lines(r: RewindResult) -> list[str]:
    """The kernel-variable part of a rewind (or its preview), one line each."""
    lines = []
    for v in r.variables:
        if v.get("action") == "delete":
            lines.append(f"delete variable {v['name']} (the undone code created it)")
        else:
            how = ", in place" if v.get("in_place") else ""
            lines.append(f"restore variable {v['name']} ({v.get('type') or '?'}, {human_bytes(v.get('size'))}{how})")
    for name, why in sorted(r.variables_not_restored.items()):
        lines.append(f"not restorable (variable): {name}: {why}")
    lines.extend(f"warning: {w}" for w in r.variable_warnings)
    if r.kernel_note:
        lines.append(r.kernel_note)
    return lines


def kernel_checkpoints_view(usage: dict[str, Any]) -> Table:
    """``%agent kernel-checkpoints``: this kernel's variable snapshots and the disk they use."""
    from datetime import datetime

    rows = [
        [
            datetime.fromtimestamp(r["created_ms"] / 1000).strftime("%H:%M:%S"),
            ", ".join(r["names"][:8]) + (f" (+{len(r['names']) - 8})" if len(r["names"]) > 8 else ""),
            human_bytes(r["bytes"]),
        ]
        for r in usage["snapshots"]
    ]
    state = "on" if usage["enabled"] else "off (`%config AgentMagics.kernel_snapshots = True` turns them on)"
    note = (
        f"{plural(len(rows), 'snapshot')} in {usage['root']}, {human_bytes(usage['bytes'])} on disk "
        "(unchanged arrays are stored once); removed when the kernel exits. Snapshots: " + state + "."
    )
    return Table(["taken", "variables", "refers to"], rows, title="Kernel variable snapshots", note=note)


def rewind_view(result: RewindResult, *, stale: list[str], links: list[dict[str, Any]] | None = None) -> RewindView:
    return RewindView(result, stale, list(links or []))


def kernel_tools_table(rows: list[Any], *, missing_line: str | None = None) -> Table:
    """``%agent tools``: each registered kernel function with its signature, first docstring line and status.

    Parameters
    ----------
    rows
        :class:`~._functions.FunctionRow` objects (name, signature, summary, status).
    missing_line
        The one line naming functions not defined yet, shown as the note.
    """
    table_rows = [[r.name, _short(r.signature, 60) or "-", _short(r.summary, 60) or "-", r.status] for r in rows]
    if not rows:
        note = "No kernel functions are tools yet: `%agent tool NAME` offers a function defined in this kernel to the agent."
    else:
        note = missing_line or "The agent calls these without asking; `%agent tool --remove NAME` takes one away."
    return Table(["function", "signature", "description", "status"], table_rows, "Kernel functions offered as tools", note)


def mcp_table(servers: list[dict[str, Any]]) -> Table:
    """``%agent mcp``: each MCP server's name, transport, state, tools and error."""
    rows = []
    for s in servers:
        tools = [str(t) for t in s.get("tools") or []]
        shown = ", ".join(tools[:6]) + (f" (+{len(tools) - 6})" if len(tools) > 6 else "")
        rows.append([str(s.get("name", "")), str(s.get("type") or "-"), str(s.get("state") or "-"), shown or "-", _short(str(s.get("error") or ""), 80) or "-"])
    if servers:
        note = "Servers start with the session's first turn; their tools are named mcp__SERVER__TOOL."
    else:
        note = (
            "No MCP servers configured. Add one with `%config AgentMagics.mcp_servers = "
            "{\"name\": {\"command\": \"...\", \"args\": [...]}}`, or a project `.mcp.json` (read when setting_sources has 'project')."
        )
    return Table(["server", "type", "state", "tools", "error"], rows, "MCP servers of this session", note)


def memory_table(files: list[Any], *, sources: list[str]) -> Table:
    """``%agent memory``: the memory files the system prompt includes (path, source, size)."""
    rows = [[str(f.path), str(f.source), plural(int(getattr(f, "size", len(f.text.encode()))), "byte")] for f in files]
    if not sources:
        note = "Project memory is off: `%config AgentMagics.setting_sources = [\"project\", \"user\"]` turns it on."
    elif not files:
        note = f"No memory files found (sources: {', '.join(sources)}): write an AGENTS.md or CLAUDE.md in the project folder."
    else:
        note = f"Sources: {', '.join(sources)}. Files are read again when they change."
    return Table(["file", "source", "size"], rows, "Project memory in the system prompt", note)
