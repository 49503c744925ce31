"""Codecs and typed payload decoding (taskorbit.codec)."""

# Annotations stay strings here on purpose: payload_type must resolve them.
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

import msgspec
import pytest

from taskorbit.codec import (
    JSON,
    MSGPACK,
    RAW,
    Codec,
    get_codec,
    handler_wants_context,
    make_decoder,
    payload_type,
    strip_annotated,
)
from taskorbit.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    PayloadError,
    TaskorbitError,
)


class EmailPayload(msgspec.Struct):
    to: str
    subject: str
    body: str = ""


@dataclasses.dataclass
class Invoice:
    number: int
    lines: list[str]


class Order(TypedDict):
    id: int
    sku: str


class PlainClass:
    def __init__(self, x: int) -> None:
        self.x = x


# -- round trips per annotation ---------------------------------------------------


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
@pytest.mark.parametrize(
    ("tp", "value"),
    [
        (EmailPayload, EmailPayload(to="a@b.c", subject="hi")),
        (Invoice, Invoice(number=7, lines=["a", "b"])),
        (Order, {"id": 1, "sku": "X-1"}),
        (dict, {"a": 1, "b": [1, 2]}),
        (dict[str, int], {"a": 1}),
        (Mapping[str, int], {"a": 1}),
        (list, [1, "two", None]),
        (list[EmailPayload], [EmailPayload(to="x", subject="y")]),
        (str, "hello"),
        (Any, {"free": ["form", 1]}),
    ],
    ids=lambda v: getattr(v, "__name__", None) or repr(v)[:30],
)
def test_payload_encoded_by_a_codec_decodes_back_into_the_annotated_type(
    codec: Codec, tp: Any, value: Any
) -> None:
    decode = make_decoder(tp, codec)
    assert decode(codec.encode(value)) == value


@pytest.mark.parametrize("codec", [JSON, MSGPACK, RAW], ids=lambda c: c.name)
def test_bytes_handlers_receive_the_body_untouched_whatever_the_codec(codec: Codec) -> None:
    body = b"\x00\xff not json at all"
    assert codec.encode(body) == body
    assert codec.encode(bytearray(body)) == body
    assert codec.encode(memoryview(body)) == body
    assert make_decoder(bytes, codec)(body) == body


def test_annotated_bytes_is_also_passed_through() -> None:
    decode = make_decoder(Annotated[bytes, "raw"], JSON)
    assert decode(b"{not json") == b"{not json"


def test_struct_body_is_plain_json_other_producers_can_write() -> None:
    body = JSON.encode(EmailPayload(to="a@b.c", subject="hi"))
    assert msgspec.json.decode(body) == {"to": "a@b.c", "subject": "hi", "body": ""}
    decode = make_decoder(EmailPayload, JSON)
    assert decode(b'{"subject": "s", "to": "t"}') == EmailPayload(to="t", subject="s")


# -- decode failures carry a reason for the DLQ ------------------------------------


def test_malformed_json_is_reported_as_malformed() -> None:
    decode = make_decoder(EmailPayload, JSON)
    with pytest.raises(DecodeError, match=r"^malformed JSON: "):
        decode(b'{"to": ')


def test_json_of_the_wrong_shape_names_the_type_and_the_missing_field() -> None:
    decode = make_decoder(EmailPayload, JSON)
    with pytest.raises(DecodeError) as info:
        decode(b'{"subject": "hi"}')
    assert str(info.value) == (
        "payload does not match EmailPayload: Object missing required field `to`"
    )


def test_wrong_shape_for_a_generic_type_names_it_readably() -> None:
    decode = make_decoder(dict[str, int], JSON)
    with pytest.raises(DecodeError, match=r"^payload does not match dict\[str, int\]: "):
        decode(b'{"a": "not an int"}')


def test_annotated_constraints_are_enforced() -> None:
    decode = make_decoder(Annotated[int, msgspec.Meta(ge=0)], JSON)
    assert decode(b"3") == 3
    with pytest.raises(DecodeError, match="payload does not match"):
        decode(b"-1")


def test_malformed_msgpack_is_reported_as_malformed() -> None:
    decode = make_decoder(EmailPayload, MSGPACK)
    with pytest.raises(DecodeError, match=r"^malformed MessagePack: "):
        decode(b"\xc1")


def test_decode_error_keeps_the_msgspec_error_as_its_cause() -> None:
    with pytest.raises(DecodeError) as info:
        make_decoder(Invoice, JSON)(b"[]")
    assert isinstance(info.value.__cause__, msgspec.ValidationError)


# -- the raw codec -------------------------------------------------------------------


def test_raw_codec_publishes_str_as_utf8_and_decodes_it_for_str_handlers() -> None:
    body = RAW.encode("héllo")
    assert body == "héllo".encode()
    assert make_decoder(str, RAW)(body) == "héllo"


def test_raw_codec_gives_untyped_handlers_the_bytes() -> None:
    assert make_decoder(Any, RAW)(b"abc") == b"abc"


def test_raw_codec_reports_invalid_utf8_for_str_handlers() -> None:
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        make_decoder(str, RAW)(b"\xff\xfe")


def test_raw_codec_refuses_a_struct_handler_at_registration() -> None:
    with pytest.raises(ConfigurationError, match="annotate it as bytes or str"):
        make_decoder(EmailPayload, RAW)


def test_raw_codec_refuses_to_encode_objects() -> None:
    with pytest.raises(EncodeError, match="bytes or str, got dict"):
        RAW.encode({"a": 1})


