"""Forks by reference: a fork holds its own lines and a pointer into its parent's.

Making a fork writes one header line, whatever the parent's length. The header's
``fork_of`` says what the fork inherits::

    {"session_id": parent, "lines": N, "records": M, "last_prompt": uuid}

- **Conversation**: the first ``N`` lines of the parent's conversation (the
  parent's own inherited lines first, then the lines of its own transcript).
  Lines are counted, not bytes, so the pointer means the same on every host,
  whatever a shared store did to the JSON's spacing or key order.
- **Checkpoint records**: the parent's inherited records and the first ``M``
  lines of its own ``checkpoints.jsonl``, keeping those of the inherited turns:
  the turns up to ``last_prompt`` (every turn when the key is absent). Backups
  are content-addressed blobs, shared already.

The parent is only read, never written, so it stays byte-identical. Reading a fork
follows its parents (``conversation_lines``, ``records``). Deleting a parent first
makes each fork that points at it whole (``materialize``): what it inherits is
copied to its side file, ``inherited.jsonl``, and its own files stay as they are.
Exporting a fork to a bundle writes it whole too. A fork whose parent this host
lacks says so and how to fetch it (``agent-magic sync`` from a shared store).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import SessionNotFoundError
from .jsonl import (
    TranscriptWarning,
    atomic_write_bytes,
    crash_point,
    dumps_line,
    parse_lines,
    read_raw_lines,
)

if TYPE_CHECKING:
    from .local import SessionStore

REF_KEY = "fork_of"
#: A chain deeper than this is a loop someone wrote by hand.
MAX_DEPTH = 10_000
#: A whole fork's copy of what it inherited (see ``materialize``).
SIDE_FILE = "inherited.jsonl"


def fork_ref(header: dict[str, Any]) -> dict[str, Any] | None:
    """The header's ``fork_of`` pointer, if it has a usable one."""
    ref = header.get(REF_KEY)
    if (
        isinstance(ref, dict)
        and isinstance(ref.get("session_id"), str)
        and isinstance(ref.get("lines"), int)
        and ref["lines"] >= 0
    ):
        return ref
    return None


def header_of(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) and obj.get("type") == "session" else {}


def _complete(lines: list[bytes]) -> list[bytes]:
    """Lines without a torn last one (a write still under way, or cut by a crash)."""
    return lines[:-1] if lines and not lines[-1].endswith(b"\n") else lines


def count_lines(path: Path) -> int:
    """Complete lines in a file, counted a megabyte at a time (0 if there is none)."""
    n = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
    except FileNotFoundError:
        return 0
    return n


def _missing(child: str, parent: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        parent,
        f"Session {child[:8]} continues session {parent[:8]}, which is not on this host. "
        "Fetch it with `agent-magic sync` (from the shared store), or import its bundle.",
    )


def _parent_lines(store: SessionStore, child: str, parent: str) -> list[bytes]:
    try:
        own = read_raw_lines(store.transcript_path(parent))
    except ValueError:  # not a valid session id
        own = []
    if not own:
        raise _missing(child, parent)
    return own


# -- reading -------------------------------------------------------------------------


def conversation_lines(store: SessionStore, session_id: str) -> list[bytes]:
    """The session's header line, then every line of its conversation, a fork's inherited lines first.

    Raises
    ------
    SessionNotFoundError
        The session, or a parent a fork points at, is not in this store.
    """
    own = read_raw_lines(store.transcript_path(session_id))
    if not own:
        raise SessionNotFoundError(session_id)
    return [own[0], *_upper_lines(store, session_id, own[0], (session_id,)), *own[1:]]


