"""The classic names as users type them. End to end where only processes show it: a
stand-in CTI server and a client on 127.0.0.1, the wrapper and its real pipeline of
stage processes (the pipes between stages, signals, exit statuses, a dead stage).
What an option does to the output is checked in-process: the wrapper runs with its
own main() up to the pipeline it would start, whose stages then run in turn over one
real relay session of the same conversation; and arguments, usage errors, --version
and refused files through main() alone, with nothing able to start a process."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from ctipipe import commands, wrappers
from helpers import LOCALHOST, WAIT, Proc, Relay, Server, children, command, free_port, recv_all

REPO = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^    \d\d:\d\d:\d\d\.\d{6} (Client > Server|Server > Client)( \(.*\))?( \[session \d+\])?$")

CLIENT_MESSAGES = [
    {"class": "login_id", "commandid": 1092130023, "userlogin": "alice", "company": "default"},
    {"class": "login_pass", "commandid": 1646064863, "hashedpassword": "e5229ef45824333e0f8bbeed20dccfa2ddcb1c80"},
    {"class": "getlist", "commandid": 489035169, "function": "listid", "listname": "users", "tipbxid": "xivo"},
    {"class": "getlist", "commandid": 5, "function": "updateconfig", "listname": "users", "tid": "17"},
    {"class": "ipbxcommand", "command": "dial", "commandid": 1683305913, "destination": "exten:xivo/1202"},
]
SERVER_MESSAGES = [
    {"class": "login_id", "sessionid": "21UaGDfst7", "timenow": 1361268824.64, "xivoversion": "1.2"},
    {"capalist": [2], "class": "login_pass", "replyid": 1646064863, "timenow": 1361268824.68},
    {"class": "getlist", "function": "listid", "listname": "users", "list": ["1", "17"],
     "replyid": 489035169, "timenow": 1362735061.17},
    {"class": "getlist", "function": "updateconfig", "listname": "users", "tid": "17", "replyid": 5,
     "timenow": 1362741166.4, "config": {"firstname": "Björn", "lastname": "Lindström"}},
    {"class": "ipbxcommand", "command": "dial", "ipbxreply": 1, "replyid": 1683305913, "timenow": 1395756534.64},
    {"class": "dial_success", "exten": "1202"},
    {"class": "getlist", "function": "updatestatus", "listname": "agents", "tid": 7,
     "timenow": 1362664323.94, "status": {"availability": "available", "on_call": False}},
]


def wire(messages) -> bytes:
    return b"".join(orjson.dumps(m) + b"\n" for m in messages)


class Classic(Proc):
    """A classic tool started with a relay port chosen for the test."""

    def __init__(self, name: str, server_port: int, *args: str, **popen):
        self.listen_port = free_port()
        super().__init__(command(name, LOCALHOST, "--port", str(server_port), "--listen-addr",
                                 LOCALHOST, "--listen-port", str(self.listen_port), *args),
                         env={**os.environ, "TZ": "UTC"}, **popen)

    def connect(self) -> socket.socket:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                return socket.create_connection((LOCALHOST, self.listen_port), timeout=WAIT)
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, f"never listened; stderr: {self.err}"
                assert self.popen.poll() is None, f"exited early; stderr: {self.err}"
                time.sleep(0.05)

    def children(self) -> list[int]:
        return children(self.pid)


def converse(tool: Classic, server, client_messages=CLIENT_MESSAGES, server_messages=SERVER_MESSAGES):
    """One session: the client speaks, the server answers, both close."""
    client = tool.connect()
    upstream = server.accept()
    client.sendall(wire(client_messages))
    assert recv_all(upstream, len(wire(client_messages))) == wire(client_messages)
    upstream.sendall(wire(server_messages))
    assert recv_all(client, len(wire(server_messages))) == wire(server_messages)
    client.close()
    upstream.close()


def shown(output: bytes):
    """(direction, message) pairs from ctispy's compact output."""
    lines = output.decode().splitlines()
    pairs = []
    for header, body in zip(lines, lines[1:]):
        match = HEADER.match(header)
        if match and not match.group(2):
            pairs.append((match.group(1), json.loads(body)))
    return pairs


