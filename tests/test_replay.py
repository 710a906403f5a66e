"""ctireplay as a user runs it: real processes, real sockets on 127.0.0.1."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import LOCALHOST, STARTED, WAIT, Proc, Relay, command, free_port, kill_started


def rec(*records) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def msg(ts, side, body):
    return {"ts": ts, "conn": 1, "from": side, "size": 0, "msg": body}


class Mock(Proc):
    """ctireplay as a server on a port the kernel chose, learnt from its first line."""

    def __init__(self, recording, *args: str, **popen) -> None:
        super().__init__(command("ctireplay", str(recording), "--listen-addr", LOCALHOST,
                                 "--listen-port", "0", *args), **popen)
        self.wait_for(lambda p: "listening on" in p.err, what="the mock to listen")
        self.port = int(self.err.split("listening on ")[1].split(":")[1])

    def connect(self) -> socket.socket:
        return socket.create_connection((LOCALHOST, self.port), timeout=WAIT)


def demo_server(*args: str, env=None) -> int:
    port = free_port()
    proc = Proc(command("ctidemo", "server", "--port", str(port), *args), env=env)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return port
        except OSError:
            assert proc.popen.poll() is None and time.monotonic() < deadline, proc.err
            time.sleep(0.05)


def demo_client(port: int, *args: str, env=None) -> Proc:
    return Proc(command("ctidemo", "client", "--port", str(port), "--pause", "0.01", *args),
                env=env)


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    """Where the relay and the mock keep their certificate: never the user's own."""
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path_factory.mktemp("data"))}


def record(path, env, *server_args: str):
    """A demo session recorded through ctirelay, as a user would make one."""
    try:
        port = demo_server(*server_args, env=env)
        relay = Relay(port, env=env)
        client = demo_client(relay.port, env=env)
        assert client.finish() == 0, client.err
        assert relay.finish() == 0, relay.err
        path.write_bytes(relay.out)
    finally:
        kill_started()
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory, data_home):
    """A plain session (protocol 1.x login)."""
    return record(tmp_path_factory.mktemp("replay") / "session.jsonl", data_home, "--no-starttls")


@pytest.fixture(scope="module")
def tls_recording(tmp_path_factory, data_home):
    """A session that went through STARTTLS (the demo server offers it), decrypted by the relay."""
    path = record(tmp_path_factory.mktemp("replay") / "tls.jsonl", data_home)
    assert b'"event":"tls"' in path.read_bytes()
    return path


def records(proc: Proc) -> list[dict]:
    return [json.loads(line) for line in proc.out.splitlines()]


def data(records_: list[dict], side: str) -> list[dict]:
    return [r["msg"] for r in records_ if r.get("from") == side and "msg" in r]


def test_the_demo_client_completes_against_the_mock_with_its_own_commandids(recording):
    recorded = [json.loads(line) for line in recording.read_bytes().splitlines()]
    mock = Mock(recording, "--pace", "asap")
    client = demo_client(mock.port)
    assert client.finish() == 0, client.err
    assert mock.finish() == 0, mock.err
    live = records(mock)
    assert live[0]["event"] == "start" and live[0]["producer"].startswith("ctireplay ")
    assert live[1]["event"] == "open" and live[1]["server"] == f"replay:{recording}#1"
    assert live[-1]["event"] == "close" and live[-1]["by"] == "client"
    requests = {m["commandid"]: m for m in data(live, "client") if "commandid" in m}
    recorded_ids = {m.get("commandid") for m in data(recorded, "client")}
    assert requests and not recorded_ids & set(requests)  # the demo client's ids are fresh
    replies = [m for m in data(live, "server") if "replyid" in m]
    assert len(replies) == len([m for m in data(recorded, "server") if "replyid" in m]) > 10
    for reply in replies:
        assert requests[reply["replyid"]]["class"] == reply["class"]
    assert "session 1: followed the recording" in mock.err


def pause_recording(tmp_path, gap: float) -> str:
    path = tmp_path / "pause.jsonl"
    path.write_bytes(rec({"ts": 100.0, "conn": 1, "event": "open", "client": "c:1", "server": "s:2"},
                         msg(100.0, "client", {"class": "login_id", "commandid": 1}),
                         msg(100.01, "server", {"class": "login_id", "sessionid": "abc"}),
                         msg(100.01 + gap, "server", {"class": "sheet", "n": 1}),
                         {"ts": 100.02 + gap, "conn": 1, "event": "close", "by": "server",
                          "bytes": {}, "reads": {}, "duration": gap}))
    return path


