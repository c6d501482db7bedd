"""Kernel variable snapshots (issue 18): time, bytes stored and peak extra memory.

``python -m bench.kernel_snapshots [--cases df:32,df:200,df:1024,array:1024] [--out PATH]``
prints a table and writes JSON (default ``bench/results/kernel_snapshots.json``).
Nothing is asserted. Each case runs in a fresh interpreter (``--case``), so peak
memory is that case's alone:

1. build the value (a DataFrame of 8 float64, 2 int64 and 1 categorical column,
   or a float64 array) and warm up (imports, the hashing threads);
2. snapshot it into a new store (``cold``: every buffer is new and written);
3. snapshot it again unchanged (``warm``: buffers hashed, found, not written);
4. change it as the agent would (DataFrame: ``drop(columns=..., inplace=True)`` and
   a doubled column; array: a slice written), then plan and restore in place, and
   check the restored value equals a copy taken before.

Peak extra memory is the peak resident set size during a step (``VmHWM`` in
``/proc/self/status``, reset before the step by writing 5 to
``/proc/self/clear_refs``) minus the resident size just before it. The page cache
of the written files is not part of it. The store is a temporary folder on the
same disk as ``$TMPDIR``.

Targets (issue 18): snapshot under 0.5 s per 200 MB, restore under 1.5 s per
200 MB, extra peak memory under 10% of the snapshotted size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

MB = 1 << 20
DEFAULT_CASES = "df:32,df:200,df:1024,array:1024"
OUT = Path(__file__).parent / "results" / "kernel_snapshots.json"


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _build(kind: str, mb: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    if kind == "array":
        return rng.random(mb * MB // 8)
    rows = mb * MB // (10 * 8 + 1)
    cols: dict[str, Any] = {f"f{i}": rng.random(rows) for i in range(8)}
    cols["i0"] = np.arange(rows)
    cols["i1"] = rng.integers(0, 1000, rows)
    cols["cat"] = pd.Categorical.from_codes(rng.integers(0, 100, rows).astype("int8"), [f"c{i}" for i in range(100)])
    return pd.DataFrame(cols)


def _change(kind: str, value: Any) -> None:
    if kind == "array":
        value[: value.size // 4] = 0.0
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3.1 deprecates inplace=; the agent's code still uses it
        value.drop(columns=["f1"], inplace=True)
    value["f2"] = value["f2"] * 2


def run_case(spec: str) -> dict[str, Any]:
    """One case, in this process: ``df:<MB>`` or ``array:<MB>``."""
    from agent_magic.checkpoints.variables import VariableSnapshots, names_touched

    kind, _, size = spec.partition(":")
    mb = int(size)
    value = _build(kind, mb)
    nbytes = int(value.memory_usage(deep=True).sum()) if kind == "df" else int(value.nbytes)
    reference = value.copy()
    ns: dict[str, Any] = {"data": value, "alias": value}
    root = Path(tempfile.mkdtemp(prefix="kernel-snapshots-"))
    try:
        warm_store = VariableSnapshots(root / "warmup")
        warm_store.snapshot({"x": _build(kind, 1)}, ["x"], key="w")  # imports, hashing threads
        store = VariableSnapshots(root / "store")
        touched = names_touched("data.drop(columns=['f1'], inplace=True)", ns)

        rss = _reset_peak()
        t = time.perf_counter()
        rec = store.snapshot(ns, touched, key="cold")
        cold = time.perf_counter() - t
        cold_peak = _status("VmHWM") - rss

        rss = _reset_peak()
        t = time.perf_counter()
        store.snapshot(ns, touched, key="warm")
        warm = time.perf_counter() - t
        warm_peak = _status("VmHWM") - rss

        _change(kind, value)
        rss = _reset_peak()
        t = time.perf_counter()
        plan = store.plan_restore(ns, [rec])
        result = store.restore(ns, plan)
        restore = time.perf_counter() - t
        restore_peak = _status("VmHWM") - rss
        if kind == "df":
            equal = bool(ns["data"].equals(reference))
        else:
            import numpy as np

            equal = bool(np.array_equal(ns["data"], reference))
        usage = store.disk_usage()
        return {
            "case": spec,
            "bytes": nbytes,
            "snapshot_cold_s": round(cold, 3),
            "snapshot_warm_s": round(warm, 3),
            "restore_s": round(restore, 3),
            "stored_bytes": usage.total_bytes,
            "buffer_files": usage.buffer_files,
            "peak_extra_snapshot_bytes": cold_peak,
            "peak_extra_snapshot_warm_bytes": warm_peak,
            "peak_extra_restore_bytes": restore_peak,
            "restored_equal": equal,
            "same_object": ns["data"] is value and ns["alias"] is value,
            "in_place": result.in_place,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _targets(r: dict[str, Any]) -> dict[str, bool]:
    per200 = r["bytes"] / (200 * MB)
    return {
        "snapshot_cold": r["snapshot_cold_s"] < 0.5 * per200,
        "snapshot_warm": r["snapshot_warm_s"] < 0.5 * per200,
        "restore": r["restore_s"] < 1.5 * per200,
        "memory_snapshot": r["peak_extra_snapshot_bytes"] < 0.1 * r["bytes"],
        "memory_restore": r["peak_extra_restore_bytes"] < 0.1 * r["bytes"],
    }


def _machine() -> dict[str, Any]:
    import numpy
    import pandas

    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem / (1 << 30), 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_snapshots", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated df:<MB> / array:<MB>")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process (the child)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    results = []
    for spec in args.cases.split(","):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.kernel_snapshots", "--case", spec],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
            check=False,
        )
        if proc.returncode != 0:
            print(f"{spec}: failed\n{proc.stderr}", file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["targets_met"] = _targets(r)
        results.append(r)

    head = f"{'case':<11}{'MB':>6}{'snap cold s':>12}{'snap warm s':>12}{'restore s':>10}{'stored MB':>10}"
    head += f"{'peak snap MB':>13}{'peak rest MB':>13}  equal  same obj"
    print(head)
    for r in results:
        print(
            f"{r['case']:<11}{r['bytes'] / MB:>6.0f}{r['snapshot_cold_s']:>12.3f}{r['snapshot_warm_s']:>12.3f}"
            f"{r['restore_s']:>10.3f}{r['stored_bytes'] / MB:>10.0f}"
            f"{r['peak_extra_snapshot_bytes'] / MB:>13.1f}{r['peak_extra_restore_bytes'] / MB:>13.1f}"
            f"  {r['restored_equal']!s:<6} {r['same_object']!s}"
        )
    print("targets: snapshot < 0.5 s / 200 MB, restore < 1.5 s / 200 MB, extra peak memory < 10% of the size")
    for r in results:
        missed = [k for k, ok in r["targets_met"].items() if not ok]
        print(f"  {r['case']}: {'all met' if not missed else 'missed: ' + ', '.join(missed)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": _machine(), "results": results}, indent=1) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
