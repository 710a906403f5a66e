"""Read one session of a saved capture for ctidiff: a tagged stream, or a file in
the classic ctisave layout (one side's messages as indented JSON, one after the other).

Only what alignment needs is kept per message (signature, content key, line
number, and where its text is, to decode it again later: its place in a
regular file, the text itself from a pipe), in arrays of machine integers, so
that two sessions of 600,000 messages fit in a small part of the memory their
text would take.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import os
import stat
import sys
from array import array
from dataclasses import dataclass, field

import orjson

from ctipipe.diff import compare
from ctipipe.core import stream
from ctipipe.core.cli import CommandError

SIDES = ("client", "server")
RAW_SIGNATURE = ("(not JSON)",)
MAX_WARNINGS = 100  # malformed lines reported one by one, then only counted


@dataclass
class Messages:
    """One side of one session, in order."""

    signatures: array = field(default_factory=lambda: array("q"))  # index into Capture.kinds
    keys: array = field(default_factory=lambda: array("q"))  # compare.content_key of the stripped message
    lines: array = field(default_factory=lambda: array("q"))  # line number in the file
    offsets: array = field(default_factory=lambda: array("q"))  # where the line starts (a regular file)
    lengths: array = field(default_factory=lambda: array("q"))  # and its length, newline excluded
    texts: list[bytes] = field(default_factory=list)  # else the record line, message JSON, or raw text
    raw: bytearray = field(default_factory=bytearray)  # 1 where the entry is compared as text


class Capture:
    """The chosen session of one file: per side, its messages."""

    def __init__(self, path: str, tagged: bool, conn: int | None) -> None:
        self.path = path
        self.tagged = tagged  # False: a classic ctisave file, its side unknown
        self.conn = conn
        self.sides: dict[str, Messages] = {}
        self.warnings: list[str] = []
        self.kinds_by_number: list[tuple] = []  # signatures, by the numbers in Messages
        self.seekable = False  # True: texts are read again from the file, by offset
        self._reader = None

    def value(self, side: str, n: int) -> tuple[bool, object]:
        """(is raw, value) of a side's message n: raw text as str, else the decoded message."""
        return self._decoded(side, n)[:2]

    def stripped(self, side: str, n: int, ignore: compare.Ignore) -> tuple[bool, object]:
        """value(), without the fields `ignore` leaves out."""
        raw, value, text = self._decoded(side, n)
        return raw, (value if raw else ignore.strip(value, text))

    def _decoded(self, side: str, n: int) -> tuple[bool, object, bytes | None]:
        messages = self.sides[side]
        text = self._text(messages, n)
        if self.tagged:
            try:
                record = compare.loads(text)
            except ValueError:  # it was a record when it was read first
                raise CommandError(f"{self.path} changed while it was being compared "
                                   f"(line {messages.lines[n]})") from None
            if type(record) is not dict:
                raise CommandError(f"{self.path} changed while it was being compared "
                                   f"(line {messages.lines[n]})")
            if messages.raw[n]:  # nested too deeply: its text
                return True, text[_msg_start(text):-1].decode("utf-8", "backslashreplace"), None
            if "msg" in record:
                start = _msg_start(text)
                return False, record["msg"], (text[start:] if start > 0 else None)
            return True, _raw_text(record), None
        if messages.raw[n]:
            return True, text.decode("utf-8", "backslashreplace"), None
        # see _load_classic
        return False, compare.DECODER.decode(text.decode("utf-8", "surrogateescape").strip()), None

    def _text(self, messages: Messages, n: int) -> bytes:
        if not self.seekable:
            return messages.texts[n]
        if self._reader is None:
            try:
                self._reader = open(self.path, "rb")
            except OSError as error:
                raise CommandError(f"cannot read {self.path} again: {error.strerror or error}") from None
        return os.pread(self._reader.fileno(), messages.lengths[n], messages.offsets[n])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _msg_start(line: bytes) -> int:
    """Where the message's text starts in a record line (0: not found as relay writes it)."""
    start = line.find(b',"msg":')
    return start + 7 if start > 0 else 0


