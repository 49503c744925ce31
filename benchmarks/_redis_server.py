"""A private redis-server for one benchmark run: 127.0.0.1, a free port, no
persistence, its own temporary directory, stopped by its own pid.

Never the shared instance on 6379: other programs use it, and their load would
land in our numbers.

    with private_redis() as url:
        ...   # redis://127.0.0.1:PORT/0

``python benchmarks/_redis_server.py`` starts one, prints its URL and waits for
Ctrl-C, which is handy for running a single peer script by hand.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

INSTALL_HINT = "apt-get install -y redis-server"


def free_port() -> int:
    """A port nobody listens on now: bind to port 0, read it, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process with its data directory and log file."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"redis-server is not installed; install it with: {INSTALL_HINT}")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="taskorbit-bench-redis-"))
        self.log = self.dir / "redis.log"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> str:
        argv = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.log),
        ]  # fmt: skip
        # Its own session, so that stop() can signal it without touching anything else.
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout} s\n{tail}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_redis() -> Iterator[str]:
    """Start a private redis-server, yield its URL, stop it on the way out."""
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def version() -> str:
    """``redis-server --version``'s version field, e.g. ``7.0.15``."""
    out = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for field in out.split():
        if field.startswith("v="):
            return field[2:]
    return out.strip()


if __name__ == "__main__":
    with private_redis() as url:
        print(url, flush=True)
        with suppress(KeyboardInterrupt):
            signal.pause()
