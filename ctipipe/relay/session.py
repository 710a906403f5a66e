"""One relayed session: its two directions, how it ended, and what errors mean.

    session = Session(conn, tap, tap.session(conn), log=relay.log)
    session.client, session.server      # Directions: what each side sends
    session.scope = nursery.cancel_scope  # the pumps of the current phase
    session.fail("server", error)       # any socket or TLS error of that leg
    session.finished("client")          # an EOF: who ended first, if nobody did
    session.by, session.error, session.reset, session.tls_failed

`fail` is the one place a socket or TLS error gets its meaning: the first
failure is the one the `close` record reports, a reset is passed on as a
reset, and every failure ends the whole session at once.
"""
from __future__ import annotations

import errno
import socket
import ssl

import trio

from ctipipe.core import cli, neterrors
from ctipipe.relay import certs

# A client that accepted the upgrade but does not complete its handshake is
# given up on after this long (the server's own deadline is shorter still).
HANDSHAKE_TIMEOUT = 30.0

# Said after a handshake failure whose peer spoke JSON where TLS was expected.
PLAIN_HINTS = {"server": "this port starts in plain text: drop --tls",
               "client": "the client speaks plain text: drop --tls"}


class Direction:
    """What one side sends: its socket, the tap side that records it, its counts.

    `state` is None for plain bytes, "handshake" while that side's TLS
    handshake runs, "tls" once it is done (errors mean different things then).
    `first` holds the first bytes that side sent while its TLS was expected.
    """

    __slots__ = ("side", "other", "sock", "tap", "bytes", "reads", "state", "first")

    def __init__(self, side: str, sock: socket.socket | None, tap_side) -> None:
        self.side = side
        self.other = "server" if side == "client" else "client"
        self.sock = sock
        self.tap = tap_side
        self.bytes = 0
        self.reads = 0
        self.state: str | None = None
        self.first = b""


class Session:
    """A session's directions, its tap, its cancel scope and how it ended."""

    __slots__ = ("conn", "tap", "record", "log", "scope", "client", "server",
                 "by", "error", "reset", "tls_failed", "hint")

    def __init__(self, conn: int, tap, record, *, log=lambda message: None) -> None:
        self.conn = conn
        self.tap = tap  # the Tap
        self.record = record  # the tap's session (record.client, record.server)
        self.log = log  # a line on standard error with -v
        self.scope: trio.CancelScope | None = None  # the running phase's pumps
        self.client = Direction("client", None, record.client if record else None)
        self.server = Direction("server", None, record.server if record else None)
        self.by: str | None = None  # who ended the session first
        self.error: str | None = None  # the first failure, in one line
        self.reset: set[str] = set()  # sides that reset; the other is aborted too
        self.tls_failed = False  # the failure was a TLS one (said without -v)
        self.hint: str | None = None  # what to do about it, if we can tell

    def direction(self, side: str) -> Direction:
        return self.client if side == "client" else self.server

    def finished(self, side: str) -> None:
        """That side ended its direction (an EOF): it ended the session, if nobody had."""
        if self.by is None:
            self.by = side

    def end(self, side: str, message: str) -> None:
        """End the session at once on a failure that is not an exception."""
        if self.error is None:
            self.by = side
            self.error = message
        self.cancel()

    def fail(self, side: str, error: BaseException) -> None:
        """A socket or TLS error on `side`'s connection: say what it means, end the session."""
        message, reset, tls = self._meaning(side, error)
        if self.error is None:
            self.by = side
            self.error = message
            self.tls_failed = tls
            if tls:
                first = self.direction(side).first.lstrip()
                if first.startswith(b"{"):
                    self.hint = PLAIN_HINTS[side]
        if reset:
            self.reset.add(side)
        self.cancel()

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    def _meaning(self, side: str, error: BaseException) -> tuple[str, bool, bool]:
        """(one line, reset?, a TLS failure?)"""
        state = self.direction(side).state
        if state == "handshake":
            return _handshake_failure(side, error), False, True
        if isinstance(error, ssl.SSLError) and not isinstance(error, ssl.SSLSyscallError):
            return f"the {side}'s TLS connection failed: {certs.handshake_error(error)}", False, True
        message, reset = neterrors.lost(side, error)
        return message, reset, False


def _handshake_failure(side: str, cause: BaseException) -> str:
    """One line naming the leg and why its handshake failed."""
    if isinstance(cause, trio.TooSlowError):
        return f"the {side} " + (str(cause) or f"did not complete its TLS handshake within "
                                               f"{HANDSHAKE_TIMEOUT:g} s")
    if side == "server" and isinstance(cause, ssl.SSLCertVerificationError):
        return (f"the server's certificate did not verify against --server-ca: "
                f"{cause.verify_message}")
    if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)) or (
            isinstance(cause, ssl.SSLError) and "EOF" in str(cause)):
        return f"the {side} closed the connection during the TLS handshake"
    return f"the {side}'s TLS handshake failed: {certs.handshake_error(cause)}"


def client_left(error: BaseException) -> bool:
    """The client went away as it came (a port scan, a health check): its doing, not ours."""
    leaf = cli.leaves(error)[0]
    return isinstance(leaf, OSError) and leaf.errno in (errno.ENOTCONN, *neterrors.RESET_ERRNOS)


def unexpected(error: BaseException) -> str:
    """A failure of a session outside its pumps (accepting it, setting it up), in one line."""
    leaf = cli.leaves(error)[0]
    if client_left(error):
        return "the client went away before the session began" if leaf.errno == errno.ENOTCONN \
            else f"connection reset ({leaf.strerror})"
    if isinstance(leaf, OSError) and leaf.strerror:
        return f"session failed: {leaf.strerror}"
    return f"session failed: {type(leaf).__name__}: {leaf}"
