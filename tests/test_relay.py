"""ctirelay as a user runs it: a real process between real sockets on 127.0.0.1."""
import base64
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import trio

import ctipipe
from hypothesis import given, strategies as st

from ctipipe.core import cli
from ctipipe.relay import command as relay_module
from ctipipe.relay.tap import Tap
from helpers import (LOCALHOST, STARTED, WAIT, Collecting, Proc, Relay, command, exchange, free_port, is_closed,
                     recv_all, reset, send_in_chunks)

KEY_ORDER_DATA = ["ts", "conn", "from"]

RUNNING: list = []  # in-process relays, stopped at the end of their test whatever happened


@pytest.fixture(autouse=True)
def no_relay_outlives_its_test():
    yield
    while RUNNING:
        relay = RUNNING.pop()
        if relay._thread.is_alive():
            relay.stop()
            relay.finish()


class InProcessRelay(Collecting):
    """ctirelay's relay and tap in this process (a trio run in a thread), for what
    a process would not show more of: records, half-closes, resets, pieces. The
    same interface as helpers.Relay; `stop()` is the signal, `finish()` the exit
    status ctirelay's _run gives (1: a CommandError, or records not written).
    Signals, exit statuses and standard error as a process has them are in the
    process tests below."""

    def __init__(self, server_port: int, *argv: str, stdout: int | None = None) -> None:
        RUNNING.append(self)
        parser = cli.Parser(relay_module.PROG)
        relay_module.add_relay_options(parser)
        args = parser.parse_args([LOCALHOST, "--port", str(server_port), "--listen-addr",
                                  LOCALHOST, "--listen-port", "0", "-v", *argv])
        self.said: list[str] = []
        self.status: int | None = None
        self._out = bytearray()
        self._cond = threading.Condition()
        if stdout is None:
            read_end, stdout = os.pipe()
            self._reader = threading.Thread(target=self._read, args=(read_end,), daemon=True)
            self._reader.start()
            self._close_stdout = True
        else:
            self._reader = None
            self._close_stdout = False
        self._stdout = stdout
        self._started = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main, args), daemon=True)
        self._thread.start()
        assert self._started.wait(WAIT), self.err
        self.port = int(self.address.rsplit(":", 1)[1])

    def say(self, message: str) -> None:
        with self._cond:
            self.said.append(message)
            self._cond.notify_all()

    async def _main(self, args) -> None:
        tap = Tap(self._stdout, raw=args.raw, max_line=args.max_line, notify=self.say,
                  flush_timeout=relay_module.FLUSH_TIMEOUT)
        relay = relay_module.Relay(args.host, args.port, listen_addr=args.listen_addr,
                                   listen_port=args.listen_port, loop=args.loop, tap=tap,
                                   verbose=args.verbose, connect_timeout=args.connect_timeout,
                                   notices=self)
        self._token = trio.lowlevel.current_trio_token()
        status = 0
        try:
            async with trio.open_nursery() as root:
                root.start_soon(tap.run)
                try:
                    async with trio.open_nursery() as serving:
                        self._scope = serving.cancel_scope
                        [self.address] = await serving.start(relay.serve)
                        self._started.set()
                finally:
                    tap.close()
                    await tap.finished.wait()
        except cli.CommandError as error:
            self.say(f"error: {error}")
            status = 1
        if tap.unwritten:
            self.say(f"error: {tap.unwritten} records were not written")
            status = 1
        if self._close_stdout:
            os.close(self._stdout)
        self.status = status

    def _read(self, fd: int) -> None:
        self._read_into_out(fd)
        os.close(fd)

    @property
    def err(self) -> str:
        with self._cond:
            return "".join(f"ctirelay: {line}\n" for line in self.said)

    def connect(self) -> socket.socket:
        return socket.create_connection((LOCALHOST, self.port), timeout=WAIT)

    def closes(self) -> list[dict]:
        return [r for r in self.records() if r.get("event") == "close"]

    def stop(self) -> None:
        """What SIGINT and SIGTERM do: the sessions closed, the records written."""
        try:
            self._token.run_sync_soon(self._scope.cancel)
        except trio.RunFinishedError:
            pass

    def finish(self, timeout: float = WAIT) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the relay did not end; said:\n{self.err}"
        if self._reader is not None:
            self._reader.join(timeout)
        return self.status


