"""The line splitter on its own: reads in, records out (golden cases)."""
import json

import pytest

from ctipipe.splitter import Splitter

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
    assert got == (HEAD + b'"size":12,"raw":"{\\"a\\":1}\\n{\\"b\\""}\n'
                   + HEAD + b'"size":4,"raw":":2}\\n"}\n')


def test_nothing_is_held_after_a_complete_line():
    splitter = Splitter(3, "server", 100)
    splitter.lines(TS, b'{"a":1}\n')
    assert splitter.end(TS) == []
