"""taskorbit on Redis Streams, end to end, timed exactly as the peers are.

    python benchmarks/e2e_redis_taskorbit.py --url redis://127.0.0.1:PORT/0 \
        --messages 20000 --concurrency 8 --handler noop|sleep10ms

The runner (benchmarks/peers/_common.py) starts the worker as its own process (this
script with ``--worker``: an Orbit on RedisStreamsTransport with acks on, as
``app.run()`` runs in production), warms it up, then publishes N messages from one
producer thread (``publish_many``: batched XADDs, 500 per round trip) and stops
the clock when the last handler finished. The handler body is the peers' one:
optionally sleep, then one EVALSHA that counts the completion.

Prints one JSON line: ``{"system": "taskorbit", "messages", "seconds",
"msg_per_s", "publish_seconds", "publish_msg_per_s", ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/e2e_redis_taskorbit.py` finds our modules

import msgspec  # noqa: E402

from benchmarks.peers._common import URL_ENV, handle, parse_args, run  # noqa: E402

TOPIC = "bench.record"
STREAM = "bench:taskorbit"
PUBLISH_CHUNK = 1000  # messages per publish_many call (the transport sends 500 per round trip)


class Record(msgspec.Struct, array_like=True):
    run_key: str
    target: int
    sleep_ms: int


def make_app(url: str, concurrency: int) -> object:
    import taskorbit as orbit
    from taskorbit.transports.redis.streams import RedisStreamsTransport

    app = orbit.Orbit(
        RedisStreamsTransport(url=url, stream=STREAM),
        concurrency=concurrency,
        shutdown_timeout=5.0,
    )

    @app.task(TOPIC)
    def record(payload: Record) -> None:
        handle(payload.run_key, payload.target, payload.sleep_ms)

    return app


def worker_main(concurrency: int) -> None:
    """The worker process: run the Orbit until SIGTERM."""
    app = make_app(os.environ[URL_ENV], concurrency)
    app.run()  # type: ignore[attr-defined]


def main() -> None:
    if "--worker" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", action="store_true")
        parser.add_argument("--concurrency", type=int, required=True)
        worker_main(parser.parse_args().concurrency)
        return
    args = parse_args("taskorbit")
    producer = make_app(args.url, args.concurrency)

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        payload = Record(run_key, target, sleep_ms)
        for start in range(0, count, PUBLISH_CHUNK):
            batch = [payload] * min(PUBLISH_CHUNK, count - start)
            producer.publish_many(TOPIC, batch)  # type: ignore[attr-defined]

    worker = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    worker += ["--concurrency", str(args.concurrency)]
    with contextlib.redirect_stdout(io.StringIO()):  # run() prints; we print once, below
        result = run("taskorbit", args, worker, publish)
    seconds = float(result["publish_seconds"])  # type: ignore[arg-type]
    result["publish_msg_per_s"] = round(args.messages / seconds, 1) if seconds else None
    print(msgspec.json.encode(result).decode(), flush=True)


if __name__ == "__main__":
    main()
