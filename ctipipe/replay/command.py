"""ctireplay: a saved session becomes a live CTI server (a mock) or a crowd of
live clients (a load), writing the tagged stream of the live sessions.

The recording is read into two scripts (script.py). As a server, each client
gets the recorded server side: a reply once the live client has sent its
request (replyid rewritten to the live commandid), unsolicited messages after
their recorded pause. As a client, the recorded client side, each request
once the replies recorded before it have come (matched by the fresh
commandids), with the recorded think time. Every wait is bounded by
--timeout, so every session, and the command, ends by itself. At the end one
line per session says how the live conversation differed from the recording.
"""
from __future__ import annotations

import argparse
import collections
import errno
import itertools
import os
import random
import signal
import socket
import time

import orjson
import trio

from ctipipe import __version__
from ctipipe.core import cli
from ctipipe.replay import script as scripts
from ctipipe.core import stream
from ctipipe.relay import certs as tls
from ctipipe.core.notices import Notices
from ctipipe.relay.tap import Tap

PROG = "ctireplay"

# A live client that left out a few recorded messages is followed again at the
# next one it sends that the recording has within this many: further than
# that, a message of a recorded class is more likely an extra than a skip.
LOOKAHEAD = 4

# One socket read, as the relay's.
READ_SIZE = 1 << 16

# How long a session waits for a message the recording says comes next (a
# reply, a request, the peer's close) before it reports it and goes on.
DEFAULT_TIMEOUT = 10.0

# A session whose server has let this many replies in a row time out is given
# up: a server that stopped answering would otherwise cost a timeout per request.
TIMEOUTS_IN_A_ROW = 3

# At shutdown, how long to keep trying to write the last records.
FLUSH_TIMEOUT = 5.0

EXAMPLE = """\
ctireplay session.jsonl --listen-port 5003 | ctipretty      # a mock server playing the recording
ctireplay session.jsonl --loop --pace asap                  # serve every client, no pauses
ctireplay session.jsonl --to xivo-test --clients 50 --ramp 5 --password s3cret | ctistat
"""


class Divergence:
    """How one live session differed from the recording."""

    def __init__(self) -> None:
        self.not_seen: collections.Counter = collections.Counter()
        self.unexpected: collections.Counter = collections.Counter()
        self.timed_out: collections.Counter = collections.Counter()
        self.notes: list[str] = []
        self.interrupted = False

    @property
    def diverged(self) -> bool:
        return bool(self.not_seen or self.unexpected or self.timed_out or self.notes)

    def summary(self) -> str:
        parts = []
        if self.not_seen:
            parts.append(f"{sum(self.not_seen.values())} expected and not seen ({_classes(self.not_seen)})")
        if self.unexpected:
            parts.append(f"{sum(self.unexpected.values())} unexpected ({_classes(self.unexpected)})")
        if self.timed_out:
            parts.append(f"{sum(self.timed_out.values())} timed out ({_classes(self.timed_out)})")
        parts += self.notes
        if self.interrupted:
            parts.append("interrupted")
        if not parts:
            return "followed the recording"
        return ("diverged: " if self.diverged else "") + "; ".join(parts)


def _classes(counter: collections.Counter) -> str:
    return ", ".join(f"{name}" + (f" x{count}" if count > 1 else "")
                     for name, count in list(counter.items())[:6]) + (", ..." if len(counter) > 6 else "")


def _label(cls: str | None) -> str:
    return cls if cls is not None else "a line that is not a CTI message"


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
            reset = isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.EPIPE)
            if isinstance(error.__cause__, OSError):
                reset = reset or error.__cause__.errno in (errno.ECONNRESET, errno.EPIPE)
            self.error = f"connection reset by {side}" if reset else f"{side} connection failed"
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

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


