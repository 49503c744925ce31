"""A private redis-server for the test session (never the shared one on 6379).

Use from a conftest or a test module::

    from tests.servers.redis import redis_server, redis_url  # noqa: F401

``redis_server`` (session) is the URL of a server on a free port with no
persistence; ``redis_url`` (per test) is the same URL after a FLUSHALL.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, start_process, stop_process, unavailable, wait_until

INSTALL = "apt-get install -y redis-server"


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """Start redis-server in ``workdir``; return its URL and process."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", INSTALL)
    import redis

    port = free_port()
    log = workdir / "redis.log"
    proc = start_process(
        [
            str(binary),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(log),
        ],
        log=workdir / "redis.stdout.log",
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        wait_until(lambda: bool(client.ping()), timeout=10.0, what="redis-server", log=log)
    except RuntimeError:
        stop_process(proc)
        raise
    finally:
        client.close()
    return url, proc


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server, started once per test session."""
    url, proc = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis URL, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server