def check_record(record: dict, raw_line: bytes) -> None:
    """Every record follows docs/stream.md: key order, types, exactly one content key."""
    keys = list(record)
    assert keys[:2] == ["ts", "conn"] or (record.get("event") in ("error", "start") and keys[0] == "ts")
    assert isinstance(record["ts"], float)
    assert len(raw_line.split(b".")[1].split(b",")[0]) <= 6  # microsecond precision
    if "from" in record:
        assert keys[2] == "from" and record["from"] in ("client", "server")
        content = [k for k in ("msg", "raw", "raw_b64") if k in record]
        assert len(content) == 1
        assert isinstance(record["size"], int)
        if "msg" in record:
            assert keys[-1] == "msg"
    else:
        assert keys[2 if "conn" in record else 1] == "event"


def session(server, relay_args=(), client_data=b"", server_data=b""):
    """One session: send both ways, half-close both, return the relay and what each side got."""
    relay = InProcessRelay(server.port, *relay_args)
    client = relay.connect()
    got = exchange(client, server.accept(), client_data, server_data)
    assert relay.finish() == 0, relay.err
    return relay, {"server_got": got["up"], "client_got": got["down"]}


def test_records_follow_the_stream_contract(server):
    relay = InProcessRelay(server.port)
    client = relay.connect()
    upstream = server.accept()
    sent = [b'{"class": "login_id", "commandid": 1092130023, "userlogin": "alice"}\n',
            b'{"class":"getlist","commandid":5}\n',
            b'{"class":"a"}\n{"class":"b"}\nnot json\n\xff\xfe\n\n']
    client.sendall(sent[0])
    time.sleep(0.05)
    # a message split across reads, then several in one read
    send_in_chunks(client, sent[1], [7, 15])
    time.sleep(0.05)
    client.sendall(sent[2])
    upstream.sendall(b'{"class": "login_id", "sessionid": "21UaGDfst7", "timenow": 1361268824.64}\n')
    assert recv_all(upstream, len(b"".join(sent))) == b"".join(sent)
    client.close()
    upstream.close()
    assert relay.finish() == 0
    lines = relay.out.splitlines()
    records = [json.loads(line) for line in lines]
    for record, line in zip(records, lines):
        check_record(record, line)
    start = records.pop(0)
    assert start == {"ts": start["ts"], "event": "start", "stream": 1,
                     "producer": f"ctirelay {ctipipe.__version__}",
                     "listen": [f"127.0.0.1:{relay.port}"], "server": f"127.0.0.1:{server.port}"}
    assert records[0]["event"] == "open"
    assert records[0]["client"].startswith("127.0.0.1:")
    assert records[0]["server"] == f"127.0.0.1:{server.port}"
    client_records = [r for r in records if r.get("from") == "client"]
    assert [r.get("msg", {}).get("class") if isinstance(r.get("msg"), dict) else None
            for r in client_records][:5] == ["login_id", "getlist", "a", "b", None]
    assert client_records[1]["size"] == len(b'{"class":"getlist","commandid":5}\n')
    assert client_records[4] == {**client_records[4], "raw": "not json", "size": 9}
    assert base64.b64decode(client_records[5]["raw_b64"]) == b"\xff\xfe"
    assert client_records[6]["raw"] == "" and client_records[6]["size"] == 1
    # the server's spacing is kept inside msg: embedded, not re-encoded
    assert b'"msg":{"class": "login_id", "sessionid": "21UaGDfst7", "timenow": 1361268824.64}}' in relay.out
    close = records[-1]
    assert close["event"] == "close"
    assert list(close)[:4] == ["ts", "conn", "event", "by"]
    assert close["bytes"]["client"] == sum(r["size"] for r in client_records)
    assert close["reads"]["client"] >= 3
    assert close["duration"] > 0