# -- encoding --------------------------------------------------------------------------


def test_encoding_an_unsupported_object_raises_encode_error_a_type_error() -> None:
    with pytest.raises(EncodeError, match="cannot encode PlainClass as JSON") as info:
        JSON.encode(PlainClass(1))
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, TaskorbitError)


def test_msgpack_is_more_compact_than_json_for_the_same_struct() -> None:
    value = EmailPayload(to="a@b.c", subject="hi", body="x" * 10)
    assert len(MSGPACK.encode(value)) < len(JSON.encode(value))


# -- choosing a codec ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "codec"), [("json", JSON), ("msgpack", MSGPACK), ("raw", RAW)])
def test_codecs_are_found_by_name(name: str, codec: Codec) -> None:
    assert get_codec(name) is codec
    assert get_codec(name.upper()) is codec


def test_a_codec_object_is_used_as_given() -> None:
    class Upper:
        name = "upper"

        def encode(self, obj: Any) -> bytes:
            return str(obj).upper().encode()

        def decoder(self, tp: Any) -> Any:
            return bytes.decode

    custom = Upper()
    assert get_codec(custom) is custom
    assert make_decoder(str, custom)(b"ABC") == "ABC"


def test_an_unknown_codec_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="valid names are json, msgpack, raw"):
        get_codec("yaml")


def test_something_that_is_not_a_codec_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="codec must be a name"):
        get_codec(42)  # type: ignore[arg-type]


def test_a_plain_class_payload_is_refused_at_registration() -> None:
    with pytest.raises(ConfigurationError, match=r"use a msgspec\.Struct, a dataclass"):
        make_decoder(PlainClass, JSON)


# -- reading handler signatures ----------------------------------------------------------


def test_payload_type_resolves_a_string_annotation() -> None:
    def handler(msg: EmailPayload) -> None: ...

    assert payload_type(handler) is EmailPayload


def test_payload_type_keeps_annotated_metadata() -> None:
    def handler(n: Annotated[int, msgspec.Meta(ge=0)]) -> None: ...

    assert payload_type(handler) == Annotated[int, msgspec.Meta(ge=0)]


def test_payload_type_is_any_without_an_annotation() -> None:
    def handler(msg):  # type: ignore[no-untyped-def]
        pass

    assert payload_type(handler) is Any


def test_payload_type_of_a_handler_without_parameters_is_a_configuration_error() -> None:
    def handler() -> None: ...

    with pytest.raises(ConfigurationError, match="takes no parameter"):
        payload_type(handler)


def test_payload_type_with_an_unresolvable_annotation_says_what_to_do() -> None:
    def handler(msg: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match="import the type at module level"):
        payload_type(handler)


def test_payload_type_reads_bound_methods_partials_and_callable_objects() -> None:
    class Service:
        def handle(self, msg: Invoice, ctx: Any) -> None: ...

        def __call__(self, msg: Order) -> None: ...

    def with_prefix(prefix: str, msg: EmailPayload) -> None: ...

    assert payload_type(Service().handle) is Invoice
    assert payload_type(Service()) is Order
    assert payload_type(functools.partial(with_prefix, "x")) is EmailPayload


def test_a_handler_with_one_parameter_does_not_want_a_context() -> None:
    def handler(msg: EmailPayload) -> None: ...

    assert handler_wants_context(handler) is False


@pytest.mark.parametrize(
    "handler",
    [
        lambda msg, ctx: None,
        lambda msg, ctx=None: None,
        lambda msg, *rest: None,
        lambda *args: None,
    ],
    ids=["two", "optional-second", "var-positional", "only-var-positional"],
)
def test_a_handler_that_accepts_a_second_positional_wants_a_context(handler: Any) -> None:
    assert handler_wants_context(handler) is True


def test_a_bound_method_does_not_count_self() -> None:
    class Service:
        def handle(self, msg: Invoice) -> None: ...

    assert handler_wants_context(Service().handle) is False


@pytest.mark.parametrize(
    "handler",
    [lambda msg, ctx, extra: None, lambda msg, *, flag: None],
    ids=["third-positional", "keyword-only"],
)
def test_a_handler_needing_more_than_payload_and_context_is_refused(handler: Any) -> None:
    with pytest.raises(ConfigurationError, match="requires"):
        handler_wants_context(handler)


def test_strip_annotated_gives_the_annotated_type_and_leaves_others_alone() -> None:
    assert strip_annotated(Annotated[bytes, "raw"]) is bytes
    assert strip_annotated(dict[str, int]) == dict[str, int]


# -- the same words at publish time ---------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "codec", "body", "published"),
    [
        (
            EmailPayload,
            JSON,
            b'{"subject": "hi"}',
            "payload for 'email.send' does not match EmailPayload: "
            "Object missing required field `to`",
        ),
        (
            EmailPayload,
            JSON,
            b'{"to": ',
            "payload for 'email.send' cannot be decoded: malformed JSON: Input data was truncated",
        ),
        (
            str,
            RAW,
            b"\xff",
            "payload for 'email.send' is not valid UTF-8: 'utf-8' codec can't decode "
            "byte 0xff in position 0: invalid start byte",
        ),
    ],
    ids=["wrong-shape", "malformed", "not-utf8"],
)
def test_every_decode_error_reads_as_a_sentence_when_publishing_names_the_topic(
    tp: Any, codec: Codec, body: bytes, published: str
) -> None:
    with pytest.raises(DecodeError) as info:
        make_decoder(tp, codec)(body)
    assert str(PayloadError("email.send", str(info.value))) == published
