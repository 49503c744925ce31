"""SQS requests per message at steady state, and drain throughput, for taskorbit.

    python benchmarks/sqs_requests.py                      # moto_server, 100 messages
    python benchmarks/sqs_requests.py --messages 2000 \
        --ministack /path/to/venv/bin/ministack            # an emulator with flat cost
    python benchmarks/sqs_requests.py --endpoint http://127.0.0.1:4566   # one you run

What is measured: N messages are published first (SendMessageBatch, 10 per call),
then an Orbit worker with a no-op handler drains the queue. Every HTTP request the
worker's boto3 client sends is counted at the client (botocore's ``before-send``
event, so retries count too), by operation, from the worker's start until the
DeleteMessageBatch that deletes the N-th message. ``requests_per_message`` is that
count divided by N; the floor with 10-message batches is 0.2 (one receive and one
delete per 10), the goal <= 0.25. The idle tail after the queue is empty (one long
poll per ``wait_time_s``) is reported apart.

``msg_per_s`` is N divided by the time from the worker's start to the last handler
finishing. moto_server gets slower as a queue grows (about 33 ms per receive at a
depth of 10, 1.4 s at 1,000), so keep N around 100 there and use ministack (which
pins its own botocore: give it its own virtualenv) for volume.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

import taskorbit as orbit  # noqa: E402
from taskorbit.transports.sqs import SQSTransport  # noqa: E402

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if not with 200
    except OSError:
        return False


@contextmanager
def emulator(kind: str, binary: str | None) -> Iterator[str]:
    """Start moto_server or ministack on 127.0.0.1 and a free port; yield its URL."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"taskorbit-{kind}-"))
    env = dict(os.environ)
    if kind == "moto":
        exe = binary or str(Path(sys.executable).parent / "moto_server")
        argv, probe = [exe, "-H", "127.0.0.1", "-p", str(port)], "/moto-api/"
    else:
        exe = binary or shutil.which("ministack") or "ministack"
        argv, probe = [exe], "/"
        env.update(BIND_HOST="127.0.0.1", GATEWAY_PORT=str(port), SERVICES="sqs")
        env.update(IOT_MTLS_ENABLED="0")
    with open(workdir / "server.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(url + probe):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{kind} did not start: {(workdir / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


class RequestCounter:
    """Counts requests the worker's client sends, and messages it deletes."""

    def __init__(self, client: Any) -> None:
        self.lock = threading.Lock()
        self.by_operation: Counter[str] = Counter()
        self.deleted = 0
        self.done_at: float | None = None  # when the N-th message's delete went out
        self.at_done: Counter[str] = Counter()
        self.received_batches: Counter[int] = Counter()
        self.target = 0
        events = client.meta.events
        events.register("before-send.sqs.*", self._sent)
        events.register("provide-client-params.sqs.DeleteMessageBatch", self._deleting)
        events.register("after-call.sqs.ReceiveMessage", self._received)

    def _sent(self, request: Any, event_name: str, **_: Any) -> None:
        with self.lock:
            self.by_operation[event_name.rsplit(".", 1)[-1]] += 1

    def _deleting(self, params: dict[str, Any], **_: Any) -> None:
        with self.lock:
            self.deleted += len(params.get("Entries", []))
            if self.done_at is None and self.deleted >= self.target:
                self.done_at = time.monotonic()
                # This delete is about to be sent: count it in.
                self.at_done = self.by_operation.copy()
                self.at_done["DeleteMessageBatch"] += 1

    def _received(self, parsed: dict[str, Any], **_: Any) -> None:
        with self.lock:
            self.received_batches[len(parsed.get("Messages", []))] += 1


def client_for(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS
    )


def measure(
    endpoint: str,
    messages: int,
    concurrency: int,
    pollers: int,
    *,
    handler_s: float = 0.0,
    visibility_s: float = 30.0,
    buffer_size: int = 4096,
) -> dict[str, Any]:
    admin = client_for(endpoint)
    queue_url = admin.create_queue(QueueName=f"bench-{time.time_ns()}")["QueueUrl"]
    producer = SQSTransport(queue_url, client=admin)
    started = time.perf_counter()
    for i in range(0, messages, 500):
        producer.publish(
            [
                orbit.Message(topic="noop", body=b'{"n":%d}' % n)
                for n in range(i, min(messages, i + 500))
            ]
        )
    publish_s = time.perf_counter() - started

    worker_client = client_for(endpoint)
    counter = RequestCounter(worker_client)
    counter.target = messages
    transport = SQSTransport(
        queue_url, client=worker_client, pollers=pollers, visibility_timeout=visibility_s
    )
    app = orbit.Orbit(transport, concurrency=concurrency, poll_timeout=1.0, buffer_size=buffer_size)
    done = threading.Event()
    handled = [0]
    lock = threading.Lock()
    last_done = [0.0]

    @app.task("noop")
    def noop(payload: dict[str, int]) -> None:
        if handler_s:
            time.sleep(handler_s)
        with lock:
            handled[0] += 1
            if handled[0] == messages:
                last_done[0] = time.monotonic()
                done.set()

    t0 = time.monotonic()
    app.start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"only {handled[0]} of {messages} messages were handled")
        deadline = time.monotonic() + 10
        while counter.done_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(2.5)  # a little idle tail, reported apart
    finally:
        app.stop(timeout=10)
    steady = sum(counter.at_done.values())
    idle = sum(counter.by_operation.values()) - steady
    return {
        "system": "taskorbit",
        "messages": messages,
        "concurrency": concurrency,
        "pollers": pollers,
        "buffer_size": buffer_size,
        "handler_s": handler_s,
        "visibility_s": visibility_s,
        "requests": dict(counter.at_done),
        "requests_per_message": round(steady / messages, 4),
        "idle_tail_requests": idle,
        "receive_batch_sizes": dict(sorted(counter.received_batches.items())),
        "seconds": round(last_done[0] - t0, 3),
        "msg_per_s": round(messages / (last_done[0] - t0), 1),
        "publish_seconds": round(publish_s, 3),
        "publish_msg_per_s": round(messages / publish_s, 1),
    }


