"""Session summaries a shared store keeps as entries are appended, so listing never reads transcripts.

Each backend calls :func:`fold_summary` inside ``append()`` with the previous summary
of the session (None at first) and the entries appended, and keeps the result beside
the session, stamped with its own write time (the clock ``list_sessions`` reports).
``list_session_summaries(project_key)`` returns them all in one call: the Agent
SDK's ``SessionSummaryEntry`` shape, ``{"session_id", "mtime", "data"}``.

``data`` holds the SDK's fields (``created_at``, ``cwd``, ``first_prompt``,
``custom_title``, ``tag``, ``is_sidechain``), so the SDK's own listing of our store
works, and agent-magic's, under ``am``: what :func:`summary_info` turns into a
:class:`~agent_magic.store.transcript.SessionInfo` without reading the session.
Every field is set once or last-wins, so a fold never needs earlier entries.
The main transcript and the ``meta`` sub-transcript (title, tag) are folded;
other sub-transcripts (checkpoint records, subagents) are not.
"""

from __future__ import annotations

from typing import Any

from .home import iso_to_ms
from .transcript import SessionInfo, _summary, fork_label, is_prompt_entry, prompt_text

#: How much of the first prompt a summary keeps (listings show a line of it).
FIRST_PROMPT_CHARS = 500
#: Sub-transcripts that count towards a session's summary (besides the main one).
FOLDED_SUBPATHS = frozenset({"meta"})


def folds(key: dict[str, Any]) -> bool:
    """Whether appends to ``key`` change its session's summary."""
    sub = key.get("subpath")
    return sub is None or sub in FOLDED_SUBPATHS


def fold_summary(prev: dict[str, Any] | None, key: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of ``key``'s session after ``entries`` (``mtime`` is the caller's to stamp)."""
    if prev is not None:
        summary = {"session_id": prev["session_id"], "mtime": prev.get("mtime", 0), "data": dict(prev.get("data") or {})}
    else:
        summary = {"session_id": key["session_id"], "mtime": 0, "data": {}}
    data = summary["data"]
    am = dict(data.get("am") or {})
    data.setdefault("is_sidechain", False)
    for e in entries:
        if not isinstance(e, dict):
            continue
        ms = iso_to_ms(e.get("timestamp"))
        if ms is not None:
            data.setdefault("created_at", ms)
            am["last_ms"] = max(ms, am.get("last_ms", 0))
        kind = e.get("type")
        if kind == "session":
            _fold_header(data, am, e)
        elif kind == "meta":
            for field, sdk in (("title", "custom_title"), ("tag", "tag")):
                if field in e:
                    value = e[field]
                    if isinstance(value, str) and value:
                        am[field] = data[sdk] = value
                    else:
                        am.pop(field, None)
                        data.pop(sdk, None)
        elif is_prompt_entry(e):
            am["turns"] = am.get("turns", 0) + 1
            if "first_prompt" not in am:
                text = prompt_text(e.get("message"))
                am["first_prompt"] = text[:FIRST_PROMPT_CHARS]  # a pasted page would ride along in every listing
                if not data.get("first_prompt_locked"):
                    data["first_prompt"] = " ".join(text.split())[:200]
                    data["first_prompt_locked"] = True
        elif kind == "result":
            cost = e.get("total_cost_usd")
            if e.get("cost_unknown"):
                am["cost_unknown"] = True
            elif isinstance(cost, (int, float)):
                am["cost"] = am.get("cost", 0.0) + float(cost)
    data["am"] = am
    return summary


def _fold_header(data: dict[str, Any], am: dict[str, Any], header: dict[str, Any]) -> None:
    for field in ("cwd", "scope", "model", "parent_session_id", "forked_at"):
        value = header.get(field)
        if isinstance(value, str) and value:
            am[field] = value
    if isinstance(header.get("cwd"), str) and header["cwd"]:
        data.setdefault("cwd", header["cwd"])
    created = iso_to_ms(header.get("timestamp"))
    if created is not None:
        am["created_ms"] = created
    ref = header.get("fork_of")
    if isinstance(ref, dict):
        # What a fork by reference inherits is not in its own entries: its header says how much.
        for field in ("turns", "cost"):
            if isinstance(ref.get(field), (int, float)):
                am[f"inherited_{field}"] = ref[field]
        if isinstance(ref.get("first_prompt"), str):
            am["inherited_first_prompt"] = ref["first_prompt"]


def summary_info(summary: dict[str, Any], names: dict[str, str] | None = None) -> SessionInfo | None:
    """A listing row for a session from its summary alone (None for a summary without our header).

    ``names`` maps session ids to a display name (title or first prompt), for a fork's label.
    """
    data = summary.get("data") or {}
    am = data.get("am") or {}
    if not isinstance(am, dict) or "created_ms" not in am:
        return None  # not an agent-magic session (or its header was never pushed)
    turns = int(am.get("turns", 0)) + int(am.get("inherited_turns", 0))
    first_prompt = am.get("inherited_first_prompt") or am.get("first_prompt")
    parent = am.get("parent_session_id")
    title = am.get("title")
    label = None
    inherited = int(am.get("inherited_turns", 0))
    if parent is not None and (inherited or not first_prompt):
        label = fork_label((names or {}).get(parent, ""), inherited)
    cost_unknown = bool(am.get("cost_unknown"))
    return SessionInfo(
        session_id=str(summary["session_id"]),
        summary=_summary(title, label, first_prompt),
        label=label,
        created_at=int(am["created_ms"]),
        last_modified=int(am.get("last_ms") or summary.get("mtime") or am["created_ms"]),
        num_turns=turns,
        cwd=str(am.get("cwd") or ""),
        scope=str(am.get("scope") or am.get("cwd") or ""),
        title=title,
        first_prompt=first_prompt,
        parent_session_id=parent,
        forked_at=am.get("forked_at"),
        tag=am.get("tag"),
        model=am.get("model"),
        total_cost_usd=None if cost_unknown else float(am.get("cost", 0.0)) + float(am.get("inherited_cost", 0.0)),
        cost_known=not cost_unknown,
    )


def display_names(summaries: list[dict[str, Any]]) -> dict[str, str]:
    """Each session's title, else its first prompt (what a fork's label names its parent by)."""
    out = {}
    for s in summaries:
        am = (s.get("data") or {}).get("am") or {}
        name = am.get("title") or am.get("inherited_first_prompt") or am.get("first_prompt")
        if isinstance(name, str):
            out[str(s.get("session_id"))] = name
    return out
