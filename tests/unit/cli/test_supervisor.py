"""`taskorbit worker --processes N`, run as a real subprocess: how the supervisor
treats a second signal.

Orchestrators often deliver SIGTERM twice within a moment (`timeout`, a
process-group kill, some container runtimes). The supervisor must take that as one
request to drain, and only a second signal more than DUPLICATE_SIGNAL_S later as an
impatient user who wants every child killed now.
"""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskorbit.cli.supervisor import DUPLICATE_SIGNAL_S
from tests.unit.cli.test_cli import Proc
from tests.waiting import wait_for

# Each child publishes two messages to its own in-memory transport and runs both
# at once; a handler takes APP_HANDLER_S seconds.
APP = textwrap.dedent(
    """
    import os, sys, time
    import taskorbit as orbit

    app = orbit.Orbit(concurrency=2)
    index = os.environ.get("TASKORBIT_WORKER_INDEX", "-")

    def say(line):
        sys.stdout.write(line + "\\n"); sys.stdout.flush()

    @app.task("work")
    def work(n: int) -> None:
        say(f"started {index}/{n}")
        time.sleep(float(os.environ["APP_HANDLER_S"]))
        say(f"finished {index}/{n}")

    app.publish_many("work", [0, 1])
    """
)

Start = Callable[[float], Proc]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    (tmp_path / "supervised_app.py").write_text(APP)
    started: list[Proc] = []

    def run(handler_s: float) -> Proc:
        proc = Proc(
            ["worker", "supervised_app:app", "--processes", "2", "--status", "off"],
            tmp_path,
            {"APP_HANDLER_S": str(handler_s)},
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        proc.kill()


def _children_running_handlers(supervisor: Proc) -> dict[str, int]:
    """Wait until both children run both their handlers; their pids by index."""
    started = supervisor.wait_for(r"worker (\d) started \(pid (\d+)\)", count=2)
    supervisor.wait_for(r"^started \d/\d$", count=4)
    return {m.group(1): int(m.group(2)) for m in started}


def _is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_duplicate_sigterm_within_a_second_still_lets_every_child_drain(start: Start) -> None:
    supervisor = start(2.0)
    pids = _children_running_handlers(supervisor)

    supervisor.signal(signal.SIGTERM)
    # The gap is the point of the test: a second signal well within DUPLICATE_SIGNAL_S,
    # as an orchestrator sends it, but not so close that both arrive as one.
    time.sleep(0.1)
    supervisor.signal(signal.SIGTERM)

    assert supervisor.finish() == 0, supervisor.output
    output = supervisor.output
    assert "second signal" not in output
    for index in ("0", "1"):
        for n in ("0", "1"):
            assert f"finished {index}/{n}" in output.splitlines(), output
        assert f"worker {index} (pid {pids[index]}) stopped with exit status 0" in output
    assert output.count("received SIGTERM: draining") == 2  # forwarded once to each child


def test_a_second_sigterm_after_more_than_a_second_kills_every_child_and_exits_1(
    start: Start,
) -> None:
    supervisor = start(60.0)
    pids = _children_running_handlers(supervisor)

    supervisor.signal(signal.SIGTERM)
    first = time.monotonic()
    supervisor.wait_for("received SIGTERM: draining", count=2)  # both children draining
    # Letting DUPLICATE_SIGNAL_S pass is the point: only a later signal means "kill now".
    time.sleep(max(0.0, first + DUPLICATE_SIGNAL_S + 0.3 - time.monotonic()))
    supervisor.signal(signal.SIGTERM)

    killed_at = time.monotonic()
    assert supervisor.finish(timeout=10) == 1, supervisor.output
    # A bound, not a value: "at once" on a loaded machine, but far from the 60 s the
    # handlers would take to drain.
    assert time.monotonic() - killed_at < 5
    assert "second signal: killing every worker process now" in supervisor.output
    assert "finished" not in supervisor.output
    wait_for(lambda: all(_is_gone(pid) for pid in pids.values()), 5.0, f"children {pids} to die")
