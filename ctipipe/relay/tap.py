"""The tap: a producer's records on their way to standard output.

A producer (the relay, a replay) hands the tap what its sessions read; the
tap never makes forwarding wait on the output:

- One bounded queue holds everything not yet formatted (reads and events,
  counted alike). It only ever waits for the tap's own CPU work, so when it is
  full the sessions wait for it (`await tap.room()`): a saturated relay slows
  down rather than lose records.
- One formatter task turns the queue into records (splitter.py) and hands
  them to one writer. When formatted records already wait on the output
  (OUTPUT_LIMIT, the reader is slower than the traffic), new records are
  dropped and counted, never waited for: that is the only place records are
  dropped. A session's count goes out as a `gap` record before its next
  record, at the latest before its `close`.
- One writer thread writes whole records to the output descriptor.

The interface, for every producer:

    tap = Tap(fd, raw=False, max_line=16 << 20, notify=print_one_line)
    nursery.start_soon(tap.run)            # formatter and writer; ends after close()
    tap.event(record)                      # an event of no session (start, error)
    session = tap.session(conn)
    tap.opened(session, record)            # the session's `open` event
    tap.data(session.client, ts, data)     # a read (session.server for the other side)
    if tap.full: await tap.room()          # before reading more (pumps)
    tap.closed(session, ts, fields)        # the `close` event's fields
    tap.close(); await tap.finished.wait() # at the end: drain, at most flush_timeout
    tap.unwritten                          # records left unwritten at the end (exit 1)

`record` arguments are encoded event lines (stream.event_record). None of
these calls blocks; all are made from the trio thread.
"""
from __future__ import annotations

import collections
import fcntl
import os
import stat
import termios
import threading
import time

import trio

from ctipipe.core import stream
from ctipipe.relay.splitter import Splitter

# Traffic and events waiting for the formatter (unformatted) past which the
# sessions wait for it: only CPU work stands between them and the output.
QUEUE_LIMIT = 1 << 20

# Formatted records waiting for the reader past which new records are dropped.
# A busy CTI session moves about 1 MB/s, so a display or pipe may pause about
# four seconds without a loss, while the relay stays under about 40 MB even
# when nobody reads its output.
OUTPUT_LIMIT = 4 << 20

# Events (open, close, error, gap) may use this much more before they too are
# dropped: a reader that pauses loses data records first, and finds every
# session's close when it resumes, unless thousands of sessions came and went.
EVENT_ROOM = 1 << 20

# The formatter takes at most this much traffic between two yields to the
# sessions: large writes under load, never a long hold of the event loop.
WRITE_BATCH = 1 << 18

_DATA, _EVENT, _CLOSE = "data", "event", "close"
_CLOSE_COST = 256  # what a queued close counts against QUEUE_LIMIT


class Session:
    """A session's two directions and the records lost from it not yet reported."""

    __slots__ = ("conn", "lost", "client", "server")

    def __init__(self, conn: int, max_line: int) -> None:
        self.conn = conn
        self.lost = 0
        self.client = _Side(self, "client", max_line)
        self.server = _Side(self, "server", max_line)


class _Side(Splitter):
    __slots__ = ("session",)

    def __init__(self, session: Session, side: str, max_line: int) -> None:
        super().__init__(session.conn, side, max_line)
        self.session = session


