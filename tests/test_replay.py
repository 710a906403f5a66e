"""ctireplay on demo sessions recorded through the relay. In-process where the
logic is what is tested: the mock serves the demo client over memory streams
(autojump_clock), the live clients run as ctireplay's main() against the demo
server in a thread. Real processes for what only a process shows: signals and
exit statuses, accepting with --loop, ctidemo replay's process tree (which
records through ctirelay and replays through ctispy)."""
import contextlib
import functools
import json
import os
import queue
import signal
import socket
import struct
import threading

import pytest
import trio
import trio.testing

from ctipipe.demo.client import run_client
from ctipipe.demo.lines import Lines
from ctipipe.demo.server import serve as demo_serve
from ctipipe.relay import certs, intercept
from ctipipe.relay.command import Relay as RelayServer
from ctipipe.relay.tap import Tap
from ctipipe.replay import report, script
from ctipipe.replay.command import main as ctireplay
from ctipipe.stages import stats
from ctipipe.stages.runner import Runner
from helpers import LOCALHOST, WAIT, Proc, command, free_port
from replay_peers import Said, file_tap, mock, msg, rec, serve_one

ASAP = float("inf")


# --- the recordings: demo sessions through the relay, as a user makes them -------------

@contextlib.contextmanager
def demo_server(starttls: bool):
    """The demo CTI server in-process, in a thread of its own (main() runs its own
    event loop in the main thread); yields its port."""
    ports: queue.Queue = queue.Queue()
    running = {}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            running["scope"], running["token"] = nursery.cancel_scope, trio.lowlevel.current_trio_token()
            ports.put(await nursery.start(functools.partial(demo_serve, LOCALHOST, 0,
                                                            starttls=starttls)))

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    try:
        yield ports.get(timeout=WAIT)
    finally:
        if running:
            trio.from_thread.run_sync(running["scope"].cancel, trio_token=running["token"])
        thread.join(WAIT)
        assert not thread.is_alive()


