"""Memory that is a property of the relay, not of what peers send: what one long
line costs, how many sessions may sit in their handshakes, and memory given back
after a burst. In-process checks of the mechanisms first, then (heavy) the relay
process's resident memory, read from /proc as tests/test_reliability.py reads it.
The full figures are in tests/bench/memory_bench.py and README."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest

from helpers import LOCALHOST, WAIT, Relay, recv_all
from ctipipe.relay.splitter import Splitter

TS = 1764262479.5
READ = 1 << 16


def held_and_emitted(line_bytes: bytes, size: int, max_line: int = 16 << 20) -> tuple[int, int]:
    """Feed an unfinished line read by read; the most bytes of records one read
    produced, and how many records came out before the line ended."""
    splitter = Splitter(1, "client", max_line)
    largest, count = 0, 0
    chunk = line_bytes * (READ // len(line_bytes))
    for _ in range(size // READ):
        out = splitter.lines(TS, chunk)
        largest = max(largest, sum(map(len, out)))
        count += sum(part.endswith(b"\n") for part in out)
    return largest, count


def test_a_line_of_control_bytes_goes_out_as_it_comes():
    """15 MiB of \\x01 under a 16 MiB limit: 90 MiB once escaped. Its pieces go out
    while it is read, no read adding more than the limit's worth of records."""
    largest, count = held_and_emitted(b"\x01", 15 << 20)
    assert count > 0
    assert largest <= 16 << 20


def test_a_long_json_like_line_is_still_held_whole():
    """Text that may yet be JSON is held up to the limit, as before."""
    largest, count = held_and_emitted(b"a", 4 << 20)
    assert count == 0


def test_pieces_of_a_long_line_hold_at_most_a_piece_once_escaped():
    splitter = Splitter(1, "client", 16 << 20)
    out = []
    for _ in range((3 << 20) // READ):
        out += splitter.lines(TS, b"\x01" * READ)
    out += splitter.lines(TS, b"\n") + splitter.end(TS)
    records = [orjson.loads(line) for line in b"".join(out).splitlines()]
    assert all(len(json.dumps(r["raw"])) <= (1 << 20) + 2 for r in records)
    assert sum(r["size"] for r in records) == (3 << 20) + 1
    assert "".join(r["raw"] for r in records) == "\x01" * (3 << 20)
