"""The tagged stream (docs/stream.md, version 1): writing records and reading lines.

Producers (the relay) build records as bytes directly, so a message's wire
text is embedded without being decoded and encoded again. Consumers (filters
and sinks) read lines in large blocks and decode each record with orjson.
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import sys

import orjson

# One read of a file or pipe (a stage's input, a capture): large enough that a
# busy stream is handled in big batches, and a read returns at once with
# whatever a slow stream has, so nothing waits for a batch to fill.
READ_SIZE = 1 << 18

# One socket read (the relay's pumps, the replay, the demo). Below glibc's
# 128 KiB mmap threshold, so each read's buffer is a cheap heap allocation;
# large enough that a busy stream costs few reads.
SOCKET_READ_SIZE = 1 << 16
# The longest line a reader of the stream holds (a stage, ctidiff, ctireplay):
# longer than any record the relay writes (its lines are cut at --max-line, 16
# MiB by default); a longer one, or a file with no newline, is not a capture.
MAX_LINE = 64 << 20


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
    return b"".join(raw_record_parts(head, size, data, flags))


def raw_record_parts(head: bytes, size: int, data, flags: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """raw_record in three pieces, so that a large one (a piece of an oversize
    line, `data` possibly a memoryview) is copied once less on its way out."""
    try:
        text = orjson.dumps(str(data, "utf-8"))
    except UnicodeDecodeError:
        return b'%s%d%s,"raw_b64":"' % (head, size, flags), base64.b64encode(data), b'"}\n'
    return b'%s%d%s,"raw":' % (head, size, flags), text, b"}\n"


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

def replace_message(record: dict, line: bytes) -> bytes:
    """The record's line with its `msg` (changed by a stage) encoded anew, the
    rest kept as it was (no newline).

    When the record has exactly the producer's keys with `msg` last, the first
    `,"msg":` of its line that no `{` comes before (but the record's own) is
    the message's own key: a JSON string cannot hold it (a quote inside one is
    escaped), and outside strings only an object can. Everything before it is
    then kept byte for byte. Otherwise the whole record is encoded again.
    """
    # Every rewritten line comes here: the cheapest tests first, orjson inline.
    if (len(record) == 5 and "msg" in record and "ts" in record and "conn" in record
            and "from" in record and "size" in record and next(reversed(record)) == "msg"):
        start = line.find(b',"msg":')
        if start > 0 and line.find(b"{", 1, start) < 0:
            try:
                return line[:start + 7] + orjson.dumps(record["msg"]) + b"}"
            except orjson.JSONEncodeError:
                return line[:start + 7] + dumps(record["msg"]) + b"}"
    return encode(record)


def encode(record: dict) -> bytes:
    """Encode a record a stage has changed, keeping its key order (no newline).

    `ts` keeps the producer's fixed six decimals, so a changed record reads
    like its neighbours (orjson would write the shortest form instead).
    """
    ts = record.get("ts")
    if type(ts) is not float or next(iter(record)) != "ts":
        return dumps(record)
    rest = dumps({key: value for key, value in record.items() if key != "ts"})
    return b'{"ts":%.6f%s' % (ts, b"," + rest[1:] if len(rest) > 2 else b"}")


# --- what a consumer may rely on ----------------------------------------------

_NUMBER = (int, float)
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number",
               float: "a number", bool: "true or false", type(None): "null"}
# The keys of the contract (docs/stream.md) and the types they hold; a record
# where one holds another type is skipped by a stage that cannot use it.
_KEY_TYPES = {
    "ts": (_NUMBER, "a number"), "conn": ((int,), "an integer"), "from": ((str,), "a string"),
    "size": ((int,), "an integer"), "raw": ((str,), "a string"), "raw_b64": ((str,), "a string"),
    "event": ((str,), "a string"), "lost": ((int,), "an integer"), "by": ((str,), "a string"),
    "duration": (_NUMBER, "a number"), "error": ((str,), "a string"),
    "bytes": ((dict,), "an object"), "reads": ((dict,), "an object"),
}


# Why a record whose conn is absent (or not an integer) is skipped by a stage
# that counts sessions.
NO_SESSION = 'no "conn": the record belongs to no session'


def record_problem(record: dict) -> str | None:
    """Why a record breaks the stream contract's types (`"from" is a list, not
    a string`), or None. Only for records a stage has trouble with: the
    stages do not check every record, and pass on what they need not read."""
    for key, (types, wanted) in _KEY_TYPES.items():
        value = record.get(key)
        if value is None and key not in record:
            continue
        if type(value) not in types:
            if type(value) is float and types == (int,):  # (orjson reads 2**64 as a float)
                return f'"{key}" is not an integer of 64 bits or less'
            return f'"{key}" is {_JSON_TYPES.get(type(value), "something else")}, not {wanted}'
    for key in ("bytes", "reads"):
        counts = record.get(key)
        for side, count in counts.items() if type(counts) is dict else ():
            if type(count) is not int:
                return (f'"{key}" of "{side}" is {_JSON_TYPES.get(type(count), "something else")}, '
                        f"not an integer")
    if "from" in record and "conn" not in record:  # a message belongs to a session
        return NO_SESSION
    return None


# --- what orjson cannot carry: very deep values, integers beyond 64 bits ----

# A run of this many digits may be an integer beyond 64 bits (-2**63 has 19
# digits), which orjson reads as a float and refuses to write: a line holding
# one is read again exactly, so that no stage turns 2**64 into 1.8e19. Found
# by turning every digit into 0 and looking for the run: fifteen times faster
# than the regular expression [0-9]{19}, which tries every digit.
_LONG_NUMBER = b"0" * 19
_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")

# The standard library's codec, which has neither limit, goes as deep as
# Python's recursion limit: raised to this while it works, above the 1024
# levels orjson reads (orjson writes only 254).
_EXACT_RECURSION = 4096


def may_hold_big_integer(text: bytes) -> bool:
    """Could this JSON text (a line or a block of lines) hold an integer that
    orjson does not read exactly? (A false alarm only costs a slower read.)"""
    return _LONG_NUMBER in text.translate(_DIGITS_TO_0)


@contextlib.contextmanager
def _deep():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _EXACT_RECURSION))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def exact_loads(text: bytes, pairs_hook=None) -> object:
    """JSON text decoded with every integer exact, as deep as orjson reads;
    `pairs_hook` as json.loads's object_pairs_hook (it sees duplicate keys)."""
    with _deep():
        return json.loads(text, object_pairs_hook=pairs_hook)


def dumps(value: object, option: int = 0) -> bytes:
    """orjson.dumps(value, option), or the same text from the standard
    library where orjson cannot write it (nested deeper than 254 levels, an
    integer beyond 64 bits). `option` may hold OPT_INDENT_2 and OPT_SORT_KEYS."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        pass
    indent = 2 if option & orjson.OPT_INDENT_2 else None
    with _deep():
        return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent,
                          separators=(",", ": ") if indent else (",", ":"),
                          sort_keys=bool(option & orjson.OPT_SORT_KEYS)).encode("utf-8", "surrogatepass")


# --- showing messages to people --------------------------------------------

_INDENT_SORTED = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def indented(value: object) -> bytes:
    """JSON with sorted keys, indented by 4 (the classic ctisave layout), no newline.

    The same text as json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False)
    at a fraction of its cost.
    """
    return widen(indented_2(value))


def indented_2(value: object) -> bytes:
    """JSON with sorted keys indented by 2; `widen` makes it 4, for many at once."""
    try:
        return orjson.dumps(value, option=_INDENT_SORTED)
    except orjson.JSONEncodeError:
        return dumps(value, _INDENT_SORTED)


def widen(text: bytes, exact: bool = True) -> bytes:
    """Double the indentation of indent-2 JSON texts (one or many joined by newlines).

    orjson only indents by 2. Pass k turns lines with at least 4k-2 leading
    spaces (depth k or more, given the passes before) into 4k; lines of depth
    k-1 have 4k-4 by then and are left alone. JSON strings hold no raw newline,
    so a newline followed by spaces is always indentation; the caller keeps
    any other text out (or hides its line starts).

    With exact=False the caller vouches that no two spaces follow each other
    anywhere but in indentation (it saw no "  " and no escaped space in the
    input), and one pass doubling every pair of spaces does the same job.
    """
    if not exact:
        return text.replace(b"  ", b"    ")
    depth = 1
    while (old := b"\n" + b" " * (4 * depth - 2)) in text:
        text = text.replace(old, b"\n" + b" " * (4 * depth))
        depth += 1
    return text


_DOUBLE_SPACE = re.compile(b"  ")  # re finds it several times faster than `in`


def may_hold_double_space(text: bytes) -> bool:
    """Could a string decoded from this JSON text (or these lines) hold two spaces in a row?"""
    if _DOUBLE_SPACE.search(text) is not None:
        return True
    return b"\\" in text and b"\\u0020" in text  # an escaped space; memchr first


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
