"""A certificate's subject from its DER bytes, without a library (pure).

    subject(der) -> "CN=xivo,O=Avencall"     or None when the bytes are not a certificate

The relay shows the subject of every certificate it sees in the `tls` event.
Reading it with `cryptography` would load a second OpenSSL and about 10 MB
into every relay that intercepts TLS; the subject is a few nested DER
sequences, read here in the certificate's order (as `openssl x509 -subject`
shows it), each value escaped as RFC 4514 does (`\\,` inside a value).
Whatever a peer sent, reading stops at the end of the bytes: a malformed
certificate gives None, never an exception.
"""
from __future__ import annotations

import re

# Attribute types by their DER-encoded object identifier, named as OpenSSL does.
NAMES = {
    bytes.fromhex("550403"): "CN",
    bytes.fromhex("550406"): "C",
    bytes.fromhex("550407"): "L",
    bytes.fromhex("550408"): "ST",
    bytes.fromhex("550409"): "STREET",
    bytes.fromhex("55040a"): "O",
    bytes.fromhex("55040b"): "OU",
    bytes.fromhex("550405"): "serialNumber",
    bytes.fromhex("0992268993f22c640119"): "DC",
    bytes.fromhex("0992268993f22c640101"): "UID",
    bytes.fromhex("2a864886f70d010901"): "emailAddress",
}

# DER string types and how their bytes are text.
ENCODINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
             0x1C: "utf-32-be", 0x12: "ascii", 0x1A: "ascii"}

SEQUENCE, SET, VERSION = 0x30, 0x31, 0xA0

_SPECIAL = re.compile(r'([\\,+"<>;])')


class _Malformed(Exception):
    pass


def _element(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, where its value starts, where it ends) of the element at `at`."""
    if at + 2 > end:
        raise _Malformed
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > end:
            raise _Malformed
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > end:
        raise _Malformed
    return tag, at, at + length


def _oid(encoded: bytes) -> str:
    if encoded in NAMES:
        return NAMES[encoded]
    if not encoded:
        raise _Malformed
    parts, value = [], 0
    for byte in encoded:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(n) for n in (first, parts[0] - 40 * first, *parts[1:]))


def _value(tag: int, raw: bytes) -> str:
    encoding = ENCODINGS.get(tag)
    if encoding is None:
        return "#" + raw.hex()  # not a string type: its bytes, as RFC 4514 says
    text = raw.decode(encoding, "replace")
    text = _SPECIAL.sub(r"\\\1", text).replace("\0", "\\00")
    if text.startswith((" ", "#")):
        text = "\\" + text
    return text[:-1] + "\\ " if text.endswith(" ") else text


def subject(der: bytes) -> str | None:
    """The certificate's subject, "CN=...,O=..." in its order; None if unreadable."""
    try:
        tag, start, end = _element(der, 0, len(der))  # Certificate
        if tag != SEQUENCE:
            return None
        tag, at, end = _element(der, start, end)  # tbsCertificate
        if tag != SEQUENCE:
            return None
        tag, _, after = _element(der, at, end)
        if tag == VERSION:
            at = after
        for _ in range(4):  # serialNumber, signature, issuer, validity
            _, _, at = _element(der, at, end)
        tag, at, end = _element(der, at, end)  # subject
        if tag != SEQUENCE:
            return None
        rdns = []
        while at < end:
            tag, inner, at = _element(der, at, end)  # one RelativeDistinguishedName
            if tag != SET:
                return None
            values = []
            while inner < at:
                _, pair, inner = _element(der, inner, at)  # AttributeTypeAndValue
                _, oid_start, oid_end = _element(der, pair, inner)
                value_tag, value_start, value_end = _element(der, oid_end, inner)
                values.append(f"{_oid(der[oid_start:oid_end])}="
                              f"{_value(value_tag, der[value_start:value_end])}")
            rdns.append("+".join(values))
        return ",".join(rdns)
    except (_Malformed, IndexError):
        return None
