"""Reading newline-terminated lines from a stream that may be upgraded to TLS.

The cutting is the stages' own (`stages.runner.Lines`: bounded, a long line
gathered once); this only reads from a trio stream and hands the lines out one
at a time. The relay's `splitter.Splitter` cannot be the same: it turns each
line into a tagged record with its time, conn and side, and cuts a long line
into `oversize` pieces that are all kept, where the demo and the stages drop it.
"""
from __future__ import annotations

import collections

import trio

from ctipipe.core import stream
from ctipipe.stages import runner

READ_SIZE = stream.SOCKET_READ_SIZE


class Lines:
    """Newline-terminated lines from a stream that may be swapped for its TLS upgrade
    (assign `stream`). A line longer than `runner.MAX_LINE` is skipped, as the
    stages skip it; what follows it is read as usual."""

    def __init__(self, stream_: trio.abc.Stream) -> None:
        self.stream = stream_
        self._cutter = runner.Lines()
        self._ready: collections.deque[bytes] = collections.deque()

    def pending(self) -> bool:
        """Whether bytes past the last line handed out were already read (before
        a TLS upgrade: plaintext that a TLS client would not have sent)."""
        return bool(self._ready or self._cutter.pieces)

    async def next(self) -> bytes | None:
        """The next line without its newline, or None at end of stream (an
        unfinished last line is dropped)."""
        while not self._ready:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return None
            for block in self._cutter.feed(bytes(data)):  # a memory stream gives bytearrays
                if block is not runner.TOO_LONG:
                    self._ready.extend(block.split(b"\n"))
        return self._ready.popleft()
