"""Transport URLs: query values arrive typed, client options reach the client, typos
and bad values stop with a message that names what to write, and no message shows
the password.

No server is needed: RedisStreamsTransport builds its redis-py client lazily (no
connection before the first command), SQS gets a fake client, Pub/Sub fake
subscriber and publisher objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.contrib import configure, redact, transport_from_url
from taskorbit.errors import ConfigurationError
from taskorbit.transports.memory import MemoryTransport
from taskorbit.transports.pubsub import PubSubTransport
from taskorbit.transports.redis.streams import RedisStreamsTransport
from taskorbit.transports.sqs import SQSTransport

SECRET = "s3cret"
REDIS = f"redis://:{SECRET}@localhost:6379/0"
REDACTED = "redis://:***@localhost:6379/0"


@pytest.fixture
def built() -> Iterator[list[Any]]:
    """Transports a test built; their redis-py pools are closed afterwards."""
    transports: list[Any] = []
    yield transports
    for transport in transports:
        if isinstance(transport, RedisStreamsTransport):
            transport.client.close()  # close() itself would talk to the server


def redis_streams(url: str, built: list[Any], **options: Any) -> RedisStreamsTransport:
    transport = transport_from_url(url, **options)
    built.append(transport)
    assert isinstance(transport, RedisStreamsTransport)
    return transport


def connection_kwargs(transport: RedisStreamsTransport) -> dict[str, Any]:
    return dict(transport.client.connection_pool.connection_kwargs)


def config_error(url: str, **options: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        transport_from_url(url, **options)
    message = str(caught.value)
    assert SECRET not in message
    assert "\n" not in message
    return message


# -- values arrive as the type the constructor asks for --------------------------


def test_a_float_option_arrives_as_a_float(built: list[Any]) -> None:
    transport = redis_streams(f"{REDIS}?lease_s=60&claim_idle_s=90.5", built)
    assert transport.lease_s == 60.0 and isinstance(transport.lease_s, float)
    assert transport.claim_idle_s == 90.5


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
    ],
)
def test_a_flag_accepts_true_false_1_0_yes_no(built: list[Any], text: str, value: bool) -> None:
    transport = redis_streams(f"{REDIS}?delete_acked={text}", built)
    assert transport.delete_acked is value


def test_an_optional_int_takes_a_number_or_none(built: list[Any]) -> None:
    assert redis_streams(f"{REDIS}?maxlen=1000", built).maxlen == 1000
    assert redis_streams(f"{REDIS}?maxlen=none", built).maxlen is None
    assert redis_streams(f"{REDIS}?max_age_s=", built).max_age_s is None


def test_text_options_stay_text(built: list[Any]) -> None:
    transport = redis_streams(f"{REDIS}?stream=jobs&group=billing&consumer=c-1", built)
    assert (transport.stream, transport.group, transport.consumer) == ("jobs", "billing", "c-1")
    assert transport.dlq_stream == "jobs:dlq"


# -- client-library options reach redis-py ----------------------------------------


def test_redis_py_options_stay_in_the_url_redis_py_reads(built: list[Any]) -> None:
    transport = redis_streams(
        f"rediss://:{SECRET}@localhost:6380/2?ssl_cert_reqs=none&socket_timeout=5&stream=jobs",
        built,
    )
    kwargs = connection_kwargs(transport)
    assert transport.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["socket_timeout"] == 5.0  # beats taskorbit's default of 30 s
    assert (kwargs["db"], kwargs["password"]) == (2, SECRET)
    assert transport.stream == "jobs"
    assert "stream" not in kwargs  # taskorbit's own keys do not reach redis-py


def test_a_unix_socket_url_keeps_its_db(built: list[Any]) -> None:
    transport = redis_streams("unix:///run/redis/redis.sock?db=3&stream=jobs", built)
    kwargs = connection_kwargs(transport)
    assert (kwargs["path"], kwargs["db"]) == ("/run/redis/redis.sock", 3)


def test_a_tls_option_on_a_plain_url_asks_for_rediss() -> None:
    message = config_error(f"{REDIS}?ssl_cert_reqs=none")
    assert "'ssl_cert_reqs'" in message and "rediss://" in message
    assert REDACTED in message


def test_a_bad_redis_py_value_names_the_key_the_type_and_the_value() -> None:
    message = config_error(f"{REDIS}?socket_timeout=soon")
    assert "'socket_timeout'" in message and "a number" in message and "'soon'" in message


# -- typos and bad values ----------------------------------------------------------


def test_an_unknown_key_is_one_sentence_listing_the_valid_keys() -> None:
    message = config_error(f"{REDIS}?strem=jobs")
    assert message.startswith(f"unknown option 'strem' in transport URL {REDACTED}?strem=jobs;")
    assert {"stream", "lease_s", "delete_acked", "socket_timeout", "db"} <= listed(message)
    assert message.count(";") == 1 and ". " not in message  # one sentence


def listed(message: str) -> set[str]:
    """The option names after the message's semicolon."""
    return set(re.findall(r"[a-z][a-z_]*", message.split(";", 1)[1]))


