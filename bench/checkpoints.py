"""Checkpoint storage and speed: what a session's backups cost, and how fast a rewind is.

``python -m bench.checkpoints [--scale tiny|small|full]`` prints the numbers;
``run(scale)`` returns them as a dict. Nothing is asserted. Three workloads:

mixed
    N turns; each writes a new file, edits a source file and replaces one cell
    (of 25, in turn) of a notebook of code cells with outputs and base64 PNGs
    (saved as the benchmark writes it, not in nbformat's layout); every 10th turn
    also runs Bash (``sed -i`` and a new file). The real tools run against a
    real session store, without a model: backup time is the time spent in the
    checkpoint recorder per tool call. Then a fresh process rewinds to the
    first checkpoint.
writes
    N turns of one Write each, through the agent loop against the fake
    Messages API: bytes of transcript + checkpoint records + backups, and the
    rewind to the first checkpoint from a fresh process (N files deleted).
notebook
    One Read, then M turns of one NotebookEdit each on the big notebook,
    through the loop: bytes in total, the one base copy, and per edit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from agent_magic.checkpoints import CheckpointLog
from agent_magic.store.home import new_uuid
from agent_magic.store.jsonl import JsonlFile
from agent_magic.store.local import SessionStore
from agent_magic.tools.base import CellEdit, ToolContext

from ._notebook import build_notebook

MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    name: str
    turns: int
    notebook_bytes: int
    notebook_edits: int
    rewind_runs: int


SIZES = {
    "tiny": Sizes("tiny", 20, 1 * MB, 5, 2),
    "small": Sizes("small", 100, 2 * MB, 20, 3),
    "full": Sizes("full", 500, 10 * MB, 100, 5),
}


def _sizes(scale: Any) -> Sizes:
    name = getattr(scale, "name", scale)
    if isinstance(name, str):
        return SIZES[name]
    f = float(name)
    full = SIZES["full"]
    return Sizes(f"x{f:g}", max(2, int(full.turns * f)), max(MB // 4, int(full.notebook_bytes * f)), max(2, int(full.notebook_edits * f)), 3)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)
    return {
        "n": len(s),
        "min": s[0],
        "mean": statistics.fmean(s),
        "median": statistics.median(s),
        "p95": s[min(len(s) - 1, int(len(s) * 0.95))],
        "max": s[-1],
    }


class _TimedLog(CheckpointLog):
    """The checkpoint log, timing each recorder call (what a tool waits for its backup)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.times: dict[str, list[float]] = {}

    def _time(self, kind: str, t0: float) -> None:
        self.times.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        t0 = time.perf_counter()
        super().before_file_change(path, new_content, tool)
        self._time(tool, t0)

    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        t0 = time.perf_counter()
        super().before_cell_edit(path, notebook_bytes, edit, new_notebook_bytes)
        self._time("NotebookEdit", t0)

    def before_command(self) -> object:
        t0 = time.perf_counter()
        token = super().before_command()
        self._time("Bash (before)", t0)
        return token

    def after_command(self, token: object) -> list[str]:
        t0 = time.perf_counter()
        out = super().after_command(token)
        self._time("Bash (after)", t0)
        return out


_CHILD = """
import sys, time, json
t0 = time.perf_counter()
import agent_magic
from agent_magic import _api
t1, c1 = time.perf_counter(), time.process_time()
r = _api.rewind_files(sys.argv[1], sys.argv[2], home=sys.argv[3])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "rewind_ms": (t2 - t1) * 1000, "rewind_cpu_ms": (c2 - c1) * 1000,
                  "changes": len(r.changes), "ok": r.ok}))
"""