# --- in-process: a command's main(), a wrapper's pipeline over a real relay session -----

def run_command(monkeypatch, name: str, *args: str) -> int:
    """Command NAME run in this process as `python -m ctipipe NAME ARGS` runs it
    (commands.run, its signal rules included); its exit status, argparse's exits too."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        return commands.run(name)
    except SystemExit as done:
        return 0 if done.code is None else done.code


@pytest.fixture
def no_process(monkeypatch):
    """Anything that tries to start a process fails the test (even where a
    command's guard turns the refusal into an error status)."""
    tried = []

    def refuse(argv, *args, **kwargs):
        tried.append(argv)
        raise AssertionError(f"a process was started: {argv}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    yield
    assert not tried, f"processes were started: {tried}"


@pytest.fixture(scope="module")
def recording() -> bytes:
    """One real session of the conversation through ctirelay: the tagged stream a
    wrapper's stages read from it."""
    server = Server()
    relay = Relay(server.port)
    try:
        converse(relay, server)
        assert relay.finish() == 0, relay.err
    finally:
        server.close()
    return relay.out


def pipeline(monkeypatch, name: str, *args: str) -> list[list[str]]:
    """The stages wrapper NAME would start for ARGS, as its main() builds them after
    every check it makes; nothing starts."""
    started = []
    monkeypatch.setattr(wrappers, "run_pipeline", lambda prog, stages: started.append(stages) or 0)
    assert run_command(monkeypatch, name, LOCALHOST, *args) == 0
    assert len(started) == 1
    relay, *stages = started[0]
    assert relay[:2] == ["ctirelay", LOCALHOST] and "--raw" not in relay  # as `recording`
    return stages


def through(monkeypatch, capfdbinary, tmp_path, stages: list[list[str]], data: bytes) -> bytes:
    """Run STAGES in-process in turn, each reading what the one before wrote (the
    first reads DATA) as it would read its pipe; the last one's output. Each must
    end 0 and say nothing on standard error."""
    for index, (name, *args) in enumerate(stages):
        given = tmp_path / f"stage-{index}.in"
        given.write_bytes(data)
        fd = os.open(given, os.O_RDONLY)
        saved = os.dup(0)
        os.dup2(fd, 0)
        os.close(fd)
        capfdbinary.readouterr()
        try:
            status = run_command(monkeypatch, name, *args)
        finally:
            os.dup2(saved, 0)
            os.close(saved)
        data, err = capfdbinary.readouterr()
        assert (status, err) == (0, b""), (name, args)
    return data


@pytest.fixture
def wrapped(monkeypatch, capfdbinary, tmp_path, recording, no_process):
    """wrapped(NAME, ARGS...): what wrapper NAME given ARGS writes for the recorded
    session (its stages run in-process over `recording`)."""
    return lambda name, *args: through(monkeypatch, capfdbinary, tmp_path,
                                       pipeline(monkeypatch, name, *args), recording)


def test_ctispy_shows_every_message_in_order_with_classic_headers(server):
    tool = Classic("ctispy", server.port)
    converse(tool, server)
    assert tool.finish() == 0, tool.err
    pairs = shown(tool.out)
    assert [m for d, m in pairs if d == "Client > Server"] == CLIENT_MESSAGES
    assert [m for d, m in pairs if d == "Server > Client"] == SERVER_MESSAGES
    lines = tool.out.decode().splitlines()
    assert lines[0].startswith("--- ") and "start" in lines[0]  # the relay's start record
    del lines[0]
    assert lines[0].startswith("--- ") and "session 1 opened" in lines[0]
    assert "session 1 closed by" in lines[-1]
    # compact: one line per message, keys sorted, as the classic json.dumps wrote it
    assert lines[2] == json.dumps(CLIENT_MESSAGES[0], sort_keys=True, ensure_ascii=False)


def test_ctispy_pretty_print_indents(wrapped):
    text = wrapped("ctispy", "--pretty-print").decode()
    assert json.dumps(SERVER_MESSAGES[3], indent=4, sort_keys=True, ensure_ascii=False) in text
    assert "    \"firstname\": \"Björn\"," in text


def test_ctispy_raw_shows_the_traffic_undecoded(server):
    tool = Classic("ctispy", server.port, "--raw")
    client = tool.connect()
    upstream = server.accept()
    client.sendall(b'{"class":"login_id"}\nnot json at all\n')
    assert recv_all(upstream, 37)
    upstream.sendall(b'\xff\xfe binary\n')
    assert recv_all(client, 10) == b'\xff\xfe binary\n'
    client.close()
    upstream.close()
    assert tool.finish() == 0
    text = tool.out.decode()
    assert '{"class":"login_id"}\nnot json at all' in text
    assert "\\xff\\xfe binary" in text  # bytes that are not UTF-8 as \xNN


def test_ctispy_strip_removes_the_fields(wrapped):
    pairs = shown(wrapped("ctispy", "--strip", "timenow", "-s", "commandid", "--strip", "replyid"))
    assert len(pairs) == len(CLIENT_MESSAGES) + len(SERVER_MESSAGES)
    for _, message in pairs:
        assert not {"timenow", "commandid", "replyid"} & set(message)
    assert pairs[0][1] == {k: v for k, v in CLIENT_MESSAGES[0].items() if k != "commandid"}


@pytest.mark.parametrize("option", ["--include", "-i"])
def test_ctispy_include(wrapped, option):
    out = wrapped("ctispy", option, "class=getlist")
    want = [m for m in CLIENT_MESSAGES + SERVER_MESSAGES if m["class"] == "getlist"]
    canonical = lambda messages: sorted(json.dumps(m, sort_keys=True) for m in messages)  # noqa: E731
    assert canonical(m for _, m in shown(out)) == canonical(want)


def test_ctispy_exclude(wrapped):
    got = [m for _, m in shown(wrapped("ctispy", "-e", "class=getlist", "--exclude", "class=dial_success"))]
    assert got and all(m["class"] not in ("getlist", "dial_success") for m in got)
    assert len(got) == sum(1 for m in CLIENT_MESSAGES + SERVER_MESSAGES
                           if m["class"] not in ("getlist", "dial_success"))


@pytest.mark.parametrize("option,kept", [("--no-client", "Server > Client"),
                                         ("--no-server", "Client > Server")])
def test_ctispy_one_side(wrapped, option, kept):
    pairs = shown(wrapped("ctispy", option))
    assert pairs and {d for d, _ in pairs} == {kept}
    assert len(pairs) == len(SERVER_MESSAGES if kept.startswith("Server") else CLIENT_MESSAGES)


def test_ctispy_loop_tells_sessions_apart_and_stops_on_sigint(server):
    tool = Classic("ctispy", server.port, "--loop")
    converse(tool, server)
    converse(tool, server, CLIENT_MESSAGES[:1], SERVER_MESSAGES[:1])
    tool.wait_for(lambda p: b"session 2 closed" in p.out, what="second session closed")
    assert tool.popen.poll() is None
    tool.signal(signal.SIGINT)
    assert tool.finish() == 0
    text = tool.out.decode()
    assert "session 1 opened" in text and "session 2 opened" in text
    assert "Client > Server [session 2]" in text
    assert "Client > Server [session 1]" in text  # every session tagged alike


def test_ctisave_writes_both_sides_mode_0600(server, tmp_path):
    client_file, server_file = tmp_path / "cti-client", tmp_path / "cti-server"
    tool = Classic("ctisave", server.port, str(client_file), str(server_file), "--strip", "timenow",
                   "--strip", "commandid", "--strip", "replyid")
    converse(tool, server)
    assert tool.finish() == 0, tool.err
    for path, sent in ((client_file, CLIENT_MESSAGES), (server_file, SERVER_MESSAGES)):
        assert path.stat().st_mode & 0o777 == 0o600
        stripped = [{k: v for k, v in m.items() if k not in ("timenow", "commandid", "replyid")}
                    for m in sent]
        assert path.read_text() == "".join(
            json.dumps(m, indent=4, sort_keys=True, ensure_ascii=False) + "\n" for m in stripped)


def test_ctisave_redact_masks_the_password(wrapped, tmp_path):
    client_file, server_file = tmp_path / "c", tmp_path / "s"
    assert wrapped("ctisave", str(client_file), str(server_file), "--redact") == b""
    assert "e5229ef4" not in client_file.read_text()
    assert '"hashedpassword": "***"' in client_file.read_text()


def test_ctisave_bad_path_is_one_line_before_listening(monkeypatch, capsys, tmp_path, no_process):
    assert run_command(monkeypatch, "ctisave", LOCALHOST, str(tmp_path / "missing" / "c"),
                       str(tmp_path / "s")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open" in err


@pytest.mark.parametrize("mode", ["-m", None])
def test_ctistat_counts_messages_by_class(wrapped, mode):
    text = wrapped("ctistat", *([mode] if mode else [])).decode()
    for side, sent in (("client", CLIENT_MESSAGES), ("server", SERVER_MESSAGES)):
        section = text.split(f"=== Messages sent by {side}\n")[1].split("===")[0]
        counts = dict(line.rsplit(" ", 1) for line in section.strip().splitlines())
        expected = {}
        for m in sent:
            expected[m["class"]] = expected.get(m["class"], 0) + 1
        assert {k: int(v) for k, v in counts.items()} == expected


def test_ctistat_network(wrapped):
    text = wrapped("ctistat", "-n").decode()
    assert f"Client app bytes:\t{len(wire(CLIENT_MESSAGES))}\n" in text
    assert f"Server app bytes:\t{len(wire(SERVER_MESSAGES))}\n" in text
    assert "Running time:\t\t" in text and "Client IP packets:\t" in text


def test_ctrl_c_stops_the_pipeline_and_ctistat_still_summarises(server):
    tool = Classic("ctistat", server.port)
    client = tool.connect()
    upstream = server.accept()
    client.sendall(wire(CLIENT_MESSAGES[:3]))
    assert recv_all(upstream, len(wire(CLIENT_MESSAGES[:3])))
    stages = wait_for_running_stages(tool, 2)
    # Ctrl-C in a terminal signals the whole foreground group: wrapper and every stage
    for pid in [tool.pid, *stages]:
        os.kill(pid, signal.SIGINT)
    assert tool.finish() == 0, tool.err
    assert "closed by relay" in tool.out.decode()
    assert "=== Messages sent by client\nlogin_id 1\nlogin_pass 1\ngetlist 1" in tool.out.decode()
    assert "Traceback" not in tool.err
    assert recv_all(client) == b""


def test_a_dying_stage_is_named_and_stops_the_pipeline(server):
    tool = Classic("ctispy", server.port, "--strip", "timenow")
    client = tool.connect()
    upstream = server.accept()
    children = tool.children()
    assert len(children) == 3  # ctirelay | ctistrip | ctipretty
    os.kill(children[1], signal.SIGKILL)
    assert tool.finish() != 0
    assert "ctistrip stopped (killed by SIGKILL)" in tool.err
    assert all(not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
               for pid in children)
    client.close()
    upstream.close()


@pytest.mark.parametrize("name,args", [
    ("ctispy", ["xivo", "--no-client", "--no-server"]),
    ("ctispy", ["xivo", "--include", "class"]),
    ("ctispy", ["xivo", "--raw", "--strip", "timenow"]),
    ("ctispy", []),
    ("ctistat", ["xivo", "-m", "-n"]),
    ("ctisave", ["xivo", "onlyonefile"]),
    ("ctispy", ["xivo", "--cert", "relay.pem"]),
    ("ctisave", ["xivo", "c", "s", "--key", "relay.key"]),
    ("ctistat", ["xivo", "--cert", "relay.pem"]),
])
def test_usage_errors_exit_2_before_listening(monkeypatch, capsys, no_process, name, args):
    assert run_command(monkeypatch, name, *args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"{name}: error:"), err


@pytest.mark.parametrize("name", ["ctispy", "ctisave", "ctistat", "ctirelay", "ctidemo"])
def test_help_shows_an_example(monkeypatch, capsys, no_process, name):
    # That every bin/ name starts its command from the clone: tests/test_planted.py.
    assert run_command(monkeypatch, name, "--help") == 0
    assert "example:" in capsys.readouterr().out


def test_demo_runs_end_to_end():
    port = free_port()
    proc = Proc(command("ctidemo", "--listen-port", str(port), "--compact", "--pause", "0"),
                env={**os.environ, "TZ": "UTC"})
    assert proc.finish(timeout=30) == 0, proc.err
    pairs = shown(proc.out)
    classes = [m.get("class") for _, m in pairs]
    assert classes[:3] == ["starttls"] * 3  # offer, request, answer; then inside TLS:
    classes = [c for c in classes[3:] if c != "starttls"]
    assert classes[:6] == ["login_id", "login_id", "login_pass", "login_pass", "login_capas", "login_capas"]
    replies = {m["replyid"] for d, m in pairs if d == "Server > Client" and "replyid" in m}
    asked = {m["commandid"] for d, m in pairs if d == "Client > Server" and m["class"] == "ipbxcommand"}
    assert asked and asked <= replies  # ipbxcommand replies carry the request's commandid
    assert any("ö" in json.dumps(m, ensure_ascii=False) for _, m in pairs)
    assert "session 1 closed by client" in proc.out.decode()


# --- signals, dead stages, arguments checked before anything listens -----------------

def wait_for_stages(tool: Classic, count: int) -> list[int]:
    deadline = time.monotonic() + WAIT
    while len(found := tool.children()) < count:
        assert time.monotonic() < deadline, f"stages never started; stderr: {tool.err}"
        time.sleep(0.01)
    return found


def catches(pid: int, signum: int) -> bool:
    """Has process PID set a handler of its own for SIGNUM (/proc's SigCgt)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)
    return bool(caught and int(caught.group(1), 16) >> (signum - 1) & 1)


def wait_for_running_stages(tool: Classic, count: int) -> list[int]:
    """Until the wrapper's COUNT stages are past their start-up: each has set its
    own signal rules (a stage, as the relay, catches SIGTERM once it runs)."""
    deadline = time.monotonic() + WAIT
    while not (len(found := tool.children()) == count
               and all(catches(pid, signal.SIGTERM) for pid in found)):
        assert time.monotonic() < deadline, f"stages never ran; stderr: {tool.err}"
        time.sleep(0.01)
    return found


@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize("moment", ["stages starting", "mid-session"])
def test_ctrl_c_to_the_process_group_ends_0_with_complete_output(server, times, moment):
    # Ctrl-C in a terminal signals the whole foreground group: the wrapper and every stage.
    tool = Classic("ctispy", server.port, "--strip", "timenow", start_new_session=True)
    if moment == "stages starting":
        wait_for_stages(tool, 3)  # the stages exist, but are still starting up
    else:
        client = tool.connect()
        upstream = server.accept()
        client.sendall(wire(CLIENT_MESSAGES))
        assert recv_all(upstream, len(wire(CLIENT_MESSAGES))) == wire(CLIENT_MESSAGES)
        tool.wait_for(lambda p: p.out.count(b"Client > Server") == len(CLIENT_MESSAGES),
                      what="the client's messages")
    for _ in range(times):
        os.killpg(tool.pid, signal.SIGINT)
        time.sleep(0.05)
    assert tool.finish() == 0, tool.err
    assert "Traceback" not in tool.err and "error" not in tool.err, tool.err
    if moment == "mid-session":
        text = tool.out.decode()
        assert len(shown(tool.out)) == len(CLIENT_MESSAGES)
        assert "session 1 closed by relay" in text.splitlines()[-1]
        assert recv_all(client) == b""


@pytest.mark.parametrize("moment", ["stages starting", "mid-session"])
@pytest.mark.parametrize("name,args", [("ctispy", []), ("ctistat", []),
                                       ("ctisave", ["{tmp}/c", "{tmp}/s"])])
def test_sigterm_to_the_process_group_ends_0_without_a_false_error(server, tmp_path, name, args,
                                                                   moment):
    # What `timeout`, systemd and `kill -- -PGID` do. The wrapper repeats its
    # request to the relay until the relay is gone: a repeat that came after
    # the relay had finished killed it ("ctirelay stopped (killed by SIGTERM)",
    # exit 3); and a relay still starting dies of SIGTERM's default action,
    # which is then what was asked, not a failure.
    tool = Classic(name, server.port, *[a.format(tmp=tmp_path) for a in args],
                   start_new_session=True)
    client = upstream = None
    if moment == "stages starting":
        wait_for_stages(tool, 2)
    else:
        tool.wait_for(lambda p: "listening on" in p.err, what="the relay to listen")
        client = tool.connect()
        upstream = server.accept()
        client.sendall(wire(CLIENT_MESSAGES))
        assert recv_all(upstream, len(wire(CLIENT_MESSAGES))) == wire(CLIENT_MESSAGES)
        wait_for_running_stages(tool, 2)
    os.killpg(tool.pid, signal.SIGTERM)
    assert tool.finish() == 0, tool.err
    assert "error" not in tool.err and "Traceback" not in tool.err, tool.err
    for sock in (client, upstream):
        if sock is not None:
            sock.close()


def test_a_dead_relay_is_named_in_one_line_and_exit_3(server):
    tool = Classic("ctistat", server.port)
    relay = wait_for_stages(tool, 2)[0]
    tool.connect().close()  # the relay listens: it is up
    os.kill(relay, signal.SIGKILL)
    assert tool.finish() == 3
    said = [line for line in tool.err.splitlines() if "listening on" not in line]
    assert said == ["ctistat: error: ctirelay stopped (killed by SIGKILL); stopping the pipeline"]
    assert "ctirelay:" not in tool.err  # every line in the name of the command typed


def test_a_relay_error_is_one_line_in_the_name_of_the_command_typed(server):
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = Proc(command("ctispy", LOCALHOST, "--port", str(server.port),
                            "--listen-addr", LOCALHOST, "--listen-port", str(port)))
        assert proc.finish() == 1  # the relay failed and said why: 1, as ctirelay alone
    assert proc.err.count("\n") == 1, proc.err
    assert proc.err.startswith("ctispy: error: cannot listen on"), proc.err


@pytest.mark.parametrize("expression", ["a..b=1", "class==getlist", "msg.class=getlist", "class<=x"])
@pytest.mark.parametrize("name", ["ctispy", "ctisave"])
def test_wrappers_check_expressions_with_the_stages_parser_before_listening(
        monkeypatch, capsys, no_process, tmp_path, name, expression):
    files = [str(tmp_path / "c"), str(tmp_path / "s")] if name == "ctisave" else []
    assert run_command(monkeypatch, name, LOCALHOST, *files, "--include", expression) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{name}: error:"), err
    assert not list(tmp_path.iterdir())


def test_ctisave_that_cannot_start_leaves_the_files_as_they_were(monkeypatch, capsys, no_process,
                                                                   tmp_path):
    client_file, server_file = tmp_path / "c", tmp_path / "s"
    client_file.write_text("yesterday's capture\n")
    server_file.write_text("keep me\n")
    monkeypatch.chdir(tmp_path)
    for args in [("no.such.host.invalid", "c", "s"),   # HOST does not resolve
                 ("c", "s", LOCALHOST),                # arguments in the wrong order
                 (LOCALHOST, "c", "missing/s")]:       # a path that cannot be written
        assert run_command(monkeypatch, "ctisave", *args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "s"]
        assert client_file.read_text() == "yesterday's capture\n"
        assert server_file.read_text() == "keep me\n"


def test_ctisave_wrong_order_says_host_comes_first(monkeypatch, capsys, no_process, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert run_command(monkeypatch, "ctisave", "c", "s", LOCALHOST) == 1
    err = capsys.readouterr().err
    assert "cannot resolve HOST 'c'" in err
    assert "usage: ctisave HOST CLIENTFILE SERVERFILE" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("paths", [("same", "same"), ("same", "./same"), ("same", "sub/../same")])
def test_ctisave_refuses_the_same_file_twice(monkeypatch, capsys, no_process, tmp_path, paths):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert run_command(monkeypatch, "ctisave", LOCALHOST, *paths) == 2
    assert "the same file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_ctistat_given_a_file_never_relays_to_a_host_named_after_it(monkeypatch, capfd, no_process,
                                                                      tmp_path):
    # no_process: neither a relay nor anything else is started
    saved = tmp_path / "session.jsonl"
    saved.write_bytes((REPO / "tests" / "golden" / "session.jsonl").read_bytes())
    status = run_command(monkeypatch, "ctistat", str(saved))
    err = capfd.readouterr().err
    assert status in (0, 2), err  # the sink: never a relay (exit 3) or a listener
    assert "resolve" not in err and "ctirelay" not in err
    assert run_command(monkeypatch, "ctistat", "nothing-such.invalid") == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "and no such file" in err
    # the value of a relay option is not taken for a HOST
    assert run_command(monkeypatch, "ctistat", "--listen-port", "0", str(saved), "--json") == 2
    assert "--listen-port" in capfd.readouterr().err  # the sink has no such option


def test_ctisave_jsonl_keeps_the_tagged_records(wrapped, tmp_path):
    client_file, server_file = tmp_path / "c.jsonl", tmp_path / "s.jsonl"
    assert wrapped("ctisave", str(client_file), str(server_file), "--jsonl") == b""
    records = [json.loads(line) for line in client_file.read_text().splitlines()]
    assert [r["msg"] for r in records if "msg" in r] == CLIENT_MESSAGES


def test_ctispy_color_and_compact(wrapped):
    assert b"\x1b[" in wrapped("ctispy", "--color", "always", "--compact")
    plain = wrapped("ctispy", "--color", "never")
    assert b"\x1b[" not in plain and len(shown(plain)) == len(CLIENT_MESSAGES + SERVER_MESSAGES)


def test_relay_options_reach_the_relay_whatever_they_are():
    from ctipipe import wrappers as classic
    from ctipipe.core import cli
    from ctipipe.relay import command as relay_module
    wrapper = cli.Parser("w")
    actions = classic.add_relay_options(wrapper)
    relay = cli.Parser("r")
    relay_module.add_relay_options(relay)
    given = ["xivo", "--port", "5013", "--listen-addr", "::1", "--listen-port", "0", "--loop",
             "--raw", "--max-line", "1000", "--connect-timeout", "2.5", "-v"]
    assert vars(relay.parse_args(classic.relay_argv(actions, wrapper.parse_args(given)))) == \
        vars(relay.parse_args(given))
    assert classic.relay_argv(actions, wrapper.parse_args(["xivo"])) == ["xivo"]


@pytest.mark.parametrize("name", sorted(commands.COMMANDS))
def test_every_command_has_version(monkeypatch, capsys, no_process, name):
    # Through every bin/ name, a process each: tests/test_planted.py.
    from ctipipe import __version__
    assert run_command(monkeypatch, name, "--version") == 0
    assert capsys.readouterr().out == f"{name} {__version__}\n"


def test_ctisave_whose_relay_cannot_listen_leaves_the_files_as_they_were(server, tmp_path):
    client_file, server_file = tmp_path / "c", tmp_path / "s"
    client_file.write_text("yesterday's capture\n")
    server_file.write_text("keep me\n")
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = Proc(command("ctisave", LOCALHOST, "--port", str(server.port), "--listen-addr",
                            LOCALHOST, "--listen-port", str(port), str(client_file), str(server_file)))
        assert proc.finish() == 1
    assert "cannot listen" in proc.err
    assert client_file.read_text() == "yesterday's capture\n"
    assert server_file.read_text() == "keep me\n"


def test_ctistat_host_whose_port_is_taken_says_only_why(server):
    # The relay could not listen and said so; the sink then reported "No
    # session" on standard output under that error, which misled.
    taken = socket.socket()
    taken.bind((LOCALHOST, 0))
    taken.listen()
    try:
        proc = Proc(command("ctistat", LOCALHOST, "--port", str(server.port), "--listen-addr",
                            LOCALHOST, "--listen-port", str(taken.getsockname()[1])))
        assert proc.finish() == 1
    finally:
        taken.close()
    assert proc.out == b""
    assert proc.err.count("\n") == 1 and "Address already in use" in proc.err, proc.err