async def record(path, starttls: bool) -> None:
    """A demo session recorded through the relay (ctirelay HOST --port PORT
    --listen-port 0 > path: its defaults, STARTTLS intercepted with its own
    certificate), the demo server and client in-process too."""
    cert, key, _ = certs.relay_certificate()
    tls_options = intercept.Options(starttls="intercept", implicit=False,
                                    client_context=certs.client_leg_context(cert, key),
                                    server_context=certs.server_leg_context(), verified=False,
                                    cert=str(cert))
    tap = Tap(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), raw=False,
              max_line=16 << 20, notify=Said().say)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.run)
        server_port = await nursery.start(functools.partial(demo_serve, LOCALHOST, 0,
                                                            starttls=starttls))
        relay = RelayServer(LOCALHOST, server_port, listen_addr=LOCALHOST, listen_port=0,
                            loop=False, tap=tap, verbose=False, connect_timeout=WAIT,
                            notices=Said(), tls_options=tls_options)
        async with trio.open_nursery() as relaying:
            bound = await relaying.start(relay.serve)
            # A plain session's client logs in at once (ctidemo replay --no-starttls).
            relaying.start_soon(run_client, LOCALHOST, int(bound[0].rsplit(":", 1)[1]), "alice",
                                0.01, starttls)
        tap.close()
        await tap.finished.wait()
        os.close(tap.fd)
        nursery.cancel_scope.cancel()  # the demo server


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two demo sessions recorded through the relay at the same time: {"plain": path, "tls": path}."""
    folder = tmp_path_factory.mktemp("replay")
    paths = {"plain": folder / "plain.jsonl", "tls": folder / "tls.jsonl"}

    async def both() -> None:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for kind, path in paths.items():
                    nursery.start_soon(record, path, kind == "tls")
    trio.run(both)
    return paths


@pytest.fixture(scope="module")
def recording(recordings):
    """A plain session (protocol 1.x login)."""
    return recordings["plain"]


@pytest.fixture(scope="module")
def tls_recording(recordings):
    """A session that went through STARTTLS (the demo server offers it), decrypted by the relay."""
    assert b'"event":"tls"' in recordings["tls"].read_bytes()
    return recordings["tls"]


def read_records(path) -> list[dict]:
    return [json.loads(line) for line in open(path, "rb").read().splitlines()]


def data(records_: list[dict], side: str) -> list[dict]:
    return [r["msg"] for r in records_ if r.get("from") == side and "msg" in r]


# --- the mock, in-process: the demo client over memory streams ---------------------------

async def demo_client_against_mock(monkeypatch, path, out, *, no_starttls: bool = False):
    """The demo client's session against a mock of `path` (as ctireplay PATH --pace asap
    [--no-starttls] serves it, STARTTLS with the relay's certificate when the recording
    went through it); the mock, its records in `out`."""
    loaded = script.load(path.read_bytes())
    if no_starttls:
        loaded = loaded.without_starttls()
    context = None
    if loaded.starttls:
        cert, key, _ = certs.relay_certificate()
        context = certs.client_leg_context(cert, key)
    async with trio.open_nursery() as nursery:
        server = mock(loaded, nursery, tap=file_tap(nursery, out), pace=ASAP, tls_context=context)

        async def connect(host, port):
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_one, server, theirs)
            return ours
        monkeypatch.setattr(trio, "open_tcp_stream", connect)
        await run_client(LOCALHOST, 5003, "alice", 0.01)
    return server, read_records(out)


def said(server) -> list[str]:
    return report.run_report(server.results)


async def test_the_demo_client_completes_against_the_mock_with_its_own_commandids(
        autojump_clock, monkeypatch, recording, tmp_path):
    recorded = read_records(recording)
    server, live = await demo_client_against_mock(monkeypatch, recording, tmp_path / "out")
    assert live[0]["event"] == "open" and live[-1]["event"] == "close"
    assert live[-1]["by"] == "client"
    requests = {m["commandid"]: m for m in data(live, "client") if "commandid" in m}
    recorded_ids = {m.get("commandid") for m in data(recorded, "client")}
    assert requests and not recorded_ids & set(requests)  # the demo client's ids are fresh
    replies = [m for m in data(live, "server") if "replyid" in m]
    assert len(replies) == len([m for m in data(recorded, "server") if "replyid" in m]) > 10
    for reply in replies:
        assert requests[reply["replyid"]]["class"] == reply["class"]
    assert said(server)[0] == "session 1: followed the recording"


async def test_the_mock_offers_starttls_as_the_recorded_server_did(
        autojump_clock, monkeypatch, tls_recording, tmp_path):
    server, live = await demo_client_against_mock(monkeypatch, tls_recording, tmp_path / "out")
    events = [r["event"] for r in live if "event" in r]
    assert events == ["open", "tls", "close"]
    tls_event = next(r for r in live if r.get("event") == "tls")
    assert tls_event["how"] == "starttls" and tls_event["client"]["version"].startswith("TLS")
    after = live[live.index(tls_event) + 1:]
    assert any(r.get("msg", {}).get("class") == "login_pass" and "password" in r["msg"] for r in after)
    assert said(server)[0] == "session 1: followed the recording"


async def test_no_starttls_serves_the_same_recording_in_clear(
        autojump_clock, monkeypatch, tls_recording, tmp_path):
    server, _ = await demo_client_against_mock(monkeypatch, tls_recording, tmp_path / "out",
                                               no_starttls=True)
    written = (tmp_path / "out").read_bytes()
    assert b'"event":"tls"' not in written and b'"class":"starttls"' not in written
    assert said(server)[0] == "session 1: followed the recording"


# --- the mock, in-process: a test's own client over memory streams ----------------------

@contextlib.asynccontextmanager
async def mock_session(recording, **options):
    """(mock, our end of its one client's connection); the mock has ended on exit."""
    async with trio.open_nursery() as nursery:
        server = mock(recording, nursery, pace=ASAP, **options)
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_one, server, theirs)
        yield server, ours


async def next_message(lines: Lines) -> dict:
    return json.loads(await lines.next())


async def test_an_unexpected_request_is_reported_at_once_and_not_answered(autojump_clock):
    recording = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                    msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}),
                    msg(1.2, "client", {"class": "getlist", "commandid": 2}),
                    msg(1.3, "server", {"class": "getlist", "replyid": 2, "list": []}))
    async with mock_session(recording) as (server, ours):
        lines = Lines(ours)
        await ours.send_all(b'{"class":"login_id","commandid":10}\n')
        assert (await next_message(lines))["class"] == "login_id"
        await ours.send_all(b'{"class":"frobnicate","commandid":11}\n')
        await trio.testing.wait_all_tasks_blocked()
        assert server.notices.lines == ["session 1: unexpected client message frobnicate (the "
                                        "recording has getlist next): not answered"]
        await ours.send_all(b'{"class":"getlist","commandid":12}\n')
        assert await next_message(lines) == {"class": "getlist", "replyid": 12, "list": []}
        await ours.aclose()
    assert said(server)[0] == "session 1: diverged: 1 unexpected (frobnicate)"


