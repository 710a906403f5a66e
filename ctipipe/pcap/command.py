"""ctipcap: packet captures (tcpdump, Wireshark, tshark) read back as the
tagged stream the relay would have written for their CTI sessions.

The reading is pure and lives beside this module: `capture` (the file
formats), `packets` (link, IP and TCP headers), `reassembly` (one TCP
direction), `sessions` (connections to records). This module only opens the
files, moves bytes and says what went wrong.
"""
from __future__ import annotations

import os
import signal
import socket
import stat
import time

from ctipipe import __version__
from ctipipe.core import cli, stream
from ctipipe.pcap import capture, packets
from ctipipe.pcap.sessions import IMPLICIT_TLS_PORT, Sessions

PROG = "ctipcap"

# One read of a capture (a live pipe returns at once with whatever tcpdump
# wrote, so a packet is never held for a batch).
READ_SIZE = stream.READ_SIZE

# The CTI server's ports when none is given: the plain port (STARTTLS from
# XiVO 15.20) and the old implicit-TLS port.
DEFAULT_PORTS = (5003, IMPLICIT_TLS_PORT)

# Lines longer than this are recorded in pieces, as the relay's default --max-line.
MAX_LINE = 16 << 20

EXAMPLE = """\
ctipcap site.pcap | ctipretty                 # a capture's CTI sessions, message by message
ctipcap ticket.pcapng.gz --port 5003 | ctistat -n
tcpdump -i any -U -w - port 5003 | ctipcap -  # live
"""

DESCRIPTION = """\
Read packet captures (pcap or pcapng, gzip-compressed or not; - is standard
input) and write the tagged stream of their CTI sessions: one session per TCP
connection to the server's port, the messages of each side in order with the
capture's times, gaps where the capture lost bytes, and a close record with
the bytes, segments, packets and IP bytes of each side. Files are read in
order, as one capture."""


class _Input:
    """One capture file, its first bytes already read to know what it is."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "-":
            self.fd = 0
            if os.isatty(0):
                raise _BadInput("standard input is a terminal: give a capture file, "
                                "or pipe one (tcpdump -U -w - ... | ctipcap -)")
        else:
            self.fd = os.open(name, os.O_RDONLY)
            if stat.S_ISDIR(os.fstat(self.fd).st_mode):
                raise _BadInput(f"{name}: a directory, not a capture")
        self.first = b""
        while len(self.first) < 4:
            data = os.read(self.fd, READ_SIZE)
            if not data:
                break
            self.first += data
        self.unzip = capture.Unzip() if capture.kind(self.first) == "gzip" else None
        head = self.first
        if self.unzip is not None:
            try:
                head = capture.Unzip().feed(self.first)
            except capture.NotACapture as error:
                raise _BadInput(f"{name}: {error}") from None
            if len(head) < 4 and len(self.first) >= READ_SIZE:
                head = b"????"  # (a gzip file whose first block yields nothing: let it come)
        if capture.kind(head) not in ("pcap", "pcapng") and (len(head) >= 4 or self.unzip is None):
            what = "empty" if not self.first else "not a pcap or pcapng capture"
            raise _BadInput(f"{name}: {what}")

    def blocks(self, before_read):
        """The file's bytes (uncompressed), block by block; `before_read` runs
        before each read that may wait."""
        data = self.first
        self.first = b""
        while data:
            yield self.unzip.feed(data) if self.unzip is not None else data
            before_read()
            data = os.read(self.fd, READ_SIZE)

    def close(self) -> None:
        if self.fd != 0:
            os.close(self.fd)


class _BadInput(Exception):
    """Not a capture: one line, exit status 2."""


class _Output:
    """Records gathered per block read, written in one go."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def flush(self) -> None:
        if self.records:
            data = b"".join(self.records)
            self.records.clear()
            cli.write_all(1, data)


