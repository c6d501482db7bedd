"""Rendering a turn into a cell: one display region, updated in place, coalesced.

The region is a raw mime bundle: ``text/markdown`` (what JupyterLab shows),
``text/plain`` (terminals, nbconvert) and ``application/vnd.agent-magic.turn+json``
(provenance: session, turn, checkpoint, cost — so a saved notebook knows which
session and turn each cell belongs to, and the session bar can be rebuilt).
Updates are throttled by size so a 20,000-token answer streams smoothly
without flooding the front end. Secret values of the environment (API keys,
tokens) are replaced by ``[REDACTED:NAME]`` in everything shown, as in the
transcript.
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._messages import (
    AssistantMessage,
    Message,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from .._redact import redact, secret_values

TURN_MIME = "application/vnd.agent-magic.turn+json"
PROVENANCE_VERSION = 1


def _tick(s: str) -> str:
    """Inline code that survives backticks in the text."""
    s = " ".join(s.split())
    fence = "``" if "`" in s else "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def display_path(value: str, cwd: str | None) -> str:
    """A path as a person wants to read it: relative to the session's folder when inside it."""
    if not cwd or not value.startswith("/"):
        return value
    try:
        rel = os.path.relpath(value, cwd)
    except ValueError:
        return value
    return value if rel.startswith("..") else rel


def strip_cwd(text: str, cwd: str | None) -> str:
    """``text`` with every path inside the session's folder made relative to it (diffs, titles)."""
    return text.replace(str(cwd).rstrip("/") + "/", "") if cwd else text


def notebook_edit_phrase(tool_input: dict[str, Any]) -> str:
    """What a NotebookEdit call does, in words: "insert a cell after df6cbb50", "replace cell 3f2a"."""
    mode = str(tool_input.get("edit_mode") or "replace")
    cell = str(tool_input.get("cell_id") or "")
    if mode == "insert":
        # cell_id names the anchor: the new cell goes after it (at the start without one).
        return f"insert a cell after {cell}" if cell else "insert a cell at the start"
    if mode == "delete":
        return f"delete cell {cell}"
    return f"replace cell {cell}" if cell else "replace the first cell"


def _target(name: str, inp: dict[str, Any], cwd: str | None = None) -> str:
    description = inp.get("description")
    if name == "Agent":
        kind = inp.get("subagent_type")
        return f"{kind}: {description}" if isinstance(kind, str) and isinstance(description, str) else str(kind or "")
    if name == "Python" and isinstance(description, str) and description.strip():
        # The agent's few words say more than the code's first line (the code is in the details).
        first = description.strip().splitlines()[0]
        return first[:100] + ("…" if len(first) > 100 else "")
    for key in ("file_path", "notebook_path", "command", "pattern", "code", "path"):
        v = inp.get(key)
        if isinstance(v, str) and v.strip():
            first = v.strip().splitlines()[0]
            if key in ("file_path", "notebook_path", "path"):
                first = display_path(first, cwd)
            extra = ""
            if key == "notebook_path" and (inp.get("cell_id") or inp.get("edit_mode")):
                extra = f" ({notebook_edit_phrase(inp)})"
            return (first[:100] + ("…" if len(first) > 100 else "")) + extra
    return ""


@dataclass
class _ToolCall:
    id: str
    name: str
    target: str
    status: str = "running"  # running | ok | error
    summary: str | None = None
    details: str | None = None
    details_lang: str = ""
    #: A subagent's own tool calls (this call is its ``Agent`` call), shown inside its line.
    children: list[_ToolCall] = field(default_factory=list)


@dataclass
class _Segment:
    kind: str  # "text" | "thinking" | "tool" | "note" | "quiet"
    text: str = ""
    tool: _ToolCall | None = None
    #: Streamed so far: the complete AssistantMessage replaces it.
    live: bool = False
    #: A plain view printed its one-line marker already (thinking).
    marked: bool = False


def context_share(tokens: int | None, window: int | None) -> str | None:
    """``"23% of context"``: how full the model's context window is; None when either is unknown."""
    if tokens is None or not window or window <= 0:
        return None
    pct = tokens * 100 / window
    # Anything in context is at least 1%: "0%" would read as empty.
    shown = max(1, int(pct + 0.5)) if tokens > 0 else 0  # half up, as the bar's JavaScript rounds
    return f"{shown}% of context"


COMPACTING = "Compacting the conversation…"


