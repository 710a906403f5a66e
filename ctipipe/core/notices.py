"""Standard error for producers that must never wait on it (the relay, the replay)."""
from __future__ import annotations

import collections
import threading
import time

from ctipipe.core import cli

# Lines for standard error waiting to be written, past which they are counted.
NOTICE_BACKLOG = 100

# The same backlog in bytes: a hundred lines quoting a peer must not hold a
# hundred megabytes while standard error is slow.
NOTICE_BACKLOG_BYTES = 256 << 10

# Characters of one message past which it is cut (and says how much was left
# out): a line on standard error is for a person to read.
NOTICE_CHARS = 8 << 10


class Notices:
    """One-line messages for standard error that never hold up the sessions.

    A paused terminal (Ctrl-S) or a full pipe on standard error blocks a write;
    so a thread writes the lines, and the event loop only appends to a short
    queue. Past NOTICE_BACKLOG unwritten lines (or NOTICE_BACKLOG_BYTES), new
    ones are counted instead, and the count is written once the queue has room
    again. A message longer than NOTICE_CHARS is cut. At exit, say_all()
    writes lines that must not be counted away (a final report), waiting for
    room instead.
    """

    def __init__(self, fd: int = 2, prog: str = "ctirelay") -> None:
        self.fd = fd
        self.prog = cli.command_name(prog)
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._bytes = 0  # held in _lines
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"{prog}-stderr", daemon=True)
        self._thread.start()

    def say(self, message: str) -> None:
        line = self._line(message)
        with self._ready:
            if not self._room(len(line)):
                self.dropped += 1
                return
            self._append(line)

    def say_all(self, messages: list[str], timeout: float) -> bool:
        """At exit (blocking): each message waits for room rather than being
        counted away, up to `timeout` in all; False if that ran out."""
        deadline = time.monotonic() + timeout
        with self._ready:
            for message in messages:
                line = self._line(message)
                while not self._room(len(line)):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._ready.wait(left)
                self._append(line)
        return True

    def _line(self, message: str) -> bytes:
        if len(message) > NOTICE_CHARS:  # cut before escaping, which only makes it longer
            message = f"{message[:NOTICE_CHARS]}... ({len(message) - NOTICE_CHARS:,} more characters)"
        return f"{self.prog}: {cli.one_line(message)}\n".encode("utf-8", "replace")

    def _room(self, size: int) -> bool:
        return not self._lines or (len(self._lines) < NOTICE_BACKLOG
                                   and self._bytes + size <= NOTICE_BACKLOG_BYTES)

    def _append(self, line: bytes) -> None:
        if self.dropped:
            count = (f"{self.prog}: ({self.dropped} messages were not shown: "
                     f"standard error was not being read)\n").encode()
            self._lines.append(count)
            self._bytes += len(count)
            self.dropped = 0
        self._lines.append(line)
        self._bytes += len(line)
        self._ready.notify()

    def flush(self, timeout: float) -> bool:
        """Wait (blocking, at exit only) up to `timeout` for the lines to be written."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._lines:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._lines:
                    self._ready.wait()
                line = self._lines[0]
            try:
                cli.write_all(self.fd, line)
            except OSError:
                pass  # nowhere left to say it
            with self._ready:
                self._bytes -= len(self._lines.popleft())
                self._ready.notify_all()
