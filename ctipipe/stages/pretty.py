"""ctipretty: show the tagged stream to a person, as the classic ctispy did."""
from __future__ import annotations

import os
import re
import time

import orjson

from ctipipe.core import cli
from ctipipe.stages import runner as stage
from ctipipe.core import stream
from ctipipe.core.terminal import safe_json, safe_text

PROG = "ctipretty"

EXAMPLE = """\
ctirelay xivo-new | ctistrip timenow | ctipretty
ctipretty --compact --color never session.jsonl | less
ctipretty --time relative old.jsonl new.jsonl     # seconds since each session opened
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
# The classic ctispy header, exactly: "    14:02:11.123456 Client > Server".
_DIRECTION = {"client": b"Client > Server", "server": b"Server > Client"}
_NO_MESSAGE = object()
_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d[\d.eE+-]*)|\b(true|false|null)\b')
# How a message is laid out before end_of_batch widens it or puts it on one line.
_LAYOUT = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
TIME_MODES = ("local", "utc", "relative", "none")
# Times beyond this many seconds from 1970 (year 5138) are not shown as a clock.
_TS_RANGE = 1e11



class Pretty(stage.Stage):
    """Renders a whole batch at once: messages are laid out by orjson with an
    indent of 2, then over the whole batch widened to 4 (stream.widen) or,
    with --compact, put on one line each as the classic tool's json.dumps did
    (`{"class": "getlist", "tid": 7}`, see _one_line).

    Indented: when the batch's input holds no double space, widening is one
    pass that doubles every pair of spaces, so headers are written with two
    spaces and come out with four. Otherwise, so that only JSON is touched,
    header lines start with a \\x00 that becomes their four spaces afterwards
    and raw text lines with a \\x01 that is removed.

    Compact: the parts are joined by \\x02 instead of newlines and a raw text's
    newlines are written \\x01, so that every newline left is the indentation
    of a message; headers start with \\x00. These bytes become newlines and
    spaces once the messages are on one line. (Raw text has its control
    characters escaped, so none of these bytes comes from the traffic.)
    """

    rewrites = True  # messages are encoded anew: integers beyond 64 bits kept exact

    def __init__(self, compact: bool, color: bool, clock: str = "local",
                 tag_sessions: bool = False) -> None:
        self.compact = compact
        self.color = color
        self.clock = clock
        self.wall_clock = clock in ("local", "utc")  # the common header, made in handle()
        self.tag_sessions = tag_sessions
        self.parts: list[bytes] = []
        self.exact = True  # this batch's lines need the \x00 and \x01 marks
        self.indent = b"\x00"  # what starts a header line in this batch
        self._split_time = time.gmtime if clock == "utc" else time.localtime
        self._second = None
        self._clock = b""
        self.opened: dict[object, float] = {}  # conn -> when it opened (--time relative)
        self.started: float | None = None  # the first time seen, for records of no session

    def _time(self, ts: object, conn: object = None) -> bytes:
        """The time column: wall clock with microseconds (localtime() only once
        per second), or seconds since the session opened, or nothing."""
        if self.clock == "none":
            return b""
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not -_TS_RANGE < ts < _TS_RANGE:
            # Not a time, or one no clock can show (1e20, inf, nan): the
            # record is still shown, with this column unknown.
            return b"??:??:??.??????" if self.clock != "relative" else b"?"
        if self.clock == "relative":
            if self.started is None:
                self.started = ts
            origin = self.opened.setdefault(conn, ts) if conn is not None else self.started
            return b"%+.6f" % (ts - origin)
        second = int(ts)
        if second != self._second:
            self._second = second
            self._clock = time.strftime("%H:%M:%S", self._split_time(second)).encode()
        return b"%s.%06d" % (self._clock, int((ts - second) * 1e6 + 0.5) % 1000000)

    def begin_batch(self, block: bytes) -> None:
        self.exact = stream.may_hold_double_space(block)
        self.indent = b"\x00" if self.exact or self.compact else b"  "

    def handle(self, record: dict, line: bytes) -> None:
        side = record.get("from")
        if side is None:
            self.parts.append(self._event(record) if "event" in record
                              else self._paint("event", b"--- " + safe_text(line, False)))
            return None
        conn = record.get("conn")
        # The header, "\x00HH:MM:SS.ffffff Client > Server" (see the class docstring).
        direction = _DIRECTION.get(side) or safe_text(f"{side} >".encode(), False)
        ts = record.get("ts")
        if type(ts) is float and self.wall_clock and -_TS_RANGE < ts < _TS_RANGE:
            second = int(ts)
            if second != self._second:
                self._time(ts)
            header = b"%s%s.%06d %s" % (self.indent, self._clock,
                                        int((ts - second) * 1e6 + 0.5) % 1000000, direction)
        else:
            when = self._time(ts, conn)
            header = b"%s%s%s" % (self.indent, when + b" " if when else b"", direction)
        if conn != 1 or self.tag_sessions:
            header += safe_text(f" [session {conn}]".encode(), False)
        message = record.get("msg", _NO_MESSAGE)
        if message is not _NO_MESSAGE:
            try:  # made safe with the whole batch (end_of_batch)
                body = orjson.dumps(message, None, _LAYOUT)
            except orjson.JSONEncodeError:  # deeper than orjson writes, or a big integer
                body = stream.dumps(message, _LAYOUT)
            if self.color:
                body = _TOKEN.sub(_paint_token, body)
                header = self._paint(side, header)
            parts = self.parts
            parts.append(header)
            parts.append(body)
            return None
        # An undecodable line or a raw chunk: its text under the same header, as
        # the classic tool showed it; what we know about it on a line of its own.
        notes = []
        raw = stream.content_bytes(record)
        if "raw_b64" in record:
            if raw is None:
                notes.append("base64 that does not decode")
                raw = str(record["raw_b64"]).encode()
            else:
                notes.append("not UTF-8: other bytes shown as \\xNN")
                raw = raw.decode("utf-8", "backslashreplace").encode()
        raw = raw or b""
        if record.get("oversize"):
            notes.append("a piece of a line longer than the relay's limit")
        if record.get("partial"):
            # docs/stream.md: the start or the end of the line is not in the stream
            notes.append("an incomplete line: its start or its end is not in the stream "
                         "(cut by the connection's end, the capture's start or a gap)")
        # A --raw chunk is shown exactly as the classic ctispy's print(data) did:
        # its text, then a newline, so that chunks "A\n" and "A" differ.
        chunk = record.get("chunk") is True
        body = safe_text(raw if chunk or not raw.endswith(b"\n") else raw[:-1])
        if self.compact:
            body = body.replace(b"\n", b"\x01")
        elif self.exact:
            body = b"\x01" + body.replace(b"\n", b"\n\x01")
        self.parts += (self._paint(side, header), body)
        if notes:
            self.parts.append(self._paint("event", b"--- (" + "; ".join(notes).encode() + b")"))
        return None

    def _event(self, record: dict) -> bytes:
        event = record["event"]
        conn = record.get("conn")
        if event == "start":  # a producer's first record: its sessions start anew
            self.opened.clear()
            self.started = None
        elif event == "open" and isinstance(record.get("ts"), (int, float)):
            self.opened[conn] = record["ts"]
        when = self._time(record.get("ts"), conn).decode()
        who = f"session {conn}" if "conn" in record else "relay"
        if event == "start":
            text = _start_text(record)
        elif event == "open":
            text = f"{who} opened: {record.get('client')} > {record.get('server')}"
        elif event == "tls":
            text = f"{who} {_tls_text(record)}"
        elif event == "close":
            self.opened.pop(conn, None)
            sent, reads = record.get("bytes"), record.get("reads")
            sent = sent if isinstance(sent, dict) else {}
            reads = reads if isinstance(reads, dict) else {}
            text = (f"{who} closed by {record.get('by', '?')} after "
                    f"{_seconds(record.get('duration'))}: "
                    f"client sent {_count(sent.get('client'))} bytes in "
                    f"{_count(reads.get('client'))} reads, "
                    f"server sent {_count(sent.get('server'))} bytes in "
                    f"{_count(reads.get('server'))} reads")
            if record.get("error"):
                text += f" ({record['error']})"
        elif event == "gap" and "missing" in record:  # a capture's (ctipcap)
            text = (f"{who}: {record.get('missing')} bytes from the {record.get('side')} "
                    f"missing from the capture")
        elif event == "gap":
            text = (f"{who}: {record.get('lost')} records lost here (the tap could not keep up; "
                    f"the session itself was not affected)")
        elif event == "check":  # a finding of cticheck --annotate
            text = f"{who} check [{record.get('rule')}]: {_check_text(record)}"
        elif event == "error":
            text = f"{who} error: {record.get('error')}"
            if record.get("client"):
                text += f" (client {record['client']})"
        else:
            rest = {k: v for k, v in record.items() if k not in ("ts", "conn", "event")}
            text = f"{who} {event}: {stream.dumps(rest).decode()}"
        line = f"--- {when} {text}" if when else f"--- {text}"
        return self._paint("event", safe_text(line.encode(), False))

    def _paint(self, kind: str, text: bytes) -> bytes:
        return _COLORS.get(kind, b"") + text + _RESET if self.color else text

    def end_of_batch(self) -> bytes | None:
        if not self.parts:
            return None
        # Everything else in the batch is ours or already escaped text.
        blob = safe_json((b"\x02" if self.compact else b"\n").join(self.parts))
        self.parts.clear()
        if self.compact:
            blob = _one_line(blob, self.exact).replace(b"\x02", b"\n").replace(b"\x00", b"    ")
            return blob.replace(b"\x01", b"\n") if b"\x01" in blob else blob
        if not self.exact:
            return stream.widen(blob, exact=False)
        return stream.widen(blob).replace(b"\x00", b"    ").replace(b"\x01", b"")

    def finish(self) -> bytes | None:
        rendered = self.end_of_batch()
        return rendered + b"\n" if rendered else None


def _one_line(text: bytes, exact: bool = True) -> bytes:
    """Indent-2 JSON texts, among other text that holds no newline, each put
    on one line as Python's json.dumps(value, sort_keys=True) wrote it for the
    classic ctispy: ", " between items and ": " after keys. (orjson has no
    such option, and a regular expression is ten times slower than these
    replace passes.)

    JSON strings hold no raw newline, so a newline and the spaces after it
    are always indentation. With exact=False the caller vouches that no two
    spaces follow each other anywhere but in indentation (as for
    stream.widen), and three passes do it. Otherwise the deepest lines are
    joined first, so that a shallower pattern never matches the start of a
    deeper one.
    """
    if not exact:
        return text.replace(b"  ", b"").replace(b",\n", b", ").replace(b"\n", b"")
    depth = 0
    while b"\n" + b"  " * (depth + 1) in text:
        depth += 1
    for level in range(depth, 0, -1):
        pad = b"  " * level
        text = text.replace(b",\n" + pad, b", ").replace(b"\n" + pad, b"")
    return text.replace(b"\n}", b"}").replace(b"\n]", b"]")


def _start_text(record: dict) -> str:
    """`ctirelay 0.2.0 started (stream version 1): listening on 0.0.0.0:50030,
    relaying to xivo-new:5003`, then any other keys the producer gave."""
    text = f"{record.get('producer') or 'a producer'} started (stream version {record.get('stream')})"
    details = []
    listen = record.get("listen")
    if isinstance(listen, list):
        listen = ", ".join(str(address) for address in listen)
    if listen:
        details.append(f"listening on {listen}")
    if record.get("server"):
        details.append(f"relaying to {record['server']}")
    details += [f"{key} {stream.dumps(value).decode()}" for key, value in record.items()
                if key not in ("ts", "event", "stream", "producer", "listen", "server")]
    return f"{text}: {', '.join(details)}" if details else text


def _check_text(record: dict) -> str:
    """`client login_pass: protocol 2.3 expects "password", not "hashedpassword"; the
    server closes the connection on this`"""
    where = " ".join(str(record.get(key)) for key in ("side", "class") if record.get(key))
    text = f"{where}: {record.get('text')}" if where else str(record.get("text"))
    return f"{text}; {record['server']}" if record.get("server") else text


def _tls_text(record: dict) -> str:
    """`TLS (STARTTLS): client TLSv1 ECDHE-RSA-AES256-SHA (the relay's certificate CN=...
    SHA-256 ...), server TLSv1.2 ... (certificate CN=... SHA-256 ..., not verified)`"""
    how = {"starttls": "STARTTLS", "implicit": "implicit"}.get(record.get("how"), record.get("how"))
    text = f"TLS ({how})"
    if not record.get("intercepted"):
        return text + ": passed through encrypted, not intercepted; no data recorded after this"
    legs = []
    for leg in ("client", "server"):
        about = record.get(leg)
        about = about if isinstance(about, dict) else {}
        legs.append(f"{leg} {about.get('version', '?')} {about.get('cipher', '?')}"
                    + _certificate_text(leg, about))
    return f"{text}: {', '.join(legs)}"


def _certificate_text(leg: str, about: dict) -> str:
    """` (certificate CN=xivo SHA-256 AB:...:EF, not verified)`, when the producer said."""
    if "sha256" not in about:
        return ""  # a recording made before the relay said which certificates it saw
    whose = "the relay's certificate" if leg == "client" else "certificate"
    text = f" ({whose} {about.get('subject') or '?'} SHA-256 {about.get('sha256')}"
    if "verified" in about:
        text += ", verified" if about["verified"] is True else ", not verified"
    return text + ")"


def _count(value: object) -> str:
    """A count from a close record, or ? when the producer gave none."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


def _seconds(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e9:
        return f"{value:.3f} s"
    return "? s"  # none given, or no duration a session can have (1e300)


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
                        "(time, direction), then the message as JSON with sorted keys. Reads "
                        "the FILEs in order (- is standard input), or standard input.", EXAMPLE)
    parser.add_argument("--compact", action="store_true", help="each message on one line")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours (default: when writing to a terminal and NO_COLOR is unset)")
    parser.add_argument("--time", choices=TIME_MODES, default="local",
                        help="the time in each header: local (the default, as the classic "
                             "ctispy), utc, relative (seconds since the session opened) or none")
    parser.add_argument("--tag-sessions", action="store_true",
                        help="tag every record with its session, [session 1] included "
                             "(for streams of several sessions, as with --loop)")
    stage.add_input_files(parser)
    args = parser.parse_args(argv)
    color = args.color == "always" or (args.color == "auto" and os.isatty(1)
                                       and os.environ.get("NO_COLOR") is None)
    return cli.guarded(PROG, lambda: stage.run_stage(
        PROG, Pretty(args.compact, color, args.time, args.tag_sessions), args.files),
        debug=args.debug)