class Tap:
    def __init__(self, fd: int, *, raw: bool, max_line: int, notify,
                 flush_timeout: float = 5.0) -> None:
        self.fd = fd
        self.raw = raw
        self.max_line = max_line
        self.notify = notify  # one-line messages for standard error
        self.flush_timeout = flush_timeout
        # Entries: (kind, session or None, side or None, ts, bytes or close fields).
        self.queue: collections.deque = collections.deque()
        self.queued = 0  # bytes counted against QUEUE_LIMIT
        self.full = False
        self.unwritten = 0  # records not written at the end (or lost without a gap)
        self.finished = trio.Event()
        self._closing = False
        self._wakeup = trio.Event()
        self._room = trio.Event()
        self._output: _Writer | None = None
        self._failure_reported = False

    @property
    def held(self) -> int:
        """Bytes the tap holds: queued (unformatted) and formatted, not yet written."""
        return self.queued + (self._output.pending if self._output else 0)

    def session(self, conn: int) -> Session:
        return Session(conn, self.max_line)

    # --- called by the producer (never blocks) ---------------------------------

    def data(self, side: _Side, ts: float, data: bytes) -> None:
        self._put(_DATA, side.session, side, ts, data, len(data))

    def event(self, record: bytes) -> None:
        self._put(_EVENT, None, None, 0.0, record, len(record))

    def opened(self, session: Session, record: bytes) -> None:
        self._put(_EVENT, session, None, 0.0, record, len(record))

    def closed(self, session: Session, ts: float, fields: dict) -> None:
        self._put(_CLOSE, session, None, ts, fields, _CLOSE_COST)

    def _put(self, kind, session, side, ts, payload, cost: int) -> None:
        if self._output is not None and self._output.failed:
            return  # standard output is gone: the sessions go on unrecorded
        self.queue.append((kind, session, side, ts, payload, cost))
        self.queued += cost
        if self.queued > QUEUE_LIMIT:
            self.full = True
        self._wakeup.set()

    async def room(self) -> None:
        """Wait until the formatter has caught up (only its CPU work is waited for)."""
        while self.full:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def close(self) -> None:
        """No more input: the tap writes what it holds, then `finished` is set."""
        self._closing = True
        self._wakeup.set()

    # --- the formatter ---------------------------------------------------------

    async def run(self) -> None:
        self._output = output = _Writer(self.fd, trio.lowlevel.current_trio_token())
        try:
            while self.queue or not self._closing:
                if not self.queue:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                if output.pending > OUTPUT_LIMIT and not output.waiting and not output.failed:
                    # A burst (a long line's pieces) being written to a reader
                    # that keeps up, or a file: output work, not a slow reader.
                    await output.progress()
                    continue
                self._format_batch(output)
                if self.queued <= QUEUE_LIMIT and self.full:
                    self.full = False
                    self._room.set()
                await trio.lowlevel.checkpoint()
            with trio.move_on_after(self.flush_timeout):
                await output.drained()
            self.unwritten += output.stop()
            if output.failed and not self._failure_reported:
                self._report_failure(output.failed)
        finally:
            self.full = False  # nothing to wait for any more
            self._room.set()
            output.stop()
            self.finished.set()

    def _format_batch(self, output: "_Writer") -> None:
        out: list[bytes] = []
        taken = 0
        raw = self.raw
        queue = self.queue
        if output.failed and not self._failure_reported:
            self._failure_reported = True
            self._report_failure(output.failed)
        backlog = output.pending  # formatted, waiting for the reader
        while queue and taken < WRITE_BATCH:
            kind, session, side, ts, payload, cost = queue.popleft()
            taken += cost
            if kind is _DATA:
                new = side.chunk(ts, payload) if raw else side.lines(ts, payload)
            elif kind is _EVENT:
                new = [payload]
            else:
                new = session.client.end(ts) + session.server.end(ts)
                new.append(stream.event_record(ts, session.conn, "close", **payload))
            # The one drop decision: records that would wait behind a backlog of
            # formatted records while the writer waits on the reader (the reader
            # is slower than the traffic).
            if (backlog > (OUTPUT_LIMIT if kind is _DATA else OUTPUT_LIMIT + EVENT_ROOM)
                    and output.waiting) or output.failed:
                lost = sum(1 for part in new if part[-1:] == b"\n")  # (records come in parts)
                if session is None:
                    self.unwritten += lost
                else:
                    session.lost += lost
                    if kind is _CLOSE:  # its gap record goes with it: say so here
                        self.unwritten += session.lost
                        self.notify(f"output too slow: the last {session.lost} records of "
                                    f"session {session.conn}, its close included, were not written")
                continue
            if session is not None and session.lost:
                gap = stream.event_record(ts or time.time(), session.conn, "gap", lost=session.lost)
                out.append(gap)
                backlog += len(gap)
                self.notify(f"output too slow: {session.lost} records of session "
                            f"{session.conn} were not written (see its gap record); "
                            f"the session itself was not affected")
                session.lost = 0
            out += new
            backlog += sum(map(len, new))
        self.queued -= taken
        if out and not output.failed:
            output.write(b"".join(out))

    def _report_failure(self, error: OSError) -> None:
        why = "closed" if isinstance(error, BrokenPipeError) else error.strerror
        self.notify(f"standard output {why}: nothing more is written; the sessions go on "
                    f"being relayed until they end")


