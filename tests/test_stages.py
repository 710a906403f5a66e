"""The filters and sinks: their logic in-process, and each command on real pipes."""
import base64
import fcntl
import json
import os
import re
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, strategies as st

from ctipipe.core import stream
from ctipipe.stages.include import Exclude
from ctipipe.core.paths import Expression
from ctipipe.stages.pretty import Pretty
from ctipipe.stages.strip import Strip
import inprocess
from helpers import WAIT, Proc, command

GOLDEN = Path(__file__).parent / "golden"
SESSION = (GOLDEN / "session.jsonl").read_bytes()
UTC = {**os.environ, "TZ": "UTC"}


def run(name: str, *args: str, data: bytes = SESSION, env=UTC, **given) -> inprocess.Result:
    """The command in this process (its output, errors and status); what only a
    process shows is tested on real processes below."""
    return inprocess.run(name, *args, data=data, env=env, **given)


def untouched_stdin() -> int:
    """Standard input for a command that must stop before reading it: a pipe
    holding one byte (its writer closed), still there if the command did not read."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"x")
    os.close(write_end)
    return read_end


def still_unread(fd: int) -> bool:
    try:
        return os.read(fd, 2) == b"x"
    finally:
        os.close(fd)


# (the golden input / expected pairs run in-process: tests/test_runner.py)


def test_filters_keep_untouched_lines_byte_for_byte():
    for args in (("ctistrip", "no_such_field"), ("ctiexclude", "class=nothing"),
                 ("ctiinclude", "--from", "client")):
        result = run(*args)
        kept = set(result.stdout.splitlines())
        assert kept <= set(SESSION.splitlines())


def test_strip_keeps_key_order_and_ts_text():
    out = run("ctistrip", "timenow").stdout.splitlines()
    stripped = [line for line in out if b'"sessionid"' in line][0]
    assert stripped.startswith(b'{"ts":1764262479.126340,"conn":1,"from":"server","size":75,"msg":')
    assert list(json.loads(stripped)) == ["ts", "conn", "from", "size", "msg"]


def test_redact_masks_credentials_at_any_depth():
    data = (b'{"ts":1.000000,"conn":1,"from":"client","size":9,"msg":{"class":"login_pass",'
            b'"hashedpassword":"e5229e","nested":{"token":"t0k","list":[{"password":"p"}]},"pin":"1234"}}\n')
    out = json.loads(run("ctistrip", "--redact", "--redact-field", "pin", data=data).stdout)
    assert out["msg"] == {"class": "login_pass", "hashedpassword": "***",
                          "nested": {"token": "***", "list": [{"password": "***"}]}, "pin": "***"}


def test_redact_masks_credentials_in_lines_that_are_not_json_and_in_raw_chunks():
    password = b'"login_pass","password":"s3cr\\"et","x":'
    data = (b'{"ts":1.000000,"conn":1,"from":"client","size":9,"raw":' + json.dumps(
                '{"class":"login_pass", "password" : "s3cret", "cut') .encode() + b'}\n'
            + b'{"ts":1.000001,"conn":1,"from":"client","size":9,"chunk":true,"raw_b64":"'
            + base64.b64encode(b'{"class":' + password + b'\xff}\n') + b'"}\n'
            + b'{"ts":1.000002,"conn":1,"from":"client","size":9,"chunk":true,"raw":"{\\"a\\":1}"}\n')
    result = run("ctistrip", "--redact", data=data)
    assert b"s3cr" not in result.stdout and b"s3cr" not in base64.b64decode(
        json.loads(result.stdout.splitlines()[1])["raw_b64"])
    first, second, third = (json.loads(line) for line in result.stdout.splitlines())
    assert first["raw"] == '{"class":"login_pass", "password" : "***", "cut'
    assert base64.b64decode(second["raw_b64"]) == b'{"class":"login_pass","password":"***","x":\xff}\n'
    assert third["raw"] == '{"a":1}' and list(third) == ["ts", "conn", "from", "size", "chunk", "raw"]
    assert result.stderr.count(b"--raw chunks") == 1  # said once: a split credential is not found


def test_redact_masks_raw_and_raw_b64_of_one_record():
    line = (b'{"ts":1.0,"conn":1,"from":"client","size":9,"raw":"{\\"token\\":\\"t1\\"}",'
            b'"raw_b64":"' + base64.b64encode(b'{"password":"p2"}') + b'"}')
    out = orjson.loads(Strip([], {"token", "password"}).handle(orjson.loads(line), line))
    assert out["raw"] == '{"token":"***"}'
    assert base64.b64decode(out["raw_b64"]) == b'{"password":"***"}'


@pytest.mark.parametrize("key", [b"a\\/b", b"a\\u002fb", b"a/b"])
def test_redact_field_finds_a_name_spelled_with_any_escape(key):
    # a line is walked only when it holds a hint; a name with "/" may be spelled "\/"
    line = b'{"ts":1.0,"conn":1,"from":"client","size":9,"msg":{"' + key + b'":"s3cret"}}'
    out = Strip([], {"a/b"}).handle(orjson.loads(line), line)
    assert b"s3cret" not in out and orjson.loads(out)["msg"] == {"a/b": "***"}


def test_ctistrip_reads_a_file_given_among_its_fields(tmp_path):
    # (it was refused as "looks like a file"; filters now read FILEs as the sinks do)
    saved = tmp_path / "session.jsonl"
    saved.write_bytes(SESSION)
    result = run("ctistrip", "timenow", str(saved), data=b"")
    assert result.returncode == 0 and result.stdout == run("ctistrip", "timenow").stdout
    result = run("ctistrip", "class", "missing.jsonl")
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr == b"ctistrip: error: cannot read missing.jsonl: No such file or directory\n"


def test_expressions_compare_json_text():
    assert Expression("commandid=5").matches({"commandid": 5})
    assert Expression("commandid=5").matches({"commandid": "5"})
    assert not Expression("commandid=5").matches({"commandid": 50})
    assert Expression("config.enablednd=false").matches({"config": {"enablednd": False}})
    assert Expression("voicemailid=null").matches({"voicemailid": None})
    assert not Expression("voicemailid=null").matches({})
    assert Expression("class=").matches({"class": ""})
    assert not Expression("a.b=1").matches({"a": [1]})
    assert not Expression("class=x").matches([1, 2])


@pytest.mark.parametrize("name,args", [("ctiinclude", ["class"]), ("ctiexclude", ["=x"]),
                                       ("ctiexclude", []), ("ctistrip", []),
                                       ("ctistrip", ["a..b"]), ("ctistat", ["-m", "-n"]),
                                       ("ctipretty", ["--color", "pink"]), ("ctisplit", ["one"])])
def test_usage_errors_exit_2_in_one_line_before_reading(name, args):
    # a usage error must not read (nor wait for) standard input
    stdin = untouched_stdin()
    result = run(name, *args, stdin=stdin)
    assert still_unread(stdin)
    assert result.returncode == 2 and result.stdout == b""
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith(f"{name}: error:")


def test_a_usage_error_process_exits_2_without_waiting_for_its_input():
    # (the process around the command: its status, and stdin a pipe nobody writes to)
    proc = Proc(command("ctisplit", "one"), stdin=subprocess.PIPE)
    assert proc.finish() == 2
    assert proc.err.count("\n") == 1 and proc.err.startswith("ctisplit: error:")


@pytest.mark.parametrize("name", ["ctistrip", "ctiinclude", "ctiexclude", "ctipretty", "ctisplit",
                                  "ctistat"])
def test_help_has_an_example(name):
    result = run(name, "--help")
    assert result.returncode == 0
    assert b"example:" in result.stdout and name.encode() in result.stdout.split(b"example:")[1]


def test_malformed_lines_are_reported_with_their_number_and_skipped():
    lines = SESSION.splitlines()
    bad = b"\n".join([lines[0], b"{not json", b"[1,2]", b'"text"', lines[1], b"\xff\xfe"]) + b"\n"
    for name, args in [("ctistrip", ["x"]), ("ctiexclude", ["a=b"]), ("ctipretty", []),
                       ("ctistat", []), ("ctiinclude", ["--from", "client"])]:
        result = run(name, *args, data=bad)
        assert result.returncode == 0
        errors = result.stderr.decode().splitlines()
        assert [e.split(":")[1].strip() for e in errors] == ["line 2", "line 3", "line 4", "line 6"]
        assert b"Traceback" not in result.stderr
    for line in run("ctistrip", "x", data=bad).stdout.splitlines():
        json.loads(line)  # the rest is well-formed


def test_last_line_without_newline_is_still_handled():
    result = run("ctistrip", "x", data=SESSION.rstrip(b"\n"))
    assert result.stdout == SESSION


def test_unicode_and_very_large_messages():
    big = {"class": "getlist", "list": [f"Zoé Müller 李 {n}" for n in range(200000)]}
    line = (b'{"ts":1.000000,"conn":1,"from":"server","size":1,"msg":' + orjson.dumps(big) + b"}\n")
    assert len(line) > 4_000_000
    result = run("ctistrip", "timenow", data=line * 3)
    assert result.stdout == line * 3
    pretty = run("ctipretty", "--color", "never", data=line)
    assert json.loads(pretty.stdout.split(b"\n", 1)[1]) == big


# --- live behaviour on real pipes -----------------------------------------------

CHAIN = [["ctistrip", "timenow"], ["ctiinclude", "--from", "server"], ["ctiexclude", "class=nope"],
         ["ctistrip", "tid"], ["ctipretty", "--compact", "--color", "never"]]


def start_pipeline(stages):
    procs = []
    previous = None
    for argv in stages:
        proc = subprocess.Popen(command(*argv), stdin=previous.stdout if previous else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=UTC)
        if previous:
            previous.stdout.close()
        procs.append(proc)
        previous = proc
    return procs


def read_until(fd, needle: bytes, timeout=WAIT) -> bytes:
    import select
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"EOF before {needle!r}; got {got!r}"
            got += chunk
    return got


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def unread(fd: int) -> int:
    """Bytes waiting in the pipe behind fd (either end)."""
    pending = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, pending)
    return int.from_bytes(pending, "little")


def signal_pending(pid: int, signum: int) -> bool:
    """Is the signal sent to the process and not yet delivered to its handler?"""
    with open(f"/proc/{pid}/status") as status:
        masks = [int(line.split()[1], 16) for line in status
                 if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signum - 1)) for mask in masks)


def kill_all(procs):
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)


def test_a_message_crosses_five_stages_at_once_while_input_stays_open():
    procs = start_pipeline(CHAIN)
    try:
        lines = SESSION.splitlines(keepends=True)
        procs[0].stdin.write(lines[2])  # one server message, input left open
        procs[0].stdin.flush()
        got = read_until(procs[-1].stdout.fileno(), b'"sessionid": "21UaGDfst7"')
        assert b"Server > Client" in got and b"timenow" not in got
        procs[0].stdin.write(lines[4])
        procs[0].stdin.flush()
        read_until(procs[-1].stdout.fileno(), b'"capalist": [2]')
        procs[0].stdin.close()
        assert [p.wait(WAIT) for p in procs] == [0] * 5
    finally:
        kill_all(procs)


def test_closed_stdout_ends_a_stage_quietly():
    big = SESSION * 200  # 520 KB: its output is several times what a pipe holds
    for name, args in [("ctistrip", ["timenow"]), ("ctipretty", []), ("ctiexclude", ["a=b"])]:
        proc = subprocess.Popen(command(name, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

        def feed():
            try:
                proc.stdin.write(big)
                proc.stdin.close()
            except BrokenPipeError:
                pass

        writer = threading.Thread(target=feed)
        writer.start()
        proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        assert proc.wait(WAIT) == 0
        writer.join(WAIT)
        assert proc.stderr.read() == b""


def test_sigint_on_a_pipe_finishes_the_input_then_summarises():
    proc = subprocess.Popen(command("ctistat", "--json"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = SESSION.splitlines(keepends=True)
        proc.stdin.write(b"".join(lines[:8]))
        proc.stdin.flush()
        until(lambda: unread(proc.stdin.fileno()) == 0, "the stage to read the first lines")
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the relay upstream would now close
        until(lambda: not signal_pending(proc.pid, signal.SIGINT), "the SIGINT to be handled")
        assert proc.poll() is None  # still reading
        proc.stdin.write(b"".join(lines[8:]))
        proc.stdin.close()
        assert proc.wait(WAIT) == 0
        *summaries, totals = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert [s["conn"] for s in summaries] == [2, 1] and totals["totals"]["sessions"] == 2
        assert summaries[1]["messages"]["client"]["ipbxcommand"] == 1  # read after the SIGINT
    finally:
        kill_all([proc])


def test_stat_reports_sessions_still_open_at_end_of_input():
    lines = SESSION.splitlines(keepends=True)
    result = run("ctistat", data=b"".join(lines[:9]))
    text = result.stdout.decode()
    assert text.count("still open when input ended") == 2
    assert "=== Messages sent by client\nlogin_id 1\nlogin_pass 1\ngetlist 1" in text


def test_stat_latency_pairs_commandid_with_replyid():
    records = []
    for n in range(100):
        records.append({"ts": 100.0 + n, "conn": 1, "from": "client", "size": 1,
                        "msg": {"class": "getlist", "commandid": n}})
        records.append({"ts": 100.0 + n + (n + 1) / 1000, "conn": 1, "from": "server", "size": 1,
                        "msg": {"class": "getlist", "replyid": n}})
    records.append({"ts": 300.0, "conn": 1, "from": "client", "size": 1,
                    "msg": {"class": "ipbxcommand", "commandid": 999}})
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    [summary] = [json.loads(line) for line in run("ctistat", "--json", data=data).stdout.splitlines()]
    getlist = summary["latency"]["getlist"]
    assert getlist["count"] == 100 and getlist["no_reply"] == 0
    assert getlist["median_ms"] == pytest.approx(50, abs=0.01)
    assert getlist["p95_ms"] == pytest.approx(95, abs=0.01)
    assert getlist["max_ms"] == pytest.approx(100, abs=0.01)
    # ipbxcommand gets no reply by design (core/protocol.py): not a missing one
    assert summary["latency"]["ipbxcommand"]["no_reply"] == 0
    assert summary["latency"]["ipbxcommand"]["no_reply_expected"] == 1


# --- ctisplit ------------------------------------------------------------------------

def test_split_writes_classic_layout_with_mode_0600(tmp_path):
    client, server = tmp_path / "client", tmp_path / "server"
    server.write_text("old content")
    server.chmod(0o644)
    result = run("ctisplit", str(client), str(server))
    assert result.returncode == 0, result.stderr
    assert client.stat().st_mode & 0o777 == 0o600
    assert server.stat().st_mode & 0o777 == 0o600
    expected_client = [json.loads(line)["msg"] for line in SESSION.splitlines()
                       if b'"from":"client"' in line]
    text = client.read_text()
    assert text == "".join(json.dumps(m, indent=4, sort_keys=True, ensure_ascii=False) + "\n"
                           for m in expected_client)
    server_bytes = server.read_bytes()
    assert b"not json at\n\xff\xfe\n" in server_bytes
    assert b'"firstname": "Bj\xc3\xb6rn"' in server_bytes


def test_split_jsonl_keeps_records_and_events(tmp_path):
    client, server = tmp_path / "c.jsonl", tmp_path / "s.jsonl"
    assert run("ctisplit", str(client), str(server), "--jsonl").returncode == 0
    for path, side in ((client, "client"), (server, "server")):
        records = [json.loads(line) for line in path.read_bytes().splitlines()]
        assert all(r.get("from", side) == side for r in records)
        assert sum(1 for r in records if r.get("event") == "close") == 2


def test_split_refuses_a_planted_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    link = tmp_path / "client"
    link.symlink_to(target)
    result = run("ctisplit", str(link), str(tmp_path / "server"))
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and b"symbolic link" in result.stderr
    assert target.read_text() == "precious"


def test_split_bad_path_fails_at_once(tmp_path):
    stdin = untouched_stdin()
    result = run("ctisplit", str(tmp_path / "no" / "dir"), str(tmp_path / "s"), stdin=stdin)
    assert still_unread(stdin)  # before reading any input
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("ctisplit: error: cannot open") and err.count("\n") == 1


def test_split_full_disk_is_one_error_and_what_was_written_stays(tmp_path):
    result = run("ctisplit", str(tmp_path / "client"), "/dev/full")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "ctisplit: error: cannot write /dev/full: No space left on device"


def test_split_sigterm_keeps_what_was_read(tmp_path):
    client = tmp_path / "client"
    proc = subprocess.Popen(command("ctisplit", str(client), str(tmp_path / "server")),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = SESSION.splitlines(keepends=True)
        proc.stdin.write(b"".join(lines[:4]))
        proc.stdin.flush()
        deadline = time.monotonic() + WAIT
        while not client.exists() or b"login_pass" not in client.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        assert client.read_text().count('"class"') == 2
    finally:
        kill_all([proc])


# --- properties --------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                         max_size=4),
    max_leaves=20)
# Messages whose nested objects use the names the FIELD paths below walk
# (config.x, x.y.z) as often as other names, so that nested fields are found.
MESSAGE_KEYS = ["class", "timenow", "commandid", "config", "tid", "x"]
message_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["x", "y", "z", "tid", "timenow"]) | st.text(max_size=4), children,
        max_size=3),
    max_leaves=8)
messages = st.dictionaries(st.sampled_from(MESSAGE_KEYS), st.dictionaries(
    st.sampled_from(["x", "y", "z", "tid", "timenow"]) | st.text(max_size=4), message_values,
    min_size=1, max_size=3) | message_values, max_size=6)


@given(json_values)
def test_indented_is_json_dumps_indent_4_sorted(value):
    ours = stream.indented(value).decode()
    assert json.loads(ours) == value or value != value
    if not _has_float(value):
        assert ours == json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False)


def _has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


def record_line(message, side="server") -> bytes:
    return b'{"ts":1764262479.126340,"conn":1,"from":"%s","size":10,"msg":%s}' % (
        side.encode(), orjson.dumps(message))


@given(st.lists(messages, max_size=4), st.lists(st.sampled_from(["timenow", "config.x", "tid", "x.y.z"]),
                                                 min_size=1, max_size=3))
@example([{"config": {"x": 1, "y": [2]}, "x": {"y": {"z": 3, "w": 4.5}, "z": 5}, "tid": None},
          {"config": [{"x": 1}], "x": {"y": [{"z": 1}]}, "timenow": 1.5}],
         ["config.x", "x.y.z", "timenow"])
def test_strip_changes_only_the_named_fields(batch, fields):
    stage = Strip(fields, set())
    for message in batch:
        line = record_line(message)
        out = stage.handle(orjson.loads(line), line)
        got, want = orjson.loads(out), orjson.loads(line)
        for field in fields:
            *parents, last = field.split(".")
            node = want["msg"]
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
        assert got == want
        if out != line:
            assert out.startswith(b'{"ts":1764262479.126340,"conn":1,"from":"server","size":10,"msg":')


@given(st.lists(messages, max_size=4), st.sampled_from(["class=getlist", "tid=1", "x=null"]))
def test_exclude_never_changes_what_it_keeps(batch, expression):
    stage = Exclude([Expression(expression)])
    for message in batch:
        line = record_line(message)
        out = stage.handle(orjson.loads(line), line)
        assert out is None or out is line
        assert (out is None) == Expression(expression).matches(message)


@pytest.mark.parametrize("wire", [b'{"name":"a  b","nested":{"x":["  "]}}',
                                  b'{"name":"a\\u0020\\u0020b","nested":{"x":[1]}}'])
def test_double_spaces_inside_strings_survive_indentation(wire, tmp_path):
    data = b'{"ts":1.000000,"conn":1,"from":"client","size":9,"msg":%s}\n' % wire
    message = json.loads(wire)
    pretty = run("ctipretty", "--color", "never", data=data).stdout.decode()
    assert pretty.split("\n", 1)[1] == json.dumps(message, indent=4, sort_keys=True) + "\n"
    compact = run("ctipretty", "--compact", "--color", "never", data=data).stdout.decode()
    assert compact.split("\n", 1)[1] == json.dumps(message, sort_keys=True) + "\n"
    run("ctisplit", str(tmp_path / "c"), str(tmp_path / "s"), data=data)
    assert (tmp_path / "c").read_text() == json.dumps(message, indent=4, sort_keys=True) + "\n"


@given(json_values)
def test_fast_widening_matches_exact_when_no_string_has_double_spaces(value):
    text = stream.indented_2(value)
    if not stream.may_hold_double_space(orjson.dumps(value)):
        assert stream.widen(text, exact=False) == stream.widen(text)


# --- ctipretty: what the person watching sees ------------------------------------

# What must never reach the terminal from the wire: C0 controls but the line
# structure, DEL, C1 controls, bidirectional marks, embeddings, overrides, isolates.
UNSAFE_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                               "\u2066-\u2069]")
hostile_text = st.text(alphabet=st.sampled_from(
    "a {}\"\\:\t\n\r\x00\x07\x1b\x7f\x80\x9b\x9f\u061c\u200e\u200f\u202a\u202e\u2066\u2069é李"),
    max_size=30)


def pretty_lines(records: list[dict], **options) -> str:
    stage = Pretty(**{"compact": False, "color": False, **options})
    for record in records:
        line = orjson.dumps(record)
        stage.begin_batch(line)
        stage.handle(orjson.loads(line), line)
    return stage.finish().decode()


@given(hostile_text, hostile_text, st.booleans(), st.booleans())
def test_nothing_from_the_wire_can_drive_the_terminal(key, value, compact, raw_as_bytes):
    records = [
        {"ts": 1.5, "conn": 1, "event": "open", "client": value, "server": key},
        {"ts": 1.5, "conn": 1, "from": "server", "size": 1, "msg": {key: value, "class": [value]}},
        {"ts": 1.5, "conn": 1, "from": "client", "size": 1, "raw": value},
        {"ts": 1.5, "conn": 1, "from": "client", "size": 1, "chunk": True,
         "raw_b64": base64.b64encode(value.encode() + b"\xff").decode()} if raw_as_bytes else
        {"ts": 1.5, "conn": 1, "from": "client", "size": 1, "chunk": True, "raw": value},
        {"ts": 1.5, "conn": 1, "event": "error", "error": value},
        {"ts": 1.5, "conn": 1, "event": key or "x", "what": value},
        {"ts": 1.5, "conn": value, "from": key, "size": 1, "msg": value},
    ]
    shown = pretty_lines(records, compact=compact)
    assert UNSAFE_CHARACTERS.search(shown) is None
    # a message's body is still the same JSON value, only its controls escaped
    body = re.split(r"\n    \d\d:\d\d:\d\d\.\d{6} ", shown.split(" Server > Client\n", 1)[1])[0]
    assert json.loads(body) == {key: value, "class": [value]}


def test_raw_lines_and_chunks_show_under_the_classic_header():
    shown = pretty_lines([
        {"ts": 1764262479.205, "conn": 1, "from": "server", "size": 12, "raw": "not json at"},
        {"ts": 1764262479.206, "conn": 1, "from": "client", "size": 22, "chunk": True,
         "raw": "{\"class\":\"keepalive\"}\n"},
    ], compact=True)
    assert shown.splitlines() == ["    16:54:39.205000 Server > Client", "not json at",
                                  "    16:54:39.206000 Client > Server", "{\"class\":\"keepalive\"}",
                                  ""]  # the chunk's own newline, then print()'s


def test_time_utc_does_not_depend_on_the_local_zone():
    far = {**os.environ, "TZ": "XYZ-5:30"}
    in_utc = run("ctipretty", "--time", "utc", "--color", "never", env=far).stdout
    assert in_utc == (GOLDEN / "pretty.expected").read_bytes()
    local = run("ctipretty", "--color", "never", env=far).stdout
    assert b"    22:24:39.125001 Client > Server\n" in local  # the classic default: local time


# --- ctistat -----------------------------------------------------------------------

CLASSIC_NETWORK_LABELS = [
    "Running time:", "Client app bytes:", "Server app bytes:", "Total app bytes:",
    "Avg app bytes/s:", "===========", "Client IP packets:", "Server IP packets:",
    "Total IP packets:", "Average IP packets/s:", "===========", "Client wire bytes:",
    "Server wire bytes:", "Total wire bytes:", "Total headers overhead:", "Average wire bytes/s:"]


def test_stat_network_prints_the_classic_labels_in_order_under_the_title():
    text = run("ctistat", "-n").stdout.decode().split("=== Totals")[0]
    sessions = text.split("=== Session ")[1:]
    assert len(sessions) == 2
    lines = sessions[1].splitlines()
    assert lines[0].startswith("1: 127.0.0.1:51234 > xivo-new:5003, closed by client")
    assert [line.split("\t")[0] for line in lines[1:]] == CLASSIC_NETWORK_LABELS
    # values as the classic tool (Python 2) printed them: tab-separated, str() of floats
    assert lines[1] == "Running time:\t\t0.876545"
    assert lines[5] == "Avg app bytes/s:\t1199.0257203"
    assert lines[15] == "Total headers overhead:\t0.523311132255"


def login_2x(replies: list[dict], gap: float = 0.002) -> bytes:
    """A 2.x login as the real client and server exchange it (corpus messages)."""
    requests = [{"class": "login_id", "commandid": 679518411, "company": "xivo",
                 "userlogin": "alice", "wazoversion": "2.3"},
                {"class": "login_pass", "commandid": 1392587018, "password": "secret"},
                {"capaid": "3", "class": "login_capas", "commandid": 1001982708,
                 "state": "available"}]
    records = []
    ts = 100.0
    for request, reply in zip(requests, replies):
        records.append({"ts": ts, "conn": 1, "from": "client", "size": 1, "msg": request})
        ts += gap
        records.append({"ts": ts, "conn": 1, "from": "server", "size": 1, "msg": reply})
        ts += 1
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def test_stat_pairs_2x_login_replies_without_replyid():
    replies = [{"wazoversion": "2.3", "sessionid": "WzAEJ4fFiC", "class": "login_id",
                "timenow": 1795857286.285627},
               {"capalist": [3], "class": "login_pass", "timenow": 1795857286.285826},
               {"userid": "3", "ipbxid": "xivo", "class": "login_capas", "appliname": "Client"}]
    [summary] = [json.loads(line) for line in
                 run("ctistat", "--json", data=login_2x(replies)).stdout.splitlines()]
    for name in ("login_id", "login_pass", "login_capas"):
        assert summary["latency"][name]["count"] == 1 and summary["latency"][name]["no_reply"] == 0
        assert summary["latency"][name]["median_ms"] == pytest.approx(2.0, abs=0.01)


def test_stat_a_login_reply_of_another_class_answers_nothing():
    # the server answers login_id with an unrelated class: login_id stays unanswered
    replies = [{"class": "login_pass", "error_string": "login_password"}]
    [summary] = [json.loads(line) for line in
                 run("ctistat", "--json", data=login_2x(replies)).stdout.splitlines()]
    assert summary["latency"]["login_id"] == {"count": 0, "median_ms": None, "p95_ms": None,
                                              "p99_ms": None, "max_ms": None, "no_reply": 1,
                                              "no_reply_expected": 0}


@pytest.mark.parametrize("data", [b"", b'{"ts":1.0,"event":"start","stream":1,"producer":"x"}\n'])
def test_stat_says_when_no_session_was_seen(data):
    result = run("ctistat", data=data)
    assert result.returncode == 0
    assert result.stdout == b"=== No session: the input ended before any session began\n"
    result = run("ctistat", "--json", data=data)
    assert result.stdout == b""
    assert result.stderr == b"ctistat: no session: the input ended before any session began\n"


def test_stat_no_session_names_clients_the_relay_could_not_serve():
    data = (b'{"ts":1.0,"conn":1,"event":"error","error":"cannot reach xivo-new:5003: Connection '
            b'refused"}\n{"ts":2.0,"event":"error","error":"cannot reach xivo-new:5003: timed out",'
            b'"client":"127.0.0.1:40000"}\n')
    assert run("ctistat", data=data).stdout == (
        b"=== No session: the input ended before any session began (2 clients could not be "
        b"relayed; last error: cannot reach xivo-new:5003: timed out)\n")


@pytest.mark.parametrize("how", ["same", "dot-dot", "symlink", "hardlink"])
def test_split_refuses_one_file_for_both_sides(tmp_path, how):
    client = tmp_path / "client"
    client.write_text("precious")
    server = {"same": lambda: client, "dot-dot": lambda: tmp_path / ".." / tmp_path.name / "client",
              "symlink": lambda: (tmp_path / "link").symlink_to(client) or tmp_path / "link",
              "hardlink": lambda: (tmp_path / "hard").hardlink_to(client) or tmp_path / "hard"}[how]()
    stdin = untouched_stdin()
    result = run("ctisplit", str(client), str(server), stdin=stdin)
    assert still_unread(stdin)  # before reading any input
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"the same file" in result.stderr
    assert client.read_text() == "precious"


@given(json_values, st.booleans())
def test_compact_is_the_classic_json_dumps_layout(value, color):
    # the classic ctispy printed json.dumps(msg, sort_keys=True): ", " and ": "
    record = {"ts": 1.5, "conn": 1, "from": "server", "size": 1, "msg": value}
    shown = pretty_lines([record], compact=True, color=color)
    header, body, end = shown.split("\n")
    assert end == ""
    body = re.sub("\x1b\\[[0-9;]*m", "", body)
    assert json.loads(body) == value or value != value
    if not _has_float(value) and UNSAFE_CHARACTERS.search(json.dumps(value, ensure_ascii=False)) is None:
        assert body == json.dumps(value, sort_keys=True, ensure_ascii=False)


def test_a_start_record_ends_the_sessions_of_the_stream_before_it():
    # two saved streams one after the other: session numbers start again
    twice = (GOLDEN / "tls-login.jsonl").read_bytes() * 2
    *summaries, totals = [json.loads(line) for line in
                          run("ctistat", "--json", data=twice).stdout.splitlines()]
    assert totals["totals"]["sessions"] == 4 + 2  # and two clients that could not be relayed
    assert [(s["conn"], s["ended"]) for s in summaries] == [
        (1, "closed"), (2, "input ended"), (1, "closed"), (2, "input ended")]
    assert summaries[1]["messages"] == summaries[3]["messages"] == {
        "client": {"starttls": 1}, "server": {"starttls": 2}}
    relative = run("ctipretty", "--compact", "--time", "relative", data=twice).stdout.decode()
    assert relative.count("--- +0.000000 ctirelay 0.3.0 started") == 2
    assert relative.count("--- +0.000000 session 2 opened") == 2


def test_ctistat_tells_files_from_a_host(tmp_path, monkeypatch):
    from ctipipe.stages.stats import names_a_host
    monkeypatch.chdir(tmp_path)
    (tmp_path / "capture").write_text("")
    for argv in ([], ["-n"], ["-"], ["capture"], ["missing.jsonl"], ["old/session"], ["-m", "a.json", "-"]):
        assert not names_a_host(argv), argv
    for argv in (["xivo-new"], ["xivo-new", "-n"], ["-n", "10.0.0.1", "--port", "5003"]):
        assert names_a_host(argv), argv


def test_the_stream_reference_documents_every_record_and_readme_links_it():
    root = Path(__file__).parent.parent
    reference = (root / "docs" / "stream.md").read_text()
    for event in ("start", "open", "tls", "close", "error", "gap"):
        assert f"### `{event}`" in reference, event
    for key in ("`ts`", "`conn`", "`from`", "`size`", "`msg`", "`raw`", "`raw_b64`", "`partial`",
                "`oversize`", "`chunk`", "`lost`", "`intercepted`", "`producer`"):
        assert key in reference, key
    assert "(docs/stream.md)" in (root / "README.md").read_text()


# --- sinks read saved streams named on the command line ---------------------------

def test_sinks_read_their_files_in_order_with_dash_for_stdin(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(SESSION)
    second.write_bytes((GOLDEN / "tls-login.jsonl").read_bytes())
    hostile = (GOLDEN / "hostile.jsonl").read_bytes()
    result = run("ctipretty", "--color", "never", str(first), "-", str(second), data=hostile)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join((GOLDEN / name).read_bytes() for name in (
        "pretty.expected", "pretty-hostile.expected", "pretty-tls.expected"))
    result = run("ctistat", "--json", str(first), str(second), data=b"")
    assert [(s["client"], s["conn"]) for s in map(json.loads, result.stdout.splitlines()[:-1])] == [
        ("127.0.0.1:51240", 2), ("127.0.0.1:51234", 1), ("10.0.0.7:51234", 1), ("10.0.0.9:40022", 2)]


def test_ctistat_given_a_saved_stream_is_the_sink(tmp_path):
    # the example: `ctistat session.jsonl` (forgetting the <) must not
    # start a relay to a host named session.jsonl
    saved = tmp_path / "session.jsonl"
    saved.write_bytes(SESSION)
    result = run("ctistat", "-n", str(saved), data=b"", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "stat-network.expected").read_bytes()
    relative = run("ctistat", "session.jsonl", data=b"", cwd=tmp_path)
    assert relative.stdout == (GOLDEN / "stat.expected").read_bytes()


@pytest.mark.parametrize("name", ["ctipretty", "ctistat"])
def test_a_missing_input_file_is_one_line_before_reading(tmp_path, name):
    stdin = untouched_stdin()
    result = run(name, str(tmp_path / "missing.jsonl"), stdin=stdin)
    assert still_unread(stdin)  # the error comes first
    assert result.returncode == 1
    assert result.stderr.decode() == (f"{name}: error: cannot read {tmp_path / 'missing.jsonl'}: "
                                      "No such file or directory\n")


def test_a_missing_input_file_process_exits_1_without_waiting_for_its_input(tmp_path):
    # (the process around the command: its status, and stdin a pipe nobody writes to)
    proc = Proc(command("ctipretty", str(tmp_path / "missing.jsonl")), stdin=subprocess.PIPE)
    assert proc.finish() == 1
    assert proc.err == f"ctipretty: error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory\n"


def test_classic_ctistat_stopped_before_any_client_says_so(server):
    from test_classic import Classic
    tool = Classic("ctistat", server.port, "-v")
    tool.wait_for(lambda p: "listening on" in p.err, what="the relay to listen")
    tool.signal(signal.SIGINT)  # Ctrl-C before any client came
    assert tool.finish() == 0, tool.err
    assert tool.out == b"=== No session: the input ended before any session began\n"


@pytest.mark.parametrize("clock", ["local", "utc", "relative", "none"])
def test_ctipretty_shows_a_record_whose_time_no_clock_can_show_and_goes_on(clock):
    # time.localtime(1e20) raised OverflowError, which stopped ctipretty for
    # the rest of the stream.
    records = b"".join(b'{"ts":%s,"conn":1,"from":"client","size":3,"msg":{"n":%d}}\n' % (ts, n)
                       for n, ts in enumerate([b"1e20", b"-1e300", b"1764262479.5"]))
    result = run("ctipretty", "--compact", "--color", "never", "--time", clock, data=records)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith(b"{")] == \
        [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize("mode", [[], ["-n"], ["--json"]])
def test_ctistat_escapes_what_the_wire_controls(mode):
    # A hostile peer controls the class names and (through its name) the
    # addresses: ESC and U+202E must not reach the terminal as they are.
    records = (b'{"ts":1.0,"conn":1,"event":"open","client":"\\u001b[31m","server":"\\u202e"}\n'
               b'{"ts":1.5,"conn":1,"from":"server","size":3,"msg":{"class":"x\\u001b[2J\\u202e"}}\n')
    result = run("ctistat", *mode, data=records)
    assert result.returncode == 0, result.stderr
    assert b"\x1b" not in result.stdout and "\u202e".encode() not in result.stdout
    if mode == ["--json"]:
        summary = json.loads(result.stdout)
        assert summary["client"] == "\x1b[31m" and summary["server"] == "\u202e"  # same values
        return
    assert b"=== Session 1: \\x1b[31m > \\u202e" in result.stdout
    if not mode:
        assert b"x\\x1b[2J\\u202e 1" in result.stdout


@pytest.mark.parametrize("argv,says", [
    (["ctistrip", "msg.timenow"], "without 'msg.' (e.g. timenow)"),
    (["ctistrip", "timenow=1"], "'=' cannot be in a FIELD"),
    (["ctispy", "127.0.0.1", "--strip", "msg.timenow"], "without 'msg.' (e.g. timenow)"),
])
def test_a_field_that_cannot_be_meant_is_refused_with_a_hint(argv, says):
    # `ctistrip msg.timenow` was accepted and removed nothing, silently.
    result = run(*argv, data=b"")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1 and says in err, err


def test_ctistat_a_file_then_a_missing_one_says_the_file_is_missing(tmp_path):
    # The missing word was taken for the classic tool's HOST: "unrecognized arguments".
    saved = tmp_path / "a.jsonl"
    saved.write_bytes(b'{"ts":1.0,"conn":1,"from":"client","size":3,"msg":{"class":"x"}}\n')
    result = run("ctistat", str(saved), "missing", data=b"", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == b"ctistat: error: cannot read missing: No such file or directory\n"


@pytest.mark.parametrize("kind", ["socket", "fifo"])
def test_ctisplit_refuses_a_fifo_or_socket_and_leaves_the_other_file_alone(tmp_path, kind):
    # The check before reading passed any writable path: then opening the
    # socket failed after CLIENTFILE was truncated, and a FIFO hung open()
    # beyond Ctrl-C and SIGTERM.
    import socket as socket_module
    client = tmp_path / "c"
    client.write_bytes(b"precious\n")
    other = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(other)
    else:
        socket_module.socket(socket_module.AF_UNIX).bind(str(other))
    result = run("ctisplit", str(client), str(other))
    assert result.returncode == 1
    assert result.stderr.decode() == (f"ctisplit: error: cannot write a capture to {other}: "
                                      f"it is a {'FIFO' if kind == 'fifo' else 'socket'}\n")
    assert client.read_bytes() == b"precious\n"


def test_capture_files_are_truncated_only_once_all_are_open(tmp_path):
    # What the check before reading cannot see (a path that became a socket
    # since): nothing is truncated, and a file this call created is removed.
    import socket as socket_module
    from ctipipe.core import cli as cli_module
    from ctipipe.stages import split
    client, created, sock = tmp_path / "c", tmp_path / "new", tmp_path / "sock"
    client.write_bytes(b"precious\n")
    socket_module.socket(socket_module.AF_UNIX).bind(str(sock))
    with pytest.raises(cli_module.CommandError, match="cannot open .*sock: No such device"):
        split.open_private({"client": str(client), "other": str(created), "server": str(sock)})
    assert client.read_bytes() == b"precious\n" and not created.exists()
    fds = split.open_private({"client": str(client), "server": str(created)})
    try:
        assert client.read_bytes() == b"" and oct(client.stat().st_mode & 0o777) == "0o600"
    finally:
        for fd in fds.values():
            os.close(fd)


def test_stat_pairs_the_starttls_answer_and_not_the_offer():
    # The answer {"class":"starttls","starttls":true} carries no replyid: it was
    # counted as "no reply". The server's offer, before any request, answers none.
    records = [{"ts": 100.0, "conn": 1, "from": "server", "size": 1,
                "msg": {"class": "starttls", "timenow": 100.0}},
               {"ts": 100.5, "conn": 1, "from": "client", "size": 1,
                "msg": {"class": "starttls", "commandid": 7, "status": True}},
               {"ts": 100.503, "conn": 1, "from": "server", "size": 1,
                "msg": {"class": "starttls", "starttls": True, "timenow": 100.5}}]
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    [summary] = [json.loads(line) for line in run("ctistat", "--json", data=data).stdout.splitlines()]
    assert summary["latency"]["starttls"]["count"] == 1
    assert summary["latency"]["starttls"]["no_reply"] == 0
    assert summary["latency"]["starttls"]["median_ms"] == pytest.approx(3.0, abs=0.01)


def test_ctipretty_close_record_with_fields_missing_or_absurd_shows_question_marks():
    record = b'{"ts":1.0,"conn":1,"event":"close","by":"client","duration":1e300}\n'
    result = run("ctipretty", "--time", "none", data=record)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (b"--- session 1 closed by client after ? s: client sent ? bytes in ? "
                             b"reads, server sent ? bytes in ? reads\n")