async def test_a_client_that_leaves_early_is_reported(autojump_clock, recording):
    async with mock_session(recording.read_bytes()) as (server, ours):
        await ours.send_all(b'{"class":"login_id","commandid":10}\n')
        assert (await next_message(Lines(ours)))["class"] == "login_id"
        await ours.aclose()
    line = said(server)[0]
    assert line.startswith("session 1: diverged: ") and "expected and not seen (login_pass" in line


async def test_raw_lines_are_replayed_as_they_were(autojump_clock):
    recording = rec({"ts": 1.0, "conn": 1, "from": "server", "size": 9, "raw": "not json"},
                    {"ts": 1.1, "conn": 1, "from": "server", "size": 7, "raw": "\u00e9t\u00e9\r"},
                    {"ts": 1.2, "conn": 1, "event": "close", "by": "server",
                     "bytes": {}, "reads": {}, "duration": 0.2})
    async with mock_session(recording) as (server, ours):
        got = b""
        while chunk := await ours.receive_some(1 << 16):
            got += chunk
        await ours.aclose()
    assert got == "not json\nété\r\n".encode()
    assert said(server)[0] == "session 1: followed the recording"


async def test_a_hostile_endless_line_is_one_unexpected_line_and_the_session_goes_on(autojump_clock):
    recording = rec(msg(1.0, "client", {"class": "login_id", "commandid": 1}),
                    msg(1.1, "server", {"class": "login_id", "sessionid": "abc"}))
    async with mock_session(recording, max_line=65536) as (server, ours):
        await ours.send_all(b"x" * (8 << 20) + b"\n")  # far over max_line, cut off with its newline
        await ours.send_all(b'{"class":"login_id","commandid":10}\n')
        assert (await next_message(Lines(ours)))["class"] == "login_id"
        await ours.aclose()
    assert said(server)[0] == "session 1: diverged: 1 unexpected (a line that is not a CTI message)"


async def test_what_a_hostile_client_sends_reaches_standard_error_escaped(autojump_clock, tmp_path,
                                                                          recording):
    # "unexpected client message evil<ESC>[2J<U+202E>" was printed as it came.
    from ctipipe.core.notices import Notices
    fd = os.open(tmp_path / "stderr", os.O_WRONLY | os.O_CREAT)
    notices = Notices(fd, prog="ctireplay")
    async with mock_session(recording.read_bytes(), notices=notices) as (server, ours):
        await ours.send_all(b'{"class":"evil\\u001b[2J\\u202e","commandid":1}\n')
        await ours.aclose()
    notices.say_all(said(server), WAIT)
    assert notices.flush(WAIT)
    os.close(fd)
    err = (tmp_path / "stderr").read_text()
    assert any(d.diverged for _, d in server.results)
    assert "\x1b" not in err and "\u202e" not in err, err
    assert "ctireplay: session 1: unexpected client message evil\\x1b[2J\\u202e" in err
    assert "; 1 unexpected (evil\\x1b[2J\\u202e)\n" in err


# --- the live clients: ctireplay --to as main() in-process ------------------------------

def run_ctireplay(capfd, *argv: str) -> tuple[int, list[dict], str]:
    """ctireplay in-process: its exit status, its records, its standard error."""
    try:
        status = ctireplay(list(argv))
    except SystemExit as exit_:  # argparse
        status = exit_.code
    out, err = capfd.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture(scope="module")
def plain_server():
    with demo_server(starttls=False) as port:  # it checks sha1(sessionid:password), else error_string
        yield port


