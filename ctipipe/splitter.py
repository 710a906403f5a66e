"""One direction of one session: its reads in, tagged records out (STREAM.md).

Pure: no I/O, no trio. The relay's tap feeds each read to a `Splitter` and
writes what comes back; a test can feed it bytes and compare the records.

- `lines(ts, data)`: the records of every line `data` completes (message,
  undecodable line, oversize pieces); the start of an unfinished line is kept.
- `chunk(ts, data)`: `--raw`, one record per read.
- `dropped(newlines, unfinished)`: the tap did not record some reads.
- `end(ts)`: at close, what is left without a newline, as a partial record.
- `lost`: lines counted as lost by the splitter itself (the tap adds its own
  drops and reports them in a gap record).
"""
from __future__ import annotations

import orjson

from . import stream

# A line known to be longer than max_line goes out in pieces of this size (or
# max_line if smaller): a hostile 100 MB line then costs its first max_line
# bytes held once, not max_line bytes held again and again.
OVERSIZE_PIECE = 1 << 20

_OVERSIZE = b',"oversize":true'


class Splitter:
    __slots__ = ("conn", "side", "max_line", "piece", "pending", "pending_len",
                 "skipping", "oversize", "lost")

    def __init__(self, conn: int, side: str, max_line: int) -> None:
        self.conn = conn
        self.side = side
        self.max_line = max_line
        self.piece = min(max_line, OVERSIZE_PIECE)
        self.pending: list[bytes] = []  # the start of an unfinished line
        self.pending_len = 0
        self.skipping = False  # the unfinished line's start was dropped
        self.oversize = False  # the unfinished line was already cut into pieces
        self.lost = 0

    def lines(self, ts: float, data: bytes) -> list[bytes]:
        """The records of every line `data` completes; the rest is kept."""
        out: list[bytes] = []
        head = stream.data_head(ts, self.conn, self.side)
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return out
            self.lost += 1  # the line whose start was dropped
            self.skipping = False
            data = data[end + 1:]
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
                out.append(stream.raw_record(head, size, line))
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
        for start in range(0, len(line) - step + 1, step):
            out += stream.raw_record_parts(head, step, view[start:start + step], _OVERSIZE)
        rest = view[len(line) - len(line) % step:] if len(line) >= step else view
        out += stream.raw_record_parts(head, len(rest) + 1, rest, _OVERSIZE)
        self.oversize = False

    def _hold(self, head: bytes, data: bytes, out: list[bytes]) -> None:
        """Keep an unfinished line; once it passes max_line, emit what is held in
        pieces, and from then on each new piece as soon as it is complete."""
        self.pending.append(data)
        self.pending_len += len(data)
        if self.pending_len < (self.piece if self.oversize else self.max_line):
            return
        held = b"".join(self.pending)
        self.pending.clear()
        step = self.piece
        cut = len(held) - len(held) % step
        view = memoryview(held)
        for start in range(0, cut, step):
            out += stream.raw_record_parts(head, step, view[start:start + step], _OVERSIZE)
        self.pending = [held[cut:]] if cut < len(held) else []
        self.pending_len = len(held) - cut
        self.oversize = True

    def chunk(self, ts: float, data: bytes) -> list[bytes]:
        """--raw: one record per read, exactly as it came."""
        head = stream.data_head(ts, self.conn, self.side)
        return [stream.raw_record(head, len(data), data)]

    def dropped(self, newlines: int, unfinished: bool) -> None:
        """Reads were not recorded: every line they finished is lost, and so is
        the line they leave unfinished (counted once its end arrives)."""
        self.lost += newlines
        self.skipping = unfinished
        self.pending.clear()
        self.pending_len = 0
        self.oversize = False

    def end(self, ts: float) -> list[bytes]:
        """At close: what is left without a newline becomes a partial record."""
        out: list[bytes] = []
        if self.skipping:
            self.lost += 1
            self.skipping = False
        if self.pending or self.oversize:  # (an oversize line cut just at its end: size 0)
            held = b"".join(self.pending)
            self.pending.clear()
            self.pending_len = 0
            flags = b',"partial":true' + (_OVERSIZE if self.oversize else b"")
            self.oversize = False
            head = stream.data_head(ts, self.conn, self.side)
            out += stream.raw_record_parts(head, len(held), held, flags)
        return out