def _upper_lines(store: SessionStore, session_id: str, header_line: bytes, seen: tuple[str, ...]) -> list[bytes]:
    """What ``session_id`` inherits: from its side file once made whole, else through its pointer."""
    side = _side(store, session_id)
    if side is not None:
        return side[0]
    ref = fork_ref(header_of(header_line))
    if ref is None:
        return []
    parent = ref["session_id"]
    if parent in seen or len(seen) > MAX_DEPTH:
        raise SessionNotFoundError(parent, f"Session {session_id[:8]}'s fork pointers loop back to {parent[:8]}.")
    own = _parent_lines(store, session_id, parent)
    upper = _upper_lines(store, parent, own[0], (*seen, parent))
    n = ref["lines"]
    if len(upper) >= n:
        return upper[:n]
    lines = upper + _complete(own[1:])[: n - len(upper)]
    if len(lines) < n:
        # The parent only grows: a shorter one is an older copy (from another host, say).
        raise SessionNotFoundError(
            parent,
            f"Session {session_id[:8]} continues session {parent[:8]}, whose copy on this host is older than the fork "
            f"({len(lines)} of {n} lines). Fetch it with `agent-magic sync`.",
        )
    return lines


def conversation_length(store: SessionStore, session_id: str) -> int:
    """How many conversation lines the session has here (its inherited ones included); 0 if it is not here."""
    try:
        return len(conversation_lines(store, session_id)) - 1
    except SessionNotFoundError:
        return 0


def records(store: SessionStore, session_id: str) -> list[dict[str, Any]]:
    """Every checkpoint record of the session, a fork's inherited ones first."""
    return inherited_records(store, session_id) + _parsed(read_raw_lines(store.checkpoints_path(session_id)))


def inherited_records(store: SessionStore, session_id: str) -> list[dict[str, Any]]:
    """The checkpoint records a fork inherits from its parents (none for a session that is not a fork)."""
    return _upper_records(store, session_id, (session_id,))


def _upper_records(store: SessionStore, session_id: str, seen: tuple[str, ...]) -> list[dict[str, Any]]:
    side = _side(store, session_id)
    if side is not None:
        return _parsed(side[1])
    ref = fork_ref(store.header(session_id))
    if ref is None:
        return []
    parent = ref["session_id"]
    if parent in seen or len(seen) > MAX_DEPTH:
        raise SessionNotFoundError(parent, f"Session {session_id[:8]}'s fork pointers loop back to {parent[:8]}.")
    if not store.exists(parent):
        raise _missing(session_id, parent)
    upper = _upper_records(store, parent, (*seen, parent))
    m = ref.get("records")
    own = _complete(read_raw_lines(store.checkpoints_path(parent)))
    if isinstance(m, int) and m >= 0:
        own = own[:m]  # what the parent wrote after the fork is not the fork's
    return _of_turns(upper + _parsed(own), ref)


def reads_from(store: SessionStore, session_id: str) -> str | None:
    """The parent whose files a fork reads, or None (not a fork, or made whole)."""
    ref = fork_ref(store.header(session_id))
    if ref is None or _side(store, session_id) is not None:
        return None
    return str(ref["session_id"])


