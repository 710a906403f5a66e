"""The relay's tap: turns what a session's sockets read into tagged records.

Forwarding only hands each read to `Tap.data` (an append to a bounded queue);
a single writer task splits lines, validates JSON and formats records, and one
output thread writes them, so the proxied session never waits on standard
output. If the writer falls behind for lack of CPU, the pumps let it catch up;
if the output itself is slow (a write blocked on the reader), the sessions go
on and, once the queue is full, reads are not recorded: their lines are
counted and reported in a `gap` record before the session's next record.
"""
from __future__ import annotations

import collections
import os
import select
import stat
import threading
import time

import orjson
import trio

from . import cli, stream
from .splitter import Splitter

# How much unwritten traffic the tap holds before it starts dropping records.
# A busy CTI session moves about 1 MB/s (4,000 status messages a second), so
# 4 MiB lets a display or pipe pause for about four seconds without a loss,
# while the relay stays under 40 MB even when nobody reads its output (the
# interpreter with trio loaded is already about 26 MB of that).
TAP_BUFFER = 4 << 20

# The writer formats at most this much traffic between two writes: large
# enough that a heavy stream goes out in large writes, small enough that
# formatting one batch never holds the event loop for long (~1 ms).
WRITE_BATCH = 1 << 18

# A write to standard output that has not returned after this long means the
# reader is slow (a stopped or slow display): from then on the sessions go on
# and records beyond the queue are dropped. Shorter waits are the output
# thread merely sharing the interpreter with busy sessions.
SLOW_OUTPUT = 0.02
# ... plus the time a large write takes at this rate (a 16 MiB piece of an
# oversize line is a long write even to a fast reader).
SLOW_OUTPUT_RATE = 100e6  # bytes per second

# Traffic waiting for the writer past which the pumps let it catch up.
TAP_CATCH_UP = 1 << 18

# Formatted records handed to the output thread and not yet written: past
# this the writer stops formatting and traffic waits (bounded) in the queue.
OUTPUT_BACKLOG = 1 << 19

_DATA, _DROP, _EVENT, _CLOSE = range(4)


class SessionTap:
    """A session's two directions, and the records lost from it not yet reported."""

    __slots__ = ("conn", "lost", "client", "server")

    def __init__(self, conn: int, max_line: int) -> None:
        self.conn = conn
        self.lost = 0
        self.client = _Side(self, "client", max_line)
        self.server = _Side(self, "server", max_line)


class _Side(Splitter):
    """A direction's splitter, with the session it belongs to and its drop marker."""

    __slots__ = ("session", "marker")

    def __init__(self, session: SessionTap, side: str, max_line: int) -> None:
        super().__init__(session.conn, side, max_line)
        self.session = session
        self.marker: list | None = None  # the drop marker still waiting in the queue


