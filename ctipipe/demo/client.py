"""The demo CTI client: one scripted session, as the XiVO client runs it.

STARTTLS when the server offers it (any certificate accepted), login (protocol
2.x with a clear password inside TLS, 1.x with a hashed one without), the
configuration lists, a dial and a hangup, then logout.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import random

import orjson
import trio

from ctipipe.core import cli, neterrors
from ctipipe.demo.lines import Lines
from ctipipe.demo.server import IPBX, PASSWORD
from ctipipe.relay import certs as tls

# How long the client waits for the server (or the relay in front of it) to listen.
CONNECT_PATIENCE = 10.0
# After its logout the demo client waits this long for the server to close.
DRAIN_PATIENCE = 5.0

# A server that offers STARTTLS does so right after accepting; a client that
# has seen nothing by then logs in without TLS.
OFFER_WAIT = 1.0


class _Client:
    def __init__(self, stream_: trio.SocketStream) -> None:
        self.raw = stream_  # the TCP stream, under TLS once upgraded
        self.lines = Lines(stream_)
        self.commandids = itertools.count(random.randrange(10**8, 10**9))
        self.tls: dict | None = None

    async def send(self, message: dict) -> int:
        commandid = next(self.commandids)
        await self.lines.stream.send_all(orjson.dumps({**message, "commandid": commandid}) + b"\n")
        return commandid

    async def receive(self, waiting_for: str) -> dict:
        line = await self.lines.next()
        if line is None:
            raise cli.CommandError(f"the server closed the connection while we waited for "
                                   f"the reply to {waiting_for}")
        try:
            reply = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise cli.CommandError(f"the server sent a line that is not JSON while we waited "
                                   f"for the reply to {waiting_for}: {line[:80]!r}") from None
        if not isinstance(reply, dict):
            raise cli.CommandError(f"the server sent JSON that is not an object: {line[:80]!r}")
        return reply

    async def ask(self, message: dict) -> dict:
        """Send a request and wait for its reply (status updates in between are skipped).

        Login replies of protocol 2.x carry no replyid: they are known by their class.
        """
        kind = message["class"]
        commandid = await self.send(message)
        while True:
            reply = await self.receive(kind)
            if reply.get("replyid") == commandid or (kind.startswith("login_")
                                                      and reply.get("class") == kind):
                return reply

    async def starttls(self) -> None:
        """Take the server's offer as the XiVO client does: ask, read the answer
        line, then begin the handshake (TLS 1.0 allowed, any certificate)."""
        await self.send({"class": "starttls", "status": True})
        while True:
            reply = await self.receive("starttls")
            if reply.get("class") == "starttls":
                break
        if not reply.get("starttls"):
            return
        upgraded = trio.SSLStream(self.lines.stream, tls.server_leg_context(),
                                  https_compatible=True)
        try:
            await upgraded.do_handshake()
        except trio.BrokenResourceError as error:
            raise cli.CommandError(f"TLS with the server failed: "
                                   f"{tls.handshake_error(error)}") from None
        self.tls = tls.describe(upgraded)
        self.lines.stream = upgraded


async def _connect(host: str, port: int) -> trio.SocketStream:
    deadline = trio.current_time() + CONNECT_PATIENCE
    while True:  # the relay may still be starting
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError as error:
            if trio.current_time() > deadline:
                raise cli.CommandError(f"cannot connect to {host}:{port}: "
                                       f"{neterrors.reason(error)}") from None
            await trio.sleep(0.05)


async def run_client(host: str, port: int, user: str, pause: float,
                     starttls: bool = True) -> None:
    """A realistic session: STARTTLS when offered, log in, load the
    configuration, dial, hang up, log out. `starttls=False`: a client of
    before XiVO 15.20, which logs in at once without waiting for an offer."""
    stream_ = await _connect(host, port)
    try:
        async with stream_:
            await _session(_Client(stream_), user, pause, starttls)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
        cause = error.__cause__
        why = (os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno
               else "closed by the other side")
        raise cli.CommandError(f"the connection to {host}:{port} was lost ({why})") from None


async def _session(client: _Client, user: str, pause: float, starttls: bool) -> None:
    offer = None
    if starttls:
        with trio.move_on_after(OFFER_WAIT):
            offer = await client.receive("the server's first message")
    if offer is not None and offer.get("class") == "starttls":
        await client.starttls()
    if client.tls:
        # Protocol 2.x: the password goes in clear, inside TLS.
        await client.ask({"class": "login_id", "company": "default", "ident": "X11-LE-24079",
                          "lastlogout-datetime": "2026-11-26T18:02:11",
                          "lastlogout-stopper": "disconnect", "userlogin": user,
                          "version": "9999", "wazoversion": "18.03"})
        # The XiVO client asks for STARTTLS a second time inside TLS; servers ignore it.
        await client.send({"class": "starttls", "status": True})
        reply = await client.ask({"class": "login_pass", "password": PASSWORD})
    else:
        reply = await client.ask({"class": "login_id", "company": "default", "ident": "X11-LE-24079",
                                  "lastlogout-datetime": "2026-11-26T18:02:11",
                                  "lastlogout-stopper": "disconnect", "userlogin": user,
                                  "version": "9999", "xivoversion": "1.2"})
        hashed = hashlib.sha1(f"{reply['sessionid']}:{PASSWORD}".encode()).hexdigest()
        reply = await client.ask({"class": "login_pass", "hashedpassword": hashed})
    if "error_string" in reply:
        raise cli.CommandError(f"the server refused the login: {reply['error_string']}")
    capaid = reply.get("capalist", [0])[0]
    await client.ask({"class": "login_capas", "capaid": capaid, "lastconnwins": False,
                      "loginkind": "agent", "state": "available"})
    for listname in ("users", "phones", "queues"):
        ids = await client.ask({"class": "getlist", "function": "listid", "listname": listname,
                                "tipbxid": IPBX})
        for tid in ids.get("list", [])[:4]:
            await client.ask({"class": "getlist", "function": "updateconfig",
                              "listname": listname, "tid": tid, "tipbxid": IPBX})
            await trio.sleep(pause)
    await client.ask({"class": "ipbxcommand", "command": "agentlogin", "agentphonenumber": "1001"})
    await trio.sleep(pause * 4)
    await client.ask({"class": "ipbxcommand", "command": "dial",
                      "destination": "exten:xivo/1202"})
    await trio.sleep(pause * 8)
    await client.ask({"class": "ipbxcommand", "command": "hangup",
                      "channelids": "chan:xivo/SIP/im2p7kzr-00000003"})
    await client.ask({"class": "ipbxcommand", "command": "queuepause", "member": "agent:xivo/1",
                      "queue": "queue:xivo/all"})
    await trio.sleep(pause * 4)
    await client.send({"class": "logout", "stopper": "disconnect"})
    # End our side with a FIN (inside TLS too: a bare FIN, as the XiVO client
    # ends), then read what the server still sends until it closes: closing
    # with status updates unread would reset the connection.
    await client.raw.send_eof()
    with trio.move_on_after(DRAIN_PATIENCE):
        while await client.lines.next() is not None:
            pass
