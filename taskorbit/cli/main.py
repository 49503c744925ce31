"""The ``taskorbit`` command: ``worker``, ``dlq`` and ``publish``.

Options, environment variables and exit codes are in docs/cli.md. Settings are
layered: a flag beats its ``TASKORBIT_*`` variable, which beats the app object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from taskorbit.cli.config import (
    EXIT_ERROR,
    EXIT_NO_APP,
    EXIT_OK,
    EXIT_USAGE,
    AppLoadError,
    load_app,
    resolve,
)
from taskorbit.errors import ConfigurationError, TaskorbitError
from taskorbit.worker.ring import Overflow


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The worker's options (shared with ``manage.py taskorbit_worker``)."""
    parser.add_argument("--concurrency", type=int, help="handlers running at once")
    parser.add_argument("--buffer-size", type=int, help="slots in the local ring buffer")
    parser.add_argument("--overflow", choices=[o.value for o in Overflow], help="ring policy")
    parser.add_argument("--processes", type=int, help="worker processes (default 1)")
    parser.add_argument("--shutdown-timeout", type=float, help="seconds to drain on SIGTERM")
    parser.add_argument(
        "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--health-file", help="liveness file touched while consuming")
    parser.add_argument("--health-interval", type=float, help="seconds between touches (5)")
    parser.add_argument(
        "--status",
        choices=["auto", "line", "log", "off"],
        help="live line on a terminal, log lines otherwise (auto)",
    )
    parser.add_argument("--status-interval", type=float, help="seconds between status reports")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskorbit", description="Run taskorbit workers and manage their queues."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the handlers of module:app")
    worker.add_argument("app", help="the Orbit to run, as module:attribute (e.g. tasks:app)")
    add_worker_options(worker)

    dlq = commands.add_parser("dlq", help="inspect and redrive the dead-letter queue")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("list", "list dead letters with reason and attempts"),
        ("show", "show one dead letter in full"),
        ("redrive", "move dead letters back to the main queue"),
        ("purge", "delete dead letters for good"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("app", help="module:attribute of the Orbit whose DLQ to use")
        if name == "show":
            action.add_argument("id", help="the dead letter's id, as `dlq list` shows it")
        else:
            action.add_argument("ids", nargs="*", help="only these ids")
            action.add_argument("--topic", help="only dead letters of this topic")
            action.add_argument("--reason", help="only reasons containing this text")
            action.add_argument("--limit", type=int, help="at most this many")
        if name in ("redrive", "purge"):
            action.add_argument("--dry-run", action="store_true", help="say what, change nothing")
            action.add_argument("--all", action="store_true", help="every dead letter")
        action.add_argument("--json", action="store_true", help="one JSON object per line")

    publish = commands.add_parser("publish", help="publish one message")
    publish.add_argument("app", help="module:attribute of the Orbit to publish through")
    publish.add_argument("topic")
    publish.add_argument("payload", help="the payload as JSON")
    publish.add_argument("--countdown", type=float, help="run no sooner than in S seconds")
    publish.add_argument("--idempotency-key")
    publish.add_argument("--ordering-key")
    publish.add_argument(
        "--attribute", action="append", default=[], metavar="K=V", help="repeatable"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "worker":
            return _worker(args)
        app = load_app(args.app)
        if args.command == "publish":
            return _publish(app, args)
        from taskorbit.cli.dlq import run_dlq

        return run_dlq(app, args)
    except AppLoadError as e:
        print(f"taskorbit: {e}", file=sys.stderr)
        return EXIT_NO_APP
    except ConfigurationError as e:
        print(f"taskorbit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TaskorbitError as e:
        print(f"taskorbit: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


def _worker(args: argparse.Namespace) -> int:
    from taskorbit.cli.worker import configure_logging, run_worker

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "app")}
    settings = resolve(flags, os.environ)
    configure_logging(settings.get("log_level", "INFO"))
    app = load_app(args.app)
    return run_worker(args.app, app, settings)


def _publish(app: Any, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"payload is not valid JSON: {e}") from None
    attributes = {}
    for pair in args.attribute:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--attribute takes K=V, got {pair!r}")
        attributes[key] = value
    message_id = app.publish(
        args.topic,
        payload,
        countdown=args.countdown,
        idempotency_key=args.idempotency_key,
        ordering_key=args.ordering_key,
        attributes=attributes or None,
    )
    print(message_id)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