class Tap:
    """The bounded queue between the sessions and standard output, and its writer."""

    def __init__(self, fd: int, *, raw: bool, max_line: int, notify,
                 buffer_limit: int = TAP_BUFFER) -> None:
        self.fd = fd
        self.raw = raw
        self.max_line = max_line
        self.notify = notify  # one-line messages for standard error
        self.buffer_limit = buffer_limit
        self.queue: collections.deque = collections.deque()
        self.queued = 0  # bytes of traffic waiting in the queue
        self.closed_output = False
        self.closing = False
        self.finished = trio.Event()
        self._wakeup = trio.Event()
        # While the writer is busy formatting (not waiting on the output) and
        # more than TAP_CATCH_UP bytes wait, the pumps wait for it: records are
        # dropped when the *output* is slow, never because forwarding took the CPU.
        self.output_blocked = False
        self._caught_up = trio.Event()
        self._caught_up.set()

    def session(self, conn: int) -> SessionTap:
        return SessionTap(conn, self.max_line)

    # --- called by the sessions (must never block) -------------------------

    def data(self, side: "_Side", ts: float, data: bytes) -> None:
        if self.closed_output:
            return
        # Only a slow output drops records; if the writer is merely busy, the
        # pumps wait for it (each after at most one read), so this cannot grow
        # past the limit by more than one read per session.
        if self.queued + len(data) > self.buffer_limit and self.output_blocked:
            marker = side.marker
            if marker is None:
                marker = side.marker = [0, False]
                self.queue.append((_DROP, side, marker, None))
            marker[0] += data.count(b"\n")
            marker[1] = data[-1] != 10
            return
        side.marker = None
        self.queued += len(data)
        self.queue.append((_DATA, side, ts, data))
        self._wakeup.set()

    def event(self, record: bytes) -> None:
        """An event that belongs to no open session (error events)."""
        if not self.closed_output:
            self.queue.append((_EVENT, None, record, None))
            self._wakeup.set()

    def opened(self, session: SessionTap, record: bytes) -> None:
        if not self.closed_output:
            self.queue.append((_EVENT, session, record, None))
            self._wakeup.set()

    def closed(self, session: SessionTap, ts: float, fields: dict) -> None:
        if not self.closed_output:
            self.queue.append((_CLOSE, session, ts, fields))
            self._wakeup.set()

    def behind(self) -> bool:
        """Should the pumps let the writer catch up before reading more?"""
        return self.queued > TAP_CATCH_UP and not self.output_blocked

    async def caught_up(self) -> None:
        if self._caught_up.is_set():
            self._caught_up = trio.Event()
        await self._caught_up.wait()

    def _release(self) -> None:
        self._caught_up.set()

    def close(self) -> None:
        """No more input: the writer drains the queue, then `finished` is set."""
        self.closing = True
        self._wakeup.set()

    # --- the writer ---------------------------------------------------------

    async def run(self) -> None:
        """The writer task: format what the sessions queued, hand it to the output thread."""
        output = _Output(self.fd, trio.lowlevel.current_trio_token())
        try:
            while True:
                if output.failed is not None:
                    self._output_failed(output.failed)
                if not self.queue:
                    self._release()
                    if self.closing:
                        break
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                if output.pending > OUTPUT_BACKLOG:
                    if not await self._output_is_slow(output):
                        continue
                    # The reader is slow: let the sessions go on, the queue absorbs it.
                    self.output_blocked = True
                    self._release()
                    await output.drained()
                    self.output_blocked = False
                    continue
                batch = self._format_batch()
                if batch and not self.closed_output:
                    output.write(batch)
                if self.queued <= TAP_CATCH_UP:
                    self._release()
            await output.drained(everything=True)
            if output.failed is not None:
                self._output_failed(output.failed)
        finally:
            self.output_blocked = True  # nothing to wait for any more
            self._release()
            output.stop()
            self.finished.set()

    async def _output_is_slow(self, output: "_Output") -> bool:
        """Wait a moment for the backlog to go; True if a write is blocked on the reader.

        A backlog alone does not mean a slow reader: the output thread may just
        be waiting for the interpreter lock while the sessions are busy. Only a
        write that has not returned for SLOW_OUTPUT seconds does.
        """
        with trio.move_on_after(SLOW_OUTPUT):
            await output.drained()
        return output.pending > OUTPUT_BACKLOG and output.stuck(SLOW_OUTPUT)

    def _output_failed(self, error: OSError) -> None:
        if self.closed_output:
            return
        self.closed_output = True
        self.queue.clear()
        self.queued = 0
        why = "closed" if isinstance(error, BrokenPipeError) else error.strerror
        self.notify(f"standard output {why}: no more records are written; "
                    f"sessions go on being relayed")

    def _format_batch(self) -> bytes:
        out: list[bytes] = []
        taken = 0
        queue = self.queue
        chunk = self.raw
        while queue and taken < WRITE_BATCH:
            kind, owner, a, b = queue.popleft()
            if kind == _DATA:
                taken += len(b)
                session = owner.session
                records = owner.chunk(a, b) if chunk else owner.lines(a, b)
                session.lost += owner.lost
                owner.lost = 0
                if session.lost and records:
                    self._gap(session, a, out)
                out += records
            elif kind == _DROP:
                if owner.marker is a:
                    owner.marker = None
                owner.dropped(a[0], a[1])
                owner.session.lost += owner.lost
                owner.lost = 0
            elif kind == _EVENT:
                out.append(a)
            else:  # _CLOSE: leftovers, any gap, then the close event itself
                for side in (owner.client, owner.server):
                    out += side.end(a)
                    owner.lost += side.lost
                    side.lost = 0
                if owner.lost:
                    self._gap(owner, a, out)
                out.append(stream.event_record(a, owner.conn, "close", **b))
        self.queued -= taken
        return b"".join(out)

    def _gap(self, session: SessionTap, ts: float, out: list[bytes]) -> None:
        out.append(stream.event_record(ts, session.conn, "gap", lost=session.lost))
        self.notify(f"output too slow: {session.lost} records of session {session.conn} "
                    f"were not written (see its gap record); the session itself was not affected")
        session.lost = 0



