"""The relay's TLS: the STARTTLS switch, implicit TLS, and the pumps over TLS.

A session whose TLS is intercepted runs in up to two phases:

1. Before the login, plain: two watching pumps forward every read as the
   plain pumps do. A client that wants TLS asks for it in its first message;
   any other first message (or a server that said WATCH_LIMIT bytes while
   nothing was asked) ends the watching, and each pump hands over to the
   relay's plain pump, which pays nothing for TLS from then on. When the
   server answers the request with `"starttls": true`, the client's pump is
   stopped *before* that answer is forwarded: the client sends its
   ClientHello only after reading the answer, so no byte it sends after it
   can cross the switch in plain.
2. After the answer: both handshakes at once (the real server drops a client
   that has not begun its handshake within 0.5 s), a `tls` event, then two
   pumps that forward and record the plaintext. Each leg is an SSLObject over
   memory buffers and the plain socket rather than a trio.SSLStream: a round
   trip then costs the TLS work and the system calls, and the scheduler only
   when a socket must be waited for (half the added latency of SSLStream).

With `--starttls pass` the answer is followed by a `tls` event with
`"intercepted": false` and the encrypted bytes are forwarded unrecorded.
"""
from __future__ import annotations

import errno
import socket
import ssl
import time
from dataclasses import dataclass

import orjson
import trio
from trio.lowlevel import wait_readable, wait_writable

from ctipipe.core import stream
from ctipipe.relay import certs as tls

# Bytes of each side watched for the STARTTLS exchange. A login is a few
# hundred bytes; a session that has said this much without one is past it.
WATCH_LIMIT = 1 << 16

# A client that accepted the upgrade but does not complete its handshake is
# given up on after this long (the server's own deadline is shorter still).
HANDSHAKE_TIMEOUT = 30.0

# One read on a TLS leg: the largest TLS record's worth of plaintext, a few times.
TLS_READ_SIZE = 1 << 16


@dataclass
class Options:
    """How the relay treats TLS, from its command line."""
    starttls: str  # "intercept" or "pass"
    implicit: bool  # --tls: TLS from the first byte
    client_context: ssl.SSLContext | None  # the relay as a server to clients
    server_context: ssl.SSLContext  # the relay as a client to the server
    verified: bool  # --server-ca given
    said_unverified: bool = False  # told the user once that the server is not verified
    # Lines for standard error once the relay listens: (shown without -v too, text).
    notes: tuple = ()


class _Watch:
    """What the two watching pumps of one session know about its login."""

    __slots__ = ("requested", "done", "switching", "client_reading", "client_stopped",
                 "client_plain")

    def __init__(self) -> None:
        self.requested = False  # the client asked for STARTTLS; the answer is awaited
        self.done = False  # past the login: stop watching
        self.switching = False  # the answer came: the client's pump must stop reading
        self.client_reading: trio.CancelScope | None = None
        self.client_stopped = trio.Event()
        self.client_plain = False  # the client's pump handed over to the plain pump


def _lines(buffer: bytes, data: bytes) -> tuple[list[tuple[bytes, int]], bytes]:
    """Complete lines of buffer+data with the offset in data just past each, and the rest."""
    joined = buffer + data
    found = []
    start = 0
    while (end := joined.find(b"\n", start)) >= 0:
        found.append((joined[start:end], end + 1 - len(buffer)))
        start = end + 1
    return found, joined[start:]


def _message(line: bytes) -> dict | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def run_session(relay, options: Options, conn: int, client: trio.SocketStream,
                      server: trio.SocketStream, raw: dict, session, counts: dict,
                      ending) -> None:
    """Relay one session whose TLS the relay handles (see the module's docstring)."""
    if options.implicit:
        if options.starttls == "pass":  # --tls --starttls pass: TLS forwarded untouched
            await _passed(relay, "implicit", conn, client, server, session, counts, ending)
        else:
            await _intercepted(relay, options, "implicit", conn, raw, session, counts, ending)
        return
    watch = _Watch()
    switched: list[bool] = []
    async with trio.open_nursery() as pumps:
        pumps.start_soon(_watch_client, relay, watch, raw["client"], raw["server"],
                         session.client, counts["client"], ending, pumps.cancel_scope)
        pumps.start_soon(_watch_server, relay, watch, raw["server"], raw["client"],
                         session.server, counts["server"], ending, pumps.cancel_scope, switched)
    if not switched:
        return
    if options.starttls == "pass":
        await _passed(relay, "starttls", conn, client, server, session, counts, ending)
        return
    await _intercepted(relay, options, "starttls", conn, raw, session, counts, ending)


