"""Every example under examples/ runs to completion and prints what its README says.

Each runs as its own process, the way a reader would run it; the Redis, SQS and
Pub/Sub ones against this session's private servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers.pubsub import PubSubServer
from tests.servers.sqs import CREDENTIALS, REGION, SQSFixture

EXAMPLES = Path(__file__).parents[2] / "examples"


def lines_starting(out: str, prefix: str) -> list[str]:
    """The output lines that start with ``prefix``, sorted (handlers run concurrently)."""
    return sorted(line for line in out.splitlines() if line.startswith(prefix))


def run_example(path: str, timeout: float = 60.0, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_example_directory_has_a_readme() -> None:
    directories = [d for d in EXAMPLES.iterdir() if d.is_dir() and not d.name.startswith("_")]
    # Exactly these: a new example needs a test below as well as a README.
    assert {d.name for d in directories} == {
        "simple", "retry", "delayed", "idempotent", "otel",
        "sqs", "pubsub", "redis", "django", "flask", "testing",
    }  # fmt: skip
    for directory in directories:
        assert (directory / "README.md").is_file(), f"{directory.name} has no README.md"


def test_simple() -> None:
    out = run_example("simple/main.py")
    assert lines_starting(out, "hello, ") == ["hello, Ada", "hello, Grace", "hello, Linus"]
    assert "greeted 3; stats: 3 completed" in out


def test_retry() -> None:
    out = run_example("retry/main.py")
    assert "flaky succeeded on attempt 3" in out
    assert "rate_limited succeeded on attempt 2" in out
    assert "dead-lettered hopeless after attempt 3" in out
    assert "dead letters: ['hopeless']" in out


def test_delayed() -> None:
    out = run_example("delayed/main.py")
    assert "order: at once -> after a 0.5 s countdown -> at an ETA 1 s away" in out


def test_idempotent() -> None:
    out = run_example("idempotent/main.py")
    assert "charges made: 2 for 4 publishes (orders ['42', '43'])" in out


def test_otel() -> None:
    out = run_example("otel/main.py")
    assert "process invoice.render" in out and "parent: POST /invoices" in out
    assert "one trace: True" in out


def test_flask() -> None:
    out = run_example("flask/app.py")
    assert "POST /signup -> 202" in out
    assert "worker: Example Shop welcomes ada@example.com" in out


def test_the_flask_examples_own_test_passes() -> None:
    # docs/guide.md, section 7 shows this test; it must keep passing as shown.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=EXAMPLES / "flask",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_django(tmp_path: Path) -> None:
    out = run_example("django/demo.py", SHOP_DB=str(tmp_path / "shop.sqlite3"))
    assert "POST /orders/ -> 201" in out
    assert "worker: receipt for order 1: 9.99" in out


def test_redis(redis_url: str) -> None:
    out = run_example("redis/main.py", REDIS_URL=redis_url)
    assert "in the DLQ: refund after 1 attempt(s): refunds are paused" in out
    assert "redrove 1" in out
    assert "refunded order 42" in out


def test_sqs(sqs: SQSFixture) -> None:
    out = run_example(
        "sqs/main.py",
        AWS_ENDPOINT_URL_SQS=sqs.endpoint_url,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"],
    )
    assert lines_starting(out, "resized image ") == [
        "resized image 1",
        "resized image 2",
        "resized image 3",
    ]
    [dead] = lines_starting(out, "in the DLQ")
    assert dead.startswith("in the DLQ after 2 attempts: gave up after 2 attempts")


def test_pubsub(pubsub_emulator: PubSubServer) -> None:
    out = run_example("pubsub/main.py", PUBSUB_PROJECT_ID="taskorbit-examples")
    assert lines_starting(out, "welcome, ") == ["welcome, Ada", "welcome, Grace"]
    assert "handled 2" in out.splitlines()
