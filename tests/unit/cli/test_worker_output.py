"""What a running `taskorbit worker` tells its user, read from the real command's
stderr: each handler failure with its traceback once, what happens next, the
messages that cannot run, and the drain after SIGTERM.

Before, a handler that always raised showed only counters (``retried 3 | dead
4``), even at DEBUG; and while the worker drained the status said ``in flight 0``.
"""

from __future__ import annotations

import itertools
import logging
import re
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskorbit.worker.poller import Outage
from tests.unit.cli.test_cli import Proc, Start

APP = textwrap.dedent(
    """
    import os, sys, time
    import taskorbit as orbit
    from taskorbit.hooks import LoggingHooks
    from taskorbit.message import Message

    own = [LoggingHooks()] if os.environ.get("APP_OWN_LOGGING_HOOKS") else []
    app = orbit.Orbit(concurrency=4, hooks=own)

    @app.task("always.fail", max_retries=2, base_delay=0.05)
    def always_fail(n: int) -> None:
        raise ValueError(f"card {n} declined")

    @app.task("ok")
    def ok(n: int) -> None:
        sys.stdout.write(f"handled {n}\\n"); sys.stdout.flush()

    @app.task("slow")
    def slow(n: int) -> None:
        sys.stdout.write(f"slow started {n}\\n"); sys.stdout.flush()
        time.sleep(float(os.environ.get("APP_SLOW_S", "3")))
        sys.stdout.write(f"slow done {n}\\n"); sys.stdout.flush()

    for topic in os.environ.get("APP_PUBLISH", "").split(","):
        if topic:
            name, _, count = topic.partition("*")
            app.publish_many(name, list(range(int(count or 1))))
    if os.environ.get("APP_BROKEN"):
        app.publish("nobody.listens", 1)
        app.transport.publish([Message("ok", b'"not a number"')])
        app.transport.publish([Message("ok", b"1", malformed="attempt 'abc' is not a number")])
    """
)

FAILURE = re.compile(
    r"ERROR \[\d+\] taskorbit\.events: always\.fail (\S+) failed on attempt (\d) of 3"
)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Start]:
    (tmp_path / "output_app.py").write_text(APP)
    started: list[Proc] = []

    def start(*args: str, **env: str) -> Proc:
        proc = Proc(["worker", "output_app:app", "--status", "off", *args], tmp_path, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def _stop(worker: Proc) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def _failures(worker: Proc) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(FAILURE.search, worker.lines) if m]


def _tracebacks_after(worker: Proc) -> list[str]:
    """The log line each traceback belongs to (the line before it)."""
    lines = worker.lines
    return [lines[i - 1] for i, line in enumerate(lines) if line.startswith("Traceback")]


def test_a_failing_handler_is_logged_at_every_attempt_with_its_traceback_once(run: Start) -> None:
    worker = run(APP_PUBLISH="always.fail*2")
    worker.wait_for(r"dead-lettered: gave up after 3 attempts", count=2)
    _stop(worker)
    ids = sorted({message_id for message_id, _ in _failures(worker)})
    assert len(ids) == 2
    assert sorted(_failures(worker)) == sorted((i, str(n)) for i in ids for n in (1, 2, 3))
    assert "ValueError: card 0 declined" in worker.output
    # The traceback comes with each message's first failure, not with its retries.
    owners = _tracebacks_after(worker)
    assert len(owners) == 2
    assert all(FAILURE.search(line) and "attempt 1 of 3" in line for line in owners)
    assert 'in always_fail\n    raise ValueError(f"card {n} declined")' in worker.output
    for message_id in ids:
        assert re.search(
            rf"always\.fail {message_id} retrying in [\d.]+ s \(attempt 2 of 3\)$",
            worker.output,
            re.M,
        )
        assert re.search(
            rf"always\.fail {message_id} retrying in [\d.]+ s \(attempt 3 of 3\)$",
            worker.output,
            re.M,
        )
        assert re.search(
            rf"WARNING .* always\.fail {message_id} dead-lettered: gave up after 3 attempts "
            r"\(max_retries=2\): ValueError: card \d declined",
            worker.output,
        )


@pytest.mark.parametrize(("mode", "tracebacks"), [("always", 6), ("never", 0), ("first", 2)])
def test_log_tracebacks_chooses_which_failures_carry_a_traceback(
    run: Start, mode: str, tracebacks: int
) -> None:
    worker = run("--log-tracebacks", mode, APP_PUBLISH="always.fail*2")
    worker.wait_for(r"dead-lettered: gave up", count=2)
    _stop(worker)
    assert len(_failures(worker)) == 6
    assert len(_tracebacks_after(worker)) == tracebacks