# --- phase 1: the login, plain ---------------------------------------------------

async def _send_plain(dst: socket.socket, data) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[dst.send(view):]
        except BlockingIOError:
            await wait_writable(dst)


async def _watch_client(relay, watch: _Watch, src, dst, side_tap, counts, ending, scope) -> None:
    """Client to server during the login: notes a STARTTLS request, stops at the switch."""
    buffer = b""
    try:
        while not watch.done:
            if not watch.switching:
                with trio.CancelScope() as reading:
                    watch.client_reading = reading
                    await wait_readable(src)
                watch.client_reading = None
            if watch.switching:
                return  # what the client sends now is its handshake
            try:
                data = src.recv(TLS_READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as error:
                relay._failed(ending, "client", error, scope)
                return
            if not data:
                break  # the plain pump sees the EOF again and passes it on
            counts.bytes += len(data)
            counts.reads += 1
            relay.tap.data(side_tap, time.time(), data)
            try:
                await _send_plain(dst, data)
            except OSError as error:
                relay._failed(ending, "server", error, scope)
                return
            if watch.requested:
                continue  # waiting for the answer; nothing more to learn from the client
            # A client that wants TLS asks for it in its first message (it waits
            # for the offer before logging in); any other first message means
            # a plain session.
            lines, buffer = _lines(buffer, data)
            if lines:
                first = lines[0][0]
                message = _message(first) if b"starttls" in first else None
                if message and message.get("class") == "starttls" and message.get("status"):
                    watch.requested = True
                else:
                    watch.done = True
            elif len(buffer) > WATCH_LIMIT:
                watch.done = True
    finally:
        watch.client_stopped.set()
    watch.client_plain = True
    await relay._pump(src, dst, "client", "server", side_tap, counts, ending, scope)


async def _watch_server(relay, watch: _Watch, src, dst, side_tap, counts, ending, scope,
                        switched: list) -> None:
    """Server to client during the login: finds the answer to a STARTTLS request."""
    buffer = b""
    watched = 0
    while not watch.done:
        try:
            data = src.recv(TLS_READ_SIZE)
        except BlockingIOError:
            await wait_readable(src)
            continue
        except OSError as error:
            relay._failed(ending, "server", error, scope)
            return
        if not data:
            break
        cut = None  # where the answer line ends in data, if it says true
        if not watch.requested:  # only keep track of where lines begin
            newline = data.rfind(b"\n")
            buffer = data[newline + 1:] if newline >= 0 else buffer + data
        else:
            lines, buffer = _lines(buffer, data)
            for line, end in lines:
                if b"starttls" not in line:
                    continue
                message = _message(line)
                if message and message.get("class") == "starttls" and "starttls" in message:
                    watch.requested = False
                    if message["starttls"] and not watch.client_plain:
                        cut = end
                        break
                    watch.done = True  # refused: the session stays plain
        if cut is not None:
            if cut < len(data):
                # The server cannot have begun a handshake the client has not
                # started: these bytes are not TLS. Forward none of them.
                _fail(ending, "server", "the server sent data after its starttls answer", scope)
                return
            watch.switching = True
            if watch.client_reading is not None:
                watch.client_reading.cancel()
            await watch.client_stopped.wait()
        else:
            cut = len(data)
        counts.bytes += cut
        counts.reads += 1
        relay.tap.data(side_tap, time.time(), data[:cut])
        try:
            await _send_plain(dst, data[:cut])
        except OSError as error:
            relay._failed(ending, "client", error, scope)
            return
        if watch.switching:
            switched.append(True)
            return
        watched += len(data)
        if watched > WATCH_LIMIT:  # no answer in all this: not a STARTTLS server
            watch.done = True
    await relay._pump(src, dst, "server", "client", side_tap, counts, ending, scope)


def _fail(ending, side: str, message: str, scope: trio.CancelScope | None = None) -> None:
    if ending.error is None:
        ending.by = side
        ending.error = message
    if scope is not None:
        scope.cancel()


# --- phase 2: TLS -------------------------------------------------------------------

class _Leg:
    """One TLS connection of the session: an SSLObject over memory buffers and the
    plain non-blocking socket, so a record costs a recv, a decrypt, an encrypt and
    a send, with the event loop entered only to wait (as the plain pumps do)."""

    __slots__ = ("side", "sock", "tls", "incoming", "outgoing", "sending", "half_closed")

    def __init__(self, side: str, sock: socket.socket, context: ssl.SSLContext,
                 server_side: bool) -> None:
        self.side = side
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side)
        # Both pumps may have ciphertext for this socket (the reading one for
        # alerts and TLS 1.3 tickets): one at a time waits for room to write.
        self.sending = trio.Lock()
        self.half_closed = False  # the relay passed the other side's end on to it

    async def flush(self) -> None:
        """Send what the TLS layer has written, in order."""
        if not self.outgoing.pending:
            return
        if not self.sending.locked():
            data = self.outgoing.read()
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            rest = memoryview(data)[sent:]
        else:
            rest = memoryview(b"")
        async with self.sending:
            while True:
                while rest:
                    try:
                        rest = rest[self.sock.send(rest):]
                    except BlockingIOError:
                        await wait_writable(self.sock)
                if not self.outgoing.pending:
                    return
                rest = memoryview(self.outgoing.read())

    async def receive(self) -> bool:
        """Feed the TLS layer the next ciphertext; False at the end of the stream."""
        while True:
            try:
                data = self.sock.recv(TLS_READ_SIZE)
            except BlockingIOError:
                await wait_readable(self.sock)
                continue
            if data:
                self.incoming.write(data)
                return True
            self.incoming.write_eof()
            return False

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                await self.receive()
                continue
            await self.flush()
            return