# --- the mock server -----------------------------------------------------------

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
                    self.divergence.not_seen[_label(self.lines[skipped].cls)] += 1
                self.matched[position] = True
                self.live_ids[position] = msg.get("commandid") if msg is not None else None
                self.when[position] = now
                self.next = position + 1
                if cls == "starttls" and self.tls_wanted is None and self.offer_tls:
                    # Only the first request counts, as on the real server.
                    self.tls_wanted = bool(msg.get("status"))
                    return self.tls_wanted
                return False
        self.divergence.unexpected[_label(cls)] += 1
        self.report(f"unexpected client message {_label(cls)} (the recording has "
                    f"{_label(self.lines[self.next].cls) if self.next < len(self.lines) else 'nothing more'} "
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
        bound = [_name(listener.socket.getsockname()) for listener in listeners]
        self.tap.event(stream.event_record(time.time(), None, "start", stream=1,
                                           producer=f"{PROG} {__version__}", listen=bound,
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
            peer = _name(client.socket.getpeername())
        except OSError as error:
            message = f"the client left as it connected ({_reason(error)})"
            self.tap.event(stream.event_record(time.time(), conn, "error", error=message))
            self.notices.say(f"session {conn}: {message}")
            await client.aclose()
            return
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
        await _converse(self.tap, live, conn, started, divergence,
                        lambda: self._play(live, expecting, divergence), contain=self.loop)

    async def _play(self, live: Conversation, expecting: _Expecting, divergence: Divergence) -> None:
        script = self.script
        last_sent = trio.current_time()
        for sent, line in enumerate(script.server):
            if not await live.wait_until(lambda: expecting.next >= line.after, self.timeout):
                if not live.eof:
                    divergence.timed_out[f"client {_label(script.client[expecting.next].cls)}"] += 1
                break
            anchor = max(last_sent, expecting.when[line.after - 1] if line.after else 0.0)
            pause = anchor + line.delay / self.pace - trio.current_time()
            if pause > 0:  # the recorded pause; it ends early if the client goes
                await live.wait_until(lambda: False, pause)
                if live.eof:  # a recorded night of silence must not hold a client that left
                    if script.closed_by == "server":  # the recorded client stayed to the end
                        divergence.notes.append(f"the client left with {len(script.server) - sent} "
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
                divergence.notes.append(live.error)
                break
            last_sent = trio.current_time()
        if not live.eof:
            if script.closed_by == "server":
                live.ended_by = "server"
            else:  # the recorded client ended it: so must the live one
                if not await live.wait_until(lambda: False, self.timeout) and not live.eof:
                    divergence.timed_out["client's close"] += 1
                    live.ended_by = "server"
        for line in script.client[expecting.next:]:
            divergence.not_seen[_label(line.cls)] += 1


async def _converse(tap: Tap, live: Conversation, conn: int, started: float,
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
        divergence.notes.append(f"ended on an error: {_reason(leaf)}")
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


# --- the live clients ------------------------------------------------------------

class _Awaiting:
    """The client's view of the live server: which recorded replies have come,
    matched by the fresh commandids (or by class for replies without replyid)."""

    def __init__(self, script: scripts.Script, divergence: Divergence) -> None:
        self.script = script
        self.by_id: dict[str, collections.deque] = {}
        self.by_class: dict[str, collections.deque] = {}
        self.got: dict[int, float] = {}  # server line index -> when its live reply came
        self.sessionid: str | None = None
        self.recorded_classes = {line.cls for line in script.server}
        self.divergence = divergence
        self.tls_answered = False  # the first starttls answer has come
        self.tls_offered = False  # the server's unsolicited starttls offer has come


    def expect(self, request, live_id) -> None:
        for index in request.replies:
            reply = self.script.server[index]
            if reply.msg is not None and "replyid" in reply.msg and live_id is not None:
                self.by_id.setdefault(str(live_id), collections.deque()).append(index)
            else:
                self.by_class.setdefault(reply.cls, collections.deque()).append(index)

    def on_line(self, msg: dict | None, line: bytes) -> bool:
        if msg is None:
            if None not in self.recorded_classes:
                self.divergence.unexpected[_label(None)] += 1
            return False
        cls = msg.get("class")
        if cls == "login_id" and isinstance(msg.get("sessionid"), str):
            self.sessionid = msg["sessionid"]
        replyid = msg.get("replyid")
        if cls == "starttls" and "starttls" not in msg:  # the offer, not an answer
            self.tls_offered = True
            waiting = None
        else:
            waiting = (self.by_id.get(str(replyid)) if replyid is not None
                       else self.by_class.get(cls) if cls in scripts.CLASS_PAIRED else None)
        if waiting:
            index = waiting.popleft()
            self.got[index] = trio.current_time()
            recorded = self.script.server[index].msg or {}
            if cls != recorded.get("class"):
                self.divergence.notes.append(f"{recorded.get('class')} answered with {cls}")
            elif msg.get("error_string") != recorded.get("error_string"):
                self.divergence.notes.append(f"{cls} answered with error "
                                             f"{msg.get('error_string')!r}")
            if cls == "starttls" and not self.tls_answered:
                self.tls_answered = True
                if msg.get("starttls") is True:
                    return True  # the handshake comes next: stop reading in clear
                if recorded.get("starttls"):
                    self.divergence.notes.append("the server declined STARTTLS")
            return False
        if cls not in self.recorded_classes:
            self.divergence.unexpected[_label(cls if isinstance(cls, str) else None)] += 1
        return False


class Crowd:
    """N live clients, each playing the recorded client side in its own session."""

    def __init__(self, script: scripts.Script, *, host: str, port: int, clients: int, ramp: float,
                 password: str | None, tap: Tap, pace: float, timeout: float,
                 max_line: int, tls_context=None) -> None:
        self.script = script
        self.tls_context = tls_context  # for a server that answers STARTTLS
        self.host = host
        self.port = port
        self.clients = clients
        self.ramp = ramp
        self.password = password
        self.tap = tap
        self.pace = pace
        self.timeout = timeout
        self.max_line = max_line
        self.results: list[tuple[int, Divergence]] = []

    async def run(self, path: str) -> None:
        self.tap.event(stream.event_record(time.time(), None, "start", stream=1,
                                           producer=f"{PROG} {__version__}",
                                           server=_join(self.host, self.port),
                                           recording=path, session=self.script.conn))
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for number in range(self.clients):
                divergence = Divergence()
                self.results.append((number + 1, divergence))
                nursery.start_soon(self.session, number + 1, divergence,
                                   start + self.ramp * number / self.clients)

    async def session(self, conn: int, divergence: Divergence, at: float) -> None:
        await trio.sleep_until(at)
        target = _join(self.host, self.port)
        try:
            with trio.fail_after(self.timeout):
                server = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as error:
            why = (f"no answer after {self.timeout:g} s" if isinstance(error, trio.TooSlowError)
                   else _reason(error))
            message = f"cannot reach {target}: {why}"
            self.tap.event(stream.event_record(time.time(), conn, "error", error=message))
            divergence.notes.append(message)
            return
        awaiting = _Awaiting(self.script, divergence)
        live = Conversation(server, self.tap, conn, "client", awaiting.on_line, self.max_line)
        started = time.time()
        self.tap.opened(live.session, stream.event_record(
            started, conn, "open", client=_name(server.socket.getsockname()), server=target))
        await _converse(self.tap, live, conn, started, divergence,
                        lambda: self._play(live, awaiting, divergence), contain=True)

    async def _play(self, live: Conversation, awaiting: _Awaiting, divergence: Divergence) -> None:
        script = self.script
        replies = [line for line in script.server if line.answers is not None]
        waited = 0  # replies[:waited] have been waited for
        in_a_row = 0  # replies that timed out since the last that came
        ids = itertools.count(random.randrange(10**8, 10**9))
        last = trio.current_time()
        gone = False

        async def wait_replies(before: int) -> bool:
            """Wait for the replies recorded before the other side's line `before`."""
            nonlocal waited, last, in_a_row
            while waited < len(replies) and replies[waited].index < before:
                reply = replies[waited]
                waited += 1
                if await live.wait_until(lambda: reply.index in awaiting.got, self.timeout):
                    in_a_row = 0
                    last = max(last, awaiting.got[reply.index])
                    if live.paused:  # at once: a real server drops a late handshake
                        if not await live.upgrade(self.tls_context, server_side=False,
                                                  timeout=self.timeout):
                            divergence.notes.append(live.error)
                            return False
                    continue
                divergence.timed_out[f"reply {_label(reply.cls)}"] += 1
                in_a_row += 1
                if live.eof:
                    return False
                if in_a_row >= TIMEOUTS_IN_A_ROW:
                    divergence.notes.append(f"gave up after {in_a_row} replies in a row timed out")
                    live.ended_by = "client"
                    return False
            return True

        for line in script.client:
            if not await wait_replies(line.after):
                gone = True
                break
            if line.cls == "starttls" and not awaiting.tls_answered:
                # As the XiVO client: ask for TLS only once the server has offered it.
                if not await live.wait_until(lambda: awaiting.tls_offered, self.timeout):
                    if live.eof:
                        gone = True
                        break
                    divergence.notes.append("the server did not offer STARTTLS")
                    awaiting.tls_answered = True
                    continue
            await trio.sleep_until(last + line.delay / self.pace)
            data, live_id = self._request(line, next(ids), awaiting.sessionid)
            awaiting.expect(line, live_id)
            if not await live.send(data):
                gone = True
                break
            last = trio.current_time()
        if not gone:
            await wait_replies(len(script.server))
        if live.eof:
            return
        if script.closed_by == "server":
            if not await live.wait_until(lambda: False, self.timeout) and not live.eof:
                divergence.timed_out["server's close"] += 1
        else:
            live.ended_by = "client"
            await live.send_eof()
            await live.wait_until(lambda: False, self.timeout)

    def _request(self, line, fresh: int, sessionid: str | None) -> tuple[bytes, object]:
        """The recorded request with a fresh commandid and, with --password, the live login."""
        msg = line.msg
        if msg is None:
            return line.wire, None
        changed = dict(msg)
        live_id = None
        if "commandid" in msg:
            live_id = str(fresh) if isinstance(msg["commandid"], str) else fresh
            changed["commandid"] = live_id
        if self.password is not None and line.cls == "login_pass":
            if "password" in msg:
                changed["password"] = self.password
            elif sessionid is not None:
                changed["hashedpassword"] = scripts.hashed_password(sessionid, self.password)
        if changed == msg:
            return line.wire, live_id
        return orjson.dumps(changed) + b"\n", live_id


# --- the command -------------------------------------------------------------------

def _name(address) -> str:
    return _join(address[0], address[1])


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: BaseException) -> str:
    cause = error.__cause__
    for leaf in [*(cli.leaves(cause) if cause is not None else []), error]:
        if isinstance(leaf, OSError) and leaf.errno and not isinstance(leaf, socket.gaierror):
            return os.strerror(leaf.errno)
        if isinstance(leaf, OSError) and leaf.strerror:
            return leaf.strerror
    return str(error)


def _pace(text: str) -> float:
    """--pace: a speed factor; recorded is 1, asap is infinite (every pause becomes 0)."""
    if text == "recorded":
        return 1.0
    if text == "asap":
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not asap, recorded or a speed factor: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a speed factor must be a number above 0 and finite "
                                         f"(asap: no pauses at all): {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"out of range 1-100000: {text}")
    return value


def _parser() -> cli.Parser:
    parser = cli.Parser(PROG, "Replay a saved tagged stream: as a mock CTI server (default) or, with "
                        "--to, as live clients of a real server. Writes the tagged stream of the "
                        "live sessions on standard output and, at the end, one line per session "
                        "on standard error saying how it differed from the recording.", EXAMPLE)
    parser.add_argument("recording", metavar="SESSION.jsonl", help="a saved tagged stream")
    parser.add_argument("--conn", type=_count, default=None, metavar="N",
                        help="which session of the recording (default: the first)")
    parser.add_argument("--pace", type=_pace, default=1.0, metavar="asap|recorded|FACTOR",
                        help="keep the recorded pauses (recorded, the default), none (asap), "
                             "or go FACTOR times faster")
    parser.add_argument("--timeout", type=cli.seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for a message the recording says comes next "
                             f"(default {DEFAULT_TIMEOUT:g}): reported, then the session goes on")
    parser.add_argument("--max-line", type=cli.positive, default=16 << 20, metavar="BYTES",
                        help="longer live lines are recorded in pieces (default 16 MiB)")
    mock = parser.add_argument_group("as a server (without --to)")
    mock.add_argument("--listen-addr", type=cli.host, metavar="ADDR", default=None,
                      help="listen on this address only (default: every address)")
    mock.add_argument("--listen-port", type=cli.port, default=None,
                      help="where clients connect (default 5003)")
    mock.add_argument("--loop", action="store_true",
                      help="serve every client (default: one, then exit)")
    mock.add_argument("--no-starttls", action="store_true",
                      help="do not offer STARTTLS even if the recorded server did")
    mock.add_argument("--cert", metavar="FILE", default=None,
                      help="the certificate to present over STARTTLS (default: the relay's own)")
    mock.add_argument("--key", metavar="FILE", default=None, help="the private key of --cert")
    crowd = parser.add_argument_group("as clients (--to HOST)")
    crowd.add_argument("--to", type=cli.host, metavar="HOST", default=None, help="play the client side against HOST")
    crowd.add_argument("--port", type=cli.server_port, default=None, help="the server's port (default 5003)")
    crowd.add_argument("--clients", type=_count, default=None, metavar="N",
                       help="N sessions at once (default 1)")
    crowd.add_argument("--ramp", type=cli.duration, default=None, metavar="SECONDS",
                       help="spread the sessions' starts over this long")
    crowd.add_argument("--password", metavar="SECRET", default=None,
                       help="log in with this password (recomputes hashedpassword with the live "
                            "sessionid, or fills password)")
    crowd.add_argument("--server-ca", metavar="FILE", default=None,
                       help="verify the server's certificate chain against these CAs (not the name "
                            "in it; default: not verified, as the XiVO client does)")
    return parser


_MOCK_ONLY = ("listen_addr", "listen_port", "loop", "no_starttls", "cert", "key")
_CROWD_ONLY = ("port", "clients", "ramp", "password", "server_ca")


def _check(parser: cli.Parser, args: argparse.Namespace) -> None:
    given = lambda name: getattr(args, name) not in (None, False)
    if args.to is None:
        wrong = [name for name in _CROWD_ONLY if given(name)]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} needs --to HOST (it is for live clients)")
    else:
        wrong = [name for name in _MOCK_ONLY if given(name)]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} is for the mock server, not with --to")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")


def _load(args: argparse.Namespace) -> scripts.Script:
    path = args.recording
    try:
        with open(path, "rb") as file:
            data = _read_bounded(file, path)
    except OSError as error:
        raise scripts.ScriptError(f"cannot read {path}: {error.strerror}") from None
    script = scripts.load(data, args.conn, path)
    if args.to is not None and not script.client:
        raise scripts.ScriptError(f"{path}: session {script.conn} has no client messages: "
                                  f"nothing to send")
    return script


def _read_bounded(file, path: str) -> bytes:
    """The whole recording, refused as soon as one line passes stream.MAX_LINE
    (a file with no newline, such as /dev/zero, would fill the memory)."""
    chunks, unfinished = [], 0  # the bytes since the last newline
    while chunk := file.read(1 << 20):
        chunks.append(chunk)
        newline = chunk.rfind(b"\n")
        unfinished = len(chunk) - newline - 1 if newline >= 0 else unfinished + len(chunk)
        if unfinished > stream.MAX_LINE:
            raise scripts.ScriptError(f"{path}: a line longer than {stream.MAX_LINE >> 20} MiB: "
                                      f"not a recording")
    return b"".join(chunks)


def _resolve(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise scripts.ScriptError(f"cannot resolve {host}: {error.strerror}") from None


def _tls_context(args: argparse.Namespace, script: scripts.Script):
    """The TLS context a session may need: the mock's (only if the recording went
    through STARTTLS), or the clients' (always: a server may answer STARTTLS)."""
    if args.to is not None:
        if not any(line.cls == "starttls" for line in script.client):
            return None
        return tls.server_leg_context(args.server_ca)
    if not script.starttls or args.no_starttls:
        return None
    if args.cert is not None:
        return tls.client_leg_context(args.cert, args.key)
    cert, key, made = tls.relay_certificate()
    if made:
        cli.report(PROG, f"made the relay's certificate {cert} (SHA-256 {tls.fingerprint(cert)})")
    return tls.client_leg_context(cert, key)


async def _run(args: argparse.Namespace, script: scripts.Script, context, notices: Notices) -> int:
    tap = Tap(1, raw=False, max_line=args.max_line, notify=notices.say,
              flush_timeout=FLUSH_TIMEOUT)
    source = f"replay:{args.recording}#{script.conn}"
    if args.to is None:
        producer = Mock(script, source=source, tap=tap, pace=args.pace, timeout=args.timeout,
                        max_line=args.max_line, loop=args.loop, listen_addr=args.listen_addr,
                        listen_port=5003 if args.listen_port is None else args.listen_port,
                        notices=notices, tls_context=context)
        body = producer.serve
    else:
        producer = Crowd(script, host=args.to, port=args.port or 5003, clients=args.clients or 1,
                         ramp=args.ramp or 0.0, password=args.password, tap=tap, pace=args.pace,
                         timeout=args.timeout, max_line=args.max_line, tls_context=context)
        body = lambda: producer.run(args.recording)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:
            root.start_soon(tap.run)
            try:
                async with trio.open_nursery() as working:
                    async def stop_on_signal() -> None:
                        async for _ in signals:
                            working.cancel_scope.cancel()
                            return
                    working.start_soon(stop_on_signal)
                    await body()
                    working.cancel_scope.cancel()
            finally:
                tap.close()  # the tap writes what it holds, for at most FLUSH_TIMEOUT
                await tap.finished.wait()
    if tap.unwritten:
        notices.say(f"{tap.unwritten} records were not written: standard output was not being read")
    diverged = bool(tap.unwritten)
    for conn, divergence in producer.results:
        notices.say(f"session {conn}: {divergence.summary()}")
        diverged = diverged or divergence.diverged
    return cli.Exit.ERROR if diverged else cli.Exit.OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    try:
        script = _load(args)
        if args.no_starttls:
            script = script.without_starttls()
        if args.to is not None:
            _resolve(args.to, args.port or 5003)
        context = _tls_context(args, script)
    except (scripts.ScriptError, cli.CommandError) as error:
        cli.report(PROG, f"error: {error}")
        return cli.Exit.USAGE
    notices = Notices(prog=PROG)

    def body() -> int:
        try:
            return trio.run(_run, args, script, context, notices)
        finally:
            notices.flush(FLUSH_TIMEOUT)  # before a final error line, in order
    return cli.guarded(PROG, body, debug=args.debug)
