"""The workloads, the session fixtures they share, and how each system's side is run.

Timed operations on agent-magic's side run in a fresh Python process
(:mod:`bench._child`) with the library imported before the clock starts;
Claude Code's run in this process, each starting a fresh CLI process as the
SDK always does. Cold starts run both in a fresh Python process with nothing
imported. Sessions are built by driving real turns on both systems, once per
scale, and every run starts from a pristine copy of the session's folders.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _claude_code as cc
from . import _ours as ours
from ._child import RESULT_PREFIX, run_warm
from ._notebook import build_notebook
from ._script import first_request_after, prompt
from ._stats import Figure

OURS = "ours"
CC = "claude_code"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scale:
    name: str
    resume_turns: tuple[int, int]
    long_turns: int
    notebook_bytes: int
    notebook_edits: int
    list_sizes: tuple[int, int]
    runs: int


SCALES = {
    "tiny": Scale("tiny", (5, 20), 20, 1_000_000, 5, (20, 100), 1),
    "small": Scale("small", (20, 100), 100, 2_000_000, 20, (100, 1000), 3),
    "full": Scale("full", (50, 500), 500, 10_000_000, 100, (1000, 10_000), 5),
}


@dataclass
class Row:
    """One line of the table."""

    workload: str  # the group --only selects
    label: str
    ours: Figure
    claude_code: Figure


class Skip(Exception):
    """This system cannot run this measurement; the message is the table cell."""


# --------------------------------------------------------------------------- fixtures


@dataclass
class Fixture:
    """A session on disk for one system, with a pristine copy to restore before each run.

    For agent-magic ``root`` holds ``work`` and ``home`` (the store); for
    Claude Code ``work``, ``home`` and ``cfg`` (``CLAUDE_CONFIG_DIR``).
    """

    system: str
    root: Path
    session_id: str = ""
    checkpoints: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def pristine(self) -> Path:
        return self.root.with_name(self.root.name + ".pristine")

    def snapshot(self) -> None:
        shutil.copytree(self.root, self.pristine, symlinks=True)

    def restore(self) -> None:
        for sub in self.pristine.iterdir():
            target = self.root / sub.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(sub, target, symlinks=True)


def write_prompt(work: Path, k: int) -> str:
    name = f"f{k:04d}.txt"
    return prompt("Write", {"file_path": str(work / name), "content": f"file {k}\n"}, note=f"Turn {k}: write {name}.")


def bench_files(work: Path) -> int:
    return sum(1 for p in work.glob("f[0-9][0-9][0-9][0-9].txt"))


def _check(out: dict[str, Any], what: str) -> None:
    problems = list(out.get("errors") or []) + [f"tool error: {t}" for t in out.get("tool_errors") or []]
    if out.get("error"):
        problems.append(str(out["error"]))
    if problems:
        raise RuntimeError(f"{what}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))


# --------------------------------------------------------------------------- the bench


class Bench:
    """Shared state of one ``python -m bench`` invocation."""

    def __init__(self, scale: Scale, runs: int, tmp: Path, url: str, server: Any, systems: list[str], log: Callable[[str], None]):
        self.scale = scale
        self.runs = runs
        self.tmp = tmp
        self.url = url
        self.server = server
        self.systems = systems
        self.log = log
        self._fixtures: dict[tuple[str, ...], Fixture] = {}
        self._n = 0

    def fresh_root(self, system: str, what: str) -> Path:
        self._n += 1
        root = self.tmp / f"{system}-{what}-{self._n}"
        (root / "work").mkdir(parents=True)
        (root / "home").mkdir()
        if system == CC:
            (root / "cfg").mkdir()
        return root

    def absent(self, system: str) -> str:
        """The table cell of a system that is not run."""
        return "not installed" if system == CC and not cc.available() else "not run"

    # -- running one operation --------------------------------------------------
    def child_env(self, home: Path | None = None) -> dict[str, str]:
        e = dict(os.environ)
        e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [e.get("PYTHONPATH")])])
        e["ANTHROPIC_BASE_URL"] = self.url
        e["ANTHROPIC_API_KEY"] = "sk-ant-bench-fake"
        if home is not None:
            e["AGENT_MAGIC_HOME"] = str(home)
        return e

    def settle(self) -> None:
        """Before a measurement: drop the server's record of earlier requests and collect garbage.

        Building a 500-turn session leaves the server holding every request body it parsed
        (hundreds of MB of objects); a full collection of those in the server's process,
        landing in the middle of a timed run, would be measured as the system's time.
        """
        self.server.clear_requests()
        gc.collect()

    def child(self, system: str, op: str, kwargs: dict[str, Any], *, warm: bool, home: Path | None = None) -> dict[str, Any]:
        """Run one operation in a fresh process (see :mod:`bench._child`); its result plus ``t_spawn``."""
        self.settle()
        spec: dict[str, Any] = {"system": system, "op": op, "kwargs": kwargs, "warm": warm}
        t_spawn = time.time()
        if warm:
            spec["env"] = {"AGENT_MAGIC_HOME": str(home)} if home is not None else {}
            warm_out = run_warm(spec)
            warm_out["t_spawn"] = t_spawn
            return warm_out
        proc = subprocess.run(
            [sys.executable, "-m", "bench._child"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=self.child_env(home),
            cwd=str(REPO),
            timeout=1800,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if not lines:
            raise RuntimeError(f"child {system}/{op} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
        out: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
        out["t_spawn"] = t_spawn
        return out

    def cc_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.settle()
        res = fn(*args, **kwargs)
        if asyncio.iscoroutine(res):
            return asyncio.run(res)
        return res

    def first_request(self, t0: float) -> float | None:
        t = first_request_after(self.server, t0)
        return None if t is None else t - t0

    def request_after(self, t0: float) -> Any:
        reqs = [r for r in self.server.message_requests if r.time >= t0]
        return min(reqs, key=lambda r: r.time) if reqs else None

    # -- fixtures ---------------------------------------------------------------
    def write_session(self, system: str, n: int) -> Fixture:
        """A session of ``n`` turns, each writing one new file (``f0001.txt`` ...)."""
        key = (system, "writes", str(n))
        if key in self._fixtures:
            return self._fixtures[key]
        root = self.fresh_root(system, f"writes{n}")
        fx = Fixture(system, root)
        prompts = [write_prompt(fx.work, k) for k in range(1, n + 1)]
        sizes: dict[int, int] = {}
        marks = {m for m in (50, 100, 200, 300, 400, 500) if m <= n} | {n}
        self.log(f"  building a {n}-turn session on {system} ...")
        t = time.perf_counter()

        def on_turn(k: int) -> None:
            # The session id is known only after the first result: sum the store's files instead.
            if k not in marks:
                return
            if system == OURS:
                files = [*(fx.home / "sessions").rglob("*.jsonl"), *(fx.home / "blobs").rglob("*")]
            else:
                cfg = fx.root / "cfg"
                files = [*(cfg / "projects").rglob("*.jsonl"), *(cfg / "file-history").rglob("*")]
            sizes[k] = sum(f.stat().st_size for f in files if f.is_file())

        if system == OURS:
            out = ours.run_turns(str(fx.home), str(fx.work), prompts, on_turn=on_turn)
        else:
            out = asyncio.run(cc.run_turns(str(fx.root), self.url, prompts, on_turn=on_turn))
        _check(out, f"building the {n}-turn session")
        fx.session_id = out["session_id"]
        fx.checkpoints = out["checkpoints"]
        if len(fx.checkpoints) != n or bench_files(fx.work) != n:
            raise RuntimeError(f"built session has {len(fx.checkpoints)} checkpoints and {bench_files(fx.work)} files, expected {n}")
        tt = out["turn_times"]
        fx.info = {
            "build_seconds": time.perf_counter() - t,
            "bytes_at_turn": sizes,
            "late_turn_times": tt[-max(1, n // 10) :],
        }
        fx.snapshot()
        self._fixtures[key] = fx
        return fx

    def drop(self, *key: str) -> None:
        """Delete a fixture no later workload needs (the notebook sessions take gigabytes)."""
        fx = self._fixtures.pop(tuple(key), None)
        if fx is not None:
            shutil.rmtree(fx.root, ignore_errors=True)
            shutil.rmtree(fx.pristine, ignore_errors=True)

    def storage(self, fx: Fixture) -> dict[str, int]:
        if fx.system == OURS:
            return ours.storage_bytes(str(fx.home), fx.session_id)
        return cc.storage_bytes(str(fx.root), fx.session_id)

    def notebook_session(self, system: str) -> Fixture:
        """One Read of a large notebook, then one-cell NotebookEdits, one per turn."""
        sc = self.scale
        key = (system, "notebook")
        if key in self._fixtures:
            return self._fixtures[key]
        root = self.fresh_root(system, "notebook")
        fx = Fixture(system, root)
        nb = fx.work / "analysis.ipynb"
        ids = build_notebook(nb, sc.notebook_bytes)
        nb_bytes = nb.stat().st_size
        if len(ids) < sc.notebook_edits:
            raise RuntimeError(f"notebook has {len(ids)} code cells, fewer than {sc.notebook_edits} edits")
        step = len(ids) // sc.notebook_edits
        prompts = [prompt("Read", {"file_path": str(nb)}, note="Read the notebook.")]
        for k in range(sc.notebook_edits):
            cell = ids[k * step]
            prompts.append(
                prompt(
                    "NotebookEdit",
                    {"notebook_path": str(nb), "cell_id": cell, "new_source": f"result_{k} = summarize(df_{k})\nresult_{k}"},
                    note=f"Turn {k + 1}: rewrite cell {cell}.",
                )
            )
        self.log(f"  building the notebook session ({nb_bytes / 1e6:.1f} MB, {sc.notebook_edits} edits) on {system} ...")
        if system == OURS:
            out = ours.run_turns(str(fx.home), str(fx.work), prompts)
        else:
            out = asyncio.run(cc.run_turns(str(fx.root), self.url, prompts))
        _check(out, "building the notebook session")
        fx.session_id = out["session_id"]
        fx.checkpoints = out["checkpoints"]
        fx.info = {"notebook_bytes": nb_bytes, "notebook_bytes_after": nb.stat().st_size, "edit_turn_times": out["turn_times"][1:], "read_turn_time": out["turn_times"][0]}
        self._fixtures[key] = fx
        return fx

    def many_sessions(self, system: str, n: int) -> Fixture:
        """``n`` one-turn sessions in one project: one real session and copies of it under new ids.

        One fixture per system grows as larger sizes are asked for. The first
        time, the last copy is resumed with a prompt to check that a copy is a
        working session (its history reaches the API).
        """
        key = (system, "many")
        fx = self._fixtures.get(key)
        if fx is None:
            root = self.fresh_root(system, "many")
            fx = Fixture(system, root)
            p = [write_prompt(fx.work, 1)]
            if system == OURS:
                out = ours.run_turns(str(fx.home), str(fx.work), p)
            else:
                out = asyncio.run(cc.run_turns(str(fx.root), self.url, p))
            _check(out, "the template session")
            fx.session_id = out["session_id"]
            fx.info = {"count": 1, "resume_checked": False}
            self._fixtures[key] = fx
        have = int(fx.info["count"])
        if have >= n:
            if have > n:
                raise RuntimeError(f"list sizes must grow: {have} sessions already, {n} asked")
            return fx
        self.log(f"  creating {n - have} more sessions on {system} (to {n}) ...")
        sid = fx.session_id
        if system == OURS:
            src = fx.home / "sessions" / sid
            last = ""
            for _ in range(n - have):
                last = _clone_ours(src, sid)
            # A fresh process brings the index up to date once (as the first listing after the copies would).
            warm = self.child(OURS, "list_all", {"home": str(fx.home), "directory": str(fx.work)}, warm=True, home=fx.home)
            _check(warm, "indexing the copies")
        else:
            src = cc.project_dir(str(fx.root)) / f"{sid}.jsonl"
            for _ in range(n - have):
                last = _clone_cc(src, sid, fx.root / "cfg")
        fx.info["count"] = n
        if not fx.info["resume_checked"]:
            # Resuming adds a turn to that copy; the count of sessions stays the same.
            t0 = time.time()
            nxt = [write_prompt(fx.work, 2)]
            if system == OURS:
                res = ours.run_turns(str(fx.home), str(fx.work), nxt, resume=last)
            else:
                res = asyncio.run(cc.run_turns(str(fx.root), self.url, nxt, resume=last))
            _check(res, "resuming a copied session")
            req = self.request_after(t0)
            n_msgs = len((req.body or {}).get("messages") or []) if req else 0
            if n_msgs < 5:
                raise RuntimeError(f"a copied session resumed without its history ({n_msgs} messages sent)")
            fx.info["resume_checked"] = True
        return fx


def _clone_ours(src: Path, sid: str) -> str:
    new = str(uuid.uuid4())
    dst = src.parent / new
    dst.mkdir()
    for f in src.iterdir():
        if f.name == ".lock" or not f.is_file():
            continue
        (dst / f.name).write_bytes(f.read_bytes().replace(sid.encode(), new.encode()))
    return new


def _clone_cc(src: Path, sid: str, cfg: Path) -> str:
    new = str(uuid.uuid4())
    (src.parent / f"{new}.jsonl").write_bytes(src.read_bytes().replace(sid.encode(), new.encode()))
    fh = cfg / "file-history" / sid
    if fh.is_dir():
        shutil.copytree(fh, cfg / "file-history" / new)
    return new


# --------------------------------------------------------------------------- helpers for workloads


def per_system(bench: Bench, unit: str, measure: Callable[[str], Iterator[float]]) -> dict[str, Figure]:
    """Run ``measure(system)`` for each system; collect its values, or the reason it gave none."""
    figs: dict[str, Figure] = {}
    for system in (OURS, CC):
        fig = Figure(unit)
        if system not in bench.systems:
            fig.note = bench.absent(system)
        else:
            try:
                for v in measure(system):
                    fig.values.append(v)
            except Skip as e:
                fig.note = str(e)
            except Exception as e:
                fig.note = f"error: {type(e).__name__}: {str(e)[:160]}"
                bench.log(f"    {system}: {fig.note}")
        figs[system] = fig
    return figs


class Collector:
    """Gathers several figures from one pass over the runs (e.g. time to result and to first request)."""

    def __init__(self, bench: Bench, names: dict[str, str]):
        self.bench = bench
        self.names = names
        self.figs = {(n, s): Figure(u) for n, u in names.items() for s in (OURS, CC)}

    def run(self, system: str, once: Callable[[], dict[str, float]], detail: Callable[[], dict[str, Any]] | None = None) -> None:
        if system not in self.bench.systems:
            for n in self.names:
                self.figs[n, system].note = self.bench.absent(system)
            return
        try:
            for _ in range(self.bench.runs):
                vals = once()
                for n, v in vals.items():
                    if n in self.names:
                        self.figs[n, system].values.append(v)
                    else:  # extra per-run data, kept with every figure of this pass
                        for m in self.names:
                            self.figs[m, system].detail.setdefault(n, []).append(v)
            if detail is not None:
                d = detail()
                for n in self.names:
                    self.figs[n, system].detail.update(d)
        except Skip as e:
            for n in self.names:
                self.figs[n, system].note = str(e)
        except Exception as e:
            note = f"error: {type(e).__name__}: {str(e)[:160]}"
            self.bench.log(f"    {system}: {note}")
            for n in self.names:
                self.figs[n, system].note = note

    def row(self, workload: str, name: str, label: str) -> Row:
        return Row(workload, label, self.figs[name, OURS], self.figs[name, CC])


# --------------------------------------------------------------------------- workloads


def w_cold(bench: Bench) -> list[Row]:
    """One Write then "done" in a new session, from a fresh Python process with nothing imported."""
    col = Collector(bench, {"process": "s", "api": "s", "first": "s"})

    def once(system: str) -> dict[str, float]:
        root = bench.fresh_root(system, "cold")
        p = write_prompt(root / "work", 1)
        if system == OURS:
            out = bench.child(OURS, "run_turns", {"home": str(root / "home"), "cwd": str(root / "work"), "prompts": [p]}, warm=False, home=root / "home")
        else:
            out = bench.child(CC, "query_once", {"root": str(root), "url": bench.url, "prompt": p}, warm=False)
        _check(out, "cold query")
        if bench_files(root / "work") != 1:
            raise RuntimeError("the file was not written")
        first = bench.first_request(out["t0"])
        shutil.rmtree(root, ignore_errors=True)
        return {
            "process": out["t_first_result"] - out["t_spawn"],
            "api": out["t_first_result"] - out["t0"],
            "first": first if first is not None else float("nan"),
            "process_start_to_query_call": out["t0"] - out["t_spawn"],
        }

    for system in (OURS, CC):
        col.run(system, functools.partial(once, system))

    def import_time(system: str) -> Iterator[float]:
        module = "agent_magic" if system == OURS else "claude_agent_sdk"
        code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        for _ in range(bench.runs):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
            yield float(out.stdout.strip().splitlines()[-1])

    imports = per_system(bench, "s", import_time)
    return [
        Row("cold", "import the package (agent_magic / claude_agent_sdk), fresh interpreter", imports[OURS], imports[CC]),
        col.row("cold", "process", "cold query: process start → result"),
        col.row("cold", "api", "cold query: query() call → result"),
        col.row("cold", "first", "cold query: query() call → first API request"),
    ]


def _resume_once(bench: Bench, fx: Fixture, fork: bool) -> dict[str, Any]:
    n = len(fx.checkpoints)
    fx.restore()
    p = write_prompt(fx.work, n + 1)
    if fx.system == OURS:
        out = bench.child(OURS, "run_turns", {"home": str(fx.home), "cwd": str(fx.work), "prompts": [p], "resume": fx.session_id, "fork": fork}, warm=True, home=fx.home)
    else:
        out = bench.cc_call(cc.query_once, str(fx.root), bench.url, p, resume=fx.session_id, fork=fork)
    _check(out, "resume" if not fork else "fork")
    req = bench.request_after(out["t0"])
    n_msgs = len((req.body or {}).get("messages") or []) if req else 0
    if n_msgs < 4 * n:
        raise RuntimeError(f"the resumed request carried {n_msgs} messages; the {n}-turn history was not loaded")
    if fork and out.get("session_id") == fx.session_id:
        raise RuntimeError("fork_session=True continued the original session")
    if bench_files(fx.work) != n + 1:
        raise RuntimeError("the new file was not written")
    return {"result": out["t_first_result"] - out["t0"], "first": req.time - out["t0"], "messages_sent": n_msgs}


def w_resume(bench: Bench) -> list[Row]:
    """Resume an n-turn session (fresh process) and send one more prompt (a Write)."""
    rows: list[Row] = []
    for n in bench.scale.resume_turns:
        col = Collector(bench, {"result": "s", "first": "s"})
        for system in (OURS, CC):
            def once(s: str = system, n: int = n) -> dict[str, float]:
                r = _resume_once(bench, bench.write_session(s, n), fork=False)
                return {"result": r["result"], "first": r["first"], "messages_sent": r["messages_sent"]}

            col.run(system, once)
        rows.append(col.row("resume", "result", f"resume {n}-turn session + 1 prompt → result"))
        rows.append(col.row("resume", "first", f"resume {n}-turn session: query() call → first API request"))
    return rows


def w_fork(bench: Bench) -> list[Row]:
    """Fork the long session: with one prompt (``fork_session=True``), and the helper with no prompt."""
    n = bench.scale.long_turns
    col = Collector(bench, {"result": "s", "helper": "s"})

    def once(system: str) -> dict[str, float]:
        fx = bench.write_session(system, n)
        r = _resume_once(bench, fx, fork=True)
        fx.restore()
        if system == OURS:
            h = bench.child(OURS, "fork_helper", {"home": str(fx.home), "session_id": fx.session_id}, warm=True, home=fx.home)
        else:
            h = cc.fork_helper(str(fx.root), fx.session_id)
        _check(h, "fork helper")
        return {"result": r["result"], "helper": h["t_end"] - h["t0"]}

    for system in (OURS, CC):
        col.run(system, functools.partial(once, system))
    return [
        col.row("fork", "result", f"fork {n}-turn session (fork_session=True) + 1 prompt → result"),
        col.row("fork", "helper", f"fork_session() helper on the {n}-turn session (no prompt)"),
    ]


def w_rewind(bench: Bench) -> list[Row]:
    """Rewind the long session (a file created each turn) from a fresh process; check the files left."""
    n = bench.scale.long_turns
    targets = [("first", 1), ("middle", n // 2 + 1)]
    if n > 100:
        targets.append(("oldest Claude Code keeps", n - 99))
    rows: list[Row] = []
    for name, turn in targets:
        col = Collector(bench, {"t": "s"})

        def once(system: str, turn: int = turn) -> dict[str, float]:
            fx = bench.write_session(system, n)
            fx.restore()
            cp = fx.checkpoints[turn - 1]
            if system == OURS:
                out = bench.child(OURS, "rewind", {"home": str(fx.home), "session_id": fx.session_id, "checkpoint_id": cp}, warm=True, home=fx.home)
            else:
                out = bench.cc_call(cc.rewind, str(fx.root), bench.url, fx.session_id, cp)
            if out.get("error"):
                raise Skip(f"fails: {out['error']}")
            left = bench_files(fx.work)
            if left != turn - 1:
                raise Skip(f"wrong: {left} files left, expected {turn - 1}")
            if system == OURS:
                return {"t": out["t_end"] - out["t0"]}
            return {"t": out["t_rewound"] - out["t0"], "cli_start_and_connect": out["t_connected"] - out["t0"]}

        for system in (OURS, CC):
            col.run(system, functools.partial(once, system))
        rows.append(col.row("rewind", "t", f"rewind {n}-turn session to turn {turn} ({name}), fresh process → files restored"))
    return rows


def w_storage(bench: Bench) -> list[Row]:
    """Bytes on disk of transcript plus backups; and turn times measured while building."""
    n = bench.scale.long_turns
    sc = bench.scale
    rows: list[Row] = []

    def writes(system: str) -> Iterator[float]:
        fx = bench.write_session(system, n)
        b = bench.storage(fx)
        figs_w[system] = fx
        yield float(sum(v for k, v in b.items() if k != "index"))

    figs_w: dict[str, Fixture] = {}
    f = per_system(bench, "B", writes)
    for s, fx in figs_w.items():
        f[s].detail = {"breakdown": bench.storage(fx), "bytes_at_turn": fx.info.get("bytes_at_turn")}
    rows.append(Row("storage", f"storage after {n} Write turns (transcript + checkpoint backups)", f[OURS], f[CC]))

    def late_turn(system: str) -> Iterator[float]:
        yield from bench.write_session(system, n).info["late_turn_times"]

    rows.append(Row("storage", f"one Write turn late in a {n}-turn session (last {max(1, n // 10)} turns)", *_pair(per_system(bench, "s", late_turn))))

    figs_nb: dict[str, Fixture] = {}

    def notebook(system: str) -> Iterator[float]:
        fx = bench.notebook_session(system)
        figs_nb[system] = fx
        b = bench.storage(fx)
        yield float(sum(v for k, v in b.items() if k != "index"))

    f = per_system(bench, "B", notebook)
    for s, fx in figs_nb.items():
        f[s].detail = {"breakdown": bench.storage(fx), "notebook_bytes": fx.info["notebook_bytes"], "notebook_bytes_after": fx.info["notebook_bytes_after"]}
    mb = sc.notebook_bytes / 1e6
    rows.append(Row("storage", f"storage after 1 Read + {sc.notebook_edits} one-cell NotebookEdits ({mb:g} MB notebook)", f[OURS], f[CC]))

    def nb_turn(system: str) -> Iterator[float]:
        yield from bench.notebook_session(system).info["edit_turn_times"]

    rows.append(Row("storage", f"one NotebookEdit turn on the {mb:g} MB notebook", *_pair(per_system(bench, "s", nb_turn))))
    for system in (OURS, CC):
        bench.drop(system, "notebook")
    return rows


def _pair(figs: dict[str, Figure]) -> tuple[Figure, Figure]:
    return figs[OURS], figs[CC]


def w_list(bench: Bench) -> list[Row]:
    """``list_sessions(directory)`` with many sessions on disk (ours in a fresh process)."""
    rows: list[Row] = []
    for n in bench.scale.list_sizes:
        col = Collector(bench, {"t": "s"})

        def once(system: str, n: int = n) -> dict[str, float]:
            fx = bench.many_sessions(system, n)
            if system == OURS:
                out = bench.child(OURS, "list_all", {"home": str(fx.home), "directory": str(fx.work)}, warm=True, home=fx.home)
            else:
                out = cc.list_all(str(fx.root))
            _check(out, "list_sessions")
            if out["count"] != n:
                raise Skip(f"wrong: listed {out['count']} of {n}")
            return {"t": out["t_end"] - out["t0"]}

        for system in (OURS, CC):
            col.run(system, functools.partial(once, system))
        rows.append(col.row("list", "t", f"list_sessions() with {n} sessions on disk"))
    return rows


_KERNEL_TIMER = """
import time as _t
_agent_bench_times = []
def _agent_bench_pre(info):
    _agent_bench_times.append(["pre", _t.time()])
