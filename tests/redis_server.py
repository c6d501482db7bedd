"""A throwaway Redis server for tests: Debian's ``redis-server`` in a temp folder on a free 127.0.0.1 port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now (another process may take it before we do)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` with no persistence, started by :meth:`start` and stopped by :meth:`stop`.

    ``url`` has the password in it when the server was started with one.
    """

    def __init__(self, folder: Path, *, password: str | None = None) -> None:
        self.folder = folder
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        last_log = ""
        for _attempt in range(5):  # the free port may be taken between free_port() and bind
            self.port = free_port()
            args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                    "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                    "--logfile", "redis.log"]
            if self.password:
                args += ["--requirepass", self.password]
            self.proc = subprocess.Popen(args, cwd=self.folder, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.02)
            last_log = self._log_tail()
            self.stop()
        raise RuntimeError(f"redis-server did not start; its log ends:\n{last_log}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        # Without the password, a server with requirepass answers NOAUTH: it is up all the same.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self) -> str:
        try:
            return "\n".join((self.folder / "redis.log").read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
