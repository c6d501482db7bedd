"""Kernel variable snapshots (issue 18): names an execution touches, snapshot, plan, restore, cleanup.

No kernel: the namespace is a plain dict run with ``exec``, as the ``Python`` tool runs code in ``user_ns``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from agent_magic.checkpoints.variables import (
    SnapshotDataError,
    SnapshotKeyError,
    SnapshotRecord,
    VariableSnapshots,
    fingerprint,
    names_touched,
)

MB = 1 << 20
inplace_deprecated = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")


def _ns(setup: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(setup, ns)
    return ns


def _run(store: VariableSnapshots, ns: dict[str, Any], code: str, key: str) -> SnapshotRecord:
    """What the Python tool will do: snapshot what the code can touch, then run it."""
    record = store.snapshot(ns, names_touched(code, ns), key=key)
    exec(code, ns)
    return record


@pytest.fixture
def store(tmp_path: Path) -> VariableSnapshots:
    return VariableSnapshots(tmp_path / "vars")


def _buffer_files(store: VariableSnapshots) -> list[Path]:
    return [p for p in (store.root / "buffers").rglob("*") if p.is_file()]


# -- names_touched -------------------------------------------------------------


def test_names_touched_from_the_ast() -> None:
    ns = _ns("a = 1; b = [1]; c = 2; d = {}; f_in = 0; lst = []; xs = [1]; unused = 5")
    code = """
import os as o
a += 1
del c
for i in range(3): pass
with open(__file__) as fh: pass
[j for j in xs if (k := j)]
def fn():
    global made
    made = lst
print(len(b), d)
"""
    t = names_touched(code, ns)
    assert {"a", "b", "c", "d", "o", "i", "fh", "k", "fn", "made", "lst", "xs"} <= t.direct
    assert "j" not in t.names  # a comprehension's variable does not leak
    assert not {"print", "len", "range", "open", "__file__"} & t.names  # builtins only read
    assert "unused" not in t.names and "f_in" not in t.names
    assert t.absent == {"o", "i", "fh", "k", "fn", "made"}
    assert names_touched("x = (", ns).syntax_error is not None


def test_names_reached_through_user_functions_are_bounded_by_depth() -> None:
    ns = _ns(
        """
deep = [0]
mid_only = [0]
def h(): deep.append(1)
def g(): mid_only.append(1); h()
def f(): g()
def writer():
    global created_by_fn
    created_by_fn = 1
"""
    )
    t = names_touched("f(); writer()", ns)
    assert {"g", "h", "deep", "mid_only", "created_by_fn"} <= t.via_functions
    assert "created_by_fn" in t.absent
    shallow = names_touched("f()", ns, depth=1)
    assert "g" in shallow.via_functions and "mid_only" not in shallow.names and "deep" not in shallow.names
    limited = names_touched("f()", ns, limit=2)
    assert limited.truncated and len(limited.names) <= 2


def test_aliases_are_added() -> None:
    ns = _ns("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nsame = df\nholder = {'df': df}\nother = 1")
    # A container holding a touched object needs nothing: the object is restored in place.
    assert names_touched("df.loc[0, 'a'] = 5", ns).aliases == {"same"}
    # Reaching an object through a container adds the names bound to what it holds.
    assert {"df", "same"} <= names_touched("holder['df'].loc[0, 'a'] = 5", ns).aliases
    assert "other" not in names_touched("df.loc[0, 'a'] = 5", ns).names


# -- the issue's scenario ------------------------------------------------------


@inplace_deprecated
def test_issue_scenario_restores_everything_in_place(store: VariableSnapshots) -> None:
    ns = _ns(
        """
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
df = pd.DataFrame({'a': rng.random(200_000), 'b': np.arange(200_000), 'c': rng.random(200_000),
                   's': ['v%d' % (i % 50) for i in range(200_000)]})
view_of_df = df
arr = np.zeros((500, 400))
arr_alias = arr
lst = [1, 2]
lst_alias = lst
x = 'old'
g = (i for i in range(10))
"""
    )
    df_before, arr_before = ns["df"].copy(), ns["arr"].copy()
    record = _run(
        store,
        ns,
        """