class _Output:
    """A thread that owns the blocking writes to standard output.

    Formatted batches are handed over without waiting; the thread writes them
    in order. stdout stays in blocking mode, as a terminal shared with the
    shell expects, and the event loop, which forwards the sessions, never
    waits on a slow reader. One long-lived thread costs far less per batch
    than a trip through trio.to_thread, which matters for interactive latency.
    """

    def __init__(self, fd: int, token: trio.lowlevel.TrioToken) -> None:
        self.fd = fd
        self.token = token
        self.pending = 0  # bytes handed over and not yet written
        self.failed: OSError | None = None
        self.write_started: float | None = None  # when the write in progress began
        self.write_size = 0
        self._batches: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._waiter: trio.Event | None = None
        # Writing without the thread is safe for pipes, files and /dev/null;
        # never for a terminal, where a write can block (Ctrl-S) despite poll.
        self._direct = _never_blocks_when_ready(fd)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)
        self._thread = threading.Thread(target=self._run, name="ctirelay-output", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Write `data` now if that cannot block, else hand it to the thread.

        Interactive traffic makes small batches; when nothing is queued for the
        thread and the kernel says the output has room (a pipe with room takes
        a write of up to PIPE_BUF bytes whole, at once), writing here saves
        waking the thread, which is most of what the tap adds to a round trip.
        """
        if (self._direct and len(data) <= select.PIPE_BUF and not self.pending
                and self.failed is None):
            try:
                if self._direct == "always" or self._poll.poll(0):
                    written = os.write(self.fd, data)
                    if written == len(data):
                        return
                    data = data[written:]  # (a pipe takes it whole; a file, nearly always)
            except OSError as error:
                self.failed = error
                return
        self.submit(data)

    def submit(self, data: bytes) -> None:
        with self._ready:
            self._batches.append(data)
            self.pending += len(data)
            self._ready.notify()

    async def drained(self, everything: bool = False) -> None:
        """Wait until the backlog is under OUTPUT_BACKLOG (or empty, or the output failed)."""
        limit = 0 if everything else OUTPUT_BACKLOG
        while self.pending > limit and self.failed is None:
            self._waiter = trio.Event()
            if self.pending > limit and self.failed is None:
                await self._waiter.wait()
            self._waiter = None

    def stuck(self, seconds: float) -> bool:
        """Has a write been waiting on the reader for longer than this (plus the
        time its size takes at SLOW_OUTPUT_RATE)?"""
        started = self.write_started
        return (started is not None
                and time.monotonic() - started > seconds + self.write_size / SLOW_OUTPUT_RATE)

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self._stopping:
                    self._ready.wait()
                if not self._batches:
                    return
                data = b"".join(self._batches)
                self._batches.clear()
            try:
                if self.failed is None:
                    self.write_size = len(data)
                    self.write_started = time.monotonic()
                    cli.write_all(self.fd, data)
            except OSError as error:
                self.failed = error
            finally:
                self.write_started = None
            with self._ready:
                self.pending -= len(data)
            waiter = self._waiter
            if waiter is not None:
                try:
                    self.token.run_sync_soon(waiter.set)
                except trio.RunFinishedError:
                    return


def _never_blocks_when_ready(fd: int) -> str | None:
    """ "always" for files and /dev/null (no reader to wait for), "when ready" for
    pipes (poll first), None for what can block despite poll (a terminal)."""
    try:
        mode = os.fstat(fd)
    except OSError:
        return None
    if stat.S_ISFIFO(mode.st_mode):
        return "when ready"
    if stat.S_ISREG(mode.st_mode):
        return "always"
    try:
        if stat.S_ISCHR(mode.st_mode) and mode.st_rdev == os.stat(os.devnull).st_rdev:
            return "always"
    except OSError:
        pass
    return None
