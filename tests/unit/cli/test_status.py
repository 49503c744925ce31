"""The status line on a terminal: log records step around it, it fits the width.

Before, log records were written straight after the status text on the same row,
and in a 60-column terminal every redraw of the 80-character line left its first
row behind, so the screen filled with stale half lines. The tests read what the
worker wrote through a small terminal model (:func:`screen`) or a real pty.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskorbit.cli.status import (
    ERASE_LINE,
    StatusThread,
    TerminalLine,
    draining_line,
    status_line,
    terminal_width,
)
from tests.waiting import wait_for

CLI = [sys.executable, "-m", "taskorbit.cli"]
STATS = {"received": 12_408, "completed": 12_377, "retried": 21, "dead_lettered": 3}
LINE = status_line({**STATS, "active_runners": 8, "ring_length": 40}, buffer_size=4096, rate=412.5)


def screen(output: str, width: int) -> list[str]:
    """The rows a terminal ``width`` columns wide shows after ``output``: printable
    characters, ``\\r``, ``\\n`` and erase-to-end-of-line; a character written past
    the last column wraps to the next row, as xterm and the Linux console do."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(output):
        ch = output[i]
        if output.startswith("\x1b[K", i):
            del rows[row][col:]
            i += 3
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            if row == len(rows):
                rows.append([])
        else:
            if col >= width:
                row, col = row + 1, 0
                if row == len(rows):
                    rows.append([])
            cells = rows[row]
            cells.extend(" " * (col + 1 - len(cells)))
            cells[col] = ch
            col += 1
        i += 1
    return ["".join(cells).rstrip() for cells in rows]


# -- the line and what is written around it --------------------------------------------------


def test_a_long_status_line_is_cut_to_the_terminal_width_and_redraws_on_one_row() -> None:
    out = io.StringIO()
    line = TerminalLine(out, width=lambda stream: 60)
    for _ in range(5):
        line.show(LINE)
    assert len(LINE) > 60
    assert screen(out.getvalue(), 60) == [LINE[:59]]


def test_a_log_record_is_written_above_the_line_which_is_drawn_again_below_it() -> None:
    out = io.StringIO()
    line = TerminalLine(out, width=lambda stream: 60)
    line.show(LINE)
    line.write("2024-11-28 02:33:25 ERROR taskorbit.events: charge 17-0 failed\n")
    line.write("Traceback (most recent call last):\n  ...\nValueError: negative\n")
    assert screen(out.getvalue(), 60) == [
        "2024-11-28 02:33:25 ERROR taskorbit.events: charge 17-0 fail",
        "ed",
        "Traceback (most recent call last):",
        "  ...",
        "ValueError: negative",
        LINE[:59],
    ]


def test_the_width_is_read_again_at_every_draw_so_a_resize_takes_effect() -> None:
    out = io.StringIO()
    columns = [60]
    line = TerminalLine(out, width=lambda stream: columns[0])
    line.show(LINE)
    columns[0] = 30
    line.show(LINE)
    assert out.getvalue() == ERASE_LINE + LINE[:59] + ERASE_LINE + LINE[:29]


def test_a_line_left_unfinished_by_a_writer_is_not_erased_by_the_next_draw() -> None:
    out = io.StringIO()
    line = TerminalLine(out, width=lambda stream: 100)
    line.show("received 1")
    line.write("Enter a number: ")
    line.show("received 2")  # waits: drawing now would erase the prompt
    line.write("42\n")
    assert screen(out.getvalue(), 100) == ["Enter a number: 42", "received 2"]


def test_closing_leaves_the_last_line_and_moves_below_it() -> None:
    out = io.StringIO()
    line = TerminalLine(out, width=lambda stream: 100)
    line.show("received 3 | done 3")
    line.close()
    line.write("worker stopped\n")
    assert screen(out.getvalue(), 100) == ["received 3 | done 3", "worker stopped", ""]


def test_terminal_width_follows_columns_then_the_terminal_then_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 61, 0, 0))
        with os.fdopen(os.dup(slave), "w") as tty:
            monkeypatch.delenv("COLUMNS", raising=False)
            assert terminal_width(tty) == 61
            monkeypatch.setenv("COLUMNS", "77")
            assert terminal_width(tty) == 77
        monkeypatch.delenv("COLUMNS")
        assert terminal_width(io.StringIO()) >= 10  # no terminal: shutil's answer
    finally:
        os.close(master)
        os.close(slave)


def test_the_status_thread_routes_log_handlers_through_the_line_while_it_runs() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test_status.routing")
    log.addHandler(handler)
    log.propagate = False
    try:
        status = StatusThread(
            lambda: dict(STATS),
            buffer_size=8,
            stream=out,
            tty=True,
            interval=0.05,
            width=lambda stream: 200,
        )
        status.start()
        wait_for(lambda: "received 12,408" in out.getvalue(), 5, "the first status line")
        log.warning("charge 17-0 failed")
        status.stop()
        assert handler.stream is out  # given back
        log.warning("after")
    finally:
        log.removeHandler(handler)
    rows = screen(out.getvalue(), 200)
    assert rows[0] == "WARNING charge 17-0 failed"
    assert rows[1].startswith("received 12,408 | done 12,377 | retried 21 | dead 3 |")
    assert rows[2:] == ["WARNING after", ""]


