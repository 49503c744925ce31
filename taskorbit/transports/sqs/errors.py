"""botocore's exceptions, translated into taskorbit's once, for the SQS transport.

Nothing outside ``transports/`` sees a botocore exception. The messages name the
operation and the queue, never credentials (botocore's own messages carry none).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from taskorbit.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    TransportConnectionError,
    TransportError,
)

_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_NO_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_TOO_LARGE_CODES = frozenset({"BatchRequestTooLong", "RequestEntityTooLarge"})


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(operation: str, queue_url: str) -> Iterator[None]:
    """Run one SQS call; re-raise whatever botocore raises as a taskorbit error."""
    try:
        yield
    except ClientError as e:
        code = error_code(e)
        detail = e.response.get("Error", {}).get("Message", "")
        if code in _NO_QUEUE_CODES:
            raise TransportError(f"SQS {operation}: queue {queue_url} does not exist") from e
        if code in _TOO_LARGE_CODES or "shorter than" in detail:
            raise PayloadTooLargeError(f"SQS {operation} on {queue_url}: {detail}") from e
        raise TransportError(f"SQS {operation} on {queue_url} failed: {code}: {detail}") from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise ConfigurationError(
            "no usable AWS credentials were found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or a profile / role), or pass client=boto3.client('sqs')"
        ) from e
    except NoRegionError as e:
        raise ConfigurationError(
            "no AWS region is configured; pass region_name= or set AWS_DEFAULT_REGION"
        ) from e
    except _CONNECTION_ERRORS as e:
        raise TransportConnectionError(f"SQS {operation}: cannot reach {queue_url}: {e}") from e
    except BotoCoreError as e:
        raise TransportError(f"SQS {operation} on {queue_url} failed: {e}") from e
