"""A private Pub/Sub server for the test session.

TASKORBIT_PUBSUB_SERVER=pstest forces the Go fake even where the emulator exists.

Google's emulator (Java) where it is installed; otherwise, in CI or as root,
Google's Go fake ``pstest`` built from Debian packages (tests/servers/pstest/main.go);
otherwise the tests are skipped (failed in CI) with the command that installs one.

The emulator has no reset: every test uses its own topic and subscription names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import IN_CI, free_port, start_process, stop_process, unavailable, wait_until

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
EMULATOR_INSTALL = "apt-get install -y google-cloud-cli-pubsub-emulator openjdk-17-jre-headless"
PSTEST_SOURCE = Path(__file__).parent / "pstest" / "main.go"
PSTEST_INSTALL = "apt-get install -y golang-go golang-google-cloud-dev"
PSTEST_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskorbit" / "pstest"
)
#: The project id every test uses; the emulator accepts any.
PROJECT = "taskorbit-test"
# A loaded 2-core machine can take far longer than the usual 3 s to start the JVM.
STARTUP_TIMEOUT_S = 60.0


class PubSubServer(str):
    """The server's ``host:port``; ``kind`` says which fake it is ("emulator" or
    "pstest"), so tests can skip what pstest does not do (dead-letter policies,
    delivery_attempt, ordering)."""

    kind: str

    def __new__(cls, address: str, kind: str) -> PubSubServer:
        server = super().__new__(cls, address)
        server.kind = kind
        return server


def _log_says(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def _start_emulator(workdir: Path) -> tuple[subprocess.Popen[bytes], PubSubServer]:
    port = free_port()
    log = workdir / "pubsub-emulator.log"
    proc = start_process([str(EMULATOR), "--host=127.0.0.1", f"--port={port}"], log)
    try:
        wait_until(
            lambda: _log_says(log, "Server started, listening on"),
            STARTUP_TIMEOUT_S,
            "pubsub emulator",
            log,
        )
    except BaseException:
        stop_process(proc)
        raise
    return proc, PubSubServer(f"127.0.0.1:{port}", "emulator")


def _build_pstest() -> Path:
    """Build pstest from Debian's Go sources (GOPATH mode, no network), once."""
    binary = PSTEST_CACHE / "pstest-server"
    if binary.exists() and binary.stat().st_mtime >= PSTEST_SOURCE.stat().st_mtime:
        return binary
    if (
        shutil.which("go") is None
        or not Path("/usr/share/gocode/src/cloud.google.com/go/pubsub").exists()
    ):
        if os.geteuid() != 0:
            raise RuntimeError(f"Go or golang-google-cloud-dev missing; run: sudo {PSTEST_INSTALL}")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=apt_env)
        subprocess.run(
            ["apt-get", "install", "-y", "golang-go", "golang-google-cloud-dev"],
            check=True,
            env=apt_env,
        )
    PSTEST_CACHE.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(PSTEST_CACHE / "gocache"),
    }
    subprocess.run(["go", "build", "-o", str(binary), str(PSTEST_SOURCE)], check=True, env=env)
    return binary


def _start_pstest(workdir: Path) -> tuple[subprocess.Popen[bytes], PubSubServer]:
    port = free_port()
    log = workdir / "pstest.log"
    proc = start_process([str(_build_pstest()), f"127.0.0.1:{port}"], log)
    try:
        wait_until(lambda: _log_says(log, "listening on"), STARTUP_TIMEOUT_S, "pstest", log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, PubSubServer(f"127.0.0.1:{port}", "pstest")


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubServer]:
    """Start a Pub/Sub server for the session and point the client at it through
    PUBSUB_EMULATOR_HOST (restored afterwards)."""
    workdir = Path(tempfile.mkdtemp(prefix="taskorbit-pubsub-"))
    if EMULATOR.exists() and os.environ.get("TASKORBIT_PUBSUB_SERVER") != "pstest":
        proc, server = _start_emulator(workdir)
    elif IN_CI or os.geteuid() == 0:
        try:
            proc, server = _start_pstest(workdir)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as error:
            unavailable(f"Pub/Sub emulator and pstest ({error})", EMULATOR_INSTALL)
            raise  # unreachable: unavailable() fails or skips
    else:
        unavailable(
            "Google's Pub/Sub emulator", f"sudo {EMULATOR_INSTALL} (or sudo {PSTEST_INSTALL})"
        )
        raise AssertionError("unreachable")
    saved = {name: os.environ.get(name) for name in ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID")}
    os.environ["PUBSUB_EMULATOR_HOST"] = str(server)
    os.environ["PUBSUB_PROJECT_ID"] = PROJECT
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        # The emulator's launcher script starts a JVM child: stop the whole group.
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
