"""Hooks: observe what the worker does with each message.

Subclass :class:`Hooks`, override the events you care about, and pass instances
to the app. Events for one message, in the order they fire (:data:`HOOK_EVENTS`):

1. ``on_receive``: the transport handed the message over.
2. ``on_drop``: the local buffer was full and its overflow policy dropped the
   message (on a durable transport it goes back to the broker). Nothing follows.
3. ``on_duplicate``: its idempotency key was already done (it is acked) or still
   in progress elsewhere (it is put back with a delay). Nothing follows.
4. ``on_dispatch``: a worker thread picked it up; the handler is about to run.
5. ``on_complete``: the handler returned, with the :class:`Result` it chose
   (``None`` counts as ack) and how long it ran.
6. ``on_error``: the handler raised, or the payload could not be decoded. Also
   fires with ``message=None`` when a worker component fails outside any message
   (a receive or ack call to the broker, for instance).
7. ``on_retry``: the message will run again after ``delay_s`` seconds.
8. ``on_dead_letter``: the message went to the dead-letter queue with ``reason``.

On the producer side, ``on_publish`` fires once for each message the app builds
for sending, before it reaches the transport; a hook may add attributes (trace
context, for instance) to ``message.attributes``.

Hooks run on the worker's threads, inside the hot path: keep them quick and
thread-safe. A hook that raises is logged (logger ``taskorbit.hooks``) and
ignored; it never fails the message or the worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from taskorbit.errors import ConfigurationError, DecodeError, TransportError
from taskorbit.message import Message, Result

logger = logging.getLogger("taskorbit.hooks")

HOOK_EVENTS: tuple[str, ...] = (
    "on_receive",
    "on_drop",
    "on_duplicate",
    "on_dispatch",
    "on_complete",
    "on_error",
    "on_retry",
    "on_dead_letter",
    "on_publish",
)


class Hooks:
    """Every event as a no-op; override the ones you need."""

    def on_receive(self, message: Message) -> None:
        """The transport handed ``message`` over."""

    def on_dispatch(self, message: Message) -> None:
        """A worker thread is about to run the handler."""

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        """The handler returned ``result`` after ``duration_s`` seconds."""

    def on_error(self, message: Message | None, error: BaseException) -> None:
        """The handler or decoding failed; ``message`` is None outside any message."""

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        """``message`` will run again in ``delay_s`` seconds."""

    def on_duplicate(self, message: Message) -> None:
        """``message``'s idempotency key was done or in progress already."""

    def on_dead_letter(self, message: Message, reason: str) -> None:
        """``message`` went to the dead-letter queue."""

    def on_drop(self, message: Message, reason: str) -> None:
        """The buffer overflowed and dropped ``message`` locally."""

    def on_publish(self, message: Message) -> None:
        """The app built ``message`` for sending; attributes may still be added."""