def _of_turns(recs: list[dict[str, Any]], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the turns a fork inherits: those up to ``last_prompt`` (all without the key)."""
    if "last_prompt" in ref:
        last = ref["last_prompt"]
        kept: set[str] = set()
        if isinstance(last, str):
            for r in recs:
                cp = r.get("checkpoint")
                if r.get("r") == "turn" and isinstance(cp, str):
                    kept.add(cp)
                    if cp == last:
                        break
            if last not in kept:
                kept = set()  # checkpointing was off for that turn: no records of it or before are kept
    else:
        kept = {r["checkpoint"] for r in recs if r.get("r") == "turn" and isinstance(r.get("checkpoint"), str)}
    return [r for r in recs if r.get("checkpoint") in kept]


def _parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TranscriptWarning)
        return parse_lines(lines, None)


# -- making a fork ------------------------------------------------------------------------


def whole_ref(store: SessionStore, parent: str, header: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The pointer for a fork of all of ``parent``, and the last message id it inherits.

    Reads only the tail of the parent's transcript and counts its lines: no
    line of the history is parsed or copied.
    """
    path = store.transcript_path(parent)
    upper = fork_ref(header)
    own_body = max(0, count_lines(path) - 1)
    ref = {"session_id": parent, "lines": (upper["lines"] if upper else 0) + own_body}
    ref["records"] = count_lines(store.checkpoints_path(parent))
    last = _last_uuid(path)
    if last is None and upper is not None:
        last = header.get("forked_at") if isinstance(header.get("forked_at"), str) else None
    return ref, last


def _last_uuid(path: Path, tail: int = 256 << 10) -> str | None:
    """The ``uuid`` of the last complete line that has one, read from the file's end."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = size
        while start > 0:
            start = max(0, start - tail)
            f.seek(start)
            lines = f.read(size - start).splitlines(keepends=True)
            # The first line read is cut (or, from the start, it is the header).
            for line in reversed(_complete(lines[1:])):
                if b'"uuid"' not in line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("uuid"), str) and obj.get("type") != "session":
                    return str(obj["uuid"])
            if start == 0:
                return None
            tail *= 4
    return None


def ref_up_to(store: SessionStore, parent: str, message_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The pointer for a fork of ``parent`` up to and including ``message_id``, and the entries it inherits.

    None when the parent has no such message.
    """
    from .transcript import is_prompt_entry

    lines = conversation_lines(store, parent)
    needle = f'"uuid":"{message_id}"'.encode()
    body = lines[1:]
    for i in range(len(body) - 1, -1, -1):
        if needle not in body[i]:
            continue
        e = _parsed([body[i]])
        if not e or e[0].get("uuid") != message_id:
            continue  # the id quoted inside another line
        kept = _parsed(body[: i + 1])
        last_prompt = next((x.get("uuid") for x in reversed(kept) if is_prompt_entry(x)), None)
        ref = {
            "session_id": parent,
            "lines": i + 1,
            "records": count_lines(store.checkpoints_path(parent)),
            "last_prompt": last_prompt if isinstance(last_prompt, str) else None,
        }
        return ref, kept
    return None


# -- making a fork whole ---------------------------------------------------------------------


def side_path(store: SessionStore, session_id: str) -> Path:
    return store.session_dir(session_id) / SIDE_FILE


def _side(store: SessionStore, session_id: str) -> tuple[list[bytes], list[bytes]] | None:
    """A whole fork's inherited transcript lines and record lines, from its side file (None without one)."""
    try:
        raw = read_raw_lines(side_path(store, session_id))
    except ValueError:
        return None
    if not raw:
        return None
    try:
        head = json.loads(raw[0])
        n, m = int(head["lines"]), int(head["records"])
    except (ValueError, KeyError, TypeError):
        return None
    if head.get("type") != "inherited" or len(raw) != 1 + n + m:
        return None  # not ours, or damaged: the pointer still says where the history is
    return raw[1 : 1 + n], raw[1 + n :]


def materialize(store: SessionStore, session_id: str) -> bool:
    """Copy what a fork inherits into its side file, so it no longer needs its parent.

    The fork's own transcript and records stay as they are (byte for byte: what
    was pushed to a shared store, and what the fork's own forks point into, keeps
    its meaning). The side file appears in one atomic rename; until then the
    fork reads through its pointer. Returns False when there was nothing to do.
    """
    if reads_from(store, session_id) is None:
        return False
    own = read_raw_lines(store.transcript_path(session_id))
    lines = _upper_lines(store, session_id, own[0], (session_id,))
    recs = [dumps_line(r) for r in inherited_records(store, session_id)]
    head = {"type": "inherited", "of": fork_ref(header_of(own[0])), "lines": len(lines), "records": len(recs)}
    atomic_write_bytes(side_path(store, session_id), dumps_line(head) + b"".join(lines) + b"".join(recs))
    crash_point("fork.whole")
    return True


def whole_bytes(store: SessionStore, session_id: str) -> tuple[bytes, bytes]:
    """A session's transcript and checkpoint records with nothing inherited by reference (for bundles)."""
    lines = conversation_lines(store, session_id)
    header = {k: v for k, v in header_of(lines[0]).items() if k != REF_KEY}
    transcript = (dumps_line(header) if header else lines[0]) + b"".join(_complete(lines[1:]))
    return transcript, b"".join(dumps_line(r) for r in records(store, session_id))