def compaction_line(data: dict[str, Any], *, trigger: bool = True, share: str | None = None) -> str:
    """One line for a ``compact_boundary``: "Compacted the conversation (auto): 182,340 → 9,120 tokens.".

    ``trigger=False`` leaves out "(auto)"/"(manual)"; ``share`` ("5% of context") is added in brackets.
    """
    pre, post = data.get("pre_tokens"), data.get("post_tokens")
    how = f" ({data['trigger']})" if trigger and data.get("trigger") else ""
    counts = f": {int(pre):,} → {int(post):,} tokens" if isinstance(pre, int) and isinstance(post, int) else ""
    return f"Compacted the conversation{how}{counts}" + (f" ({share})" if share else "") + "."


def _words(text: str) -> int:
    return len(text.split())


def thinking_summary(text: str, *, live: bool = False) -> str:
    """The one line a collapsed thinking block shows: "Thinking (312 words)"."""
    n = _words(text)
    return f"Thinking{'…' if live else ''} ({n:,} word{'' if n == 1 else 's'})"


def _thinking_delta(event: dict[str, Any]) -> str | None:
    if event.get("type") == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("type") == "thinking_delta":
            return str(delta.get("thinking", ""))
    return None


@dataclass
class TurnView:
    """The state of one turn's output and how to render it.

    Parameters
    ----------
    rich
        Render Markdown into a display region (notebooks); False prints plain text (terminals).
    quiet
        Show only the final answer and the closing line.
    publish
        ``publish(bundle, first)``: show or update the region (injected for tests).
    """

    rich: bool = True
    quiet: bool = False
    publish: Callable[[dict[str, Any], bool], None] | None = None
    min_interval: float = 0.05
    segments: list[_Segment] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    footer: str = ""
    _tools: dict[str, _ToolCall] = field(default_factory=dict)
    _dirty: bool = False
    _last_flush: float = 0.0
    _shown: bool = False
    updates: int = 0
    bytes_sent: int = 0
    _plain_printed: int = 0
    _plain_pending: str = ""

    # -- input ---------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        if isinstance(msg, SystemMessage):
            if msg.subtype == "init":
                self.provenance.update(
                    version=PROVENANCE_VERSION,
                    session_id=msg.data.get("session_id"),
                    turn=msg.data.get("turn"),
                    cwd=msg.data.get("cwd"),
                    model=msg.data.get("model"),
                    status="running",
                    forked_from=msg.data.get("forked_from") or msg.data.get("parent_session_id"),
                )
            elif msg.subtype in ("hook_error", "hook", "warning"):
                self._note(f"⚠ {msg.data.get('message', '')}")
            elif msg.subtype == "checkpoint":
                self.provenance["changes"] = {"files": msg.data.get("files", []), "cells": msg.data.get("cells", [])}
            elif msg.subtype == "compacting":
                # A summary request can take a while: say so until its boundary line replaces it
                # (the notebook only; a terminal gets the one line when it is done).
                self.segments.append(_Segment("quiet", COMPACTING))
                self._dirty = True
            elif msg.subtype == "compact_boundary":
                self.segments = [x for x in self.segments if not (x.kind == "quiet" and x.text == COMPACTING)]
                self._quiet_note(compaction_line(msg.data))
                self.provenance["compactions"] = int(self.provenance.get("compactions") or 0) + 1
            # "context_cleared" (old tool results left out of a request) is routine: not shown.
        elif isinstance(msg, StreamEvent):
            delta = msg.text_delta
            if delta:
                self._live_segment("text").text += delta
                self._print_plain_delta(delta)
                self._dirty = True
            else:
                thought = _thinking_delta(msg.event)
                if thought:
                    self._live_segment("thinking").text += thought
                    self._dirty = True
                elif msg.event.get("type") == "content_block_stop":
                    last = self.segments[-1] if self.segments else None
                    if last is not None and last.live and last.kind == "thinking":
                        self._print_plain_thinking(last)
        elif isinstance(msg, AssistantMessage) and msg.parent_tool_use_id:
            self._subagent_calls(msg)
        elif isinstance(msg, AssistantMessage):
            # The complete message replaces what streamed (and covers providers that do not stream).
            streamed = [s for s in self.segments if s.live]
            if streamed:
                self.segments = [s for s in self.segments if not s.live]
                if any(s.kind == "text" for s in streamed):
                    self._plain_printed_reset()
            marked = sum(1 for s in streamed if s.kind == "thinking" and s.marked)
            for b in msg.content:
                if isinstance(b, ThinkingBlock) and b.thinking.strip():
                    seg = _Segment("thinking", b.thinking, marked=marked > 0)
                    marked -= 1
                    self.segments.append(seg)
                    self._print_plain_thinking(seg)
            text = "".join(b.text for b in msg.content if isinstance(b, TextBlock))
            if text.strip():
                self.segments.append(_Segment("text", text))
                self._print_plain_block(text)
            for b in msg.content:
                if isinstance(b, ToolUseBlock):
                    call = _ToolCall(b.id, b.name, _target(b.name, b.input, self.provenance.get("cwd")))
                    self._tools[b.id] = call
                    self.segments.append(_Segment("tool", tool=call))
                    self._print_plain_tool(call)
            self._dirty = True
        elif isinstance(msg, UserMessage) and not msg.is_prompt:
            meta = msg.tool_use_result or {}
            for b in msg.content if isinstance(msg.content, list) else []:
                if isinstance(b, ToolResultBlock):
                    found = self._tools.get(b.tool_use_id)
                    if found is None:
                        continue
                    call = found
                    call.status = "error" if b.is_error else "ok"
                    call.summary = meta.get("summary") or (b.text.strip().splitlines()[0][:120] if b.text.strip() else None)
                    data = meta.get("data") or {}
                    if isinstance(data.get("diff"), str) and data["diff"]:
                        call.details, call.details_lang = strip_cwd(data["diff"], self.provenance.get("cwd")), "diff"
                    elif b.text:
                        call.details = b.text
                    if msg.parent_tool_use_id:
                        if not self.rich and not self.quiet:
                            print(_redacted(f"    {'ok' if call.status == 'ok' else 'error'}: {call.summary or ''}"), flush=True)
                    else:
                        self._print_plain_result(call)
            self._dirty = True
        elif isinstance(msg, ResultMessage):
            self.finish(msg)

    def _subagent_calls(self, msg: AssistantMessage) -> None:
        """A subagent's response: its tool calls go inside its ``Agent`` line; its text is in the report."""
        parent = self._tools.get(msg.parent_tool_use_id or "")
        for b in msg.content:
            if isinstance(b, ToolUseBlock):
                call = _ToolCall(b.id, b.name, _target(b.name, b.input, self.provenance.get("cwd")))
                self._tools[b.id] = call
                if parent is not None:
                    parent.children.append(call)
                else:  # its Agent call is not on screen (cannot happen with our loop): show it plainly
                    self.segments.append(_Segment("tool", tool=call))
                if not self.rich and not self.quiet:
                    print(_redacted(f"  > {call.name} {call.target}"), flush=True)
        self._dirty = True

    def _live_segment(self, kind: str) -> _Segment:
        """The segment a stream delta of ``kind`` goes to: the last one if it is streaming, else a new one."""
        last = self.segments[-1] if self.segments else None
        if last is not None and last.live and last.kind == kind:
            return last
        seg = _Segment(kind, live=True)
        self.segments.append(seg)
        return seg

    def _note(self, text: str) -> None:
        self.segments.append(_Segment("note", text))
        self._dirty = True
        if not self.rich:
            self._plain_break()
            print(_redacted(text), flush=True)

    def _quiet_note(self, text: str) -> None:
        """A line that informs without alarming (a compaction); left out by --quiet."""
        self.segments.append(_Segment("quiet", text))
        self._dirty = True
        if not self.rich and not self.quiet:
            self._plain_break()
            print(_redacted(text), flush=True)

    def _plain_break(self) -> None:
        """End the line an answer is streaming on, so a note printed now starts its own
        (a server-side compaction is reported after the answer that carried it streamed)."""
        if self._plain_pending:
            sys.stdout.write(_redacted(self._plain_pending))
            self._plain_pending = ""
        if self._plain_printed > 0:
            sys.stdout.write("\n")
            self._plain_printed = 0

    # -- results -----------------------------------------------------------
    def finish(self, result: ResultMessage) -> None:
        if self._plain_pending:  # text held back while streaming, never completed (interrupted)
            sys.stdout.write(_redacted(self._plain_pending) + "\n")
            self._plain_pending = ""
        for seg in self.segments:  # what streamed before an interruption stays, as it was
            if seg.live and seg.kind == "thinking":
                self._print_plain_thinking(seg)
            seg.live = False
        tokens = result.usage or {}
        self.provenance.update(
            session_id=result.session_id,
            checkpoint_id=result.checkpoint_id,
            status=result.subtype,
            cost_usd=result.total_cost_usd,
            # Every input token the model read, cached or not; the cached share said apart.
            input_tokens=None if tokens.get("input_tokens") is None else sum(
                int(tokens.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            ),
            cached_tokens=int(tokens.get("cache_read_input_tokens") or 0),
            output_tokens=tokens.get("output_tokens"),
            duration_ms=result.duration_ms,
            # What the next request carries, against the model's window (None: unknown).
            context_tokens=result.context_tokens,
            context_window=result.context_window,
            sync_pending=result.sync_pending,
        )
        # An interruption is said once, by the cell's error line (which also stops Run All).
        if result.is_error and result.result and result.subtype != "interrupted":
            self._note(f"**{_label(result.subtype)}:** {result.result}")
        self.footer = self._footer()
        self._dirty = True
        if not self.rich:
            if self.quiet:
                texts = [s.text for s in self.segments if s.kind == "text"]
                if texts:
                    print(_redacted(texts[-1].strip("\n")), flush=True)
            print(self._plain_footer(), flush=True)

    def _footer(self) -> str:
        p = self.provenance
        sid = str(p.get("session_id") or "")
        cp = str(p.get("checkpoint_id") or "")
        bits = [f"session `{sid[:8]}`", f"turn {p.get('turn', '?')}"]
        if cp:
            bits.append(f"checkpoint `{cp[:8]}`")
        if p.get("input_tokens") is not None:
            cached = f" ({p['cached_tokens']:,} cached)" if p.get("cached_tokens") else ""
            bits.append(f"{p['input_tokens']:,} in{cached} / {p.get('output_tokens') or 0:,} out tokens")
        share = context_share(p.get("context_tokens"), p.get("context_window"))
        if share:
            bits.append(share)
        cost = p.get("cost_usd")
        bits.append("cost unknown" if cost is None else f"${cost:.4f}")
        if p.get("forked_from"):
            bits.append(f"fork of `{str(p['forked_from'])[:8]}`")
        if p.get("sync_pending"):
            n = int(p["sync_pending"])
            bits.append(f"not synced: {n:,} entr{'ies' if n != 1 else 'y'} (retried after the next turn, or `agent-magic sync`)")
        return " · ".join(bits) + f" · resume with `%agent resume {sid[:8]}`"

    def _plain_footer(self) -> str:
        return "-- " + self._footer().replace("`", "")

    # -- rendering -----------------------------------------------------------
    def markdown(self) -> str:
        parts: list[str] = []
        segments = self.segments
        if self.quiet:
            texts = [s for s in segments if s.kind == "text"]
            segments = [texts[-1]] if texts else []
            segments += [s for s in self.segments if s.kind == "note"]
        for s in segments:
            if s.kind == "text":
                parts.append(s.text.strip("\n"))
            elif s.kind == "note":
                parts.append(s.text)
            elif s.kind == "quiet":
                parts.append(f"<sub>{html.escape(s.text, quote=False)}</sub>")
            elif s.kind == "thinking":
                parts.append(_thinking_markdown(s))
            elif s.tool is not None:
                parts.append(_tool_markdown(s.tool))
        if self.footer:
            parts.append(f"<sub>{self.footer}</sub>")
        elif not parts:
            parts.append("*Working…*")
        return "\n\n".join(parts)

    def plain(self) -> str:
        out: list[str] = []
        for s in self.segments:
            if s.kind in ("text", "note"):
                out.append(s.text.strip("\n"))
            elif s.kind == "quiet":
                if not self.quiet:
                    out.append(s.text)
            elif s.kind == "thinking":
                out.append(f"[{thinking_summary(s.text, live=s.live)}]")
            elif s.tool is not None:
                out.append(_tool_plain(s.tool))
        if self.footer:
            out.append(self._plain_footer())
        return "\n\n".join(out)

    def bundle(self) -> dict[str, Any]:
        return {
            "text/markdown": _redacted(self.markdown()),
            "text/plain": _redacted(self.plain()),
            TURN_MIME: dict(self.provenance),
        }

    def interval(self) -> float:
        size = sum(len(s.text) + (len(s.tool.details or "") if s.tool else 0) for s in self.segments)
        return min(1.0, self.min_interval + size / 400_000)

    def flush(self, force: bool = False) -> None:
        if not self.rich or self.publish is None:
            return
        if not self._dirty and self._shown:
            return
        now = time.monotonic()
        if not force and self._shown and now - self._last_flush < self.interval():
            return
        bundle = self.bundle()
        self.publish(bundle, not self._shown)
        self._shown = True
        self._dirty = False
        self._last_flush = now
        self.updates += 1
        self.bytes_sent += len(json.dumps(bundle))

    # -- plain text (terminal IPython) ----------------------------------------
    def _print_plain_delta(self, delta: str) -> None:
        if not self.rich and not self.quiet:
            # A secret can arrive split over deltas: hold back as many characters as the
            # longest one could still need, and print the rest redacted.
            found = secret_values()
            pending = redact(self._plain_pending + delta, found) if found else self._plain_pending + delta
            hold = max((len(v) for v in found.values()), default=1) - 1
            cut = max(len(pending) - hold, 0)
            sys.stdout.write(pending[:cut])
            sys.stdout.flush()
            self._plain_pending = pending[cut:]
            self._plain_printed += len(delta)

    def _plain_printed_reset(self) -> None:
        if self._plain_pending:
            sys.stdout.write(_redacted(self._plain_pending))
            self._plain_pending = ""
        if not self.rich and self._plain_printed:
            sys.stdout.write("\n")
        self._plain_printed = -1  # the complete text was already shown as it streamed

    def _print_plain_block(self, text: str) -> None:
        if self.rich:
            return
        if self._plain_printed == -1:
            self._plain_printed = 0
            return
        if not self.quiet:
            print(_redacted(text), flush=True)

    def _print_plain_thinking(self, seg: _Segment) -> None:
        """Terminals get one line per thinking block, never the thinking itself."""
        if self.rich or self.quiet or seg.marked:
            return
        seg.marked = True
        print(f"[{thinking_summary(seg.text)}]", flush=True)

    def _print_plain_tool(self, call: _ToolCall) -> None:
        if not self.rich and not self.quiet:
            print(_redacted(f"> {call.name} {call.target}"), flush=True)

    def _print_plain_result(self, call: _ToolCall) -> None:
        if not self.rich and not self.quiet:
            print(_redacted(f"  {'ok' if call.status == 'ok' else 'error'}: {call.summary or ''}"), flush=True)


def _redacted(text: str) -> str:
    """``text`` without the environment's secret values (also as they look HTML-escaped)."""
    found = secret_values()
    if not found:
        return text
    text = redact(text, found)
    return redact(text, {name: html.escape(value) for name, value in found.items()})


def _label(subtype: str) -> str:
    return {
        "error_max_turns": "Stopped at the turn limit",
        "error_max_budget_usd": "Stopped at the budget",
        "error_during_execution": "Error",
        "interrupted": "Interrupted",
    }.get(subtype, subtype)


#: Status marks of a tool line. No emoji (Debian's Chromium has no glyph for ⏳): a CSS spinner
#: while running (styled by the widgets' and the labextension's CSS; empty without them, and
#: the line then says "running…"), and ✓ / ✗, which every common font has.
_RUNNING_MARK = "<span class='am-tool-running' role='img' aria-label='running'></span>"
_DONE_MARKS = {"ok": "✓", "error": "✗"}

#: Diff lines coloured as the checkpoint slider colours them (inline, so they survive
#: nbconvert and front ends without our CSS).
_DIFF_STYLES = {
    "add": "am-diff-add' style='display:block;background:color-mix(in srgb, var(--jp-success-color1, #388e3c) 16%, transparent)",
    "del": "am-diff-del' style='display:block;background:color-mix(in srgb, var(--jp-error-color1, #d32f2f) 14%, transparent)",
    "hunk": "am-diff-hunk' style='display:block;color:var(--jp-info-color1, #0097a7)",
    "file": "am-diff-file' style='display:block;color:var(--jp-ui-font-color2, #616161)",
    "": "' style='display:block",
}
_PRE_STYLE = (
    "padding:4px 6px;max-height:260px;overflow:auto;white-space:pre-wrap;word-break:break-word;"
    "background:var(--jp-cell-editor-background, #f5f5f5);border:1px solid var(--jp-border-color2, #e0e0e0);"
    "border-radius:3px;font-family:var(--jp-code-font-family, monospace);font-size:var(--jp-code-font-size, 12px)"
)


def diff_html(diff: str) -> str:
    """A unified diff as an HTML ``<pre>``, added, removed and hunk lines coloured."""
    lines = []
    for line in diff.rstrip("\n").split("\n"):
        if line.startswith("\\ No newline"):
            continue
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = ""
        lines.append(f"<span class='{_DIFF_STYLES[kind]}'>{html.escape(line, quote=False) or ' '}\n</span>")
    return f"<pre class='am-diff' style='{_PRE_STYLE}'>" + "".join(lines) + "</pre>"


def _calls(n: int) -> str:
    return f"{n} tool call" + ("" if n == 1 else "s")


def _subagent_markdown(call: _ToolCall) -> str:
    """An ``Agent`` call: one collapsible line; inside, the subagent's tool lines and its report."""
    target = f" {_tick(call.target)}" if call.target else ""
    if call.status == "running":
        head = f"{_RUNNING_MARK} **{call.name}**{target} — *running… {_calls(len(call.children))}*"
    else:
        head = f"{_DONE_MARKS[call.status]} **{call.name}**{target} — {html.escape(call.summary or _calls(len(call.children)))}"
    inner = "\n\n".join(_tool_markdown(c) for c in call.children)
    report = ""
    if call.status != "running" and call.details:
        body = call.details if len(call.details) <= 4000 else call.details[:4000] + "\n[… cut …]"
        fence = "````" if "```" in body else "```"
        report = f"\n\n{fence}\n{body}\n{fence}"
    return (
        f"<details class='am-subagent'><summary>{_html_inline(head)}</summary>\n\n"
        f"<div style='margin-left:1.4em'>\n\n{inner}{report}\n\n</div>\n\n</details>"
    )


def _tool_markdown(call: _ToolCall) -> str:
    if call.name == "Agent" and (call.children or call.status == "running"):
        return _subagent_markdown(call)
    if call.status == "running":
        head = f"{_RUNNING_MARK} **{call.name}**" + (f" {_tick(call.target)}" if call.target else "") + " — *running…*"
        return head
    head = f"{_DONE_MARKS[call.status]} **{call.name}**" + (f" {_tick(call.target)}" if call.target else "")
    if not call.details:
        return head + (f" — {html.escape(call.summary)}" if call.summary else "")
    if call.summary:
        head += f" — {call.summary}"  # escaped once, by _html_inline
    body = call.details
    if len(body) > 4000:
        body = body[:4000] + "\n[… cut …]"
    if call.details_lang == "diff":
        # CommonMark ends an HTML block that starts with <pre> only at </pre>: blank lines are safe.
        return f"<details><summary>{_html_inline(head)}</summary>\n\n{diff_html(body)}\n\n</details>"
    fence = "````" if "```" in body else "```"
    return (
        f"<details><summary>{_html_inline(head)}</summary>\n\n{fence}{call.details_lang}\n{body}\n{fence}\n\n</details>"
    )


def _thinking_markdown(seg: _Segment) -> str:
    """A thinking block collapsed to its one-line summary; the thinking inside, as Markdown."""
    import re

    # Only a closing tag could end the <details> early; everything else renders as the answer does,
    # quoted, so that open it still reads apart from the answer.
    body = re.sub(r"</(details|summary)", r"&lt;/\1", seg.text.strip("\n"), flags=re.IGNORECASE)
    body = "\n".join(f"> {line}" if line.strip() else ">" for line in body.split("\n"))
    summary = html.escape(thinking_summary(seg.text, live=seg.live))
    return (
        f"<details class='am-thinking'><summary style='opacity:0.75'><i>{summary}</i></summary>\n\n"
        f"{body}\n\n</details>"
    )


def _html_inline(md: str) -> str:
    """The summary line of a <details> is HTML: convert our tiny bit of Markdown."""
    import re

    s = html.escape(md, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"``? ?(.+?) ?``?(?=\s|$| —)", r"<code>\1</code>", s)
    return s


def _tool_plain(call: _ToolCall, indent: str = "") -> str:
    status = {"running": "...", "ok": "ok", "error": "error"}[call.status]
    line = f"{indent}> {call.name} {call.target} [{status}]" + (f" {call.summary}" if call.summary else "")
    return "\n".join([line, *(_tool_plain(c, indent + "  ") for c in call.children)])


def ipython_publisher() -> Callable[[dict[str, Any], bool], None]:
    """A publish function that shows a bundle once and then updates it in place."""
    from IPython import display as ipd

    from ..store.home import new_uuid

    display: Any = ipd.display
    update_display: Any = ipd.update_display

    display_id = new_uuid()

    def publish(bundle: dict[str, Any], first: bool) -> None:
        if first:
            display(bundle, raw=True, display_id=display_id)
        else:
            update_display(bundle, raw=True, display_id=display_id)

    return publish
