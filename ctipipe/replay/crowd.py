"""The live clients: each session plays the recorded client side against a
real server, each request once the replies recorded before it have come
(matched by the fresh commandids), with the recorded think time.
"""
from __future__ import annotations

import collections
import itertools
import random
import time

import orjson
import trio

from ctipipe.core import neterrors, stream
from ctipipe.relay.tap import Tap
from ctipipe.replay import script as scripts
from ctipipe.replay.conversation import PRODUCER, Conversation, converse
from ctipipe.replay.report import Divergence, label, shown

# A session whose server has let this many replies in a row time out is given
# up: a server that stopped answering would otherwise cost a timeout per request.
TIMEOUTS_IN_A_ROW = 3


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
                self.divergence.unexpected.add(label(None))
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
                self.divergence.note(f"{label(recorded.get('class'))} answered with "
                                     f"{label(cls)}")
            elif msg.get("error_string") != recorded.get("error_string"):
                self.divergence.note(f"{label(cls)} answered with error "
                                     f"{shown(msg.get('error_string'))}")
            if cls == "starttls" and not self.tls_answered:
                self.tls_answered = True
                if msg.get("starttls") is True:
                    return True  # the handshake comes next: stop reading in clear
                if recorded.get("starttls"):
                    self.divergence.note("the server declined STARTTLS")
            return False
        if cls not in self.recorded_classes:
            self.divergence.unexpected.add(label(cls if isinstance(cls, str) else None))
        return False


class Crowd:
    """N live clients, each playing the recorded client side in its own session."""

    def __init__(self, script: scripts.Script, *, host: str, port: int, clients: int, ramp: float,
                 password: str | None, tap: Tap, pace: float, timeout: float,
                 max_line: int, tls_context=None, connect=None) -> None:
        self.script = script
        # How a session reaches the server: an async function giving the
        # stream and our address as a record names it (tests give memory streams).
        self.connect = connect or self._connect_tcp
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
                                           producer=PRODUCER,
                                           server=neterrors.join(self.host, self.port),
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
        target = neterrors.join(self.host, self.port)
        try:
            with trio.fail_after(self.timeout):
                server, local = await self.connect()
        except (OSError, trio.TooSlowError) as error:
            why = (f"no answer after {self.timeout:g} s" if isinstance(error, trio.TooSlowError)
                   else neterrors.reason(error))
            message = f"cannot reach {target}: {why}"
            self.tap.event(stream.event_record(time.time(), conn, "error", error=message))
            divergence.note(message)
            return
        awaiting = _Awaiting(self.script, divergence)
        live = Conversation(server, self.tap, conn, "client", awaiting.on_line, self.max_line)
        started = time.time()
        self.tap.opened(live.session, stream.event_record(
            started, conn, "open", client=local, server=target))
        await converse(self.tap, live, conn, started, divergence,
                        lambda: self._play(live, awaiting, divergence), contain=True)

    async def _connect_tcp(self) -> tuple[trio.abc.Stream, str]:
        server = await trio.open_tcp_stream(self.host, self.port)
        return server, neterrors.name(server.socket.getsockname())

    async def _play(self, live: Conversation, awaiting: _Awaiting, divergence: Divergence) -> None:
        script = self.script
        replies = [line for line in script.server if line.answers is not None]
        waited = 0  # replies[:waited] have been waited for
        in_a_row = 0  # replies that timed out since the last that came
        ids = itertools.count(random.randrange(10**8, 10**9))
        last = trio.current_time()
        sent = 0  # recorded client lines sent
        gone = False

        async def wait_replies(before: int) -> bool:
            """Wait for the replies recorded before the other side's line `before`."""
            nonlocal waited, last, in_a_row
            while waited < len(replies) and replies[waited].index < before:
                reply = replies[waited]
                if await live.wait_until(lambda: reply.index in awaiting.got, self.timeout):
                    waited += 1
                    in_a_row = 0
                    last = max(last, awaiting.got[reply.index])
                    if live.paused:  # at once: a real server drops a late handshake
                        if not await live.upgrade(self.tls_context, server_side=False,
                                                  timeout=self.timeout):
                            divergence.note(live.error)
                            return False
                    continue
                if live.eof:
                    return False  # the server left: what did not come is counted below
                waited += 1
                divergence.timed_out.add(f"reply {label(reply.cls)}")
                in_a_row += 1
                if in_a_row >= TIMEOUTS_IN_A_ROW:
                    divergence.note(f"gave up after {in_a_row} replies in a row timed out")
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
                    divergence.note("the server did not offer STARTTLS")
                    awaiting.tls_answered = True
                    continue
            if not await live.sleep_until(last + line.delay / self.pace):
                gone = True  # the server left during the recorded pause
                break
            data, live_id = self._request(line, next(ids), awaiting.sessionid)
            awaiting.expect(line, live_id)
            if not await live.send(data):
                gone = True
                break
            sent += 1
            last = trio.current_time()
        if not gone:
            await wait_replies(len(script.server))
        if live.eof:
            if live.ended_by == "server":
                _server_left(live, awaiting, divergence, replies[waited:],
                             len(script.client) - sent)
            return
        if script.closed_by == "server":
            if not await live.wait_until(lambda: False, self.timeout) and not live.eof:
                divergence.timed_out.add("server's close")
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


def _server_left(live: Conversation, awaiting: _Awaiting, divergence: Divergence,
                 replies: list, unsent: int) -> None:
    """The server ended the session: a divergence if the recording went on
    (requests still to send, replies still to come)."""
    for reply in replies:
        if reply.index not in awaiting.got:
            divergence.not_seen.add(f"reply {label(reply.cls)}")
    if unsent:
        how = ("the session ended" if live.error in divergence.notes  # (a failed handshake)
               else f"the server left ({live.error})" if live.error
               else "the server closed the connection")
        divergence.note(f"{how} with {unsent} recorded client messages still to send")