# -- draining ----------------------------------------------------------------------------


def test_the_draining_line_counts_running_and_waiting_messages_and_the_seconds_left() -> None:
    stats = {"active_runners": 2, "waiting": 1, "ring_length": 3}
    assert draining_line(stats, seconds_left=26.2) == (
        "draining: 2 running, 4 waiting, deadline in 27 s"
    )
    assert draining_line(stats, seconds_left=-0.5).endswith("deadline passed")


def test_the_status_thread_shows_the_draining_line_at_once_when_the_drain_starts() -> None:
    out = io.StringIO()
    gauges = {"active_runners": 2, "waiting": 0, "ring_length": 0}
    status = StatusThread(
        lambda: dict(gauges),
        buffer_size=8,
        stream=out,
        tty=True,
        interval=60.0,  # only the drain itself wakes it
        width=lambda stream: 100,
    )
    status.start()
    try:
        status.draining(time.monotonic() + 27.0)
        wait_for(lambda: "draining" in out.getvalue(), 5, "the draining line")
    finally:
        status.stop()
    assert screen(out.getvalue(), 100)[0] == "draining: 2 running, 0 waiting, deadline in 27 s"


# -- the real worker on a pty ------------------------------------------------------------

APP = textwrap.dedent(
    """
    import logging
    import taskorbit as orbit

    app = orbit.Orbit(concurrency=2)
    log = logging.getLogger("shop.payments")

    @app.task("flaky", max_retries=1000, base_delay=0.15)
    def flaky(n: int) -> None:
        log.warning("order %d: the payment provider timed out", n)
        raise ValueError(f"the payment provider timed out for order {n}")

    app.publish_many("flaky", [1, 2])
    """
)


def _set_size(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


class Terminal:
    """A worker whose stderr is a pty ``columns`` wide; collects what it writes."""

    def __init__(self, project: Path, columns: int) -> None:
        self.master, slave = os.openpty()
        _set_size(slave, columns)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(
            [*CLI, "worker", "pty_app:app", "--status-interval", "0.05"],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        self.data = b""

    def read_until(self, condition: Callable[[bytes], object], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.data):
            assert time.monotonic() < deadline, f"timed out; the worker wrote:\n{self.text[-3000:]}"
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.data += os.read(self.master, 65536)
                except OSError:  # the worker exited and closed the pty
                    break

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def close(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)
        return code


def drawn_lines(data: bytes) -> list[str]:
    """Every status line drawn in full (up to the next ``\\r``) in ``data``."""
    return re.findall(r"\x1b\[K(received [^\r\n\x1b]*)(?=\r)", data.decode(errors="replace"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pty_app.py").write_text(APP)
    return tmp_path


def test_on_a_60_column_terminal_log_lines_and_the_status_line_never_share_a_row(
    project: Path,
) -> None:
    term = Terminal(project, columns=60)
    try:
        # The handler's own log lines, the worker's, and many status redraws in
        # between, up to a moment when the last write was a whole status line.
        term.read_until(
            lambda data: (
                data.count(b"provider timed out\r\n") >= 6
                and re.search(rb"\x1b\[Kreceived [^\r\n\x1b]{50,}\Z", data)
            )
        )
        rows = screen(term.text, 60)
    finally:
        assert term.close() == 0
    status_rows = [r for r in rows if "received " in r or "msg/s" in r or "| ring" in r]
    assert status_rows == [rows[-1]], "\n".join(rows)
    assert len(rows[-1]) == 59 and LINE_PREFIX.match(rows[-1])
    log_rows = [r for r in rows if " taskorbit." in r]
    assert len(log_rows) >= 6, "\n".join(rows)
    assert all(LOG_ROW.match(r) for r in log_rows), "\n".join(rows)


LINE_PREFIX = re.compile(r"^received \d+ \| done 0 \| retried \d+ \| dead 0 \| in flight")
LOG_ROW = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|ERROR|WARNING) \[\d+\] ")


def test_the_status_line_follows_a_resized_terminal(project: Path) -> None:
    term = Terminal(project, columns=70)
    try:
        term.read_until(lambda data: len(drawn_lines(data)) >= 2)
        _set_size(term.master, 40)
        before = len(term.data)
        term.read_until(lambda data: [len(d) for d in drawn_lines(data[before:])][-3:] == [39] * 3)
    finally:
        assert term.close() == 0
    assert {len(line) for line in drawn_lines(term.data[:before])} == {69}
    # Lines the worker drew before the resize may still have been on their way.
    after = [len(line) for line in drawn_lines(term.data[before:])]
    narrow = after.index(39)
    assert set(after[:narrow]) <= {69} and set(after[narrow:]) == {39}


def test_off_a_terminal_the_status_is_plain_log_lines(project: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "worker", "pty_app:app", "--status-interval", "0.1"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr or ()), daemon=True)
    reader.start()
    wait_for(lambda: sum("taskorbit.cli.status: received" in s for s in seen) >= 2, 20, "2 lines")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    reader.join(5)
    assert "\x1b[K" not in "".join(seen) and "\r" not in "".join(seen)
