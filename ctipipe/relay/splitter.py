"""One direction of one session: its reads in, tagged records out (docs/stream.md).

Pure: no I/O, no trio. The relay's tap feeds each read to a `Splitter` and
writes what comes back; a test can feed it bytes and compare the records.

- `lines(ts, data)`: the records of every line `data` completes (message,
  undecodable line, oversize pieces); the start of an unfinished line is kept.
- `chunk(ts, data)`: `--raw`, one record per read.
- `end(ts)`: at close, what is left without a newline, as a partial record.

No record's content (its JSON string, quotes included) is longer than
`max_line` (when max_line >= 26): content that grows
when escaped (a control byte becomes six characters, base64 four for three)
is cut into `oversize` pieces that fit. A JSON value nested deeper than
MAX_DEPTH is recorded as an undecodable line, so that every stage can read
(and write again) every record.
"""
from __future__ import annotations

import re

import orjson

from ctipipe.core import stream

# Deepest nesting embedded as a message: a record adds one level, and orjson
# writes at most 254, so a stage can always decode and encode a record again.
MAX_DEPTH = 200

# A line known to be longer than max_line goes out in pieces of this size (or
# max_line if smaller): a hostile 100 MB line then costs its first max_line
# bytes held once, not max_line bytes held again and again.
OVERSIZE_PIECE = 1 << 20

_OVERSIZE = b',"oversize":true'
_PARTIAL = b',"partial":true'