def test_half_close_by_client_still_delivers_server_replies(server):
    relay = InProcessRelay(server.port)
    client = relay.connect()
    upstream = server.accept()
    client.sendall(b'{"class":"logout"}\n')
    client.shutdown(socket.SHUT_WR)
    assert recv_all(upstream) == b'{"class":"logout"}\n'  # EOF passed on
    upstream.sendall(b'{"class":"bye"}\n' * 3)
    upstream.close()
    assert recv_all(client) == b'{"class":"bye"}\n' * 3
    client.close()
    assert relay.finish() == 0
    close = relay.closes()[0]
    assert close["by"] == "client" and "error" not in close
    assert close["bytes"] == {"client": 19, "server": 48}


def test_half_close_by_server_still_delivers_client_messages(server):
    relay = InProcessRelay(server.port)
    client = relay.connect()
    upstream = server.accept()
    upstream.sendall(b'{"class":"disconnect"}\n')
    upstream.shutdown(socket.SHUT_WR)
    assert recv_all(client) == b'{"class":"disconnect"}\n'
    client.sendall(b'{"class":"ack"}\n')
    client.close()
    assert recv_all(upstream) == b'{"class":"ack"}\n'
    upstream.close()
    assert relay.finish() == 0
    assert relay.closes()[0]["by"] == "server"


def test_client_reset_ends_session_and_resets_server(server):
    relay = InProcessRelay(server.port)
    client = relay.connect()
    upstream = server.accept()
    client.sendall(b'{"class":"x"}\n')
    assert recv_all(upstream, 14) == b'{"class":"x"}\n'
    reset(client)
    with pytest.raises(ConnectionResetError):
        upstream.recv(10)
    upstream.close()
    assert relay.finish() == 0
    close = relay.closes()[0]
    assert close["by"] == "client" and "reset" in close["error"]


def test_server_closing_mid_message_gives_partial_record(server):
    relay = InProcessRelay(server.port)
    client = relay.connect()
    upstream = server.accept()
    upstream.sendall(b'{"class":"getlist","list":["1","2"')
    upstream.close()
    assert recv_all(client) == b'{"class":"getlist","list":["1","2"'
    client.close()
    assert relay.finish() == 0
    partial = [r for r in relay.records() if r.get("partial")]
    assert partial == [{**partial[0], "from": "server", "raw": '{"class":"getlist","list":["1","2"',
                        "size": 34}]
    assert relay.closes()[0]["by"] == "server"


def test_oversize_lines_come_in_pieces(server):
    line = b'{"class":"big","data":"' + b"x" * 250 + b'"}\n'
    relay, got = session(server, ["--max-line", "100"], client_data=line + b'{"a":1}\n')
    assert got["server_got"] == line + b'{"a":1}\n'
    records = [r for r in relay.records() if r.get("from") == "client"]
    pieces = [r for r in records if r.get("oversize")]
    assert "".join(r["raw"] for r in pieces).encode() + b"\n" == line
    assert sum(r["size"] for r in pieces) == len(line)
    assert all(r["size"] <= 100 for r in pieces)
    assert records[-1]["msg"] == {"a": 1}


def test_concurrent_sessions_with_loop(server):
    relay = InProcessRelay(server.port, "--loop")
    pairs = []
    for _ in range(5):
        client = relay.connect()
        pairs.append((client, server.accept()))
    for n, (client, upstream) in enumerate(pairs):
        client.sendall(b'{"class":"hello","n":%d}\n' % n)
        upstream.sendall(b'{"class":"welcome","n":%d}\n' % n)
    for n, (client, upstream) in enumerate(pairs):
        assert recv_all(upstream, 22) == b'{"class":"hello","n":%d}\n' % n
        assert recv_all(client, 24) == b'{"class":"welcome","n":%d}\n' % n
        client.close()
        upstream.close()
    relay.wait_for(lambda p: p.out.count(b'"event":"close"') == 5, what="five closes")
    relay.stop()
    assert relay.finish() == 0
    by_conn = {}
    for r in relay.records()[1:]:
        by_conn.setdefault(r["conn"], []).append(r)
    assert sorted(by_conn) == [1, 2, 3, 4, 5]
    for conn, records in by_conn.items():
        assert [r.get("event") for r in records if "event" in r] == ["open", "close"]
        assert len({r["msg"]["n"] for r in records if "msg" in r}) == 1


