"""The line splitter on its own: reads in, records out (golden cases)."""
import base64
import json

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ctipipe.core import stream

from ctipipe.relay import splitter as splitter_module
from ctipipe.relay.splitter import Splitter

TS = 1764262479.123456


def records(splitter, *reads, end=False, raw=False):
    out = []
    for data in reads:
        out += splitter.chunk(TS, data) if raw else splitter.lines(TS, data)
    if end:
        out += splitter.end(TS)
    text = b"".join(out)
    assert all(r.endswith(b"\n") and r.count(b"\n") == 1 for r in text.splitlines(keepends=True))
    return text


HEAD = b'{"ts":1764262479.123456,"conn":3,"from":"server",'

GOLDEN = [
    # (reads, max_line, end, expected lines after HEAD)
    ([b'{"class":"x"}\n'], 100, False, [b'"size":14,"msg":{"class":"x"}}']),
    ([b'{"a": 1} \r\n'], 100, False, [b'"size":11,"msg":{"a": 1}}']),
    ([b'{"cl', b'ass":1}\n{"b"', b':2}\n'], 100, False,
     [b'"size":12,"msg":{"class":1}}', b'"size":8,"msg":{"b":2}}']),
    ([b'not json\n'], 100, False, [b'"size":9,"raw":"not json"}']),
    ([b'\xff\xfe\n'], 100, False, [b'"size":3,"raw_b64":"//4="}']),
    ([b'\n'], 100, False, [b'"size":1,"raw":""}']),
    ([b'{"a":1}\nhalf'], 100, True,
     [b'"size":8,"msg":{"a":1}}', b'"size":4,"partial":true,"raw":"half"}']),
    ([b'0123456789\n'], 4, False,
     [b'"size":4,"oversize":true,"raw":"0123"}', b'"size":4,"oversize":true,"raw":"4567"}',
      b'"size":3,"oversize":true,"raw":"89"}']),
    ([b'01234', b'567'], 4, True,
     [b'"size":4,"oversize":true,"raw":"0123"}', b'"size":4,"oversize":true,"raw":"4567"}',
      b'"size":0,"partial":true,"oversize":true,"raw":""}']),
]


@pytest.mark.parametrize("reads,max_line,end,expected", GOLDEN)
def test_golden(reads, max_line, end, expected):
    got = records(Splitter(3, "server", max_line), *reads, end=end)
    assert got == b"".join(HEAD + line + b"\n" for line in expected)
    for line in got.splitlines():
        json.loads(line)


def test_raw_chunks_are_one_record_per_read():
    got = records(Splitter(3, "server", 100), b'{"a":1}\n{"b"', b":2}\n", raw=True)
    assert got == (HEAD + b'"size":12,"chunk":true,"raw":"{\\"a\\":1}\\n{\\"b\\""}\n'
                   + HEAD + b'"size":4,"chunk":true,"raw":":2}\\n"}\n')


def test_nothing_is_held_after_a_complete_line():
    splitter = Splitter(3, "server", 100)
    splitter.lines(TS, b'{"a":1}\n')
    assert splitter.end(TS) == []


def content_lengths(text: bytes) -> list[int]:
    """The length of each record's content as written (the value of raw/raw_b64)."""
    lengths = []
    for line in text.splitlines():
        for key in (b',"raw":', b',"raw_b64":'):
            if key in line:
                lengths.append(len(line.split(key, 1)[1]) - 1)
    return lengths


@pytest.mark.parametrize("line", [b"\x01" * 20, b'"' * 50, b"\xff" * 60, "é".encode() * 40])
def test_escaping_never_makes_a_record_longer_than_the_limit(line):
    got = records(Splitter(3, "server", 60), line + b"\n")
    decoded = [json.loads(r) for r in got.splitlines()]
    assert max(content_lengths(got)) <= 60
    assert sum(r["size"] for r in decoded) == len(line) + 1
    assert b"".join(r["raw"].encode() if "raw" in r else base64.b64decode(r["raw_b64"])
                    for r in decoded) == line
    if len(decoded) > 1:
        assert all(r.get("oversize") for r in decoded)


