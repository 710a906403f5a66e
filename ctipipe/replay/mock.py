"""The mock server: each live client gets the recorded server side of one
session. A recorded reply goes out once the live client has sent the matching
request (same class, in order), its replyid rewritten to the live commandid;
unsolicited messages after their recorded pause; STARTTLS offered and
answered as the recorded server did.
"""
from __future__ import annotations

import time

import orjson
import trio

from ctipipe.core import cli, neterrors, stream
from ctipipe.core.notices import Notices
from ctipipe.relay.tap import Tap
from ctipipe.replay import script as scripts
from ctipipe.replay.conversation import PRODUCER, Conversation, converse
from ctipipe.replay.report import Divergence, label

# A live client that left out a few recorded messages is followed again at the
# next one it sends that the recording has within this many: further than
# that, a message of a recorded class is more likely an extra than a skip.
LOOKAHEAD = 4

# Unexpected messages of one session reported at once on standard error; the
# rest are only counted in the session's line at the end (a client that sends
# nothing but unexpected messages must not flood standard error).
UNEXPECTED_SAID = 10


class _Expecting:
    """The mock's view of the live client: which recorded client lines it has
    sent (matched by class, in order), with their live commandids."""

    def __init__(self, lines: list, divergence: Divergence, report) -> None:
        self.lines = lines
        self.next = 0
        self.live_ids: list = [None] * len(lines)
        self.matched = [False] * len(lines)
        self.when = [0.0] * len(lines)  # when each line came (or was given up)
        self.divergence = divergence
        self.report = report
        self.offer_tls = False
        self.tls_wanted: bool | None = None  # what the live client's first starttls asked

    def on_line(self, msg: dict | None, line: bytes) -> bool:
        cls = msg.get("class") if msg is not None else None
        cls = cls if isinstance(cls, str) else None
        last = min(self.next + LOOKAHEAD, len(self.lines))
        for position in range(self.next, last):
            if self.lines[position].cls == cls:
                now = trio.current_time()
                for skipped in range(self.next, position):
                    self.when[skipped] = now
                    self.divergence.not_seen.add(label(self.lines[skipped].cls))
                self.matched[position] = True
                self.live_ids[position] = msg.get("commandid") if msg is not None else None
                self.when[position] = now
                self.next = position + 1
                if cls == "starttls" and self.tls_wanted is None and self.offer_tls:
                    # Only the first request counts, as on the real server.
                    self.tls_wanted = bool(msg.get("status"))
                    return self.tls_wanted
                return False
        self.divergence.unexpected.add(label(cls))
        said = self.divergence.unexpected.total
        if said > UNEXPECTED_SAID:
            return False
        if said == UNEXPECTED_SAID:
            self.report(f"unexpected client message {label(cls)}: not answered; further ones "
                        f"are counted in the session's line at the end")
            return False
        self.report(f"unexpected client message {label(cls)} (the recording has "
                    f"{label(self.lines[self.next].cls) if self.next < len(self.lines) else 'nothing more'} "
                    f"next): not answered")
        return False


def _reply_to(line, live_id) -> bytes:
    """A recorded reply with its replyid rewritten to the live request's commandid."""
    if line.msg is None or "replyid" not in line.msg or live_id is None:
        return line.wire
    return orjson.dumps({**line.msg, "replyid": live_id}) + b"\n"