class Splitter:
    __slots__ = ("conn", "side", "max_line", "piece", "piece_limit", "pending", "pending_len",
                 "oversize")

    def __init__(self, conn: int, side: str, max_line: int) -> None:
        self.conn = conn
        self.side = side
        self.max_line = max_line
        self.piece = min(max_line, OVERSIZE_PIECE)
        # A piece's record holds at most a piece's worth of text once escaped
        # (and its quotes): a long line of control bytes is cut six times finer
        # rather than making records six times larger.
        self.piece_limit = min(max_line, self.piece + 2)
        self.pending: list[bytes] = []  # the start of an unfinished line
        self.pending_len = 0
        self.oversize = False  # the unfinished line was already cut into pieces

    def lines(self, ts: float, data: bytes) -> list[bytes]:
        """The records of every line `data` completes; the rest is kept."""
        out: list[bytes] = []
        head = stream.data_head(ts, self.conn, self.side)
        lines = data.split(b"\n")
        tail = lines.pop()
        if self.pending or self.oversize:  # the first line began in earlier reads
            if not lines:
                self._hold(head, tail, out)
                return out
            self.pending.append(lines[0])
            first = b"".join(self.pending)
            self.pending.clear()
            self.pending_len = 0
            if self.oversize:  # its start already went out in pieces: so does its end
                self._pieces(head, first, out)
                del lines[0]
            else:
                lines[0] = first
        loads, JSONDecodeError, max_line = orjson.loads, orjson.JSONDecodeError, self.max_line
        message_record = stream.message_record
        for line in lines:
            size = len(line) + 1
            if size > max_line:
                self._pieces(head, line, out)
                continue
            try:
                loads(line)
            except JSONDecodeError:
                self._raw(head, size, line, b"", out)
                continue
            if size > MAX_DEPTH and _too_deep(line):
                self._raw(head, size, line, b"", out)
                continue
            # Validated, so only JSON whitespace can surround the value.
            out.append(message_record(head, size, line.strip()))
        if tail:
            self._hold(head, tail, out)
        return out

    def _pieces(self, head: bytes, line: bytes, out: list[bytes]) -> None:
        """The end of a line too long to keep whole: in pieces of at most max_line."""
        step = self.piece
        view = memoryview(line)  # pieces are views: no copy of the line
        limit = self.piece_limit
        for start in range(0, len(line) - step + 1, step):
            self._raw(head, step, view[start:start + step], _OVERSIZE, out, limit)
        rest = view[len(line) - len(line) % step:] if len(line) >= step else view
        self._raw(head, len(rest) + 1, rest, _OVERSIZE, out, limit)
        self.oversize = False

    def _hold(self, head: bytes, data: bytes, out: list[bytes]) -> None:
        """Keep an unfinished line; once it passes max_line, emit what is held in
        pieces, and from then on each new piece as soon as it is complete.

        A line that holds a control byte cannot be JSON: it will be an undecodable
        line, six times its size once escaped. Once that could pass max_line it
        goes out in pieces as it comes too, so that its records never pile up
        (a 15 MiB line of control bytes would otherwise be 90 MiB of records at once).
        """
        self.pending.append(data)
        self.pending_len += len(data)
        if self.oversize:
            if self.pending_len < self.piece:
                return
        elif self.pending_len < self.max_line:
            fits = (self.max_line - 2) // 6  # held bytes that fit in a record however escaped
            if self.pending_len <= fits:
                return
            new = self.pending if self.pending_len - len(data) <= fits else (data,)
            if not any(map(_not_json, new)):
                return
        held = b"".join(self.pending)
        self.pending.clear()
        step = self.piece
        cut = len(held) - len(held) % step
        view = memoryview(held)
        for start in range(0, cut, step):
            self._raw(head, step, view[start:start + step], _OVERSIZE, out, self.piece_limit)
        self.pending = [held[cut:]] if cut < len(held) else []
        self.pending_len = len(held) - cut
        self.oversize = True

    def _raw(self, head: bytes, size: int, data, flags: bytes, out: list[bytes],
             limit: int = 0) -> None:
        """An undecodable line (or a piece of one, or a chunk) as one record, or,
        when escaping would make that record longer than `limit` (max_line),
        as oversize pieces whose escaped content fits (their sizes add up to `size`)."""
        limit = limit or self.max_line
        if len(data) * 6 + 2 <= limit or _escaped_length(data) <= limit:
            parts = stream.raw_record_parts(head, size, data, flags)
            quotes = 2 if parts[0].endswith(b'"') else 0  # (base64: outside parts[1])
            if len(parts[1]) + quotes <= limit:  # (base64 may still be too long)
                out += parts
                return
        # Six characters a byte at worst (\u0001); cut between UTF-8 characters.
        step = max((limit - 2) // 6, 4)
        if _OVERSIZE not in flags and flags != _CHUNK:  # (chunks just become smaller chunks)
            flags += _OVERSIZE
        middle = flags.replace(_PARTIAL, b"")  # only the last piece ends the line
        view = memoryview(data)
        start = 0
        while start < len(view):
            end = min(start + step, len(view))
            while end < len(view) and end - start > 3 and view[end] & 0xC0 == 0x80:
                end -= 1  # (a continuation byte: the cut goes before its character)
            piece = view[start:end]
            # The line's newline (size - len(data): 1 or 0) is counted in its last piece.
            last = end == len(view)
            extra = size - len(view) if last else 0
            out += stream.raw_record_parts(head, len(piece) + extra, piece, flags if last else middle)
            start = end

    def chunk(self, ts: float, data: bytes) -> list[bytes]:
        """--raw: one record per read, exactly as it came (cut only to bound its size)."""
        head = stream.data_head(ts, self.conn, self.side)
        out: list[bytes] = []
        self._raw(head, len(data), data, _CHUNK, out)
        return out

    def end(self, ts: float) -> list[bytes]:
        """At close: what is left without a newline becomes a partial record."""
        out: list[bytes] = []
        if self.pending or self.oversize:  # (an oversize line cut just at its end: size 0)
            held = b"".join(self.pending)
            self.pending.clear()
            self.pending_len = 0
            flags = _PARTIAL + (_OVERSIZE if self.oversize else b"")
            self.oversize = False
            head = stream.data_head(ts, self.conn, self.side)
            self._raw(head, len(held), held, flags, out, self.piece_limit if _OVERSIZE in flags else 0)
        return out


_CHUNK = b',"chunk":true'
# Bytes that JSON text escapes: control bytes to six characters, '"' and '\\' to two.
_CONTROLS = bytes(range(32))
_QUOTES = b'"\\'


def _escaped_length(data) -> int:
    """The length of `data` as a JSON string, quotes included (when it is UTF-8),
    without encoding it."""
    n = len(data)
    data = bytes(data) if isinstance(data, memoryview) else data
    controls = n - len(data.translate(None, _CONTROLS))
    quotes = n - len(data.translate(None, _QUOTES))
    return n + 5 * controls + quotes + 2


# Control bytes that JSON text never holds (tab, CR and LF may be whitespace).
_NOT_JSON = bytes(b for b in range(32) if b not in b"\t\r\n")


def _not_json(data: bytes) -> bool:
    """Does data hold a byte that JSON text cannot (so its line is undecodable)?"""
    return len(data.translate(None, _NOT_JSON)) != len(data)


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def _too_deep(line: bytes) -> bool:
    """Is this (valid) JSON text nested deeper than MAX_DEPTH?

    Cheap for what CTI sends: only a line with more than MAX_DEPTH brackets is
    looked at, and then only its brackets, outside strings, in passes that each
    remove the innermost pairs (one level a pass).
    """
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return False
    text = line.translate(None, _NOT_STRUCTURE).replace(b"\\\\", b"").replace(b'\\"', b"")
    text = text.replace(b"\\", b"")
    text = b"".join(text.split(b'"')[::2])  # what was outside strings
    for _ in range(MAX_DEPTH):
        text, found = _EMPTY_PAIR.subn(b"", text)
        if not text:
            return False
    return True
