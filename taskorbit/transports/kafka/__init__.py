"""Apache Kafka through confluent-kafka (librdkafka).

``transport`` maps the Transport verbs onto one topic and one consumer group;
``consumer`` is the thread that polls on its own (buffer, pause/resume,
rebalances); ``commits`` tracks, per partition, the first offset not yet settled;
``attempts`` counts deliveries to workers that crashed; ``wire`` is how a Message
looks as a Kafka record; ``producer`` waits for delivery reports; ``errors``
translates KafkaException; ``dlq`` reads and redrives ``<topic>.dlq``. This folder
is the only place that imports confluent_kafka.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from taskorbit.extras import needs_extra
from taskorbit.transports.url import UrlTarget

with needs_extra("the Kafka transport", "kafka", "confluent_kafka"):
    from taskorbit.transports.kafka.transport import KafkaTransport


def url_target(parts: SplitResult, query_keys: set[str]) -> UrlTarget:
    """``kafka://host1:9092,host2:9092/TOPIC?group=G``: the brokers, then the topic."""
    given: dict[str, str] = {"bootstrap_servers": parts.netloc}
    topic = parts.path.strip("/")
    if topic:
        given["topic"] = topic
    return UrlTarget(KafkaTransport, given=given)


__all__ = ["KafkaTransport", "url_target"]
