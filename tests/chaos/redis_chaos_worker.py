"""The chaos worker (tests/chaos/worker.py) on Redis Streams, under the name and
call that tests/integration/redis/test_orbit.py uses: ``start_worker(url, stream,
*flags)``. Records go to the same Redis as the stream; see worker.py for the keys
and flags."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO, Any

from tests.chaos.worker import ROOT, SCRIPT


def start_worker(
    url: str, stream: str, *flags: str, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start a Redis Streams chaos worker in its own process; returns the Popen."""
    argv = [sys.executable, str(SCRIPT), "--redis", url, "--transport", "redis"]
    argv += ["--stream", stream, *flags]
    out: Any = log or subprocess.DEVNULL
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
