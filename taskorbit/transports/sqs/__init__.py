"""Amazon SQS (standard and FIFO queues) through boto3.

``transport`` maps the Transport verbs onto SQS batch calls; ``wire`` is how a
Message looks as an SQS message and back (attributes, base64, attempts, the
receipt); ``client`` builds boto3 clients and sends batches; ``errors``
translates botocore's exceptions; ``dlq`` browses and redrives a DLQ queue. This
folder is the only place that imports boto3 or botocore.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from taskorbit.extras import needs_extra
from taskorbit.transports.url import UrlTarget

with needs_extra("the SQS transport", "sqs", "boto3", "botocore"):
    from taskorbit.transports.sqs.transport import SQSTransport


def url_target(parts: SplitResult, query_keys: set[str]) -> UrlTarget | None:
    """``sqs://QUEUE_NAME``, or an SQS queue URL (``https://sqs.REGION.amazonaws.com/...``)."""
    if parts.scheme.lower() == "sqs":
        given = {"queue_name": parts.netloc + parts.path}
        return UrlTarget(SQSTransport, given=given, taken=frozenset({"queue_url"}))
    if "sqs" in parts.netloc or "queue" in query_keys:
        return UrlTarget(SQSTransport, url_argument="queue_url", taken=frozenset({"queue_name"}))
    return None  # some other http(s) URL: not ours


__all__ = ["SQSTransport", "url_target"]
