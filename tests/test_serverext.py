"""The Jupyter server extension: a real ``jupyter server`` with agent_magic's REST API.

Sessions are made by the agent (``query`` against the fake Messages API) in the
store the server reads, exactly as kernels make them; the tests then talk to
the server over HTTP like the sidebar does. Sessions "from another host" are
made in a home of their own that pushes to a ``file://`` shared store the
server is configured with (``c.AgentMagic.store``).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest

from agent_magic.store import open_session_store
from agent_magic.store.sync import PROJECT_KEY
from agent_magic.testing import FakeAnthropicServer, text, tool_use, tool_uses

from .conftest import run_query

pytestmark = [pytest.mark.slow]

START_TIMEOUT = 60.0


@dataclass
class Server:
    url: str
    token: str
    root: Path
    home: Path
    log: Path

    def request(
        self, method: str, path: str, body: Any = None, *, token: bool = True, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/agent-magic/api/{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, route: str, **query: str) -> Any:
        status, data = self.request("GET", f"{route}?{urllib.parse.urlencode(query)}" if query else route)
        assert status == 200, (status, data)
        return data

    def post(self, path: str, body: Any, expect: int = 200) -> Any:
        status, data = self.request("POST", path, body)
        assert status == expect, (status, data)
        return data


def _wait(proc: subprocess.Popen[bytes], runtime: Path, token: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited with {proc.returncode}")
        for info in runtime.glob(f"jpserver-{proc.pid}.json"):
            try:
                url = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
            except (ValueError, KeyError):
                continue
        if url:
            try:
                req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=2):
                    return url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.1)
    raise RuntimeError("jupyter server did not start")


@contextlib.contextmanager
def run_server(base: Path, *args: str, config: str = "", env: dict[str, str] | None = None) -> Iterator[Server]:
    """A ``jupyter server`` with the extension, its own root, session home and Jupyter dirs under ``base``.

    ``config`` is written to its ``jupyter_server_config.py``; no ``AGENT_MAGIC_*``
    variable of this process reaches it, only ``env``.
    """
    root, home = base / "root", base / "store"
    root.mkdir(parents=True)
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "JUPYTER_", "AGENT_MAGIC_"))}
    for name in ("config", "data", "runtime"):
        (base / name).mkdir()
    if config:
        (base / "config" / "jupyter_server_config.py").write_text(config)
    server_env.update(JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"),
                      JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_PLATFORM_DIRS="1", AGENT_MAGIC_HOME=str(home))
    server_env.update(env or {})
    token = secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}", "--ServerApp.jpserver_extensions={'agent_magic': True}", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    log_path = base / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, cwd=root, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            url = _wait(proc, base / "runtime", token)
        except RuntimeError as e:
            proc.kill()
            log.close()
            pytest.fail(f"{e}\n{log_path.read_text()[-3000:]}")
        yield Server(url, token, root, home, log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No shared store: neither ``AgentMagic.store`` nor ``$AGENT_MAGIC_STORE``."""
    with run_server(tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``file:///tmp/...`` shared store."""
    return (tmp_path_factory.mktemp("shared") / "store").as_uri()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, shared_url: str) -> Iterator[Server]:
    """A server whose ``jupyter_server_config.py`` sets ``c.AgentMagic.store`` (its environment has no store)."""
    with run_server(tmp_path_factory.mktemp("shared-server"), config=f"c.AgentMagic.store = {shared_url!r}\n") as s:
        yield s


