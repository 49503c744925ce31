"""The durable brokers as the chaos driver sees them.

Each gives the driver the same things: a transport to publish with, the worker
flags and environment that point ``worker.py`` at the broker, what the broker still
holds (new, in flight, delayed) while workers run, what is left once they stopped,
and ``close``. Every broker makes fresh, uniquely named queues, streams or topics,
so runs never see each other's messages; each also has a dead-letter destination, so
that a message the worker gives up on is counted rather than left in the queue.

Pub/Sub cannot count a subscription's backlog (the emulator has no metrics), so its
``backlog`` answers None, and its ``leftover`` pulls, without acking, whatever a
fresh consumer still gets.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from typing import Any, Protocol

from taskorbit.transports.base import Transport


class ChaosBroker(Protocol):
    name: str  # as the table shows it
    lease_s: float  # lease_s / visibility timeout / ack deadline given to the workers

    def producer(self) -> Transport: ...

    def worker_args(self) -> list[str]: ...

    def worker_env(self) -> dict[str, str]: ...

    def backlog(self) -> int | None:
        """Messages the broker still holds, or None when it cannot tell."""
        ...

    def leftover(self) -> int:
        """With every worker stopped: messages a fresh consumer would still get."""
        ...

    def close(self) -> None: ...


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class RedisStreamsBroker:
    name = "Redis Streams"

    def __init__(self, redis_url: str, *, lease_s: float = 1.0) -> None:
        import redis

        from taskorbit.transports.redis.streams import RedisStreamsTransport

        self.lease_s = lease_s
        self._transport = RedisStreamsTransport(url=redis_url, stream=_unique("chaos"))
        self._raw = redis.Redis.from_url(redis_url)

    def producer(self) -> Transport:
        return self._transport

    def worker_args(self) -> list[str]:
        return ["--transport", "redis", "--stream", self._transport.stream]

    def worker_env(self) -> dict[str, str]:
        return {}

    def backlog(self) -> int:
        import redis

        t, raw = self._transport, self._raw
        # Acked entries are deleted (delete_acked=True), so a stream's length counts
        # what is new or pending. Hand-backs wait in the group's retry stream and in
        # the delayed sets.
        held = raw.xlen(t.stream) + raw.xlen(t.retry_stream)
        held += raw.zcard(t.delayed_key) + raw.zcard(t.group_delayed_key)
        for stream in (t.stream, t.retry_stream):
            # No group yet means nothing pending. An id deleted while still pending
            # is counted here only.
            with contextlib.suppress(redis.ResponseError):
                held += raw.xpending(stream, t.group)["pending"]
        return int(held)

    def leftover(self) -> int:
        return self.backlog()

    def close(self) -> None:
        self._transport.close()
        self._raw.close()


class SQSBroker:
    name = "SQS"

    def __init__(self, endpoint_url: str, *, lease_s: float = 3.0) -> None:
        import boto3

        from taskorbit.transports.sqs import SQSTransport
        from tests.servers.sqs import CREDENTIALS, REGION

        self.lease_s = float(math.ceil(lease_s))  # SQS counts whole seconds
        self._endpoint = endpoint_url
        self._client = boto3.session.Session().client(
            "sqs", endpoint_url=endpoint_url, region_name=REGION, **CREDENTIALS
        )
        name = _unique("chaos")
        self.queue_url = self._create(name)
        self.dlq_url = self._create(f"{name}-dlq")
        self._transport = SQSTransport(self.queue_url, client=self._client)

    def _create(self, name: str) -> str:
        return str(self._client.create_queue(QueueName=name)["QueueUrl"])

    def producer(self) -> Transport:
        return self._transport

    def worker_args(self) -> list[str]:
        return [
            "--transport", "sqs", "--endpoint", self._endpoint,
            "--queue-url", self.queue_url, "--dlq-url", self.dlq_url,
        ]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        from tests.servers.sqs import CREDENTIALS, REGION

        return {
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
        }

    def backlog(self) -> int:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        got = self._client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return sum(int(got["Attributes"].get(n, 0)) for n in names)

    def leftover(self) -> int:
        return self.backlog()

    def close(self) -> None:
        self._transport.close()
        self._client.close()


class PubSubBroker:
    """Needs PUBSUB_EMULATOR_HOST in this process's environment (the session
    fixture and the chaos script set it); the workers inherit it."""

    name = "Pub/Sub"

    def __init__(self, *, project: str, lease_s: float = 10.0, probe_s: float = 2.0) -> None:
        from taskorbit.transports.pubsub import PubSubTransport

        self.lease_s = float(max(10, math.ceil(lease_s)))  # Pub/Sub's shortest deadline
        self._probe_s = probe_s
        name = _unique("chaos")
        self.topic = f"projects/{project}/topics/{name}"
        self.subscription = f"projects/{project}/subscriptions/{name}-sub"
        self.dlq_topic = f"projects/{project}/topics/{name}-dlq"
        deadline = self.lease_s
        # create=True makes the topics and the subscription; the second transport
        # gives the dead-letter topic a subscription, without which it keeps nothing.
        # Without message ordering: the chaos messages have no ordering key, and on an
        # ordering-enabled subscription the emulator treats keyless messages as one
        # key and redelivers acked ones after a killed worker's deadline passes
        # (docs/transports/pubsub.md, testing against the emulator).
        self._transport = PubSubTransport(
            self.subscription, self.topic, dlq_topic=self.dlq_topic,
            ack_deadline_s=deadline, create=True, ordered=False,
        )  # fmt: skip
        self._dlq = PubSubTransport(
            f"{self.subscription}-dlq", self.dlq_topic, ack_deadline_s=10, create=True,
            ordered=False,
        )  # fmt: skip

    def producer(self) -> Transport:
        return self._transport

    def worker_args(self) -> list[str]:
        return [
            "--transport", "pubsub", "--subscription", self.subscription,
            "--topic", self.topic, "--dlq-topic", self.dlq_topic,
        ]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}  # PUBSUB_EMULATOR_HOST comes from this process's environment

    def backlog(self) -> None:
        return None

    def leftover(self) -> int:
        """Pull for ``probe_s`` seconds without acking; count distinct messages."""
        seen: set[str] = set()
        deadline = time.monotonic() + self._probe_s
        while (left := deadline - time.monotonic()) > 0:
            got: list[Any] = self._transport.receive(100, timeout=min(1.0, left))
            seen.update(m.id for m in got)
        return len(seen)

    def close(self) -> None:
        self._transport.close()
        self._dlq.close()


class KafkaBroker:
    """A fresh topic and group on a Kafka cluster (the tests' mock). The backlog is
    what the group has not committed: per partition of the topic and of the group's
    retry topics, the end of the log minus the committed offset. ``lease_s`` is the
    consumer session timeout: how soon a killed member's partitions move on."""

    name = "Kafka"

    def __init__(self, bootstrap: str, workdir: str, *, lease_s: float = 2.0) -> None:
        from taskorbit.transports.kafka import KafkaTransport
        from tests.servers.kafka import TEST_CONSUMER_CONFIG

        self.lease_s = lease_s
        self.bootstrap = bootstrap
        self.topic = _unique("chaos")
        self.group = "chaos"
        self.attempts_dir = f"{workdir}/kafka-attempts-{self.topic}"
        self._transport = KafkaTransport(
            bootstrap, topic=self.topic, group=self.group, retry_delays=(0.05, 1.0),
            attempts_dir=self.attempts_dir, consumer_config=TEST_CONSUMER_CONFIG,
        )  # fmt: skip

    def producer(self) -> Transport:
        return self._transport

    def worker_args(self) -> list[str]:
        return [
            "--transport", "kafka", "--bootstrap", self.bootstrap, "--topic", self.topic,
            "--group", self.group, "--attempts-dir", self.attempts_dir,
        ]  # fmt: skip

    def worker_env(self) -> dict[str, str]:
        return {}

    def backlog(self) -> int:
        from confluent_kafka import Consumer, TopicPartition

        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            held = 0
            for topic in self._transport.topics()[:-1]:  # all but the DLQ
                found = probe.list_topics(topic=topic, timeout=10).topics.get(topic)
                if found is None or found.error is not None:
                    continue
                tps = [TopicPartition(topic, p) for p in found.partitions]
                for tp in probe.committed(tps, timeout=10):
                    low, high = probe.get_watermark_offsets(tp, timeout=10)
                    held += high - (tp.offset if tp.offset >= 0 else low)
            return held
        finally:
            probe.close()

    def leftover(self) -> int:
        return self.backlog()

    def close(self) -> None:
        self._transport.close()
