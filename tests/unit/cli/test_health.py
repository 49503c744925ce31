"""The liveness file is never written through a symlink another user planted.

The file usually sits in a shared directory such as /tmp. Before, it was written to
the predictable name ``PATH.tmp``: a symlink planted there made the worker overwrite
whatever file the link pointed to.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

import taskorbit.cli.health as health_module
from taskorbit.cli.health import HealthFileThread
from tests.unit.cli.test_cli import Proc
from tests.waiting import wait_for

VICTIM_TEXT = "precious, must not change\n"


def _health_file(path: Path) -> HealthFileThread:
    return HealthFileThread(path, dict, running=lambda: True, interval=0.05)


def _victim(tmp_path: Path, name: str) -> Path:
    victim = tmp_path / name
    victim.write_text(VICTIM_TEXT)
    return victim


def test_a_symlink_at_the_old_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    victim = _victim(tmp_path, "victim")
    alive = tmp_path / "alive"
    (tmp_path / "alive.tmp").symlink_to(victim)

    _health_file(alive).touch()

    assert victim.read_text() == VICTIM_TEXT
    assert not alive.is_symlink()
    assert alive.read_text() == f"{os.getpid()}\n"
    assert os.readlink(tmp_path / "alive.tmp") == str(victim)  # left alone


def test_a_symlink_at_the_path_itself_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = _victim(tmp_path, "victim")
    alive = tmp_path / "alive"
    alive.symlink_to(victim)

    _health_file(alive).touch()

    assert victim.read_text() == VICTIM_TEXT
    assert not alive.is_symlink()
    assert alive.read_text() == f"{os.getpid()}\n"


def test_touching_leaves_no_temporary_files_and_a_readable_file(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    health = _health_file(alive)
    for _ in range(3):
        health.touch()
    assert [p.name for p in tmp_path.iterdir()] == ["alive"]
    assert alive.stat().st_mode & 0o777 == 0o644


def test_a_file_that_cannot_be_written_is_logged_and_the_thread_keeps_trying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker runs here: stand in for its dispatcher so that every check is healthy
    # and tries to write the file.
    monkeypatch.setattr(health_module, "dispatcher_alive", lambda: True)
    alive = tmp_path / "missing-dir" / "alive"
    health = _health_file(alive)
    with caplog.at_level(logging.ERROR, logger="taskorbit.cli.health"):
        health.start()
        try:
            wait_for(lambda: len(caplog.records) >= 2, 10.0, "a failed write and a retry")
            assert health.is_alive()
            alive.parent.mkdir()  # the directory appears: the next try succeeds
            wait_for(alive.exists, 10.0, "the liveness file to be written")
            assert alive.read_text() == f"{os.getpid()}\n"
        finally:
            health.stop()
    assert "cannot write the liveness file" in caplog.records[0].getMessage()
    assert "health check failed; trying again" in caplog.records[1].getMessage()
    assert not any(t is health for t in threading.enumerate())


def test_the_worker_writes_through_neither_planted_symlink(tmp_path: Path) -> None:
    (tmp_path / "health_app.py").write_text("import taskorbit\napp = taskorbit.Orbit()\n")
    victim_tmp = _victim(tmp_path, "victim-of-tmp")
    victim_path = _victim(tmp_path, "victim-of-path")
    alive = tmp_path / "alive"
    (tmp_path / "alive.tmp").symlink_to(victim_tmp)
    alive.symlink_to(victim_path)

    worker = Proc(
        ["worker", "health_app:app", "--health-file", str(alive), "--health-interval", "0.05"],
        tmp_path,
    )
    try:
        worker.wait_for("worker started")
        wait_for(lambda: not alive.is_symlink(), 10.0, "the worker to replace the link")
        first = alive.stat().st_mtime_ns
        wait_for(lambda: alive.stat().st_mtime_ns != first, 10.0, "the worker to touch it again")
        worker.signal(signal.SIGTERM)
        assert worker.finish() == 0, worker.output
    finally:
        worker.kill()

    assert victim_tmp.read_text() == VICTIM_TEXT
    assert victim_path.read_text() == VICTIM_TEXT
    assert not alive.exists() and not alive.is_symlink()  # removed on stop
