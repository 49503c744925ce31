"""Amazon SQS with a dead-letter queue (or any SQS emulator, e.g. moto_server).

    AWS_ENDPOINT_URL_SQS=http://127.0.0.1:5000 AWS_DEFAULT_REGION=us-east-1 \\
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing python examples/sqs/main.py

Creates the queues ``example-jobs`` and ``example-jobs-dlq`` if they are missing.
"""

from __future__ import annotations

import os
import sys
import threading

import boto3

import taskorbit as orbit
from taskorbit.dlq import Selection, for_transport
from taskorbit.transports.sqs import SQSTransport


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS")
client = boto3.session.Session().client("sqs", endpoint_url=endpoint)
queue_url = client.create_queue(QueueName="example-jobs")["QueueUrl"]
dlq_url = client.create_queue(QueueName="example-jobs-dlq")["QueueUrl"]

transport = SQSTransport(queue_url, dlq_url=dlq_url, client=client, wait_time_s=1)
app = orbit.Orbit(transport, concurrency=8, poll_timeout=1.0)
done = threading.Event()
seen: list[int] = []


@app.task("resize", max_retries=1, base_delay=0.1)
def resize(image_id: int) -> None:
    if image_id < 0:
        raise ValueError(f"no image {image_id}")
    seen.append(image_id)
    say(f"resized image {image_id}")
    if len(seen) == 3:
        done.set()


if __name__ == "__main__":
    app.publish_many("resize", [1, 2, 3, -1])  # one SendMessageBatch call
    with app:
        done.wait(30)
        dlq = for_transport(transport)
        while not dlq.list(selection=Selection.of(topic="resize")):
            done.wait(0.2)
    for letter in dlq.list():
        print(f"in the DLQ after {letter.attempts} attempts: {letter.reason}")
    transport.close()