df.drop(columns=['b'], inplace=True)
df['a'] = df['a'] * 2
arr[10:20] = 7
lst_alias.append(3)
x = 'new'
created = [1, 2, 3]
gen = (i for i in range(3))
next(g)
""",
        "turn1",
    )
    assert record.variables["gen"].state == "absent" and record.variables["created"].state == "absent"
    assert record.variables["g"].state == "not_restorable" and "generator" in (record.variables["g"].reason or "")
    assert record.buffers, "the DataFrame's blocks and the array go out of band"

    plan = store.plan_restore(ns, [record])
    assert plan.not_restorable.keys() == {"g"}
    assert set(plan.to_delete) == {"created", "gen"}
    by_name = {v.name: v for v in plan.variables}
    assert by_name["df"].type == "pandas.DataFrame" and by_name["df"].in_place and by_name["df"].size
    assert any("not restorable g" in line for line in plan.summary())

    df, arr, lst, g = ns["df"], ns["arr"], ns["lst"], ns["g"]
    result = store.restore(ns, plan)
    assert ns["df"] is df is ns["view_of_df"] and ns["df"].equals(df_before)
    assert list(ns["df"].columns) == ["a", "b", "c", "s"] and (ns["df"].dtypes == df_before.dtypes).all()
    assert ns["arr"] is arr is ns["arr_alias"] and np.array_equal(ns["arr"], arr_before)
    assert ns["lst"] is lst is ns["lst_alias"] and lst == [1, 2]
    assert ns["x"] == "old"
    assert "created" not in ns and "gen" not in ns
    assert ns["g"] is g and result.not_restored.keys() == {"g"}
    assert {"df", "arr", "lst", "view_of_df", "arr_alias", "lst_alias"} <= set(result.in_place)
    assert result.rebound == ["x"] and sorted(result.deleted) == ["created", "gen"]
    # The restored frame is a working frame: changing it again does not reach the snapshot.
    ns["df"]["a"] = 0.0
    again = store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["df"].equals(df_before) and again.in_place


def test_two_snapshots_rewound_at_once_earliest_wins(store: VariableSnapshots) -> None:
    ns = _ns("lst = [1]\nx = 'a'\nimport numpy as np\narr = np.arange(100_000.0)")
    arr_before = ns["arr"].copy()
    r1 = _run(store, ns, "lst.append(2); z = 1; arr *= 2", "t1")
    r2 = _run(store, ns, "lst.append(3); z = 2; x = 'b'; arr[:] = 0", "t2")
    assert r2.variables["z"].state == "stored"

    middle = dict(ns)
    store.restore(middle, store.plan_restore(middle, [r2]))
    assert middle["lst"] == [1, 2] and middle["z"] == 1 and middle["x"] == "a"

    lst = ns["lst"]
    result = store.restore(ns, store.plan_restore(ns, [r1, r2]))
    assert ns["lst"] is lst and lst == [1] and ns["x"] == "a" and "z" not in ns
    assert np.array_equal(ns["arr"], arr_before)
    assert result.deleted == ["z"]


def test_unchanged_array_is_stored_once(store: VariableSnapshots) -> None:
    ns = {"big": np.random.default_rng(1).random(50 * MB // 8), "n": 0}
    r1 = store.snapshot(ns, ["big", "n"], key="a")
    ns["n"] = 1
    r2 = store.snapshot(ns, ["big", "n"], key="b")
    files = _buffer_files(store)
    assert len(files) == 1 and files[0].stat().st_size == 50 * MB
    assert r1.buffers == r2.buffers
    usage = store.disk_usage()
    assert usage.snapshots == 2 and usage.buffer_files == 1 and usage.buffer_bytes == 50 * MB
    assert usage.stream_bytes < MB

    ns["big"][0] = -1.0  # one changed element: a new buffer
    store.snapshot(ns, ["big"], key="c")
    assert len(_buffer_files(store)) == 2

    store.delete("a")
    assert len(_buffer_files(store)) == 2  # still used by b and c
    freed = store.gc(["c"])
    assert freed >= 50 * MB and store.keys() == ["c"] and len(_buffer_files(store)) == 1
    store.gc([])
    assert store.disk_usage().total_bytes == 0


def test_equal_buffers_do_not_become_one_array(store: VariableSnapshots) -> None:
    a = np.ones(100_000)
    ns = {"a": a, "b": a.copy()}
    rec = store.snapshot(ns, ["a", "b"], key="k")
    assert len({d for d, _ in rec.buffers}) == 1
    ns["a"], ns["b"] = None, None
    store.restore(ns, store.plan_restore(ns, [rec]))
    ns["a"][0] = 5
    assert ns["b"][0] == 1 and not np.shares_memory(ns["a"], ns["b"])


def test_global_reached_only_through_a_called_function(store: VariableSnapshots) -> None:
    ns = _ns("counter = [0]\nsettings = {'k': 1}\ndef bump():\n    counter.append(1)\n    settings['k'] = 2")
    record = _run(store, ns, "bump()", "t")
    assert {"counter", "settings"} <= set(record.variables)
    counter = ns["counter"]
    store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["counter"] is counter and counter == [0] and ns["settings"] == {"k": 1}


def test_redefined_function_class_and_module_come_back(store: VariableSnapshots) -> None:
    ns = _ns("import numpy as np\ndef f():\n    return 1\nclass Point:\n    def __init__(self):\n        self.x = 1\np = Point()")
    f, point_cls, p = ns["f"], ns["Point"], ns["p"]
    record = _run(store, ns, "def f():\n    return 2\np.x = 5\np.y = 6\nnp = None", "t")
    assert record.variables["f"].in_memory
    result = store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["f"] is f and ns["f"]() == 1 and ns["np"] is np
    assert ns["p"] is p and type(p) is point_cls and vars(p) == {"x": 1}
    assert "p" in result.in_place


def test_rebound_alias_shares_the_restored_object(store: VariableSnapshots) -> None:
    ns = _ns("a = [1]\nb = a")
    a = ns["a"]
    record = _run(store, ns, "a.append(2); b = [9]", "t")
    store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["a"] is a and ns["b"] is a and a == [1]


def test_object_held_in_a_container_keeps_its_identity(store: VariableSnapshots) -> None:
    ns = _ns("import pandas as pd\ndf = pd.DataFrame({'a': [1.0, 2.0]})\nholder = {'df': df}\nrows = [df]")
    df = ns["df"]
    record = _run(store, ns, "holder['df']['a'] = 0.0\nrows.append(1)", "t")
    store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["df"] is df and ns["holder"]["df"] is df and ns["rows"][0] is df and ns["rows"] == [df]
    assert df["a"].tolist() == [1.0, 2.0]


# -- pandas in place -----------------------------------------------------------

_FRAME_CHANGES = [
    "df.drop(columns=['b'], inplace=True)",
    "df['a'] = df['a'] * 2",
    "df['new'] = 1; df['new2'] = df['a'].astype(str)",
    "df.index = df.index + 100",
    "df.drop(index=[0, 1, 2], inplace=True)",
    "df.set_index('s', inplace=True)",
    "df.rename(columns={'a': 'A'}, inplace=True)",
    "df['b'] = df['b'].astype('float32')",
    "df.sort_values('c', ascending=False, inplace=True)",
    "df.loc[5, 'c'] = -1.0; df.attrs['note'] = 'x'",
    "df.columns = pd.MultiIndex.from_product([['top'], df.columns])",
    "df['cat'] = df['s'].astype('category'); df.flags.allows_duplicate_labels = False",
]


@inplace_deprecated
@pytest.mark.parametrize("change", _FRAME_CHANGES)
def test_dataframe_restored_in_place(store: VariableSnapshots, change: str) -> None:
    ns = _ns(
        """
