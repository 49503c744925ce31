"""The `taskorbit` command, run as a real subprocess: output, signals, exit codes."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_for

CLI = [sys.executable, "-m", "taskorbit.cli"]

APP = textwrap.dedent(
    """
    import os, sys, threading
    import taskorbit as orbit

    app = orbit.Orbit(concurrency=int(os.environ.get("APP_CONCURRENCY", "32")))
    block = threading.Event()

    @app.task("hello")
    def hello(n: int) -> None:
        sys.stdout.write(f"handled {n}\\n"); sys.stdout.flush()

    @app.task("stuck")
    def stuck(n: int) -> None:
        block.wait()

    @app.task("slow")
    def slow(n: int) -> None:
        sys.stdout.write(f"slow started {n}\\n"); sys.stdout.flush()
        block.wait(30)

    for topic in os.environ.get("APP_PUBLISH", "").split(","):
        if topic:
            name, _, count = topic.partition("*")
            app.publish_many(name, list(range(int(count or 1))))
    """
)


class Proc:
    """A CLI subprocess whose stdout and stderr lines are collected as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            CLI + args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` output lines match ``pattern``; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._alive()):
                    raise AssertionError(
                        f"no {count} lines matching {pattern!r} in:\n{self.output}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def _alive(self) -> bool:
        return any(r.is_alive() for r in self._readers)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


Start = Callable[..., "Proc"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "demo_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def run(project: Path) -> Iterator[Start]:
    started: list[Proc] = []

    def start(*args: str, **env: str) -> Proc:
        proc = Proc(list(args), project, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def test_worker_handles_messages_and_exits_0_after_draining_on_sigterm(run: Start) -> None:
    worker = run("worker", "demo_app:app", APP_PUBLISH="hello*3")
    worker.wait_for(r"^handled \d$", count=3)
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0
    assert "received SIGTERM: draining" in worker.output
    assert "worker stopped: received=3 done=3 retried=0 dead=0" in worker.output


def test_worker_logs_periodic_status_lines_when_not_on_a_terminal(run: Start) -> None:
    worker = run("worker", "demo_app:app", "--status-interval", "0.2", APP_PUBLISH="hello*4")
    line = worker.wait_for(r"taskorbit.cli.status: (received 4 \| done 4 .*msg/s)")[0].group(1)
    assert "retried 0 | dead 0 | in flight 0 | ring 0%" in line
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def test_worker_redraws_one_status_line_in_place_on_a_terminal(project: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "worker", "demo_app:app", "--status-interval", "0.2"],
        cwd=project,
        env={**os.environ, "APP_PUBLISH": "hello*2"},
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"done 2" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"\r\x1b[Kreceived 2 | done 2" in seen
    assert b"taskorbit.cli.status" not in seen  # a redrawn line, not log records


def test_flags_override_environment_which_overrides_the_app(run: Start) -> None:
    worker = run(
        "worker",
        "demo_app:app",
        "--buffer-size",
        "64",
        TASKORBIT_BUFFER_SIZE="128",
        TASKORBIT_CONCURRENCY="5",
        TASKORBIT_OVERFLOW="reject",
        APP_CONCURRENCY="9",
    )
    worker.wait_for("worker started")
    assert "concurrency=5 buffer_size=64 overflow=reject" in worker.output
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def test_an_invalid_environment_value_exits_2_naming_the_variable(run: Start) -> None:
    worker = run("worker", "demo_app:app", TASKORBIT_CONCURRENCY="many")
    assert worker.finish() == 2
    assert "TASKORBIT_CONCURRENCY='many' is invalid" in worker.output


def test_an_app_that_cannot_be_imported_exits_3(run: Start) -> None:
    worker = run("worker", "no_such_module:app")
    assert worker.finish() == 3
    assert "cannot import 'no_such_module'" in worker.output


def test_an_attribute_that_is_not_an_orbit_exits_3(run: Start) -> None:
    worker = run("worker", "demo_app:block")
    assert worker.finish() == 3
    assert worker.lines == [
        "taskorbit: `demo_app:block` is a threading.Event, not a taskorbit.Orbit; "
        "pass the Orbit, e.g. `demo_app:app`"
    ]


def test_handlers_still_running_at_the_shutdown_deadline_exit_4(run: Start) -> None:
    worker = run("worker", "demo_app:app", "--shutdown-timeout", "0.3", APP_PUBLISH="slow*1")
    worker.wait_for("slow started 0")
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 4
    assert "handlers still running at the deadline" in worker.output


def test_health_file_is_refreshed_while_idle_and_goes_stale_when_handlers_hang(
    run: Start, project: Path
) -> None:
    idle_file = project / "idle-alive"
    idle = run(
        "worker", "demo_app:app", "--health-file", str(idle_file), "--health-interval", "0.1"
    )
    idle.wait_for("worker started")
    wait_for(idle_file.exists, 10.0, f"{idle_file} to appear")
    first = idle_file.stat().st_mtime_ns
    wait_for(
        lambda: idle_file.stat().st_mtime_ns > first, 10.0, "the idle worker to touch its file"
    )

    stuck_file = project / "stuck-alive"
    stuck = run(
        "worker",
        "demo_app:app",
        "--health-file",
        str(stuck_file),
        "--health-interval",
        "0.1",
        "--concurrency",
        "1",
        APP_PUBLISH="stuck*5",
    )
    checks = len(stuck.wait_for("is not consuming"))
    frozen = stuck_file.stat().st_mtime_ns
    stuck.wait_for("is not consuming", count=checks + 5)  # five more checks, none touched it
    assert stuck_file.stat().st_mtime_ns == frozen

    idle.signal(signal.SIGTERM)
    assert idle.finish() == 0
    assert not idle_file.exists()  # a stopped worker leaves no "alive" file behind


# -- --processes N: the supervisor ----------------------------------------------


def test_a_killed_child_is_restarted_and_sigterm_drains_every_child(run: Start) -> None:
    supervisor = run("worker", "demo_app:app", "--processes", "2", "--status", "off")
    started = supervisor.wait_for(r"worker (\d) started \(pid (\d+)\)", count=2)
    pids = {m.group(1): int(m.group(2)) for m in started}
    assert set(pids) == {"0", "1"}
    supervisor.wait_for(r"worker \d started: transport=memory", count=2)  # both children up

    os.kill(pids["0"], signal.SIGKILL)
    supervisor.wait_for(rf"worker 0 \(pid {pids['0']}\) died with signal SIGKILL")
    restarted = supervisor.wait_for(r"worker 0 started \(pid (\d+)\)", count=2)[1]
    new_pid = int(restarted.group(1))
    assert new_pid != pids["0"]
    supervisor.wait_for(r"worker 0 started: transport=memory", count=2)  # the new child is up

    supervisor.signal(signal.SIGTERM)
    assert supervisor.finish() == 0
    assert f"worker 0 (pid {new_pid}) stopped with exit status 0" in supervisor.output
    assert f"worker 1 (pid {pids['1']}) stopped with exit status 0" in supervisor.output
    assert supervisor.output.count("received SIGTERM: draining") == 2  # each child drained


def test_children_inherit_the_forwarded_options(run: Start) -> None:
    supervisor = run(
        "worker", "demo_app:app", "--processes", "2", "--concurrency", "3", "--status", "off"
    )
    lines = supervisor.wait_for(r"worker \d started: .* concurrency=(\d+)", count=2)
    assert [m.group(1) for m in lines] == ["3", "3"]
    supervisor.signal(signal.SIGTERM)
    assert supervisor.finish() == 0
