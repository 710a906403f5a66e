"""Load, faults, hostile peers and abuse: the session is never disturbed, nothing is
lost silently, and memory stays bounded. Real processes, real sockets on 127.0.0.1."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from helpers import LOCALHOST, WAIT, Proc, Relay, command, exchange, is_closed, recv_all

sys.path.insert(0, str(Path(__file__).parent / "bench"))
import messages  # noqa: E402  (the benchmark's realistic CTI messages)

pytestmark = pytest.mark.heavy

# The relay's resident memory never goes past this: the interpreter with trio
# (~26 MB), what the tap may hold (tap.py: a 1 MiB queue, 4 MiB of output backlog
# and 1 MiB more for events), one batch being formatted, and the allocator's slack.
RELAY_MEMORY_BOUND_MB = 48


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


class Sampler:
    """The peak of a process's resident memory, read from /proc every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.thread.join(WAIT)
        return self.peak


class Drain:
    """Reads a pipe as fast as it comes, keeping only what it is asked to keep."""

    def __init__(self, fd: int, keep: bool = True) -> None:
        self.fd = fd
        self.keep = keep
        self.data = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.fd, 1 << 20):
            self.total += len(chunk)
            if self.keep:
                self.data += chunk

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


# --- load ------------------------------------------------------------------------