import numpy as np, pandas as pd
df = pd.DataFrame({'a': np.arange(50_000.0), 'b': np.arange(50_000), 'c': np.linspace(0, 1, 50_000),
                   's': ['k%d' % i for i in range(50_000)]})
alias = df
col = df['a']
"""
    )
    df = ns["df"]
    before = df.copy(deep=True)
    record = _run(store, ns, change, "t")
    assert not df.equals(before) or df.attrs or not df.flags.allows_duplicate_labels
    result = store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["df"] is df is ns["alias"] and "df" in result.in_place
    assert df.equals(before) and df.columns.equals(before.columns) and df.index.equals(before.index)
    assert list(df.dtypes) == list(before.dtypes) and df.attrs == {} and df.flags.allows_duplicate_labels
    pd.testing.assert_frame_equal(df, before)
    # Still a normal frame afterwards; the Series taken before is unaffected by later writes (copy-on-write).
    df.loc[0, "a"] = 99.0
    assert ns["alias"].loc[0, "a"] == 99.0 and ns["col"].iloc[0] == 0.0


@inplace_deprecated
def test_series_restored_in_place(store: VariableSnapshots) -> None:
    ns = _ns("import pandas as pd\ns = pd.Series([1.0, 2.0, 3.0], name='v', index=list('abc'))\nt = s")
    s = ns["s"]
    before = s.copy()
    record = _run(store, ns, "s.drop('a', inplace=True); s.name = 'w'; s['z'] = 9", "t")
    store.restore(ns, store.plan_restore(ns, [record]))
    assert ns["s"] is s is ns["t"]
    pd.testing.assert_series_equal(s, before)


def test_array_with_new_shape_is_rebound(store: VariableSnapshots) -> None:
    ns = _ns("import numpy as np\narr = np.arange(10)\nsame = arr")
    before = ns["arr"].copy()
    record = _run(store, ns, "arr = arr.reshape(2, 5)\nsame.resize(12, refcheck=False)", "t")
    store.restore(ns, store.plan_restore(ns, [record]))
    assert np.array_equal(ns["arr"], before) and ns["same"] is ns["arr"]


# -- what cannot be restored -----------------------------------------------------


def test_unpicklable_values_are_reported(store: VariableSnapshots, tmp_path: Path) -> None:
    fh = open(tmp_path / "f.txt", "w")  # noqa: SIM115 - the open file is the point
    try:
        ns: dict[str, Any] = {
            "fh": fh,
            "lock": threading.Lock(),
            "holder": {"lock": threading.RLock(), "n": 1},
            "ok": [1, 2],
            "also_ok": np.arange(200_000),
        }
        rec = store.snapshot(ns, ["fh", "lock", "holder", "ok", "also_ok"], key="k")
        reasons = rec.not_restorable()
        assert reasons.keys() == {"fh", "lock", "holder"}
        assert "open file" in reasons["fh"] and "lock" in reasons["lock"]
        assert "pickle" in reasons["holder"] and "\n" not in reasons["holder"]
        assert rec.variables["ok"].state == "stored" and rec.variables["also_ok"].state == "stored"
        ns["ok"].append(3)
        ns["also_ok"][:] = 0
        result = store.restore(ns, store.plan_restore(ns, [rec]))
        assert ns["ok"] == [1, 2] and ns["also_ok"][5] == 5 and ns["fh"] is fh
        assert result.not_restored.keys() == {"fh", "lock", "holder"}
    finally:
        fh.close()


def test_caps_are_respected(tmp_path: Path) -> None:
    ns = {"a": np.ones(2 * MB // 8), "b": np.ones(2 * MB // 8) * 2, "huge": np.zeros(5 * MB // 8), "small": [1]}
    store = VariableSnapshots(tmp_path / "v", max_variable_bytes=3 * MB, max_snapshot_bytes=int(3.5 * MB))
    rec = store.snapshot(ns, ["a", "b", "huge", "small"], key="k")
    assert "per-variable cap" in (rec.variables["huge"].reason or "")
    states = {n: rec.variables[n].state for n in ("a", "b")}
    assert sorted(states.values()) == ["not_restorable", "stored"]
    over = next(n for n, s in states.items() if s == "not_restorable")
    assert "per-snapshot cap" in (rec.variables[over].reason or "")
    assert rec.variables["small"].state == "stored"
    assert sum(n for _, n in rec.buffers) <= 3.5 * MB
    # The cap is checked before a buffer is written: nothing over it reaches the disk.
    assert store.disk_usage().buffer_bytes <= 3.5 * MB and len(_buffer_files(store)) == 1

    # A value that pickles in band (no buffers), and looks small before pickling, is held to the cap too.
    box = _ns("class Box:\n    pass\nbox = Box()\nbox.items = [str(i) for i in range(100_000)]")
    tiny = VariableSnapshots(tmp_path / "w", max_variable_bytes=100_000)
    rec = tiny.snapshot(box, ["box"], key="k")
    assert rec.variables["box"].state == "not_restorable" and "per-variable cap" in (rec.variables["box"].reason or "")


@pytest.mark.parametrize("damage", ["truncate", "delete", "corrupt", "stream"])
def test_damaged_snapshot_fails_clearly_and_changes_nothing(store: VariableSnapshots, damage: str) -> None:
    ns = {"arr": np.arange(300_000.0), "lst": [1]}
    rec = store.snapshot(ns, ["arr", "lst", "created"], key="k")
    ns["arr"][:] = -1
    ns["lst"].append(2)
    ns["created"] = 1
    (buf,) = _buffer_files(store)
    if damage == "truncate":
        buf.write_bytes(buf.read_bytes()[:1000])
    elif damage == "delete":
        buf.unlink()
    elif damage == "corrupt":
        data = bytearray(buf.read_bytes())
        data[12345] ^= 0xFF
        buf.write_bytes(bytes(data))
    else:
        stream = store.root / "snapshots" / "k.pickle"
        stream.write_bytes(stream.read_bytes()[:-5])
    plan = store.plan_restore(ns, [rec])
    if damage != "corrupt":
        assert any("restoring it will fail" in w for w in plan.warnings)
    with pytest.raises(SnapshotDataError, match="cannot be restored"):
        store.restore(ns, plan)
    assert ns["arr"][0] == -1 and ns["lst"] == [1, 2] and ns["created"] == 1


# -- records, warnings, store --------------------------------------------------------


def test_record_is_json_and_round_trips(store: VariableSnapshots) -> None:
    ns = _ns("import numpy as np\nbig = np.ones(300_000)\nother_big = np.zeros(300_000)\nx = [1]")
    rec = store.snapshot(ns, names_touched("x.append(big.sum()); y = 1", ns), key="turn-1.a_b")
    data = json.loads(json.dumps(rec.to_dict()))
    assert SnapshotRecord.from_dict(data) == rec == store.record("turn-1.a_b")
    assert rec.variables["y"].state == "absent" and rec.variables["big"].fingerprint
    assert rec.variables["big"].size == pytest.approx(300_000 * 8, rel=0.01)
    assert "other_big" in rec.watched and "big" not in rec.watched
    with pytest.raises(SnapshotKeyError):
        store.snapshot(ns, ["x"], key="../escape")
    with pytest.raises(SnapshotKeyError):
        store.record("nope")


def test_warning_when_a_value_changes_through_a_closure(store: VariableSnapshots) -> None:
    ns = _ns(
        """
