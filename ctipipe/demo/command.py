"""ctidemo: a CTI server and client that behave like XiVO's, to see the tools at work.

`ctidemo` alone starts the demo server, the classic `ctispy` between them, and
the demo client, and shows the session live. `ctidemo server` and
`ctidemo client` run each part alone. Messages follow the public CTI protocol
documentation: the login_id / login_pass / login_capas handshake, getlist
listid and updateconfig answers, ipbxcommand replies whose replyid is the
request's commandid, and unsolicited status updates.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import itertools
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from functools import partial

import orjson
import trio

from ctipipe.core import cli
from ctipipe.relay import certs as tls

PROG = "ctidemo"
IPBX = "xivo"
PASSWORD = "demo"  # every demo user's password

USERS = {
    "1": ("Alice", "Bouzat", "1001"), "2": ("Björn", "Lindström", "1002"),
    "3": ("Zoé", "Müller", "1003"), "4": ("José", "Núñez", "1004"),
    "5": ("Ingrid", "Åkesson", "1005"), "6": ("Hélène", "Gauthier", "1006"),
}
AGENTS = {"1": "2001", "2": "2002", "3": "2003"}
QUEUES = {"1": ("blue", "3001"), "2": ("yellow", "3002"), "3": ("red", "3003")}
AVAILABILITY = ("available", "away", "on_call_acd", "on_call_non_acd_incoming_external", "logged_out")

# Unsolicited status updates while a client is logged in, as a live switch sends them.
STATUS_INTERVAL = 0.25

# The real server drops a client whose TLS handshake has not begun within this long.
HANDSHAKE_TIMEOUT = 0.5

# How long the client waits for the server (or the relay in front of it) to listen.
CONNECT_PATIENCE = 10.0
# After its logout the demo client waits this long for the server to close.
DRAIN_PATIENCE = 5.0


def _now() -> float:
    return round(time.time(), 2)


# --- the server ------------------------------------------------------------

def user_config(tid: str) -> dict:
    first, last, number = USERS[tid]
    return {"enablednd": False, "destrna": "", "enablerna": False, "enableunc": False,
            "destunc": "", "destbusy": "", "enablebusy": False, "enablexfer": True,
            "firstname": first, "lastname": last, "fullname": f"{first} {last}",
            "voicemailid": None, "incallfilter": False, "enablevoicemail": False,
            "profileclient": None, "agentid": int(tid) if tid in AGENTS else None,
            "enableclient": True, "linelist": [tid], "mobilephonenumber": "",
            "context": "default", "number": number}


def answer(request: dict, session: dict) -> list[dict]:
    """What the demo server says to one client message."""
    kind = request.get("class")
    commandid = request.get("commandid")
    now = _now()
    # Protocol 1.x (xivoversion) hashes the password with the session id; 2.x
    # (wazoversion) sends it in clear inside TLS, and its login replies carry
    # no replyid.
    two = session.get("protocol") == 2
    login_reply = {} if two else {"replyid": commandid}
    if kind == "login_id":
        session["sessionid"] = "".join(random.choice("abcdefghijkmnpqrstuvwxyzABCDEFGH23456789")
                                       for _ in range(10))
        session["user"] = request.get("userlogin")
        if "wazoversion" in request:
            session["protocol"] = 2
            return [{"class": "login_id", "sessionid": session["sessionid"], "timenow": now,
                     "wazoversion": "18.03"}]
        return [{"class": "login_id", "sessionid": session["sessionid"], "timenow": now,
                 "xivoversion": "1.2"}]
    if kind == "login_pass":
        if two:
            ok = request.get("password") == PASSWORD
        else:
            ok = request.get("hashedpassword") == hashlib.sha1(
                f"{session.get('sessionid')}:{PASSWORD}".encode()).hexdigest()
        if not ok:
            return [{"class": "login_pass", "error_string": "login_password", **login_reply,
                     "timenow": now}]
        return [{"capalist": [2], "class": "login_pass", **login_reply, "timenow": now}]
    if kind == "login_capas":
        session["logged_in"] = True
        return [{"class": "login_capas", "userid": "1", "ipbxid": IPBX, "appliname": "Client",
                 "capas": {"regcommands": {}, "preferences": False,
                           "userstatus": {"available": {"color": "#08FD20", "longname": "Disponible"},
                                          "away": {"color": "#FDE50A", "longname": "Absent"}},
                           "phonestatus": {"0": {"color": "#0DFF25", "longname": "Disponible"}},
                           "services": ["enablednd", "fwdunc", "fwdbusy", "fwdrna"],
                           "ipbxcommands": ["dial", "hangup", "transfer"]},
                 "presence": request.get("state", "available"), **login_reply,
                 "timenow": now}]
    if kind == "getlist":
        listname = request.get("listname")
        table = {"users": USERS, "phones": USERS, "agents": AGENTS, "queues": QUEUES}.get(listname, {})
        if request.get("function") == "listid":
            return [{"class": "getlist", "function": "listid", "listname": listname,
                     "list": list(table), "tipbxid": IPBX, "timenow": now, "replyid": commandid}]
        if request.get("function") == "updateconfig":
            tid = str(request.get("tid"))
            if listname == "users" and tid in USERS:
                config = user_config(tid)
            elif listname == "phones" and tid in USERS:
                config = {"allowtransfer": None, "context": "default", "identity": f"SIP/demo{tid}",
                          "iduserfeatures": int(tid), "initialized": None,
                          "number": USERS[tid][2], "protocol": "sip"}
            elif listname == "queues" and tid in QUEUES:
                config = {"displayname": QUEUES[tid][0], "name": QUEUES[tid][0],
                          "context": "default", "number": QUEUES[tid][1]}
            else:
                config = {}
            return [{"class": "getlist", "function": "updateconfig", "listname": listname,
                     "tid": tid, "tipbxid": IPBX, "timenow": now, "config": config,
                     "replyid": commandid}]
    if kind == "ipbxcommand":
        command = request.get("command")
        replies = [{"class": "ipbxcommand", "command": command, "ipbxreply": 1,
                    "replyid": commandid, "timenow": now}]
        if command == "dial":
            exten = str(request.get("destination", "")).rpartition("/")[2]
            replies.append({"class": "dial_success", "exten": exten, "timenow": now})
        return replies
    if kind == "keepalive":
        return [{"class": "keepalive", "replyid": commandid, "timenow": now}]
    if kind == "logout":
        return []
    return [{"class": kind, "error_string": "unknown_class", "replyid": commandid, "timenow": now}]


def status_update(counter: int) -> dict:
    """An unsolicited status message, cycling through agents and phones."""
    now = _now()
    if counter % 2:
        tid = str(counter % len(AGENTS) + 1)
        return {"class": "getlist", "function": "updatestatus", "listname": "agents",
                "tipbxid": IPBX, "tid": int(tid), "timenow": now,
                "status": {"availability": AVAILABILITY[counter % len(AVAILABILITY)],
                           "availability_since": now, "queues": ["1", "2"], "groups": [],
                           "on_call": counter % 3 == 0, "phonenumber": AGENTS[tid],
                           "channel": None}}
    tid = str(counter % len(USERS) + 1)
    return {"class": "getlist", "function": "updatestatus", "listname": "phones",
            "tipbxid": IPBX, "tid": tid, "timenow": now,
            "status": {"hintstatus": str(counter % 4), "channels": [], "queues": [], "groups": []}}


DEMO_CERT_DIR = "demo-server"  # beside the relay's certificate, in the data directory


def _demo_certificate() -> ssl.SSLContext:
    """The demo server's TLS context: its own certificate, made the way the relay makes its."""
    cert, key, _ = tls.relay_certificate(tls.data_dir() / DEMO_CERT_DIR)
    return tls.client_leg_context(cert, key)


