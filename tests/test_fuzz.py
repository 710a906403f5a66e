"""Fuzzing, bounded: every stage on hostile lines and on records whose known keys
hold every wrong JSON type, in-process through the pure runner (stages/runner.Runner),
read in random pieces; one run as a real process. The relay's line splitter is
fuzzed in test_splitter.py."""
import re
import subprocess

import orjson
from hypothesis import example, given, settings, strategies as st

from ctipipe.core import stream
from ctipipe.core.paths import Expression
from ctipipe.stages import runner
from ctipipe.stages.include import Exclude, Include
from ctipipe.stages.pretty import Pretty
from ctipipe.stages.split import Split
from ctipipe.stages.stats import Stat
from ctipipe.stages.strip import SECRET_FIELDS, Strip
from helpers import WAIT, command

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=12)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([2**64, -2**63 - 1, 10**30]))  # beyond 64 bits
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12)
# Every JSON type, for a key that wants one of them; deep values orjson cannot write
# (beyond 255 levels). A value of each known key nested 1023 levels deep, as deep as
# orjson reads, is in the @example below; a message that deep (ctipretty's indented
# output of one is 4 MB, a third of a second) goes through every stage in
# test_runner.py (test_a_message_deeper_than_orjson_writes_goes_through_every_stage).
any_type = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=6), st.just([]), st.just({}), st.just([1, "x"]),
                     st.just({"client": "x", "server": None}), st.just({"client": [1]}),
                     st.integers(1, 300).map(lambda depth: "DEEP%d" % depth))
KNOWN_KEYS = ["ts", "conn", "from", "size", "msg", "raw", "raw_b64", "event", "lost", "by",
              "duration", "error", "bytes", "reads", "partial", "chunk", "client", "server"]


def encode(value) -> bytes:
    """orjson, with "DEEPn" standing for a value nested n levels deep."""
    text = stream.dumps(value)
    return re.sub(rb'"DEEP(\d+)"', lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), text)


records = st.fixed_dictionaries(
    {"ts": st.floats(0, 2e9), "conn": st.integers(1, 5), "from": st.sampled_from(["client", "server"]),
     "size": st.integers(1, 999)},
    optional={"msg": st.one_of(json_values, st.dictionaries(st.sampled_from(
        ["class", "timenow", "commandid", "replyid", "config", "password"]), json_values, max_size=5)),
              "raw": st.text(max_size=20)}).map(encode)
events = st.fixed_dictionaries({"ts": st.floats(0, 2e9), "conn": st.integers(1, 5),
                                "event": st.sampled_from(["start", "open", "close", "gap", "error", "tls", "new"])},
                               optional={"lost": st.integers(0, 10), "by": st.text(max_size=5),
                                         "bytes": st.just({"client": 1, "server": 2}),
                                         "reads": st.just({"client": 1}),
                                         "duration": st.floats(0, 10)}).map(encode)
# A record of each kind with one known key (or several) given a wrong type.
wrong_types = st.tuples(st.one_of(records, events),
                        st.dictionaries(st.sampled_from(KNOWN_KEYS), any_type, min_size=1, max_size=3)).map(
    lambda pair: encode({**orjson.loads(pair[0]), **pair[1]}) if b"[[" not in pair[0] else pair[0])
# Lines known to be hard: every stage is given all of them (the @example below).
HARD_LINES = [b"[" * 2000 + b"]" * 2000, b"1" * 400, b"1e400", b"-", b"",
              b'{"a":"\\ud800"}', b'{"a":"\xff"}', b'"text"', b"[1,2]", b"null",
              b'{"ts":1,"conn":1,"from":"client","msg":' + b"[" * 1500 + b"]" * 1500 + b"}",
              b'{"from":"client","msg":{"class":{"nested":true}}}',
              b'{"from":"client","msg":{"password":"s3cret","password":"***"}}',
              b'{"event":"close","conn":"x","bytes":"no","duration":"long"}']
hostile = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),           # anything at all
    st.sampled_from(HARD_LINES),
    json_values.map(encode))
START = b'{"ts":1.000000,"event":"start","stream":1,"producer":"ctirelay 0.3.0"}'
# Each known key but msg nested 1023 levels deep, in a record and in an event.
DEEP_KEYS = [encode({**base, key: "DEEP1023"}) for key in KNOWN_KEYS if key != "msg" for base in (
    {"ts": 1.0, "conn": 1, "from": "client", "size": 1, "msg": {"class": "x"}},
    {"ts": 1.0, "conn": 1, "event": "close", "by": "client"})]
