"""Crafted packet captures for the ctipcap tests: packets built with dpkt,
files written here by hand from the formats' specifications (pcap in both
byte orders and both resolutions, pcapng with several sections and
interfaces), so that the reader under test is checked against an independent
writer."""
from __future__ import annotations

import socket
import struct

import dpkt

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
CLIENT6, SERVER6 = "fd00::1", "fd00::2"
CPORT, SPORT = 40000, 5003

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def frame(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int,
          data: bytes = b"", *, vlans: tuple = (), link: str = "ether") -> bytes:
    """One TCP segment in a frame: Ethernet (with VLAN tags), or raw IP."""
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq % (1 << 32), ack=ack % (1 << 32),
                       flags=flags, data=data)
    if ":" in src:
        ip = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src),
                          dst=socket.inet_pton(socket.AF_INET6, dst), nxt=6, hlim=64,
                          data=tcp, plen=len(bytes(tcp)))
        kind = 0x86DD
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, data=tcp)
        ip.len = 20 + len(bytes(tcp))
        kind = 0x0800
    if link == "raw":
        return bytes(ip)
    header = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for tpid, vid in vlans:
        header += struct.pack("!HH", tpid, vid)
    return header + struct.pack("!H", kind) + bytes(ip)


class Talk:
    """A TCP connection's packets, with the sequence numbers kept for us."""

    def __init__(self, *, client=(CLIENT, CPORT), server=(SERVER, SPORT), cisn=1000,
                 sisn=5000, t0=1700000000.0, step=0.001, **frame_options) -> None:
        self.client, self.server = client, server
        self.seq = {"client": cisn, "server": sisn}
        self.isn = dict(self.seq)
        self.t = t0
        self.step = step
        self.options = frame_options
        self.packets: list[tuple[float, bytes]] = []

    def _ends(self, side):
        return (self.client, self.server) if side == "client" else (self.server, self.client)

    def _other(self, side):
        return "server" if side == "client" else "client"

    def frame(self, side, seq, flags, data=b"", ack=None) -> bytes:
        (src, sport), (dst, dport) = self._ends(side)
        ack = self.seq[self._other(side)] if ack is None else ack
        return frame(src, sport, dst, dport, seq, ack, flags, data, **self.options)

    def add(self, raw: bytes, t: float | None = None) -> None:
        self.t = self.t + self.step if t is None else t
        self.packets.append((self.t, raw))

    def handshake(self) -> "Talk":
        c, s = self.seq["client"], self.seq["server"]
        self.add(self.frame("client", c, SYN, ack=0))
        self.add(self.frame("server", s, SYN | ACK, ack=c + 1))
        self.seq["client"] += 1
        self.seq["server"] += 1
        self.add(self.frame("client", self.seq["client"], ACK))
        return self

    def send(self, side: str, data: bytes, *, keep: bool = True, ack: bool = False) -> bytes:
        """A data segment from side (added unless keep=False); returns its frame."""
        raw = self.frame(side, self.seq[side], PSH | ACK, data)
        self.seq[side] += len(data)
        if keep:
            self.add(raw)
        if ack:
            self.add(self.frame(self._other(side), self.seq[self._other(side)], ACK))
        return raw

    def ack(self, side: str) -> None:
        """A pure ACK from side, acknowledging everything the other sent."""
        self.add(self.frame(side, self.seq[side], ACK))

    def fin(self, side: str) -> None:
        self.add(self.frame(side, self.seq[side], FIN | ACK))
        self.seq[side] += 1

    def rst(self, side: str) -> None:
        self.add(self.frame(side, self.seq[side], RST))


def pcap(packets, *, order: str = "<", nano: bool = False, linktype: int = 1,
         snaplen: int = 262144) -> bytes:
    """A pcap file; packets longer than snaplen are cut as tcpdump -s cuts them."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in packets:
        seconds = int(ts)
        fraction = round((ts - seconds) * (1e9 if nano else 1e6))
        kept = data[:snaplen]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(kept), len(data)) + kept)
    return b"".join(out)


def _block(order: str, kind: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def pcapng_section(interfaces, packets, *, order: str = "<") -> bytes:
    """One pcapng section: interfaces are (linktype, tsresol exponent or None),
    packets (interface, ts, data)."""
    out = [_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, resolution in interfaces:
        options = b""
        if resolution is not None:
            options = struct.pack(order + "HH", 9, 1) + bytes([resolution]) + b"\x00" * 3
            options += struct.pack(order + "HH", 0, 0)
        out.append(_block(order, 1, struct.pack(order + "HHI", linktype, 0, 262144) + options))
    for interface, ts, data in packets:
        resolution = interfaces[interface][1]
        units = round(ts * 10 ** (6 if resolution is None else resolution))
        out.append(_block(order, 6, struct.pack(order + "IIIII", interface, units >> 32,
                                                units & 0xFFFFFFFF, len(data), len(data)) + data))
    return b"".join(out)


def line(message: str) -> bytes:
    return message.encode() + b"\n"
