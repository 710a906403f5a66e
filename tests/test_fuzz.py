"""Fuzzing, bounded: every stage on hostile lines (as real processes), and the
relay's line splitter on arbitrary chunkings and drops (in-process, many examples)."""
import json
import re
import subprocess

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ctipipe import stream
from ctipipe.tap import SessionTap
from helpers import WAIT, command

pytestmark = pytest.mark.heavy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12)
records = st.fixed_dictionaries(
    {"ts": st.floats(0, 2e9), "conn": st.integers(1, 5), "from": st.sampled_from(["client", "server"]),
     "size": st.integers(1, 999)},
    optional={"msg": st.one_of(json_values, st.dictionaries(
        st.sampled_from(["class", "timenow", "commandid", "replyid", "config"]), json_values, max_size=5)),
              "raw": st.text(max_size=20)}).map(orjson.dumps)
events = st.fixed_dictionaries({"ts": st.floats(0, 2e9), "conn": st.integers(1, 5),
                                "event": st.sampled_from(["open", "close", "gap", "error", "new"])},
                               optional={"lost": st.integers(0, 10), "by": st.text(max_size=5),
                                         "bytes": st.just({"client": 1, "server": 2}),
                                         "duration": st.floats(0, 10)}).map(orjson.dumps)
hostile = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),           # anything at all
    st.sampled_from([b"[" * 2000 + b"]" * 2000, b"1" * 400, b"1e400", b"-", b"",
                     b'{"a":"\\ud800"}', b'{"a":"\xff"}', b'"text"', b"[1,2]", b"null",
                     b'{"ts":1,"conn":1,"from":"client","msg":' + b"[" * 1500 + b"]" * 1500 + b"}",
                     b'{"from":"client","msg":{"class":{"nested":true}}}',
                     b'{"event":"close","conn":"x","bytes":"no","duration":"long"}']),
    json_values.map(orjson.dumps))
lines = st.lists(st.one_of(records, events, hostile), min_size=1, max_size=25)

STAGES = [["ctistrip", "timenow", "config.x"], ["ctistrip", "--redact"],
          ["ctiinclude", "class=getlist", "--from", "server"], ["ctiexclude", "commandid=5"],
          ["ctipretty", "--color", "always"], ["ctipretty", "--compact"], ["ctistat"],
          ["ctistat", "-n", "--json"], ["ctisplit", "{tmp}/c", "{tmp}/s"]]
WARNING = re.compile(r"^(\w+): line (\d+): (not JSON \(.*\)|not UTF-8|not a JSON object); skipped$")


def is_record(line: bytes) -> bool:
    """A line no stage warns about: a JSON object, or a blank line (ignored quietly)."""
    if not line.strip():
        return True
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


@pytest.mark.parametrize("argv", STAGES, ids=lambda a: " ".join(a))
@settings(max_examples=25, deadline=None)
@given(batch=lines)
def test_stages_survive_hostile_lines(argv, batch, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    argv = [a.format(tmp=tmp) for a in argv]
    data = b"\n".join(batch) + b"\n"
    result = subprocess.run(command(*argv), input=data, capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    errors = result.stderr.decode().splitlines()
    assert not any("Traceback" in e for e in errors)
    warned = set()
    for error in errors:
        match = WARNING.match(error)
        assert match and match.group(1) == argv[0], error
        warned.add(int(match.group(2)))
    assert warned == {n for n, line in enumerate(batch, 1) if not is_record(line)}
    if argv[0] in ("ctistrip", "ctiinclude", "ctiexclude") or "--json" in argv:
        for line in result.stdout.splitlines():
            assert isinstance(json.loads(line), dict)


# --- the relay's splitter ---------------------------------------------------------

def feed(max_line: int, data: bytes, cuts: list[int], drops: set[int] = frozenset()):
    """Run one direction of a session through the tap's splitter: (records, lost)."""
    session = SessionTap(1, max_line)
    side = session.client
    out: list[bytes] = []
    bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    start = 0
    for index, end in enumerate(bounds):
        chunk = data[start:end]
        start = end
        if not chunk:
            continue
        if index in drops:
            side.dropped(chunk.count(b"\n"), chunk[-1] != 10)
        else:
            side.lines(1.5, chunk, out)
    side.end(2.5, out)
    return [orjson.loads(record) for record in b"".join(out).splitlines()], session.lost


def content(record: dict) -> bytes:
    if "msg" in record:
        return orjson.dumps(record["msg"])
    return stream.content_bytes(record)


chunked = st.binary(max_size=400).flatmap(
    lambda d: st.tuples(st.just(d), st.lists(st.integers(0, len(d)), max_size=12)))
liney = st.lists(st.sampled_from([b"\n", b'{"class":"x"}', b"\xff\xfe", b"[1]", b"  ", b"ab" * 30,
                                  b'{"a":"\xc3\xa9"}', b"\r"]), max_size=30).map(b"".join).flatmap(
    lambda d: st.tuples(st.just(d), st.lists(st.integers(0, len(d)), max_size=12)))


@settings(max_examples=400, deadline=None)
@given(st.one_of(chunked, liney), st.integers(4, 64))
def test_splitter_records_give_back_every_line(case, max_line):
    data, cuts = case
    got, lost = feed(max_line, data, cuts)
    assert lost == 0
    assert sum(r["size"] for r in got) == len(data)
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


@settings(max_examples=400, deadline=None)
@given(liney, st.sets(st.integers(0, 12), max_size=6))
def test_splitter_counts_exactly_what_a_drop_loses(case, drops):
    data, cuts = case
    got, lost = feed(1 << 20, data, cuts, drops)
    total_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert len(got) + lost == total_lines
    for record in got:
        assert list(record)[:3] == ["ts", "conn", "from"]
