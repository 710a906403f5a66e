"""ctirelay: a transparent TCP proxy between a CTI client and server that
writes the tagged stream of everything that passed.

Each session (session.py) is one nursery with two one-way pumps (pumps.py). A
pump forwards every read unchanged, hands it to the tap (a non-blocking append)
and goes on; an EOF on one side becomes a half-close on the other, and the
session ends only when both pumps are done, or at once when either side resets.
With TLS, intercept.py runs the session's phases.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import struct
import time

import trio

from ctipipe import __version__
from ctipipe.core import cli, descriptors, neterrors, stream
from ctipipe.core.notices import Notices
from ctipipe.relay import certs as tls
from ctipipe.relay import intercept, limits, loops, pumps
from ctipipe.relay.session import Session, client_left, unexpected
from ctipipe.relay.tap import Tap

PROG = "ctirelay"

# At shutdown, how long to keep trying to write the last records (close
# events) to a reader that does not read, before exiting anyway.
FLUSH_TIMEOUT = 5.0


EXAMPLE = """\
ctirelay xivo-new | ctipretty              # clients connect to this host, port 50030
ctirelay xivo-new --loop --listen-addr 127.0.0.1 > session.jsonl
"""


def check_relay_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check alone; the wrappers call it too, before anything listens."""
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    cli.take_port(parser, args, "host")


def add_relay_options(parser: argparse.ArgumentParser, *, raw: bool = True) -> None:
    """The relay's options, shared by ctirelay and the classic wrappers."""
    parser.add_argument("host", type=cli.server_host, metavar="HOST",
                        help="the CTI server to relay to (HOST:PORT sets --port too)")
    parser.add_argument("--port", type=cli.server_port, default=5003, help="the server's port (default 5003)")
    parser.add_argument("--listen-addr", type=cli.host, metavar="ADDR", default=None,
                        help="listen on this address only (default: every address)")
    parser.add_argument("--listen-port", type=cli.port, default=50030,
                        help="where CTI clients connect (default 50030)")
    parser.add_argument("--loop", action="store_true",
                        help="keep accepting sessions (default: serve one, then exit)")
    if raw:
        parser.add_argument("--raw", action="store_true",
                            help="record each read as it came, without splitting lines")
    parser.add_argument("--max-line", type=cli.positive, default=16 << 20, metavar="BYTES",
                        help="emit longer lines in pieces (default 16 MiB)")
    parser.add_argument("--connect-timeout", type=cli.seconds, default=10.0, metavar="SECONDS",
                        help="give up on a server that does not answer (default 10)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each session's open and close on standard error")
    tls_group = parser.add_argument_group("TLS")
    tls_group.add_argument("--starttls", choices=("intercept", "pass"), default="intercept",
                           help="when the server accepts a client's STARTTLS (or with --tls): "
                                "complete TLS with both and record the decrypted session "
                                "(intercept, the default), or pass the encrypted bytes on "
                                "unrecorded (pass)")
    tls_group.add_argument("--tls", action="store_true",
                           help="both legs are TLS from the first byte (the old CTIS port 5013)")
    tls_group.add_argument("--cert", metavar="FILE",
                           help="the certificate shown to clients (default: one made on first "
                                "use and kept in $XDG_DATA_HOME/ctipipe/)")
    tls_group.add_argument("--key", metavar="FILE", help="the private key of --cert")
    tls_group.add_argument("--server-ca", metavar="FILE",
                           help="verify the server's certificate chain against these CAs (not the "
                                "name in it; default: not verified, as the XiVO client does not)")
    tls_group.add_argument("--keylog", metavar="FILE",
                           help="append the TLS secrets of both legs of every intercepted session "
                                "to FILE (NSS key log, mode 0600), for Wireshark to decrypt a "
                                "capture; default: $SSLKEYLOGFILE when set")