def test_the_log_tracebacks_variable_works_like_the_flag(run: Start) -> None:
    worker = run(APP_PUBLISH="always.fail*1", TASKORBIT_LOG_TRACEBACKS="never")
    worker.wait_for(r"dead-lettered: gave up")
    _stop(worker)
    assert len(_failures(worker)) == 3
    assert _tracebacks_after(worker) == []


def test_messages_that_cannot_run_are_warnings_with_the_reason_and_no_traceback(run: Start) -> None:
    worker = run(APP_BROKEN="1")
    worker.wait_for(r"dead-lettered: ", count=3)
    _stop(worker)
    warnings = [line for line in worker.lines if "dead-lettered: " in line]
    assert all(" WARNING " in line for line in warnings)
    reasons = sorted(line.split("dead-lettered: ", 1)[1] for line in warnings)
    assert reasons[0].startswith("decode failed: payload does not match int")
    assert reasons[1] == "malformed message: attempt 'abc' is not a number"
    assert reasons[2] == "unknown topic 'nobody.listens'; registered topics: always.fail, ok, slow"
    assert "Traceback" not in worker.output
    assert " ERROR " not in worker.output


def test_successful_runs_are_logged_at_debug_only(run: Start) -> None:
    quiet = run(APP_PUBLISH="ok*2")
    quiet.wait_for(r"^handled 1$")
    _stop(quiet)
    assert "taskorbit.events" not in quiet.output
    chatty = run("--log-level", "DEBUG", APP_PUBLISH="ok*2")
    chatty.wait_for(r"DEBUG \[\d+\] taskorbit\.events: ok \S+ completed in [\d.]+ s: ack", count=2)
    _stop(chatty)
    assert "hook LoggingHooks" not in chatty.output  # no hook failed along the way


def test_an_app_with_its_own_logging_hooks_logs_each_failure_once(run: Start) -> None:
    worker = run(APP_PUBLISH="always.fail*1", APP_OWN_LOGGING_HOOKS="1")
    worker.wait_for(r"dead-lettered: gave up")
    _stop(worker)
    assert [n for _, n in _failures(worker)] == ["1", "2", "3"]
    assert len(_tracebacks_after(worker)) == 1


def test_the_status_shows_running_handlers_and_the_deadline_while_draining(run: Start) -> None:
    worker = run(
        "--status", "log", "--status-interval", "0.2", "--shutdown-timeout", "20",
        APP_PUBLISH="slow*2", APP_SLOW_S="2",
    )  # fmt: skip
    worker.wait_for(r"^slow started \d$", count=2)
    worker.signal(signal.SIGTERM)
    line = worker.wait_for(
        r"taskorbit\.cli\.status: draining: 2 running, 0 waiting, deadline in (\d+) s"
    )
    assert 15 <= int(line[0].group(1)) <= 20
    assert worker.finish() == 0
    draining = [line for line in worker.lines if "draining: " in line and "status" in line]
    # Every report during the drain is the draining line, true until the end.
    assert not any(
        "in flight 0" in line for line in worker.lines[worker.lines.index(draining[0]) :]
    )
    assert "worker stopped: received=2 done=2" in worker.output
    assert "status line failed" not in worker.output


# -- the poller's outage log ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_at_its_start_at_growing_intervals_and_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage("SQS queue http://127.0.0.1:9/q", clock=clock)
    caplog.set_level(logging.DEBUG, logger="taskorbit.worker.poller")
    pauses = []
    while clock.now < 1000.0 + 200.0:  # failing receives, each after the last pause
        pauses.append(outage.failed(ConnectionError("Connection refused")))
        clock.now += pauses[-1]
    outage.ended()
    assert pauses[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0] and set(pauses[6:]) == {5.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        "cannot receive from SQS queue http://127.0.0.1:9/q (Connection refused); retrying in 0.2 s"
    )
    # Again once it lasted 10 s, then each time it lasted twice as long (give or take
    # one pause): 4 reminders in 200 s rather than a line per failed receive.
    lasted = [float(re.findall(r"after (\d+) s", w)[0]) for w in warnings[1:]]
    assert 10 <= lasted[0] < 15 and len(lasted) == 4
    assert all(2 * a <= b < 2 * a + 6 for a, b in itertools.pairwise(lasted))
    assert all(w.endswith("(Connection refused); retrying every 5.0 s") for w in warnings[1:])
    assert len(pauses) - len(warnings) > 30  # the other failures went to DEBUG
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage() == (
        f"receiving from SQS queue http://127.0.0.1:9/q again after {clock.now - 1000:.1f} s"
    )
