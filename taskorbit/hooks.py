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
from collections.abc import Callable, Iterable
from typing import Any

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


class LoggingHooks(Hooks):
    """Logs every event with ``topic``, ``message_id`` and ``attempt`` in ``extra``.

    Levels: publish, receive, dispatch, complete and duplicate at DEBUG; retry at INFO;
    drop and dead letter at WARNING; errors at ERROR with the traceback.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("taskorbit.events")

    def on_receive(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "received %s %s", message.topic, message.id)

    def on_dispatch(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "dispatching %s %s", message.topic, message.id)

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self._log(
            logging.DEBUG,
            message,
            "completed %s %s in %.3f s: %s",
            message.topic,
            message.id,
            duration_s,
            result.action.value,
            duration_s=duration_s,
            action=result.action.value,
        )

    def on_error(self, message: Message | None, error: BaseException) -> None:
        exc_info = (type(error), error, error.__traceback__)
        if message is None:
            self.logger.error("worker error: %s", error, exc_info=exc_info)
            return
        self._log(
            logging.ERROR,
            message,
            "%s %s failed on attempt %d: %s",
            message.topic,
            message.id,
            message.attempt,
            error,
            exc_info=exc_info,
        )

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        self._log(
            logging.INFO,
            message,
            "retrying %s %s in %.3f s (attempt %d): %s",
            message.topic,
            message.id,
            delay_s,
            message.attempt,
            reason,
            delay_s=delay_s,
            reason=reason,
        )

    def on_duplicate(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "duplicate %s %s", message.topic, message.id)

    def on_publish(self, message: Message) -> None:
        self._log(logging.DEBUG, message, "publishing %s %s", message.topic, message.id)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._log(
            logging.WARNING,
            message,
            "dead-lettered %s %s after attempt %d: %s",
            message.topic,
            message.id,
            message.attempt,
            reason,
            reason=reason,
        )

    def on_drop(self, message: Message, reason: str) -> None:
        self._log(
            logging.WARNING,
            message,
            "dropped %s %s: %s",
            message.topic,
            message.id,
            reason,
            reason=reason,
        )

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
