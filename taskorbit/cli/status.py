"""The worker's live status: one line redrawn on a terminal, a log line otherwise.

::

    received 1,204 | done 1,180 | retried 12 | dead 3 | in flight 9 | ring 2% | 412.5 msg/s

and, once SIGTERM or SIGINT started the drain::

    draining: 2 running, 0 waiting, deadline in 27 s

The numbers come from :meth:`Orbit.stats`, read by this module's own thread, so
the worker's threads do no extra work for it. msg/s counts messages settled
(done + retried + dead-lettered) over the last interval.

On a terminal the line shares stderr with the log. Why a stream between the log
handlers and the terminal (:class:`TerminalLine`) rather than a handler of our own:
every writer to stderr must step around the line, not only the root logger's
handler (a framework's own console handler, ``warnings``, a dying thread's
traceback), and each of them writes one record in one ``write`` call. So while the
line is up, stderr's log handlers and ``sys.stderr`` write through the line, which,
under one lock with the status thread, erases the line, writes the record, and
draws the line again below it. The line is cut to the terminal's width, read again
on every draw so that a resized window works: a line that wraps leaves its first
row behind on every redraw, since ``\\r`` returns only to the start of the last row.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

logger = logging.getLogger("taskorbit.cli.status")

SETTLED = ("completed", "retried", "dead_lettered")
#: ``\r`` then "erase to the end of the line": the cursor's row becomes empty.
ERASE_LINE = "\r\x1b[K"
#: While draining, reports come at least this often (also as log lines).
DRAIN_INTERVAL_S = 5.0


def status_line(stats: dict[str, int], *, buffer_size: int, rate: float) -> str:
    """Format one status line from a stats snapshot.

    >>> status_line({"received": 5, "completed": 4, "retried": 1, "dead_lettered": 0,
    ...              "active_runners": 1, "ring_length": 2}, buffer_size=8, rate=2.0)
    'received 5 | done 4 | retried 1 | dead 0 | in flight 1 | ring 25% | 2.0 msg/s'
    """
    fill = 100 * stats.get("ring_length", 0) / max(1, buffer_size)
    return (
        f"received {stats.get('received', 0):,} | done {stats.get('completed', 0):,} | "
        f"retried {stats.get('retried', 0):,} | dead {stats.get('dead_lettered', 0):,} | "
        f"in flight {stats.get('active_runners', 0):,} | ring {fill:.0f}% | {rate:.1f} msg/s"
    )


def draining_line(stats: dict[str, int], *, seconds_left: float) -> str:
    """The line while the worker drains: handlers running, messages it still holds
    unstarted (they are on their way back to the broker), time to the deadline.

    >>> draining_line({"active_runners": 2, "waiting": 0, "ring_length": 0}, seconds_left=26.4)
    'draining: 2 running, 0 waiting, deadline in 27 s'
    """
    waiting = stats.get("waiting", 0) + stats.get("ring_length", 0)
    left = f"deadline in {math.ceil(seconds_left)} s" if seconds_left > 0 else "deadline passed"
    return f"draining: {stats.get('active_runners', 0):,} running, {waiting:,} waiting, {left}"


def terminal_width(stream: TextIO) -> int:
    """Columns of the terminal ``stream`` writes to: ``COLUMNS`` when set, else the
    terminal's own size, else :func:`shutil.get_terminal_size`'s (which asks stdout,
    and falls back to 80)."""
    columns = 0
    if not os.environ.get("COLUMNS"):
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0  # not a terminal, or a pty whose size was never set
    if columns <= 0:
        columns = shutil.get_terminal_size().columns
    return max(10, columns)


class TerminalLine:
    """One line kept at the bottom of a terminal, below whatever else is written.

    Everything written through :meth:`write` (the log records) appears above the
    line; :meth:`show` replaces its text. One lock orders both, so a record never
    lands in the middle of the line and the line never in the middle of a record.
    """

    def __init__(self, stream: TextIO, *, width: Callable[[TextIO], int] = terminal_width) -> None:
        self.stream = stream
        self._width = width
        self._lock = threading.Lock()
        self._text = ""  # guarded by self._lock
        self._shown = False  # the line is on the screen; guarded by self._lock
        # The last write did not end its line (a print(..., end="")): drawing now
        # would erase it. Guarded by self._lock.
        self._partial = False

    def show(self, text: str) -> None:
        """Draw ``text`` as the line, cut to the terminal's width."""
        with self._lock:
            self._text = text
            if not self._partial:
                self._draw()
                self.stream.flush()

    def write(self, text: str) -> int:
        """Write ``text`` above the line: erase it, write, draw it again."""
        if not text:
            return 0
        with self._lock:
            if self._shown:
                self.stream.write(ERASE_LINE)
                self._shown = False
            written = self.stream.write(text)
            self._partial = not text.endswith("\n")
            if self._text and not self._partial:
                self._draw()
            return written

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()

    def close(self) -> None:
        """Leave the last line on the screen and move below it."""
        with self._lock:
            if self._shown:
                self.stream.write("\n")
                self.stream.flush()
            self._shown = False
            self._text = ""

    def _draw(self) -> None:
        # Cut one column short: a line exactly as wide as the terminal leaves the
        # cursor waiting to wrap, and some terminals wrap it at once.
        columns = self._width(self.stream)
        self.stream.write(ERASE_LINE + self._text[: columns - 1])
        self._shown = True


