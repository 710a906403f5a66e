"""The pure stage runner (stages/runner.Runner): bytes in, output and warnings out,
tested as tables in-process; the golden files go through it too."""
import json
import os
import time
from pathlib import Path

import pytest

from ctipipe.core import cli
from ctipipe.check.command import Check
from ctipipe.core.paths import Expression
from ctipipe.stages import runner
from ctipipe.stages.include import Exclude, Include
from ctipipe.stages.pretty import Pretty
from ctipipe.stages.split import Split
from ctipipe.stages.stats import Stat
from ctipipe.stages.strip import SECRET_FIELDS, Strip

GOLDEN = Path(__file__).parent / "golden"
SESSION = (GOLDEN / "session.jsonl").read_bytes()
RECORD = b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":{"class":"ok"}}'


def run(stage, *reads: bytes, cut: bool = False) -> tuple[bytes, list[str]]:
    """Everything a Runner writes and warns for these reads, then the end of input."""
    pipe = runner.Runner(stage)
    output, warnings = b"", []
    for data in reads:
        out, said = pipe.feed(data)
        output, warnings = output + out, warnings + said
    out, said = pipe.end(cut=cut)
    return output + out, warnings + said


class Echo(runner.Stage):
    """Writes each record's line as it came, and a summary at the end."""

    def handle(self, record, line):
        return line

    def finish(self):
        return b"done\n"


# --- lines, reads and warnings ------------------------------------------------------

@pytest.mark.parametrize("reads,output,warnings", [
    # a line cut across reads is one line; the last one needs no newline
    ([b'{"a":', b'1}\n{"b"', b":2}"], b'{"a":1}\n{"b":2}\ndone\n', []),
    # blank lines are quiet; the others are numbered across reads
    ([b'{"a":1}\n\n  \nbad\n', b'[1]\n"x"\n\xff\n{"b":2}\n'], b'{"a":1}\n{"b":2}\ndone\n',
     ["line 4: not JSON (unexpected character, expected a JSON value: line 1 column 1 (char 0))"
      "; skipped", "line 5: not a JSON object; skipped", "line 6: not a JSON object; skipped",
      "line 7: not UTF-8; skipped"]),
    # nothing at all: only the summary
    ([], b"done\n", []),
    ([b"\n\n"], b"done\n", []),
])
def test_reads_become_lines_and_warnings(reads, output, warnings):
    assert run(Echo(), *reads) == (output, warnings)


def test_a_stop_in_the_middle_drops_the_unfinished_line():
    assert run(Echo(), b'{"a":1}\n{"b":', cut=True) == (b'{"a":1}\ndone\n', [])


def test_one_write_per_read_holds_every_complete_line_of_it():
    pipe = runner.Runner(Echo())
    assert pipe.feed(b'{"a":1}\n{"b":2}\n{"c"') == (b'{"a":1}\n{"b":2}\n', [])
    assert pipe.feed(b":3}\n") == (b'{"c":3}\n', [])
    assert pipe.end() == (b"done\n", [])


def test_past_the_warning_limit_lines_are_counted():
    data = RECORD + b"\n" + b"bad\n" * (runner.MAX_WARNINGS + 5)
    output, warnings = run(Echo(), data)
    assert len(warnings) == runner.MAX_WARNINGS + 2
    assert warnings[-2] == "more malformed lines; counting them without a message each"
    assert warnings[-1] == f"{runner.MAX_WARNINGS + 5} malformed lines in all"


def test_a_line_over_the_bound_is_said_at_once_and_skipped():
    pipe = runner.Runner(Echo(), max_line=1 << 20)
    out, said = pipe.feed(RECORD + b"\n" + b"x" * (1 << 20) + b"x")
    assert out == RECORD + b"\n" and said == ["line 2: longer than 1 MiB; skipped"]
    assert pipe.feed(b"xx\n" + RECORD + b"\n") == (RECORD + b"\n", [])