def time_between_login_reply_and_sheet(mock: Mock) -> float:
    sock = mock.connect()
    sock.sendall(b'{"class":"login_id","commandid":42}\n')
    reader = sock.makefile("rb")
    first = json.loads(reader.readline())
    got_first = time.monotonic()
    second = json.loads(reader.readline())
    gap = time.monotonic() - got_first
    assert first["class"] == "login_id" and second["class"] == "sheet"
    assert reader.readline() == b""  # the recorded server closed: so does the mock
    reader.close()
    sock.close()
    assert mock.finish() == 0, mock.err
    return gap


def test_pace_asap_does_not_wait_and_a_factor_shortens(tmp_path):
    assert time_between_login_reply_and_sheet(Mock(pause_recording(tmp_path, 5.0), "--pace", "asap")) < 2.0
    assert time_between_login_reply_and_sheet(Mock(pause_recording(tmp_path, 5.0), "--pace", "10")) < 2.5


def test_an_unexpected_request_is_reported_at_once_and_not_answered(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                         msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}),
                         msg(1.2, "client", {"class": "getlist", "commandid": 2}),
                         msg(1.3, "server", {"class": "getlist", "replyid": 2, "list": []})))
    mock = Mock(path, "--pace", "asap")
    sock = mock.connect()
    reader = sock.makefile("rb")
    sock.sendall(b'{"class":"login_id","commandid":10}\n')
    assert json.loads(reader.readline())["class"] == "login_id"
    sock.sendall(b'{"class":"frobnicate","commandid":11}\n')
    mock.wait_for(lambda p: "unexpected client message frobnicate" in p.err, what="the report")
    sock.sendall(b'{"class":"getlist","commandid":12}\n')
    assert json.loads(reader.readline()) == {"class": "getlist", "replyid": 12, "list": []}
    reader.close()
    sock.close()
    assert mock.finish() == 1
    assert "session 1: diverged: 1 unexpected (frobnicate)" in mock.err


def test_a_client_that_leaves_early_is_reported(tmp_path, recording):
    mock = Mock(recording, "--pace", "asap")
    sock = mock.connect()
    sock.sendall(b'{"class":"login_id","commandid":10}\n')
    with sock.makefile("rb") as reader:
        reader.readline()
    sock.close()
    assert mock.finish() == 1
    assert "session 1: diverged: " in mock.err and "expected and not seen (login_pass" in mock.err


def test_loop_serves_clients_one_after_another_and_ctrl_c_ends_with_0(recording):
    mock = Mock(recording, "--pace", "asap", "--loop")
    for _ in range(2):
        client = demo_client(mock.port)
        assert client.finish() == 0, client.err
    mock.wait_for(lambda p: p.out.count(b'"event":"close"') == 2, what="two sessions")
    mock.signal(signal.SIGINT)
    assert mock.finish() == 0, mock.err
    assert [r["conn"] for r in records(mock) if r.get("event") == "open"] == [1, 2]
    assert "session 2: followed the recording" in mock.err


def test_loop_outlives_clients_that_reset_as_they_connect(recording):
    """Port scans and health checks: each such client is one error line, and
    the mock goes on serving (a getpeername() that failed ended it once)."""
    import struct
    mock = Mock(recording, "--pace", "asap", "--loop")
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.connect((LOCALHOST, mock.port))
        sock.close()  # a reset, at once
    client = demo_client(mock.port)
    assert client.finish() == 0, client.err
    mock.wait_for(lambda p: b'"event":"close"' in p.out, what="the real session's close")
    mock.signal(signal.SIGINT)
    status = mock.finish()
    live = records(mock)
    errors = [r for r in live if r.get("event") == "error"]
    opened = [r["conn"] for r in live if r.get("event") == "open"]
    # A reset that came before the mock asked for the peer's address is an
    # error record; one that came after (rare) is a session the client ended
    # at once, which diverged from the recording: then the exit status is 1.
    assert len(errors) + len(opened) == 201 and len(errors) > 0
    assert status == (0 if len(opened) == 1 else 1), mock.err
    assert all(r["error"].startswith("the client left as it connected") for r in errors)
    assert "Traceback" not in mock.err
    assert mock.err.count(": followed the recording") == 1


