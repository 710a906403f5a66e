"""A capture's TCP connections to the CTI server, as tagged-stream records.

Pure: no I/O. `Sessions.packet(ts, segment, out)` takes each decoded segment in
capture order and appends the records it makes to `out` (bytes, one per
line); `Sessions.end(out)` closes what is still open at the end of the capture. One
session per TCP connection whose server end is one of `ports` (and one of
`hosts`, when given): `conn` numbers in order of first packet, `open` with
the addresses from the 4-tuple, data records split into lines exactly as the
relay splits them (its Splitter), `gap` where the capture lost bytes,
`tls` when the session turns to TLS, and `close` with the counts.
"""
from __future__ import annotations

from collections import OrderedDict

import orjson

from ctipipe.core import stream
from ctipipe.pcap import packets
from ctipipe.pcap.reassembly import Direction
from ctipipe.relay.splitter import Splitter

# The old CTIS port: TLS from the first byte.
IMPLICIT_TLS_PORT = 5013

# Connections just closed, remembered so that their last packets (the ACK of
# a FIN, a retransmitted FIN, a RST after the close) do not open a session.
RECENTLY_CLOSED = 4096

# Sessions open at once. Connections that never end (SYNs nobody answered, a
# scan) each hold a little state until the capture ends: past this many, the
# oldest is closed, so memory stays bounded whatever the capture holds.
MAX_OPEN = 100_000

_PARTIAL = b',"partial":true'
_OVERSIZE_PARTIAL = b',"partial":true,"oversize":true'
_SYN, _ACK, _FIN, _RST = packets.SYN, packets.ACK, packets.FIN, packets.RST


class _Side:
    """One peer of a session: its stream, its line splitter, its counts."""

    __slots__ = ("name", "stream", "splitter", "fragment", "fragment_len", "cut",
                 "bytes", "reads", "packets", "wire", "head_ts")

    def __init__(self, name: str, conn: int, max_line: int) -> None:
        self.name = name
        self.stream = Direction()
        self.splitter = Splitter(conn, name, max_line)
        self.cut = False  # the next line began where the capture has nothing
        self.fragment: list[bytes] = []  # that line's bytes so far
        self.fragment_len = 0
        self.bytes = self.reads = self.packets = self.wire = 0


class _Session:
    __slots__ = ("conn", "opened", "client_key", "client", "server", "by", "tls",
                 "watch", "ended", "keys")

    def __init__(self, conn: int, opened: float, client_key: tuple, max_line: int,
                 implicit: bool) -> None:
        self.conn = conn
        self.opened = opened
        self.client_key = client_key  # (address, port) of the client
        self.client = _Side("client", conn, max_line)
        self.server = _Side("server", conn, max_line)
        self.by: str | None = None  # who sent the first FIN or RST
        self.tls = implicit  # the bytes are encrypted: counted, not recorded
        # Watching the login for STARTTLS: "first" (the client's first line
        # tells), "asked" (the client asked; the server's answer tells), None.
        self.watch: str | None = None if implicit else "first"
        self.ended = False
        self.keys: tuple = ()  # its two 4-tuples, one per direction


