"""ctidiff: compare two sessions by meaning, message by message and field by field.

Reading (sessions.py), pairing (pairing.py, on align.py and compare.py) and
showing (view.py) are each their own module; this one is the command.
Exit status as diff's: 0 equal, 1 different, 2 trouble.
"""
from __future__ import annotations

import argparse
import os
import sys

from ctipipe.core import cli
from ctipipe.diff import compare
from ctipipe.diff import pairing
from ctipipe.diff import sessions
from ctipipe.diff.view import Report

PROG = "ctidiff"

EXAMPLE = """\
ctidiff before.jsonl after.jsonl
ctidiff old.jsonl new.jsonl --from server --ignore config.lastcall --ignore tid
ctidiff capture.jsonl capture.jsonl --conn 1:2 --json | jq .
ctidiff old/cti-server new/cti-server          # two files saved by the classic ctisave
"""


def _sessions(text: str) -> tuple[int | None, int | None]:
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(parts) not in (1, 2) or len(numbers) != len(parts) or min(numbers) < 0:
        raise argparse.ArgumentTypeError(f"not a session number N or pair N:M: {text!r}")
    return (numbers[0], numbers[-1])


def _field(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeError:  # bytes that are not text on the command line
        raise argparse.ArgumentTypeError(f"not a field: {text!r} (not UTF-8)") from None
    if not text or any(not part for part in text.split(".")):
        raise argparse.ArgumentTypeError(
            f"not a field: {text!r} (a key such as timenow, or a dotted path such as config.lastcall)")
    return text


def run(args, color: bool, outcome: dict) -> int:
    """Compare and print; 0 equal, 1 different. Errors are raised as CommandError.
    outcome["different"] is set once differences are found, before they are written."""
    fields = list(args.ignore) + ([] if args.all_fields else list(compare.VOLATILE))
    ignore = compare.Ignore(fields, () if args.all_fields else compare.VOLATILE_SUFFIXES)
    conn_a, conn_b = args.conn if args.conn else (None, None)
    sides = (args.side,) if args.side else sessions.SIDES
    kinds: dict[tuple, int] = {}
    a = sessions.load(args.a, conn_a, sides, ignore, kinds)
    b = sessions.load(args.b, conn_b, sides, ignore, kinds)
    try:
        return _compare(args, color, outcome, a, b, sides, ignore, kinds)
    finally:
        a.close()
        b.close()


def _compare(args, color, outcome, a, b, sides, ignore, kinds) -> int:
    for capture in (a, b):
        capture.kinds_by_number = list(kinds)
        for warning in capture.warnings:
            cli.report(PROG, warning)
    if a.tagged and b.tagged:
        pairs = {side: (side, side) for side in sides}
    elif not a.tagged and not b.tagged:
        pairs = {args.side or "messages": ("file", "file")}
    elif not args.side:
        classic, other = (a, b) if not a.tagged else (b, a)
        raise cli.CommandError(f"{classic.path} is one side saved by ctisave, {other.path} a tagged "
                               f"stream: say which side of it to compare with --from client|server")
    else:
        pairs = {args.side: (args.side if a.tagged else "file", args.side if b.tagged else "file")}
    items: list[pairing.Item] = []
    counts: dict[str, pairing.Counts] = {}
    for label, (side_a, side_b) in pairs.items():
        found, counts[label] = pairing.compare_side(a, b, side_a, side_b, ignore, label)
        items += found
    if not items:
        return cli.Exit.OK
    outcome["different"] = True
    items.sort(key=lambda item: item.order)
    report = Report(a, b, args.full, color)
    lines = (report.json if args.json else report.human)(items, pairs, counts)
    out = sys.stdout.buffer
    for start in range(0, len(lines), 1000):
        out.write(("\n".join(lines[start:start + 1000]) + "\n").encode("utf-8", "backslashreplace"))
    out.flush()
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Compare two saved sessions message by message, ignoring the fields "
                        "that differ every time (timenow, commandid, replyid, sessionid, ts, and "
                        "every key ending in _since, such as status.availability_since). "
                        "Exit status: 0 equal, 1 different, 2 trouble.", EXAMPLE)
    parser.add_argument("a", metavar="A", help="a tagged stream (.jsonl) or a file saved by ctisave; - is standard input")
    parser.add_argument("b", metavar="B", help="the same, to compare with A")
    parser.add_argument("--conn", type=_sessions, metavar="N[:M]",
                        help="session N of both files, or N of A and M of B (default: the first of each)")
    parser.add_argument("--from", dest="side", choices=sessions.SIDES,
                        help="compare only what this side sent")
    parser.add_argument("--ignore", type=_field, action="append", default=[], metavar="FIELD",
                        help="also ignore this field: a key (at any depth) or a dotted path; repeatable")
    parser.add_argument("--all-fields", action="store_true",
                        help="do not ignore the volatile fields, *_since included (--ignore still applies)")
    parser.add_argument("--json", action="store_true", help="one JSON object per difference")
    parser.add_argument("--full", action="store_true",
                        help="show whole messages and values, and every changed field")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours (default: when writing to a terminal, unless NO_COLOR is set)")
    args = parser.parse_args(argv)
    if args.a == args.b == "-":
        parser.error("A and B cannot both be standard input (-)")
    color = not args.json and (args.color == "always" or (
        args.color == "auto" and os.isatty(1) and os.environ.get("NO_COLOR") is None))
    outcome: dict = {}

    def body() -> int:
        outcome["status"] = run(args, color, outcome)
        return outcome["status"]

    status = cli.guarded(PROG, body, debug=args.debug)
    if "status" in outcome:
        return status
    # Stopped early (an error, Ctrl-C, a closed pipe): "different" if that was
    # known, else trouble, as diff says it; never 0, which would mean "equal".
    return 1 if outcome.get("different") else 2