async def _intercepted(relay, options: Options, how: str, conn: int, raw: dict, session,
                       counts: dict, ending) -> None:
    """Both handshakes at once, the `tls` event, then the plaintext relayed and recorded."""
    legs = {"client": _Leg("client", raw["client"], options.client_context, True),
            "server": _Leg("server", raw["server"], options.server_context, False)}
    async with trio.open_nursery() as handshakes:
        for leg in legs.values():
            handshakes.start_soon(_handshake, leg, options, ending, handshakes.cancel_scope)
    if ending.error is not None:
        return
    described = {side: tls.describe(leg.tls) for side, leg in legs.items()}
    if not options.verified and not options.said_unverified:
        options.said_unverified = True
        relay.notices.say("the server's TLS certificate is not verified (as the XiVO client does "
                         "not verify it); give --server-ca to verify it")
    relay.tap.opened(session, stream.event_record(time.time(), conn, "tls", how=how,
                                                  intercepted=True, **described))
    relay.log(f"session {conn}: TLS ({how}) intercepted: client "
              f"{described['client']['version']} {described['client']['cipher']}, server "
              f"{described['server']['version']} {described['server']['cipher']}")
    async with trio.open_nursery() as pumps:
        pumps.start_soon(_tls_pump, relay, legs["client"], legs["server"], session.client,
                         counts["client"], ending, pumps.cancel_scope)
        pumps.start_soon(_tls_pump, relay, legs["server"], legs["client"], session.server,
                         counts["server"], ending, pumps.cancel_scope)


async def _handshake(leg: _Leg, options: Options, ending, scope: trio.CancelScope) -> None:
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await leg.handshake()
    except trio.TooSlowError:
        _fail(ending, leg.side, f"the {leg.side} did not complete its TLS handshake within "
                                f"{HANDSHAKE_TIMEOUT:g} s", scope)
    except (OSError, ssl.SSLError) as error:  # ssl.SSLError is an OSError; both named for clarity
        _fail(ending, leg.side, _handshake_failure(leg.side, error), scope)


def _handshake_failure(side: str, cause: BaseException) -> str:
    """One line naming the leg and why its handshake failed."""
    if side == "server" and isinstance(cause, ssl.SSLCertVerificationError):
        return (f"the server's certificate did not verify against --server-ca: "
                f"{cause.verify_message}")
    if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)) or (
            isinstance(cause, ssl.SSLError) and "EOF" in str(cause)):
        return f"the {side} closed the connection during the TLS handshake"
    why = tls.handshake_error(cause)
    return f"the {side}'s TLS handshake failed: {why}"


