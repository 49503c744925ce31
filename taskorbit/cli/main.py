"""The ``taskorbit`` command: ``worker``, ``dlq`` and ``publish``.

Options, environment variables and exit codes are in docs/cli.md. Settings are
layered: a flag beats its ``TASKORBIT_*`` variable, which beats the app object.

Every error a user can cause ends as one line on stderr and an exit status
(:func:`reported`), never as a traceback: a traceback tells a newcomer that the
tool broke, when what broke was a setting they can fix.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from taskorbit.app import Orbit
from taskorbit.cli.config import (
    EXIT_ERROR,
    EXIT_NO_APP,
    EXIT_OK,
    EXIT_USAGE,
    WORKER_SETTINGS,
    AppLoadError,
    load_app,
    require_broker,
    resolve,
)
from taskorbit.cli.dlq import add_dlq_arguments, run_dlq
from taskorbit.errors import ConfigurationError, TaskorbitError
from taskorbit.extras import MissingExtraError

logger = logging.getLogger("taskorbit.cli")


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The worker's options (shared with ``manage.py taskorbit_worker``).

    Values stay text here: :func:`taskorbit.cli.config.resolve` parses a flag with
    the same function as its variable, so both fail with the same sentence."""
    for setting in WORKER_SETTINGS:
        text = f"{setting.help} [{setting.env}]"
        if setting.const is None:
            parser.add_argument(setting.flag, metavar=setting.metavar, help=text)
        else:
            # A switch takes no value (so `--fail-fast app:tasks` cannot swallow the
            # app), and has a --no- form to turn off what the environment turned on.
            dest = setting.name
            parser.add_argument(
                setting.flag, dest=dest, action="store_const", const="true", help=text
            )
            negative = "--no-" + setting.flag[2:]
            parser.add_argument(
                negative, dest=dest, action="store_const", const="false", help=argparse.SUPPRESS
            )


def add_publish_arguments(parser: argparse.ArgumentParser, *, app: bool = True) -> None:
    """``publish``'s arguments (shared with ``manage.py taskorbit_publish``)."""
    if app:
        parser.add_argument("app", help="module:attribute of the Orbit to publish through")
    parser.add_argument("topic")
    parser.add_argument("payload", help="the payload as JSON")
    parser.add_argument("--countdown", help="run no sooner than in S seconds", metavar="S")
    parser.add_argument("--idempotency-key")
    parser.add_argument("--ordering-key")
    parser.add_argument(
        "--attribute", action="append", default=[], metavar="K=V", help="repeatable"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskorbit", description="Run taskorbit workers and manage their queues."
    )
    parser.add_argument("--version", action="version", version=f"taskorbit {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the handlers of module:app")
    worker.add_argument("app", help="the Orbit to run, as module:attribute (e.g. tasks:app)")
    add_worker_options(worker)

    dlq = commands.add_parser("dlq", help="inspect and redrive the dead-letter queue")
    add_dlq_arguments(dlq)

    publish = commands.add_parser("publish", help="publish one message")
    add_publish_arguments(publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return reported(lambda: _run(args))


def reported(command: Callable[[], int]) -> int:
    """Run ``command``; turn the errors a user can cause into one line on stderr
    and the exit status docs/cli.md gives them."""
    try:
        return command()
    except (AppLoadError, MissingExtraError) as e:
        print(f"taskorbit: {e}", file=sys.stderr)
        return EXIT_NO_APP
    except ConfigurationError as e:
        print(f"taskorbit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TaskorbitError as e:
        print(f"taskorbit: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    if args.command == "worker":
        return _worker(args)
    app = load_app(args.app)
    if args.command == "publish":
        return run_publish(app, args, args.app)
    return run_dlq(app, args, args.app)


def _worker(args: argparse.Namespace) -> int:
    from taskorbit.cli.worker import configure_logging, run_worker

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "app")}
    settings = worker_settings(flags, configure_logging)
    app = load_app(args.app)
    return run_worker(args.app, app, settings)


def worker_settings(
    flags: Mapping[str, Any], configure_logging: Callable[[str], None]
) -> dict[str, Any]:
    """Resolve the worker's settings, set up logging, and log what was adjusted
    (a buffer size rounded up to a power of two) once, in this process only."""
    notes: list[str] = []
    settings = resolve(flags, os.environ, notes)
    configure_logging(str(settings.get("log_level", "INFO")))
    for note in notes:
        logger.info("%s", note)
    return settings


def run_publish(app: Orbit, args: argparse.Namespace, name: str) -> int:
    """``publish``: check what can be checked here, publish, print the message id."""
    require_broker(app, name, "publish")
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"payload is not valid JSON: {e}") from None
    countdown = None
    if args.countdown is not None:
        countdown = _countdown(args.countdown)
    attributes = {}
    for pair in args.attribute:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--attribute takes K=V, got {pair!r}")
        attributes[key] = value
    warn_unknown_topic(app, args.topic, name)
    message_id = app.publish(
        args.topic,
        payload,
        countdown=countdown,
        idempotency_key=args.idempotency_key,
        ordering_key=args.ordering_key,
        attributes=attributes or None,
    )
    print(message_id)
    return EXIT_OK


def _countdown(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigurationError(f"--countdown {text} is invalid: must be >= 0 seconds")
    return value


def warn_unknown_topic(app: Orbit, topic: str, name: str) -> None:
    """Warn on stderr when ``topic`` has no handler in ``app``, naming the closest
    registered topics. Only a warning: another service may handle the topic."""
    if not topic or topic in app.tasks:
        return
    close = difflib.get_close_matches(topic, list(app.tasks), n=3, cutoff=0.6)
    if close:
        guess = "; did you mean " + " or ".join(repr(t) for t in close) + "?"
    elif app.tasks:
        guess = f" (its topics: {', '.join(sorted(app.tasks))})."
    else:
        guess = " (it registers no handlers)."
    print(
        f"taskorbit: topic {topic!r} has no handler in {name}{guess} Publishing it anyway, "
        "in case another service handles it.",
        file=sys.stderr,
    )


def _version() -> str:
    try:
        return metadata.version("taskorbit")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
