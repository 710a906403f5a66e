"""Reading newline-terminated lines from a stream that may be upgraded to TLS."""
from __future__ import annotations

import trio


class Lines:
    """Newline-terminated lines from a stream that may be swapped for its TLS upgrade."""

    def __init__(self, stream_: trio.abc.Stream) -> None:
        self.stream = stream_
        self.buffer = b""

    async def next(self) -> bytes | None:
        """The next line without its newline, or None at end of stream."""
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line