@pytest.fixture
def store(server: Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make this process's sessions in the server's store."""
    monkeypatch.setenv("AGENT_MAGIC_HOME", str(server.home))
    return server.home


def make_notebook(server: Server, name: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", id="one"),
        nbformat.v4.new_code_cell("y = 2", id="two"),
        nbformat.v4.new_code_cell("z = 3", id="three"),
    ]
    folder = server.root / "work"
    folder.mkdir(exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


def agent_edits(fake: FakeAnthropicServer, path: Path, prompt: str, **options: Any) -> str:
    """One turn in ``path``'s scope that inserts a cell after "two" and rewrites "three"; its session id."""
    fake.on_prompt(
        prompt,
        tool_use("Read", {"file_path": str(path)}),
        tool_uses([
            ("NotebookEdit", {"notebook_path": str(path), "cell_id": "two", "new_source": "w = 0", "cell_type": "code", "edit_mode": "insert"}),
            ("NotebookEdit", {"notebook_path": str(path), "cell_id": "three", "new_source": "z = 30"}),
        ]),
        text("Edited."),
    )
    msgs = run_query(prompt, cwd=str(path.parent), scope=str(path), permission_mode="acceptEdits", **options)
    sid = msgs[-1].session_id
    assert isinstance(sid, str)
    return sid


def test_routes_need_a_user_and_xsrf(server: Server) -> None:
    status, _ = server.request("GET", "config", token=False)
    assert status == 403
    assert server.get("config")["root_dir"] == str(server.root.resolve())
    # A browser session: login cookie, but no XSRF token on a write.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{server.url}/api/status?token={server.token}", timeout=10).read()
    assert any(c.name.startswith("username-") for c in jar), list(jar)
    def fork(headers: dict[str, str]) -> int:
        req = urllib.request.Request(
            f"{server.url}/agent-magic/api/sessions/abcd1234/fork", data=b"{}", method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with opener.open(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return e.code

    assert fork({}) == 403
    # With the XSRF cookie echoed in the header, the same request gets through (to a 404).
    xsrf = next((c.value for c in jar if c.name == "_xsrf"), None)
    if xsrf is None:  # set by pages that render a form
        opener.open(f"{server.url}/login", timeout=10).read()
        xsrf = next(c.value for c in jar if c.name == "_xsrf")
    assert fork({"X-XSRFToken": xsrf}) == 404


def test_sessions_tree_rename_resume_fork_delete(server: Server, store: Path, fake_api: FakeAnthropicServer) -> None:
    path = make_notebook(server, "tree.ipynb")
    sid = agent_edits(fake_api, path, "first edit")
    listing = server.get("sessions", path="work/tree.ipynb")
    assert listing["scope"] == str(path.resolve())
    assert [s["session_id"] for s in listing["sessions"]] == [sid]
    info = listing["sessions"][0]
    assert info["num_turns"] == 1 and info["total_cost_usd"] is not None and info["last_modified"] > 0
    assert listing["current"] == sid

    fork = server.post(f"sessions/{sid[:8]}/fork", {"path": "work/tree.ipynb", "title": "a fork"}, expect=201)
    fid = fork["session_id"]
    assert fork["session"]["parent_session_id"] == sid and fork["session"]["scope"] == str(path.resolve())
    server.post(f"sessions/{fid}/resume", {"path": "work/tree.ipynb"})
    listing = server.get("sessions", path="work/tree.ipynb")
    assert {s["session_id"] for s in listing["sessions"]} == {sid, fid} and listing["current"] == fid

    status, renamed = server.request("PATCH", f"sessions/{sid}", {"title": "Original"})
    assert status == 200 and renamed["title"] == "Original"
    assert server.get(f"sessions/{sid}")["title"] == "Original"

    status, _ = server.request("DELETE", f"sessions/{fid}")
    assert status == 204
    assert [s["session_id"] for s in server.get("sessions", path="work/tree.ipynb")["sessions"]] == [sid]
    # Other notebooks see none of it.
    assert server.get("sessions", path="work/other.ipynb")["sessions"] == []


def test_rewind_previews_and_rewinds_files_and_open_notebooks(
    server: Server, store: Path, fake_api: FakeAnthropicServer
) -> None:
    path = make_notebook(server, "rewind.ipynb")
    original = path.read_bytes()
    sid = agent_edits(fake_api, path, "edit for rewind")
    edited = path.read_bytes()
    (cp,) = server.get(f"sessions/{sid}/checkpoints")["checkpoints"]
    assert cp["turn"] == 1 and len(cp["cells"]) == 2

    # The notebook is open in the browser, with an unsaved edit in cell "one".
    open_nb = json.loads(edited)
    open_nb["cells"][0]["source"] = "x = 100  # unsaved"
    preview = server.post(f"sessions/{sid}/rewind", {"checkpoint_id": cp["checkpoint_id"][:8], "dry_run": True,
                                                     "open": {"work/rewind.ipynb": open_nb}})
    assert preview["dry_run"] and preview["ok"] and preview["live"] == []
    (change,) = preview["changes"]
    assert change["action"] == "cells" and {c["action"] for c in change["cells"]} == {"restore", "remove"}
    assert any("-z = 30" in c["diff"] for c in change["cells"])
    assert path.read_bytes() == edited

    done = server.post(f"sessions/{sid}/rewind", {"checkpoint_id": cp["checkpoint_id"], "open": {"work/rewind.ipynb": open_nb}})
    assert done["ok"] and not done["dry_run"]
    assert path.read_bytes() == edited  # open in the browser: the file is left to the person's save
    (live,) = done["live"]
    assert live["path"] == "work/rewind.ipynb"
    ops = [(op["method"], op["edit"]["op"], op["edit"]["cell_id"]) for op in live["ops"]]
    assert ops[0] == ("apply", "replace", "three") and ops[1][:2] == ("apply", "delete")
    assert live["ops"][0]["edit"]["after_cell"]["source"] in ("z = 3", ["z = 3"])

    # Not open anywhere: a second rewind (of the rewind) writes the file.
    sid2 = agent_edits(fake_api, path, "edit again")
    cp2 = server.get(f"sessions/{sid2}/checkpoints")["checkpoints"][-1]["checkpoint_id"]
    done = server.post(f"sessions/{sid2}/rewind", {"checkpoint_id": cp2})
    assert done["live"] == [] and done["ok"]
    assert path.read_bytes() == edited  # back to before "edit again"
    assert original != edited


def test_cell_history(server: Server, store: Path, fake_api: FakeAnthropicServer) -> None:
    path = make_notebook(server, "cell.ipynb")
    sid = agent_edits(fake_api, path, "edit for history")
    nb = json.loads(path.read_text())
    prov = nb["cells"][3]["metadata"]["agent_magic"]
    assert prov["session_id"] == sid and prov["op"] == "replace" and prov["turn"] == 1
    got = server.get(f"sessions/{sid}/cell", checkpoint=prov["checkpoint_id"], cell_id="three", path="work/cell.ipynb")
    assert got["ops"] == ["replace"] and "-z = 3" in got["diff"] and "+z = 30" in got["diff"]
    assert got["before"]["source"] in ("z = 3", ["z = 3"])
    inserted = nb["cells"][2]
    got = server.get(f"sessions/{sid}/cell", checkpoint=prov["checkpoint_id"], cell_id=inserted["id"], path="work/cell.ipynb")
    assert got["before"] is None and got["ops"] == ["insert"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "sessions/zzzz9999", None, 404),
        ("GET", "sessions", None, 400),
        ("GET", "sessions?path=../outside.ipynb", None, 400),
        ("POST", "sessions/zzzz9999/rewind", {}, 400),
        ("POST", "sessions/zzzz9999/rewind", {"checkpoint_id": "abcd"}, 404),
        ("PATCH", "sessions/zzzz9999", {"title": " "}, 400),
        ("GET", "sessions/zzzz9999/cell?checkpoint=abcd&cell_id=x&path=a.ipynb", None, 404),
    ],
)
def test_errors_are_json(server: Server, store: Path, method: str, path: str, body: Any, status: int) -> None:
    got, data = server.request(method, path, body)
    assert got == status
    assert isinstance(data, dict) and data.get("message")


def _shared_ids(url: str) -> set[str]:
    async def go() -> set[str]:
        store = open_session_store(url)
        try:
            return {e["session_id"] for e in await store.list_sessions(PROJECT_KEY)}
        finally:
            await store.aclose()

    return anyio.run(go)


def test_sidebar_reads_the_configured_shared_store(
    shared_server: Server, shared_url: str, fake_api: FakeAnthropicServer, tmp_path: Path
) -> None:
    path = make_notebook(shared_server, "shared.ipynb")
    elsewhere = {"home": tmp_path / "other-host", "session_store": shared_url}
    sid = agent_edits(fake_api, path, "edit on another host", **elsewhere)
    assert sid in _shared_ids(shared_url)
    assert not (shared_server.home / "sessions" / sid).exists()

    listing = shared_server.get("sessions", path="work/shared.ipynb")
    assert listing["store"] == shared_url
    assert [s["session_id"] for s in listing["sessions"]] == [sid]
    assert shared_server.get("config")["store"] == shared_url
    (cp,) = shared_server.get(f"sessions/{sid}/checkpoints")["checkpoints"]
    assert cp["turn"] == 1 and len(cp["cells"]) == 2
    # The preview needs the cells' backups, which the listing did not bring: the rewind fetches them.
    preview = shared_server.post(f"sessions/{sid}/rewind", {"checkpoint_id": cp["checkpoint_id"], "dry_run": True})
    assert preview["ok"] and any("-z = 30" in c["diff"] for c in preview["changes"][0]["cells"])

    # A session asked for by id, never listed here, is fetched; a fork made here reaches the store.
    sid2 = agent_edits(fake_api, path, "another edit elsewhere", **elsewhere)
    assert shared_server.get(f"sessions/{sid2[:8]}")["session_id"] == sid2
    fid = shared_server.post(f"sessions/{sid2}/fork", {"path": "work/shared.ipynb"}, expect=201)["session_id"]
    assert fid in _shared_ids(shared_url)


def test_without_a_store_the_sidebar_lists_local_sessions_only(
    server: Server, store: Path, shared_url: str, fake_api: FakeAnthropicServer, tmp_path: Path
) -> None:
    path = make_notebook(server, "local.ipynb")
    local = agent_edits(fake_api, path, "edit here")
    remote = agent_edits(fake_api, path, "edit on a host that shares", home=tmp_path / "other-host", session_store=shared_url)
    assert remote in _shared_ids(shared_url)
    listing = server.get("sessions", path="work/local.ipynb")
    assert listing["store"] is None and server.get("config")["store"] is None
    assert [s["session_id"] for s in listing["sessions"]] == [local]
    status, _ = server.request("GET", f"sessions/{remote}/checkpoints")
    assert status == 404


def test_an_unusable_store_is_one_log_line_and_local_sessions_still_list(
    tmp_path: Path, fake_api: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_server(tmp_path / "server", "--AgentMagic.store=nosuch://user:hunter2@host/x") as server:
        monkeypatch.setenv("AGENT_MAGIC_HOME", str(server.home))
        path = make_notebook(server, "bad.ipynb")
        sid = agent_edits(fake_api, path, "edit with a bad store setting")
        listing = server.get("sessions", path="work/bad.ipynb")
        assert listing["store"] is None
        assert [s["session_id"] for s in listing["sessions"]] == [sid]
        assert len(server.get(f"sessions/{sid}/checkpoints")["checkpoints"]) == 1
        log = server.log.read_text()
    errors = [line for line in log.splitlines() if "shared session store" in line]
    assert len(errors) == 1, log
    assert "nosuch://user:***@host/x (from AgentMagic.store)" in errors[0] and "Unknown session store" in errors[0]
    assert "hunter2" not in log
