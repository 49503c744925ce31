"""``taskorbit worker``: run an app in this process, or supervise N processes.

What the worker tells its user (docs/logging.md): it checks the broker before it
says "worker started" (``--fail-fast`` and ``--startup-timeout`` bound the wait),
logs every handler failure through :class:`~taskorbit.hooks.LoggingHooks` (added
when the app has none), and keeps a status line that log records step around and
that shows the drain after SIGTERM.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

from taskorbit.app import Orbit
from taskorbit.cli.config import EXIT_ERROR, EXIT_OK, EXIT_UNDRAINED, apply
from taskorbit.cli.health import HealthFileThread
from taskorbit.cli.status import StatusThread
from taskorbit.cli.supervisor import (
    DUPLICATE_SIGNAL_S,
    WORKER_INDEX_ENV,
    Supervisor,
    die_with_supervisor,
)
from taskorbit.errors import TransportError
from taskorbit.hooks import LoggingHooks
from taskorbit.transports.base import Transport

logger = logging.getLogger("taskorbit.cli")

# Flags forwarded to supervised children, as (setting, flag).
_FORWARDED = (
    ("concurrency", "--concurrency"),
    ("buffer_size", "--buffer-size"),
    ("overflow", "--overflow"),
    ("shutdown_timeout", "--shutdown-timeout"),
    ("log_level", "--log-level"),
    ("health_interval", "--health-interval"),
    ("status_interval", "--status-interval"),
    ("startup_timeout", "--startup-timeout"),
    ("log_tracebacks", "--log-tracebacks"),
)

#: Pauses between checks of a broker that did not answer at start: doubling to 30 s.
STARTUP_PAUSES_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: The longest one check of the broker may take.
CHECK_TIMEOUT_S = 5.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )


def run_worker(app_spec: str, app: Orbit, settings: Mapping[str, Any]) -> int:
    processes = int(settings.get("processes", 1))
    if processes > 1:
        return _supervise(app_spec, app, settings, processes)
    die_with_supervisor()
    apply(app, settings)
    log_events(app, settings)
    return _run_here(app, settings)


def log_events(app: Orbit, settings: Mapping[str, Any]) -> LoggingHooks:
    """The app's LoggingHooks, added when it has none, so that every handler failure
    is logged where the worker runs; ``log_tracebacks`` sets when tracebacks show."""

    def max_attempts(topic: str) -> int | None:
        task = app.tasks.get(topic)
        return task.retry_policy.max_retries + 1 if task is not None else None

    for hooks in app.hooks:
        if isinstance(hooks, LoggingHooks):
            if "log_tracebacks" in settings:
                hooks.tracebacks = str(settings["log_tracebacks"])
            if hooks.max_attempts is None:
                hooks.max_attempts = max_attempts
            return hooks
    events = LoggingHooks(
        tracebacks=str(settings.get("log_tracebacks", "first")),
        max_attempts=max_attempts,
        # Per-message DEBUG events cost a call per message even when not logged.
        debug_events=logging.getLogger("taskorbit.events").isEnabledFor(logging.DEBUG),
    )
    app.hooks.add(events)
    return events


def wait_for_broker(
    transport: Transport,
    stop: threading.Event,
    *,
    fail_fast: bool = False,
    startup_timeout: float | None = None,
    pauses: tuple[float, ...] = STARTUP_PAUSES_S,
) -> int | None:
    """Check the broker until it answers: None when it did, EXIT_OK when ``stop`` was
    set meanwhile, EXIT_ERROR when ``fail_fast`` or ``startup_timeout`` gave up.

    Each failure is logged with where and why and the pause before the next try::

        cannot connect to redis://127.0.0.1:6379/0 (Connection refused); retrying in 2 s
    """
    started = time.monotonic()
    deadline = None if startup_timeout is None else started + startup_timeout
    failures = 0
    while True:
        budget = CHECK_TIMEOUT_S if deadline is None else deadline - time.monotonic()
        try:
            transport.check(timeout=max(0.1, min(CHECK_TIMEOUT_S, budget)))
        except TransportError as exc:
            # Orchestrators asked to hear of it at once: no retry.
            if fail_fast:
                logger.error("%s; exiting (--fail-fast)", exc)
                return EXIT_ERROR
            pause = pauses[min(failures, len(pauses) - 1)]
            failures += 1
            # Out of time: say how long it tried.
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.error(
                        "%s; giving up after %.1f s (--startup-timeout %g)",
                        exc,
                        time.monotonic() - started,
                        startup_timeout,
                    )
                    return EXIT_ERROR
                pause = min(pause, left)
            # Otherwise wait and try again; a signal meanwhile ends the wait.
            logger.warning("%s; retrying in %s s", exc, f"{pause:.3g}")
            if stop.wait(pause):
                logger.info("stopped while waiting for the broker")
                return EXIT_OK
            continue
        if failures:
            logger.info(
                "connected to %s after %.1f s", transport.describe(), time.monotonic() - started
            )
        return None


def _supervise(app_spec: str, app: Orbit, settings: Mapping[str, Any], processes: int) -> int:
    # Checked here as well as in each child: with --fail-fast or --startup-timeout
    # the supervisor itself must exit 1, not restart children that exit 1 forever.
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set())
        for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        code = wait_for_broker(
            app.transport,
            stop,
            fail_fast=bool(settings.get("fail_fast")),
            startup_timeout=settings.get("startup_timeout"),
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code is not None:
        return code

    def argv_for(index: int) -> list[str]:
        argv = [sys.executable, "-m", "taskorbit.cli", "worker", app_spec, "--processes", "1"]
        for name, flag in _FORWARDED:
            if name in settings:
                argv += [flag, str(settings[name])]
        if "fail_fast" in settings:  # said either way, so the children's env cannot undo it
            argv.append("--fail-fast" if settings["fail_fast"] else "--no-fail-fast")
        if "health_file" in settings:
            argv += ["--health-file", f"{settings['health_file']}.{index}"]
        # A status line redrawn in place by N processes would be garbage.
        argv += ["--status", "log" if settings.get("status", "auto") != "off" else "off"]
        return argv

    timeout = float(settings.get("shutdown_timeout", app.shutdown_timeout))
    logger.info("supervising %d worker processes of %s", processes, app_spec)
    return Supervisor(argv_for, processes, shutdown_timeout=timeout).run()


def _run_here(app: Orbit, settings: Mapping[str, Any]) -> int:
    stop = threading.Event()
    signals_seen = itertools.count()
    first_signal_at = [0.0]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # next() on a count is one C call, so a second signal arriving mid-handler
        # still sees that it is the second (as in Orbit.run). A duplicate within
        # DUPLICATE_SIGNAL_S is ignored: `timeout`, process-group kills and some
        # container runtimes deliver the same SIGTERM twice at once.
        if next(signals_seen) > 0:
            if time.monotonic() - first_signal_at[0] < DUPLICATE_SIGNAL_S:
                return
            logger.error("second signal: exiting now without draining")
            os._exit(1)
        first_signal_at[0] = time.monotonic()
        logger.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    helpers: list[StatusThread | HealthFileThread] = []
    finished = True
    try:
        code = wait_for_broker(
            app.transport,
            stop,
            fail_fast=bool(settings.get("fail_fast")),
            startup_timeout=settings.get("startup_timeout"),
        )
        if code is not None:
            return code
        # Logged first: a handler that fails at once would otherwise be reported
        # before the worker that runs it.
        _log_started(app)
        app.start()
        helpers = _helpers(app, settings)
        for helper in helpers:
            helper.start()
        stop.wait()
        deadline = time.monotonic() + app.shutdown_timeout
        for helper in helpers:
            if isinstance(helper, StatusThread):
                helper.draining(deadline)
        finished = app.stop(app.shutdown_timeout)
    finally:
        for helper in helpers:
            helper.stop()
        if app.running:
            app.stop(0)
        for s, handler in previous.items():
            signal.signal(s, handler)
    stats = app.stats()
    logger.info(
        "worker stopped: received=%d done=%d retried=%d dead=%d%s",
        stats["received"],
        stats["completed"],
        stats["retried"],
        stats["dead_lettered"],
        "" if finished else " (handlers still running at the deadline)",
    )
    if not finished:
        # The executor's threads are not daemons: interpreter exit would wait for
        # the stuck handlers forever. Their messages come back from the broker once
        # their leases lapse (at-least-once), so leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_UNDRAINED)
    return EXIT_OK


def _log_started(app: Orbit) -> None:
    index = os.environ.get(WORKER_INDEX_ENV)
    logger.info(
        "worker%s started: transport=%s topics=%s concurrency=%d buffer_size=%d overflow=%s "
        "broker=%s",
        f" {index}" if index else "",
        app.transport.name,
        ",".join(sorted(app.tasks)) or "-",
        app.concurrency,
        app.buffer_size,
        app.overflow.value,
        app.transport.describe(),
    )


def _helpers(app: Orbit, settings: Mapping[str, Any]) -> list[StatusThread | HealthFileThread]:
    helpers: list[StatusThread | HealthFileThread] = []
    mode = settings.get("status", "auto")
    tty = sys.stderr.isatty()
    if mode == "auto":
        mode = "line" if tty else "log"
    if mode in ("line", "log"):
        default_interval = 1.0 if mode == "line" else 30.0
        helpers.append(
            StatusThread(
                app.stats,
                buffer_size=app.buffer_size,
                stream=sys.stderr,
                tty=mode == "line",
                interval=float(settings.get("status_interval", default_interval)),
            )
        )
    if settings.get("health_file"):
        helpers.append(
            HealthFileThread(
                settings["health_file"],
                app.stats,
                running=lambda: app.running,
                interval=float(settings.get("health_interval", 5.0)),
            )
        )
    return helpers