import numpy as np
big = np.ones(500_000)
def make():
    target = big
    def scale():
        target[:] = 3
    return scale
scale = make()
"""
    )
    record = _run(store, ns, "scale()", "t")
    assert "big" not in record.variables and "big" in record.watched
    plan = store.plan_restore(ns, [record])
    assert any(w.startswith("big changed") and "not undone" in w for w in plan.warnings)
    quiet = _run(store, ns, "scale", "t2")  # changes nothing
    assert not store.plan_restore(ns, [quiet]).warnings


def test_warning_when_a_value_changed_before_an_execution_named_it(store: VariableSnapshots) -> None:
    ns = _ns("import numpy as np\nbig = np.ones(500_000)\nholder = [big]")
    r1 = _run(store, ns, "holder[0][:] = 2", "t1")  # names holder, reaches big... through the container
    assert "big" in r1.variables  # found as held by holder
    r1b = store.snapshot(ns, ["holder"], key="t1b")  # a snapshot that does not name big
    ns["big"][:] = 5
    r2 = _run(store, ns, "big[:] = 6", "t2")
    plan = store.plan_restore(ns, [r1b, r2])
    assert any(w.startswith("big changed after snapshot t1b") for w in plan.warnings)
    assert fingerprint(np.ones(10)) is None  # small values are not fingerprinted


def test_snapshot_of_nothing_restorable_has_no_stream(store: VariableSnapshots) -> None:
    rec = store.snapshot({"g": (i for i in range(2))}, ["g", "new"], key="k")
    assert rec.stream is None and rec.buffers == []
    assert not (store.root / "snapshots" / "k.pickle").exists()
    ns: dict[str, Any] = {"new": 1}
    result = store.restore(ns, store.plan_restore(ns, [rec]))
    assert ns == {} and result.deleted == ["new"] and "g" in result.not_restored
