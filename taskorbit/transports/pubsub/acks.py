"""acknowledge and modify_ack_deadline in batches of ack ids, with partial failures
turned into AckFailures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from taskorbit.errors import ConfigurationError
from taskorbit.message import Message
from taskorbit.transports.base import AckFailure
from taskorbit.transports.pubsub.errors import per_ack_id_errors, translate
from taskorbit.transports.pubsub.wire import Receipt

log = logging.getLogger("taskorbit.transports.pubsub")

#: Ack ids per acknowledge / modify_ack_deadline call; the client library's own
#: streaming dispatcher uses the same number to stay under the 512 KB request limit.
ACK_IDS_PER_CALL = 1000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def receipt_of(message: Message) -> Receipt:
    receipt = message.receipt
    if not isinstance(receipt, Receipt):
        raise ConfigurationError(f"message {message.id!r} was not received by a PubSubTransport")
    return receipt


class AckIdCalls:
    """The subscription's ack-id RPCs, each bounded by ``rpc_timeout_s``."""

    def __init__(self, subscriber: Any, subscription: str, rpc_timeout_s: float) -> None:
        self._subscriber = subscriber
        self._subscription = subscription
        self._rpc_timeout_s = rpc_timeout_s

    def acknowledge(self, messages: Sequence[Message]) -> list[AckFailure]:
        def call(ack_ids: list[str]) -> None:
            self._subscriber.acknowledge(
                subscription=self._subscription, ack_ids=ack_ids, timeout=self._rpc_timeout_s
            )

        failures: list[AckFailure] = []
        for chunk in chunks(messages, ACK_IDS_PER_CALL):
            failures.extend(self._settle(chunk, "acknowledge", call))
        return failures

    def acknowledge_quietly(self, ack_ids: list[str]) -> None:
        """Acknowledge what was never handed out; a failure is logged, not raised."""
        try:
            for chunk in chunks(ack_ids, ACK_IDS_PER_CALL):
                self._subscriber.acknowledge(
                    subscription=self._subscription,
                    ack_ids=list(chunk),
                    timeout=self._rpc_timeout_s,
                )
        except gexc.GoogleAPICallError as error:
            log.warning("could not acknowledge %d skipped messages: %s", len(ack_ids), error)

    def modify(self, messages: Sequence[Message], seconds: int, what: str) -> None:
        """Set the ack deadline of ``messages`` to ``seconds`` from now (0 = nack)."""

        def call(ack_ids: list[str]) -> None:
            self._modify(ack_ids, seconds)

        for chunk in chunks(messages, ACK_IDS_PER_CALL):
            for failure in self._settle(chunk, what, call):
                # An expired or already-settled message: the broker has it back.
                log.debug("%s of %s failed: %s", what, failure.message.id, failure.reason)

    def modify_quietly(self, ack_ids: list[str], seconds: int) -> None:
        """A failed re-delay only means the message comes back when its deadline ends."""
        try:
            for chunk in chunks(ack_ids, ACK_IDS_PER_CALL):
                self._modify(list(chunk), seconds)
        except gexc.GoogleAPICallError as error:
            log.warning("could not re-delay %d not-yet-due messages: %s", len(ack_ids), error)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        self._subscriber.modify_ack_deadline(
            subscription=self._subscription,
            ack_ids=ack_ids,
            ack_deadline_seconds=seconds,
            timeout=self._rpc_timeout_s,
        )

    def _settle(
        self, messages: Sequence[Message], what: str, call: Callable[[list[str]], None]
    ) -> list[AckFailure]:
        """One call for ``messages``; partial failures become AckFailures.

        Exactly-once subscriptions name the failed ack ids (TRANSIENT_... can be
        retried). The emulator rejects a whole batch for one malformed id, so such a
        batch is retried id by id to find the one.
        """
        try:
            call([receipt_of(m).ack_id for m in messages])
            return []
        except gexc.GoogleAPICallError as error:
            per_id = per_ack_id_errors(error)
            if per_id is not None:
                failed = [(m, per_id.get(receipt_of(m).ack_id)) for m in messages]
                return [
                    AckFailure(m, f"{what}: {why}", retryable=why.startswith("TRANSIENT_"))
                    for m, why in failed
                    if why is not None
                ]
            if isinstance(error, gexc.InvalidArgument):
                if len(messages) == 1:
                    return [AckFailure(messages[0], f"{what}: {error.message}", retryable=False)]
                return [f for m in messages for f in self._settle([m], what, call)]
            raise translate(error, f"{what} on {self._subscription}") from error