class Sessions:
    """The sessions of one capture (see the module's docstring)."""

    def __init__(self, ports: frozenset[int], hosts: frozenset[bytes] | None = None,
                 max_line: int = 16 << 20) -> None:
        self.ports = ports
        self.hosts = hosts  # the server's addresses (4 or 16 bytes), or any
        self.max_line = max_line
        # One fragment record's content: what JSON escaping can make of it
        # (six characters a byte at worst) must stay under max_line.
        self.fragment_piece = max(max_line // 6 - 2, 1)
        self.table: dict[tuple, tuple[_Session, bool]] = {}  # 4-tuple -> (session, from client)
        self.closed: OrderedDict[tuple, None] = OrderedDict()
        self.open: dict[int, _Session] = {}  # conn -> session, in conn order
        self.count = 0
        self.last_ts = 0.0

    def packet(self, ts: float, seg: packets.Segment, out: list[bytes]) -> None:
        """Append to `out` the records one segment makes (none for other traffic)."""
        self.last_ts = ts
        found = self.table.get(seg[:4])  # (src, sport, dst, dport)
        _, _, _, _, seq, ack, flags, data, missing, ip_bytes = seg
        if found is None or flags & _SYN:
            found = self._find(ts, seg, found, out)
            if found is None:
                return
        session, side, other = found
        side.packets += 1
        side.wire += ip_bytes
        if data or missing or flags & (_SYN | _FIN):  # (not a pure ACK)
            if flags & _SYN and flags & _ACK:
                other.stream.begin(ack)
            if data or missing:
                side.reads += 1
            items = side.stream.segment(seq, data, missing, bool(flags & _SYN),
                                        bool(flags & _FIN))
            if items:
                self._give(session, side, ts, items, out)
        if flags & _ACK:
            acked = other.stream.acked(ack)
            if acked:
                self._give(session, other, ts, acked, out)
        if flags & (_FIN | _RST):
            if session.by is None:
                session.by = side.name
            if flags & _RST:
                self._close(session, ts, out)
                return
        if side.stream.finished and other.stream.finished:
            self._close(session, ts, out)

    def _find(self, ts: float, seg: packets.Segment, found: tuple | None, out: list) -> tuple | None:
        """The session of a segment that opens one, or a SYN (which may be a new
        connection on the addresses of an old one)."""
        if found is None:
            return self._new(ts, seg[:4], seg, out)
        if not seg.flags & _ACK:  # a SYN (not a SYN-ACK) on a known connection
            session, side, _ = found
            if side.stream.isn is not None and side.stream.isn != seg.seq:
                # The addresses were used again by a new connection.
                self._close(session, ts, out, error="a new connection took its addresses")
                return self._new(ts, seg[:4], seg, out)
        return found

    def end(self, out: list[bytes]) -> None:
        """Append the closes of every session still open, at the time of the
        capture's last packet."""
        for session in list(self.open.values()):
            session.by = "capture-end"
            self._close(session, self.last_ts, out)

    # --- inside ---------------------------------------------------------------

    def _new(self, ts: float, key: tuple, seg: packets.Segment, out: list) -> tuple | None:
        src, sport, dst, dport = key
        if seg.flags & packets.RST:
            return None  # a reset alone opens nothing
        if not seg.flags & packets.SYN and key in self.closed:
            return None  # the last packets of a session already closed
        to_server = self._is_server(dst, dport)
        from_server = self._is_server(src, sport)
        if to_server and from_server:  # both ends look like servers: the SYN tells
            from_server = bool(seg.flags & packets.SYN and seg.flags & packets.ACK)
            to_server = not from_server
        if not (to_server or from_server):
            return None
        if len(self.open) >= MAX_OPEN:
            self._close(next(iter(self.open.values())), ts, out,
                        error=f"more than {MAX_OPEN} connections open at once: the oldest closed")
        client_key = (src, sport) if to_server else (dst, dport)
        server_key = (dst, dport) if to_server else (src, sport)
        self.count += 1
        session = _Session(self.count, ts, client_key, self.max_line,
                           server_key[1] == IMPLICIT_TLS_PORT)
        forward = (*client_key, *server_key)
        backward = (*server_key, *client_key)
        for old in (forward, backward):
            self.closed.pop(old, None)
            stale = self.table.get(old)
            if stale is not None and not stale[0].ended:
                self._close(stale[0], ts, out, error="a new connection took its addresses")
        session.keys = (forward, backward)
        self.table[forward] = (session, session.client, session.server)
        self.table[backward] = (session, session.server, session.client)
        self.open[session.conn] = session
        out.append(stream.event_record(ts, session.conn, "open",
                                       client=packets.address(*client_key),
                                       server=packets.address(*server_key)))
        if session.tls:
            out.append(stream.event_record(ts, session.conn, "tls", how="implicit",
                                           intercepted=False))
        return self.table[key]

    def _is_server(self, ip: bytes, port: int) -> bool:
        return port in self.ports and (self.hosts is None or ip in self.hosts)

    def _give(self, session: _Session, side: _Side, ts: float, items: list, out: list) -> None:
        """Stream items of one side to records."""
        for item in items:
            if type(item) is int:
                side.bytes += item
                if not session.tls:
                    self._end_line(side, ts, out)
                    side.cut = True  # the line after the hole began in it
                out.append(stream.event_record(ts, session.conn, "gap", side=side.name,
                                               missing=item))
                continue
            side.bytes += len(item)
            if session.tls:
                continue
            if side.stream.cut_start:  # the capture began inside this stream
                side.stream.cut_start = False
                side.cut = True
            if side.cut:
                item = self._fragment(side, ts, item, out)
                if not item:
                    continue
            if session.watch is None:
                out += side.splitter.lines(ts, item)
            else:
                self._watched(session, side, ts, item, out)

    def _watched(self, session: _Session, side: _Side, ts: float, data: bytes, out: list) -> None:
        """During the login: the lines, watched for the STARTTLS exchange as
        the relay watches them (TLS.md): the client asks in its first message,
        the server's answer with "starttls": true switches both sides to TLS
        after its line."""
        if session.watch == "first":
            records = side.splitter.lines(ts, data)
            out += records
            if side is session.client and records:
                message = _message(records[0])
                if (message and message.get("class") == "starttls" and message.get("status")):
                    session.watch = "asked"
                else:
                    session.watch = None
            return
        if side is session.client:  # nothing to learn from the client now
            out += side.splitter.lines(ts, data)
            return
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            records = side.splitter.lines(ts, data[start:newline + 1])
            out += records
            start = newline + 1
            for record in records:
                message = _message(record) if b"starttls" in record else None
                if message and message.get("class") == "starttls" and "starttls" in message:
                    session.watch = None
                    if message["starttls"]:
                        session.tls = True
                        out += session.client.splitter.end(ts)
                        out.append(stream.event_record(ts, session.conn, "tls",
                                                       how="starttls", intercepted=False))
                        return  # the rest is the server's TLS
            if session.watch is None:
                break
        if start < len(data):
            out += side.splitter.lines(ts, data[start:])

    def _fragment(self, side: _Side, ts: float, data: bytes, out: list) -> bytes:
        """The end of a line whose start the capture does not have: recorded as
        an undecodable line flagged partial (never glued to other bytes, never
        taken for a message). Returns what follows it."""
        newline = data.find(b"\n")
        piece = data if newline < 0 else data[:newline]
        side.fragment.append(piece)
        side.fragment_len += len(piece)
        head = stream.data_head(ts, side.splitter.conn, side.name)
        while side.fragment_len > self.fragment_piece:  # a long one: in pieces
            held = b"".join(side.fragment)
            cut = self.fragment_piece
            out.append(stream.raw_record(head, cut, held[:cut], _OVERSIZE_PARTIAL))
            side.fragment = [held[cut:]]
            side.fragment_len = len(held) - cut
        if newline < 0:
            return b""
        held = b"".join(side.fragment)
        out.append(stream.raw_record(head, len(held) + 1, held, _PARTIAL))
        side.fragment.clear()
        side.fragment_len = 0
        side.cut = False
        return data[newline + 1:]

    def _end_line(self, side: _Side, ts: float, out: list) -> None:
        """A hole or the end: the line under way is recorded as it is, partial."""
        if side.fragment:
            held = b"".join(side.fragment)
            head = stream.data_head(ts, side.splitter.conn, side.name)
            out.append(stream.raw_record(head, len(held), held, _PARTIAL))
            side.fragment.clear()
            side.fragment_len = 0
        out += side.splitter.end(ts)

    def _close(self, session: _Session, ts: float, out: list, error: str | None = None) -> None:
        for side in (session.client, session.server):
            items = side.stream.flush()
            if items:
                self._give(session, side, ts, items, out)
            if not session.tls:
                self._end_line(side, ts, out)
        session.ended = True
        del self.open[session.conn]
        client, server = session.client, session.server
        fields = {
            "by": "error" if error else (session.by or "capture-end"),
            "bytes": {"client": client.bytes, "server": server.bytes},
            "reads": {"client": client.reads, "server": server.reads},
            "duration": round(ts - session.opened, 6),
            "packets": {"client": client.packets, "server": server.packets},
            "wire_bytes": {"client": client.wire, "server": server.wire},
        }
        if error:
            fields["error"] = error
        out.append(stream.event_record(ts, session.conn, "close", **fields))
        for key in session.keys:
            if self.table.get(key, (None,))[0] is session:
                del self.table[key]
                self.closed[key] = None
        while len(self.closed) > RECENTLY_CLOSED:
            self.closed.popitem(last=False)


def _message(record: bytes) -> dict | None:
    """The message of a data record, when it is a JSON object."""
    try:
        message = orjson.loads(record).get("msg")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return message if isinstance(message, dict) else None
