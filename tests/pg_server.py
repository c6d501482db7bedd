"""A throwaway PostgreSQL server for the tests: ``initdb`` in a temp folder, ``pg_ctl start``, ``pg_ctl stop``.

It listens on a free port of 127.0.0.1 only (and on a unix socket inside its
folder), asks TCP clients for a password (scram-sha-256) so wrong passwords can
be tested, and trades durability for speed (``fsync=off``). ``initdb`` refuses
to run as root, so as root every server command runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

_USER = "postgres"


def find_bindir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl`` (Debian's /usr/lib/postgresql/N/bin, newest first), or None."""
    candidates = [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    return None


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on (as of now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One running server; ``url(...)`` gives a libpq URL to it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = "pw-" + secrets.token_hex(8)
        self.port = 0
        self._as_root = os.geteuid() == 0
        self.folder = self.data = self.log = Path()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", _USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        # Not under pytest's basetemp: as root that is private to root, and the server runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="agent-magic-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            try:
                pw = pwd.getpwnam(_USER)
            except KeyError:
                raise RuntimeError(f"initdb refuses to run as root and there is no {_USER!r} user to run it as") from None
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        done = self._run("initdb", "-D", str(self.data), "-U", _USER, "--auth-local=trust",
                         "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        for _attempt in range(3):  # another process may take the free port before the server does
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            done = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options)
            if done.returncode == 0:
                return
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{log[-2000:]}")

    def stop(self) -> None:
        if self.folder == Path():
            return
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, *, password: str | None = None, port: int | None = None, dbname: str = "postgres", query: str = "") -> str:
        pw = self.password if password is None else password
        url = f"postgresql://{_USER}:{pw}@127.0.0.1:{port or self.port}/{dbname}"
        return f"{url}?{query}" if query else url


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