def test_unreachable_server_without_loop_exits_1(server):
    port = free_port()
    relay = Relay(port)
    # The relay resets the client at once; the reset may even reach our connect
    # before it returns (a non-blocking connect then reads it from SO_ERROR).
    try:
        client = relay.connect()
    except ConnectionResetError:
        pass
    else:
        assert is_closed(client)
    assert relay.finish() == 1
    errors = [line for line in relay.err.splitlines() if "error" in line]
    assert errors == [f"ctirelay: error: cannot reach 127.0.0.1:{port}: Connection refused"]
    assert "Traceback" not in relay.err
    start, record = relay.records()
    assert start["event"] == "start"
    assert record["event"] == "error" and record["conn"] == 1 and "Connection refused" in record["error"]


def test_unreachable_server_with_loop_goes_on(server):
    port = free_port()
    relay = InProcessRelay(port, "--loop")
    for _ in range(2):
        try:
            client = relay.connect()
        except ConnectionResetError:
            continue  # (the reset can reach our connect before it returns)
        assert is_closed(client)
    relay.wait_for(lambda p: p.out.count(b'"event":"error"') == 2, what="two error events")
    assert relay.status is None  # still serving
    relay.stop()
    assert relay.finish() == 0
    assert [r.get("conn") for r in relay.records()] == [None, 1, 2]


def test_listen_port_in_use_exits_1(server):
    proc = Proc(command("ctirelay", LOCALHOST, "--port", str(server.port),
                        "--listen-addr", LOCALHOST, "--listen-port", str(server.port)))
    assert proc.finish() == 1
    assert proc.err.count("\n") == 1
    assert "cannot listen on 127.0.0.1" in proc.err and "Address already in use" in proc.err


@pytest.mark.parametrize("args", [[], ["xivo", "--port", "notaport"], ["xivo", "--bogus"],
                                  ["xivo", "--listen-port", "70000"]])
def test_bad_arguments_exit_2(args, capsys):
    # (in-process: the status is the parser's; tests/test_hosts.py runs one such
    # refusal as a process)
    with pytest.raises(SystemExit) as exit_:
        relay_module.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctirelay: error:")


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        relay_module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "ctirelay xivo-new" in out


def test_closed_stdout_does_not_disturb_the_session(server):
    read_end, write_end = os.pipe()
    relay = InProcessRelay(server.port, stdout=write_end)
    os.close(read_end)  # nobody reads the records: a `| head` that exited
    client = relay.connect()
    upstream = server.accept()
    payload = b'{"class":"getlist","function":"updatestatus"}\n' * 2000
    for _ in range(5):
        client.sendall(payload)
        assert recv_all(upstream, len(payload)) == payload
        upstream.sendall(payload)
        assert recv_all(client, len(payload)) == payload
    client.close()
    upstream.close()
    assert relay.finish() == 0
    os.close(write_end)
    assert relay.err.count("standard output closed") == 1
    assert "Traceback" not in relay.err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_closes_sessions_with_close_events(server, signum):
    relay = Relay(server.port, "--loop")
    clients = [relay.connect() for _ in range(2)]
    upstreams = [server.accept() for _ in clients]
    for c, u in zip(clients, upstreams):
        c.sendall(b'{"class":"keepalive"}\n')
        assert recv_all(u, 22)
    relay.wait_for(lambda p: p.out.count(b'"from":"client"') == 2, what="records")
    relay.signal(signum)
    assert relay.finish() == 0
    closes = relay.closes()
    assert sorted(c["conn"] for c in closes) == [1, 2]
    assert all(c["by"] == "relay" for c in closes)
    for c in clients:
        assert recv_all(c) == b""  # the sessions were closed
    assert "Traceback" not in relay.err


# --- byte-exactness as a property -------------------------------------------

chunked_bytes = st.binary(max_size=3000).flatmap(
    lambda data: st.tuples(st.just(data), st.lists(st.integers(0, len(data)), max_size=8)))