def _fresh_rewind(home: Path, work: Path, sid: str, cp: str, runs: int) -> dict[str, Any]:
    """Rewind ``sid`` to ``cp`` in a new Python process, ``runs`` times from pristine copies of home and work."""
    pristine = home.parent / "pristine"
    shutil.rmtree(pristine, ignore_errors=True)
    pristine.mkdir()
    shutil.copytree(home, pristine / "home", symlinks=True)
    shutil.copytree(work, pristine / "work", symlinks=True)
    rewinds, cpu, imports, out = [], [], [], {}
    for _ in range(runs):
        shutil.rmtree(home)
        shutil.rmtree(work)
        shutil.copytree(pristine / "home", home, symlinks=True)
        shutil.copytree(pristine / "work", work, symlinks=True)
        proc = subprocess.run([sys.executable, "-c", _CHILD, sid, cp, str(home)], capture_output=True, text=True, check=True)
        out = json.loads(proc.stdout)
        rewinds.append(out["rewind_ms"])
        cpu.append(out["rewind_cpu_ms"])
        imports.append(out["import_ms"])
    shutil.rmtree(pristine, ignore_errors=True)
    return {
        "rewind_ms": _stats(rewinds),
        "rewind_cpu_ms": _stats(cpu),
        "import_ms": _stats(imports),
        "paths_changed": out.get("changes"),
        "ok": out.get("ok"),
    }


# ---------------------------------------------------------------------------
# mixed: real tools, no model
# ---------------------------------------------------------------------------


