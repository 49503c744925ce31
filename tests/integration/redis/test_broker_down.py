"""`taskorbit worker` with its Redis down at start, run as a real subprocess.

Before, such a worker logged "worker started" and then "lost its Redis connection",
and a wrong host retried for ever after that one warning. Now it says where it is
trying and why it cannot (password hidden), retries with backoff, says "worker
started" only once Redis answered, and for orchestrators exits 1 at once with
``--fail-fast`` or after ``--startup-timeout``.
"""

from __future__ import annotations

import logging
import re
import signal
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskorbit.errors import TransportConnectionError
from taskorbit.message import Message
from taskorbit.transports.redis.pubsub import RedisPubSubTransport
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.servers import free_port
from tests.servers.outage import OutageProxy
from tests.unit.cli.test_cli import Proc, Start

pytestmark = pytest.mark.integration

APP = textwrap.dedent(
    """
    import os, sys
    import taskorbit as orbit
    from taskorbit.transports.redis.streams import RedisStreamsTransport

    app = orbit.Orbit(
        RedisStreamsTransport(url=os.environ["APP_REDIS_URL"], stream=os.environ["APP_STREAM"]),
        poll_timeout=0.2,
    )

    @app.task("hello")
    def hello(n: int) -> None:
        sys.stdout.write(f"handled {n}\\n"); sys.stdout.flush()
    """
)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Start]:
    (tmp_path / "redis_app.py").write_text(APP)
    stream = f"down-{uuid.uuid4().hex[:6]}"
    started: list[Proc] = []

    def start(url: str, *args: str, **env: str) -> Proc:
        proc = Proc(
            ["worker", "redis_app:app", "--status", "off", *args],
            tmp_path,
            {"APP_REDIS_URL": url, "APP_STREAM": stream, **env},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def _refused_url(password: str = "") -> tuple[str, int]:
    port = free_port()  # nobody listens there: connections are refused
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0", port


def test_a_refused_worker_says_where_and_why_and_retries_with_backoff(run: Start) -> None:
    url, port = _refused_url(password="hunter2")
    worker = run(url)
    sentence = re.escape(f"cannot connect to redis://:***@127.0.0.1:{port}/0 (Connection refused)")
    pauses = worker.wait_for(rf"WARNING .*{sentence}; retrying in (\d+) s$", count=3, timeout=30)
    assert [m.group(1) for m in pauses[:3]] == ["1", "2", "4"]
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0
    assert "stopped while waiting for the broker" in worker.output
    assert "worker started" not in worker.output
    assert "hunter2" not in worker.output


def test_a_wrong_host_is_named_with_the_resolver_s_answer(run: Start) -> None:
    worker = run("redis://no-such-host.invalid:6379/0")
    worker.wait_for(
        r"cannot connect to redis://no-such-host\.invalid:6379/0 \([^)]+\); retrying in 1 s$"
    )
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def test_fail_fast_exits_1_at_once_with_the_sentence(run: Start) -> None:
    url, port = _refused_url()
    started = time.monotonic()
    worker = run(url, "--fail-fast")
    assert worker.finish() == 1
    assert time.monotonic() - started < 10  # one check, no retries (Python starts in ~1 s)
    assert re.search(
        rf"ERROR .*cannot connect to redis://127\.0\.0\.1:{port}/0 \(Connection refused\); "
        r"exiting \(--fail-fast\)$",
        worker.output,
        re.M,
    )
    assert "retrying" not in worker.output and "worker started" not in worker.output


def test_the_fail_fast_variable_works_like_the_flag(run: Start) -> None:
    url, _ = _refused_url()
    worker = run(url, TASKORBIT_FAIL_FAST="true")
    assert worker.finish() == 1
    assert "exiting (--fail-fast)" in worker.output


def test_fail_fast_stops_a_supervisor_rather_than_restarting_children(run: Start) -> None:
    url, port = _refused_url()
    worker = run(url, "--fail-fast", "--processes", "2")
    assert worker.finish() == 1
    assert f"cannot connect to redis://127.0.0.1:{port}/0 (Connection refused)" in worker.output
    assert "supervising" not in worker.output


def test_startup_timeout_retries_then_exits_1_after_that_long(run: Start) -> None:
    url, port = _refused_url()
    started = time.monotonic()
    worker = run(url, "--startup-timeout", "2.5")
    assert worker.finish() == 1
    assert time.monotonic() - started >= 2.5
    retries = re.findall(
        rf"redis://127\.0\.0\.1:{port}/0 \(Connection refused\); retrying in", worker.output
    )
    assert len(retries) == 2  # at 0 s and after 1 s; the third check is at 2.5 s
    assert re.search(
        r"\(Connection refused\); giving up after 2\.\d s \(--startup-timeout 2\.5\)$",
        worker.output,
        re.M,
    )
    assert "worker started" not in worker.output


@pytest.fixture
def proxy(redis_url: str) -> Iterator[OutageProxy]:
    target = urlsplit(redis_url)
    assert target.hostname is not None and target.port is not None
    with OutageProxy(target.hostname, target.port) as proxy:
        yield proxy


def test_a_worker_started_before_redis_starts_once_redis_answers(
    run: Start, redis_url: str, proxy: OutageProxy
) -> None:
    proxy.cut()  # Redis is not there yet
    url = f"redis://127.0.0.1:{proxy.port}/0"
    worker = run(url)
    worker.wait_for(r"cannot connect to .*\(Connection refused\); retrying in 2 s$")
    proxy.restore()
    worker.wait_for(r"worker started: .* broker=redis://127\.0\.0\.1:\d+/0 stream down-\w+ group")
    assert re.search(
        rf"connected to redis://127\.0\.0\.1:{proxy.port}/0 .* after \d", worker.output
    )
    stream = re.search(r"stream (down-\w+)", worker.output).group(1)  # type: ignore[union-attr]
    RedisStreamsTransport(url=redis_url, stream=stream).publish([Message("hello", b"7")])
    worker.wait_for(r"^handled 7$")
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0
    lines = worker.output.splitlines()
    refused = max(i for i, line in enumerate(lines) if "cannot connect" in line)
    assert refused < next(i for i, line in enumerate(lines) if "worker started" in line)


# -- check() and describe() of the Redis transports ----------------------------------------


@pytest.mark.parametrize("kind", [RedisStreamsTransport, RedisPubSubTransport])
def test_check_answers_on_a_live_server_and_names_the_endpoint_when_refused(
    redis_url: str, kind: type[RedisStreamsTransport] | type[RedisPubSubTransport]
) -> None:
    live = kind(url=redis_url)
    live.check(timeout=2.0)
    url, port = _refused_url(password="hunter2")
    down = kind(url=url)
    with pytest.raises(TransportConnectionError) as caught:
        down.check(timeout=2.0)
    assert str(caught.value) == (
        f"cannot connect to redis://:***@127.0.0.1:{port}/0 (Connection refused)"
    )
    assert down.describe().startswith(f"redis://:***@127.0.0.1:{port}/0 ")
    live.close()
    down.close()


def test_describe_says_which_stream_group_and_channels() -> None:
    streams = RedisStreamsTransport(url="rediss://app:pw@cache:6380/2", stream="jobs", group="g")
    assert streams.describe() == "rediss://app:***@cache:6380/2 stream jobs group g"
    pubsub = RedisPubSubTransport(url="unix:///run/redis.sock?db=1", topics=["a", "b"])
    assert pubsub.describe() == "unix:///run/redis.sock?db=1 channels taskorbit:a,taskorbit:b"


def test_a_lost_connection_mid_run_is_logged_with_the_endpoint(
    proxy: OutageProxy, caplog: pytest.LogCaptureFixture
) -> None:
    transport = RedisStreamsTransport(url=f"redis://127.0.0.1:{proxy.port}/0", stream="lost")
    try:
        assert transport.receive(10, timeout=0.1) == []
        proxy.cut()
        with caplog.at_level(logging.INFO, logger="taskorbit.redis"):
            assert transport.receive(10, timeout=0.1) == []
            assert transport.receive(10, timeout=0.1) == []
            proxy.restore()
            transport.receive(10, timeout=0.1)
    finally:
        transport.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith(
        f"redis-streams consumer {transport.consumer} lost its Redis connection to "
        f"redis://127.0.0.1:{proxy.port}/0 ("
    )
    assert messages[0].endswith("); reconnecting in 0.1 s")
    assert re.fullmatch(
        rf".* reconnected to Redis at redis://127\.0\.0\.1:{proxy.port}/0 after \d+\.\d s",
        messages[1],
    )
