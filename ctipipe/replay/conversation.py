"""One live session of a replay: the connection (a reader that records and
splits what comes in, a send that records what goes out, a wait for what
comes next, the STARTTLS upgrade), how the session differed from the
recording (report.Divergence), and converse(), which runs a conversation to its
`close` record whatever happens. Shared by the mock (mock.py) and the live
clients (crowd.py).
"""
from __future__ import annotations

import time

import orjson
import trio

from ctipipe import __version__
from ctipipe.core import cli, neterrors, stream
from ctipipe.relay import certs as tls
from ctipipe.relay.tap import Tap
from ctipipe.replay.report import Divergence

# What the `start` record names as its producer.
PRODUCER = f"ctireplay {__version__}"

READ_SIZE = stream.SOCKET_READ_SIZE


class Conversation:
    """One live connection: a reader task that records and splits what comes
    in, a send that records what goes out, and a wait for what comes next."""

    def __init__(self, stream_: trio.abc.Stream, tap: Tap, conn: int, mine: str,
                 on_line, max_line: int) -> None:
        self.stream = stream_
        self.tap = tap
        self.session = tap.session(conn)
        self.incoming = self.session.server if mine == "client" else self.session.client
        self.outgoing = self.session.client if mine == "client" else self.session.server
        self.their = "server" if mine == "client" else "client"
        self.mine = mine
        # Called with (message or None, line) for each complete line; True asks
        # the reader to stop there until the session has switched to TLS.
        self.on_line = on_line
        self.max_line = max_line
        self.eof = False
        self.counts = {"client": [0, 0], "server": [0, 0]}  # bytes, reads
        self.ended_by: str | None = None
        self.error: str | None = None
        self._changed = trio.Event()
        self.paused = False  # the reader waits for upgrade() (STARTTLS)
        self._resumed = trio.Event()

    async def send(self, data: bytes) -> bool:
        """Send `data`; False if the peer is gone (the session then ends).

        Recorded before it is sent: a fast peer's answer may be read (and
        recorded) before send_all returns, and a request recorded after its
        reply could not be paired by ctistat."""
        self.tap.data(self.outgoing, time.time(), data)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._gone(self.their, error)
            return False
        count = self.counts[self.mine]
        count[0] += len(data)
        count[1] += 1
        return True

    async def read(self) -> None:
        """Read until EOF, handing each complete line to on_line."""
        held: list[bytes] = []  # the start of an unfinished line, in pieces
        held_len = 0
        skipping = False  # in a line longer than max_line: its rest is dropped
        while True:
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                self._gone(self.their, error)
                break
            if not data:
                self.ended_by = self.ended_by or self.their
                break
            self.tap.data(self.incoming, time.time(), data)
            if self.tap.full:  # the tap's CPU work is behind: let it catch up
                await self.tap.room()
            count = self.counts[self.their]
            count[0] += len(data)
            count[1] += 1
            end = data.rfind(b"\n")
            if end < 0:
                if not skipping:
                    held.append(data)
                    held_len += len(data)
                    if held_len > self.max_line:  # too long to keep: one line that is no message
                        held, held_len, skipping = [], 0, True
                        self.on_line(None, b"")
                continue
            lines = data[:end].split(b"\n")
            if skipping:
                del lines[0]
                skipping = False
            elif held:
                lines[0] = b"".join(held) + lines[0]
            held = [data[end + 1:]] if end + 1 < len(data) else []
            held_len = len(data) - end - 1
            pause = False
            for line in lines:
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    msg = None
                pause = self.on_line(msg if isinstance(msg, dict) else None, line) or pause
            self._changed.set()
            if pause:
                # The peer sends nothing more in clear: what follows is the TLS handshake.
                held, held_len = [], 0
                self.paused = True
                await self._resumed.wait()
                self.paused = False
                if self.eof:
                    return
        if held:
            self.on_line(None, b"".join(held))
        self.eof = True
        self._changed.set()

    async def upgrade(self, context, *, server_side: bool, timeout: float) -> bool:
        """Switch the paused connection to TLS, then let the reader go on.

        False if the handshake failed: the session then ends, its close
        saying which side's handshake failed and why.
        """
        upgraded = trio.SSLStream(self.stream, context, server_side=server_side,
                                  https_compatible=True)
        try:
            with trio.fail_after(timeout):
                await upgraded.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, OSError) as error:
            why = ("no handshake within the timeout" if isinstance(error, trio.TooSlowError)
                   else tls.handshake_error(error))
            self.ended_by = self.their
            self.error = f"TLS handshake with the {self.their} failed: {why}"
            self.eof = True
            self._changed.set()
            self._resumed.set()
            return False
        self.stream = upgraded
        leg = tls.describe(upgraded)
        self.tap.opened(self.session, stream.event_record(
            time.time(), self.session.conn, "tls", how="starttls", intercepted=True,
            client=leg, server=leg))
        self._resumed.set()
        return True

    async def send_eof(self) -> None:
        """End our side: a half-close, or over TLS a bare FIN under it, as XiVO's peers do."""
        target = self.stream.transport_stream if isinstance(self.stream, trio.SSLStream) else self.stream
        try:
            await target.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def _gone(self, side: str, error: BaseException) -> None:
        if self.ended_by is None:
            self.ended_by = side
            self.error = neterrors.lost(side, error)[0]
        self.eof = True
        self._changed.set()

    async def wait_until(self, ready, timeout: float) -> bool:
        """Wait until ready() holds; False after `timeout` or once the peer has gone."""
        with trio.move_on_after(timeout):
            while not ready():
                if self.eof:
                    return False
                if self._changed.is_set():
                    self._changed = trio.Event()
                await self._changed.wait()
            return True
        return ready()

    async def sleep_until(self, deadline: float) -> bool:
        """A recorded pause, up to trio time `deadline`; False as soon as the
        peer has gone (a recorded night of silence must not hold a session
        whose peer left)."""
        with trio.move_on_at(deadline):
            while not self.eof:
                if self._changed.is_set():
                    self._changed = trio.Event()
                await self._changed.wait()
        return not self.eof

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def converse(tap: Tap, live: Conversation, conn: int, started: float,
                    divergence: Divergence, play, contain: bool) -> None:
    """One live conversation: its reader beside play(), then its `close`,
    whatever happened. With contain, an error ends this session only (noted
    in its divergence) and the others go on; Ctrl-C marks it interrupted."""
    played = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live.read)
            await play()
            played = True
            nursery.cancel_scope.cancel()
    except Exception as error:  # noqa: BLE001 - one session's failure is its own
        if not contain:
            raise
        played = True  # it ended, on an error: not interrupted
        leaf = next(iter(cli.leaves(error)), error)
        divergence.note(f"ended on an error: {neterrors.reason(leaf)}")
        live.ended_by = live.ended_by or "relay"
    finally:
        if not played:  # cancelled (Ctrl-C): trio wraps that in a group, so no except
            live.ended_by = live.ended_by or "relay"
            divergence.interrupted = True
        await live.close()
        _closed(tap, live, conn, started)


def _closed(tap: Tap, live: Conversation, conn: int, started: float) -> None:
    ended = time.time()
    fields = {"by": live.ended_by or "relay",
              "bytes": {side: c[0] for side, c in live.counts.items()},
              "reads": {side: c[1] for side, c in live.counts.items()},
              "duration": round(ended - started, 6)}
    if live.error:
        fields["error"] = live.error
    tap.closed(live.session, ended, fields)

