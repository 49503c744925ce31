"""The full chaos profile: 100 SIGKILLs over 5,000 messages per durable transport.

    python benchmarks/chaos.py [--transport redis|sqs|pubsub|all] [--messages N]
                               [--kills K] [--seed S] [--json FILE]

(``make chaos`` runs it for all three.) It starts its own private servers in a
temporary directory, with the functions the test session uses (tests/servers/):
redis-server (the Redis Streams broker, and for every transport the store of the
side effects and idempotency marks), moto_server for SQS and Google's Pub/Sub
emulator. Each transport then gets one run of the chaos driver
(tests/chaos/driver.py, the same one the short tests in ``make test`` use), and the
script prints a markdown table for docs/reliability.md. It exits 1 if any run lost
a message, repeated a side effect, dead-lettered one or left one at the broker.

Why here and not in scripts/: like the other measurement scripts in benchmarks/,
it is Python that prints a table for docs/, is linted with them, and is run from
the Makefile (scripts/ holds the shell helpers that ``make`` itself needs).

SQS runs on moto_server with the producer keeping at most 100 messages unhandled
in the queue: moto's calls slow down as a queue grows (a receive takes 1.4 s at a
depth of 1,000), so 5,000 messages published at once would measure moto, not
taskorbit. The workers never see the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so that ``python benchmarks/chaos.py`` finds tests/

from tests.chaos.brokers import ChaosBroker, PubSubBroker, RedisStreamsBroker, SQSBroker  # noqa: E402
from tests.chaos.driver import ChaosResult, Profile, markdown_table, run_chaos  # noqa: E402
from tests.servers import free_port, start_process, stop_process, wait_until  # noqa: E402

# Per transport: the worker settings of the full profile. Every handler sleeps, so
# that a kill always finds handlers running and 5,000 messages last long enough
# for 100 kills (each waits until the fresh worker before it has started handling).
FULL = {
    "redis": Profile(messages=5000, kills=100, handler_s=0.25),
    "sqs": Profile(messages=5000, kills=100, handler_s=0.25, max_backlog=100),
    "pubsub": Profile(messages=5000, kills=100, handler_s=0.25),
}
LEASES = {"redis": 2.0, "sqs": 3.0, "pubsub": 10.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("redis", "sqs", "pubsub", "all"), default="all")
    parser.add_argument("--messages", type=int, help="instead of 5,000")
    parser.add_argument("--kills", type=int, help="instead of 100")
    parser.add_argument("--seed", type=int, help="for the kill schedule")
    parser.add_argument("--json", type=Path, help="also write every counted figure here")
    return parser.parse_args()


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    from tests.servers.redis import start_redis

    url, proc = start_redis(workdir)
    try:
        yield url
    finally:
        stop_process(proc)


@contextlib.contextmanager
def private_moto(workdir: Path) -> Iterator[str]:
    from tests.servers.sqs import _answers, _moto_server_binary

    binary = _moto_server_binary()
    if binary is None:
        raise SystemExit("moto_server is missing; install it with: pip install 'moto[server]'")
    log = workdir / "moto.log"
    port = free_port()
    proc = start_process([binary, "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{endpoint}/moto-api/"), 30.0, "moto_server", log)
        yield endpoint
    finally:
        stop_process(proc)


@contextlib.contextmanager
def private_pubsub(workdir: Path) -> Iterator[str]:
    from tests.servers.pubsub import EMULATOR, EMULATOR_INSTALL, PROJECT, _start_emulator

    if not EMULATOR.exists():
        raise SystemExit(f"Google's Pub/Sub emulator is missing; install it: {EMULATOR_INSTALL}")
    proc, server = _start_emulator(workdir)
    saved = {n: os.environ.get(n) for n in ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID")}
    os.environ["PUBSUB_EMULATOR_HOST"] = str(server)  # for this process and the workers
    os.environ["PUBSUB_PROJECT_ID"] = PROJECT
    try:
        yield PROJECT
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_process(proc)


def run_one(transport: str, profile: Profile, redis_url: str, workdir: Path) -> ChaosResult:
    with contextlib.ExitStack() as stack:
        broker: ChaosBroker
        if transport == "redis":
            broker = RedisStreamsBroker(redis_url, lease_s=LEASES["redis"])
        elif transport == "sqs":
            broker = SQSBroker(stack.enter_context(private_moto(workdir)), lease_s=LEASES["sqs"])
        else:
            project = stack.enter_context(private_pubsub(workdir))
            broker = PubSubBroker(project=project, lease_s=LEASES["pubsub"])
        stack.callback(broker.close)
        print(f"{broker.name}: {profile.messages} messages, {profile.kills} kills ...", flush=True)
        return run_chaos(broker, redis_url, profile, workdir)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load {load}"


def details(r: ChaosResult) -> str:
    """What the table leaves out, in one paragraph."""
    gaps = [b - a for a, b in itertools.pairwise([0, *r.kill_progress])]
    single = r.longest_single_kill_redelivery_s
    return (
        f"kills when {min(r.kill_progress, default=0):,} to {max(r.kill_progress, default=0):,} "
        f"messages were handled, at most {max(gaps, default=0)} apart; "
        f"{r.runs:,} handler runs, {r.cut_runs} cut by a kill, {r.chained_cut_runs} of them "
        f"received by another worker killed before the next run; redelivery delay median "
        f"{_s(r.median_redelivery_s)}, longest {_s(r.longest_redelivery_s)}, longest with a "
        f"single kill in the way {_s(single)}; {r.reruns_without_kill} reruns no kill explains; "
        f"{r.turned_away:,} deliveries turned away by the idempotency store; "
        f"{r.dead_lettered} dead-lettered; the run took {r.wall_s:.0f} s."
    )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def main() -> int:
    args = parse_args()
    names = ["redis", "sqs", "pubsub"] if args.transport == "all" else [args.transport]
    workdir = Path(tempfile.mkdtemp(prefix="taskorbit-chaos-"))
    results: list[ChaosResult] = []
    try:
        with private_redis(workdir) as redis_url:
            for name in names:
                profile = FULL[name]
                for field in ("messages", "kills", "seed"):
                    if getattr(args, field) is not None:
                        profile = replace(profile, **{field: getattr(args, field)})
                results.append(run_one(name, profile, redis_url, workdir))
    except BaseException:
        print(f"worker logs kept in {workdir}", file=sys.stderr)
        raise
    print(f"\n{dt.date.today().isoformat()}, {machine()}\n")
    print(markdown_table(results))
    for r in results:
        print(f"\n{r.transport}: " + details(r))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    problems = [f"{r.transport}: {', '.join(r.problems())}" for r in results if r.problems()]
    if problems:
        print("\nsettlement invariant broken:\n" + "\n".join(problems), file=sys.stderr)
        print(f"worker logs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
