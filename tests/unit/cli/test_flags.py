"""Worker flags are checked like their TASKORBIT_* variables (one parser each): an
invalid value is one sentence and exit status 2 either way. Also `--version` and
`python -m taskorbit`. Real subprocesses, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from taskorbit.cli.config import WORKER_SETTINGS, resolve
from taskorbit.errors import ConfigurationError
from tests.unit.cli.test_cli import APP, Proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "demo_app.py").write_text(APP)
    return tmp_path


def taskorbit(project: Path, *args: str, **env: str) -> Proc:
    return Proc(list(args), project, env)


INVALID = [
    ("concurrency", "0", "must be greater than 0"),
    ("concurrency", "many", "must be a whole number"),
    ("buffer_size", "-4", "must be greater than 0"),
    ("buffer_size", str(2**31 + 1), "must be at most 2147483648"),
    ("processes", "1.5", "must be a whole number"),
    ("shutdown_timeout", "-5", "must be >= 0 seconds"),
    ("shutdown_timeout", "nan", "must be >= 0 seconds"),
    ("health_interval", "0", "must be a number of seconds greater than 0"),
    ("status_interval", "soon", "must be a number of seconds"),
    ("overflow", "sometimes", "must be one of block, drop_newest, drop_oldest, reject"),
    ("log_level", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR"),
    ("status", "blink", "must be one of auto, line, log, off"),
    ("startup_timeout", "0", "must be a number of seconds greater than 0"),
    ("log_tracebacks", "often", "must be one of first, always, never"),
]


@pytest.mark.parametrize(("name", "value", "reason"), INVALID)
def test_an_invalid_flag_and_its_variable_fail_alike_with_one_sentence_and_exit_2(
    project: Path, name: str, value: str, reason: str
) -> None:
    flag = "--" + name.replace("_", "-")
    by_flag = taskorbit(project, "worker", "demo_app:app", flag, value)
    assert by_flag.finish() == 2
    assert by_flag.lines == [f"taskorbit: {flag} {value} is invalid: {reason}"]

    env = "TASKORBIT_" + name.upper()
    by_env = taskorbit(project, "worker", "demo_app:app", **{env: value})
    assert by_env.finish() == 2
    assert by_env.lines == [f"taskorbit: {env}={value!r} is invalid: {reason}"]


def test_every_worker_setting_has_a_flag_and_is_documented() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "cli.md").read_text()
    for setting in WORKER_SETTINGS:
        assert f"`{setting.flag}" in docs, setting.flag
        assert f"`{setting.env}`" in docs, setting.env


def test_fail_fast_is_a_switch_and_its_variable_takes_true_or_false() -> None:
    assert resolve({"fail_fast": "true"}, {}) == {"fail_fast": True}  # --fail-fast
    assert resolve({}, {"TASKORBIT_FAIL_FAST": "yes"}) == {"fail_fast": True}
    assert resolve({"fail_fast": "false"}, {"TASKORBIT_FAIL_FAST": "1"}) == {"fail_fast": False}
    with pytest.raises(ConfigurationError, match="TASKORBIT_FAIL_FAST='maybe' is invalid"):
        resolve({}, {"TASKORBIT_FAIL_FAST": "maybe"})


def test_the_new_worker_flags_are_accepted(project: Path) -> None:
    worker = taskorbit(
        project,
        "worker",
        "demo_app:app",
        "--status",
        "off",
        "--fail-fast",
        "--startup-timeout",
        "5",
        "--log-tracebacks",
        "always",
    )
    try:
        worker.wait_for("worker started")
        worker.signal(signal.SIGTERM)
        assert worker.finish() == 0, worker.output
    finally:
        worker.kill()


def test_a_buffer_size_is_rounded_up_to_a_power_of_two_and_said_once(project: Path) -> None:
    supervisor = taskorbit(
        project, "worker", "demo_app:app", "--buffer-size", "1000", "--processes", "2"
    )
    try:
        started = supervisor.wait_for(r"worker \d started: .* buffer_size=(\d+)", count=2)
        assert [m.group(1) for m in started] == ["1024", "1024"]
        supervisor.signal(signal.SIGTERM)
        assert supervisor.finish() == 0, supervisor.output
    finally:
        supervisor.kill()
    said = supervisor.wait_for("is rounded up")
    assert len(said) == 1, supervisor.output  # by the supervisor; its children get 1024
    assert said[0].string.endswith(
        "taskorbit.cli: --buffer-size 1000 is rounded up to 1024: the ring's capacity is a "
        "power of two"
    )


@pytest.mark.parametrize("module", ["taskorbit", "taskorbit.cli"])
def test_version_and_python_dash_m(tmp_path: Path, module: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        cwd=tmp_path,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (0, f"taskorbit {metadata.version('taskorbit')}\n")
    helped = subprocess.run(
        [sys.executable, "-m", module, "publish", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: taskorbit publish")


def test_a_switch_before_the_app_does_not_swallow_it() -> None:
    from taskorbit.cli.main import build_parser

    args = build_parser().parse_args(["worker", "--fail-fast", "web:tasks"])
    assert (args.app, args.fail_fast) == ("web:tasks", "true")
    args = build_parser().parse_args(["worker", "web:tasks", "--no-fail-fast"])
    assert resolve(vars(args), {"TASKORBIT_FAIL_FAST": "yes"})["fail_fast"] is False
