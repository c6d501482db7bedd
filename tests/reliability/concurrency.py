"""Concurrency: several processes on one store, one session, one transcript.

Worker targets (run in processes forked from the crash harness's warm
forkserver) and the checks shared by ``tests/test_concurrency.py`` and
``bench/reliability.py``:

- :func:`writers_on_one_session`: a slow turn holds the session; a second
  process with a short ``lock_timeout`` gets ``SessionLockedError``, a third
  waits and then runs its turn after the first, seeing the first's messages;
  the transcript's turns are whole and in order (never interleaved).
- :func:`readers_while_writing`: a process appends large lines while this one
  reads the transcript over and over; every read sees whole lines (only the
  last may be cut, mid-write).
- :func:`many_creators`: processes create sessions in one store at once,
  listing while they go; the index ends with exactly the sessions on disk.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_magic.testing import FakeAnthropicServer, text, tool_use

API_KEY = "sk-ant-concurrency-key-0123456789"


# ---------------------------------------------------------------------------
# Process targets
# ---------------------------------------------------------------------------


def _child_env(cfg: dict[str, Any]) -> None:
    for var in ("AGENT_MAGIC_MODEL", "AGENT_MAGIC_PROVIDER", "ANTHROPIC_AUTH_TOKEN", "AGENT_MAGIC_CRASH_AT"):
        os.environ.pop(var, None)
    os.environ.update(AGENT_MAGIC_HOME=cfg["home"], AGENT_MAGIC_MAX_RETRIES="0")
    if "base_url" in cfg:
        os.environ.update(ANTHROPIC_BASE_URL=cfg["base_url"], ANTHROPIC_API_KEY=API_KEY)


def _report(path: str, obj: dict[str, Any]) -> None:
    tmp = path + ".part"
    Path(tmp).write_text(json.dumps(obj))
    os.replace(tmp, path)


def run_turn_process(cfg: dict[str, Any]) -> None:
    """Resume ``cfg['sid']`` and run one turn with ``cfg['prompt']``; report to ``cfg['out']``."""
    import anyio

    from agent_magic import AgentClient, AgentOptions, ResultMessage

    _child_env(cfg)
    out: dict[str, Any] = {"pid": os.getpid(), "start": time.time()}

    async def go() -> None:
        opts = AgentOptions(
            cwd=cfg["cwd"], home=cfg["home"], resume=cfg["sid"], lock_timeout=cfg["lock_timeout"],
            permission_mode="bypassPermissions",
        )
        async with AgentClient(opts) as client:
            await client.query(cfg["prompt"])
            out["locked_at"] = time.time()
            async for msg in client.receive_response():
                if isinstance(msg, ResultMessage):
                    out["subtype"] = msg.subtype
                    out["checkpoint"] = msg.checkpoint_id

    try:
        anyio.run(go)
        out["ok"] = True
    except Exception as e:
        out.update(ok=False, error=type(e).__name__, message=str(e), traceback=traceback.format_exc())
    out["end"] = time.time()
    _report(cfg["out"], out)


def append_process(cfg: dict[str, Any]) -> None:
    """Append ``cfg['n']`` lines of about ``cfg['size']`` bytes to ``cfg['path']``, one ``JsonlFile.append`` each."""
    from agent_magic.store.jsonl import JsonlFile

    jf = JsonlFile(Path(cfg["path"]))
    for i in range(cfg["n"]):
        jf.append({"type": "assistant", "i": i, "pad": "é" * (cfg["size"] // 2)})
    jf.close()


def create_process(cfg: dict[str, Any], go: Any = None) -> None:
    """Create ``cfg['n']`` sessions in the store, listing the store between them.

    With ``go`` (an event), every creator opens the store at the same moment: the first
    one to arrive makes its index while the others open it.
    """
    from agent_magic import list_sessions
    from agent_magic.store.local import SessionStore

    _child_env(cfg)
    if go is not None:
        go.wait(60)
    store = SessionStore.at(cfg["home"])
    made, listed = [], []
    errors: list[str] = []
    for i in range(cfg["n"]):
        try:
            made.append(store.create(cwd=cfg["home"], scope=f"scope-{i % 3}", model="m", title=f"{cfg['name']} {i}"))
            listed.append(len(list_sessions(home=cfg["home"])))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    _report(cfg["out"], {"made": made, "listed": listed, "errors": errors})


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def _ctx() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.reliability.preload"])
    return ctx


@dataclass
class ConcurrencyReport:
    """What the scenarios did and found."""

    scenarios: int = 0
    processes: int = 0
    turns: int = 0
    locked_out: int = 0
    waited: int = 0
    reads: int = 0
    torn_reads: int = 0
    lines_appended: int = 0
    sessions_created: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"concurrency: {self.scenarios} scenarios, {self.processes} processes; {self.turns} turns in shared "
            f"sessions ({self.locked_out} refused with SessionLockedError, {self.waited} waited for the lock); "
            f"{self.reads} reads during {self.lines_appended} appends ({self.torn_reads} saw a line mid-write, "
            f"none a broken one); {self.sessions_created} sessions created at once; data lost: {len(self.failures)}; "
            f"{self.seconds:.1f}s"
        )

    def merge(self, other: ConcurrencyReport) -> None:
        for name in ("scenarios", "processes", "turns", "locked_out", "waited", "reads", "torn_reads",
                     "lines_appended", "sessions_created"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures
        self.seconds += other.seconds


def check_turns_whole(entries: list[dict[str, Any]]) -> list[str]:
    """Problems with the turns of a transcript: a turn interleaved with another, a broken chain."""
    problems = []
    last_msg: Any = None
    open_turn: Any = None
    for i, e in enumerate(entries):
        t = e.get("type")
        if t == "session":
            continue
        if t in ("user", "assistant", "result") and e.get("parent_uuid") != last_msg:
            problems.append(f"line {i + 1} ({t}) follows {e.get('parent_uuid')}, not the line before it ({last_msg})")
        if t == "user" and e.get("is_prompt"):
            if open_turn is not None:
                problems.append(f"line {i + 1}: a prompt inside the turn {open_turn}")
            open_turn = e.get("uuid")
        if t == "result":
            if e.get("checkpoint") != open_turn:
                problems.append(f"line {i + 1}: the result of {e.get('checkpoint')} inside the turn {open_turn}")
            open_turn = None
        if t in ("user", "assistant"):
            last_msg = e.get("uuid")
    return problems


def writers_on_one_session(root: Path) -> ConcurrencyReport:
    """A slow turn, a process that must give up at once, a process that must wait."""
    from agent_magic import AgentClient, AgentOptions  # noqa: F401  (imported for the forkserver's sake)
    from agent_magic.store.jsonl import parse_lines, read_raw_lines
    from agent_magic.store.local import SessionStore

    t0 = time.monotonic()
    report = ConcurrencyReport(scenarios=1)
    home, cwd = root / "store", root / "project"
    cwd.mkdir(parents=True)
    ctx = _ctx()
    with FakeAnthropicServer() as server:
        server.on_prompt("slow", tool_use("Write", {"file_path": str(cwd / "a.txt"), "content": "A\n"}, delay=0.01),
                         text("Slow turn done. " * 30, chunk_size=4, delay=0.01))
        server.on_prompt("quick", text("Quick turn done."))
        server.on_prompt("first", text("Session started."))
        base = {"home": str(home), "cwd": str(cwd), "base_url": server.url}

        # The session, with one turn, made by a process of its own.
        store = SessionStore(home)
        sid = store.create(cwd=str(cwd), scope=str(cwd), model=None)
        store.index.close()
        procs = []

        def start(name: str, prompt: str, lock_timeout: float) -> tuple[Any, str]:
            out = str(root / f"{name}.json")
            p = ctx.Process(target=run_turn_process, args=({**base, "sid": sid, "prompt": prompt, "lock_timeout": lock_timeout, "out": out},))
            p.start()
            procs.append(p)
            return p, out

        p, _ = start("first", "first turn", 10)
        p.join(60)
        _, slow_out = start("slow", "slow turn", 10)
        deadline = time.monotonic() + 30
        while len(server.message_requests) < 2 and time.monotonic() < deadline:  # the slow turn holds the lock
            time.sleep(0.01)
        _, refused_out = start("refused", "quick turn (should be refused)", 0.2)
        _, waiting_out = start("waiting", "quick turn (waits)", 60)
        for p in procs:
            p.join(120)
        report.processes += len(procs)
        res = {name: json.loads(Path(o).read_text()) for name, o in
               (("slow", slow_out), ("refused", refused_out), ("waiting", waiting_out))}
        if not res["slow"].get("ok") or res["slow"].get("subtype") != "success":
            report.failures.append(f"the slow turn failed: {res['slow']}")
        if res["refused"].get("error") != "SessionLockedError" or "busy" not in res["refused"].get("message", ""):
            report.failures.append(f"the second writer was not refused with SessionLockedError: {res['refused']}")
        else:
            report.locked_out += 1
        if not res["waiting"].get("ok") or res["waiting"].get("subtype") != "success":
            report.failures.append(f"the waiting writer failed: {res['waiting']}")
        else:
            report.waited += 1
            last = server.message_requests[-1].body or {}
            if "Slow turn done." not in json.dumps(last.get("messages")):
                report.failures.append("the waiting writer did not see the slow turn's messages")
        path = home / "sessions" / sid / "transcript.jsonl"
        entries = parse_lines(read_raw_lines(path), path)
        report.failures += check_turns_whole(entries)
        prompts = [e for e in entries if e.get("is_prompt")]
        report.turns += len(prompts)
        if len(prompts) != 3:
            report.failures.append(f"expected 3 turns in the transcript, found {len(prompts)}")
        # Turns are whole (checked above) and in lock order: the waiting writer's turn after
        # the slow one's, never inside it. (The transcript's order, not clocks of other processes.)
        order = [e["message"]["content"] for e in prompts]
        if order != ["first turn", "slow turn", "quick turn (waits)"]:
            report.failures.append(f"the turns ran out of lock order: {order}")
    report.seconds = time.monotonic() - t0
    return report


def readers_while_writing(root: Path, lines: int = 400, size: int = 200_000) -> ConcurrencyReport:
    """Read a transcript over and over while another process appends big lines to it."""
    import warnings

    from agent_magic.store.jsonl import TranscriptWarning, parse_lines, read_raw_lines

    t0 = time.monotonic()
    report = ConcurrencyReport(scenarios=1, processes=1)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "transcript.jsonl"
    path.touch()
    p = _ctx().Process(target=append_process, args=({"path": str(path), "n": lines, "size": size},))
    p.start()
    seen = 0
    while True:
        alive = p.is_alive()
        raw = read_raw_lines(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TranscriptWarning)
            got = parse_lines(raw, path)
        report.reads += 1
        for w in caught:
            if "torn last line" in str(w.message):
                report.torn_reads += 1
            else:
                report.failures.append(f"a read saw a broken line in the middle: {w.message}")
        if [e["i"] for e in got] != list(range(len(got))):
            report.failures.append("a read saw lines out of order or missing")
        if len(got) < seen:
            report.failures.append("a later read saw fewer lines")
        seen = len(got)
        if not alive:
            break
    p.join(60)
    report.lines_appended = lines
    if seen != lines:
        report.failures.append(f"the last read saw {seen} of {lines} lines")
    report.seconds = time.monotonic() - t0
    return report


def many_creators(root: Path, processes: int = 6, each: int = 10) -> ConcurrencyReport:
    """Processes create sessions in one store at once; the index must list exactly them."""
    from agent_magic import list_sessions
    from agent_magic.store.local import SessionStore

    t0 = time.monotonic()
    report = ConcurrencyReport(scenarios=1, processes=processes)
    home = root / "store"
    ctx = _ctx()
    go = ctx.Event()
    procs, outs = [], []
    for k in range(processes):
        out = str(root / f"creator-{k}.json")
        outs.append(out)
        cfg = {"home": str(home), "n": each, "name": f"p{k}", "out": out}
        procs.append(ctx.Process(target=create_process, args=(cfg, go)))
    root.mkdir(parents=True, exist_ok=True)
    for p in procs:
        p.start()
    time.sleep(0.5)  # every creator is waiting at the gate
    go.set()
    for p in procs:
        p.join(120)
    made: list[str] = []
    for out in outs:
        doc = json.loads(Path(out).read_text())
        made += doc["made"]
        report.failures += [f"a creator failed: {e}" for e in doc["errors"]]
    report.sessions_created = len(made)
    if len(set(made)) != processes * each:
        report.failures.append(f"{len(set(made))} distinct sessions created, expected {processes * each}")
    # The index as a new process sees it, and as the creators left it.
    SessionStore.forget_instances()
    listed = {i.session_id for i in list_sessions(home=str(home))}
    on_disk = {d.name for d in (home / "sessions").iterdir() if not d.name.startswith(".")}
    if listed != set(made) or on_disk != set(made):
        report.failures.append(
            f"index lists {len(listed)}, disk has {len(on_disk)}, creators made {len(set(made))} sessions"
        )
    leftovers = [d.name for d in (home / "sessions").iterdir() if d.name.startswith(".")]
    if leftovers:
        report.failures.append(f"staging folders left behind: {leftovers[:3]}")
    SessionStore.forget_instances()
    report.seconds = time.monotonic() - t0
    return report


def run_all(root: Path) -> ConcurrencyReport:
    """Every process-level scenario (the kernel ones need Jupyter and run in the test suite only)."""
    total = ConcurrencyReport()
    total.merge(writers_on_one_session(root / "writers"))
    total.merge(readers_while_writing(root / "readers"))
    total.merge(many_creators(root / "creators"))
    return total