class _Writer:
    """The one writer: a thread that owns the writes to the output descriptor.

    The event loop only hands batches over, so it never waits on a slow reader;
    stdout stays in blocking mode, as a terminal shared with the shell expects.
    To a pipe, the thread writes only what the pipe has room for, cut at a
    record's end, so that giving up on a reader that does not read (`stop`)
    leaves whole records only (a record larger than the pipe can hold is the
    exception: it is written in pieces).
    """

    def __init__(self, fd: int, token: trio.lowlevel.TrioToken) -> None:
        self.fd = fd
        self.token = token
        self.pending = 0  # bytes handed over and not yet written
        self.failed: OSError | None = None
        # The writer is waiting for the reader: the pipe is full, or (a terminal,
        # a socket) a write is in progress. A file never makes it wait.
        self.waiting = False
        self._batches: collections.deque = collections.deque()  # [bytes, offset written]
        self._ready = threading.Condition()
        self._stopped = False
        self._writing = False
        self._waiter: trio.Event | None = None
        self._pipe = _pipe_capacity(fd)
        self._file = _never_waits(fd)
        self._thread = threading.Thread(target=self._run, name="tap-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        # When nothing waits and the write cannot block (a file, or a pipe with
        # room for all of it), write here: waking the thread for each small
        # batch of interactive traffic would be most of the relay's latency.
        if not self.pending and self.failed is None and (
                self._file or (self._pipe and self._room() >= len(data))):
            try:
                written = os.write(self.fd, data)
            except OSError as error:
                self.failed = error
                return
            if written == len(data):
                return
            data = data[written:]
        with self._ready:
            self._batches.append([data, 0])
            self.pending += len(data)
            self._ready.notify()

    async def drained(self) -> None:
        """Wait until everything handed over is written (or the output failed)."""
        while self.pending and self.failed is None:
            await self.progress(even_when_waiting=True)

    async def progress(self, even_when_waiting: bool = False) -> None:
        """Wait for the next write to end, or for the writer to wait on the reader."""
        self._waiter = waiter = trio.Event()
        if self.pending and self.failed is None and (even_when_waiting or not self.waiting):
            await waiter.wait()
        self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            try:
                self.token.run_sync_soon(waiter.set)
            except trio.RunFinishedError:
                pass

    def stop(self) -> int:
        """Write nothing more; the number of records handed over and not written."""
        with self._ready:
            if self._stopped:
                return 0
            self._stopped = True
            self._ready.notify_all()
            # A write in progress to a pipe never blocks (it was sized to fit):
            # let it end, so that what it wrote is not counted as unwritten.
            self._ready.wait_for(lambda: not self._writing, timeout=1.0)
            left = sum(batch[0].count(b"\n", batch[1]) for batch in self._batches)
            self._batches.clear()
            return left

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self._stopped:
                    self._ready.wait()
                if self._stopped:
                    return
                batch = self._batches[0]
                self._writing = True
            data, offset = batch[0], batch[1]
            try:
                written = self._write_some(data, offset)
            except OSError as error:
                self.failed = error
                written = len(data) - offset
            self.waiting = False
            with self._ready:
                self._writing = False
                batch[1] += written
                self.pending -= written
                if batch[1] == len(data) and self._batches and self._batches[0] is batch:
                    self._batches.popleft()
                self._ready.notify_all()
                if self._stopped:
                    return
            self._wake()

    def _room(self) -> int:
        """What a write to the pipe can hold without blocking.

        A pipe holds pages: a write's tail that does not fit in the last page
        starts a new one, so the bytes queued may fill up to twice their size in
        pages. Counting them twice, a write that fits never blocks.
        """
        return self._pipe - 2 * _queued_in_pipe(self.fd) - 3 * 4096

    def _write_some(self, data: bytes, offset: int) -> int:
        """Write from `offset`; to a pipe, only whole records that fit in it now."""
        if self.failed is not None:
            return len(data) - offset
        if self._pipe:
            wait = 0.0005
            while not self._stopped:
                room = self._room()
                if room >= len(data) - offset:
                    break
                end = data.rfind(b"\n", offset, offset + max(room, 0))
                if end >= 0:
                    return os.write(self.fd, memoryview(data)[offset:end + 1])
                if _queued_in_pipe(self.fd) == 0:  # a record larger than the pipe:
                    self.waiting = True  # in pieces, with a blocking write
                    self._wake()
                    end = data.find(b"\n", offset)
                    return os.write(self.fd, memoryview(data)[offset:end + 1 if end >= 0 else None])
                if not self.waiting:
                    self.waiting = True
                    self._wake()
                time.sleep(wait)  # the reader is slow: look again soon
                wait = min(wait * 2, 0.02)
            if self._stopped:
                return 0
        elif not self._file:
            self.waiting = True  # (a terminal or socket: cannot tell; assume the reader)
        return os.write(self.fd, memoryview(data)[offset:])


def _pipe_capacity(fd: int) -> int:
    """The pipe's capacity (made as large as allowed, up to 1 MiB), or 0 if no pipe."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return 0


def _never_waits(fd: int) -> bool:
    """A regular file or /dev/null: no reader to wait for."""
    try:
        mode = os.fstat(fd)
        return stat.S_ISREG(mode.st_mode) or (
            stat.S_ISCHR(mode.st_mode) and mode.st_rdev == os.stat(os.devnull).st_rdev)
    except OSError:
        return False


def _queued_in_pipe(fd: int) -> int:
    buffer = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return int.from_bytes(buffer, "little")
