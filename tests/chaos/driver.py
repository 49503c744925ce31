"""The chaos driver: SIGKILL workers at random moments and count what it cost.

One driver for every durable broker (see brokers.py), used by the short chaos
tests in ``make test`` and by the full profile (``benchmarks/chaos.py``, ``make
chaos``). A run:

1. publishes ``messages`` payloads ``{"n": 0..N-1}``, each with the idempotency key
   ``<run>-<n>`` (all at once, or topped up so that at most ``max_backlog`` wait
   unhandled: moto_server slows down as a queue grows);
2. keeps ``workers`` worker processes (worker.py) consuming, their handlers
   committing the side effect and the store's done mark in one MULTI;
3. draws ``kills`` progress points at random (numbers of messages handled, spread
   over 2-95 % of the run) and, at each, SIGKILLs a worker chosen at random among
   those that have started handling (among the ready ones if none has), then starts
   a fresh one at once. A kill waits until at least two workers are ready to poll,
   so one always is; it does not wait for work, so a backlog that runs dry early
   cannot stall the run (the tests then see few runs cut, and say so);
4. after the last kill, lets the workers finish until every effect is committed and
   the broker holds nothing, stops them with SIGTERM, and asks the broker what is
   left;
5. counts, from Redis and the broker, what :class:`ChaosResult` lists.

Redelivery delay: the worker writes down every handler start (message, worker,
wall clock). A run whose worker was killed and whose message ran again later was
cut by the kill; its delay is the time from the SIGKILL to that next start. It is
driven by the lease (Redis ``claim_idle_s``, SQS visibility, Pub/Sub ack deadline)
and, for keyed messages, by the idempotency claim the dead run left (``claim_ttl_s``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import statistics
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import taskorbit as orbit
from tests.chaos.brokers import ChaosBroker
from tests.chaos.worker import spawn

POLL_S = 0.05
# Pub/Sub cannot say it is empty: wait this long past one ack deadline after the
# last kill, so that whatever a killed worker held has come back and been settled.
SETTLE_MARGIN_S = 2.0


@dataclass(frozen=True)
class Profile:
    """What one run does; the defaults are the full profile's worker settings."""

    messages: int
    kills: int
    workers: int = 2
    concurrency: int = 8
    buffer_size: int = 16
    handler_s: float = 0.0  # each work handler sleeps this long before its effect
    claim_ttl_s: float = 5.0
    max_backlog: int | None = None  # None: publish everything up front
    timeout_s: float = 900.0  # for the whole run
    seed: int | None = None


@dataclass
class ChaosResult:
    transport: str
    messages: int
    kills: int
    lease_s: float
    handled: int = 0  # messages whose effect was committed at least once
    lost: int = 0  # published, effect never committed
    duplicate_effects: int = 0  # effects committed beyond the first, all messages
    runs: int = 0  # handler starts
    redeliveries: int = 0  # handler starts beyond the first of each message
    cut_runs: int = 0  # runs cut by a SIGKILL and started again later
    chained_cut_runs: int = 0  # of those, received by another worker killed before it ran
    reruns_without_kill: int = 0  # runs started again although no kill explains it
    turned_away: int = 0  # deliveries the idempotency store acked or put back unrun
    dead_lettered: int = 0
    left_pending: int = 0  # what the broker still held after the workers stopped
    longest_redelivery_s: float | None = None
    median_redelivery_s: float | None = None
    longest_single_kill_redelivery_s: float | None = None  # not chained
    kill_progress: list[int] = field(default_factory=list)  # messages handled at each kill
    drain_s: float = 0.0  # last kill -> every effect committed, broker empty
    wall_s: float = 0.0
    worker_exits: list[int | None] = field(default_factory=list)  # of the SIGTERMed ones
    log: str = ""

    def problems(self) -> list[str]:
        """What breaks the settlement invariant; empty when the run was clean."""
        found = []
        for name in ("lost", "duplicate_effects", "dead_lettered", "left_pending"):
            if getattr(self, name):
                found.append(f"{name}={getattr(self, name)}")
        if any(code != 0 for code in self.worker_exits):
            found.append(f"worker exit codes {self.worker_exits}")
        return found


