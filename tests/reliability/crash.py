"""Crash consistency: SIGKILL a process running real agent turns at random points, then check.

An *episode* is one session in its own store and workspace (a text file, a
notebook with outputs, folders), a script of turns (Write, Edit, NotebookEdit,
Bash, and mixed ones), and a fake Messages API in this process that streams
every reply slowly (``delay``) so kills land mid-stream. A *segment* is one
worker process (:mod:`tests.reliability.worker`) resuming the session and
running the remaining turns; most segments are killed:

- at an armed crash point (``AGENT_MAGIC_CRASH_AT=<label>:<n>``): mid-stream,
  before a tool runs, between a file's temp file and its rename, after the
  rename, while a Bash command runs, before and inside backup blobs, before a
  checkpoint record, before a transcript line, or half-way through a line
  (a torn write);
- or by this process, while the fake API streams an answer, or at a random moment.

After every kill (and at the end of an episode) the harness checks, on the
files the dead process left:

1. every line of the transcript and of the checkpoint records reads (only a
   torn *last* line is allowed);
2. every turn the worker saw finish is in the transcript, prompt and result;
3. write-ahead: every successful Write/Edit/NotebookEdit in the transcript has
   its checkpoint record, and every backup a record names is in the blob store
   and matches its hash;
4. on a copy of the store and workspace, after ``recover()``: rewinding to each
   surviving checkpoint, newest first, gives exactly the tree the worker
   recorded before that turn (temp files of an interrupted atomic write, the
   only thing a crash may leave behind, are ignored and counted); a turn that
   died before its checkpoint record left the tree untouched;
5. a fresh ``SessionStore`` on the copy lists the session with the turn count
   its transcript has (the index is repaired from the transcripts);

and the next segment resumes the session: the episode only ends when every
scripted turn has finished in a segment that was not killed.

Size and speed: ``AGENT_MAGIC_CRASH_KILLS`` (default 200), ``AGENT_MAGIC_CRASH_JOBS``
(episodes run in parallel; default 2), ``AGENT_MAGIC_CRASH_SEED``. The long
run: ``AGENT_MAGIC_CRASH_KILLS=5000 python -m pytest tests/test_crash.py -s``
or ``python bench/reliability.py --kills 5000``.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_magic.checkpoints import CheckpointLog
from agent_magic.store.blobs import BlobMissingError, BlobStore
from agent_magic.store.jsonl import JsonlFile, TranscriptWarning
from agent_magic.store.local import SessionStore
from agent_magic.store.transcript import is_prompt_entry, prompt_text
from agent_magic.testing import (
    FakeAnthropicServer,
    last_prompt,
    steps_since_prompt,
    text,
    text_block,
    tool_block,
    tool_use,
    tool_uses,
)
from agent_magic.testing import message as message_reply

from ..conftest import tree_snapshot
from .worker import decode_tree

#: Crash points by phase (see ``agent_magic.store.jsonl``); ``timed-*`` kills come from this process.
PHASES: dict[str, tuple[str, ...]] = {
    "stream": ("stream.event", "timed-stream"),
    "tool": ("tool.start", "file.tmp", "file.replaced", "bash.spawned"),
    "backup": ("blob", "blob.tmp", "append:checkpoints", "torn:checkpoints"),
    "transcript": ("append:transcript", "torn:transcript"),
    "random": ("timed",),
}
PHASE_OF = {label: phase for phase, labels in PHASES.items() for label in labels}
#: A first guess of how often a label is hit per turn; learnt from runs that did not die.
_HITS_PER_TURN = {
    "stream.event": 40.0, "tool.start": 2.5, "file.tmp": 1.5, "file.replaced": 1.5, "bash.spawned": 0.5,
    "blob": 3.0, "blob.tmp": 3.0, "append:checkpoints": 3.0, "torn:checkpoints": 3.0,
    "append:transcript": 7.0, "torn:transcript": 7.0,
}
KINDS = ("write", "edit", "notebook", "bash", "mixed")
TURNS_PER_EPISODE = 6
KILLS_PER_EPISODE = 8
#: What an atomic write killed between its temp file and the rename leaves behind.
LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
STREAM: dict[str, Any] = {"chunk_size": 24, "delay": 0.001}
API_KEY = "sk-ant-crash-test-key-0123456789"
_PROMPT = re.compile(r"crash ep=(\d+) turn=(\d+) attempt=(\S+) kind=(\w+) ws=(\S+)")


@dataclass
class CrashReport:
    """What a campaign did and found."""

    kills: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)
    episodes: int = 0
    segments: int = 0
    resumes: int = 0
    turns_completed: int = 0
    rewinds_checked: int = 0
    untouched_checked: int = 0
    torn_tails: int = 0
    leftovers: int = 0
    rewind_conflicts: int = 0
    index_checks: int = 0
    conflict_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0

    @property
    def data_lost(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        phases = ", ".join(f"{p} {self.by_phase.get(p, 0)}" for p in PHASES)
        return (
            f"crash: {self.kills} kills survived ({phases}) in {self.episodes} episodes, "
            f"{self.segments} worker runs, {self.resumes} resumes after a kill, {self.turns_completed} turns completed; "
            f"{self.rewinds_checked} rewinds checked against recorded trees, {self.untouched_checked} killed turns "
            f"checked untouched, {self.index_checks} index checks; {self.torn_tails} torn last lines, "
            f"{self.leftovers} temp files left by killed writes, {self.rewind_conflicts} rewind conflicts, "
            f"data lost: {self.data_lost}; "
            f"seed {self.seed}; {self.seconds:.1f}s"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kills": self.kills, "by_phase": dict(self.by_phase), "by_label": dict(self.by_label),
            "episodes": self.episodes, "segments": self.segments, "resumes": self.resumes,
            "turns_completed": self.turns_completed, "rewinds_checked": self.rewinds_checked,
            "untouched_checked": self.untouched_checked, "index_checks": self.index_checks,
            "torn_tails": self.torn_tails, "leftovers": self.leftovers, "rewind_conflicts": self.rewind_conflicts,
            "conflict_reasons": dict(self.conflict_reasons),
            "data_lost": self.data_lost, "failures": self.failures[:50], "seconds": round(self.seconds, 1),
            "seed": self.seed,
        }


# ---------------------------------------------------------------------------
# The scripted model
# ---------------------------------------------------------------------------


def _cell_ids_read(body: dict[str, Any]) -> list[str]:
    """Cell ids shown by the Read results in the request (the newest Read wins)."""
    ids: list[str] = []
    for m in body.get("messages") or []:
        content = m.get("content")
        for b in content if isinstance(content, list) else []:
            if isinstance(b, dict) and b.get("type") == "tool_result":
                c = b.get("content")
                text_ = c if isinstance(c, str) else " ".join(x.get("text", "") for x in c or [] if isinstance(x, dict))
                found = re.findall(r'<cell id="([^"]+)"', text_)
                if found:
                    ids = found
    return ids


def _step(kind: str, k: int, ws: Path, turn: int, attempt: str, body: dict[str, Any]) -> dict[str, Any] | None:
    notes, nb = str(ws / "notes.txt"), str(ws / "nb.ipynb")
    if kind == "write":
        steps: list[Callable[[], dict[str, Any]]] = [
            lambda: tool_use("Read", {"file_path": notes}, text="Reading the notes.", **STREAM),
            lambda: tool_use("Write", {"file_path": notes, "content": f"alpha\nMARK\nwrite {attempt}\n" + f"{attempt}-" * 40}, **STREAM),
            lambda: tool_use("Write", {"file_path": str(ws / "out" / f"t{turn}.txt"), "content": f"turn {turn} attempt {attempt}\n"}, **STREAM),
        ]
    elif kind == "edit":
        steps = [
            lambda: tool_use("Read", {"file_path": notes}, **STREAM),
            lambda: tool_use("Edit", {"file_path": notes, "old_string": "MARK", "new_string": f"MARK\nedit {attempt}"}, **STREAM),
        ]
    elif kind == "notebook":

        def delete() -> dict[str, Any]:
            ids = [i for i in _cell_ids_read(body) if i not in ("c0", "c1")]
            if not ids:
                return text("Nothing to delete.", **STREAM)
            return tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": ids[-1], "new_source": "", "edit_mode": "delete"}, **STREAM)

        steps = [
            lambda: tool_use("Read", {"file_path": nb}, **STREAM),
            lambda: tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "c1", "new_source": f"print('turn {turn} {attempt}')"}, **STREAM),
            lambda: tool_use(
                "NotebookEdit",
                {"notebook_path": nb, "cell_id": "c0", "new_source": f"x = {turn}", "cell_type": "code", "edit_mode": "insert"},
                **STREAM,
            ),
            delete,
        ]
    elif kind == "bash":
        cmd = (
            f"printf 'turn {attempt}\\n' >> log.txt && mkdir -p b{turn} && printf '{attempt}' > b{turn}/f.txt"
            f" && sleep 0.05 && rm -rf b{turn - 1}"
        )
        steps = [lambda: tool_use("Bash", {"command": cmd}, **STREAM)]
    else:  # mixed
        steps = [
            lambda: tool_uses([("Read", {"file_path": notes}), ("Read", {"file_path": nb})], **STREAM),
            lambda: message_reply(
                text_block("Saving a copy."),
                tool_block("Write", {"file_path": str(ws / "out" / f"m{turn}.txt"), "content": f"mixed {attempt}\n"}),
                tool_block("Bash", {"command": f"cp notes.txt notes.bak && printf 'm{attempt}\\n' >> log.txt"}),
                **STREAM,
            ),
            lambda: tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "c1", "new_source": f"y = '{attempt}'"}, **STREAM),
        ]
    if k < len(steps):
        return steps[k]()
    return None


def scripted_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The fake API's answer to any request of the campaign (stateless: prompt and step decide)."""
    found = _PROMPT.findall(last_prompt(body))
    if not found:
        return text("This is not a crash-test prompt.")
    _ep, turn, attempt, kind, ws = found[-1]
    step = _step(kind, steps_since_prompt(body), Path(ws), int(turn), attempt, body)
    return step if step is not None else text(f"Done with turn {turn} ({kind}).", **STREAM)


