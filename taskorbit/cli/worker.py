"""``taskorbit worker``: run an app in this process, or supervise N processes."""

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
from taskorbit.cli.config import EXIT_OK, EXIT_UNDRAINED, apply
from taskorbit.cli.health import HealthFileThread
from taskorbit.cli.status import StatusThread
from taskorbit.cli.supervisor import (
    DUPLICATE_SIGNAL_S,
    WORKER_INDEX_ENV,
    Supervisor,
    die_with_supervisor,
)

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
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )


def run_worker(app_spec: str, app: Orbit, settings: Mapping[str, Any]) -> int:
    processes = int(settings.get("processes", 1))
    if processes > 1:
        return _supervise(app_spec, settings, processes, app.shutdown_timeout)
    die_with_supervisor()
    apply(app, settings)
    return _run_here(app, settings)


def _supervise(
    app_spec: str, settings: Mapping[str, Any], processes: int, shutdown_timeout: float
) -> int:
    def argv_for(index: int) -> list[str]:
        argv = [sys.executable, "-m", "taskorbit.cli", "worker", app_spec, "--processes", "1"]
        for name, flag in _FORWARDED:
            if name in settings:
                argv += [flag, str(settings[name])]
        if "health_file" in settings:
            argv += ["--health-file", f"{settings['health_file']}.{index}"]
        # A status line redrawn in place by N processes would be garbage.
        argv += ["--status", "log" if settings.get("status", "auto") != "off" else "off"]
        return argv

    timeout = float(settings.get("shutdown_timeout", shutdown_timeout))
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
    try:
        app.start()
        index = os.environ.get(WORKER_INDEX_ENV)
        logger.info(
            "worker%s started: transport=%s topics=%s concurrency=%d buffer_size=%d overflow=%s",
            f" {index}" if index else "",
            app.transport.name,
            ",".join(sorted(app.tasks)) or "-",
            app.concurrency,
            app.buffer_size,
            app.overflow.value,
        )
        helpers = _helpers(app, settings)
        for helper in helpers:
            helper.start()
        stop.wait()
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
