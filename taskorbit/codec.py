"""Payload codecs: msgspec encoders, and one typed decoder per registered handler.

A handler declares the payload it wants with its first parameter's annotation::

    class EmailPayload(msgspec.Struct):
        to: str

    def send_email(msg: EmailPayload) -> None: ...

At registration the worker builds, once, a decoder for that type
(:func:`make_decoder`), so the hot path is a single ``msgspec`` call. Supported
annotations: ``msgspec.Struct``, dataclasses, ``TypedDict``, ``dict`` /
``dict[str, X]`` / ``Mapping``, ``list``, ``str``, ``bytes`` and ``Any`` (or no
annotation: the plain decoded value).

``bytes`` is special in every codec: a handler annotated ``bytes`` receives the
message body untouched, and encoding ``bytes`` (or ``bytearray``/``memoryview``)
publishes them untouched, so raw payloads round-trip whatever the codec.

A body that cannot be decoded raises :class:`~taskorbit.errors.DecodeError` whose
message is the reason the dead-letter queue shows, e.g. ``malformed JSON: ...`` or
``payload does not match EmailPayload: Object missing required field `to```.

The same decoder guards the producer side: publishing a payload for a topic
registered in the publishing process decodes the body it just encoded
(:meth:`taskorbit.Task.check`), so a payload the worker would dead-letter raises
:class:`~taskorbit.errors.PayloadError` instead, worded the same way
(``payload for 'email.send' does not match EmailPayload: ...``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

from taskorbit.errors import ConfigurationError, DecodeError, EncodeError

Decoder = Callable[[bytes], Any]

_RAW_TYPES = (bytes, bytearray, memoryview)


@runtime_checkable
class Codec(Protocol):
    """Turns payload objects into message bodies and bodies back into typed objects."""

    name: str

    def encode(self, obj: Any) -> bytes:
        """The message body for ``obj``; raises :class:`EncodeError` if unsupported."""
        ...

    def decoder(self, tp: Any) -> Decoder:
        """A function decoding a body into ``tp``; build it once, call it often."""
        ...


class _MsgspecCodec:
    """JSON or MessagePack through msgspec. Its Encoder/Decoder objects are
    thread-safe since msgspec 0.16 (msgspec#402), so one of each is shared."""

    def __init__(self, name: str, module: Any, label: str) -> None:
        self.name = name
        self._module = module
        self._label = label  # "JSON" / "MessagePack", used in error messages
        self._encoder = module.Encoder()

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, _RAW_TYPES):
            return bytes(obj)  # raw payloads pass through; see the module docstring
        try:
            body: bytes = self._encoder.encode(obj)
        except (TypeError, ValueError, OverflowError) as e:
            raise EncodeError(f"cannot encode {type(obj).__name__} as {self._label}: {e}") from e
        return body

    def decoder(self, tp: Any) -> Decoder:
        if _is_custom_class(tp):
            raise ConfigurationError(
                f"cannot decode payloads into {type_name(tp)}: use a msgspec.Struct, a "
                "dataclass, a TypedDict, dict, list, str or bytes"
            )
        try:
            decode = self._module.Decoder(tp).decode
        except TypeError as e:
            raise ConfigurationError(
                f"the {self.name} codec cannot decode payloads of type {type_name(tp)}: {e}"
            ) from e
        malformed = f"malformed {self._label}"
        mismatch = f"payload does not match {type_name(tp)}"

        def decode_body(body: bytes) -> Any:
            try:
                return decode(body)
            except msgspec.ValidationError as e:  # well-formed, but the wrong shape
                raise DecodeError(f"{mismatch}: {e}") from e
            except msgspec.DecodeError as e:
                raise DecodeError(f"{malformed}: {e}") from e

        return decode_body


class _RawCodec:
    """Bodies are the payload: ``bytes`` in, ``bytes`` out (``str`` as UTF-8)."""

    name = "raw"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, _RAW_TYPES):
            return bytes(obj)
        if isinstance(obj, str):
            return obj.encode("utf-8")
        raise EncodeError(
            f"the raw codec publishes bytes or str, got {type(obj).__name__}; "
            "encode it yourself or use codec='json'"
        )

    def decoder(self, tp: Any) -> Decoder:
        if tp is str:
            return _decode_utf8
        if tp is Any or strip_annotated(tp) in _RAW_TYPES:
            return bytes
        raise ConfigurationError(
            f"the raw codec hands handlers bytes, but the payload is annotated "
            f"{type_name(tp)}; annotate it as bytes or str, or use codec='json'"
        )


