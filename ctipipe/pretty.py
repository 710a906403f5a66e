"""ctipretty: show the tagged stream to a person, as the classic ctispy did."""
from __future__ import annotations

import os
import re
import time

import orjson

from . import cli, stream

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
_DIRECTION = {"client": "Client > Server", "server": "Server > Client"}
_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d[\d.eE+-]*)|\b(true|false|null)\b')


class Pretty:
    def __init__(self, compact: bool, color: bool) -> None:
        self.format = stream.one_line if compact else stream.indented
        self.color = color
        self._second = None
        self._clock = ""

    def _time(self, ts: object) -> str:
        """Local time with microseconds; localtime() only once per second."""
        if not isinstance(ts, (int, float)):
            return "??:??:??.??????"
        second = int(ts)
        if second != self._second:
            self._second = second
            self._clock = time.strftime("%H:%M:%S", time.localtime(second))
        return "%s.%06d" % (self._clock, round((ts - second) * 1e6) % 1000000)

    def handle(self, record: dict, line: bytes) -> bytes | None:
        side = record.get("from")
        if side is not None:
            return self._data(record, side)
        if "event" in record:
            return self._event(record)
        return self._paint("event", b"--- " + line)

    def _data(self, record: dict, side: object) -> bytes:
        header = "    %s %s" % (self._time(record.get("ts")), _DIRECTION.get(side, f"{side} >"))
        conn = record.get("conn")
        if conn != 1:
            header += f"  [session {conn}]"
        if "msg" in record:
            body = self.format(record["msg"])
            if self.color:
                body = _TOKEN.sub(_paint_token, body)
        else:
            notes = [name for name in ("partial", "oversize") if record.get(name)]
            raw = stream.content_bytes(record) or b""
            if "raw_b64" in record:
                notes.append("not UTF-8, shown as base64")
                body = str(record["raw_b64"]).encode()
            else:
                body = raw[:-1] if raw.endswith(b"\n") else raw
            header += " (%s)" % ", ".join(["not JSON", *notes])
        return self._paint(side, header.encode()) + b"\n" + body

    def _event(self, record: dict) -> bytes:
        event = record["event"]
        when = self._time(record.get("ts"))
        who = f"session {record['conn']}" if "conn" in record else "relay"
        if event == "open":
            text = f"{who} opened: {record.get('client')} > {record.get('server')}"
        elif event == "close":
            sent = record.get("bytes") or {}
            reads = record.get("reads") or {}
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
        return self._paint("event", f"--- {when} {text}".encode())

    def _paint(self, kind: str, text: bytes) -> bytes:
        return _COLORS.get(kind, b"") + text + _RESET if self.color else text

    def end_of_batch(self) -> None:
        pass

    def finish(self) -> None:
        return None


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
    return cli.guarded(PROG, lambda: cli.run_stage(PROG, Pretty(args.compact, color)),
                       debug=args.debug)