def test_clients_5_against_the_demo_server_feed_ctistat(recording, plain_server, capfd):
    port = plain_server
    status, live, err = run_ctireplay(capfd, str(recording), "--to", LOCALHOST, "--port", str(port),
                                      "--clients", "5", "--password", "demo", "--pace", "asap")
    assert status == 0, err
    assert live[0]["event"] == "start" and live[0]["server"] == f"{LOCALHOST}:{port}"
    assert live[0]["producer"].startswith("ctireplay ")
    assert sorted(r["conn"] for r in live if r.get("event") == "open") == [1, 2, 3, 4, 5]
    assert sorted(r["conn"] for r in live if r.get("event") == "close") == [1, 2, 3, 4, 5]
    for conn in range(1, 6):
        sent = [r["msg"] for r in live if r.get("conn") == conn and r.get("from") == "client"]
        ids = {m["commandid"] for m in sent if "commandid" in m}
        assert len(ids) == len([m for m in sent if "commandid" in m])  # fresh and distinct
        got = [r["msg"] for r in live if r.get("conn") == conn and r.get("from") == "server"]
        assert {m["replyid"] for m in got if "replyid" in m} <= ids
        assert f"session {conn}: followed the recording" in err
    stream_ = b"".join(json.dumps(r).encode() + b"\n" for r in live)
    text = b"".join(Runner(stats.Stat()).feed(stream_)[0] for _ in [0])
    runner = Runner(stats.Stat())
    text = runner.feed(stream_)[0] + runner.end()[0]
    assert text.count(b"=== Session") == 5 and b"login_pass" in text
    # Every request is recorded before its reply, so ctistat pairs them all (a
    # request recorded after send_all returned came after a fast reply: "no reply").
    for conn in range(1, 6):
        times = [(r["ts"], r["from"], r["msg"]) for r in live
                 if r.get("conn") == conn and "msg" in r]
        asked = {m["commandid"]: ts for ts, side, m in times if side == "client" and "commandid" in m}
        for ts, side, message in times:
            if side == "server" and message.get("replyid") in asked:
                assert asked[message["replyid"]] <= ts, message
    runner = Runner(stats.Stat(as_json=True))
    *summaries, totals = (runner.feed(stream_)[0] + runner.end()[0]).splitlines()
    assert len(summaries) == 5
    totals = json.loads(totals)["totals"]
    assert (totals["sessions"], totals["completed"]) == (5, 5)
    assert totals["latency"]["getlist"]["no_reply"] == 0
    for summary in map(json.loads, summaries):
        for kind in ("getlist", "ipbxcommand", "login_id", "login_pass", "login_capas"):
            assert summary["latency"][kind]["no_reply"] == 0, (kind, summary["latency"])


def test_password_is_hashed_with_the_live_sessionid(recording, plain_server, capfd):
    argv = [str(recording), "--to", LOCALHOST, "--port", str(plain_server), "--pace", "asap"]
    status, _, err = run_ctireplay(capfd, *argv)
    assert status == 1
    assert "login_pass answered with error 'login_password'" in err
    status, _, err = run_ctireplay(capfd, *argv, "--password", "nope")
    assert status == 1 and "login_password" in err
    status, _, err = run_ctireplay(capfd, *argv, "--password", "demo")
    assert status == 0, err
    assert "session 1: followed the recording" in err


def test_clients_do_starttls_when_the_server_answers_it(tls_recording, capfd):
    with demo_server(starttls=True) as port:
        argv = [str(tls_recording), "--to", LOCALHOST, "--port", str(port), "--pace", "asap"]
        status, live, err = run_ctireplay(capfd, *argv, "--clients", "3", "--password", "demo")
        assert status == 0, err
        assert sorted(r["conn"] for r in live if r.get("event") == "tls") == [1, 2, 3]
        assert err.count(": followed the recording") == 3
        status, _, err = run_ctireplay(capfd, *argv, "--password", "nope")
        assert status == 1 and "login_pass answered with error 'login_password'" in err


def test_a_server_that_never_answers_is_reported_and_the_command_ends(recording, server, capfd):
    # Accepted by the kernel, never answered: three replies time out, and the
    # session gives up. --timeout short, since no reply can come; it bounds the
    # connect too, which on 127.0.0.1 takes far less.
    status, _, err = run_ctireplay(capfd, str(recording), "--to", LOCALHOST, "--port",
                                   str(server.port), "--timeout", "0.2", "--pace", "asap")
    assert status == 1
    assert "session 1: diverged: " in err and "timed out (reply login_id" in err
    assert "gave up after 3 replies in a row timed out" in err


