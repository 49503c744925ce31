"""``taskorbit dlq list|show|redrive|purge`` (and ``manage.py taskorbit_dlq``).

``redrive`` prints ``old → new`` per message: a redriven copy is a new message
with a new id (it carries the old one in ``taskorbit-redriven-from``), and without
the pair nobody could follow a message from the DLQ to the worker's log. Ids
given to ``redrive`` or ``purge`` that match no dead letter make the command exit
1 naming them, as ``show`` does for its one id: a typo must not look like success.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskorbit.app import Orbit
from taskorbit.cli.config import EXIT_ERROR, EXIT_OK, require_broker
from taskorbit.dlq import DeadLetter, Letters, Selection, for_transport
from taskorbit.errors import ConfigurationError

#: Reasons longer than this are shortened in the table, unless --wide.
REASON_WIDTH = 60

ACTIONS = (
    ("list", "list dead letters with reason and attempts"),
    ("show", "show one dead letter in full"),
    ("redrive", "move dead letters back to the main queue"),
    ("purge", "delete dead letters for good"),
)


def add_dlq_arguments(parser: argparse.ArgumentParser, *, app: bool = True) -> None:
    """The actions and their options (shared with ``manage.py taskorbit_dlq``, which
    passes ``app=False``: its Orbit is the project's)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in ACTIONS:
        action = actions.add_parser(name, help=text, description=text)
        if app:
            action.add_argument("app", help="module:attribute of the Orbit whose DLQ to use")
        if name == "show":
            action.add_argument("id", help="the dead letter's id, as `dlq list` shows it")
        else:
            action.add_argument("ids", nargs="*", help="only these ids")
            action.add_argument("--topic", help="only dead letters of this topic")
            action.add_argument("--reason", help="only reasons containing this text")
            action.add_argument("--limit", type=int, help="at most this many")
            action.add_argument(
                "--wide", action="store_true", help="show reasons in full in the table"
            )
        if name in ("redrive", "purge"):
            action.add_argument("--dry-run", action="store_true", help="say what, change nothing")
            action.add_argument("--all", action="store_true", help="every dead letter")
        action.add_argument("--json", action="store_true", help="one JSON object per line")


def run_dlq(app: Orbit, args: argparse.Namespace, name: str) -> int:
    """Run the action ``args`` names on the DLQ of ``app`` (``name``: how the user
    named it, for messages)."""
    require_broker(app, name, "dlq")
    dlq = for_transport(app.transport)
    if args.action == "show":
        letter = dlq.show(args.id)
        if letter is None:
            print(f"taskorbit: no dead letter with id {args.id!r}", file=sys.stderr)
            return EXIT_ERROR
        print(json.dumps(_as_dict(letter, body=True), indent=2))
        return EXIT_OK
    selection = Selection.of(args.ids, topic=args.topic, reason=args.reason)
    if args.limit is not None and args.limit <= 0:
        raise ConfigurationError(f"--limit {args.limit} is invalid: must be greater than 0")
    if args.action == "list":
        _print(dlq.list(args.limit or 100, selection), args.json, args.wide)
        return EXIT_OK
    if selection.everything and not args.all:
        raise ConfigurationError(
            f"dlq {args.action} needs ids, --topic, --reason or --all (to take every one)"
        )
    operation = dlq.redrive if args.action == "redrive" else dlq.purge
    done = operation(selection, limit=args.limit, dry_run=args.dry_run)
    if args.action == "redrive" and not args.dry_run and not args.json:
        _print_moves(done)
    else:
        _print(done, args.json, args.wide)
    verb = "redriven" if args.action == "redrive" else "purged"
    prefix = "would be " if args.dry_run else ""
    print(f"{_count(len(done), 'dead letter')} {prefix}{verb}", file=sys.stderr)
    return _report_missing(selection, done)


def _report_missing(selection: Selection, done: Letters) -> int:
    """EXIT_ERROR, naming them, when ids were asked for that nothing matched."""
    missing = sorted(selection.ids - {x.id for x in done})
    if not missing:
        return EXIT_OK
    also = " matching --topic/--reason" if selection.topic or selection.reason else ""
    ids = ", ".join(repr(x) for x in missing)
    noun = "id" if len(missing) == 1 else "ids"
    print(f"taskorbit: no dead letter{also} with {noun} {ids}", file=sys.stderr)
    return EXIT_ERROR


def _count(n: int, noun: str) -> str:
    """``1 dead letter``, ``2 dead letters``, ``0 dead letters``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _as_dict(letter: DeadLetter, *, body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": letter.id,
        "topic": letter.topic,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "dead_lettered_at": letter.when,
    }
    if letter.redriven_as is not None:
        out["redriven_as"] = letter.redriven_as
    if body:
        try:
            out["body"] = letter.message.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body_hex"] = letter.message.body.hex()
        out["attributes"] = letter.message.attributes
        out["ordering_key"] = letter.message.ordering_key
    return out


def _print(letters: Letters, as_json: bool, wide: bool = False) -> None:
    if as_json:
        for letter in letters:
            print(json.dumps(_as_dict(letter)))
        return
    print(f"{'ID':<38} {'TOPIC':<20} {'ATTEMPTS':>8}  {'DEAD-LETTERED (UTC)':<19}  REASON")
    for x in letters:
        reason = x.reason
        if not wide and len(reason) > REASON_WIDTH:
            reason = reason[: REASON_WIDTH - 3] + "..."
        print(f"{x.id:<38} {x.topic:<20} {x.attempts:>8}  {x.when:<19}  {reason}")
    if not wide and any(len(x.reason) > REASON_WIDTH for x in letters):
        print("(reasons shortened; --wide shows them in full)", file=sys.stderr)


def _print_moves(letters: Letters) -> None:
    """``old → new`` per redriven letter (``->`` where stdout cannot encode →)."""
    arrow = "→"
    try:
        arrow.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        arrow = "->"
    for x in letters:
        # A queue that does not report new ids (a third-party one) still says what moved.
        print(f"{x.id} {arrow} {x.redriven_as or '(new id not reported)'}")
