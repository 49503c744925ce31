"""confluent-kafka's errors translated into taskorbit's hierarchy, in one place.

A KafkaError carries a code and the broker's (or librdkafka's) reason; both go into
the message, which never includes configuration values (credentials live there).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from taskorbit.errors import PayloadTooLargeError, TransportConnectionError, TransportError

# The broker could not be reached or did not answer in time: worth repeating.
_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)
_HINTS = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: (
        "the topic does not exist; create it (and its retry and dead-letter topics, "
        "see KafkaTransport.topics()) or enable auto-creation on the cluster"
    ),
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "this principal may not use the topic (ACLs)",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "this principal may not use the consumer group (ACLs)",
}


def describe(error: KafkaError) -> str:
    """``NAME: reason`` with a hint where the fix is known."""
    text = f"{error.name()}: {error.str()}"
    hint = _HINTS.get(error.code())
    return f"{text} ({hint})" if hint else text


def translate(error: BaseException | KafkaError, what: str) -> TransportError:
    """A TransportError for ``error``, raised while doing ``what``."""
    kafka_error = error.args[0] if isinstance(error, KafkaException) and error.args else error
    if not isinstance(kafka_error, KafkaError):
        return TransportError(f"{what}: {error}")
    text = f"{what}: {describe(kafka_error)}"
    if kafka_error.code() in _UNREACHABLE:
        return TransportConnectionError(text)
    if kafka_error.code() in _TOO_LARGE:
        return PayloadTooLargeError(text)
    return TransportError(text)
