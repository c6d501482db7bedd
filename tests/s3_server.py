"""A real S3 API for tests: moto's server mode on 127.0.0.1, with buckets made by boto3.

moto keeps its state in this process; its server answers in threads, so the
tests' async clients (obstore, in its own runtime) talk to it over real HTTP.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Dummy credentials: moto accepts any unless its IAM checks are switched on.
ACCESS_KEY_ID = "AKIAMOTOTESTS0000000"
SECRET_ACCESS_KEY = "moto-test-secret-0123456789abcdef"
REGION = "us-east-1"


@dataclass
class MotoS3:
    """A running moto S3 server."""

    endpoint_url: str
    server: Any

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """Start moto's server on a free port; stop it on exit."""
    from moto.server import ThreadedMotoServer

    # One line per request on stderr otherwise.
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoS3(f"http://{host}:{port}", server)
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