def test_a_server_that_cannot_be_reached_is_reported(recording, capfd):
    port = free_port()  # nothing listens there
    status, live, err = run_ctireplay(capfd, str(recording), "--to", LOCALHOST, "--port", str(port),
                                      "--clients", "2")
    assert status == 1
    assert f"session 2: diverged: cannot reach {LOCALHOST}:{port}: Connection refused" in err
    assert [r["event"] for r in live] == ["start", "error", "error"]


# --- bad input: one line, exit 2, nothing started ----------------------------------------

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


@pytest.mark.parametrize("given, pace", [([], 1.0), (["--pace", "recorded"], 1.0),
                                         (["--pace", "asap"], float("inf")),
                                         (["--pace", "10"], 10.0), (["--pace", "0.5"], 0.5)])
def test_pace_words_and_factors_are_the_pace_the_mock_keeps(given, pace):
    """--pace as the mock and the crowd use it (a speed factor: recorded pauses are
    divided by it; test_replay_mock keeps them to the exact virtual second)."""
    from ctipipe.replay import command as replay_command
    assert replay_command._parser().parse_args(["r.jsonl", *given]).pace == pace


def bad_argv(tmp_path, argv: list[str]) -> list[str]:
    files = {"empty": b"",
             "events": rec({"ts": 1.0, "event": "start", "stream": 1, "producer": "ctirelay 0.1.0"}),
             "rec": rec(msg(1.0, "client", {"class": "a"}), msg(1.1, "server", {"class": "b"})),
             "clientonly": rec(msg(1.0, "client", {"class": "login_id"})),
             "truncated": rec(msg(1.0, "client", {"class": "a"}), msg(1.1, "server", {"class": "b"}))[:-12],
             "notjson": b"ctirelay: listening on 0.0.0.0:50030\n"}
    for name, content in files.items():
        (tmp_path / f"{name}.jsonl").write_bytes(content)
    argv = [str(tmp_path / f"{a[1:-1]}.jsonl") if a.startswith("{") else a for a in argv]
    return argv + ["--listen-port", "0"] if "--to" not in argv else argv