# ---------------------------------------------------------------------------
# Workspaces
# ---------------------------------------------------------------------------

_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def notebook_with_outputs() -> dict[str, Any]:
    """A v4.5 notebook with ids c0..c3 and stream, result, image and error outputs."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"id": "c0", "cell_type": "markdown", "metadata": {}, "source": "# Analysis\n\nNotes."},
            {"id": "c1", "cell_type": "code", "metadata": {}, "execution_count": 1, "source": "print('hi')\n1 + 1",
             "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi\n"},
                         {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": "2"}}]},
            {"id": "c2", "cell_type": "code", "metadata": {}, "execution_count": 2, "source": "plot()",
             "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"image/png": _PNG, "text/plain": "<Figure>"}}]},
            {"id": "c3", "cell_type": "code", "metadata": {}, "execution_count": 3, "source": "1/0",
             "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                          "traceback": ["\u001b[31mZeroDivisionError\u001b[0m: division by zero"]}]},
        ],
    }


def make_workspace(ws: Path) -> None:
    ws.mkdir(parents=True)
    (ws / "notes.txt").write_text("alpha\nMARK\nomega\n")
    (ws / "nb.ipynb").write_text(json.dumps(notebook_with_outputs(), indent=1) + "\n")
    (ws / "data").mkdir()
    (ws / "data" / "keep.csv").write_text("a,b\n1,2\n")


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def _without_leftovers(tree: dict[str, bytes | None]) -> dict[str, bytes | None]:
    """The tree without temp files of killed atomic writes, nor folders only they kept alive."""
    out = {k: v for k, v in tree.items() if not LEFTOVER.match(Path(k).name)}
    holders = {str(Path(k).parent) + "/" for k in tree if k not in out}
    for d in sorted(holders, key=len, reverse=True):
        if d in out and not any(k != d and k.startswith(d) for k in out):
            del out[d]
    return out


def _tree_diff(want: dict[str, bytes | None], got: dict[str, bytes | None]) -> str:
    parts = []
    for k in sorted(set(want) | set(got)):
        if k not in got:
            parts.append(f"missing {k}")
        elif k not in want:
            parts.append(f"extra {k}")
        elif want[k] != got[k]:
            parts.append(f"differs {k}")
    return "; ".join(parts[:8])


def _read_lines(path: Path, report: CrashReport, where: str) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not line.endswith(b"\n"):
                report.torn_tails += 1
                continue
            report.failures.append(f"{where}: {path.name} line {i + 1} is unreadable: {line[:120]!r}")
            continue
        if not isinstance(obj, dict):
            report.failures.append(f"{where}: {path.name} line {i + 1} is not an object")
            continue
        out.append(obj)
    return out


def _blob_refs(r: dict[str, Any]) -> list[str]:
    out = []
    for src in [r, *(r.get("changes") or []), *(r.get("steps") or [])]:
        if not isinstance(src, dict):
            continue
        for key in ("before", "after", "base"):
            v = src.get(key)
            if isinstance(v, str) and len(v) == 64:
                out.append(v)
    return out


@dataclass
class Episode:
    index: int
    root: Path
    rng: random.Random
    kills_wanted: int
    script: list[str] = field(default_factory=list)
    segments: int = 0
    kills: int = 0

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def home(self) -> Path:
        return self.root / "store"

    @property
    def side(self) -> Path:
        return self.root / "side"

    @property
    def sid(self) -> str:
        return f"crash-ep{self.index}"

    def prompt(self, turn: int, attempt: str) -> str:
        return f"crash ep={self.index} turn={turn} attempt={attempt} kind={self.script[turn]} ws={self.ws}"

    def done(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in (self.side / "done.jsonl").read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []

    def snapshots(self) -> list[tuple[str, str, dict[str, bytes | None]]]:
        """(attempt, prompt, tree) of every turn a worker started, oldest first."""
        out = []
        for p in self.side.glob("snap-*.json"):
            doc = json.loads(p.read_text())
            attempt = p.name[len("snap-") : -len(".json")]
            out.append((attempt, doc["prompt"], decode_tree(doc["tree"])))
        out.sort(key=lambda x: tuple(int(n) for n in x[0].split(".")))
        return out


def check_episode(ep: Episode, report: CrashReport, where: str, lock: threading.Lock) -> None:
    """The checks 1-5 of the module docstring, on what the last worker left."""
    failures: list[str] = []
    local = CrashReport()
    sdir = ep.home / "sessions" / ep.sid
    snaps = ep.snapshots()
    if not (sdir / "transcript.jsonl").exists():
        # Killed before the session existed: nothing may have changed.
        if snaps and _without_leftovers(tree_snapshot(ep.ws)) != _without_leftovers(snaps[-1][2]):
            failures.append(f"{where}: the workspace changed before the session existed")
        _merge(report, local, failures, lock)
        return
    entries = _read_lines(sdir / "transcript.jsonl", local, where)
    records = _read_lines(sdir / "checkpoints.jsonl", local, where)

    # 2. completed turns
    prompts = {prompt_text(e.get("message")): e.get("uuid") for e in entries if is_prompt_entry(e)}
    results = {e.get("checkpoint") for e in entries if e.get("type") == "result"}
    for d in ep.done():
        if prompts.get(d["prompt"]) != d["checkpoint"] or d["checkpoint"] not in results:
            failures.append(f"{where}: completed turn {d['attempt']} is missing from the transcript")
        if d["subtype"] != "success":
            failures.append(f"{where}: turn {d['attempt']} ended with {d['subtype']}")

    # 3. write-ahead: tool results have records, records have blobs
    blobs = BlobStore(ep.home / "blobs")
    for r in records:
        for digest in _blob_refs(r):
            try:
                blobs.get(digest)
            except BlobMissingError as e:
                failures.append(f"{where}: record {r.get('r')} {r.get('path')}: {e}")
    uses: dict[str, tuple[str, dict[str, Any]]] = {}
    checkpoint = None
    recorded = {(r.get("checkpoint"), r.get("path")) for r in records if r.get("r") in ("file", "cells")}
    for entry in entries:
        if is_prompt_entry(entry):
            checkpoint = entry.get("uuid")
        msg = entry.get("message") or {}
        content = msg.get("content")
        for b in content if isinstance(content, list) else []:
            if b.get("type") == "tool_use":
                uses[b["id"]] = (b["name"], b.get("input") or {})
            elif b.get("type") == "tool_result" and not b.get("is_error") and b.get("tool_use_id") in uses:
                name, inp = uses[b["tool_use_id"]]
                if name in ("Write", "Edit", "NotebookEdit"):
                    path = Path(str(inp.get("file_path") or inp.get("notebook_path")))
                    rel = path.relative_to(ep.ws).as_posix()
                    if (checkpoint, rel) not in recorded:
                        failures.append(f"{where}: {name} of {rel} succeeded without a checkpoint record")

    # 4. rewinds, on a copy
    tmp = Path(tempfile.mkdtemp(prefix="crash-check-"))
    try:
        shutil.copytree(ep.home, tmp / "store", symlinks=True)
        shutil.copytree(ep.ws, tmp / "ws", symlinks=True)
        local.leftovers += sum(1 for k in tree_snapshot(tmp / "ws") if LEFTOVER.match(Path(k).name))
        log = CheckpointLog(
            session_id=ep.sid, cwd=tmp / "ws",
            records=JsonlFile(tmp / "store" / "sessions" / ep.sid / "checkpoints.jsonl"),
            blobs=BlobStore(tmp / "store" / "blobs"),
        )
        try:
            log.recover()
            turn_ids = {r.get("checkpoint") for r in log.read_records() if r.get("r") == "turn"}
            if snaps:
                _attempt, last_prompt_, last_tree = snaps[-1]
                if prompts.get(last_prompt_) not in turn_ids:
                    # The last turn died before its checkpoint record: no tool ran.
                    now = _without_leftovers(tree_snapshot(tmp / "ws"))
                    if now != _without_leftovers(last_tree):
                        failures.append(f"{where}: a turn killed before its checkpoint changed files: {_tree_diff(last_tree, now)}")
                    local.untouched_checked += 1
            for attempt, prompt, tree in reversed(snaps):
                cp = prompts.get(prompt)
                if cp not in turn_ids:
                    continue
                result = log.rewind(str(cp))
                local.rewind_conflicts += len(result.conflicts)
                for c in result.conflicts:
                    local.conflict_reasons[c.reason] += 1
                got = _without_leftovers(tree_snapshot(tmp / "ws"))
                want = _without_leftovers(tree)
                if got != want:
                    failures.append(
                        f"{where}: rewind to turn {attempt} gave a different tree: {_tree_diff(want, got)}; "
                        f"conflicts {[(c.path, c.reason) for c in result.conflicts]}"
                    )
                local.rewinds_checked += 1
        finally:
            log.records.close()

        # 5. the index agrees with the transcript
        store = SessionStore(tmp / "store")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TranscriptWarning)
                info = store.info(ep.sid)
                scanned = store.scan_info(ep.sid)
            if scanned is None or info.num_turns != scanned.num_turns:
                failures.append(f"{where}: the index says {info.num_turns} turns, the transcript {scanned and scanned.num_turns}")
            local.index_checks += 1
        finally:
            store.index.close()
    except Exception as e:  # a check that cannot even run is a failure too
        failures.append(f"{where}: check failed: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _merge(report, local, failures, lock)


def _merge(report: CrashReport, local: CrashReport, failures: list[str], lock: threading.Lock) -> None:
    with lock:
        report.failures.extend(failures + local.failures)
        report.rewinds_checked += local.rewinds_checked
        report.untouched_checked += local.untouched_checked
        report.torn_tails += local.torn_tails
        report.leftovers += local.leftovers
        report.rewind_conflicts += local.rewind_conflicts
        report.index_checks += local.index_checks
        report.conflict_reasons.update(local.conflict_reasons)


# ---------------------------------------------------------------------------
# Running episodes
# ---------------------------------------------------------------------------


# multiprocessing is not thread-safe here: Process.start() polls every child of the process
# (its _cleanup), and two threads reading one child's exit status from the forkserver both
# wait on it and one reads EOF (exit code 255). Status reads and starts take this lock; the
# blocking waits happen outside it, on the sentinel alone.
_PROC_LOCK = threading.Lock()


def _start(proc: Any) -> None:
    with _PROC_LOCK:
        proc.start()


def _status_known(proc: Any) -> bool:
    popen = getattr(proc, "_popen", None)  # exitcode/is_alive would read the status again
    return popen is not None and popen.returncode is not None


def _alive(proc: Any) -> bool:
    if _status_known(proc):
        return False
    if not multiprocessing.connection.wait([proc.sentinel], 0):
        return True
    with _PROC_LOCK:
        return bool(proc.is_alive())


def _join(proc: Any, timeout: float | None) -> None:
    if _status_known(proc):
        return
    multiprocessing.connection.wait([proc.sentinel], timeout)
    with _PROC_LOCK:
        proc.join(0)


def _procs_in(ws: Path) -> list[int]:
    """Processes (Bash commands orphaned by a kill) whose cwd is inside ``ws``."""
    out = []
    prefix = str(ws)
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cwd = str((p / "cwd").readlink())
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            out.append(int(p.name))
    return out


def _wait_orphans(ws: Path, timeout: float = 15.0) -> None:
    if not Path("/proc").is_dir():
        time.sleep(0.3)
        return
    deadline = time.monotonic() + timeout
    while _procs_in(ws) and time.monotonic() < deadline:
        time.sleep(0.01)


class Campaign:
    """Runs episodes (in threads), each a sequence of worker processes, until the kills are done."""

    def __init__(self, root: Path, kills: int, jobs: int, seed: int) -> None:
        self.root = root
        self.kills = kills
        self.jobs = max(1, jobs)
        self.seed = seed
        self.report = CrashReport(seed=seed)
        self.lock = threading.Lock()
        self.pending = 0  # kills promised to running episodes
        self.max_failures = 25
        self.hits_per_turn = dict(_HITS_PER_TURN)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tests.reliability.preload"])
        self.ctx = ctx

    def run(self) -> CrashReport:
        t0 = time.monotonic()
        counter = iter(range(1 << 30))
        threads = []

        def worker() -> None:
            # New episodes until the campaign has its kills (the last ones may add a few more).
            while True:
                with self.lock:
                    if self.report.kills + self.pending >= self.kills or len(self.report.failures) >= self.max_failures:
                        return
                    i = next(counter)
                    if i >= self.kills + self.jobs:  # every episode kills at least once, or something is wrong
                        self.report.failures.append(f"{i} episodes did not reach {self.kills} kills")
                        return
                    quota = min(KILLS_PER_EPISODE, self.kills - self.report.kills - self.pending)
                    self.pending += quota
                killed = [0]
                try:
                    self._episode(i, quota, killed)
                except Exception as e:
                    with self.lock:
                        self.report.failures.append(f"episode {i}: harness error {type(e).__name__}: {e}")
                finally:
                    with self.lock:
                        self.pending -= quota - killed[0]

        for _ in range(self.jobs):
            t = threading.Thread(target=worker, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        self.report.seconds = time.monotonic() - t0
        return self.report

    def _plan(self, rng: random.Random, remaining_turns: int) -> str:
        phase = rng.choices(list(PHASES), weights=[24, 24, 24, 24, 4])[0]
        label = rng.choice(PHASES[phase])
        if label.startswith("timed"):
            return label
        est = self.hits_per_turn[label] * min(2, remaining_turns)
        return f"{label}:{rng.randint(1, max(1, round(est)))}"

    def _episode(self, index: int, quota: int, counted: list[int]) -> None:
        rng = random.Random(self.seed * 1000 + index)
        ep = Episode(index, self.root / f"ep{index}", rng, quota)
        ep.script = [rng.choice(KINDS) for _ in range(TURNS_PER_EPISODE)]
        make_workspace(ep.ws)
        ep.side.mkdir()
        with FakeAnthropicServer() as server:
            server.set_default(scripted_reply)
            killed_before = False
            while True:
                done = ep.done()
                next_turn = len({d["turn"] for d in done})
                if next_turn >= len(ep.script):
                    break
                if ep.segments > quota * 3 + 10:
                    with self.lock:
                        self.report.failures.append(f"episode {index}: no progress after {ep.segments} worker runs")
                    break
                ep.segments += 1
                plan = self._plan(rng, len(ep.script) - next_turn) if ep.kills < quota else None
                turns = [
                    {"turn": t, "attempt": f"{ep.segments}.{t}", "prompt": ep.prompt(t, f"{ep.segments}.{t}")}
                    for t in range(next_turn, len(ep.script))
                ]
                cfg = {
                    "segment": ep.segments, "sid": ep.sid, "home": str(ep.home), "ws": str(ep.ws),
                    "side": str(ep.side), "base_url": server.url, "api_key": API_KEY, "turns": turns,
                    "crash_at": plan if plan and not plan.startswith("timed") else None,
                }
                killed = self._run_segment(ep, server, cfg, plan, rng)
                with self.lock:
                    self.report.segments += 1
                    self.report.resumes += 1 if killed_before else 0
                if killed:
                    assert plan is not None
                    label = plan.rsplit(":", 1)[0] if not plan.startswith("timed") else plan
                    ep.kills += 1
                    with self.lock:
                        self.report.kills += 1
                        self.pending -= 1
                        counted[0] += 1
                        self.report.by_label[label] += 1
                        self.report.by_phase[PHASE_OF[label]] += 1
                    _wait_orphans(ep.ws)
                    check_episode(ep, self.report, f"episode {index} kill {ep.kills} ({plan})", self.lock)
                killed_before = killed
            check_episode(ep, self.report, f"episode {index} end", self.lock)
        with self.lock:
            self.report.episodes += 1
            self.report.turns_completed += len(ep.done())

    def _run_segment(
        self, ep: Episode, server: FakeAnthropicServer, cfg: dict[str, Any], plan: str | None, rng: random.Random
    ) -> bool:
        """Run one worker; True if it died by SIGKILL."""
        from .worker import run_segment

        before = len(server.message_requests)
        proc = self.ctx.Process(target=run_segment, args=(cfg,), daemon=True)
        _start(proc)
        if plan == "timed-stream":
            deadline = time.monotonic() + 20
            while len(server.message_requests) == before and _alive(proc) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05))
            if _alive(proc):
                proc.kill()
        elif plan == "timed":
            _join(proc, rng.uniform(0.02, 0.8))
            if _alive(proc):
                proc.kill()
        _join(proc, 120)
        if _alive(proc):
            proc.kill()
            _join(proc, None)
            with self.lock:
                self.report.failures.append(f"episode {ep.index} segment {cfg['segment']}: the worker hung")
            return False
        code = proc.exitcode
        self._learn(ep, cfg, plan)
        if code == -9:
            return True
        if code != 0:
            err = ep.side / f"error-{cfg['segment']}.txt"
            log = ep.side / f"worker-{cfg['segment']}.log"
            detail = err.read_text()[-2000:] if err.exists() else (log.read_text()[-2000:] if log.exists() else "")
            with self.lock:
                self.report.failures.append(f"episode {ep.index} segment {cfg['segment']}: worker exit {code}: {detail}")
        return False

    def _learn(self, ep: Episode, cfg: dict[str, Any], plan: str | None) -> None:
        """A worker that ran turns without dying tells how often its crash point is hit per turn."""
        if not plan or plan.startswith("timed"):
            return
        try:
            hits = json.loads((ep.side / f"hits-{cfg['segment']}.json").read_text())["hits"]
        except (FileNotFoundError, ValueError, KeyError):
            return
        label = plan.rsplit(":", 1)[0]
        n_turns = len(cfg["turns"])
        if label in hits and n_turns:
            with self.lock:
                self.hits_per_turn[label] = max(0.5, (self.hits_per_turn[label] + hits[label] / n_turns) / 2)


def run_campaign(root: Path, kills: int | None = None, jobs: int | None = None, seed: int | None = None) -> CrashReport:
    """Run a crash campaign under ``root``; sizes default to the ``AGENT_MAGIC_CRASH_*`` variables."""
    kills = kills if kills is not None else int(os.environ.get("AGENT_MAGIC_CRASH_KILLS", "200"))
    jobs = jobs if jobs is not None else int(os.environ.get("AGENT_MAGIC_CRASH_JOBS", str(min(2, os.cpu_count() or 1))))
    if seed is None:
        seed = int(os.environ.get("AGENT_MAGIC_CRASH_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 30)
    return Campaign(root, kills, jobs, seed).run()




def run_plans(root: Path, script: list[str], plans: list[str | None]) -> CrashReport:
    """One episode with the given kill plans, one per worker run, in order; then worker runs
    without kills until the script is done. Checks after every kill and at the end."""
    campaign = Campaign(root, kills=0, jobs=1, seed=1)
    rng = random.Random(1)
    ep = Episode(0, root / "ep0", rng, len(plans), script=list(script))
    make_workspace(ep.ws)
    ep.side.mkdir()
    report, lock = campaign.report, campaign.lock
    with FakeAnthropicServer() as server:
        server.set_default(scripted_reply)
        queue = list(plans)
        while True:
            next_turn = len({d["turn"] for d in ep.done()})
            if next_turn >= len(script) or ep.segments > len(plans) + len(script) + 2:
                break
            ep.segments += 1
            plan = queue.pop(0) if queue else None
            turns = [
                {"turn": t, "attempt": f"{ep.segments}.{t}", "prompt": ep.prompt(t, f"{ep.segments}.{t}")}
                for t in range(next_turn, len(script))
            ]
            cfg = {
                "segment": ep.segments, "sid": ep.sid, "home": str(ep.home), "ws": str(ep.ws), "side": str(ep.side),
                "base_url": server.url, "api_key": API_KEY, "turns": turns,
                "crash_at": plan if plan and not plan.startswith("timed") else None,
            }
            killed = campaign._run_segment(ep, server, cfg, plan, rng)
            report.segments += 1
            if killed:
                assert plan is not None
                label = plan.rsplit(":", 1)[0] if not plan.startswith("timed") else plan
                report.kills += 1
                report.by_label[label] += 1
                report.by_phase[PHASE_OF[label]] += 1
                _wait_orphans(ep.ws)
                check_episode(ep, report, f"kill {report.kills} ({plan})", lock)
        check_episode(ep, report, "end", lock)
    report.turns_completed = len(ep.done())
    report.episodes = 1
    return report
