"""Memory that is a property of the relay, not of what peers send: what one long
line costs, how many sessions may sit in their handshakes, and memory given back
after a burst. In-process checks of the mechanisms first, then (heavy) the relay
process's resident memory, read from /proc as tests/test_reliability.py reads it.
The full figures are in tests/bench/memory_bench.py and README."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path

import orjson
import pytest

from helpers import LOCALHOST, WAIT, Relay, recv_all
from ctipipe.relay.splitter import Splitter

TS = 1764262479.5
READ = 1 << 16


def held_and_emitted(line_bytes: bytes, size: int, max_line: int = 16 << 20) -> tuple[int, int]:
    """Feed an unfinished line read by read; the most bytes of records one read
    produced, and how many records came out before the line ended."""
    splitter = Splitter(1, "client", max_line)
    largest, count = 0, 0
    chunk = line_bytes * (READ // len(line_bytes))
    for _ in range(size // READ):
        out = splitter.lines(TS, chunk)
        largest = max(largest, sum(map(len, out)))
        count += sum(part.endswith(b"\n") for part in out)
    return largest, count


def test_a_line_of_control_bytes_goes_out_as_it_comes():
    """15 MiB of \\x01 under a 16 MiB limit: 90 MiB once escaped. Its pieces go out
    while it is read, no read adding more than the limit's worth of records."""
    largest, count = held_and_emitted(b"\x01", 15 << 20)
    assert count > 0
    assert largest <= 16 << 20


def test_a_long_json_like_line_is_still_held_whole():
    """Text that may yet be JSON is held up to the limit, as before."""
    largest, count = held_and_emitted(b"a", 4 << 20)
    assert count == 0


def test_pieces_of_a_long_line_hold_at_most_a_piece_once_escaped():
    splitter = Splitter(1, "client", 16 << 20)
    out = []
    for _ in range((3 << 20) // READ):
        out += splitter.lines(TS, b"\x01" * READ)
    out += splitter.lines(TS, b"\n") + splitter.end(TS)
    records = [orjson.loads(line) for line in b"".join(out).splitlines()]
    assert all(len(json.dumps(r["raw"])) <= (1 << 20) + 2 for r in records)
    assert sum(r["size"] for r in records) == (3 << 20) + 1
    assert "".join(r["raw"] for r in records) == "\x01" * (3 << 20)


# --- the bound on sessions in their handshakes (in-process) -----------------------

async def test_new_clients_wait_while_the_handshake_bound_is_reached():
    import trio
    import trio.testing

    from ctipipe.relay import limits

    said: list[str] = []
    sessions = limits.Sessions(said.append, limit=2)
    accepted: list = []
    changed = trio.Event()

    def start(stream) -> None:
        nonlocal changed
        accepted.append(stream)
        sessions.entered(len(accepted))
        changed.set()
        changed = trio.Event()

    async def wait_accepted(count: int) -> None:
        while len(accepted) < count:
            await changed.wait()

    with trio.fail_after(WAIT):
        listeners = await trio.open_tcp_listeners(0, host=LOCALHOST)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limits.serve, listeners, sessions, start)
            clients = [await trio.open_tcp_stream(LOCALHOST, port) for _ in range(3)]
            await wait_accepted(2)
            await trio.testing.wait_all_tasks_blocked(0.2)
            assert len(accepted) == 2  # the third waits in the accept queue
            assert said == ["2 sessions have not finished their handshakes: new clients wait "
                            "to be accepted until one has (once since the start)"]
            sessions.past(1)  # one is done: the third is taken
            await wait_accepted(3)
            nursery.cancel_scope.cancel()
        for stream in clients + accepted:
            await stream.aclose()


async def test_a_real_tls_client_gets_through_a_bound_full_of_silent_ones(monkeypatch):
    """--tls, the bound (2 here) filled with clients that connect and say nothing:
    a real client is accepted at once, the oldest silent session being closed
    for it (an `error` record: it never opened, the server never saw it),
    completes its handshake and exchanges a line. (Before, it waited
    in the accept queue until a silent one gave up; here they would not.)"""
    import ssl

    import trio
    import trio.testing

    from ctipipe.relay import certs, intercept
    from ctipipe.relay.command import Relay as InProcessRelay
    from ctipipe.relay.session import HANDSHAKE_TIMEOUT
    from ctipipe.relay.tap import Tap

    monkeypatch.setattr(intercept, "SILENT_HANDSHAKE_TIMEOUT", HANDSHAKE_TIMEOUT)
    cert, key, _ = certs.relay_certificate()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    said: list[str] = []

    class Notices:  # what the relay says on standard error, kept
        say = staticmethod(said.append)

    async def answer(plain) -> None:  # the TLS server: a line for a line
        tls = trio.SSLStream(plain, server_context, server_side=True)
        try:
            line = await tls.receive_some(1000)
            await tls.send_all(b'{"class":"pong"}\n' if line else b"")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(tls)

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    tap = Tap(write_end, raw=False, max_line=1 << 20, notify=said.append)
    options = intercept.Options(starttls="intercept", implicit=True,
                                client_context=certs.client_leg_context(cert, key),
                                server_context=certs.server_leg_context(), verified=False)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            servers = await trio.open_tcp_listeners(0, host=LOCALHOST)
            nursery.start_soon(trio.serve_listeners, answer, servers)
            relay = InProcessRelay(LOCALHOST, servers[0].socket.getsockname()[1],
                                   listen_addr=LOCALHOST, listen_port=0, loop=True, tap=tap,
                                   verbose=False, connect_timeout=WAIT, notices=Notices(),
                                   tls_options=options, max_handshakes=2)
            nursery.start_soon(tap.run)
            bound = await nursery.start(relay.serve)
            port = int(bound[0].rsplit(":", 1)[1])
            silent = [await trio.open_tcp_stream(LOCALHOST, port) for _ in range(3)]
            while len(relay.handshakes.in_handshake) < 2:  # both places taken by silent ones
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked(0.1)  # (in their TLS handshakes)
            real = trio.SSLStream(await trio.open_tcp_stream(LOCALHOST, port), client_context)
            await real.do_handshake()
            await real.send_all(b'{"class":"ping"}\n')
            assert await real.receive_some(1000) == b'{"class":"pong"}\n'
            await real.aclose()
            nursery.cancel_scope.cancel()
    for sock in silent:
        await sock.aclose()
    tap.close()
    os.close(write_end)
    records = [orjson.loads(line) for line in os.read(read_end, 1 << 20).splitlines()]
    os.close(read_end)
    assert relay.handshakes.drops >= 1  # (the third silent one may have been accepted too)
    dropped = [r for r in records if r.get("event") == "error"
               and "closed for a new client" in r["error"]]
    assert len(dropped) >= 1
    assert any(line.startswith("2 sessions have not finished their handshakes: for each new "
                               "client, the oldest whose client has sent nothing is closed (")
               for line in said)