class Relay:
    def __init__(self, host: str, port: int, *, listen_addr: str | None, listen_port: int,
                 loop: bool, tap: Tap, verbose: bool, connect_timeout: float,
                 notices: "Notices", tls_options: intercept.Options | None = None,
                 max_handshakes: int = limits.MAX_HANDSHAKES) -> None:
        self.host = host
        self.port = port
        self.listen_addr = listen_addr
        self.listen_port = listen_port
        self.loop = loop
        self.tap = tap
        self.verbose = verbose
        # A filtered address never answers: after this long the client is told no.
        self.connect_timeout = connect_timeout
        self.notices = notices
        self.tls = tls_options  # None: bytes only, no STARTTLS watching
        self.sessions = 0
        # Live sessions, and those in their handshakes (bounded: limits.py).
        self.handshakes = limits.Sessions(notices.say, max_handshakes)
        self.loopback = loops.Loopback()  # a session whose server connection comes back
        if tls_options is not None:
            tls_options.sessions = self.handshakes  # (TLS handshakes are counted too)

    def log(self, message: str) -> None:
        if self.verbose:
            self.notices.say(message)

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Resolve the server, listen, write the `start` record, then relay one
        session (or, with loop, every session).

        Resource handling: the listeners are closed when serving ends (after the
        first session's accept without loop, so later clients are refused).
        Error handling: a server name that does not resolve, an address in use
        or not permitted is a CommandError; without loop, an unreachable server
        is too; with loop it is an `error` record and the relay goes on. Any
        other failure of a session ends that session only.
        """
        target = neterrors.join(self.host, self.port)
        try:
            infos = await trio.socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise cli.CommandError(f"cannot resolve {self.host}: {error.strerror}") from None
        try:
            listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_addr)
        except OSError as error:
            where = f"{self.listen_addr or '*'}:{self.listen_port}"
            hint = {errno.EADDRINUSE: " (another relay running? choose another --listen-port)",
                    errno.EACCES: " (ports below 1024 need privileges)",
                    errno.EADDRNOTAVAIL: " (not an address of this machine)"}.get(error.errno, "")
            raise cli.CommandError(f"cannot listen on {where}: {error.strerror}{hint}") from None
        bound = [neterrors.name(listener.socket.getsockname()) for listener in listeners]
        if loops.points_at_itself([info[4][:2] for info in infos],
                                  [listener.socket.getsockname()[:2] for listener in listeners]):
            for listener in listeners:
                await listener.aclose()
            raise cli.CommandError(f"{target} is this relay itself (it listens on "
                                   f"{' '.join(bound)}): give the CTI server's HOST and --port")
        self.tap.event(stream.event_record(time.time(), None, "start", stream=1,
                                           producer=f"{PROG} {__version__}", listen=bound,
                                           server=target))
        self.notices.say(f"listening on {' '.join(bound)} (clients are relayed to {target})")
        task_status.started(bound)
        for always, note in self.tls.notes if self.tls else ():
            if always or self.verbose:
                self.notices.say(note)
        async with trio.open_nursery() as sessions:
            if self.loop:
                def start(client: trio.SocketStream) -> None:
                    self.sessions += 1
                    self.handshakes.entered(self.sessions)
                    sessions.start_soon(self._session, client, self.sessions)
                await limits.serve(listeners, self.handshakes, start)
            else:
                client = await _accept_one(listeners)
                for listener in listeners:
                    await listener.aclose()
                await self._session(client)

    async def _session(self, client: trio.SocketStream, conn: int | None = None) -> None:
        """One session: accept -> connect -> `open` -> two pumps -> `close`.

        Whatever goes wrong ends this session only: its `close` (or, before it
        opened, an `error` record) and one line on standard error. `conn` is
        given when the session was counted as it was accepted (with --loop).
        """
        if conn is None:
            self.sessions += 1
            conn = self.sessions
            self.handshakes.entered(conn)
        peer = None
        try:
            _keepalive(client.socket)
            peer = neterrors.name(client.socket.getpeername())
            looped = await self.loopback.came_back(client.socket.getpeername(),
                                                   client.socket.getsockname())
            if looped is not None:  # session `looped`'s own server connection came back
                self._loop_found(conn, peer, f"session {looped}'s connection to ")
                await _abort(client)
                return
            if self.tls is not None and self.tls.implicit and self.tls.starttls == "intercept":
                if not await self._client_spoke(conn, client, peer):
                    return
            server = await self._connect(conn, client, peer)
            if server is not None:
                if self.tls is None or not self.tls.implicit or self.tls.starttls == "pass":
                    self.handshakes.past(conn)  # (with --tls, once TLS is done: intercept.py)
                await self._relay(conn, client, peer, server)
        except cli.CommandError:
            raise
        except Exception as error:  # noqa: BLE001 - one session's failure is its own
            await _abort(client)
            message = unexpected(error)
            # A client that left as it came (a port scan, a health check) is
            # the client's doing, as a reset in the session is: exit 0 with or
            # without --loop, however early the reset came.
            if not self.loop and not client_left(error):
                raise cli.CommandError(f"session {conn}: {message}") from None
            fields = {"error": message} if peer is None else {"error": message, "client": peer}
            self.tap.event(stream.event_record(time.time(), conn, "error", **fields))
            self.notices.say(f"session {conn}: {message}")
        finally:
            self.handshakes.left(conn)
            self.loopback.ended(conn)
            await _close(client)  # (whatever happened, as trio.serve_listeners did)

    async def _client_spoke(self, conn: int, client: trio.SocketStream, peer: str) -> bool:
        """--tls: the client speaks first (its ClientHello), so the server is connected
        to only once it has: a client that says nothing costs only its socket. It is
        given up on after SILENT_HANDSHAKE_TIMEOUT, or closed sooner when a new client
        needs its place among the sessions in their handshakes (limits.py). False
        (an `error` record written, the client closed) if it said nothing."""
        why = None
        with trio.CancelScope() as scope:
            def drop(count: int) -> None:
                nonlocal why
                why = (f"the client had sent nothing of its TLS handshake after "
                       f"{trio.current_time() - started:.1f} s: closed for a new client "
                       f"({count} sessions were in their handshakes)")
                scope.cancel()
            started = trio.current_time()
            self.handshakes.silent(conn, client.socket, drop)
            with trio.move_on_after(intercept.SILENT_HANDSHAKE_TIMEOUT):
                await trio.lowlevel.wait_readable(client.socket)
                self.handshakes.heard(conn)
                return True
            self.handshakes.heard(conn)
            why = (f"the client sent nothing of its TLS handshake within "
                   f"{intercept.SILENT_HANDSHAKE_TIMEOUT:g} s")
        self.tap.event(stream.event_record(time.time(), conn, "error", error=why, client=peer))
        if scope.cancelled_caught:  # closed for a new client: the relay's one line counts these
            self.log(f"session {conn}: {why}")
        elif not self.loop:  # as a handshake that failed: status 1
            raise cli.CommandError(f"session {conn}: {why}")
        else:
            self.notices.say(f"session {conn}: {why}")
        return False  # (the client is closed as the session ends)

    async def _connect(self, conn: int, client: trio.SocketStream,
                       peer: str) -> trio.SocketStream | None:
        """The server connection for this client, or None (client closed, `error` written)."""
        target = neterrors.join(self.host, self.port)
        self.loopback.connecting(conn)
        try:
            with trio.fail_after(self.connect_timeout):
                server = await trio.open_tcp_stream(self.host, self.port)
        except trio.Cancelled:
            await _close(client)  # shut down while still connecting
            raise
        except (OSError, trio.TooSlowError) as error:
            why = (f"no answer after {self.connect_timeout:g} s"
                   if isinstance(error, trio.TooSlowError) else neterrors.reason(error))
            message = f"cannot reach {target}: {why}"
            self.tap.event(stream.event_record(time.time(), conn, "error", error=message,
                                               client=peer))
            await _abort(client)
            if not self.loop:
                raise cli.CommandError(message) from None
            self.notices.say(f"session {conn}: {message}; client {peer} disconnected")
            return None
        self.loopback.connected(conn, server.socket.getsockname(), server.socket.getpeername())
        _keepalive(server.socket)
        return server

    def _loop_found(self, conn: int, peer: str, whose: str) -> None:
        """A session whose server connection came back to the relay: an `error` record."""
        message = (f"{whose}{neterrors.join(self.host, self.port)} came back to this relay "
                   f"(a loop: HOST and --port lead back here); ended")
        self.tap.event(stream.event_record(time.time(), conn, "error", error=message, client=peer))
        self.notices.say(f"session {conn}: {message}")

    async def _relay(self, conn: int, client: trio.SocketStream, peer: str,
                     server: trio.SocketStream) -> None:
        """The open session: `open`, the two pumps, `close` (always, whatever happened).

        A session that ended on a TLS failure says so in one line even without
        -v; without --loop the relay then ends with status 1.
        """
        target = neterrors.join(self.host, self.port)
        record = self.tap.session(conn)
        started = time.time()
        self.tap.opened(record, stream.event_record(started, conn, "open", client=peer,
                                                    server=target))
        self.log(f"session {conn} open: {peer} -> {target}")
        session = Session(conn, self.tap, record, log=self.log)
        try:
            # Plain sockets on the same connections for the pumps' fast path.
            session.client.sock = _plain(client)
            session.server.sock = _plain(server)
            if self.tls is not None:
                await intercept.run_session(session, self.tls, self.notices.say)
            else:
                async with trio.open_nursery() as phase:
                    session.scope = phase.cancel_scope
                    phase.start_soon(pumps.plain, session, session.client)
                    phase.start_soon(pumps.plain, session, session.server)
        except trio.Cancelled:
            session.by = "relay"
            raise
        except Exception as error:  # noqa: BLE001 - ends this session, with its close
            session.by = "error"
            session.error = unexpected(error)
            session.reset.update(("client", "server"))
            self.notices.say(f"session {conn}: {session.error}")
        finally:
            for direction, stream_ in ((session.client, client), (session.server, server)):
                if direction.sock is not None:
                    if session.reset and direction.side not in session.reset:
                        _linger_zero(direction.sock)  # pass a reset on as a reset
                    direction.sock.detach()  # the descriptor is the stream's: it closes it
                elif session.reset:
                    _linger_zero(stream_.socket)
                await _close(stream_)
            ended = time.time()
            fields = {
                "by": session.by or "relay",
                "bytes": {"client": session.client.bytes, "server": session.server.bytes},
                "reads": {"client": session.client.reads, "server": session.server.reads},
                "duration": round(ended - started, 6),
            }
            if session.error:
                fields["error"] = session.error
            self.tap.closed(record, ended, fields)
            said = session.tls_failed  # said below, without -v too
            self.log(f"session {conn} closed by {fields['by']} after {fields['duration']:.3f} s "
                     f"(client sent {fields['bytes']['client']} bytes, "
                     f"server {fields['bytes']['server']})"
                     + (f": {session.error}" if session.error and not said else ""))
        if session.tls_failed:
            message = f"session {conn}: {session.error}" + (
                f" ({session.hint})" if session.hint else "")
            if not self.loop:
                raise cli.CommandError(message)
            self.notices.say(message)


async def _accept_one(listeners: list) -> trio.SocketStream:
    """The first client to connect on any of the listeners."""
    accepted: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        async def accept(listener) -> None:
            stream_ = await listener.accept()
            if accepted:
                await stream_.aclose()
                return
            accepted.append(stream_)
            nursery.cancel_scope.cancel()
        for listener in listeners:
            nursery.start_soon(accept, listener)
    return accepted[0]


async def _close(stream_: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream_.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def _abort(stream_: trio.SocketStream) -> None:
    """Close with a reset (SO_LINGER 0), as the peer on the other side did."""
    _linger_zero(stream_.socket)
    await _close(stream_)


def _linger_zero(sock) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _plain(stream_: trio.SocketStream) -> socket.socket:
    """A standard socket object on the stream's own descriptor (no second
    descriptor per connection: a thousand sessions must not cost four thousand).
    It is detached, never closed, so the descriptor is closed once, by trio."""
    sock = socket.socket(fileno=stream_.socket.fileno())
    sock.setblocking(False)
    return sock


# TCP keepalive on both legs: a peer that vanished without a word (cable pulled,
# NAT entry expired) is noticed after about two minutes of silence plus five
# probes a few seconds apart, instead of holding its session forever. A CTI
# session idles for minutes between calls, so the first probe waits a minute;
# a live peer answers probes without any application traffic.
KEEPALIVE_IDLE = 60  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_PROBES = 6  # unanswered probes before the connection is dropped


def _keepalive(sock) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except (OSError, AttributeError):
        pass  # a platform without these options: the sessions work without


def _tls_options(args) -> intercept.Options:
    """The relay's TLS from its options; makes its certificate on first use."""
    client_context = None
    notes = []
    keylog = getattr(args, "keylog", None)
    if keylog is None and os.environ.get("SSLKEYLOGFILE"):
        keylog = os.environ["SSLKEYLOGFILE"]
        notes.append((True, f"warning: SSLKEYLOGFILE is set: the TLS secrets of every "
                            f"intercepted session are appended to {keylog}"))
    if keylog is not None:
        keylog = tls.open_keylog(keylog)
    if args.starttls == "intercept":
        if args.cert:
            cert, key = args.cert, args.key
        else:
            cert, key, made = tls.relay_certificate()
            if made:
                notes.append((True, f"made the relay's TLS certificate {cert}"))
        client_context = tls.client_leg_context(cert, key, keylog)
        if args.verbose:
            notes.append((False, f"TLS certificate {cert}, SHA-256 fingerprint "
                                 f"{tls.fingerprint(cert)}"))
    return intercept.Options(starttls=args.starttls, implicit=args.tls,
                             client_context=client_context,
                             server_context=tls.server_leg_context(args.server_ca, keylog),
                             verified=args.server_ca is not None, notes=tuple(notes),
                             cert=str(cert) if client_context is not None else None)


