"""taskorbit: message handlers from SQS, Pub/Sub, Redis and memory inside sync
services, with bounded memory, bounded concurrency and no lost messages."""

from taskorbit.app import Orbit
from taskorbit.context import Context
from taskorbit.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    PayloadError,
    PayloadTooLargeError,
    RingClosed,
    TaskorbitError,
    TransportConnectionError,
    TransportError,
)
from taskorbit.hooks import Hooks, LoggingHooks
from taskorbit.idempotency import ClaimState, IdempotencyStore, MemoryStore
from taskorbit.message import Action, Message, Result, ack, dead_letter, retry
from taskorbit.retry import ExponentialBackoff, RetryPolicy
from taskorbit.task import Task
from taskorbit.transports.base import Transport
from taskorbit.transports.memory import MemoryTransport
from taskorbit.worker.ring import Overflow, Ring

__version__ = "0.1.0"

__all__ = [
    # the application
    "Context",
    "Orbit",
    "Task",
    # results a handler returns
    "Action",
    "Result",
    "ack",
    "dead_letter",
    "retry",
    # messages and transports
    "MemoryTransport",
    "Message",
    "Transport",
    # retries, idempotency, hooks
    "ClaimState",
    "ExponentialBackoff",
    "Hooks",
    "IdempotencyStore",
    "LoggingHooks",
    "MemoryStore",
    "RetryPolicy",
    # the ring
    "Overflow",
    "Ring",
    # errors
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "PayloadError",
    "PayloadTooLargeError",
    "RingClosed",
    "TaskorbitError",
    "TransportConnectionError",
    "TransportError",
]
