"""RQ: no thread pool, so concurrency is the number of worker processes, started the
way RQ documents scaling on one machine (``rq worker-pool -n N``). Each worker uses
RQ's default Worker class, which forks a work horse per job; ``--worker-class``
picks another (``rq.worker.SimpleWorker`` runs jobs in the worker process)."""

from __future__ import annotations

import argparse

import redis
from rq import Queue

from benchmarks.peers._common import parse_args, python_m, run

JOB = "benchmarks.peers.rq_jobs.record"


def main() -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--worker-class", default="rq.worker.Worker")
    ns, rest = extra.parse_known_args()
    args = parse_args("rq", rest)
    simple = ns.worker_class.endswith("SimpleWorker")
    queue = Queue("bench-rq", connection=redis.Redis.from_url(args.url))
    worker = python_m(
        "rq.cli", "worker-pool", "-n", str(args.concurrency),
        "-u", args.url, "-w", ns.worker_class, "-q", "bench-rq",
    )  # fmt: skip

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        for _ in range(count):
            queue.enqueue(JOB, run_key, target, sleep_ms)

    run("rq-simple" if simple else "rq", args, worker, publish)


if __name__ == "__main__":
    main()