line_heavy = st.lists(st.sampled_from([b"\n", b"{}", b'{"a":"\xc3\xa9"}', b"\xff", b"x" * 200,
                                       b" ", b"\r", b"[1]"]), max_size=40).map(b"".join)


class LoopRelay:
    """One --loop relay for many hypothesis examples: each example is a new session."""

    def __init__(self, server, *args):
        self.server = server
        self.relay = Relay(server.port, "--loop", "--max-line", "512", *args)
        self.sessions = 0

    def exchange(self, up: bytes, up_cuts, down: bytes, down_cuts):
        client = self.relay.connect()
        upstream = self.server.accept()
        self.sessions += 1
        results = exchange(client, upstream, up, down, up_cuts, down_cuts)
        conn = self.sessions
        self.relay.wait_for(lambda p: b'"conn":%d,"event":"close"' % conn in p.out, what="close")
        records = [r for r in self.relay.records() if r.get("conn") == conn]
        return results, records

    def stop(self):
        self.relay.signal(signal.SIGTERM)
        assert self.relay.finish() == 0


def content(record) -> bytes:
    if "raw_b64" in record:
        return base64.b64decode(record["raw_b64"])
    if "raw" in record:
        return record["raw"].encode()
    return json.dumps(record["msg"]).encode()


@pytest.fixture(scope="module")
def loop_relays():
    from helpers import Server
    server = Server()
    relays = {"lines": LoopRelay(server), "raw": LoopRelay(server, "--raw")}
    for relay in relays.values():  # these outlive single tests: this fixture ends them
        STARTED.remove(relay.relay)
    try:
        yield relays
    finally:
        for relay in relays.values():
            relay.stop()
            relay.relay.kill()
        server.close()


@given(st.one_of(chunked_bytes, line_heavy.map(lambda d: (d, [3, 50, 51]))), chunked_bytes)
def test_bytes_arrive_unchanged_and_raw_records_concatenate_back(loop_relays, up, down):
    relay = loop_relays["raw"]
    results, records = relay.exchange(up[0], up[1], down[0], down[1])
    assert results == {"up": up[0], "down": down[0]}
    for side, sent in (("client", up[0]), ("server", down[0])):
        chunks = [r for r in records if r.get("from") == side]
        assert b"".join(content(r) for r in chunks) == sent
        assert sum(r["size"] for r in chunks) == len(sent)


@given(st.one_of(chunked_bytes, line_heavy.map(lambda d: (d, [1, 7, 300]))))
def test_line_records_account_for_every_byte(loop_relays, up):
    relay = loop_relays["lines"]
    data, cuts = up
    results, records = relay.exchange(data, cuts, b"", [])
    assert results["up"] == data
    side = [r for r in records if r.get("from") == "client"]
    assert sum(r["size"] for r in side) == len(data)
    # undecodable lines come back byte for byte, messages parse to the same value
    rebuilt = []
    line_parts = []
    for r in side:
        if "msg" in r:
            rebuilt.append(("msg", r["msg"]))
        else:
            line_parts.append(content(r))
            if not r.get("oversize") or r["size"] > len(line_parts[-1]):
                rebuilt.append(("raw", b"".join(line_parts)))
                line_parts = []
    if line_parts:
        rebuilt.append(("raw", b"".join(line_parts)))
    lines = data.split(b"\n")
    expected = []
    for n, line in enumerate(lines):
        last = n == len(lines) - 1
        if last and not line:
            continue
        try:
            value = json.loads(line.decode("utf-8")) if not last and len(line) < 511 else None
            valid = not last and len(line) < 511
        except (ValueError, UnicodeDecodeError):
            valid = False
        expected.append(("msg", value) if valid else ("raw", line))
    assert [kind for kind, _ in rebuilt] == [kind for kind, _ in expected]
    for (kind, got), (_, want) in zip(rebuilt, expected):
        assert got == want