class _ThroughLine:
    """A text stream that writes through a :class:`TerminalLine`; the rest of what
    a stream is (``fileno``, ``isatty``, ``encoding`` ...) is the real stream's."""

    def __init__(self, line: TerminalLine) -> None:
        self._line = line

    def write(self, text: str) -> int:
        return self._line.write(text)

    def flush(self) -> None:
        self._line.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._line.stream, name)


class StatusThread(threading.Thread):
    """Every ``interval`` seconds, reads the stats and shows them.

    ``tty=True`` keeps one line at the bottom of ``stream`` (a terminal) and routes
    the log handlers that write to ``stream``, and ``sys.stderr`` when it is
    ``stream``, through it while the thread runs; otherwise each report is an INFO
    record on the ``taskorbit.cli.status`` logger, which suits log collectors.
    :meth:`draining` switches to the draining line and reports at once.
    """

    def __init__(
        self,
        read_stats: Callable[[], dict[str, int]],
        *,
        buffer_size: int,
        stream: TextIO,
        tty: bool,
        interval: float,
        width: Callable[[TextIO], int] = terminal_width,
    ) -> None:
        super().__init__(name="taskorbit-status", daemon=True)
        self._read = read_stats
        self._buffer_size = buffer_size
        self._stream = stream
        self._tty = tty
        self._interval = max(0.05, interval)
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._deadline: float | None = None  # time.monotonic() of the drain's deadline
        self._line = TerminalLine(stream, width=width) if tty else None
        self._through: _ThroughLine | None = None
        self._rerouted: list[logging.StreamHandler[Any]] = []

    def start(self) -> None:
        if self._line is not None:
            self._reroute(self._line)
        super().start()

    def draining(self, deadline: float) -> None:
        """The worker drains until ``deadline`` (on ``time.monotonic()``)."""
        self._deadline = deadline
        self._wake.set()

    def run(self) -> None:
        last_settled, last_time = 0, time.monotonic()
        while True:
            interval = self._interval
            if self._deadline is not None:
                interval = min(interval, DRAIN_INTERVAL_S)
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                stats = self._read()
                now = time.monotonic()
                if self._deadline is not None:
                    self._show(draining_line(stats, seconds_left=self._deadline - now))
                    continue
                settled = sum(stats.get(name, 0) for name in SETTLED)
                rate = (settled - last_settled) / max(1e-9, now - last_time)
                last_settled, last_time = settled, now
                self._show(status_line(stats, buffer_size=self._buffer_size, rate=rate))
            except Exception:
                # A status line is never worth stopping a worker for.
                logger.exception("status line failed; trying again next interval")

    def _show(self, text: str) -> None:
        if self._line is not None:
            self._line.show(text)
        else:
            logger.info("%s", text)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self.is_alive():
            self.join(2.0)
        if self._line is not None:
            self._line.close()
            self._restore()

    # -- routing stderr through the line ---------------------------------------------

    def _reroute(self, line: TerminalLine) -> None:
        through = _ThroughLine(line)
        for handler in _stream_handlers():
            if handler.stream is self._stream:
                handler.setStream(through)
                self._rerouted.append(handler)
        if sys.stderr is self._stream:
            sys.stderr = through
        self._through = through

    def _restore(self) -> None:
        for handler in self._rerouted:
            if handler.stream is self._through:
                handler.setStream(self._stream)
        self._rerouted = []
        if self._through is not None and sys.stderr is self._through:
            sys.stderr = self._stream
        self._through = None


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    """Every StreamHandler attached to the root logger or a named one."""
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    found: list[logging.StreamHandler[Any]] = []
    for each in loggers:
        for handler in getattr(each, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler not in found:
                found.append(handler)
    return found
