"""The Python API a newcomer meets: what ``help()`` shows, what publishing checks,
and the reference page (docs/api.md) kept in step with the code."""

# Annotations stay strings here on purpose: handlers' payload types are resolved.
from __future__ import annotations

import dataclasses
import inspect
import logging
import pickle
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

import taskorbit
import taskorbit as orbit
from taskorbit.errors import ConfigurationError, EncodeError, PayloadError
from taskorbit.worker.ring import MAX_CAPACITY
from taskorbit.worker.stats import COUNTERS

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
TASK_OPTIONS = ["max_retries", "base_delay", "retry_policy", "codec", "idempotency_key"]


class Welcome(msgspec.Struct):
    email: str


@dataclasses.dataclass
class Invoice:
    number: int


class CountingTransport(orbit.MemoryTransport):
    """Counts publish calls, so a test can tell that nothing was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def publish(self, messages: Any) -> list[str]:
        self.calls += 1
        return super().publish(messages)


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def app(transport: CountingTransport) -> orbit.Orbit:
    return orbit.Orbit(transport)


def constructor_parameters() -> list[str]:
    return [p for p in inspect.signature(orbit.Orbit.__init__).parameters if p != "self"]


def documented_names(docstring: str | None) -> set[str]:
    """The ``name:`` entries of a docstring's Args section (those indented like
    its first entry; continuation lines are indented further)."""
    args = (docstring or "").partition("Args:\n")[2]
    entries = re.findall(r"^( +)(\w+): ", args, re.M)
    return {name for indent, name in entries if indent == entries[0][0]} if entries else set()


def stats_keys() -> list[str]:
    app = orbit.Orbit(concurrency=2, buffer_size=8)
    app.start()
    try:
        return list(app.stats())
    finally:
        app.stop(timeout=5.0)


# -- help(): every option explained ---------------------------------------------------


def test_every_constructor_parameter_is_explained_in_the_orbit_docstring() -> None:
    parameters = constructor_parameters()
    assert len(parameters) == 17
    assert documented_names(orbit.Orbit.__doc__) == set(parameters)


def test_task_takes_its_options_as_typed_keywords_and_explains_each() -> None:
    signature = inspect.signature(orbit.Orbit.task)
    options = [p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in options] == TASK_OPTIONS
    assert all(p.annotation is not inspect.Parameter.empty for p in options)
    assert not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    assert documented_names(orbit.Orbit.task.__doc__) == set(TASK_OPTIONS)


def test_task_refuses_an_unknown_option_when_called_not_when_the_handler_is_decorated(
    app: orbit.Orbit,
) -> None:
    with pytest.raises(TypeError, match="max_retry"):
        app.task("t", max_retry=3)  # type: ignore[call-overload]


def test_every_stats_key_is_explained_in_the_stats_docstring() -> None:
    keys = stats_keys()
    assert set(COUNTERS) < set(keys)
    assert {"in_flight", "claims_held", "ordering_keys_held"} < set(keys)
    documented = set(re.findall(r"^\s+- ``(\w+)``: ", orbit.Orbit.stats.__doc__ or "", re.M))
    assert documented == set(keys)


def test_the_api_page_lists_every_option_task_option_and_stats_key() -> None:
    page = API_DOC.read_text()
    rows = set(re.findall(r"^\| `(\w+)`", page, re.M))
    missing = [
        name
        for name in [*constructor_parameters(), *TASK_OPTIONS, *stats_keys()]
        if name not in rows
    ]
    assert not missing, f"docs/api.md has no table row for {missing}"


def test_encode_and_payload_errors_are_exported_beside_decode_error() -> None:
    for name in ("DecodeError", "EncodeError", "PayloadError"):
        assert name in taskorbit.__all__
    assert taskorbit.EncodeError is EncodeError
    assert taskorbit.PayloadError is PayloadError


# -- the transport: an object or a URL --------------------------------------------------


def test_a_transport_url_builds_the_transport() -> None:
    app = orbit.Orbit("memory://")
    assert isinstance(app.transport, orbit.MemoryTransport)


def test_an_unknown_transport_url_names_the_schemes_that_work() -> None:
    with pytest.raises(ConfigurationError, match="unknown transport URL 'nats://x'; use memory://"):
        orbit.Orbit("nats://x")


def test_a_transport_of_the_wrong_kind_points_at_building_one_from_a_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        orbit.Orbit(42)  # type: ignore[arg-type]
    assert str(info.value) == (
        "transport must be a taskorbit Transport (e.g. MemoryTransport()) or a URL to "
        "build one from (e.g. 'redis://localhost:6379/0'; see "
        "taskorbit.transports.url.transport_from_url), got 42"
    )


# -- buffer_size ----------------------------------------------------------------------


def test_a_buffer_size_that_is_not_a_power_of_two_is_logged_once_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = orbit.Orbit(buffer_size=1000, concurrency=2)
    with caplog.at_level(logging.INFO, logger="taskorbit"):
        app.start()
        app.stop(timeout=5.0)
    rounded = [r.getMessage() for r in caplog.records if "rounded up" in r.getMessage()]
    assert rounded == ["buffer_size=1000 rounded up to a ring of 1024 slots (a power of two)"]


def test_a_power_of_two_buffer_size_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = orbit.Orbit(buffer_size=1024, concurrency=2)
    with caplog.at_level(logging.INFO, logger="taskorbit"):
        app.start()
        app.stop(timeout=5.0)
    assert not [r for r in caplog.records if "rounded up" in r.getMessage()]


def test_a_buffer_size_above_the_ring_maximum_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match=f"buffer_size must be at most {MAX_CAPACITY}"):
        orbit.Orbit(buffer_size=MAX_CAPACITY + 1)


# -- publishing checks the payload --------------------------------------------------------


def test_delay_refuses_a_payload_of_the_wrong_shape_naming_topic_type_and_field(
    app: orbit.Orbit, transport: CountingTransport
) -> None:
    @app.task("welcome.send")
    def send(msg: Welcome, ctx: orbit.Context) -> None: ...

    with pytest.raises(PayloadError) as info:
        send.delay({"mail": "ada@example.org"})  # type: ignore[arg-type]
    assert str(info.value) == (
        "payload for 'welcome.send' does not match Welcome: Object missing required field `email`"
    )
    assert info.value.topic == "welcome.send"
    assert info.value.reason == (
        "payload does not match Welcome: Object missing required field `email`"
    )
    assert transport.calls == 0


def test_delay_refuses_a_payload_of_another_type(app: orbit.Orbit) -> None:
    @app.task("welcome.send")
    def send(msg: Welcome) -> None: ...

    with pytest.raises(PayloadError, match=r"^payload for 'welcome.send' does not match "):
        send.delay(123)  # type: ignore[arg-type]


def test_a_struct_built_with_a_field_of_the_wrong_type_is_refused(app: orbit.Orbit) -> None:
    # A Struct's constructor checks nothing; the worker's decoder would refuse it.
    @app.task("welcome.send")
    def send(msg: Welcome) -> None: ...

    with pytest.raises(PayloadError) as info:
        send.delay(Welcome(email=123))  # type: ignore[arg-type]
    assert str(info.value) == (
        "payload for 'welcome.send' does not match Welcome: Expected `str`, got `int` - "
        "at `$.email`"
    )


def test_a_payload_of_the_right_shape_is_sent_unchanged(
    app: orbit.Orbit, transport: CountingTransport
) -> None:
    @app.task("welcome.send")
    def send(msg: Welcome) -> None: ...

    send.delay(Welcome(email="ada@example.org"))
    app.publish("welcome.send", {"email": "bob@example.org"})  # a dict of that shape is fine
    [first, second] = transport.receive(2, timeout=0)
    assert first.body == b'{"email":"ada@example.org"}'
    assert second.body == b'{"email":"bob@example.org"}'


def test_publish_by_topic_checks_a_topic_registered_in_this_process(
    app: orbit.Orbit, transport: CountingTransport
) -> None:
    app.handle("invoice.file", lambda invoice: None)  # Any: not checked
    app.handle("invoice.print", print_invoice)
    app.publish("invoice.file", {"anything": ["goes"]})
    with pytest.raises(PayloadError, match="does not match Invoice: Expected `int`, got `str`"):
        app.publish("invoice.print", {"number": "seven"})
    assert transport.published == 1


def print_invoice(invoice: Invoice) -> None: ...


def test_a_topic_not_registered_here_is_published_unchecked(
    app: orbit.Orbit, transport: CountingTransport
) -> None:
    app.publish("handled.elsewhere", {"whatever": 1})
    assert transport.published == 1


def test_publish_many_checks_every_payload_before_sending_any(
    app: orbit.Orbit, transport: CountingTransport
) -> None:
    app.handle("welcome.send", welcome)
    good = Welcome(email="ada@example.org")
    with pytest.raises(PayloadError, match="missing required field `email`"):
        app.publish_many("welcome.send", [good, {"mail": "x"}])  # the bulk path
    with pytest.raises(PayloadError, match="missing required field `email`"):
        app.publish_many("welcome.send", [good, {"mail": "x"}], countdown=5)  # per message
    assert transport.calls == 0
    app.publish_many("welcome.send", [good, good])
    assert transport.published == 2


def welcome(msg: Welcome) -> None: ...


def test_building_a_message_checks_its_payload_too(app: orbit.Orbit) -> None:
    app.handle("welcome.send", welcome)
    with pytest.raises(PayloadError):
        app.message("welcome.send", {"mail": "x"})


def test_a_payload_published_with_another_codec_than_the_handlers_is_refused(
    app: orbit.Orbit,
) -> None:
    app.handle("welcome.send", welcome)
    msgpack = taskorbit.codec.get_codec("msgpack")
    with pytest.raises(PayloadError, match=r"^payload for 'welcome.send' cannot be decoded: "):
        app.publish("welcome.send", Welcome(email="a@b.c"), codec=msgpack)


def test_msgspec_constraints_are_checked_at_publish(app: orbit.Orbit) -> None:
    app.handle("count", count)
    app.publish("count", 3)
    with pytest.raises(PayloadError, match="Expected `int` >= 0"):
        app.publish("count", -1)


def count(n: Annotated[int, msgspec.Meta(ge=0)]) -> None: ...


def test_bytes_and_any_handlers_are_not_checked(app: orbit.Orbit) -> None:
    raw = app.handle("raw", raw_body)
    free = app.handle("free", lambda payload: None)
    untyped = app.handle("untyped", untyped_handler)
    assert not raw.checks_payloads
    assert not free.checks_payloads
    assert not untyped.checks_payloads
    raw.delay(b"\xff not json")
    free.delay({"any": "thing"})


def raw_body(body: bytes) -> None: ...


def untyped_handler(payload: Any) -> None: ...


def test_a_wrong_payload_is_reported_even_when_the_idempotency_key_function_fails_first(
    app: orbit.Orbit,
) -> None:
    @app.task("welcome.send", idempotency_key=lambda m: f"welcome-{m.email}")
    def send(msg: Welcome) -> None: ...

    with pytest.raises(PayloadError, match="missing required field `email`"):
        send.delay({"mail": "x"})  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="missing required field `email`"):
        app.publish_many("welcome.send", [{"mail": "x"}])


def test_a_failing_idempotency_key_function_on_a_good_payload_raises_its_own_error(
    app: orbit.Orbit,
) -> None:
    def key(m: Welcome) -> str:
        raise LookupError("no key today")

    @app.task("welcome.send", idempotency_key=key)
    def send(msg: Welcome) -> None: ...

    with pytest.raises(LookupError, match="no key today"):
        send.delay(Welcome(email="a@b.c"))


def test_payload_error_is_a_configuration_error_and_survives_pickling() -> None:
    error = PayloadError("t", "payload is not valid UTF-8: bad byte")
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert str(error) == "payload for 't' is not valid UTF-8: bad byte"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.topic, copy.reason) == (
        PayloadError,
        str(error),
        "t",
        error.reason,
    )
