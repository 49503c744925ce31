"""The worker process of the chaos runs, one script for every durable transport.

Run as ``python tests/chaos/worker.py --redis URL --transport redis|sqs|pubsub ...``
with the project root on PYTHONPATH (:func:`spawn` does that). Redis is where the
worker writes down what it did, whatever the broker, because the side effect under
test is itself a Redis write and the driver, in another process, reads it all back
after the SIGKILLs:

================  ============================================================
``runs``          hash: message number -> handler starts
``starts``        list of ``"<n> <worker> <epoch s>"``, one per handler start
``receives``      list of ``"<n> <worker> <epoch s>"``, one per delivery received
``effects``       hash: message number -> side effects committed
``workers``       hash: worker name -> handler starts in that worker
``ready``         hash: worker name -> when it was built and about to poll
``poison-runs``   counter: starts of the handler that kills the process
``duplicates``    counter: deliveries the idempotency store turned away
``dead-letters``  list of ``"<topic> <reason>"``
================  ============================================================

Topics: ``work`` (records its start, sleeps ``--sleep`` seconds, then commits its
effect), ``poison`` (``os._exit(3)`` every time), ``failing`` (raises every time).

With ``--store --atomic-effect`` the effect (``HINCRBY effects``) and the store's
done mark (:meth:`RedisStore.complete_in`) are one MULTI: the transactional
completion whose promise is that a redelivery never repeats a committed effect.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

import taskorbit as orbit
from taskorbit.hooks import Hooks
from taskorbit.idempotency.redis import RedisStore
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR, Message
from taskorbit.transports.base import Transport

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve()
PARENT_ENV = "TASKORBIT_CHAOS_PARENT"  # the pid of the process that spawned the worker
PR_SET_PDEATHSIG = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="where the worker records what it did")
    parser.add_argument("--transport", choices=("redis", "sqs", "pubsub", "kafka"), default="redis")
    broker = parser.add_argument_group("broker")
    broker.add_argument("--stream", help="Redis Streams: the stream (on --redis)")
    broker.add_argument("--queue-url", help="SQS: the queue")
    broker.add_argument("--dlq-url", help="SQS: the dead-letter queue")
    broker.add_argument("--endpoint", help="SQS: the endpoint (an emulator)")
    broker.add_argument("--subscription", help="Pub/Sub: the subscription")
    broker.add_argument("--topic", help="Pub/Sub: the topic")
    broker.add_argument("--dlq-topic", help="Pub/Sub: the dead-letter topic")
    broker.add_argument("--bootstrap", help="Kafka: the bootstrap servers (--topic: the topic)")
    broker.add_argument("--group", default="chaos", help="Kafka: the consumer group")
    broker.add_argument("--attempts-dir", help="Kafka: where crashed deliveries are counted")
    broker.add_argument(
        "--lease", type=float, default=1.0, help="lease_s / visibility / ack deadline"
    )
    parser.add_argument("--name", default=f"worker-{os.getpid()}")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--buffer-size", type=int, default=4096)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--poison-retries", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each work handler takes")
    parser.add_argument("--store", action="store_true", help="guard handlers with RedisStore")
    parser.add_argument(
        "--atomic-effect",
        action="store_true",
        help="commit the effect and the store's done mark in one MULTI",
    )
    parser.add_argument(
        "--claim-ttl",
        type=float,
        default=2.0,
        help="claim_ttl_s: short, so that a claim orphaned by SIGKILL frees itself soon",
    )
    return parser.parse_args(argv)


def build_transport(args: argparse.Namespace) -> Transport:
    if args.transport == "redis":
        from taskorbit.transports.redis.streams import RedisStreamsTransport

        return RedisStreamsTransport(url=args.redis, stream=args.stream, lease_s=args.lease)
    if args.transport == "sqs":
        from taskorbit.transports.sqs import SQSTransport

        return SQSTransport(
            args.queue_url,
            dlq_url=args.dlq_url,
            endpoint_url=args.endpoint,
            region_name="us-east-1",
            visibility_timeout=args.lease,
        )
    if args.transport == "kafka":
        from taskorbit.transports.kafka import KafkaTransport
        from tests.servers.kafka import TEST_CONSUMER_CONFIG

        # --lease is the session timeout: how soon a killed member's partitions move.
        session_ms = int(args.lease * 1000)
        return KafkaTransport(
            args.bootstrap,
            topic=args.topic,
            group=args.group,
            attempts_dir=args.attempts_dir,
            retry_delays=(0.05, 1.0),
            revoke_timeout_s=5.0,
            consumer_config={**TEST_CONSUMER_CONFIG, "session.timeout.ms": session_ms},
        )
    from taskorbit.transports.pubsub import PubSubTransport

    return PubSubTransport(
        args.subscription, args.topic, dlq_topic=args.dlq_topic, ack_deadline_s=args.lease,
        ordered=False,
    )  # fmt: skip


class Recorder(Hooks):
    """Records deliveries and what the worker turned away; handlers record the rest."""

    def __init__(self, r: redis.Redis, name: str) -> None:
        self.r = r
        self.name = name

    def on_receive(self, message: Message) -> None:
        if message.topic == "work":
            n = json.loads(message.body)["n"]
            self.r.rpush("receives", f"{n} {self.name} {time.time():.6f}")

    def on_duplicate(self, message: Message) -> None:
        self.r.incr("duplicates")

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self.r.rpush("dead-letters", f"{message.topic} {reason}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, format=f"{args.name} %(levelname)s %(message)s")
    r = redis.Redis.from_url(args.redis)
    store = RedisStore(url=args.redis, prefix="chaos:idem:") if args.store else None
    app = orbit.Orbit(
        build_transport(args),
        concurrency=args.concurrency,
        buffer_size=args.buffer_size,
        idempotency_store=store,
        claim_ttl_s=args.claim_ttl,
        duplicate_delay_s=0.3,
        poll_timeout=0.2 if args.transport in ("redis", "kafka") else 0.5,
        shutdown_timeout=5.0,
        hooks=[Recorder(r, args.name)],
    )

    @app.task("work", max_retries=args.max_retries, base_delay=0.05)
    def work(payload: dict[str, Any], ctx: orbit.Context) -> None:
        n = str(payload["n"])
        with r.pipeline(transaction=False) as record:  # one round trip
            record.hincrby("runs", n, 1)
            record.hincrby("workers", args.name, 1)
            record.rpush("starts", f"{n} {args.name} {time.time():.6f}")
            record.execute()
        if args.sleep:
            time.sleep(args.sleep)
        if store is not None and args.atomic_effect:
            with r.pipeline(transaction=True) as tx:
                tx.hincrby("effects", n, 1)
                store.complete_in(tx, ctx.attributes[DEFAULT_IDEMPOTENCY_ATTR], ttl_s=3600)
                tx.execute()
        else:
            r.hincrby("effects", n, 1)

    @app.task("poison", max_retries=args.poison_retries)
    def poison(payload: dict[str, Any]) -> None:
        r.incr("poison-runs")
        os._exit(3)  # a crash no exception handler can catch

    @app.task("failing", max_retries=args.max_retries, base_delay=0.05)
    def failing(payload: dict[str, Any]) -> None:
        raise RuntimeError("this handler always fails")

    r.hset("ready", args.name, f"{time.time():.6f}")  # built; polling starts next
    app.run()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start this script with ``args`` in its own process group, its output appended
    to ``log``. The worker stops (SIGTERM) when the thread that started it dies.

    No ``preexec_fn`` (tests.servers.start_process has one): with it subprocess
    forks instead of using vfork, and grpc's fork handlers in a parent that uses
    Pub/Sub then now and then abort the child before it execs (seen: SIGABRT,
    "epoll_wait error: Bad file descriptor"). The worker sets its death signal itself.
    """
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), PARENT_ENV: str(os.getpid())}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the process that spawned us dies (Linux)."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
