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
from taskorbit.context import Context
from taskorbit.errors import ConfigurationError
from taskorbit.hooks import Hooks, HookSet
from taskorbit.idempotency import IdempotencyStore
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR, TOPIC_ATTR, Message
from taskorbit.retry import DEFAULT_RETRY_POLICY, ExponentialBackoff, RetryPolicy
from taskorbit.task import Task, TaskDecorator, not_before
from taskorbit.transports.base import Transport
from taskorbit.worker.ring import MAX_CAPACITY, Overflow
from taskorbit.worker.runtime import Runtime
from taskorbit.worker.stats import Stats

logger = logging.getLogger("taskorbit")

P = TypeVar("P")


class Orbit:
    """A taskorbit application: a transport, its handlers, and a worker to run them.

    >>> app = Orbit()                                   # in-memory transport
    >>> @app.task("greet")
    ... def greet(name: str) -> None: ...
    >>> greet.delay("world")                            # doctest: +SKIP
    >>> app.run()                                       # doctest: +SKIP

    Only ``transport`` may be passed by position. Times are in seconds (floats).
    docs/api.md lists the same options, the options of :meth:`task` and the keys
    of :meth:`stats`.

    Args:
        transport: the broker messages come from and go to. A
            :class:`~taskorbit.Transport` (``SQSTransport(...)``,
            ``RedisStreamsTransport(...)``, ...), or a URL that
            :func:`taskorbit.transports.url.transport_from_url` builds one from:
            ``"memory://"``, ``"redis://localhost:6379/0?stream=jobs"``,
            ``"sqs://QUEUE_NAME"`` or an SQS queue URL,
            ``"pubsub://projects/P/subscriptions/S?topic=T"`` (query keys are the
            transport's options). Default: a new in-memory transport, seen by this
            process only (tests, demos).
        concurrency: the most handlers that run at once (default 32): the size of
            the worker's thread pool. Raise it for handlers that wait on I/O; for
            CPU-bound handlers add processes (``taskorbit worker --processes N``)
            instead, since threads share one GIL.
        buffer_size: slots of the ring between the broker and the handlers
            (default 4096), rounded up to a power of two: 1000 gives 1024, and the
            worker logs that when it starts. It bounds how many messages are
            received but not yet started, so the worker's memory; a few times
            ``concurrency`` keeps the handlers busy.
        overflow: what a full ring does with messages a push transport (Redis
            Pub/Sub) delivers anyway: ``"block"`` (default; wait for room),
            ``"drop_newest"``, ``"drop_oldest"`` or ``"reject"``. A refused
            message is reported through ``on_drop`` and handed back to a durable
            broker. Pull transports are never asked for more than the ring holds.
        retry_policy: whether and when a failed handler runs again. The default,
            ``ExponentialBackoff()``, retries 10 times after 1, 2, 4 ... up to
            300 s (docs/retries.md). A task's ``max_retries=``, ``base_delay=`` or
            ``retry_policy=`` overrides it.
        codec: how payloads become message bodies: ``"json"`` (default),
            ``"msgpack"``, ``"raw"`` (bytes and str as they are), or a
            :class:`~taskorbit.codec.Codec` object. Producers and workers of a
            topic must use the same one; a task's ``codec=`` overrides it.
        idempotency_store: where idempotency keys are claimed so that each key
            runs once. ``None`` (default) runs every delivery; ``MemoryStore()``
            deduplicates within one process, ``RedisStore`` across workers.
        idempotency_attr: the message attribute that carries the idempotency key
            (default ``"IdempotencyKey"``); change it only to use keys another
            producer already sets under another name.
        idempotency_ttl_s: how long a key whose handler succeeded is remembered, so
            that its duplicates are acked without running (default 86400, a day).
            Keep it longer than the broker may redeliver or producers may repeat.
        claim_ttl_s: how long a key stays "in progress" before its claim expires
            (default 600); the expiry frees the keys of a worker that died. Set it
            above your slowest handler's run time, or a duplicate may run beside it.
        duplicate_delay_s: how long a duplicate of a key still in progress waits
            before it is looked at again (default 5); the wait uses no attempt.
        hooks: :class:`~taskorbit.Hooks` objects told of every step of every
            message, e.g. ``LoggingHooks()`` or the Prometheus and OpenTelemetry
            adapters (docs/hooks.md). ``app.hooks.add(...)`` adds more later.
        poll_timeout: how long one receive call waits for messages, the broker's
            long poll (default 1). Longer means fewer broker calls on an idle queue,
            and a slower ``stop()``, which lets each poller finish its wait.
        local_delay_max: retries due within this many seconds (default 30) wait in
            the worker's timer wheel while their lease is extended; longer delays go
            back to the broker. 0 hands every retry back to the broker.
        max_lease_s: the longest the worker keeps one message invisible at a broker
            with leases (SQS, Pub/Sub, Redis Streams; default 3600). Past it the
            lease is no longer extended and the broker delivers the message again,
            so set it above your slowest handler's run time.
        shutdown_timeout: how long ``stop()``, and SIGTERM or SIGINT under
            ``run()``, wait for running handlers (default 30); messages not yet
            started go back to the broker at once. Keep it a few seconds below
            your platform's kill grace period (Kubernetes: 30 s).
        ack_interval_s: acks go to the broker in batches, at the latest this long
            after their handler finished (default 0.05). Longer means fewer broker
            calls, and more messages run twice if the process dies meanwhile.
    """

    def __init__(
        self,
        transport: Transport | str | None = None,
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
        elif isinstance(transport, str):
            from taskorbit.transports.url import transport_from_url

            transport = transport_from_url(transport)
        if not isinstance(transport, Transport):
            raise ConfigurationError(
                "transport must be a taskorbit Transport (e.g. MemoryTransport()) or a "
                "URL to build one from (e.g. 'redis://localhost:6379/0'; see "
                f"taskorbit.transports.url.transport_from_url), got {transport!r}"
            )
        _positive("concurrency", concurrency, integer=True)
        _positive("buffer_size", buffer_size, integer=True)
        if buffer_size > MAX_CAPACITY:
            raise ConfigurationError(
                f"buffer_size must be at most {MAX_CAPACITY}, got {buffer_size!r}"
            )
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
        # The runtime stop() is draining: stats() still reads its gauges meanwhile.
        self._draining: Runtime | None = None
        self._lock = threading.Lock()  # guards start/stop

    # -- registration ------------------------------------------------------------

    @overload
    def task(
        self,
        topic: str,
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[Any], str] | None = None,
    ) -> TaskDecorator: ...
    @overload
    def task(self, topic: Callable[[P, Context], object]) -> Task[P]: ...
    @overload
    def task(self, topic: Callable[[P], object]) -> Task[P]: ...

    def task(
        self,
        topic: str | Callable[..., object],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[Any], str] | None = None,
    ) -> Any:
        """Register the decorated function as the handler of ``topic``.

        ``@app.task("welcome.send")`` on ``def send(msg: Welcome, ctx: Context)``
        gives a ``Task[Welcome]``: ``send.delay(Welcome(...))`` publishes, and a
        type checker flags ``send.delay(123)``. The handler's first parameter
        receives the payload, decoded into its annotation; a second one, if any,
        the :class:`Context`. ``@app.task`` without a topic uses the function's name.

        Args:
            max_retries: retries after the first run before the message is
                dead-lettered (the app's policy's by default: 10).
            base_delay: the backoff's first delay in seconds, doubling per attempt
                (the app's policy's by default: 1.0). With ``max_retries`` it
                replaces only those two numbers of the app's ``ExponentialBackoff``.
            retry_policy: a whole :class:`~taskorbit.RetryPolicy` for this task;
                not together with ``max_retries``/``base_delay``.
            codec: this topic's codec, ``"json"``, ``"msgpack"``, ``"raw"`` or a
                :class:`~taskorbit.codec.Codec` (the app's by default).
            idempotency_key: a function of the payload returning its idempotency
                key, called at publish time (``delay``, ``publish_many``); the key
                travels as a message attribute and needs an ``idempotency_store``
                on the worker.
        """
        if callable(topic) and not isinstance(topic, str):
            fn = topic
            return self.handle(
                getattr(fn, "__name__", ""),
                fn,
                max_retries=max_retries,
                base_delay=base_delay,
                retry_policy=retry_policy,
                codec=codec,
                idempotency_key=idempotency_key,
            )
        name = topic

        def register(fn: Callable[..., object]) -> Task[Any]:
            return self.handle(
                name,
                fn,
                max_retries=max_retries,
                base_delay=base_delay,
                retry_policy=retry_policy,
                codec=codec,
                idempotency_key=idempotency_key,
            )

        return register

    @overload
    def handle(
        self,
        topic: str,
        fn: Callable[[P, Context], object],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[P], str] | None = None,
    ) -> Task[P]: ...
    @overload
    def handle(
        self,
        topic: str,
        fn: Callable[[P], object],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[P], str] | None = None,
    ) -> Task[P]: ...

    def handle(
        self,
        topic: str,
        fn: Callable[..., object],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        retry_policy: RetryPolicy | None = None,
        codec: str | Codec | None = None,
        idempotency_key: Callable[[Any], str] | None = None,
    ) -> Task[Any]:
        """Register ``fn`` as the handler of ``topic``: the non-decorator form of
        :meth:`task`, with the same options."""
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
        """Publish one message; return the broker's id for it.

        When ``topic`` has a handler in this process, the payload is checked
        against the handler's type first: one that the worker could not decode
        raises :class:`~taskorbit.errors.PayloadError` and nothing is sent
        (``payload for 'welcome.send' does not match Welcome: Object missing
        required field `email```). A topic handled only elsewhere is not checked.
        """
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
        """Publish many payloads of one topic in as few broker calls as it allows.

        Payloads are checked like :meth:`publish`'s, all of them before any is sent.
        """
        task = self.tasks.get(topic)
        codec = task.codec if task is not None else self.codec
        keyer = task.idempotency_key if task is not None else None
        if countdown is None and keyer is None and not attributes and ordering_key is None:
            # The bulk path: nothing per message but the body.
            _check_topic(topic)
            encode = codec.encode
            bulk = [Message(topic, encode(p)) for p in payloads]
            if task is not None and task.checks_payloads:
                check = task.check
                for m in bulk:
                    check(m.body)
            if self.hooks.wants("on_publish"):  # asked once per call, not per message
                fire = self.hooks.fire
                for m in bulk:
                    fire("on_publish", m)
            return self.transport.publish(bulk)
        messages = [
            self.message(
                topic,
                p,
                idempotency_key=task.key_for(p) if task is not None else None,
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
        """Build (without sending) the message ``publish`` would send, checking its
        payload the same way."""
        _check_topic(topic)
        task = self.tasks.get(topic)
        if codec is None:
            codec = task.codec if task is not None else self.codec
        attrs = dict(attributes) if attributes else {}
        if TOPIC_ATTR in attrs:
            raise ConfigurationError(f"attribute {TOPIC_ATTR!r} is reserved; pass topic= instead")
        if idempotency_key is None and task is not None:
            idempotency_key = task.key_for(payload)  # the same key however it is published
        if idempotency_key is not None:
            attrs[self.idempotency_attr] = idempotency_key
        due = None if countdown is None and eta is None else not_before(countdown, eta)
        # Positional arguments: a Struct built from keywords costs twice as much, and
        # this runs once per published message.
        body = codec.encode(payload)
        if task is not None and task.checks_payloads:
            task.check(body)  # one decode: what the worker would refuse, refused now
        message = Message(topic, body, attrs, "", 1, None, ordering_key, due)
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
            if runtime.ring.capacity != self.buffer_size:
                logger.info(
                    "buffer_size=%d rounded up to a ring of %d slots (a power of two)",
                    self.buffer_size,
                    runtime.ring.capacity,
                )
            runtime.start()
            self._runtime = runtime

    @property
    def draining(self) -> bool:
        """True while :meth:`stop` waits for running handlers to finish."""
        return self._draining is not None

    def stop(self, timeout: float | None = None) -> bool:
        """Drain and stop the worker; True when every running handler finished
        within ``timeout`` (default ``shutdown_timeout``) seconds."""
        with self._lock:
            runtime, self._runtime = self._runtime, None
            self._draining = runtime
        if runtime is None:
            return True
        try:
            return runtime.stop(self.shutdown_timeout if timeout is None else timeout)
        finally:
            self._draining = None

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
        """Counters since this Orbit was created, plus gauges of the running worker.

        Counters (every key always present; they only grow):

        - ``received``: messages the pollers took from the broker; a redelivery
          counts again.
        - ``completed``: handler runs that ended in an ack (returned ``None``,
          ``ack()`` or any value that is not a result).
        - ``retried``: runs that ended in a retry (raised, or returned ``retry()``),
          whether the retry waits in the worker or at the broker.
        - ``dead_lettered``: messages sent to the dead-letter queue (undecodable
          payload, unknown topic, retries used up, ``dead_letter()``).
        - ``duplicates``: deliveries whose idempotency key was already claimed:
          acked without running when done, put back when still in progress.
        - ``dropped``: messages the ring's overflow policy refused, and broadcast
          (Redis Pub/Sub) messages that had to leave the worker unrun.
        - ``deferred``: messages put aside before running, using no attempt: not yet
          due (``countdown``/``eta``), or their idempotency claim failed.
        - ``released``: messages handed back to the broker unstarted, using no
          attempt: at shutdown, or when admitting a batch failed (a bug, logged).
        - ``ack_failures``: acks the broker refused.
        - ``errors``: failures reported through ``on_error``: handler exceptions and
          failed broker calls (receive, ack, lease extension, dead letter).

        Gauges (only while the worker runs; each is 0 when it is idle):

        - ``ring_length``: messages in the ring, received and not yet taken by the
          dispatcher (at most ``buffer_size`` rounded up to a power of two).
        - ``waiting``: messages taken from the ring but not started: the ready
          queue, and messages parked behind another of their ordering key.
        - ``active_runners``: worker threads busy running handlers (at most
          ``concurrency``).
        - ``timers``: messages in the timer wheel: short retries, and messages
          waiting for their ``countdown``/``eta`` or a duplicate's delay.
        - ``held``: messages whose lease the lease keeper extends (0 on a
          transport without leases).
        - ``in_flight``: messages the worker holds, from receive to their one
          settlement (ack, hand-back or dead letter); one that stays above 0 on an
          idle worker is a message the worker lost track of.
        - ``claims_held``: idempotency claims taken for messages still in the
          worker (0 without an ``idempotency_store``).
        - ``ordering_keys_held``: ordering keys a message holds right now (SQS
          FIFO groups, Pub/Sub ordering keys).
        """
        # While stop() drains, the gauges are still the runtime's: handlers run on.
        runtime = self._runtime or self._draining
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