def test_stalled_reader_loses_records_counted_by_a_gap(server):
    """Nobody reads the relay's output for a while: the session runs at full speed,
    and once reading resumes a gap record counts exactly the records not written."""
    read_end, write_end = os.pipe()
    relay = Relay(server.port, stdout=write_end)
    os.close(write_end)
    client = relay.connect()
    upstream = server.accept()
    message = b'{"class":"getlist","function":"updatestatus","listname":"agents","tid":7,' \
              b'"status":{"availability":"available","on_call":false,"queues":[]}}\n'
    burst = message * 20000  # 2.9 MB a burst, 29 MB in all: far over the tap buffer
    receiver = threading.Thread(target=lambda: results.append(recv_all(client)))
    results = []
    receiver.start()
    for _ in range(10):
        upstream.sendall(burst)
    upstream.close()
    receiver.join(WAIT)
    assert results == [burst * 10]  # the session itself was not held up
    client.close()
    # now read: the relay writes what it kept, a gap, and the close
    output = bytearray()
    while chunk := os.read(read_end, 1 << 20):
        output += chunk
    os.close(read_end)
    assert relay.finish() == 0
    records = [json.loads(line) for line in output.splitlines()]
    gaps = [r for r in records if r.get("event") == "gap"]
    messages = [r for r in records if "msg" in r]
    assert gaps and all(list(g) == ["ts", "conn", "event", "lost"] for g in gaps)
    assert len(messages) + sum(g["lost"] for g in gaps) == 200000
    assert all(r["size"] == len(message) for r in records if "from" in r)  # nothing torn
    assert records[-1]["event"] == "close"
    assert "were not written" in relay.err


# --- the relay in-process: relay.serve started in a nursery on port 0 ---------

import fcntl  # noqa: E402
import struct  # noqa: E402

from ctipipe.core import notices as notices_module  # noqa: E402


async def echo_server(task_status=trio.TASK_STATUS_IGNORED):
    """A CTI server stand-in that sends back every line it gets."""
    async def echo(stream):
        async with stream:
            try:
                async for data in stream:
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass
    listeners = await trio.open_tcp_listeners(0, host=LOCALHOST)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


async def start_relay(nursery, server_port, out_fd, err_fd, **options):
    notices = notices_module.Notices(err_fd)
    tap = Tap(out_fd, raw=False, max_line=1 << 20, notify=notices.say)
    nursery.start_soon(tap.run)
    relay = relay_module.Relay(LOCALHOST, server_port, listen_addr=LOCALHOST, listen_port=0,
                               loop=True, tap=tap, verbose=options.get("verbose", False),
                               connect_timeout=5, notices=notices)
    [address] = await nursery.start(relay.serve)
    return relay, int(address.rsplit(":", 1)[1])


async def roundtrip(stream, line: bytes) -> bytes:
    await stream.send_all(line)
    got = b""
    while not got.endswith(b"\n"):
        got += await stream.receive_some()
    return got