async def serve(listen_addr: str, port: int, *, starttls: bool = True,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve demo sessions on listen_addr:port, offering STARTTLS as XiVO 15.20-19.03 do."""
    context = _demo_certificate() if starttls else None
    try:
        listeners = await trio.open_tcp_listeners(port, host=listen_addr)
    except OSError as error:
        hint = (" (another server running? choose another --port)"
                if error.errno == errno.EADDRINUSE else "")
        raise cli.CommandError(f"cannot listen on {listen_addr}:{port}: "
                               f"{error.strerror or error}{hint}") from None
    bound = listeners[0].socket.getsockname()[1]
    cli.report("ctidemo server", f"listening on {listen_addr}:{bound}"
               + (" (offering STARTTLS)" if starttls else " (plain, no STARTTLS)"))
    task_status.started(bound)
    await trio.serve_listeners(lambda client: _serve_client(client, context), listeners)


class _Lines:
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


async def _serve_client(client: trio.SocketStream, context: ssl.SSLContext | None) -> None:
    session: dict = {}
    lines = _Lines(client)
    send_lock = trio.Lock()

    async def send(message: dict) -> None:
        async with send_lock:
            await lines.stream.send_all(orjson.dumps(message) + b"\n")

    async def updates() -> None:
        for counter in itertools.count():
            await trio.sleep(STATUS_INTERVAL)
            if session.get("logged_in"):
                await send(status_update(counter))

    try:
        async with client, trio.open_nursery() as nursery:
            if context is not None:  # the unsolicited offer, right after accept
                await send({"class": "starttls", "timenow": _now()})
            nursery.start_soon(updates)
            while (line := await lines.next()) is not None:
                try:
                    request = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(request, dict):
                    continue
                if request.get("class") == "starttls":
                    # Only the first exchange counts; later ones are ignored, as
                    # the real server does (the XiVO client sends a second one).
                    if context is not None and not session.get("starttls_done"):
                        session["starttls_done"] = True
                        status = request.get("status")
                        await send({"class": "starttls", "timenow": _now(), "starttls": status})
                        if status:
                            if lines.buffer:
                                return  # plaintext after the request: not a TLS client
                            upgraded = trio.SSLStream(client, context, server_side=True,
                                                      https_compatible=True)
                            with trio.fail_after(HANDSHAKE_TIMEOUT):
                                await upgraded.do_handshake()
                            lines.stream = upgraded
                    continue
                for reply in answer(request, session):
                    await send(reply)
            nursery.cancel_scope.cancel()
    except Exception as error:  # noqa: BLE001 - one client's end never ends the server
        # The nursery wraps what a task raised in a group: look at what is inside.
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)
        unexpected = [leaf for leaf in cli.leaves(error) if not isinstance(leaf, gone)]
        if unexpected:  # not merely a client that went away or never began its handshake
            cli.report("ctidemo server", f"a session ended on an error: {unexpected[0]}")


# --- the client --------------------------------------------------------------

# A server that offers STARTTLS does so right after accepting; a client that
# has seen nothing by then logs in without TLS.
OFFER_WAIT = 1.0


class _Client:
    def __init__(self, stream_: trio.SocketStream) -> None:
        self.raw = stream_  # the TCP stream, under TLS once upgraded
        self.lines = _Lines(stream_)
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
                                       f"{_reason(error)}") from None
            await trio.sleep(0.05)


def _reason(error: OSError) -> str:
    """Why a connection failed, in the system's words (trio groups them per address)."""
    for leaf in [*(cli.leaves(error.__cause__) if error.__cause__ else []), error]:
        if isinstance(leaf, OSError) and leaf.errno:
            return os.strerror(leaf.errno)
    return str(error)


async def run_client(host: str, port: int, user: str, pause: float) -> None:
    """A realistic session: STARTTLS when offered, log in, load the
    configuration, dial, hang up, log out."""
    stream_ = await _connect(host, port)
    try:
        async with stream_:
            await _session(_Client(stream_), user, pause)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
        cause = error.__cause__
        why = (os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno
               else "closed by the other side")
        raise cli.CommandError(f"the connection to {host}:{port} was lost ({why})") from None


async def _session(client: _Client, user: str, pause: float) -> None:
    offer = None
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


# --- ctidemo -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """Wait until the demo server accepts connections (a probe it simply sees close)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    cli.report(PROG, f"error: the demo server did not start on port {port}")
    return False


def _whole_demo(args: argparse.Namespace) -> int:
    """Server, classic ctispy and client, each its own process, as a user would run them."""
    server_port = args.server_port or _free_port()
    listen_port = args.listen_port or _free_port()
    me = cli.command_argv()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([*me, "ctidemo", "server", "--port", str(server_port),
                                       *(["--no-starttls"] if args.no_starttls else [])]))
        if not _wait_listening(server_port, procs[0]):
            return cli.Exit.ERROR
        # The demo server's certificate is known here: ctispy verifies it.
        server_ca = ([] if args.no_starttls else
                     ["--server-ca", str(tls.relay_certificate(tls.data_dir() / DEMO_CERT_DIR)[0])])
        spy = subprocess.Popen([*me, "ctispy", "127.0.0.1", "--port", str(server_port),
                                "--listen-addr", "127.0.0.1", "--listen-port", str(listen_port),
                                *server_ca, *(["--pretty-print"] if not args.compact else [])])
        procs.append(spy)
        client = subprocess.Popen([*me, "ctidemo", "client", "--port", str(listen_port),
                                   "--pause", str(args.pause)])
        procs.append(client)
        while client.poll() is None:
            if spy.poll() is not None:  # ctispy could not start: it said why
                return cli.Exit.ERROR
            time.sleep(0.05)
        spy_status = spy.wait(30)
        if client.returncode or spy_status:
            cli.report(PROG, f"error: the demo did not complete (client {client.returncode}, "
                             f"ctispy {spy_status})")
            return cli.Exit.ERROR
        return cli.Exit.OK
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    """End what the demo started, the last started first."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def _replay_demo(args: argparse.Namespace) -> int:
    """Record a demo session through ctirelay, then replay it with ctireplay as the
    server, watched through ctispy, to a demo client with its own commandids."""
    me = cli.command_argv()
    procs: list[subprocess.Popen] = []

    def start(*argv: str, **popen) -> subprocess.Popen:
        procs.append(subprocess.Popen([*me, *argv], **popen))
        return procs[-1]

    def client(port: int) -> int:
        return start("ctidemo", "client", "--port", str(port), "--pause", str(args.pause)).wait()

    with tempfile.TemporaryDirectory(prefix="ctidemo-") as tmp:
        recording = os.path.join(tmp, "session.jsonl")
        try:
            server_port, relay_port = _free_port(), _free_port()
            # With STARTTLS (the relay decrypts it; the mock offers it in turn) unless told not to.
            server = start("ctidemo", "server", "--port", str(server_port),
                           *(["--no-starttls"] if args.no_starttls else []))
            if not _wait_listening(server_port, server):
                return cli.Exit.ERROR
            with open(recording, "wb") as out:
                relay = start("ctirelay", "127.0.0.1", "--port", str(server_port), "--listen-addr",
                              "127.0.0.1", "--listen-port", str(relay_port), stdout=out)
                if client(relay_port) or relay.wait(30):
                    cli.report(PROG, "error: the demo session could not be recorded")
                    return cli.Exit.ERROR
            cli.report(PROG, "recorded a demo session through ctirelay; replaying it with "
                             "ctireplay as the server, watched through ctispy")
            mock = start("ctireplay", recording, "--listen-addr", "127.0.0.1", "--listen-port", "0",
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            first = mock.stderr.readline()  # where it listens, or why it could not start
            sys.stderr.write(first)
            if "listening on" not in first:
                return cli.Exit.ERROR
            threading.Thread(target=shutil.copyfileobj, args=(mock.stderr, sys.stderr),
                             daemon=True).start()
            mock_port = first.split("listening on ")[1].split(":")[1]
            spy_port = args.listen_port or _free_port()
            spy = start("ctispy", "127.0.0.1", "--port", mock_port, "--listen-addr", "127.0.0.1",
                        "--listen-port", str(spy_port),
                        *(["--pretty-print"] if not args.compact else []))
            if client(spy_port) or spy.wait(30) or mock.wait(30):
                cli.report(PROG, "error: the replayed session did not complete")
                return cli.Exit.ERROR
            return cli.Exit.OK
        finally:
            _stop(procs)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {text}")
    return port


DESCRIPTION = """\
A demo CTI server and client that behave like XiVO's, to see the tools at work.
Alone, ctidemo runs the demo server, the classic ctispy between it and the demo
client, and shows the session live. The server offers STARTTLS as XiVO 15.20 to
Wazo 19.03 do (its own certificate, TLS 1.0 allowed); the client takes the offer
and logs in with protocol 2.x, whose password travels in clear inside TLS."""


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(PROG, DESCRIPTION,
                        "ctidemo                                # watch a demo session through ctispy\n"
                        "ctidemo server --port 5003             # a stand-in CTI server for your own tests\n"
                        "ctidemo server --port 5003 --no-starttls\n"
                        "ctidemo client --port 50030            # one scripted session (password: demo)\n"
                        "ctidemo replay                         # record a session, replay it with ctireplay")
    parser.add_argument("--listen-port", type=_port, default=0,
                        help="where ctispy listens (default: any free port)")
    parser.add_argument("--server-port", type=_port, default=0,
                        help="the demo server's port (default: any free one)")
    parser.add_argument("--compact", action="store_true", help="one line per message")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds between client steps (default 0.05)")
    parser.add_argument("--no-starttls", action="store_true",
                        help="the demo server does not offer STARTTLS (a plain session)")
    parts = parser.add_subparsers(dest="part", metavar="{server,client,replay}")
    server = parts.add_parser(
        "server", help="run the demo CTI server",
        description=textwrap.fill("A CTI server that answers the login, getlist and ipbxcommand requests as a "
                    "XiVO does, sends status updates, and offers STARTTLS (TLS 1.0 to 1.3, with "
                    "its own certificate kept in the data directory) unless told not to. "
                    f"Every user's password is {PASSWORD!r}. Runs until Ctrl-C."),
        example="ctidemo server --port 5003 &\nctirelay 127.0.0.1 --port 5003 | ctipretty")
    server.add_argument("--listen-addr", type=cli.host, default="127.0.0.1", metavar="ADDR",
                        help="the address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=_port, default=5003, help="the port to listen on (default 5003)")
    server.add_argument("--no-starttls", action="store_true",
                        help="do not offer STARTTLS (a server before XiVO 15.20, or with TLS off)")
    client = parts.add_parser(
        "client", help="run one scripted client session",
        description=textwrap.fill("One scripted CTI client session: STARTTLS when the server offers it (any "
                    "certificate accepted, as the XiVO client does), login (protocol 2.x with a "
                    "clear password inside TLS, 1.x with a hashed one without), the configuration "
                    "lists, a dial and a hangup, then logout."),
        example="ctidemo client --port 50030 --user alice")
    client.add_argument("--host", type=cli.host, default="127.0.0.1", help="the server or relay (default 127.0.0.1)")
    client.add_argument("--port", type=_port, default=50030, help="its port (default 50030)")
    client.add_argument("--user", default="alice", help="the login (default alice)")
    client.add_argument("--pause", type=float, default=0.05,
                        help="seconds between steps (default 0.05)")
    replay = parts.add_parser(
        "replay", help="record a demo session, then replay it with ctireplay "
                       "as the server, watched through ctispy",
        description=textwrap.fill("Record a demo session through ctirelay, then replay it with "
                    "ctireplay as the server, watched through ctispy, to a demo client with "
                    "commandids of its own."),
        example="ctidemo replay --compact")
    # The whole demo's options, also after `replay` (SUPPRESS: not given here,
    # the value given before `replay`, or its default, stays).
    replay.add_argument("--listen-port", type=_port, default=argparse.SUPPRESS,
                        help="where ctispy listens (default: any free port)")
    replay.add_argument("--compact", action="store_true", default=argparse.SUPPRESS,
                        help="one line per message")
    replay.add_argument("--pause", type=float, default=argparse.SUPPRESS,
                        help="seconds between client steps (default 0.05)")
    replay.add_argument("--no-starttls", action="store_true", default=argparse.SUPPRESS,
                        help="record a plain session (the demo server offers no STARTTLS)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.part == "server":
            try:
                trio.run(partial(serve, args.listen_addr, args.port,
                                 starttls=not args.no_starttls))
            except KeyboardInterrupt:
                pass
            return cli.Exit.OK
        if args.part == "client":
            trio.run(run_client, args.host, args.port, args.user, args.pause)
            return cli.Exit.OK
        if args.part == "replay":
            return _replay_demo(args)
        return _whole_demo(args)

    return cli.guarded(PROG, body, debug=args.debug)
