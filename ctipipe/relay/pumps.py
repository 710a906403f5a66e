"""The pumps: each forwards one direction of a session, and records what passed.

    await plain(session, direction)              # bytes, until EOF or a failure
    await watching(session, direction, watch)    # bytes, while STARTTLS may come
    await encrypted(session, src_leg, dst_leg)   # plaintext between two TLS legs

Every pump tries the non-blocking socket calls first and enters the event
loop only to wait: a message goes through with two system calls (a recv and
a send) and no trip through the scheduler, which is most of the relay's
added latency. An EOF on one side becomes the same end on the other (a
half-close, or a close_notify for a close_notify); a failure goes to
`session.fail`, which ends the whole session.
"""
from __future__ import annotations

import socket
import ssl
import time

import trio
from trio.lowlevel import wait_readable, wait_writable

from ctipipe.core import stream
from ctipipe.relay.session import Direction, Session
from ctipipe.relay.starttls import Violation, Watcher

READ_SIZE = stream.SOCKET_READ_SIZE

# A pump that keeps finding data waiting yields to the others after this
# many reads (at most 4 MiB): fair, yet a busy stream rarely pays a yield.
EAGER_READS = 64


def _ignore(*_) -> None:
    pass


async def plain(session: Session, direction: Direction, *, record: bool = True) -> None:
    """Forward one direction until EOF (then half-close the other side) or a failure.

    After a run of reads that found data waiting, the pump yields anyway so
    that one busy direction cannot starve the others. `record=False` counts
    the bytes without recording them (encrypted bytes passed on).
    """
    other = session.direction(direction.other)
    src, dst = direction.sock, other.sock
    tap = session.tap
    tap_data = tap.data if record else _ignore
    side_tap = direction.tap
    clock = time.time
    recv, send = src.recv, dst.send
    eager = 0
    while True:
        if tap.full:  # the tap's CPU work is behind: let it catch up
            eager = 0
            await tap.room()
        try:
            data = recv(READ_SIZE)
        except BlockingIOError:
            eager = 0
            await wait_readable(src)
            continue
        except OSError as error:
            session.fail(direction.side, error)
            return
        if not data:
            break
        direction.bytes += len(data)
        direction.reads += 1
        tap_data(side_tap, clock(), data)
        view = data
        while True:
            try:
                sent = send(view)
            except BlockingIOError:
                await wait_writable(dst)
                continue
            except OSError as error:
                session.fail(other.side, error)
                return
            if sent == len(view):
                break
            view = memoryview(view)[sent:]
        if len(data) < READ_SIZE:
            # The socket had no more than this: rather than a recv that
            # would only say "nothing yet", wait for the next data.
            eager = 0
            await wait_readable(src)
            continue
        eager += 1
        if eager >= EAGER_READS:
            eager = 0
            await trio.lowlevel.checkpoint()
    session.finished(direction.side)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Watch:
    """The watcher of one session and what its two watching pumps tell each other."""

    __slots__ = ("watcher", "reading", "stopped", "switched")

    def __init__(self) -> None:
        self.watcher = Watcher()
        # While a pump waits for data it may be stopped by the other at the switch.
        self.reading: dict[str, trio.CancelScope | None] = {"client": None, "server": None}
        self.stopped = {"client": trio.Event(), "server": trio.Event()}
        self.switched = False


async def _send_all(sock: socket.socket, data) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await wait_writable(sock)


async def watching(session: Session, direction: Direction, watch: Watch) -> bool:
    """Forward one direction of the login while the STARTTLS watcher looks at it.

    Returns True at the switch (what the client sends next is its handshake),
    having forwarded the server's answer only once the client's pump stopped
    reading; False once the session ended. When the watcher is done, the
    plain pump takes over, paying nothing for TLS from then on.
    """
    side = direction.side
    other = session.direction(direction.other)
    src, dst = direction.sock, other.sock
    feed = watch.watcher.feed
    clock = time.time
    try:
        while watch.watcher.watching:
            if not watch.switched:
                with trio.CancelScope() as reading:
                    watch.reading[side] = reading
                    await wait_readable(src)
                watch.reading[side] = None
            if watch.switched:
                return False  # the other pump switched: what comes now is TLS
            try:
                data = src.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as error:
                session.fail(side, error)
                return False
            if not data:
                break  # the plain pump sees the EOF again and passes it on
            try:
                forward, switch = feed(side, data)
            except Violation as error:
                session.end(side, str(error))
                return False
            if switch:
                watch.switched = True
                scope = watch.reading[other.side]
                if scope is not None:
                    scope.cancel()
                await watch.stopped[other.side].wait()
            direction.bytes += len(forward)
            direction.reads += 1
            session.tap.data(direction.tap, clock(), forward)
            try:
                await _send_all(dst, forward)
            except OSError as error:
                session.fail(other.side, error)
                return False
            if switch:
                return True
    finally:
        watch.stopped[side].set()
    if watch.switched:
        return False  # stopped while sending: what comes now is TLS, for the other phase
    await plain(session, direction)
    return False


