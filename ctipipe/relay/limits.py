"""The relay's sessions as memory sees them: how many are still in their
handshakes (bounded, so that clients which connect and say nothing cannot grow
the relay), and when to give freed memory back to the system after a burst.

The interface, for the relay:

    sessions = Sessions(notify=print_one_line)
    await serve(listeners, sessions, start)   # accepts while there is room; start(stream)
    sessions.entered(conn)      # accepted: live, and in its handshakes
    sessions.handshaking(conn)  # in a handshake again (STARTTLS), never waits
    sessions.silent(conn, sock, drop)  # its client has sent nothing yet (may be dropped)
    sessions.heard(conn)        # its client has begun its handshake (never dropped)
    sessions.past(conn)         # its handshakes are done (idempotent)
    sessions.left(conn)         # the session ended (memory may be given back)

When the bound is reached and a client waits to be accepted, the oldest session
whose client has sent nothing at all is dropped (`drop(count)`) and the new
client accepted: clients that connect and say nothing cannot keep real ones
out, and a client that has begun its handshake is never dropped for a newcomer.
"""
from __future__ import annotations

import errno
import gc
import os

import socket

import trio
from trio.lowlevel import wait_readable

# Sessions accepted and not yet past their handshakes (the connection to the
# server, and TLS on both legs) past which a new client takes the place of the
# oldest whose client has sent nothing, or, if none, waits in the kernel's
# accept queue. A session in its TLS handshakes costs about 80 KB (two TLS
# states, two sockets); a --tls client that has sent nothing only its socket
# (the server is connected to once it speaks). A burst of real clients, whose
# handshakes take milliseconds, goes through.
MAX_HANDSHAKES = 256

# The line saying that silent sessions were dropped for new clients is said at
# the first drop, then at most once in this many seconds (with the count): a
# crowd of silent clients must not flood standard error.
DROPS_SAID_EVERY = 10.0

# Errors of accept() that mean "the system is short of something now": wait
# a little and accept again (as trio.serve_listeners does).
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_PAUSE = 0.1

# Freed memory is given back to the system (glibc's malloc_trim) once the
# live sessions fall to half of their peak since the last time, if that peak
# was at least this many: a burst's memory is not kept, and a quiet relay
# with a few sessions coming and going never pays for it.
TRIM_AFTER_SESSIONS = 32


class Sessions:
    """The live sessions and those among them still in their handshakes."""

    def __init__(self, notify, limit: int = MAX_HANDSHAKES) -> None:
        self.notify = notify  # one-line messages for standard error
        self.limit = limit
        self.live = 0
        self.in_handshake: set[int] = set()
        self.waits = 0  # times new clients had to wait for the bound
        self.drops = 0  # silent sessions dropped for new clients
        self.peak = 0  # live sessions at most, since memory was last given back
        # Sessions whose client has sent nothing yet, oldest first: conn -> (socket, drop).
        self._silent: dict[int, tuple] = {}
        self._drops_said: float | None = None
        self._room = trio.Event()  # set when there may be room (or a silent session) now

    async def room(self, listener=None) -> None:
        """Return once a new client may be accepted on `listener` (a trio socket):
        fewer than `limit` sessions in their handshakes, or, a client waiting
        to be accepted, the oldest silent session dropped to make room for it."""
        if len(self.in_handshake) < self.limit:
            return
        waited = False
        while True:
            if listener is not None:
                await wait_readable(listener)  # a client waits to be accepted
            if len(self.in_handshake) < self.limit:
                return
            if self._drop_silent():
                return
            if not waited:
                waited = True
                self.waits += 1
                self.notify(f"{len(self.in_handshake)} sessions have not finished their "
                            f"handshakes: new clients wait to be accepted until one has "
                            f"({_times(self.waits)} since the start)")
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def _drop_silent(self) -> bool:
        """Drop the oldest session whose client has sent nothing; False if none has."""
        while self._silent:
            conn = next(iter(self._silent))
            sock, drop = self._silent.pop(conn)
            if _has_spoken(sock):
                continue  # its first bytes are there, not yet read: it is not silent
            count = len(self.in_handshake)
            self.in_handshake.discard(conn)  # its place is the new client's at once
            drop(count)
            self.drops += 1
            now = trio.current_time()
            if self._drops_said is None or now - self._drops_said >= DROPS_SAID_EVERY:
                self._drops_said = now
                self.notify(f"{count} sessions have not finished their handshakes: for each "
                            f"new client, the oldest whose client has sent nothing is closed "
                            f"({_times(self.drops)} since the start)")
            return True
        return False

    def entered(self, conn: int) -> None:
        self.live += 1
        self.peak = max(self.peak, self.live)
        self.in_handshake.add(conn)

    def handshaking(self, conn: int) -> None:
        self.in_handshake.add(conn)

    def silent(self, conn: int, sock, drop) -> None:
        """The session's client has sent nothing yet (`sock` is its socket): it may
        be dropped for a new client, by `drop(sessions in their handshakes)`."""
        if conn in self.in_handshake:
            self._silent[conn] = (sock, drop)
            self._room.set()

    def heard(self, conn: int) -> None:
        """The session's client has sent the first bytes of its handshake."""
        self._silent.pop(conn, None)

    def past(self, conn: int) -> None:
        self._silent.pop(conn, None)
        if conn in self.in_handshake:
            self.in_handshake.discard(conn)
            if len(self.in_handshake) < self.limit:
                self._room.set()

    def left(self, conn: int) -> None:
        self.past(conn)
        self.live -= 1
        if self.peak >= TRIM_AFTER_SESSIONS and self.live <= self.peak // 2:
            give_back_memory()
            self.peak = self.live


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count:,} times"


def _has_spoken(sock) -> bool:
    """Are bytes from this peer waiting to be read? (They are left there.)"""
    probe = socket.socket(fileno=sock.fileno())  # (a trio socket's recv would be awaited)
    try:
        return bool(probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing yet; or reset, gone: nothing lost in dropping it
        return False
    finally:
        probe.detach()  # the descriptor stays the session's


async def serve(listeners: list, sessions: Sessions, start) -> None:
    """Accept clients on every listener while `sessions` has room; `start(stream)`
    (synchronous) takes each one. Runs until cancelled; closes the listeners."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept, listener, sessions, start)


async def _accept(listener, sessions: Sessions, start) -> None:
    async with listener:
        while True:
            await sessions.room(listener.socket)
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                sessions.notify(f"cannot accept a client now: {os.strerror(error.errno)}; "
                                f"trying again")
                await trio.sleep(ACCEPT_PAUSE)
                continue
            start(stream)


_trim = None


def give_back_memory() -> None:
    """Return the allocator's free memory to the system (glibc; elsewhere nothing).

    Python gives its own empty arenas back, but memory freed by the C
    libraries (OpenSSL's state of a thousand finished handshakes) stays in
    glibc's heap, fragmented, until malloc_trim releases its free pages.
    """
    global _trim
    if _trim is None:
        _trim = _find_malloc_trim()
    gc.collect()  # the finished sessions' cycles (tasks, tracebacks) first
    _trim()


def _find_malloc_trim():
    try:
        import ctypes
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
        trim.argtypes = [ctypes.c_size_t]
        return lambda: trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to call
        return lambda: None
