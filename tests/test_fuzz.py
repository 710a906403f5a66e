"""Fuzzing, bounded: every stage on hostile lines (as real processes). The relay's
line splitter is fuzzed in test_splitter.py."""
import json
import re
import subprocess

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from ctipipe.core import stream
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
        if error.startswith("ctistat: no session: the input ended before any session began"):
            continue  # ctistat --json says so on standard error
        match = WARNING.match(error)
        assert match and match.group(1) == argv[0], error
        warned.add(int(match.group(2)))
    assert warned == {n for n, line in enumerate(batch, 1) if not is_record(line)}
    if argv[0] in ("ctistrip", "ctiinclude", "ctiexclude") or "--json" in argv:
        for line in result.stdout.splitlines():
            assert isinstance(json.loads(line), dict)
