"""ctidiff: compare two sessions by meaning, message by message and field by field.

Per side, the two message sequences are aligned (align.py): first the messages
equal after the ignored fields are removed, then, in the gaps between them,
messages of the same kind (compare.signature) are paired as changed; what is
left is only in A or only in B. Changed pairs are compared field by field
(compare.py). Exit status as diff's: 0 equal, 1 different, 2 trouble.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass

import orjson

from . import align, cli, compare, sessions

PROG = "ctidiff"

EXAMPLE = """\
ctidiff before.jsonl after.jsonl
ctidiff old.jsonl new.jsonl --from server --ignore config.lastcall --ignore tid
ctidiff capture.jsonl capture.jsonl --conn 1:2 --json | jq .
ctidiff old/cti-server new/cti-server          # two files saved by the classic ctisave
"""

# A value or message longer than this is cut in the human view (--full shows
# it all): enough for a typical status update, short of a getlist answer.
WIDTH = 160
# Changed fields shown per message in the human view (--full shows all): a
# reply whose every item changed should not bury the rest.
MAX_CHANGES = 40

EQUAL, CHANGED, ONLY_A, ONLY_B = "equal", "changed", "only_a", "only_b"

_COLORS = {"head": "\x1b[36m", "-": "\x1b[31m", "+": "\x1b[32m", "file": "\x1b[1m",
           "summary": "\x1b[1m"}
_RESET = "\x1b[0m"

# What must not reach a terminal from the wire: C0 and C1 controls, DEL, and
# the Unicode bidirectional controls that can make a line read as another.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(text: str) -> str:
    """Wire text made harmless for a terminal; in JSON text the result is still valid JSON."""
    return _UNSAFE.sub(lambda m: "\\u%04x" % ord(m.group()), text)


@dataclass
class Item:
    """One difference between the sessions."""
    side: str
    kind: str
    a: int | None  # position among the side's messages in A (from 0)
    b: int | None
    order: tuple  # where it comes in the sessions (by line in A, see compare_side)
    changes: list | None = None  # compare.differences' tuples, for CHANGED
    moved: int | None = None  # an unpaired message equal to one unpaired on the other side


@dataclass
class Counts:
    equal: int = 0
    changed: int = 0
    only_a: int = 0
    only_b: int = 0


def compare_side(a: sessions.Capture, b: sessions.Capture, side_a: str, side_b: str,
                 ignore: compare.Ignore, label: str) -> tuple[list[Item], Counts]:
    """The differences of one side, in order, and the counts for the summary.

    Each difference is ordered by its line in A; a message only in B comes
    right after the line in A of the message before it, so that both sides'
    differences can be shown together in the order they happened.
    """
    ma, mb = a.sides[side_a], b.sides[side_b]
    na, nb = len(ma.keys), len(mb.keys)
    items: list[Item] = []
    counts = Counts()
    i = j = 0
    equal = align.join_gaps(align.common_pairs(ma.keys, mb.keys), ma.keys, mb.keys)
    for next_i, next_j in equal + [(na, nb)]:
        if i < next_i or j < next_j:
            # A gap: messages of the same kind are paired, the rest is on one side only.
            paired = align.common_pairs(ma.signatures[i:next_i], mb.signatures[j:next_j])
            for gi, gj in [(i + p, j + q) for p, q in paired] + [(next_i, next_j)]:
                while i < gi:
                    items.append(Item(label, ONLY_A, i, None, (ma.lines[i], 0, 0)))
                    counts.only_a += 1
                    i += 1
                while j < gj:
                    after = ma.lines[i - 1] if i else 0
                    items.append(Item(label, ONLY_B, None, j, (after, 1, mb.lines[j])))
                    counts.only_b += 1
                    j += 1
                if gi < next_i:
                    item = _pair(a, b, side_a, side_b, i, j, ignore, label)
                    if item is None:
                        counts.equal += 1
                    else:
                        items.append(item)
                        counts.changed += 1
                    i += 1
                    j += 1
        if next_i < na:
            counts.equal += 1
        i, j = next_i + 1, next_j + 1
    _find_moves(items, ma, mb)
    return items, counts


def _find_moves(items: list[Item], ma: sessions.Messages, mb: sessions.Messages) -> None:
    """Mark a message only in A that is also only in B, elsewhere: it moved."""
    only_b: dict[int, list[Item]] = {}
    for item in items:
        if item.kind == ONLY_B:
            only_b.setdefault(mb.keys[item.b], []).append(item)
    if not only_b:
        return
    for item in items:
        if item.kind == ONLY_A and only_b.get(ma.keys[item.a]):
            other = only_b[ma.keys[item.a]].pop(0)
            item.moved, other.moved = other.b, item.a


def _pair(a, b, side_a, side_b, i, j, ignore, label) -> Item | None:
    """The changes between two messages of the same kind (None: equal after all)."""
    raw_a, old = a.value(side_a, i)
    raw_b, new = b.value(side_b, j)
    if raw_a or raw_b:
        changes = [] if (raw_a, old) == (raw_b, new) else [((), (), old, new)]
    else:
        changes = list(compare.differences(ignore.strip(old), ignore.strip(new)))
    if not changes:
        return None
    line_a, line_b = a.sides[side_a].lines[i], b.sides[side_b].lines[j]
    return Item(label, CHANGED, i, j, (line_a, 0, line_b), changes)


# --- showing the differences --------------------------------------------------

def _kind_text(capture: sessions.Capture, side: str, n: int) -> str:
    return compare.signature_text(capture.kinds_by_number[capture.sides[side].signatures[n]])


def _value_text(value: object, full: bool) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate from a classic file
        text = orjson.dumps(str(value)).decode() if isinstance(value, str) else repr(value)
    if not full and len(text) > WIDTH:
        text = f"{text[:WIDTH]} ... ({len(text) - WIDTH} more characters)"
    return _escape(text)


class Report:
    """Both sides' differences, rendered for a person or as JSON lines."""

    def __init__(self, a: sessions.Capture, b: sessions.Capture, full: bool, color: bool) -> None:
        self.a, self.b = a, b
        self.full = full
        self.color = color

    def _paint(self, kind: str, text: str) -> str:
        return f"{_COLORS[kind]}{text}{_RESET}" if self.color else text

    def _where(self, capture: sessions.Capture, side: str, n: int) -> str:
        return f"#{n + 1} (line {capture.sides[side].lines[n]})"

    def human(self, items: list[Item], sides: dict, counts: dict) -> list[str]:
        out = [self._paint("file", f"--- {_escape(self._title(self.a))}"),
               self._paint("file", f"+++ {_escape(self._title(self.b))}")]
        for item in items:
            side_a, side_b = sides[item.side]
            if item.kind == CHANGED:
                where = (f"A {self._where(self.a, side_a, item.a)}, "
                         f"B {self._where(self.b, side_b, item.b)}")
                kind = _kind_text(self.a, side_a, item.a)
            elif item.kind == ONLY_A:
                where = f"only in A, {self._where(self.a, side_a, item.a)}"
                if item.moved is not None:
                    where += f"; moved to B {self._where(self.b, side_b, item.moved)}"
                kind = _kind_text(self.a, side_a, item.a)
            else:
                where = f"only in B, {self._where(self.b, side_b, item.b)}"
                if item.moved is not None:
                    where += f"; moved from A {self._where(self.a, side_a, item.moved)}"
                kind = _kind_text(self.b, side_b, item.b)
            out.append(self._paint("head", f"@@ {item.side} {_escape(kind)}: {where} @@"))
            if item.kind == ONLY_A:
                out.append(self._paint("-", "- " + _value_text(self.a.value(side_a, item.a)[1], self.full)))
            elif item.kind == ONLY_B:
                out.append(self._paint("+", "+ " + _value_text(self.b.value(side_b, item.b)[1], self.full)))
            else:
                shown = item.changes if self.full else item.changes[:MAX_CHANGES]
                for path_a, path_b, old, new in shown:
                    if old is not compare.MISSING:
                        out.append(self._paint("-", f"- {_path(path_a)}{_value_text(old, self.full)}"))
                    if new is not compare.MISSING:
                        out.append(self._paint("+", f"+ {_path(path_b)}{_value_text(new, self.full)}"))
                if len(item.changes) > len(shown):
                    out.append(f"  ... {len(item.changes) - len(shown)} more changed fields "
                               f"(--full shows them all)")
        for label, count in counts.items():
            out.append(self._paint("summary", f"{label}: {count.equal + count.changed} aligned "
                                              f"({count.equal} equal, {count.changed} changed), "
                                              f"{count.only_a} only in A, {count.only_b} only in B"))
        return out

    def _title(self, capture: sessions.Capture) -> str:
        if capture.tagged:
            return f"{capture.path} (session {capture.conn})"
        return f"{capture.path} (ctisave file)"

    def json(self, items: list[Item], sides: dict, counts: dict) -> list[str]:
        out = []
        for item in items:
            side_a, side_b = sides[item.side]
            entry: dict = {"side": item.side, "kind": item.kind}
            if item.a is not None:
                entry["signature"] = _kind_text(self.a, side_a, item.a)
                entry["a"] = {"index": item.a + 1, "line": self.a.sides[side_a].lines[item.a]}
            else:
                entry["signature"] = _kind_text(self.b, side_b, item.b)
            if item.b is not None:
                entry["b"] = {"index": item.b + 1, "line": self.b.sides[side_b].lines[item.b]}
            if item.moved is not None:
                other, other_side = (self.b, side_b) if item.kind == ONLY_A else (self.a, side_a)
                entry["moved"] = {"index": item.moved + 1, "line": other.sides[other_side].lines[item.moved]}
            if item.kind == CHANGED:
                entry["changes"] = [_change(*change) for change in item.changes]
            else:
                capture, side, n = (self.a, side_a, item.a) if item.kind == ONLY_A else (self.b, side_b, item.b)
                raw, value = capture.value(side, n)
                entry["raw" if raw else "message"] = value
            out.append(_json_line(entry))
        out.append(_json_line({"kind": "summary", "a": self._title(self.a), "b": self._title(self.b),
                               "sides": {label: vars(count) for label, count in counts.items()}}))
        return out