class HookSet:
    """The hooks of one app, with the overridden methods looked up in advance.

    ``fire`` on an event that no hook overrides costs one dict lookup and an
    empty loop, so the hot path can fire every event unconditionally; use
    :meth:`wants` to skip building expensive arguments.
    """

    def __init__(self, hooks: Iterable[Hooks] = ()) -> None:
        self._hooks: tuple[Hooks, ...] = ()
        self._handlers: dict[str, tuple[Callable[..., Any], ...]] = {e: () for e in HOOK_EVENTS}
        for hooks_object in hooks:
            self.add(hooks_object)

    def add(self, hooks: Hooks) -> None:
        """Add a hooks object; its overridden events fire after earlier objects'."""
        all_hooks = (*self._hooks, hooks)
        # Build a new table and swap it in whole, so a thread firing meanwhile sees
        # either the old or the new one, never a half-built one.
        self._handlers = {event: _overrides(all_hooks, event) for event in HOOK_EVENTS}
        self._hooks = all_hooks

    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every hook that overrides it; log and swallow failures."""
        try:
            handlers = self._handlers[event]
        except KeyError:
            raise ValueError(f"unknown hook event {event!r}; events are {HOOK_EVENTS}") from None
        for handler in handlers:
            try:
                handler(*args)
            except Exception:
                logger.exception("hook %s failed on %s; ignoring it", _describe(handler), event)

    def wants(self, event: str) -> bool:
        """Whether any hook overrides ``event``."""
        return bool(self._handlers.get(event))

    def __len__(self) -> int:
        return len(self._hooks)

    def __iter__(self) -> Iterator[Hooks]:
        """The hooks objects, in the order they fire."""
        return iter(self._hooks)


def _overrides(hooks: Iterable[Hooks], event: str) -> tuple[Callable[..., Any], ...]:
    """The bound ``event`` methods of ``hooks`` that are not the base no-ops."""
    base = getattr(Hooks, event)
    found = []
    for hooks_object in hooks:
        method = getattr(hooks_object, event, None)
        if method is not None and getattr(method, "__func__", method) is not base:
            found.append(method)
    return tuple(found)


def _describe(handler: Callable[..., Any]) -> str:
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__name__", repr(handler))
    return f"{type(owner).__name__}.{name}" if owner is not None else name


#: When :class:`LoggingHooks` attach a handler's traceback to its failure.
TRACEBACK_MODES = ("first", "always", "never")
# Messages whose first traceback was logged, remembered at most (oldest forgotten).
_FAILED_MEMORY = 10_000


class LoggingHooks(Hooks):
    """Says in the log what happened to each message, on logger ``taskorbit.events``.

    ``taskorbit worker`` adds one to every app that has none, so a failing handler
    is visible where the worker runs, not only in ``dlq show``::

        ERROR taskorbit.events: email.send 1732-0 failed on attempt 1 of 11: ValueError: boom
        Traceback (most recent call last): ...
        INFO taskorbit.events: email.send 1732-0 retrying in 1.0 s (attempt 2 of 11)
        ...
        WARNING taskorbit.events: email.send 1732-0 dead-lettered: gave up after 11 attempts
        (max_retries=10): ValueError: boom

    Levels: a handler's failure at ERROR; a retry at INFO; a dead letter and a drop
    at WARNING (a malformed message, an unknown topic and an undecodable payload say
    only that, with the reason: there is no traceback to show); receive, dispatch,
    complete, duplicate and publish at DEBUG. Every record carries ``topic``,
    ``message_id`` and ``attempt`` in ``extra``.

    ``tracebacks``: ``"first"`` (default) attaches the traceback to the first failure
    of each message this process sees, not to each of its retries; ``"always"`` to
    every failure; ``"never"`` to none. ``max_attempts(topic)`` gives the runs a
    topic's message gets (``max_retries + 1``) for "attempt 2 of 11"; without it the
    lines say "attempt 2". Failures of broker calls and of the worker's own threads
    are logged at DEBUG only: the component that met them logs them already.
    ``debug_events=False`` leaves out the DEBUG-only events altogether, so that they
    cost nothing on the hot path (the worker does so unless its log level is DEBUG).
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        tracebacks: str = "first",
        max_attempts: Callable[[str], int | None] | None = None,
        debug_events: bool = True,
    ) -> None:
        if tracebacks not in TRACEBACK_MODES:
            raise ConfigurationError(
                f"tracebacks must be one of {', '.join(TRACEBACK_MODES)}, got {tracebacks!r}"
            )
        self.logger = logger or logging.getLogger("taskorbit.events")
        self.tracebacks = tracebacks
        self.max_attempts = max_attempts
        if not debug_events:
            # The base no-ops, bound to this object: HookSet sees no override and
            # never fires these events at all.
            for event in ("on_receive", "on_dispatch", "on_complete", "on_duplicate", "on_publish"):
                setattr(self, event, getattr(Hooks, event).__get__(self))
        self._lock = threading.Lock()
        # Keys of messages whose traceback was logged (insertion-ordered, bounded);
        # guarded by self._lock.
        self._failed: dict[object, None] = {}
        # The message whose failure this thread logged last: its retry line then
        # need not repeat the exception (events 6 and 7 fire on one thread, in order).
        self._last_failure = threading.local()

    def on_receive(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "%s %s received", message.topic, message.id)

    def on_dispatch(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "%s %s dispatching", message.topic, message.id)

    def on_complete(self, message: Message, result: Result | None, duration_s: float) -> None:
        if self._failed:  # a peek without the lock: empty unless messages failed
            with self._lock:
                self._failed.pop(_key(message), None)
        # The pipeline passes None for a handler that returned nothing (an ack).
        action = result.action.value if result is not None else "ack"
        self._log(
            logging.DEBUG,
            message,
            "%s %s completed in %.3f s: %s",
            message.topic,
            message.id,
            duration_s,
            action,
            duration_s=duration_s,
            action=action,
        )

    def on_error(self, message: Message | None, error: BaseException) -> None:
        exc_info = (type(error), error, _from_the_handler(error.__traceback__))
        if message is None or isinstance(error, TransportError):
            # A broker call or a worker thread failed: the component logged it with
            # what it does next; here only for those who want every event.
            where = "" if message is None else f" for {message.topic} {message.id}"
            self.logger.debug("worker error%s: %s", where, error, exc_info=exc_info)
            return
        if isinstance(error, DecodeError):
            return  # the dead-letter line says why, at WARNING; a traceback adds nothing
        self._last_failure.key = _key(message)
        if not self.logger.isEnabledFor(logging.ERROR):
            return
        self._log(
            logging.ERROR,
            message,
            "%s %s failed on attempt %s: %s: %s",
            message.topic,
            message.id,
            self._attempt(message, message.attempt),
            type(error).__name__,
            error,
            exc_info=exc_info if self._wants_traceback(message) else None,
            error=type(error).__name__,
        )

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        # message.attempt is still the run that failed; the retry is the next one.
        explained = getattr(self._last_failure, "key", None) == _key(message)
        self._last_failure.key = None
        self._log(
            logging.INFO,
            message,
            "%s %s retrying in %s s (attempt %s)%s",
            message.topic,
            message.id,
            _seconds(delay_s),
            self._attempt(message, message.attempt + 1),
            "" if explained else f": {reason}",
            delay_s=delay_s,
            reason=reason,
        )

    def on_duplicate(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "%s %s duplicate", message.topic, message.id)

    def on_publish(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "%s %s publishing", message.topic, message.id)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._last_failure.key = None
        if self._failed:
            with self._lock:
                self._failed.pop(_key(message), None)
        self._log(
            logging.WARNING,
            message,
            "%s %s dead-lettered: %s",
            message.topic,
            message.id,
            reason,
            reason=reason,
        )

    def on_drop(self, message: Message, reason: str) -> None:
        self._log(
            logging.WARNING,
            message,
            "%s %s dropped: %s",
            message.topic,
            message.id,
            reason,
            reason=reason,
        )

    def _wants_traceback(self, message: Message) -> bool:
        if self.tracebacks != "first":
            return self.tracebacks == "always"
        key = _key(message)
        with self._lock:
            if key in self._failed:
                return False
            self._failed[key] = None
            if len(self._failed) > _FAILED_MEMORY:
                del self._failed[next(iter(self._failed))]
        return True

    def _attempt(self, message: Message, attempt: int) -> str:
        """``"2 of 11"``, or ``"2"`` when the topic's limit is unknown."""
        limit = None
        if self.max_attempts is not None:
            try:
                limit = self.max_attempts(message.topic)
            except Exception:  # a lookup must never cost the log line
                limit = None
        return f"{attempt} of {limit}" if limit else str(attempt)

    def _log(
        self,
        level: int,
        message: Message,
        text: str,
        *args: Any,
        exc_info: Any = None,
        **fields: Any,
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return  # the hot path pays nothing at levels that are off
        extra = {"topic": message.topic, "message_id": message.id, "attempt": message.attempt}
        extra.update(fields)
        self.logger.log(level, text, *args, exc_info=exc_info, extra=extra)


def _key(message: Message) -> object:
    """What identifies a message across its redeliveries: the broker's id."""
    return message.id or id(message)


def _seconds(value: float) -> str:
    """A delay as the log shows it: 2.0, 0.25, 300.0."""
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2g}"


# The worker's own frame that calls the handler; a traceback shown to the user
# starts below it, at the handler's code.
_PIPELINE_FILE = os.path.join("taskorbit", "worker", "pipeline.py")


def _from_the_handler(tb: TracebackType | None) -> TracebackType | None:
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_code.co_filename.endswith(_PIPELINE_FILE)
    ):
        tb = tb.tb_next
    return tb