async def _run(args, notices: Notices) -> int:
    descriptors.raise_limit()  # each session holds two sockets
    tap = Tap(1, raw=args.raw, max_line=args.max_line, notify=notices.say,
              flush_timeout=FLUSH_TIMEOUT)
    relay = Relay(args.host, args.port, listen_addr=args.listen_addr, listen_port=args.listen_port,
                  loop=args.loop, tap=tap, verbose=args.verbose,
                  connect_timeout=args.connect_timeout, notices=notices,
                  tls_options=_tls_options(args))
    # The signals stay caught until the very end, so a second Ctrl-C (the
    # terminal's and a wrapper's) cannot interrupt the final flush. Ignored
    # first, so that leaving the receiver leaves them ignored: one that comes
    # once the relay has finished (a wrapper repeats its request) must not
    # kill a relay that completed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:
            root.start_soon(tap.run)
            await _serve_until_signal(relay, signals, tap)
    if tap.unwritten:
        raise cli.CommandError(f"{tap.unwritten} records were not written: "
                               f"standard output was not being read")
    return cli.Exit.OK


async def _serve_until_signal(relay: Relay, signals, tap: Tap) -> None:
    try:
        async with trio.open_nursery() as serving:
            serving.start_soon(_stop_on_signal, signals, serving.cancel_scope, relay)
            await relay.serve()
            serving.cancel_scope.cancel()
    finally:
        tap.close()  # the tap writes what it holds, for at most FLUSH_TIMEOUT
        await tap.finished.wait()


async def _stop_on_signal(signals, scope: trio.CancelScope, relay: Relay) -> None:
    async for signum in signals:
        relay.log(f"{signal.Signals(signum).name}: closing the sessions")
        scope.cancel()
        return


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, "A transparent proxy for XiVO CTI sessions that writes the tagged "
                        "stream of what passed on standard output.", EXAMPLE)
    add_relay_options(parser)
    args = parser.parse_args(argv)
    check_relay_options(parser, args)
    notices = Notices()

    def body() -> int:
        try:
            return trio.run(_run, args, notices)
        finally:
            notices.flush(FLUSH_TIMEOUT)  # before a final error line, in order
    return cli.guarded(PROG, body, debug=args.debug)