def test_several_inputs_number_lines_on_and_each_ends_its_last_line():
    pipe = runner.Runner(Echo(), "a.jsonl")
    assert pipe.feed(b'{"a":1}\n{"b":2}') == (b'{"a":1}\n', [])
    assert pipe.next_input("b.jsonl") == (b'{"b":2}\n', [])
    assert pipe.feed(b"bad\n" + RECORD + b"\n") == (
        RECORD + b"\n", ["line 3: not JSON (unexpected character, expected a JSON value: line 1 "
                         "column 1 (char 0)); skipped"])


# --- an input that is not a tagged stream --------------------------------------------

CLASSIC = b'{\n    "class": "login_id",\n    "userlogin": "alice"\n}\n{\n    "class": "x"\n}\n'


@pytest.mark.parametrize("data,says", [
    (CLASSIC, "it looks like a classic ctisave file (one side's messages as indented JSON), "
              "which ctidiff reads (ctidiff old/cti-server new/cti-server)"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00\n\x00\x00", "it is binary data"),
    (b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
     "its first lines are not JSON records"),
    (b"[1]\n2\n\"three\"\nnull\n[]\n" + RECORD + b"\n", "its first lines are not JSON records"),
    (b"\xff\xfe\n", "it is binary data"),
])
def test_an_input_whose_first_lines_hold_no_record_is_said_once_with_status_2(data, says):
    with pytest.raises(cli.CommandError) as raised:
        run(Echo(), data)
    assert str(raised.value) == f"standard input is not a tagged stream (as ctirelay writes): {says}"
    assert raised.value.status == cli.Exit.USAGE


def test_a_stream_whose_first_lines_are_damaged_still_goes_through_with_warnings():
    data = b"\n".join([b"cut off", b"", b"[1]", b"x", b"y", RECORD]) + b"\n"
    output, warnings = run(Echo(), data)
    assert output == RECORD + b"\ndone\n"
    assert [w.split(":")[0] for w in warnings] == ["line 1", "line 3", "line 4", "line 5"]


def test_each_input_must_be_a_stream_and_its_name_is_said():
    pipe = runner.Runner(Echo(), "a.jsonl")
    pipe.feed(RECORD + b"\n")
    pipe.next_input("save/c")
    with pytest.raises(cli.CommandError, match=r"^save/c is not a tagged stream .*classic ctisave"):
        pipe.feed(CLASSIC)


def test_a_first_line_too_long_is_not_a_verdict():
    # `ctipretty < /dev/zero`: said at once, then only Ctrl-C ends it (exit 0)
    pipe = runner.Runner(Echo(), max_line=1 << 20)
    assert pipe.feed(b"\x00" * ((1 << 20) + 1)) == (b"", ["line 1: longer than 1 MiB; skipped"])
    assert pipe.end(cut=True) == (b"done\n", [])


# --- the golden files, in-process ---------------------------------------------------

# expected output -> (input in tests/golden, the stage); TZ=UTC for local time
GOLDEN_CASES = {
    "strip.expected": ("session.jsonl", lambda: Strip(["timenow", "config.lastcall"], set())),
    "include.expected": ("session.jsonl", lambda: Include(
        [Expression("class=getlist"), Expression("commandid=5")], None)),
    "include-server.expected": ("session.jsonl", lambda: Include([], "server")),
    "exclude.expected": ("session.jsonl", lambda: Exclude([Expression("class=getlist")])),
    "pretty.expected": ("session.jsonl", lambda: Pretty(False, False)),
    "pretty-compact.expected": ("session.jsonl", lambda: Pretty(True, False)),
    "stat.expected": ("session.jsonl", lambda: Stat(False, False)),
    "stat-network.expected": ("session.jsonl", lambda: Stat(True, False)),
    "stat-json.expected": ("session.jsonl", lambda: Stat(False, True)),
    "pretty-tls.expected": ("tls-login.jsonl", lambda: Pretty(False, False)),
    "pretty-tls-compact.expected": ("tls-login.jsonl", lambda: Pretty(True, False)),
    "pretty-tls-relative.expected": ("tls-login.jsonl", lambda: Pretty(True, False, "relative")),
    "pretty-tls-none-tagged.expected": ("tls-login.jsonl", lambda: Pretty(True, False, "none", True)),
    "stat-tls.expected": ("tls-login.jsonl", lambda: Stat(False, False)),
    "stat-tls-network.expected": ("tls-login.jsonl", lambda: Stat(True, False)),
    "stat-tls-json.expected": ("tls-login.jsonl", lambda: Stat(False, True)),
    "pretty-hostile.expected": ("hostile.jsonl", lambda: Pretty(False, False)),
    "pretty-hostile-compact.expected": ("hostile.jsonl", lambda: Pretty(True, False)),
}


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("expected", sorted(GOLDEN_CASES))
@pytest.mark.parametrize("read_size", [1 << 18, 7])
def test_golden(expected, read_size, utc):
    source, make = GOLDEN_CASES[expected]
    data = (GOLDEN / source).read_bytes()
    output, warnings = run(make(), *(data[i:i + read_size] for i in range(0, len(data), read_size)))
    assert warnings == []
    assert output.decode() == (GOLDEN / expected).read_text()


def test_split_golden_layout(tmp_path):
    client, server = tmp_path / "c", tmp_path / "s"
    output, warnings = run(Split(str(client), str(server), False), SESSION)
    assert (output, warnings) == (b"", [])
    expected = [json.loads(line)["msg"] for line in SESSION.splitlines() if b'"from":"client"' in line]
    assert client.read_text() == "".join(json.dumps(m, indent=4, sort_keys=True, ensure_ascii=False)
                                         + "\n" for m in expected)
    assert os.stat(server).st_mode & 0o777 == 0o600


# --- what every stage does with records it cannot use, deep and big values -----------------

def every_stage(tmp_path):
    """One of each stage, fresh."""
    return {
        "ctistrip": Strip(["timenow", "config.x"], set()),
        "ctistrip --redact": Strip([], set(SECRET_FIELDS)),
        "ctiinclude": Include([Expression("class=ok")], None),
        "ctiexclude": Exclude([Expression("class=nope")]),
        "ctipretty": Pretty(False, False),
        "ctipretty --compact --time relative": Pretty(True, False, "relative"),
        "ctisplit": Split(str(tmp_path / "c"), str(tmp_path / "s"), False),
        "ctisplit --jsonl": Split(str(tmp_path / "cj"), str(tmp_path / "sj"), True),
        "ctistat": Stat(False, False),
        "ctistat -n": Stat(True, False),
        "ctistat --json": Stat(False, True),
    }


AFTER = b'{"ts":2.000000,"conn":1,"from":"server","size":3,"msg":{"class":"ok","after":true}}'


DEEP_LIST = b"[" * 1023 + b"]" * 1023


@pytest.mark.parametrize("conn,says", [
    (b"{}", '"conn" is an object, not an integer'), (b"[1]", '"conn" is a list, not an integer'),
    (DEEP_LIST, '"conn" is a list, not an integer'), (b'"5"', '"conn" is a string, not an integer'),
    (b"null", '"conn" is null, not an integer'), (b"true", '"conn" is true or false, not an integer'),
    (b"1.5", '"conn" is not an integer of 64 bits or less'),
    (b"99999999999999999999999", '"conn" is not an integer of 64 bits or less'),
    (None, 'no "conn": the record belongs to no session'),
])
@pytest.mark.parametrize("name", ["ctistat", "ctistat --json", "cticheck", "cticheck --json"])
def test_a_conn_that_names_no_session_is_skipped_by_the_stages_that_count_sessions(name, conn, says):
    """The stream's conn is an integer: a session-keeping stage skips a record whose
    conn is anything else or absent (an object, a list 1023 levels deep: a
    RecursionError before; a string, even "1") with a warning, and sees one session,
    not two, as ctireport does."""
    stage = {"ctistat": Stat(False, False), "ctistat --json": Stat(False, True),
             "cticheck": Check("", "text"), "cticheck --json": Check("", "json")}[name]
    bad = (b'{"ts":1.0,"from":"client","size":1,"msg":{"class":"ok"}}' if conn is None else
           b'{"ts":1.0,"conn":' + conn + b',"from":"client","size":1,"msg":{"class":"ok"}}')
    output, warnings = run(stage, b"\n".join([RECORD, bad, AFTER]) + b"\n")
    assert warnings == [f"line 2: {says}; skipped"], warnings
    if name == "ctistat":
        assert output.count(b"=== Session ") == 1, output
    elif name == "cticheck":
        assert output.count(b"=== session ") == 1, output


@pytest.mark.parametrize("bad,says", [
    (b'{"ts":1.0,"conn":1,"from":[],"size":1,"msg":{"class":"ok"}}', '"from" is a list, not a string'),
    (b'{"ts":1.0,"conn":{},"from":"client","size":1,"msg":{"class":"ok"}}', '"conn" is an object, not an integer'),
    (b'{"ts":1.0,"conn":1,"from":{},"size":1,"raw":"x"}', '"from" is an object, not a string'),
    (b'{"ts":1.0,"conn":1,"event":"close","bytes":{"client":"10","server":1},"reads":{"client":1}}',
     '"bytes" of "client" is a string, not an integer'),
    (b'{"ts":1.0,"conn":1,"event":"close","bytes":{"client":1},"reads":[1]}', '"reads" is a list, not an object'),
    (b'{"ts":1.0,"conn":1,"event":"close","bytes":null}', '"bytes" is null, not an object'),
])
def test_a_record_a_stage_cannot_use_is_skipped_with_a_warning_and_the_stage_goes_on(bad, says, tmp_path):
    for name, stage in every_stage(tmp_path).items():
        output, warnings = run(stage, b"\n".join([RECORD, bad, AFTER]) + b"\n")
        assert all(w == f"line 2: {says}; skipped" for w in warnings), (name, warnings)
        if name.startswith("ctipretty"):
            assert b'"after": true' in output, name
        elif name in ("ctistrip", "ctiinclude", "ctiexclude"):
            assert output.endswith(AFTER + b"\n"), name
        elif name == "ctistat --json":
            [one] = [s for s in map(json.loads, output.splitlines()) if s.get("conn") == 1]
            assert one["messages"]["server"] == {"ok": 1}


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[1]" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [254, 255, 600, 1023])
def test_a_message_deeper_than_orjson_writes_goes_through_every_stage(depth, tmp_path):
    message = nested(depth)
    deep = b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":%s}' % message
    for name, stage in every_stage(tmp_path).items():
        output, warnings = run(stage, b"\n".join([RECORD, deep, AFTER]) + b"\n")
        assert warnings == [], name
        if name.startswith(("ctistrip", "ctiexclude")):
            assert output == b"\n".join([RECORD, deep, AFTER]) + b"\n", name  # byte for byte
        if name.startswith("ctipretty"):
            assert output.count(b"[") == 1 and output.count(b'"a"') == depth - 1, name
    written = (tmp_path / "c").read_bytes().split(b"\n}\n", 1)[1]
    assert b"".join(written.split()) == message  # indented, the same JSON


BIG = b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":{"timenow":1,"id":18446744073709551617,' \
      b'"low":-9223372036854775809,"list":[123456789012345678901234567890]}}'


def test_integers_beyond_64_bits_stay_exact_whatever_the_stage_does(tmp_path):
    output, _ = run(Strip(["timenow"], set()), BIG + b"\n")
    assert output == BIG.replace(b'"timenow":1,', b"") + b"\n"
    output, _ = run(Pretty(True, False, "none"), BIG + b"\n")
    assert output.splitlines()[1] == (b'{"id": 18446744073709551617, "list": [123456789012345678901234567890], '
                                      b'"low": -9223372036854775809, "timenow": 1}')
    output, _ = run(Exclude([Expression("id=1")]), BIG + b"\n")  # kept: byte for byte
    assert output == BIG + b"\n"
    run(Split(str(tmp_path / "c"), str(tmp_path / "s"), False), BIG + b"\n")
    assert b'"id": 18446744073709551617' in (tmp_path / "c").read_bytes()


def test_a_changed_message_is_written_anew_when_another_key_holds_an_object():
    # the text before the message's `,"msg":` is kept only when no object could hold one
    line = b'{"ts":1.000000,"conn":{"a":1,"msg":2},"from":"client","size":3,"msg":{"timenow":1,"b":2}}'
    output, warnings = run(Strip(["timenow"], set()), line + b"\n")
    assert json.loads(output) == {"ts": 1.0, "conn": {"a": 1, "msg": 2}, "from": "client",
                                  "size": 3, "msg": {"b": 2}}
    assert warnings == []


# --- redaction without holes ------------------------------------------------------------

def redacted(message: bytes) -> bytes:
    line = b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":%s}' % message
    output, warnings = run(Strip([], set(SECRET_FIELDS)), line + b"\n")
    assert warnings == []
    assert output.startswith(b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":')
    return output[len(b'{"ts":1.000000,"conn":1,"from":"client","size":3,"msg":'):-2]


@pytest.mark.parametrize("message,expected", [
    # JSON readers differ on which of two equal keys wins: every occurrence is masked
    (b'{"password":"s3cret","password":"***"}', b'{"password":"***"}'),
    (b'{"password":"***","password":"s3cret"}', b'{"password":"***"}'),
    # a duplicate parent hides its first occurrence from a reader that keeps the last
    (b'{"a":{"token":"s3cret"},"a":{"x":1}}', b'{"a":{"x":1}}'),
    # a key spelt with escapes is the same key
    (b'{"pass\\u0077ord":"s3cret","password":"***"}', b'{"password":"***"}'),
    # a message that is a list, and one whose secret is not a string
    (b'[{"passwd":"s3cret"},{"x":[{"hashedpassword":"s3cret"}]}]',
     b'[{"passwd":"***"},{"x":[{"hashedpassword":"***"}]}]'),
    (b'{"token":{"s3cret":1},"n":18446744073709551617}', b'{"token":"***","n":18446744073709551617}'),
    # already masked, and nothing to mask: byte for byte
    (b'{"password" : "***"}', b'{"password" : "***"}'),
    (b'{"class":"login_id","userlogin":"alice"}', b'{"class":"login_id","userlogin":"alice"}'),
])
def test_redact_masks_every_occurrence_of_a_credential(message, expected):
    assert redacted(message) == expected


def test_redact_reaches_a_secret_a_thousand_levels_deep():
    message = b'{"a":' * 1000 + b'{"password":"s3cret"}' + b"}" * 1000
    out = redacted(message)
    assert b"s3cret" not in out and b'"password":"***"' in out


# --- ctispy --raw: each chunk exactly as the classic print(data) --------------------------

@pytest.mark.parametrize("compact", [True, False])
def test_a_raw_chunk_is_shown_as_its_text_then_a_newline(compact):
    chunks = [b'{"ts":1.0,"conn":1,"from":"client","size":2,"chunk":true,"raw":"A\\n"}',
              b'{"ts":1.0,"conn":1,"from":"client","size":1,"chunk":true,"raw":"A"}',
              b'{"ts":1.0,"conn":1,"from":"server","size":5,"chunk":true,"raw":"B\\nC\\n\\n"}']
    output, _ = run(Pretty(compact, False, "none"), b"\n".join(chunks) + b"\n")
    assert output == (b"    Client > Server\nA\n\n" b"    Client > Server\nA\n"
                      b"    Server > Client\nB\nC\n\n\n")


def test_ctistat_stopped_says_interrupted_not_input_ended():
    # Ctrl-C on a file or terminal: "still open when input ended" was not true
    data = b'{"ts":1.0,"conn":1,"event":"open","client":"a","server":"b"}\n' + RECORD + b"\n"
    output, _ = run(Stat(False, False), data, cut=True)
    assert output.startswith(b"=== Session 1: a > b, still open when interrupted (0.000 s seen)\n")
    output, _ = run(Stat(False, True), data, cut=True)
    assert json.loads(output)["ended"] == "interrupted"
    output, _ = run(Stat(False, False), data)
    assert output.startswith(b"=== Session 1: a > b, still open when input ended (0.000 s seen)\n")
