"""ctipretty: show the tagged stream to a person, as the classic ctispy did."""
from __future__ import annotations

import functools
import os
import re
import time

import orjson

from . import cli, stage, stream

PROG = "ctipretty"

EXAMPLE = """\
ctirelay xivo-new | ctistrip timenow | ctipretty
ctipretty --compact --color never < session.jsonl | less
"""

_RESET = b"\x1b[0m"
_COLORS = {
    "client": b"\x1b[1;32m",  # bold green: what the client said
    "server": b"\x1b[1;34m",  # bold blue: what the server said
    "event": b"\x1b[1;33m",  # bold yellow: session events
    "key": b"\x1b[36m",
    "string": b"\x1b[32m",
    "number": b"\x1b[35m",
    "literal": b"\x1b[33m",
}
_DIRECTION = {"client": b"Client > Server", "server": b"Server > Client"}
_NO_MESSAGE = object()
_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d[\d.eE+-]*)|\b(true|false|null)\b')


class Pretty(stage.Stage):
    """Renders a whole batch at once: messages are laid out by orjson with an
    indent of 2 and widened to 4 over the whole batch (stream.widen).

    When the batch's input holds no double space, widening is one pass that
    doubles every pair of spaces, so headers are written with two spaces and
    come out with four. Otherwise the exact widening runs, and so that it
    touches only JSON, header lines start with a \x00 that becomes their four
    spaces afterwards and raw text lines with a \x01 that is removed (raw text
    has its control characters escaped, so neither byte comes from the traffic).
    """

    def __init__(self, compact: bool, color: bool) -> None:
        self.compact = compact
        self.format = functools.partial(orjson.dumps, option=orjson.OPT_SORT_KEYS if compact
                                        else orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        self.color = color
        self.parts: list[bytes] = []
        self.exact = not compact  # this batch needs the exact (slower) widening
        self.indent = b"\x00"  # what starts a header line in this batch
        self._second = None
        self._clock = b""

    def _time(self, ts: object) -> bytes:
        """Local time with microseconds; localtime() only once per second."""
        if not isinstance(ts, (int, float)):
            return b"??:??:??.??????"
        second = int(ts)
        if second != self._second:
            self._second = second
            self._clock = time.strftime("%H:%M:%S", time.localtime(second)).encode()
        return b"%s.%06d" % (self._clock, int((ts - second) * 1e6 + 0.5) % 1000000)

    def begin_batch(self, block: bytes) -> None:
        self.exact = not self.compact and stream.may_hold_double_space(block)
        self.indent = b"\x00" if self.exact else b"    " if self.compact else b"  "

    def handle(self, record: dict, line: bytes) -> None:
        side = record.get("from")
        if side is None:
            self.parts.append(self._event(record) if "event" in record
                              else self._paint("event", b"--- " + line))
            return None
        # The header, "\x00HH:MM:SS.ffffff Client > Server" (see the class docstring).
        ts = record.get("ts")
        if type(ts) is float:
            second = int(ts)
            if second != self._second:
                self._time(ts)
            header = b"%s%s.%06d %s" % (self.indent, self._clock,
                                        int((ts - second) * 1e6 + 0.5) % 1000000,
                                        _DIRECTION.get(side) or f"{side} >".encode())
        else:
            header = b"%s%s %s" % (self.indent, self._time(ts),
                                   _DIRECTION.get(side) or f"{side} >".encode())
        conn = record.get("conn")
        if conn != 1:
            header += f" [session {conn}]".encode()
        message = record.get("msg", _NO_MESSAGE)
        if message is not _NO_MESSAGE:
            body = self.format(message)
            if self.color:
                body = _TOKEN.sub(_paint_token, body)
                header = self._paint(side, header)
            self.parts += (header, body)
            return None
        notes = [name for name in ("partial", "oversize") if record.get(name)]
        if "raw_b64" in record:
            notes.append("not UTF-8, shown as base64")
            body = str(record["raw_b64"]).encode()
        else:
            raw = stream.content_bytes(record) or b""
            body = _CONTROL.sub(_escape, raw[:-1] if raw.endswith(b"\n") else raw)
        header += (" (%s)" % ", ".join(["not JSON", *notes])).encode()
        if self.exact:
            body = b"\x01" + body.replace(b"\n", b"\n\x01")
        self.parts += (self._paint(side, header), body)
        return None

    def _event(self, record: dict) -> bytes:
        event = record["event"]
        when = self._time(record.get("ts")).decode()
        who = f"session {record['conn']}" if "conn" in record else "relay"
        if event == "open":
            text = f"{who} opened: {record.get('client')} > {record.get('server')}"
        elif event == "close":
            sent, reads = record.get("bytes"), record.get("reads")
            sent = sent if isinstance(sent, dict) else {}
            reads = reads if isinstance(reads, dict) else {}
            text = (f"{who} closed by {record.get('by')} after {_seconds(record.get('duration'))}: "
                    f"client sent {sent.get('client')} bytes in {reads.get('client')} reads, "
                    f"server sent {sent.get('server')} bytes in {reads.get('server')} reads")
            if record.get("error"):
                text += f" ({record['error']})"
        elif event == "gap":
            text = (f"{who}: {record.get('lost')} records lost here (the tap could not keep up; "
                    f"the session itself was not affected)")
        elif event == "error":
            text = f"{who} error: {record.get('error')}"
        else:
            rest = {k: v for k, v in record.items() if k not in ("ts", "conn", "event")}
            text = f"{who} {event}: {orjson.dumps(rest).decode()}"
        return self._paint("event", _CONTROL.sub(_escape, f"--- {when} {text}".encode()))

    def _paint(self, kind: str, text: bytes) -> bytes:
        return _COLORS.get(kind, b"") + text + _RESET if self.color else text

    def end_of_batch(self) -> bytes | None:
        if not self.parts:
            return None
        blob = b"\n".join(self.parts)
        self.parts.clear()
        if self.compact:
            return blob
        if not self.exact:
            return stream.widen(blob, exact=False)
        return stream.widen(blob).replace(b"\x00", b"    ").replace(b"\x01", b"")

    def finish(self) -> bytes | None:
        rendered = self.end_of_batch()
        return rendered + b"\n" if rendered else None


# Control characters from the traffic are shown escaped: a hostile peer must
# not be able to drive the user's terminal (and \x00/\x01 mark our own lines).
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def _escape(match: re.Match) -> bytes:
    return b"\\x%02x" % match.group()[0]


def _seconds(value: object) -> str:
    return f"{value:.3f} s" if isinstance(value, (int, float)) else "? s"


def _paint_token(match: re.Match) -> bytes:
    string, colon, number, literal = match.groups()
    if string is not None:
        color = _COLORS["key"] if colon else _COLORS["string"]
        return color + string + _RESET + (colon or b"")
    if number is not None:
        return _COLORS["number"] + number + _RESET
    return _COLORS["literal"] + literal + _RESET


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "Show the tagged stream to a person: a header line per message "
                        "(time, direction), then the message as JSON with sorted keys.", EXAMPLE)
    parser.add_argument("--compact", action="store_true", help="each message on one line")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours (default: when writing to a terminal)")
    args = parser.parse_args(argv)
    color = args.color == "always" or (args.color == "auto" and os.isatty(1)
                                       and os.environ.get("NO_COLOR") is None)
    return cli.guarded(PROG, lambda: stage.run_stage(PROG, Pretty(args.compact, color)),
                       debug=args.debug)
