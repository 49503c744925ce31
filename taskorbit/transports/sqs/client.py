"""The boto3 side of the SQS transport: building the client, and the batch calls
that more than one verb shares (SendMessageBatch, ChangeMessageVisibilityBatch)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config

from taskorbit.message import Message
from taskorbit.transports.sqs.errors import translated
from taskorbit.transports.sqs.wire import MAX_BATCH, batches, receipt_of

log = logging.getLogger("taskorbit.transports.sqs")

_SEND_ATTEMPTS = 3  # for SendMessageBatch entries that failed on SQS's side


def new_client(region: str | None, endpoint: str | None, pollers: int, wait_s: float) -> Any:
    config = Config(
        # Pollers hold a connection each during a long poll; the acker, the lease
        # keeper and handlers that publish need theirs too.
        max_pool_connections=pollers + 16,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=max(60.0, wait_s + 10.0),
    )
    # A session of its own: creating clients from boto3's default session is not
    # thread-safe, while the client itself may be shared by every thread.
    session = boto3.session.Session()
    return session.client("sqs", region_name=region, endpoint_url=endpoint, config=config)


def chunks(items: Sequence[Message], size: int = MAX_BATCH) -> list[Sequence[Message]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def send_batches(
    client: Any,
    queue_url: str,
    entries: list[dict[str, Any]],
    sizes: list[int],
    limit: int,
    sent: dict[str, str],
) -> list[str]:
    """SendMessageBatch in batches, retrying entries that failed on SQS's side.

    Fills ``sent`` (entry id → MessageId) as batches succeed, so that a caller still
    knows what went out when a later call raises; returns one line per entry that
    was not sent."""
    errors: list[str] = []
    for batch in batches(entries, sizes, limit):
        pending = batch
        for attempt in range(_SEND_ATTEMPTS):
            with translated("SendMessageBatch", queue_url):
                response = client.send_message_batch(QueueUrl=queue_url, Entries=pending)
            for ok in response.get("Successful", []):
                sent[ok["Id"]] = str(ok["MessageId"])
            failed = {f["Id"]: f for f in response.get("Failed", [])}
            retry = [
                e for e in pending if e["Id"] in failed and not failed[e["Id"]].get("SenderFault")
            ]
            for f in failed.values():
                if f.get("SenderFault") or attempt == _SEND_ATTEMPTS - 1:
                    errors.append(f"{f.get('Code')}: {f.get('Message')}")
            if not retry:
                break
            pending = retry
            time.sleep(0.1 * 2**attempt)
    return errors


def change_visibility(
    client: Any,
    queue_url: str,
    messages: Sequence[Message],
    seconds: Callable[[Message], int],
    what: str,
) -> None:
    """ChangeMessageVisibilityBatch, 10 at a time, to ``seconds(message)`` each."""
    for chunk in chunks(messages):
        entries = [
            {
                "Id": str(i),
                "ReceiptHandle": receipt_of(m).handle,
                "VisibilityTimeout": max(0, seconds(m)),
            }
            for i, m in enumerate(chunk)
        ]
        with translated("ChangeMessageVisibilityBatch", queue_url):
            response = client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        # A failed entry is a message already deleted, or whose lease had lapsed: SQS
        # redelivers it either way, so it is worth a log line, not an exception.
        for failed in response.get("Failed", []):
            log.warning(
                "SQS %s of message %s failed: %s: %s",
                what,
                chunk[int(failed["Id"])].id,
                failed.get("Code"),
                failed.get("Message"),
            )