def celery_broker(endpoint: str) -> str:
    # kombu takes the endpoint from the broker URL's host and port.
    return "sqs://testing:testing@" + endpoint.removeprefix("http://")


def celery_worker(endpoint: str, queue_url: str, messages: int, out: str) -> None:
    """The Celery worker process: kombu's SQS transport, requests counted at the
    client (botocore calls and kombu's own pycurl calls), one thread pool so that the
    counts live in one process."""
    import botocore.client
    from celery import Celery  # type: ignore[import-untyped]
    from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection

    lock = threading.Lock()
    counts: Counter[str] = Counter()
    state = {"deleted": 0, "handled": 0, "last_done": 0.0}
    finished = threading.Event()

    def count(operation: str) -> None:
        with lock:
            counts[operation] += 1
            if operation == "DeleteMessage":
                state["deleted"] += 1
                if state["deleted"] == messages:
                    finished.set()

    # Any: both are patched in place, which the type checker rightly dislikes.
    boto_client: Any = botocore.client.BaseClient
    kombu_connection: Any = AsyncSQSConnection
    make_api_call = boto_client._make_api_call
    make_request = kombu_connection.make_request

    def counted_api_call(self: Any, operation: str, params: Any) -> Any:
        count(operation)
        return make_api_call(self, operation, params)

    def counted_request(self: Any, operation: str, *args: Any, **kwargs: Any) -> Any:
        count(operation)
        return make_request(self, operation, *args, **kwargs)

    boto_client._make_api_call = counted_api_call
    kombu_connection.make_request = counted_request

    name = queue_url.rsplit("/", 1)[-1]
    app = Celery("sqsbench", broker=celery_broker(endpoint))
    app.conf.update(
        broker_transport_options={
            "region": REGION, "is_secure": False,
            "wait_time_seconds": 1, "visibility_timeout": 30,
            "predefined_queues": {name: {"url": queue_url, "access_key_id": "testing",
                                         "secret_access_key": "testing"}},
        },
        task_default_queue=name, task_acks_late=True, task_ignore_result=True,
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
    )  # fmt: skip

    @app.task(name="noop")  # type: ignore[untyped-decorator]
    def noop(n: int) -> None:
        with lock:
            state["handled"] += 1
            if state["handled"] == messages:
                state["last_done"] = time.monotonic()

    def report() -> None:
        finished.wait()
        with lock:
            snapshot = dict(counts)
        steady = sum(
            v for k, v in snapshot.items() if k not in ("GetQueueUrl", "GetQueueAttributes")
        )
        Path(out).write_text(json.dumps({
            "system": "celery", "messages": messages, "requests": snapshot,
            "requests_per_message": round(steady / messages, 4),
            "seconds": round(state["last_done"] - t0, 3),
            "msg_per_s": round(messages / (state["last_done"] - t0), 1),
        }))  # fmt: skip
        os._exit(0)

    threading.Thread(target=report, daemon=True).start()
    t0 = time.monotonic()
    app.Worker(pool="threads", concurrency=64, loglevel="WARNING", without_heartbeat=True,
               without_mingle=True, without_gossip=True, quiet=True).start()  # fmt: skip


