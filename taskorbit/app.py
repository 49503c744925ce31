"""The public facade: register handlers, publish, and run a worker."""

from __future__ import annotations

import datetime as dt
import gc
import inspect
import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import Any, TypeVar, overload

from taskorbit.codec import Codec, get_codec
from taskorbit.errors import ConfigurationError
from taskorbit.hooks import Hooks, HookSet
from taskorbit.idempotency import IdempotencyStore
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR, TOPIC_ATTR, Message
from taskorbit.retry import DEFAULT_RETRY_POLICY, ExponentialBackoff, RetryPolicy
from taskorbit.task import Task, not_before
from taskorbit.transports.base import Transport
from taskorbit.worker.ring import Overflow
from taskorbit.worker.runtime import Runtime
from taskorbit.worker.stats import Stats

logger = logging.getLogger("taskorbit")

F = TypeVar("F", bound=Callable[..., Any])


class Orbit:
    """A taskorbit application: a transport, its handlers, and a worker to run them.

    >>> app = Orbit()                                   # in-memory transport
    >>> @app.task("greet")
    ... def greet(name: str) -> None: ...
    >>> greet.delay("world")                            # doctest: +SKIP
    >>> app.run()                                       # doctest: +SKIP
    """

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        concurrency: int = 32,
        buffer_size: int = 4096,
        overflow: Overflow | str = Overflow.BLOCK,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        codec: str | Codec = "json",
        idempotency_store: IdempotencyStore | None = None,
        idempotency_attr: str = DEFAULT_IDEMPOTENCY_ATTR,
        idempotency_ttl_s: float = 24 * 3600.0,
        claim_ttl_s: float = 600.0,
        duplicate_delay_s: float = 5.0,
        hooks: Iterable[Hooks] = (),
        poll_timeout: float = 1.0,
        local_delay_max: float = 30.0,
        max_lease_s: float = 3600.0,
        shutdown_timeout: float = 30.0,
        ack_interval_s: float = 0.05,
    ) -> None:
        if transport is None:
            from taskorbit.transports.memory import MemoryTransport

            transport = MemoryTransport()
        if not isinstance(transport, Transport):
            raise ConfigurationError(
                "transport must be a taskorbit Transport (e.g. MemoryTransport()), "
                f"got {transport!r}"
            )
        _positive("concurrency", concurrency, integer=True)
        _positive("buffer_size", buffer_size, integer=True)
        for name, value in (
            ("poll_timeout", poll_timeout),
            ("max_lease_s", max_lease_s),
            ("claim_ttl_s", claim_ttl_s),
            ("idempotency_ttl_s", idempotency_ttl_s),
            ("ack_interval_s", ack_interval_s),
        ):
            _positive(name, value)
        for name, value in (
            ("local_delay_max", local_delay_max),
            ("shutdown_timeout", shutdown_timeout),
            ("duplicate_delay_s", duplicate_delay_s),
        ):
            if value < 0:
                raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
        try:
            self.overflow = Overflow(overflow)
        except ValueError:
            valid = ", ".join(repr(o.value) for o in Overflow)
            raise ConfigurationError(f"overflow must be one of {valid}, got {overflow!r}") from None
        self.transport = transport
        self.concurrency = concurrency
        self.buffer_size = buffer_size
        self.retry_policy = retry_policy
        self.codec = get_codec(codec)
        self.idempotency_store = idempotency_store
        self.idempotency_attr = idempotency_attr
        self.idempotency_ttl_s = idempotency_ttl_s
        self.claim_ttl_s = claim_ttl_s
        self.duplicate_delay_s = duplicate_delay_s
        self.hooks = HookSet(hooks)
        self.poll_timeout = poll_timeout
        self.local_delay_max = local_delay_max
        self.max_lease_s = max_lease_s
        self.shutdown_timeout = shutdown_timeout
        self.ack_interval_s = ack_interval_s
        self.tasks: dict[str, Task[Any]] = {}
        self._stats = Stats()
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()  # guards start/stop

    # -- registration ------------------------------------------------------------

    @overload
    def task(self, topic: str, **options: Any) -> Callable[[F], Task[Any]]: ...
    @overload
    def task(self, topic: F) -> Task[Any]: ...

    def task(self, topic: Any, **options: Any) -> Any:
        """Register the decorated function as the handler of ``topic``.

        Options: ``max_retries``, ``base_delay``, ``retry_policy``, ``codec``,
        ``idempotency_key`` (a function of the payload, computed at publish time).
        """
        if callable(topic) and not isinstance(topic, str):
            fn = topic
            return self.handle(getattr(fn, "__name__", ""), fn)

        def register(fn: F) -> Task[Any]:
            return self.handle(topic, fn, **options)

        return register

    def handle(
        self,
        topic: str,
        fn: Callable[..., Any],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[Any], str] | None = None,
    ) -> Task[Any]:
        """Register ``fn`` as the handler of ``topic`` (the non-decorator form)."""
        if not callable(fn):
            raise ConfigurationError(f"handler for {topic!r} must be callable, got {fn!r}")
        if _is_async(fn):
            raise ConfigurationError(
                f"handler for {topic!r} is an async function; taskorbit runs handlers on "
                "threads and cannot await it yet. Register a plain function, for example "
                "one that calls asyncio.run(...) on your coroutine"
            )
        if topic in self.tasks:
            raise ConfigurationError(
                f"topic {topic!r} already has a handler ({self.tasks[topic].fn!r}); "
                "register each topic once"
            )
        if retry_policy is not None and (max_retries is not None or base_delay is not None):
            raise ConfigurationError("pass retry_policy= or max_retries=/base_delay=, not both")
        policy = retry_policy or self._policy(max_retries, base_delay)
        task: Task[Any] = Task(
            app=self,
            topic=topic,
            fn=fn,
            codec=get_codec(codec) if codec is not None else self.codec,
            retry_policy=policy,
            idempotency_key=idempotency_key,
        )
        self.tasks[topic] = task
        return task

    def _policy(self, max_retries: int | None, base_delay: float | None) -> RetryPolicy:
        if max_retries is None and base_delay is None:
            return self.retry_policy
        default = self.retry_policy
        if not isinstance(default, ExponentialBackoff):
            default = DEFAULT_RETRY_POLICY
        return ExponentialBackoff(
            max_retries=default.max_retries if max_retries is None else max_retries,
            base_delay=default.base_delay if base_delay is None else base_delay,
            max_delay=default.max_delay,
            jitter=default.jitter,
        )

    # -- producing ---------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        attributes: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
        codec: Codec | None = None,
    ) -> str:
        """Publish one message; return the broker's id for it."""
        message = self.message(
            topic,
            payload,
            idempotency_key=idempotency_key,
            countdown=countdown,
            eta=eta,
            attributes=attributes,
            ordering_key=ordering_key,
            codec=codec,
        )
        return self.transport.publish([message])[0]

    def publish_many(
        self,
        topic: str,
        payloads: Sequence[Any],
        *,
        countdown: float | None = None,
        attributes: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> list[str]:
        """Publish many payloads of one topic in as few broker calls as it allows."""
        task = self.tasks.get(topic)
        codec = task.codec if task is not None else self.codec
        keyer = task.idempotency_key if task is not None else None
        if countdown is None and keyer is None and not attributes and ordering_key is None:
            # The bulk path: nothing per message but the body.
            _check_topic(topic)
            encode = codec.encode
            bulk = [Message(topic, encode(p)) for p in payloads]
            if self.hooks.wants("on_publish"):  # asked once per call, not per message
                fire = self.hooks.fire
                for m in bulk:
                    fire("on_publish", m)
            return self.transport.publish(bulk)
        messages = [
            self.message(
                topic,
                p,
                idempotency_key=keyer(p) if keyer is not None else None,
                countdown=countdown,
                attributes=attributes,
                ordering_key=ordering_key,
                codec=codec,
            )
            for p in payloads
        ]
        return self.transport.publish(messages)

    def message(
        self,
        topic: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        attributes: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
        codec: Codec | None = None,
    ) -> Message:
        """Build (without sending) the message ``publish`` would send."""
        _check_topic(topic)
        if codec is None:
            task = self.tasks.get(topic)
            codec = task.codec if task is not None else self.codec
        attrs = dict(attributes) if attributes else {}
        if TOPIC_ATTR in attrs:
            raise ConfigurationError(f"attribute {TOPIC_ATTR!r} is reserved; pass topic= instead")
        if idempotency_key is not None:
            attrs[self.idempotency_attr] = idempotency_key
        due = None if countdown is None and eta is None else not_before(countdown, eta)
        # Positional arguments: a Struct built from keywords costs twice as much, and
        # this runs once per published message.
        message = Message(topic, codec.encode(payload), attrs, "", 1, None, ordering_key, due)
        if self.hooks.wants("on_publish"):
            self.hooks.fire("on_publish", message)
        return message

    # -- running -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._runtime is not None

    def start(self) -> None:
        """Start the worker threads in the background and return at once."""
        with self._lock:
            if self._runtime is not None:
                raise ConfigurationError("this Orbit is already running; call stop() first")
            if not self.tasks:
                logger.warning("starting a worker with no handlers: every message will dead-letter")
            runtime = Runtime(
                self.transport,
                self.tasks,
                self.hooks,
                self._stats,
                concurrency=self.concurrency,
                buffer_size=self.buffer_size,
                overflow=self.overflow,
                store=self.idempotency_store,
                idempotency_attr=self.idempotency_attr,
                idempotency_ttl_s=self.idempotency_ttl_s,
                claim_ttl_s=self.claim_ttl_s,
                duplicate_delay_s=self.duplicate_delay_s,
                poll_timeout=self.poll_timeout,
                local_delay_max=self.local_delay_max,
                max_lease_s=self.max_lease_s,
                ack_interval_s=self.ack_interval_s,
            )
            runtime.start()
            self._runtime = runtime

    def stop(self, timeout: float | None = None) -> bool:
        """Drain and stop the worker; True when every running handler finished
        within ``timeout`` (default ``shutdown_timeout``) seconds."""
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is None:
            return True
        return runtime.stop(self.shutdown_timeout if timeout is None else timeout)

    def run(self) -> None:
        """Run the worker until SIGTERM or SIGINT, then drain and return.

        A second signal while draining exits the process at once (status 1).
        """
        stop = threading.Event()
        # next() on a count is one C call: a second signal that interrupts this handler
        # mid-way (Python runs handlers between bytecodes, even inside a handler)
        # still sees that it is the second.
        signals_seen = itertools.count()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if next(signals_seen) > 0:
                logger.error("second signal: exiting now without draining")
                os._exit(1)
            stop.set()
            logger.info("received %s: draining", signal.Signals(signum).name)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            # run() owns the process: move everything built so far (modules, the
            # app, its threads) out of the collector's sight, so a full collection
            # scans only what handlers allocate. Without it one full collection
            # stopped every worker thread for 20-34 ms early in each benchmark run.
            gc.freeze()
            while not stop.wait(0.5):
                pass
        finally:
            try:
                self.stop()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    def stats(self) -> dict[str, int]:
        """Counters since this Orbit was created, plus gauges of the running worker."""
        runtime = self._runtime
        if runtime is not None:
            return runtime.snapshot()
        return self._stats.snapshot()

    def __enter__(self) -> Orbit:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (fn, call))


def _check_topic(topic: object) -> None:
    if not topic or not isinstance(topic, str):
        raise ConfigurationError(f"topic must be a non-empty string, got {topic!r}")


def _positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigurationError(f"{name} must be an integer greater than 0, got {value!r}")
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than 0, got {value!r}")