# --- TLS ------------------------------------------------------------------------

class Leg:
    """One TLS connection of a session: an SSLObject over memory buffers and the
    plain non-blocking socket, so a record costs a recv, a decrypt, an encrypt and
    a send, with the event loop entered only to wait (as the plain pumps do)."""

    __slots__ = ("direction", "sock", "tls", "incoming", "outgoing", "sending",
                 "half_closed", "eof", "noting")

    def __init__(self, direction: Direction, context: ssl.SSLContext, server_side: bool,
                 *, note_first: bool = False) -> None:
        """note_first: keep the first bytes the peer sends in direction.first (so that
        a failure can tell plain text from TLS: implicit TLS, where a plain port is
        the likely mistake)."""
        self.direction = direction
        self.noting = note_first
        self.sock = direction.sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side)
        # Both pumps may have ciphertext for this socket (the reading one for
        # alerts and TLS 1.3 tickets): one at a time waits for room to write.
        self.sending = trio.Lock()
        self.half_closed = False  # the relay passed the other side's end on to it
        self.eof = False  # the socket said EOF (a bare FIN, or after a close_notify)

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

    def received(self, data: bytes) -> None:
        """Ciphertext from the socket (b"" at its end) for the TLS layer."""
        if data:
            if self.noting:
                self.direction.first += data[:16]
                self.noting = len(self.direction.first) < 16
            self.incoming.write(data)
        else:
            self.eof = True
            self.incoming.write_eof()

    async def handshake(self, heard=None) -> None:
        """The leg's handshake; raises what it failed on (trio.TooSlowError past the
        deadline). `heard()` is called once, when the peer's first bytes come."""
        sock = self.sock
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                while True:
                    try:
                        data = sock.recv(READ_SIZE)
                        break
                    except BlockingIOError:
                        await wait_readable(sock)
                self.received(data)
                if heard is not None:
                    heard()
                    heard = None
                continue
            await self.flush()
            return

    async def end_like(self, source: "Leg") -> None:
        """Pass source's end of its direction on: a close_notify for a close_notify,
        a bare FIN for a bare FIN (the XiVO server and client end their side with
        a FIN alone, and a close_notify is data: a peer that closes without reading
        it, as the real server does after a logout, would answer it with a reset)."""
        self.half_closed = True
        if not source.eof:  # the TLS layer ended before the socket: a close_notify
            try:
                self.tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # sent; the peer's own close_notify is not waited for
            except (ssl.SSLError, ValueError):
                pass
            try:
                await self.flush()
            except OSError:
                pass
        try:
            async with self.sending:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


async def encrypted(session: Session, src: Leg, dst: Leg) -> None:
    """Forward one direction's plaintext until its end (passed on as it came) or a failure.

    As the plain pump: the non-blocking calls are tried first and the event
    loop is entered only to wait; after a short read the socket is waited on
    rather than asked again.
    """
    tap = session.tap
    tap_data = tap.data
    clock = time.time
    direction = src.direction
    side_tap = direction.tap
    read, write = src.tls.read, dst.tls.write
    incoming, decrypted = src.incoming, src.tls.pending
    sock = src.sock
    recv = sock.recv
    side, other = direction.side, dst.direction.side
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
                    chunk = recv(READ_SIZE)
                except BlockingIOError:
                    wait = True
                    continue
            except OSError as error:
                session.fail(side, error)
                return
            wait = len(chunk) < READ_SIZE
            if chunk:  # (src.received, inlined: this is the hot path)
                incoming.write(chunk)
            else:
                src.eof = True
                incoming.write_eof()
            need = False
        try:
            data = read(READ_SIZE)
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
            session.fail(side, error)
            return
        if not data:
            break
        direction.bytes += len(data)
        direction.reads += 1
        tap_data(side_tap, clock(), data)
        try:
            write(data)
            await dst.flush()
        except OSError as error:  # ssl.SSLError is one: both mean the other leg failed
            session.fail(other, error)
            return
        need = not incoming.pending and not decrypted()
    session.finished(side)
    await dst.end_like(src)