def measure_celery(endpoint: str, messages: int) -> dict[str, Any]:
    """Publish N Celery tasks (kombu: one SendMessage each), then time a Celery
    worker draining them, its requests counted as taskorbit's are."""
    from celery import Celery

    admin = client_for(endpoint)
    queue_url = admin.create_queue(
        QueueName=f"bench-celery-{time.time_ns()}", Attributes={"VisibilityTimeout": "30"}
    )["QueueUrl"]
    name = queue_url.rsplit("/", 1)[-1]
    producer = Celery("sqsbench", broker=celery_broker(endpoint))
    producer.conf.update(
        broker_transport_options={
            "region": REGION, "is_secure": False,
            "predefined_queues": {name: {"url": queue_url, "access_key_id": "testing",
                                         "secret_access_key": "testing"}},
        },
        task_default_queue=name,
    )  # fmt: skip
    started = time.perf_counter()
    with producer.connection_for_write() as conn:
        for n in range(messages):
            producer.send_task("noop", args=(n,), connection=conn)
    publish_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "celery.json"
        argv = [sys.executable, __file__, "--celery-worker", endpoint, queue_url,
                str(messages), str(out)]  # fmt: skip
        with open(Path(tmp) / "log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        try:
            proc.wait(600)
        finally:
            if proc.poll() is None:
                proc.kill()
        if not out.exists():
            raise RuntimeError("celery worker failed: " + (Path(tmp) / "log").read_text()[-3000:])
        result: dict[str, Any] = json.loads(out.read_text())
    result["publish_seconds"] = round(publish_s, 3)
    result["publish_msg_per_s"] = round(messages / publish_s, 1)
    return result


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--celery-worker":
        celery_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pollers", type=int, default=1)
    parser.add_argument("--buffer-size", type=int, default=4096)
    parser.add_argument("--handler-s", type=float, default=0.0, help="seconds each handler sleeps")
    parser.add_argument(
        "--visibility", type=float, default=30.0, help="visibility timeout (the lease), seconds"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", help="an SQS endpoint that is already running")
    where.add_argument(
        "--ministack", nargs="?", const="", metavar="BINARY",
        help="start ministack (optionally the binary to run) instead of moto",
    )  # fmt: skip
    parser.add_argument(
        "--celery", action="store_true",
        help="also measure Celery's SQS transport (kombu; needs pycurl)",
    )  # fmt: skip
    args = parser.parse_args()
    kind = args.endpoint or ("moto" if args.ministack is None else "ministack")
    with contextlib.ExitStack() as stack:
        url = args.endpoint or stack.enter_context(emulator(kind, args.ministack or None))
        results = [
            measure(
                url,
                args.messages,
                args.concurrency,
                args.pollers,
                handler_s=args.handler_s,
                visibility_s=args.visibility,
                buffer_size=args.buffer_size,
            )
        ]
        if args.celery:
            results.append(measure_celery(url, args.messages))
    for result in results:
        result["emulator"] = kind
    print(json.dumps(results if args.celery else results[0]))


if __name__ == "__main__":
    main()
