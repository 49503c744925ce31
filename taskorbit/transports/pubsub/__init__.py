"""Google Cloud Pub/Sub through google-cloud-pubsub's synchronous Pull.

``transport`` maps the Transport verbs onto pull, acknowledge, modify_ack_deadline
and publish; ``wire`` is how a Message looks on Pub/Sub (resource names,
attributes, attempts, the receipt); ``acks`` batches ack-id calls; ``flow`` keeps
the byte budget; ``publish`` wraps the batching publisher; ``errors`` translates
google-api-core's exceptions; ``dlq`` reads and redrives a dead-letter topic. This
folder is the only place that imports google-cloud-pubsub or grpc.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from taskorbit.extras import needs_extra
from taskorbit.transports.url import UrlTarget

with needs_extra("the Pub/Sub transport", "pubsub", "google", "grpc", "grpc_status"):
    from taskorbit.transports.pubsub.transport import PubSubTransport


def url_target(parts: SplitResult, query_keys: set[str]) -> UrlTarget:
    """``pubsub://projects/P/subscriptions/S?topic=T``."""
    subscription = (parts.netloc + parts.path) or None
    return UrlTarget(PubSubTransport, given={"subscription": subscription})


__all__ = ["PubSubTransport", "url_target"]