async def test_connect_and_reset_clients_end_only_their_own_session(tmp_path):
    """Port scanners and health checks connect and reset at once: each ends its
    own session (an error record, one line on stderr), never the live one."""
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    err = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT)
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(echo_server)
        relay, port = await start_relay(nursery, server_port, out, err)
        live = await trio.open_tcp_stream(LOCALHOST, port)
        assert await roundtrip(live, b'{"class":"a"}\n') == b'{"class":"a"}\n'
        for _ in range(300):
            sock = trio.socket.socket()
            await sock.connect((LOCALHOST, port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        with trio.fail_after(WAIT):
            assert await roundtrip(live, b'{"class":"b"}\n') == b'{"class":"b"}\n'
            other = await trio.open_tcp_stream(LOCALHOST, port)  # still accepting
            assert await roundtrip(other, b'{"class":"c"}\n') == b'{"class":"c"}\n'
            while relay.sessions < 302:
                await trio.sleep(0.01)
        await live.aclose()
        await other.aclose()
        nursery.cancel_scope.cancel()
    records = [json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()]
    errors = [r for r in records if r.get("event") == "error"]
    assert errors, "no client went away before its session began: the test did not test"
    assert all(list(r)[:3] == ["ts", "conn", "event"] for r in errors)
    live_records = [r for r in records if r.get("conn") == 1]
    assert [r.get("event") or r["msg"]["class"] for r in live_records] == ["open", "a", "a", "b", "b"]


def relay_sockets(relay_port: int, server_port: int) -> list[socket.socket]:
    """This process's sockets that are the relay's legs of a session (dups)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            assert sock.family == socket.AF_INET
            local, peer = sock.getsockname(), sock.getpeername()
        except (OSError, AssertionError):
            sock.close()
            continue
        if (local[1] == relay_port and peer[1] != server_port) or peer[1] == server_port:
            found.append(sock)
        else:
            sock.close()
    return found


async def test_both_legs_of_a_session_have_tcp_keepalive(tmp_path):
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(echo_server)
        relay, port = await start_relay(nursery, server_port, out, out)
        live = await trio.open_tcp_stream(LOCALHOST, port)
        await roundtrip(live, b"{}\n")
        legs = relay_sockets(port, server_port)
        try:
            assert len(legs) == 2
            for sock in legs:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        finally:
            for sock in legs:
                sock.close()  # a dup: the relay's own descriptor stays open
        await live.aclose()
        nursery.cancel_scope.cancel()


async def test_a_reader_that_never_reads_gets_whole_records_and_the_count(autojump_clock):
    """The relay gives up on a reader that does not read: after FLUSH_TIMEOUT it
    ends leaving whole records only, with the error (status 1, its one line)
    saying how many records it did not write. ctirelay's own shutdown (`_run`),
    in-process on virtual time, standard output a pipe nobody reads."""
    from ctipipe.core import cli

    # Virtual time moves only once nothing has run for this long (real seconds):
    # then the only deadline left is the final flush's.
    autojump_clock.autojump_threshold = 0.2
    listening = trio.Event()
    said: list[str] = []

    class Notices:  # what the relay says on standard error, kept
        @staticmethod
        def say(message: str) -> None:
            said.append(message)
            if message.startswith("listening on"):
                listening.set()

    parser = cli.Parser(relay_module.PROG)
    relay_module.add_relay_options(parser)
    servers = await trio.open_tcp_listeners(0, host=LOCALHOST)
    args = parser.parse_args([LOCALHOST, "--port", str(servers[0].socket.getsockname()[1]),
                              "--listen-addr", LOCALHOST, "--listen-port", "0"])
    line = b'{"class":"x","pad":"' + b"p" * 2000 + b'"}\n'

    async def peers() -> None:
        await listening.wait()
        port = int(said[0].split()[2].rsplit(":", 1)[1])
        client = await trio.open_tcp_stream(LOCALHOST, port)
        upstream = await servers[0].accept()
        async with trio.open_nursery() as both:
            both.start_soon(upstream.send_all, line * 2000)  # 4 MB: more than a pipe holds
            got = 0
            while got < len(line) * 2000:
                got += len(await client.receive_some())
        await client.aclose()
        await upstream.aclose()

    read_end, write_end = os.pipe()
    stdout = os.dup(1)
    os.dup2(write_end, 1)  # the relay's records go to its fd 1
    os.close(write_end)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peers)
            started = trio.current_time()
            with pytest.raises(cli.CommandError) as error:
                await relay_module._run(args, Notices())
            waited = trio.current_time() - started
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)
        await servers[0].aclose()
    # It waited for the reader that long, no longer (virtual seconds, exact but for
    # the session's own moments), and that is the 5 s README promises.
    assert relay_module.FLUSH_TIMEOUT <= waited < relay_module.FLUSH_TIMEOUT + 0.5, waited
    assert relay_module.FLUSH_TIMEOUT == 5.0
    unwritten = int(str(error.value).split()[0])
    assert str(error.value) == (f"{unwritten} records were not written: "
                                f"standard output was not being read")
    assert not [message for message in said if "not written" in message]  # none dropped before
    output = bytearray()
    while chunk := os.read(read_end, 1 << 20):
        output += chunk
    os.close(read_end)
    assert output.endswith(b"\n")
    records = [json.loads(l) for l in output.splitlines()]  # each one whole
    assert unwritten > 0
    assert len(records) + unwritten == 2 + 2000 + 1  # start, open, the lines, close


def test_a_stderr_nobody_reads_does_not_stall_the_sessions(server):
    """Ctrl-S on the terminal, or a full pipe on stderr: forwarding goes on."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: full after a few dozen lines
    port = free_port()
    proc = subprocess.Popen(command("ctirelay", LOCALHOST, "--port", str(server.port), "--loop",
                                    "-v", "--listen-addr", LOCALHOST, "--listen-port", str(port)),
                            stdout=subprocess.DEVNULL, stderr=write_end)
    STARTED.append(proc)
    os.close(write_end)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection((LOCALHOST, port), timeout=WAIT).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server.accept().close()
        for _ in range(100):  # each logs an open and a close line: stderr fills up
            client = socket.create_connection((LOCALHOST, port), timeout=WAIT)
            server.accept().close()
            assert is_closed(client)
        client = socket.create_connection((LOCALHOST, port), timeout=WAIT)
        upstream = server.accept()
        client.sendall(b'{"class":"x"}\n')
        assert recv_all(upstream, 14) == b'{"class":"x"}\n'
        upstream.sendall(b'{"class":"y"}\n')
        assert recv_all(client, 14) == b'{"class":"y"}\n'
    finally:
        proc.kill()
        proc.wait()
        os.close(read_end)


def test_host_is_resolved_at_start():
    proc = Proc(command("ctirelay", "no.such.host.invalid", "--listen-port", "0"))
    assert proc.finish() == 1
    assert proc.err == "ctirelay: error: cannot resolve no.such.host.invalid: " \
                       f"{proc.err.split(': ')[-1]}"
    assert proc.err.count("\n") == 1 and proc.out == b""


def test_says_where_it_listens_and_relays_without_verbose(server):
    proc = Proc(command("ctirelay", LOCALHOST, "--port", str(server.port),
                        "--listen-addr", LOCALHOST, "--listen-port", "0"))
    proc.wait_for(lambda p: "listening" in p.err, what="the listening line")
    port = int(proc.err.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    assert proc.err == (f"ctirelay: listening on 127.0.0.1:{port} "
                        f"(clients are relayed to 127.0.0.1:{server.port})\n")
    proc.signal(signal.SIGTERM)
    assert proc.finish() == 0


@pytest.mark.parametrize("turns", range(8))
async def test_without_loop_a_client_that_resets_as_it_connects_ends_0_however_early(tmp_path, turns):
    # Exit 1 ("went away before the session began") or 0 (a session closed
    # by the reset) depended on when the reset came; it is the client's doing
    # either way: exit 0 (the relay ends without an error), one record and one
    # line saying what happened. The reset comes after `turns` turns of the
    # relay's event loop: before it accepts, as it connects to the server, or
    # once the session is open.
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    said: list[str] = []

    class Notices:
        say = staticmethod(said.append)

    tap = Tap(out, raw=False, max_line=1 << 20, notify=said.append)
    servers = await trio.open_tcp_listeners(0, host=LOCALHOST)
    relay = relay_module.Relay(LOCALHOST, servers[0].socket.getsockname()[1],
                               listen_addr=LOCALHOST, listen_port=0, loop=False, tap=tap,
                               verbose=False, connect_timeout=WAIT, notices=Notices())

    async def upstream(task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:  # a session that had begun reached the server
            await (await servers[0].accept()).aclose()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tap.run)
            await nursery.start(upstream)

            async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
                await relay.serve(task_status=task_status)  # a CommandError: exit 1
                tap.close()
                nursery.cancel_scope.cancel()

            [address] = await nursery.start(serve)
            sock = trio.socket.socket()
            await sock.connect((LOCALHOST, int(address.rsplit(":", 1)[1])))
            for _ in range(turns):
                await trio.lowlevel.checkpoint()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        await tap.finished.wait()
    await servers[0].aclose()
    os.close(out)
    records = [json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()]
    events = [record.get("event") for record in records]
    assert events[0] == "start" and events[-1] in ("error", "close"), events
    if events[-1] == "error":  # before the session began: said without -v
        assert [line for line in said if line.startswith("session 1")] == [
            f"session 1: {records[-1]['error']}"]
    else:
        assert records[-1]["by"] == "client" and "reset" in records[-1]["error"]