def server_option(text: str) -> tuple[str, int | None]:
    """--server HOST[:PORT] ("[::1]:5003", "::1", "xivo:5003", "10.0.0.1")."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None:
        port = cli.server_port(port)
    return cli.host(host), port


def _addresses(host: str) -> frozenset[bytes]:
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise cli.CommandError(f"cannot resolve {host}: {error.strerror}") from None
    return frozenset(socket.inet_pton(family, info[0].split("%")[0])
                     for family, _, _, _, info in found)


# How many of a capture's other TCP ports are named when none is the server's.
OTHER_PORTS_SAID = 5


def _run(args, inputs: list[_Input], out: _Output) -> int:
    ports = set(args.port or ())
    hosts = None
    if args.server:
        host, port = args.server
        hosts = _addresses(host)
        if port is not None:
            ports.add(port)
    ports = frozenset(ports or DEFAULT_PORTS)
    sessions = Sessions(ports, hosts, MAX_LINE)
    skipped: dict[str, int] = {}
    unknown: dict[int, int] = {}
    others: dict[int, int] = {}  # TCP packets on other ports, by the connection's lower port
    read_any = False  # a packet of a link type we read
    started = False
    decode, packet = packets.decode, sessions.packet
    records = out.records
    try:
        for source in inputs:
            parser = capture.Parser()
            try:
                for block in source.blocks(out.flush):
                    found = parser.feed(block)
                    if found and not started:
                        records.append(_start(found[0][0], args, ports))
                        started = True
                    for ts, linktype, frame in found:
                        segment = decode(linktype, frame)
                        if type(segment) is str:
                            if segment == packets.UNKNOWN_LINK:
                                unknown[linktype] = unknown.get(linktype, 0) + 1
                            else:
                                read_any = True
                                skipped[segment] = skipped.get(segment, 0) + 1
                            continue
                        read_any = True
                        if segment.dport in ports or segment.sport in ports:
                            packet(ts, segment, records)
                        else:  # (the lower port of a connection is most likely its server's)
                            port = min(segment.sport, segment.dport)
                            others[port] = others.get(port, 0) + 1
                left = parser.end()
                if source.unzip is not None and source.unzip.end():
                    left = left or 1
                if left:
                    cli.report(PROG, f"{source.name}: the capture ends inside a packet (cut short, "
                                     f"as when tcpdump is killed): the sessions are recorded up to "
                                     f"the cut")
            except capture.NotACapture as error:
                if not parser.packets and not started:
                    raise _BadInput(f"{source.name}: {error}") from None
                cli.report(PROG, f"{source.name}: {error} after {parser.packets} packets: "
                                 f"the sessions are recorded up to there")
    except KeyboardInterrupt:
        pass  # Ctrl-C on a file being read: what was read is recorded, then done
    if not started:
        records.append(_start(None, args, ports))
    sessions.end(records)
    out.flush()
    for linktype, count in unknown.items():
        cli.report(PROG, f"{count} packets of link type {linktype} skipped: not a link type "
                         f"ctipcap reads (Ethernet, Linux cooked v1/v2, loopback, raw IP)")
    if unknown and not read_any:
        return cli.Exit.USAGE
    if skipped.get(packets.FRAGMENT):
        cli.report(PROG, f"{skipped[packets.FRAGMENT]} IP fragments were not reassembled: "
                         f"bytes they held show as gaps")
    if skipped.get(packets.CUT_HEADER):
        cli.report(PROG, f"{skipped[packets.CUT_HEADER]} packets were cut before the end of "
                         f"their TCP header (snap length too short) and skipped")
    if not sessions.count and others:
        # Nothing recognisable: most likely the CTI server listens on another port.
        busiest = sorted(others.items(), key=lambda item: -item[1])[:OTHER_PORTS_SAID]
        seen = ", ".join(f"{port} ({count} packets)" for port, count in busiest)
        cli.report(PROG, f"no TCP connection on port {' or '.join(map(str, sorted(ports)))} "
                         f"in the capture; its busiest TCP ports: {seen}: give the server's "
                         f"with --port")
        return cli.Exit.USAGE
    return cli.Exit.OK


def _start(ts: float | None, args, ports: frozenset[int]) -> bytes:
    """The start record: at the capture's first packet (now, for a capture without one)."""
    fields = {"stream": 1, "producer": f"{PROG} {__version__}", "files": args.files,
              "ports": sorted(ports)}
    if args.server:
        fields["server"] = args.server_text
    return stream.event_record(ts if ts is not None else time.time(), None, "start", **fields)


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, DESCRIPTION, EXAMPLE)
    parser.add_argument("files", nargs="+", metavar="FILE", help="a capture (- is standard input)")
    parser.add_argument("--port", type=cli.server_port, action="append",
                        help="the CTI server's port (repeat for several; default 5003 and "
                             f"{IMPLICIT_TLS_PORT}, the latter as implicit TLS)")
    parser.add_argument("--server", metavar="HOST[:PORT]",
                        help="only connections to this server (its address, and PORT when given)")
    args = parser.parse_args(argv)
    args.server_text = args.server
    if args.server:
        try:
            args.server = server_option(args.server)
        except Exception as error:  # noqa: BLE001 - argparse's own errors are one line
            parser.error(f"--server {args.server}: {error}")
    if args.files.count("-") > 1:
        parser.error("standard input (-) can be read only once")

    def body() -> int:
        inputs: list[_Input] = []
        try:
            try:
                for name in args.files:
                    inputs.append(_Input(name))
                if "-" in args.files and stat.S_ISFIFO(os.fstat(0).st_mode):
                    # Reading a pipe (tcpdump -w - | ctipcap -): Ctrl-C reaches tcpdump
                    # too, which ends the capture; we end at its end of file.
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                return _run(args, inputs, _Output())
            except _BadInput as error:
                cli.report(PROG, f"error: {error}")
                return cli.Exit.USAGE
        finally:
            for source in inputs:
                source.close()
    return cli.guarded(PROG, body, debug=args.debug)