def _agent_bench_post(result):
    _agent_bench_times.append(["post", _t.time()])
get_ipython().events.register("pre_run_cell", _agent_bench_pre)
get_ipython().events.register("post_run_cell", _agent_bench_post)
"""


def magic_overhead(bench: Bench) -> tuple[Figure, Figure]:
    """``%%agent`` overhead in a real kernel (agent-magic only).

    From the kernel starting the cell (``pre_run_cell``) to the first request at the
    fake server, and from the server's last SSE byte to the kernel finishing the cell
    (``post_run_cell``). The kernel has finished the extension's background warm-up and
    run one turn before, as a notebook has after its first cell.
    """
    import json

    from jupyter_client.manager import KernelManager

    home = bench.fresh_root("ours", "magic")
    work = home / "nb"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ANTHROPIC_BASE_URL": bench.url, "ANTHROPIC_API_KEY": "bench", "AGENT_MAGIC_HOME": str(home / "store"),
           "JPY_SESSION_NAME": str(work / "bench.ipynb")}
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(work), env=env)
    kc = km.client()
    kc.start_channels()
    start, end = Figure("s"), Figure("s")
    try:
        kc.wait_for_ready(timeout=60)

        def run(code: str) -> dict[str, Any]:
            reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"kernel cell failed: {reply['content'].get('evalue')}")
            return dict(reply["content"])

        run("%load_ext agent_magic")
        # %load_ext imports the API client and nbformat in a background thread (about 2 s here);
        # a person types their first prompt after that. Wait for it, so the timing is the magic's.
        run("import anthropic, nbformat.v4")
        run(_KERNEL_TIMER)
        run("%%agent\n" + prompt(None, note="warm up"))
        n = max(3, bench.runs * 2)
        for k in range(n):
            marker = f"overhead probe {k}"
            bench.settle()
            run("_agent_bench_times.clear()")
            run("%%agent\n" + prompt(None, note=marker))
            printed: list[str] = []

            def keep(msg: dict[str, Any], printed: list[str] = printed) -> None:
                if msg.get("msg_type") == "stream":
                    printed.append(msg["content"]["text"])

            kc.execute_interactive("import json as _j; print(_j.dumps(_agent_bench_times))", timeout=60, output_hook=keep)
            times = json.loads("".join(printed))
            pre = next(t for kind, t in times if kind == "pre")
            post = next(t for kind, t in reversed(times) if kind == "post")
            req = next(r for r in bench.server.message_requests if marker in r.last_prompt)
            if req.completed is None:
                raise RuntimeError("the fake server did not record when its reply ended")
            start.values.append(req.time - pre)
            end.values.append(post - req.completed)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return start, end


def w_magic(bench: Bench) -> list[Row]:
    try:
        start, end = magic_overhead(bench)
    except Exception as e:
        start = Figure("s", note=f"error: {type(e).__name__}: {e}")
        end = Figure("s", note=start.note)
    none = Figure("s", note="n/a (no magics)")
    return [
        Row("magic", "%%agent overhead: cell start to first request (real kernel)", start, none),
        Row("magic", "%%agent overhead: last SSE event to cell end (real kernel)", end, none),
    ]


WORKLOADS: dict[str, Callable[[Bench], list[Row]]] = {
    "cold": w_cold,
    "resume": w_resume,
    "fork": w_fork,
    "rewind": w_rewind,
    "storage": w_storage,
    "list": w_list,
    "magic": w_magic,
}