def test_memory_is_given_back_once_the_sessions_fall(monkeypatch):
    from ctipipe.relay import limits

    calls: list[int] = []
    monkeypatch.setattr(limits, "give_back_memory", lambda: calls.append(1))
    sessions = limits.Sessions(lambda message: None, limit=10)
    for conn in range(1, 101):
        sessions.entered(conn)
        sessions.past(conn)
    for conn in range(1, 50):
        sessions.left(conn)
    assert calls == []
    sessions.left(50)  # half of the peak of 100
    assert calls == [1]
    for conn in range(51, 101):
        sessions.left(conn)
    assert calls == [1, 1]  # at 50 and at 25; below TRIM_AFTER_SESSIONS, no more


def test_giving_memory_back_is_harmless():
    from ctipipe.relay import limits
    limits.give_back_memory()
    limits.give_back_memory()


# --- the relay process's memory (heavy) -------------------------------------------

def peak_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.heavy
def test_a_15_mib_line_of_control_bytes_stays_under_100_mb(server):
    """90 MiB once escaped; measured 238 MB before its pieces went out as they came."""
    import subprocess
    relay = Relay(server.port, stdout=subprocess.DEVNULL)
    client = relay.connect()
    upstream = server.accept()
    sink = threading.Thread(target=recv_all, args=(upstream,), daemon=True)
    sink.start()
    client.sendall(b"\x01" * (15 << 20) + b"\n")
    client.close()
    sink.join(60)
    upstream.close()
    relay.wait_for(lambda p: "closed by" in p.err, timeout=60, what="the session's close")
    peak = peak_mb(relay.pid)
    relay.signal(signal.SIGTERM)
    assert relay.finish(timeout=30) == 0
    assert peak <= 100, f"relay peak RSS {peak:.1f} MB"


@pytest.mark.heavy
def test_parked_tls_clients_are_bounded_and_their_memory_given_back():
    """1,000 --tls clients that connect and never begin their handshake: at most
    MAX_HANDSHAKES of them are waited on at once (the oldest closed for each
    newcomer, before the server is connected to), and once they leave the relay
    gives the memory back (measured before: 83 MB, and 83 MB after they left)."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    import memory_bench
    from ctipipe.relay import certs

    cert, key, _ = certs.relay_certificate()
    tls_server = memory_bench.Server("tls", str(cert), str(key))
    try:
        relay = Relay(tls_server.port, "--loop", "--tls")
        parked = [relay.connect() for _ in range(1000)]
        relay.wait_for(lambda p: "have not finished their handshakes" in p.err, timeout=30,
                       what="the bound to be reached")
        peak = peak_mb(relay.pid)
        for sock in parked:
            sock.close()
        relay.wait_for(lambda p: p.out.count(b'"event":"close"') + p.out.count(b'"event":"error"')
                       == 1000, timeout=50,
                       what="every session to end")
        after = peak_mb(relay.pid, "VmRSS")
        relay.signal(signal.SIGTERM)
        assert relay.finish(timeout=30) == 0
    finally:
        tls_server.close()
    assert peak <= 75, f"relay peak RSS {peak:.1f} MB with 1,000 parked clients"
    assert after <= 50, f"relay RSS {after:.1f} MB once they left"


# --- a TLS peer that sends nothing is given up sooner (in-process, virtual time) --

@pytest.mark.parametrize("sends,after,says", [
    (b"", 10.0, "the client sent nothing of its TLS handshake within 10 s"),
    (b"\x16\x03\x01\x00\x50", 30.0, "the client did not complete its TLS handshake within 30 s")])
async def test_a_silent_tls_peer_is_given_up_sooner(autojump_clock, sends, after, says):
    """Nothing at all: 10 s. The start of a ClientHello, then nothing: 30 s."""
    import trio

    from ctipipe.relay import certs, intercept, pumps
    from ctipipe.relay.session import Session

    cert, key, _ = certs.relay_certificate()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.sendall(sends)
    session = Session(1, None, None)
    session.client.sock = ours
    session.client.state = "handshake"
    leg = pumps.Leg(session.client, certs.client_leg_context(cert, key), True)
    started = trio.current_time()
    await intercept._handshake(session, leg)
    assert trio.current_time() - started == pytest.approx(after)
    assert session.error == says
    ours.close()
    theirs.close()