async def _tls_pump(relay, src: _Leg, dst: _Leg, side_tap, counts, ending,
                    scope: trio.CancelScope) -> None:
    """Forward one direction's plaintext until EOF (then half-close dst) or a failure.

    As the plain pump: the non-blocking calls are tried first and the event
    loop is entered only to wait; after a short read the socket is waited on
    rather than asked again.
    """
    tap = relay.tap
    tap_data = tap.data
    clock = time.time
    read, write = src.tls.read, dst.tls.write
    incoming, decrypted = src.incoming, src.tls.pending
    sock = src.sock
    recv = sock.recv
    side, other = src.side, dst.side
    need = not incoming.pending  # the TLS layer needs ciphertext before it has plaintext
    wait = True  # the socket is likely empty: wait before asking it
    while True:
        if need:
            try:
                if src.outgoing.pending:
                    await src.flush()  # what reading wrote (TLS 1.3 tickets, alerts)
                if tap.full:  # the tap's CPU work is behind: let it catch up
                    await tap.room()
                if wait:
                    await wait_readable(sock)
                try:
                    chunk = recv(TLS_READ_SIZE)
                except BlockingIOError:
                    wait = True
                    continue
            except OSError as error:
                _socket_failed(ending, side, error, scope)
                return
            wait = len(chunk) < TLS_READ_SIZE
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()
            need = False
        try:
            data = read(TLS_READ_SIZE)
        except ssl.SSLWantReadError:
            need = True
            continue
        except ssl.SSLZeroReturnError:
            break  # the peer's close_notify, or its bare FIN
        except ssl.SSLError as error:
            if src.half_closed:
                # OpenSSL 3 peers answer a bare FIN with a decode_error alert
                # as they end: the end of this direction, not a failure.
                break
            _fail(ending, side, f"the {side}'s TLS connection failed: "
                                f"{tls.handshake_error(error)}", scope)
            return
        if not data:
            break
        counts.bytes += len(data)
        counts.reads += 1
        tap_data(side_tap, clock(), data)
        try:
            write(data)
            await dst.flush()
        except ssl.SSLError as error:
            _fail(ending, other, f"the {other}'s TLS connection failed: "
                                 f"{tls.handshake_error(error)}", scope)
            return
        except OSError as error:
            _socket_failed(ending, other, error, scope)
            return
        need = not incoming.pending and not decrypted()
    if ending.by is None:
        ending.by = side
    # The half-close is passed on as the XiVO server and client end their
    # side: a bare FIN, no close_notify. (A close_notify is data: a peer that
    # closes without reading it, as the real server does after a logout,
    # would answer it with a reset.)
    dst.half_closed = True
    try:
        async with dst.sending:
            dst.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _socket_failed(ending, side: str, error: OSError, scope: trio.CancelScope) -> None:
    if error.errno in (errno.ECONNRESET, errno.EPIPE):
        _fail(ending, side, f"connection reset by {side}")
        ending.reset.add(side)
    else:
        _fail(ending, side, f"{side} connection failed: {error.strerror or error}")
    scope.cancel()


def _broken(ending, side: str, error: BaseException, scope: trio.CancelScope) -> None:
    cause = error if isinstance(error, OSError) else (error.__cause__ or error.__context__)
    if isinstance(cause, (ConnectionResetError, BrokenPipeError)):
        _fail(ending, side, f"connection reset by {side}")
        ending.reset.add(side)
    else:
        _fail(ending, side, f"{side} TLS connection failed: {tls.handshake_error(error)}")
    scope.cancel()


async def _passed(relay, how: str, conn: int, client: trio.SocketStream,
                  server: trio.SocketStream, session, counts: dict, ending) -> None:
    """--starttls pass: the encrypted bytes both ways, counted, not recorded."""
    relay.tap.opened(session, stream.event_record(time.time(), conn, "tls", how=how,
                                                  intercepted=False))
    relay.log(f"session {conn}: TLS ({how}) passed on encrypted, not recorded")
    async with trio.open_nursery() as pumps:
        pumps.start_soon(_forward, client, server, "client", "server", counts["client"], ending,
                         pumps.cancel_scope)
        pumps.start_soon(_forward, server, client, "server", "client", counts["server"], ending,
                         pumps.cancel_scope)


async def _forward(src: trio.SocketStream, dst: trio.SocketStream, side: str, other: str,
                   counts, ending, scope: trio.CancelScope) -> None:
    while True:
        try:
            data = await src.receive_some(TLS_READ_SIZE)
        except (trio.BrokenResourceError, OSError) as error:
            _broken(ending, side, error, scope)
            return
        if not data:
            break
        counts.bytes += len(data)
        counts.reads += 1
        try:
            await dst.send_all(data)
        except (trio.BrokenResourceError, OSError) as error:
            _broken(ending, other, error, scope)
            return
    if ending.by is None:
        ending.by = side
    try:
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
