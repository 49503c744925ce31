"""``taskorbit dlq list|show|redrive|purge``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskorbit.app import Orbit
from taskorbit.cli.config import EXIT_ERROR, EXIT_OK
from taskorbit.dlq import DeadLetter, Selection, for_transport
from taskorbit.errors import ConfigurationError


def run_dlq(app: Orbit, args: argparse.Namespace) -> int:
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
        raise ConfigurationError("--limit must be greater than 0")
    if args.action == "list":
        _print(dlq.list(args.limit or 100, selection), args.json)
        return EXIT_OK
    if selection.everything and not args.all:
        raise ConfigurationError(
            f"dlq {args.action} needs ids, --topic, --reason or --all (to take every one)"
        )
    operation = dlq.redrive if args.action == "redrive" else dlq.purge
    done = operation(selection, limit=args.limit, dry_run=args.dry_run)
    _print(done, args.json)
    verb = "redriven" if args.action == "redrive" else "purged"
    prefix = "would be " if args.dry_run else ""
    print(f"{len(done)} dead letters {prefix}{verb}", file=sys.stderr)
    return EXIT_OK


def _as_dict(letter: DeadLetter, *, body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": letter.id,
        "topic": letter.topic,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "dead_lettered_at": letter.when,
    }
    if body:
        try:
            out["body"] = letter.message.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body_hex"] = letter.message.body.hex()
        out["attributes"] = letter.message.attributes
        out["ordering_key"] = letter.message.ordering_key
    return out


def _print(letters: list[DeadLetter], as_json: bool) -> None:
    if as_json:
        for letter in letters:
            print(json.dumps(_as_dict(letter)))
        return
    print(f"{'ID':<38} {'TOPIC':<20} {'ATTEMPTS':>8}  {'DEAD-LETTERED (UTC)':<19}  REASON")
    for x in letters:
        reason = x.reason if len(x.reason) <= 60 else x.reason[:57] + "..."
        print(f"{x.id:<38} {x.topic:<20} {x.attempts:>8}  {x.when:<19}  {reason}")
