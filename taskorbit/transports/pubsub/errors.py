"""google-api-core exceptions translated into taskorbit's hierarchy, in one place.

Messages name the resource and what to do; they never include credentials (the
client library's exceptions carry none, and only the exception text is used).
"""

from __future__ import annotations

import concurrent.futures

from google.api_core import exceptions as gexc
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]

from taskorbit.errors import ConfigurationError, TransportConnectionError, TransportError

#: Roles a worker needs; quoted in PermissionDenied errors.
ROLES_HINT = (
    "a worker needs roles/pubsub.subscriber on the subscription and "
    "roles/pubsub.publisher on the topic and the dead-letter topic"
)

# Errors that say the broker could not be reached or did not answer in time.
_UNREACHABLE = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    gexc.InternalServerError,
    gexc.Unknown,
)


def translate(error: Exception, what: str) -> TransportError:
    """A TransportError for ``error``, raised while doing ``what`` (names a resource)."""
    if isinstance(error, gexc.NotFound):
        return TransportError(
            f"{what}: not found; create it (infrastructure code) or pass create=True ({error})"
        )
    if isinstance(error, gexc.PermissionDenied):
        return TransportError(f"{what}: permission denied; {ROLES_HINT} ({error})")
    if isinstance(error, (*_UNREACHABLE, TimeoutError, concurrent.futures.TimeoutError)):
        return TransportConnectionError(f"{what}: Pub/Sub unreachable: {error}")
    return TransportError(f"{what}: {error}")


def ordering_not_enabled(topic: str) -> ConfigurationError:
    return ConfigurationError(
        f"publishing to {topic} with an ordering key needs a PublisherClient created with "
        "publisher_options=PublisherOptions(enable_message_ordering=True); pass one as "
        "publisher=, or let the transport create its own"
    )


def per_ack_id_errors(error: gexc.GoogleAPICallError) -> dict[str, str] | None:
    """Per-ack-id failures of an acknowledge / modify_ack_deadline call.

    Subscriptions with exactly-once delivery answer a partly failed call with an
    ErrorInfo whose metadata maps each failed ack id to a reason such as
    ``PERMANENT_FAILURE_INVALID_ACK_ID`` or ``TRANSIENT_FAILURE_UNORDERED_ACK_ID``.
    The ack ids it does not name succeeded. None when the error carries no such map
    (the whole call failed). Same parsing as the client's streaming pull manager.
    """
    response = getattr(error, "response", None)
    if response is None:
        return None
    try:
        status = rpc_status.from_call(response)
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and detail.Unpack(info):
            return dict(info.metadata)
    return None
