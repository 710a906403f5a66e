"""TCP reassembly, one direction of one connection.

Pure: no I/O. A `Direction` takes the segments one peer sent, in capture
order, and gives back that peer's byte stream in order, as a list of items:
`bytes`, the stream's next bytes, or `int`, that many bytes of the stream
missing from the capture (a gap). Every byte of the stream comes out once:

- a segment ahead of the next expected byte is held until the bytes before
  it come (out of order), and a retransmitted or overlapping one gives only
  the bytes not already given (the first copy seen is the one kept);
- sequence numbers are compared modulo 2**32 (wrap-around), relative to the
  next expected byte, so a stream may be longer than 4 GiB;
- a SYN sets the stream's start; without one (a capture that began while the
  connection was open) the stream starts at the first segment seen, and
  `cut_start` says that its first line may have begun earlier;
- bytes are missing when the peer acknowledged them (`acked`) but the capture
  never had them, when a packet was cut by the snap length (`missing`), when
  more than MAX_PENDING bytes wait behind a hole, or when the connection ends
  (`flush`) with holes left: each hole becomes one gap, in its place.
"""
from __future__ import annotations

import bisect

_MASK = (1 << 32) - 1
_NOTHING: list = []  # (returned empty, never appended to)
_HALF = 1 << 31

# Bytes held out of order behind a hole, per direction: what protects memory
# from a capture that missed a packet in a direction whose acknowledgements it
# does not have. A CTI session rarely has 64 KiB in flight.
MAX_PENDING = 4 << 20


class Direction:
    """One peer's byte stream (see the module's docstring)."""

    __slots__ = ("next_seq", "offset", "pending", "pending_bytes", "fin_at", "finished",
                 "cut_start", "isn")

    def __init__(self) -> None:
        self.next_seq: int | None = None  # the sequence number of stream byte `offset`
        self.offset = 0  # stream bytes given so far (as data or as gaps)
        self.pending: list[tuple[int, bytes, int]] = []  # (offset, data, missing), by offset
        self.pending_bytes = 0
        self.fin_at: int | None = None  # the stream offset where the FIN was sent
        self.finished = False  # every byte before the FIN was given
        self.cut_start = False  # the stream began before the capture did
        self.isn: int | None = None  # the SYN's sequence number, when seen

    def begin(self, seq: int) -> None:
        """The stream's first byte has sequence number `seq` (the peer's SYN-ACK
        acknowledged our SYN without the capture having it)."""
        if self.next_seq is None:
            self.next_seq = seq & _MASK

    def segment(self, seq: int, data: bytes, missing: int = 0, syn: bool = False,
                fin: bool = False) -> list:
        """One segment this peer sent; the stream items it makes available."""
        out: list = []
        if syn:
            if self.isn is None:
                self.isn = seq
            seq = (seq + 1) & _MASK
            if self.next_seq is None:
                self.next_seq = seq
        elif self.next_seq is None:  # no SYN seen: the stream starts here
            self.next_seq = seq
            self.cut_start = True
        rel = ((seq - self.next_seq + _HALF) & _MASK) - _HALF
        length = len(data) + missing
        if fin and self.fin_at is None:
            self.fin_at = self.offset + rel + length
        if length:
            if rel == 0 and not self.pending:  # in order: the common case
                if data:
                    out.append(data)
                if missing:
                    out.append(missing)
                self.offset += length
                self.next_seq = (self.next_seq + length) & _MASK
            elif rel + length > 0:  # not only bytes given already
                if rel < 0:
                    data, missing = _trim(data, missing, -rel)
                    rel = 0
                self._hold(self.offset + rel, data, missing)
                self._drain(out)
                while self.pending_bytes > MAX_PENDING:  # give up on the first hole
                    self._gap_to(self.pending[0][0], out)
                    self._drain(out)
        self._check_fin()
        return out

    def acked(self, ack: int) -> list:
        """The other peer acknowledged every byte before `ack`: those the capture
        does not have are missing (no retransmission will bring them)."""
        if self.next_seq is None:
            return _NOTHING
        ahead = ((ack - self.next_seq + _HALF) & _MASK) - _HALF
        if ahead <= 0:  # nothing acknowledged that was not given: the common case
            return _NOTHING
        target = self.offset + ahead
        if self.fin_at is not None:
            target = min(target, self.fin_at)  # (the FIN's own sequence number)
        out: list = []
        self._fill_to(target, out)
        self._check_fin()
        return out

    def flush(self) -> list:
        """The connection ended: what waits behind holes, each hole a gap, up
        to the FIN when one was sent."""
        out: list = []
        while self.pending:
            self._gap_to(self.pending[0][0], out)
            self._drain(out)
        if self.fin_at is not None:
            self._gap_to(self.fin_at, out)
        self.finished = True
        return out

    # --- inside ---------------------------------------------------------------

    def _check_fin(self) -> None:
        if self.fin_at is not None and self.offset >= self.fin_at:
            self.finished = True

    def _hold(self, start: int, data: bytes, missing: int) -> None:
        bisect.insort(self.pending, (start, data, missing), key=lambda item: item[0])
        self.pending_bytes += len(data)

    def _drain(self, out: list) -> None:
        """Give what is held from the current offset on, until a hole."""
        pending = self.pending
        while pending and pending[0][0] <= self.offset:
            start, data, missing = pending.pop(0)
            self.pending_bytes -= len(data)
            end = start + len(data) + missing
            if end <= self.offset:
                continue  # all given already
            skip = self.offset - start
            if skip < len(data):
                out.append(data[skip:] if skip else data)
                if missing:
                    _gap(out, missing)
            else:
                _gap(out, end - self.offset)
            self._advance(end - self.offset)

    def _fill_to(self, target: int, out: list) -> None:
        """Everything up to `target`: what is held, the holes as gaps."""
        while self.offset < target:
            if self.pending and self.pending[0][0] <= self.offset:
                self._drain(out)
            elif self.pending and self.pending[0][0] < target:
                self._gap_to(self.pending[0][0], out)
            else:
                self._gap_to(target, out)
        self._drain(out)

    def _gap_to(self, target: int, out: list) -> None:
        if target > self.offset:
            _gap(out, target - self.offset)
            self._advance(target - self.offset)

    def _advance(self, count: int) -> None:
        self.offset += count
        self.next_seq = (self.next_seq + count) & _MASK


def _gap(out: list, count: int) -> None:
    """Append a gap, merged with one just before it."""
    if out and type(out[-1]) is int:
        out[-1] += count
    else:
        out.append(count)


def _trim(data: bytes, missing: int, cut: int) -> tuple[bytes, int]:
    """The segment without its first `cut` bytes (given already)."""
    if cut < len(data):
        return data[cut:], missing
    return b"", missing - (cut - len(data))