def mixed(sz: Sizes, tmp: Path) -> dict[str, Any]:
    from agent_magic.tools.bash import BashTool
    from agent_magic.tools.files import EditTool, ReadTool, WriteTool
    from agent_magic.tools.notebook import NotebookEditTool

    home, work = tmp / "mixed-home", tmp / "mixed-work"
    work.mkdir()
    nb = work / "analysis.ipynb"
    code_ids = build_notebook(nb, sz.notebook_bytes)
    nb_size = nb.stat().st_size
    (work / "src").mkdir()
    for k in range(10):
        (work / "src" / f"mod{k}.py").write_text("VERSION = -1\n\n" + "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(40)))
    (work / "data.csv").write_text("".join(f"{i},{i * i},label{i % 7}\n" for i in range(2000)))

    store = SessionStore.at(home)
    sid = store.create(cwd=str(work), scope=str(work), model="bench")
    log = _TimedLog(
        session_id=sid, cwd=work, records=JsonlFile(store.checkpoints_path(sid)), blobs=store.blobs, exclude=[store.home]
    )
    ctx = ToolContext(cwd=work, session_id=sid, recorder=log, env=dict(os.environ))
    read, write, edit, nbedit, bash = ReadTool(), WriteTool(), EditTool(), NotebookEditTool(), BashTool()
    tool_ms: dict[str, list[float]] = {}
    per_turn: list[int] = []
    full_copy: list[int] = []
    checkpoints: list[str] = []
    baseline = _dir_bytes(home)

    async def call(tool: Any, name: str, inp: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        res = await tool.run(inp, ctx)
        tool_ms.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        if res.is_error:
            raise RuntimeError(f"{name} failed: {res.content}")

    async def go() -> None:
        await read.run({"file_path": str(nb)}, ctx)
        for k in range(10):
            await read.run({"file_path": str(work / "src" / f"mod{k}.py")}, ctx)
        for t in range(sz.turns):
            cp = new_uuid()
            checkpoints.append(cp)
            before = _dir_bytes(home)
            log.begin_turn(cp, t + 1, f"turn {t}")
            touched = 0
            new_file = work / "out" / f"result_{t:04d}.py"
            content = f"# result {t}\nVALUE = {t}\n" + "".join(f"row_{i} = {t * i}\n" for i in range(30))
            await call(write, "Write", {"file_path": str(new_file), "content": content})
            touched += len(content)
            mod = work / "src" / f"mod{t % 10}.py"
            last = t - 10 if t >= 10 else -1
            await call(edit, "Edit", {"file_path": str(mod), "old_string": f"VERSION = {last}\n", "new_string": f"VERSION = {t}\n"})
            touched += mod.stat().st_size
            cid = code_ids[t % 25]  # a few cells, edited again and again: the notebook keeps its outputs
            await call(nbedit, "NotebookEdit", {"notebook_path": str(nb), "cell_id": cid, "new_source": f"result = step({t})\nresult"})
            touched += nb.stat().st_size
            if t % 10 == 9:
                await call(bash, "Bash", {"command": f"sed -i 's/^{t},/{t}x,/' data.csv && echo {t} > out/bash_{t}.txt"})
                touched += (work / "data.csv").stat().st_size
            log.end_turn()
            per_turn.append(_dir_bytes(home) - before)
            full_copy.append(touched)

    t0 = time.perf_counter()
    anyio.run(go)
    session_s = time.perf_counter() - t0
    log.records.close()
    stored = _dir_bytes(home) - baseline
    rewind = _fresh_rewind(home, work, sid, checkpoints[0], sz.rewind_runs)
    nb_z = len(zlib.compress(nb.read_bytes(), 1))
    return {
        "turns": sz.turns,
        "notebook_bytes": nb_size,
        "notebook_zlib1_bytes": nb_z,
        "session_seconds": session_s,
        "stored_bytes_total": stored,
        "stored_bytes_first_checkpoint": per_turn[0],
        "stored_bytes_per_checkpoint_after_first": _stats([float(x) for x in per_turn[1:]]),
        "full_copy_bytes_per_checkpoint": statistics.fmean(full_copy),
        "backup_ms": {k: _stats(v) for k, v in log.times.items()},
        "notebook_base_copy_ms": log.times["NotebookEdit"][0],
        "notebook_base_kinds": _base_kinds(home, sid),
        "tool_ms": {k: _stats(v) for k, v in tool_ms.items()},
        "rewind_to_first_fresh_process": rewind,
    }


# ---------------------------------------------------------------------------
# writes / notebook: through the agent loop and the fake Messages API
# ---------------------------------------------------------------------------


def _loop_session(tmp: Path, name: str, turns: list[tuple[str, list[Any]]], prepare: Callable[[Path], None] | None = None) -> tuple[Path, Path, str, list[str], list[int]]:
    from agent_magic import AgentClient, AgentOptions, ResultMessage
    from agent_magic.testing import FakeAnthropicServer

    home, work = tmp / f"{name}-home", tmp / f"{name}-work"
    work.mkdir()
    if prepare is not None:
        prepare(work)
    cps: list[str] = []
    after_turn: list[int] = []
    sid = ""
    with FakeAnthropicServer() as server, server.environ():

        async def go() -> str:
            async with AgentClient(AgentOptions(cwd=work, permission_mode="bypassPermissions", home=home)) as client:
                for prompt, replies in turns:
                    server.add(*replies)
                    await client.query(prompt)
                    async for m in client.receive_response():
                        if isinstance(m, ResultMessage):
                            if m.is_error:
                                raise RuntimeError(f"turn failed: {m.result}")
                            cps.append(str(m.checkpoint_id))
                    after_turn.append(_dir_bytes(home / "blobs"))
                return str(client.session_id)

        sid = anyio.run(go)
    return home, work, sid, cps, after_turn


def _base_kinds(home: Path, sid: str) -> list[str]:
    path = home / "sessions" / sid / "checkpoints.jsonl"
    recs = [json.loads(x) for x in path.read_bytes().splitlines()]
    return [str(r.get("base_kind")) for r in recs if r.get("base")]


def _session_bytes(home: Path, sid: str) -> dict[str, int]:
    d = home / "sessions" / sid
    return {
        "transcript": (d / "transcript.jsonl").stat().st_size,
        "checkpoint_records": (d / "checkpoints.jsonl").stat().st_size if (d / "checkpoints.jsonl").exists() else 0,
        "backups": _dir_bytes(home / "blobs"),
    }


def writes(sz: Sizes, tmp: Path) -> dict[str, Any]:
    from agent_magic.testing import text, tool_use

    def turns(work: Path) -> list[tuple[str, list[Any]]]:
        return [
            (f"write file {k}", [tool_use("Write", {"file_path": str(work / f"notes_{k:04d}.md"), "content": f"# Note {k}\n\n" + "Some text about the data.\n" * 20}), text("Written.")])
            for k in range(sz.turns)
        ]

    work_path = tmp / "writes-work"
    t0 = time.perf_counter()
    home, work, sid, cps, _ = _loop_session(tmp, "writes", turns(work_path))
    session_s = time.perf_counter() - t0
    sizes = _session_bytes(home, sid)
    content_bytes = sum(p.stat().st_size for p in work.iterdir())
    rewind = _fresh_rewind(home, work, sid, cps[0], sz.rewind_runs)
    return {
        "turns": sz.turns,
        "session_seconds": session_s,
        "bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "files_written_bytes": content_bytes,
        "rewind_to_first_fresh_process": rewind,
    }


def notebook(sz: Sizes, tmp: Path) -> dict[str, Any]:
    from agent_magic.testing import text, tool_use

    work_path = tmp / "notebook-work"
    work_path.mkdir()
    nb = work_path / "analysis.ipynb"
    ids = build_notebook(nb, sz.notebook_bytes)
    nb_size = nb.stat().st_size
    turns = [("read the notebook", [tool_use("Read", {"file_path": str(nb)}), text("Read it.")])]
    turns += [
        (
            f"edit cell {k}",
            [tool_use("NotebookEdit", {"notebook_path": str(nb), "cell_id": ids[k % len(ids)], "new_source": f"df = load({k})\ndf.describe()"}), text("Edited.")],
        )
        for k in range(sz.notebook_edits)
    ]
    shutil.rmtree(work_path)

    def prepare(work: Path) -> None:
        # Saved as Jupyter saves it (nbformat's layout), so its base copy is kept as cells.
        import nbformat

        nbf: Any = nbformat  # only partly typed
        path = work / "analysis.ipynb"
        build_notebook(path, sz.notebook_bytes)
        nbf.write(nbf.read(path, as_version=4), path)

    t0 = time.perf_counter()
    home, work, sid, cps, after_turn = _loop_session(tmp, "notebook", turns, prepare)
    session_s = time.perf_counter() - t0
    sizes = _session_bytes(home, sid)
    base = after_turn[1] - after_turn[0]  # the first edit stores the notebook's base copy + its cell
    per_edit = [float(b - a) for a, b in itertools.pairwise(after_turn[1:])]
    rewind = _fresh_rewind(home, work, sid, cps[1], sz.rewind_runs)
    return {
        "edits": sz.notebook_edits,
        "notebook_bytes": nb_size,
        "session_seconds": session_s,
        "bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "first_edit_backup_bytes": base,
        "notebook_base_kinds": _base_kinds(home, sid),
        "backup_bytes_per_later_edit": _stats(per_edit),
        "rewind_all_edits_fresh_process": rewind,
    }


# ---------------------------------------------------------------------------


def run(scale: Any = "full", only: tuple[str, ...] = ("mixed", "writes", "notebook")) -> dict[str, Any]:
    """Run the workloads at ``scale`` (``tiny``/``small``/``full``, or a fraction of full); return the numbers."""
    sz = _sizes(scale)
    out: dict[str, Any] = {"scale": sz.name}
    tmp = Path(tempfile.mkdtemp(prefix="am-bench-checkpoints-"))
    try:
        for name, fn in (("mixed", mixed), ("writes", writes), ("notebook", notebook)):
            if name in only:
                out[name] = fn(sz, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f} kB" if n < 10 * MB else f"{n / MB:,.1f} MB"


def _rw(rw: dict[str, Any]) -> str:
    w, c = rw["rewind_ms"], rw["rewind_cpu_ms"]
    return (
        f"median {w['median']:.1f} ms, min {w['min']:.1f} ms wall; CPU median {c['median']:.1f} ms, min {c['min']:.1f} ms "
        f"(import {rw['import_ms']['median']:.0f} ms, not included)"
    )


def report(r: dict[str, Any]) -> str:
    lines = [f"Checkpoint benchmark (scale {r['scale']})"]
    if "mixed" in r:
        m = r["mixed"]
        per = m["stored_bytes_per_checkpoint_after_first"]
        rw = m["rewind_to_first_fresh_process"]
        lines += [
            "",
            f"mixed: {m['turns']} turns (Write + Edit + NotebookEdit on a {_kb(m['notebook_bytes'])} notebook; Bash every 10th)",
            f"  stored per checkpoint: median {_kb(per['median'])}, mean {_kb(per['mean'])}, p95 {_kb(per['p95'])} "
            f"(a full copy of what each turn touched: {_kb(m['full_copy_bytes_per_checkpoint'])})",
            f"  first checkpoint (incl. the notebook's base copy, kept as {'/'.join(m['notebook_base_kinds'])}): {_kb(m['stored_bytes_first_checkpoint'])} "
            f"(the notebook zlib-compressed: {_kb(m['notebook_zlib1_bytes'])})",
            f"  total stored: {_kb(m['stored_bytes_total'])}",
            "  backup time per tool call (recorder only, ms):",
        ]
        for k, s in m["backup_ms"].items():
            lines.append(f"    {k:14} median {s['median']:7.2f}  mean {s['mean']:7.2f}  p95 {s['p95']:7.2f}  max {s['max']:7.1f}")
        lines.append(f"    (first NotebookEdit, storing the base copy: {m['notebook_base_copy_ms']:.0f} ms)")
        lines.append("  whole tool call (ms): " + ", ".join(f"{k} {s['median']:.1f}" for k, s in m["tool_ms"].items()))
        lines.append(
            f"  rewind to the first checkpoint, fresh process: {_rw(rw)} ({rw['paths_changed']} paths)"
        )
    if "writes" in r:
        w = r["writes"]
        rw = w["rewind_to_first_fresh_process"]
        lines += [
            "",
            f"writes: {w['turns']} Write turns through the loop",
            f"  transcript {_kb(w['bytes']['transcript'])} + checkpoint records {_kb(w['bytes']['checkpoint_records'])} "
            f"+ backups {_kb(w['bytes']['backups'])} = {_kb(w['total_bytes'])} (files written: {_kb(w['files_written_bytes'])})",
            f"  rewind to the first checkpoint ({rw['paths_changed']} files), fresh process: {_rw(rw)}",
        ]
    if "notebook" in r:
        n = r["notebook"]
        rw = n["rewind_all_edits_fresh_process"]
        lines += [
            "",
            f"notebook: {n['edits']} one-cell NotebookEdits on a {_kb(n['notebook_bytes'])} notebook through the loop",
            f"  transcript {_kb(n['bytes']['transcript'])} + checkpoint records {_kb(n['bytes']['checkpoint_records'])} "
            f"+ backups {_kb(n['bytes']['backups'])} = {_kb(n['total_bytes'])}",
            f"  first edit: {_kb(n['first_edit_backup_bytes'])} (the base copy, kept as {'/'.join(n['notebook_base_kinds'])}); later edits: median "
            f"{_kb(n['backup_bytes_per_later_edit']['median'])} each",
            f"  rewind of all {n['edits']} edits, fresh process: {_rw(rw)}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoints", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", default="full", help="tiny, small, full, or a fraction of full (e.g. 0.1)")
    p.add_argument("--only", default="mixed,writes,notebook", help="comma-separated workloads")
    p.add_argument("--json", dest="json_path", help="also write the numbers here")
    args = p.parse_args(argv)
    scale: Any = args.scale if args.scale in SIZES else float(args.scale)
    out: dict[str, Any] = {}
    for name in args.only.split(","):  # one at a time: print each as soon as it is done
        r = run(scale, (name,))
        out.update(r)
        print(report(r) + "\n", flush=True)
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
