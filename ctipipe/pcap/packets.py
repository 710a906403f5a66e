"""One captured frame to the TCP segment inside it.

Pure. `decode(linktype, frame)` finds the IP packet behind the link layer
(Ethernet with 802.1Q/QinQ tags, Linux cooked captures v1 and v2 as
`tcpdump -i any` writes them, BSD loopback/NULL, raw IPv4/IPv6), then the TCP
segment in it, and returns a `Segment`, or a reason it has none (`NOT_TCP`,
`FRAGMENT`, `CUT_HEADER`, `UNKNOWN_LINK`).
"""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

# Link types (www.tcpdump.org/linktypes.html).
NULL, ETHERNET, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2 = 0, 1, 101, 108, 113, 228, 229, 276
RAW_OLD = (12, 14)  # DLT_RAW as some systems numbered it in old files
LINKTYPES = frozenset((NULL, ETHERNET, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2, *RAW_OLD))

_VLAN = frozenset((0x8100, 0x88A8, 0x9100))  # 802.1Q, 802.1ad (QinQ), the old QinQ
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_BSD_IPV6 = frozenset((24, 28, 30))  # AF_INET6 on the BSDs, macOS
_IPV6_SKIP = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT, _IPV6_AH = 44, 51

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

# Why a frame gave no segment.
NOT_TCP, FRAGMENT, CUT_HEADER, UNKNOWN_LINK = "not TCP", "IP fragment", "cut header", "unknown link"

_TCP = struct.Struct("!HHIIBB").unpack_from
# version and header length, total length, flags and fragment offset, protocol, addresses
_IPV4 = struct.Struct("!BxH2xHxB2x4s4s").unpack_from
_ETHERNET_IPV4 = struct.Struct("!12xHBxH2xHxB2x4s4s").unpack_from  # the same behind Ethernet


class Segment(NamedTuple):
    src: bytes  # the IP address, 4 or 16 bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    data: bytes  # the payload as captured
    missing: int  # payload bytes the capture did not keep (snap length)
    ip_bytes: int  # the IP packet's length on the wire (headers included)


def ip_start(linktype: int, frame: bytes) -> int:
    """Where the IP packet begins in the frame; -1 when it holds none, -2 for
    a link type we do not read."""
    if linktype == ETHERNET:
        at = 12
        kind = frame[12] << 8 | frame[13] if len(frame) >= 14 else 0
        while kind in _VLAN and len(frame) >= at + 6:
            at += 4
            kind = frame[at] << 8 | frame[at + 1]
        return at + 2 if kind == _ETH_IPV4 or kind == _ETH_IPV6 else -1
    if linktype == LINUX_SLL2:
        return 20 if frame[:2] in (b"\x08\x00", b"\x86\xdd") else -1
    if linktype == LINUX_SLL:
        return 16 if frame[14:16] in (b"\x08\x00", b"\x86\xdd") else -1
    if linktype in (NULL, LOOP):
        if len(frame) < 4:
            return -1
        # In the capturing host's byte order (NULL): the smaller reading is the value.
        family = min(struct.unpack("<I", frame[:4])[0], struct.unpack(">I", frame[:4])[0])
        return 4 if family == 2 or family in _BSD_IPV6 else -1
    if linktype in (RAW, IPV4, IPV6) or linktype in RAW_OLD:
        return 0
    return -2


def decode(linktype: int, frame: bytes) -> Segment | str:
    """The TCP segment in a frame, or why there is none."""
    size = len(frame)
    if linktype == ETHERNET and size >= 54:  # the common case first: two unpacks
        kind, first, total, fragment, protocol, src, dst = _ETHERNET_IPV4(frame, 0)
        if kind == 0x0800 and first == 0x45 and protocol == 6 and total and not fragment & 0x3FFF:
            sport, dport, seq, ack, offset, flags = _TCP(frame, 34)
            start = 34 + (offset >> 4) * 4
            if start <= size:
                end = 14 + total
                data = frame[start:end]
                missing = end - start - len(data)
                return _new(Segment, (src, sport, dst, dport, seq, ack, flags, data,
                                      missing if missing > 0 else 0, total))
    return _decode(linktype, frame)


def _decode(linktype: int, frame: bytes) -> Segment | str:
    """decode() for every link type, IP version and header length."""
    at = ip_start(linktype, frame)
    if at < 0:
        return UNKNOWN_LINK if at == -2 else NOT_TCP
    if len(frame) < at + 20:
        return CUT_HEADER if len(frame) > at else NOT_TCP
    version = frame[at] >> 4
    if version == 4:
        first, total, fragment, protocol, src, dst = _IPV4(frame, at)
        if protocol != 6:
            return NOT_TCP
        if fragment & 0x3FFF:  # more fragments, or an offset
            return FRAGMENT
        if total == 0:  # segmentation offload on the capturing host: the frame says
            total = len(frame) - at
        tcp = at + (first & 15) * 4
        end = at + total
    elif version == 6:
        if len(frame) < at + 40:
            return CUT_HEADER
        total = 40 + (frame[at + 4] << 8 | frame[at + 5])
        following = frame[at + 6]
        src, dst = frame[at + 8:at + 24], frame[at + 24:at + 40]
        tcp = at + 40
        end = at + total
        while following != 6:
            if following == _IPV6_FRAGMENT:
                return FRAGMENT
            if len(frame) < tcp + 8:
                return CUT_HEADER
            if following in _IPV6_SKIP:
                length = (frame[tcp + 1] + 1) * 8
            elif following == _IPV6_AH:
                length = (frame[tcp + 1] + 2) * 4
            else:
                return NOT_TCP
            following = frame[tcp]
            tcp += length
    else:
        return NOT_TCP
    if len(frame) < tcp + 20:
        return CUT_HEADER
    sport, dport, seq, ack, offset, flags = _TCP(frame, tcp)
    start = tcp + (offset >> 4) * 4
    if len(frame) < start:
        return CUT_HEADER
    data = frame[start:end]
    missing = end - start - len(data)
    return _new(Segment, (src, sport, dst, dport, seq, ack, flags, data,
                          missing if missing > 0 else 0, total))


_new = tuple.__new__  # a Segment made without its keyword-argument wrapper (hot path)


def address(ip: bytes, port: int) -> str:
    """"host:port" as the relay writes it ("[::1]:5003" for IPv6)."""
    if len(ip) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, ip)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, ip)}]:{port}"
