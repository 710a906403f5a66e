"""The relay's session: what every socket and TLS error means (Session.fail), the
shared network wording (core.neterrors), and the pumps over in-process sockets."""
import errno
import socket
import ssl

import pytest
import trio
import trio.testing

from ctipipe.core import neterrors
from ctipipe.relay import pumps
from ctipipe.relay.session import Session, client_left, unexpected


class _Side:
    pass


class _Record:
    client, server = _Side(), _Side()


class _Tap:
    """What the pumps need of the tap, keeping what it was given."""
    full = False

    def __init__(self):
        self.data_seen = []

    def data(self, side, ts, data):
        self.data_seen.append((side, data))


def _session():
    return Session(1, _Tap(), _Record())


def _oserror(code):
    return OSError(code, __import__("os").strerror(code))


def _broken(code):
    error = trio.BrokenResourceError()
    error.__cause__ = _oserror(code)
    return error


# (side, the side's state, error, expected: message, reset?, a TLS failure?)
MEANINGS = [
    ("client", None, _oserror(errno.ECONNRESET), "connection reset by client", True, False),
    ("server", None, _oserror(errno.EPIPE), "connection reset by server", True, False),
    ("server", None, _oserror(errno.ETIMEDOUT), "server connection failed: Connection timed out",
     False, False),
    ("client", None, _broken(errno.ECONNRESET), "connection reset by client", True, False),
    ("server", "tls", ssl.SSLError(1, "bad record mac (_ssl.c:2580)"),
     "the server's TLS connection failed: bad record mac", False, True),
    ("server", "handshake", ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
     "the server closed the connection during the TLS handshake", False, True),
    ("client", "handshake", ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
     "the client closed the connection during the TLS handshake", False, True),
    ("client", "handshake", trio.TooSlowError(),
     "the client did not complete its TLS handshake within 30 s", False, True),
]


@pytest.mark.parametrize("side,state,error,message,reset,tls", MEANINGS)
def test_fail_gives_each_error_its_meaning(side, state, error, message, reset, tls):
    session = _session()
    session.direction(side).state = state
    session.fail(side, error)
    assert (session.by, session.error, side in session.reset, session.tls_failed) == (
        side, message, reset, tls)


def test_the_first_failure_is_the_one_reported_and_every_reset_passed_on():
    session = _session()
    session.finished("client")  # the client half-closed first
    session.fail("server", _oserror(errno.ECONNRESET))
    session.fail("client", _oserror(errno.ECONNRESET))
    assert session.by == "server" and session.error == "connection reset by server"
    assert session.reset == {"client", "server"}


async def test_fail_cancels_the_running_phase():
    session = _session()
    with trio.CancelScope() as scope:
        session.scope = scope
        session.fail("client", _oserror(errno.ECONNRESET))
    assert scope.cancel_called


