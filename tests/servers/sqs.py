"""A private moto_server (an SQS emulator) for the test session.

``sqs_server`` starts ``moto_server -H 127.0.0.1 -p PORT`` from the virtualenv that
runs the tests, on a free port, logging to a temporary file, once per session. It
sets no environment variables: tests get the endpoint and a client from ``sqs``,
which also resets the emulator before each test, so every test starts with no
queues (moto gets slower as a queue grows, so tests keep queues under ~100).

Import both fixtures into a conftest::

    from tests.servers.sqs import sqs, sqs_server  # noqa: F401
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, start_process, stop_process, unavailable, wait_until

INSTALL = "pip install 'moto[server]'"
REGION = "us-east-1"
# moto accepts any credentials; fixed ones keep boto3 from looking for real ones.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class SQSServer:
    endpoint_url: str
    log: Path

    def client(self) -> Any:
        """A fresh boto3 SQS client for this server."""
        import boto3

        return boto3.session.Session().client(
            "sqs", endpoint_url=self.endpoint_url, region_name=REGION, **CREDENTIALS
        )

    def reset(self) -> None:
        """Forget every queue and message (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@dataclass(frozen=True)
class SQSFixture:
    """What a test gets: the server, a client, and a queue factory."""

    server: SQSServer
    client: Any

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def create_queue(self, name: str, **attributes: str) -> str:
        """Create a queue (FIFO when ``name`` ends in .fifo) and return its URL."""
        if name.endswith(".fifo"):
            attributes.setdefault("FifoQueue", "true")
        return str(self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def queue_arn(self, queue_url: str) -> str:
        got = self.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(got["Attributes"]["QueueArn"])


def _moto_server_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "moto_server"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("moto_server")


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[SQSServer]:
    binary = _moto_server_binary()
    if binary is None:
        unavailable("moto_server", INSTALL)
        return
    workdir = Path(tempfile.mkdtemp(prefix="taskorbit-moto-"))
    log = workdir / "moto.log"
    port = free_port()
    proc = start_process([binary, "-H", "127.0.0.1", "-p", str(port)], log)
    server = SQSServer(endpoint_url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_until(lambda: _answers(f"{server.endpoint_url}/moto-api/"), 30.0, "moto_server", log)
        yield server
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sqs(sqs_server: SQSServer) -> Iterator[SQSFixture]:
    sqs_server.reset()
    fixture = SQSFixture(server=sqs_server, client=sqs_server.client())
    yield fixture
    fixture.client.close()