@pytest.mark.parametrize(
    ("query", "key", "expected", "value"),
    [
        ("lease_s=soon", "lease_s", "a number", "'soon'"),
        ("delete_acked=maybe", "delete_acked", "true or false", "'maybe'"),
        ("maxlen=1.5", "maxlen", "an integer or none", "'1.5'"),
    ],
)
def test_a_bad_value_names_the_key_the_expected_type_and_the_value(
    query: str, key: str, expected: str, value: str
) -> None:
    message = config_error(f"{REDIS}?{query}")
    assert f"option {key!r} in transport URL {REDACTED}?{query} must be {expected}" in message
    assert message.endswith(f"got {value}")


def test_an_option_that_takes_an_object_cannot_come_from_a_url() -> None:
    message = config_error(
        "pubsub://projects/p/subscriptions/s?batch_settings=big", subscriber=object()
    )
    assert "'batch_settings'" in message and "TRANSPORT_OPTIONS" in message


def test_the_in_memory_transport_rejects_unknown_keys() -> None:
    assert isinstance(transport_from_url("memory://"), MemoryTransport)
    message = config_error("memory://?strem=jobs")
    assert message.startswith("unknown option 'strem' in transport URL memory://?strem=jobs;")


def test_an_unknown_scheme_shows_the_url_without_its_password() -> None:
    message = config_error(f"redis-cluster://:{SECRET}@localhost:6379/0")
    assert "redis-cluster://:***@localhost:6379/0" in message


# -- TRANSPORT_OPTIONS -------------------------------------------------------------


def test_transport_options_beat_the_query_and_text_is_converted(built: list[Any]) -> None:
    transport = redis_streams(f"{REDIS}?lease_s=60&stream=a", built, lease_s="45", stream="b")
    assert (transport.lease_s, transport.stream) == (45.0, "b")
    transport = redis_streams(f"{REDIS}?socket_timeout=5", built, socket_timeout=7)
    assert connection_kwargs(transport)["socket_timeout"] == 7.0


def test_an_unknown_transport_option_lists_the_valid_keys() -> None:
    message = config_error(REDIS, strem="jobs")
    assert message.startswith("unknown option 'strem' in TRANSPORT_OPTIONS;")
    assert {"stream", "lease_s", "socket_timeout"} <= listed(message)


def test_framework_settings_build_the_transport_from_a_url(built: list[Any]) -> None:
    app = configure(
        orbit.Orbit(),
        {"TRANSPORT": f"{REDIS}?lease_s=60&delete_acked=no", "TRANSPORT_OPTIONS": {"maxlen": 5}},
    )
    transport = app.transport
    built.append(transport)
    assert isinstance(transport, RedisStreamsTransport)
    assert (transport.lease_s, transport.delete_acked, transport.maxlen) == (60.0, False, 5)


# -- SQS and Pub/Sub ---------------------------------------------------------------


class FakeSQSClient:
    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"https://sqs.eu-west-1.amazonaws.com/123456789012/{QueueName}"}


def test_an_sqs_name_url_converts_its_options() -> None:
    transport = transport_from_url(
        "sqs://orders?visibility_timeout=60&pollers=2&wait_time_s=5", client=FakeSQSClient()
    )
    assert isinstance(transport, SQSTransport)
    assert transport.queue_url.endswith("/orders")
    assert (transport.lease_s, transport.pollers, transport.wait_time_s) == (60.0, 2, 5)
    message = config_error("sqs://orders?pollers=two", client=FakeSQSClient())
    assert "'pollers'" in message and "an integer" in message and "'two'" in message


def test_an_sqs_queue_url_takes_its_options_from_the_query() -> None:
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
    transport = transport_from_url(f"{queue}?region_name=eu-west-1&wait_time_s=0")
    assert isinstance(transport, SQSTransport)
    assert (transport.queue_url, transport.wait_time_s) == (queue, 0)
    transport.close()


def test_a_pubsub_url_converts_its_options() -> None:
    transport = transport_from_url(
        "pubsub://projects/p/subscriptions/s?topic=t&ordered=false&ack_deadline_s=60&max_bytes=none",
        subscriber=object(),
        publisher=object(),
    )
    assert isinstance(transport, PubSubTransport)
    assert transport.subscription == "projects/p/subscriptions/s"
    assert (transport.ordered, transport.lease_s) == (False, 60.0)


# -- redaction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
        (f"redis://{SECRET}@host:6379/0", "redis://***@host:6379/0"),
        (f"unix:///r.sock?db=0&password={SECRET}", "unix:///r.sock?db=0&password=***"),
        ("redis://host:6379/0?stream=jobs", "redis://host:6379/0?stream=jobs"),
    ],
)
def test_redact_hides_passwords_and_nothing_else(url: str, shown: str) -> None:
    assert redact(url) == shown