def _decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"payload is not valid UTF-8: {e}") from e


JSON: Codec = _MsgspecCodec("json", msgspec.json, "JSON")
MSGPACK: Codec = _MsgspecCodec("msgpack", msgspec.msgpack, "MessagePack")
RAW: Codec = _RawCodec()

_CODECS: dict[str, Codec] = {c.name: c for c in (JSON, MSGPACK, RAW)}


def get_codec(name_or_codec: str | Codec) -> Codec:
    """The codec called ``name_or_codec`` ("json", "msgpack" or "raw"), or the codec
    object itself when one is given."""
    if not isinstance(name_or_codec, str):
        if isinstance(name_or_codec, Codec):
            return name_or_codec
        raise ConfigurationError(
            f"codec must be a name ({', '.join(_CODECS)}) or an object with name, "
            f"encode() and decoder(); got {name_or_codec!r}"
        )
    try:
        return _CODECS[name_or_codec.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown codec {name_or_codec!r}; valid names are {', '.join(_CODECS)}"
        ) from None


def make_decoder(tp: Any, codec: Codec) -> Decoder:
    """Build the decoder for payload type ``tp`` once, at handler registration.

    ``bytes`` handlers get the body itself, whatever the codec. A type the codec
    cannot decode (for msgspec, a plain class without a Struct/dataclass shape) is
    a :class:`ConfigurationError` now rather than a dead letter per message later.
    """
    if strip_annotated(tp) is bytes:
        return bytes
    return codec.decoder(tp)


def payload_type(fn: Callable[..., Any]) -> Any:
    """The resolved annotation of ``fn``'s first parameter (``Any`` when missing).

    ``from __future__ import annotations`` strings are resolved in ``fn``'s module;
    ``Annotated`` metadata is kept so msgspec constraints apply.
    """
    first = _positional_parameters(fn)
    if not first:
        raise ConfigurationError(
            f"handler {_describe(fn)} takes no parameter; its first parameter receives "
            "the payload, e.g. def handler(payload: MyPayload) -> None"
        )
    param = first[0]
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return Any
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return Any
    try:
        hints = typing.get_type_hints(_hint_target(fn), include_extras=True)
    except Exception as e:  # NameError for an unresolved forward reference, mostly
        if isinstance(annotation, str):
            raise ConfigurationError(
                f"cannot resolve the payload annotation {annotation!r} of handler "
                f"{_describe(fn)}: {e}; import the type at module level"
            ) from e
        return annotation
    return hints.get(param.name, annotation)


def handler_wants_context(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` accepts a second positional parameter (the context).

    Raises :class:`ConfigurationError` when ``fn`` needs more than the worker
    passes (a third required positional, or a required keyword-only parameter),
    since such a handler could never be called.
    """
    params = _positional_parameters(fn)
    required_keyword_only = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    needs_more = [
        p.name
        for p in params[2:]
        if p.kind is not inspect.Parameter.VAR_POSITIONAL and p.default is inspect.Parameter.empty
    ]
    if required_keyword_only or needs_more:
        raise ConfigurationError(
            f"handler {_describe(fn)} requires {', '.join(needs_more + required_keyword_only)}"
            "; a handler is called as handler(payload) or handler(payload, context)"
        )
    if not params:
        return False
    if params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return True
    return len(params) >= 2


def type_name(tp: Any) -> str:
    """A short readable name for a type: ``EmailPayload``, ``dict[str, int]``."""
    if isinstance(tp, type) and typing.get_origin(tp) is None and not typing.get_args(tp):
        return tp.__qualname__
    if tp is Any:
        return "Any"
    return repr(tp).replace("typing.", "")


def _positional_parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"cannot inspect handler {_describe(fn)}: {e}") from e
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    return [p for p in signature.parameters.values() if p.kind in positional]


def _hint_target(fn: Callable[..., Any]) -> Any:
    """The object whose annotations describe ``fn``'s parameters."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, type):
        return fn
    return type(fn).__call__  # a callable object


def strip_annotated(tp: Any) -> Any:
    """``Annotated[int, Meta(ge=0)]`` → ``int``; any other type unchanged."""
    if typing.get_origin(tp) is typing.Annotated:
        return typing.get_args(tp)[0]
    return tp


def _is_custom_class(tp: Any) -> bool:
    """A class msgspec would only decode with a dec_hook, which we never pass."""
    try:
        info = msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):
        return False  # let the codec report it with its own message
    return isinstance(info, msgspec.inspect.CustomType)


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
