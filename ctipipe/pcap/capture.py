"""Capture files as they arrive: pcap and pcapng, parsed from bytes.

Pure: `Parser.feed(data)` takes the next bytes of a capture file (any cut:
a pipe's reads, a file's blocks) and returns the packets they complete, each
`(ts, linktype, frame)`; `Parser.end()` says how many bytes were left inside
an unfinished packet (a capture cut short, as when tcpdump is killed).
`Unzip` turns the bytes of a gzip-compressed capture into those of the capture.

Formats: pcap in both byte orders, micro- and nanosecond timestamps; pcapng
with several sections (each its own byte order) and several interfaces (each
its own link type and timestamp resolution). dpkt reads the same formats but
takes the first interface's link type and resolution for every packet of a
pcapng, reads only its first section, and returns a truncated last packet as
if it were whole: hence this reader (README, "Why our own capture reader").
"""
from __future__ import annotations

import struct
import zlib

# A packet larger than this is not a packet: the file is corrupt (or not a
# capture), and reading on would hold that much memory for nothing. pcapng
# allows any length; 16 MiB is far above the largest snap length in use (256 KiB).
MAX_PACKET = 16 << 20

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_BOM_LE, _BOM_BE = b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"
_OPT_TSRESOL, _OPT_TSOFFSET = 9, 14


class NotACapture(ValueError):
    """The bytes are not a pcap or pcapng file, or are corrupt past reading."""