class Mock:
    def __init__(self, script: scripts.Script, *, source: str, tap: Tap, pace: float,
                 timeout: float, max_line: int, loop: bool, listen_addr: str | None,
                 listen_port: int, notices: Notices, tls_context=None) -> None:
        self.script = script
        self.notices = notices
        self.tls_context = tls_context  # offer STARTTLS as the recorded server did
        self.source = source
        self.tap = tap
        self.pace = pace
        self.timeout = timeout
        self.max_line = max_line
        self.loop = loop
        self.listen_addr = listen_addr
        self.listen_port = listen_port
        self.sessions = 0
        self.results: list[tuple[int, Divergence]] = []
        self.recording = {"recording": source.removeprefix("replay:").rpartition("#")[0],
                          "session": script.conn}

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_addr)
        except OSError as error:
            where = f"{self.listen_addr or '*'}:{self.listen_port}"
            raise cli.CommandError(f"cannot listen on {where}: {error.strerror}") from None
        bound = [neterrors.name(listener.socket.getsockname()) for listener in listeners]
        self.tap.event(stream.event_record(time.time(), None, "start", stream=1,
                                           producer=PRODUCER, listen=bound,
                                           **self.recording))
        self.notices.say(f"listening on {', '.join(bound)}: serving {self.source}"
                   + (" to every client" if self.loop else " to one client"))
        task_status.started(bound)
        async with trio.open_nursery() as sessions:
            if self.loop:
                await trio.serve_listeners(self.session, listeners, handler_nursery=sessions)
            else:
                async with trio.open_nursery() as accepting:
                    async def accept(listener) -> None:
                        client = await listener.accept()
                        accepting.cancel_scope.cancel()
                        sessions.start_soon(self.session, client)
                    for listener in listeners:
                        accepting.start_soon(accept, listener)
                for listener in listeners:
                    await listener.aclose()

    async def session(self, client: trio.SocketStream) -> None:
        """One client served the recording. Whatever goes wrong ends this
        session only (with --loop the others go on): a client that resets as it
        connects (a port scan, a health check) gets an `error` record and one
        line, and counts as no session played."""
        self.sessions += 1
        conn = self.sessions
        try:
            peer = neterrors.name(client.socket.getpeername())
        except OSError as error:
            message = f"the client left as it connected ({neterrors.reason(error)})"
            self.tap.event(stream.event_record(time.time(), conn, "error", error=message))
            self.notices.say(f"session {conn}: {message}")
            await client.aclose()
            return
        await self.play(client, peer, conn)

    async def play(self, client: trio.abc.Stream, peer: str, conn: int | None = None) -> None:
        """Serve the recording to one connected client (`peer` names it in
        the `open` record); tests give memory streams."""
        if conn is None:
            self.sessions += 1
            conn = self.sessions
        divergence = Divergence()
        self.results.append((conn, divergence))
        script = self.script
        expecting = _Expecting(script.client, divergence,
                               lambda message: self.notices.say(f"session {conn}: {message}"))
        expecting.offer_tls = self.tls_context is not None
        live = Conversation(client, self.tap, conn, "server", expecting.on_line, self.max_line)
        started = time.time()
        self.tap.opened(live.session, stream.event_record(
            started, conn, "open", client=peer, server=self.source))
        await converse(self.tap, live, conn, started, divergence,
                        lambda: self._play(live, expecting, divergence), contain=self.loop)

    async def _play(self, live: Conversation, expecting: _Expecting, divergence: Divergence) -> None:
        script = self.script
        last_sent = trio.current_time()
        silent = False  # the client let a --timeout pass without its next request
        for sent, line in enumerate(script.server):
            if not await live.wait_until(lambda: expecting.next >= line.after, self.timeout):
                if not live.eof:
                    divergence.timed_out.add(f"client {label(script.client[expecting.next].cls)}")
                    silent = True
                break
            anchor = max(last_sent, expecting.when[line.after - 1] if line.after else 0.0)
            pause = anchor + line.delay / self.pace - trio.current_time()
            if pause > 0:  # the recorded pause; it ends early if the client goes
                await live.wait_until(lambda: False, pause)
                if live.eof:  # a recorded night of silence must not hold a client that left
                    if script.closed_by == "server":  # the recorded client stayed to the end
                        divergence.note(f"the client left with {len(script.server) - sent} "
                                                f"recorded server messages still to come")
                    break
            upgrade = False
            if line.answers is not None:
                if not expecting.matched[line.answers]:
                    continue  # its request never came
                data = _reply_to(line, expecting.live_ids[line.answers])
                if line.cls == "starttls" and live.paused:
                    upgrade = True
                elif line.cls == "starttls" and line.msg and line.msg.get("starttls"):
                    # The live client did not ask for TLS: the answer says so.
                    data = orjson.dumps({**line.msg, "starttls": expecting.tls_wanted}) + b"\n"
            else:
                data = line.wire
            if not await live.send(data):
                break
            if upgrade and not await live.upgrade(self.tls_context, server_side=True,
                                                  timeout=self.timeout):
                divergence.note(live.error)
                break
            last_sent = trio.current_time()
        if not live.eof:
            if script.closed_by == "server" or silent:  # (silent: waited long enough)
                live.ended_by = "server"
            else:  # the recorded client ended it: so must the live one
                if not await live.wait_until(lambda: False, self.timeout) and not live.eof:
                    divergence.timed_out.add("client's close")
                    live.ended_by = "server"
        for line in script.client[expecting.next:]:
            divergence.not_seen.add(label(line.cls))

