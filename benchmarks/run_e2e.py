"""Run the end-to-end benchmarks side by side and write benchmarks/results/*.json.

    python benchmarks/run_e2e.py --suite redis|memory|all --repeat 3 [--quick]

Every system runs in a fresh Python process with the same CLI (``--url --messages
--concurrency --handler``) and prints one JSON line. Repeats are interleaved (all
systems of a scenario, then the next scenario, then the next repeat, each repeat
in a rotated order) so that drift of a shared machine hits every system alike; the
summary takes each system's median.

The Redis suite starts one private redis-server (never the shared one on 6379) and
FLUSHALLs it before every run, so no system inherits another's keys or backlog.
taskorbit's row is included when benchmarks/e2e_redis_taskorbit.py exists.

``--quick`` divides message counts by 10 (results go to ``*-quick.json``) to check
the wiring in a minute; ``python benchmarks/plot.py`` then draws docs/img/*.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so that ``python benchmarks/run_e2e.py`` finds our modules

from benchmarks import _redis_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PEERS = ROOT / "benchmarks" / "peers"
TASKORBIT_REDIS = ROOT / "benchmarks" / "e2e_redis_taskorbit.py"
MEMORY = ROOT / "benchmarks" / "e2e_memory.py"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    handler: str
    messages: int
    concurrency: int
    #: concurrency / handler time, for handlers that sleep; None for no-op ones.
    ideal_msg_per_s: float | None = None


REDIS_SCENARIOS = [
    Scenario("a-noop", "(a) no-op handler, 20,000 messages, concurrency 8", "noop", 20_000, 8),
    Scenario(
        "b-sleep10ms",
        "(b) 10 ms handler, 6,400 messages, concurrency 64",
        "sleep10ms",
        6_400,
        64,
        6_400.0,
    ),
]
MEMORY_SCENARIOS = [
    Scenario("a-noop", "(a) no-op handler, 200,000 messages, concurrency 64", "noop", 200_000, 64),
    Scenario(
        "b-sleep10ms",
        "(b) 10 ms handler, 6,400 messages, concurrency 64",
        "sleep10ms",
        6_400,
        64,
        6_400.0,
    ),
]

#: system name → the command that runs it (before the shared flags).
REDIS_SYSTEMS: dict[str, list[str]] = {
    "taskorbit": [str(TASKORBIT_REDIS)],
    "bare-loop": [str(PEERS / "bare_loop.py")],
    "dramatiq": [str(PEERS / "dramatiq_peer.py")],
    "huey": [str(PEERS / "huey_peer.py")],
    "celery": [str(PEERS / "celery_peer.py")],
    # RQ's default Worker forks a process per job (about 30 ms of CPU each here);
    # SimpleWorker runs jobs in the long-lived worker process, as the others do.
    "rq": [str(PEERS / "rq_peer.py"), "--worker-class", "rq.worker.SimpleWorker"],
}
#: Measured only when named with --systems: far too slow for the full counts.
OPTIONAL_REDIS_SYSTEMS: dict[str, list[str]] = {
    "rq-fork": [str(PEERS / "rq_peer.py"), "--worker-class", "rq.worker.Worker"],
}
MEMORY_SYSTEMS: dict[str, list[str]] = {
    "taskorbit": [str(MEMORY), "--system", "taskorbit"],
    "taskorbit-many": [str(MEMORY), "--system", "taskorbit-many"],
    "threadpool": [str(MEMORY), "--system", "threadpool"],
}


def run_one(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark process; its last JSON line, or an ``error`` record."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    tail = (stderr or stdout)[-1500:]
    return {"error": f"exit status {proc.returncode}: {tail}"}


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """Kill a benchmark process and everything it started: its worker runs in a
    session of its own, so killing the benchmark alone would leave it running."""
    import psutil  # type: ignore[import-untyped]

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    proc.kill()
    proc.communicate()


def scaled(scenario: Scenario, quick: bool) -> Scenario:
    if not quick:
        return scenario
    messages = max(scenario.concurrency * 10, scenario.messages // 10)
    return Scenario(**{**asdict(scenario), "messages": messages})


def rotated(names: list[str], by: int) -> list[str]:
    by %= len(names)
    return names[by:] + names[:by]


def flush(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushall()


def run_suite(
    suite: str,
    scenarios: list[Scenario],
    systems: dict[str, list[str]],
    repeat: int,
    timeout: float,
    url: str | None,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    names = list(systems)
    for rep in range(repeat):
        for scenario in scenarios:
            for name in rotated(names, rep):
                argv = [
                    *systems[name],
                    "--messages", str(scenario.messages),
                    "--concurrency", str(scenario.concurrency),
                    "--handler", scenario.handler,
                ]  # fmt: skip
                if url is not None:
                    flush(url)
                    argv += ["--url", url]
                load = round(os.getloadavg()[0], 2)  # other users of the machine show here
                started = time.monotonic()
                result = run_one(argv, timeout)
                wall = time.monotonic() - started
                # The harness's name wins: the rq row runs a script that calls itself
                # "rq-simple", and rows must match the systems list.
                result["reported_as"] = result.pop("system", name)
                runs.append(
                    {
                        **result,
                        "scenario": scenario.name,
                        "system": name,
                        "repeat": rep,
                        "loadavg_1m": load,
                    }
                )
                shown = (
                    f"{result['msg_per_s']} msg/s"
                    if "msg_per_s" in result
                    else f"error: {str(result.get('error'))[:200]}"
                )
                print(
                    f"[{suite}] repeat {rep + 1}/{repeat} {scenario.name:12} {name:15} "
                    f"{shown}  ({wall:.1f} s wall, load {load})",
                    flush=True,
                )
    return runs


def summarize(
    scenarios: list[Scenario], systems: list[str], runs: list[dict[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        rows: dict[str, dict[str, Any]] = {}
        for system in systems:
            ok = [r for r in runs if r["scenario"] == scenario.name and r["system"] == system]
            rates = [r["msg_per_s"] for r in ok if "msg_per_s" in r]
            if not rates:
                errors = [r.get("error", "") for r in ok]
                rows[system] = {"error": errors[0] if errors else "not run"}
                continue
            median = statistics.median(rates)
            row: dict[str, Any] = {
                "median_msg_per_s": round(median, 1),
                "median_seconds": round(
                    statistics.median(r["seconds"] for r in ok if "seconds" in r), 4
                ),
                "runs_msg_per_s": rates,
                "failed_runs": len(ok) - len(rates),
            }
            published = [
                r["messages"] / r["publish_seconds"] for r in ok if r.get("publish_seconds")
            ]
            if published:
                row["median_publish_msg_per_s"] = round(statistics.median(published), 1)
            cpu = [r["cpu_us_per_msg"] for r in ok if "cpu_us_per_msg" in r]
            if cpu:
                row["median_cpu_us_per_msg"] = {
                    part: round(statistics.median(c[part] for c in cpu), 1) for part in cpu[0]
                }
            if scenario.ideal_msg_per_s:
                row["pct_of_ideal"] = round(100 * median / scenario.ideal_msg_per_s, 1)
            rows[system] = row
        summary[scenario.name] = rows
    return summary


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("celery", "kombu", "dramatiq", "rq", "huey", "redis", "msgspec", "taskorbit"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    if "taskorbit" not in found:
        try:
            import taskorbit

            found["taskorbit"] = f"{taskorbit.__version__} (source tree)"
        except Exception as e:  # the runtime may not import yet; say so in the results
            found["taskorbit"] = f"not importable: {e}"
    return found


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write(suite: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{suite}-{args.tag}" if args.tag else suite
    path = RESULTS / f"{name}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def print_table(suite: str, scenarios: list[Scenario], summary: dict[str, Any]) -> None:
    for scenario in scenarios:
        print(f"\n{suite} {scenario.title}")
        rows = summary[scenario.name]
        ranked = sorted(rows, key=lambda s: -rows[s].get("median_msg_per_s", -1))
        for system in ranked:
            row = rows[system]
            if "error" in row:
                print(f"  {system:15} error: {row['error'][:200]}")
                continue
            pct = f"  {row['pct_of_ideal']:5.1f} % of ideal" if "pct_of_ideal" in row else ""
            print(f"  {system:15} {row['median_msg_per_s']:>10,.0f} msg/s{pct}")


def bench(suite: str, args: argparse.Namespace) -> None:
    scenarios = [
        scaled(s, args.quick) for s in (REDIS_SCENARIOS if suite == "redis" else MEMORY_SCENARIOS)
    ]
    if suite == "redis":
        available = {**REDIS_SYSTEMS, **OPTIONAL_REDIS_SYSTEMS}
        systems = {
            n: a for n, a in REDIS_SYSTEMS.items() if n != "taskorbit" or TASKORBIT_REDIS.exists()
        }
    else:
        available = dict(MEMORY_SYSTEMS)
        systems = dict(MEMORY_SYSTEMS)
    if args.systems:
        # One --systems list may name systems of both suites; each takes its own.
        systems = {n: available[n] for n in args.systems if n in available}
        if not systems:
            print(f"[{suite}] none of {args.systems} is a {suite} system; skipped", flush=True)
            return
    started = dt.datetime.now(dt.timezone.utc)
    payload: dict[str, Any] = {
        "suite": suite,
        "started": started.isoformat(timespec="seconds"),
        "repeat": args.repeat,
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "scenarios": [asdict(s) for s in scenarios],
        "systems": list(systems),
    }
    if suite == "redis":
        payload["versions"]["redis-server"] = _redis_server.version()
        with _redis_server.private_redis() as url:
            runs = run_suite(suite, scenarios, systems, args.repeat, args.timeout, url)
    else:
        runs = run_suite(suite, scenarios, systems, args.repeat, args.timeout, None)
        if not args.no_rss and (not args.systems or "taskorbit" in args.systems):
            rss_messages = 100_000 if args.quick else 1_000_000
            print(
                f"[memory] RSS run: {rss_messages:,} messages through a 4,096-slot ring", flush=True
            )
            payload["rss"] = run_one(
                [str(MEMORY), "--rss", "--messages", str(rss_messages)], args.timeout
            )
    payload["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    payload["seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    payload["runs"] = runs
    payload["summary"] = summarize(scenarios, list(systems), runs)
    path = write(suite, args, payload)
    print_table(suite, scenarios, payload["summary"])
    if "rss" in payload:
        rss = payload["rss"]
        if "error" in rss:
            print(f"\nRSS run error: {rss['error'][:300]}")
        else:
            print(
                f"\nRSS over {rss['messages']:,} messages: start {rss['rss_start_mib']} MiB, "
                f"peak {rss['rss_peak_mib']} MiB, end {rss['rss_end_mib']} MiB"
            )
    print(f"\nwrote {path.relative_to(ROOT)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["redis", "memory", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one tenth of the messages")
    parser.add_argument("--systems", nargs="+", help="only these systems (default: all)")
    parser.add_argument("--timeout", type=float, default=420.0, help="per run, in seconds")
    parser.add_argument(
        "--tag", help="write results/<suite>-<tag>.json, leaving the plotted files alone"
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the 1,000,000-message RSS run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for suite in ("memory", "redis") if args.suite == "all" else (args.suite,):
        bench(suite, args)


if __name__ == "__main__":
    main()
