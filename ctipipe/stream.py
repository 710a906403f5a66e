"""The tagged stream (STREAM.md, version 1): writing records and reading lines.

Producers (the relay) build records as bytes directly, so a message's wire
text is embedded without being decoded and encoded again. Consumers (filters
and sinks) read lines in large blocks and decode each record with orjson.
"""
from __future__ import annotations

import base64
import os
from typing import Iterator

import orjson

SIDES = ("client", "server")

# A stage asks the kernel for this much per read: large enough that a busy
# stream is handled in big batches, and a read returns at once with whatever a
# slow stream has, so nothing waits for a batch to fill.
READ_SIZE = 1 << 18


# --- producing records -----------------------------------------------------

def data_head(ts: float, conn: int, side: str) -> bytes:
    """The shared start of every data record of one read: ts, conn, from, size key."""
    return b'{"ts":%.6f,"conn":%d,"from":"%s","size":' % (ts, conn, side.encode())


def message_record(head: bytes, size: int, wire_json: bytes) -> bytes:
    """A message record; `wire_json` is the validated JSON text, embedded as is."""
    return b'%s%d,"msg":%s}\n' % (head, size, wire_json)


def raw_record(head: bytes, size: int, data: bytes, flags: bytes = b"") -> bytes:
    """An undecodable line or raw chunk: text when it is UTF-8, base64 otherwise.

    `flags` is already-encoded extra keys, such as b',"partial":true'.
    """
    try:
        content = b',"raw":' + orjson.dumps(data.decode("utf-8"))
    except UnicodeDecodeError:
        content = b',"raw_b64":"' + base64.b64encode(data) + b'"'
    return b"%s%d%s%s}\n" % (head, size, flags, content)


def event_record(ts: float, conn: int | None, event: str, **fields: object) -> bytes:
    """An event record with keys in contract order: ts, conn, event, then the rest."""
    head = b'{"ts":%.6f' % ts
    if conn is not None:
        head += b',"conn":%d' % conn
    head += b',"event":' + orjson.dumps(event)
    if fields:
        head += b"," + orjson.dumps(fields)[1:-1]
    return head + b"}\n"


# --- consuming records -----------------------------------------------------

def read_lines(fd: int, read_size: int = READ_SIZE) -> Iterator[list[bytes]]:
    """Yield, per read, the complete lines it finished (without their newline).

    A final line without a newline is yielded at end of input. A line longer
    than one read is gathered in pieces and joined once, so a huge line costs
    its own size, not its size squared.
    """
    pieces: list[bytes] = []  # the start of an unfinished line
    while True:
        data = os.read(fd, read_size)
        if not data:
            break
        end = data.rfind(b"\n")
        if end < 0:
            pieces.append(data)
            continue
        if pieces:
            pieces.append(data[:end])
            block = b"".join(pieces)
            pieces.clear()
        else:
            block = data[:end]
        if end + 1 < len(data):
            pieces.append(data[end + 1:])
        yield block.split(b"\n")
    if pieces:
        yield [b"".join(pieces)]


def encode(record: dict) -> bytes:
    """Encode a record a stage has changed, keeping its key order (no newline).

    `ts` keeps the producer's fixed six decimals, so a changed record reads
    like its neighbours (orjson would write the shortest form instead).
    """
    ts = record.get("ts")
    if type(ts) is not float or next(iter(record)) != "ts":
        return orjson.dumps(record)
    rest = orjson.dumps({key: value for key, value in record.items() if key != "ts"})
    return b'{"ts":%.6f%s' % (ts, b"," + rest[1:] if len(rest) > 2 else b"}")


# --- showing messages to people --------------------------------------------

_INDENT_SORTED = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def indented(value: object) -> bytes:
    """JSON with sorted keys, indented by 4 (the classic ctisave layout), no newline.

    orjson only indents by 2, so each depth's indentation is widened in one
    pass per depth: pass k turns lines with at least 4k-2 leading spaces (depth
    k or more, given the passes before) into 4k. JSON strings hold no raw
    newline, so "\\n" followed by spaces is always indentation. This is the same
    text as json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False) at
    a fraction of its cost.
    """
    text = orjson.dumps(value, option=_INDENT_SORTED)
    depth = 1
    while (old := b"\n" + b" " * (4 * depth - 2)) in text:
        text = text.replace(old, b"\n" + b" " * (4 * depth))
        depth += 1
    return text


def one_line(value: object) -> bytes:
    """JSON with sorted keys on one line."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_bytes(record: dict) -> bytes | None:
    """The bytes of an undecodable line or raw chunk (None for other records)."""
    if "raw" in record:
        return str(record["raw"]).encode("utf-8", "surrogatepass")
    if "raw_b64" in record:
        try:
            return base64.b64decode(record["raw_b64"], validate=True)
        except (ValueError, TypeError):
            return None
    return None