def test_clients_5_against_the_demo_server_feed_ctistat(recording):
    port = demo_server("--no-starttls")
    replay = Proc(command("ctireplay", str(recording), "--to", LOCALHOST, "--port", str(port),
                          "--clients", "5", "--password", "demo", "--pace", "asap"))
    assert replay.finish(30) == 0, replay.err
    live = records(replay)
    assert live[0]["event"] == "start" and live[0]["server"] == f"{LOCALHOST}:{port}"
    assert sorted(r["conn"] for r in live if r.get("event") == "open") == [1, 2, 3, 4, 5]
    assert sorted(r["conn"] for r in live if r.get("event") == "close") == [1, 2, 3, 4, 5]
    for conn in range(1, 6):
        sent = [r["msg"] for r in live if r.get("conn") == conn and r.get("from") == "client"]
        ids = {m["commandid"] for m in sent if "commandid" in m}
        assert len(ids) == len([m for m in sent if "commandid" in m])  # fresh and distinct
        got = [r["msg"] for r in live if r.get("conn") == conn and r.get("from") == "server"]
        assert {m["replyid"] for m in got if "replyid" in m} <= ids
        assert f"session {conn}: followed the recording" in replay.err
    stat = Proc(command("ctistat"), stdin=subprocess.PIPE)
    stat.popen.stdin.write(replay.out)
    stat.popen.stdin.close()
    assert stat.finish() == 0
    assert stat.out.count(b"=== Session") == 5 and b"login_pass" in stat.out
    # Every request is recorded before its reply, so ctistat pairs them all (a
    # request recorded after send_all returned came after a fast reply: "no reply").
    for conn in range(1, 6):
        times = [(r["ts"], r["from"], r["msg"]) for r in live
                 if r.get("conn") == conn and "msg" in r]
        asked = {m["commandid"]: ts for ts, side, m in times if side == "client" and "commandid" in m}
        for ts, side, message in times:
            if side == "server" and message.get("replyid") in asked:
                assert asked[message["replyid"]] <= ts, message
    *summaries, totals = subprocess.run(command("ctistat", "--json"), input=replay.out,
                                        capture_output=True, timeout=WAIT).stdout.splitlines()
    assert len(summaries) == 5
    totals = json.loads(totals)["totals"]
    assert (totals["sessions"], totals["completed"]) == (5, 5)
    assert totals["latency"]["getlist"]["no_reply"] == 0
    for summary in map(json.loads, summaries):
        for kind in ("getlist", "ipbxcommand", "login_id", "login_pass", "login_capas"):
            assert summary["latency"][kind]["no_reply"] == 0, (kind, summary["latency"])


def test_password_is_hashed_with_the_live_sessionid(recording):
    port = demo_server("--no-starttls")  # it checks sha1(sessionid:password), else error_string
    argv = command("ctireplay", str(recording), "--to", LOCALHOST, "--port", str(port),
                   "--pace", "asap")
    without = Proc(argv)
    assert without.finish(30) == 1
    assert "login_pass answered with error 'login_password'" in without.err
    wrong = Proc(argv + ["--password", "nope"])
    assert wrong.finish(30) == 1 and "login_password" in wrong.err
    right = Proc(argv + ["--password", "demo"])
    assert right.finish(30) == 0, right.err
    assert "session 1: followed the recording" in right.err


def test_a_server_that_never_answers_is_reported_and_the_command_ends(recording, server):
    replay = Proc(command("ctireplay", str(recording), "--to", LOCALHOST, "--port",
                          str(server.port), "--timeout", "0.5", "--pace", "asap"))
    held = server.accept()  # accepted, never answered
    assert replay.finish(30) == 1
    assert "session 1: diverged: " in replay.err and "timed out (reply login_id" in replay.err
    assert "gave up after 3 replies in a row timed out" in replay.err
    held.close()


def test_a_server_that_cannot_be_reached_is_reported(recording):
    port = free_port()  # nothing listens there
    replay = Proc(command("ctireplay", str(recording), "--to", LOCALHOST, "--port", str(port),
                          "--clients", "2"))
    assert replay.finish() == 1
    assert f"session 2: diverged: cannot reach {LOCALHOST}:{port}: Connection refused" in replay.err
    assert [r["event"] for r in records(replay)] == ["start", "error", "error"]