def test_a_line_of_control_bytes_just_under_the_limit_stays_within_it():
    """15/16 of the limit, six times the limit once escaped: in pieces, none over it.
    A limit of 4 MiB keeps the default's shape (pieces of OVERSIZE_PIECE, 1 MiB,
    smaller than the limit); tests/test_memory.py feeds 15 MiB under the default."""
    limit = 4 << 20
    assert splitter_module.OVERSIZE_PIECE < limit
    splitter = Splitter(3, "server", limit)
    got = records(splitter, b"\x01" * (limit // 16 * 15) + b"\n")
    assert max(content_lengths(got)) <= limit
    assert sum(json.loads(r)["size"] for r in got.splitlines()) == limit // 16 * 15 + 1


@pytest.mark.parametrize("depth,kind", [(200, "msg"), (201, "raw"), (1000, "raw")])
def test_a_value_nested_past_200_levels_is_an_undecodable_line(depth, kind):
    line = b"[" * depth + b"]" * depth
    [record] = records(Splitter(3, "server", 1 << 20), line + b"\n").splitlines()
    assert kind in json.loads(record)


def test_brackets_inside_strings_do_not_count_as_depth():
    line = b'{"a":"' + b"[{" * 300 + b'\\"\\\\[","b":[[1]]}'
    [record] = records(Splitter(3, "server", 1 << 20), line + b"\n").splitlines()
    assert json.loads(record)["msg"]["b"] == [[1]]


# --- fuzzed: arbitrary chunkings give back every line --------------------------

def feed(max_line: int, data: bytes, cuts: list[int]) -> list[dict]:
    splitter = Splitter(1, "client", max_line)
    out: list[bytes] = []
    bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    start = 0
    for end in bounds:
        if data[start:end]:
            out += splitter.lines(1.5, data[start:end])
        start = end
    out += splitter.end(2.5)
    return [orjson.loads(record) for record in b"".join(out).splitlines()]


def content(record: dict) -> bytes:
    if "msg" in record:
        return orjson.dumps(record["msg"])
    return stream.content_bytes(record)


chunked = st.binary(max_size=400).flatmap(
    lambda d: st.tuples(st.just(d), st.lists(st.integers(0, len(d)), max_size=12)))
liney = st.lists(st.sampled_from([b"\n", b'{"class":"x"}', b"\xff\xfe", b"[1]", b"  ", b"ab" * 30,
                                  b'{"a":"\xc3\xa9"}', b"\r", b"\x01\x02", b'"\\']),
                 max_size=30).map(b"".join).flatmap(
    lambda d: st.tuples(st.just(d), st.lists(st.integers(0, len(d)), max_size=12)))


@pytest.mark.heavy
@settings(max_examples=400, deadline=None)
@given(st.one_of(chunked, liney), st.integers(4, 64))
def test_splitter_records_give_back_every_line(case, max_line):
    data, cuts = case
    got = feed(max_line, data, cuts)
    assert sum(r["size"] for r in got) == len(data)
    if max_line >= 26:
        assert all(len(orjson.dumps(r.get("raw", r.get("raw_b64", "")))) <= max_line for r in got)
    rebuilt, piece = [], b""
    for record in got:
        if record.get("oversize"):
            piece += content(record)
            if record["size"] == len(content(record)) and not record.get("partial"):
                continue  # a middle piece: the line goes on
            rebuilt.append(piece)
            piece = b""
        elif "msg" in record:
            rebuilt.append(None)  # a message: compared by value below
        else:
            rebuilt.append(content(record))
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert len(rebuilt) == len(expected)
    for want, have in zip(expected, rebuilt):
        if have is not None:
            assert have == want


def test_a_raw_chunk_too_long_once_escaped_becomes_smaller_chunks():
    got = records(Splitter(3, "server", 60), b"\x01" * 20, raw=True)
    decoded = [json.loads(r) for r in got.splitlines()]
    assert len(decoded) == 3 and all(list(r)[4:] == ["chunk", "raw"] for r in decoded)
    assert "".join(r["raw"] for r in decoded) == "\x01" * 20
