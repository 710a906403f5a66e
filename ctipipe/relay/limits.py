"""The relay's sessions as memory sees them: how many are still in their
handshakes (bounded, so that clients which connect and say nothing cannot grow
the relay), and when to give freed memory back to the system after a burst.

The interface, for the relay:

    sessions = Sessions(notify=print_one_line)
    await serve(listeners, sessions, start)   # accepts while there is room; start(stream)
    sessions.entered(conn)      # accepted: live, and in its handshakes
    sessions.handshaking(conn)  # in a handshake again (STARTTLS), never waits
    sessions.past(conn)         # its handshakes are done (idempotent)
    sessions.left(conn)         # the session ended (memory may be given back)
"""
from __future__ import annotations

import errno
import gc
import os

import trio

# Sessions accepted and not yet past their handshakes (the connection to the
# server, and TLS on both legs) past which new clients wait in the kernel's
# accept queue. A client parked before its TLS handshake costs about 80 KB
# (two TLS states, two sockets): the bound keeps a crowd of them near 20 MB,
# while a burst of real clients, whose handshakes take milliseconds, goes through.
MAX_HANDSHAKES = 256

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
        self.peak = 0  # live sessions at most, since memory was last given back
        self._room = trio.Event()

    async def room(self) -> None:
        """Wait until fewer than `limit` sessions are in their handshakes."""
        if len(self.in_handshake) < self.limit:
            return
        self.waits += 1
        self.notify(f"{len(self.in_handshake)} sessions have not finished their handshakes: "
                    f"new clients wait to be accepted until one has "
                    f"({_times(self.waits)} since the start)")
        while len(self.in_handshake) >= self.limit:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def entered(self, conn: int) -> None:
        self.live += 1
        self.peak = max(self.peak, self.live)
        self.in_handshake.add(conn)

    def handshaking(self, conn: int) -> None:
        self.in_handshake.add(conn)

    def past(self, conn: int) -> None:
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
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"


async def serve(listeners: list, sessions: Sessions, start) -> None:
    """Accept clients on every listener while `sessions` has room; `start(stream)`
    (synchronous) takes each one. Runs until cancelled; closes the listeners."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept, listener, sessions, start)


async def _accept(listener, sessions: Sessions, start) -> None:
    async with listener:
        while True:
            await sessions.room()
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
