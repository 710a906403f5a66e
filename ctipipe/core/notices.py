"""Standard error for producers that must never wait on it (the relay, the replay)."""
from __future__ import annotations

import collections
import threading
import time

from ctipipe.core import cli

# Lines for standard error waiting to be written, past which they are counted.
NOTICE_BACKLOG = 100


class Notices:
    """One-line messages for standard error that never hold up the sessions.

    A paused terminal (Ctrl-S) or a full pipe on standard error blocks a write;
    so a thread writes the lines, and the event loop only appends to a short
    queue. Past NOTICE_BACKLOG unwritten lines, new ones are counted instead,
    and the count is written once the queue has room again.
    """

    def __init__(self, fd: int = 2, prog: str = "ctirelay") -> None:
        self.fd = fd
        self.prog = cli.command_name(prog)
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"{prog}-stderr", daemon=True)
        self._thread.start()

    def say(self, message: str) -> None:
        line = f"{self.prog}: {cli.one_line(message)}\n".encode("utf-8", "replace")
        with self._ready:
            if len(self._lines) >= NOTICE_BACKLOG:
                self.dropped += 1
                return
            if self.dropped:
                self._lines.append(f"{self.prog}: ({self.dropped} messages were not shown: "
                                   f"standard error was not being read)\n".encode())
                self.dropped = 0
            self._lines.append(line)
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
                self._lines.popleft()
                self._ready.notify_all()