def _path(path: tuple) -> str:
    """A changed field's path and colon; nothing when the whole message changed (raw lines)."""
    return f"{_escape(compare.path_text(path))}: " if path else ""


def _change(path_a: tuple, path_b: tuple, old: object, new: object) -> dict:
    change: dict = {"path": compare.path_text(path_a if old is not compare.MISSING else path_b)}
    if path_b != path_a and old is not compare.MISSING and new is not compare.MISSING:
        change["path_b"] = compare.path_text(path_b)
    if old is not compare.MISSING:
        change["a"] = old
    if new is not compare.MISSING:
        change["b"] = new
    return change


def _json_line(value: dict) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate from a classic file
        text = json.dumps(value)
    return _escape(text)


# --- the command ----------------------------------------------------------------

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
    if not text or any(not part for part in text.split(".")):
        raise argparse.ArgumentTypeError(
            f"not a field: {text!r} (a key such as timenow, or a dotted path such as config.lastcall)")
    return text


def run(args, color: bool, outcome: dict) -> int:
    """Compare and print; 0 equal, 1 different. Errors are raised as CommandError.
    outcome["different"] is set once differences are found, before they are written."""
    fields = list(args.ignore) + ([] if args.all_fields else list(compare.VOLATILE))
    ignore = compare.Ignore(fields)
    conn_a, conn_b = args.conn if args.conn else (None, None)
    sides = (args.side,) if args.side else sessions.SIDES
    kinds: dict[tuple, int] = {}
    a = sessions.load(args.a, conn_a, sides, ignore, kinds)
    b = sessions.load(args.b, conn_b, sides, ignore, kinds)
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
    items: list[Item] = []
    counts: dict[str, Counts] = {}
    for label, (side_a, side_b) in pairs.items():
        found, counts[label] = compare_side(a, b, side_a, side_b, ignore, label)
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
                        "that differ every time (timenow, commandid, replyid, sessionid, ts). "
                        "Exit status: 0 equal, 1 different, 2 trouble.", EXAMPLE)
    parser.add_argument("a", metavar="A", help="a tagged stream (.jsonl) or a file saved by ctisave")
    parser.add_argument("b", metavar="B", help="the same, to compare with A")
    parser.add_argument("--conn", type=_sessions, metavar="N[:M]",
                        help="session N of both files, or N of A and M of B (default: the first of each)")
    parser.add_argument("--from", dest="side", choices=sessions.SIDES,
                        help="compare only what this side sent")
    parser.add_argument("--ignore", type=_field, action="append", default=[], metavar="FIELD",
                        help="also ignore this field: a key (at any depth) or a dotted path; repeatable")
    parser.add_argument("--all-fields", action="store_true",
                        help="do not ignore the volatile fields (--ignore still applies)")
    parser.add_argument("--json", action="store_true", help="one JSON object per difference")
    parser.add_argument("--full", action="store_true",
                        help="show whole messages and values, and every changed field")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours (default: when writing to a terminal, unless NO_COLOR is set)")
    args = parser.parse_args(argv)
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