def load(path: str, conn: int | None, sides: tuple[str, ...], ignore: compare.Ignore,
         kinds: dict[tuple, int]) -> Capture:
    """Read `path` (a tagged stream or a classic ctisave file; `-` is standard
    input) and keep session `conn` (None: the first). `kinds` maps signatures
    to small numbers, shared by both files. The file is read once, front to
    back, so a pipe (`<(ctistrip x < a.jsonl)`) does as well as a file."""
    try:
        with (contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb")) as file:
            regular = path != "-" and stat.S_ISREG(os.fstat(file.fileno()).st_mode)
            lines = _bounded_lines(path, file)
            first, before, offset = b"", 0, 0
            for first in lines:  # the first line that is not blank
                if first.strip():
                    break
                before += 1
                offset += len(first)
            if not first.strip():
                raise CommandError(f"{path} is empty")
            try:
                head = orjson.loads(first)
            except orjson.JSONDecodeError:
                head = None
            lines = itertools.chain([first], lines)
            if type(head) is dict and ("event" in head or ("from" in head and "conn" in head)):
                # line by line: only the chosen session's lines are kept
                return _load_tagged(path, lines, conn, sides, ignore, kinds, before + 1,
                                    offset if regular else None)
            if first.lstrip()[:1] in (b"{", b"["):
                return _load_classic(path, b"".join(lines), ignore, kinds)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    raise CommandError(f"{path} is not a tagged stream (as ctirelay writes) "
                       f"nor a ctisave file of indented JSON messages")


def _bounded_lines(path: str, file):
    """The file's lines, each at most stream.MAX_LINE bytes: a file with no newline
    (/dev/zero) is refused in one line instead of filling the memory."""
    for lineno in itertools.count(1):
        line = file.readline(stream.MAX_LINE + 1)
        if not line:
            return
        if len(line) > stream.MAX_LINE:
            raise CommandError(f"{path} line {lineno} is longer than {stream.MAX_LINE >> 20} MiB: "
                               f"not a capture")
        yield line


def _load_tagged(path, lines, conn, sides, ignore, kinds, first_lineno=1, offset=None) -> Capture:
    """`offset`: where the first line starts in a regular file (None: a pipe,
    whose lines are kept since they cannot be read again)."""
    capture = Capture(path, True, conn)
    capture.seekable = offset is not None
    for side in sides:
        capture.sides[side] = Messages()
    chosen = capture.sides
    seen: dict = {}  # the sessions of the file, in order
    loads, exact = orjson.loads, compare.loads
    digits_as_zeros, long_run = compare.DIGITS_AS_ZEROS, compare.LONG_RUN  # long_digits, inline
    too_deep, deep = compare.too_deep, compare.MAX_DEPTH
    content_key, signature, strip = compare.content_key, compare.signature, ignore.strip
    malformed = 0
    for lineno, line in enumerate(lines, first_lineno):
        start_of_line = offset
        if offset is not None:
            offset += len(line)
        line = line.rstrip(b"\n")
        if not line:
            continue
        try:
            record = exact(line) if long_run in line.translate(digits_as_zeros) else loads(line)
        except ValueError:  # orjson's JSONDecodeError included
            try:
                record = exact(line)  # NaN, Infinity
            except ValueError:
                record = None
        number = record.get("conn") if type(record) is dict else None
        if type(record) is not dict or (number is not None and type(number) is not int):
            # not a record, or one whose conn is not a session number
            malformed += 1
            if malformed <= MAX_WARNINGS:
                capture.warnings.append(f"{path} line {lineno}: not a record; skipped")
            continue
        if number is None:
            continue
        if number not in seen:
            seen[number] = True
        if capture.conn is None:
            capture.conn = number
        if number != capture.conn:
            continue
        side = record.get("from")
        messages = chosen.get(side) if type(side) is str else None
        if messages is None:
            continue
        raw = 0
        if "msg" in record:
            message = record["msg"]
            start = line.find(b',"msg":') + 7  # as the relay writes it; else 6
            # deeper than MAX_DEPTH takes two brackets a level: short lines are not counted
            if len(line) > 2 * deep and line.count(b"[") + line.count(b"{") > deep \
                    and too_deep(message, line):
                raw, kind, key = 1, RAW_SIGNATURE, hash(line[start:])
            else:
                kind = signature(message)  # before strip, which may change the message
                key = content_key(strip(message, line[start:] if start > 6 else None))
        elif "raw" in record or "raw_b64" in record:
            kind, key = RAW_SIGNATURE, hash(_raw_text(record))
        else:
            continue
        messages.signatures.append(kinds.setdefault(kind, len(kinds)))
        messages.keys.append(key)
        messages.lines.append(lineno)
        messages.raw.append(raw)
        if start_of_line is None:
            messages.texts.append(line)
        else:
            messages.offsets.append(start_of_line)
            messages.lengths.append(len(line))
    if malformed > MAX_WARNINGS:
        capture.warnings.append(f"{path}: {malformed} malformed lines in all")
    if not seen:
        raise CommandError(f"{path} holds no session (no record with a conn)")
    if capture.conn not in seen:
        listed = ", ".join(str(n) for n in list(seen)[:20]) + (", ..." if len(seen) > 20 else "")
        raise CommandError(f"{path} has no session {capture.conn} (its sessions: {listed})")
    return capture


def _raw_text(record: dict) -> str:
    if "raw" in record:
        return str(record["raw"])
    try:
        return base64.b64decode(record["raw_b64"], validate=True).decode("utf-8", "backslashreplace")
    except (ValueError, TypeError):
        return str(record["raw_b64"])


def _load_classic(path, data, ignore, kinds) -> Capture:
    """Messages written one after the other (indented or one per line); a line
    that does not start a JSON value is a raw line, as ctisplit writes them."""
    capture = Capture(path, False, None)
    messages = capture.sides["file"] = Messages()
    text = data.decode("utf-8", "surrogateescape")
    decode = compare.DECODER.raw_decode
    position, lineno, end = 0, 1, len(text)
    while position < end:
        line_end = text.find("\n", position)
        if line_end < 0:
            line_end = end
        line = text[position:line_end]
        if not line.strip():
            position, lineno = line_end + 1, lineno + 1
            continue
        value, after = None, None
        if line.lstrip()[:1] in ('{', '[', '"') or line.strip()[:1].isdigit() or \
                line.strip() in ("true", "false", "null") or line.lstrip()[:1] == "-":
            try:
                value, after = decode(text, position + len(line) - len(line.lstrip()))
            except (ValueError, RecursionError):  # not JSON, or nested too deeply for Python
                pass
            if after is not None and compare.too_deep(value, text[position:after].encode(
                    "utf-8", "surrogateescape")):
                value, after = None, None  # compared as lines of text
            if after is not None:
                rest_end = text.find("\n", after)
                rest_end = end if rest_end < 0 else rest_end
                if text[after:rest_end].strip():
                    value, after = None, None  # more on the line: not a message after all
        if after is None:
            raw = line.encode("utf-8", "surrogateescape")
            messages.signatures.append(kinds.setdefault(RAW_SIGNATURE, len(kinds)))
            messages.keys.append(hash(raw.decode("utf-8", "backslashreplace")))
            messages.raw.append(1)
            messages.texts.append(raw)
            messages.lines.append(lineno)
            position, lineno = line_end + 1, lineno + 1
            continue
        # the message's own text, decoded again by value() as it was here
        body = text[position:after].encode("utf-8", "surrogateescape")
        messages.signatures.append(kinds.setdefault(compare.signature(value), len(kinds)))
        messages.keys.append(compare.content_key(ignore.strip(value)))
        messages.raw.append(0)
        messages.texts.append(body)
        messages.lines.append(lineno)
        lineno += text.count("\n", position, after)
        position = after
    return capture