def kind(head: bytes) -> str | None:
    """What a file is from its first bytes: "pcap", "pcapng", "gzip" or None."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    return None


class Parser:
    """The packets of one capture file, from its bytes in any cuts."""

    def __init__(self) -> None:
        self.buffer = b""
        self.format: str | None = None
        self.order = "<"
        self.unit = 1e-6  # pcap: seconds per timestamp fraction
        self.linktype = 0  # pcap: the file's
        self.interfaces: list[tuple[int, float, int]] = []  # pcapng: (linktype, unit, offset)
        self.linktypes: set[int] = set()  # every link type seen (for the caller's notices)
        self.packets = 0
        self.offset = 0  # bytes of the file consumed, for error messages

    def feed(self, data: bytes) -> list[tuple[float, int, bytes]]:
        """The packets that `data` (the file's next bytes) completes."""
        buffer = self.buffer + data if self.buffer else data
        out: list[tuple[float, int, bytes]] = []
        if self.format is None:
            if len(buffer) < 4:
                self.buffer = buffer
                return out
            found = kind(buffer)
            if found not in ("pcap", "pcapng"):
                raise NotACapture("not a pcap or pcapng file")
            self.format = found
        if self.format == "pcap":
            used = self._pcap(buffer, out)
        else:
            used = self._pcapng(buffer, out)
        self.offset += used
        self.buffer = buffer[used:]
        self.packets += len(out)
        return out

    def end(self) -> int:
        """At end of file: how many bytes were left in an unfinished header or
        packet (0 for a complete file)."""
        if self.format is None:
            raise NotACapture("empty, not a capture" if not self.buffer
                              else "too short to be a capture")
        return len(self.buffer)

    # --- pcap ---------------------------------------------------------------

    def _pcap(self, buffer: bytes, out: list) -> int:
        pos = 0
        if not self.linktypes:  # the file header: 24 bytes
            if len(buffer) < 24:
                return 0
            self.order, self.unit = PCAP_MAGICS[buffer[:4]]
            self.linktype = struct.unpack_from(self.order + "I", buffer, 20)[0] & 0x0FFFFFFF
            self.linktypes.add(self.linktype)
            pos = 24
        header = struct.Struct(self.order + "IIII").unpack_from
        unit, linktype, end = self.unit, self.linktype, len(buffer)
        append = out.append
        while pos + 16 <= end:
            seconds, fraction, captured, _ = header(buffer, pos)
            if captured > MAX_PACKET:
                raise NotACapture(f"corrupt: a packet of {captured} bytes at byte {self.offset + pos}")
            stop = pos + 16 + captured
            if stop > end:
                break
            append((seconds + fraction * unit, linktype, buffer[pos + 16:stop]))
            pos = stop
        return pos

    # --- pcapng -------------------------------------------------------------

    def _pcapng(self, buffer: bytes, out: list) -> int:
        pos, end = 0, len(buffer)
        while pos + 12 <= end:
            if buffer[pos:pos + 4] == PCAPNG_MAGIC:  # a section starts: its byte order
                bom = buffer[pos + 8:pos + 12]
                if bom not in (_BOM_LE, _BOM_BE):
                    raise NotACapture(f"corrupt pcapng section header at byte {self.offset + pos}")
                self.order = "<" if bom == _BOM_LE else ">"
                self.interfaces = []
            order = self.order
            kind_, length = struct.unpack_from(order + "II", buffer, pos)
            if length < 12 or length % 4 or length > MAX_PACKET + 64:
                raise NotACapture(f"corrupt: a pcapng block of {length} bytes at byte {self.offset + pos}")
            if pos + length > end:
                break
            body = pos + 8
            if kind_ == _EPB:
                interface, high, low, captured = struct.unpack_from(order + "IIII", buffer, body)
                self._packet(out, interface, (high << 32) | low, buffer[body + 20:body + 20 + captured])
            elif kind_ == _IDB:
                self._interface(buffer, body, pos + length - 4)
            elif kind_ == _SPB:
                original = struct.unpack_from(order + "I", buffer, body)[0]
                data = buffer[body + 4:min(body + 4 + original, pos + length - 4)]
                # No timestamp in a simple packet block: the previous packet's time.
                self._packet(out, 0, None, data)
            elif kind_ == _PB:
                interface, high, low, captured = struct.unpack_from(order + "HxxIII", buffer, body)
                self._packet(out, interface, (high << 32) | low, buffer[body + 20:body + 20 + captured])
            pos += length
        return pos

    def _interface(self, buffer: bytes, pos: int, stop: int) -> None:
        order = self.order
        linktype = struct.unpack_from(order + "H", buffer, pos)[0]
        unit, offset = 1e-6, 0
        pos += 8
        while pos + 4 <= stop:
            code, length = struct.unpack_from(order + "HH", buffer, pos)
            if code == 0:
                break
            value = buffer[pos + 4:pos + 4 + length]
            if code == _OPT_TSRESOL and length >= 1:
                exponent = value[0] & 0x7F
                unit = 2.0 ** -exponent if value[0] & 0x80 else 10.0 ** -exponent
            elif code == _OPT_TSOFFSET and length == 8:
                offset = struct.unpack(order + "q", value)[0]
            pos += 4 + (length + 3) // 4 * 4
        self.interfaces.append((linktype, unit, offset))
        self.linktypes.add(linktype)

    def _packet(self, out: list, interface: int, stamp: int | None, data: bytes) -> None:
        if interface >= len(self.interfaces):
            raise NotACapture(f"corrupt: a packet of interface {interface}, which was not described")
        linktype, unit, offset = self.interfaces[interface]
        if stamp is None:
            ts = out[-1][0] if out else self.last_ts
        else:
            ts = stamp * unit + offset
        self.last_ts = ts
        out.append((ts, linktype, data))

    last_ts = 0.0


class Unzip:
    """The bytes of a gzip-compressed file, as its compressed bytes arrive
    (several gzip members one after the other, as `cat a.gz b.gz` makes, included)."""

    def __init__(self) -> None:
        self.inflate = zlib.decompressobj(wbits=31)
        self.fed = False

    def feed(self, data: bytes) -> bytes:
        self.fed = self.fed or bool(data)
        out = []
        while data:
            try:
                out.append(self.inflate.decompress(data))
            except zlib.error as error:
                raise NotACapture(f"corrupt gzip data ({error})") from None
            data = self.inflate.unused_data
            if data:
                self.inflate = zlib.decompressobj(wbits=31)
        return b"".join(out)

    def end(self) -> bool:
        """True when the compressed data ended inside a member (cut short)."""
        return self.fed and not self.inflate.eof