def one_error_line(err: str, says: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctireplay: error: ") and says in lines[0], lines
    assert "listening" not in err


@pytest.mark.parametrize("argv, says", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_started(tmp_path, monkeypatch, capfd, argv, says):
    monkeypatch.chdir(tmp_path)
    status, live, err = run_ctireplay(capfd, *bad_argv(tmp_path, argv))
    assert status == 2
    one_error_line(err, says)
    assert live == []


def test_bad_input_ends_the_process_with_2(tmp_path):
    argv, says = BAD[0]
    proc = Proc(command("ctireplay", *bad_argv(tmp_path, argv)), cwd=tmp_path)
    assert proc.finish() == 2
    one_error_line(proc.err, says)
    assert proc.out == b""


# --- processes: signals, exit statuses, accepting, ctidemo's process tree ----------------

class Mock(Proc):
    """ctireplay as a server on a port the kernel chose, learnt from its first line."""

    def __init__(self, recording, *args: str, **popen) -> None:
        super().__init__(command("ctireplay", str(recording), "--listen-addr", LOCALHOST,
                                 "--listen-port", "0", *args), **popen)
        self.wait_for(lambda p: "listening on" in p.err, what="the mock to listen")
        self.port = int(self.err.split("listening on ")[1].split(":")[1])

    def connect(self) -> socket.socket:
        return socket.create_connection((LOCALHOST, self.port), timeout=WAIT)


def login_then_a_minute(tmp_path):
    """login_id answered, then a server message a recorded minute later, then the server closes."""
    path = tmp_path / "minute.jsonl"
    path.write_bytes(rec(msg(100.0, "client", {"class": "login_id", "commandid": 1}),
                         msg(100.01, "server", {"class": "login_id", "sessionid": "abc"}),
                         msg(160.01, "server", {"class": "sheet", "n": 1}),
                         {"ts": 160.02, "conn": 1, "event": "close", "by": "server"}))
    return path


def play_one_session(mock: Mock) -> None:
    with mock.connect() as sock, sock.makefile("rb") as reader:
        sock.sendall(b'{"class":"login_id","commandid":42}\n')
        assert json.loads(reader.readline())["class"] == "login_id"
        assert json.loads(reader.readline())["class"] == "sheet"
        assert reader.readline() == b""  # the recorded server closed: so does the mock


def test_loop_serves_clients_one_after_another_outlives_resets_and_ctrl_c_ends_it(tmp_path):
    """Port scans and health checks between the sessions: each such client is
    one error line, and the mock goes on serving (a getpeername() that failed
    ended it once). --pace 600 plays the recorded minute in 0.1 s (at the
    recorded pace a session would outlast the client's wait, and fail)."""
    path = login_then_a_minute(tmp_path)
    mock = Mock(path, "--pace", "600", "--loop")
    play_one_session(mock)
    play_one_session(mock)
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.connect((LOCALHOST, mock.port))
        sock.close()  # a reset, at once
    play_one_session(mock)
    mock.wait_for(lambda p: p.out.count(b'"event":"close"') == p.out.count(b'"event":"open"') >= 3,
                  what="the sessions' close records")
    mock.signal(signal.SIGINT)
    status = mock.finish()
    live = mock.records()
    assert live[0]["event"] == "start" and live[0]["producer"].startswith("ctireplay ")
    assert live[0]["listen"] == [f"{LOCALHOST}:{mock.port}"]
    errors = [r for r in live if r.get("event") == "error"]
    opened = [r for r in live if r.get("event") == "open"]
    assert [r["conn"] for r in opened[:2]] == [1, 2]
    assert all(r["server"] == f"replay:{path}#1" for r in opened)
    assert "session 2: followed the recording" in mock.err
    # A reset that came before the mock asked for the peer's address is an
    # error record; one that came after (rare) is a session the client ended
    # at once, which diverged from the recording: then the exit status is 1.
    assert len(errors) + len(opened) == 203 and len(errors) > 0
    assert status == (0 if len(opened) == 3 else 1), mock.err
    assert all(r["error"].startswith("the client left as it connected") for r in errors)
    assert "Traceback" not in mock.err
    assert mock.err.count(": followed the recording") == 3


def test_no_starttls_on_the_command_line_leaves_the_offer_out(tls_recording):
    """The recorded server offered STARTTLS at once: with --no-starttls the first
    line is the answer to the login instead (the rest: in-process, above)."""
    mock = Mock(tls_recording, "--no-starttls", "--pace", "asap")
    with mock.connect() as sock, sock.makefile("rb") as reader:
        sock.sendall(b'{"class":"login_id","commandid":1}\n')
        assert json.loads(reader.readline())["class"] == "login_id"
    assert mock.finish() == 1  # it left early
    assert "session 1: diverged: " in mock.err
    assert b'"class":"starttls"' not in mock.out and b'"event":"tls"' not in mock.out


def test_ctrl_c_ends_live_clients_with_their_close_records(recording, server):
    replay = Proc(command("ctireplay", str(recording), "--to", LOCALHOST, "--port",
                          str(server.port), "--clients", "3", "--timeout", "30"))
    held = [server.accept() for _ in range(3)]
    replay.wait_for(lambda p: p.out.count(b'"event":"open"') == 3, what="three sessions")
    replay.signal(signal.SIGINT)
    assert replay.finish() == 0, replay.err
    assert sorted(r["conn"] for r in replay.records() if r.get("event") == "close") == [1, 2, 3]
    assert replay.err.count(": interrupted") == 3
    for sock in held:
        sock.close()


def test_a_signal_before_any_client_ends_the_mock_with_0(recording):
    mocks = {signum: Mock(recording) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, proc in mocks.items():
        proc.signal(signum)
    for signum, proc in mocks.items():
        assert proc.finish() == 0, (signum, proc.err)
        assert [r["event"] for r in proc.records()] == ["start"], signum


def test_ctidemo_replay_records_then_replays_through_ctispy():
    """With STARTTLS, the options before `replay`; a plain session, the options
    after it. The two demos run at the same time."""
    runs = [["--compact", "--pause", "0.01", "replay"],
            ["replay", "--compact", "--pause", "0.01", "--no-starttls"]]
    demos = [Proc(command("ctidemo", *argv)) for argv in runs]
    for argv, demo in zip(runs, demos):
        assert demo.finish(60) == 0, (argv, demo.err)
        assert "ctireplay: session 1: followed the recording" in demo.err, argv
        assert demo.out.count(b"Server > Client") > 10 and b'"logout"' in demo.out, argv
        assert demo.out.count(b'\n{"class": ') > 10, argv  # --compact: each message on one line
        assert (b"TLS (STARTTLS)" in demo.out) == ("--no-starttls" not in argv), argv