def test_raw_lines_are_replayed_as_they_were(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_bytes(rec({"ts": 1.0, "conn": 1, "from": "server", "size": 9, "raw": "not json"},
                         {"ts": 1.1, "conn": 1, "from": "server", "size": 7, "raw": "\u00e9t\u00e9\r"},
                         {"ts": 1.2, "conn": 1, "event": "close", "by": "server",
                          "bytes": {}, "reads": {}, "duration": 0.2}))
    mock = Mock(path, "--pace", "asap")
    sock = mock.connect()
    assert b"".join(iter(lambda: sock.recv(1 << 16), b"")) == "not json\nété\r\n".encode()
    sock.close()
    assert mock.finish() == 0, mock.err


BAD = [
    (["missing.jsonl"], "cannot read missing.jsonl: No such file or directory"),
    (["{empty}"], "holds no session"),
    (["{events}"], "holds no session"),
    (["{rec}", "--conn", "7"], "has no session 7 (its sessions: 1)"),
    (["{clientonly}"], "session 1 has no server messages"),
    (["{truncated}"], "is cut short"),
    (["{notjson}"], "line 1 is not JSON"),
    (["{rec}", "--clients", "3"], "--clients needs --to HOST"),
    (["{rec}", "--password", "x"], "--password needs --to HOST"),
    (["{rec}", "--to", LOCALHOST, "--loop"], "--loop is for the mock server"),
    (["{rec}", "--pace", "slow"], "not asap, recorded or a speed factor"),
    (["{rec}", "--pace", "0"], "a speed factor must be a number above 0 and finite"),
    (["{rec}", "--pace", "inf"], "(asap: no pauses at all)"),
    (["{rec}", "--to", LOCALHOST, "--port", "0"], "a server's port number out of range 1-65535"),
    (["{rec}", "--clients", "0", "--to", LOCALHOST], "out of range"),
    (["{rec}", "--to", LOCALHOST, "--conn", "x"], "not a number"),
    (["/dev/zero"], "/dev/zero: a line longer than 64 MiB: not a recording"),  # bounded memory
]


@pytest.mark.parametrize("argv, says", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_started(tmp_path, argv, says):
    files = {"empty": b"",
             "events": rec({"ts": 1.0, "event": "start", "stream": 1, "producer": "ctirelay 0.1.0"}),
             "rec": rec(msg(1.0, "client", {"class": "a"}), msg(1.1, "server", {"class": "b"})),
             "clientonly": rec(msg(1.0, "client", {"class": "login_id"})),
             "truncated": rec(msg(1.0, "client", {"class": "a"}), msg(1.1, "server", {"class": "b"}))[:-12],
             "notjson": b"ctirelay: listening on 0.0.0.0:50030\n"}
    for name, content in files.items():
        (tmp_path / f"{name}.jsonl").write_bytes(content)
    argv = [str(tmp_path / f"{a[1:-1]}.jsonl") if a.startswith("{") else a for a in argv]
    proc = Proc(command("ctireplay", *argv, "--listen-port", "0") if "--to" not in argv
                else command("ctireplay", *argv), cwd=tmp_path)
    assert proc.finish() == 2
    lines = proc.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctireplay: error: ") and says in lines[0], lines
    assert proc.out == b""
    assert "listening" not in proc.err


@pytest.mark.parametrize("argv", [["--compact", "--pause", "0.01", "replay"],
                                  ["replay", "--compact", "--pause", "0.01", "--no-starttls"]])
def test_ctidemo_replay_records_then_replays_through_ctispy(argv):
    demo = Proc(command("ctidemo", *argv))
    assert demo.finish(60) == 0, demo.err
    assert "ctireplay: session 1: followed the recording" in demo.err
    assert demo.out.count(b"Server > Client") > 10 and b'"logout"' in demo.out
    assert demo.out.count(b'\n{"class": ') > 10  # --compact: each message on one line
    assert (b"TLS (STARTTLS)" in demo.out) == ("--no-starttls" not in argv)


def test_a_hostile_endless_line_is_one_unexpected_line_and_the_session_goes_on(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                         msg(1.1, "server", {"class": "login_id", "sessionid": "abc"})))
    mock = Mock(path, "--pace", "asap", "--max-line", "65536")
    sock = mock.connect()
    sock.sendall(b"x" * (8 << 20) + b"\n")  # far over --max-line, cut off with its newline
    sock.sendall(b'{"class":"login_id","commandid":10}\n')
    with sock.makefile("rb") as reader:
        assert json.loads(reader.readline())["class"] == "login_id"
    sock.close()
    assert mock.finish() == 1
    assert "1 unexpected (a line that is not a CTI message)" in mock.err


def test_ctrl_c_ends_live_clients_with_their_close_records(recording, server):
    replay = Proc(command("ctireplay", str(recording), "--to", LOCALHOST, "--port",
                          str(server.port), "--clients", "3", "--timeout", "30"))
    held = [server.accept() for _ in range(3)]
    replay.wait_for(lambda p: p.out.count(b'"event":"open"') == 3, what="three sessions")
    replay.signal(signal.SIGINT)
    assert replay.finish() == 0, replay.err
    assert sorted(r["conn"] for r in records(replay) if r.get("event") == "close") == [1, 2, 3]
    assert replay.err.count(": interrupted") == 3
    for sock in held:
        sock.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_any_client_ends_the_mock_with_0(recording, signum):
    mock = Mock(recording)
    mock.signal(signum)
    assert mock.finish() == 0, mock.err
    assert [r["event"] for r in records(mock)] == ["start"]


def test_the_mock_offers_starttls_as_the_recorded_server_did(tls_recording, data_home):
    mock = Mock(tls_recording, "--pace", "asap", env=data_home)
    client = demo_client(mock.port, env=data_home)
    assert client.finish() == 0, client.err
    assert mock.finish() == 0, mock.err
    live = records(mock)
    events = [r["event"] for r in live if "event" in r]
    assert events == ["start", "open", "tls", "close"]
    tls_event = next(r for r in live if r.get("event") == "tls")
    assert tls_event["how"] == "starttls" and tls_event["client"]["version"].startswith("TLS")
    after = live[live.index(tls_event) + 1:]
    assert any(r.get("msg", {}).get("class") == "login_pass" and "password" in r["msg"] for r in after)
    assert "session 1: followed the recording" in mock.err


def test_no_starttls_serves_the_same_recording_in_clear(tls_recording, data_home):
    mock = Mock(tls_recording, "--pace", "asap", "--no-starttls", env=data_home)
    client = demo_client(mock.port, env=data_home)
    assert client.finish() == 0, client.err
    assert mock.finish() == 0, mock.err
    assert b'"event":"tls"' not in mock.out and b'"class":"starttls"' not in mock.out
    assert "session 1: followed the recording" in mock.err


def test_clients_do_starttls_when_the_server_answers_it(tls_recording, data_home):
    port = demo_server(env=data_home)
    replay = Proc(command("ctireplay", str(tls_recording), "--to", LOCALHOST, "--port", str(port),
                          "--clients", "3", "--pace", "asap", "--password", "demo"), env=data_home)
    assert replay.finish(30) == 0, replay.err
    live = records(replay)
    assert sorted(r["conn"] for r in live if r.get("event") == "tls") == [1, 2, 3]
    assert replay.err.count(": followed the recording") == 3
    wrong = Proc(command("ctireplay", str(tls_recording), "--to", LOCALHOST, "--port", str(port),
                         "--pace", "asap", "--password", "nope"), env=data_home)
    assert wrong.finish(30) == 1 and "login_pass answered with error 'login_password'" in wrong.err


def test_what_a_hostile_client_sends_reaches_standard_error_escaped(recording):
    # "unexpected client message evil<ESC>[2J<U+202E>" was printed as it came.
    mock = Mock(recording, "--pace", "asap", "--no-starttls", "--timeout", "1")
    sock = mock.connect()
    sock.sendall(b'{"class":"evil\\u001b[2J\\u202e","commandid":1}\n')
    mock.wait_for(lambda p: "evil" in p.err, what="the unexpected message reported")
    sock.close()
    assert mock.finish() == 1
    assert "\x1b" not in mock.err and "\u202e" not in mock.err, mock.err
    assert "evil\\x1b[2J\\u202e" in mock.err