class ChaosRun:
    """One run: its worker processes, its kills and its counts (see the module doc)."""

    def __init__(
        self, broker: ChaosBroker, redis_url: str, profile: Profile, workdir: Path
    ) -> None:
        self.broker = broker
        self.profile = profile
        self.redis_url = redis_url
        self.log = workdir / f"workers-{broker.name.replace('/', '').replace(' ', '-')}.log"
        self.raw = redis.Redis.from_url(redis_url)
        self.rng = random.Random(profile.seed)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # live workers by name
        self.killed_at: dict[str, float] = {}  # worker name -> wall clock of its SIGKILL
        self.published = 0
        self._spawned = 0
        # Keys unique to the run: done marks of an earlier run in the same Redis must
        # not turn this run's messages away.
        run_id = uuid.uuid4().hex[:6]
        self._producer = orbit.Orbit(broker.producer())
        self._producer.handle(
            "work", lambda p: None, idempotency_key=lambda p: f"{run_id}-{p['n']}"
        )

    # -- workers -----------------------------------------------------------------

    def spawn(self) -> None:
        p = self.profile
        name = f"w{self._spawned:03d}"
        self._spawned += 1
        args = [
            "--redis", self.redis_url, *self.broker.worker_args(),
            "--lease", str(self.broker.lease_s), "--name", name,
            "--store", "--atomic-effect", "--claim-ttl", str(p.claim_ttl_s),
            "--concurrency", str(p.concurrency), "--buffer-size", str(p.buffer_size),
            "--sleep", str(p.handler_s),
            # Crashes raise the attempt of what the dead worker held; give room.
            "--max-retries", "100",
        ]  # fmt: skip
        self.procs[name] = spawn(args, self.log, env=self.broker.worker_env())

    def ready(self) -> list[str]:
        """Live workers that are built and polling."""
        marks = self.raw.hgetall("ready")
        return [n for n in self.procs if n.encode() in marks]

    def victim(self) -> str:
        """A random ready worker, one that has started handling if there is one."""
        counts = self.raw.hgetall("workers")
        ready = self.ready()
        handling = [n for n in ready if int(counts.get(n.encode(), 0)) > 0]
        return self.rng.choice(handling or ready)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        self.killed_at[name] = time.time()
        proc.wait(10)

    def check_workers(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker {name} exited on its own with {proc.returncode}; see {self.log}"
                )

    def stop_all(self) -> list[int | None]:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                codes.append(None)
        self.procs.clear()
        return codes

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.procs.clear()

    # -- messages ----------------------------------------------------------------

    def handled(self) -> int:
        return int(self.raw.hlen("effects"))

    def publish_more(self, handled: int) -> None:
        p = self.profile
        goal = p.messages if p.max_backlog is None else min(p.messages, handled + p.max_backlog)
        while self.published < goal:
            end = min(goal, self.published + 500)
            self._producer.publish_many("work", [{"n": n} for n in range(self.published, end)])
            self.published = end

    def wait(self, done: Callable[[int], bool], deadline: float, what: str) -> int:
        """Poll until ``done(handled)``, topping up the queue; returns ``handled``."""
        while True:
            handled = self.handled()
            self.publish_more(handled)
            if done(handled):
                return handled
            self.check_workers()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.broker.name}: timed out waiting for {what} "
                    f"({handled}/{self.profile.messages} handled, {len(self.killed_at)} kills, "
                    f"backlog {self.broker.backlog()}); see {self.log}"
                )
            time.sleep(POLL_S)

    # -- the run -----------------------------------------------------------------

    def run(self) -> ChaosResult:
        p = self.profile
        result = ChaosResult(
            self.broker.name, p.messages, 0, self.broker.lease_s, log=str(self.log)
        )
        self.raw.delete(*KEYS)
        started = time.monotonic()
        deadline = started + p.timeout_s
        lo, hi = max(1, p.messages // 50), max(2, p.messages * 95 // 100)
        targets = sorted(self.rng.sample(range(lo, hi), p.kills))
        try:
            for _ in range(p.workers):
                self.spawn()
            for i, target in enumerate(targets):
                self.wait(self.time_to_kill(target), deadline, f"kill {i + 1} of {p.kills}")
                result.kill_progress.append(self.handled())
                self.kill(self.victim())
                result.kills += 1
                self.spawn()
            last_kill = time.monotonic()
            self.wait(self.drained, deadline, "the workers to drain the queue")
            result.drain_s = time.monotonic() - last_kill
            if self.broker.backlog() is None:  # it cannot say it is empty: wait a lease
                settle = last_kill + self.broker.lease_s + SETTLE_MARGIN_S
                self.wait(lambda h: time.monotonic() >= settle, deadline, "the lease to run out")
            result.worker_exits = self.stop_all()
            result.left_pending = self.broker.leftover()
        finally:
            self.kill_all()
        result.wall_s = time.monotonic() - started
        self.count(result)
        return result

    def time_to_kill(self, target: int) -> Callable[[int], bool]:
        """Kill when ``target`` messages are handled and two workers are ready, so
        that one still polls after the kill."""
        needed = min(2, self.profile.workers)
        return lambda handled: handled >= target and len(self.ready()) >= needed

    def drained(self, handled: int) -> bool:
        return handled >= self.profile.messages and self.broker.backlog() in (0, None)

    def count(self, result: ChaosResult) -> None:
        effects = _int_hash(self.raw.hgetall("effects"))
        runs = _int_hash(self.raw.hgetall("runs"))
        published = range(self.profile.messages)
        result.handled = sum(1 for n in published if effects.get(n, 0) > 0)
        result.lost = self.profile.messages - result.handled
        result.duplicate_effects = sum(c - 1 for c in effects.values() if c > 1)
        result.runs = sum(runs.values())
        result.redeliveries = result.runs - len(runs)
        result.turned_away = int(self.raw.get("duplicates") or 0)
        result.dead_lettered = int(self.raw.llen("dead-letters"))
        delays, single = self.redelivery_delays(result)
        if delays:
            result.longest_redelivery_s = max(delays)
            result.median_redelivery_s = statistics.median(delays)
        if single:
            result.longest_single_kill_redelivery_s = max(single)

    def redelivery_delays(self, result: ChaosResult) -> tuple[list[float], list[float]]:
        """Delays of every cut run, and of those whose message no other dying
        worker received in between (a single kill in the way)."""
        starts, receives = self._events("starts"), self._events("receives")
        delays, single = [], []
        for n, runs in starts.items():
            for (at, worker), (next_at, _) in itertools.pairwise(runs):
                killed = self.killed_at.get(worker)
                if killed is None or killed < at:
                    result.reruns_without_kill += 1
                    continue
                result.cut_runs += 1
                delays.append(next_at - killed)
                if any(
                    killed < got < next_at and got < self.killed_at.get(who, 0.0) < next_at
                    for got, who in receives.get(n, [])
                ):
                    result.chained_cut_runs += 1
                else:
                    single.append(next_at - killed)
        return delays, single

    def _events(self, key: str) -> dict[str, list[tuple[float, str]]]:
        """A list of ``"<n> <worker> <epoch s>"`` as message -> [(time, worker)], sorted."""
        events: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for entry in self.raw.lrange(key, 0, -1):
            n, worker, at = (entry.decode() if isinstance(entry, bytes) else entry).split()
            events[n].append((float(at), worker))
        for runs in events.values():
            runs.sort()
        return events


KEYS = (
    "runs",
    "starts",
    "receives",
    "effects",
    "workers",
    "ready",
    "duplicates",
    "dead-letters",
    "poison-runs",
)


def _int_hash(raw: dict[Any, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def run_chaos(broker: ChaosBroker, redis_url: str, profile: Profile, workdir: Path) -> ChaosResult:
    """One chaos run on ``broker``, recording in the Redis at ``redis_url``."""
    run = ChaosRun(broker, redis_url, profile, workdir)
    try:
        return run.run()
    finally:
        run.raw.close()


# -- reporting -------------------------------------------------------------------

COLUMNS = (
    "transport", "messages", "kills", "lost", "duplicate side effects",
    "redeliveries", "longest redelivery delay", "drain time", "left pending", "lease",
)  # fmt: skip


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def table_row(r: ChaosResult) -> list[str]:
    return [
        r.transport, f"{r.messages:,}", str(r.kills), str(r.lost), str(r.duplicate_effects),
        f"{r.redeliveries:,}", _seconds(r.longest_redelivery_s), _seconds(r.drain_s),
        str(r.left_pending), _seconds(r.lease_s),
    ]  # fmt: skip


def markdown_table(results: list[ChaosResult]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c == "transport" else "---:" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in results]
    return "\n".join(lines)
