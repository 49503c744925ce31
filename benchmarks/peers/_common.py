"""What every Redis peer benchmark shares: the handler body, the CLI, the worker
process and the clock.

The handler body is the same for every system, taskorbit included: optionally sleep,
then record the completion in Redis with ONE ``EVALSHA`` of a loaded Lua script. The
script counts completions of one run; the call that brings the count to the run's
target also pushes onto a "done" list, which the runner waits on with ``BLPOP``. So
the clock stops when the last handler finished (not when the last publish returned),
and the runner learns it without polling.

Timing, for every system alike::

    start the system's own worker (a subprocess, as its users run it)
    warm up: publish `concurrency` messages, wait until all were handled
    t0 ── publish N messages from one producer thread with the system's own API
       └─ BLPOP the run's done list ── t1          seconds = t1 - t0

Every script prints one JSON line: ``{"system", "messages", "seconds",
"msg_per_s", ...}``; extra fields (``publish_seconds``, ``concurrency``,
``handler``) are informative.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import redis

#: The repository root, put on the workers' PYTHONPATH so that they import
#: ``benchmarks.peers.*`` by its package name.
ROOT = Path(__file__).resolve().parents[2]

#: Where worker modules read the broker URL; the runner sets it for the worker.
URL_ENV = "BENCH_REDIS_URL"

#: KEYS[1] counts completions of one run, KEYS[2] is its done list, ARGV[1] the
#: run's target. Exactly one call sees the count reach the target, so the done
#: list gets exactly one entry however the handlers interleave.
COMPLETION_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == tonumber(ARGV[1]) then redis.call('RPUSH', KEYS[2], n) end
return n
"""
COMPLETION_SHA = hashlib.sha1(COMPLETION_SCRIPT.encode()).hexdigest()

HANDLERS = {"noop": 0, "sleep10ms": 10}


def counter_key(run_key: str) -> str:
    return f"{run_key}:count"


def done_key(run_key: str) -> str:
    return f"{run_key}:done"


@cache
def worker_client() -> redis.Redis:
    """The Redis client handlers use, one per process (redis-py pools are
    thread-safe, and reset themselves in a forked child)."""
    return redis.Redis.from_url(os.environ[URL_ENV])


def handle(run_key: str, target: int, sleep_ms: int) -> None:
    """The handler body every system runs: sleep, then one EVALSHA."""
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    keys_and_args = (counter_key(run_key), done_key(run_key), target)
    try:
        worker_client().evalsha(COMPLETION_SHA, 2, *keys_and_args)
    except redis.exceptions.NoScriptError:
        # Only if someone flushed the script cache after the runner loaded it.
        worker_client().eval(COMPLETION_SCRIPT, 2, *keys_and_args)


@dataclass(frozen=True)
class Args:
    url: str
    messages: int
    concurrency: int
    handler: str
    timeout: float

    @property
    def sleep_ms(self) -> int:
        return HANDLERS[self.handler]


def parse_args(system: str, argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=f"End-to-end Redis benchmark: {system}")
    parser.add_argument("--url", required=True, help="redis://host:port/db of a private server")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds"
    )
    ns = parser.parse_args(argv)
    if ns.messages < 1 or ns.concurrency < 1:
        parser.error("--messages and --concurrency must be greater than 0")
    return Args(ns.url, ns.messages, ns.concurrency, ns.handler, ns.timeout)


class WorkerProcess:
    """A system's worker started through its own CLI, in its own session so that
    stop() reaches its children too (RQ's pool, Celery's pool), logging to a file."""

    def __init__(self, argv: Sequence[str], url: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="taskorbit-bench-worker-", suffix=".log")[1])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, URL_ENV: url, "PYTHONPATH": f"{ROOT}{os.pathsep}{path or ''}"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def cpu_seconds(self) -> float:
        """User+system CPU of the worker, its live children (pool processes) and the
        children they reaped (RQ's work horses)."""
        total = 0.0
        try:
            leader = psutil.Process(self.proc.pid)
            for proc in [leader, *leader.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
        return total

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM the whole group, SIGKILL what is left after 10 s. Nothing after t1
        is timed, so a slow graceful shutdown costs nothing but wall time."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
                # The leader exited; its children (pool processes) may linger.
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        self.log.unlink(missing_ok=True)


def wait_done(client: redis.Redis, run_key: str, timeout: float, worker: WorkerProcess) -> None:
    """Block until the run's last handler pushed onto its done list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Short BLPOPs so that a dead worker is noticed instead of waited out.
        if client.blpop([done_key(run_key)], timeout=1):
            return
        worker.check_alive()
    count = int(client.get(counter_key(run_key)) or 0)
    raise TimeoutError(f"{run_key}: only {count} handled after {timeout} s\n{worker.tail()}")


class CpuMeter:
    """CPU seconds used so far by the producer (this process), the worker and
    redis-server: where the time goes, per message, without a profiler."""

    def __init__(self, client: redis.Redis, worker: WorkerProcess) -> None:
        times = os.times()
        self.producer = times.user + times.system
        self.worker = worker.cpu_seconds()
        info = client.info("cpu")
        self.redis = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def minus(self, before: CpuMeter, messages: int) -> dict[str, float]:
        """Microseconds of CPU per message since ``before``, by process."""
        return {
            name: round(1e6 * (getattr(self, name) - getattr(before, name)) / messages, 1)
            for name in ("producer", "worker", "redis")
        }


#: publish(run_key, target, sleep_ms, count): send ``count`` messages with the
#: system's own producer API from the calling thread.
Publish = Callable[[str, int, int, int], None]


def run(system: str, args: Args, worker_argv: Sequence[str], publish: Publish) -> dict[str, object]:
    """Start the worker, warm it up, time one run, print and return its JSON line."""
    client = redis.Redis.from_url(args.url)
    client.script_load(COMPLETION_SCRIPT)
    worker = WorkerProcess(worker_argv, args.url)
    try:
        # Warm-up: every worker thread/process has imported and connected, so the
        # timed run measures steady state, not start-up. Handlers that sleep 10 ms
        # overlap, so every thread of the pool runs one and opens its own Redis
        # connection before the clock starts (no-op handlers would leave most of
        # the pool, and its connections, cold).
        warm = f"bench:{system}:warm:{uuid.uuid4().hex[:8]}"
        publish(warm, args.concurrency, 10, args.concurrency)
        wait_done(client, warm, 120.0, worker)

        run_key = f"bench:{system}:{uuid.uuid4().hex[:8]}"
        cpu_before = CpuMeter(client, worker)
        t0 = time.perf_counter()
        publish(run_key, args.messages, args.sleep_ms, args.messages)
        published = time.perf_counter()
        wait_done(client, run_key, args.timeout, worker)
        seconds = time.perf_counter() - t0
        cpu = CpuMeter(client, worker).minus(cpu_before, args.messages)
    finally:
        worker.stop()
        client.close()
    result: dict[str, object] = {
        "system": system,
        "messages": args.messages,
        "seconds": round(seconds, 4),
        "msg_per_s": round(args.messages / seconds, 1),
        "publish_seconds": round(published - t0, 4),
        "concurrency": args.concurrency,
        "handler": args.handler,
        "cpu_us_per_msg": cpu,
    }
    print(json.dumps(result), flush=True)
    return result


def python_m(module: str, *argv: str) -> list[str]:
    """``python -m module argv...`` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *argv]