def test_a_handshake_failure_on_json_gets_the_plain_text_hint():
    session = _session()
    session.server.state = "handshake"
    session.server.first = b'{"class": "starttls", '
    session.fail("server", ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert session.hint == "this port starts in plain text: drop --tls"
    other = _session()
    other.server.state = "handshake"
    other.server.first = b"\x15\x03\x01\x00\x02\x02\x28"  # an alert: TLS, no hint
    other.fail("server", ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] alert"))
    assert other.hint is None and other.tls_failed


def test_failures_outside_the_pumps():
    assert client_left(_oserror(errno.ENOTCONN))
    assert unexpected(_oserror(errno.ENOTCONN)) == "the client went away before the session began"
    assert unexpected(_oserror(errno.ECONNRESET)) == "connection reset (Connection reset by peer)"
    assert not client_left(ValueError("odd"))
    assert unexpected(ValueError("odd")) == "session failed: ValueError: odd"


def test_network_wording():
    assert neterrors.join("xivo-new", 5003) == "xivo-new:5003"
    assert neterrors.join("::1", 5003) == "[::1]:5003"
    assert neterrors.name(("127.0.0.1", 51234)) == "127.0.0.1:51234"
    group = OSError("all attempts to connect to xivo:5003 failed")
    group.__cause__ = ExceptionGroup("x", [_oserror(errno.ECONNREFUSED)])
    assert neterrors.reason(group) == "Connection refused"
    assert neterrors.reason(socket.gaierror(-2, "Name or service not known")) == \
        "Name or service not known"
    assert neterrors.lost("client", trio.BrokenResourceError()) == ("client connection failed", False)


# --- the pumps, in-process ---------------------------------------------------------

def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def test_plain_pumps_forward_record_and_pass_the_half_close_on():
    session = _session()
    client_far, session.client.sock = _pair()  # client_far: the client's own end
    server_far, session.server.sock = _pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as phase:
            session.scope = phase.cancel_scope
            phase.start_soon(pumps.plain, session, session.client)
            phase.start_soon(pumps.plain, session, session.server)
            client_far.sendall(b'{"class":"logout"}\n')
            client_far.shutdown(socket.SHUT_WR)
            await trio.lowlevel.wait_readable(server_far)
            got = b""
            while True:
                await trio.lowlevel.wait_readable(server_far)
                chunk = server_far.recv(100)
                if not chunk:
                    break
                got += chunk
            assert got == b'{"class":"logout"}\n'  # then the FIN: passed on
            server_far.sendall(b"bye\n")  # the half-closed client still gets replies
            server_far.shutdown(socket.SHUT_WR)
            await trio.lowlevel.wait_readable(client_far)
            assert client_far.recv(100) == b"bye\n"
    assert session.by == "client" and session.error is None
    assert (session.client.bytes, session.server.bytes) == (19, 4)
    assert [data for _, data in session.tap.data_seen] == [b'{"class":"logout"}\n', b"bye\n"]
    for sock in (client_far, server_far, session.client.sock, session.server.sock):
        sock.close()


async def test_the_watching_pumps_stop_the_client_before_the_answer_goes_out():
    session = _session()
    client_far, session.client.sock = _pair()
    server_far, session.server.sock = _pair()
    watch = pumps.Watch()
    results = {}

    async def pump(direction):
        results[direction.side] = await pumps.watching(session, direction, watch)

    answer = b'{"class": "starttls", "starttls": true}\n'
    with trio.fail_after(5):
        async with trio.open_nursery() as phase:
            session.scope = phase.cancel_scope
            phase.start_soon(pump, session.client)
            phase.start_soon(pump, session.server)
            client_far.sendall(b'{"class":"starttls","status":true}\n')
            await trio.lowlevel.wait_readable(server_far)
            assert server_far.recv(100) == b'{"class":"starttls","status":true}\n'
            server_far.sendall(answer)
    assert results == {"client": False, "server": True}
    assert client_far.recv(100) == answer
    client_far.sendall(b"\x16\x03\x01")  # the ClientHello: left for the TLS phase
    assert session.client.sock.recv(100) == b"\x16\x03\x01"
    for sock in (client_far, server_far, session.client.sock, session.server.sock):
        sock.close()


async def test_a_client_pump_switched_while_sending_stops_once_its_send_is_done():
    """The switch comes while the client's pump waits to send (the server reads
    slowly): once its send is done it must stop, not read on in plain."""
    session = _session()
    client_far, session.client.sock = _pair()
    server_far, session.server.sock = _pair()
    watch = pumps.Watch()
    results = {}
    request = b'{"class":"starttls","status":true}\n'
    pipelined = b"x" * (4 << 20)  # more than the sockets hold: the client's pump waits
    answer = b'{"class": "starttls", "starttls": true}\n'

    async def pump(direction):
        results[direction.side] = await pumps.watching(session, direction, watch)

    async def send(sock, data):
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(sock)
            view = view[sock.send(view):]

    async def drain(sock):
        while True:
            await trio.lowlevel.wait_readable(sock)
            sock.recv(1 << 16)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as phase:
                session.scope = phase.cancel_scope
                phase.start_soon(pump, session.client)
                phase.start_soon(pump, session.server)
                nursery.start_soon(send, client_far, request + pipelined)
                await trio.testing.wait_all_tasks_blocked()
                assert watch.watcher.requested
                server_far.sendall(answer)
                await trio.testing.wait_all_tasks_blocked()  # the server's pump waits for it
                nursery.start_soon(drain, server_far)
            # The phase ended: the client's pump stopped once its send was done
            # (read on in plain, it would still be waiting for the client).
            nursery.cancel_scope.cancel()
    assert results == {"client": False, "server": True}
    assert session.client.bytes < len(request + pipelined)  # the rest is left unread
    for sock in (client_far, server_far, session.client.sock, session.server.sock):
        sock.close()