def test_200_concurrent_sessions_each_byte_exact_and_fully_recorded(server, tmp_path):
    # 200 sessions at once (each its own client thread), 500 messages each way in
    # each: 53 MB in all, fifty times the tap's queue, which a file output keeps
    # full (the sessions wait for the tap's CPU work instead of losing records).
    sessions, per_side = 200, 500
    sample = messages.messages(per_side * 2)
    up, down = b"".join(sample[:per_side]), b"".join(sample[per_side:])
    # a file never makes the relay wait, so every record must be there
    with open(tmp_path / "stream.jsonl", "wb") as out:
        relay = Relay(server.port, "--loop", stdout=out)
    results = {}
    pairing = threading.Lock()

    def run_session(n: int) -> None:
        with pairing:  # connect and accept in pairs: each client meets its own upstream
            client = relay.connect()
            upstream = server.accept()
        results[n] = exchange(client, upstream, up, down, timeout=120) == {"up": up, "down": down}

    workers = [threading.Thread(target=run_session, args=(n,)) for n in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
    assert len(results) == sessions and all(results.values())
    stream_file = tmp_path / "stream.jsonl"
    deadline = time.monotonic() + 60
    while stream_file.read_bytes().count(b'"event":"close"') < sessions:
        assert time.monotonic() < deadline, "not every session was closed in the stream"
        time.sleep(0.2)
    relay.signal(signal.SIGTERM)
    assert relay.finish(timeout=30) == 0
    counts = {}
    for line in stream_file.read_bytes().splitlines():
        record = orjson.loads(line)
        assert record.get("event") != "gap", "records were lost"
        if record.get("event") == "start":
            continue
        entry = counts.setdefault(record["conn"], {"open": 0, "close": 0, "client": 0, "server": 0})
        entry[record.get("event") or record["from"]] += 1
    assert sorted(counts) == list(range(1, sessions + 1))
    for conn, entry in counts.items():
        assert entry == {"open": 1, "close": 1, "client": per_side, "server": per_side}, conn
    assert "Traceback" not in relay.err


# Through one session: 256 MiB, 36 times what the tap may hold (its 1 MiB queue, 4 MiB
# of output backlog, 1 MiB more for events, a 1 MiB pipe) and over five times the
# bound itself, so that memory growing with the traffic cannot stay under it.
VOLUME = 256 << 20


def test_256_mib_through_one_session_with_bounded_memory(server):
    message = orjson.dumps({"class": "getlist", "function": "listid", "listname": "queuemembers",
                            "list": [f"Agent/{n},blue" for n in range(300)], "timenow": 1.5}) + b"\n"
    burst = message * ((1 << 20) // len(message))  # 1 MiB a send
    bursts = VOLUME // len(burst) + 1
    read_end, write_end = os.pipe()
    relay = Relay(server.port, stdout=write_end)
    os.close(write_end)
    drain = Drain(read_end, keep=False)
    sampler = Sampler(relay.pid)
    client = relay.connect()
    upstream = server.accept()
    received = []
    reader = threading.Thread(target=lambda: received.append(len(recv_all(client))))
    reader.start()
    for _ in range(bursts):
        upstream.sendall(burst)
    upstream.close()
    reader.join(300)
    client.close()
    assert received == [bursts * len(burst)] and bursts * len(burst) >= VOLUME
    assert relay.finish(timeout=120) == 0
    peak = sampler.stop()
    drain.join()
    # The records went out too, or (on a machine too busy for the reader to keep
    # up) the loss was counted and said, never silent.
    assert drain.total > VOLUME or "output too slow" in relay.err, (drain.total, relay.err)
    assert peak <= RELAY_MEMORY_BOUND_MB, f"relay peak RSS {peak:.1f} MB"


# --- faults --------------------------------------------------------------------------

def test_stopped_downstream_stage_neither_slows_the_session_nor_grows_memory(server):
    """ctirelay | ctiexclude, the stage SIGSTOPped: the session finishes at full
    speed; after SIGCONT the stream resumes with a gap counting exactly what was lost."""
    relay = Relay(server.port, collect=False)  # the stage reads the relay's output
    stage = subprocess.Popen(command("ctiexclude", "class=never"), stdin=relay.popen.stdout,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    relay.popen.stdout.close()
    drain = Drain(stage.stdout.fileno())
    try:
        os.kill(stage.pid, signal.SIGSTOP)
        sampler = Sampler(relay.pid)
        client = relay.connect()
        upstream = server.accept()
        # 200,000 messages, 53 MB: eight times what the tap may hold (7 MiB, its
        # queue and backlog), and kept whole they would be more than the bound
        sample = messages.messages(100_000)
        payload = b"".join(sample) * 2
        received = []
        reader = threading.Thread(target=lambda: received.append(recv_all(client)))
        reader.start()
        upstream.sendall(payload)
        upstream.close()
        reader.join(60)  # (held up behind the stopped display, it would never end)
        assert not reader.is_alive(), "the session is held up behind a stopped display"
        assert received == [payload]
        peak = sampler.stop()
        assert peak <= RELAY_MEMORY_BOUND_MB, f"relay peak RSS {peak:.1f} MB"
        client.close()
        os.kill(stage.pid, signal.SIGCONT)
        assert relay.finish(timeout=30) == 0
        assert stage.wait(30) == 0
        drain.join()
        records = [orjson.loads(line) for line in bytes(drain.data).splitlines()]
        gaps = [r["lost"] for r in records if r.get("event") == "gap"]
        kept = sum(1 for r in records if "msg" in r)
        assert gaps and kept + sum(gaps) == 200_000
        assert records[-1]["event"] == "close"
    finally:
        for proc in (stage,):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        relay.kill()


@pytest.mark.parametrize("how", ["reset", "close mid-message"])
def test_server_failure_closes_the_client_and_loop_goes_on(server, how):
    relay = Relay(server.port, "--loop")
    client = relay.connect()
    upstream = server.accept()
    client.sendall(b'{"class":"login_id","commandid":1}\n')
    assert recv_all(upstream, 35)
    upstream.sendall(b'{"class":"login_id","sessionid":"21Ua')
    time.sleep(0.1)
    if how == "reset":
        from helpers import reset
        reset(upstream)
    else:
        upstream.close()
    if how == "reset":
        assert is_closed(client)
    else:  # the server's half-close is passed on: the bytes it sent, then EOF
        assert recv_all(client) == b'{"class":"login_id","sessionid":"21Ua'
    client.close()
    # the next client is served
    second = relay.connect()
    upstream2 = server.accept()
    second.sendall(b'{"class":"keepalive"}\n')
    assert recv_all(upstream2, 22) == b'{"class":"keepalive"}\n'
    second.close()
    upstream2.close()
    relay.wait_for(lambda p: p.out.count(b'"event":"close"') == 2, what="two closes")
    relay.signal(signal.SIGINT)
    assert relay.finish() == 0
    first = [r for r in relay.records() if r.get("conn") == 1]
    close = first[-1]
    assert close["event"] == "close" and close["by"] == "server"
    if how == "reset":
        assert "reset" in close["error"]
    partial = [r for r in first if r.get("partial")]
    if how != "reset":
        assert partial and partial[0]["raw"] == '{"class":"login_id","sessionid":"21Ua'


async def test_server_that_never_answers_is_given_up_promptly(autojump_clock, tmp_path):
    """--connect-timeout 1 against a server that never answers: the client is
    closed after exactly 1 s (virtual time), an `error` record says why, and
    the relay (--loop) goes on serving. In-process, on virtual time."""
    import select

    import trio

    from ctipipe.relay.command import Relay as InProcessRelay
    from ctipipe.relay.tap import Tap

    # A listening socket whose accept queue is full: the kernel drops further
    # SYNs, so a connection attempt hangs as with a filtered address.
    silent = socket.socket()
    silent.bind((LOCALHOST, 0))
    silent.listen(0)
    silent_port = silent.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(silent.getsockname())
        fillers.append(s)
    # the queue is full once one of them is connected (the others' SYNs are dropped)
    assert select.select([], fillers, [], WAIT)[1]
    said: list[str] = []

    class Notices:
        say = staticmethod(said.append)

    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    tap = Tap(out, raw=False, max_line=1 << 20, notify=said.append)
    relay = InProcessRelay(LOCALHOST, silent_port, listen_addr=LOCALHOST,
                           listen_port=0, loop=True, tap=tap, verbose=False, connect_timeout=1.0,
                           notices=Notices())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tap.run)
            [address] = await nursery.start(relay.serve)
            port = int(address.rsplit(":", 1)[1])
            for conn in (1, 2):  # the second client: still serving
                client = await trio.open_tcp_stream(LOCALHOST, port)
                start = trio.current_time()
                try:
                    assert await client.receive_some() == b""
                except trio.BrokenResourceError:
                    pass  # (closed with a reset: closed all the same)
                assert trio.current_time() - start == pytest.approx(1.0, abs=0.01)
                await client.aclose()
            nursery.cancel_scope.cancel()
        tap.close()
        await tap.finished.wait()
    finally:
        os.close(out)
        for s in fillers:
            s.close()
        silent.close()
    records = [json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()]
    assert [r.get("event") for r in records] == ["start", "error", "error"]
    for conn, record in enumerate(records[1:], 1):
        assert record["conn"] == conn
        assert record["error"] == f"cannot reach 127.0.0.1:{silent_port}: no answer after 1 s"
    assert sum("no answer after 1 s" in line for line in said) == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_heavy_traffic_leaves_complete_records_and_files(server, tmp_path, signum):
    client_file, server_file = tmp_path / "client", tmp_path / "server"
    port = socket.socket()
    port.bind((LOCALHOST, 0))
    listen_port = port.getsockname()[1]
    port.close()
    tool = Proc(command("ctisave", LOCALHOST, "--port", str(server.port), "--listen-addr", LOCALHOST,
                        "--listen-port", str(listen_port), str(client_file), str(server_file)))
    deadline = time.monotonic() + WAIT
    while True:
        try:
            client = socket.create_connection((LOCALHOST, listen_port), timeout=WAIT)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    upstream = server.accept()
    sample = b"".join(messages.messages(20_000))
    stop = threading.Event()

    def pour(sock):
        try:
            while not stop.is_set():
                sock.sendall(sample)
        except OSError:
            pass

    pourers = [threading.Thread(target=pour, args=(s,), daemon=True) for s in (client, upstream)]
    readers = [threading.Thread(target=lambda s=s: recv_all_quiet(s), daemon=True)
               for s in (client, upstream)]
    for t in pourers + readers:
        t.start()
    # the signal comes while both sides pour, once both files are well under way
    deadline = time.monotonic() + WAIT
    while not all(path.exists() and path.stat().st_size > 256 << 10
                  for path in (client_file, server_file)):
        assert time.monotonic() < deadline, tool.err
        time.sleep(0.02)
    os.kill(tool.pid, signum)
    assert tool.finish(timeout=30) == 0, tool.err
    stop.set()
    client.close()
    upstream.close()
    assert "Traceback" not in tool.err
    for path in (client_file, server_file):
        data = path.read_bytes()
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
        if last != b"}":  # (every whole message ends with a line of its own "}")
            # the message cut by the shutdown, recorded as the partial line it was
            # (its bytes as they came: the cut may fall inside a UTF-8 character,
            # or just after an inner object's "}")
            assert last.startswith(b"{"), last[:200]
            data = data[:len(data) - len(last) - 1]
        text = data.decode()
        objects = json.loads("[" + re.sub(r"\n\}\n(?=\{)", "\n},\n", text) + "]")
        assert len(objects) > 100 and all(isinstance(o, dict) and "class" in o for o in objects)


def recv_all_quiet(sock):
    try:
        recv_all(sock)
    except OSError:
        pass


def test_split_to_a_full_disk_keeps_what_was_written(tmp_path):
    lines = [json.dumps({"ts": 1.0, "conn": 1, "from": ("client", "server")[n % 2], "size": 1,
                         "msg": {"class": "getlist", "n": n}}) for n in range(50)]
    data = ("\n".join(lines) + "\n").encode()
    result = subprocess.run(command("ctisplit", str(tmp_path / "client"), "/dev/full"), input=data,
                            capture_output=True, timeout=WAIT)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "ctisplit: error: cannot write /dev/full: No space left on device"]
    written = (tmp_path / "client").read_text()
    assert written.count('"class": "getlist"') == 25  # the client's side, whole


# --- bad input -----------------------------------------------------------------------

# 16 MiB: the longest line the relay writes (its --max-line), 64 of a stage's reads; under the stages' own limit (64 MiB), so the JSON one is a record like any other.
HUGE = 16 << 20


@pytest.mark.parametrize("argv", [["ctistrip", "timenow"], ["ctiinclude", "class=getlist"],
                                  ["ctiexclude", "class=getlist"], ["ctipretty", "--color", "never"],
                                  ["ctistat"], ["ctisplit", "{tmp}/c", "{tmp}/s"]])
def test_every_stage_survives_a_16_mib_line(argv, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    good = b'{"ts":1.000000,"conn":1,"from":"client","size":20,"msg":{"class":"getlist"}}\n'
    big_message = b'{"ts":1.000000,"conn":1,"from":"server","size":1,"msg":{"class":"getlist","blob":"' \
        + b"x" * HUGE + b'"}}\n'
    garbage = b"{" * 1000 + b"x" * HUGE + b"\n"
    result = subprocess.run(command(*argv), input=good + big_message + garbage + good,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stderr.decode().startswith(f"{argv[0]}: line 3: not JSON")
    assert result.stderr.count(b"\n") == 1


MAX_LINE = 4 << 20  # --max-line (16 MiB by default): the line below is 8 times it


def test_hostile_client_with_a_32_mib_line_does_not_hurt_others(server, tmp_path):
    with open(tmp_path / "stream.jsonl", "wb") as out:  # a file: nothing may be dropped
        relay = Relay(server.port, "--loop", "--max-line", str(MAX_LINE), stdout=out)
    sampler = Sampler(relay.pid)
    hostile = relay.connect()
    hostile_up = server.accept()
    sink = threading.Thread(target=recv_all_quiet, args=(hostile_up,), daemon=True)
    sink.start()
    chunk = b"A" * (1 << 20)
    for _ in range(32):  # 32 MiB, no newline
        hostile.sendall(chunk)
    # meanwhile a normal session is served
    normal = relay.connect()
    normal_up = server.accept()
    normal.sendall(b'{"class":"keepalive"}\n')
    assert recv_all(normal_up, 22) == b'{"class":"keepalive"}\n'
    normal_up.sendall(b'{"class":"keepalive","replyid":1}\n')
    assert recv_all(normal, 34)
    for s in (normal, normal_up, hostile):
        s.close()
    sink.join(60)
    hostile_up.close()
    stream_file = tmp_path / "stream.jsonl"
    deadline = time.monotonic() + 60
    while stream_file.read_bytes().count(b'"event":"close"') < 2:
        assert time.monotonic() < deadline, "sessions not closed"
        time.sleep(0.2)
    relay.signal(signal.SIGTERM)
    assert relay.finish(timeout=30) == 0
    peak = sampler.stop()
    records = [orjson.loads(line) for line in stream_file.read_bytes().splitlines()]
    pieces = [r for r in records if r.get("oversize")]
    assert sum(r["size"] for r in pieces) == 32 << 20
    assert all(r["size"] <= MAX_LINE for r in pieces)
    # bound: the interpreter, the queue, and the first --max-line bytes of the line
    # about three times over while it is cut into 1 MiB pieces and written (measured
    # 59-67 MB with the default 16 MiB, against 26 + 4 + 3 * 16 + 8)
    assert peak <= 26 + 4 + 3 * (MAX_LINE >> 20) + 8, f"relay peak RSS {peak:.1f} MB"


def test_a_thousand_idle_connections_do_not_stop_service(server):
    relay = Relay(server.port, "--loop")
    sampler = Sampler(relay.pid)
    idle = []
    accepted = []
    acceptor = threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(1000)])
    acceptor.start()
    for _ in range(1000):
        idle.append(relay.connect())
    acceptor.join(60)
    assert len(accepted) == 1000
    normal = relay.connect()
    normal_up = server.accept()
    normal.sendall(b'{"class":"keepalive"}\n')
    assert recv_all(normal_up, 22) == b'{"class":"keepalive"}\n'
    for s in idle + accepted + [normal, normal_up]:
        s.close()
    relay.wait_for(lambda p: p.out.count(b'"event":"close"') == 1001, timeout=60, what="closes")
    relay.signal(signal.SIGTERM)
    assert relay.finish(timeout=30) == 0
    assert sampler.stop() <= 80  # about 30 KB per idle session on top of the interpreter
    assert "Traceback" not in relay.err


# --- security ----------------------------------------------------------------------

def test_listen_addr_binds_only_that_address(server):
    relay = Relay(server.port)
    assert re.search(r"listening on 127\.0\.0\.1:\d+ \(", relay.err.splitlines()[0])
    port_hex = f"{relay.port:04X}"
    bound = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
             if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"]
    assert bound == [f"0100007F:{port_hex}"]
    relay.kill()


def test_ctispy_redact_hides_the_password(server):
    from test_classic import Classic, converse
    tool = Classic("ctispy", server.port, "--redact")
    converse(tool, server)
    assert tool.finish() == 0
    assert b"e5229ef4" not in tool.out and b'"hashedpassword": "***"' in tool.out