batches = st.lists(st.one_of(records, events, wrong_types, hostile), min_size=1, max_size=25).map(
    lambda lines: [START] + lines)

STAGES = {
    "ctistrip timenow config.x": lambda tmp: Strip(["timenow", "config.x"], set()),
    "ctistrip --redact": lambda tmp: Strip([], set(SECRET_FIELDS)),
    "ctiinclude class=getlist --from server": lambda tmp: Include([Expression("class=getlist")], "server"),
    "ctiinclude --from client": lambda tmp: Include([], "client"),
    "ctiexclude commandid=5": lambda tmp: Exclude([Expression("commandid=5")]),
    "ctipretty --color always": lambda tmp: Pretty(False, True),
    "ctipretty --compact --time relative": lambda tmp: Pretty(True, False, "relative"),
    "ctipretty --time utc --tag-sessions": lambda tmp: Pretty(False, False, "utc", True),
    "ctistat": lambda tmp: Stat(False, False),
    "ctistat -n": lambda tmp: Stat(True, False),
    "ctistat -n --json": lambda tmp: Stat(True, True),
    "ctisplit": lambda tmp: Split(f"{tmp}/c", f"{tmp}/s", False),
    "ctisplit --jsonl": lambda tmp: Split(f"{tmp}/cj", f"{tmp}/sj", True),
}
FILTERS = ("ctistrip", "ctiinclude", "ctiexclude")
WARNING = re.compile(r"^line (\d+): (.*); skipped$")
NOT_A_RECORD = re.compile(r"^(not JSON \(.*\)|not UTF-8|not a JSON object)$")


def decoded(line: bytes):
    """The record a line holds (None if it is not a JSON object; blank lines aside)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is dict else None


# Each batch goes through every stage: 30 batches for each, drawn once for all.
@settings(max_examples=30, deadline=None)
@given(batch=batches, cuts=st.lists(st.integers(1, 4000), max_size=6))
@example(batch=[START, *HARD_LINES, *DEEP_KEYS], cuts=[1, 2100, 3000, 3001])
def test_every_stage_holds_up_on_any_line(batch, cuts, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp()
    for name in sorted(STAGES):
        holds_up(name, STAGES[name](tmp), batch, cuts)


def holds_up(name, stage, batch, cuts):
    data = b"\n".join(batch) + b"\n"
    pipe = runner.Runner(stage)
    output, warnings, last = b"", [], 0
    for cut in sorted(set(c for c in cuts if c < len(data))) + [len(data)]:
        out, said = pipe.feed(data[last:cut])  # read in pieces, as from a pipe
        output, warnings, last = output + out, warnings + said, cut
    out, said = pipe.end()
    output, warnings = output + out, warnings + said
    warned = {}
    for warning in warnings:
        match = WARNING.match(warning)
        assert match, (name, warning)
        warned[int(match[1])] = match[2]
    for number, line in enumerate(batch, 1):
        record = decoded(line)
        if record is None:  # not a record at all: always said, as such
            assert bool(line.strip()) == (number in warned), (name, number, line)
            assert number not in warned or NOT_A_RECORD.match(warned[number]), (name, warned[number])
        elif number in warned:  # skipped: only a record that breaks the contract's types
            assert warned[number] == stream.record_problem(record), (name, line, warned[number])
    if name.startswith(FILTERS):
        for line in output.splitlines():
            assert type(orjson.loads(line)) is dict, name  # a filter writes records only
    if name.endswith("--json"):
        for line in output.splitlines():
            assert type(orjson.loads(line)) is dict, name


def test_a_stage_process_on_hostile_lines_exits_0_with_one_warning_a_line():
    lines = [START, b"\xff\xfe", b'{"ts":1.0,"conn":1,"from":[],"size":1,"msg":{}}',
             b'{"ts":1.0,"conn":1,"from":"client","size":1,"msg":' + b"[" * 600 + b"]" * 600 + b"}",
             b'{"ts":1.0,"conn":1,"event":"close","bytes":{"client":"x"}}',
             b'{"ts":2.0,"conn":1,"from":"server","size":1,"msg":{"class":"last"}}']
    result = subprocess.run(command("ctipretty", "--compact", "--time", "none"),
                            input=b"\n".join(lines) + b"\n", capture_output=True, timeout=WAIT)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "ctipretty: line 2: not UTF-8; skipped",
        'ctipretty: line 3: "from" is a list, not a string; skipped']
    assert result.stdout.endswith(b'Server > Client\n{"class": "last"}\n')
    assert result.stdout.count(b"[") == 600
